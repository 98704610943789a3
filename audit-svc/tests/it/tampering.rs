//! Someone with database access edits, deletes or reorders rows (disabling the
//! append-only trigger as superuser first); Verify names the first broken event and why.
//! That includes an edit whose every later hash and chain head were recomputed, which
//! only the signed checkpoints can reveal.

use audit_svc::canonical::chain_hash;
use audit_svc::event::EventRecord;
use audit_svc::store::{EVENT_COLUMNS, decode_event};
use harness::TestDatabase;
use proto::audit::v1::{VerifyRequest, VerifyResponse};
use proto::common::v1 as pb;
use sqlx::Connection;

use crate::support::{Ev, RunningAudit, Setup, compliance, import_events, start};

/// 30 events of `firm-a` (checkpoints at 10, 20, 30) and 5 of `firm-b`.
async fn recorded(database: &TestDatabase) -> (RunningAudit, Vec<String>) {
    let audit = start(database, Setup::default()).await;
    let stored = audit.record(import_events("firm-a", 30)).await.unwrap();
    audit.record(import_events("firm-b", 5)).await.unwrap();
    let ids = stored.events.into_iter().map(|e| e.event_id).collect();
    (audit, ids)
}

async fn verify(audit: &RunningAudit, tenant: &str, from: u64, to: u64) -> VerifyResponse {
    audit
        .audit()
        .await
        .verify(compliance(VerifyRequest {
            tenant: tenant.into(),
            from_sequence: from,
            to_sequence: to,
        }))
        .await
        .unwrap()
        .into_inner()
}

