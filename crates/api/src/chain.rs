//! The hash chains a client checks without trusting the host: the manifest history, the audit
//! log, and the summary of the Coordinator's authenticated state that its quotes bind.
//!
//! Both chains hash a fixed binary encoding (a domain label, then every field, strings
//! length-prefixed, absent options tagged), never JSON text, so a client that parses the JSON and
//! hashes again gets the same bytes whatever the serializer did with whitespace or key order.
//!
//! - **Manifest history**: entry `n` names the hash of entry `n - 1` (zeros for the first), the
//!   manifest hash it installed, who installed it and when. Its head (version, hash of the last
//!   entry) is in the Coordinator's sealed state head and in every state-bound quote, so a client
//!   that remembers the head it last verified can tell whether a Coordinator's history *extends*
//!   it ([`history_extends`]), as Certificate Transparency clients check consistency between two
//!   tree heads.
//! - **Audit log**: record `n` carries `prev`, the chain hash of record `n - 1`. Dropping,
//!   reordering or editing a record breaks every later link.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AuditRecord;

/// A SHA-256 value, hex on the wire.
pub type Hash = [u8; 32];

/// The `prev` of the first entry of a chain.
pub const CHAIN_START: Hash = [0u8; 32];

/// The `manifest_hash` of a history entry that records the manifest being cleared (only the
/// recovery-key holders' re-authentication of a tampered state, whose manifest was deleted,
/// does that): the next manifest can then be set as a first one.
pub const NO_MANIFEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Largest number of history entries or audit records one answer carries.
pub const MAX_PAGE: usize = 1000;

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

fn put_opt(h: &mut Sha256, s: Option<&str>) {
    match s {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            put_str(h, s);
        }
    }
}

/// One version of the manifest, as the history records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    /// 1 for the first manifest, then one more per accepted update.
    pub version: u64,
    /// Canonical SHA-256 of the manifest this version installed, hex.
    pub manifest_hash: String,
    /// Hash of the previous entry ([`HistoryEntry::hash`]); zeros for version 1.
    #[serde(with = "hex::serde")]
    pub prev: Hash,
    /// The manifest user who installed it; absent for a first manifest set without an owner
    /// pin (anyone could set it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Unix seconds, the Coordinator's clock.
    pub time: i64,
    /// What changed against the previous version (empty for the first).
    #[serde(default)]
    pub changes: Vec<String>,
}

impl HistoryEntry {
    /// The entry's hash: what the next entry's `prev` and the history head are.
    pub fn hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update(b"coffer-manifest-history-v1\0");
        h.update(self.version.to_be_bytes());
        put_str(&mut h, &self.manifest_hash);
        h.update(self.prev);
        put_opt(&mut h, self.author.as_deref());
        h.update(self.time.to_be_bytes());
        h.update((self.changes.len() as u64).to_be_bytes());
        for c in &self.changes {
            put_str(&mut h, c);
        }
        h.finalize().into()
    }
}

/// `GET /api/v1/manifest/history`: the whole chain, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// Protocol version of the Coordinator.
    pub protocol_version: u32,
    /// The entries, version 1 first.
    pub entries: Vec<HistoryEntry>,
}

/// Why a history (or an audit log) does not check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// An entry is not where its number says (a gap, a duplicate or a reordering).
    OutOfOrder {
        /// The number expected here.
        expected: u64,
        /// The number found.
        found: u64,
    },
    /// An entry does not name the hash of the one before it.
    BrokenLink {
        /// The entry whose `prev` is wrong.
        at: u64,
    },
    /// The chain does not end in the head it was checked against.
    HeadMismatch {
        /// The head's number.
        version: u64,
        /// The head's hash.
        expected: Hash,
        /// What the chain ends in (zeros when it is shorter).
        found: Hash,
    },
    /// A field is malformed (e.g. a manifest hash that is not 64 hex digits).
    Malformed(String),
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainError::OutOfOrder { expected, found } => {
                write!(f, "entry {found} is where entry {expected} belongs (missing or reordered entries)")
            }
            ChainError::BrokenLink { at } => write!(
                f,
                "entry {at} does not name the hash of entry {} (an entry before it was removed or altered)",
                at.saturating_sub(1)
            ),
            ChainError::HeadMismatch {
                version,
                expected,
                found,
            } => write!(
                f,
                "the chain ends in {} but the head says version {version} is {}",
                hex::encode(found),
                hex::encode(expected)
            ),
            ChainError::Malformed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ChainError {}

