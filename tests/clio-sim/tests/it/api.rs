//! API v4 reads: envelope, fields, paging, filters, versions, permissions and data.

use std::collections::BTreeSet;

use clio_sim::{DatasetSize, Region, SimConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn who_am_i_answers_any_valid_token_with_the_user_and_firm() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let tokens = connect(&sim, Region::Us, &["contacts:read"]).await;
    let me = get(
        &base,
        &tokens.access,
        "/api/v4/users/who_am_i.json?fields=id,name,email,account{name}",
    )
    .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    let data = &me.body["data"];
    assert!(data["id"].as_i64().unwrap() > 0);
    assert!(data["email"].as_str().unwrap().contains('@'));
    assert!(data["account"]["name"].as_str().unwrap().ends_with("LLP"));
    assert_eq!(data.as_object().unwrap().len(), 4);
    // The same user is listed among the firm's users.
    let users = connect(&sim, Region::Us, &["users:read"]).await;
    let listed = get(
        &base,
        &users.access,
        &format!("/api/v4/users/{}", data["id"]),
    )
    .await;
    assert_eq!(listed.body["data"]["id"], data["id"]);
}

#[tokio::test]
async fn paths_work_with_and_without_json_and_default_to_id_and_etag() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let tokens = connect(&sim, Region::Us, ALL).await;
    for resource in [
        "users",
        "contacts",
        "matters",
        "calendar_entries",
        "activities",
    ] {
        let with = get(
            &base,
            &tokens.access,
            &format!("/api/v4/{resource}.json?limit=3"),
        )
        .await;
        let without = get(
            &base,
            &tokens.access,
            &format!("/api/v4/{resource}?limit=3"),
        )
        .await;
        assert_eq!(with.status, StatusCode::OK, "{resource}: {}", with.body);
        assert_eq!(with.body["data"], without.body["data"]);
        let first = &with.body["data"][0];
        let keys: BTreeSet<_> = first.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            BTreeSet::from(["id".to_owned(), "etag".to_owned()]),
            "{resource}"
        );
        let id = first["id"].to_string().trim_matches('"').to_owned();
        let show = get(
            &base,
            &tokens.access,
            &format!("/api/v4/{resource}/{id}.json"),
        )
        .await;
        assert_eq!(show.body, json!({"data": first}));
    }
    let unknown = get(&base, &tokens.access, "/api/v4/bills.json").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let missing = get(&base, &tokens.access, "/api/v4/contacts/1.json").await;
    assert_eq!(
        (missing.status, error_type(&missing.body)),
        (StatusCode::NOT_FOUND, "RecordNotFound")
    );
    let anonymous = http()
        .get(format!("{base}/api/v4/contacts.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let bad = get(&base, "not-a-token", "/api/v4/contacts.json").await;
    assert_eq!(bad.body["error"], "invalid_token");
}

#[tokio::test]
async fn fields_allow_one_level_of_nesting_and_reject_the_rest() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let tokens = connect(&sim, Region::Us, ALL).await;
    let matters = get(
        &base,
        &tokens.access,
        "/api/v4/matters.json?fields=id,display_number,status,client{id,name},practice_area{name}",
    )
    .await;
    assert_eq!(matters.status, StatusCode::OK);
    for matter in matters.body["data"].as_array().unwrap() {
        assert_eq!(matter.as_object().unwrap().len(), 5);
        assert!(["Open", "Pending", "Closed"].contains(&matter["status"].as_str().unwrap()));
        assert!(matter["practice_area"]["name"].is_string());
        if !matter["client"].is_null() {
            assert_eq!(matter["client"].as_object().unwrap().len(), 2);
        }
    }
    let contacts = get(
        &base,
        &tokens.access,
        "/api/v4/contacts?fields=id,addresses{city}",
    )
    .await;
    assert!(contacts.body["data"][0]["addresses"][0]["city"].is_string());
    for (fields, named) in [
        ("id,shoe_size", "shoe_size"),
        ("id,client{id{name}}", "client{id{name}}"),
        ("client{nope}", "nope"),
        ("status{id}", "status{id}"),
    ] {
        let answer = get(
            &base,
            &tokens.access,
            &format!("/api/v4/matters.json?fields={fields}"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{fields}");
        assert_eq!(
            answer.body,
            json!({"error": {"type": "InvalidFields", "message": format!("{named} is not a valid field")}})
        );
    }
}

#[tokio::test]
async fn cursor_paging_walks_every_record_once_in_id_order() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let tokens = connect(&sim, Region::Us, ALL).await;
    let (records, pages) = all_pages(
        &base,
        &tokens.access,
        "/api/v4/contacts.json?limit=7&fields=id,name",
    )
    .await;
    assert_eq!(records.len(), 50);
    assert_eq!(pages, 8);
    let ids: Vec<i64> = records.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "id ascending, no repeats"
    );
    assert!(ids[0] > i64::from(i32::MAX), "ids need 64 bits");

    let first = get(
        &base,
        &tokens.access,
        "/api/v4/contacts.json?limit=7&fields=id,name",
    )
    .await;
    let next = first.body["meta"]["paging"]["next"].as_str().unwrap();
    assert!(
        next.starts_with(&base)
            && next.contains("page_token=")
            && next.contains("fields=id%2Cname"),
        "{next}"
    );
    let forged = get(
        &base,
        &tokens.access,
        "/api/v4/contacts.json?page_token=2200000007",
    )
    .await;
    assert_eq!(
        (forged.status, error_type(&forged.body)),
        (StatusCode::BAD_REQUEST, "ArgumentError")
    );
    let (calendar, _) = all_pages(&base, &tokens.access, "/api/v4/calendar_entries?limit=4").await;
    assert_eq!(calendar.len(), 30);
    assert!(
        calendar.iter().all(|entry| entry["id"].is_string()),
        "calendar entry ids are strings"
    );
    assert!(
        calendar
            .iter()
            .any(|entry| entry["id"].as_str().unwrap().contains('_')),
        "recurring instances"
    );
}

