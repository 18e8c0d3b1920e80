//! The authenticated state head: what binds every value of the store together, so that the
//! host that holds the store (a disk, etcd) cannot delete, add, swap or roll back one value
//! without the Coordinator noticing. Pure: no I/O; the backends feed it bytes.
//!
//! # What the head holds
//! A fixed 136-byte record, sealed with AES-256-GCM under the state key (AAD
//! `coffer-state-head-v1`) and stored as the `meta` value `head`:
//! - `generation`: incremented by every commit. A replica never accepts a head older than one
//!   it has verified.
//! - `values` and `digest`: the number of `kv` values and their *set digest*: the XOR of one
//!   keyed MAC per value, `HMAC-SHA256(leaf key, len(name) ‖ name ‖ sealed bytes)`, with the
//!   leaf key derived from the state key by HKDF. This is MSet-XOR-Hash (Clarke et al.,
//!   "Incremental Multiset Hash Functions and Their Application to Memory Integrity Checking",
//!   2003): with a secret key it is collision resistant for sets, and a commit updates it in
//!   O(changed values) instead of rehashing the store. The host sees only ciphertexts, never a
//!   leaf MAC or the digest, so it cannot search for another set with the same digest.
//! - the audit chain's head (last sequence number, its chain hash) and the manifest history's
//!   head (last version, its entry hash), see [`coffer_api::chain`].
//!
//! # What is checked, and when
//! - On every open (`verify`): the head opens under the state key, the set digest and count
//!   of the stored values equal the head's, every audit record from 1 to the head's sequence
//!   number is there, decrypts, links to its predecessor, and the last one hashes to the head's
//!   audit head; the stored manifest is the one the last history entry names.
//! - While running on etcd (`Auth`): every watch answer (all changes of one revision) is
//!   folded into the digest and checked against the head it carries; a change of values
//!   without a matching head, a head that goes backwards, or a deleted or rewritten audit
//!   record is tampering.
//! - On every commit (`Auth::prepare`): the next head is computed from the last *verified*
//!   head, never from what the store holds now, so a commit cannot launder an edit.

use coffer_api::chain::{Hash, CHAIN_START};
use coffer_api::{AuditRecord, AuditVerifier, HistoryEntry, StateSummary};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::value::{
    aad, audit_aad, history_name, open_value, seal_value, Sealed, StateKey, WriteOp, HISTORY_PREFIX,
};
use crate::error::Error;

/// AAD of the sealed state head.
pub(crate) const HEAD_AAD: &[u8] = b"coffer-state-head-v1";

const HEAD_MAGIC: &[u8; 8] = b"CFRHEAD1";

/// Length of an encoded head.
const HEAD_LEN: usize = 8 + 8 + 8 + 32 + 8 + 32 + 8 + 32;

/// The `kv` name of the manifest in force.
pub(crate) const K_MANIFEST: &str = "manifest";

/// The state head (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// Commits so far.
    pub generation: u64,
    /// Number of `kv` values.
    pub values: u64,
    /// Set digest of the `kv` values.
    pub digest: Hash,
    /// Sequence number of the last audit record.
    pub audit_seq: u64,
    /// Chain hash of the last audit record.
    pub audit_head: Hash,
    /// Version of the last manifest history entry (0: no manifest was ever set).
    pub history_version: u64,
    /// Hash of the last manifest history entry.
    pub history_head: Hash,
}

impl Head {
    fn encode(&self) -> [u8; HEAD_LEN] {
        let mut out = [0u8; HEAD_LEN];
        let mut at = 0;
        let mut put = |b: &[u8]| {
            out[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        };
        put(HEAD_MAGIC);
        put(&self.generation.to_be_bytes());
        put(&self.values.to_be_bytes());
        put(&self.digest);
        put(&self.audit_seq.to_be_bytes());
        put(&self.audit_head);
        put(&self.history_version.to_be_bytes());
        put(&self.history_head);
        out
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != HEAD_LEN || b.get(..8)? != HEAD_MAGIC {
            return None;
        }
        let u64_at = |i: usize| -> Option<u64> {
            Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?))
        };
        let hash_at = |i: usize| -> Option<Hash> { b.get(i..i + 32)?.try_into().ok() };
        Some(Self {
            generation: u64_at(8)?,
            values: u64_at(16)?,
            digest: hash_at(24)?,
            audit_seq: u64_at(56)?,
            audit_head: hash_at(64)?,
            history_version: u64_at(96)?,
            history_head: hash_at(104)?,
        })
    }

    /// The head sealed under the state key, as stored.
    pub(crate) fn seal(&self, keys: &Keys) -> Vec<u8> {
        seal_value(keys.state.as_bytes(), HEAD_AAD, &self.encode())
    }

    /// Opens a stored head; `None` if it fails authentication or is malformed.
    pub(crate) fn open(keys: &Keys, sealed: &[u8]) -> Option<Self> {
        let plain = open_value(keys.state.as_bytes(), HEAD_AAD, sealed)?;
        Self::decode(&plain)
    }

    /// What clients see of it (status, state-bound quotes).
    pub fn summary(&self) -> StateSummary {
        StateSummary {
            generation: self.generation,
            manifest_version: self.history_version,
            manifest_head: self.history_head,
            audit_seq: self.audit_seq,
            audit_head: self.audit_head,
        }
    }

    fn set(&self) -> SetDigest {
        SetDigest {
            count: self.values,
            xor: self.digest,
        }
    }
}

