//! SubmitJob over gRPC: invalid jobs are refused naming the field, and a job whose message
//! cannot be queued leaves no record behind to sit `queued` forever.

use harness::{ServingStatus, TcpProxy, channel, token_of, with_bearer};
use proto::imports::v1 as pb;
use proto::imports::v1::import_service_client::ImportServiceClient;
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

#[tokio::test]
async fn hostile_strings_are_invalid_arguments_naming_the_field_never_unavailable() {
    let import = start("submit-hostile", Setup::default()).await;
    let job_id = "0193a0c4-6d1e-7cc0-8000-0000000000dd";
    let cases = [
        (
            pb::ImportJob {
                requested_by: "mallory\0".into(),
                ..contacts_job(job_id)
            },
            "job.requested_by: must not contain a NUL character",
        ),
        (
            pb::ImportJob {
                requested_by: "\u{1b}[31mred".into(),
                ..contacts_job(job_id)
            },
            "job.requested_by: must not contain control characters (found U+001B)",
        ),
        (
            pb::ImportJob {
                connection_id: "c".repeat(10 * 1024),
                ..contacts_job(job_id)
            },
            "job.connection_id: is 10240 characters long; at most 128",
        ),
        (
            pb::ImportJob {
                requested_by: "r".repeat(10 * 1024),
                ..contacts_job(job_id)
            },
            "job.requested_by: is 10240 characters long; at most 256",
        ),
        (
            contacts_job("0193a0c4-0000-not-a-uuid"),
            "job.job_id: \"0193a0c4-0000-not-a-uuid\" is not a UUID",
        ),
        (
            pb::ImportJob {
                filters: [("status".to_owned(), "open\0".to_owned())].into(),
                ..contacts_job(job_id)
            },
            "job.filters.status: must not contain a NUL character",
        ),
        (
            pb::ImportJob {
                filters: [("status\0".to_owned(), "open".to_owned())].into(),
                ..contacts_job(job_id)
            },
            "job.filters: a filter name must not contain a NUL character",
        ),
        (
            pb::ImportJob {
                fields: vec![pb::ResourceFields {
                    resource: "contacts".into(),
                    fields: vec!["name\0".into()],
                }],
                ..contacts_job(job_id)
            },
            "job.fields[0].fields[0]: must not contain a NUL character",
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

    // Bytes that are not UTF-8 in a protobuf string: tonic refuses the message before any
    // handler runs, naming the field, and the service answers INVALID_ARGUMENT (the
    // caller's error; tonic itself would say INTERNAL). The service goes on.
    let refused = submit_raw_requested_by(&import, job_id, b"ab\xff").await;
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("ImportJob.requested_by") && refused.message().contains("UTF-8"),
        "{:?}",
        refused.message()
    );

    // The other RPCs' strings follow the same rule.
    let mut client = ImportServiceClient::new(channel(import.address).await);
    let operator = token_of("operator");
    let reader = token_of("data_reader");
    let refusals = [
        client
            .get_job(with_bearer(
                pb::GetJobRequest {
                    job_id: format!("{job_id}\0"),
                },
                &operator,
            ))
            .await
            .map(drop),
        client
            .cancel_job(with_bearer(
                pb::CancelJobRequest {
                    job_id: job_id.into(),
                    reason: "stop\0now".into(),
                },
                &operator,
            ))
            .await
            .map(drop),
        client
            .list_jobs(with_bearer(
                pb::ListJobsRequest {
                    connection_id: "c-1\0".into(),
                    ..Default::default()
                },
                &operator,
            ))
            .await
            .map(drop),
        client
            .list_jobs(with_bearer(
                pb::ListJobsRequest {
                    page_token: "t".repeat(10 * 1024),
                    ..Default::default()
                },
                &operator,
            ))
            .await
            .map(drop),
        client
            .list_records(with_bearer(
                pb::ListRecordsRequest {
                    clio_account_id: "acct\0".into(),
                    resource: "contacts".into(),
                    ..Default::default()
                },
                &reader,
            ))
            .await
            .map(drop),
        client
            .list_records(with_bearer(
                pb::ListRecordsRequest {
                    clio_account_id: "acct-1".into(),
                    resource: "contacts".into(),
                    page_token: "42\0".into(),
                    ..Default::default()
                },
                &reader,
            ))
            .await
            .map(drop),
        client
            .export_records(with_bearer(
                pb::ExportRecordsRequest {
                    clio_account_id: "acct-1".into(),
                    resource: "r".repeat(10 * 1024),
                    ..Default::default()
                },
                &reader,
            ))
            .await
            .map(drop),
    ];
    let fields = [
        "job_id:",
        "reason:",
        "connection_id:",
        "page_token:",
        "clio_account_id:",
        "page_token:",
        "resource:",
    ];
    for (refused, field) in refusals.into_iter().zip(fields) {
        let refused = refused.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().starts_with(field), "{field}: {refused:?}");
    }

    // The next legitimate request is still served.
    assert_eq!(submit(&import, contacts_job(job_id)).await.unwrap(), job_id);
    import.stop().await;
}

/// `SubmitJob` with `requested_by` set to raw bytes, bypassing the generated client's
/// `String` (which cannot hold bytes that are not UTF-8).
async fn submit_raw_requested_by(
    import: &RunningImport,
    job_id: &str,
    requested_by: &[u8],
) -> tonic::Status {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawImportJob {
        #[prost(string, tag = "1")]
        job_id: String,
        #[prost(string, tag = "2")]
        connection_id: String,
        #[prost(string, repeated, tag = "3")]
        resources: Vec<String>,
        #[prost(bytes = "vec", tag = "8")]
        requested_by: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawSubmitJobRequest {
        #[prost(message, optional, tag = "1")]
        job: Option<RawImportJob>,
    }
    let request = RawSubmitJobRequest {
        job: Some(RawImportJob {
            job_id: job_id.into(),
            connection_id: "c-1".into(),
            resources: vec!["contacts".into()],
            requested_by: requested_by.to_vec(),
        }),
    };
    let mut grpc = tonic::client::Grpc::new(channel(import.address).await);
    grpc.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<RawSubmitJobRequest, pb::SubmitJobResponse> =
        tonic_prost::ProstCodec::default();
    grpc.unary(
        with_bearer(request, &token_of("job_submitter")),
        tonic::codegen::http::uri::PathAndQuery::from_static(
            "/clio_connect.imports.v1.ImportService/SubmitJob",
        ),
        codec,
    )
    .await
    .unwrap_err()
}
