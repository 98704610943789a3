//! A broker that holds its connection open and answers nothing: a publish fails after the
//! confirm timeout instead of holding the caller for ever.

use std::time::{Duration, Instant};

use harness::{TcpProxy, channel, token_of, with_bearer};
use proto::imports::v1 as pb;
use proto::imports::v1::import_service_client::ImportServiceClient;
use tonic::Code;

use crate::support::{Setup, start};

#[tokio::test]
async fn a_submit_to_a_hung_broker_fails_after_the_confirm_timeout() {
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let url = harness::amqp_url().replace("127.0.0.1:5672", &proxy.address.to_string());
    let import = start(
        "hung-broker",
        Setup {
            amqp_url: Some(url),
            tweak: Box::new(|config| config.amqp.confirm_timeout_ms = 500),
            ..Setup::default()
        },
    )
    .await;
    proxy.stall();

    let job_id = "0193a0c4-6d1e-7cc0-8000-0000000000ee";
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        ImportServiceClient::new(channel(import.address).await).submit_job(with_bearer(
            pb::SubmitJobRequest {
                job: Some(pb::ImportJob {
                    job_id: job_id.into(),
                    connection_id: "c-1".into(),
                    resources: vec!["contacts".into()],
                    mode: pb::ImportMode::Full as i32,
                    requested_by: "hung-broker-test".into(),
                    ..Default::default()
                }),
            },
            &token_of("job_submitter"),
        )),
    )
    .await
    .expect("SubmitJob answered while the broker hung");
    let refused = answer.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("did not confirm"),
        "{:?}",
        refused.message()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        import.job_status(job_id).await,
        None,
        "a job that was never confirmed queued must not stay queued"
    );
    proxy.cut();
    import.stop().await;
}
