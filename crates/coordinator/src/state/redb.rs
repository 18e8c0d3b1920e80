//! The embedded backend: one redb file with three tables.
//!
//! - `meta` (plaintext, nothing secret): the key check, the sealed state head, the sealed
//!   copies of the state key, the recovery envelope.
//! - `kv`: sealed values by name (manifest, history, CA, secrets, instances).
//! - `audit`: sealed audit records by sequence number.
//!
//! Durability: every commit is one redb write transaction with `Durability::Immediate` (fsync
//! before `commit` returns); redb's copy-on-write B-trees switch atomically, so a `kill -9` at
//! any moment leaves either the old or the new committed state, never half of one. This module
//! only moves bytes: sealing and authentication happen above it ([`super::head`]).

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use super::value::Sealed;
use crate::error::Error;

pub(super) const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
pub(super) const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
pub(super) const AUDIT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("audit");

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

/// The open database file.
pub(crate) struct Redb {
    db: Database,
}

impl Redb {
    /// Opens (or creates) the file with its three tables.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => {
                Error::Tampered(vec![format!(
                    "the store file {} is corrupt ({e}): it was changed outside the Coordinator, \
                     or the disk failed. Nothing of it is served; restore it from a backup, or \
                     start a new deployment with an empty --data-dir",
                    path.display()
                )])
            }
            other => Error::Store(format!("open {}: {other}", path.display())),
        })?;
        let tx = db.begin_write().map_err(store_err)?;
        {
            tx.open_table(META).map_err(store_err)?;
            tx.open_table(KV).map_err(store_err)?;
            tx.open_table(AUDIT).map_err(store_err)?;
        }
        tx.commit().map_err(store_err)?;
        Ok(Self { db })
    }

    pub(crate) fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let t = tx.open_table(META).map_err(store_err)?;
        Ok(t.get(name).map_err(store_err)?.map(|v| v.value().to_vec()))
    }

    pub(crate) fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let tx = self.db.begin_read().map_err(store_err)?;
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

    /// Every `kv` value (sealed), in name order.
    pub(crate) fn load_kv(&self) -> Result<BTreeMap<String, Vec<u8>>, Error> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let t = tx.open_table(KV).map_err(store_err)?;
        let mut out = BTreeMap::new();
        for item in t.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            out.insert(k.value().to_string(), v.value().to_vec());
        }
        Ok(out)
    }

    /// Whether anything of a state is stored: values, audit records or a head.
    pub(crate) fn has_state(&self) -> Result<bool, Error> {
        let tx = self.db.begin_read().map_err(store_err)?;
        Ok(tx
            .open_table(KV)
            .map_err(store_err)?
            .first()
            .map_err(store_err)?
            .is_some()
            || tx
                .open_table(AUDIT)
                .map_err(store_err)?
                .first()
                .map_err(store_err)?
                .is_some()
            || tx
                .open_table(META)
                .map_err(store_err)?
                .get(super::value::M_HEAD)
                .map_err(store_err)?
                .is_some())
    }

    /// Audit records with sequence numbers in `from..`, at most `limit`, sealed.
    pub(crate) fn audit(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let t = tx.open_table(AUDIT).map_err(store_err)?;
        let mut out = Vec::new();
        for item in t.range(from..).map_err(store_err)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(store_err)?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// One durable transaction: all of `writes`, all or nothing.
    pub(crate) fn commit(&self, writes: &[Sealed]) -> Result<(), Error> {
        let mut tx = self.db.begin_write().map_err(store_err)?;
        tx.set_durability(redb::Durability::Immediate);
        {
            let mut kv = tx.open_table(KV).map_err(store_err)?;
            let mut meta = tx.open_table(META).map_err(store_err)?;
            let mut audit = tx.open_table(AUDIT).map_err(store_err)?;
            for w in writes {
                match w {
                    Sealed::Kv(name, Some(v)) => {
                        kv.insert(name.as_str(), v.as_slice()).map_err(store_err)?;
                    }
                    Sealed::Kv(name, None) => {
                        kv.remove(name.as_str()).map_err(store_err)?;
                    }
                    Sealed::Meta(name, Some(v)) => {
                        meta.insert(name.as_str(), v.as_slice())
                            .map_err(store_err)?;
                    }
                    Sealed::Meta(name, None) => {
                        meta.remove(name.as_str()).map_err(store_err)?;
                    }
                    Sealed::Audit(seq, Some(v)) => {
                        audit.insert(*seq, v.as_slice()).map_err(store_err)?;
                    }
                    Sealed::Audit(seq, None) => {
                        audit.remove(*seq).map_err(store_err)?;
                    }
                }
            }
        }
        tx.commit().map_err(store_err)?;
        Ok(())
    }
}
