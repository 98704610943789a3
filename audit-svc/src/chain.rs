//! Checking a tenant's chain, one event at a time, wherever the events come from: the
//! database (`Verify`) or an export file (`audit-svc verify`).
//!
//! For each event in sequence order the verifier checks, in this order: the sequence has
//! no gap; `prev_hash` is the previous event's hash; `SHA-256(prev_hash ‖ canonical bytes)`
//! is the stored hash (the caller computes it, see [`Link::content_hash`]); and, where a checkpoint was signed at this sequence, its signature
//! and that its head hash is this event's hash. The first failure is reported with the
//! event's id and why: edited, missing (deleted), reordered, or a bad checkpoint.
//!
//! Checkpoints can also come from a witness outside the database
//! ([`ChainVerifier::with_witness`], the `witness` module): those were copied when they
//! were signed, so they still hold the original heads after someone with database rights
//! rewrote events, `chain_heads` and the `checkpoints` rows, and let the service sign the
//! rewritten head again.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::canonical::{chain_hash, checkpoint_message};
use crate::signing::TrustedKeys;

/// A signed checkpoint as stored or exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub tenant: String,
    pub sequence: u64,
    pub head_hash: String,
    pub signed_at: DateTime<Utc>,
    pub key_id: String,
    pub signature: String,
}

impl Checkpoint {
    pub fn message(&self) -> Vec<u8> {
        checkpoint_message(
            &self.tenant,
            self.sequence,
            &self.head_hash,
            &self.signed_at,
            &self.key_id,
        )
    }
}

/// One event as the verifier sees it.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    pub sequence: u64,
    pub event_id: &'a str,
    /// [`chain_hash`] of this event's own stored `prev_hash` and its canonical bytes,
    /// computed by the caller. It needs nothing from other events, so callers can compute
    /// it for many events in parallel; the verifier checks the links in order.
    pub content_hash: &'a str,
    pub prev_hash: &'a str,
    pub hash: &'a str,
}

impl<'a> Link<'a> {
    /// The [`Link::content_hash`] of an event's canonical bytes after its stored `prev_hash`.
    pub fn content_hash_of(prev_hash: &str, canonical: &[u8]) -> String {
        chain_hash(prev_hash, canonical)
    }
}

/// The first place the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub sequence: u64,
    pub event_id: String,
    pub reason: String,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub events_checked: u64,
    pub checkpoints_checked: u64,
    /// Checkpoints from a witness that were compared with the chain.
    pub witnessed_checked: u64,
    pub first_broken: Option<Broken>,
    /// The hash of the last event that verified.
    pub head_hash: String,
}

/// A `prev_hash` that links to no preceding event: classified once the rest of the chain
/// has been seen (a reordered event's predecessor is stored later).
#[derive(Debug)]
struct UnlinkedPrev {
    wanted: String,
    found_later: Option<(u64, String)>,
}

/// Feeds events in stored order; stops checking at the first break.
#[derive(Debug)]
pub struct ChainVerifier<'k> {
    keys: &'k TrustedKeys,
    next_sequence: u64,
    /// `None`: anchor on the first event's `prev_hash` (a range export).
    prev_hash: Option<String>,
    checkpoints: BTreeMap<u64, Checkpoint>,
    /// From a witness; several may share a sequence (copies from several replicas).
    witnessed: BTreeMap<u64, Vec<Checkpoint>>,
    /// Whether witnessed checkpoints beyond the last event mean events are missing (the
    /// whole chain is checked), or only that this range ends before them (an export).
    witness_bounds_tail: bool,
    events_checked: u64,
    checkpoints_checked: u64,
    witnessed_checked: u64,
    broken: Option<Broken>,
    unlinked: Option<UnlinkedPrev>,
    last_event_id: String,
}

impl<'k> ChainVerifier<'k> {
    /// Starts at `first_sequence` after `prev_hash`; `checkpoints` are those of the range.
    pub fn new(
        keys: &'k TrustedKeys,
        first_sequence: u64,
        prev_hash: Option<String>,
        checkpoints: impl IntoIterator<Item = Checkpoint>,
    ) -> Self {
        ChainVerifier {
            keys,
            next_sequence: first_sequence.max(1),
            prev_hash,
            checkpoints: checkpoints.into_iter().map(|c| (c.sequence, c)).collect(),
            witnessed: BTreeMap::new(),
            witness_bounds_tail: false,
            events_checked: 0,
            checkpoints_checked: 0,
            witnessed_checked: 0,
            broken: None,
            unlinked: None,
            last_event_id: String::new(),
        }
    }

