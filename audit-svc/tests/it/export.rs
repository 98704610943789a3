//! Export streams events with their hashes and the checkpoints as JSON lines, and
//! `audit-svc verify` checks such a file offline with only the public key.

use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use harness::TestDatabase;
use proto::audit::v1::ExportRequest;

use crate::support::{SEED_HEX, Setup, compliance, export_text, import_events, start};

fn public_key() -> String {
    let seed: [u8; 32] = hex::decode(SEED_HEX).unwrap().try_into().unwrap();
    let signer = audit_svc::signing::Signer::from_seed(&seed);
    base64::engine::general_purpose::STANDARD.encode(signer.public_key().as_bytes())
}

fn temp_file(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("audit-export-{}.jsonl", uuid::Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `audit-svc verify` on `text`: exit code and stdout.
fn verify_offline(text: &str, key: &str) -> (i32, String) {
    let path = temp_file(text);
    let output = Command::new(env!("CARGO_BIN_EXE_audit-svc"))
        .args(["verify", "--file"])
        .arg(&path)
        .args(["--public-key", key])
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap(), format!("{stdout}{stderr}"))
}

#[tokio::test]
async fn an_export_verifies_offline_and_an_edited_export_does_not() {
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    audit.record(import_events("firm-a", 25)).await.unwrap();
    audit.record(import_events("firm-b", 4)).await.unwrap();

    let text = export_text(
        audit
            .audit()
            .await
            .export(compliance(ExportRequest {
                tenant: "firm-a".into(),
                ..Default::default()
            }))
            .await,
    )
    .await;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with(r#"{"type":"header""#), "{}", lines[0]);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(r#""type":"event""#))
            .count(),
        25
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(r#""type":"checkpoint""#))
            .count(),
        2
    );

    let key = public_key();
    let (code, output) = verify_offline(&text, &key);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.starts_with("ok:") && output.contains("25 events, 2 checkpoints"),
        "{output}"
    );

    // An edited event: named by sequence.
    let edited = text.replacen(r#""n":4,"#, r#""n":40,"#, 1);
    assert_ne!(edited, text);
    let (code, output) = verify_offline(&edited, &key);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("sequence 5,") && output.contains("edited"),
        "{output}"
    );

    // A dropped event line.
    let dropped: String = text
        .lines()
        .filter(|l| !l.contains(r#""sequence":9,"#) || !l.contains(r#""type":"event""#))
        .map(|l| format!("{l}\n"))
        .collect();
    let (code, output) = verify_offline(&dropped, &key);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("missing event: sequence 9"), "{output}");

    // The right file with the wrong key: the checkpoints do not verify.
    let stranger = audit_svc::signing::Signer::from_seed(&[9; 32]);
    let wrong = base64::engine::general_purpose::STANDARD.encode(stranger.public_key().as_bytes());
    let (code, output) = verify_offline(&text, &wrong);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("bad checkpoint signature"), "{output}");

    // A bad command line.
    let (code, output) = verify_offline(&text, "not-a-key");
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("--public-key"), "{output}");
    audit.stop().await;
}
