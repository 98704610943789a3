//! What a sync leaves stored when syncs overlap, connections see different records, or
//! Clio changes mid-sync: deletions only within the same visibility, and incremental
//! syncs that start from when the previous sync began. Checked against the simulator's
//! own records (ids and etags).

use std::collections::BTreeMap;
use std::time::Duration;

use clio_sim::{DatasetSize, Region, Resource, SimConfig};
use proto::imports::v1 as import;

use crate::import_jobs::{assert_completed, wait_for_pages};
use crate::stack::{Stack, StackSetup, full_job};

const ALICE: &str = "alice@firm.example";
const BOB: &str = "bob@firm.example";

/// A stack whose simulator (US only, no rate limit) holds `contacts` contacts and answers
/// each list page after `page_delay_ms`.
async fn contacts_stack(test: &str, contacts: u64, page_delay_ms: u64) -> Stack {
    let sim = SimConfig {
        regions: vec![Region::Us],
        dataset: DatasetSize {
            contacts,
            ..DatasetSize::default()
        },
        rate_limit: None,
        page_delay: Some(Duration::from_millis(page_delay_ms)),
        ..SimConfig::default()
    };
    Stack::start(
        test,
        StackSetup {
            sim,
            // Two jobs of one connection may run at once here (an operator may allow it),
            // so the tests see them overlap.
            import: Box::new(|config| config.importer.max_jobs_per_connection = 2),
            ..StackSetup::default()
        },
    )
    .await
}

fn incremental_job(connection: &str) -> import::ImportJob {
    import::ImportJob {
        mode: import::ImportMode::Incremental as i32,
        ..full_job(connection, &["contacts"])
    }
}

/// Submits every job at once and waits until all completed; asserts they ran at the same
/// time (each started before every other finished).
async fn run_overlapping(stack: &Stack, jobs: Vec<import::ImportJob>) -> Vec<import::Job> {
    let mut ids = Vec::new();
    for job in jobs {
        ids.push(stack.submit(job).await);
    }
    let mut done = Vec::new();
    for id in &ids {
        let job = stack.finished(id, Duration::from_secs(60)).await;
        assert_completed(&job);
        done.push(job);
    }
    let started = |job: &import::Job| job.started_at.as_ref().map(|t| (t.seconds, t.nanos));
    let finished = |job: &import::Job| job.finished_at.as_ref().map(|t| (t.seconds, t.nanos));
    for a in &done {
        for b in &done {
            assert!(
                started(a).unwrap() < finished(b).unwrap(),
                "jobs {} and {} did not overlap",
                a.job_id,
                b.job_id
            );
        }
    }
    done
}

async fn run(stack: &Stack, job: import::ImportJob) -> import::Job {
    let id = stack.submit(job).await;
    let done = stack.finished(&id, Duration::from_secs(60)).await;
    assert_completed(&done);
    done
}

fn deleted_by(jobs: &[import::Job]) -> u64 {
    jobs.iter()
        .flat_map(|job| &job.progress)
        .map(|p| p.records_deleted)
        .sum()
}

/// The simulator's live contacts, id → etag, as Clio holds them (read in-process, every
/// record whoever may see it).
fn contacts_in_clio(stack: &Stack) -> BTreeMap<i64, String> {
    let mut all = BTreeMap::new();
    let mut query = "fields=id,etag&limit=200".to_owned();
    loop {
        let bytes = stack
            .sim
            .list_page_in_process(Region::Us, Resource::Contacts, &query)
            .unwrap();
        let page: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for record in page["data"].as_array().unwrap() {
            let etag = record["etag"].as_str().unwrap().to_owned();
            all.insert(record["id"].as_i64().unwrap(), etag);
        }
        match page["meta"]["paging"]["next"].as_str() {
            Some(next) => query = next.split_once('?').unwrap().1.to_owned(),
            None => return all,
        }
    }
}

/// Live (not deleted) stored contacts, id → etag.
async fn stored_live(stack: &Stack) -> BTreeMap<i64, String> {
    let mut db = stack.import_database.connect().await;
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT clio_id, etag FROM contacts WHERE deleted_at IS NULL")
            .fetch_all(&mut db)
            .await
            .unwrap();
    rows.into_iter().collect()
}

