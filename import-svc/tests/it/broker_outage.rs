//! The broker goes away and comes back: health follows, and the consumer reconnects and
//! consumes again without a restart.

use std::time::Duration;

use harness::{ServingStatus, TcpProxy};
use proto::queue::header;

use crate::support::{Setup, start};

#[tokio::test]
async fn the_consumer_reconnects_after_the_broker_connection_is_cut() {
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let url = harness::amqp_url().replace("127.0.0.1:5672", &proxy.address.to_string());
    let import = start(
        "broker-outage",
        Setup {
            amqp_url: Some(url),
            ..Setup::default()
        },
    )
    .await;

    proxy.cut();
    import.wait_health(ServingStatus::NotServing).await;
    proxy.restore();
    import.wait_health(ServingStatus::Serving).await;

    // Consuming again: a bad message is handled (dead-lettered) by the new session.
    let topology = &import.topology;
    import.publish_job(b"{}", Some("application/json")).await;
    let dead = import
        .broker
        .next_message(&topology.names.dead_letter_queue, Duration::from_secs(15))
        .await;
    assert!(
        dead.header(header::REJECTION_REASON)
            .unwrap()
            .starts_with("job_id:")
    );
    import.stop().await;
}
