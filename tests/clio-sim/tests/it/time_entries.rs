//! What billing suggestions need: calendar entries worth billing, the time entries that
//! already bill some of them, creating one, and losing the answer to a create.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::DateTime;
use clio_sim::{DatasetSize, Fault, Region, SimConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const ENTRY_FIELDS: &str = "id,summary,start_at,end_at,all_day,matter{id},calendar_owner{id}";
const ACTIVITY_FIELDS: &str = "id,type,date,quantity,matter{id},user{id},calendar_entry{id}";

/// Seconds from `start_at` to `end_at`.
fn seconds(entry: &Value) -> i64 {
    let at = |field: &str| {
        DateTime::parse_from_rfc3339(entry[field].as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    at("end_at") - at("start_at")
}

fn is_cancelled(entry: &Value) -> bool {
    entry["summary"]
        .as_str()
        .unwrap()
        .starts_with("Cancelled: ")
}

/// A simulator with `size` records of every resource, one US connection of every
/// permission, and every calendar entry and activity it serves.
async fn listed(size: u64) -> (Vec<Value>, Vec<Value>) {
    let sim = start_with(SimConfig {
        regions: vec![Region::Us],
        dataset: DatasetSize::uniform(size),
        rate_limit: None,
        ..SimConfig::default()
    })
    .await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    let (entries, _) = all_pages(
        &base,
        &t.access,
        &format!("/api/v4/calendar_entries?fields={ENTRY_FIELDS}"),
    )
    .await;
    let (activities, _) = all_pages(
        &base,
        &t.access,
        &format!("/api/v4/activities?fields={ACTIVITY_FIELDS}"),
    )
    .await;
    sim.stop().await;
    (entries, activities)
}

#[tokio::test]
async fn calendar_entries_hold_every_case_a_billing_suggestion_meets() {
    let (entries, activities) = listed(600).await;
    assert_eq!((entries.len(), activities.len()), (600, 600));
    let share = |matches: &dyn Fn(&Value) -> bool| {
        entries.iter().filter(|entry| matches(entry)).count() * 100 / entries.len()
    };
    let summary_has = |word: &'static str| {
        move |entry: &Value| {
            entry["summary"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(word)
        }
    };
    let timed = |entry: &Value| entry["all_day"] == false;
    for (what, percent, range) in [
        ("meetings", share(&summary_has("meeting")), 25..60),
        ("court appearances", share(&summary_has("court")), 10..35),
        ("calls", share(&summary_has("call")), 20..45),
        ("cancelled", share(&is_cancelled), 3..15),
        ("all-day", share(&|e| e["all_day"] == true), 5..18),
        (
            "without a matter",
            share(&|e| e["matter"].is_null()),
            15..35,
        ),
        (
            "under 6 minutes",
            share(&|e| timed(e) && seconds(e) < 360),
            5..16,
        ),
        (
            "not whole 6 minutes",
            share(&|e| timed(e) && seconds(e) % 360 != 0),
            40..90,
        ),
    ] {
        assert!(range.contains(&percent), "{what}: {percent}%");
    }
    assert!(
        entries
            .iter()
            .filter(|e| e["all_day"] == true)
            .all(|e| seconds(e) == 86_400),
        "all-day entries span the day"
    );

    // Already billed: activity `i` is the time entry of calendar entry `i`.
    let by_id: BTreeMap<String, &Value> = entries
        .iter()
        .map(|entry| (entry["id"].as_str().unwrap().to_owned(), entry))
        .collect();
    let mut billed = BTreeSet::new();
    for activity in activities.iter().filter(|a| !a["calendar_entry"].is_null()) {
        let id = activity["calendar_entry"]["id"].as_str().unwrap();
        let entry = by_id[id];
        assert!(billed.insert(id.to_owned()), "{id} is billed once");
        assert_eq!(activity["type"], "TimeEntry");
        assert_eq!(activity["matter"]["id"], entry["matter"]["id"]);
        assert!(!is_cancelled(entry) && entry["all_day"] == false, "{entry}");
        assert_eq!(
            activity["date"].as_str(),
            entry["start_at"].as_str().map(|s| &s[..10])
        );
        let quantity = activity["quantity"].as_i64().unwrap();
        assert!(
            quantity % 360 == 0 && quantity >= seconds(entry) && quantity < seconds(entry) + 360,
            "rounded up to 6 minutes: {quantity} for {}",
            seconds(entry)
        );
    }
    let percent = billed.len() * 100 / entries.len();
    assert!((8..25).contains(&percent), "billed: {percent}%");

    assert_eq!(
        listed(600).await,
        (entries, activities),
        "the same seed gives the same data"
    );
}

#[tokio::test]
async fn activities_filter_by_calendar_entry_and_matter() {
    let (sim, base, t) = us_connected().await;
    let (activities, _) = all_pages(
        &base,
        &t.access,
        &format!("/api/v4/activities?fields={ACTIVITY_FIELDS}"),
    )
    .await;
    let linked = activities
        .iter()
        .find(|a| !a["calendar_entry"].is_null())
        .expect("some calendar entry is billed");
    let entry = linked["calendar_entry"]["id"].as_str().unwrap();
    let found = get(
        &base,
        &t.access,
        &format!("/api/v4/activities?calendar_entry_id={entry}&fields=id"),
    )
    .await;
    assert_eq!(found.body["data"], json!([{"id": linked["id"]}]));
    let matter = &linked["matter"]["id"];
    let (of_matter, _) = all_pages(
        &base,
        &t.access,
        &format!("/api/v4/activities?matter_id={matter}&calendar_entry_id={entry}&fields=id"),
    )
    .await;
    assert_eq!(of_matter.len(), 1);

    let (entries, _) = all_pages(&base, &t.access, "/api/v4/calendar_entries?fields=id").await;
    let unbilled = entries
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .find(|id| activities.iter().all(|a| a["calendar_entry"]["id"] != *id))
        .unwrap();
    let none = get(
        &base,
        &t.access,
        &format!("/api/v4/activities?calendar_entry_id={unbilled}"),
    )
    .await;
    assert_eq!(none.body["data"], json!([]));
    sim.stop().await;
}

/// An unbilled, timed, uncancelled calendar entry with a matter.
async fn billable_entry(base: &str, token: &str) -> Value {
    let (entries, _) = all_pages(
        base,
        token,
        &format!("/api/v4/calendar_entries?fields={ENTRY_FIELDS}"),
    )
    .await;
    for entry in entries {
        if entry["matter"].is_null() || entry["all_day"] == true || is_cancelled(&entry) {
            continue;
        }
        let id = entry["id"].as_str().unwrap();
        let linked = get(
            base,
            token,
            &format!("/api/v4/activities?calendar_entry_id={id}"),
        )
        .await;
        if linked.body["data"] == json!([]) {
            return entry;
        }
    }
    panic!("no billable calendar entry");
}

fn time_entry_for(entry: &Value, user: &Value) -> Value {
    json!({"data": {
        "type": "TimeEntry",
        "date": &entry["start_at"].as_str().unwrap()[..10],
        "quantity": 1_800,
        "matter": {"id": entry["matter"]["id"]},
        "user": {"id": user},
        "note": format!("Billed from calendar: {}", entry["summary"].as_str().unwrap()),
        "calendar_entry": {"id": entry["id"]},
        "suggestion_id": "ignored",
    }})
}

#[tokio::test]
async fn a_created_time_entry_is_listed_filtered_shown_and_counted_in_its_account_only() {
    let sim = start_with(SimConfig {
        regions: vec![Region::Us],
        accounts: 2,
        rate_limit: None,
        ..SimConfig::default()
    })
    .await;
    let base = sim.base_url(Region::Us);
    let admin = sim.admin();
    let t = connect(&sim, Region::Us, ALL).await;
    let me = get(&base, &t.access, "/api/v4/users/who_am_i").await.body["data"]["id"].clone();
    let entry = billable_entry(&base, &t.access).await;
    let url = format!("{base}/api/v4/activities.json?fields={ACTIVITY_FIELDS},note");
    let created = send_json(http().post(&url), &t.access, &time_entry_for(&entry, &me)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let data = &created.body["data"];
    assert_eq!(data["calendar_entry"]["id"], entry["id"]);
    assert_eq!(data["user"]["id"], me);
    assert!(data.get("suggestion_id").is_none() && data.get("etag").is_none());

    let id = &data["id"];
    let linked = get(
        &base,
        &t.access,
        &format!(
            "/api/v4/activities?calendar_entry_id={}&fields=id",
            entry["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(linked.body["data"], json!([{"id": id}]));
    // Generated history ends at 2026-01-01; only the new entry changed since.
    let (since, _) = all_pages(
        &base,
        &t.access,
        "/api/v4/activities?updated_since=2026-01-01T00:00:00Z&fields=id",
    )
    .await;
    assert_eq!(since, [json!({"id": id})]);
    let shown = get(
        &base,
        &t.access,
        &format!("/api/v4/activities/{id}.json?fields=note"),
    )
    .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert!(
        shown.body["data"]["note"]
            .as_str()
            .unwrap()
            .starts_with("Billed from calendar")
    );

    let created_here = admin.created_activities(Region::Us, 1).await.unwrap();
    assert_eq!(created_here.len(), 1);
    assert_eq!(&created_here[0]["id"], id);
    assert_eq!(created_here[0]["calendar_entry"]["id"], entry["id"]);

    let other = connect_in_account(&sim, Region::Us, &app(ALL), 2, 1).await;
    let elsewhere = get(&base, &other.access, &format!("/api/v4/activities/{id}")).await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
    assert!(
        admin
            .created_activities(Region::Us, 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        admin.created_activities(Region::Us, 3).await.is_err(),
        "no such account"
    );
    sim.stop().await;
}

#[tokio::test]
async fn creates_need_activities_write_and_count_against_the_rate_limit() {
    let sim = start_with(SimConfig {
        regions: vec![Region::Us],
        rate_limit: Some(clio_sim::RateLimit {
            limit: 3,
            window: Duration::from_secs(60),
        }),
        ..SimConfig::default()
    })
    .await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    let me = get(&base, &t.access, "/api/v4/users/who_am_i").await.body["data"]["id"].clone();
    let body = json!({"data": {"type": "TimeEntry", "date": "2026-06-09", "quantity": 360,
        "matter": {"id": 1_600_000_001_i64}, "user": {"id": me}}});
    let url = format!("{base}/api/v4/activities");
    let mut remaining = Vec::new();
    for _ in 0..2 {
        let created = send_json(http().post(&url), &t.access, &body).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        remaining.push(created.header("x-ratelimit-remaining").map(str::to_owned));
    }
    assert_eq!(remaining, [Some("1".to_owned()), Some("0".to_owned())]);
    let limited = send_json(http().post(&url), &t.access, &body).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        sim.admin()
            .created_activities(Region::Us, 1)
            .await
            .unwrap()
            .len(),
        2,
        "a refused create creates nothing"
    );

    sim.admin().reset_rate_limits(Region::Us).await.unwrap();
    let reader = connect(&sim, Region::Us, &["activities:read", "matters:read"]).await;
    let denied = send_json(http().post(&url), &reader.access, &body).await;
    assert_eq!(
        (denied.status, error_type(&denied.body)),
        (StatusCode::FORBIDDEN, "ForbiddenError")
    );
    assert!(
        denied.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("activities:write")
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_dropped_create_still_creates_the_entry_once() {
    let (sim, base, t) = us_connected().await;
    let admin = sim.admin();
    let me = get(&base, &t.access, "/api/v4/users/who_am_i").await.body["data"]["id"].clone();
    let entry = billable_entry(&base, &t.access).await;
    let body = time_entry_for(&entry, &me);
    let url = format!("{base}/api/v4/activities");
    admin
        .inject(
            Region::Us,
            Fault::DropAfterCreate {
                count: 1,
                delay_ms: None,
            },
        )
        .await
        .unwrap();
    let lookup = format!(
        "/api/v4/activities?calendar_entry_id={}&fields=id",
        entry["id"].as_str().unwrap()
    );
    assert_eq!(
        get(&base, &t.access, &lookup).await.status,
        StatusCode::OK,
        "reads are untouched"
    );
    let lost = http()
        .post(&url)
        .bearer_auth(&t.access)
        .json(&body)
        .send()
        .await;
    assert!(lost.is_err(), "no answer: {lost:?}");
    let found = get(&base, &t.access, &lookup).await;
    assert_eq!(
        found.body["data"].as_array().unwrap().len(),
        1,
        "created anyway"
    );
    assert_eq!(
        admin.created_activities(Region::Us, 1).await.unwrap().len(),
        1
    );
    let next = send_json(http().post(&url), &t.access, &body).await;
    assert_eq!(
        next.status,
        StatusCode::CREATED,
        "worn off after one create"
    );

    // Longer than the client waits: it times out, the entry exists.
    admin
        .inject(
            Region::Us,
            Fault::DropAfterCreate {
                count: 1,
                delay_ms: Some(5_000),
            },
        )
        .await
        .unwrap();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let timed_out = impatient
        .post(&url)
        .bearer_auth(&t.access)
        .json(&body)
        .send()
        .await;
    assert!(timed_out.is_err_and(|e| e.is_timeout()));
    assert_eq!(
        admin.created_activities(Region::Us, 1).await.unwrap().len(),
        3
    );
    admin.clear_faults(Region::Us).await.unwrap();
}

#[tokio::test]
async fn a_million_activities_answer_a_calendar_entry_lookup_at_once() {
    let sim = start_with(SimConfig {
        regions: vec![Region::Us],
        dataset: DatasetSize::uniform(1_000_000),
        rate_limit: None,
        ..SimConfig::default()
    })
    .await;
    let base = sim.base_url(Region::Us);
    let t = connect(&sim, Region::Us, ALL).await;
    let page = get(
        &base,
        &t.access,
        &format!("/api/v4/activities?limit=200&fields={ACTIVITY_FIELDS}"),
    )
    .await;
    let linked: Vec<&Value> = page.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| !a["calendar_entry"].is_null())
        .collect();
    assert!(!linked.is_empty());
    // A scan of every activity takes many seconds in a debug build; this visits one.
    let started = std::time::Instant::now();
    for activity in linked {
        let entry = activity["calendar_entry"]["id"].as_str().unwrap();
        let found = get(
            &base,
            &t.access,
            &format!("/api/v4/activities?calendar_entry_id={entry}&fields=id"),
        )
        .await;
        assert_eq!(found.body["data"], json!([{"id": activity["id"]}]));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    sim.stop().await;
}