/// Stored contacts marked deleted, in id order.
async fn marked_deleted(stack: &Stack) -> Vec<i64> {
    let mut db = stack.import_database.connect().await;
    sqlx::query_scalar("SELECT clio_id FROM contacts WHERE deleted_at IS NOT NULL ORDER BY clio_id")
        .fetch_all(&mut db)
        .await
        .unwrap()
}

/// Asserts the stored live set is exactly Clio's, naming the first differences.
pub(crate) async fn assert_stored_as_in_clio(stack: &Stack) {
    let in_clio = contacts_in_clio(stack);
    let stored = stored_live(stack).await;
    let missing: Vec<_> = in_clio
        .iter()
        .filter(|(id, etag)| stored.get(id) != Some(etag))
        .map(|(id, _)| *id)
        .take(5)
        .collect();
    let extra: Vec<_> = stored
        .keys()
        .filter(|id| !in_clio.contains_key(id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} live stored, {} in Clio; missing or stale: {missing:?}; not in Clio: {extra:?}",
        stored.len(),
        in_clio.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_full_syncs_of_one_account_never_delete_each_others_records() {
    let stack = contacts_stack("overlapping_syncs", 2_000, 40).await;
    let alice = stack.connect(&["contacts:read"], ALICE, 1).await;
    let bob = stack.connect(&["contacts:read"], BOB, 2).await;

    // Two people's connections to the same Clio account, syncing at once.
    let first = run_overlapping(
        &stack,
        vec![
            full_job(&alice, &["contacts"]),
            full_job(&bob, &["contacts"]),
        ],
    )
    .await;
    assert_eq!(deleted_by(&first), 0);
    assert_stored_as_in_clio(&stack).await;

    // Again, with a resubmitted job of one connection running beside its first.
    let second = run_overlapping(
        &stack,
        vec![
            full_job(&alice, &["contacts"]),
            full_job(&bob, &["contacts"]),
            full_job(&alice, &["contacts"]),
        ],
    )
    .await;
    assert_eq!(deleted_by(&second), 0);
    assert!(marked_deleted(&stack).await.is_empty());
    assert_stored_as_in_clio(&stack).await;

    // A real deletion between syncs is still found, exactly once.
    let ids: Vec<i64> = contacts_in_clio(&stack).into_keys().collect();
    let gone = [ids[3], ids[1_990]];
    for id in gone {
        stack.delete_contact(id).await;
    }
    let third = run_overlapping(
        &stack,
        vec![
            full_job(&alice, &["contacts"]),
            full_job(&bob, &["contacts"]),
        ],
    )
    .await;
    assert_eq!(deleted_by(&third), 2);
    assert_eq!(marked_deleted(&stack).await, gone.to_vec());
    assert_stored_as_in_clio(&stack).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_that_sees_fewer_records_never_deletes_what_it_cannot_see() {
    let stack = contacts_stack("narrower_visibility", 1_000, 0).await;
    let alice = stack.connect(&["contacts:read"], ALICE, 1).await;
    let bob = stack.connect(&["contacts:read"], BOB, 2).await;
    let ids: Vec<i64> = contacts_in_clio(&stack).into_keys().collect();
    // Bob's Clio user may not see every tenth contact.
    let restricted: Vec<String> = ids.iter().step_by(10).map(i64::to_string).collect();
    let restricted_refs: Vec<&str> = restricted.iter().map(String::as_str).collect();
    let admin = stack.sim.admin();
    admin
        .hide_records(Region::Us, 2, Resource::Contacts, &restricted_refs)
        .await
        .unwrap();

    run(&stack, full_job(&alice, &["contacts"])).await;
    let narrow = run(&stack, full_job(&bob, &["contacts"])).await;
    assert_eq!(narrow.progress[0].records_fetched, 900);
    assert_eq!(narrow.progress[0].records_deleted, 0);
    assert_stored_as_in_clio(&stack).await;

    // Bob loses sight of one more contact he had imported (Alice still sees it); one
    // contact only Alice sees and one they both see are deleted in Clio.
    let (lost_sight, hidden_gone, shared_gone) = (ids[5], ids[10], ids[11]);
    let mut more = restricted_refs.clone();
    let lost = lost_sight.to_string();
    more.push(&lost);
    admin
        .hide_records(Region::Us, 2, Resource::Contacts, &more)
        .await
        .unwrap();
    stack.delete_contact(hidden_gone).await;
    stack.delete_contact(shared_gone).await;

    // Bob's sync alone proves nothing gone: Alice imported all three and still vouches.
    let narrow = run(&stack, full_job(&bob, &["contacts"])).await;
    assert_eq!(narrow.progress[0].records_deleted, 0);
    assert!(marked_deleted(&stack).await.is_empty());
    assert!(stored_live(&stack).await.contains_key(&lost_sight));

    // Once Alice no longer sees them either, both deletions are recorded.
    let wide = run(&stack, full_job(&alice, &["contacts"])).await;
    assert_eq!(wide.progress[0].records_deleted, 2);
    assert_eq!(marked_deleted(&stack).await, vec![hidden_gone, shared_gone]);
    assert_stored_as_in_clio(&stack).await;

    // And Bob's incremental sync (changes, then an id sweep) deletes nothing he cannot see.
    let narrow = run(&stack, incremental_job(&bob)).await;
    assert_eq!(narrow.progress[0].records_deleted, 0);
    assert_stored_as_in_clio(&stack).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edit_to_a_page_already_read_is_picked_up_by_the_next_incremental() {
    let stack = contacts_stack("mid_sync_edit", 2_000, 60).await;
    let alice = stack.connect(&["contacts:read"], ALICE, 1).await;
    let ids: Vec<i64> = contacts_in_clio(&stack).into_keys().collect();
    let (early, late) = (ids[10].to_string(), ids[1_995].to_string());
    let admin = stack.sim.admin();

    let job = stack.submit(full_job(&alice, &["contacts"])).await;
    wait_for_pages(&stack, &job, 2).await;
    // Page 1 was read; someone edits a contact on it, and a minute later one on the last
    // page, which the sync has yet to read.
    let edited_early = admin
        .update_record(
            Region::Us,
            Resource::Contacts,
            &early,
            serde_json::json!({"name": "Edited Mid Sync"}),
        )
        .await
        .unwrap();
    admin.advance_clock(Duration::from_secs(60)).await.unwrap();
    admin
        .update_record(
            Region::Us,
            Resource::Contacts,
            &late,
            serde_json::json!({"name": "Edited Later"}),
        )
        .await
        .unwrap();
    let done = stack.finished(&job, Duration::from_secs(60)).await;
    assert_completed(&done);
    assert!(
        done.progress[0].pages >= 10,
        "the edit came after the sync's end"
    );
    // The sync read the late edit but not the early one.
    let stored = stored_live(&stack).await;
    assert_ne!(
        stored.get(&ids[10]).map(String::as_str),
        edited_early["etag"].as_str()
    );

    let incremental = run(&stack, incremental_job(&alice)).await;
    assert!(incremental.progress[0].records_written >= 1);
    let mut db = stack.import_database.connect().await;
    let (etag, updated_at, name): (String, chrono::DateTime<chrono::Utc>, String) = sqlx::query_as(
        "SELECT etag, updated_at, data->>'name' FROM contacts WHERE clio_id = $1::bigint",
    )
    .bind(&early)
    .fetch_one(&mut db)
    .await
    .unwrap();
    let in_clio = admin
        .record(Region::Us, Resource::Contacts, &early)
        .await
        .unwrap();
    assert_eq!(Some(etag.as_str()), in_clio["etag"].as_str());
    assert_eq!(
        Some(updated_at),
        in_clio["updated_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc())
    );
    assert_eq!(name, "Edited Mid Sync");
    assert_stored_as_in_clio(&stack).await;
    stack.stop().await;
}