/// The keys the state is authenticated with: the state key (values, head) and the leaf MAC
/// key derived from it.
#[derive(Clone)]
pub(crate) struct Keys {
    pub(crate) state: StateKey,
    leaf: zeroize::Zeroizing<[u8; 32]>,
}

impl Keys {
    pub(crate) fn new(state: &StateKey) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(None, state.as_bytes());
        let mut leaf = zeroize::Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit: expand cannot fail.
        let _ = hk.expand(b"coffer-state-leaf-v1", leaf.as_mut());
        Self {
            state: state.clone(),
            leaf,
        }
    }

    /// The keyed MAC of one stored value.
    pub(crate) fn leaf(&self, name: &str, sealed: &[u8]) -> Hash {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.leaf.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(&(name.len() as u64).to_be_bytes());
        m.update(name.as_bytes());
        m.update(sealed);
        m.finalize().into_bytes().into()
    }
}

/// Count and XOR of the leaf MACs of a set of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SetDigest {
    count: u64,
    xor: Hash,
}

impl SetDigest {
    fn toggle(&mut self, leaf: &Hash) {
        for (a, b) in self.xor.iter_mut().zip(leaf) {
            *a ^= b;
        }
    }

    fn add(&mut self, leaf: &Hash) {
        self.toggle(leaf);
        self.count += 1;
    }

    fn remove(&mut self, leaf: &Hash) {
        self.toggle(leaf);
        self.count = self.count.saturating_sub(1);
    }
}

/// One piece of evidence that the stored state is not the authenticated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The store has values but no state head.
    HeadMissing,
    /// The state head fails authentication (edited, or from another state).
    HeadUnreadable,
    /// A head older than one already verified: the store (or etcd) was rolled back.
    Rollback {
        /// The newest generation this Coordinator verified.
        seen: u64,
        /// The generation found.
        found: u64,
    },
    /// A different head with the generation already verified: two histories (a fork).
    Forked {
        /// The generation.
        generation: u64,
    },
    /// A value fails authentication: edited, or moved from another name.
    ValueUnreadable(String),
    /// The set of values is not the authenticated one.
    ValuesDiffer {
        /// How many values the head authenticates.
        expected: u64,
        /// How many the store holds.
        found: u64,
    },
    /// An instance record the audit log says was created is missing.
    InstanceMissing {
        /// Its `kv` name.
        name: String,
        /// The audit record of its first accepted activation.
        audit_seq: u64,
    },
    /// The manifest is missing although a manifest was set.
    ManifestMissing {
        /// The history version that set the last manifest.
        version: u64,
    },
    /// The stored manifest is not the one the manifest history ends with.
    ManifestNotHead {
        /// Hash of the stored manifest.
        stored: String,
        /// Hash the last history entry names.
        expected: String,
    },
    /// The manifest history does not end in the head's history head.
    HistoryMismatch(String),
    /// An audit record is missing.
    AuditMissing(u64),
    /// An audit record fails authentication or does not parse.
    AuditUnreadable(u64),
    /// An audit record does not link to its predecessor, or the chain does not end in the head.
    AuditBroken(String),
    /// An audit record beyond the authenticated head.
    AuditExtra(u64),
    /// An audit record was deleted or rewritten while the Coordinator ran.
    AuditRewritten(u64),
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::HeadMissing => f.write_str(
                "the state head is missing although the store holds values (deleted by the host?)",
            ),
            Finding::HeadUnreadable => f.write_str(
                "the state head fails authentication (edited, or copied from another state)",
            ),
            Finding::Rollback { seen, found } => write!(
                f,
                "the state was rolled back: its head has generation {found}, older than generation {seen} this Coordinator already verified"
            ),
            Finding::Forked { generation } => write!(
                f,
                "a second, different state head with generation {generation} (the store was forked)"
            ),
            Finding::ValueUnreadable(name) => write!(
                f,
                "value `{name}` fails authentication (edited, or moved or swapped from another name)"
            ),
            Finding::ValuesDiffer { expected, found } => {
                let what = match found.cmp(expected) {
                    std::cmp::Ordering::Less => format!(
                        "{} value(s) were deleted",
                        expected - found
                    ),
                    std::cmp::Ordering::Greater => {
                        format!("{} value(s) were added", found - expected)
                    }
                    std::cmp::Ordering::Equal => {
                        "a value was replaced (by an older version, or swapped)".to_string()
                    }
                };
                write!(
                    f,
                    "the stored values are not the authenticated ones: the head authenticates {expected}, the store holds {found}; {what}"
                )
            }
            Finding::InstanceMissing { name, audit_seq } => write!(
                f,
                "instance record `{name}` is missing (its first activation is audit record {audit_seq}): deleting it would reset the activation limit"
            ),
            Finding::ManifestMissing { version } => write!(
                f,
                "the manifest is missing although manifest version {version} was set (deleting it must not reopen `manifest set`)"
            ),
            Finding::ManifestNotHead { stored, expected } => write!(
                f,
                "the stored manifest {stored} is not {expected}, the one the manifest history ends with (an older manifest put back?)"
            ),
            Finding::HistoryMismatch(m) => write!(f, "the manifest history {m}"),
            Finding::AuditMissing(seq) => write!(f, "audit record {seq} is missing"),
            Finding::AuditUnreadable(seq) => {
                write!(f, "audit record {seq} fails authentication or does not parse")
            }
            Finding::AuditBroken(m) => write!(f, "the audit chain is broken: {m}"),
            Finding::AuditExtra(seq) => write!(
                f,
                "audit record {seq} is beyond the authenticated audit head (added by the host)"
            ),
            Finding::AuditRewritten(seq) => {
                write!(f, "audit record {seq} was deleted or rewritten in the store")
            }
        }
    }
}

