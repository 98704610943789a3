//! Token custody: key rotation without downtime, and no plaintext secret anywhere a raw
//! read of the database or of the logs can find it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use auth_svc::token_vault::{Binding, TokenVault};
use base64::Engine;
use clio_sim::Decision;
use harness::{poll_until, with_bearer};
use proto::auth::v1 as pb;
use secrecy::ExposeSecret;
use tonic::Code;

use crate::support::{
    self, AppOptions, KEY_IDS, Setup, SimRegion, Stack, assert_refused, key_material, sim_config,
};

/// Ciphertexts per key id, over every column that holds one.
async fn ciphertexts_by_key(stack: &Stack) -> Vec<(String, i64)> {
    let mut db = stack.database.connect().await;
    sqlx::query_as(
        "SELECT key_id, count(*) FROM ( \
           SELECT client_secret_key_id AS key_id FROM app_registrations \
           UNION ALL SELECT access_token_key_id FROM connections WHERE access_token_key_id IS NOT NULL \
           UNION ALL SELECT refresh_token_key_id FROM connections WHERE refresh_token_key_id IS NOT NULL \
           UNION ALL SELECT pkce_verifier_key_id FROM authorization_states WHERE pkce_verifier_key_id IS NOT NULL \
         ) k GROUP BY key_id ORDER BY key_id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap()
}

#[tokio::test]
async fn key_rotation_re_encrypts_in_the_background_while_leases_go_on() {
    let setup = Setup {
        sim: clio_sim::SimConfig {
            access_token_ttl: Duration::from_secs(3_600),
            ..sim_config()
        },
        ..Setup::default()
    };
    let stack = Arc::new(support::start(setup).await);
    let mut connections = Vec::new();
    for n in 0..4 {
        let app = stack
            .app(AppOptions {
                client_id: format!("rotating-{n}"),
                pkce: true,
                ..AppOptions::default()
            })
            .await;
        for user in 1..=5 {
            connections.push(
                stack
                    .connect(&app, "una@firm", user, None)
                    .await
                    .connection_id,
            );
        }
    }
    // 4 client secrets and 20 access and refresh tokens; PKCE verifiers went with their use.
    assert_eq!(
        ciphertexts_by_key(&stack).await,
        vec![("k1".into(), 4 + 40)]
    );

    // Four importers lease without pause through the rotation; the first lease of each
    // connection also refreshes its (expired) token, sealing the new one.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let leasing: Vec<_> = (0..4)
        .map(|worker| {
            let (stack, stop, served, ids) = (
                stack.clone(),
                stop.clone(),
                served.clone(),
                connections.clone(),
            );
            tokio::spawn(async move {
                let mut n = worker;
                while !stop.load(Ordering::SeqCst) {
                    let id = &ids[n % ids.len()];
                    if let Err(status) = stack.lease(id, &["contacts:read"]).await {
                        panic!("lease {n} failed during rotation: {status:?}");
                    }
                    served.fetch_add(1, Ordering::SeqCst);
                    n += 1;
                }
            })
        })
        .collect();
    stack.advance(Duration::from_secs(2 * 3_600));
    let rotated = stack
        .client()
        .await
        .rotate_encryption_key(with_bearer(
            pb::RotateEncryptionKeyRequest {
                new_key_id: "k2".into(),
            },
            &harness::token_of("operator"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.active_key_id, "k2");
    assert!(
        rotated.pending_reencryption > 0,
        "re-encryption runs after the answer"
    );
    let during = served.load(Ordering::SeqCst);
    poll_until(
        "every secret under k2",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let keys = ciphertexts_by_key(&stack).await;
            (keys.len() == 1 && keys[0].0 == "k2").then_some(())
        },
    )
    .await;
    // Keep leasing a little after the re-encryption, then stop.
    let target = served.load(Ordering::SeqCst) + 20;
    poll_until(
        "leases after the rotation",
        Duration::from_secs(20),
        Duration::from_millis(10),
        || async { (served.load(Ordering::SeqCst) >= target).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for worker in leasing {
        worker.await.unwrap();
    }
    println!(
        "rotation: {} leases served, {} of them before the rotation answered, none failed",
        served.load(Ordering::SeqCst),
        during
    );

    let refused = stack
        .client()
        .await
        .rotate_encryption_key(with_bearer(
            pb::RotateEncryptionKeyRequest {
                new_key_id: "k9".into(),
            },
            &harness::token_of("operator"),
        ))
        .await
        .unwrap_err();
    assert_refused(&refused, Code::InvalidArgument, "new_key_id");
    Arc::into_inner(stack).unwrap().stop().await;
}

#[tokio::test]
async fn key_rotation_sets_aside_a_secret_it_cannot_decrypt_and_finishes_the_rest() {
    let stack = support::start(Setup::default()).await;
    let (ids, broken) = {
        let (_, ids) = stack.many_connections("uli@firm", 1, 3).await;
        let broken = ids[0].clone();
        (ids, broken)
    };
    // One access token no key opens any more: another row's ciphertext, bound elsewhere.
    let mut db = stack.database.connect().await;
    sqlx::query(
        "UPDATE connections SET access_token_ct = (SELECT access_token_ct FROM connections \
         WHERE connection_id = $2::uuid) WHERE connection_id = $1::uuid",
    )
    .bind(&broken)
    .bind(&ids[1])
    .execute(&mut db)
    .await
    .unwrap();

    let rotated = stack
        .client()
        .await
        .rotate_encryption_key(with_bearer(
            pb::RotateEncryptionKeyRequest {
                new_key_id: "k2".into(),
            },
            &harness::token_of("operator"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.active_key_id, "k2");
    // Everything else is re-encrypted; the broken secret alone stays under k1.
    poll_until(
        "every other secret under k2",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let keys = ciphertexts_by_key(&stack).await;
            (keys == [("k1".to_owned(), 1), ("k2".to_owned(), 2 + 2 * 6 - 1)]).then_some(())
        },
    )
    .await;
    let set_aside: Vec<(String, String, uuid::Uuid, String)> =
        sqlx::query_as("SELECT table_name, column_name, row_id, key_id FROM undecryptable_secrets")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(
        set_aside,
        [(
            "connections".to_owned(),
            "access_token".to_owned(),
            broken.parse().unwrap(),
            "k1".to_owned()
        )]
    );
    // Reported: an audit event naming the row, and a metric.
    let reported: Vec<_> = stack
        .outbox()
        .await
        .into_iter()
        .filter(|(kind, _)| *kind == proto::common::v1::EventKind::EncryptionKeyRotated)
        .map(|(_, event)| support::payload_of(&event))
        .filter(|payload| payload["outcome"] == "undecryptable_secrets_skipped")
        .collect();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0]["skipped"][0]["row_id"], broken.as_str());
    let metrics = reqwest::get(format!("http://{}/metrics", stack.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("auth_svc_key_rotation_undecryptable_secrets_total 1"),
        "{metrics}"
    );
    // The other connections keep working.
    for id in &ids[1..] {
        stack.lease(id, &["contacts:read"]).await.unwrap();
    }
    stack.stop().await;
}

/// Every table's rows as text: bytea columns appear as hex.
async fn dump_database(stack: &Stack) -> String {
    let mut db = stack.database.connect().await;
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let mut dump = String::new();
    for (table,) in tables {
        let rows: Vec<(String,)> =
            sqlx::query_as(&format!("SELECT row_to_json(t)::text FROM \"{table}\" t"))
                .fetch_all(&mut db)
                .await
                .unwrap();
        for (row,) in rows {
            dump.push_str(&row);
            dump.push('\n');
        }
    }
    dump
}

fn vault() -> TokenVault {
    let keys = KEY_IDS
        .iter()
        .map(|id| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key_material(id))
                .unwrap();
            (
                (*id).to_owned(),
                zeroize::Zeroizing::new(<[u8; 32]>::try_from(bytes.as_slice()).unwrap()),
            )
        })
        .collect();
    TokenVault::new(keys, "k1").unwrap()
}

/// The refresh token auth-svc holds for a connection, opened with the test's own keys.
async fn stored_refresh_token(stack: &Stack, connection_id: &str) -> String {
    let mut db = stack.database.connect().await;
    let ct: Vec<u8> = sqlx::query_scalar(
        "SELECT refresh_token_ct FROM connections WHERE connection_id = $1::uuid",
    )
    .bind(connection_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    let binding = Binding::new("connections", "refresh_token", connection_id);
    vault()
        .open(&ct, &binding)
        .unwrap()
        .expose_secret()
        .to_owned()
}

#[tokio::test]
async fn no_token_or_secret_is_readable_in_the_database_or_the_logs() {
    let logs = harness::capture_logs();
    let setup = Setup {
        sim: clio_sim::SimConfig {
            access_token_ttl: Duration::from_secs(3_600),
            rotate_refresh_tokens: true,
            ..sim_config()
        },
        ..Setup::default()
    };
    let stack = support::start(setup).await;
    let app = stack
        .app(AppOptions {
            pkce: true,
            ..AppOptions::default()
        })
        .await;
    let mut secrets = vec![("client secret", app.client_secret.clone())];

    // Web flow (code through the callback) and out-of-band flow.
    let started = stack
        .start_authorization(&app.app_id, "vic@firm", pb::AuthorizationMode::Web, None)
        .await
        .unwrap();
    let consent = stack
        .decide(&started.authorization_url, 1, Decision::Allow)
        .await;
    secrets.push(("web code", consent.code.clone().unwrap()));
    secrets.push(("web state", started.state.clone()));
    stack.browser_get(&consent.location.unwrap()).await;
    let oob = stack.connect(&app, "vic@firm", 2, None).await;

    for round in 0..2 {
        let lease = stack
            .lease(&oob.connection_id, &["contacts:read"])
            .await
            .unwrap();
        secrets.push(("access token", lease.access_token));
        secrets.push((
            "refresh token",
            stored_refresh_token(&stack, &oob.connection_id).await,
        ));
        if round == 0 {
            stack.advance(Duration::from_secs(2 * 3_600));
        }
    }
    // A failed call with a token in hand (Clio refuses the revoked grant) logs no token.
    stack
        .sim
        .admin()
        .revoke_grants_of(SimRegion::Us, &app.client_id, 2)
        .await
        .unwrap();
    stack.advance(Duration::from_secs(2 * 3_600));
    stack
        .lease(&oob.connection_id, &["contacts:read"])
        .await
        .unwrap_err();
    let listed = stack
        .list_connections(pb::ListConnectionsRequest::default(), "operator")
        .await;
    for connection in &listed {
        stack.revoke(&connection.connection_id).await;
    }
    // The second round leased a refreshed token and Clio rotated the refresh token, so two
    // generations of each are checked below, not one twice.
    for label in ["access token", "refresh token"] {
        let generations: std::collections::HashSet<&String> = secrets
            .iter()
            .filter(|(l, _)| *l == label)
            .map(|(_, secret)| secret)
            .collect();
        assert_eq!(generations.len(), 2, "two different {label}s");
    }

    let dump = dump_database(&stack).await;
    assert!(dump.contains("vic@firm"), "the dump reads the tables");
    for (label, secret) in &secrets {
        assert!(
            !dump.contains(secret.as_str()),
            "the database holds a {label}"
        );
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(
            !dump.contains(&hex),
            "the database holds a {label} as bytes"
        );
        logs.assert_free_of(label, secret);
    }
    let text = logs.text();
    assert!(text.contains("connection stored"), "logs were captured");
    assert!(!text.contains(&support::key_material("k1")));
    stack.stop().await;
}
