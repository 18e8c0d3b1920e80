//! The etcd v3 backend for several Coordinator replicas sharing one sealed state
//! (`coffer coordinator --store etcd`; used through [`crate::store::Store`]).
//!
//! # Why this shape
//! Activations read the state (manifest, secrets, instance index) on every request and must
//! stay fast and synchronous; asking etcd on each read would put a network round trip (and a
//! blocking call inside tokio tasks) into every activation. So each replica keeps a **mirror**
//! of everything under its prefix: an initial range read, then an etcd Watch from the next
//! revision that applies puts and deletes in revision order. A watch that is cancelled
//! (compaction) or breaks is replaced by a fresh range read (re-sync), and events at or below
//! the mirror's revision are skipped, so a re-sync racing with old events cannot go backwards.
//!
//! # Key layout (values exactly as in the embedded store)
//! - `<prefix>/meta/<name>`: plaintext meta values — nothing secret: `key_check`, `recovery`
//!   (envelope), `sealed/<replica>` (each replica's copy of the state key, sealed to its own
//!   platform), `join/<replica>` and `grant/<replica>` (key join messages, see
//!   [`crate::keyjoin`]).
//! - `<prefix>/kv/<name>`: `nonce ‖ AES-256-GCM(ciphertext ‖ tag)` under the state key with
//!   AAD = `kv ‖ 0 ‖ name`, the same format and AAD as [`crate::store`]. etcd only ever sees
//!   ciphertext.
//! - `<prefix>/audit/<20-digit seq>`: audit records, AAD = `audit ‖ 0 ‖ seq` (decimal, as in
//!   the embedded store). Zero padding keeps etcd's byte order equal to the numeric order.
//! - `<prefix>/leader`: the elected replica's name, attached to its lease (plaintext).
//! - `kv/instance-count/<workload>` (sealed, etcd only) is bumped with every new instance:
//!   its revision guards the activation-limit decisions of concurrent replicas.
//!
//! # Writes: optimistic concurrency
//! A batch becomes ONE etcd transaction whose compares are the [`Guard`]s of what its
//! decisions read from the mirror (an instance key's absence, a per-workload counter's mod
//! revision, the manifest/CA keys' mod revisions) plus the absence of the first audit key it
//! appends (so two replicas can never both write audit record `n`: sequence numbers stay unique
//! and increasing). If a compare fails, the caller gets [`Commit::Conflict`] with the revision
//! etcd answered at; [`EtcdStore::refresh_to`] brings the mirror to at least that revision, and
//! the caller decides the batch again on the newer state. After a successful commit the call
//! returns only once the mirror has seen the commit (read-your-writes on this replica).
//!
//! # Threads
//! The backend owns a small tokio runtime. Blocking calls (`apply`, `refresh_to`, `connect`)
//! refuse to run inside a tokio task (they return [`Error::Store`] instead of blocking a
//! runtime worker); the Coordinator's writer is a std thread and calls them from there.
//!
//! # Leader election
//! [`EtcdStore::start_campaign`] grants a lease (TTL [`LEADER_TTL_SECS`]) kept alive every
//! TTL/3, and puts `<prefix>/leader` = replica name with that lease in a transaction guarded
//! by the key's absence. When the leader dies its lease expires, etcd deletes the key, every
//! mirror sees the delete and the next campaign round elects another replica.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::store::{open_value, seal_value, StateKey, WriteOp};

/// TTL of the leader lease, in seconds.
pub const LEADER_TTL_SECS: i64 = 5;

/// How long a blocking call waits for the mirror to catch up before re-syncing.
const CATCH_UP: Duration = Duration::from_secs(2);

/// Re-reads tried after a transport failure before giving up (about 30 s with the pauses and
/// per-request timeouts: enough for the client to move off a dead member).
const RESYNC_ATTEMPTS: usize = 30;

/// Timeout of one etcd request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks an etcd key prefix: starts with `/`, no trailing `/`, no empty segment, 2..=128
/// bytes of `[A-Za-z0-9._-/]`. Why: the prefix is concatenated into every key, so a prefix
/// like `/a` must not be a byte prefix of another deployment's `/ab` data (we always add `/`).
pub fn validate_prefix(prefix: &str) -> Result<(), Error> {
    let ok_chars = prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'));
    if prefix.len() < 2
        || prefix.len() > 128
        || !prefix.starts_with('/')
        || prefix.ends_with('/')
        || prefix.contains("//")
        || !ok_chars
    {
        return Err(Error::BadRequest(format!(
            "etcd prefix `{prefix}` is invalid: use 2..=128 characters of A-Z a-z 0-9 . _ - /, \
             starting with `/`, without a trailing `/` or empty segments (e.g. /coffer)"
        )));
    }
    Ok(())
}