/// Checks a whole history (version 1 first): numbering, links and hash fields. Returns its
/// head: (last version, hash of the last entry), `(0, zeros)` when empty.
pub fn verify_history(entries: &[HistoryEntry]) -> Result<(u64, Hash), ChainError> {
    let mut prev = CHAIN_START;
    for (i, e) in entries.iter().enumerate() {
        let expected = i as u64 + 1;
        if e.version != expected {
            return Err(ChainError::OutOfOrder {
                expected,
                found: e.version,
            });
        }
        if e.prev != prev {
            return Err(ChainError::BrokenLink { at: e.version });
        }
        if e.manifest_hash.len() != 64
            || !e
                .manifest_hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ChainError::Malformed(format!(
                "entry {}: manifest_hash is not 64 lower-case hex digits",
                e.version
            )));
        }
        prev = e.hash();
    }
    Ok((entries.len() as u64, prev))
}

/// Whether a checked history (see [`verify_history`]) extends the head `(version, hash)` a
/// client verified earlier: the entry with that version is still there, with that hash.
pub fn history_extends(entries: &[HistoryEntry], version: u64, head: &Hash) -> bool {
    if version == 0 {
        return *head == CHAIN_START;
    }
    usize::try_from(version - 1)
        .ok()
        .and_then(|i| entries.get(i))
        .is_some_and(|e| e.version == version && e.hash() == *head)
}

impl AuditRecord {
    /// The record's chain hash: what the next record's `prev` and the audit head are. Covers
    /// every field, `seq` and `prev` included.
    pub fn chain_hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update(b"coffer-audit-v1\0");
        h.update(self.seq.to_be_bytes());
        h.update(self.prev);
        h.update(self.time.to_be_bytes());
        put_str(&mut h, &self.event);
        put_str(&mut h, &self.outcome);
        put_opt(&mut h, self.workload.as_deref());
        put_opt(&mut h, self.instance.as_deref());
        put_opt(&mut h, self.user.as_deref());
        put_opt(&mut h, self.detail.as_deref());
        h.update((self.chain_breaks.len() as u64).to_be_bytes());
        for b in &self.chain_breaks {
            h.update(b.to_be_bytes());
        }
        h.finalize().into()
    }
}

/// What an audit log check found (see [`verify_audit`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditCheck {
    /// Records checked.
    pub records: u64,
    /// The chain hash of the last record.
    pub head: Hash,
    /// Breaks in the chain that a later `state-reauthenticated` record acknowledges (the
    /// recovery-key holders re-authenticated a tampered state there). Each is the sequence
    /// number of the first record after the break.
    pub acknowledged_breaks: Vec<u64>,
}

/// Checks an audit log from record 1: numbering and links. A break is accepted only where a
/// later record of event `state-reauthenticated` lists it in `chain_breaks`; any other break
/// is an error. The caller compares [`AuditCheck::head`] with the head the Coordinator's
/// state summary reports.
pub fn verify_audit(records: &[AuditRecord]) -> Result<AuditCheck, ChainError> {
    let mut v = AuditVerifier::default();
    for r in records {
        v.push(r)?;
    }
    v.finish()
}

/// [`verify_audit`] one record at a time (a log may be too large to hold at once). Breaks are
/// kept open until a later re-authentication record acknowledges them or [`finish`] refuses
/// them.
///
/// [`finish`]: AuditVerifier::finish
#[derive(Debug, Default)]
pub struct AuditVerifier {
    prev: Hash,
    next_seq: u64,
    records: u64,
    open_breaks: std::collections::BTreeMap<u64, ChainError>,
    acknowledged: Vec<u64>,
}

