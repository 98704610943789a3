//! Reading a tenant's stored events the way `Verify` does: a binary `COPY` of the columns
//! an event's hash covers, parsed and hashed straight from the bytes Postgres sends.
//!
//! `Verify` reads every event of a chain, so this skips what each row of a query costs on
//! the way in (a row object, a type check and a decoded value per column). The `COPY`
//! binary format is, per event, a count of fields, then each field's length and bytes. The
//! statement casts every column, so those bytes are known to be `text` (UTF-8), `int8`,
//! `uuid`, `timestamptz` (microseconds since 2000-01-01 UTC) or a one-dimensional `text[]`;
//! anything that does not read as such is an error, as it is for sqlx's decoding. The bytes
//! hashed are those [`crate::store::decode_event`] and
//! [`crate::event::EventRecord::canonical_bytes`] give for the same row: both write through
//! [`CanonicalEvent`].

use std::ops::ControlFlow;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use sqlx::postgres::Postgres;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::canonical::{CanonicalTextWriter, HashHex, chain_hash_hex};
use crate::chain::Link;
use crate::error::AuditError;
use crate::event::CanonicalEvent;

/// [`crate::store::EVENT_COLUMNS`], each cast to the type its bytes are read as.
pub const COPY_COLUMNS: &str = "tenant::text, sequence::int8, event_id::uuid, kind::text, \
     actor_kind::text, actor_id::text, subject_kind::text, subject_id::text, \
     connection_id::text, app_id::text, principal::text, clio_user_id::text, \
     clio_account_id::text, job_id::text, region::text, scopes::text[], risk_tier::text, \
     reason::text, source::text, occurred_at::timestamptz, recorded_at::timestamptz, \
     payload::text, prev_hash::text, hash::text, writer::text";

/// How many columns [`COPY_COLUMNS`] names.
const FIELDS: usize = 25;

/// The reader hands the data on in pieces of about this many bytes.
const PIECE: usize = 256 * 1024;

/// Microseconds from the Unix epoch to Postgres' (2000-01-01 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The start of binary `COPY` data.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Copies `tenant`'s events with sequence in `[from, to]` (`to` 0: unbounded), in sequence
/// order, to `sender` in pieces of binary `COPY` data (for [`CopyTuples`]), until they end
/// or the receiver is dropped.
pub async fn copy_events(
    pool: &PgPool,
    tenant: &str,
    from: i64,
    to: i64,
    sender: mpsc::Sender<Vec<u8>>,
) -> Result<(), AuditError> {
    let mut connection = Copying {
        connection: pool.acquire().await?,
        finished: false,
    };
    let conn = &mut *connection.connection;
    sqlx::query("BEGIN READ ONLY").execute(&mut *conn).await?;
    // `COPY` takes no parameters: the tenant travels in a setting of this transaction.
    //
    // The rows are wanted in primary-key order, which an index range scan gives as it
    // reads. For a stretch of a long chain the planner prices that scan above sorting the
    // matching rows of a sequential (even parallel) scan of the whole table, since it
    // discounts the correlation of a two-column key: each segment would read every
    // tenant's events. And each segment's query would be compiled (JIT), which takes
    // longer than it saves on a segment (about 8% of the server's time, measured). Only
    // this transaction is steered.
    sqlx::query(
        "SELECT set_config('audit.verify_tenant', $1, true), \
                set_config('enable_seqscan', 'off', true), \
                set_config('enable_bitmapscan', 'off', true), \
                set_config('max_parallel_workers_per_gather', '0', true), \
                set_config('jit', 'off', true)",
    )
    .bind(tenant)
    .execute(&mut *conn)
    .await?;
    let until = if to == 0 {
        String::new()
    } else {
        format!(" AND sequence <= {to}")
    };
    let statement = format!(
        "COPY (SELECT {COPY_COLUMNS} FROM events \
         WHERE tenant = current_setting('audit.verify_tenant') AND sequence >= {from}{until} \
         ORDER BY sequence) TO STDOUT (FORMAT binary)"
    );
    let mut data = conn.copy_out_raw(&statement).await?;
    let mut piece = Vec::with_capacity(PIECE + 4096);
    while let Some(chunk) = data.try_next().await? {
        piece.extend_from_slice(&chunk);
        if piece.len() >= PIECE {
            let full = std::mem::replace(&mut piece, Vec::with_capacity(PIECE + 4096));
            if sender.send(full).await.is_err() {
                // The checker has its verdict; the connection is closed mid-copy.
                return Ok(());
            }
        }
    }
    drop(data);
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    connection.finished = true;
    if !piece.is_empty() {
        let _ = sender.send(piece).await;
    }
    Ok(())
}

