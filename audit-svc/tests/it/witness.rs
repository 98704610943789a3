//! The head leaves the database: every signed checkpoint is copied to a witness file, and
//! `audit-svc verify --witness FILE` proves the log against it. A superuser who rewrites
//! an event, recomputes the chain and the head, deletes the checkpoints signed after the
//! edit and lets the service sign the rewritten head passes the in-database Verify, and is
//! caught at the first witnessed checkpoint after the edit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use audit_svc::Config;
use audit_svc::canonical::chain_hash;
use audit_svc::chain::Checkpoint;
use audit_svc::cli::verify_database;
use audit_svc::event::EventRecord;
use audit_svc::export::verify_export_witnessed;
use audit_svc::store::{EVENT_COLUMNS, decode_event};
use audit_svc::witness::read_witness;
use harness::{TestDatabase, poll_until};
use proto::audit::v1::{ExportRequest, VerifyRequest};
use sqlx::Connection;
use uuid::Uuid;

use crate::support::{
    RunningAudit, SEED_HEX, Setup, compliance, config, export_text, import_events, start_configured,
};

/// A witness file in the temporary directory, removed when the test ends.
struct WitnessFile(PathBuf);

impl WitnessFile {
    fn new() -> WitnessFile {
        WitnessFile(std::env::temp_dir().join(format!("audit-witness-{}.jsonl", Uuid::new_v4())))
    }
}

impl Drop for WitnessFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn setup() -> Setup {
    Setup {
        checkpoint_every: 10,
        // Heads that stop short of a multiple of 10 are signed (and witnessed) soon.
        checkpoint_interval_ms: 200,
        ..Setup::default()
    }
}

fn witnessed_config(database: &TestDatabase, witness: &Path) -> Config {
    let mut config = config(database, &setup());
    config.checkpoints.witness_file = Some(witness.to_owned());
    config
}

/// The witnessed sequences of `tenant`, in file order.
fn witnessed(path: &Path, tenant: &str) -> Vec<u64> {
    read_witness(path)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.tenant == tenant)
        .map(|c| c.sequence)
        .collect()
}

