//! Every compliance view on one scripted history: apps with declared scopes (one widened
//! later, one narrowed later, one asking for everything), grants, token use, approved and
//! unapproved writes, four offboardings (one slow with a failed revocation at Clio, one
//! prompt and clean, one only slow, one only failed at Clio), a connection idle for 100
//! days, a shared Clio login, one person with two connections as their own Clio user, and
//! a quarterly review. Then the projections are
//! emptied and rebuilt from the log, and every view answers the same.

use chrono::{DateTime, Duration, TimeZone, Utc};
use harness::TestDatabase;
use proto::audit::v1 as api;
use proto::audit::v1::compliance_service_client::ComplianceServiceClient;
use proto::common::v1 as pb;
use scope_catalog::FAMILIES;
use service_runtime::clock::ManualClock;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::support::{Ev, RunningAudit, Setup, assert_refused, compliance, export_text, start, ts};

const TENANT: &str = "firm-a";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

pub(crate) fn day(n: i64) -> DateTime<Utc> {
    t0() + Duration::days(n)
}

fn app(kind: pb::EventKind, id: &str, at: DateTime<Utc>, scopes: &[&str]) -> pb::AuditEvent {
    Ev::new(kind, TENANT, at)
        .subject(pb::subject::Kind::App, id)
        .refs(pb::EventRefs {
            app_id: id.into(),
            region: pb::Region::Us as i32,
            ..Default::default()
        })
        .scopes(scopes)
        .build()
}

fn refs(connection: &str, app: &str, person: &str, clio_user: &str) -> pb::EventRefs {
    pb::EventRefs {
        connection_id: connection.into(),
        app_id: app.into(),
        principal: person.into(),
        clio_user_id: clio_user.into(),
        clio_account_id: "acct-1".into(),
        region: pb::Region::Us as i32,
        ..Default::default()
    }
}

fn on_connection(kind: pb::EventKind, connection: &str, at: DateTime<Utc>) -> Ev {
    Ev::new(kind, TENANT, at)
        .subject(pb::subject::Kind::Connection, connection)
        .refs(pb::EventRefs {
            connection_id: connection.into(),
            ..Default::default()
        })
}

fn grant(
    connection: &str,
    app: &str,
    person: &str,
    user: &str,
    at: DateTime<Utc>,
    scopes: &[&str],
) -> pb::AuditEvent {
    Ev::new(pb::EventKind::ConnectionGranted, TENANT, at)
        .subject(pb::subject::Kind::Connection, connection)
        .actor(pb::actor::Kind::Person, person)
        .refs(refs(connection, app, person, user))
        .scopes(scopes)
        .build()
}

fn used(connection: &str, at: DateTime<Utc>) -> pb::AuditEvent {
    on_connection(pb::EventKind::TokenLeased, connection, at)
        .payload(serde_json::json!({ "lease_count": 3 }))
        .build()
}

fn revoked(connection: &str, person: &str, at: DateTime<Utc>, outcome: &str) -> pb::AuditEvent {
    Ev::new(pb::EventKind::ConnectionRevoked, TENANT, at)
        .subject(pb::subject::Kind::Connection, connection)
        .refs(refs(connection, "", person, ""))
        .payload(serde_json::json!({ "clio_outcome": outcome, "detail": "" }))
        .build()
}

fn offboarded(person: &str, at: DateTime<Utc>) -> pb::AuditEvent {
    Ev::new(pb::EventKind::UserOffboarded, TENANT, at)
        .subject(pb::subject::Kind::Person, person)
        .refs(pb::EventRefs {
            principal: person.into(),
            ..Default::default()
        })
        .build()
}

fn write(
    kind: pb::EventKind,
    connection: &str,
    approval: &str,
    at: DateTime<Utc>,
) -> pb::AuditEvent {
    on_connection(kind, connection, at)
        .payload(serde_json::json!({ "approval_id": approval }))
        .build()
}

