//! Clio's limit on one app as a whole: two import-svc replicas running jobs of several
//! connections of one app share the app's budget (in Postgres) and stay within it, so
//! the simulator's app limit never answers 429.

use std::time::Duration;

use clio_sim::{DatasetSize, RateLimit, Region, SimConfig};
use harness::{ClioUser, connect_to_app, registered_app, token_of, with_bearer};
use import_svc::app_budget::Budget;
use proto::auth::v1 as auth;

use crate::import_jobs::assert_completed;
use crate::stack::{Stack, StackSetup, full_job};

/// Clio's (the simulator's) limit on the app: requests per window, across all tokens.
const APP_LIMIT: u32 = 20;
const WINDOW: Duration = Duration::from_secs(2);
/// Our budget stays below Clio's limit by the calls auth-svc makes for the app (one
/// `who_am_i` a connection), which are not in import-svc's budget.
const BUDGET: u32 = 15;
const CONNECTIONS: i64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_an_apps_budget_and_clio_never_refuses_it() {
    let setup = StackSetup {
        sim: SimConfig {
            regions: vec![Region::Us],
            rate_limit: None,
            app_rate_limit: Some(RateLimit {
                limit: APP_LIMIT,
                window: WINDOW,
            }),
            dataset: DatasetSize {
                contacts: 200,
                ..DatasetSize::default()
            },
            ..SimConfig::default()
        },
        import: Box::new(|config| {
            config.importer.page_size = 20;
            config.app_budget.default = Some(Budget {
                requests: BUDGET,
                window_secs: WINDOW.as_secs(),
                margin_ms: 300,
            });
        }),
        ..StackSetup::default()
    };
    let mut stack = Stack::start("app_budget", setup).await;
    stack.start_import_replica().await;

    // Several people's connections through one app.
    let mut auth_client = stack.auth().await;
    let app = registered_app(&stack.sim, &mut auth_client, &["contacts:read"]).await;
    auth_client
        .approve_app(with_bearer(
            auth::ApproveAppRequest {
                app_id: app.app_id.clone(),
                scopes_version: app.scopes_version,
                note: "approved for the test".into(),
            },
            &token_of("compliance"),
        ))
        .await
        .unwrap();
    let admin = stack.sim.admin();
    let mut connections = Vec::new();
    for user in 1..=CONNECTIONS {
        connections.push(
            connect_to_app(
                &admin,
                &mut auth_client,
                &app.app_id,
                &format!("person-{user}@firm-1"),
                ClioUser::first_account(user),
            )
            .await
            .unwrap(),
        );
    }

    // Two jobs a connection: ten pages each, far more than the app may send in a window.
    let mut jobs = Vec::new();
    for connection in &connections {
        for _ in 0..2 {
            jobs.push(stack.submit(full_job(connection, &["contacts"])).await);
        }
    }
    for job_id in &jobs {
        let job = stack.finished(job_id, Duration::from_secs(120)).await;
        assert_completed(&job);
        assert_eq!(job.progress[0].records_fetched, 200, "{job:?}");
    }

    let calls = admin.calls().await.unwrap();
    let refused = calls.app_limit_429_for(Region::Us, &app.client_id);
    let busiest = calls.app_max_in_window_for(Region::Us, &app.client_id);
    println!(
        "app {}: busiest window {busiest} requests (limit {APP_LIMIT}, budget {BUDGET}), {refused} refused by the app limit",
        app.client_id
    );
    assert_eq!(refused, 0, "Clio refused requests for the app's limit");
    assert!(
        busiest <= u64::from(APP_LIMIT),
        "{busiest} requests in one window"
    );
    // The budget did the limiting: the jobs needed several windows.
    assert!(
        calls.app_max_in_window_for(Region::Us, &app.client_id) >= u64::from(BUDGET) / 2,
        "the jobs never came near the budget: the test proves nothing"
    );
    stack.stop().await;
}