/// One mirrored value with the etcd revision that last modified it.
#[derive(Clone)]
struct Item {
    value: Vec<u8>,
    mod_revision: i64,
}

#[derive(Default)]
struct Mirror {
    entries: BTreeMap<Vec<u8>, Item>,
    /// Every change up to this revision is reflected in `entries`.
    revision: i64,
    /// Set when the watch broke; cleared by a re-sync.
    stale: bool,
}

struct Shared {
    mirror: Mutex<Mirror>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Mirror> {
        self.mirror.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A compare of one transaction: what a decision read from the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// The `kv` key must not exist (e.g. a new instance).
    KvAbsent(String),
    /// The `kv` key must still have this mod revision (0 = absent).
    KvRevision(String, i64),
    /// The plaintext `meta` key must not exist (e.g. the key check of a new state).
    MetaAbsent(String),
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Committed at this revision; the mirror has seen it.
    Done(i64),
    /// A guard failed; etcd answered at this revision. Refresh and decide again.
    Conflict(i64),
    /// The request failed in transport (e.g. the etcd member died): it may or may not have
    /// committed. The mirror was re-read from a live member; decide again. Safe because every
    /// decision is guarded: a committed registration is found (instance key present) and an
    /// audit sequence number is never reused.
    Retry,
}

/// The etcd-backed store of one replica: connection, mirror of the prefix, optional state key.
pub struct EtcdStore {
    rt: Option<tokio::runtime::Runtime>,
    client: Client,
    prefix: String,
    shared: Arc<Shared>,
    key: Option<StateKey>,
    leader: Arc<AtomicBool>,
}

fn etcd_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(format!("etcd {what}: {e}"))
}

fn not_in_async() -> Result<(), Error> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::Store(
            "blocking etcd call from inside an async task (call it from the writer thread)".into(),
        ));
    }
    Ok(())
}

/// TLS towards etcd: the CA that signed the members' certificates and, for etcd's
/// `--client-cert-auth`, this client's certificate and key (all PEM). rustls with ring.
#[derive(Clone)]
pub struct EtcdTls {
    /// CA certificate(s) of the etcd members, PEM.
    pub ca_pem: Vec<u8>,
    /// Client certificate chain and private key, PEM.
    pub identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to `endpoints` over plain HTTP, reads everything under `prefix` and starts
    /// the watch. Blocking: call it outside any tokio runtime.
    pub fn connect(endpoints: &[String], prefix: &str) -> Result<Self, Error> {
        Self::connect_with(endpoints, prefix, None)
    }

