//! Wire contracts of clio-connect: the three gRPC services, the `ImportJob` queue message,
//! and the queue's exchanges, routing keys and headers ([`queue`]).
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

pub mod field_violation;
pub mod queue;
mod redacted_debug;
pub mod time;

pub use field_violation::FieldViolation;

/// Encoded `FileDescriptorSet` of every contract, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/clio_connect_descriptor.bin"));

/// What audit-svc accepts in one `Record` call, in one place: audit-svc validates against
/// these, and producers' outboxes fit every event to them before storing it (so an event
/// built from hostile input can never be refused later and wedge delivery).
pub mod audit_limits {
    /// At most this many events per `Record`.
    pub const MAX_EVENTS_PER_RECORD: usize = 1_000;
    /// Largest `payload_json` (a JSON object), in bytes.
    pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
    /// Largest identifier (tenant, actor and subject ids, refs, source), in bytes.
    pub const MAX_ID_BYTES: usize = 256;
    /// Largest free text (reason), in bytes.
    pub const MAX_TEXT_BYTES: usize = 4 * 1024;
    /// Producers keep one encoded `RecordRequest` under this many bytes, well under gRPC's
    /// default 4 MiB message limit (a batch is cut short when the next event would cross
    /// it; one event fitted to the limits above is under 80 KiB).
    pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

    /// Why audit-svc refuses this string as a field bounded by `max` bytes, if it does:
    /// too long, or holding a NUL (Postgres text cannot store one).
    pub fn text_problem(value: &str, max: usize) -> Option<String> {
        if value.len() > max {
            return Some(format!("longer than {max} bytes"));
        }
        if value.contains('\0') {
            return Some("contains a NUL character".to_owned());
        }
        None
    }

    /// Why audit-svc refuses this string as a required identifier, if it does: empty (or
    /// only whitespace), too long, or holding a NUL.
    pub fn required_id_problem(value: &str) -> Option<String> {
        if value.trim().is_empty() {
            return Some("must not be empty".to_owned());
        }
        text_problem(value, MAX_ID_BYTES)
    }
}
