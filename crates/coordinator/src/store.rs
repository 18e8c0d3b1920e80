//! The sealed embedded store: one redb file, every value encrypted with AES-256-GCM under the
//! state key.
//!
//! Layout:
//! - table `meta` (plaintext, holds nothing secret): the sealed state key, the recovery
//!   envelope, a key-check value and the format version.
//! - table `kv` (encrypted): manifest, CA keys and certificates, secrets, instances, counters.
//! - table `audit` (encrypted): the audit log, keyed by a sequence number.
//!
//! Each encrypted value is `nonce(12) ‖ ciphertext ‖ tag(16)` with AAD = `table ‖ 0 ‖ key`, so a
//! value moved to another key or table fails to decrypt instead of being served in the wrong
//! place.
//!
//! With `--store etcd` the same sealed values live in etcd instead (see [`crate::etcd`]); this
//! module hides the difference behind [`Store`] and [`RawStore`].
//!
//! Durability: redb commits with `Durability::Immediate` (fsync before `commit` returns) and
//! its copy-on-write B-trees switch atomically, so a `kill -9` at any moment leaves either the
//! old or the new committed state, never a half one. Every write the API acknowledges has been
//! committed. Writes are funnelled through one writer task that groups concurrent requests into
//! one transaction (group commit), which is what makes durable activations fast.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use redb::{Database, ReadableTable, TableDefinition};
use zeroize::{Zeroize, Zeroizing};

use crate::error::Error;
use crate::etcd::{Commit, EtcdStore, Guard};

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
const AUDIT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("audit");

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

fn aad(table: &str, key: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(table.len() + 1 + key.len());
    a.extend_from_slice(table.as_bytes());
    a.push(0);
    a.extend_from_slice(key.as_bytes());
    a
}

const KEY_CHECK_PLAIN: &[u8] = b"coffer state key check v1";

/// One operation of a write batch.
#[derive(Clone)]
pub enum WriteOp {
    /// Set an encrypted value in `kv`.
    Put(String, Vec<u8>),
    /// Remove a value from `kv`.
    Delete(String),
    /// Set a plaintext value in `meta` (nothing secret).
    PutMeta(String, Vec<u8>),
    /// Remove a plaintext value from `meta`.
    DeleteMeta(String),
    /// Append an audit record (encrypted) with the next sequence number.
    Audit(Vec<u8>),
}

impl std::fmt::Debug for WriteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteOp::Put(k, _) => write!(f, "Put({k})"),
            WriteOp::Delete(k) => write!(f, "Delete({k})"),
            WriteOp::PutMeta(k, _) => write!(f, "PutMeta({k})"),
            WriteOp::DeleteMeta(k) => write!(f, "DeleteMeta({k})"),
            WriteOp::Audit(_) => f.write_str("Audit"),
        }
    }
}

/// A decrypted `kv` entry: name and value.
pub type Entry = (String, Zeroizing<Vec<u8>>);

/// Where the sealed values live: one redb file (one Coordinator) or etcd (replicas sharing one
/// state, see [`crate::etcd`]). Both hold byte-identical sealed values under the same names.
enum Backend {
    Embedded(Database),
    Etcd(Box<EtcdStore>),
}

/// The sealed store with the state key. Cheap to share behind an `Arc`.
pub struct Store {
    backend: Backend,
    key: StateKey,
}

/// The store before the state key is known (plaintext `meta` only).
pub struct RawStore {
    backend: Backend,
}

/// What [`RawStore::initialise`] did.
pub enum Initialised {
    /// This process created the state.
    Created(Store),
    /// Another replica created it first (etcd only): unseal theirs instead.
    Lost(RawStore),
}

impl RawStore {
    /// Opens (or creates) the database file. Creation and every later commit are durable.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let db = Database::create(path)
            .map_err(|e| Error::Store(format!("open {}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(store_err)?;
        {
            tx.open_table(META).map_err(store_err)?;
            tx.open_table(KV).map_err(store_err)?;
            tx.open_table(AUDIT).map_err(store_err)?;
        }
        tx.commit().map_err(store_err)?;
        Ok(Self {
            backend: Backend::Embedded(db),
        })
    }

    /// Connects to etcd and mirrors everything under `prefix`. Blocking: call it outside any
    /// tokio runtime.
    pub fn open_etcd(
        endpoints: &[String],
        prefix: &str,
        tls: Option<&crate::etcd::EtcdTls>,
    ) -> Result<Self, Error> {
        Ok(Self {
            backend: Backend::Etcd(Box::new(EtcdStore::connect_with(endpoints, prefix, tls)?)),
        })
    }

    /// The etcd connection, if this store is shared.
    pub fn etcd(&self) -> Option<&EtcdStore> {
        self.backend.etcd()
    }

    /// Reads a plaintext `meta` value.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.backend.meta(name)
    }

    /// Plaintext `meta` values whose name starts with `prefix`.
    pub fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.backend.meta_scan(prefix)
    }