    /// As [`EtcdStore::connect`], with TLS when `tls` is given (`https://` endpoints).
    pub fn connect_with(
        endpoints: &[String],
        prefix: &str,
        tls: Option<&EtcdTls>,
    ) -> Result<Self, Error> {
        for e in endpoints {
            let https = e.starts_with("https://");
            if !https && !e.starts_with("http://") {
                return Err(Error::BadRequest(format!(
                    "etcd endpoint `{e}` must start with http:// or https://"
                )));
            }
            if https != tls.is_some() {
                return Err(Error::BadRequest(format!(
                    "etcd endpoint `{e}`: use https:// together with an etcd CA (--etcd-ca), \
                     http:// without"
                )));
            }
        }
        validate_prefix(prefix)?;
        if endpoints.is_empty() {
            return Err(Error::BadRequest("no etcd endpoint given".into()));
        }
        not_in_async()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("coffer-etcd")
            .enable_all()
            .build()
            .map_err(Error::Io)?;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let Some(tls) = tls {
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(Identity::from_pem(cert, key.as_slice()));
            }
            opts = opts.with_tls(t);
        }
        let client = rt
            .block_on(Client::connect(endpoints, Some(opts)))
            .map_err(|e| etcd_err("connect", e))?;
        let shared = Arc::new(Shared {
            mirror: Mutex::new(Mirror::default()),
            changed: Condvar::new(),
        });
        let store = Self {
            rt: Some(rt),
            client,
            prefix: format!("{prefix}/"),
            shared,
            key: None,
            leader: Arc::new(AtomicBool::new(false)),
        };
        store.resync()?;
        let (client, shared, pfx) = (
            store.client.clone(),
            store.shared.clone(),
            store.prefix.clone(),
        );
        store.rt().spawn(watch_loop(client, shared, pfx));
        Ok(store)
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        // Only `Drop` takes the runtime.
        self.rt.as_ref().expect("runtime present until drop")
    }

    /// Replaces the mirror with a fresh range read of the prefix.
    fn resync(&self) -> Result<(), Error> {
        let resync = resync(
            self.client.clone(),
            self.shared.clone(),
            self.prefix.clone(),
        );
        self.rt().block_on(resync)
    }

    /// [`EtcdStore::resync`], retried while the client moves off a dead member (bounded:
    /// [`RESYNC_ATTEMPTS`] tries, 300 ms apart).
    fn resync_retrying(&self) -> Result<(), Error> {
        let mut last = None;
        for _ in 0..RESYNC_ATTEMPTS {
            match self.resync() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Err(last.unwrap_or_else(|| Error::Store("etcd: re-sync failed".into())))
    }

    /// Uses `key` for `kv`/`audit` values from now on (after it was checked or unsealed).
    pub fn set_state_key(&mut self, key: StateKey) {
        self.key = Some(key);
    }

    fn state_key(&self) -> Result<&StateKey, Error> {
        self.key
            .as_ref()
            .ok_or_else(|| Error::Store("the etcd store is not unlocked yet".into()))
    }

    /// The mirror's revision: every change up to it is visible here.
    pub fn revision(&self) -> i64 {
        self.shared.lock().revision
    }

    fn full(&self, section: &str, name: &str) -> Vec<u8> {
        format!("{}{section}/{name}", self.prefix).into_bytes()
    }

    /// A plaintext `meta` value from the mirror.
    pub fn meta(&self, name: &str) -> Option<Vec<u8>> {
        let k = self.full("meta", name);
        self.shared.lock().entries.get(&k).map(|i| i.value.clone())
    }

    /// Plaintext `meta` entries whose name starts with `prefix`, in name order.
    pub fn meta_scan(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let start = self.full("meta", prefix);
        let base = self.full("meta", "").len();
        self.shared
            .lock()
            .entries
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .map(|(k, v)| {
                let name = String::from_utf8_lossy(k.get(base..).unwrap_or_default());
                (name.into_owned(), v.value.clone())
            })
            .collect()
    }

    /// How many `kv` keys start with `prefix` (nothing is decrypted).
    pub fn kv_count(&self, prefix: &str) -> usize {
        let start = self.full("kv", prefix);
        self.shared
            .lock()
            .entries
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .count()
    }

    /// The mod revision of a `kv` key in the mirror (0 if absent), for a [`Guard`].
    pub fn kv_revision(&self, name: &str) -> i64 {
        let k = self.full("kv", name);
        self.shared
            .lock()
            .entries
            .get(&k)
            .map_or(0, |i| i.mod_revision)
    }

    /// Reads and decrypts a `kv` value from the mirror.
    pub fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        let key = self.state_key()?;
        let k = self.full("kv", name);
        let item = self.shared.lock().entries.get(&k).cloned();
        match item {
            None => Ok(None),
            Some(i) => open_value(key.as_bytes(), &aad("kv", name), &i.value)
                .map(Some)
                .ok_or_else(|| {
                    Error::Store(format!(
                        "value `{name}` fails authentication (tampered store?)"
                    ))
                }),
        }
    }

    /// `kv` names starting with `prefix`, decrypted, in name order.
    pub fn scan(&self, prefix: &str) -> Result<Vec<crate::store::Entry>, Error> {
        let key = self.state_key()?;
        let start = self.full("kv", prefix);
        let base = self.full("kv", "").len();
        let items: Vec<(Vec<u8>, Item)> = {
            let m = self.shared.lock();
            m.entries
                .range(start.clone()..)
                .take_while(|(k, _)| k.starts_with(&start))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let mut out = Vec::with_capacity(items.len());
        for (k, i) in items {
            let name = String::from_utf8_lossy(k.get(base..).unwrap_or_default()).into_owned();
            let plain =
                open_value(key.as_bytes(), &aad("kv", &name), &i.value).ok_or_else(|| {
                    Error::Store(format!(
                        "value `{name}` fails authentication (tampered store?)"
                    ))
                })?;
            out.push((name, plain));
        }
        Ok(out)
    }

    /// Audit records after `after` (at most `limit`), decrypted.
    pub fn audit(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        let key = self.state_key()?;
        let start = self.full("audit", &format!("{:020}", after.saturating_add(1)));
        let base = self.full("audit", "");
        let items: Vec<(Vec<u8>, Item)> = {
            let m = self.shared.lock();
            m.entries
                .range(start..)
                .take_while(|(k, _)| k.starts_with(&base))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let mut out = Vec::with_capacity(items.len());
        for (k, i) in items {
            let seq: u64 = std::str::from_utf8(k.get(base.len()..).unwrap_or_default())
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::Store("malformed audit key in etcd".into()))?;
            let plain = open_value(key.as_bytes(), &aad("audit", &seq.to_string()), &i.value)
                .ok_or_else(|| Error::Store(format!("audit record {seq} fails authentication")))?;
            out.push((seq, plain.to_vec()));
        }
        Ok(out)
    }

    /// The next audit sequence number according to the mirror.
    fn next_audit_seq(&self) -> u64 {
        let base = self.full("audit", "");
        let m = self.shared.lock();
        let mut end = base.clone();
        if let Some(last) = end.last_mut() {
            *last += 1; // `/` + 1 = `0`: the first key after every `audit/…` key.
        }
        m.entries
            .range(base.clone()..end)
            .next_back()
            .and_then(|(k, _)| {
                std::str::from_utf8(k.get(base.len()..)?)
                    .ok()?
                    .parse::<u64>()
                    .ok()
            })
            .map_or(1, |s| s + 1)
    }

    /// Applies `ops` in one etcd transaction if every guard still holds. Blocking (writer
    /// thread only). Values are sealed here, exactly as in the embedded store.
    pub fn apply(&self, ops: &[WriteOp], guards: &[Guard]) -> Result<Commit, Error> {
        not_in_async()?;
        let needs_key = ops
            .iter()
            .any(|o| matches!(o, WriteOp::Put(..) | WriteOp::Audit(..)));
        let key = if needs_key {
            Some(self.state_key()?)
        } else {
            None
        };
        let mut compares = Vec::new();
        for g in guards {
            compares.push(match g {
                Guard::KvAbsent(n) => Compare::version(self.full("kv", n), CompareOp::Equal, 0),
                Guard::KvRevision(n, 0) => {
                    Compare::version(self.full("kv", n), CompareOp::Equal, 0)
                }
                Guard::KvRevision(n, r) => {
                    Compare::mod_revision(self.full("kv", n), CompareOp::Equal, *r)
                }
                Guard::MetaAbsent(n) => Compare::version(self.full("meta", n), CompareOp::Equal, 0),
            });
        }
        let mut seq = self.next_audit_seq();
        let mut first_audit = true;
        let mut txn_ops = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                WriteOp::Put(name, plain) => {
                    let k = key.ok_or_else(|| Error::Store("no state key".into()))?;
                    let sealed = seal_value(k.as_bytes(), &aad("kv", name), plain);
                    txn_ops.push(TxnOp::put(self.full("kv", name), sealed, None));
                }
                WriteOp::Delete(name) => txn_ops.push(TxnOp::delete(self.full("kv", name), None)),
                WriteOp::PutMeta(name, v) => {
                    txn_ops.push(TxnOp::put(self.full("meta", name), v.clone(), None))
                }
                WriteOp::DeleteMeta(name) => {
                    txn_ops.push(TxnOp::delete(self.full("meta", name), None))
                }
                WriteOp::Audit(plain) => {
                    let k = key.ok_or_else(|| Error::Store("no state key".into()))?;
                    let name = format!("{seq:020}");
                    if first_audit {
                        compares.push(Compare::version(
                            self.full("audit", &name),
                            CompareOp::Equal,
                            0,
                        ));
                        first_audit = false;
                    }
                    let sealed = seal_value(k.as_bytes(), &aad("audit", &seq.to_string()), plain);
                    txn_ops.push(TxnOp::put(self.full("audit", &name), sealed, None));
                    seq += 1;
                }
            }
        }
        let txn = Txn::new().when(compares).and_then(txn_ops);
        let mut client = self.client.clone();
        let resp = match self.rt().block_on(async move { client.txn(txn).await }) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "etcd transaction failed in transport; re-reading");
                return match self.resync_retrying() {
                    Ok(()) => Ok(Commit::Retry),
                    Err(last) => Err(etcd_err("transaction", last)),
                };
            }
        };
        let rev = resp.header().map_or(0, |h| h.revision());
        if !resp.succeeded() {
            return Ok(Commit::Conflict(rev));
        }
        self.refresh_to(rev)?;
        Ok(Commit::Done(rev))
    }

    /// Blocks until the mirror reflects revision `rev` (waiting for the watch, then re-syncing
    /// with a range read if it does not arrive in time).
    pub fn refresh_to(&self, rev: i64) -> Result<(), Error> {
        not_in_async()?;
        {
            let m = self.shared.lock();
            let (m, _) = self
                .shared
                .changed
                .wait_timeout_while(m, CATCH_UP, |m| m.revision < rev && !m.stale)
                .unwrap_or_else(|p| p.into_inner());
            if m.revision >= rev {
                return Ok(());
            }
        }
        // The watch did not deliver (other keys moved the revision, or it broke): re-read.
        self.resync_retrying()
    }

    /// Starts campaigning for leadership as `name` in the background (lease + guarded put).
    pub fn start_campaign(&self, name: &str) {
        let fut = campaign_loop(
            self.client.clone(),
            self.shared.clone(),
            format!("{}leader", self.prefix).into_bytes(),
            name.to_string(),
            self.leader.clone(),
        );
        self.rt().spawn(fut);
    }

    /// Whether this replica holds the leader lease (as last seen).
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// The current leader's name, from the mirror.
    pub fn leader(&self) -> Option<String> {
        let k = format!("{}leader", self.prefix).into_bytes();
        self.shared
            .lock()
            .entries
            .get(&k)
            .map(|i| String::from_utf8_lossy(&i.value).into_owned())
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Dropping a runtime inside an async context panics; shut it down without waiting.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .field("unlocked", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

fn aad(table: &str, key: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(table.len() + 1 + key.len());
    a.extend_from_slice(table.as_bytes());
    a.push(0);
    a.extend_from_slice(key.as_bytes());
    a
}

async fn resync(mut client: Client, shared: Arc<Shared>, prefix: String) -> Result<(), Error> {
    let resp = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.get(prefix.as_bytes(), Some(GetOptions::new().with_prefix())),
    )
    .await
    .map_err(|_| etcd_err("range read", "timed out"))?
    .map_err(|e| etcd_err("range read", e))?;
    let rev = resp.header().map_or(0, |h| h.revision());
    let mut m = shared.lock();
    if rev < m.revision {
        return Ok(()); // An older answer (another member lagging): keep the newer mirror.
    }
    m.entries = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key().to_vec(),
                Item {
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                },
            )
        })
        .collect();
    m.revision = rev;
    m.stale = false;
    shared.changed.notify_all();
    Ok(())
}

