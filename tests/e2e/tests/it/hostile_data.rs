//! Hostile data from Clio: records Postgres cannot hold as sent (a NUL, a lone surrogate,
//! nesting deeper than the parser allows, a record over the size limit) among good ones.
//! The job completes, the good records are stored exactly, each bad one is listed in
//! `skipped_records` with its reason and counted in the job's progress. A redirect and an
//! oversized page fail the job for good (FAILED, one attempt), never a retry loop.

use std::time::Duration;

use clio_sim::{DatasetSize, Fault, Region, Resource, SimConfig};
use proto::imports::v1 as import;
use serde_json::{Value, json};

use crate::stack::{Stack, StackSetup, full_job};

const PERSON: &str = "mallory@firm.example";

fn sim(contacts: u64) -> SimConfig {
    SimConfig {
        regions: vec![Region::Us],
        dataset: DatasetSize {
            contacts,
            ..DatasetSize::default()
        },
        rate_limit: None,
        ..SimConfig::default()
    }
}

fn status_of(job: &import::Job) -> import::JobStatus {
    import::JobStatus::try_from(job.status).unwrap()
}

/// Rows of `skipped_records` for the job: (clio_id, reason), in the order skipped.
async fn skipped(stack: &Stack, job_id: &str) -> Vec<(Option<String>, String)> {
    let mut db = stack.import_database.connect().await;
    sqlx::query_as(
        "SELECT clio_id, reason FROM skipped_records WHERE job_id = $1::uuid ORDER BY id",
    )
    .bind(job_id)
    .fetch_all(&mut db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_postgres_cannot_hold_are_skipped_and_the_job_completes() {
    let stack = Stack::start(
        "hostile_records",
        StackSetup {
            sim: sim(20),
            // Several pages, so bad records sit on pages with good ones.
            import: Box::new(|config| config.importer.page_size = 10),
            ..StackSetup::default()
        },
    )
    .await;
    let connection = stack.connect(&["contacts:read"], PERSON, 1).await;
    let admin = stack.sim.admin();

    // Good, if unusual: stored exactly as sent.
    let odd_name = "Zoë 😀 \"quoted\" \\ back\tslash \u{1b}[31m é";
    let odd = stack.create_contact(odd_name).await;
    // A NUL: valid JSON, but Postgres jsonb cannot hold \u0000.
    let nul = stack.create_contact("before\u{0}after").await;
    // A lone surrogate and deep nesting: only as raw JSON text.
    let surrogate = stack.create_contact("placeholder").await;
    admin
        .set_raw_record(
            Region::Us,
            Resource::Contacts,
            &surrogate.to_string(),
            &format!(r#"{{"id":{surrogate},"etag":"s","name":"x\ud800y"}}"#),
        )
        .await
        .unwrap();
    let deep = stack.create_contact("placeholder").await;
    admin
        .set_raw_record(
            Region::Us,
            Resource::Contacts,
            &deep.to_string(),
            &format!(
                r#"{{"id":{deep},"etag":"d","name":{}"deep"{}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
        )
        .await
        .unwrap();
    // 2 MB: over importer.max_record_bytes (1 MiB by default).
    let big = stack.create_contact(&"x".repeat(2 << 20)).await;
    // More good records after the bad ones.
    let after = stack.create_contact("after the bad ones").await;

    let job_id = stack.submit(full_job(&connection, &["contacts"])).await;
    let done = stack.finished(&job_id, Duration::from_secs(60)).await;
    assert_eq!(
        status_of(&done),
        import::JobStatus::Completed,
        "{}",
        done.failure_reason
    );
    assert_eq!(done.attempts, 1);
    let progress = &done.progress[0];
    assert_eq!(progress.records_skipped, 4);
    assert_eq!(progress.records_fetched, 20 + 6);
    assert_eq!(progress.records_written, 20 + 2);

    // Every good record is stored, exactly as the simulator holds it (for the fields the
    // importer asked for); no bad one is.
    assert_eq!(stack.stored("contacts").await, (22, 22));
    let mut db = stack.import_database.connect().await;
    let rows: Vec<(i64, Value)> = sqlx::query_as("SELECT clio_id, data FROM contacts")
        .fetch_all(&mut db)
        .await
        .unwrap();
    let bad = [&nul, &surrogate, &deep, &big].map(|id| id.key().unwrap());
    for (id, data) in &rows {
        assert!(!bad.contains(id), "bad record {id} was stored");
        let in_clio = admin
            .record(Region::Us, Resource::Contacts, &id.to_string())
            .await
            .unwrap();
        for (field, value) in data.as_object().unwrap() {
            assert_eq!(&in_clio[field], value, "contact {id} field {field}");
        }
    }
    let stored_name = |id: i64| {
        rows.iter()
            .find(|(row, _)| *row == id)
            .map(|(_, data)| data["name"].clone())
    };
    assert_eq!(stored_name(odd.key().unwrap()), Some(json!(odd_name)));
    assert_eq!(
        stored_name(after.key().unwrap()),
        Some(json!("after the bad ones"))
    );

    // Each bad record is listed with its id and reason.
    let skipped = skipped(&stack, &job_id).await;
    let reason_of = |id: &clio_sim::RecordId| {
        skipped
            .iter()
            .find(|(clio_id, _)| clio_id.as_deref() == Some(id.to_string().as_str()))
            .map(|(_, reason)| reason.clone())
            .unwrap_or_else(|| panic!("record {id} not in skipped_records: {skipped:?}"))
    };
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    assert!(reason_of(&nul).contains("NUL character"), "{skipped:?}");
    assert!(reason_of(&surrogate).contains("hex escape"), "{skipped:?}");
    assert!(reason_of(&deep).contains("recursion limit"), "{skipped:?}");
    assert!(reason_of(&big).contains("max_record_bytes"), "{skipped:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirect_or_an_oversized_page_fails_the_job_for_good() {
    let stack = Stack::start(
        "hostile_answers",
        StackSetup {
            sim: sim(20),
            import: Box::new(|config| config.importer.max_page_bytes = 64 * 1024),
            ..StackSetup::default()
        },
    )
    .await;
    let connection = stack.connect(&["contacts:read"], PERSON, 1).await;

    // A redirect (to the very same page) is not followed: the job fails naming it.
    stack
        .fault(Fault::Redirect {
            status: 302,
            count: Some(1),
        })
        .await;
    let job_id = stack.submit(full_job(&connection, &["contacts"])).await;
    let done = stack.finished(&job_id, Duration::from_secs(60)).await;
    assert_eq!(status_of(&done), import::JobStatus::Failed);
    assert_eq!(done.attempts, 1);
    assert!(
        done.failure_reason.contains("(302)") && done.failure_reason.contains("redirect"),
        "{}",
        done.failure_reason
    );
    assert_eq!(stack.stored("contacts").await, (0, 0));

    // The next job (no redirect) reads fine.
    let job_id = stack.submit(full_job(&connection, &["contacts"])).await;
    let done = stack.finished(&job_id, Duration::from_secs(60)).await;
    assert_eq!(status_of(&done), import::JobStatus::Completed);

    // A page over importer.max_page_bytes: one record of 100 KB (well under the record
    // limit) makes it so.
    stack.create_contact(&"y".repeat(100 * 1024)).await;
    let job_id = stack.submit(full_job(&connection, &["contacts"])).await;
    let done = stack.finished(&job_id, Duration::from_secs(60)).await;
    assert_eq!(status_of(&done), import::JobStatus::Failed);
    assert_eq!(done.attempts, 1);
    assert!(
        done.failure_reason.contains("max_page_bytes (65536 bytes)"),
        "{}",
        done.failure_reason
    );
    stack.stop().await;
}