/// A connection running a `COPY`: closed, not returned to the pool, unless the copy was
/// read to its end (the rest of its data would meet the next query).
struct Copying {
    connection: PoolConnection<Postgres>,
    finished: bool,
}

impl Drop for Copying {
    fn drop(&mut self) {
        if !self.finished {
            self.connection.close_on_drop();
        }
    }
}

/// The fields of one tuple, `None` for NULL.
pub struct Tuple<'a> {
    fields: [Option<&'a [u8]>; FIELDS],
}

/// Splits binary `COPY` data into tuples; the data may come in pieces of any size.
#[derive(Debug, Default)]
pub struct CopyTuples {
    /// The start of a tuple (or the header) cut off at the end of the last piece.
    pending: Vec<u8>,
    header_read: bool,
    ended: bool,
}

impl CopyTuples {
    /// Calls `each` with every whole tuple in `piece` (after what the last piece left over)
    /// until it breaks.
    pub fn feed(
        &mut self,
        piece: &[u8],
        mut each: impl FnMut(&Tuple<'_>) -> Result<ControlFlow<()>, AuditError>,
    ) -> Result<ControlFlow<()>, AuditError> {
        if self.pending.is_empty() {
            let (used, flow) = self.split(piece, &mut each)?;
            self.pending.extend_from_slice(&piece[used..]);
            return Ok(flow);
        }
        let mut joined = std::mem::take(&mut self.pending);
        joined.extend_from_slice(piece);
        let (used, flow) = self.split(&joined, &mut each)?;
        joined.drain(..used);
        self.pending = joined;
        Ok(flow)
    }

    /// Checks that the data ended where it should: after its trailer, nothing cut off.
    pub fn finish(&self) -> Result<(), AuditError> {
        if self.ended && self.pending.is_empty() {
            Ok(())
        } else {
            Err(malformed("the data ended inside a tuple"))
        }
    }

    /// Tuples from the start of `data`; returns how many bytes were used.
    fn split(
        &mut self,
        data: &[u8],
        each: &mut impl FnMut(&Tuple<'_>) -> Result<ControlFlow<()>, AuditError>,
    ) -> Result<(usize, ControlFlow<()>), AuditError> {
        let mut at = 0;
        if !self.header_read {
            let Some(length) = header_length(data)? else {
                return Ok((0, ControlFlow::Continue(())));
            };
            at = length;
            self.header_read = true;
        }
        // One tuple filled in place, tuple after tuple.
        let mut tuple = Tuple {
            fields: [None; FIELDS],
        };
        while at < data.len() {
            if self.ended {
                return Err(malformed("data after the trailer"));
            }
            match tuple_at(data, at, &mut tuple)? {
                Next::CutOff => break,
                Next::Trailer(end) => {
                    at = end;
                    self.ended = true;
                }
                Next::Tuple(end) => {
                    at = end;
                    if each(&tuple)?.is_break() {
                        return Ok((at, ControlFlow::Break(())));
                    }
                }
            }
        }
        Ok((at, ControlFlow::Continue(())))
    }
}

fn malformed(what: &str) -> AuditError {
    AuditError::Internal(format!("stored events: binary copy data: {what}"))
}

fn int_at<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The length of the header at the start of `data`, once all of it is there.
fn header_length(data: &[u8]) -> Result<Option<usize>, AuditError> {
    let Some(extension) = int_at::<4>(data, 15) else {
        return Ok(None);
    };
    if &data[..11] != SIGNATURE {
        return Err(malformed("no signature"));
    }
    // Bit 16 of the flags: each tuple carries an OID, which this statement never asks for.
    let flags = u32::from_be_bytes(int_at::<4>(data, 11).unwrap_or_default());
    if flags & (1 << 16) != 0 {
        return Err(malformed("tuples with OIDs"));
    }
    let extension = usize::try_from(u32::from_be_bytes(extension))
        .map_err(|_| malformed("header extension"))?;
    let length = 19 + extension;
    Ok((data.len() >= length).then_some(length))
}

/// What follows in the data.
enum Next {
    /// A tuple, read into the one given, ending here.
    Tuple(usize),
    /// The trailer, ending here.
    Trailer(usize),
    /// Not all of it yet.
    CutOff,
}

/// Reads the tuple starting at `at` into `tuple`, once all of it is there.
fn tuple_at<'a>(data: &'a [u8], at: usize, tuple: &mut Tuple<'a>) -> Result<Next, AuditError> {
    let Some(count) = int_at::<2>(data, at) else {
        return Ok(Next::CutOff);
    };
    let count = i16::from_be_bytes(count);
    let mut next = at + 2;
    if count == -1 {
        return Ok(Next::Trailer(next));
    }
    if usize::try_from(count).ok() != Some(FIELDS) {
        return Err(malformed("a tuple with another number of fields"));
    }
    for field in &mut tuple.fields {
        let Some(length) = int_at::<4>(data, next) else {
            return Ok(Next::CutOff);
        };
        next += 4;
        let length = i32::from_be_bytes(length);
        if length == -1 {
            *field = None;
            continue;
        }
        let length = usize::try_from(length).map_err(|_| malformed("a field length"))?;
        let Some(bytes) = data.get(next..next + length) else {
            return Ok(Next::CutOff);
        };
        *field = Some(bytes);
        next += length;
    }
    Ok(Next::Tuple(next))
}

/// The column names of [`COPY_COLUMNS`], by field.
const NAMES: [&str; FIELDS] = [
    "tenant",
    "sequence",
    "event_id",
    "kind",
    "actor_kind",
    "actor_id",
    "subject_kind",
    "subject_id",
    "connection_id",
    "app_id",
    "principal",
    "clio_user_id",
    "clio_account_id",
    "job_id",
    "region",
    "scopes",
    "risk_tier",
    "reason",
    "source",
    "occurred_at",
    "recorded_at",
    "payload",
    "prev_hash",
    "hash",
    "writer",
];

fn column(index: usize, problem: impl std::fmt::Display) -> AuditError {
    AuditError::Internal(format!("stored event {}: {problem}", NAMES[index]))
}

impl<'a> Tuple<'a> {
    fn bytes(&self, index: usize) -> Result<&'a [u8], AuditError> {
        self.fields[index].ok_or_else(|| column(index, "null"))
    }