    /// Writes plaintext `meta` values (nothing secret), e.g. a key-join request.
    pub fn apply_meta(&self, ops: &[WriteOp]) -> Result<(), Error> {
        if ops
            .iter()
            .any(|o| !matches!(o, WriteOp::PutMeta(..) | WriteOp::DeleteMeta(..)))
        {
            return Err(Error::Store(
                "only meta values can be written before the store is unlocked".into(),
            ));
        }
        match &self.backend {
            Backend::Embedded(db) => apply_embedded(db, None, ops),
            Backend::Etcd(e) => apply_etcd_unguarded(e, ops),
        }
    }

    /// Whether the store was initialised (has a key-check value).
    pub fn is_initialised(&self) -> Result<bool, Error> {
        Ok(self.meta(M_KEY_CHECK)?.is_some())
    }

    /// Whether `key` is this store's state key (decrypts the key-check value).
    pub fn key_matches(&self, key: &StateKey) -> Result<bool, Error> {
        let Some(check) = self.meta(M_KEY_CHECK)? else {
            return Ok(false);
        };
        Ok(open_value(key.as_bytes(), b"meta\0key_check", &check)
            .is_some_and(|p| p.as_slice() == KEY_CHECK_PLAIN))
    }

    /// Initialises a fresh store with `key` (writes the key-check value). `ops` are written in
    /// the same transaction, so a crash leaves either nothing or all. With etcd the write is
    /// guarded by the key check's absence: of two replicas racing, exactly one creates the state.
    pub fn initialise(self, key: StateKey, ops: Vec<WriteOp>) -> Result<Initialised, Error> {
        let check = seal_value(key.as_bytes(), b"meta\0key_check", KEY_CHECK_PLAIN);
        let mut all = vec![WriteOp::PutMeta(M_KEY_CHECK.into(), check)];
        all.extend(ops);
        match self.backend {
            Backend::Embedded(db) => {
                apply_embedded(&db, Some(&key), &all)?;
                Ok(Initialised::Created(Store {
                    backend: Backend::Embedded(db),
                    key,
                }))
            }
            Backend::Etcd(mut e) => {
                e.set_state_key(key.clone());
                for _ in 0..MAX_ETCD_ATTEMPTS {
                    match e.apply(&all, &[Guard::MetaAbsent(M_KEY_CHECK.into())])? {
                        Commit::Done(_) => {
                            return Ok(Initialised::Created(Store {
                                backend: Backend::Etcd(e),
                                key,
                            }))
                        }
                        Commit::Conflict(rev) => {
                            e.refresh_to(rev)?;
                            if e.meta(M_KEY_CHECK).is_some() {
                                return Ok(Initialised::Lost(RawStore {
                                    backend: Backend::Etcd(e),
                                }));
                            }
                        }
                        Commit::Retry => {}
                    }
                }
                Err(Error::Store(
                    "etcd: could not initialise the state (too many conflicts)".into(),
                ))
            }
        }
    }

    /// Opens the store with a key already checked by [`RawStore::key_matches`].
    pub fn unlock(self, key: StateKey) -> Result<Store, Error> {
        if !self.key_matches(&key)? {
            return Err(Error::Unseal(
                "the state key does not open this store".into(),
            ));
        }
        let backend = match self.backend {
            Backend::Etcd(mut e) => {
                e.set_state_key(key.clone());
                Backend::Etcd(e)
            }
            b => b,
        };
        Ok(Store { backend, key })
    }
}

/// Name of the key-check value in `meta`.
const M_KEY_CHECK: &str = "key_check";

/// Guarded etcd writes tried before giving up on contention.
const MAX_ETCD_ATTEMPTS: usize = 50;

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

