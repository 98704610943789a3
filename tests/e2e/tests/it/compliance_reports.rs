//! Every ComplianceService report, proved from events the real producers record: auth-svc
//! (apps, consent, leases, drift, offboarding, deauthorize retries) and import-svc (imports
//! that lease tokens), delivered through their outboxes to audit-svc.

use std::time::Duration;

use chrono::Utc;
use harness::{poll_until, token_of, with_bearer};
use proto::audit::v1 as api;
use proto::auth::v1 as auth;
use proto::common::v1 as common;

use crate::stack::{Stack, StackSetup, full_job};

const TENANT: &str = "firm-1";
const ANALYTICS: &[&str] = &[
    "calendar:read",
    "matters:read",
    "billing:read",
    "documents:read",
    "trust_accounts:read",
    "communications:read",
];

fn compliance<T>(message: T) -> tonic::Request<T> {
    with_bearer(message, &token_of("compliance"))
}

fn ts(at: chrono::DateTime<Utc>) -> prost_types::Timestamp {
    proto::time::timestamp(at)
}

fn id(summary: &Option<api::ConnectionSummary>) -> String {
    summary.as_ref().unwrap().connection_id.clone()
}

/// Live connections by tier, once `expected` connections are live in the log.
async fn tiers(stack: &Stack, expected: usize) -> Vec<api::TierGroup> {
    poll_until(
        &format!("{expected} live connections in the report"),
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            let groups = stack
                .compliance()
                .await
                .connections_by_risk_tier(compliance(api::ConnectionsByRiskTierRequest {
                    tenant: TENANT.into(),
                    ..Default::default()
                }))
                .await
                .ok()?
                .into_inner()
                .tiers;
            let live: usize = groups.iter().map(|g| g.connections.len()).sum();
            (live == expected).then_some(groups)
        },
    )
    .await
}