    fn text(&self, index: usize) -> Result<&'a str, AuditError> {
        std::str::from_utf8(self.bytes(index)?).map_err(|e| column(index, e))
    }

    fn fixed<const N: usize>(&self, index: usize) -> Result<[u8; N], AuditError> {
        self.bytes(index)?
            .try_into()
            .map_err(|_| column(index, format!("not {N} bytes")))
    }

    fn int8(&self, index: usize) -> Result<i64, AuditError> {
        Ok(i64::from_be_bytes(self.fixed(index)?))
    }

    fn time(&self, index: usize) -> Result<DateTime<Utc>, AuditError> {
        self.int8(index)?
            .checked_add(POSTGRES_EPOCH_MICROS)
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(|| column(index, "out of range"))
    }

    /// A `text[]`, read as sqlx reads a `Vec<String>`: one dimension (or none: empty), no
    /// NULL elements.
    fn texts(&self, index: usize, into: &mut Vec<&'a str>) -> Result<(), AuditError> {
        let bytes = self.bytes(index)?;
        let int = |at: usize| {
            int_at::<4>(bytes, at)
                .map(i32::from_be_bytes)
                .ok_or_else(|| column(index, "a cut-off array"))
        };
        into.clear();
        match int(0)? {
            0 => return Ok(()),
            1 => {}
            dimensions => {
                return Err(column(
                    index,
                    format!("an array of {dimensions} dimensions"),
                ));
            }
        }
        // Then: flags, element type, length, lower bound.
        let length = usize::try_from(int(12)?).map_err(|_| column(index, "array length"))?;
        let mut at = 20;
        for _ in 0..length {
            let element = usize::try_from(int(at)?).map_err(|_| column(index, "a null element"))?;
            at += 4;
            let text = bytes
                .get(at..at + element)
                .ok_or_else(|| column(index, "a cut-off array"))?;
            into.push(std::str::from_utf8(text).map_err(|e| column(index, e))?);
            at += element;
        }
        Ok(())
    }
}

/// Hashes tuples of [`COPY_COLUMNS`] without building [`crate::event::EventRecord`]s,
/// into buffers kept from tuple to tuple.
#[derive(Debug, Default)]
pub struct RowHasher {
    canonical: Vec<u8>,
    payload: Vec<u8>,
    payload_writer: CanonicalTextWriter,
}

