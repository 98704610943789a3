//! Append-only enforced by the database against the service's own login (README, "Database
//! logins"): the migrations run as an owner login, the service as a login that owns
//! nothing. Connected as that login — before or after `SET ROLE audit_appender`, and after
//! `RESET ROLE` — every way to change the log is refused by the privilege system (not by
//! the append-only trigger), and no role switch reaches the owner; Record, Query, Verify
//! and the projections still work through gRPC.
//!
//! Postgres roles are cluster-wide and tests run in parallel, so each test creates its own
//! uniquely named logins and drops them (after its database) when it ends.

use std::process::Command;

use chrono::Utc;
use harness::{TestDatabase, postgres_admin_url};
use proto::audit::v1 as api;
use proto::common::v1 as pb;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::support::{Ev, SEED_HEX, Setup, compliance, config, import_events, start_configured};

/// An owner login and a service login for one test database, dropped with it.
pub struct Logins {
    pub owner: String,
    pub service: String,
    database: String,
    base_url: String,
}

impl Logins {
    /// As the superuser: both logins, the service login a NOINHERIT member of
    /// `audit_appender`, the owner the database's owner (so it may create in `public`).
    pub async fn create(database: &TestDatabase) -> Logins {
        let id = &Uuid::new_v4().simple().to_string()[..16];
        let logins = Logins {
            owner: format!("cc_audit_owner_{id}"),
            service: format!("cc_audit_service_{id}"),
            database: database.name.clone(),
            base_url: database.url.clone(),
        };
        let mut admin = database.connect().await;
        for statement in [
            // Another test (or migration) may create it at the same moment.
            "DO $$ BEGIN CREATE ROLE audit_appender NOLOGIN; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
                .to_owned(),
            format!("CREATE ROLE \"{}\" LOGIN", logins.owner),
            format!("CREATE ROLE \"{}\" LOGIN NOINHERIT", logins.service),
            format!("GRANT audit_appender TO \"{}\"", logins.owner),
            format!("GRANT audit_appender TO \"{}\"", logins.service),
            format!(
                "ALTER DATABASE \"{}\" OWNER TO \"{}\"",
                logins.database, logins.owner
            ),
        ] {
            sqlx::query(&statement)
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        logins
    }

    /// The test database's URL, logging in as `login`.
    pub fn url_as(&self, login: &str) -> String {
        let mut url = url::Url::parse(&self.base_url).unwrap();
        url.set_username(login).unwrap();
        url.to_string()
    }

    pub async fn connect_as(&self, login: &str) -> PgConnection {
        PgConnection::connect(&self.url_as(login)).await.unwrap()
    }
}

impl Drop for Logins {
    fn drop(&mut self) {
        let statements = [
            // The owner owns the database and everything in it: drop that first.
            format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database),
            format!("DROP ROLE IF EXISTS \"{}\"", self.service),
            format!("DROP ROLE IF EXISTS \"{}\"", self.owner),
        ];
        let handle = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&postgres_admin_url()).await {
                    for statement in statements {
                        if let Err(error) = sqlx::query(&statement).execute(&mut conn).await {
                            eprintln!("cleanup: {statement}: {error}");
                        }
                    }
                }
            });
        });
        let _ = handle.join();
    }
}

/// The error of `statement`, run in its own transaction (rolled back) so one refusal
/// does not hide the next; panics if it succeeded.
async fn refusal(db: &mut PgConnection, statement: &str) -> sqlx::Error {
    let mut tx = db.begin().await.unwrap();
    let outcome = sqlx::query(statement).execute(&mut *tx).await;
    tx.rollback().await.unwrap();
    match outcome {
        Ok(done) => panic!("{statement} was allowed ({done:?})"),
        Err(error) => error,
    }
}

/// Refused by the privilege system: SQLSTATE 42501, and not the append-only trigger
/// (which raises the same code with its own message).
#[track_caller]
fn assert_privilege_refusal(statement: &str, error: &sqlx::Error) {
    let database = error
        .as_database_error()
        .unwrap_or_else(|| panic!("{statement}: {error}"));
    assert_eq!(
        database.code().as_deref(),
        Some("42501"),
        "{statement}: {error}"
    );
    assert!(
        !database.message().contains("append-only"),
        "{statement}: {error}"
    );
}

