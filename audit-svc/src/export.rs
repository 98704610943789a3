//! The export format (JSON lines) and its offline verification.
//!
//! ```text
//! {"type":"header","format":"clio-connect.audit.export.v1","tenant":"firm-a","from_sequence":1,"to_sequence":0,"exported_at":"…","keys":[{"key_id":"…","public_key":"<base64>"}]}
//! {"type":"event","hash":"…","prev_hash":"…","event":{<the canonical object the hash covers>}}
//! …
//! {"type":"checkpoint","tenant":"firm-a","sequence":1000,"head_hash":"…","signed_at":"…","key_id":"…","signature":"<base64>"}
//! ```
//!
//! An event line's `event` is written byte for byte as the canonical form, so a verifier
//! recomputes `SHA-256(prev_hash ‖ canonical(event))` with any JSON library that can sort
//! keys (see the README). The header's `keys` are informational: the verifier must be given
//! the public key it trusts.

use std::io::BufRead;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::canonical::{ObjectWriter, canonical_value, format_time};
use crate::chain::{ChainVerifier, Checkpoint, Link, Verdict};
use crate::event::EventRecord;
use crate::signing::TrustedKeys;

pub const EXPORT_FORMAT: &str = "clio-connect.audit.export.v1";

/// The first line.
pub fn header_line(
    tenant: &str,
    from: u64,
    to: u64,
    exported_at: &DateTime<Utc>,
    keys: &TrustedKeys,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"type\":\"header\",\"format\":");
    crate::canonical::write_str(&mut out, EXPORT_FORMAT);
    out.extend_from_slice(b",\"tenant\":");
    crate::canonical::write_str(&mut out, tenant);
    out.extend_from_slice(format!(",\"from_sequence\":{from},\"to_sequence\":{to}").as_bytes());
    out.extend_from_slice(b",\"exported_at\":");
    crate::canonical::write_str(&mut out, &format_time(exported_at));
    out.extend_from_slice(b",\"keys\":[");
    for (i, (key_id, public_key)) in keys.listed().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut key = ObjectWriter::begin(&mut out);
        key.str("key_id", key_id).str("public_key", public_key);
        key.end();
    }
    out.extend_from_slice(b"]}\n");
    out
}

/// An event line, its `event` value exactly the canonical bytes.
pub fn event_line(record: &EventRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"event\",\"hash\":");
    crate::canonical::write_str(out, &record.hash);
    out.extend_from_slice(b",\"prev_hash\":");
    crate::canonical::write_str(out, &record.prev_hash);
    out.extend_from_slice(b",\"event\":");
    record.write_canonical(out);
    out.extend_from_slice(b"}\n");
}

pub fn checkpoint_line(checkpoint: &Checkpoint, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"checkpoint\",");
    // The rest is the checkpoint as an object without its braces.
    let mut object = Vec::with_capacity(256);
    let mut writer = ObjectWriter::begin(&mut object);
    writer
        .str("head_hash", &checkpoint.head_hash)
        .str("key_id", &checkpoint.key_id)
        .uint("sequence", checkpoint.sequence)
        .str("signature", &checkpoint.signature)
        .str("signed_at", &format_time(&checkpoint.signed_at))
        .str("tenant", &checkpoint.tenant);
    writer.end();
    out.extend_from_slice(&object[1..]);
    out.push(b'\n');
}

/// Why an export file could not be checked at all (as opposed to a broken chain).
#[derive(Debug, thiserror::Error)]
pub enum ExportFileError {
    #[error("cannot read the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {problem}")]
    Malformed { line: usize, problem: String },
}

#[derive(Deserialize)]
struct Header {
    format: String,
    tenant: String,
    from_sequence: u64,
    to_sequence: u64,
}

#[derive(Deserialize)]
struct CheckpointLine {
    tenant: String,
    sequence: u64,
    head_hash: String,
    signed_at: DateTime<Utc>,
    key_id: String,
    signature: String,
}

#[derive(Deserialize)]
struct EventLine {
    hash: String,
    prev_hash: String,
    event: Value,
}

fn malformed(line: usize, problem: impl std::fmt::Display) -> ExportFileError {
    ExportFileError::Malformed {
        line,
        problem: problem.to_string(),
    }
}

/// The line's `type`, cheaply (every line starts with it).
fn line_type(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("{\"type\":\"")?;
    rest.split_once('"').map(|(kind, _)| kind)
}