/// A stored event as the chain verifier sees it (see [`Link`]).
#[derive(Debug)]
pub struct HashedRow<'r> {
    pub sequence: u64,
    event_id: [u8; 45],
    pub prev_hash: &'r str,
    pub hash: &'r str,
    /// [`crate::canonical::chain_hash`] of the stored `prev_hash` and the event's
    /// canonical bytes.
    pub content_hash: HashHex,
}

impl HashedRow<'_> {
    pub fn event_id(&self) -> &str {
        // The hyphenated form is ASCII.
        std::str::from_utf8(&self.event_id[..36]).unwrap_or_default()
    }

    pub fn link(&self) -> Link<'_> {
        Link {
            sequence: self.sequence,
            event_id: self.event_id(),
            content_hash: self.content_hash.as_str(),
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

impl RowHasher {
    pub fn hash<'r>(&mut self, tuple: &Tuple<'r>) -> Result<HashedRow<'r>, AuditError> {
        let sequence = u64::try_from(tuple.int8(1)?).map_err(|e| column(1, e))?;
        let event_id = Uuid::from_bytes(tuple.fixed(2)?);
        let mut scopes = Vec::new();
        tuple.texts(15, &mut scopes)?;
        let prev_hash = tuple.text(22)?;
        self.payload.clear();
        // jsonb prints its own spacing; the hash covers the canonical form.
        self.payload_writer
            .write(&mut self.payload, tuple.text(21)?)
            .map_err(|e| column(21, e))?;
        let event = CanonicalEvent {
            event_id,
            tenant: tuple.text(0)?,
            kind: tuple.text(3)?,
            actor_kind: tuple.text(4)?,
            actor_id: tuple.text(5)?,
            subject_kind: tuple.text(6)?,
            subject_id: tuple.text(7)?,
            connection_id: tuple.text(8)?,
            app_id: tuple.text(9)?,
            principal: tuple.text(10)?,
            clio_user_id: tuple.text(11)?,
            clio_account_id: tuple.text(12)?,
            job_id: tuple.text(13)?,
            region: tuple.text(14)?,
            scopes: &scopes,
            risk_tier: tuple.text(16)?,
            reason: tuple.text(17)?,
            source: tuple.text(18)?,
            occurred_at: tuple.time(19)?,
            payload: &self.payload,
            writer: tuple.text(24)?,
            sequence,
            recorded_at: tuple.time(20)?,
        };
        self.canonical.clear();
        event.write(&mut self.canonical);
        let mut id = Uuid::encode_buffer();
        event_id.hyphenated().encode_lower(&mut id);
        Ok(HashedRow {
            sequence,
            event_id: id,
            prev_hash,
            hash: tuple.text(23)?,
            content_hash: chain_hash_hex(prev_hash, &self.canonical),
        })
    }
}

