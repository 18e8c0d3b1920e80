//! The Coordinator's state: sealed values, their authentication as a whole, two backends and
//! the single writer on top.
//!
//! ```text
//!   writer ──▶ Store (this module): reads from the verified view, commits through Auth
//!                 │                        │
//!                 ├── redb (one file)      └── head: state head, set digest, chains (pure)
//!                 └── etcd (replicas)      value: sealed format, state key, write ops (pure)
//! ```
//!
//! Every value is sealed under the state key ([`value`]); the [`head`] binds them all, with the
//! audit chain and the manifest history, into one sealed record that every commit replaces. A
//! store opens only if it matches its head ([`RawStore::unlock`]); otherwise it opens as a
//! [`TamperedStore`], which serves nothing and can only record the finding or be
//! re-authenticated by the recovery-key holders.
//!
//! Reads never go to the backend for `kv` values: the embedded store keeps the values it
//! verified at open in memory and updates them with its own commits (the host's later edits of
//! the file are never read, and are found at the next open); the etcd store reads from its
//! mirror, which checks every change the watch brings before it is visible.

pub mod etcd;
pub mod head;
mod redb;
pub mod value;
pub mod writer;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::RwLock;

use coffer_api::chain::CHAIN_START;
use coffer_api::{AuditRecord, HistoryEntry};
use zeroize::Zeroizing;

pub use head::{describe, Finding, Head};
pub use value::{history_name, Commit, Entry, Guard, StateKey, WriteOp, HISTORY_PREFIX};
pub(crate) use value::{open_value, seal_value};

use self::etcd::EtcdStore;
use self::head::{Auth, Keys, Prepared, Stored, Verdict};
use self::redb::Redb;
use self::value::{aad, audit_aad, Sealed, KEY_CHECK_AAD, KEY_CHECK_PLAIN, M_HEAD, M_KEY_CHECK};
use crate::error::Error;

/// Guarded etcd writes tried before giving up on contention.
const MAX_ETCD_ATTEMPTS: usize = 50;

/// Audit records read per page when a whole log is checked.
const AUDIT_PAGE: usize = 1024;

/// Where the sealed values live: one redb file (one Coordinator) or etcd (replicas sharing one
/// state). Both hold byte-identical sealed values under the same names.
enum Backend {
    Embedded(Redb),
    Etcd(Box<EtcdStore>),
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
            Backend::Embedded(db) => db.meta(name),
            Backend::Etcd(e) => Ok(e.meta(name)),
        }
    }

    fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        match self {
            Backend::Embedded(db) => db.meta_scan(prefix),
            Backend::Etcd(e) => Ok(e.meta_scan(prefix)),
        }
    }

    /// Writes outside the authenticated state (meta values), retrying etcd's transport
    /// failures.
    fn commit_meta(&self, writes: &[Sealed]) -> Result<(), Error> {
        match self {
            Backend::Embedded(db) => db.commit(writes),
            Backend::Etcd(e) => {
                for _ in 0..MAX_ETCD_ATTEMPTS {
                    match e.commit(writes, None, None, &[])? {
                        Commit::Done(_) => return Ok(()),
                        Commit::Conflict(rev) => e.refresh_to(rev)?,
                        Commit::Retry => {}
                    }
                }
                Err(Error::Store(
                    "etcd: write abandoned after too many attempts".into(),
                ))
            }
        }
    }

    fn has_state(&self) -> Result<bool, Error> {
        match self {
            Backend::Embedded(db) => db.has_state(),
            Backend::Etcd(e) => Ok(e.has_state()),
        }
    }
}

/// Every audit record of a redb file in order, a page at a time.
struct AuditPages<'a> {
    db: &'a Redb,
    next: u64,
    page: std::vec::IntoIter<(u64, Vec<u8>)>,
    done: bool,
}

impl<'a> AuditPages<'a> {
    fn new(db: &'a Redb) -> Self {
        Self {
            db,
            next: 0,
            page: Vec::new().into_iter(),
            done: false,
        }
    }
}

impl Iterator for AuditPages<'_> {
    type Item = (u64, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.page.next() {
                self.next = r.0 + 1;
                return Some(r);
            }
            if self.done {
                return None;
            }
            // A read error ends the iteration; the check then finds records missing.
            let page = self.db.audit(self.next, AUDIT_PAGE).unwrap_or_default();
            self.done = page.len() < AUDIT_PAGE;
            if page.is_empty() {
                return None;
            }
            self.page = page.into_iter();
        }
    }
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