async fn wait_for_witness(path: &Path, tenant: &str, expected: &[u64]) {
    poll_until(
        &format!("{tenant} witnessed at {expected:?}"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { (witnessed(path, tenant) == expected).then_some(()) },
    )
    .await;
}

/// `audit-svc verify --witness FILE` as the binary, with the test's configuration in
/// the environment: (exit code, stdout).
fn verify_binary(database: &TestDatabase, witness: &Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_audit-svc"))
        .arg("verify")
        .arg("--witness")
        .arg(witness)
        .env_remove("AUDIT_SVC_CONFIG")
        .env("AUDIT_SVC_SERVICE__DATABASE__URL", &database.url)
        .env("AUDIT_SVC_SIGNING__KEY", SEED_HEX)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (
        output.status.code().unwrap_or(-1),
        format!("{stdout}{stderr}"),
    )
}

async fn verify_in_database(
    audit: &RunningAudit,
    tenant: &str,
) -> proto::audit::v1::VerifyResponse {
    audit
        .audit()
        .await
        .verify(compliance(VerifyRequest {
            tenant: tenant.into(),
            from_sequence: 0,
            to_sequence: 0,
        }))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn an_untouched_log_verifies_against_its_witness_across_a_restart() {
    let database = TestDatabase::create().await;
    let witness = WitnessFile::new();
    let config = witnessed_config(&database, &witness.0);
    let audit = start_configured(config.clone(), setup()).await;
    audit.record(import_events("firm-a", 25)).await.unwrap();
    audit.record(import_events("firm-b", 3)).await.unwrap();
    // 10 and 20 in the appends, 25 and firm-b's 3 by the periodic task.
    wait_for_witness(&witness.0, "firm-a", &[10, 20, 25]).await;
    wait_for_witness(&witness.0, "firm-b", &[3]).await;
    audit.stop().await;

    // A crash mid-write left a torn line; the restarted service cuts it off, witnesses
    // nothing twice, and goes on.
    let mut text = std::fs::read_to_string(&witness.0).unwrap();
    text.push_str("{\"type\":\"checkpoint\",\"head_ha");
    std::fs::write(&witness.0, text).unwrap();
    let audit = start_configured(config.clone(), setup()).await;
    audit.record(import_events("firm-a", 5)).await.unwrap();
    wait_for_witness(&witness.0, "firm-a", &[10, 20, 25, 30]).await;
    assert_eq!(witnessed(&witness.0, "firm-b"), [3]);

    let verdicts = verify_database(&config, None, read_witness(&witness.0).unwrap(), None)
        .await
        .unwrap();
    let summary: Vec<(&str, Option<String>, u64, u64)> = verdicts
        .iter()
        .map(|(tenant, v)| {
            (
                tenant.as_str(),
                v.first_broken.as_ref().map(|b| b.reason.clone()),
                v.events_checked,
                v.witnessed_checked,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("firm-a", None, 30, 4), ("firm-b", None, 3, 1)],
        "{verdicts:?}"
    );
    let (code, output) = verify_binary(&database, &witness.0);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("ok: tenant \"firm-a\", 30 events, 4 checkpoints, 4 witnessed"),
        "{output}"
    );
    audit.stop().await;
}

/// `tenant`'s stored events from `from` on.
async fn stored_from(database: &TestDatabase, tenant: &str, from: i64) -> Vec<EventRecord> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE tenant = $1 AND sequence >= $2 ORDER BY sequence"
    );
    let rows = sqlx::query(&sql)
        .bind(tenant)
        .bind(from)
        .fetch_all(&mut database.connect().await)
        .await
        .unwrap();
    rows.iter().map(|row| decode_event(row).unwrap()).collect()
}