/// Keeps the mirror current: watch from the mirror's revision + 1; on cancel/compaction or
/// error, re-sync and watch again.
async fn watch_loop(client: Client, shared: Arc<Shared>, prefix: String) {
    loop {
        let start = shared.lock().revision + 1;
        let mut c = client.clone();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start)
            .with_progress_notify();
        match c.watch(prefix.as_bytes(), Some(opts)).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.canceled() || resp.compact_revision() > 0 {
                            tracing::warn!(
                                reason = resp.cancel_reason(),
                                "etcd watch cancelled; re-syncing the mirror"
                            );
                            break;
                        }
                        apply_events(&shared, &resp);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "etcd watch failed; re-syncing the mirror");
                        break;
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot start the etcd watch; retrying"),
        }
        shared.lock().stale = true;
        shared.changed.notify_all();
        loop {
            match resync(client.clone(), shared.clone(), prefix.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "etcd re-sync failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

fn apply_events(shared: &Shared, resp: &etcd_client::WatchResponse) {
    let mut m = shared.lock();
    // All events of one revision (one transaction) arrive in the same response, so what was
    // in the mirror before this response is the line below which events are already applied.
    let base = m.revision;
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        let rev = kv.mod_revision();
        if rev <= base {
            continue; // Already in the mirror through a re-sync.
        }
        match ev.event_type() {
            EventType::Put => {
                m.entries.insert(
                    kv.key().to_vec(),
                    Item {
                        value: kv.value().to_vec(),
                        mod_revision: rev,
                    },
                );
            }
            EventType::Delete => {
                m.entries.remove(kv.key());
            }
        }
        m.revision = m.revision.max(rev);
    }
    // A progress notification (no events, not the creation answer, whose header revision is
    // just "now") means every change up to its header revision of this range was delivered.
    if resp.events().is_empty() && !resp.created() {
        if let Some(h) = resp.header() {
            m.revision = m.revision.max(h.revision());
        }
    }
    shared.changed.notify_all();
}

/// Campaign: keep a lease alive and hold `<prefix>/leader` when it is free.
async fn campaign_loop(
    client: Client,
    shared: Arc<Shared>,
    key: Vec<u8>,
    name: String,
    leader: Arc<AtomicBool>,
) {
    loop {
        let mut c = client.clone();
        let lease = match c.lease_grant(LEADER_TTL_SECS, None).await {
            Ok(l) => l.id(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot get an etcd lease; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (mut keeper, mut acks) = match c.lease_keep_alive(lease).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "cannot keep the etcd lease alive; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let period = Duration::from_millis((LEADER_TTL_SECS as u64) * 1000 / 3);
        loop {
            // Keep-alive; a TTL of 0 in the answer means the lease is gone.
            let alive = match keeper.keep_alive().await {
                Ok(()) => matches!(
                    tokio::time::timeout(period, acks.message()).await,
                    Ok(Ok(Some(r))) if r.ttl() > 0
                ),
                Err(_) => false,
            };
            if !alive {
                leader.store(false, Ordering::SeqCst);
                tracing::warn!("lost the etcd leader lease; campaigning again");
                break;
            }
            let holder = shared.lock().entries.get(&key).map(|i| i.value.clone());
            match holder {
                Some(v) => leader.store(v == name.as_bytes(), Ordering::SeqCst),
                None => {
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(
                            key.clone(),
                            name.as_bytes(),
                            Some(PutOptions::new().with_lease(lease)),
                        )]);
                    if let Ok(r) = c.txn(txn).await {
                        if r.succeeded() {
                            leader.store(true, Ordering::SeqCst);
                            tracing::info!(replica = %name, "elected leader");
                        }
                    }
                }
            }
            tokio::time::sleep(period).await;
        }
    }
}

/// Seals nothing itself; re-exported so callers can build guards on the same names.
pub fn instance_guard(workload: &str, instance: &uuid::Uuid) -> Guard {
    Guard::KvAbsent(crate::writer::instance_key(workload, instance))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_validated() {
        for ok in ["/coffer", "/a/b-c_d.e", "/x1"] {
            validate_prefix(ok).unwrap();
        }
        for bad in ["", "/", "coffer", "/coffer/", "/a//b", "/co ffer", "/ü"] {
            assert!(
                matches!(validate_prefix(bad), Err(Error::BadRequest(_))),
                "{bad}"
            );
        }
    }

    /// A real single-member etcd in a temp dir (killed on drop).
    struct Etcd {
        _cluster: coffer_test_etcd::Cluster,
        url: String,
        _dir: tempfile::TempDir,
    }

    fn etcd() -> Option<Etcd> {
        etcd_with(None)
    }

    /// Files of a test PKI for etcd over mutual TLS.
    struct TestPki {
        dir: tempfile::TempDir,
        client: EtcdTls,
    }

    impl TestPki {
        fn path(&self, name: &str) -> std::path::PathBuf {
            self.dir.path().join(name)
        }
    }

    /// A CA, a server certificate for 127.0.0.1 and a client certificate (rcgen).
    fn test_pki() -> TestPki {
        use rcgen::{CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |ip: bool| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            if ip {
                p.subject_alt_names
                    .push(SanType::IpAddress([127, 0, 0, 1].into()));
            }
            let cert = p.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(true);
        let (client_cert, client_key) = leaf(false);
        for (name, body) in [
            ("ca.crt", ca_cert.pem()),
            ("server.crt", server_cert),
            ("server.key", server_key),
        ] {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        TestPki {
            dir,
            client: EtcdTls {
                ca_pem: ca_cert.pem().into_bytes(),
                identity: Some((
                    client_cert.into_bytes(),
                    Zeroizing::new(client_key.into_bytes()),
                )),
            },
        }
    }

    /// A single-member etcd; with `tls`, clients must use https and present a certificate
    /// signed by the test CA (`--client-cert-auth`).
    fn etcd_with(tls: Option<&TestPki>) -> Option<Etcd> {
        let dir = tempfile::tempdir().unwrap();
        let server = tls.map(|p| coffer_test_etcd::ServerTls {
            cert: p.path("server.crt"),
            key: p.path("server.key"),
            ca: p.path("ca.crt"),
        });
        let cluster = coffer_test_etcd::start(dir.path(), 1, server.as_ref())?;
        let e = Etcd {
            url: cluster.urls[0].clone(),
            _cluster: cluster,
            _dir: dir,
        };
        // Wait (generously) until it answers.
        for _ in 0..300 {
            let tls = tls.map(|p| &p.client);
            if EtcdStore::connect_with(std::slice::from_ref(&e.url), "/probe", tls).is_ok() {
                return Some(e);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not start");
    }

    fn unlocked(url: &str, key: &StateKey) -> EtcdStore {
        let mut s = EtcdStore::connect(&[url.to_string()], "/coffer-test").unwrap();
        s.set_state_key(key.clone());
        s
    }

    #[test]
    fn sealed_values_round_trip_and_replicas_see_each_other() {
        let Some(e) = etcd() else { return };
        let key = StateKey::generate();
        let a = unlocked(&e.url, &key);
        let b = unlocked(&e.url, &key);
        let c = a
            .apply(
                &[
                    WriteOp::Put("manifest".into(), b"M1".to_vec()),
                    WriteOp::PutMeta("key_check".into(), b"plain".to_vec()),
                    WriteOp::Audit(b"{\"n\":1}".to_vec()),
                    WriteOp::Audit(b"{\"n\":2}".to_vec()),
                ],
                &[Guard::KvAbsent("manifest".into())],
            )
            .unwrap();
        let Commit::Done(rev) = c else {
            panic!("{c:?}")
        };
        assert_eq!(a.get("manifest").unwrap().unwrap().as_slice(), b"M1");
        b.refresh_to(rev).unwrap();
        assert_eq!(b.get("manifest").unwrap().unwrap().as_slice(), b"M1");
        assert_eq!(b.meta("key_check").unwrap(), b"plain");
        let audit = b.audit(0, 10).unwrap();
        assert_eq!(audit.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2]);
        // etcd holds ciphertext only.
        let raw = b
            .shared
            .lock()
            .entries
            .get(&b.full("kv", "manifest"))
            .unwrap()
            .value
            .clone();
        assert!(!raw.windows(2).any(|w| w == b"M1"));
        // A replica with another state key refuses the values (authentication).
        let other = unlocked(&e.url, &StateKey::generate());
        other.refresh_to(rev).unwrap();
        assert!(
            matches!(other.get("manifest"), Err(Error::Store(m)) if m.contains("fails authentication"))
        );
        // A stale guard (manifest changed since it was read) conflicts: no lost update.
        let old = a.kv_revision("manifest");
        assert!(matches!(
            b.apply(
                &[WriteOp::Put("manifest".into(), b"M2".to_vec())],
                &[Guard::KvRevision("manifest".into(), old)]
            )
            .unwrap(),
            Commit::Done(_)
        ));
        let lost = a
            .apply(
                &[WriteOp::Put("manifest".into(), b"M3".to_vec())],
                &[Guard::KvRevision("manifest".into(), old)],
            )
            .unwrap();
        let Commit::Conflict(at) = lost else {
            panic!("{lost:?}")
        };
        a.refresh_to(at).unwrap();
        assert_eq!(a.get("manifest").unwrap().unwrap().as_slice(), b"M2");
        // Blocking calls refuse to run inside a tokio task.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let err = rt.block_on(async { a.apply(&[], &[]) }).unwrap_err();
        assert!(err.to_string().contains("inside an async task"));
    }

    /// Two replicas race to register 2×50 distinct instances against a limit of 60 with the
    /// decide / guard / retry loop the writer uses: exactly 60 win, audit sequence numbers are
    /// unique and gap-free.
    #[test]
    fn limit_is_exact_across_replicas() {
        let Some(e) = etcd() else { return };
        let key = StateKey::generate();
        let replicas = [unlocked(&e.url, &key), unlocked(&e.url, &key)];
        const MAX: usize = 60;
        let accepted = std::sync::atomic::AtomicUsize::new(0);
        let refused = std::sync::atomic::AtomicUsize::new(0);
        let started = std::time::Instant::now();
        std::thread::scope(|s| {
            for r in &replicas {
                let (accepted, refused) = (&accepted, &refused);
                s.spawn(move || {
                    for _ in 0..50 {
                        let id = uuid::Uuid::new_v4();
                        let mut tries = 0;
                        loop {
                            tries += 1;
                            assert!(tries < 200, "too many conflicts");
                            // Decide from the mirror, guarded by the counter's revision.
                            let counter = "count/w".to_string();
                            let rev = r.kv_revision(&counter);
                            let n: usize = r
                                .get(&counter)
                                .unwrap()
                                .map(|v| std::str::from_utf8(&v).unwrap().parse().unwrap())
                                .unwrap_or(0);
                            let mut guards = vec![Guard::KvRevision(counter.clone(), rev)];
                            let ops = if n >= MAX {
                                vec![WriteOp::Audit(b"refused".to_vec())]
                            } else {
                                guards.push(instance_guard("w", &id));
                                vec![
                                    WriteOp::Put(counter.clone(), (n + 1).to_string().into_bytes()),
                                    WriteOp::Put(crate::writer::instance_key("w", &id), vec![1]),
                                    WriteOp::Audit(b"accepted".to_vec()),
                                ]
                            };
                            match r.apply(&ops, &guards).unwrap() {
                                Commit::Done(_) => {
                                    if n >= MAX {
                                        refused.fetch_add(1, Ordering::SeqCst);
                                    } else {
                                        accepted.fetch_add(1, Ordering::SeqCst);
                                    }
                                    break;
                                }
                                Commit::Conflict(at) => r.refresh_to(at).unwrap(),
                                Commit::Retry => {}
                            }
                        }
                    }
                });
            }
        });
        // Printed for BENCHMARKS-style notes only; never asserted.
        eprintln!(
            "100 guarded decisions by 2 replicas (1 per transaction): {:?}",
            started.elapsed()
        );
        assert_eq!(accepted.load(Ordering::SeqCst), MAX);
        assert_eq!(refused.load(Ordering::SeqCst), 100 - MAX);
        let r = &replicas[0];
        r.refresh_to(replicas[1].revision()).unwrap();
        assert_eq!(r.scan("instance/w/").unwrap().len(), MAX);
        let seqs: Vec<u64> = r.audit(0, 1000).unwrap().iter().map(|a| a.0).collect();
        assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
    }

    #[test]
    fn mutual_tls_is_used_and_required() {
        let pki = test_pki();
        let Some(e) = etcd_with(Some(&pki)) else {
            return;
        };
        let urls = std::slice::from_ref(&e.url);
        let key = StateKey::generate();
        let mut s = EtcdStore::connect_with(urls, "/coffer-tls", Some(&pki.client)).unwrap();
        s.set_state_key(key);
        let c = s
            .apply(&[WriteOp::Put("k".into(), b"v".to_vec())], &[])
            .unwrap();
        assert!(matches!(c, Commit::Done(_)), "{c:?}");
        assert_eq!(s.get("k").unwrap().unwrap().as_slice(), b"v");
        // Without a client certificate etcd refuses the connection.
        let anonymous = EtcdTls {
            identity: None,
            ..pki.client.clone()
        };
        let err = EtcdStore::connect_with(urls, "/coffer-tls", Some(&anonymous)).unwrap_err();
        assert!(matches!(err, Error::Store(_)), "{err}");
        // A client trusting another CA refuses the server.
        let other = test_pki();
        let err = EtcdStore::connect_with(urls, "/coffer-tls", Some(&other.client)).unwrap_err();
        assert!(matches!(err, Error::Store(_)), "{err}");
        // Plain http to a TLS endpoint, or https without a CA, is a configuration error.
        let err = EtcdStore::connect(urls, "/coffer-tls").unwrap_err();
        assert!(matches!(err, Error::BadRequest(m) if m.contains("https://")));
    }

    #[test]
    fn leadership_moves_when_the_leader_goes_away() {
        let Some(e) = etcd() else { return };
        let a = EtcdStore::connect(std::slice::from_ref(&e.url), "/coffer-lead").unwrap();
        a.start_campaign("a");
        let mut ok = false;
        for _ in 0..200 {
            if a.is_leader() && a.leader().as_deref() == Some("a") {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(ok, "a never became leader");
        let b = EtcdStore::connect(std::slice::from_ref(&e.url), "/coffer-lead").unwrap();
        b.start_campaign("b");
        std::thread::sleep(Duration::from_secs(2));
        assert!(!b.is_leader(), "two leaders at once");
        drop(a); // Its keep-alives stop: the lease expires after the TTL.
        let mut moved = false;
        for _ in 0..300 {
            if b.is_leader() && b.leader().as_deref() == Some("b") {
                moved = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(moved, "b did not take over");
    }
}
