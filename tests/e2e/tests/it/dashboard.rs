//! The web dashboard over the whole stack: people sign in, see what the services answer
//! and act through them as themselves. The browser tests drive headless Chromium; the
//! others speak HTTP directly, as an attacker's script would.

use std::collections::HashMap;
use std::time::Duration;

use clio_sim::Resource;
use dashboard::config::{Backends, DashboardConfig, OidcConfig, PersonConfig, SessionConfig};
use harness::{SpawnedService, channel, poll_until, token_of, with_bearer};
use proto::auth::v1 as auth;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use proto::common::v1::EventKind;
use proto::suggestions::v1 as pb;
use reqwest::StatusCode;
use secrecy::SecretString;
use service_runtime::{Role, ServiceConfig};

use crate::browser::Browser;
use crate::oidc_provider::{self, TestIdp};
use crate::stack::{Stack, StackSetup};
use crate::suggestions;

const CAROL: &str = "carol@firm.example";
const RACHEL: &str = "rachel@firm.example";
const OLIVIA: &str = "olivia@firm.example";
const BOB: &str = "bob@firm.example";
const DANA: &str = "dana@firm.example";

fn password_of(name: &str) -> String {
    format!("the password of {name}")
}

/// The dashboard in-process over `stack`, with Carol and Rachel (compliance), Olivia
/// (operator) and Bob (a lawyer reviewing his billing suggestions), each acting with their
/// own service credential.
struct Front {
    service: SpawnedService,
    base: String,
}

impl Front {
    async fn start(stack: &Stack) -> Front {
        Front::start_with(stack, None).await
    }

    /// With sign-in through the identity provider at `issuer` too.
    async fn start_with(stack: &Stack, issuer: Option<&str>) -> Front {
        let people = [
            (CAROL, Role::Compliance),
            (RACHEL, Role::Compliance),
            (OLIVIA, Role::Operator),
            (BOB, Role::BillingReviewer),
            (DANA, Role::DataReader),
        ]
        .into_iter()
        .map(|(name, role)| PersonConfig {
            name: name.to_owned(),
            password_hash: Some(
                dashboard::people::hash_password(&SecretString::from(password_of(name))).unwrap(),
            ),
            roles: vec![role],
            credential: SecretString::from(token_of(name)),
        })
        .collect();
        let config = DashboardConfig {
            service: ServiceConfig::default(),
            backends: Backends {
                auth: format!("http://{}", stack.auth_address()),
                import: format!("http://{}", stack.import_address()),
                audit: format!("http://{}", stack.audit_address()),
                tls: None,
            },
            tenants: vec!["firm-1".into()],
            oidc: None,
            sessions: SessionConfig {
                secure_cookie: false,
                max_failed_sign_ins: 3,
                ..SessionConfig::default()
            },
            people,
        };
        let issuer = issuer.map(str::to_owned);
        let service = SpawnedService::start(|listener, shutdown| {
            // The provider sends browsers back to this listener's address.
            let mut config = config;
            let callback = format!(
                "http://{}/signin/oidc/callback",
                listener.local_addr().unwrap()
            );
            config.oidc = issuer.map(|issuer| OidcConfig {
                issuer,
                client_id: oidc_provider::CLIENT_ID.into(),
                client_secret: SecretString::from(oidc_provider::CLIENT_SECRET),
                redirect_url: callback,
                person_claim: "email".into(),
                scopes: vec!["openid".into(), "email".into()],
                label: "Firm SSO".into(),
            });
            dashboard::run(config, listener, shutdown)
        })
        .await;
        let base = format!("http://{}", service.address);
        let health = format!("{base}/healthz");
        poll_until(
            "the dashboard answers",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async {
                reqwest::get(&health)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            },
        )
        .await;
        Front { service, base }
    }

    async fn stop(self) {
        self.service.stop().await.unwrap();
    }
}

/// Dave's and Frank's connections (contacts:read, Clio users 3 and 4).
async fn dave_and_frank(stack: &Stack) -> (String, String) {
    let dave = stack
        .connect(&["contacts:read"], "dave@firm.example", 3)
        .await;
    let frank = stack
        .connect(&["contacts:read"], "frank@firm.example", 4)
        .await;
    (dave, frank)
}

/// A browser signed in to the dashboard as `person`.
async fn browser_as(front: &Front, person: &str) -> Browser {
    let browser = Browser::start().await;
    browser
        .sign_in(&front.base, person, &password_of(person))
        .await;
    browser
}