/// Findings as plain strings, for status answers, logs and audit records.
pub fn describe(findings: &[Finding]) -> Vec<String> {
    findings.iter().map(ToString::to_string).collect()
}

/// What a full check needs: the stored bytes, as the backend holds them.
pub(crate) struct Stored<'a, K, A>
where
    K: Iterator<Item = (&'a str, &'a [u8])>,
    A: Iterator<Item = (u64, Vec<u8>)>,
{
    /// The sealed head, if any.
    pub head: Option<&'a [u8]>,
    /// Every `kv` value, in name order.
    pub kv: K,
    /// Every audit record, in sequence order.
    pub audit: A,
}

/// The verified state of the authentication: the last verified head, the running set digest
/// of what the store holds now, and what an etcd watch answer changed since.
pub(crate) struct Auth {
    keys: Keys,
    /// The last verified head.
    head: Head,
    /// Set digest of the values the store holds now.
    current: SetDigest,
    /// Audit records appended since the last settle, by sequence number.
    pending_audit: BTreeMap<u64, Vec<u8>>,
    /// The head a watch answer brought (`Some(None)`: it was deleted).
    pending_head: Option<Option<Vec<u8>>>,
    /// Breaks in the audit chain that re-authentication records acknowledge.
    audit_breaks: BTreeSet<u64>,
    /// Findings since the state became untrustworthy; empty while it is trusted.
    tampered: Vec<Finding>,
}

/// A state that failed its check: the findings, and its head if that could be read.
pub(crate) type Rejected = Box<(Vec<Finding>, Option<Head>)>;

/// The outcome of a full check.
pub(crate) enum Verdict {
    /// The state is the authenticated one.
    Verified(Auth),
    /// It is not: the findings, and the stored head if it could be read.
    Tampered(Vec<Finding>, Option<Head>),
}

