//! The etcd v3 backend for several Coordinator replicas sharing one sealed state
//! (`coffer coordinator --store etcd`; used through [`crate::state::Store`]).
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
//! - `<prefix>/meta/<name>`: meta values — nothing secret: `key_check`, `head` (the sealed
//!   state head, [`crate::state::head`]), `recovery` (envelope), `sealed/<replica>` (each
//!   replica's copy of the state key, sealed to its own platform), `join/<replica>` and
//!   `grant/<replica>` (key join messages, see [`crate::keyjoin`]).
//! - `<prefix>/kv/<name>`: `nonce ‖ AES-256-GCM(ciphertext ‖ tag)` under the state key with
//!   AAD = `kv ‖ 0 ‖ name`, the same format and AAD as the embedded store. etcd only ever sees
//!   ciphertext.
//! - `<prefix>/audit/<20-digit seq>`: audit records, AAD = `audit ‖ 0 ‖ seq` (decimal, as in
//!   the embedded store). Zero padding keeps etcd's byte order equal to the numeric order.
//! - `<prefix>/leader`: the elected replica's name, attached to its lease (plaintext).
//!
//! # Authentication of what the watch brings
//! etcd is as untrusted as a disk: whoever runs it can put, delete or restore any key. Once the
//! store is unlocked, the mirror carries an `Auth`: every watch answer (which holds all events
//! of the revisions it covers, never part of one) is folded into the set digest, and the state
//! head it brings must match what the mirror now holds, be newer than the last verified one,
//! and continue the audit chain. Anything else marks the state tampered, atomically with the
//! change (under the mirror's lock), so no read ever returns an unverified value. A re-sync
//! (range read) is checked in full against the last verified generation.
//!
//! # Writes: optimistic concurrency
//! Every commit of the authenticated state writes a new head, so a batch becomes ONE etcd
//! transaction whose compare is the head's mod revision as the batch's decisions saw it (plus
//! the absence of `meta` keys a decision relies on, such as a key-join grant). If another
//! replica committed first, the caller gets [`Commit::Conflict`] with the revision etcd answered
//! at; [`EtcdStore::refresh_to`] brings the mirror to at least that revision, and the caller
//! decides the batch again on the newer state. After a successful commit the call returns only
//! once the mirror has seen (and verified) the commit (read-your-writes on this replica).
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

use super::head::{self, Auth, Keys, Stored, Verdict};
use super::value::{Commit, Sealed, M_HEAD};
use crate::error::Error;

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

/// The replica's copy of everything under the prefix, and (once unlocked) its authentication.
pub(crate) struct Mirror {
    entries: BTreeMap<Vec<u8>, Item>,
    /// Every change up to this revision is reflected in `entries`.
    revision: i64,
    /// Set when the watch broke; cleared by a re-sync.
    stale: bool,
    /// `<prefix>/`.
    prefix: String,
    /// Set once the state key is known: every later change is checked against the head.
    auth: Option<Auth>,
    /// The mod revision of the head `auth` last verified.
    verified_head: i64,
}

/// Which part of the layout a key belongs to.
enum Section<'a> {
    Kv(&'a str),
    Audit(u64),
    Head,
    Other,
}

/// The section of a full etcd `key` under `prefix` (`<prefix>/`).
fn classify<'a>(prefix: &str, key: &'a [u8]) -> Section<'a> {
    let Some(rest) = key
        .strip_prefix(prefix.as_bytes())
        .and_then(|r| std::str::from_utf8(r).ok())
    else {
        return Section::Other;
    };
    if let Some(name) = rest.strip_prefix("kv/") {
        Section::Kv(name)
    } else if let Some(seq) = rest.strip_prefix("audit/") {
        // A malformed audit key is host-made: it counts as record 0, which never exists.
        Section::Audit(seq.parse().unwrap_or(0))
    } else if rest.strip_prefix("meta/") == Some(M_HEAD) {
        Section::Head
    } else {
        Section::Other
    }
}

