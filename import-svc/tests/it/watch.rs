//! WatchJob stops polling the moment its client leaves, even for a job that never moves.

use std::time::Duration;

use harness::{channel, poll_until, token_of, with_bearer};
use proto::imports::v1 as pb;
use proto::imports::v1::import_service_client::ImportServiceClient;

use crate::support::{Setup, start};

#[tokio::test]
async fn a_watch_whose_client_left_stops_polling_a_job_that_never_moves() {
    let logs = harness::capture_logs();
    // No auth-svc: the job waits in the retry queues, never changing its status.
    let import = start("watch-leave", Setup::default()).await;
    let mut client = ImportServiceClient::new(channel(import.address).await);
    let job_id = client
        .submit_job(with_bearer(
            pb::SubmitJobRequest {
                job: Some(pb::ImportJob {
                    connection_id: "c-1".into(),
                    resources: vec!["contacts".into()],
                    mode: pb::ImportMode::Full as i32,
                    requested_by: "watch-test".into(),
                    ..Default::default()
                }),
            },
            &token_of("job_submitter"),
        ))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let mut watch = client
        .watch_job(with_bearer(
            pb::WatchJobRequest {
                job_id: job_id.clone(),
            },
            &token_of("job_submitter"),
        ))
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().expect("the job as it is");
    assert_eq!(first.job.unwrap().job_id, job_id);
    drop(watch);
    drop(client);

    poll_until(
        "the watch to notice its client left",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            logs.text()
                .lines()
                .any(|l| l.contains("watch ended: the client left") && l.contains(&job_id))
                .then_some(())
        },
    )
    .await;
    import.stop().await;
}
