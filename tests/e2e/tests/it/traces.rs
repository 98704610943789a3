//! Distributed traces (issue 15): the W3C `traceparent` a caller sends goes with the import
//! it starts through gRPC, RabbitMQ and the audit outbox, so one import's spans in all
//! three services share one trace id, and each service flushes its spans when it stops.
//!
//! The services run as processes (one `service.name` each), exporting to a test OTLP
//! collector only at shutdown (the batch delay is longer than the test): every span read
//! here went out on the graceful-stop path.

use std::time::Duration;

use harness::{CollectedSpan, OtlpCollector, channel, poll_until, token_of, with_bearer};
use proto::common::v1::EventKind;
use proto::imports::v1 as import;
use proto::imports::v1::import_service_client::ImportServiceClient;

use crate::import_jobs::{assert_completed, contacts_only, sim_with};
use crate::service_processes::ProcessStack;
use crate::services::Service;
use crate::stack::full_job;

/// The environment that points `kind` at `collector` (through the `<PREFIX>SERVICE__...`
/// override of `service.tracing.otlp_endpoint`) and holds spans until shutdown.
fn exporting_to(collector: &OtlpCollector, kind: Service) -> Vec<(String, String)> {
    vec![
        (
            format!("{}SERVICE__TRACING__OTLP_ENDPOINT", kind.env_prefix()),
            collector.endpoint(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "600000".to_owned()),
    ]
}

/// Submits `job` as a traced caller would: the test is the root span `parent` of trace
/// `trace_id`. Returns the job id.
async fn submit_traced(
    stack: &ProcessStack,
    job: import::ImportJob,
    trace_id: &str,
    parent: &str,
) -> String {
    let mut request = with_bearer(
        import::SubmitJobRequest { job: Some(job) },
        &token_of("job_submitter"),
    );
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent}-01").parse().unwrap(),
    );
    ImportServiceClient::new(channel(stack.import.address).await)
        .submit_job(request)
        .await
        .unwrap()
        .into_inner()
        .job_id
}

async fn finished(stack: &ProcessStack, job_id: &str) -> import::Job {
    poll_until(
        "the job to finish",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let job = ImportServiceClient::new(channel(stack.import.address).await)
                .get_job(with_bearer(
                    import::GetJobRequest {
                        job_id: job_id.to_owned(),
                    },
                    &token_of("operator"),
                ))
                .await
                .ok()?
                .into_inner();
            (job.status != import::JobStatus::Queued as i32
                && job.status != import::JobStatus::Running as i32)
                .then_some(job)
        },
    )
    .await
}

/// Waits until audit-svc holds an event of `kind` of tenant `firm-1`.
async fn recorded(stack: &ProcessStack, kind: EventKind) {
    poll_until(
        &format!("{kind:?} recorded by audit-svc"),
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let events = harness::audit_events(stack.audit.address, "firm-1", &[kind])
                .await
                .ok()?;
            (!events.is_empty()).then_some(())
        },
    )
    .await;
}

/// The spans of one trace, whichever service sent them.
struct Trace {
    spans: Vec<CollectedSpan>,
}

impl Trace {
    fn of(&self, service: &str) -> impl Iterator<Item = &CollectedSpan> {
        self.spans.iter().filter(move |s| s.service == service)
    }

    fn named(&self, service: &str, name: &str) -> &CollectedSpan {
        self.of(service)
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span of {service}: {:#?}", self.spans))
    }

    fn by_id(&self, span_id: &str) -> Option<&CollectedSpan> {
        self.spans.iter().find(|s| s.span_id == span_id)
    }

    /// The ids of `span`'s ancestors in the trace, nearest first, ending with the first
    /// parent that is not in it (the remote root), if any.
    fn ancestry(&self, span: &CollectedSpan) -> Vec<String> {
        let mut chain = Vec::new();
        let mut parent = span.parent_span_id.as_str();
        while !parent.is_empty() && chain.len() < 64 {
            chain.push(parent.to_owned());
            match self.by_id(parent) {
                Some(next) => parent = next.parent_span_id.as_str(),
                None => break,
            }
        }
        chain
    }
}

/// RabbitMQ: the job ran under SubmitJob's span, the child of the caller's `root`.
fn job_under_the_caller<'a>(trace: &'a Trace, root: &str) -> &'a CollectedSpan {
    let job = trace.named("import-svc", "import.job");
    assert_eq!(job.attribute("messaging.system"), Some("rabbitmq"));
    let submit = trace.by_id(&job.parent_span_id).expect("the job's parent");
    assert_eq!(
        submit.name,
        "clio_connect.imports.v1.ImportService/SubmitJob"
    );
    assert_eq!(trace.ancestry(job).last().map(String::as_str), Some(root));
    job
}

/// gRPC: auth-svc served the job's lease inside the job.
fn lease_inside(trace: &Trace, job: &CollectedSpan) {
    let lease = trace.named(
        "auth-svc",
        "clio_connect.auth.v1.AuthService/LeaseAccessToken",
    );
    assert!(trace.ancestry(lease).contains(&job.span_id), "{lease:#?}");
}

/// The outbox: each import event's span in audit-svc is a child of the import-svc span
/// that enqueued it, within the job, and links to the `Record` call that carried it.
fn events_recorded_under_their_producers(trace: &Trace, job: &CollectedSpan) {
    let records: Vec<&CollectedSpan> = trace
        .of("audit-svc")
        .filter(|s| s.name == "audit.record")
        .collect();
    let kinds: Vec<&str> = records.iter().filter_map(|s| s.attribute("kind")).collect();
    for kind in ["import_started", "import_completed"] {
        assert!(
            kinds.contains(&kind),
            "{kind} not recorded in the trace: {kinds:?}"
        );
    }
    for record in records {
        let producer = trace.by_id(&record.parent_span_id).expect("the producer");
        assert_eq!(producer.service, "import-svc", "{record:#?}");
        assert!(trace.ancestry(record).contains(&job.span_id), "{record:#?}");
        assert!(!record.links.is_empty(), "{record:#?}");
    }
}

/// Credentials never become span attributes.
fn no_credentials_in(spans: &[CollectedSpan]) {
    for span in spans {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains("test-credential-") && !value.contains("Bearer "),
                "{key} of {} carries a credential",
                span.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_import_is_one_trace_in_all_three_services() {
    let collector = OtlpCollector::start().await;
    let stack = ProcessStack::start("traces", sim_with(contacts_only(5)), |kind| {
        exporting_to(&collector, kind)
    })
    .await;
    let connection = harness::connect_out_of_band(
        &stack.sim,
        stack.auth.address,
        &["contacts:read"],
        "alice@firm.example",
        1,
    )
    .await
    .unwrap();

    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let root = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let job = full_job(&connection, &["contacts"]);
    let job_id = submit_traced(&stack, job, &trace_id, &root).await;
    assert_completed(&finished(&stack, &job_id).await);
    recorded(&stack, EventKind::ImportCompleted).await;
    stack.terminate().await;

    let trace = Trace {
        spans: collector.trace(&trace_id),
    };
    for service in ["import-svc", "auth-svc", "audit-svc"] {
        assert!(
            trace.of(service).next().is_some(),
            "no span of {service} in the trace: {:#?}",
            trace.spans
        );
    }
    let job = job_under_the_caller(&trace, &root);
    lease_inside(&trace, job);
    events_recorded_under_their_producers(&trace, job);
    no_credentials_in(&collector.spans());
}