/// Runs `statements` as the superuser with the append-only triggers off, like an attacker.
async fn tamper(database: &TestDatabase, statements: &[&str]) {
    let mut db = database.connect().await;
    let mut tx = db.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE checkpoints DISABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    for statement in statements {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    sqlx::query("ALTER TABLE events ENABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE checkpoints ENABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

fn broken(verdict: &VerifyResponse) -> (u64, String, String) {
    assert!(!verdict.ok, "{verdict:?}");
    let link = verdict.first_broken.clone().unwrap();
    (link.sequence, link.event_id, link.reason)
}

#[tokio::test]
async fn an_intact_chain_verifies_whole_and_by_range() {
    let database = TestDatabase::create().await;
    let (audit, _) = recorded(&database).await;
    let whole = verify(&audit, "firm-a", 0, 0).await;
    assert!(whole.ok, "{whole:?}");
    assert_eq!((whole.events_checked, whole.checkpoints_checked), (30, 3));
    let range = verify(&audit, "firm-a", 12, 25).await;
    assert!(range.ok, "{range:?}");
    assert_eq!((range.events_checked, range.checkpoints_checked), (14, 1));
    // The newest signed checkpoint is named whatever the range (every 10 events here).
    for verdict in [&whole, &range] {
        assert_eq!(verdict.last_checkpoint_sequence, 30, "{verdict:?}");
        assert!(verdict.last_checkpoint_signed_at.is_some(), "{verdict:?}");
    }
    assert!(verify(&audit, "firm-b", 0, 0).await.ok);
    audit.stop().await;
}

#[tokio::test]
async fn an_edited_row_is_named() {
    let database = TestDatabase::create().await;
    let (audit, ids) = recorded(&database).await;
    tamper(
        &database,
        &["UPDATE events SET reason = 'nothing to see' WHERE tenant = 'firm-a' AND sequence = 15"],
    )
    .await;
    let (sequence, event_id, reason) = broken(&verify(&audit, "firm-a", 0, 0).await);
    assert_eq!((sequence, event_id.as_str()), (15, ids[14].as_str()));
    assert!(reason.starts_with("edited"), "{reason}");
    // Another tenant's chain is untouched.
    assert!(verify(&audit, "firm-b", 0, 0).await.ok);
    audit.stop().await;
}

#[tokio::test]
async fn a_deleted_row_is_named() {
    let database = TestDatabase::create().await;
    let (audit, ids) = recorded(&database).await;
    tamper(
        &database,
        &["DELETE FROM events WHERE tenant = 'firm-a' AND sequence = 7"],
    )
    .await;
    let (sequence, event_id, reason) = broken(&verify(&audit, "firm-a", 0, 0).await);
    assert_eq!((sequence, event_id.as_str()), (8, ids[7].as_str()));
    assert!(reason.starts_with("missing event: sequence 7"), "{reason}");
    audit.stop().await;
}

#[tokio::test]
async fn a_deleted_tail_is_found_from_the_checkpoints_and_the_head() {
    let database = TestDatabase::create().await;
    let (audit, ids) = recorded(&database).await;
    tamper(
        &database,
        &["DELETE FROM events WHERE tenant = 'firm-a' AND sequence > 27"],
    )
    .await;
    let (sequence, event_id, reason) = broken(&verify(&audit, "firm-a", 0, 0).await);
    assert_eq!((sequence, event_id.as_str()), (28, ids[26].as_str()));
    assert!(reason.starts_with("missing events"), "{reason}");
    audit.stop().await;
}

#[tokio::test]
async fn reordered_rows_are_named() {
    let database = TestDatabase::create().await;
    let (audit, ids) = recorded(&database).await;
    // Swap sequences 12 and 13 (through a free number: the key is unique).
    tamper(
        &database,
        &[
            "UPDATE events SET sequence = 1000 WHERE tenant = 'firm-a' AND sequence = 12",
            "UPDATE events SET sequence = 12 WHERE tenant = 'firm-a' AND sequence = 13",
            "UPDATE events SET sequence = 13 WHERE tenant = 'firm-a' AND sequence = 1000",
        ],
    )
    .await;
    let (sequence, event_id, reason) = broken(&verify(&audit, "firm-a", 0, 0).await);
    // Position 12 now holds the event that was 13th.
    assert_eq!((sequence, event_id.as_str()), (12, ids[12].as_str()));
    assert!(reason.starts_with("reordered"), "{reason}");
    assert!(reason.contains(&ids[11]), "{reason}");
    audit.stop().await;
}

#[tokio::test]
async fn a_forged_checkpoint_is_named() {
    let database = TestDatabase::create().await;
    let (audit, ids) = recorded(&database).await;
    tamper(
        &database,
        &[
            "UPDATE checkpoints SET signed_at = signed_at + interval '1 day' \
           WHERE tenant = 'firm-a' AND sequence = 20",
        ],
    )
    .await;
    let (sequence, event_id, reason) = broken(&verify(&audit, "firm-a", 0, 0).await);
    assert_eq!((sequence, event_id.as_str()), (20, ids[19].as_str()));
    assert!(reason.starts_with("bad checkpoint signature"), "{reason}");
    audit.stop().await;
}

/// `tenant`'s stored events from `from` on, as the service reads them.
async fn stored_from(database: &TestDatabase, tenant: &str, from: i64) -> Vec<EventRecord> {
    let mut db = database.connect().await;
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE tenant = $1 AND sequence >= $2 ORDER BY sequence"
    );
    let rows = sqlx::query(&sql)
        .bind(tenant)
        .bind(from)
        .fetch_all(&mut db)
        .await
        .unwrap();
    rows.iter().map(|row| decode_event(row).unwrap()).collect()
}

/// The statements of a careful attacker: edit the reason of the first of `records`, then
/// re-link it and every later event with the library's own canonical form and chain rule,
/// and move the chain head, so the hash chain alone is consistent again.
fn rewrite(mut records: Vec<EventRecord>, reason: &str) -> Vec<String> {
    records[0].body.reason = reason.into();
    let mut prev = records[0].prev_hash.clone();
    let mut statements = Vec::new();
    for record in &mut records {
        record.prev_hash.clone_from(&prev);
        record.hash = chain_hash(&record.prev_hash, &record.canonical_bytes());
        statements.push(format!(
            "UPDATE events SET reason = '{}', prev_hash = '{}', hash = '{}' \
             WHERE tenant = '{}' AND sequence = {}",
            record.body.reason, record.prev_hash, record.hash, record.body.tenant, record.sequence
        ));
        prev.clone_from(&record.hash);
    }
    let last = records.last().unwrap();
    statements.push(format!(
        "UPDATE chain_heads SET last_hash = '{}' WHERE tenant = '{}'",
        last.hash, last.body.tenant
    ));
    statements
}

#[tokio::test]
async fn a_rewritten_history_is_named_at_the_first_checkpoint_over_the_old_head() {
    let database = TestDatabase::create().await;
    let (audit, ids) = recorded(&database).await;
    let records = stored_from(&database, "firm-a", 15).await;
    let statements = rewrite(records, "nothing to see");
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    tamper(&database, &statements).await;

    // The edit and the re-linked events between checkpoints pass the plain chain checks...
    let between = verify(&audit, "firm-a", 11, 19).await;
    assert!(between.ok, "{between:?}");
    assert_eq!(
        (between.events_checked, between.checkpoints_checked),
        (9, 0)
    );
    // ...and the head the service would append after is the rewritten one.
    let head: String =
        sqlx::query_scalar("SELECT last_hash FROM chain_heads WHERE tenant = 'firm-a'")
            .fetch_one(&mut database.connect().await)
            .await
            .unwrap();
    assert_eq!(head, stored_from(&database, "firm-a", 30).await[0].hash);

    // Only the signature over the old head at sequence 20 gives it away.
    let verdict = verify(&audit, "firm-a", 0, 0).await;
    let (sequence, event_id, reason) = broken(&verdict);
    assert_eq!((sequence, event_id.as_str()), (20, ids[19].as_str()));
    assert!(
        reason.contains("signed another head hash") && reason.contains("history rewritten"),
        "{reason}"
    );
    // The checkpoint at 10 (before the edit) still verified.
    assert_eq!(verdict.checkpoints_checked, 2);
    assert!(verify(&audit, "firm-b", 0, 0).await.ok);
    audit.stop().await;
}

/// Records `n` events of each tenant (checkpoints every 10) and returns their ids.
async fn chains(audit: &RunningAudit, tenants: &[&str], n: usize) -> Vec<Vec<String>> {
    let mut ids = Vec::new();
    for tenant in tenants {
        let stored = audit.record(import_events(tenant, n)).await.unwrap();
        ids.push(stored.events.into_iter().map(|e| e.event_id).collect());
    }
    ids
}

#[tokio::test]
async fn breaks_at_segment_boundaries_are_named_as_a_single_pass_names_them() {
    // Verify checks the segments between checkpoints side by side; a chain of 30 events
    // with checkpoints at 10, 20 and 30 is read as 1..=10, 11..=20 and 21 on.
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    let tenants = ["seg-a", "seg-b", "seg-c", "seg-d", "seg-e"];
    let ids = chains(&audit, &tenants, 30).await;
    tamper(
        &database,
        &[
            // The first event of a segment edited.
            "UPDATE events SET reason = 'x' WHERE tenant = 'seg-a' AND sequence = 11",
            // The checkpointed event at the end of a segment deleted.
            "DELETE FROM events WHERE tenant = 'seg-b' AND sequence = 20",
            // The events on either side of a checkpoint swapped.
            "UPDATE events SET sequence = 1000 WHERE tenant = 'seg-c' AND sequence = 20",
            "UPDATE events SET sequence = 20 WHERE tenant = 'seg-c' AND sequence = 21",
            "UPDATE events SET sequence = 21 WHERE tenant = 'seg-c' AND sequence = 1000",
            // The checkpointed event itself edited.
            "UPDATE events SET reason = 'x' WHERE tenant = 'seg-d' AND sequence = 10",
            // A whole segment deleted: the missing events follow the last stored one.
            "DELETE FROM events WHERE tenant = 'seg-e' AND sequence > 20",
        ],
    )
    .await;

    let (sequence, event_id, reason) = broken(&verify(&audit, "seg-a", 0, 0).await);
    assert_eq!((sequence, event_id.as_str()), (11, ids[0][10].as_str()));
    assert!(reason.starts_with("edited"), "{reason}");

    let (sequence, event_id, reason) = broken(&verify(&audit, "seg-b", 0, 0).await);
    assert_eq!((sequence, event_id.as_str()), (21, ids[1][20].as_str()));
    assert!(reason.starts_with("missing event: sequence 20"), "{reason}");

    let (sequence, event_id, reason) = broken(&verify(&audit, "seg-c", 0, 0).await);
    assert_eq!((sequence, event_id.as_str()), (20, ids[2][20].as_str()));
    assert_eq!(
        reason,
        format!(
            "reordered: its prev_hash is the hash of event {}, stored later at sequence 21",
            ids[2][19]
        )
    );

    let verdict = verify(&audit, "seg-d", 0, 0).await;
    let (sequence, event_id, reason) = broken(&verdict);
    assert_eq!((sequence, event_id.as_str()), (10, ids[3][9].as_str()));
    assert!(reason.starts_with("edited"), "{reason}");
    assert_eq!(
        (verdict.events_checked, verdict.checkpoints_checked),
        (9, 0)
    );

    let verdict = verify(&audit, "seg-e", 0, 0).await;
    let (sequence, event_id, reason) = broken(&verdict);
    assert_eq!((sequence, event_id.as_str()), (21, ids[4][19].as_str()));
    assert!(
        reason.starts_with("missing events: sequences 21 to 30 are absent"),
        "{reason}"
    );
    assert_eq!(
        (verdict.events_checked, verdict.checkpoints_checked),
        (20, 2)
    );
    audit.stop().await;
}

#[tokio::test]
async fn a_tail_after_the_last_checkpoint_and_a_chain_without_checkpoints_are_checked() {
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    // 35 events: checkpoints at 10, 20 and 30, then five unsigned. 5 events: none.
    let ids = chains(&audit, &["tail-a", "tail-b", "tail-c"], 35).await;
    let short = chains(&audit, &["short-a", "short-b"], 5).await;

    let intact = verify(&audit, "tail-a", 0, 0).await;
    assert!(intact.ok, "{intact:?}");
    assert_eq!((intact.events_checked, intact.checkpoints_checked), (35, 3));
    let unsigned = verify(&audit, "short-a", 0, 0).await;
    assert!(unsigned.ok, "{unsigned:?}");
    assert_eq!(
        (unsigned.events_checked, unsigned.checkpoints_checked),
        (5, 0)
    );

    tamper(
        &database,
        &[
            "UPDATE events SET reason = 'x' WHERE tenant = 'tail-b' AND sequence = 33",
            "DELETE FROM events WHERE tenant = 'tail-c' AND sequence > 33",
            "UPDATE events SET reason = 'x' WHERE tenant = 'short-b' AND sequence = 3",
        ],
    )
    .await;
    let (sequence, event_id, reason) = broken(&verify(&audit, "tail-b", 0, 0).await);
    assert_eq!((sequence, event_id.as_str()), (33, ids[1][32].as_str()));
    assert!(reason.starts_with("edited"), "{reason}");

    let verdict = verify(&audit, "tail-c", 0, 0).await;
    let (sequence, event_id, reason) = broken(&verdict);
    assert_eq!((sequence, event_id.as_str()), (34, ids[2][32].as_str()));
    assert!(
        reason.starts_with("missing events: sequences 34 to 35 are absent"),
        "{reason}"
    );
    assert_eq!(
        (verdict.events_checked, verdict.checkpoints_checked),
        (33, 3)
    );

    let (sequence, event_id, reason) = broken(&verify(&audit, "short-b", 0, 0).await);
    assert_eq!((sequence, event_id.as_str()), (3, short[1][2].as_str()));
    assert!(reason.starts_with("edited"), "{reason}");
    audit.stop().await;
}

#[tokio::test]
async fn verify_hashes_stored_rows_as_their_decoded_records_hash() {
    // Verify hashes each event from the bytes of a binary COPY (`stored_chain`); the
    // bytes must be those of the record a query decodes, whatever the row holds.
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    let at = chrono::DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
    let mut events = Vec::new();
    for (i, payload) in [
        serde_json::json!({}),
        serde_json::json!({"z": 1, "a": [1.5, -0.0, 0, 1e300, "x"], "nested": {"b": null, "a": true}}),
        serde_json::json!({"quote\"back\\slash": "tab\tnl\nctl\u{1}é😀", "": "", "longer key": 1}),
        serde_json::json!({"big": 18_446_744_073_709_551_615u64, "neg": -9_223_372_036_854_775_808i64}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut event = Ev::new(pb::EventKind::ConnectionGranted, "rows", at)
            .subject(pb::subject::Kind::Connection, &format!("conn \"{i}\""))
            .refs(pb::EventRefs {
                connection_id: format!("conn \"{i}\""),
                app_id: "app\\1".into(),
                principal: "ütf-8 ☃".into(),
                clio_user_id: "42".into(),
                region: pb::Region::Eu as i32,
                ..Default::default()
            })
            .scopes(&["contacts:read", "matters:write"])
            .payload(payload)
            .build();
        event.reason = format!("line\nbreak {i}");
        event.risk_tier = pb::RiskTier::High as i32;
        events.push(event);
    }
    events.extend(import_events("rows", 3));
    audit.record(events).await.unwrap();

    let records = stored_from(&database, "rows", 1).await;
    assert_eq!(records.len(), 7);
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let hashes = audit_svc::stored_chain::content_hashes(&pool, "rows")
        .await
        .unwrap();
    pool.close().await;
    let expected: Vec<(u64, String)> = records
        .iter()
        .map(|record| {
            let hash = chain_hash(&record.prev_hash, &record.canonical_bytes());
            assert_eq!(hash, record.hash, "{record:?}");
            (record.sequence, hash)
        })
        .collect();
    assert_eq!(hashes, expected);
    assert!(verify(&audit, "rows", 0, 0).await.ok);
    audit.stop().await;
}