/// Checks a whole stored state against its head (see the module docs). `seen_generation` is
/// the newest generation this process verified before (0 at start-up).
pub(crate) fn verify<'a, K, A>(
    keys: &Keys,
    stored: Stored<'a, K, A>,
    seen_generation: u64,
) -> Verdict
where
    K: Iterator<Item = (&'a str, &'a [u8])>,
    A: Iterator<Item = (u64, Vec<u8>)>,
{
    let mut findings = Vec::new();
    let head = match stored.head {
        None => {
            findings.push(Finding::HeadMissing);
            None
        }
        Some(b) => match Head::open(keys, b) {
            Some(h) => Some(h),
            None => {
                findings.push(Finding::HeadUnreadable);
                None
            }
        },
    };
    if let Some(h) = &head {
        if h.generation < seen_generation {
            findings.push(Finding::Rollback {
                seen: seen_generation,
                found: h.generation,
            });
        }
    }
    // Values: the set digest, and what the semantic checks below need.
    let mut current = SetDigest::default();
    let mut manifest: Option<Hash> = None;
    let mut last_history: Option<HistoryEntry> = None;
    let mut instances: BTreeSet<String> = BTreeSet::new();
    let mut unreadable = Vec::new();
    for (name, sealed) in stored.kv {
        current.add(&keys.leaf(name, sealed));
        if name == K_MANIFEST {
            match open_value(keys.state.as_bytes(), &aad("kv", name), sealed) {
                Some(p) => manifest = Some(Sha256::digest(p.as_slice()).into()),
                None => unreadable.push(name.to_string()),
            }
        } else if name.starts_with(HISTORY_PREFIX) {
            match open_value(keys.state.as_bytes(), &aad("kv", name), sealed)
                .and_then(|p| serde_json::from_slice::<HistoryEntry>(&p).ok())
            {
                Some(e) => last_history = Some(e),
                None => unreadable.push(name.to_string()),
            }
        } else if name.starts_with(crate::state::writer::INSTANCE_PREFIX) {
            instances.insert(name.to_string());
        } else if open_value(keys.state.as_bytes(), &aad("kv", name), sealed).is_none() {
            unreadable.push(name.to_string());
        }
    }
    findings.extend(unreadable.into_iter().map(Finding::ValueUnreadable));
    // Audit: every record up to the head, linked; first activations, for a precise message
    // about deleted instance records.
    let mut chain = AuditVerifier::default();
    let mut first_activations: HashMap<String, u64> = HashMap::new();
    let mut audit_breaks = BTreeSet::new();
    let head_seq = head.map_or(u64::MAX, |h| h.audit_seq);
    for (seq, sealed) in stored.audit {
        if seq > head_seq {
            findings.push(Finding::AuditExtra(seq));
            break;
        }
        let rec = open_value(keys.state.as_bytes(), &audit_aad(seq), &sealed)
            .and_then(|p| serde_json::from_slice::<AuditRecord>(&p).ok())
            .filter(|r| r.seq == seq);
        let Some(rec) = rec else {
            findings.push(Finding::AuditUnreadable(seq));
            break;
        };
        if chain.push(&rec).is_err() {
            findings.push(Finding::AuditBroken(format!("record {seq} goes backwards")));
            break;
        }
        if rec.event == coffer_api::chain::REAUTHENTICATED_EVENT {
            audit_breaks.extend(rec.chain_breaks.iter().copied());
            // Instances before a re-authentication may have been reset with it.
            first_activations.clear();
        }
        if rec.event == "activation" && rec.outcome == "accepted" {
            if let (Some(w), Some(i)) = (&rec.workload, &rec.instance) {
                first_activations
                    .entry(format!("{}{w}/{i}", crate::state::writer::INSTANCE_PREFIX))
                    .or_insert(seq);
            }
        }
    }
    let (last_seq, chain_head) = (chain.last_seq(), chain.head());
    match chain.finish() {
        Ok(_) => {}
        Err(coffer_api::ChainError::OutOfOrder { expected, .. }) => {
            findings.push(Finding::AuditMissing(expected))
        }
        Err(e) => findings.push(Finding::AuditBroken(e.to_string())),
    }
    // Missing instance records are named from the audit log.
    let mut missing_instances: Vec<(u64, String)> = first_activations
        .into_iter()
        .filter(|(name, _)| !instances.contains(name))
        .map(|(name, seq)| (seq, name))
        .collect();
    missing_instances.sort();
    findings.extend(
        missing_instances
            .into_iter()
            .map(|(audit_seq, name)| Finding::InstanceMissing { name, audit_seq }),
    );
    let Some(head) = head else {
        return Verdict::Tampered(dedup(findings), None);
    };
    if last_seq < head.audit_seq {
        findings.push(Finding::AuditMissing(last_seq + 1));
    } else if chain_head != head.audit_head {
        findings.push(Finding::AuditBroken(format!(
            "record {last_seq} is not the one the state head authenticates"
        )));
    }
    // The manifest and its history.
    match (&last_history, head.history_version) {
        (None, 0) => {
            if manifest.is_some() {
                findings.push(Finding::HistoryMismatch(
                    "is empty although a manifest is stored".into(),
                ));
            }
        }
        (None, v) => findings.push(Finding::HistoryMismatch(format!(
            "is missing; the state head says version {v}"
        ))),
        (Some(e), v) => {
            if e.version != v || e.hash() != head.history_head {
                findings.push(Finding::HistoryMismatch(format!(
                    "ends at version {} but the state head says version {v} (entries removed or put back)",
                    e.version
                )));
            }
            let cleared = e.manifest_hash == coffer_api::chain::NO_MANIFEST;
            match &manifest {
                None if cleared => {}
                None => findings.push(Finding::ManifestMissing { version: v }),
                Some(h) if hex::encode(h) != e.manifest_hash => {
                    findings.push(Finding::ManifestNotHead {
                        stored: hex::encode(h),
                        expected: e.manifest_hash.clone(),
                    })
                }
                Some(_) => {}
            }
        }
    }
    if current != head.set() {
        findings.push(Finding::ValuesDiffer {
            expected: head.values,
            found: current.count,
        });
    }
    if findings.is_empty() {
        Verdict::Verified(Auth {
            keys: keys.clone(),
            head,
            current,
            pending_audit: BTreeMap::new(),
            pending_head: None,
            audit_breaks,
            tampered: Vec::new(),
        })
    } else {
        Verdict::Tampered(dedup(findings), Some(head))
    }
}