pub(crate) fn history() -> Vec<pb::AuditEvent> {
    use pb::EventKind::*;
    let billing = ["calendar:read", "matters:read", "activities:write"];
    let legacy = ["contacts:read", "calendar:read"];
    let everything: Vec<String> = FAMILIES
        .iter()
        .map(|f| format!("{}:write", f.name))
        .collect();
    let everything: Vec<&str> = everything.iter().map(String::as_str).collect();
    vec![
        app(AppRegistered, "import-app", day(0), &["contacts:read"]),
        app(AppApproved, "import-app", day(0), &[]),
        app(AppRegistered, "billing-app", day(0), &billing),
        app(AppRegistered, "all-in", day(0), &everything),
        grant(
            "c1",
            "import-app",
            "alice",
            "u1",
            day(1),
            &["contacts:read"],
        ),
        grant("c2", "billing-app", "bob", "u2", day(2), &billing),
        grant(
            "c3",
            "import-app",
            "carol",
            "u1",
            day(3),
            &["contacts:read"],
        ),
        write(WriteApproved, "c2", "a1", day(5)),
        write(WritePerformed, "c2", "a1", day(5) + Duration::hours(1)),
        write(WritePerformed, "c2", "a-never-approved", day(6)),
        used("c3", day(20)),
        // The billing app now also declares documents: c2's grant is drifted.
        app(
            AppScopesChanged,
            "billing-app",
            day(30),
            &[
                "calendar:read",
                "matters:read",
                "activities:write",
                "documents:read",
            ],
        ),
        grant(
            "c4",
            "billing-app",
            "dave",
            "u4",
            day(40),
            &[
                "calendar:read",
                "matters:read",
                "activities:write",
                "documents:read",
            ],
        ),
        grant(
            "c5",
            "import-app",
            "dave",
            "u4",
            day(41),
            &["contacts:read"],
        ),
        grant("c6", "all-in", "erin", "u6", day(45), &everything),
        // Dave leaves: one revocation in 30 minutes, the other after 3 hours and failed at Clio.
        offboarded("dave", day(50)),
        revoked("c4", "dave", day(50) + Duration::minutes(30), "revoked"),
        revoked(
            "c5",
            "dave",
            day(50) + Duration::hours(3),
            "failed_retrying",
        ),
        grant(
            "c7",
            "import-app",
            "frank",
            "u7",
            day(55),
            &["contacts:read"],
        ),
        offboarded("frank", day(60)),
        revoked("c7", "frank", day(60) + Duration::minutes(10), "revoked"),
        // Gina leaves: her revocation succeeds at Clio, but only after 3 hours.
        grant(
            "g1",
            "import-app",
            "gina",
            "u8",
            day(56),
            &["contacts:read"],
        ),
        offboarded("gina", day(62)),
        revoked("g1", "gina", day(62) + Duration::hours(3), "revoked"),
        // Hank leaves: revoked within 20 minutes, but Clio failed to revoke it.
        grant(
            "h1",
            "import-app",
            "hank",
            "u9",
            day(57),
            &["contacts:read"],
        ),
        offboarded("hank", day(63)),
        revoked(
            "h1",
            "hank",
            day(63) + Duration::minutes(20),
            "failed_retrying",
        ),
        // Ivan has two live connections, both as his own Clio user: not a shared login.
        grant(
            "i1",
            "import-app",
            "ivan",
            "u10",
            day(65),
            &["contacts:read"],
        ),
        grant(
            "i2",
            "import-app",
            "ivan",
            "u10",
            day(66),
            &["contacts:read"],
        ),
        // The legacy app drops calendars from its declaration after Judy's grant: her
        // grant now goes beyond what the app declares.
        app(AppRegistered, "legacy-app", day(64), &legacy),
        grant("j1", "legacy-app", "judy", "u11", day(67), &legacy),
        app(AppScopesChanged, "legacy-app", day(70), &["contacts:read"]),
        used("c2", day(100)),
        used("c1", day(110)),
        used("c6", day(115)),
        used("i1", day(118)),
        used("i2", day(118)),
        used("j1", day(118)),
    ]
}

type Compliance = ComplianceServiceClient<Channel>;

fn ids(connections: &[api::ConnectionSummary]) -> Vec<&str> {
    connections
        .iter()
        .map(|c| c.connection_id.as_str())
        .collect()
}

fn ids_of_drift(drifted: &[api::DriftedConnection]) -> Vec<&str> {
    drifted.iter().map(|d| id_of(&d.connection)).collect()
}

/// The id of the connection a report row is about.
fn id_of(connection: &Option<api::ConnectionSummary>) -> &str {
    connection.as_ref().unwrap().connection_id.as_str()
}

