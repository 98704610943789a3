//! A producer in another language, as its authors would write it:
//! `examples/python/producer.py` generates its stubs from the `.proto` files with
//! grpcio-tools, publishes a job to RabbitMQ (protobuf, then protobuf's JSON mapping as
//! Python prints it: lowerCamelCase names, the enum by name) and watches it over gRPC to
//! the end.
//!
//! Python comes from the virtual environment `examples/python/ensure-venv.sh` makes:
//! `CLIO_CONNECT_PYTHON` when the test command (deploy/local/test.sh) already made it,
//! else this test runs the script itself. A missing package is a failure, not a skip.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use clio_sim::{Region, Resource};
use harness::token_of;
use proto::imports::v1 as import;
use tokio::process::Command;

use crate::import_jobs::assert_completed;
use crate::stack::{Stack, StackSetup};
use crate::sync_integrity::assert_stored_as_in_clio;

const PERSON: &str = "person@firm.example";
const REQUESTED_BY: &str = "examples/python/producer.py";

pub(crate) fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The virtual environment's interpreter, with the example's requirements installed.
pub(crate) async fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("CLIO_CONNECT_PYTHON").filter(|p| !p.is_empty()) {
        return python.into();
    }
    let script = repository().join("examples/python/ensure-venv.sh");
    let output = run(Command::new(&script), Duration::from_secs(600)).await;
    assert!(
        output.status.success(),
        "{} failed ({}):\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let python = String::from_utf8(output.stdout).unwrap();
    PathBuf::from(python.trim())
}

pub(crate) async fn run(mut command: Command, within: Duration) -> Output {
    tokio::time::timeout(within, command.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} finishes within {within:?}"))
        .unwrap_or_else(|e| panic!("{command:?} starts: {e}"))
}

/// Runs the producer for `resources` and returns the id of the job it reported ending
/// COMPLETED.
async fn produce(
    python: &Path,
    stack: &Stack,
    connection: &str,
    resources: &[&str],
    json: bool,
) -> String {
    let mut command = Command::new(python);
    command
        .arg(repository().join("examples/python/producer.py"))
        .arg("--amqp-url")
        .arg(harness::amqp_url())
        .arg("--exchange")
        .arg(&stack.topology.jobs_exchange)
        .arg("--import-addr")
        .arg(stack.import_address().to_string())
        .arg("--connection")
        .arg(connection)
        .arg("--timeout")
        .arg("60")
        .arg("--resources")
        .args(resources)
        // job_submitter may WatchJob; publishing to RabbitMQ needs no gRPC role.
        .env("CLIO_CONNECT_TOKEN", token_of("job_submitter"));
    if json {
        command.arg("--json");
    }
    let output = run(command, Duration::from_secs(120)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = format!(
        "{}\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    assert!(stdout.contains("JOB_STATUS_COMPLETED"), "{report}");
    let content_type = if json {
        "(application/json)"
    } else {
        "(application/x-protobuf)"
    };
    assert!(stdout.contains(content_type), "{report}");
    stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("job ")?
                .strip_suffix(" ended JOB_STATUS_COMPLETED")
        })
        .unwrap_or_else(|| panic!("no final line: {report}"))
        .to_owned()
}

async fn assert_ran_from_python(stack: &Stack, job_id: &str) -> import::Job {
    let job = stack.job(job_id).await;
    assert_completed(&job);
    assert_eq!(job.requested_by, REQUESTED_BY);
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_producer_publishes_protobuf_and_json_jobs_and_watches_them_complete() {
    let python = python().await;
    let stack = Stack::start("python", StackSetup::default()).await;
    let connection = stack
        .connect(&["contacts:read", "matters:read"], PERSON, 1)
        .await;

    let job_id = produce(&python, &stack, &connection, &["contacts"], false).await;
    let job = assert_ran_from_python(&stack, &job_id).await;
    assert_eq!(job.resources, ["contacts"]);
    assert_stored_as_in_clio(&stack).await;

    // The JSON body Python's json_format prints (camelCase: connectionId, requestedBy).
    let job_id = produce(&python, &stack, &connection, &["matters"], true).await;
    let job = assert_ran_from_python(&stack, &job_id).await;
    assert_eq!(job.resources, ["matters"]);
    let in_clio = stack
        .sim
        .admin()
        .count(Region::Us, Resource::Matters)
        .await
        .unwrap();
    let in_clio = i64::try_from(in_clio).unwrap();
    assert!(in_clio > 0);
    assert_eq!(stack.stored("matters").await, (in_clio, in_clio));
    assert_eq!(
        job.progress[0].records_written,
        u64::try_from(in_clio).unwrap()
    );

    stack.stop().await;
}
