//! Single records: ETags, 304/412, creating time entries, and admin edits seen by the API.

use clio_sim::{Region, Resource};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn show_carries_validators_and_if_none_match_gives_304() {
    let (_sim, base, t) = us_connected().await;
    let list = get(
        &base,
        &t.access,
        "/api/v4/contacts.json?limit=1&fields=id,etag,updated_at",
    )
    .await;
    let contact = &list.body["data"][0];
    let path = format!("/api/v4/contacts/{}.json", contact["id"]);
    let show = get(&base, &t.access, &path).await;
    let etag = contact["etag"].as_str().unwrap();
    assert_eq!(show.header("etag"), Some(etag));
    let modified = show.header("last-modified").unwrap();
    assert!(modified.ends_with(" GMT"), "{modified}");
    let fresh = get_with(&base, &t.access, &path, &[("If-None-Match", etag)]).await;
    assert_eq!(fresh.status, StatusCode::NOT_MODIFIED);
    let stale = get_with(&base, &t.access, &path, &[("If-None-Match", "\"other\"")]).await;
    assert_eq!(stale.status, StatusCode::OK);
}

#[tokio::test]
async fn patch_with_a_stale_if_match_is_412() {
    let (sim, base, t) = us_connected().await;
    let list = get(
        &base,
        &t.access,
        "/api/v4/matters.json?limit=1&fields=id,etag",
    )
    .await;
    let matter = &list.body["data"][0];
    let url = format!(
        "{base}/api/v4/matters/{}.json?fields=id,etag,description",
        matter["id"]
    );
    let etag = matter["etag"].as_str().unwrap();
    let change = json!({"data": {"description": "Renamed", "shoe_size": 9, "id": 1}});
    let patched = send_json(
        http().patch(&url).header("If-Match", etag),
        &t.access,
        &change,
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["data"]["description"], "Renamed");
    assert_eq!(
        patched.body["data"]["id"], matter["id"],
        "ids cannot be written"
    );
    let new_etag = patched.body["data"]["etag"].as_str().unwrap();
    assert_ne!(new_etag, etag);
    assert_eq!(patched.header("etag"), Some(new_etag));
    let stale = send_json(
        http().patch(&url).header("If-Match", etag),
        &t.access,
        &change,
    )
    .await;
    assert_eq!(
        (stale.status, error_type(&stale.body)),
        (StatusCode::PRECONDITION_FAILED, "PreconditionFailed")
    );

    let reader = connect(&sim, Region::Us, &["matters:read"]).await;
    let denied = send_json(http().patch(&url), &reader.access, &change).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn creating_a_time_entry_is_201_and_validated() {
    let (sim, base, t) = us_connected().await;
    let matter =
        get(&base, &t.access, "/api/v4/matters?limit=1").await.body["data"][0]["id"].clone();
    let before = sim
        .admin()
        .count(Region::Us, Resource::Activities)
        .await
        .unwrap();
    let me = get(&base, &t.access, "/api/v4/users/who_am_i").await.body["data"]["id"].clone();
    let entry = json!({"data": {"type": "TimeEntry", "date": "2026-06-09", "quantity": 3600,
        "matter": {"id": matter}, "user": {"id": me}, "note": "Reviewed documents",
        "unknown_key": true}});
    let url = format!(
        "{base}/api/v4/activities.json?fields=id,type,quantity,quantity_in_hours,matter{{id}},user{{id}},note,total"
    );
    let created = send_json(http().post(&url), &t.access, &entry).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let data = &created.body["data"];
    assert_eq!(
        (
            data["type"].as_str(),
            data["quantity"].as_i64(),
            data["quantity_in_hours"].as_f64()
        ),
        (Some("TimeEntry"), Some(3600), Some(1.0))
    );
    assert_eq!(data["matter"]["id"], matter);
    assert_eq!(data["user"]["id"], me);
    assert_eq!(
        sim.admin()
            .count(Region::Us, Resource::Activities)
            .await
            .unwrap(),
        before + 1
    );
    let shown = get(
        &base,
        &t.access,
        &format!("/api/v4/activities/{}?fields=note", data["id"]),
    )
    .await;
    assert_eq!(shown.body["data"]["note"], "Reviewed documents");

    for (bad, why) in [
        (
            json!({"data": {"type": "Lunch", "date": "2026-06-09", "quantity": 1}}),
            "type",
        ),
        (
            json!({"data": {"type": "TimeEntry", "date": "June", "quantity": 1}}),
            "date",
        ),
        (
            json!({"data": {"type": "TimeEntry", "date": "2026-06-09"}}),
            "quantity",
        ),
        (
            json!({"data": {"type": "TimeEntry", "date": "2026-06-09", "quantity": 1, "matter": {"id": 1}, "user": {"id": me}}}),
            "matter",
        ),
        (
            json!({"data": {"type": "TimeEntry", "date": "2026-06-09", "quantity": 1, "user": {"id": me}}}),
            "matter",
        ),
        (
            json!({"data": {"type": "TimeEntry", "date": "2026-06-09", "quantity": 0, "matter": {"id": matter}, "user": {"id": me}}}),
            "quantity",
        ),
        (
            json!({"data": {"type": "TimeEntry", "date": "2026-06-09", "quantity": -360, "matter": {"id": matter}, "user": {"id": me}}}),
            "quantity",
        ),
        (
            json!({"data": {"type": "TimeEntry", "date": "2026-02-30", "quantity": 360, "matter": {"id": matter}, "user": {"id": me}}}),
            "date",
        ),
        (
            json!({"data": {"type": "TimeEntry", "date": "2026-06-09", "quantity": 360, "matter": {"id": matter}}}),
            "user",
        ),
        (
            json!({"data": {"type": "TimeEntry", "date": "2026-06-09", "quantity": 360, "matter": {"id": matter}, "user": {"id": 7}}}),
            "user",
        ),
        (
            json!({"data": {"date": "2026-06-09", "quantity": 360, "matter": {"id": matter}, "user": {"id": me}}}),
            "type",
        ),
    ] {
        let answer = send_json(
            http().post(format!("{base}/api/v4/activities")),
            &t.access,
            &bad,
        )
        .await;
        assert_eq!(
            (answer.status, error_type(&answer.body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "ValidationError"),
            "{why}"
        );
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(why),
            "{}",
            answer.body
        );
    }
    let reader = connect(&sim, Region::Us, &["activities:read"]).await;
    let denied = send_json(
        http().post(format!("{base}/api/v4/activities")),
        &reader.access,
        &entry,
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let not_here = send_json(
        http().post(format!("{base}/api/v4/contacts")),
        &t.access,
        &entry,
    )
    .await;
    assert_eq!(not_here.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn admin_edits_show_up_in_the_api_and_in_updated_since() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let admin = sim.admin();
    let t = connect(&sim, Region::Us, ALL).await;
    let (contacts, _) = all_pages(&base, &t.access, "/api/v4/contacts?fields=id,etag,name").await;
    // Generated history ends at 2026-01-01; every edit is stamped after it.
    let stamp = "2026-01-01T00:00:00Z";

    let edited = contacts[4]["id"].to_string();
    let record = admin
        .update_record(
            Region::Us,
            Resource::Contacts,
            &edited,
            json!({"name": "New Name"}),
        )
        .await
        .unwrap();
    assert_eq!(record["name"], "New Name");
    let deleted = contacts[9]["id"].to_string();
    admin
        .delete_record(Region::Us, Resource::Contacts, &deleted)
        .await
        .unwrap();
    let created = admin
        .create_record(
            Region::Us,
            Resource::Contacts,
            json!({"name": "Fresh Client", "type": "Company"}),
        )
        .await
        .unwrap();
    assert_eq!(
        admin.count(Region::Us, Resource::Contacts).await.unwrap(),
        50
    );

    let (changed, _) = all_pages(
        &base,
        &t.access,
        &format!("/api/v4/contacts?fields=id,name,etag&updated_since={stamp}"),
    )
    .await;
    let changed_ids: Vec<String> = changed.iter().map(|c| c["id"].to_string()).collect();
    assert_eq!(changed_ids, [edited.clone(), created.to_string()]);
    assert_eq!(changed[0]["name"], "New Name");
    assert_ne!(changed[0]["etag"], contacts[4]["etag"]);
    let gone = get(&base, &t.access, &format!("/api/v4/contacts/{deleted}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let (after, _) = all_pages(&base, &t.access, "/api/v4/contacts?limit=13").await;
    assert_eq!(after.len(), 50);
    let deleted_id: i64 = deleted.parse().unwrap();
    assert!(after.iter().all(|c| c["id"].as_i64() != Some(deleted_id)));
    assert!(
        admin
            .delete_record(Region::Us, Resource::Contacts, &deleted)
            .await
            .is_err(),
        "already deleted"
    );
    assert!(
        admin
            .update_record(Region::Us, Resource::Contacts, "1", json!({}))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn api_answers_carry_the_simulated_clock_as_their_date() {
    let (sim, base, t) = us_connected().await;
    let date_of = |answer: &Answer| {
        let text = answer.header("date").unwrap().to_owned();
        chrono::DateTime::parse_from_rfc2822(&text)
            .unwrap()
            .to_utc()
    };
    let before = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    let now = date_of(&get(&base, &t.access, "/api/v4/contacts.json?limit=1").await);
    assert!(now >= before && now <= chrono::Utc::now(), "{now}");
    sim.admin()
        .advance_clock(std::time::Duration::from_secs(3_600))
        .await
        .unwrap();
    let later = date_of(&get(&base, &t.access, "/api/v4/contacts.json?limit=1").await);
    assert!(
        later >= now + chrono::TimeDelta::seconds(3_600),
        "{now} then {later}"
    );
}

#[tokio::test]
async fn records_hidden_from_a_user_are_left_out_of_their_listings_only() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let first = connect(&sim, Region::Us, &["contacts:read"]).await;
    let second = connect_as(&sim, Region::Us, &app(&["contacts:read"]), 2).await;
    let ids = |records: &[serde_json::Value]| -> Vec<i64> {
        records.iter().map(|r| r["id"].as_i64().unwrap()).collect()
    };
    let (all, _) = all_pages(&base, &first.access, "/api/v4/contacts.json?limit=7").await;
    let all = ids(&all);
    let hidden = [all[0].to_string(), all[8].to_string()];
    sim.admin()
        .hide_records(
            Region::Us,
            2,
            Resource::Contacts,
            &[hidden[0].as_str(), hidden[1].as_str()],
        )
        .await
        .unwrap();

    let (seen, _) = all_pages(&base, &second.access, "/api/v4/contacts.json?limit=7").await;
    let expected: Vec<i64> = all
        .iter()
        .copied()
        .filter(|id| *id != all[0] && *id != all[8])
        .collect();
    assert_eq!(ids(&seen), expected);
    let (still_all, _) = all_pages(&base, &first.access, "/api/v4/contacts.json?limit=7").await;
    assert_eq!(ids(&still_all), all, "other users see everything");

    sim.admin()
        .hide_records(Region::Us, 2, Resource::Contacts, &[])
        .await
        .unwrap();
    let (seen, _) = all_pages(&base, &second.access, "/api/v4/contacts.json?limit=7").await;
    assert_eq!(ids(&seen), all);
}
