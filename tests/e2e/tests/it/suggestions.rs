//! Billing suggestions end to end: a person's calendar in the simulator, read through
//! their connection by import-svc's `SuggestionService`, judged by the rules, shown to
//! them, and refused or kept; nothing is written to Clio before an approval.

use chrono::{DateTime, TimeZone, Utc};
use clio_sim::{DatasetSize, Region, Resource, SimConfig};
use harness::{channel, token_of, with_bearer};
use proto::common::v1::EventKind;
use proto::suggestions::v1 as pb;
use proto::suggestions::v1::suggestion_service_client::SuggestionServiceClient;
use serde_json::{Value, json};
use tonic::Code;

use crate::stack::{Stack, StackSetup};

const BOB: &str = "bob@firm.example";
const EVE: &str = "eve@firm.example";
const SCOPES: &[&str] = &["calendar:read", "matters:read", "activities:write"];

/// The calendar entries the tests add, by what they are (the simulator's ids: numbers as
/// text).
const FIRST: &str = "4100000101";
const SECOND: &str = "4100000102";
const ALLDAY: &str = "4100000103";
const BILLED: &str = "4100000104";
const CANCELLED: &str = "4100000105";
const COURT: &str = "4100000106";
const JULY: &str = "4100000107";
const LUNCH: &str = "4100000108";
const MEETING: &str = "4100000109";
const NOBODY: &str = "4100000110";
const SECRET: &str = "4100000111";
const SHORT: &str = "4100000112";
const SIX: &str = "4100000113";

/// A stack set-up whose simulator generates `entries` calendar entries and as many
/// activities (none: the test's own entries are the whole calendar).
pub(crate) fn with_calendar(entries: u64) -> StackSetup {
    StackSetup {
        sim: SimConfig {
            regions: vec![Region::Us],
            rate_limit: None,
            dataset: DatasetSize {
                calendar_entries: entries,
                activities: entries,
                ..DatasetSize::default()
            },
            ..SimConfig::default()
        },
        ..StackSetup::default()
    }
}

async fn stack(test: &str) -> Stack {
    Stack::start(test, with_calendar(0)).await
}

async fn client(stack: &Stack) -> SuggestionServiceClient<tonic::transport::Channel> {
    SuggestionServiceClient::new(channel(stack.import_address()).await)
}

pub(crate) fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, day, hour, minute, 0).unwrap()
}

/// A calendar entry of Clio user `user` on `matter` (0: none). Ids are the simulator's
/// (calendar entry ids are numbers as text; the generated calendar is empty here).
pub(crate) fn entry(
    id: &str,
    summary: &str,
    start: DateTime<Utc>,
    minutes: i64,
    matter: i64,
    user: i64,
) -> Value {
    json!({
        "id": id,
        "summary": summary,
        "start_at": start.to_rfc3339(),
        "end_at": (start + chrono::Duration::minutes(minutes)).to_rfc3339(),
        "all_day": false,
        "matter": if matter > 0 { json!({"id": matter}) } else { Value::Null },
        "attendees": [{"id": user, "type": "User"}, {"id": 77, "type": "Contact"}],
        "updated_at": start.to_rfc3339(),
    })
}

pub(crate) async fn add(stack: &Stack, resource: Resource, record: Value) {
    stack
        .sim
        .admin()
        .create_record(Region::Us, resource, record)
        .await
        .unwrap();
}

/// The suggestion detection made for calendar entry `entry`.
pub(crate) fn suggested(detected: &pb::DetectUnbilledTimeResponse, entry: &str) -> pb::Suggestion {
    detected
        .created
        .iter()
        .find(|s| s.calendar_entry_id == entry)
        .unwrap_or_else(|| panic!("{entry} suggested: {detected:?}"))
        .clone()
}