#[tokio::test]
async fn limit_bounds_and_the_offset_cap() {
    let sim = start_with(SimConfig {
        regions: vec![Region::Us],
        rate_limit: None,
        dataset: DatasetSize {
            users: 2_001,
            ..DatasetSize::uniform(10_100)
        },
        ..SimConfig::default()
    })
    .await;
    let base = sim.base_url(Region::Us);
    let tokens = connect(&sim, Region::Us, ALL).await;
    for limit in ["0", "201", "abc"] {
        let answer = get(
            &base,
            &tokens.access,
            &format!("/api/v4/contacts.json?limit={limit}"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "limit={limit}");
    }
    let full = get(&base, &tokens.access, "/api/v4/contacts.json").await;
    assert_eq!(
        full.body["data"].as_array().unwrap().len(),
        200,
        "default limit"
    );
    let users = get(&base, &tokens.access, "/api/v4/users.json?limit=2000").await;
    assert_eq!(users.body["data"].as_array().unwrap().len(), 2000);
    assert_eq!(
        get(&base, &tokens.access, "/api/v4/users.json?limit=2001")
            .await
            .status,
        400
    );

    let page = get(
        &base,
        &tokens.access,
        "/api/v4/contacts.json?offset=9800&limit=200",
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let first = page.body["data"][0]["id"].as_i64().unwrap();
    let start = get(&base, &tokens.access, "/api/v4/contacts.json?limit=1").await;
    assert_eq!(first - start.body["data"][0]["id"].as_i64().unwrap(), 9800);
    let next = page.body["meta"]["paging"]["next"].as_str().unwrap();
    assert!(next.contains("offset=10000"));
    assert!(
        page.body["meta"]["paging"]["previous"]
            .as_str()
            .unwrap()
            .contains("offset=9600")
    );
    let capped = get_url(&tokens.access, next).await;
    assert_eq!(
        (capped.status, error_type(&capped.body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "ArgumentError")
    );
}

#[tokio::test]
async fn since_ids_and_resource_filters_narrow_lists_and_unknown_filters_are_ignored() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    let access = t.access.as_str();
    let (all, _) = all_pages(
        &base,
        access,
        "/api/v4/matters?fields=id,status,client{id},updated_at,created_at",
    )
    .await;
    let (ignored, _) = all_pages(
        &base,
        access,
        "/api/v4/matters?fields=id,status,client{id},updated_at,created_at&statuss=Closed",
    )
    .await;
    assert_eq!(all, ignored);

    let mut stamps: Vec<&str> = all
        .iter()
        .map(|m| m["updated_at"].as_str().unwrap())
        .collect();
    stamps.sort_unstable();
    let since = stamps[stamps.len() / 2];
    let (recent, _) = all_pages(
        &base,
        access,
        &format!(
            "/api/v4/matters?fields=id,updated_at&updated_since={}",
            urlencode(since)
        ),
    )
    .await;
    assert_eq!(recent.len(), stamps.iter().filter(|s| **s >= since).count());
    assert!(!recent.is_empty() && recent.len() < all.len());
    let created: Vec<&str> = all
        .iter()
        .map(|m| m["created_at"].as_str().unwrap())
        .collect();
    let (new, _) = all_pages(
        &base,
        access,
        &format!("/api/v4/matters?created_since={}", urlencode(created[10])),
    )
    .await;
    assert_eq!(
        new.len(),
        created.iter().filter(|c| **c >= created[10]).count()
    );
    assert_eq!(
        get(&base, access, "/api/v4/matters?updated_since=yesterday")
            .await
            .status,
        400
    );

    let open: Vec<_> = all.iter().filter(|m| m["status"] == "Open").collect();
    let (filtered, _) = all_pages(&base, access, "/api/v4/matters?status=Open").await;
    assert_eq!(filtered.len(), open.len());
    let with_client = all.iter().find(|m| !m["client"].is_null()).unwrap();
    let client = with_client["client"]["id"].as_i64().unwrap();
    let (of_client, _) = all_pages(
        &base,
        access,
        &format!("/api/v4/matters?client_id={client}&fields=client{{id}}"),
    )
    .await;
    assert!(!of_client.is_empty() && of_client.iter().all(|m| m["client"]["id"] == client));

    let ids = format!("ids[]={}&ids[]={}", all[3]["id"], all[7]["id"]);
    let (picked, _) = all_pages(&base, access, &format!("/api/v4/matters?{ids}")).await;
    assert_eq!(
        picked.iter().map(|m| &m["id"]).collect::<Vec<_>>(),
        [&all[3]["id"], &all[7]["id"]]
    );

    let (entries, _) = all_pages(
        &base,
        access,
        "/api/v4/calendar_entries?fields=id,matter{id}",
    )
    .await;
    let matter = entries.iter().find(|e| !e["matter"].is_null()).unwrap()["matter"]["id"].clone();
    let (for_matter, _) = all_pages(
        &base,
        access,
        &format!("/api/v4/calendar_entries?matter_id={matter}&fields=matter{{id}}"),
    )
    .await;
    assert_eq!(
        for_matter.len(),
        entries
            .iter()
            .filter(|e| e["matter"]["id"] == matter)
            .count()
    );
    let (activities, _) = all_pages(
        &base,
        access,
        "/api/v4/activities?fields=id,type,matter{id}",
    )
    .await;
    let (time, _) = all_pages(&base, access, "/api/v4/activities?type=TimeEntry").await;
    assert_eq!(
        time.len(),
        activities
            .iter()
            .filter(|a| a["type"] == "TimeEntry")
            .count()
    );
    let matter = activities[0]["matter"]["id"].clone();
    let (on_matter, _) = all_pages(
        &base,
        access,
        &format!("/api/v4/activities?matter_id={matter}"),
    )
    .await;
    assert_eq!(
        on_matter.len(),
        activities
            .iter()
            .filter(|a| a["matter"]["id"] == matter)
            .count()
    );
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn links_between_resources_point_at_existing_records() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    let ids = |records: &[Value]| {
        records
            .iter()
            .map(|r| r["id"].to_string())
            .collect::<BTreeSet<_>>()
    };
    let (contacts, _) = all_pages(&base, &t.access, "/api/v4/contacts?fields=id,is_client").await;
    let (users, _) = all_pages(&base, &t.access, "/api/v4/users").await;
    let (matters, _) = all_pages(&base, &t.access, "/api/v4/matters?fields=id,client{id}").await;
    let (entries, _) = all_pages(
        &base,
        &t.access,
        "/api/v4/calendar_entries?fields=id,matter{id}",
    )
    .await;
    let (activities, _) = all_pages(
        &base,
        &t.access,
        "/api/v4/activities?fields=id,matter{id},user{id}",
    )
    .await;
    let (contact_ids, user_ids, matter_ids) = (ids(&contacts), ids(&users), ids(&matters));
    let linked = |records: &[Value], field: &str, known: &BTreeSet<String>| {
        let links: Vec<String> = records
            .iter()
            .filter(|r| !r[field].is_null())
            .map(|r| r[field]["id"].to_string())
            .collect();
        assert!(!links.is_empty(), "{field} links exist");
        assert!(
            links.iter().all(|id| known.contains(id)),
            "{field} links resolve"
        );
    };
    linked(&matters, "client", &contact_ids);
    linked(&entries, "matter", &matter_ids);
    linked(&activities, "matter", &matter_ids);
    linked(&activities, "user", &user_ids);
    let clients: BTreeSet<String> = contacts
        .iter()
        .filter(|c| c["is_client"] == true)
        .map(|c| c["id"].to_string())
        .collect();
    assert!(
        matters
            .iter()
            .filter(|m| !m["client"].is_null())
            .all(|m| clients.contains(&m["client"]["id"].to_string()))
    );
}

#[tokio::test]
async fn data_is_deterministic_per_seed_and_separate_per_region() {
    let fetch = |seed: u64| async move {
        let sim = start_with(SimConfig {
            seed,
            rate_limit: None,
            ..SimConfig::default()
        })
        .await;
        let t = connect(&sim, Region::Us, ALL).await;
        let path = "/api/v4/contacts?fields=id,etag,name,primary_email_address,addresses{city}";
        let us = get(&sim.base_url(Region::Us), &t.access, path).await.body;
        let eu_tokens = connect(&sim, Region::Eu, ALL).await;
        let eu = get(&sim.base_url(Region::Eu), &eu_tokens.access, path)
            .await
            .body;
        (us, eu)
    };
    let (first, eu) = fetch(1).await;
    let (again, _) = fetch(1).await;
    let (other, _) = fetch(2).await;
    assert_eq!(first, again);
    assert_ne!(first["data"], other["data"]);
    assert_ne!(first["data"], eu["data"]);
}

#[tokio::test]
async fn api_version_is_echoed_and_unknown_versions_are_gone() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    let default = get(&base, &t.access, "/api/v4/contacts.json").await;
    assert_eq!(default.header("x-api-version"), Some("4.0.13"));
    let pinned = get_with(
        &base,
        &t.access,
        "/api/v4/contacts.json",
        &[("X-API-VERSION", "4.0.5")],
    )
    .await;
    assert_eq!(
        (pinned.status, pinned.header("x-api-version")),
        (StatusCode::OK, Some("4.0.5"))
    );
    for version in ["4.0.99", "3.0.0", "banana"] {
        let gone = get_with(
            &base,
            &t.access,
            "/api/v4/contacts.json",
            &[("X-API-VERSION", version)],
        )
        .await;
        assert_eq!(gone.status, StatusCode::GONE, "{version}");
        assert_eq!(gone.header("x-api-version"), Some(version));
        assert_eq!(error_type(&gone.body), "Gone");
    }
}

#[tokio::test]
async fn a_permission_the_app_lacks_is_403_and_write_implies_read() {
    let sim = start().await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, &["contacts:read", "activities:write"]).await;
    assert_eq!(
        get(&base, &t.access, "/api/v4/contacts.json").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&base, &t.access, "/api/v4/activities.json")
            .await
            .status,
        StatusCode::OK
    );
    for path in [
        "/api/v4/matters.json",
        "/api/v4/calendar_entries",
        "/api/v4/users",
    ] {
        let denied = get(&base, &t.access, path).await;
        assert_eq!(
            (denied.status, error_type(&denied.body)),
            (StatusCode::FORBIDDEN, "ForbiddenError"),
            "{path}"
        );
    }
    let message =
        get(&base, &t.access, "/api/v4/calendar_entries").await.body["error"]["message"].clone();
    assert!(message.as_str().unwrap().contains("calendar:read"));
    assert_eq!(
        get(&base, &t.access, "/api/v4/users/who_am_i").await.status,
        StatusCode::OK
    );
}