impl Backend {
    fn etcd(&self) -> Option<&EtcdStore> {
        match self {
            Backend::Etcd(e) => Some(e),
            Backend::Embedded(_) => None,
        }
    }

    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        match self {
            Backend::Embedded(db) => {
                let tx = db.begin_read().map_err(store_err)?;
                let t = tx.open_table(META).map_err(store_err)?;
                Ok(t.get(name).map_err(store_err)?.map(|v| v.value().to_vec()))
            }
            Backend::Etcd(e) => Ok(e.meta(name)),
        }
    }

    fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        match self {
            Backend::Embedded(db) => {
                let tx = db.begin_read().map_err(store_err)?;
                let t = tx.open_table(META).map_err(store_err)?;
                let mut out = Vec::new();
                for item in t.range(prefix..).map_err(store_err)? {
                    let (k, v) = item.map_err(store_err)?;
                    if !k.value().starts_with(prefix) {
                        break;
                    }
                    out.push((k.value().to_string(), v.value().to_vec()));
                }
                Ok(out)
            }
            Backend::Etcd(e) => Ok(e.meta_scan(prefix)),
        }
    }
}

/// Writes `ops` to etcd without decision guards (meta values, sealed copies), retrying on
/// transport failures and on audit-sequence races.
fn apply_etcd_unguarded(e: &EtcdStore, ops: &[WriteOp]) -> Result<(), Error> {
    for _ in 0..MAX_ETCD_ATTEMPTS {
        match e.apply(ops, &[])? {
            Commit::Done(_) => return Ok(()),
            Commit::Conflict(rev) => e.refresh_to(rev)?,
            Commit::Retry => {}
        }
    }
    Err(Error::Store(
        "etcd: write abandoned after too many conflicts".into(),
    ))
}

impl Store {
    /// The state key (for sealing and recovery envelopes).
    pub fn state_key(&self) -> &StateKey {
        &self.key
    }

    /// The etcd connection, if this store is shared by several replicas.
    pub fn etcd(&self) -> Option<&EtcdStore> {
        self.backend.etcd()
    }

    /// The mod revision of a `kv` value as this replica last saw it (etcd; 0 if absent or
    /// embedded). Decisions carry it as a [`Guard`] so a stale decision is refused.
    pub fn kv_revision(&self, name: &str) -> i64 {
        self.etcd().map_or(0, |e| e.kv_revision(name))
    }