async fn risk_tiers(c: &mut Compliance, min_tier: i32) -> api::ConnectionsByRiskTierResponse {
    c.connections_by_risk_tier(compliance(api::ConnectionsByRiskTierRequest {
        tenant: TENANT.into(),
        min_tier,
    }))
    .await
    .unwrap()
    .into_inner()
}

async fn full_access_apps(c: &mut Compliance) -> api::FullAccessAppsResponse {
    c.full_access_apps(compliance(api::FullAccessAppsRequest {
        tenant: TENANT.into(),
    }))
    .await
    .unwrap()
    .into_inner()
}

async fn write_capable(c: &mut Compliance) -> api::WriteCapableConnectionsResponse {
    c.write_capable_connections(compliance(api::WriteCapableConnectionsRequest {
        tenant: TENANT.into(),
    }))
    .await
    .unwrap()
    .into_inner()
}

async fn zombies(
    c: &mut Compliance,
    idle_days: u32,
    as_of: Option<DateTime<Utc>>,
) -> api::ZombieConnectionsResponse {
    c.zombie_connections(compliance(api::ZombieConnectionsRequest {
        tenant: TENANT.into(),
        idle_days,
        as_of: as_of.map(ts),
    }))
    .await
    .unwrap()
    .into_inner()
}

/// Each zombie's connection id and idle days, in report order.
fn idle(zombies: &api::ZombieConnectionsResponse) -> Vec<(&str, u32)> {
    zombies
        .connections
        .iter()
        .map(|z| (id_of(&z.connection), z.idle_days))
        .collect()
}

async fn offboarding(c: &mut Compliance) -> api::OffboardingReportResponse {
    c.offboarding_report(compliance(api::OffboardingReportRequest {
        tenant: TENANT.into(),
        offboarded: None,
    }))
    .await
    .unwrap()
    .into_inner()
}

async fn scope_drift(c: &mut Compliance) -> api::ScopeDriftReportResponse {
    c.scope_drift_report(compliance(api::ScopeDriftReportRequest {
        tenant: TENANT.into(),
    }))
    .await
    .unwrap()
    .into_inner()
}

async fn shared_logins(c: &mut Compliance) -> api::SharedLoginSuspicionsResponse {
    c.shared_login_suspicions(compliance(api::SharedLoginSuspicionsRequest {
        tenant: TENANT.into(),
    }))
    .await
    .unwrap()
    .into_inner()
}

pub(crate) async fn generate_review(
    c: &mut Compliance,
    quarter: u32,
) -> Result<api::QuarterlyReview, Status> {
    c.generate_quarterly_review(compliance(api::GenerateQuarterlyReviewRequest {
        tenant: TENANT.into(),
        year: 2025,
        quarter,
    }))
    .await
    .map(tonic::Response::into_inner)
}

async fn get_review(
    c: &mut Compliance,
    review_id: &str,
    unreviewed_only: bool,
) -> Result<api::QuarterlyReview, Status> {
    c.get_quarterly_review(compliance(api::GetQuarterlyReviewRequest {
        review_id: review_id.into(),
        unreviewed_only,
    }))
    .await
    .map(tonic::Response::into_inner)
}

/// Rita's decision on one connection of a review.
pub(crate) async fn attest(
    c: &mut Compliance,
    review_id: &str,
    connection_id: &str,
    decision: i32,
    note: String,
) -> Result<api::ReviewItem, Status> {
    // The reviewer is the credential: not the one (`compliance`) that generated the review.
    c.attest_review(harness::with_bearer(
        api::AttestReviewRequest {
            review_id: review_id.into(),
            connection_id: connection_id.into(),
            decision,
            reviewer: "rita (ignored)".into(),
            note,
        },
        &harness::token_of("reviewer"),
    ))
    .await
    .map(tonic::Response::into_inner)
}

/// Every view's answer, for comparing before and after a rebuild.
pub(crate) async fn all_views(audit: &RunningAudit, review_id: &str) -> String {
    let mut c = audit.compliance().await;
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        risk_tiers(&mut c, 0).await,
        full_access_apps(&mut c).await,
        write_capable(&mut c).await,
        zombies(&mut c, 0, None).await,
        offboarding(&mut c).await,
        scope_drift(&mut c).await,
        shared_logins(&mut c).await,
        get_review(&mut c, review_id, false).await.unwrap(),
    )
}

