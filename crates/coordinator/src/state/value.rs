//! The sealed value format, the state key, and the operations a commit is made of. No I/O.
//!
//! Each encrypted value is `nonce(12) ‖ ciphertext ‖ tag(16)` (AES-256-GCM under the state key)
//! with AAD = `table ‖ 0 ‖ name`, so a value moved to another name or table fails to decrypt
//! instead of being served in the wrong place. What binds the values *together* (so that a
//! missing, extra or older value is found) is the state head, [`super::head`].

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use coffer_api::{AuditRecord, HistoryEntry};
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::error::Error;

/// The 32-byte key that encrypts every value of the store. Zeroised on drop; never printed.
#[derive(Clone)]
pub struct StateKey(Zeroizing<[u8; 32]>);

impl StateKey {
    /// A fresh random state key.
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        Self(k)
    }

    /// Wraps raw key bytes; refuses any length but 32.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::Recovery(format!("a state key has 32 bytes, got {}", bytes.len()))
        })?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The raw key bytes (for sealing and recovery envelopes only).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(<redacted>)")
    }
}

impl Drop for StateKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Encrypts `plain` under `key` with `aad`: `nonce ‖ ciphertext ‖ tag`.
pub(crate) fn seal_value(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .unwrap_or_default(); // AES-GCM encryption only fails for inputs > 64 GiB.
    let mut out = Vec::with_capacity(12 + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Decrypts a value made by [`seal_value`]; `None` if it was tampered with or the key is wrong.
pub(crate) fn open_value(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let nonce = sealed.get(..12)?;
    let ct = sealed.get(12..)?;
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
        .map(Zeroizing::new)
}

/// The AAD of a value: `table ‖ 0 ‖ name`.
pub(crate) fn aad(table: &str, name: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(table.len() + 1 + name.len());
    a.extend_from_slice(table.as_bytes());
    a.push(0);
    a.extend_from_slice(name.as_bytes());
    a
}

/// The AAD of audit record `seq` (decimal, as every earlier version wrote it).
pub(crate) fn audit_aad(seq: u64) -> Vec<u8> {
    aad("audit", &seq.to_string())
}

/// Name of the key-check value in `meta`: a known plaintext sealed under the state key, so a
/// candidate key can be tested without touching the state.
pub(crate) const M_KEY_CHECK: &str = "key_check";
/// Name of the sealed state head in `meta`.
pub(crate) const M_HEAD: &str = "head";
/// AAD of the key-check value.
pub(crate) const KEY_CHECK_AAD: &[u8] = b"meta\0key_check";
/// Plaintext of the key-check value.
pub(crate) const KEY_CHECK_PLAIN: &[u8] = b"coffer state key check v1";

/// Prefix of the manifest history entries in `kv`: `history/<20-digit version>`.
pub const HISTORY_PREFIX: &str = "history/";

/// The `kv` name of history entry `version` (zero-padded so name order is version order).
pub fn history_name(version: u64) -> String {
    format!("{HISTORY_PREFIX}{version:020}")
}

/// One operation of a write batch.
#[derive(Clone)]
pub enum WriteOp {
    /// Set an encrypted value in `kv`.
    Put(String, Vec<u8>),
    /// Remove a value from `kv`.
    Delete(String),
    /// Set a plaintext value in `meta` (nothing secret, not part of the authenticated state).
    PutMeta(String, Vec<u8>),
    /// Remove a plaintext value from `meta`.
    DeleteMeta(String),
    /// Append an audit record: the store sets its `seq` and `prev` (the chain's next link).
    Audit(AuditRecord),
    /// Append a manifest history entry: the store sets its `version` and `prev`.
    History(HistoryEntry),
}

impl std::fmt::Debug for WriteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteOp::Put(k, _) => write!(f, "Put({k})"),
            WriteOp::Delete(k) => write!(f, "Delete({k})"),
            WriteOp::PutMeta(k, _) => write!(f, "PutMeta({k})"),
            WriteOp::DeleteMeta(k) => write!(f, "DeleteMeta({k})"),
            WriteOp::Audit(r) => write!(f, "Audit({})", r.event),
            WriteOp::History(e) => write!(f, "History({})", e.manifest_hash),
        }
    }
}

/// A decrypted `kv` entry: name and value.
pub type Entry = (String, Zeroizing<Vec<u8>>);

/// What a decision read, checked before its job is committed: if one no longer holds, the job
/// is refused with a conflict instead of applied (etcd, several replicas; the embedded store has
/// one writer, so they hold by construction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// The `kv` key must not exist (e.g. a new instance).
    KvAbsent(String),
    /// The `kv` key must still have this etcd mod revision (0 = absent).
    KvRevision(String, i64),
    /// The plaintext `meta` key must not exist (e.g. a key-join grant).
    MetaAbsent(String),
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Committed at this etcd revision (0 for the embedded store); this replica has seen it.
    Done(i64),
    /// Another replica committed first (the state head moved, or a guard failed); etcd
    /// answered at this revision. Refresh and decide again.
    Conflict(i64),
    /// The request failed in transport (e.g. the etcd member died): it may or may not have
    /// committed. The mirror was re-read from a live member; decide again. Safe because every
    /// commit is guarded by the state head it was decided on.
    Retry,
}

/// A write as the backends see it: names and sealed bytes, nothing to decide.
#[derive(Clone)]
pub(crate) enum Sealed {
    /// Set (`Some`) or remove (`None`) a `kv` value.
    Kv(String, Option<Vec<u8>>),
    /// Set or remove a `meta` value.
    Meta(String, Option<Vec<u8>>),
    /// Add audit record `seq` (`None`: remove an unreadable one, re-authentication only).
    Audit(u64, Option<Vec<u8>>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_bind_their_name() {
        let key = StateKey::generate();
        let sealed = seal_value(key.as_bytes(), &aad("kv", "a"), b"one");
        assert_eq!(
            open_value(key.as_bytes(), &aad("kv", "a"), &sealed)
                .unwrap()
                .as_slice(),
            b"one"
        );
        assert!(open_value(key.as_bytes(), &aad("kv", "b"), &sealed).is_none());
        assert!(open_value(StateKey::generate().as_bytes(), &aad("kv", "a"), &sealed).is_none());
        assert!(open_value(key.as_bytes(), &aad("kv", "a"), &sealed[..11]).is_none());
    }

    #[test]
    fn history_names_sort_by_version() {
        assert!(history_name(9) < history_name(10));
        assert_eq!(history_name(1), "history/00000000000000000001");
    }
}
