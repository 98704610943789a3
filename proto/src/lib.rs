//! Wire contracts of clio-connect: the three gRPC services, the `ImportJob` queue message,
//! the queue's exchanges, routing keys and headers ([`queue`]), and protobuf's canonical
//! JSON mapping of the messages ([`json`]).
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
pub mod imports {
    pub mod v1 {
        tonic::include_proto!("clio_connect.imports.v1");
    }
}
pub mod audit {
    pub mod v1 {
        tonic::include_proto!("clio_connect.audit.v1");
    }
}
pub mod suggestions {
    pub mod v1 {
        tonic::include_proto!("clio_connect.suggestions.v1");
    }
}

pub mod field_violation;
pub mod json;
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

#[cfg(test)]
mod package_names {
    use prost::Message;

    /// Reserved words of the languages clients are generated in: Python, Go, Java, C#,
    /// JavaScript. A package segment among them breaks that language's stubs (Python's
    /// `from clio_connect.import.v1 import ...` is a SyntaxError).
    const KEYWORDS: &str = "
        and as assert async await break case catch chan class const continue debugger def
        default defer del delete do elif else enum except export extends fallthrough false
        final finally for from func function global go goto if implements import in
        instanceof interface is lambda let map nonlocal none not or package pass private
        protected public raise range return select static struct super switch this throw
        true try type typeof var void while with yield abstract boolean byte char double
        float int long native new null short strictfp synchronized throws transient volatile
        record sealed permits base bool checked decimal delegate event explicit extern fixed
        foreach implicit internal lock namespace object operator out override params
        readonly ref sbyte sizeof stackalloc string uint ulong unchecked unsafe ushort using
        virtual";

    #[test]
    fn no_package_segment_is_a_keyword_of_a_client_language() {
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let keywords: Vec<&str> = KEYWORDS.split_whitespace().collect();
        let ours: Vec<String> = set
            .file
            .iter()
            .filter_map(|file| file.package.clone())
            .filter(|package| package.starts_with("clio_connect."))
            .collect();
        assert_eq!(ours.len(), 5, "{ours:?}");
        for package in ours {
            for segment in package.split('.') {
                assert!(
                    !keywords.contains(&segment.to_ascii_lowercase().as_str()),
                    "package {package}: {segment:?} is a keyword"
                );
            }
        }
    }
}