    /// Also checks `witnessed` checkpoints (those of this tenant; earlier sequences than
    /// the range's first are ignored): each must be validly signed and over the hash of the
    /// event at its sequence. With `bounds_tail`, one beyond the last event means the events
    /// up to it are missing.
    #[must_use]
    pub fn with_witness(
        mut self,
        witnessed: impl IntoIterator<Item = Checkpoint>,
        bounds_tail: bool,
    ) -> Self {
        for checkpoint in witnessed {
            if checkpoint.sequence >= self.next_sequence {
                self.witnessed
                    .entry(checkpoint.sequence)
                    .or_default()
                    .push(checkpoint);
            }
        }
        self.witness_bounds_tail = bounds_tail;
        self
    }

    /// Resumes after the event `event_id`, which verified: `first_sequence` and `prev_hash`
    /// of [`ChainVerifier::new`] are the sequence after it and its hash. Names it when the
    /// events after it are missing.
    #[must_use]
    pub fn after_event(mut self, event_id: &str) -> Self {
        event_id.clone_into(&mut self.last_event_id);
        self
    }

    /// The last sequence checked while no event is broken; `first_sequence - 1` before any.
    pub fn intact_through(&self) -> Option<u64> {
        self.broken.is_none().then(|| self.next_sequence - 1)
    }

    /// The id of the last event that verified (empty before any).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// True while more events can change the verdict.
    pub fn wants_more(&self) -> bool {
        match (&self.broken, &self.unlinked) {
            (None, _) => true,
            (Some(_), Some(unlinked)) => unlinked.found_later.is_none(),
            (Some(_), None) => false,
        }
    }

    /// The checkpoint's signature verifies with a trusted key; `what` names it in the
    /// problem ("checkpoint", "witnessed checkpoint").
    fn verify_signature(&self, checkpoint: &Checkpoint, what: &str) -> Result<(), String> {
        self.keys
            .verify(
                &checkpoint.key_id,
                &checkpoint.message(),
                &checkpoint.signature,
            )
            .map_err(|problem| {
                format!(
                    "bad {what} signature at sequence {}: {problem}",
                    checkpoint.sequence
                )
            })
    }

    fn fail(&mut self, link: &Link<'_>, reason: String) {
        self.broken = Some(Broken {
            sequence: link.sequence,
            event_id: link.event_id.to_owned(),
            reason,
        });
    }

    pub fn push(&mut self, link: Link<'_>) {
        if self.broken.is_some() {
            if let Some(unlinked) = &mut self.unlinked
                && unlinked.found_later.is_none()
                && link.hash == unlinked.wanted
            {
                unlinked.found_later = Some((link.sequence, link.event_id.to_owned()));
            }
            return;
        }
        if link.sequence != self.next_sequence {
            let reason = if link.sequence > self.next_sequence {
                format!(
                    "missing event: sequence {} is absent before this event (deleted)",
                    self.next_sequence
                )
            } else {
                format!(
                    "reordered: sequence {} appears after sequence {}",
                    link.sequence,
                    self.next_sequence - 1
                )
            };
            return self.fail(&link, reason);
        }
        let prev = self.prev_hash.as_deref().unwrap_or(link.prev_hash);
        if link.prev_hash != prev {
            self.unlinked = Some(UnlinkedPrev {
                wanted: link.prev_hash.to_owned(),
                found_later: None,
            });
            return self.fail(&link, String::new());
        }
        // `prev` equals the link's own prev_hash here, which the content hash covers.
        if link.content_hash != link.hash {
            return self.fail(
                &link,
                "edited: the event's contents do not match its stored hash".into(),
            );
        }
        if let Some(checkpoint) = self.checkpoints.remove(&link.sequence) {
            self.checkpoints_checked += 1;
            if let Err(problem) = self.verify_signature(&checkpoint, "checkpoint") {
                return self.fail(&link, problem);
            }
            if checkpoint.head_hash != link.hash {
                return self.fail(
                    &link,
                    format!(
                        "checkpoint at sequence {} signed another head hash (history rewritten)",
                        link.sequence
                    ),
                );
            }
        }
        for checkpoint in self.witnessed.remove(&link.sequence).unwrap_or_default() {
            self.witnessed_checked += 1;
            if let Err(problem) = self.verify_signature(&checkpoint, "witnessed checkpoint") {
                return self.fail(&link, problem);
            }
            if checkpoint.head_hash != link.hash {
                return self.fail(
                    &link,
                    format!(
                        "witnessed checkpoint at sequence {} (signed at {}) signed another head \
                         hash {}: history rewritten after it was witnessed",
                        link.sequence,
                        crate::canonical::format_time(&checkpoint.signed_at),
                        checkpoint.head_hash
                    ),
                );
            }
        }
        self.events_checked += 1;
        // Into the strings already held: one event after another, no allocation.
        match &mut self.prev_hash {
            Some(prev_hash) => link.hash.clone_into(prev_hash),
            None => self.prev_hash = Some(link.hash.to_owned()),
        }
        self.next_sequence += 1;
        link.event_id.clone_into(&mut self.last_event_id);
    }

