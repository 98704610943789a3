//! What the contracts declare, read from the contract crate's descriptor set.

use std::collections::BTreeSet;

use prost::Message;
use prost_types::FileDescriptorSet;

/// Every RPC of `services` (full names, e.g. `clio_connect.auth.v1.AuthService`) as a
/// call path, `/clio_connect.auth.v1.AuthService/GetApp`, as `proto::FILE_DESCRIPTOR_SET`
/// declares them. Panics on a service the set does not declare.
pub fn declared_rpc_paths(services: &[&str]) -> BTreeSet<String> {
    let set = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut paths = BTreeSet::new();
    for wanted in services {
        let mut declared = set.file.iter().flat_map(|file| {
            file.service
                .iter()
                .map(move |service| (format!("{}.{}", file.package(), service.name()), service))
        });
        let Some((name, service)) = declared.find(|(name, _)| name == wanted) else {
            panic!("{wanted} is not in proto::FILE_DESCRIPTOR_SET");
        };
        paths.extend(
            service
                .method
                .iter()
                .map(|method| format!("/{name}/{}", method.name())),
        );
    }
    paths
}
