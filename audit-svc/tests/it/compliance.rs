//! Every compliance view on one scripted history: apps with declared scopes (one of them
//! changed later, one asking for everything), grants, token use, approved and unapproved
//! writes, two offboardings (one slow with a failed revocation at Clio), a connection idle
//! for 100 days, a shared Clio login and a quarterly review. Then the projections are
//! emptied and rebuilt from the log, and every view answers the same.

use chrono::{DateTime, Duration, TimeZone, Utc};
use harness::TestDatabase;
use proto::audit::v1 as api;
use proto::common::v1 as pb;
use scope_catalog::FAMILIES;
use service_runtime::clock::ManualClock;
use tonic::Code;

use crate::support::{Ev, RunningAudit, Setup, compliance, start, ts};

const TENANT: &str = "firm-a";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

fn day(n: i64) -> DateTime<Utc> {
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

fn history() -> Vec<pb::AuditEvent> {
    use pb::EventKind::*;
    let billing = ["calendar:read", "matters:read", "activities:write"];
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
        used("c2", day(100)),
        used("c1", day(110)),
        used("c6", day(115)),
    ]
}

fn ids(connections: &[api::ConnectionSummary]) -> Vec<&str> {
    connections
        .iter()
        .map(|c| c.connection_id.as_str())
        .collect()
}