    /// Reads and decrypts a `kv` value.
    pub fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        let db = match &self.backend {
            Backend::Embedded(db) => db,
            Backend::Etcd(e) => return e.get(name),
        };
        let tx = db.begin_read().map_err(store_err)?;
        let t = tx.open_table(KV).map_err(store_err)?;
        match t.get(name).map_err(store_err)? {
            None => Ok(None),
            Some(v) => open_value(self.key.as_bytes(), &aad("kv", name), v.value())
                .map(Some)
                .ok_or_else(|| {
                    Error::Store(format!(
                        "value `{name}` fails authentication (tampered store?)"
                    ))
                }),
        }
    }

    /// Reads a plaintext `meta` value.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.backend.meta(name)
    }

    /// Plaintext `meta` values whose name starts with `prefix`.
    pub fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.backend.meta_scan(prefix)
    }

    /// Names in `kv` starting with `prefix`, with decrypted values.
    pub fn scan(&self, prefix: &str) -> Result<Vec<Entry>, Error> {
        let db = match &self.backend {
            Backend::Embedded(db) => db,
            Backend::Etcd(e) => return e.scan(prefix),
        };
        let tx = db.begin_read().map_err(store_err)?;
        let t = tx.open_table(KV).map_err(store_err)?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let k = k.value().to_string();
            if !k.starts_with(prefix) {
                break;
            }
            let plain =
                open_value(self.key.as_bytes(), &aad("kv", &k), v.value()).ok_or_else(|| {
                    Error::Store(format!(
                        "value `{k}` fails authentication (tampered store?)"
                    ))
                })?;
            out.push((k, plain));
        }
        Ok(out)
    }

    /// The last `limit` audit records after sequence `after` (decrypted JSON bytes).
    pub fn audit(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        let db = match &self.backend {
            Backend::Embedded(db) => db,
            Backend::Etcd(e) => return e.audit(after, limit),
        };
        let tx = db.begin_read().map_err(store_err)?;
        let t = tx.open_table(AUDIT).map_err(store_err)?;
        let mut out = Vec::new();
        for item in t.range(after.saturating_add(1)..).map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let seq = k.value();
            let plain = open_value(
                self.key.as_bytes(),
                &aad("audit", &seq.to_string()),
                v.value(),
            )
            .ok_or_else(|| Error::Store(format!("audit record {seq} fails authentication")))?;
            out.push((seq, plain.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Applies `ops` in one durable transaction: all or nothing. With etcd this is unguarded
    /// (it retries until committed); decisions go through [`Store::apply_guarded`]. Blocking.
    pub fn apply(&self, ops: &[WriteOp]) -> Result<(), Error> {
        match &self.backend {
            Backend::Embedded(db) => apply_embedded(db, Some(&self.key), ops),
            Backend::Etcd(e) => apply_etcd_unguarded(e, ops),
        }
    }

    /// Applies `ops` only if every guard holds (etcd). The embedded store has a single writer,
    /// so its guards hold by construction and it always commits. Blocking.
    pub fn apply_guarded(&self, ops: &[WriteOp], guards: &[Guard]) -> Result<Commit, Error> {
        match &self.backend {
            Backend::Embedded(db) => {
                apply_embedded(db, Some(&self.key), ops)?;
                Ok(Commit::Done(0))
            }
            Backend::Etcd(e) => e.apply(ops, guards),
        }
    }
}

/// One durable redb transaction. `key` is needed for encrypted values (`None` before unlock).
fn apply_embedded(db: &Database, key: Option<&StateKey>, ops: &[WriteOp]) -> Result<(), Error> {
    let sealing_key = || key.ok_or_else(|| Error::Store("the store is not unlocked".into()));
    let mut tx = db.begin_write().map_err(store_err)?;
    tx.set_durability(redb::Durability::Immediate);
    {
        let mut kv = tx.open_table(KV).map_err(store_err)?;
        let mut meta = tx.open_table(META).map_err(store_err)?;
        let mut audit = tx.open_table(AUDIT).map_err(store_err)?;
        let mut next_seq = audit
            .last()
            .map_err(store_err)?
            .map(|(k, _)| k.value() + 1)
            .unwrap_or(1);
        for op in ops {
            match op {
                WriteOp::Put(name, plain) => {
                    let sealed = seal_value(sealing_key()?.as_bytes(), &aad("kv", name), plain);
                    kv.insert(name.as_str(), sealed.as_slice())
                        .map_err(store_err)?;
                }
                WriteOp::Delete(name) => {
                    kv.remove(name.as_str()).map_err(store_err)?;
                }
                WriteOp::PutMeta(name, value) => {
                    meta.insert(name.as_str(), value.as_slice())
                        .map_err(store_err)?;
                }
                WriteOp::DeleteMeta(name) => {
                    meta.remove(name.as_str()).map_err(store_err)?;
                }
                WriteOp::Audit(plain) => {
                    let sealed = seal_value(
                        sealing_key()?.as_bytes(),
                        &aad("audit", &next_seq.to_string()),
                        plain,
                    );
                    audit
                        .insert(next_seq, sealed.as_slice())
                        .map_err(store_err)?;
                    next_seq += 1;
                }
            }
        }
    }
    tx.commit().map_err(store_err)?;
    Ok(())
}

impl Drop for StateKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bind_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let raw = RawStore::open(&dir.path().join("s.redb")).unwrap();
        let Initialised::Created(store) = raw.initialise(StateKey::generate(), vec![]).unwrap()
        else {
            panic!("a fresh file is initialised here")
        };
        store
            .apply(&[
                WriteOp::Put("a".into(), b"one".to_vec()),
                WriteOp::Audit(b"{}".to_vec()),
            ])
            .unwrap();
        assert_eq!(store.get("a").unwrap().unwrap().as_slice(), b"one");
        assert!(store.get("b").unwrap().is_none());
        assert_eq!(store.audit(0, 10).unwrap().len(), 1);
        // A value copied under another name must not decrypt.
        let sealed = seal_value(store.key.as_bytes(), &aad("kv", "a"), b"one");
        assert!(open_value(store.key.as_bytes(), &aad("kv", "b"), &sealed).is_none());
    }

    #[test]
    fn wrong_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let created = RawStore::open(&path)
            .unwrap()
            .initialise(StateKey::generate(), vec![])
            .unwrap();
        assert!(matches!(created, Initialised::Created(_)));
        drop(created);
        let raw = RawStore::open(&path).unwrap();
        assert!(raw.is_initialised().unwrap());
        let err = raw.unlock(StateKey::generate()).err().unwrap();
        assert!(matches!(err, Error::Unseal(_)));
    }
}
