//! SubmitJob over gRPC: invalid jobs are refused naming the field, and a job whose message
//! cannot be queued leaves no record behind to sit `queued` forever.

use harness::{ServingStatus, TcpProxy, channel, token_of, with_bearer};
use proto::import::v1 as pb;
use proto::import::v1::import_service_client::ImportServiceClient;
use tonic::Code;

use crate::support::{RunningImport, Setup, start};

fn contacts_job(job_id: &str) -> pb::ImportJob {
    pb::ImportJob {
        job_id: job_id.into(),
        connection_id: "c-1".into(),
        resources: vec!["contacts".into()],
        mode: pb::ImportMode::Full as i32,
        requested_by: "submit-test".into(),
        ..Default::default()
    }
}

async fn submit(import: &RunningImport, job: pb::ImportJob) -> Result<String, tonic::Status> {
    ImportServiceClient::new(channel(import.address).await)
        .submit_job(with_bearer(
            pb::SubmitJobRequest { job: Some(job) },
            &token_of("job_submitter"),
        ))
        .await
        .map(|answer| answer.into_inner().job_id)
}

#[tokio::test]
async fn an_invalid_job_is_refused_naming_the_field_and_nothing_is_stored() {
    let import = start("submit-invalid", Setup::default()).await;
    let job_id = "0193a0c4-6d1e-7cc0-8000-0000000000bb";
    let cases = [
        (
            pb::ImportJob {
                resources: vec!["contacts".into(), "invoices".into()],
                ..contacts_job(job_id)
            },
            "job.resources[1]: unknown resource",
        ),
        (
            pb::ImportJob {
                connection_id: " ".into(),
                ..contacts_job(job_id)
            },
            "job.connection_id: must not be empty",
        ),
        (
            pb::ImportJob {
                filters: [("colour".to_owned(), "red".to_owned())].into(),
                ..contacts_job(job_id)
            },
            "job.filters.colour: unknown filter",
        ),
        (
            pb::ImportJob {
                fields: vec![pb::ResourceFields {
                    resource: "contacts".into(),
                    fields: vec!["name; drop".into()],
                }],
                ..contacts_job(job_id)
            },
            "job.fields[0].fields[0]:",
        ),
        (
            contacts_job("not-a-uuid"),
            "job.job_id: \"not-a-uuid\" is not a UUID",
        ),
    ];
    for (job, expected) in cases {
        let refused = submit(&import, job).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().starts_with(expected),
            "expected {expected:?}, got {:?}",
            refused.message()
        );
    }
    assert_eq!(import.job_status(job_id).await, None);
    import.stop().await;
}

#[tokio::test]
async fn a_job_that_cannot_be_queued_is_unavailable_and_can_be_submitted_again() {
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let url = harness::amqp_url().replace("127.0.0.1:5672", &proxy.address.to_string());
    let import = start(
        "submit-broker-down",
        Setup {
            amqp_url: Some(url),
            ..Setup::default()
        },
    )
    .await;
    let job_id = "0193a0c4-6d1e-7cc0-8000-0000000000cc";

    proxy.cut();
    import.wait_health(ServingStatus::NotServing).await;
    let refused = submit(&import, contacts_job(job_id)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("job queue is unavailable"),
        "{:?}",
        refused.message()
    );
    assert_eq!(
        import.job_status(job_id).await,
        None,
        "a job that was never queued must not stay queued"
    );

    // Once the broker is back, the same id is accepted and stored.
    proxy.restore();
    import.wait_health(ServingStatus::Serving).await;
    let accepted = submit(&import, contacts_job(job_id)).await.unwrap();
    assert_eq!(accepted, job_id);
    assert!(import.job_status(job_id).await.is_some());
    import.stop().await;
}