impl AuditVerifier {
    /// Adds the next record (in sequence order). Refuses at once only a record that goes
    /// backwards; gaps and broken links wait for an acknowledgement.
    pub fn push(&mut self, r: &AuditRecord) -> Result<(), ChainError> {
        let expected = self.next_seq.max(1);
        if r.seq < expected {
            return Err(ChainError::OutOfOrder {
                expected,
                found: r.seq,
            });
        }
        if r.seq > expected {
            self.open_breaks.insert(
                r.seq,
                ChainError::OutOfOrder {
                    expected,
                    found: r.seq,
                },
            );
        } else if r.prev != self.prev {
            self.open_breaks
                .insert(r.seq, ChainError::BrokenLink { at: r.seq });
        }
        if r.event == REAUTHENTICATED_EVENT {
            for b in &r.chain_breaks {
                if *b <= r.seq && self.open_breaks.remove(b).is_some() {
                    self.acknowledged.push(*b);
                }
            }
        }
        self.prev = r.chain_hash();
        self.next_seq = r.seq + 1;
        self.records += 1;
        Ok(())
    }

    /// The chain hash of the last record pushed (zeros before any).
    pub fn head(&self) -> Hash {
        self.prev
    }

    /// The sequence number of the last record pushed (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// The result, or the first break nothing acknowledged.
    pub fn finish(self) -> Result<AuditCheck, ChainError> {
        if let Some((_, e)) = self.open_breaks.into_iter().next() {
            return Err(e);
        }
        Ok(AuditCheck {
            records: self.records,
            head: self.prev,
            acknowledged_breaks: self.acknowledged,
        })
    }
}

/// The audit event the recovery-key holders' re-authentication of a tampered state writes.
pub const REAUTHENTICATED_EVENT: &str = "state-reauthenticated";

/// The heads of the Coordinator's authenticated state: what its sealed state head holds, as a
/// client sees it. A state-bound quote ([`coordinator_report_data_bound`]) signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSummary {
    /// Incremented by every committed change of the state.
    pub generation: u64,
    /// Version of the manifest history's last entry (0: no manifest was ever set).
    pub manifest_version: u64,
    /// Hash of the manifest history's last entry (zeros when none).
    #[serde(with = "hex::serde")]
    pub manifest_head: Hash,
    /// Sequence number of the last audit record.
    pub audit_seq: u64,
    /// Chain hash of the last audit record.
    #[serde(with = "hex::serde")]
    pub audit_head: Hash,
}

impl StateSummary {
    fn digest(&self, h: &mut Sha256) {
        h.update(self.generation.to_be_bytes());
        h.update(self.manifest_version.to_be_bytes());
        h.update(self.manifest_head);
        h.update(self.audit_seq.to_be_bytes());
        h.update(self.audit_head);
    }
}