async fn shared_logins(stack: &Stack) -> Vec<api::SharedLogin> {
    stack
        .compliance()
        .await
        .shared_login_suspicions(compliance(api::SharedLoginSuspicionsRequest {
            tenant: TENANT.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .suspicions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_reports_follow_real_events() {
    let stack = Stack::start("compliance-inventory", StackSetup::default()).await;
    let everything: Vec<String> = scope_catalog::FAMILIES
        .iter()
        .map(|f| format!("{}:write", f.name))
        .collect();
    let everything: Vec<&str> = everything.iter().map(String::as_str).collect();
    let low = stack.connect(&["contacts:read"], "ann@firm", 1).await;
    let high = stack
        .connect(
            &["calendar:read", "matters:read", "activities:write"],
            "bob@firm",
            2,
        )
        .await;
    let very_high = stack.connect(ANALYTICS, "cat@firm", 3).await;
    let full = stack.connect(&everything, "dan@firm", 4).await;
    // auth-svc refuses a second person on Ann's Clio user at connect, so Eve uses her own.
    let shared = stack.connect(&["contacts:read"], "eve@firm", 5).await;

    // Risk tiers: the real grants, highest tier first.
    let groups = tiers(&stack, 5).await;
    let by_tier: Vec<(i32, Vec<String>)> = groups
        .iter()
        .map(|g| {
            let mut ids: Vec<String> = g
                .connections
                .iter()
                .map(|c| c.connection_id.clone())
                .collect();
            ids.sort();
            (g.tier, ids)
        })
        .collect();
    let mut lows = vec![low.clone(), shared.clone()];
    lows.sort();
    let mut very_highs = vec![very_high.clone(), full.clone()];
    very_highs.sort();
    assert_eq!(
        by_tier,
        vec![
            (common::RiskTier::VeryHigh as i32, very_highs),
            (common::RiskTier::High as i32, vec![high.clone()]),
            (common::RiskTier::Low as i32, lows),
        ]
    );
    let low_app = groups
        .iter()
        .flat_map(|g| &g.connections)
        .find(|c| c.connection_id == low)
        .unwrap()
        .app_id
        .clone();

    let mut c = stack.compliance().await;
    // Full account access: only Dan's app, with its one live connection.
    let apps = c
        .full_access_apps(compliance(api::FullAccessAppsRequest {
            tenant: TENANT.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert_eq!(apps.len(), 1, "{apps:?}");
    assert_eq!(apps[0].live_connections, 1);
    // Write-capable: Bob's billing assistant and Dan's everything app.
    let writers = c
        .write_capable_connections(compliance(api::WriteCapableConnectionsRequest {
            tenant: TENANT.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .connections;
    let mut writer_ids: Vec<String> = writers.iter().map(|w| id(&w.connection)).collect();
    writer_ids.sort();
    let mut expected = vec![high.clone(), full.clone()];
    expected.sort();
    assert_eq!(writer_ids, expected);
    // Shared logins: nobody shares one yet.
    assert!(shared_logins(&stack).await.is_empty());
    // Fay tries to connect as Ann's Clio user: auth-svc refuses her, and the report names
    // the login, Ann (connected) and Fay (refused).
    let refused = stack
        .try_connect(&["contacts:read"], "fay@firm", 1)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    let shared_login = poll_until(
        "the refused shared login in the report",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            let mut found = shared_logins(&stack).await;
            (found.len() == 1).then(|| found.remove(0))
        },
    )
    .await;
    assert_eq!(shared_login.principals, vec!["ann@firm", "fay@firm"]);
    assert_eq!(shared_login.refused_principals, vec!["fay@firm"]);
    assert_eq!(shared_login.refused_attempts, 1);
    assert_eq!(shared_login.connection_ids, vec![low.clone()]);

    // A real import leases Ann's token; its aggregated use reaches the report durably.
    let job = stack.submit(full_job(&low, &["contacts"])).await;
    let done = stack.finished(&job, Duration::from_secs(30)).await;
    assert_eq!(done.status, proto::imports::v1::JobStatus::Completed as i32);
    let used = poll_until(
        "Ann's last use in the report",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            let groups = tiers(&stack, 5).await;
            let ann = groups
                .iter()
                .flat_map(|g| &g.connections)
                .find(|c| c.connection_id == low)?
                .clone();
            ann.last_used_at.map(|_| ann)
        },
    )
    .await;
    // Zombies: nobody is idle now; 91 days on, every live connection is, and Ann's idle
    // time counts from her import's lease, the others' from their grant.
    let zombies = |as_of: Option<prost_types::Timestamp>| {
        let mut c = c.clone();
        async move {
            c.zombie_connections(compliance(api::ZombieConnectionsRequest {
                tenant: TENANT.into(),
                idle_days: 90,
                as_of,
            }))
            .await
            .unwrap()
            .into_inner()
            .connections
        }
    };
    assert!(zombies(None).await.is_empty());
    let later = zombies(Some(ts(Utc::now() + chrono::Duration::days(91)))).await;
    assert_eq!(later.len(), 5, "{later:?}");
    let ann = later.iter().find(|z| id(&z.connection) == low).unwrap();
    assert_eq!(
        ann.connection.as_ref().unwrap().last_used_at,
        used.last_used_at
    );
    assert!(
        later.iter().filter(|z| id(&z.connection) != low).all(|z| z
            .connection
            .as_ref()
            .unwrap()
            .last_used_at
            .is_none())
    );

    // A lease the grant does not cover is refused and audited.
    let refused = stack
        .auth()
        .await
        .lease_access_token(with_bearer(
            auth::LeaseAccessTokenRequest {
                connection_id: low.clone(),
                required_scopes: vec![
                    "matters:read"
                        .parse::<scope_catalog::Scope>()
                        .unwrap()
                        .to_wire(),
                ],
                purpose: "e2e denial".into(),
                force_refresh: false,
            },
            &token_of("import"),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    poll_until(
        "the refused lease in the log",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            let events = stack
                .audit()
                .await
                .query(compliance(api::QueryRequest {
                    tenant: TENANT.into(),
                    kinds: vec![common::EventKind::AccessDenied as i32],
                    ..Default::default()
                }))
                .await
                .ok()?
                .into_inner()
                .events;
            events
                .iter()
                .find(|e| {
                    e.refs.as_ref().is_some_and(|r| r.connection_id == low)
                        && e.payload_json.contains("LeaseAccessToken")
                })
                .map(|_| ())
        },
    )
    .await;

    // Drift: Ann's app adds matters:read; her grant (from before) lacks it.
    stack
        .auth()
        .await
        .update_app_scopes(with_bearer(
            auth::UpdateAppScopesRequest {
                app_id: low_app,
                declared_scopes: ["contacts:read", "matters:read"]
                    .iter()
                    .map(|s| common::ScopeJustification {
                        scope: Some(s.parse::<scope_catalog::Scope>().unwrap().to_wire()),
                        justification: format!("now needs {s}"),
                    })
                    .collect(),
                reason: "matters import".into(),
            },
            &token_of("operator"),
        ))
        .await
        .unwrap();
    let drifted = poll_until(
        "Ann's drifted grant",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            let drifted = stack
                .compliance()
                .await
                .scope_drift_report(compliance(api::ScopeDriftReportRequest {
                    tenant: TENANT.into(),
                }))
                .await
                .ok()?
                .into_inner()
                .connections;
            (!drifted.is_empty()).then_some(drifted)
        },
    )
    .await;
    assert_eq!(drifted.len(), 1, "{drifted:?}");
    assert_eq!(id(&drifted[0].connection), low);
    assert_eq!(
        drifted[0].missing_from_grant,
        vec![
            "matters:read"
                .parse::<scope_catalog::Scope>()
                .unwrap()
                .to_wire()
        ]
    );
    stack.stop().await;
}

async fn offboard(
    stack: &Stack,
    principal: &str,
    departed_at: Option<chrono::DateTime<Utc>>,
) -> Result<auth::OffboardUserResponse, tonic::Status> {
    stack
        .auth()
        .await
        .offboard_user(with_bearer(
            auth::OffboardUserRequest {
                principal: principal.into(),
                reason: "left the firm".into(),
                tenant: TENANT.into(),
                departed_at: departed_at.map(ts),
            },
            &token_of("operator"),
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn offboarding_of(stack: &Stack, principal: &str) -> Option<api::OffboardingEntry> {
    stack
        .compliance()
        .await
        .offboarding_report(compliance(api::OffboardingReportRequest {
            tenant: TENANT.into(),
            offboarded: None,
        }))
        .await
        .ok()?
        .into_inner()
        .entries
        .into_iter()
        .find(|e| e.principal == principal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_report_runs_from_departure_to_clio_confirmation() {
    let stack = Stack::start("compliance-offboarding", StackSetup::default()).await;
    let quick = stack.connect(&["contacts:read"], "quinn@firm", 1).await;
    let late = stack.connect(&["contacts:read"], "lee@firm", 2).await;
    let retried = stack.connect(&["contacts:read"], "ray@firm", 3).await;

    // The departure must be a plausible past time.
    for bad in [
        Utc::now() + chrono::Duration::hours(1),
        Utc::now() - chrono::Duration::days(800),
    ] {
        let status = offboard(&stack, "quinn@firm", Some(bad)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("departed_at"), "{status:?}");
    }

    // Quinn left just now: revoked and confirmed at once, within the protocol.
    offboard(&stack, "quinn@firm", None).await.unwrap();
    // Lee left 3 hours ago: confirmed at once, but 3 hours after the departure.
    offboard(
        &stack,
        "lee@firm",
        Some(Utc::now() - chrono::Duration::hours(3)),
    )
    .await
    .unwrap();
    // Ray left 2 hours ago less 3 seconds; Clio fails deauthorizations until the test
    // clears the fault, so the local revocation is within the protocol and Clio's
    // confirmation (by a retry) is not.
    stack
        .fault(clio_sim::Fault::Status {
            status: 503,
            count: None,
            fraction: None,
            path_prefix: Some("/oauth/deauthorize".into()),
        })
        .await;
    let departed = Utc::now() - chrono::Duration::minutes(120) + chrono::Duration::seconds(3);
    let response = offboard(&stack, "ray@firm", Some(departed)).await.unwrap();
    assert_eq!(
        response.results[0].clio_outcome,
        auth::ClioRevocationOutcome::FailedRetrying as i32
    );

    let settled = |principal: &'static str| {
        let stack = &stack;
        async move {
            poll_until(
                &format!("{principal}'s offboarding confirmed"),
                Duration::from_secs(20),
                Duration::from_millis(100),
                || async {
                    offboarding_of(stack, principal)
                        .await
                        .filter(|e| !e.open && e.connections.len() == 1)
                },
            )
            .await
        }
    };
    let quinn = settled("quinn@firm").await;
    assert!(!quinn.flagged, "{:?}", quinn.flag_reasons);
    assert_eq!(quinn.connections[0].connection_id, quick);
    assert_eq!(quinn.connections[0].clio_outcome, "revoked");
    assert!(quinn.seconds_to_clio_confirmation < 60);

    let lee = settled("lee@firm").await;
    assert_eq!(lee.connections[0].connection_id, late);
    assert!(lee.flagged);
    assert!(lee.seconds_to_clio_confirmation >= 3 * 3600, "{lee:?}");
    assert!(
        lee.flag_reasons[0]
            .starts_with("Clio confirmed the last deauthorization 180 minutes after departure"),
        "{:?}",
        lee.flag_reasons
    );

    // Ray's is open until the retry confirms it.
    let open = poll_until(
        "Ray's offboarding recorded",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { offboarding_of(&stack, "ray@firm").await },
    )
    .await;
    assert!(open.open, "{open:?}");
    assert!(open.last_clio_confirmation_at.is_none());
    assert_eq!(open.revocations_failed_at_clio, 1);
    stack
        .sim
        .admin()
        .clear_faults(clio_sim::Region::Us)
        .await
        .unwrap();
    let ray = settled("ray@firm").await;
    assert_eq!(ray.connections[0].connection_id, retried);
    assert_eq!(ray.connections[0].clio_outcome, "revoked");
    assert!(ray.deauthorize_retries >= 1, "{ray:?}");
    assert!(ray.seconds_to_last_revocation < 7200, "{ray:?}");
    assert!(ray.seconds_to_clio_confirmation > 7200, "{ray:?}");
    assert!(ray.flagged);
    assert!(
        ray.flag_reasons[0].starts_with("Clio confirmed the last deauthorization 120 minutes"),
        "{:?}",
        ray.flag_reasons
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_offboarding_is_recorded_and_stays_open() {
    let stack = Stack::start("compliance-partial", StackSetup::default()).await;
    let revoked = stack.connect(&["contacts:read"], "pia@firm", 4).await;
    let broken = stack.connect(&["contacts:read"], "pia@firm", 5).await;
    // One connection's tokens no key opens any more (another row's ciphertexts, bound
    // elsewhere): auth-svc cannot revoke it.
    let mut db = stack.auth_database().connect().await;
    sqlx::query(
        "UPDATE connections SET access_token_ct = o.access_token_ct, \
         refresh_token_ct = o.refresh_token_ct \
         FROM connections o WHERE connections.connection_id = $1::uuid AND o.connection_id = $2::uuid",
    )
    .bind(&broken)
    .bind(&revoked)
    .execute(&mut db)
    .await
    .unwrap();

    let response = offboard(&stack, "pia@firm", None).await.unwrap();
    assert_eq!(response.results.len(), 1);
    assert_eq!(response.failures.len(), 1);
    assert_eq!(response.failures[0].connection_id, broken);

    // The run is recorded all the same, with each connection's outcome, and stays open
    // (flagged) while a connection of the person is still live.
    let entry = poll_until(
        "pia's offboarding recorded",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            offboarding_of(&stack, "pia@firm")
                .await
                .filter(|e| e.connections.len() == 2)
        },
    )
    .await;
    assert!(entry.open, "{entry:?}");
    assert!(entry.flagged, "{entry:?}");
    let outcome_of = |id: &str| {
        entry
            .connections
            .iter()
            .find(|c| c.connection_id == id)
            .map(|c| c.clio_outcome.clone())
    };
    assert_eq!(outcome_of(&broken).as_deref(), Some("error"));
    assert_eq!(outcome_of(&revoked).as_deref(), Some("revoked"));
    assert!(entry.live_connection_ids.contains(&broken), "{entry:?}");
    stack.stop().await;
}

async fn review(stack: &Stack, review_id: &str) -> api::QuarterlyReview {
    stack
        .compliance()
        .await
        .get_quarterly_review(compliance(api::GetQuarterlyReviewRequest {
            review_id: review_id.into(),
            unreviewed_only: false,
        }))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_revoke_decisions_stay_open_until_the_revocation_arrives() {
    let stack = Stack::start("compliance-review", StackSetup::default()).await;
    let keep = stack.connect(&["contacts:read"], "kim@firm", 1).await;
    let drop = stack.connect(ANALYTICS, "rob@firm", 2).await;
    tiers(&stack, 2).await;

    let generated = stack
        .compliance()
        .await
        .generate_quarterly_review(compliance(api::GenerateQuarterlyReviewRequest {
            tenant: TENANT.into(),
            year: 2026,
            quarter: 4,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(generated.items.len(), 2);
    assert_eq!(generated.generated_by, "compliance");
    let attest = |connection: String, decision: api::ReviewDecision, caller: &'static str| {
        let stack = &stack;
        let review_id = generated.review_id.clone();
        async move {
            stack
                .compliance()
                .await
                .attest_review(with_bearer(
                    api::AttestReviewRequest {
                        review_id,
                        connection_id: connection,
                        decision: decision as i32,
                        reviewer: "someone else".into(),
                        note: "checked".into(),
                    },
                    &token_of(caller),
                ))
                .await
                .map(tonic::Response::into_inner)
        }
    };
    // The credential that generated the review may not attest it; the refusal is audited.
    let status = attest(keep.clone(), api::ReviewDecision::Keep, "compliance")
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    poll_until(
        "the refused attestation in the log",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let events = stack
                .audit()
                .await
                .query(compliance(api::QueryRequest {
                    tenant: "platform".into(),
                    kinds: vec![common::EventKind::AccessDenied as i32],
                    ..Default::default()
                }))
                .await
                .ok()?
                .into_inner()
                .events;
            events
                .iter()
                .find(|e| {
                    e.actor.as_ref().is_some_and(|a| a.id == "compliance")
                        && e.subject
                            .as_ref()
                            .is_some_and(|s| s.id.ends_with("AttestReview"))
                })
                .map(|_| ())
        },
    )
    .await;

    let kept = attest(keep.clone(), api::ReviewDecision::Keep, "reviewer")
        .await
        .unwrap();
    assert_eq!(kept.reviewer, "reviewer", "the caller, not the name sent");
    assert_eq!(kept.action, api::ReviewActionStatus::None as i32);
    let revoke = attest(drop.clone(), api::ReviewDecision::Revoke, "reviewer")
        .await
        .unwrap();
    assert_eq!(revoke.action, api::ReviewActionStatus::Open as i32);
    let now = review(&stack, &generated.review_id).await;
    assert_eq!((now.unreviewed, now.open_actions), (0, 1));

    // An operator acts on the decision; the action closes when the revocation arrives.
    stack
        .auth()
        .await
        .revoke_connection(with_bearer(
            auth::RevokeConnectionRequest {
                connection_id: drop.clone(),
                reason: "quarterly review: revoke".into(),
            },
            &token_of("operator"),
        ))
        .await
        .unwrap();
    let done = poll_until(
        "the review's action done",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            let now = review(&stack, &generated.review_id).await;
            (now.open_actions == 0).then_some(now)
        },
    )
    .await;
    let item = done
        .items
        .iter()
        .find(|i| id(&i.connection) == drop)
        .unwrap();
    assert_eq!(item.action, api::ReviewActionStatus::Done as i32);
    assert!(item.action_done_at.is_some());
    stack.stop().await;
}