/// Reads a checkpoint line (of an export, or of a witness file).
pub fn parse_checkpoint_line(line: &str) -> Result<Checkpoint, serde_json::Error> {
    let c: CheckpointLine = serde_json::from_str(line)?;
    Ok(Checkpoint {
        tenant: c.tenant,
        sequence: c.sequence,
        head_hash: c.head_hash,
        signed_at: c.signed_at,
        key_id: c.key_id,
        signature: c.signature,
    })
}

/// Verifies an export read twice from `open` (checkpoints first, then events), so a file
/// of any size is checked in constant memory.
pub fn verify_export<R: BufRead>(
    open: impl FnMut() -> std::io::Result<R>,
    keys: &TrustedKeys,
) -> Result<(String, Verdict), ExportFileError> {
    verify_export_witnessed(open, keys, Vec::new())
}

/// [`verify_export`], also against checkpoints from a witness (any tenant's; those of the
/// export's tenant and range are checked). The export is a snapshot, so a witnessed
/// checkpoint after its last event is not evidence of anything missing.
pub fn verify_export_witnessed<R: BufRead>(
    mut open: impl FnMut() -> std::io::Result<R>,
    keys: &TrustedKeys,
    witnessed: Vec<Checkpoint>,
) -> Result<(String, Verdict), ExportFileError> {
    let mut header: Option<Header> = None;
    let mut checkpoints = Vec::new();
    for (n, line) in open()?.lines().enumerate() {
        let line = line?;
        match line_type(&line) {
            Some("header") => {
                header = Some(serde_json::from_str(&line).map_err(|e| malformed(n + 1, e))?);
            }
            Some("checkpoint") => {
                let c: CheckpointLine =
                    serde_json::from_str(&line).map_err(|e| malformed(n + 1, e))?;
                checkpoints.push(Checkpoint {
                    tenant: c.tenant,
                    sequence: c.sequence,
                    head_hash: c.head_hash,
                    signed_at: c.signed_at,
                    key_id: c.key_id,
                    signature: c.signature,
                });
            }
            Some("event") => {}
            _ if line.trim().is_empty() => {}
            _ => return Err(malformed(n + 1, "not a header, event or checkpoint line")),
        }
    }
    let header = header.ok_or_else(|| malformed(1, "no header line"))?;
    if header.format != EXPORT_FORMAT {
        return Err(malformed(1, format!("unknown format {:?}", header.format)));
    }
    if let Some(other) = checkpoints.iter().find(|c| c.tenant != header.tenant) {
        return Err(malformed(
            0,
            format!(
                "a checkpoint of tenant {:?} in an export of {:?}",
                other.tenant, header.tenant
            ),
        ));
    }
    let first = header.from_sequence.max(1);
    let anchor = (first == 1).then(|| crate::canonical::GENESIS_HASH.to_owned());
    let witnessed = witnessed.into_iter().filter(|c| {
        c.tenant == header.tenant && (header.to_sequence == 0 || c.sequence <= header.to_sequence)
    });
    let mut verifier =
        ChainVerifier::new(keys, first, anchor, checkpoints).with_witness(witnessed, false);
    for (n, line) in open()?.lines().enumerate() {
        let line = line?;
        if line_type(&line) != Some("event") {
            continue;
        }
        let event: EventLine = serde_json::from_str(&line).map_err(|e| malformed(n + 1, e))?;
        let field = |name: &str| event.event.get(name).cloned().unwrap_or(Value::Null);
        let sequence = field("sequence")
            .as_u64()
            .ok_or_else(|| malformed(n + 1, "event.sequence is not a number"))?;
        let event_id = field("event_id").as_str().unwrap_or_default().to_owned();
        if field("tenant").as_str() != Some(header.tenant.as_str()) {
            return Err(malformed(n + 1, "event of another tenant"));
        }
        let canonical = canonical_value(&event.event);
        verifier.push(Link {
            sequence,
            event_id: &event_id,
            content_hash: &Link::content_hash_of(&event.prev_hash, canonical.as_bytes()),
            prev_hash: &event.prev_hash,
            hash: &event.hash,
        });
        if !verifier.wants_more() {
            break;
        }
    }
    let expected_last = (header.to_sequence != 0).then_some(header.to_sequence);
    Ok((header.tenant, verifier.finish(expected_last)))
}