/// What `Verify` computes for each of `tenant`'s stored events, in sequence order:
/// `(sequence, content hash)` (see [`HashedRow::content_hash`]).
pub async fn content_hashes(pool: &PgPool, tenant: &str) -> Result<Vec<(u64, String)>, AuditError> {
    let (sender, mut receiver) = mpsc::channel(2);
    let (copied, hashes) = tokio::join!(copy_events(pool, tenant, 1, 0, sender), async {
        let mut tuples = CopyTuples::default();
        let mut hasher = RowHasher::default();
        let mut hashes = Vec::new();
        while let Some(piece) = receiver.recv().await {
            // Never stopped early.
            let _ = tuples.feed(&piece, |tuple| {
                let row = hasher.hash(tuple)?;
                hashes.push((row.sequence, row.content_hash.as_str().to_owned()));
                Ok(ControlFlow::Continue(()))
            })?;
        }
        tuples.finish()?;
        Ok::<_, AuditError>(hashes)
    });
    copied?;
    hashes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
        match bytes {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(bytes) => {
                out.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
                out.extend_from_slice(bytes);
            }
        }
    }

    /// Binary copy data of `tuples` (each field `i` holding `[i, n]`, NULL for 7) and the
    /// trailer.
    fn copy_data(tuples: u8) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&3u32.to_be_bytes());
        out.extend_from_slice(b"ext");
        for n in 0..tuples {
            out.extend_from_slice(&25i16.to_be_bytes());
            for i in 0..25u8 {
                field(&mut out, (i != 7).then_some(&[i, n][..]));
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn read(pieces: &[&[u8]]) -> Result<Vec<u8>, AuditError> {
        let mut tuples = CopyTuples::default();
        let mut seen = Vec::new();
        for piece in pieces {
            let _ = tuples.feed(piece, |tuple| {
                assert_eq!(tuple.fields[7], None);
                assert_eq!(tuple.fields[24].unwrap()[0], 24);
                seen.push(tuple.fields[3].unwrap()[1]);
                Ok(ControlFlow::Continue(()))
            })?;
        }
        tuples.finish()?;
        Ok(seen)
    }

    #[test]
    fn tuples_are_read_whatever_the_pieces() {
        let data = copy_data(3);
        assert_eq!(read(&[&data]).unwrap(), [0, 1, 2]);
        for cut in 0..data.len() {
            assert_eq!(
                read(&[&data[..cut], &data[cut..]]).unwrap(),
                [0, 1, 2],
                "{cut}"
            );
        }
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(read(&bytes).unwrap(), [0, 1, 2]);
        assert!(read(&[&copy_data(0)]).unwrap().is_empty());
    }

    #[test]
    fn malformed_data_is_an_error() {
        let data = copy_data(2);
        // Cut short, anywhere.
        for cut in [0, 5, 19, 25, data.len() - 1] {
            assert!(read(&[&data[..cut]]).is_err(), "{cut}");
        }
        let mut unsigned = data.clone();
        unsigned[0] = b'X';
        assert!(read(&[&unsigned]).is_err());
        let mut extra = data.clone();
        extra.extend_from_slice(&25i16.to_be_bytes());
        assert!(read(&[&extra]).is_err());
        let mut narrow = data.clone();
        // The first tuple's field count.
        narrow[23] = 24;
        assert!(read(&[&narrow]).is_err());
    }

    #[test]
    fn fields_are_read_as_their_types() {
        let mut array = Vec::new();
        for int in [1i32, 0, 25, 2, 1] {
            array.extend_from_slice(&int.to_be_bytes());
        }
        for text in ["contacts:read", "matters:write"] {
            field(&mut array, Some(text.as_bytes()));
        }
        let empty: Vec<u8> = [0i32, 0, 25].iter().flat_map(|i| i.to_be_bytes()).collect();
        let two_dimensions: Vec<u8> = [2i32, 0, 25, 1, 1, 1, 1]
            .iter()
            .flat_map(|i| i.to_be_bytes())
            .collect();
        let mut with_null = Vec::new();
        for int in [1i32, 1, 25, 1, 1, -1] {
            with_null.extend_from_slice(&int.to_be_bytes());
        }
        let time = (1_700_000_000_123_456i64 - POSTGRES_EPOCH_MICROS).to_be_bytes();
        let mut tuple = Tuple {
            fields: [None; FIELDS],
        };
        tuple.fields[0] = Some(&b"firm \xc3\xa9"[..]);
        tuple.fields[1] = Some(&time[..]);
        tuple.fields[2] = Some(&b"\xff"[..]);
        tuple.fields[3] = Some(array.as_slice());
        tuple.fields[4] = Some(empty.as_slice());
        tuple.fields[5] = Some(two_dimensions.as_slice());
        tuple.fields[6] = Some(with_null.as_slice());
        assert_eq!(tuple.text(0).unwrap(), "firm é");
        assert_eq!(
            tuple.time(1).unwrap(),
            DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap()
        );
        assert!(tuple.text(2).is_err());
        assert!(tuple.int8(2).is_err());
        assert!(tuple.text(7).is_err(), "NULL");
        let mut texts = Vec::new();
        tuple.texts(3, &mut texts).unwrap();
        assert_eq!(texts, ["contacts:read", "matters:write"]);
        tuple.texts(4, &mut texts).unwrap();
        assert!(texts.is_empty());
        assert!(tuple.texts(5, &mut texts).is_err());
        assert!(tuple.texts(6, &mut texts).is_err());
        let infinity = i64::MAX.to_be_bytes();
        tuple.fields[8] = Some(&infinity[..]);
        assert!(tuple.time(8).is_err());
    }

    #[test]
    fn the_copy_reads_the_columns_events_are_decoded_from() {
        let names = |columns: &str| -> Vec<String> {
            columns
                .split(',')
                .map(|c| c.trim().split("::").next().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names(COPY_COLUMNS), names(crate::store::EVENT_COLUMNS));
        assert_eq!(names(COPY_COLUMNS), NAMES);
    }
}
