//! Wire contracts of clio-connect: the three gRPC services and the `ImportJob` queue message.
//!
//! Generated from `proto/clio_connect/**.proto` at build time. Services convert these wire
//! types into their own domain types at the edge (`TryFrom`, naming the bad field).

#![allow(clippy::all, unreachable_pub, missing_docs)]

pub mod common {
    pub mod v1 {
        tonic::include_proto!("clio_connect.common.v1");
    }
}
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("clio_connect.auth.v1");
    }
}
pub mod import {
    pub mod v1 {
        tonic::include_proto!("clio_connect.import.v1");
    }
}
pub mod audit {
    pub mod v1 {
        tonic::include_proto!("clio_connect.audit.v1");
    }
}

/// Encoded `FileDescriptorSet` of every contract, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/clio_connect_descriptor.bin"));