#[tokio::test]
async fn each_compliance_view_answers_a_scripted_history_and_survives_a_rebuild() {
    let database = TestDatabase::create().await;
    let clock = ManualClock::default();
    clock.set(day(120));
    let audit = start(
        &database,
        Setup {
            clock: Some(clock),
            ..Setup::default()
        },
    )
    .await;
    let script = history();
    audit.record(script.clone()).await.unwrap();
    let mut c = audit.compliance().await;

    // Risk tiers, highest first; revoked connections are not listed.
    let tiers = risk_tiers(&mut c, 0).await.tiers;
    let grouped: Vec<(i32, Vec<&str>)> = tiers
        .iter()
        .map(|g| (g.tier, ids(&g.connections)))
        .collect();
    assert_eq!(
        grouped,
        vec![
            (pb::RiskTier::VeryHigh as i32, vec!["c6"]),
            (pb::RiskTier::High as i32, vec!["c2"]),
            (pb::RiskTier::Low as i32, vec!["c1", "c3", "i1", "i2", "j1"]),
        ]
    );
    assert!(tiers[0].connections[0].full_account_access);
    assert_eq!(tiers[1].connections[0].scopes.len(), 3);
    let high_only = risk_tiers(&mut c, pb::RiskTier::High as i32).await.tiers;
    assert_eq!(high_only.len(), 2);

    // Full account access.
    let apps = full_access_apps(&mut c).await.apps;
    assert_eq!(apps.len(), 1);
    assert_eq!(
        (apps[0].app_id.as_str(), apps[0].live_connections),
        ("all-in", 1)
    );
    assert_eq!(apps[0].risk_tier, pb::RiskTier::VeryHigh as i32);

    // Write-capable connections and whether their writes were approved.
    let writers = write_capable(&mut c).await.connections;
    let summary: Vec<(&str, u32, u32, u32)> = writers
        .iter()
        .map(|w| {
            (
                id_of(&w.connection),
                w.writes_performed,
                w.writes_approved,
                w.writes_unapproved,
            )
        })
        .collect();
    assert_eq!(summary, vec![("c2", 2, 1, 1), ("c6", 0, 0, 0)]);
    // The unapproved write is named, so compliance can look it up.
    let never_approved: Vec<&str> = script
        .iter()
        .filter(|e| {
            e.kind == pb::EventKind::WritePerformed as i32
                && e.payload_json.contains("a-never-approved")
        })
        .map(|e| e.event_id.as_str())
        .collect();
    assert_eq!(never_approved.len(), 1);
    assert_eq!(writers[0].unapproved_write_event_ids, never_approved);
    assert!(writers[1].unapproved_write_event_ids.is_empty());

    // Zombies: c3 was last used on day 20, 100 days before the clock's now.
    assert_eq!(idle(&zombies(&mut c, 0, None).await), vec![("c3", 100)]);
    assert_eq!(
        idle(&zombies(&mut c, 15, Some(day(120))).await),
        vec![("c3", 100), ("c2", 20)]
    );
    // As of day 60, nobody had been idle for 90 days.
    let earlier = zombies(&mut c, 0, Some(day(60))).await.connections;
    assert!(earlier.is_empty(), "{earlier:?}");

    // Offboarding: dave is flagged (3 h, a failed revocation), frank is not; gina and hank
    // are each flagged for one of dave's two reasons only.
    let entries = offboarding(&mut c).await.entries;
    assert_eq!(entries.len(), 4);
    let dave = &entries[0];
    assert_eq!(dave.principal, "dave");
    assert_eq!(dave.connections_revoked, 2);
    assert_eq!(dave.seconds_to_last_revocation, 3 * 3600);
    assert_eq!(dave.revocations_failed_at_clio, 1);
    assert!(dave.flagged);
    // c5 was never confirmed by Clio: open, and 70 days past the departure.
    assert!(dave.open);
    assert_eq!(
        dave.flag_reasons,
        vec![
            "100800 minutes since departure and 1 connection(s) not confirmed by Clio (limit 120)"
        ]
    );
    assert!(dave.live_connection_ids.is_empty());
    let frank = &entries[1];
    assert_eq!(frank.principal, "frank");
    assert_eq!(frank.seconds_to_last_revocation, 600);
    assert!(!frank.flagged, "{:?}", frank.flag_reasons);
    assert!(!frank.open);
    assert_eq!(frank.seconds_to_clio_confirmation, 600);
    let gina = &entries[2];
    assert_eq!(gina.principal, "gina");
    assert_eq!(gina.seconds_to_last_revocation, 3 * 3600);
    assert_eq!(gina.revocations_failed_at_clio, 0);
    assert!(gina.flagged);
    assert_eq!(
        gina.flag_reasons,
        vec!["Clio confirmed the last deauthorization 180 minutes after departure (limit 120)"]
    );
    let hank = &entries[3];
    assert_eq!(hank.principal, "hank");
    assert_eq!(hank.seconds_to_last_revocation, 20 * 60);
    assert_eq!(hank.revocations_failed_at_clio, 1);
    assert!(hank.flagged);
    assert!(hank.open);
    assert_eq!(
        hank.flag_reasons,
        vec!["82080 minutes since departure and 1 connection(s) not confirmed by Clio (limit 120)"]
    );
    assert!(hank.live_connection_ids.is_empty());

    // Scope drift: c2 was granted before the billing app added documents:read; j1 before
    // the legacy app dropped calendar:read.
    let drifted = scope_drift(&mut c).await.connections;
    assert_eq!(ids_of_drift(&drifted), vec!["c2", "j1"]);
    assert_eq!(
        drifted[0].missing_from_grant,
        vec![crate::support::scope("documents:read")]
    );
    assert!(drifted[0].beyond_declaration.is_empty());
    assert_eq!(
        drifted[1].beyond_declaration,
        vec![crate::support::scope("calendar:read")]
    );
    assert!(drifted[1].missing_from_grant.is_empty());
    assert_eq!(
        drifted[1].app_declared_scopes,
        vec![crate::support::scope("contacts:read")]
    );

    // Shared login: alice and carol both connected as Clio user u1. Ivan's two live
    // connections as u10 are one person, so u10 is not a suspicion.
    let shared = shared_logins(&mut c).await.suspicions;
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert_eq!(shared[0].clio_user_id, "u1");
    assert_eq!(shared[0].principals, vec!["alice", "carol"]);
    assert_eq!(shared[0].connection_ids, vec!["c1", "c3"]);

    // Quarterly review: every live connection, then two decisions.
    let review = generate_review(&mut c, 2).await.unwrap();
    let items: Vec<(&str, u32)> = review
        .items
        .iter()
        .map(|i| (id_of(&i.connection), i.grant_age_days))
        .collect();
    assert_eq!(
        items,
        vec![
            ("c1", 119),
            ("c2", 118),
            ("c3", 117),
            ("c6", 75),
            ("i1", 55),
            ("i2", 54),
            ("j1", 53)
        ]
    );
    assert_eq!(review.unreviewed, 7);
    // Each item carries the connection's last use and tier as they were at generation.
    let usage: Vec<(&str, Option<prost_types::Timestamp>, i32)> = review
        .items
        .iter()
        .take(4)
        .map(|i| {
            let connection = i.connection.as_ref().unwrap();
            (
                connection.connection_id.as_str(),
                connection.last_used_at,
                connection.risk_tier,
            )
        })
        .collect();
    assert_eq!(
        usage,
        vec![
            ("c1", Some(ts(day(110))), pb::RiskTier::Low as i32),
            ("c2", Some(ts(day(100))), pb::RiskTier::High as i32),
            ("c3", Some(ts(day(20))), pb::RiskTier::Low as i32),
            ("c6", Some(ts(day(115))), pb::RiskTier::VeryHigh as i32),
        ]
    );
    let again = generate_review(&mut c, 2).await.unwrap();
    assert_eq!(again.review_id, review.review_id, "one review per quarter");

    for (connection, decision) in [
        ("c3", api::ReviewDecision::Revoke),
        ("c1", api::ReviewDecision::Keep),
    ] {
        let note = format!("{connection}, checked with the team");
        let item = attest(&mut c, &review.review_id, connection, decision as i32, note)
            .await
            .unwrap();
        assert_eq!(item.decision, decision as i32);
        assert_eq!(item.reviewer, "reviewer");
    }
    let open = get_review(&mut c, &review.review_id, true).await.unwrap();
    assert_eq!(open.unreviewed, 5);
    let open_ids: Vec<&str> = open.items.iter().map(|i| id_of(&i.connection)).collect();
    assert_eq!(open_ids, vec!["c2", "c6", "i1", "i2", "j1"]);
    // "revoke" on c3 is an action, open until c3's revocation arrives.
    assert_eq!(open.open_actions, 1);
    assert_eq!(open.generated_by, "compliance");

    // The attestation is an event in the log, by the reviewer the request named, and it
    // records which authenticated credential made that claim.
    let attested = audit
        .audit()
        .await
        .query(compliance(api::QueryRequest {
            tenant: TENANT.into(),
            kinds: vec![pb::EventKind::ReviewAttested as i32],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(attested.len(), 2);
    for event in &attested {
        assert_eq!(event.actor.as_ref().unwrap().id, "reviewer");
        assert_eq!(event.writer, "reviewer");
        let payload: serde_json::Value = serde_json::from_str(&event.payload_json).unwrap();
        assert_eq!(payload["recorded_by"], "reviewer", "{payload}");
    }

    // Exports.
    let export = |format: api::ExportFormat| {
        let mut c = c.clone();
        let review_id = review.review_id.clone();
        async move {
            export_text(
                c.export_quarterly_review(compliance(api::ExportQuarterlyReviewRequest {
                    review_id,
                    format: format as i32,
                }))
                .await,
            )
            .await
        }
    };
    let csv = export(api::ExportFormat::Csv).await;
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 8, "{csv}");
    assert!(rows[0].starts_with("review_id,tenant,year,quarter,connection_id"));
    assert!(
        rows[3].contains(",c3,") && rows[3].contains(",revoke,reviewer,"),
        "{}",
        rows[3]
    );
    assert!(
        rows[3].ends_with("\"c3, checked with the team\""),
        "{}",
        rows[3]
    );
    let json: serde_json::Value =
        serde_json::from_str(&export(api::ExportFormat::Json).await).unwrap();
    assert_eq!(json["unreviewed"], 5);
    assert_eq!(json["items"].as_array().unwrap().len(), 7);
    assert_eq!(json["items"][3]["risk_tier"], "very_high");

    // Drop the projections' contents and rebuild them from the log: the same answers.
    let before = all_views(&audit, &review.review_id).await;
    let mut db = database.connect().await;
    sqlx::query(
        "TRUNCATE proj_apps, proj_connections, proj_offboardings, proj_write_approvals, \
         proj_writes, proj_review_items, proj_reviews",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let status = get_review(&mut c, &review.review_id, false)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    audit_svc::projections::rebuild(&pool).await.unwrap();
    pool.close().await;
    assert_eq!(all_views(&audit, &review.review_id).await, before);
    audit.stop().await;
}

#[tokio::test]
async fn review_requests_are_checked() {
    let database = TestDatabase::create().await;
    let audit = start(&database, Setup::default()).await;
    let mut c = audit.compliance().await;
    let status = generate_review(&mut c, 5).await.unwrap_err();
    assert_refused(&status, Code::InvalidArgument, "quarter");
    let review = generate_review(&mut c, 1).await.unwrap();
    let status = attest(&mut c, &review.review_id, "c1", 0, String::new())
        .await
        .unwrap_err();
    assert_refused(&status, Code::InvalidArgument, "decision");
    // The credential that generated the review may not attest it.
    let status = c
        .attest_review(compliance(api::AttestReviewRequest {
            review_id: review.review_id.clone(),
            connection_id: "c1".into(),
            decision: api::ReviewDecision::Keep as i32,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("generated review"), "{status:?}");
    let keep = api::ReviewDecision::Keep as i32;
    let status = attest(&mut c, &review.review_id, "c-unknown", keep, String::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // A producer may not forge a review.
    let forged = Ev::new(pb::EventKind::ReviewGenerated, TENANT, Utc::now()).build();
    let status = audit.record(vec![forged]).await.unwrap_err();
    assert_refused(&status, Code::InvalidArgument, "events[0].kind");
    audit.stop().await;
}