fn dedup(mut findings: Vec<Finding>) -> Vec<Finding> {
    let mut seen = Vec::new();
    findings.retain(|f| {
        let s = f.to_string();
        if seen.contains(&s) {
            false
        } else {
            seen.push(s);
            true
        }
    });
    findings
}

/// A commit computed from the verified state: what the backend writes, and the head it
/// writes with it.
pub(crate) struct Prepared {
    /// Sealed writes (the head not included).
    pub writes: Vec<Sealed>,
    /// The next head.
    pub head: Head,
    /// It, sealed.
    pub head_sealed: Vec<u8>,
}

impl Auth {
    /// A new, empty state's authentication (the first commit creates its head).
    pub(crate) fn empty(keys: Keys) -> Self {
        Self {
            keys,
            head: Head::default(),
            current: SetDigest::default(),
            pending_audit: BTreeMap::new(),
            pending_head: None,
            audit_breaks: BTreeSet::new(),
            tampered: Vec::new(),
        }
    }

    /// The last verified head.
    pub(crate) fn head(&self) -> &Head {
        &self.head
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Findings, once the state became untrustworthy.
    pub(crate) fn tampered(&self) -> Option<&[Finding]> {
        (!self.tampered.is_empty()).then_some(self.tampered.as_slice())
    }

    /// Marks the state untrustworthy (a check outside this type found `f`).
    pub(crate) fn mark_tampered(&mut self, f: Vec<Finding>) {
        for x in f {
            if !self.tampered.contains(&x) {
                self.tampered.push(x);
            }
        }
    }

    /// Whether the audit chain is known to break before `seq` (acknowledged by a
    /// re-authentication).
    pub(crate) fn audit_break_at(&self, seq: u64) -> bool {
        self.audit_breaks.contains(&seq)
    }

    /// Computes the commit of `ops` on top of the verified head. `stored` reads the sealed
    /// `kv` value a name has now. Refused while the state is untrustworthy.
    pub(crate) fn prepare(
        &self,
        stored: impl Fn(&str) -> Option<Vec<u8>>,
        ops: &[WriteOp],
    ) -> Result<Prepared, Error> {
        if let Some(f) = self.tampered() {
            return Err(Error::Tampered(describe(f)));
        }
        self.prepare_on(self.head, self.current, stored, ops)
    }

    /// As [`Auth::prepare`], on top of `head` and the digest `set` (an untrusted state's own
    /// head, when a tamper record is appended to it).
    fn prepare_on(
        &self,
        head: Head,
        mut set: SetDigest,
        stored: impl Fn(&str) -> Option<Vec<u8>>,
        ops: &[WriteOp],
    ) -> Result<Prepared, Error> {
        let key = self.keys.state.as_bytes();
        let mut next = head;
        let mut overlay: HashMap<String, Option<Vec<u8>>> = HashMap::new();
        let mut writes = Vec::with_capacity(ops.len());
        let mut put =
            |name: &str, new: Option<Vec<u8>>, set: &mut SetDigest, writes: &mut Vec<Sealed>| {
                let old = match overlay.get(name) {
                    Some(v) => v.clone(),
                    None => stored(name),
                };
                if let Some(old) = &old {
                    set.remove(&self.keys.leaf(name, old));
                }
                if let Some(new) = &new {
                    set.add(&self.keys.leaf(name, new));
                }
                if old.is_some() || new.is_some() {
                    overlay.insert(name.to_string(), new.clone());
                    writes.push(Sealed::Kv(name.to_string(), new));
                }
            };
        for op in ops {
            match op {
                WriteOp::Put(name, plain) => {
                    let sealed = seal_value(key, &aad("kv", name), plain);
                    put(name, Some(sealed), &mut set, &mut writes);
                }
                WriteOp::Delete(name) => put(name, None, &mut set, &mut writes),
                WriteOp::PutMeta(name, v) => {
                    check_meta_name(name)?;
                    writes.push(Sealed::Meta(name.clone(), Some(v.clone())));
                }
                WriteOp::DeleteMeta(name) => {
                    check_meta_name(name)?;
                    writes.push(Sealed::Meta(name.clone(), None));
                }
                WriteOp::Audit(rec) => {
                    let mut rec = rec.clone();
                    rec.seq = next.audit_seq + 1;
                    rec.prev = next.audit_head;
                    let plain = serde_json::to_vec(&rec)
                        .map_err(|e| Error::Store(format!("audit record: {e}")))?;
                    writes.push(Sealed::Audit(
                        rec.seq,
                        Some(seal_value(key, &audit_aad(rec.seq), &plain)),
                    ));
                    next.audit_seq = rec.seq;
                    next.audit_head = rec.chain_hash();
                }
                WriteOp::History(entry) => {
                    let mut entry = entry.clone();
                    entry.version = next.history_version + 1;
                    entry.prev = next.history_head;
                    let name = history_name(entry.version);
                    let plain = serde_json::to_vec(&entry)
                        .map_err(|e| Error::Store(format!("history entry: {e}")))?;
                    let sealed = seal_value(key, &aad("kv", &name), &plain);
                    put(&name, Some(sealed), &mut set, &mut writes);
                    next.history_version = entry.version;
                    next.history_head = entry.hash();
                }
            }
        }
        next.generation = head.generation + 1;
        next.values = set.count;
        next.digest = set.xor;
        Ok(Prepared {
            writes,
            head_sealed: next.seal(&self.keys),
            head: next,
        })
    }

    /// Records a commit this process made (embedded store: the only writer).
    pub(crate) fn committed(&mut self, p: &Prepared) {
        self.head = p.head;
        self.current = p.head.set();
    }

    // --- etcd: changes arriving through the watch, checked per revision ---

    /// A `kv` value changed in the store.
    pub(crate) fn on_kv(&mut self, name: &str, old: Option<&[u8]>, new: Option<&[u8]>) {
        if let Some(old) = old {
            self.current.remove(&self.keys.leaf(name, old));
        }
        if let Some(new) = new {
            self.current.add(&self.keys.leaf(name, new));
        }
    }

    /// An audit record changed in the store. Records are only ever appended: a delete or a
    /// rewrite is tampering.
    pub(crate) fn on_audit(&mut self, seq: u64, old: bool, new: Option<&[u8]>) {
        match (old, new) {
            (false, Some(b)) => {
                self.pending_audit.insert(seq, b.to_vec());
            }
            (_, _) => self.mark_tampered(vec![Finding::AuditRewritten(seq)]),
        }
    }

    /// The head changed in the store.
    pub(crate) fn on_head(&mut self, new: Option<&[u8]>) {
        self.pending_head = Some(new.map(<[u8]>::to_vec));
    }

    /// After all changes of one revision: accepts the new head if the store now matches it,
    /// else marks the state tampered. Returns whether it is still trusted.
    pub(crate) fn settle(&mut self) -> bool {
        let pending_audit = std::mem::take(&mut self.pending_audit);
        let candidate = match self.pending_head.take() {
            None => self.head,
            Some(None) => {
                self.mark_tampered(vec![Finding::HeadMissing]);
                return false;
            }
            Some(Some(b)) => match Head::open(&self.keys, &b) {
                None => {
                    self.mark_tampered(vec![Finding::HeadUnreadable]);
                    return false;
                }
                Some(h) if h.generation < self.head.generation => {
                    self.mark_tampered(vec![Finding::Rollback {
                        seen: self.head.generation,
                        found: h.generation,
                    }]);
                    return false;
                }
                Some(h) if h.generation == self.head.generation && h != self.head => {
                    self.mark_tampered(vec![Finding::Forked {
                        generation: h.generation,
                    }]);
                    return false;
                }
                Some(h) => h,
            },
        };
        let mut findings = Vec::new();
        // Appended audit records must continue the chain up to the candidate's audit head.
        let (mut seq, mut hash) = (self.head.audit_seq, self.head.audit_head);
        for (s, sealed) in &pending_audit {
            if *s != seq + 1 || *s > candidate.audit_seq {
                findings.push(if *s > candidate.audit_seq {
                    Finding::AuditExtra(*s)
                } else {
                    Finding::AuditMissing(seq + 1)
                });
                break;
            }
            let rec = open_value(self.keys.state.as_bytes(), &audit_aad(*s), sealed)
                .and_then(|p| serde_json::from_slice::<AuditRecord>(&p).ok())
                .filter(|r| r.seq == *s);
            let Some(rec) = rec else {
                findings.push(Finding::AuditUnreadable(*s));
                break;
            };
            if rec.prev != hash {
                findings.push(Finding::AuditBroken(format!(
                    "record {s} does not link to record {seq}"
                )));
                break;
            }
            seq = *s;
            hash = rec.chain_hash();
        }
        if findings.is_empty() && (seq, hash) != (candidate.audit_seq, candidate.audit_head) {
            findings.push(Finding::AuditMissing(seq + 1));
        }
        if self.current != candidate.set() {
            findings.push(Finding::ValuesDiffer {
                expected: candidate.values,
                found: self.current.count,
            });
        }
        if findings.is_empty() {
            self.head = candidate;
            true
        } else {
            self.mark_tampered(findings);
            false
        }
    }

    /// A commit that appends `record` to the audit chain of the last verified head (or of
    /// `untrusted`, the stored head of a state found tampered at start-up), leaving the values
    /// as they are: how a tamper finding is recorded without vouching for the values.
    pub(crate) fn prepare_tamper_record(
        keys: &Keys,
        base: Head,
        record: AuditRecord,
    ) -> Result<Prepared, Error> {
        let auth = Auth::empty(keys.clone());
        auth.prepare_on(base, base.set(), |_| None, &[WriteOp::Audit(record)])
    }
}

/// What re-authentication (by the recovery-key holders) makes of a tampered state: values that
/// fail authentication are dropped, the audit chain's breaks are listed, and a new head
/// authenticates the rest.
pub(crate) struct Reauthentication {
    /// The commit: deletions of unreadable values, the re-authentication record, the head.
    pub prepared: Prepared,
    /// Names of the values dropped.
    pub dropped: Vec<String>,
    /// Where the audit chain breaks (the first record after each break).
    pub breaks: Vec<u64>,
    /// Whether a manifest remains.
    pub manifest_present: bool,
}

/// Computes the re-authentication of a stored state. `seen_generation` keeps generations
/// increasing; `record` is completed with the breaks and appended last. `reset` names the
/// values to delete as well (secrets and instances when the manifest is gone).
pub(crate) fn reauthenticate<'a, K, A>(
    keys: &Keys,
    stored: Stored<'a, K, A>,
    seen_generation: u64,
    mut record: AuditRecord,
    reset: impl Fn(&str) -> bool,
) -> Reauthentication
where
    K: Iterator<Item = (&'a str, &'a [u8])>,
    A: Iterator<Item = (u64, Vec<u8>)>,
{
    let stored_head = stored.head.and_then(|b| Head::open(keys, b));
    let mut head = Head {
        generation: seen_generation.max(stored_head.map_or(0, |h| h.generation)),
        ..Head::default()
    };
    let mut set = SetDigest::default();
    let mut dropped = Vec::new();
    let mut writes = Vec::new();
    let mut manifest_present = false;
    let mut history: Option<HistoryEntry> = None;
    let values: Vec<(&str, &[u8])> = stored.kv.collect();
    let manifest_gone = !values.iter().any(|(n, s)| {
        *n == K_MANIFEST && open_value(keys.state.as_bytes(), &aad("kv", n), s).is_some()
    });
    for (name, sealed) in values {
        let plain = open_value(keys.state.as_bytes(), &aad("kv", name), sealed);
        if plain.is_none() || (manifest_gone && reset(name)) {
            dropped.push(name.to_string());
            writes.push(Sealed::Kv(name.to_string(), None));
            continue;
        }
        if name == K_MANIFEST {
            manifest_present = true;
        }
        if name.starts_with(HISTORY_PREFIX) {
            history = plain
                .and_then(|p| serde_json::from_slice(&p).ok())
                .or(history);
        }
        set.add(&keys.leaf(name, sealed));
    }
    if let Some(h) = &history {
        head.history_version = h.version;
        head.history_head = h.hash();
    }
    let mut ops = Vec::new();
    if manifest_gone && head.history_version > 0 {
        // The history records that the manifest is gone, so the next one set is a first
        // manifest again by the recovery-key holders' decision, in the open.
        ops.push(WriteOp::History(HistoryEntry {
            version: 0,
            manifest_hash: coffer_api::chain::NO_MANIFEST.into(),
            prev: CHAIN_START,
            author: Some("recovery-key holders".into()),
            time: record.time,
            changes: vec![
                "the manifest was missing from the tampered state; cleared by re-authentication \
                 (secrets and instances reset)"
                    .into(),
            ],
        }));
    }
    // The audit chain as it is: readable records in order, breaks listed.
    let mut breaks = Vec::new();
    let (mut seq, mut prev) = (0u64, CHAIN_START);
    for (s, sealed) in stored.audit {
        let rec = open_value(keys.state.as_bytes(), &audit_aad(s), &sealed)
            .and_then(|p| serde_json::from_slice::<AuditRecord>(&p).ok())
            .filter(|r| r.seq == s);
        match rec {
            Some(r) => {
                if s != seq + 1 || r.prev != prev {
                    breaks.push(s);
                }
                seq = s;
                prev = r.chain_hash();
            }
            // Unreadable: removed; the next readable record shows the break.
            None => writes.push(Sealed::Audit(s, None)),
        }
    }
    head.audit_seq = seq;
    head.audit_head = prev;
    head.values = set.count;
    head.digest = set.xor;
    record.chain_breaks = breaks.clone();
    ops.push(WriteOp::Audit(record));
    let auth = Auth::empty(keys.clone());
    let mut prepared = match auth.prepare_on(head, set, |_| None, &ops) {
        Ok(p) => p,
        Err(_) => unreachable!("audit records and history entries always serialise"),
    };
    let mut all = writes;
    all.append(&mut prepared.writes);
    prepared.writes = all;
    Reauthentication {
        prepared,
        dropped,
        breaks,
        manifest_present,
    }
}