/// The end of a browser test: its browsers, the dashboard, the stack.
async fn finish(browsers: Vec<Browser>, front: Front, stack: Stack) {
    for browser in browsers {
        browser.close().await;
    }
    front.stop().await;
    stack.stop().await;
}

async fn auth(stack: &Stack) -> AuthServiceClient<tonic::transport::Channel> {
    AuthServiceClient::new(channel(stack.auth_address()).await)
}

async fn connection(stack: &Stack, connection_id: &str) -> auth::Connection {
    auth(stack)
        .await
        .get_connection(with_bearer(
            auth::GetConnectionRequest {
                connection_id: connection_id.to_owned(),
            },
            &token_of("operator"),
        ))
        .await
        .unwrap()
        .into_inner()
}

/// The actor of the one event of `kind` about `subject` (its id in the event's subject).
async fn actor_of(stack: &Stack, kind: EventKind, subject: &str) -> String {
    poll_until(
        "the audit event",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            stack
                .audit_events("firm-1", &[kind])
                .await
                .into_iter()
                .find(|e| {
                    e.subject.as_ref().is_some_and(|s| s.id == subject)
                        || e.payload_json.contains(subject)
                })
                .and_then(|e| e.actor)
                .map(|a| a.id)
        },
    )
    .await
}

// ---- in a real browser ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_browser_a_compliance_officer_reads_the_overview_approves_one_app_and_rejects_another()
{
    let stack = Stack::start("dash_app", StackSetup::default()).await;
    stack
        .connect(&["contacts:read"], "dave@firm.example", 3)
        .await;
    stack
        .connect(&["contacts:read", "matters:write"], "erin@firm.example", 4)
        .await;
    let pending =
        harness::registered_app(&stack.sim, &mut auth(&stack).await, &["calendar:read"]).await;
    let too_broad = harness::registered_app(
        &stack.sim,
        &mut auth(&stack).await,
        &["contacts:write", "matters:write"],
    )
    .await;
    let front = Front::start(&stack).await;
    let browser = browser_as(&front, CAROL).await;
    // The overview's chart counts what audit-svc's report holds: two live connections.
    let counts: usize = browser
        .texts("#tier-chart .count")
        .await
        .iter()
        .map(|t| t.parse::<usize>().unwrap())
        .sum();
    assert_eq!(counts, 2);
    assert!(
        browser
            .text("#write-capable")
            .await
            .contains("erin@firm.example")
    );
    browser.screenshot("overview").await;
    // The connections of one risk tier.
    browser
        .goto(&format!("{}/connections?tier=high", front.base))
        .await;
    let high = browser.texts("#connections tbody tr").await;
    assert_eq!(high.len(), 1, "{high:?}");
    assert!(high[0].contains("erin@firm.example"), "{high:?}");

    browser.goto(&format!("{}/apps", front.base)).await;
    let row = format!("#app-{}", pending.app_id);
    assert_eq!(
        browser.text(&format!("{row} .status")).await,
        "pending approval"
    );
    assert!(
        browser
            .text(&row)
            .await
            .contains("test needs calendar:read")
    );
    browser
        .fill(
            &format!("{row} form.approve input[name=note]"),
            "calendar sync reviewed",
        )
        .await;
    browser.screenshot("apps").await;
    browser.submit(&format!("{row} form.approve button")).await;
    assert_eq!(browser.text("#notice").await, "Approved.");
    assert_eq!(browser.text(&format!("{row} .status")).await, "approved");

    // auth-svc recorded Carol, not the dashboard, as the approver.
    let app = auth(&stack)
        .await
        .get_app(with_bearer(
            auth::GetAppRequest {
                app_id: pending.app_id.clone(),
            },
            &token_of("operator"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(app.approved_by, CAROL);
    assert_eq!(
        actor_of(&stack, EventKind::AppApproved, &pending.app_id).await,
        CAROL
    );

    // The other one is refused, with the reason, as Carol.
    let row = format!("#app-{}", too_broad.app_id);
    browser
        .fill(
            &format!("{row} form.reject input[name=note]"),
            "write access is not justified",
        )
        .await;
    browser.submit(&format!("{row} form.reject button")).await;
    assert_eq!(browser.text("#notice").await, "Rejected.");
    assert_eq!(browser.text(&format!("{row} .status")).await, "rejected");
    assert_eq!(
        browser.text(&format!("{row} .rejection")).await,
        format!("rejected by {CAROL}: write access is not justified")
    );
    assert_eq!(
        actor_of(&stack, EventKind::AppRejected, &too_broad.app_id).await,
        CAROL
    );

    finish(vec![browser], front, stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_browser_an_operator_revokes_a_connection_as_themselves() {
    let stack = Stack::start("dash_revoke", StackSetup::default()).await;
    let (kept, leaving) = dave_and_frank(&stack).await;
    let front = Front::start(&stack).await;
    let browser = browser_as(&front, OLIVIA).await;
    browser
        .goto(&format!(
            "{}/connections?principal=frank%40firm.example",
            front.base
        ))
        .await;
    let row = format!("#connection-{leaving}");
    assert_eq!(browser.text(&format!("{row} .status")).await, "active");
    assert!(
        browser
            .texts(&format!("#connection-{kept}"))
            .await
            .is_empty()
    );
    browser
        .fill(&format!("{row} input[name=reason]"), "left the firm")
        .await;
    browser.submit(&format!("{row} form.revoke button")).await;
    assert!(browser.text("#notice").await.starts_with("Revoked"));
    browser
        .goto(&format!(
            "{}/connections?principal=frank%40firm.example",
            front.base
        ))
        .await;
    assert!(
        browser
            .text(&format!("{row} .status"))
            .await
            .starts_with("revoked")
    );
    browser.screenshot("connections").await;

    let revoked = connection(&stack, &leaving).await;
    assert_eq!(revoked.status, auth::ConnectionStatus::Revoked as i32);
    assert_eq!(revoked.revoked_by, OLIVIA);
    assert_eq!(revoked.revocation_reason, "left the firm");
    assert_eq!(
        actor_of(&stack, EventKind::ConnectionRevoked, &leaving).await,
        OLIVIA
    );
    // Only that one.
    assert_eq!(
        connection(&stack, &kept).await.status,
        auth::ConnectionStatus::Active as i32
    );

    // The connection's page tells compliance its whole story, newest first.
    let mut carol = Visitor::new(&front);
    carol.sign_in(CAROL, &password_of(CAROL)).await;
    let (status, _, page) = carol.get(&format!("/connections/{leaving}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let kinds: Vec<&str> = page
        .split(r#"<td class="kind">"#)
        .skip(1)
        .filter_map(|rest| rest.split('<').next())
        .collect();
    assert_eq!(kinds.first(), Some(&"connection_revoked"), "{kinds:?}");
    assert!(
        kinds.contains(&"consent_recorded") && kinds.contains(&"connection_granted"),
        "{kinds:?}"
    );
    assert!(page.contains("frank@firm.example") && page.contains("left the firm"));

    finish(vec![browser], front, stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_browser_a_lawyer_approves_edits_and_rejects_billing_suggestions_one_click_each() {
    let stack = Stack::start("dash_suggest", suggestions::with_calendar(0)).await;
    let bob = stack
        .connect(
            &["calendar:read", "matters:read", "activities:write"],
            BOB,
            3,
        )
        .await;
    // A meeting to approve as suggested, a call to approve edited, a lunch to reject.
    for (id, summary, at, minutes) in [
        (
            "4100000201",
            "Client meeting – 00012-Smith",
            suggestions::at(9, 14, 0),
            37,
        ),
        (
            "4100000202",
            "Call with client – 00012-Smith",
            suggestions::at(10, 9, 0),
            30,
        ),
        (
            "4100000203",
            "Lunch with client – 00012-Smith",
            suggestions::at(11, 12, 0),
            60,
        ),
    ] {
        let entry = suggestions::entry(
            id,
            summary,
            at,
            minutes,
            suggestions::MATTER_BASE + 12,
            suggestions::USER_BASE + 3,
        );
        suggestions::add(&stack, Resource::CalendarEntries, entry).await;
    }
    let detected = suggestions::detect(
        &stack,
        BOB,
        &bob,
        suggestions::at(1, 0, 0),
        suggestions::at(30, 0, 0),
    )
    .await
    .unwrap();
    let of = |entry: &str| suggestions::suggested(&detected, entry);
    let (suggestion, edited, rejected) = (of("4100000201"), of("4100000202"), of("4100000203"));
    let front = Front::start(&stack).await;
    let browser = browser_as(&front, BOB).await;
    browser.goto(&format!("{}/suggestions", front.base)).await;
    let row = format!("#suggestion-{}", suggestion.suggestion_id);
    assert_eq!(
        browser
            .attr(&format!("{row} input[name=minutes]"), "value")
            .await
            .as_deref(),
        Some("42")
    );
    browser.screenshot("suggestions").await;
    browser.submit(&format!("{row} form.approve button")).await;
    assert_eq!(browser.text("#notice").await, "Approved.");

    let decided = suggestions::get(&stack, &suggestion.suggestion_id).await;
    assert_eq!(decided.decided_by, BOB);
    assert_eq!(decided.quantity_secs, suggestion.quantity_secs);
    // Approving writes the time entry to Clio at once, as suggested.
    assert_eq!(
        decided.status,
        pb::SuggestionStatus::Written as i32,
        "{decided:?}"
    );
    let written = stack.created_activities().await;
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(
        written[0]["quantity"],
        serde_json::json!(decided.quantity_secs)
    );
    browser
        .goto(&format!("{}/suggestions?status=written", front.base))
        .await;
    assert_eq!(
        browser.text(&format!("{row} td:last-child")).await,
        format!("written to Clio as activity {}", decided.clio_activity_id)
    );

    // Edited before approving: written as edited.
    let row = format!("#suggestion-{}", edited.suggestion_id);
    browser.goto(&format!("{}/suggestions", front.base)).await;
    browser
        .fill(&format!("{row} input[name=minutes]"), "45")
        .await;
    browser
        .fill(
            &format!("{row} input[name=description]"),
            "Call with client, notes included",
        )
        .await;
    browser.submit(&format!("{row} form.approve button")).await;
    assert_eq!(browser.text("#notice").await, "Approved.");
    let written = stack.created_activities().await;
    assert_eq!(written.len(), 2, "{written:?}");
    assert_eq!(written[1]["quantity"], serde_json::json!(45 * 60));
    assert_eq!(
        written[1]["note"],
        serde_json::json!("Call with client, notes included")
    );

    // Rejected with a reason: nothing more is written.
    let row = format!("#suggestion-{}", rejected.suggestion_id);
    browser
        .fill(
            &format!("{row} form.reject input[name=reason]"),
            "not billable",
        )
        .await;
    browser.submit(&format!("{row} form.reject button")).await;
    assert_eq!(browser.text("#notice").await, "Rejected.");
    let decided = suggestions::get(&stack, &rejected.suggestion_id).await;
    assert_eq!(decided.status, pb::SuggestionStatus::Rejected as i32);
    assert_eq!(
        (
            decided.decided_by.as_str(),
            decided.rejection_reason.as_str()
        ),
        (BOB, "not billable")
    );
    assert_eq!(stack.created_activities().await.len(), 2);

    finish(vec![browser], front, stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_browser_a_quarterly_review_is_generated_attested_by_another_officer_and_exported() {
    let stack = Stack::start("dash_review", StackSetup::default()).await;
    let (kept, dropped) = dave_and_frank(&stack).await;
    let front = Front::start(&stack).await;
    let browser = browser_as(&front, CAROL).await;
    browser.goto(&format!("{}/reviews", front.base)).await;
    browser.submit("#generate button").await;
    assert_eq!(browser.text("#unreviewed").await, "2");
    let review_path = browser
        .client
        .current_url()
        .await
        .unwrap()
        .path()
        .to_owned();
    // Carol generated it: audit-svc refuses her attestation, and the page says why.
    browser
        .fill(&format!("#item-{kept} input[name=note]"), "still needed")
        .await;
    browser.submit(&format!("#item-{kept} button.keep")).await;
    assert!(browser.text("#error").await.contains("does not allow you"));

    let second = browser_as(&front, RACHEL).await;
    second.goto(&format!("{}{review_path}", front.base)).await;
    second
        .fill(&format!("#item-{kept} input[name=note]"), "still needed")
        .await;
    second.submit(&format!("#item-{kept} button.keep")).await;
    assert_eq!(second.text("#notice").await, "Decision recorded.");
    second
        .fill(
            &format!("#item-{dropped} input[name=note]"),
            "left in October",
        )
        .await;
    second
        .submit(&format!("#item-{dropped} button.revoke"))
        .await;
    assert_eq!(second.text("#unreviewed").await, "0");
    assert_eq!(second.text("#open-actions").await, "1");
    assert!(
        second
            .text(&format!("#item-{dropped}"))
            .await
            .contains("revoke by rachel@firm.example: left in October")
    );
    assert!(
        second
            .text(&format!("#item-{dropped} .action"))
            .await
            .contains("revocation outstanding")
    );
    second.screenshot("review").await;

    // The export, as the browser downloads it.
    let mut rachel = Visitor::new(&front);
    rachel.sign_in(RACHEL, &password_of(RACHEL)).await;
    let (status, headers, csv) = rachel.get(&format!("{review_path}/export.csv")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let row = csv
        .lines()
        .find(|l| l.contains(&dropped))
        .unwrap_or_else(|| panic!("{csv}"));
    assert!(row.contains("revoke") && row.contains(RACHEL), "{row}");

    finish(vec![second, browser], front, stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_browser_an_offboarding_is_started_and_followed_against_the_two_hour_protocol() {
    let stack = Stack::start("dash_offboard", StackSetup::default()).await;
    let first = stack
        .connect(&["contacts:read"], "frank@firm.example", 4)
        .await;
    let front = Front::start(&stack).await;
    let browser = browser_as(&front, OLIVIA).await;
    browser.goto(&format!("{}/offboarding", front.base)).await;
    let departed = chrono::Utc::now() - chrono::Duration::minutes(30);
    browser
        .fill("#offboard input[name=principal]", "frank@firm.example")
        .await;
    browser
        .fill("#offboard input[name=reason]", "left the firm")
        .await;
    // A datetime-local field takes the keys of its parts; set it the way a script can.
    browser
        .client
        .execute(
            "document.querySelector('#offboard input[name=departed_at]').value = arguments[0];",
            vec![serde_json::json!(
                departed.format("%Y-%m-%dT%H:%M").to_string()
            )],
        )
        .await
        .unwrap();
    browser.submit("#offboard button").await;
    assert!(
        browser
            .text("#notice")
            .await
            .starts_with("Offboarding started")
    );
    assert_eq!(connection(&stack, &first).await.revoked_by, OLIVIA);

    let carol = browser_as(&front, CAROL).await;
    let section = "section[id='offboarding-frank@firm.example']";
    let done = poll_until(
        "Clio confirms the deauthorization",
        Duration::from_secs(20),
        Duration::from_millis(500),
        || async {
            carol.goto(&format!("{}/offboarding", front.base)).await;
            let open = carol.attr(section, "data-open").await;
            (open.as_deref() == Some("false")).then_some(())
        },
    )
    .await;
    let () = done;
    let outcome = carol.text(&format!("#offboarded-{first} .outcome")).await;
    assert!(outcome.starts_with("revoked\nClio confirmed"), "{outcome}");
    assert_eq!(
        carol.text(&format!("{section} .status")).await,
        "done within protocol"
    );
    let elapsed = carol.text(&format!("{section} .elapsed")).await;
    assert!(elapsed.starts_with("0 h 3"), "{elapsed}");
    carol.screenshot("offboarding").await;

    finish(vec![carol, browser], front, stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_browser_the_audit_log_verifies_and_tails_new_events_live() {
    let stack = Stack::start("dash_audit", StackSetup::default()).await;
    let target = stack
        .connect(&["contacts:read"], "dave@firm.example", 3)
        .await;
    let front = Front::start(&stack).await;
    let browser = browser_as(&front, CAROL).await;
    browser.goto(&format!("{}/audit", front.base)).await;
    assert_eq!(browser.text("#tail-status").await, "live");
    let kinds = browser.texts("#events .kind").await;
    assert!(
        kinds.contains(&"connection_granted".to_owned()),
        "{kinds:?}"
    );
    browser.submit("#verify").await;
    assert!(browser.text("#verified").await.starts_with("Chain intact"));
    // The overview remembers who verified and what they found.
    browser.goto(&front.base).await;
    let last = browser.text("#chain .last-verified").await;
    assert!(last.contains(&format!("by {CAROL}: intact")), "{last}");
    assert!(last.contains("the newest checkpoint"), "{last}");
    browser.goto(&format!("{}/audit", front.base)).await;
    assert_eq!(browser.text("#tail-status").await, "live");

    // Something happens elsewhere: it shows up without a reload.
    auth(&stack)
        .await
        .revoke_connection(with_bearer(
            auth::RevokeConnectionRequest {
                connection_id: target.clone(),
                reason: "tail test".into(),
            },
            &token_of("operator"),
        ))
        .await
        .unwrap();
    let tailed = poll_until(
        "the revocation in the live tail",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let rows = browser.texts("#tail tbody tr").await;
            rows.into_iter().find(|r| r.contains("connection_revoked"))
        },
    )
    .await;
    assert!(
        tailed.contains("operator") && tailed.contains("tail test"),
        "{tailed}"
    );
    browser.screenshot("audit").await;

    finish(vec![browser], front, stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_browser_an_import_is_watched_to_its_end() {
    let stack = Stack::start("dash_imports", StackSetup::default()).await;
    let connection = stack
        .connect(&["contacts:read", "matters:read"], "dave@firm.example", 3)
        .await;
    let front = Front::start(&stack).await;
    let browser = browser_as(&front, OLIVIA).await;
    let job_id = stack
        .submit(crate::stack::full_job(
            &connection,
            &["contacts", "matters"],
        ))
        .await;
    browser.goto(&format!("{}/imports", front.base)).await;
    let row = format!("#job-{job_id}");
    // The page follows the job by itself (it reloads while a job runs).
    let ended = poll_until(
        "the job completed on the page",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let status = browser.attr(&row, "data-status").await;
            (status.as_deref() == Some("completed")).then_some(())
        },
    )
    .await;
    let () = ended;
    let job = stack.job(&job_id).await;
    let written: u64 = job.progress.iter().map(|p| p.records_written).sum();
    assert!(written > 0);
    assert!(
        browser
            .text(&format!("{row} .records"))
            .await
            .starts_with(&format!("{written} written")),
    );
    assert_eq!(
        browser
            .attr(&format!("{row} progress"), "value")
            .await
            .as_deref(),
        Some("2")
    );
    browser.screenshot("imports").await;

    // What it stored, as a data reader browses it; the operator may not.
    let mut dana = Visitor::new(&front);
    dana.sign_in(DANA, &password_of(DANA)).await;
    let path = format!("/records?account={}&resource=contacts", job.clio_account_id);
    let (status, _, page) = dana.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let contacts = job
        .progress
        .iter()
        .find(|p| p.resource == "contacts")
        .unwrap();
    let shown = page.matches(r#"<tr id="record-"#).count() as u64;
    assert_eq!(shown, contacts.records_written.min(50), "{page}");
    let mut olivia = Visitor::new(&front);
    olivia.sign_in(OLIVIA, &password_of(OLIVIA)).await;
    assert_eq!(olivia.get(&path).await.0, StatusCode::FORBIDDEN);

    finish(vec![browser], front, stack).await;
}

// ---- over plain HTTP, as a script would ----

/// A browser-less visitor: keeps its cookies, never follows redirects.
struct Visitor {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

impl Visitor {
    fn new(front: &Front) -> Visitor {
        Visitor {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: front.base.clone(),
            cookies: HashMap::new(),
        }
    }

    fn keep_cookies(&mut self, response: &reqwest::Response) {
        for header in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let text = header.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep_cookies(&response);
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, response.text().await.unwrap())
    }

    async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> (StatusCode, String) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .form(form);
        if let Some(origin) = origin {
            request = request.header(reqwest::header::ORIGIN, origin);
        }
        let response = request.send().await.unwrap();
        self.keep_cookies(&response);
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    async fn sign_in(&mut self, name: &str, password: &str) -> StatusCode {
        let (_, _, page) = self.get("/signin").await;
        let csrf = csrf_in(&page);
        self.post(
            "/signin",
            &[("name", name), ("password", password), ("csrf", &csrf)],
            None,
        )
        .await
        .0
    }
}

/// The first CSRF token of a page's forms.
fn csrf_in(page: &str) -> String {
    let start = page
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + 19;
    page[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_need_a_sign_in_and_a_wrong_password_or_a_forged_sign_in_gets_none() {
    let stack = Stack::start("dash_signin", StackSetup::default()).await;
    let front = Front::start(&stack).await;
    let mut visitor = Visitor::new(&front);

    let (status, headers, _) = visitor.get("/connections").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[reqwest::header::LOCATION], "/signin");

    assert_eq!(
        visitor.sign_in(OLIVIA, "not her password").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        visitor.sign_in("nobody@firm.example", "x").await,
        StatusCode::UNAUTHORIZED
    );
    assert!(!visitor.cookies.contains_key("clio_dashboard"));
    // A sign-in form posted from elsewhere (no matching sign-in token) is refused.
    let (status, _) = visitor
        .post(
            "/signin",
            &[
                ("name", OLIVIA),
                ("password", &password_of(OLIVIA)),
                ("csrf", "forged"),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!visitor.cookies.contains_key("clio_dashboard"));

    assert_eq!(
        visitor.sign_in(OLIVIA, &password_of(OLIVIA)).await,
        StatusCode::SEE_OTHER
    );
    let (status, _, page) = visitor.get("/connections").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(OLIVIA));

    // Signing out ends the session on the server, not only in the browser.
    let stolen = visitor.cookies["clio_dashboard"].clone();
    let csrf = csrf_in(&page);
    let (status, _) = visitor.post("/signout", &[("csrf", &csrf)], None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    visitor.cookies.insert("clio_dashboard".into(), stolen);
    assert_eq!(visitor.get("/connections").await.0, StatusCode::SEE_OTHER);

    // Three failures lock the name out, even for the right password.
    let mut guesser = Visitor::new(&front);
    for _ in 0..3 {
        assert_eq!(
            guesser.sign_in(CAROL, "guess").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        guesser.sign_in(CAROL, &password_of(CAROL)).await,
        StatusCode::UNAUTHORIZED
    );

    front.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_without_its_token_from_another_site_or_by_the_wrong_role_changes_nothing() {
    let stack = Stack::start("dash_csrf", StackSetup::default()).await;
    let target = stack
        .connect(&["contacts:read"], "dave@firm.example", 3)
        .await;
    let front = Front::start(&stack).await;
    let path = format!("/connections/{target}/revoke");

    let mut olivia = Visitor::new(&front);
    olivia.sign_in(OLIVIA, &password_of(OLIVIA)).await;
    let (_, _, page) = olivia.get("/connections").await;
    let csrf = csrf_in(&page);
    let reason = ("reason", "forged");
    for (form, origin) in [
        (vec![reason], None),
        (vec![reason, ("csrf", "not-the-token")], None),
        (
            vec![reason, ("csrf", csrf.as_str())],
            Some("https://evil.example"),
        ),
    ] {
        let (status, _) = olivia.post(&path, &form, origin).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{form:?} from {origin:?}");
    }
    // A person whose role does not revoke, with a valid token of their own.
    let mut bob = Visitor::new(&front);
    bob.sign_in(BOB, &password_of(BOB)).await;
    let (_, _, page) = bob.get("/suggestions").await;
    let bob_csrf = csrf_in(&page);
    let (status, body) = bob.post(&path, &[reason, ("csrf", &bob_csrf)], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("operator role"), "{body}");
    assert_eq!(
        connection(&stack, &target).await.status,
        auth::ConnectionStatus::Active as i32
    );

    // A reason is required: the audit log keeps it.
    let (status, body) = olivia
        .post(&path, &[("reason", " "), ("csrf", &csrf)], None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("reason"), "{body}");
    // The real thing goes through.
    let (status, _) = olivia
        .post(
            &path,
            &[("reason", "left"), ("csrf", &csrf)],
            Some(&front.base),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(connection(&stack, &target).await.revoked_by, OLIVIA);

    front.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_page_carries_the_security_headers_and_shows_no_secret() {
    let stack = Stack::start("dash_headers", StackSetup::default()).await;
    stack
        .connect(&["contacts:read"], "dave@firm.example", 3)
        .await;
    let front = Front::start(&stack).await;

    let mut pages = Vec::new();
    let mut anonymous = Visitor::new(&front);
    pages.push(("/signin".to_owned(), anonymous.get("/signin").await));
    pages.push(("/nowhere".to_owned(), anonymous.get("/nowhere").await));
    for (person, paths) in [
        (
            CAROL,
            &[
                "/",
                "/apps",
                "/connections",
                "/reviews",
                "/offboarding",
                "/audit",
                "/imports",
            ][..],
        ),
        (
            OLIVIA,
            &["/", "/apps", "/connections", "/offboarding", "/imports"][..],
        ),
        (BOB, &["/", "/suggestions"][..]),
        (DANA, &["/", "/records"][..]),
    ] {
        let mut visitor = Visitor::new(&front);
        assert_eq!(
            visitor.sign_in(person, &password_of(person)).await,
            StatusCode::SEE_OTHER
        );
        for path in paths {
            let answer = visitor.get(path).await;
            assert_eq!(answer.0, StatusCode::OK, "{person} {path}: {}", answer.2);
            pages.push((format!("{person} {path}"), answer));
        }
    }
    let secrets: Vec<String> = [CAROL, OLIVIA, BOB, DANA, "operator", "compliance"]
        .iter()
        .map(|name| token_of(name))
        .chain([CAROL, OLIVIA, BOB].iter().map(|name| password_of(name)))
        .collect();
    for (page, (_, headers, body)) in &pages {
        let csp = headers[reqwest::header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{page}: {csp}");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{page}: {csp}"
        );
        assert_eq!(headers[reqwest::header::X_FRAME_OPTIONS], "DENY", "{page}");
        assert_eq!(
            headers[reqwest::header::X_CONTENT_TYPE_OPTIONS],
            "nosniff",
            "{page}"
        );
        assert_eq!(
            headers[reqwest::header::CACHE_CONTROL],
            "no-store",
            "{page}"
        );
        assert!(!body.contains("$argon2"), "{page} shows a password hash");
        for secret in &secrets {
            assert!(!body.contains(secret.as_str()), "{page} shows a secret");
        }
    }
    // Bob's session cookie is HttpOnly and SameSite=Strict.
    let response = reqwest::get(format!("{}/signin", front.base))
        .await
        .unwrap();
    let cookie = response.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    front.stop().await;
    stack.stop().await;
}

// ---- through the firm's identity provider ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_browser_a_person_signs_in_through_the_firm_s_identity_provider() {
    let stack = Stack::start("dash_oidc", StackSetup::default()).await;
    let idp = TestIdp::start(CAROL).await;
    let front = Front::start_with(&stack, Some(&idp.issuer)).await;
    let browser = Browser::start().await;

    browser.goto(&format!("{}/signin", front.base)).await;
    assert_eq!(browser.text("#sign-in-oidc").await, "Sign in with Firm SSO");
    browser.submit("#sign-in-oidc").await;
    // Provider, callback, then the overview, signed in as the person the provider named.
    assert_eq!(browser.text("#signed-in-as").await, CAROL);
    assert_eq!(browser.text("main h1").await, "Overview");

    idp.stop().await;
    finish(vec![browser], front, stack).await;
}

/// Follows a sign-in through the provider as a browser would, up to the callback's answer.
async fn sign_in_through(visitor: &mut Visitor) -> (StatusCode, String, String) {
    let response = visitor
        .http
        .get(format!("{}/signin/oidc", visitor.base))
        .send()
        .await
        .unwrap();
    visitor.keep_cookies(&response);
    let to_provider = response.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let back = visitor.http.get(&to_provider).send().await.unwrap();
    let callback = back.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let path = callback.trim_start_matches(&visitor.base).to_owned();
    let (status, _, page) = visitor.get(&path).await;
    (status, page, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_replayed_foreign_and_unknown_sign_ins_through_the_provider_are_refused() {
    let stack = Stack::start("dash_oidc_refused", StackSetup::default()).await;
    let idp = TestIdp::start(OLIVIA).await;
    let front = Front::start_with(&stack, Some(&idp.issuer)).await;

    // The honest one: a session, used once.
    let mut olivia = Visitor::new(&front);
    let (status, page, callback) = sign_in_through(&mut olivia).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(olivia.cookies.contains_key("clio_dashboard"));
    assert_eq!(olivia.get("/connections").await.0, StatusCode::OK);
    // The same callback again (a replay, from the same browser): its state is used up.
    let (status, _, page) = olivia.get(&callback).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{page}");

    // A callback carried to another browser (login CSRF): not started there.
    let mut victim = Visitor::new(&front);
    let attacker = Visitor::new(&front);
    let response = attacker
        .http
        .get(format!("{}/signin/oidc", attacker.base))
        .send()
        .await
        .unwrap();
    let to_provider = response.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let back = attacker.http.get(&to_provider).send().await.unwrap();
    let callback = back.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, _, page) = victim.get(callback.trim_start_matches(&front.base)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("not started in this browser"), "{page}");
    assert!(!victim.cookies.contains_key("clio_dashboard"));

    // A token signed with a key the provider does not publish.
    idp.forge(true);
    let mut forged = Visitor::new(&front);
    let (status, page, _) = sign_in_through(&mut forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("signature does not verify"), "{page}");
    assert!(!forged.cookies.contains_key("clio_dashboard"));
    idp.forge(false);

    // Someone the provider knows but the dashboard does not.
    idp.sign_in_as("mallory@firm.example");
    let mut stranger = Visitor::new(&front);
    let (status, page, _) = sign_in_through(&mut stranger).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("not one of this dashboard"), "{page}");
    assert!(!stranger.cookies.contains_key("clio_dashboard"));

    front.stop().await;
    idp.stop().await;
    stack.stop().await;
}