    /// The verdict once every event was pushed. `expected_last` is the last sequence the
    /// range should reach (the chain head, or the requested end), when known.
    pub fn finish(mut self, expected_last: Option<u64>) -> Verdict {
        if let Some(broken) = &mut self.broken
            && let Some(unlinked) = self.unlinked.take()
        {
            broken.reason = match unlinked.found_later {
                Some((sequence, event_id)) => format!(
                    "reordered: its prev_hash is the hash of event {event_id}, stored later at sequence {sequence}"
                ),
                None => "prev_hash does not match the previous event's hash (an earlier event was removed or rewritten)".into(),
            };
        }
        if self.broken.is_none() {
            let last = self.next_sequence - 1;
            let beyond = self.checkpoints.range(last + 1..).next().map(|(s, _)| *s);
            let witnessed_beyond = self
                .witnessed
                .range(last + 1..)
                .next_back()
                .map(|(s, _)| *s)
                .filter(|_| self.witness_bounds_tail);
            let missing_to = match (beyond, witnessed_beyond, expected_last) {
                (Some(signed), _, _) => Some((signed, "")),
                (None, Some(witnessed), _) => Some((
                    witnessed,
                    " (the witness holds a checkpoint at the last of them)",
                )),
                (None, None, Some(expected)) if expected > last => Some((expected, "")),
                _ => None,
            };
            if let Some((end, witness_note)) = missing_to {
                self.broken = Some(Broken {
                    sequence: last + 1,
                    event_id: self.last_event_id.clone(),
                    reason: format!(
                        "missing events: sequences {} to {end} are absent after the last stored event (deleted){witness_note}",
                        last + 1
                    ),
                });
            }
        }
        Verdict {
            events_checked: self.events_checked,
            checkpoints_checked: self.checkpoints_checked,
            witnessed_checked: self.witnessed_checked,
            first_broken: self.broken,
            head_hash: self.prev_hash.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::GENESIS_HASH;
    use crate::signing::Signer;

    struct Chain {
        ids: Vec<String>,
        bodies: Vec<Vec<u8>>,
        prev: Vec<String>,
        hashes: Vec<String>,
    }

    fn chain(n: u64) -> Chain {
        let mut c = Chain {
            ids: vec![],
            bodies: vec![],
            prev: vec![],
            hashes: vec![],
        };
        let mut prev = GENESIS_HASH.to_owned();
        for i in 1..=n {
            let body = format!("{{\"n\":{i}}}").into_bytes();
            let hash = chain_hash(&prev, &body);
            c.ids.push(format!("e{i}"));
            c.bodies.push(body);
            c.prev.push(prev.clone());
            c.hashes.push(hash.clone());
            prev = hash;
        }
        c
    }

    fn run(c: &Chain, order: &[usize], keys: &TrustedKeys, cps: Vec<Checkpoint>) -> Verdict {
        let mut v = ChainVerifier::new(keys, 1, Some(GENESIS_HASH.into()), cps);
        for (position, &i) in order.iter().enumerate() {
            v.push(Link {
                sequence: position as u64 + 1,
                event_id: &c.ids[i],
                content_hash: &Link::content_hash_of(&c.prev[i], &c.bodies[i]),
                prev_hash: &c.prev[i],
                hash: &c.hashes[i],
            });
        }
        v.finish(None)
    }

    #[test]
    fn an_intact_chain_verifies_and_a_swap_is_named_as_reordering() {
        let c = chain(5);
        let keys = TrustedKeys::default();
        let ok = run(&c, &[0, 1, 2, 3, 4], &keys, vec![]);
        assert_eq!(ok.first_broken, None);
        assert_eq!(ok.events_checked, 5);
        assert_eq!(ok.head_hash, c.hashes[4]);

        let swapped = run(&c, &[0, 2, 1, 3, 4], &keys, vec![]);
        let broken = swapped.first_broken.unwrap();
        assert_eq!(broken.event_id, "e3");
        assert!(broken.reason.starts_with("reordered"), "{}", broken.reason);
    }

    #[test]
    fn a_checkpoint_signed_by_an_unknown_key_or_over_another_head_breaks() {
        let c = chain(3);
        let signer = Signer::from_seed(&[1; 32]);
        let mut keys = TrustedKeys::default();
        keys.add(signer.public_key());
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut checkpoint = Checkpoint {
            tenant: "t".into(),
            sequence: 2,
            head_hash: c.hashes[1].clone(),
            signed_at: at,
            key_id: signer.key_id().into(),
            signature: String::new(),
        };
        checkpoint.signature = signer.sign(&checkpoint.message());
        assert_eq!(
            run(&c, &[0, 1, 2], &keys, vec![checkpoint.clone()]).first_broken,
            None
        );

        let mut forged = checkpoint.clone();
        forged.head_hash = c.hashes[0].clone();
        let broken = run(&c, &[0, 1, 2], &keys, vec![forged])
            .first_broken
            .unwrap();
        assert!(
            broken.reason.contains("bad checkpoint signature"),
            "{broken:?}"
        );

        let beyond = Checkpoint {
            sequence: 9,
            ..checkpoint
        };
        let broken = run(&c, &[0, 1, 2], &TrustedKeys::default(), vec![beyond])
            .first_broken
            .unwrap();
        assert!(broken.reason.starts_with("missing events"), "{broken:?}");
    }

    #[test]
    fn a_witnessed_checkpoint_over_the_old_head_names_a_rewrite_the_database_hides() {
        // The database's own checkpoints were replaced by one over the rewritten chain
        // (here: none at all); the witness kept the original head at sequence 2.
        let original = chain(3);
        let signer = Signer::from_seed(&[3; 32]);
        let mut keys = TrustedKeys::default();
        keys.add(signer.public_key());
        let mut witnessed = Checkpoint {
            tenant: "t".into(),
            sequence: 2,
            head_hash: original.hashes[1].clone(),
            signed_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            key_id: signer.key_id().into(),
            signature: String::new(),
        };
        witnessed.signature = signer.sign(&witnessed.message());

        let verify = |c: &Chain, witness: Vec<Checkpoint>, bounds_tail: bool, n: usize| {
            let mut v = ChainVerifier::new(&keys, 1, Some(GENESIS_HASH.into()), vec![])
                .with_witness(witness, bounds_tail);
            for i in 0..n {
                v.push(Link {
                    sequence: i as u64 + 1,
                    event_id: &c.ids[i],
                    content_hash: &Link::content_hash_of(&c.prev[i], &c.bodies[i]),
                    prev_hash: &c.prev[i],
                    hash: &c.hashes[i],
                });
            }
            v.finish(None)
        };
        let intact = verify(
            &original,
            vec![witnessed.clone(), witnessed.clone()],
            true,
            3,
        );
        assert_eq!(intact.first_broken, None);
        assert_eq!(intact.witnessed_checked, 2);

        // A consistent chain with other contents from sequence 2 on.
        let mut rewritten = chain(3);
        rewritten.bodies[1] = b"{\"n\":20}".to_vec();
        for i in 1..3 {
            rewritten.prev[i] = rewritten.hashes[i - 1].clone();
            rewritten.hashes[i] = chain_hash(&rewritten.prev[i], &rewritten.bodies[i]);
        }
        assert_eq!(verify(&rewritten, vec![], true, 3).first_broken, None);
        let broken = verify(&rewritten, vec![witnessed.clone()], true, 3)
            .first_broken
            .unwrap();
        assert_eq!((broken.sequence, broken.event_id.as_str()), (2, "e2"));
        assert!(
            broken
                .reason
                .starts_with("witnessed checkpoint at sequence 2 (signed at "),
            "{broken:?}"
        );

        // The tail cut off before the witnessed head: missing, when the whole chain is
        // checked; an export that ends earlier is only shorter.
        let cut = verify(&original, vec![witnessed.clone()], true, 1)
            .first_broken
            .unwrap();
        assert!(
            cut.reason.starts_with("missing events: sequences 2 to 2"),
            "{cut:?}"
        );
        assert_eq!(
            verify(&original, vec![witnessed], false, 1).first_broken,
            None
        );
    }

    #[test]
    fn a_validly_signed_checkpoint_over_another_head_names_the_rewrite() {
        // What a rewritten history looks like to the verifier: the chain links are
        // consistent again, the signature is genuine, but it was made over the old head.
        let c = chain(3);
        let signer = Signer::from_seed(&[2; 32]);
        let mut keys = TrustedKeys::default();
        keys.add(signer.public_key());
        let mut checkpoint = Checkpoint {
            tenant: "t".into(),
            sequence: 2,
            head_hash: c.hashes[0].clone(),
            signed_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            key_id: signer.key_id().into(),
            signature: String::new(),
        };
        checkpoint.signature = signer.sign(&checkpoint.message());
        assert_eq!(
            keys.verify(
                &checkpoint.key_id,
                &checkpoint.message(),
                &checkpoint.signature
            ),
            Ok(()),
            "the signature itself is valid"
        );

        let verdict = run(&c, &[0, 1, 2], &keys, vec![checkpoint]);
        let broken = verdict.first_broken.unwrap();
        assert_eq!((broken.sequence, broken.event_id.as_str()), (2, "e2"));
        assert_eq!(
            broken.reason,
            "checkpoint at sequence 2 signed another head hash (history rewritten)"
        );
        assert_eq!(verdict.checkpoints_checked, 1);
    }
}