/// Every statement that would change, remove or unprotect the log, or escape the role.
fn forbidden(owner: &str) -> Vec<String> {
    let mut statements = Vec::new();
    for (table, column) in [("events", "reason"), ("checkpoints", "head_hash")] {
        statements.extend([
            format!("UPDATE {table} SET {column} = 'x'"),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table}"),
            format!("DROP TABLE {table}"),
            format!("ALTER TABLE {table} DISABLE TRIGGER USER"),
            format!("ALTER TABLE {table} DISABLE TRIGGER ALL"),
            format!("ALTER TABLE {table} OWNER TO CURRENT_USER"),
        ]);
    }
    statements.extend([
        "DROP TRIGGER events_append_only ON events".to_owned(),
        "ALTER TABLE chain_heads DISABLE TRIGGER ALL".to_owned(),
        "DELETE FROM chain_heads".to_owned(),
        "DROP FUNCTION audit_refuse_change() CASCADE".to_owned(),
        "CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger \
         LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$"
            .to_owned(),
        "CREATE TABLE public.shadow (x int)".to_owned(),
        format!("SET ROLE \"{owner}\""),
        format!("SET SESSION AUTHORIZATION \"{owner}\""),
        "SET ROLE postgres".to_owned(),
    ]);
    statements
}

#[test]
fn migration_0002_creates_the_appender_role_only_when_it_is_missing() {
    let migrator = audit_svc::store::migrator();
    let m0002 = migrator.iter().find(|m| m.version == 2).unwrap();
    assert!(
        m0002
            .sql
            .contains("IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'audit_appender')"),
        "{}",
        m0002.sql
    );
    let original = audit_svc::MIGRATOR.iter().find(|m| m.version == 2).unwrap();
    assert_eq!(m0002.checksum, original.checksum);
}