pub(crate) async fn detect(
    stack: &Stack,
    as_caller: &str,
    connection: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<pb::DetectUnbilledTimeResponse, tonic::Status> {
    client(stack)
        .await
        .detect_unbilled_time(with_bearer(
            pb::DetectUnbilledTimeRequest {
                connection_id: connection.to_owned(),
                from: Some(proto::time::timestamp(from)),
                to: Some(proto::time::timestamp(to)),
            },
            &token_of(as_caller),
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn list(
    stack: &Stack,
    as_caller: &str,
    request: pb::ListSuggestionsRequest,
) -> Vec<pb::Suggestion> {
    client(stack)
        .await
        .list_suggestions(with_bearer(request, &token_of(as_caller)))
        .await
        .unwrap()
        .into_inner()
        .suggestions
}

async fn reject(
    stack: &Stack,
    as_caller: &str,
    suggestion_id: &str,
    reason: &str,
) -> Result<pb::Suggestion, tonic::Status> {
    client(stack)
        .await
        .reject_suggestion(with_bearer(
            pb::RejectSuggestionRequest {
                suggestion_id: suggestion_id.to_owned(),
                reason: reason.to_owned(),
            },
            &token_of(as_caller),
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_calendar_gives_the_suggestions_the_rules_call_for_and_a_rejection_writes_nothing() {
    let stack = stack("suggest").await;
    let bob = stack.connect(SCOPES, BOB, 3).await;
    let eve = stack.connect(SCOPES, EVE, 4).await;
    // Bob's June: one entry for each rule, and two that are billable.
    for calendar in [
        entry(
            MEETING,
            "Client meeting – 00012-Smith",
            at(9, 14, 0),
            37,
            12,
            3,
        ),
        entry(
            COURT,
            "Court hearing – 00013-Jones",
            at(10, 9, 0),
            90,
            13,
            3,
        ),
        entry(
            SIX,
            "Call with client – 00012-Smith",
            at(11, 8, 0),
            6,
            12,
            3,
        ),
        entry(SHORT, "Quick call – 00012-Smith", at(11, 9, 0), 5, 12, 3),
        entry(LUNCH, "Lunch", at(11, 12, 0), 60, 0, 3),
        entry(
            CANCELLED,
            "Cancelled: Strategy meeting – 00012-Smith",
            at(12, 10, 0),
            60,
            12,
            3,
        ),
        entry(
            BILLED,
            "Client meeting – 00013-Jones",
            at(12, 15, 0),
            60,
            13,
            3,
        ),
        // Outside the range asked for.
        entry(
            JULY,
            "Client meeting – 00012-Smith",
            at(30, 23, 0),
            30,
            12,
            3,
        )
        .as_object()
        .map(|o| {
            let mut o = o.clone();
            o.insert("start_at".into(), json!("2026-07-02T10:00:00Z"));
            o.insert("end_at".into(), json!("2026-07-02T11:00:00Z"));
            Value::Object(o)
        })
        .unwrap(),
    ] {
        add(&stack, Resource::CalendarEntries, calendar).await;
    }
    let mut all_day = entry(
        ALLDAY,
        "Trial prep – 00013-Jones",
        at(15, 0, 0),
        24 * 60,
        13,
        3,
    );
    all_day["all_day"] = json!(true);
    add(&stack, Resource::CalendarEntries, all_day).await;
    // ce-billed already has its time entry in Clio.
    add(
        &stack,
        Resource::Activities,
        json!({"type": "TimeEntry", "date": "2026-06-12", "quantity": 3600,
               "matter": {"id": 13}, "user": {"id": 3}, "calendar_entry": {"id": BILLED}}),
    )
    .await;

    let june = (at(1, 0, 0), at(30, 0, 0));
    let detected = detect(&stack, BOB, &bob, june.0, june.1).await.unwrap();
    let mut created: Vec<_> = detected
        .created
        .iter()
        .map(|s| {
            (
                s.calendar_entry_id.as_str(),
                s.matter_id,
                s.user_id,
                s.date.as_str(),
                s.quantity_secs,
                s.description.as_str(),
                s.status,
            )
        })
        .collect();
    created.sort();
    let pending = pb::SuggestionStatus::Pending as i32;
    assert_eq!(
        created,
        vec![
            // 90 minutes is fifteen 6-minute units.
            (
                COURT,
                13,
                3,
                "2026-06-10",
                5_400,
                "Court hearing – 00013-Jones",
                pending
            ),
            // 37 minutes rounds up to 42.
            (
                MEETING,
                12,
                3,
                "2026-06-09",
                2_520,
                "Client meeting – 00012-Smith",
                pending
            ),
            (
                SIX,
                12,
                3,
                "2026-06-11",
                360,
                "Call with client – 00012-Smith",
                pending
            ),
        ]
    );
    assert_eq!(detected.entries_read, 8, "{detected:?}");
    let skipped = detected.skipped.unwrap();
    assert_eq!(
        (
            skipped.without_matter,
            skipped.all_day,
            skipped.cancelled,
            skipped.too_short,
            skipped.already_billed,
            skipped.already_suggested
        ),
        (1, 1, 1, 1, 1, 0),
        "{skipped:?}"
    );

    // Asked again, the same entries are already suggested: nothing new.
    let again = detect(&stack, BOB, &bob, june.0, june.1).await.unwrap();
    assert!(again.created.is_empty(), "{again:?}");
    assert_eq!(again.skipped.unwrap().already_suggested, 3);

    // Bob sees his; Eve, another reviewer, sees none of them and may not act on them.
    let bobs = list(&stack, BOB, pb::ListSuggestionsRequest::default()).await;
    assert_eq!(bobs.len(), 3);
    assert!(
        list(&stack, EVE, pb::ListSuggestionsRequest::default())
            .await
            .is_empty()
    );
    let refused = detect(&stack, EVE, &bob, june.0, june.1).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        detect(&stack, EVE, &eve, june.0, june.1)
            .await
            .unwrap()
            .created
            .is_empty()
    );
    let court = bobs.iter().find(|s| s.calendar_entry_id == COURT).unwrap();
    let refused = reject(&stack, EVE, &court.suggestion_id, "not mine")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // A billing approver sees everyone's and filters them.
    let on_matter = list(
        &stack,
        "billing_approver",
        pb::ListSuggestionsRequest {
            matter_id: 12,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(on_matter.len(), 2);

    // Bob rejects the hearing: nothing reaches Clio, and the refusal is audited.
    let rejected = reject(
        &stack,
        BOB,
        &court.suggestion_id,
        "  billed on the fixed fee  ",
    )
    .await
    .unwrap();
    assert_eq!(rejected.status, pb::SuggestionStatus::Rejected as i32);
    assert_eq!(rejected.decided_by, BOB);
    assert_eq!(rejected.rejection_reason, "billed on the fixed fee");
    let twice = reject(&stack, BOB, &court.suggestion_id, "again")
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition, "{twice:?}");
    let pending_now = list(
        &stack,
        BOB,
        pb::ListSuggestionsRequest {
            status: pb::SuggestionStatus::Pending as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(pending_now.len(), 2);
    let written = stack.created_activities().await;
    assert!(
        written.is_empty(),
        "nothing is written before an approval: {written:?}"
    );

    let events = harness::poll_until(
        "the audit events",
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(100),
        || async {
            let events = stack
                .audit_events("firm-1", &[EventKind::WriteRejected])
                .await;
            (!events.is_empty()).then_some(events)
        },
    )
    .await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.actor.as_ref().unwrap().id, BOB);
    assert_eq!(event.subject.as_ref().unwrap().id, court.suggestion_id);
    assert_eq!(event.reason, "billed on the fixed fee");
    let payload: Value = serde_json::from_str(&event.payload_json).unwrap();
    assert_eq!(payload["approval_id"], json!(court.suggestion_id));
    assert_eq!(payload["quantity_secs"], json!(5_400));
    assert!(payload.get("description").is_none(), "{payload}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_are_refused_naming_the_field() {
    let stack = stack("suggest-bad").await;
    let bob = stack.connect(SCOPES, BOB, 3).await;
    let readonly = stack.connect(&["calendar:read"], BOB, 5).await;
    let cases = [
        (String::new(), at(1, 0, 0), at(2, 0, 0), "connection_id"),
        (bob.clone(), at(2, 0, 0), at(1, 0, 0), "to"),
        (
            bob.clone(),
            at(1, 0, 0),
            at(1, 0, 0) + chrono::Duration::days(94),
            "to",
        ),
    ];
    for (connection, from, to, field) in cases {
        let refused = detect(&stack, BOB, &connection, from, to)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(field), "{refused:?}");
    }
    // A grant without activities:write could never have its suggestions written.
    let refused = detect(&stack, BOB, &readonly, at(1, 0, 0), at(2, 0, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("activities"), "{refused:?}");
    for (id, field) in [
        ("not-a-uuid", "suggestion_id"),
        (&uuid::Uuid::now_v7().to_string()[..], ""),
    ] {
        let refused = reject(&stack, BOB, id, "why").await.unwrap_err();
        if field.is_empty() {
            assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
        } else {
            assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
            assert!(refused.message().contains(field), "{refused:?}");
        }
    }
    let detected = detect(&stack, BOB, &bob, at(1, 0, 0), at(2, 0, 0))
        .await
        .unwrap();
    assert!(detected.created.is_empty());
    stack.stop().await;
}

/// The simulator's ids: generated users and matters are numbered from these.
pub(crate) const USER_BASE: i64 = 344_000_000;
pub(crate) const MATTER_BASE: i64 = 1_600_000_000;

async fn approve(
    stack: &Stack,
    as_caller: &str,
    suggestion_id: &str,
    quantity_secs: i64,
    description: &str,
) -> Result<pb::Suggestion, tonic::Status> {
    client(stack)
        .await
        .approve_suggestion(with_bearer(
            pb::ApproveSuggestionRequest {
                suggestion_id: suggestion_id.to_owned(),
                quantity_secs,
                description: description.to_owned(),
            },
            &token_of(as_caller),
        ))
        .await
        .map(tonic::Response::into_inner)
}

pub(crate) async fn get(stack: &Stack, suggestion_id: &str) -> pb::Suggestion {
    client(stack)
        .await
        .get_suggestion(with_bearer(
            pb::GetSuggestionRequest {
                suggestion_id: suggestion_id.to_owned(),
            },
            &token_of(BOB),
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approved_suggestion_is_written_once_even_when_clio_drops_the_answer() {
    let mut setup = with_calendar(0);
    setup.import = Box::new(|config| {
        config.importer.request_timeout_ms = 1_000;
        config.importer.max_page_attempts = 2;
        config.suggestions.write_interval_ms = 100;
        config.suggestions.write_retry_delay_ms = 200;
    });
    let stack = Stack::start("suggest-write", setup).await;
    let bob = stack.connect(SCOPES, BOB, 3).await;
    let (user, smith, jones, secret) = (
        USER_BASE + 3,
        MATTER_BASE + 12,
        MATTER_BASE + 13,
        MATTER_BASE + 14,
    );
    for calendar in [
        entry(
            MEETING,
            "Client meeting – 00012-Smith",
            at(9, 14, 0),
            60,
            smith,
            user,
        ),
        entry(
            COURT,
            "Court hearing – 00013-Jones",
            at(10, 9, 0),
            30,
            jones,
            user,
        ),
        // Clio will refuse this one: no such user.
        entry(
            NOBODY,
            "Call – 00012-Smith",
            at(11, 9, 0),
            12,
            smith,
            USER_BASE + 999,
        ),
        // Bob's calendar names a matter Bob cannot see.
        entry(
            SECRET,
            "Meeting – 00014-Doe",
            at(12, 9, 0),
            30,
            secret,
            user,
        ),
    ] {
        add(&stack, Resource::CalendarEntries, calendar).await;
    }
    stack
        .sim
        .admin()
        .hide_records(Region::Us, user, Resource::Matters, &[&secret.to_string()])
        .await
        .unwrap();
    let detected = detect(&stack, BOB, &bob, at(1, 0, 0), at(30, 0, 0))
        .await
        .unwrap();
    let id_of = |entry: &str| suggested(&detected, entry).suggestion_id;
    // Approved with an edit: written at once, as approved.
    let meeting = approve(
        &stack,
        BOB,
        &id_of(MEETING),
        3_000,
        "Client meeting (prep included)",
    )
    .await
    .unwrap();
    assert_eq!(
        meeting.status,
        pb::SuggestionStatus::Written as i32,
        "{meeting:?}"
    );
    let entries = stack.created_activities().await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry["id"], json!(meeting.clio_activity_id));
    assert_eq!(entry["type"], json!("TimeEntry"));
    assert_eq!(entry["quantity"], json!(3_000));
    assert_eq!(entry["note"], json!("Client meeting (prep included)"));
    assert_eq!(entry["date"], json!("2026-06-09"));
    assert_eq!(entry["matter"]["id"], json!(smith));
    assert_eq!(entry["user"]["id"], json!(user));
    assert_eq!(entry["calendar_entry"]["id"], json!(MEETING));

    // Clio creates the next entry and then never answers: the approval returns with the
    // write pending, and the retry finds the entry instead of creating a second one.
    stack
        .fault(clio_sim::Fault::DropAfterCreate {
            count: 1,
            delay_ms: Some(3_000),
        })
        .await;
    let court_id = id_of(COURT);
    let court = approve(&stack, BOB, &court_id, 0, "").await.unwrap();
    assert_eq!(
        court.status,
        pb::SuggestionStatus::Approved as i32,
        "{court:?}"
    );
    let court = harness::poll_until(
        "the write after the dropped answer",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(100),
        || async {
            let now = get(&stack, &court_id).await;
            (now.status == pb::SuggestionStatus::Written as i32).then_some(now)
        },
    )
    .await;
    let entries = stack.created_activities().await;
    let for_court: Vec<_> = entries
        .iter()
        .filter(|e| e["calendar_entry"]["id"] == json!(COURT))
        .collect();
    assert_eq!(for_court.len(), 1, "exactly one time entry: {entries:?}");
    assert_eq!(for_court[0]["id"], json!(court.clio_activity_id));
    assert_eq!(for_court[0]["quantity"], json!(1_800));

    // Clio's validation error is shown on the suggestion and not retried.
    let nobody = approve(&stack, BOB, &id_of(NOBODY), 0, "").await.unwrap();
    assert_eq!(
        nobody.status,
        pb::SuggestionStatus::Failed as i32,
        "{nobody:?}"
    );
    assert!(nobody.error.contains("422"), "{nobody:?}");
    assert!(nobody.error.contains("does not exist"), "{nobody:?}");
    let again = approve(&stack, BOB, &id_of(NOBODY), 0, "")
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");

    // Nobody approves time on a matter they cannot see in Clio, or without a connection
    // of their own to show what they see.
    let secret_id = id_of(SECRET);
    let refused = approve(&stack, BOB, &secret_id, 0, "").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("does not see matter"),
        "{refused:?}"
    );
    let refused = approve(&stack, "billing_approver", &secret_id, 0, "")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("no active Clio connection"),
        "{refused:?}"
    );
    assert_eq!(
        get(&stack, &secret_id).await.status,
        pb::SuggestionStatus::Pending as i32
    );
    assert_eq!(stack.created_activities().await.len(), 2);

    // The audit trail: both approvals (the edit with before and after), both writes, and
    // no write the report cannot pair with its approval.
    let events = harness::poll_until(
        "the audit events",
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(100),
        || async {
            let events = stack
                .audit_events(
                    "firm-1",
                    &[EventKind::WriteApproved, EventKind::WritePerformed],
                )
                .await;
            (events.len() >= 5).then_some(events)
        },
    )
    .await;
    let payloads = |kind: EventKind| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e.kind == kind as i32)
            .map(|e| serde_json::from_str(&e.payload_json).unwrap())
            .collect()
    };
    let approvals = payloads(EventKind::WriteApproved);
    assert_eq!(approvals.len(), 3, "{approvals:?}");
    let edited = approvals
        .iter()
        .find(|p| p["calendar_entry_id"] == json!(MEETING))
        .unwrap();
    assert_eq!(
        edited["edited"]["quantity_secs"],
        json!({"before": 3_600, "after": 3_000})
    );
    assert_eq!(
        edited["edited"]["description"]["after"],
        json!("Client meeting (prep included)")
    );
    let writes = payloads(EventKind::WritePerformed);
    assert_eq!(writes.len(), 2, "{writes:?}");
    let court_write = writes
        .iter()
        .find(|p| p["approval_id"] == json!(court_id))
        .unwrap();
    assert_eq!(court_write["found_existing"], json!(true));
    assert_eq!(
        court_write["clio_activity_id"],
        json!(court.clio_activity_id)
    );
    let report = stack
        .compliance()
        .await
        .write_capable_connections(with_bearer(
            proto::audit::v1::WriteCapableConnectionsRequest {
                tenant: "firm-1".into(),
            },
            &token_of("compliance"),
        ))
        .await
        .unwrap()
        .into_inner();
    let ours = report
        .connections
        .iter()
        .find(|c| {
            c.connection
                .as_ref()
                .is_some_and(|c| c.connection_id == bob)
        })
        .unwrap();
    // The chain holding every step verifies.
    let verified = stack
        .audit()
        .await
        .verify(with_bearer(
            proto::audit::v1::VerifyRequest {
                tenant: "firm-1".into(),
                ..Default::default()
            },
            &token_of("compliance"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    // Both writes carry the id of an approval recorded before them.
    assert_eq!(
        (
            ours.writes_performed,
            ours.writes_approved,
            ours.writes_unapproved
        ),
        (2, 2, 0)
    );
    stack.stop().await;
}

/// The background pass polls every millisecond here, so an approval committed unheld
/// would often be taken by it between the approval's commit and its own write, and the
/// person approving would be told "approved" with the outcome still to come.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_approval_answers_with_its_own_write_while_the_background_pass_polls() {
    const APPROVALS: u32 = 28;
    let mut setup = with_calendar(0);
    setup.import = Box::new(|config| {
        config.suggestions.write_interval_ms = 1;
    });
    let stack = Stack::start("suggest-own-write", setup).await;
    let bob = stack.connect(SCOPES, BOB, 3).await;
    let smith = MATTER_BASE + 12;
    // Even days name Bob (Clio creates the entry), odd days a user Clio does not have
    // (Clio refuses it): both outcomes must reach the approval's answer.
    let refused = |day: u32| !day.is_multiple_of(2);
    let user_of = |day: u32| {
        if refused(day) {
            USER_BASE + 999
        } else {
            USER_BASE + 3
        }
    };
    let ids: Vec<String> = (1..=APPROVALS)
        .map(|day| format!("41000002{day:02}"))
        .collect();
    for (day, id) in (1..=APPROVALS).zip(&ids) {
        let record = entry(
            id,
            "Client meeting – 00012-Smith",
            at(day, 9, 0),
            30,
            smith,
            user_of(day),
        );
        add(&stack, Resource::CalendarEntries, record).await;
    }
    let detected = detect(&stack, BOB, &bob, at(1, 0, 0), at(30, 0, 0))
        .await
        .unwrap();
    for (day, id) in (1..=APPROVALS).zip(&ids) {
        let suggestion = suggested(&detected, id);
        let answer = approve(&stack, BOB, &suggestion.suggestion_id, 0, "")
            .await
            .unwrap();
        let expected = if refused(day) {
            pb::SuggestionStatus::Failed
        } else {
            pb::SuggestionStatus::Written
        };
        assert_eq!(answer.status, expected as i32, "day {day}: {answer:?}");
    }
    // And each was written once.
    let created = stack.created_activities().await;
    assert_eq!(created.len(), (APPROVALS / 2) as usize, "{created:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoking_a_connection_cancels_its_open_suggestions_and_nothing_is_written() {
    let mut setup = with_calendar(0);
    setup.import = Box::new(|config| {
        config.suggestions.write_interval_ms = 100;
        config.suggestions.revocation_check_ms = 100;
    });
    let stack = Stack::start("suggest-revoke", setup).await;
    let bob = stack.connect(SCOPES, BOB, 3).await;
    let user = USER_BASE + 3;
    for (id, day) in [(FIRST, 9), (SECOND, 10)] {
        add(
            &stack,
            Resource::CalendarEntries,
            entry(
                id,
                "Client meeting – 00012-Smith",
                at(day, 9, 0),
                30,
                MATTER_BASE + 12,
                user,
            ),
        )
        .await;
    }
    let detected = detect(&stack, BOB, &bob, at(1, 0, 0), at(30, 0, 0))
        .await
        .unwrap();
    assert_eq!(detected.created.len(), 2);

    stack
        .auth()
        .await
        .revoke_connection(with_bearer(
            proto::auth::v1::RevokeConnectionRequest {
                connection_id: bob.clone(),
                reason: "left the firm".into(),
            },
            &token_of("operator"),
        ))
        .await
        .unwrap();
    for suggestion in &detected.created {
        let cancelled = harness::poll_until(
            "the cancellation",
            std::time::Duration::from_secs(20),
            std::time::Duration::from_millis(100),
            || async {
                let now = get(&stack, &suggestion.suggestion_id).await;
                (now.status == pb::SuggestionStatus::Cancelled as i32).then_some(now)
            },
        )
        .await;
        assert!(cancelled.error.contains("revoked"), "{cancelled:?}");
    }
    let refused = approve(&stack, BOB, &detected.created[0].suggestion_id, 0, "")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(stack.created_activities().await.is_empty());
    stack.stop().await;
}

/// clioctl's `suggest` commands as a person runs them, with only their own credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_detects_reviews_and_approves_with_clioctl() {
    let stack = stack("suggest-cli").await;
    let bob = stack.connect(SCOPES, BOB, 3).await;
    let user = USER_BASE + 3;
    for (id, day, minutes) in [(FIRST, 9, 37), (SECOND, 10, 20)] {
        add(
            &stack,
            Resource::CalendarEntries,
            entry(
                id,
                "Client meeting – 00012-Smith",
                at(day, 9, 0),
                minutes,
                MATTER_BASE + 12,
                user,
            ),
        )
        .await;
    }
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "auth = \"http://{}\"\nimport = \"http://{}\"\naudit = \"http://{}\"\n\
             [tokens]\nbilling_reviewer = \"{}\"\n",
            stack.auth_address(),
            stack.import_address(),
            stack.audit_address(),
            token_of(BOB)
        ),
    )
    .unwrap();
    let run = |args: &'static [&'static str]| {
        let path = config.path().to_owned();
        async move { crate::clioctl::clioctl_with_env(&path, &[], args).await }
    };
    let detect = crate::clioctl::clioctl_with_env(
        config.path(),
        &[],
        &[
            "--output",
            "json",
            "suggest",
            "detect",
            "--connection",
            &bob,
            "--from",
            "2026-06-01T00:00:00Z",
            "--to",
            "2026-07-01T00:00:00Z",
        ],
    )
    .await;
    assert_eq!(detect.code, 0, "{detect:?}");
    let detected: Vec<Value> = serde_json::from_str(&detect.stdout).unwrap();
    assert_eq!(detected.len(), 2, "{detect:?}");
    assert!(
        detect.stderr.contains("2 calendar entries read"),
        "{detect:?}"
    );
    let listed = run(&["--output", "json", "suggest", "list", "--status", "pending"]).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let listed: Vec<Value> = serde_json::from_str(&listed.stdout).unwrap();
    let id_of = |entry: &str| -> String {
        let date = if entry == FIRST {
            "2026-06-09"
        } else {
            "2026-06-10"
        };
        listed
            .iter()
            .find(|s| s["date"] == json!(date))
            .and_then(|s| s["suggestion_id"].as_str())
            .unwrap()
            .to_owned()
    };
    let (first, second) = (id_of(FIRST), id_of(SECOND));

    let rejected = crate::clioctl::clioctl_with_env(
        config.path(),
        &[],
        &[
            "--output",
            "json",
            "suggest",
            "reject",
            &second,
            "--reason",
            "internal meeting",
        ],
    )
    .await;
    assert_eq!(rejected.code, 0, "{rejected:?}");
    let rejected: Value = serde_json::from_str(&rejected.stdout).unwrap();
    assert_eq!(rejected["status"], json!("rejected"));

    let approved = crate::clioctl::clioctl_with_env(
        config.path(),
        &[],
        &[
            "--output", "json", "suggest", "approve", &first, "--hours", "0.5",
        ],
    )
    .await;
    assert_eq!(approved.code, 0, "{approved:?}");
    let approved: Value = serde_json::from_str(&approved.stdout).unwrap();
    assert_eq!(approved["status"], json!("written"), "{approved}");
    let created = stack.created_activities().await;
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["quantity"], json!(1_800));
    assert_eq!(created[0]["id"], approved["clio_activity_id"]);

    // Without a reviewer's or approver's token clioctl says which to set.
    let bare = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        bare.path(),
        format!("import = \"http://{}\"\n", stack.import_address()),
    )
    .unwrap();
    let refused = crate::clioctl::clioctl_with_env(bare.path(), &[], &["suggest", "list"]).await;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused.stderr.contains("tokens.billing_reviewer"),
        "{refused:?}"
    );
    stack.stop().await;
}

/// The simulator's generated calendar (meetings, court, calls; some all-day, cancelled,
/// too short, without a matter, already billed) gives suggestions that each follow the
/// rules, read back from the simulator's own copy of the entry, and skips every kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generated_calendar_gives_suggestions_that_follow_the_rules() {
    let stack = Stack::start("suggest-seeded", with_calendar(150)).await;
    let bob = stack.connect(SCOPES, BOB, 3).await;
    // Five years of history up to 2026, read in 90-day ranges.
    let mut from = Utc.with_ymd_and_hms(2020, 10, 1, 0, 0, 0).unwrap();
    let end = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    let mut created = Vec::new();
    let mut skipped = pb::SkippedEntries::default();
    while from < end {
        let to = from + chrono::Duration::days(90);
        let found = detect(&stack, BOB, &bob, from, to).await.unwrap();
        created.extend(found.created);
        let s = found.skipped.unwrap();
        skipped.without_matter += s.without_matter;
        skipped.all_day += s.all_day;
        skipped.cancelled += s.cancelled;
        skipped.too_short += s.too_short;
        skipped.already_billed += s.already_billed;
        from = to;
    }
    assert!(created.len() >= 20, "{} suggestions", created.len());
    assert!(
        skipped.without_matter > 0
            && skipped.all_day > 0
            && skipped.cancelled > 0
            && skipped.too_short > 0
            && skipped.already_billed > 0,
        "every kind of entry occurs: {skipped:?}"
    );
    let mut seen = std::collections::BTreeSet::new();
    for suggestion in &created {
        assert!(
            seen.insert(suggestion.calendar_entry_id.clone()),
            "suggested once: {suggestion:?}"
        );
        let entry = stack
            .sim
            .admin()
            .record(
                Region::Us,
                Resource::CalendarEntries,
                &suggestion.calendar_entry_id,
            )
            .await
            .unwrap();
        let start = DateTime::parse_from_rfc3339(entry["start_at"].as_str().unwrap()).unwrap();
        let end = DateTime::parse_from_rfc3339(entry["end_at"].as_str().unwrap()).unwrap();
        let seconds = (end - start).num_seconds();
        assert!(seconds >= 360, "{entry}");
        assert_eq!(
            suggestion.quantity_secs,
            (seconds + 359) / 360 * 360,
            "{entry}"
        );
        assert_eq!(suggestion.quantity_secs % 360, 0);
        assert_eq!(entry["all_day"], json!(false), "{entry}");
        assert!(
            !entry["summary"].as_str().unwrap().starts_with("Cancelled:"),
            "{entry}"
        );
        assert_eq!(
            json!(suggestion.matter_id),
            entry["matter"]["id"],
            "{entry}"
        );
        let user = entry["attendees"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["type"] == json!("User"))
            .unwrap();
        assert_eq!(json!(suggestion.user_id), user["id"], "{entry}");
        assert_eq!(suggestion.date, start.date_naive().to_string(), "{entry}");
        assert_eq!(json!(suggestion.description), entry["summary"], "{entry}");
    }
    stack.stop().await;
}

/// A calendar entry holding text Postgres cannot store (a NUL) is set aside and counted
/// as unreadable, like a bad record of an import, and never blocks the entries beside it;
/// other control characters are cleaned from the description.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_calendar_text_is_counted_or_cleaned_and_blocks_nothing() {
    let stack = stack("suggest-hostile").await;
    let bob = stack.connect(SCOPES, BOB, 3).await;
    for (id, summary, hour) in [
        (FIRST, "Call\u{0} with client", 9),
        (SECOND, "Client\u{1b}[2J\u{7} meeting", 11),
        (COURT, "Court hearing", 14),
    ] {
        add(
            &stack,
            Resource::CalendarEntries,
            entry(id, summary, at(9, hour, 0), 30, 12, 3),
        )
        .await;
    }
    let detected = detect(&stack, BOB, &bob, at(1, 0, 0), at(30, 0, 0))
        .await
        .unwrap();
    let mut descriptions: Vec<_> = detected
        .created
        .iter()
        .map(|s| s.description.as_str())
        .collect();
    descriptions.sort_unstable();
    assert_eq!(descriptions, vec!["Client [2J meeting", "Court hearing"]);
    assert_eq!(detected.skipped.unwrap().unreadable, 1, "{detected:?}");
    stack.stop().await;
}