/// The store's own `meta` values cannot be written through ordinary operations.
fn check_meta_name(name: &str) -> Result<(), Error> {
    if name == super::value::M_HEAD || name == super::value::M_KEY_CHECK {
        return Err(Error::Store(format!(
            "`meta/{name}` belongs to the store and is not written directly"
        )));
    }
    Ok(())
}

/// Harness logic shared by the fuzz targets and the tests (not a stable API): the stored
/// state is untrusted input, so checking any bytes as a store must end in a verdict, never a
/// panic, and a state this module wrote itself must verify.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Splits `data` into a head, `kv` values and audit records (length-prefixed chunks) and
    /// checks them as a stored state under a fixed key. Also checks that a state prepared by
    /// `Auth::prepare` from the same names verifies, and that flipping one byte of it does
    /// not.
    pub fn check_store(data: &[u8]) {
        let key = StateKey::from_slice(&[7u8; 32]).unwrap_or_else(|_| unreachable!());
        let keys = Keys::new(&key);
        let mut chunks = data.chunks(1 + (data.first().copied().unwrap_or(16) as usize % 200));
        let head = chunks.next().map(<[u8]>::to_vec);
        let mut kv = Vec::new();
        let mut audit = Vec::new();
        for (i, c) in chunks.enumerate() {
            if i % 2 == 0 {
                kv.push((format!("k{i}"), c.to_vec()));
            } else {
                audit.push((i as u64, c.to_vec()));
            }
        }
        let verdict = verify(
            &keys,
            Stored {
                head: head.as_deref(),
                kv: kv.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                audit: audit.clone().into_iter(),
            },
            0,
        );
        assert!(
            !matches!(verdict, Verdict::Verified(_)),
            "random bytes cannot carry a head sealed under this key"
        );
        // A state written by this module verifies, and one flipped byte of a value does not.
        let ops: Vec<WriteOp> = kv
            .iter()
            .map(|(k, v)| WriteOp::Put(k.clone(), v.clone()))
            .collect();
        let Ok(p) = Auth::empty(keys.clone()).prepare(|_| None, &ops) else {
            return;
        };
        let mut values: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for w in &p.writes {
            if let Sealed::Kv(n, Some(v)) = w {
                values.insert(n.clone(), v.clone());
            }
        }
        let check = |values: &BTreeMap<String, Vec<u8>>| {
            verify(
                &keys,
                Stored {
                    head: Some(&p.head_sealed),
                    kv: values.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                    audit: std::iter::empty(),
                },
                0,
            )
        };
        assert!(matches!(check(&values), Verdict::Verified(_)));
        if let Some((_, v)) = values.iter_mut().next() {
            let i = data.len() % v.len().max(1);
            if let Some(b) = v.get_mut(i) {
                *b ^= 1;
                assert!(matches!(check(&values), Verdict::Tampered(..)));
            }
        }
    }
}