/// The report data of a state-bound Coordinator quote: SHA-256 of the root CA's DER
/// SubjectPublicKeyInfo in bytes 0..32, and in bytes 32..64 SHA-256 over a domain label, the
/// client's nonce and `state`. The quote then says, in the TEE's own words, which state (and so
/// which manifest history and audit head) this Coordinator held when it answered this nonce.
pub fn coordinator_report_data_bound(
    root_spki_der: &[u8],
    nonce: &[u8],
    state: &StateSummary,
) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&Sha256::digest(root_spki_der));
    let mut h = Sha256::new();
    h.update(b"coffer-quote-state-v1\0");
    h.update((nonce.len() as u64).to_be_bytes());
    h.update(nonce);
    state.digest(&mut h);
    out[32..].copy_from_slice(&h.finalize());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u64, prev: Hash, author: Option<&str>) -> HistoryEntry {
        HistoryEntry {
            version,
            manifest_hash: format!("{:064x}", version),
            prev,
            author: author.map(str::to_string),
            time: 1_700_000_000 + version as i64,
            changes: vec![format!("change {version}")],
        }
    }

    fn history(n: u64) -> Vec<HistoryEntry> {
        let mut out: Vec<HistoryEntry> = Vec::new();
        for v in 1..=n {
            let prev = out.last().map_or(CHAIN_START, HistoryEntry::hash);
            out.push(entry(v, prev, (v > 1).then_some("admin")));
        }
        out
    }

    #[test]
    fn history_checks_and_extends() {
        let h = history(4);
        let (v, head) = verify_history(&h).unwrap();
        assert_eq!(v, 4);
        assert_eq!(head, h[3].hash());
        let (v2, head2) = verify_history(&h[..2]).unwrap();
        assert!(history_extends(&h, v2, &head2));
        assert!(history_extends(&h, 0, &CHAIN_START));
        // A head the chain does not contain (a fork), or one past its end (a rollback).
        let mut fork = h.clone();
        fork[2].author = Some("mallory".into());
        let (_, fork_head) = verify_history(&fork[..3]).unwrap();
        assert!(!history_extends(&h, 3, &fork_head));
        assert!(!history_extends(&h[..3], 4, &head));
    }

    #[test]
    fn history_tampering_is_named() {
        let h = history(3);
        let mut missing = h.clone();
        missing.remove(1);
        assert_eq!(
            verify_history(&missing),
            Err(ChainError::OutOfOrder {
                expected: 2,
                found: 3
            })
        );
        let mut edited = h.clone();
        edited[0].changes.push("sneaky".into());
        assert_eq!(
            verify_history(&edited),
            Err(ChainError::BrokenLink { at: 2 })
        );
        let mut bad_hash = h;
        bad_hash[0].manifest_hash = "XYZ".into();
        assert!(matches!(
            verify_history(&bad_hash),
            Err(ChainError::Malformed(_))
        ));
    }

    fn audit(n: u64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let prev = out.last().map_or(CHAIN_START, AuditRecord::chain_hash);
            out.push(AuditRecord {
                seq,
                prev,
                time: seq as i64,
                event: "activation".into(),
                outcome: "accepted".into(),
                workload: Some("web".into()),
                instance: None,
                user: None,
                detail: Some(format!("record {seq}")),
                chain_breaks: Vec::new(),
            });
        }
        out
    }

    #[test]
    fn audit_chain_detects_drops_and_edits() {
        let log = audit(5);
        let ok = verify_audit(&log).unwrap();
        assert_eq!(ok.records, 5);
        assert_eq!(ok.head, log[4].chain_hash());
        let mut dropped = log.clone();
        dropped.remove(2);
        assert_eq!(
            verify_audit(&dropped),
            Err(ChainError::OutOfOrder {
                expected: 3,
                found: 4
            })
        );
        let mut edited = log.clone();
        edited[1].outcome = "refused".into();
        assert_eq!(verify_audit(&edited), Err(ChainError::BrokenLink { at: 3 }));
        // Dropping the tail keeps the chain valid: only the head comparison catches it.
        assert_ne!(verify_audit(&log[..3]).unwrap().head, ok.head);
    }

    #[test]
    fn acknowledged_breaks_are_reported_not_refused() {
        let mut log = audit(5);
        log.remove(2); // record 3 is gone
        let prev = log.last().unwrap().chain_hash();
        log.push(AuditRecord {
            seq: 6,
            prev,
            time: 6,
            event: REAUTHENTICATED_EVENT.into(),
            outcome: "accepted".into(),
            workload: None,
            instance: None,
            user: None,
            detail: Some("re-authenticated".into()),
            chain_breaks: vec![4],
        });
        let check = verify_audit(&log).unwrap();
        assert_eq!(check.acknowledged_breaks, vec![4]);
        // The same break without the acknowledgement is refused.
        log.last_mut().unwrap().chain_breaks.clear();
        assert!(verify_audit(&log).is_err());
    }

    #[test]
    fn bound_report_data_covers_every_field() {
        let s = StateSummary {
            generation: 7,
            manifest_version: 2,
            manifest_head: [1; 32],
            audit_seq: 40,
            audit_head: [2; 32],
        };
        let base = coordinator_report_data_bound(b"spki", b"nonce", &s);
        assert_eq!(base[..32], Sha256::digest(b"spki")[..]);
        let mut variants = Vec::new();
        for i in 0..5 {
            let mut t = s.clone();
            match i {
                0 => t.generation += 1,
                1 => t.manifest_version += 1,
                2 => t.manifest_head[0] ^= 1,
                3 => t.audit_seq += 1,
                _ => t.audit_head[31] ^= 1,
            }
            variants.push(coordinator_report_data_bound(b"spki", b"nonce", &t));
        }
        variants.push(coordinator_report_data_bound(b"spki", b"nonce2", &s));
        for v in variants {
            assert_ne!(v[32..], base[32..]);
        }
    }
}