/// As a superuser with the triggers off: edit the reason of `tenant`'s event `edited`,
/// re-link it and every later event with the library's canonical form and chain rule, move
/// the chain head, and delete the checkpoints after the edit so the service signs the
/// rewritten head again. The witness file is out of reach.
async fn rewrite_tail_and_head(database: &TestDatabase, tenant: &str, edited: i64) {
    let mut records = stored_from(database, tenant, edited).await;
    records[0].body.reason = "nothing to see".into();
    let mut prev = records[0].prev_hash.clone();
    let mut db = database.connect().await;
    let mut tx = db.begin().await.unwrap();
    for statement in [
        "ALTER TABLE events DISABLE TRIGGER USER",
        "ALTER TABLE checkpoints DISABLE TRIGGER USER",
    ] {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    for record in &mut records {
        record.prev_hash.clone_from(&prev);
        record.hash = chain_hash(&record.prev_hash, &record.canonical_bytes());
        sqlx::query(
            "UPDATE events SET reason = $1, prev_hash = $2, hash = $3 \
             WHERE tenant = $4 AND sequence = $5",
        )
        .bind(&record.body.reason)
        .bind(&record.prev_hash)
        .bind(&record.hash)
        .bind(tenant)
        .bind(i64::try_from(record.sequence).unwrap())
        .execute(&mut *tx)
        .await
        .unwrap();
        prev.clone_from(&record.hash);
    }
    let last_checkpoint_before: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(sequence), 0) FROM checkpoints WHERE tenant = $1 AND sequence < $2",
    )
    .bind(tenant)
    .bind(edited)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query("DELETE FROM checkpoints WHERE tenant = $1 AND sequence >= $2")
        .bind(tenant)
        .bind(edited)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE chain_heads SET last_hash = $2, checkpointed_sequence = $3 WHERE tenant = $1",
    )
    .bind(tenant)
    .bind(&prev)
    .bind(last_checkpoint_before)
    .execute(&mut *tx)
    .await
    .unwrap();
    for statement in [
        "ALTER TABLE events ENABLE TRIGGER USER",
        "ALTER TABLE checkpoints ENABLE TRIGGER USER",
    ] {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_rewritten_tail_and_head_pass_the_database_and_are_caught_by_the_witness() {
    let database = TestDatabase::create().await;
    let witness = WitnessFile::new();
    let config = witnessed_config(&database, &witness.0);
    let audit = start_configured(config.clone(), setup()).await;
    let stored = audit.record(import_events("firm-a", 30)).await.unwrap();
    let ids: Vec<String> = stored.events.into_iter().map(|e| e.event_id).collect();
    audit.record(import_events("firm-b", 5)).await.unwrap();
    wait_for_witness(&witness.0, "firm-a", &[10, 20, 30]).await;
    wait_for_witness(&witness.0, "firm-b", &[5]).await;

    rewrite_tail_and_head(&database, "firm-a", 15).await;
    // The service signs the rewritten head (its periodic task sees the head moved past the
    // last checkpoint), with its real key.
    poll_until(
        "the rewritten head signed",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let signed: Option<bool> = sqlx::query_scalar(
                "SELECT c.head_hash = h.last_hash FROM checkpoints AS c \
                 JOIN chain_heads AS h USING (tenant) WHERE tenant = 'firm-a' AND c.sequence = 30",
            )
            .fetch_optional(&mut database.connect().await)
            .await
            .unwrap();
            (signed == Some(true)).then_some(())
        },
    )
    .await;

    // The database alone verifies: the chain links, and every checkpoint in it is genuine.
    let verdict = verify_in_database(&audit, "firm-a").await;
    assert!(verdict.ok, "{verdict:?}");
    assert_eq!(
        (verdict.events_checked, verdict.checkpoints_checked),
        (30, 2)
    );

    // The witness names the first checkpoint signed over the original history.
    let witnessed_checkpoints: Vec<Checkpoint> = read_witness(&witness.0).unwrap();
    let verdicts = verify_database(&config, None, witnessed_checkpoints.clone(), None)
        .await
        .unwrap();
    let (tenant, firm_a) = &verdicts[0];
    assert_eq!(tenant, "firm-a");
    let broken = firm_a.first_broken.clone().unwrap();
    assert_eq!(
        (broken.sequence, broken.event_id.as_str()),
        (20, ids[19].as_str())
    );
    assert!(
        broken
            .reason
            .starts_with("witnessed checkpoint at sequence 20 (signed at "),
        "{broken:?}"
    );
    assert!(broken.reason.contains("history rewritten"), "{broken:?}");
    assert_eq!(verdicts[1].0, "firm-b");
    assert_eq!(verdicts[1].1.first_broken, None);

    let (code, output) = verify_binary(&database, &witness.0);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!(
            "broken: tenant \"firm-a\", sequence 20, event {}: witnessed checkpoint at sequence 20",
            ids[19]
        )),
        "{output}"
    );
    assert!(output.contains("ok: tenant \"firm-b\""), "{output}");

    // An export of the rewritten log, checked offline against the witness, too.
    let export = export_text(
        audit
            .audit()
            .await
            .export(compliance(ExportRequest {
                tenant: "firm-a".into(),
                from_sequence: 0,
                to_sequence: 0,
            }))
            .await,
    )
    .await;
    let mut keys = audit_svc::signing::TrustedKeys::default();
    let seed: [u8; 32] = hex::decode(SEED_HEX).unwrap().try_into().unwrap();
    keys.add(audit_svc::signing::Signer::from_seed(&seed).public_key());
    let open = || std::io::Result::Ok(std::io::Cursor::new(export.as_bytes()));
    let (_, alone) = verify_export_witnessed(open, &keys, Vec::new()).unwrap();
    assert_eq!(alone.first_broken, None);
    let (_, against) = verify_export_witnessed(open, &keys, witnessed_checkpoints).unwrap();
    assert_eq!(against.first_broken.unwrap().sequence, 20);
    audit.stop().await;
}