/// Every view's answer, for comparing before and after a rebuild.
async fn all_views(audit: &RunningAudit, review_id: &str) -> String {
    let mut c = audit.compliance().await;
    let tenant = || TENANT.to_owned();
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        c.connections_by_risk_tier(compliance(api::ConnectionsByRiskTierRequest {
            tenant: tenant(),
            min_tier: 0
        }))
        .await
        .unwrap()
        .into_inner(),
        c.full_access_apps(compliance(api::FullAccessAppsRequest { tenant: tenant() }))
            .await
            .unwrap()
            .into_inner(),
        c.write_capable_connections(compliance(api::WriteCapableConnectionsRequest {
            tenant: tenant()
        }))
        .await
        .unwrap()
        .into_inner(),
        c.zombie_connections(compliance(api::ZombieConnectionsRequest {
            tenant: tenant(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner(),
        c.offboarding_report(compliance(api::OffboardingReportRequest {
            tenant: tenant(),
            offboarded: None
        }))
        .await
        .unwrap()
        .into_inner(),
        c.scope_drift_report(compliance(api::ScopeDriftReportRequest {
            tenant: tenant()
        }))
        .await
        .unwrap()
        .into_inner(),
        c.shared_login_suspicions(compliance(api::SharedLoginSuspicionsRequest {
            tenant: tenant()
        }))
        .await
        .unwrap()
        .into_inner(),
        c.get_quarterly_review(compliance(api::GetQuarterlyReviewRequest {
            review_id: review_id.into(),
            unreviewed_only: false
        }))
        .await
        .unwrap()
        .into_inner(),
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
    audit.record(history()).await.unwrap();
    let mut c = audit.compliance().await;

    // Risk tiers, highest first; revoked connections are not listed.
    let tiers = c
        .connections_by_risk_tier(compliance(api::ConnectionsByRiskTierRequest {
            tenant: TENANT.into(),
            min_tier: 0,
        }))
        .await
        .unwrap()
        .into_inner()
        .tiers;
    let grouped: Vec<(i32, Vec<&str>)> = tiers
        .iter()
        .map(|g| (g.tier, ids(&g.connections)))
        .collect();
    assert_eq!(
        grouped,
        vec![
            (pb::RiskTier::VeryHigh as i32, vec!["c6"]),
            (pb::RiskTier::High as i32, vec!["c2"]),
            (pb::RiskTier::Low as i32, vec!["c1", "c3"]),
        ]
    );
    assert!(tiers[0].connections[0].full_account_access);
    assert_eq!(tiers[1].connections[0].scopes.len(), 3);
    let high_only = c
        .connections_by_risk_tier(compliance(api::ConnectionsByRiskTierRequest {
            tenant: TENANT.into(),
            min_tier: pb::RiskTier::High as i32,
        }))
        .await
        .unwrap()
        .into_inner()
        .tiers;
    assert_eq!(high_only.len(), 2);

    // Full account access.
    let apps = c
        .full_access_apps(compliance(api::FullAccessAppsRequest {
            tenant: TENANT.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert_eq!(apps.len(), 1);
    assert_eq!(
        (apps[0].app_id.as_str(), apps[0].live_connections),
        ("all-in", 1)
    );
    assert_eq!(apps[0].risk_tier, pb::RiskTier::VeryHigh as i32);

    // Write-capable connections and whether their writes were approved.
    let writers = c
        .write_capable_connections(compliance(api::WriteCapableConnectionsRequest {
            tenant: TENANT.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .connections;
    let summary: Vec<(&str, u32, u32, u32)> = writers
        .iter()
        .map(|w| {
            let id = w.connection.as_ref().unwrap().connection_id.as_str();
            (
                id,
                w.writes_performed,
                w.writes_approved,
                w.writes_unapproved,
            )
        })
        .collect();
    assert_eq!(summary, vec![("c2", 2, 1, 1), ("c6", 0, 0, 0)]);

    // Zombies: c3 was last used on day 20, 100 days before the clock's now.
    let zombies = c
        .zombie_connections(compliance(api::ZombieConnectionsRequest {
            tenant: TENANT.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .connections;
    let found: Vec<(&str, u32)> = zombies
        .iter()
        .map(|z| {
            (
                z.connection.as_ref().unwrap().connection_id.as_str(),
                z.idle_days,
            )
        })
        .collect();
    assert_eq!(found, vec![("c3", 100)]);
    let stricter = c
        .zombie_connections(compliance(api::ZombieConnectionsRequest {
            tenant: TENANT.into(),
            idle_days: 15,
            as_of: Some(ts(day(120))),
        }))
        .await
        .unwrap()
        .into_inner()
        .connections;
    let found: Vec<(&str, u32)> = stricter
        .iter()
        .map(|z| {
            (
                z.connection.as_ref().unwrap().connection_id.as_str(),
                z.idle_days,
            )
        })
        .collect();
    assert_eq!(found, vec![("c3", 100), ("c2", 20)]);
    // As of day 60, nobody had been idle for 90 days.
    let earlier = c
        .zombie_connections(compliance(api::ZombieConnectionsRequest {
            tenant: TENANT.into(),
            idle_days: 0,
            as_of: Some(ts(day(60))),
        }))
        .await
        .unwrap()
        .into_inner()
        .connections;
    assert!(earlier.is_empty(), "{earlier:?}");

    // Offboarding: dave is flagged (3 h, a failed revocation), frank is not.
    let entries = c
        .offboarding_report(compliance(api::OffboardingReportRequest {
            tenant: TENANT.into(),
            offboarded: None,
        }))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 2);
    let dave = &entries[0];
    assert_eq!(dave.principal, "dave");
    assert_eq!(dave.connections_revoked, 2);
    assert_eq!(dave.seconds_to_last_revocation, 3 * 3600);
    assert_eq!(dave.revocations_failed_at_clio, 1);
    assert!(dave.flagged);
    assert_eq!(dave.flag_reasons.len(), 2, "{:?}", dave.flag_reasons);
    assert!(dave.live_connection_ids.is_empty());
    let frank = &entries[1];
    assert_eq!(frank.principal, "frank");
    assert_eq!(frank.seconds_to_last_revocation, 600);
    assert!(!frank.flagged, "{:?}", frank.flag_reasons);

    // Scope drift: c2 was granted before the billing app added documents:read.
    let drifted = c
        .scope_drift_report(compliance(api::ScopeDriftReportRequest {
            tenant: TENANT.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .connections;
    assert_eq!(drifted.len(), 1);
    assert_eq!(drifted[0].connection.as_ref().unwrap().connection_id, "c2");
    assert_eq!(
        drifted[0].missing_from_grant,
        vec![crate::support::scope("documents:read")]
    );
    assert!(drifted[0].beyond_declaration.is_empty());

    // Shared login: alice and carol both connected as Clio user u1.
    let shared = c
        .shared_login_suspicions(compliance(api::SharedLoginSuspicionsRequest {
            tenant: TENANT.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .suspicions;
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0].clio_user_id, "u1");
    assert_eq!(shared[0].principals, vec!["alice", "carol"]);
    assert_eq!(shared[0].connection_ids, vec!["c1", "c3"]);

    // Quarterly review: every live connection, then two decisions.
    let review = c
        .generate_quarterly_review(compliance(api::GenerateQuarterlyReviewRequest {
            tenant: TENANT.into(),
            year: 2025,
            quarter: 2,
        }))
        .await
        .unwrap()
        .into_inner();
    let items: Vec<(&str, u32)> = review
        .items
        .iter()
        .map(|i| {
            (
                i.connection.as_ref().unwrap().connection_id.as_str(),
                i.grant_age_days,
            )
        })
        .collect();
    assert_eq!(
        items,
        vec![("c1", 119), ("c2", 118), ("c3", 117), ("c6", 75)]
    );
    assert_eq!(review.unreviewed, 4);
    let again = c
        .generate_quarterly_review(compliance(api::GenerateQuarterlyReviewRequest {
            tenant: TENANT.into(),
            year: 2025,
            quarter: 2,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.review_id, review.review_id, "one review per quarter");

    for (connection, decision) in [
        ("c3", api::ReviewDecision::Revoke),
        ("c1", api::ReviewDecision::Keep),
    ] {
        let item = c
            .attest_review(compliance(api::AttestReviewRequest {
                review_id: review.review_id.clone(),
                connection_id: connection.into(),
                decision: decision as i32,
                reviewer: "rita".into(),
                note: format!("{connection}, checked with the team"),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(item.decision, decision as i32);
        assert_eq!(item.reviewer, "rita");
    }
    let open = c
        .get_quarterly_review(compliance(api::GetQuarterlyReviewRequest {
            review_id: review.review_id.clone(),
            unreviewed_only: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(open.unreviewed, 2);
    let open_ids: Vec<&str> = open
        .items
        .iter()
        .map(|i| i.connection.as_ref().unwrap().connection_id.as_str())
        .collect();
    assert_eq!(open_ids, vec!["c2", "c6"]);

    // The attestation is an event in the log, by the reviewer.
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
    assert_eq!(attested[0].actor.as_ref().unwrap().id, "rita");

    // Exports.
    let export = |format: api::ExportFormat| {
        let mut c = c.clone();
        let review_id = review.review_id.clone();
        async move {
            let mut stream = c
                .export_quarterly_review(compliance(api::ExportQuarterlyReviewRequest {
                    review_id,
                    format: format as i32,
                }))
                .await
                .unwrap()
                .into_inner();
            let mut text = String::new();
            while let Some(chunk) = stream.message().await.unwrap() {
                text.push_str(std::str::from_utf8(&chunk.data).unwrap());
            }
            text
        }
    };
    let csv = export(api::ExportFormat::Csv).await;
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 5, "{csv}");
    assert!(rows[0].starts_with("review_id,tenant,year,quarter,connection_id"));
    assert!(
        rows[3].contains(",c3,") && rows[3].contains(",revoke,rita,"),
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
    assert_eq!(json["unreviewed"], 2);
    assert_eq!(json["items"].as_array().unwrap().len(), 4);
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
    let status = c
        .get_quarterly_review(compliance(api::GetQuarterlyReviewRequest {
            review_id: review.review_id.clone(),
            unreviewed_only: false,
        }))
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
    let status = c
        .generate_quarterly_review(compliance(api::GenerateQuarterlyReviewRequest {
            tenant: TENANT.into(),
            year: 2025,
            quarter: 5,
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("quarter"),
        "{}",
        status.message()
    );
    let review = c
        .generate_quarterly_review(compliance(api::GenerateQuarterlyReviewRequest {
            tenant: TENANT.into(),
            year: 2025,
            quarter: 1,
        }))
        .await
        .unwrap()
        .into_inner();
    let status = c
        .attest_review(compliance(api::AttestReviewRequest {
            review_id: review.review_id.clone(),
            connection_id: "c1".into(),
            decision: 0,
            reviewer: "rita".into(),
            note: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("decision"),
        "{}",
        status.message()
    );
    let status = c
        .attest_review(compliance(api::AttestReviewRequest {
            review_id: review.review_id,
            connection_id: "c-unknown".into(),
            decision: api::ReviewDecision::Keep as i32,
            reviewer: "rita".into(),
            note: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // A producer may not forge a review.
    let forged = Ev::new(pb::EventKind::ReviewGenerated, TENANT, Utc::now()).build();
    let status = audit.record(vec![forged]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("events[0].kind"),
        "{}",
        status.message()
    );
    audit.stop().await;
}
