//! Several Clio accounts in one region: each its own firm with its own records, read only
//! through the grants its users gave; and refreshes counted per grant.

use clio_sim::{DatasetSize, Decision, Region, SimConfig};
use reqwest::StatusCode;

use crate::support::*;

async fn three_accounts() -> clio_sim::ClioSim {
    start_with(SimConfig {
        regions: vec![Region::Us],
        rate_limit: None,
        accounts: 3,
        dataset: DatasetSize {
            contacts: 30,
            ..DatasetSize::default()
        },
        ..SimConfig::default()
    })
    .await
}

#[tokio::test]
async fn each_account_is_a_firm_of_its_own() {
    let sim = three_accounts().await;
    let base = sim.base_url(Region::Us);
    let app = app(&["users:read", "contacts:read"]);
    let first = connect_in_account(&sim, Region::Us, &app, 1, 1).await;
    let third = connect_in_account(&sim, Region::Us, &app, 3, 1).await;

    let who_am_i = "/api/v4/users/who_am_i?fields=id,account";
    let first_me = get(&base, &first.access, who_am_i).await;
    let third_me = get(&base, &third.access, who_am_i).await;
    assert_eq!(first_me.status, StatusCode::OK, "{}", first_me.body);
    assert_eq!(third_me.status, StatusCode::OK, "{}", third_me.body);
    let first_account = &first_me.body["data"]["account"]["id"];
    let third_account = &third_me.body["data"]["account"]["id"];
    assert!(first_account.is_i64() && third_account.is_i64());
    assert_ne!(first_account, third_account);

    let path = "/api/v4/contacts.json?fields=id,name&limit=200";
    let (first_contacts, _) = all_pages(&base, &first.access, path).await;
    let (third_contacts, _) = all_pages(&base, &third.access, path).await;
    assert_eq!(first_contacts.len(), 30);
    assert_eq!(third_contacts.len(), 30);
    assert_ne!(
        first_contacts, third_contacts,
        "another firm has other people"
    );
    let (again, _) = all_pages(&base, &first.access, path).await;
    assert_eq!(again, first_contacts, "an account's data is stable");
}

#[tokio::test]
async fn a_consent_names_an_account_the_region_has() {
    let sim = three_accounts().await;
    let base = sim.base_url(Region::Us);
    let app = app(&["users:read"]);
    sim.admin().register_app(Region::Us, &app).await.unwrap();
    let url = authorize_url(&base, &app.client_id, REDIRECT, "st");
    for account in [0, 4] {
        let refused = sim
            .admin()
            .consent_in_account(&url, account, 1, Decision::Allow)
            .await
            .unwrap();
        assert_eq!(refused.status, 400, "account {account}");
        assert!(refused.code.is_none());
    }
}

#[tokio::test]
async fn refreshes_are_counted_per_grant() {
    let sim = three_accounts().await;
    let base = sim.base_url(Region::Us);
    let app = app(&["users:read"]);
    let once = connect_in_account(&sim, Region::Us, &app, 2, 1).await;
    let twice = connect_in_account(&sim, Region::Us, &app, 2, 2).await;
    for refresh in [&once.refresh, &twice.refresh, &twice.refresh] {
        let (status, body) = token_request(&base, &refresh_form(refresh)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let calls = sim.admin().calls().await.unwrap();
    assert_eq!(calls.token.refresh_token, 3);
    let mut counts: Vec<u64> = calls.refreshes_by_grant.values().copied().collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 2]);
    assert_eq!(calls.most_refreshes_of_one_grant(), 2);
}