/// What [`RawStore::unlock`] found.
pub enum Unlocked {
    /// The store matches its authenticated head.
    Verified(Store),
    /// It does not: nothing of it may be served.
    Tampered(TamperedStore),
}

impl RawStore {
    /// Opens (or creates) the database file. Creation and every later commit are durable.
    pub fn open(path: &Path) -> Result<Self, Error> {
        Ok(Self {
            backend: Backend::Embedded(Redb::open(path)?),
        })
    }

    /// Connects to etcd and mirrors everything under `prefix`. Blocking: call it outside any
    /// tokio runtime.
    pub fn open_etcd(
        endpoints: &[String],
        prefix: &str,
        tls: Option<&etcd::EtcdTls>,
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
        self.backend.commit_meta(&meta_writes(ops)?)
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
        Ok(open_value(key.as_bytes(), KEY_CHECK_AAD, &check)
            .is_some_and(|p| p.as_slice() == KEY_CHECK_PLAIN))
    }

    /// Initialises a fresh store with `key`: the key-check value, `ops` and the first state
    /// head in one transaction, so a crash leaves either nothing or all. With etcd the write is
    /// guarded by the key check's and the head's absence: of two replicas racing, exactly one
    /// creates the state. A store that holds state values without a key check is refused:
    /// creating a new state over it would hide that part of it was deleted.
    pub fn initialise(self, key: StateKey, ops: Vec<WriteOp>) -> Result<Initialised, Error> {
        if self.backend.has_state()? {
            return Err(Error::Tampered(vec![
                "the store holds state values but no key check (it was deleted): refusing to \
                 create a new state over it. Move the store aside (or use a new --etcd-prefix) \
                 to start a new deployment"
                    .into(),
            ]));
        }
        let keys = Keys::new(&key);
        let auth = Auth::empty(keys.clone());
        let prepared = auth.prepare(|_| None, &ops)?;
        let check = seal_value(key.as_bytes(), KEY_CHECK_AAD, KEY_CHECK_PLAIN);
        let mut writes = vec![Sealed::Meta(M_KEY_CHECK.into(), Some(check))];
        writes.extend(prepared.writes.iter().cloned());
        match self.backend {
            Backend::Embedded(db) => {
                let mut all = writes;
                all.push(Sealed::Meta(
                    M_HEAD.into(),
                    Some(prepared.head_sealed.clone()),
                ));
                db.commit(&all)?;
                let mut auth = auth;
                auth.committed(&prepared);
                let mut view = View {
                    kv: BTreeMap::new(),
                    auth,
                };
                view.apply(&prepared.writes);
                Ok(Initialised::Created(Store {
                    backend: Backend::Embedded(db),
                    key,
                    view: Some(Box::new(RwLock::new(view))),
                }))
            }
            Backend::Etcd(e) => {
                for _ in 0..MAX_ETCD_ATTEMPTS {
                    match e.commit(
                        &writes,
                        Some(&prepared.head_sealed),
                        Some(0),
                        &[M_KEY_CHECK.to_string()],
                    )? {
                        Commit::Done(_) => {
                            if let Err(b) = e.unlock(&keys, 0) {
                                return Err(Error::Tampered(describe(&b.0)));
                            }
                            return Ok(Initialised::Created(Store {
                                backend: Backend::Etcd(e),
                                key,
                                view: None,
                            }));
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

    /// Opens the store with `key` and checks all of it against its head. `seen_generation` is
    /// the newest generation this process verified before (0 at start-up).
    pub fn unlock(self, key: StateKey, seen_generation: u64) -> Result<Unlocked, Error> {
        if !self.key_matches(&key)? {
            return Err(Error::Unseal(
                "the state key does not open this store".into(),
            ));
        }
        let keys = Keys::new(&key);
        let verdict = match &self.backend {
            Backend::Embedded(db) => {
                let kv = db.load_kv()?;
                let head = db.meta(M_HEAD)?;
                match head::verify(
                    &keys,
                    Stored {
                        head: head.as_deref(),
                        kv: kv.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                        audit: AuditPages::new(db),
                    },
                    seen_generation,
                ) {
                    Verdict::Verified(auth) => Ok(Some(Box::new(RwLock::new(View { kv, auth })))),
                    Verdict::Tampered(f, h) => Err((f, h)),
                }
            }
            Backend::Etcd(e) => e
                .unlock(&keys, seen_generation)
                .map(|()| None)
                .map_err(|b| *b),
        };
        match verdict {
            Ok(view) => Ok(Unlocked::Verified(Store {
                backend: self.backend,
                key,
                view,
            })),
            Err((findings, head)) => Ok(Unlocked::Tampered(TamperedStore {
                backend: self.backend,
                keys,
                findings,
                head,
            })),
        }
    }
}

/// `meta` writes only (before unlock, and for values outside the authenticated state).
fn meta_writes(ops: &[WriteOp]) -> Result<Vec<Sealed>, Error> {
    ops.iter()
        .map(|o| match o {
            WriteOp::PutMeta(n, v) if n != M_HEAD && n != M_KEY_CHECK => {
                Ok(Sealed::Meta(n.clone(), Some(v.clone())))
            }
            WriteOp::DeleteMeta(n) if n != M_HEAD && n != M_KEY_CHECK => {
                Ok(Sealed::Meta(n.clone(), None))
            }
            other => Err(Error::Store(format!(
                "{other:?} cannot be written outside the authenticated state"
            ))),
        })
        .collect()
}

/// The embedded store's verified values and their authentication.
struct View {
    kv: BTreeMap<String, Vec<u8>>,
    auth: Auth,
}

impl View {
    fn apply(&mut self, writes: &[Sealed]) {
        for w in writes {
            if let Sealed::Kv(name, v) = w {
                match v {
                    Some(v) => self.kv.insert(name.clone(), v.clone()),
                    None => self.kv.remove(name),
                };
            }
        }
    }
}

/// The sealed store with the state key, verified against its head. Cheap to share behind an
/// `Arc`.
pub struct Store {
    backend: Backend,
    key: StateKey,
    /// Embedded store: the verified values (etcd keeps them in its mirror).
    view: Option<Box<RwLock<View>>>,
}

fn tampered_error(f: &[Finding]) -> Error {
    Error::Tampered(describe(f))
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

    /// The state head's etcd mod revision as this replica last saw it (0 embedded): a commit
    /// decided now must find it unchanged.
    pub fn head_revision(&self) -> i64 {
        self.etcd().map_or(0, EtcdStore::head_revision)
    }

    fn view(&self) -> Option<std::sync::RwLockReadGuard<'_, View>> {
        self.view
            .as_ref()
            .map(|v| v.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs `f` on the verified sealed values (name → sealed bytes lookup and prefix scan),
    /// refusing if the state is no longer trusted.
    fn with_values<R>(
        &self,
        f: impl FnOnce(&dyn Fn(&str) -> Option<Vec<u8>>, &dyn Fn(&str) -> Vec<(String, Vec<u8>)>) -> R,
    ) -> Result<R, Error> {
        if let Some(v) = self.view() {
            if let Some(t) = v.auth.tampered() {
                return Err(tampered_error(t));
            }
            let get = |n: &str| v.kv.get(n).cloned();
            let scan = |p: &str| {
                v.kv.range(p.to_string()..)
                    .take_while(|(k, _)| k.starts_with(p))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            return Ok(f(&get, &scan));
        }
        let e = self
            .etcd()
            .ok_or_else(|| Error::Store("no backend".into()))?;
        let m = e.lock();
        match m.auth() {
            None => return Err(Error::Store("the etcd store is not unlocked".into())),
            Some(a) => {
                if let Some(t) = a.tampered() {
                    return Err(tampered_error(t));
                }
            }
        }
        let get = |n: &str| m.kv(n).map(<[u8]>::to_vec);
        let scan = |p: &str| {
            m.kv_scan(p)
                .into_iter()
                .map(|(k, v)| (k, v.to_vec()))
                .collect()
        };
        Ok(f(&get, &scan))
    }

    fn open_kv(&self, name: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        open_value(self.key.as_bytes(), &aad("kv", name), sealed).ok_or_else(|| {
            Error::Tampered(vec![Finding::ValueUnreadable(name.to_string()).to_string()])
        })
    }

    /// Reads and decrypts a `kv` value.
    pub fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        let sealed = self.with_values(|get, _| get(name))?;
        sealed.map(|s| self.open_kv(name, &s)).transpose()
    }

    /// Names in `kv` starting with `prefix`, with decrypted values.
    pub fn scan(&self, prefix: &str) -> Result<Vec<Entry>, Error> {
        let items = self.with_values(|_, scan| scan(prefix))?;
        items
            .into_iter()
            .map(|(k, v)| {
                let plain = self.open_kv(&k, &v)?;
                Ok((k, plain))
            })
            .collect()
    }

    /// The `kv` names starting with `prefix` (nothing is decrypted).
    pub fn names(&self, prefix: &str) -> Result<Vec<String>, Error> {
        self.with_values(|_, scan| scan(prefix).into_iter().map(|(k, _)| k).collect())
    }

    /// How many `kv` names start with `prefix` (nothing is decrypted).
    pub fn count(&self, prefix: &str) -> Result<usize, Error> {
        self.with_values(|_, scan| scan(prefix).len())
    }

    /// Reads a plaintext `meta` value.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.backend.meta(name)
    }

    /// Plaintext `meta` values whose name starts with `prefix`.
    pub fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.backend.meta_scan(prefix)
    }

    /// The last verified state head.
    pub fn head(&self) -> Result<Head, Error> {
        if let Some(v) = self.view() {
            return Ok(*v.auth.head());
        }
        let e = self
            .etcd()
            .ok_or_else(|| Error::Store("no backend".into()))?;
        let m = e.lock();
        m.auth()
            .map(|a| *a.head())
            .ok_or_else(|| Error::Store("the etcd store is not unlocked".into()))
    }

    /// What was found, once the state is no longer trusted (etcd: a change the watch brought;
    /// either store: an audit record that fails its check).
    pub fn tampered(&self) -> Option<Vec<Finding>> {
        if let Some(v) = self.view() {
            return v.auth.tampered().map(<[Finding]>::to_vec);
        }
        let e = self.etcd()?;
        let m = e.lock();
        m.auth().and_then(|a| a.tampered().map(<[Finding]>::to_vec))
    }

    fn mark_tampered(&self, f: Vec<Finding>) {
        if let Some(v) = &self.view {
            v.write()
                .unwrap_or_else(|p| p.into_inner())
                .auth
                .mark_tampered(f);
        }
        // etcd: the mirror marks itself; an audit page that fails its check there is found
        // by the same mirror first.
    }

    /// The manifest history, version 1 first.
    pub fn history(&self) -> Result<Vec<HistoryEntry>, Error> {
        self.scan(HISTORY_PREFIX)?
            .into_iter()
            .map(|(name, plain)| {
                serde_json::from_slice(&plain).map_err(|e| {
                    Error::Tampered(vec![format!("history entry `{name}` does not parse: {e}")])
                })
            })
            .collect()
    }

    /// Audit records after sequence number `after`, at most `limit`, each checked: present,
    /// authentic, linked to its predecessor, and the last one of the log hashing to the
    /// state head's audit head. A record that fails makes the state tampered.
    pub fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, Error> {
        let head = self.head()?;
        let from = after;
        let raw = match &self.backend {
            Backend::Embedded(db) => db.audit(from, limit + 1)?,
            Backend::Etcd(e) => e.lock().audit(from, limit + 1),
        };
        let breaks = |seq: u64| match self.view() {
            Some(v) => v.auth.audit_break_at(seq),
            None => self
                .etcd()
                .and_then(|e| e.lock().auth().map(|a| a.audit_break_at(seq)))
                .unwrap_or(false),
        };
        match check_page(&self.key, &head, after, limit, raw, breaks) {
            Ok(records) => Ok(records),
            Err(findings) => {
                tracing::error!(findings = ?describe(&findings), "the audit log was TAMPERED with");
                let err = tampered_error(&findings);
                self.mark_tampered(findings);
                Err(err)
            }
        }
    }

    /// Applies `ops` in one durable transaction, all or nothing, with a new state head. With
    /// etcd, retried on conflicts (for writes whose decision does not depend on what another
    /// replica may have changed; decisions go through [`Store::apply_guarded`]). Blocking.
    pub fn apply(&self, ops: &[WriteOp]) -> Result<(), Error> {
        let Some(e) = self.etcd() else {
            self.apply_guarded(ops, &[], 0)?;
            return Ok(());
        };
        for _ in 0..MAX_ETCD_ATTEMPTS {
            match self.apply_guarded(ops, &[], e.head_revision())? {
                Commit::Done(_) => return Ok(()),
                Commit::Conflict(rev) => e.refresh_to(rev)?,
                Commit::Retry => {}
            }
        }
        Err(Error::Store(
            "etcd: write abandoned after too many conflicts".into(),
        ))
    }

    /// Applies `ops` only if the state head still has etcd mod revision `base` and every guard
    /// holds (etcd). The embedded store has a single writer, so it always commits. Blocking.
    pub fn apply_guarded(
        &self,
        ops: &[WriteOp],
        guards: &[Guard],
        base: i64,
    ) -> Result<Commit, Error> {
        if let (Backend::Embedded(db), Some(view)) = (&self.backend, &self.view) {
            let prepared = {
                let v = view.read().unwrap_or_else(|p| p.into_inner());
                v.auth.prepare(|n| v.kv.get(n).cloned(), ops)?
            };
            commit_embedded(db, &prepared)?;
            let mut v = view.write().unwrap_or_else(|p| p.into_inner());
            v.apply(&prepared.writes);
            v.auth.committed(&prepared);
            return Ok(Commit::Done(0));
        }
        let e = self
            .etcd()
            .ok_or_else(|| Error::Store("no backend".into()))?;
        let prepared = {
            let m = e.lock();
            if m.head_revision() != base {
                return Ok(Commit::Conflict(m.revision().max(base)));
            }
            for g in guards {
                let holds = match g {
                    Guard::KvAbsent(n) => m.kv(n).is_none(),
                    Guard::KvRevision(n, r) => m.kv_revision(n) == *r,
                    Guard::MetaAbsent(_) => true, // checked by etcd itself
                };
                if !holds {
                    return Ok(Commit::Conflict(base));
                }
            }
            let auth = m
                .auth()
                .ok_or_else(|| Error::Store("the etcd store is not unlocked".into()))?;
            auth.prepare(|n| m.kv(n).map(<[u8]>::to_vec), ops)?
        };
        let meta_absent: Vec<String> = guards
            .iter()
            .filter_map(|g| match g {
                Guard::MetaAbsent(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        e.commit(
            &prepared.writes,
            Some(&prepared.head_sealed),
            Some(base),
            &meta_absent,
        )
    }

    /// Writes `meta` values only (outside the authenticated state: sealed copies of the state
    /// key, key-join messages).
    pub fn apply_meta(&self, ops: &[WriteOp]) -> Result<(), Error> {
        self.backend.commit_meta(&meta_writes(ops)?)
    }

    /// Appends `record` to the audit chain of the last *verified* head, leaving the values as
    /// they are: records a tamper finding without vouching for what was found. Fails when the
    /// host replaced the head itself (etcd: the guard on the verified head fails).
    pub fn record_tamper(&self, record: AuditRecord) -> Result<(), Error> {
        let keys = Keys::new(&self.key);
        match (&self.backend, &self.view) {
            (Backend::Embedded(db), Some(view)) => {
                let head = *view.read().unwrap_or_else(|p| p.into_inner()).auth.head();
                let p = Auth::prepare_tamper_record(&keys, head, record)?;
                commit_embedded(db, &p)?;
                view.write()
                    .unwrap_or_else(|p| p.into_inner())
                    .auth
                    .committed(&p);
                Ok(())
            }
            _ => {
                let e = self
                    .etcd()
                    .ok_or_else(|| Error::Store("no backend".into()))?;
                let (p, base) = {
                    let m = e.lock();
                    let a = m
                        .auth()
                        .ok_or_else(|| Error::Store("the etcd store is not unlocked".into()))?;
                    (
                        Auth::prepare_tamper_record(&keys, *a.head(), record)?,
                        m.verified_head_revision(),
                    )
                };
                match e.commit(&p.writes, Some(&p.head_sealed), Some(base), &[])? {
                    Commit::Done(_) => Ok(()),
                    other => Err(Error::Store(format!(
                        "the tamper record could not be written ({other:?}): the head itself was replaced"
                    ))),
                }
            }
        }
    }

    /// Re-authenticates a serving state that stopped verifying, in place (see
    /// `reauthenticate_backend`): afterwards it is verified again from the backend.
    pub fn reauthenticate(
        &self,
        record: AuditRecord,
        reset: impl Fn(&str) -> bool,
    ) -> Result<Reauthenticated, Error> {
        let keys = Keys::new(&self.key);
        let seen = self.head()?.generation;
        let (info, head) = reauthenticate_backend(&self.backend, &keys, seen, record, reset)?;
        match &self.backend {
            Backend::Embedded(db) => {
                let kv = db.load_kv()?;
                let head_bytes = db.meta(M_HEAD)?;
                let verdict = head::verify(
                    &keys,
                    Stored {
                        head: head_bytes.as_deref(),
                        kv: kv.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                        audit: AuditPages::new(db),
                    },
                    head.generation,
                );
                match (verdict, &self.view) {
                    (Verdict::Verified(auth), Some(view)) => {
                        *view.write().unwrap_or_else(|p| p.into_inner()) = View { kv, auth };
                    }
                    (Verdict::Tampered(f, _), _) => return Err(tampered_error(&f)),
                    (_, None) => return Err(Error::Store("no view".into())),
                }
            }
            Backend::Etcd(e) => {
                if let Err(b) = e.unlock(&keys, head.generation) {
                    return Err(tampered_error(&b.0));
                }
            }
        }
        Ok(info)
    }

    /// etcd: waits until this replica has seen every commit acknowledged before the call, so
    /// what it reports (a state-bound quote) is not older than what another replica already
    /// answered. No-op for the embedded store. Blocking.
    pub fn sync(&self) -> Result<(), Error> {
        match self.etcd() {
            Some(e) => e.sync(),
            None => Ok(()),
        }
    }
}

fn commit_embedded(db: &Redb, p: &Prepared) -> Result<(), Error> {
    let mut all = p.writes.clone();
    all.push(Sealed::Meta(M_HEAD.into(), Some(p.head_sealed.clone())));
    db.commit(&all)
}

/// Checks one page of the audit log (`raw` starts at record `after` when `after > 0`).
fn check_page(
    key: &StateKey,
    head: &Head,
    after: u64,
    limit: usize,
    raw: Vec<(u64, Vec<u8>)>,
    acknowledged_break: impl Fn(u64) -> bool,
) -> Result<Vec<AuditRecord>, Vec<Finding>> {
    let open = |seq: u64, sealed: &[u8]| {
        open_value(key.as_bytes(), &audit_aad(seq), sealed)
            .and_then(|p| serde_json::from_slice::<AuditRecord>(&p).ok())
            .filter(|r| r.seq == seq)
            .ok_or_else(|| vec![Finding::AuditUnreadable(seq)])
    };
    let mut it = raw.into_iter().peekable();
    // The chain hash the first record of the page must name (unknown: not checked).
    let mut prev = (after == 0).then_some(CHAIN_START);
    if after > 0 {
        if let Some((seq, sealed)) = it.next_if(|(seq, _)| *seq == after) {
            prev = Some(open(seq, &sealed)?.chain_hash());
        } else if after <= head.audit_seq && !acknowledged_break(after + 1) {
            return Err(vec![Finding::AuditMissing(after)]);
        }
    }
    let mut out = Vec::new();
    let mut expected = after + 1;
    for (seq, sealed) in it.take(limit) {
        if seq > head.audit_seq {
            return Err(vec![Finding::AuditExtra(seq)]);
        }
        let known_break = acknowledged_break(seq);
        if seq != expected && !known_break {
            return Err(vec![Finding::AuditMissing(expected)]);
        }
        let rec = open(seq, &sealed)?;
        if prev.is_some_and(|p| p != rec.prev) && !known_break {
            return Err(vec![Finding::AuditBroken(format!(
                "record {seq} does not link to record {}",
                seq - 1
            ))]);
        }
        let hash = rec.chain_hash();
        if seq == head.audit_seq && hash != head.audit_head {
            return Err(vec![Finding::AuditBroken(format!(
                "record {seq} is not the one the state head authenticates"
            ))]);
        }
        prev = Some(hash);
        expected = seq + 1;
        out.push(rec);
    }
    if out.len() < limit && expected <= head.audit_seq {
        return Err(vec![Finding::AuditMissing(expected)]);
    }
    Ok(out)
}

/// A store that does not match its head: nothing of it is served. It can record the finding
/// in its own audit chain and be re-authenticated by the recovery-key holders.
pub struct TamperedStore {
    backend: Backend,
    keys: Keys,
    findings: Vec<Finding>,
    head: Option<Head>,
}

/// What re-authentication did.
#[derive(Debug, Clone)]
pub struct Reauthenticated {
    /// Values dropped (unreadable, or reset with a missing manifest).
    pub dropped: Vec<String>,
    /// Breaks of the audit chain the new record acknowledges.
    pub breaks: Vec<u64>,
    /// Whether a manifest remains.
    pub manifest_present: bool,
}

impl TamperedStore {
    /// What was found.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The state key.
    pub fn state_key(&self) -> &StateKey {
        &self.keys.state
    }

    /// The etcd connection, if shared.
    pub fn etcd(&self) -> Option<&EtcdStore> {
        self.backend.etcd()
    }

    /// Reads a plaintext `meta` value (the recovery envelope).
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.backend.meta(name)
    }

    /// Writes `meta` values only.
    pub fn apply_meta(&self, ops: &[WriteOp]) -> Result<(), Error> {
        self.backend.commit_meta(&meta_writes(ops)?)
    }

    /// Appends `record` to the stored audit chain when the stored head can be read (the
    /// values stay as found, so the state stays tampered). Without a readable head there is no
    /// chain to extend and nothing is written.
    pub fn record(&mut self, record: AuditRecord) -> Result<bool, Error> {
        let Some(head) = self.head else {
            return Ok(false);
        };
        let p = Auth::prepare_tamper_record(&self.keys, head, record)?;
        match &self.backend {
            Backend::Embedded(db) => commit_embedded(db, &p)?,
            Backend::Etcd(e) => {
                let base = e.head_revision();
                match e.commit(&p.writes, Some(&p.head_sealed), Some(base), &[])? {
                    Commit::Done(_) => {}
                    _ => return Ok(false),
                }
            }
        }
        self.head = Some(p.head);
        Ok(true)
    }

    /// Re-authenticates the state as it is (the recovery-key holders' decision), see
    /// `reauthenticate_backend`, and opens it.
    pub fn reauthenticate(
        self,
        record: AuditRecord,
        reset: impl Fn(&str) -> bool,
    ) -> Result<(Store, Reauthenticated), Error> {
        let seen = self.head.map_or(0, |h| h.generation);
        let (info, head) = reauthenticate_backend(&self.backend, &self.keys, seen, record, reset)?;
        let raw = RawStore {
            backend: self.backend,
        };
        match raw.unlock(self.keys.state.clone(), head.generation)? {
            Unlocked::Verified(store) => Ok((store, info)),
            Unlocked::Tampered(t) => Err(Error::Tampered(describe(t.findings()))),
        }
    }
}

/// Re-authenticates what `backend` holds now (the recovery-key holders' decision): values
/// that fail authentication are dropped; if the manifest is gone, so are the values `reset`
/// names (secrets, instances), so that whoever sets the next first manifest cannot reach them;
/// `record` (completed with the audit chain's breaks) is appended; a new head, newer than
/// `seen`, authenticates the rest. Returns what it did and the new head.
fn reauthenticate_backend(
    backend: &Backend,
    keys: &Keys,
    seen: u64,
    record: AuditRecord,
    reset: impl Fn(&str) -> bool,
) -> Result<(Reauthenticated, Head), Error> {
    let r = match backend {
        Backend::Embedded(db) => {
            let kv = db.load_kv()?;
            let head = db.meta(M_HEAD)?;
            let r = head::reauthenticate(
                keys,
                Stored {
                    head: head.as_deref(),
                    kv: kv.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                    audit: AuditPages::new(db),
                },
                seen,
                record,
                reset,
            );
            commit_embedded(db, &r.prepared)?;
            r
        }
        Backend::Etcd(e) => {
            let (r, base) = {
                let m = e.lock();
                let kv = m.kv_scan("");
                let audit = m.audit(0, usize::MAX);
                let head_bytes = m.head_sealed();
                let r = head::reauthenticate(
                    keys,
                    Stored {
                        head: head_bytes.as_deref(),
                        kv: kv.iter().map(|(k, v)| (k.as_str(), *v)),
                        audit: audit.into_iter(),
                    },
                    seen,
                    record,
                    reset,
                );
                (r, m.head_revision())
            };
            match e.commit(
                &r.prepared.writes,
                Some(&r.prepared.head_sealed),
                Some(base),
                &[],
            )? {
                Commit::Done(_) => {}
                other => {
                    return Err(Error::Store(format!(
                        "etcd: the re-authentication was not written ({other:?}); try again"
                    )))
                }
            }
            r
        }
    };
    Ok((
        Reauthenticated {
            dropped: r.dropped,
            breaks: r.breaks,
            manifest_present: r.manifest_present,
        },
        r.prepared.head,
    ))
}

#[cfg(test)]
mod tests;