impl Mirror {
    fn full(&self, section: &str, name: &str) -> Vec<u8> {
        format!("{}{section}/{name}", self.prefix).into_bytes()
    }

    /// The sealed `kv` value of `name`.
    pub(crate) fn kv(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .get(&self.full("kv", name))
            .map(|i| i.value.as_slice())
    }

    /// Sealed `kv` values whose name starts with `prefix`, in name order.
    pub(crate) fn kv_scan(&self, prefix: &str) -> Vec<(String, &[u8])> {
        let start = self.full("kv", prefix);
        let base = self.full("kv", "").len();
        self.entries
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .map(|(k, v)| {
                let name = String::from_utf8_lossy(k.get(base..).unwrap_or_default());
                (name.into_owned(), v.value.as_slice())
            })
            .collect()
    }

    /// Sealed audit records from sequence number `from`, at most `limit`.
    pub(crate) fn audit(&self, from: u64, limit: usize) -> Vec<(u64, Vec<u8>)> {
        let start = self.full("audit", &format!("{from:020}"));
        let base = self.full("audit", "");
        self.entries
            .range(start..)
            .take_while(|(k, _)| k.starts_with(&base))
            .take(limit)
            .filter_map(|(k, v)| {
                let seq = std::str::from_utf8(k.get(base.len()..)?)
                    .ok()?
                    .parse()
                    .ok()?;
                Some((seq, v.value.clone()))
            })
            .collect()
    }

    /// The mod revision of the state head (0: none).
    pub(crate) fn head_revision(&self) -> i64 {
        self.entries
            .get(&self.full("meta", M_HEAD))
            .map_or(0, |i| i.mod_revision)
    }

    /// The authentication, once unlocked.
    pub(crate) fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    /// Every change up to this revision is reflected here.
    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    /// The mod revision of a `kv` value (0: absent).
    pub(crate) fn kv_revision(&self, name: &str) -> i64 {
        self.entries
            .get(&self.full("kv", name))
            .map_or(0, |i| i.mod_revision)
    }

    /// The sealed state head as stored now.
    pub(crate) fn head_sealed(&self) -> Option<Vec<u8>> {
        self.entries
            .get(&self.full("meta", M_HEAD))
            .map(|i| i.value.clone())
    }

    /// The mod revision of the last head that verified.
    pub(crate) fn verified_head_revision(&self) -> i64 {
        self.verified_head
    }

    /// Checks the whole mirror against its head (see [`head::verify`]).
    fn verify(&self, keys: &Keys, seen_generation: u64) -> Verdict {
        let kv_base = self.full("kv", "");
        let kv_end = self.full("kv0", "");
        let audit_base = self.full("audit", "");
        let head = self.entries.get(&self.full("meta", M_HEAD));
        let kv = self
            .entries
            .range(kv_base.clone()..kv_end)
            .filter_map(|(k, v)| {
                let name = std::str::from_utf8(k.get(kv_base.len()..)?).ok()?;
                Some((name, v.value.as_slice()))
            });
        let audit = self
            .entries
            .range(audit_base.clone()..)
            .take_while(|(k, _)| k.starts_with(&audit_base))
            .map(|(k, v)| {
                let seq = std::str::from_utf8(k.get(audit_base.len()..).unwrap_or_default())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                (seq, v.value.clone())
            });
        head::verify(
            keys,
            Stored {
                head: head.map(|i| i.value.as_slice()),
                kv,
                audit,
            },
            seen_generation,
        )
    }

    /// Whether anything of a state is stored (the key check, the head, values or records).
    fn has_state(&self) -> bool {
        let any = |section: &str| {
            let p = self.full(section, "");
            self.entries
                .range(p.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&p))
        };
        any("kv") || any("audit") || self.entries.contains_key(&self.full("meta", M_HEAD))
    }
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