async fn current_and_session_user(db: &mut PgConnection) -> (String, String) {
    sqlx::query_as("SELECT current_user::text, session_user::text")
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_service_login_owns_nothing_and_cannot_change_the_log() {
    let database = TestDatabase::create().await;
    let logins = Logins::create(&database).await;
    let mut config = config(&database, &Setup::default());
    config.service.database.url = logins.url_as(&logins.service).into();
    config.database.migration_url = Some(logins.url_as(&logins.owner).into());
    let audit = start_configured(config.clone(), Setup::default()).await;

    // Record, with projections and checkpoints (every 10), through gRPC.
    let at = Utc::now();
    let mut events = import_events("firm-a", 11);
    events.push(
        Ev::new(pb::EventKind::ConnectionGranted, "firm-a", at)
            .subject(pb::subject::Kind::Connection, "c1")
            .actor(pb::actor::Kind::Person, "alice")
            .refs(pb::EventRefs {
                connection_id: "c1".into(),
                app_id: "app-1".into(),
                principal: "alice".into(),
                clio_user_id: "u1".into(),
                clio_account_id: "acct-1".into(),
                region: pb::Region::Us as i32,
                ..Default::default()
            })
            .scopes(&["contacts:read"])
            .build(),
    );
    let recorded = audit.record(events).await.unwrap();
    assert_eq!(recorded.events.len(), 12);

    let mut client = audit.audit().await;
    let page = client
        .query(compliance(api::QueryRequest {
            tenant: "firm-a".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.len(), 12);
    let verdict = client
        .verify(compliance(api::VerifyRequest {
            tenant: "firm-a".into(),
            from_sequence: 0,
            to_sequence: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(verdict.ok, "{verdict:?}");
    assert_eq!(
        (verdict.events_checked, verdict.checkpoints_checked),
        (12, 1)
    );
    let tiers = audit
        .compliance()
        .await
        .connections_by_risk_tier(compliance(api::ConnectionsByRiskTierRequest {
            tenant: "firm-a".into(),
            min_tier: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    let live: Vec<&str> = tiers
        .tiers
        .iter()
        .flat_map(|t| t.connections.iter().map(|c| c.connection_id.as_str()))
        .collect();
    assert_eq!(live, ["c1"]);

    // The migrations ran as the owner; the service login owns nothing.
    let mut as_owner = logins.connect_as(&logins.owner).await;
    let owner_of_events: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'events'")
            .fetch_one(&mut as_owner)
            .await
            .unwrap();
    assert_eq!(owner_of_events, logins.owner);
    let owned_by_service: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_class WHERE relowner = $1::regrole) \
              + (SELECT count(*) FROM pg_proc WHERE proowner = $1::regrole)",
    )
    .bind(&logins.service)
    .fetch_one(&mut as_owner)
    .await
    .unwrap();
    assert_eq!(owned_by_service, 0);

    // The service's own pool logs in as the service login and works as audit_appender.
    let pool = audit_svc::store::service_pool(&config.service.database).unwrap();
    let mut pooled = pool.acquire().await.unwrap();
    assert_eq!(
        current_and_session_user(&mut pooled).await,
        ("audit_appender".to_owned(), logins.service.clone())
    );
    drop(pooled);
    pool.close().await;

    let statements = forbidden(&logins.owner);
    let mut db = logins.connect_as(&logins.service).await;
    // As the bare login (NOINHERIT: not even SELECT), as audit_appender, and after
    // RESET ROLE, which succeeds but only gives the bare login back.
    for stage in ["login", "audit_appender", "after RESET ROLE"] {
        match stage {
            "audit_appender" => {
                sqlx::query("SET ROLE audit_appender")
                    .execute(&mut db)
                    .await
                    .unwrap();
            }
            "after RESET ROLE" => {
                sqlx::query("RESET ROLE").execute(&mut db).await.unwrap();
                let error = refusal(&mut db, "SELECT count(*) FROM events").await;
                assert_privilege_refusal("SELECT after RESET ROLE", &error);
            }
            _ => {}
        }
        for statement in &statements {
            let error = refusal(&mut db, statement).await;
            assert_privilege_refusal(&format!("{stage}: {statement}"), &error);
        }
        let (current, session) = current_and_session_user(&mut db).await;
        assert_eq!(session, logins.service, "{stage}");
        assert_ne!(current, logins.owner, "{stage}");
    }

    // Nothing changed; the log still verifies and takes appends.
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut as_owner)
        .await
        .unwrap();
    assert_eq!(count, 12);
    audit.record(import_events("firm-a", 2)).await.unwrap();
    drop(db);
    drop(as_owner);
    audit.stop().await;
}

#[tokio::test]
async fn a_service_login_that_could_act_as_the_owner_is_refused() {
    let database = TestDatabase::create().await;
    let logins = Logins::create(&database).await;
    let mut config = config(&database, &Setup::default());
    // The owner as both: with a separate migration login configured, that is a mistake.
    config.service.database.url = logins.url_as(&logins.owner).into();
    config.database.migration_url = Some(logins.url_as(&logins.owner).into());
    let error = audit_svc::store::open(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("must own nothing") && error.contains(&logins.owner),
        "{error}"
    );
}

/// The Kubernetes way: `audit-svc migrate` (here the binary, as an init container runs it)
/// with the owner login; then the service with `database.migrate_at_start = false` and
/// only its own login in its configuration.
#[tokio::test]
async fn migrate_runs_as_the_owner_before_a_service_that_never_holds_the_owner_login() {
    let database = TestDatabase::create().await;
    let logins = Logins::create(&database).await;
    let mut config = config(&database, &Setup::default());
    config.service.database.url = logins.url_as(&logins.service).into();
    config.database.migrate_at_start = false;

    // Not migrated yet: the service refuses to start and says what to run.
    let error = audit_svc::store::open(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("audit-svc migrate"), "{error}");

    let output = Command::new(env!("CARGO_BIN_EXE_audit-svc"))
        .arg("migrate")
        .env_remove("AUDIT_SVC_CONFIG")
        .env(
            "AUDIT_SVC_SERVICE__DATABASE__URL",
            logins.url_as(&logins.service),
        )
        .env(
            "AUDIT_SVC_DATABASE__MIGRATION_URL",
            logins.url_as(&logins.owner),
        )
        .env("AUDIT_SVC_SIGNING__KEY", SEED_HEX)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("migrated "), "{stdout}");

    let audit = start_configured(config, Setup::default()).await;
    let recorded = audit.record(import_events("firm-a", 3)).await.unwrap();
    assert_eq!(recorded.events.len(), 3);
    let mut db = logins.connect_as(&logins.service).await;
    sqlx::query("SET ROLE audit_appender")
        .execute(&mut db)
        .await
        .unwrap();
    let error = refusal(&mut db, "DELETE FROM events").await;
    assert_privilege_refusal("DELETE as the service login", &error);
    drop(db);
    audit.stop().await;
}
