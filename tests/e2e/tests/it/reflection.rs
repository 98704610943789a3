//! Each service describes itself to tools in any language through server reflection, as
//! `grpcurl <address> list` and `grpcurl <address> describe <service>` need: its own
//! services with every declared RPC, health and reflection itself, and the imported files
//! (common types, well-known types) the request and response messages use.
//!
//! The client is `examples/python/describe.py` (grpcio-reflection's descriptor database):
//! another implementation than the server's, as grpcurl is.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::process::Command;

use crate::python_producer::{python, repository, run};
use crate::services::{Service, start};

/// Service name → method name → its description.
type Described = BTreeMap<String, BTreeMap<String, serde_json::Value>>;

async fn describe(address: std::net::SocketAddr) -> Described {
    let mut command = Command::new(python().await);
    command
        .arg(repository().join("examples/python/describe.py"))
        .arg(address.to_string());
    let output = run(command, Duration::from_secs(60)).await;
    assert!(
        output.status.success(),
        "describe.py failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn a_python_reflection_client_resolves_every_rpc_of_each_service() {
    for kind in Service::ALL {
        let running = start(kind).await;
        harness::wait_for_health(running.address, "", harness::ServingStatus::Serving).await;
        let described = describe(running.address).await;

        for standard in [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(
                described.contains_key(standard),
                "{kind:?}: {standard} missing: {:?}",
                described.keys()
            );
        }
        assert_eq!(
            described["grpc.health.v1.Health"]["Check"]["input"],
            "grpc.health.v1.HealthCheckRequest"
        );

        let own = kind.grpc_services();
        let resolved: BTreeSet<String> = own
            .iter()
            .flat_map(|service| {
                described
                    .get(*service)
                    .unwrap_or_else(|| panic!("{kind:?} does not describe {service}"))
                    .keys()
                    .map(move |method| format!("/{service}/{method}"))
            })
            .collect();
        assert_eq!(resolved, harness::declared_rpc_paths(own), "{kind:?}");
        // Every method's messages resolved, fields and all.
        for service in own {
            for (method, description) in &described[*service] {
                let input = description["input"].as_str().unwrap();
                assert!(
                    input.starts_with("clio_connect."),
                    "{service}/{method}: {input}"
                );
            }
        }
        running.stop().await.unwrap();
    }
}