/// The etcd-backed store of one replica: connection, mirror of the prefix, optional state key.
pub struct EtcdStore {
    rt: Option<tokio::runtime::Runtime>,
    client: Client,
    prefix: String,
    shared: Arc<Shared>,
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
            mirror: Mutex::new(Mirror {
                entries: BTreeMap::new(),
                revision: 0,
                stale: false,
                prefix: format!("{prefix}/"),
                auth: None,
                verified_head: 0,
            }),
            changed: Condvar::new(),
        });
        let store = Self {
            rt: Some(rt),
            client,
            prefix: format!("{prefix}/"),
            shared,
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

    /// The mirror, locked: reads that must see one consistent state go through it.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Mirror> {
        self.shared.lock()
    }

    /// Checks the mirror against its head with `keys` and, if it verifies, keeps checking
    /// every later change (see the module docs). `seen_generation`: the newest generation this
    /// process verified before.
    pub(crate) fn unlock(&self, keys: &Keys, seen_generation: u64) -> Result<(), head::Rejected> {
        let mut m = self.shared.lock();
        match m.verify(keys, seen_generation) {
            Verdict::Verified(auth) => {
                m.auth = Some(auth);
                m.verified_head = m.head_revision();
                Ok(())
            }
            Verdict::Tampered(f, h) => Err(Box::new((f, h))),
        }
    }

    /// Whether anything of a state is stored.
    pub(crate) fn has_state(&self) -> bool {
        self.shared.lock().has_state()
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

    /// The mod revision of a `kv` key in the mirror (0 if absent), for a guard.
    pub fn kv_revision(&self, name: &str) -> i64 {
        let k = self.full("kv", name);
        self.shared
            .lock()
            .entries
            .get(&k)
            .map_or(0, |i| i.mod_revision)
    }

    /// The mod revision of the state head in the mirror (0: none): what a decision taken now
    /// is guarded by.
    pub fn head_revision(&self) -> i64 {
        self.shared.lock().head_revision()
    }

    /// Writes `writes` (and the new head `head`) in one etcd transaction, if the state head
    /// still has mod revision `base` (`None`: no head guard) and every `meta` key in
    /// `meta_absent` is absent. Blocking (writer thread only).
    pub(crate) fn commit(
        &self,
        writes: &[Sealed],
        head: Option<&[u8]>,
        base: Option<i64>,
        meta_absent: &[String],
    ) -> Result<Commit, Error> {
        not_in_async()?;
        let mut compares = Vec::new();
        if let Some(base) = base {
            let key = self.full("meta", M_HEAD);
            compares.push(if base == 0 {
                Compare::version(key, CompareOp::Equal, 0)
            } else {
                Compare::mod_revision(key, CompareOp::Equal, base)
            });
        }
        for n in meta_absent {
            compares.push(Compare::version(self.full("meta", n), CompareOp::Equal, 0));
        }
        let mut txn_ops = Vec::with_capacity(writes.len() + 1);
        for w in writes {
            txn_ops.push(match w {
                Sealed::Kv(n, Some(v)) => TxnOp::put(self.full("kv", n), v.clone(), None),
                Sealed::Kv(n, None) => TxnOp::delete(self.full("kv", n), None),
                Sealed::Meta(n, Some(v)) => TxnOp::put(self.full("meta", n), v.clone(), None),
                Sealed::Meta(n, None) => TxnOp::delete(self.full("meta", n), None),
                Sealed::Audit(seq, Some(v)) => {
                    TxnOp::put(self.full("audit", &format!("{seq:020}")), v.clone(), None)
                }
                Sealed::Audit(seq, None) => {
                    TxnOp::delete(self.full("audit", &format!("{seq:020}")), None)
                }
            });
        }
        if let Some(h) = head {
            txn_ops.push(TxnOp::put(self.full("meta", M_HEAD), h.to_vec(), None));
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

    /// Brings the mirror to etcd's current revision (a linearizable read of the revision, then
    /// waiting for the watch): afterwards this replica has seen every commit acknowledged
    /// before the call. Blocking.
    pub fn sync(&self) -> Result<(), Error> {
        // On a plain thread: callers may be on a tokio blocking thread, where the checks of
        // the blocking calls below would (rightly) refuse to run.
        std::thread::scope(|s| {
            s.spawn(|| {
                // A member that went away stays in the client's endpoint list for a while: a
                // failed read is retried (another member answers) before the caller sees it.
                let mut last = None;
                for _ in 0..RESYNC_ATTEMPTS {
                    match self.current_revision() {
                        Ok(rev) => return self.refresh_to(rev),
                        Err(e) => last = Some(e),
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(last.unwrap_or_else(|| etcd_err("sync", "no answer")))
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Store("etcd sync thread panicked".into())))
        })
    }

    /// The cluster's current revision (a count-only read of the head key). Blocking.
    fn current_revision(&self) -> Result<i64, Error> {
        let mut client = self.client.clone();
        let key = self.full("meta", M_HEAD);
        let resp = self
            .rt()
            .block_on(async move {
                tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    client.get(key, Some(GetOptions::new().with_count_only())),
                )
                .await
            })
            .map_err(|_| etcd_err("sync", "timed out"))?
            .map_err(|e| etcd_err("sync", e))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
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
            .finish_non_exhaustive()
    }
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
    // A re-sync replaces everything at once: check all of it, never going below the
    // generation already verified.
    if let Some(auth) = &m.auth {
        if auth.tampered().is_none() {
            let keys = auth.keys().clone();
            let seen = auth.head().generation;
            match m.verify(&keys, seen) {
                Verdict::Verified(fresh) => {
                    m.auth = Some(fresh);
                    m.verified_head = m.head_revision();
                }
                Verdict::Tampered(findings, _) => {
                    tracing::error!(findings = ?head::describe(&findings), "etcd re-sync: the state was TAMPERED with");
                    if let Some(a) = m.auth.as_mut() {
                        a.mark_tampered(findings);
                    }
                }
            }
        }
    }
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
    let mut guard = shared.lock();
    let m = &mut *guard;
    // All events of one revision (one transaction) arrive in the same response, so what was
    // in the mirror before this response is the line below which events are already applied.
    let base = m.revision;
    let mut touched = false;
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        let rev = kv.mod_revision();
        if rev <= base {
            continue; // Already in the mirror through a re-sync.
        }
        let new = match ev.event_type() {
            EventType::Put => Some(kv.value()),
            EventType::Delete => None,
        };
        let old = match new {
            Some(v) => m.entries.insert(
                kv.key().to_vec(),
                Item {
                    value: v.to_vec(),
                    mod_revision: rev,
                },
            ),
            None => m.entries.remove(kv.key()),
        };
        if let Some(auth) = m.auth.as_mut() {
            touched |= match classify(&m.prefix, kv.key()) {
                Section::Kv(name) => {
                    auth.on_kv(name, old.as_ref().map(|i| i.value.as_slice()), new);
                    true
                }
                Section::Audit(seq) => {
                    auth.on_audit(seq, old.is_some(), new);
                    true
                }
                Section::Head => {
                    auth.on_head(new);
                    true
                }
                Section::Other => false,
            };
        }
        m.revision = m.revision.max(rev);
    }
    if touched {
        let head_rev = m.head_revision();
        if let Some(auth) = m.auth.as_mut() {
            let was_trusted = auth.tampered().is_none();
            if auth.settle() {
                m.verified_head = head_rev;
            } else if was_trusted {
                tracing::error!(
                    findings = ?auth.tampered().map(head::describe),
                    revision = m.revision,
                    "etcd: the shared state was TAMPERED with; refusing to serve it"
                );
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{
        describe, Guard, Initialised, RawStore, StateKey, Store, Unlocked, WriteOp,
    };

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

    /// A store under `prefix`, created with `key` or (if another replica created it) opened.
    fn store(url: &str, prefix: &str, key: &StateKey) -> Store {
        store_with(url, prefix, key, None)
    }

    fn store_with(url: &str, prefix: &str, key: &StateKey, tls: Option<&EtcdTls>) -> Store {
        let raw = RawStore::open_etcd(&[url.to_string()], prefix, tls).unwrap();
        let raw = if raw.is_initialised().unwrap() {
            raw
        } else {
            match raw.initialise(key.clone(), vec![]).unwrap() {
                Initialised::Created(s) => return s,
                Initialised::Lost(r) => r,
            }
        };
        match raw.unlock(key.clone(), 0).unwrap() {
            Unlocked::Verified(s) => s,
            Unlocked::Tampered(t) => panic!("tampered: {:?}", t.findings()),
        }
    }

    fn audit(event: &str) -> WriteOp {
        WriteOp::Audit(coffer_api::AuditRecord {
            seq: 0,
            prev: [0; 32],
            time: 1,
            event: event.into(),
            outcome: "accepted".into(),
            workload: None,
            instance: None,
            user: None,
            detail: None,
            chain_breaks: vec![],
        })
    }

    #[test]
    fn sealed_values_round_trip_and_replicas_see_each_other() {
        let Some(e) = etcd() else { return };
        let key = StateKey::generate();
        let a = store(&e.url, "/coffer-test", &key);
        let b = store(&e.url, "/coffer-test", &key);
        a.apply(&[
            WriteOp::Put("config".into(), b"M1".to_vec()),
            audit("one"),
            audit("two"),
        ])
        .unwrap();
        assert_eq!(a.get("config").unwrap().unwrap().as_slice(), b"M1");
        b.etcd()
            .unwrap()
            .refresh_to(a.etcd().unwrap().revision())
            .unwrap();
        assert_eq!(b.get("config").unwrap().unwrap().as_slice(), b"M1");
        let records = b.audit(0, 10).unwrap();
        assert_eq!(
            records.iter().map(|r| r.event.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert_eq!(records[1].prev, records[0].chain_hash());
        assert_eq!(b.head().unwrap(), a.head().unwrap());
        // etcd holds ciphertext only.
        let raw = {
            let m = b.etcd().unwrap().lock();
            m.kv("config").unwrap().to_vec()
        };
        assert!(!raw.windows(2).any(|w| w == b"M1"));
        // Another key does not open this state.
        let other =
            RawStore::open_etcd(std::slice::from_ref(&e.url), "/coffer-test", None).unwrap();
        assert!(matches!(
            other.unlock(StateKey::generate(), 0),
            Err(Error::Unseal(_))
        ));
        // A stale guard (the value changed since it was read) conflicts: no lost update.
        let old = a.kv_revision("config");
        let base = b.head_revision();
        let c = b
            .apply_guarded(
                &[WriteOp::Put("config".into(), b"M2".to_vec())],
                &[Guard::KvRevision("config".into(), old)],
                base,
            )
            .unwrap();
        assert!(matches!(c, Commit::Done(_)), "{c:?}");
        let lost = a
            .apply_guarded(
                &[WriteOp::Put("config".into(), b"M3".to_vec())],
                &[Guard::KvRevision("config".into(), old)],
                base,
            )
            .unwrap();
        let Commit::Conflict(at) = lost else {
            panic!("{lost:?}")
        };
        a.etcd().unwrap().refresh_to(at).unwrap();
        assert_eq!(a.get("config").unwrap().unwrap().as_slice(), b"M2");
        // Blocking calls refuse to run inside a tokio task.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let err = rt
            .block_on(async { a.apply(&[WriteOp::Put("x".into(), vec![])]) })
            .unwrap_err();
        assert!(err.to_string().contains("inside an async task"), "{err}");
    }

    /// Two replicas race to register 2×50 distinct instances against a limit of 60 with the
    /// decide / guard / retry loop the writer uses (the decision reads the count at one state
    /// head; the commit is guarded by that head): exactly 60 win, and the audit chain has 100
    /// linked records.
    #[test]
    fn limit_is_exact_across_replicas() {
        let Some(e) = etcd() else { return };
        let key = StateKey::generate();
        let replicas = [
            store(&e.url, "/coffer-limit", &key),
            store(&e.url, "/coffer-limit", &key),
        ];
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
                            let base = r.head_revision();
                            let n = r.count("instance/w/").unwrap();
                            let name = crate::state::writer::instance_key("w", &id);
                            let (ops, guards) = if n >= MAX {
                                (vec![audit("refused")], vec![])
                            } else {
                                (
                                    vec![WriteOp::Put(name.clone(), vec![1]), audit("accepted")],
                                    vec![Guard::KvAbsent(name)],
                                )
                            };
                            match r.apply_guarded(&ops, &guards, base).unwrap() {
                                Commit::Done(_) => {
                                    if n >= MAX {
                                        refused.fetch_add(1, Ordering::SeqCst);
                                    } else {
                                        accepted.fetch_add(1, Ordering::SeqCst);
                                    }
                                    break;
                                }
                                Commit::Conflict(at) => r.etcd().unwrap().refresh_to(at).unwrap(),
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
        r.etcd()
            .unwrap()
            .refresh_to(replicas[1].etcd().unwrap().revision())
            .unwrap();
        assert_eq!(r.scan("instance/w/").unwrap().len(), MAX);
        let records = r.audit(0, 1000).unwrap();
        assert_eq!(
            records.iter().map(|a| a.seq).collect::<Vec<u64>>(),
            (1..=100).collect::<Vec<u64>>()
        );
        let check = coffer_api::verify_audit(&records).unwrap();
        assert_eq!(check.head, r.head().unwrap().audit_head);
    }

    /// The host edits etcd under running replicas: every edit is found by the watch, before
    /// any read returns the edited state, with the finding that names it.
    #[test]
    fn host_edits_of_etcd_are_found_while_running() {
        let Some(e) = etcd() else { return };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut host = rt
            .block_on(Client::connect([e.url.as_str()], None))
            .unwrap();
        let mut case = 0;
        let mut run = |what: &str, edit: &dyn Fn(&mut Client, &str, &Store), expect: &str| {
            case += 1;
            let prefix = format!("/tamper-{case}");
            let s = store(&e.url, &prefix, &StateKey::generate());
            s.apply(&[
                WriteOp::Put("secret/shared/a".into(), b"A1".to_vec()),
                WriteOp::Put("secret/shared/b".into(), b"B1".to_vec()),
                audit("one"),
            ])
            .unwrap();
            s.apply(&[
                WriteOp::Put("secret/shared/a".into(), b"A2".to_vec()),
                audit("two"),
            ])
            .unwrap();
            edit(&mut host, &prefix, &s);
            let mut found = None;
            for _ in 0..100 {
                if let Some(f) = s.tampered() {
                    found = Some(describe(&f).join("; "));
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let found = found.unwrap_or_else(|| panic!("{what}: not detected"));
            assert!(found.contains(expect), "{what}: {found}");
            assert!(
                matches!(s.get("secret/shared/b"), Err(Error::Tampered(_))),
                "{what}"
            );
            assert!(
                matches!(s.apply(&[audit("x")]), Err(Error::Tampered(_))),
                "{what}"
            );
        };
        let get = |c: &mut Client, k: String, rev: i64| -> Vec<u8> {
            let opts = GetOptions::new().with_revision(rev);
            rt.block_on(c.get(k, Some(opts))).unwrap().kvs()[0]
                .value()
                .to_vec()
        };
        let put = |c: &mut Client, k: String, v: Vec<u8>| {
            rt.block_on(c.put(k, v, None)).unwrap();
        };
        let del = |c: &mut Client, k: String| {
            rt.block_on(c.delete(k, None)).unwrap();
        };
        // The revision of the first commit: older values and heads live there.
        let first = |c: &mut Client, p: &str| {
            let r = rt
                .block_on(c.get(format!("{p}/kv/secret/shared/b"), None))
                .unwrap();
            r.kvs()[0].mod_revision()
        };
        run(
            "delete a value",
            &|c, p, _| del(c, format!("{p}/kv/secret/shared/b")),
            "1 value(s) were deleted",
        );
        run(
            "put back an older value",
            &|c, p, _| {
                let rev = first(c, p);
                let old = get(c, format!("{p}/kv/secret/shared/a"), rev);
                put(c, format!("{p}/kv/secret/shared/a"), old);
            },
            "a value was replaced",
        );
        run(
            "swap two values",
            &|c, p, _| {
                let a = get(c, format!("{p}/kv/secret/shared/a"), 0);
                let b = get(c, format!("{p}/kv/secret/shared/b"), 0);
                let txn = Txn::new().and_then([
                    TxnOp::put(format!("{p}/kv/secret/shared/a"), b, None),
                    TxnOp::put(format!("{p}/kv/secret/shared/b"), a, None),
                ]);
                rt.block_on(c.txn(txn)).unwrap();
            },
            "a value was replaced",
        );
        run(
            "add a value",
            &|c, p, _| put(c, format!("{p}/kv/secret/shared/c"), vec![0; 40]),
            "1 value(s) were added",
        );
        run(
            "drop an audit record",
            &|c, p, _| del(c, format!("{p}/audit/{:020}", 2)),
            "audit record 2 was deleted or rewritten",
        );
        run(
            "roll the head back",
            &|c, p, _| {
                let rev = first(c, p);
                let old = get(c, format!("{p}/meta/head"), rev);
                put(c, format!("{p}/meta/head"), old);
            },
            "the state was rolled back",
        );
        run(
            "roll everything back to the first commit",
            &|c, p, _| {
                let rev = first(c, p);
                let a = get(c, format!("{p}/kv/secret/shared/a"), rev);
                let h = get(c, format!("{p}/meta/head"), rev);
                let txn = Txn::new().and_then([
                    TxnOp::put(format!("{p}/kv/secret/shared/a"), a, None),
                    TxnOp::delete(format!("{p}/audit/{:020}", 2), None),
                    TxnOp::put(format!("{p}/meta/head"), h, None),
                ]);
                rt.block_on(c.txn(txn)).unwrap();
            },
            "the state was rolled back",
        );
    }

    /// The same edits under a stopped replica are found when it opens.
    #[test]
    fn host_edits_of_etcd_are_found_at_start_up() {
        let Some(e) = etcd() else { return };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut host = rt
            .block_on(Client::connect([e.url.as_str()], None))
            .unwrap();
        let key = StateKey::generate();
        {
            let s = store(&e.url, "/stopped", &key);
            s.apply(&[
                WriteOp::Put("secret/shared/a".into(), b"A".to_vec()),
                audit("one"),
            ])
            .unwrap();
        }
        rt.block_on(host.delete("/stopped/kv/secret/shared/a", None))
            .unwrap();
        let raw = RawStore::open_etcd(std::slice::from_ref(&e.url), "/stopped", None).unwrap();
        match raw.unlock(key, 0).unwrap() {
            Unlocked::Verified(_) => panic!("a deleted value was not found"),
            Unlocked::Tampered(t) => {
                let f = describe(t.findings()).join("; ");
                assert!(f.contains("1 value(s) were deleted"), "{f}");
            }
        }
    }

    #[test]
    fn mutual_tls_is_used_and_required() {
        let pki = test_pki();
        let Some(e) = etcd_with(Some(&pki)) else {
            return;
        };
        let urls = std::slice::from_ref(&e.url);
        let s = store_with(
            &e.url,
            "/coffer-tls",
            &StateKey::generate(),
            Some(&pki.client),
        );
        s.apply(&[WriteOp::Put("k".into(), b"v".to_vec())]).unwrap();
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
