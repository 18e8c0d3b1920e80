//! The Coordinator's state machine and decisions, independent of HTTP: start-up (unseal or
//! recovery), manifest set/update, activation, user secrets, audit, recovery.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use base64::Engine;
use coffer_api::{
    ActivationRequest, ActivationResponse, AuditRecord, CoordinatorState, ErrorKind, FileParameter,
    Parameters,
};
use coffer_manifest::{Action, Manifest, MeasurementClaims, ResourceKind, SecretKind, Target, Tee};
use rcgen::KeyPair;
use sha2::Digest;

use crate::error::Error;
use crate::keyjoin::{self, Joiner, GRANT_PREFIX, JOIN_PREFIX};
use crate::metrics::{ActivationLabels, Metrics};
use crate::pki::{self, Ca, CaMaterial};
use crate::platform::{EvidenceVerifier, Platform};
use crate::recovery::{self, Envelope, Session};
use crate::replica::StoreConfig;
use crate::seal::Sealer;
use crate::secrets::{self, ActivationSource, StoredSecret};
use crate::state::writer::{instance_key, Job, Outcome, Register, Writer};
use crate::state::{
    describe, Commit, Guard, Initialised, RawStore, StateKey, Store, TamperedStore, WriteOp,
};
use crate::tls::CertSlot;

/// Start-up settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the store (and, in simulation, the sealing key file) live.
    pub data_dir: PathBuf,
    /// Lifetime of workload certificates, hours.
    pub cert_hours: u32,
    /// Embedded (one Coordinator) or etcd (replicas sharing one state).
    pub store: StoreConfig,
    /// TCB statuses a replica's platform may have to join this one's state or grant it the
    /// state key (key join); empty means `UpToDate` only. `Revoked` is never accepted.
    pub accepted_tcb_statuses: Vec<String>,
    /// The owner's client certificate (DER): when set, only a client presenting it (or a
    /// certificate with its key) may set the first manifest. `None`: anyone may, as in
    /// Marblerun; set the manifest before exposing the port.
    pub owner_certificate: Option<Vec<u8>>,
}

impl Config {
    /// `meta` name of this Coordinator's sealed copy of the state key: one per replica with
    /// etcd, since each node has its own sealing key.
    fn sealed_name(&self) -> String {
        match self.store.replica() {
            None => M_SEALED.into(),
            Some(r) => format!("{M_SEALED_PREFIX}{r}"),
        }
    }
}

/// Store file name inside the data directory.
pub const STORE_FILE: &str = "state.redb";
/// Simulated sealing key file name inside the data directory.
pub const SEALING_KEY_FILE: &str = "sealing.key";

const K_CA: &str = "ca";
const K_MANIFEST: &str = crate::state::head::K_MANIFEST;
const M_SEALED: &str = "sealed_state_key";
const M_SEALED_PREFIX: &str = "sealed/";
const M_RECOVERY: &str = "recovery";

/// The manifest in force with what is derived from it.
pub struct LoadedManifest {
    /// The validated manifest.
    pub manifest: Manifest,
    /// Canonical hash, hex.
    pub hash: String,
}

/// What requests read: replaced as a whole on every change.
pub struct Snapshot {
    /// The CA.
    pub ca: Arc<Ca>,
    /// The manifest, once set.
    pub manifest: Option<Arc<LoadedManifest>>,
    /// etcd mod revisions of the manifest and CA values this snapshot was built from (0 with
    /// the embedded store): decisions made on it are guarded by them, and a replica reloads
    /// when another one changed them.
    revisions: (i64, i64),
}

impl Snapshot {
    /// Guards that hold only while the manifest and CA are still those of this snapshot.
    fn guards(&self) -> Vec<Guard> {
        vec![
            Guard::KvRevision(K_MANIFEST.into(), self.revisions.0),
            Guard::KvRevision(K_CA.into(), self.revisions.1),
        ]
    }
}

struct Ready {
    store: Arc<Store>,
    writer: Writer,
    snapshot: RwLock<Arc<Snapshot>>,
}

struct Recovering {
    raw: Mutex<Option<RawStore>>,
    session: Mutex<Session>,
    self_cert: Vec<u8>,
    /// etcd: the key join this replica keeps open while it waits in recovery mode.
    joiner: Mutex<Option<Joiner>>,
}

/// A state that does not match its authenticated head: nothing of it is served.
struct Tampered {
    /// What was found, and when.
    report: coffer_api::TamperReport,
    /// The state, for the recovery-key holders' re-authentication.
    state: Mutex<Option<TamperedState>>,
    /// Their upload session (`None` when the manifest had no recovery keys).
    session: Option<Mutex<Session>>,
    /// The attested self-signed TLS certificate (the CA is in the untrusted state).
    self_cert: Vec<u8>,
}

/// Where a tampered state was found.
enum TamperedState {
    /// At start-up: the store never opened.
    Opened(Box<TamperedStore>),
    /// While serving: the store that stopped verifying.
    Running(Arc<Store>),
}

enum Mode {
    Ready(Arc<Ready>),
    Recovery(Arc<Recovering>),
    Tampered(Arc<Tampered>),
}

/// The Coordinator.
pub struct Coordinator {
    config: Config,
    platform: Platform,
    /// Shared with blocking tasks: quote verification runs off the async workers.
    verifier: Arc<EvidenceVerifier>,
    sealer: Sealer,
    mode: RwLock<Arc<Mode>>,
    metrics: Metrics,
    tls: Arc<CertSlot>,
    /// Serialises manifest set/update and recovery (rare, multi-step changes).
    change_lock: tokio::sync::Mutex<()>,
    /// This Coordinator's own measurement (etcd: key joins compare against it); computed once.
    own_claims: std::sync::OnceLock<MeasurementClaims>,
    /// Join requests already refused (by content hash), so each is refused and audited once.
    refused_joins: Mutex<std::collections::HashSet<[u8; 32]>>,
    /// Refused activations that proved nothing: limited per peer, summarised.
    refusals: crate::refusals::Refusals,
}

/// A state opened with a key from recovery or a key join.
enum Reopened {
    /// It verifies: serve it after writing these ops.
    Ready(Ready, Vec<WriteOp>),
    /// It does not: tampered mode was entered.
    Tampered,
}

/// What start-up found.
enum Unlocked {
    Ready(Store),
    Recovery(RawStore, Envelope, Error),
    Tampered(TamperedStore),
}

impl From<crate::state::Unlocked> for Unlocked {
    fn from(u: crate::state::Unlocked) -> Self {
        match u {
            crate::state::Unlocked::Verified(s) => Unlocked::Ready(s),
            crate::state::Unlocked::Tampered(t) => Unlocked::Tampered(t),
        }
    }
}

/// Current Unix time in seconds (the server is the edge that reads the clock).
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Longest string field an audit record stores (longer ones are cut, marked `…`): records
/// carry names and reasons, some of them chosen by whoever sent the request.
const MAX_AUDIT_FIELD: usize = 1024;

fn audit_op(rec: &AuditRecord) -> WriteOp {
    let cap = |s: &Option<String>| {
        s.as_ref().map(|v| {
            if v.len() <= MAX_AUDIT_FIELD {
                return v.clone();
            }
            let mut end = MAX_AUDIT_FIELD;
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &v[..end])
        })
    };
    let mut r = rec.clone();
    r.workload = cap(&rec.workload);
    r.instance = cap(&rec.instance);
    r.user = cap(&rec.user);
    r.detail = cap(&rec.detail);
    WriteOp::Audit(r)
}

fn record(event: &str, outcome: &str) -> AuditRecord {
    AuditRecord {
        seq: 0,
        prev: [0; 32],
        chain_breaks: Vec::new(),
        time: now_unix(),
        event: event.into(),
        outcome: outcome.into(),
        workload: None,
        instance: None,
        user: None,
        detail: None,
    }
}

fn kind_label(kind: &ErrorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "internal".into())
}

impl Coordinator {
    /// Opens (or initialises) the state in `config.data_dir` and prepares the TLS certificate.
    /// If the state key cannot be unsealed and the store has a recovery envelope, the
    /// Coordinator starts in recovery mode.
    pub fn open(
        config: Config,
        platform: Platform,
        verifier: EvidenceVerifier,
        sealer: Sealer,
    ) -> Result<Self, Error> {
        create_private_dir(&config.data_dir)?;
        let now = now_unix();
        let raw = match &config.store {
            StoreConfig::Embedded => RawStore::open(&config.data_dir.join(STORE_FILE))?,
            StoreConfig::Etcd {
                endpoints,
                prefix,
                replica,
                tls,
                ..
            } => {
                crate::replica::validate_name(replica)?;
                // etcd may still be starting (a new cluster, a rescheduled pod): keep trying
                // for the join timeout, then fail with etcd's own error.
                let deadline = Instant::now() + config.store.join_timeout();
                let raw = loop {
                    match RawStore::open_etcd(endpoints, prefix, tls.as_ref()) {
                        Ok(raw) => break raw,
                        Err(Error::Store(e)) if Instant::now() < deadline => {
                            tracing::warn!(error = %e, "etcd not reachable yet; retrying");
                            std::thread::sleep(std::time::Duration::from_millis(500));
                        }
                        Err(e) => return Err(e),
                    }
                };
                if let Some(e) = raw.etcd() {
                    e.start_campaign(replica);
                }
                raw
            }
        };
        let simulation = platform.is_simulation();
        let self_signed = || self_signed_cert(&platform, now);
        let metrics = Metrics::new(simulation);
        let mode = match Self::unlock_state(&config, &platform, &verifier, &sealer, raw)? {
            Unlocked::Ready(store) => Mode::Ready(Arc::new(Self::ready(Arc::new(store))?)),
            Unlocked::Recovery(raw, envelope, e) => {
                tracing::warn!(error = %e, "state key cannot be unsealed: starting in RECOVERY mode");
                let (cert, slot_key) = self_signed()?;
                let rec = Recovering {
                    raw: Mutex::new(Some(raw)),
                    session: Mutex::new(Session::new(envelope)),
                    self_cert: cert.clone(),
                    joiner: Mutex::new(None),
                };
                let tls = CertSlot::new(vec![cert], slot_key)?;
                return Ok(Self::assemble(
                    config,
                    platform,
                    verifier,
                    sealer,
                    Mode::Recovery(Arc::new(rec)),
                    tls,
                    metrics,
                ));
            }
            Unlocked::Tampered(mut ts) => {
                let findings = describe(ts.findings());
                let mut rec = record("tamper-detected", "refused");
                rec.detail = Some(format!("at start-up: {}", findings.join("; ")));
                match ts.record(rec) {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(
                        "the tamper finding is not in the audit log: the stored head cannot be read"
                    ),
                    Err(e) => tracing::warn!(error = %e, "cannot record the tamper finding"),
                }
                let session = Self::recovery_session(ts.meta(M_RECOVERY)?)?;
                let (cert, slot_key) = self_signed()?;
                let t = Self::tampered_mode(
                    &metrics,
                    findings,
                    TamperedState::Opened(Box::new(ts)),
                    session,
                    cert.clone(),
                );
                let tls = CertSlot::new(vec![cert], slot_key)?;
                return Ok(Self::assemble(
                    config,
                    platform,
                    verifier,
                    sealer,
                    Mode::Tampered(t),
                    tls,
                    metrics,
                ));
            }
        };
        let tls = {
            let Mode::Ready(r) = &mode else {
                return Err(Error::Store("unexpected mode".into()));
            };
            let ca = r.snapshot().ca.clone();
            let (chain, key) = server_cert(&platform, &ca, now)?;
            CertSlot::new(chain, key)?
        };
        Ok(Self::assemble(
            config, platform, verifier, sealer, mode, tls, metrics,
        ))
    }

    /// The recovery-key holders' upload session for a stored envelope (if any).
    fn recovery_session(envelope: Option<Vec<u8>>) -> Result<Option<Mutex<Session>>, Error> {
        envelope
            .map(|b| {
                serde_json::from_slice::<Envelope>(&b)
                    .map(|e| Mutex::new(Session::new(e)))
                    .map_err(|e| Error::Store(format!("recovery envelope: {e}")))
            })
            .transpose()
    }

    /// Logs and counts a tamper finding, and builds the mode that serves nothing.
    fn tampered_mode(
        metrics: &Metrics,
        findings: Vec<String>,
        state: TamperedState,
        session: Option<Mutex<Session>>,
        self_cert: Vec<u8>,
    ) -> Arc<Tampered> {
        tracing::error!(
            findings = ?findings,
            "the stored state does not match its authenticated head: it was TAMPERED with. \
             Serving nothing from it; the recovery-key holders can re-authenticate it with \
             `coffer recover --reauthenticate`"
        );
        metrics.tamper_detected.inc();
        metrics.tampered.set(1);
        Arc::new(Tampered {
            report: coffer_api::TamperReport {
                detected_at: now_unix(),
                findings,
            },
            state: Mutex::new(Some(state)),
            session,
            self_cert,
        })
    }

    /// Finds the state key: initialises a new state (only the etcd leader does), else unseals
    /// this replica's sealed copy or any other it can open, else (etcd) asks another replica
    /// through a key join, else recovery mode if the manifest had recovery keys.
    fn unlock_state(
        config: &Config,
        platform: &Platform,
        verifier: &EvidenceVerifier,
        sealer: &Sealer,
        mut raw: RawStore,
    ) -> Result<Unlocked, Error> {
        let own = config.sealed_name();
        if !raw.is_initialised()? && Self::may_initialise(&raw, config.store.join_timeout())? {
            let now = now_unix();
            let key = StateKey::generate();
            let ca = Ca::generate(now)?;
            let sealed = sealer.seal(&key)?;
            let mut rec = record("initialise", "accepted");
            rec.detail = Some(match config.store.replica() {
                None => "new state, new root CA".into(),
                Some(r) => format!("new state, new root CA (replica {r})"),
            });
            let ops = vec![
                WriteOp::PutMeta(own.clone(), sealed),
                WriteOp::Put(
                    K_CA.into(),
                    serde_json::to_vec(ca.material()).map_err(|e| Error::Store(e.to_string()))?,
                ),
                audit_op(&rec),
            ];
            match raw.initialise(key, ops)? {
                Initialised::Created(store) => {
                    tracing::info!("initialised a new state with a new root CA");
                    return Ok(Unlocked::Ready(store));
                }
                Initialised::Lost(r) => raw = r,
            }
        }
        // This replica's copy first, then any other this platform can open (same machine).
        let mut copies: Vec<(String, Vec<u8>)> = raw
            .meta(&own)?
            .map(|b| (own.clone(), b))
            .into_iter()
            .collect();
        if config.store.replica().is_some() {
            copies.extend(
                raw.meta_scan(M_SEALED_PREFIX)?
                    .into_iter()
                    .filter(|(n, _)| *n != own),
            );
        }
        let mut reason =
            Error::Unseal("the store has no sealed state key for this Coordinator".into());
        for (name, blob) in copies {
            match sealer.unseal(&blob) {
                Ok(key) if raw.key_matches(&key)? => {
                    if name != own {
                        raw.apply_meta(&[WriteOp::PutMeta(own, sealer.seal(&key)?)])?;
                    }
                    return Ok(raw.unlock(key, 0)?.into());
                }
                Ok(_) => {
                    reason = Error::Unseal(format!(
                        "the key sealed in `{name}` does not open this store"
                    ))
                }
                Err(e) => reason = e,
            }
        }
        if let Some(replica) = config.store.replica() {
            match Self::join(
                &raw,
                replica,
                platform,
                verifier,
                config.store.join_timeout(),
                &config.accepted_tcb_statuses,
            ) {
                Ok(key) => {
                    raw.apply_meta(&sealed_copy_ops(config, sealer.seal(&key)?))?;
                    tracing::info!(
                        replica,
                        "state key obtained from another replica (key join) and sealed"
                    );
                    return Ok(raw.unlock(key, 0)?.into());
                }
                Err(e) => reason = e,
            }
        }
        match raw.meta(M_RECOVERY)? {
            Some(b) => {
                let envelope = serde_json::from_slice(&b)
                    .map_err(|e| Error::Store(format!("recovery envelope: {e}")))?;
                Ok(Unlocked::Recovery(raw, envelope, reason))
            }
            None => Err(Error::Unseal(format!(
                "{reason}; the manifest had no recovery keys, so this state cannot be recovered. \
                 Start with an empty --data-dir (or a new --etcd-prefix) to begin a new deployment"
            ))),
        }
    }

    /// Whether this process may create a new state: always with the embedded store; with etcd
    /// only the elected leader, after waiting for the election (or for the leader's state).
    fn may_initialise(raw: &RawStore, timeout: std::time::Duration) -> Result<bool, Error> {
        let Some(e) = raw.etcd() else {
            return Ok(true);
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if raw.is_initialised()? {
                return Ok(false);
            }
            if e.is_leader() {
                return Ok(true);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err(Error::Store(format!(
            "etcd: neither elected leader nor given an initialised state within {} s (leader: {})",
            timeout.as_secs(),
            e.leader().unwrap_or_else(|| "none".into())
        )))
    }

    /// Key join, joiner side: publish a request and wait for a replica's grant.
    fn join(
        raw: &RawStore,
        replica: &str,
        platform: &Platform,
        verifier: &EvidenceVerifier,
        timeout: std::time::Duration,
        accepted_tcb: &[String],
    ) -> Result<StateKey, Error> {
        let own = own_measurement(platform, verifier)?;
        let joiner = publish_join(raw, replica, platform)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(key) = poll_grant(raw, replica, &joiner, &own, verifier, accepted_tcb)? {
                return Ok(key);
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Err(Error::Unseal(format!(
            "no other replica answered this replica's key join within {} s (is one running and unlocked?)",
            timeout.as_secs()
        )))
    }

    /// This Coordinator's measurement, computed once.
    fn own_claims(&self) -> Result<MeasurementClaims, Error> {
        if let Some(c) = self.own_claims.get() {
            return Ok(c.clone());
        }
        let c = own_measurement(&self.platform, &self.verifier)?;
        Ok(self.own_claims.get_or_init(|| c).clone())
    }

    /// etcd, in recovery mode: keeps a key join open, so a replica that started while no other
    /// could answer leaves recovery by itself once one serves. One short step per call.
    fn retry_join(&self) -> Result<(), Error> {
        let Some(replica) = self.config.store.replica() else {
            return Ok(());
        };
        let Mode::Recovery(rec) = &*self.mode() else {
            return Ok(());
        };
        let poisoned = || Error::Recovery("lock poisoned".into());
        let key = {
            let raw = rec.raw.lock().map_err(|_| poisoned())?;
            let Some(raw) = raw.as_ref() else {
                return Ok(());
            };
            let mut joiner = rec.joiner.lock().map_err(|_| poisoned())?;
            let Some(j) = joiner.as_ref() else {
                *joiner = Some(publish_join(raw, replica, &self.platform)?);
                return Ok(());
            };
            match poll_grant(
                raw,
                replica,
                j,
                &self.own_claims()?,
                &self.verifier,
                &self.config.accepted_tcb_statuses,
            ) {
                Ok(Some(key)) => key,
                Ok(None) => return Ok(()),
                Err(e) => {
                    *joiner = None; // Ask again with a fresh key.
                    return Err(e);
                }
            }
        };
        // Like a successful recovery, and exclusive with one.
        let _g = self.change_lock.blocking_lock();
        let Some(raw) = rec.raw.lock().map_err(|_| poisoned())?.take() else {
            return Ok(());
        };
        let mut arec = record("key-join", "accepted");
        arec.detail = Some(format!(
            "replica `{replica}` left recovery mode with the state key from another replica"
        ));
        if let Reopened::Ready(ready, ops) = self.unlocked(raw, key, arec)? {
            ready.writer.submit_blocking(Job {
                ops,
                ..Job::default()
            })?;
            self.serve_ready(ready)?;
            tracing::warn!(
                replica,
                "state key obtained from another replica: serving again"
            );
        }
        Ok(())
    }

    /// The state opened with a key from recovery or a key join: if it verifies, the Ready
    /// state and the ops that record this replica's sealed copy (and clear its key join) with
    /// `audit`; if not, tampered mode (entered here).
    fn unlocked(
        &self,
        raw: RawStore,
        key: StateKey,
        audit: AuditRecord,
    ) -> Result<Reopened, Error> {
        let sealed_ops = sealed_copy_ops(&self.config, self.sealer.seal(&key)?);
        match raw.unlock(key, 0)? {
            crate::state::Unlocked::Verified(store) => {
                let mut ops = sealed_ops;
                ops.push(audit_op(&audit));
                Ok(Reopened::Ready(Self::ready(Arc::new(store))?, ops))
            }
            crate::state::Unlocked::Tampered(mut ts) => {
                ts.apply_meta(&sealed_ops)?;
                let findings = describe(ts.findings());
                let mut rec = record("tamper-detected", "refused");
                rec.detail = Some(format!("after {}: {}", audit.event, findings.join("; ")));
                if let Err(e) = ts.record(rec) {
                    tracing::warn!(error = %e, "cannot record the tamper finding");
                }
                let session = Self::recovery_session(ts.meta(M_RECOVERY)?)?;
                self.enter_tampered(findings, TamperedState::Opened(Box::new(ts)), session)?;
                Ok(Reopened::Tampered)
            }
        }
    }

    /// Switches to tampered mode (attested self-signed TLS certificate, nothing served).
    fn enter_tampered(
        &self,
        findings: Vec<String>,
        state: TamperedState,
        session: Option<Mutex<Session>>,
    ) -> Result<(), Error> {
        let (cert, key) = self_signed_cert(&self.platform, now_unix())?;
        let t = Self::tampered_mode(&self.metrics, findings, state, session, cert.clone());
        self.tls.set(vec![cert], key)?;
        if let Ok(mut g) = self.mode.write() {
            *g = Arc::new(Mode::Tampered(t));
        }
        Ok(())
    }

    /// Whether the serving state stopped verifying (etcd: a change the watch brought; either
    /// store: an audit record that failed its check); if so, switches to tampered mode once,
    /// records the finding in the audit chain of the last verified head (off the async
    /// workers) and returns the error every request then gets.
    fn check_tampered(&self, r: &Arc<Ready>) -> Result<(), Error> {
        let Some(findings) = r.store.tampered() else {
            return Ok(());
        };
        let findings = describe(&findings);
        let err = Error::Tampered(findings.clone());
        // Only the first request that sees it switches.
        let still_ready = matches!(&*self.mode(), Mode::Ready(cur) if Arc::ptr_eq(cur, r));
        if !still_ready {
            return Err(err);
        }
        let session = match r.store.meta(M_RECOVERY) {
            Ok(b) => Self::recovery_session(b).ok().flatten(),
            Err(_) => None,
        };
        let store = r.store.clone();
        if let Err(e) = self.enter_tampered(
            findings.clone(),
            TamperedState::Running(store.clone()),
            session,
        ) {
            tracing::error!(error = %e, "cannot switch to tampered mode");
        }
        let mut rec = record("tamper-detected", "refused");
        rec.detail = Some(format!("while serving: {}", findings.join("; ")));
        let _ = std::thread::Builder::new()
            .name("coffer-tamper-record".into())
            .spawn(move || {
                if let Err(e) = store.record_tamper(rec) {
                    tracing::warn!(error = %e, "the tamper finding is not in the audit log");
                }
            });
        Err(err)
    }

    /// Switches from recovery to serving `ready` (new TLS certificate under its CA).
    fn serve_ready(&self, ready: Ready) -> Result<CoordinatorState, Error> {
        let snap = ready.snapshot();
        let (chain, tls_key) = server_cert(&self.platform, &snap.ca, now_unix())?;
        self.tls.set(chain, tls_key)?;
        if let Ok(mut g) = self.mode.write() {
            *g = Arc::new(Mode::Ready(Arc::new(ready)));
        }
        self.metrics.tampered.set(0);
        Ok(if snap.manifest.is_some() {
            CoordinatorState::Ready
        } else {
            CoordinatorState::AwaitingManifest
        })
    }

    /// Key join, granter side: answers every pending join request of replicas running the same
    /// Coordinator code, in one guarded write each (audited). Blocking (etcd): call it from a
    /// plain thread, as [`Coordinator::start_background_tasks`] does. Returns how many it granted.
    pub fn answer_key_joins(&self) -> Result<usize, Error> {
        let Some(replica) = self.config.store.replica() else {
            return Ok(0);
        };
        let Mode::Ready(r) = &*self.mode() else {
            return Ok(0);
        };
        let mut granted = 0;
        for (name, request) in r.store.meta_scan(JOIN_PREFIX)? {
            let joiner = name
                .strip_prefix(JOIN_PREFIX)
                .unwrap_or_default()
                .to_string();
            let grant_name = format!("{GRANT_PREFIX}{joiner}");
            if r.store.meta(&grant_name)?.is_some() {
                continue;
            }
            let digest: [u8; 32] = sha2::Sha256::digest(&request).into();
            if self
                .refused_joins
                .lock()
                .map(|s| s.contains(&digest))
                .unwrap_or(true)
            {
                continue;
            }
            let own = self.own_claims()?;
            let now = now_unix();
            let result = keyjoin::grant(
                replica,
                &request,
                r.store.state_key(),
                &own,
                |q| verify_peer_quote(&self.verifier, q, &self.config.accepted_tcb_statuses),
                |rd| self.platform.quote(rd),
            );
            let mut rec = record("key-join", "accepted");
            rec.time = now;
            let (ops, guards) = match result {
                Ok((who, grant)) if who == joiner => {
                    rec.detail = Some(format!(
                        "state key granted to replica `{who}` by `{replica}`"
                    ));
                    (
                        vec![
                            WriteOp::PutMeta(
                                grant_name.clone(),
                                serde_json::to_vec(&grant)
                                    .map_err(|e| Error::Store(e.to_string()))?,
                            ),
                            audit_op(&rec),
                        ],
                        vec![Guard::MetaAbsent(grant_name)],
                    )
                }
                other => {
                    let reason = match other {
                        Ok((who, _)) => format!("request under `{joiner}` names replica `{who}`"),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(joiner = %joiner, %reason, "key join refused");
                    if let Ok(mut s) = self.refused_joins.lock() {
                        s.insert(digest);
                    }
                    rec.outcome = "refused".into();
                    rec.detail = Some(format!("replica `{joiner}`: {reason}"));
                    (vec![audit_op(&rec)], Vec::new())
                }
            };
            let accepted = !guards.is_empty();
            let base = r.store.head_revision();
            if let Commit::Done(_) = r.store.apply_guarded(&ops, &guards, base)? {
                if accepted {
                    tracing::info!(joiner = %joiner, "state key granted (key join)");
                    granted += 1;
                }
            }
        }
        Ok(granted)
    }

    /// Background work, on a plain thread for as long as the Coordinator lives: every 500 ms
    /// (etcd) answer key joins, keep this replica's own join open in recovery mode and notice
    /// tampering without a request; every few seconds write the summary of refused activations
    /// whose window has ended.
    pub fn start_background_tasks(self: &Arc<Self>) -> Result<(), Error> {
        let weak = Arc::downgrade(self);
        let replica = self.config.store.replica().is_some();
        std::thread::Builder::new()
            .name("coffer-background".into())
            .spawn(move || {
                let mut ticks = 0u64;
                while let Some(c) = weak.upgrade() {
                    if replica {
                        if let Mode::Ready(r) = &*c.mode() {
                            // A change another party made in etcd is found without a request.
                            let _ = c.check_tampered(r);
                        }
                        if let Err(e) = c.answer_key_joins() {
                            tracing::warn!(error = %e, "cannot answer key joins");
                        }
                        if let Err(e) = c.retry_join() {
                            tracing::warn!(error = %e, "key join from recovery mode failed; asking again");
                        }
                    }
                    if ticks % 10 == 0 {
                        c.flush_refusal_summary(false);
                    }
                    ticks += 1;
                    drop(c);
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            })
            .map_err(Error::Io)?;
        Ok(())
    }

    fn assemble(
        config: Config,
        platform: Platform,
        verifier: EvidenceVerifier,
        sealer: Sealer,
        mode: Mode,
        tls: Arc<CertSlot>,
        metrics: Metrics,
    ) -> Self {
        Self {
            config,
            platform,
            verifier: Arc::new(verifier),
            sealer,
            mode: RwLock::new(Arc::new(mode)),
            metrics,
            tls,
            change_lock: tokio::sync::Mutex::new(()),
            own_claims: std::sync::OnceLock::new(),
            refused_joins: Mutex::new(Default::default()),
            refusals: Default::default(),
        }
    }

    fn ready(store: Arc<Store>) -> Result<Ready, Error> {
        let snapshot = load_snapshot(&store)?;
        let writer = Writer::start(store.clone())?;
        Ok(Ready {
            store,
            writer,
            snapshot: RwLock::new(Arc::new(snapshot)),
        })
    }

    /// The TLS certificate slot to serve with.
    pub fn tls_slot(&self) -> Arc<CertSlot> {
        self.tls.clone()
    }

    /// The collateral the quote in this Coordinator's TLS certificate verifies with, as JSON
    /// (the `--collateral` shape of `coffer evidence verify`). Launchers that pin the
    /// Coordinator's measurement instead of its root CA verify the certificate's quote with it
    /// inside their TEE: it is signed by Intel (or the simulation root), so relaying it through
    /// an untrusted Coordinator or network is safe.
    pub fn own_collateral(&self) -> Result<String, Error> {
        let ratls = coffer_evidence::ratls::read(&self.tls.leaf())
            .map_err(|e| Error::Pki(format!("own TLS certificate: {e}")))?;
        let collateral = self.verifier.collateral_for(&ratls.quote, now_unix())?;
        Ok(collateral.to_json())
    }

    /// Issues a fresh TLS server certificate (new key, new RA-TLS quote). The certificate is
    /// valid for 30 days; `coffer coordinator` renews it daily. No-op in recovery mode.
    pub fn renew_tls_certificate(&self) -> Result<(), Error> {
        let Mode::Ready(r) = &*self.mode() else {
            return Ok(());
        };
        let (chain, key) = server_cert(&self.platform, &r.snapshot().ca, now_unix())?;
        self.tls.set(chain, key)
    }

    /// Issues a TLS server certificate for in-cluster services (the admission webhook) with
    /// `dns_names` as SANs, signed by the root CA, valid 30 days: `coffer coordinator
    /// --webhook-cert-dir` writes it at start-up and renews it with the daily TLS renewal.
    /// Refused in recovery mode (the CA is sealed).
    pub fn issue_service_certificate(
        &self,
        dns_names: &[String],
    ) -> Result<crate::service_cert::ServiceCertificate, Error> {
        crate::service_cert::validate_dns_names(dns_names)?;
        let r = self.ready_state()?;
        let snap = r.snapshot();
        let key = KeyPair::generate().map_err(|e| Error::Pki(e.to_string()))?;
        let der = snap.ca.service_cert(&key, dns_names, now_unix())?;
        Ok(crate::service_cert::ServiceCertificate {
            chain_pem: pki::pem_encode("CERTIFICATE", &der),
            key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
            ca_pem: snap.ca.root_pem().to_string(),
        })
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether on the simulated platform.
    pub fn is_simulation(&self) -> bool {
        self.platform.is_simulation()
    }

    fn mode(&self) -> Arc<Mode> {
        self.mode
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The serving state, checked for tampering first.
    fn ready_state(&self) -> Result<Arc<Ready>, Error> {
        match &*self.mode() {
            Mode::Ready(r) => {
                self.check_tampered(r)?;
                Ok(r.clone())
            }
            Mode::Recovery(_) => Err(Error::RecoveryMode),
            Mode::Tampered(t) => Err(Error::Tampered(t.report.findings.clone())),
        }
    }

    /// Lifecycle state and manifest hash.
    pub fn status(&self) -> coffer_api::StatusResponse {
        let mode = self.mode();
        if let Mode::Ready(r) = &*mode {
            // A tampered etcd state shows up in the status even before a request touches it.
            let _ = self.check_tampered(r);
        }
        let mode = self.mode();
        let (state, manifest_hash, state_head, tamper) = match &*mode {
            Mode::Recovery(_) => (CoordinatorState::Recovery, None, None, None),
            Mode::Tampered(t) => (
                CoordinatorState::Tampered,
                None,
                None,
                Some(t.report.clone()),
            ),
            Mode::Ready(r) => {
                let head = r.store.head().ok().map(|h| h.summary());
                match &r.snapshot().manifest {
                    Some(m) => (CoordinatorState::Ready, Some(m.hash.clone()), head, None),
                    None => (CoordinatorState::AwaitingManifest, None, head, None),
                }
            }
        };
        coffer_api::StatusResponse {
            protocol_version: coffer_api::PROTOCOL_VERSION,
            state,
            manifest_hash,
            simulation: self.is_simulation(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            state_head,
            tamper,
            replica: self.config.store.replica().map(|name| {
                let leader = match &*mode {
                    Mode::Ready(r) => r.store.etcd().is_some_and(|e| e.is_leader()),
                    Mode::Recovery(r) => r
                        .raw
                        .lock()
                        .ok()
                        .and_then(|g| g.as_ref().and_then(|raw| raw.etcd().map(|e| e.is_leader())))
                        .unwrap_or(false),
                    Mode::Tampered(_) => false,
                };
                coffer_api::ReplicaStatus {
                    name: name.to_string(),
                    leader,
                    store: "etcd".into(),
                }
            }),
        }
    }

    /// The Coordinator's evidence over its root CA key and the client's nonce. With
    /// `bind_state` (and a nonce) the quote also binds the state head, brought up to date
    /// first (etcd: every commit acknowledged before this call is included). Blocking.
    pub fn quote(
        &self,
        nonce: Option<&[u8]>,
        bind_state: bool,
    ) -> Result<coffer_api::QuoteResponse, Error> {
        let mode = self.mode();
        let (root_der, intermediate_pem, state) = match &*mode {
            Mode::Ready(r) => {
                let state = match (bind_state, nonce) {
                    (true, Some(_)) => {
                        r.store.sync()?;
                        if self.check_tampered(r).is_err() {
                            // Still attested, as what it now is: tampered, bound to nothing.
                            return self.quote(nonce, false);
                        }
                        Some(r.store.head()?.summary())
                    }
                    _ => None,
                };
                let s = r.snapshot();
                (
                    s.ca.root_der().to_vec(),
                    s.ca.intermediate_pem().to_string(),
                    state,
                )
            }
            Mode::Recovery(rec) => (rec.self_cert.clone(), String::new(), None),
            Mode::Tampered(t) => (t.self_cert.clone(), String::new(), None),
        };
        let spki = pki::cert_spki(&root_der)?;
        let report_data = match (&state, nonce) {
            (Some(st), Some(n)) => coffer_api::coordinator_report_data_bound(&spki, n, st),
            _ => coffer_api::coordinator_report_data(&spki, nonce),
        };
        let quote = self.platform.quote(report_data)?;
        Ok(coffer_api::QuoteResponse {
            protocol_version: coffer_api::PROTOCOL_VERSION,
            evidence: coffer_api::Evidence {
                format: coffer_api::EvidenceFormat::DcapQuote,
                data: base64::engine::general_purpose::STANDARD.encode(quote),
                certificates: Vec::new(),
            },
            root_ca_pem: pki::pem_encode("CERTIFICATE", &root_der),
            intermediate_ca_pem: intermediate_pem,
            simulation: self.is_simulation(),
            state,
        })
    }

    /// The manifest history, version 1 first (public, like the manifest).
    pub fn manifest_history(&self) -> Result<coffer_api::HistoryResponse, Error> {
        let r = self.ready_state()?;
        Ok(coffer_api::HistoryResponse {
            protocol_version: coffer_api::PROTOCOL_VERSION,
            entries: r.store.history()?,
        })
    }

    /// The manifest in force (canonical JSON) and its hash.
    pub fn manifest(&self) -> Result<(Vec<u8>, String), Error> {
        let r = self.ready_state()?;
        let snap = r.snapshot();
        let m = snap
            .manifest
            .as_ref()
            .ok_or_else(|| Error::NotFound("no manifest has been set yet".into()))?;
        Ok((m.manifest.canonical_json(), m.hash.clone()))
    }

    /// Sets the first manifest (with an owner pin, only from the owner's certificate `peer`).
    pub async fn set_manifest(
        &self,
        peer: Option<&[u8]>,
        body: &[u8],
    ) -> Result<coffer_api::ManifestResponse, Error> {
        let author = match &self.config.owner_certificate {
            None => None,
            Some(owner) => {
                let peer = peer.ok_or_else(|| {
                    Error::Unauthenticated(
                        "this Coordinator takes its first manifest only from its owner \
                         (--owner-cert): connect with the owner's certificate (--cert/--key)"
                            .into(),
                    )
                })?;
                if !same_key(peer, owner) {
                    return Err(Error::Forbidden(
                        "the client certificate is not the owner's (--owner-cert); only the \
                         owner sets the first manifest"
                            .into(),
                    ));
                }
                Some("owner".to_string())
            }
        };
        let _g = self.change_lock.lock().await;
        let r = self.ready_state()?;
        let snap = r.snapshot();
        // A verified state never has a history without a manifest (that is tampering), but
        // this is the one path back to an unset manifest: check it here too.
        let cleared = r
            .store
            .history()?
            .last()
            .is_none_or(|e| e.manifest_hash == coffer_api::chain::NO_MANIFEST);
        if snap.manifest.is_none() && !cleared {
            return Err(Error::Tampered(vec![
                "the manifest is missing although one was set".into(),
            ]));
        }
        if snap.manifest.is_some() {
            return Err(Error::Conflict(
                "a manifest is already set; change it with `coffer manifest update` as a user whose role allows it".into(),
            ));
        }
        let manifest = parse_manifest(body)?;
        let summary = Vec::new();
        self.install_manifest(&r, &snap, manifest, author, summary, "manifest-set")
            .await
    }

    /// Replaces the manifest (role-checked against the manifest in force).
    pub async fn update_manifest(
        &self,
        peer: Option<&[u8]>,
        body: &[u8],
    ) -> Result<coffer_api::ManifestResponse, Error> {
        let _g = self.change_lock.lock().await;
        let r = self.ready_state()?;
        let snap = r.snapshot();
        let old = snap.manifest.as_ref().ok_or_else(|| {
            Error::Conflict("no manifest is set yet; set one with `coffer manifest set`".into())
        })?;
        let user = authenticate(&old.manifest, peer)?;
        let new = match parse_manifest(body) {
            Ok(m) => m,
            Err(e) => {
                self.audit_refusal(&r, "manifest-update", Some(&user), &e)
                    .await;
                return Err(e);
            }
        };
        let summary = match Manifest::check_update(&old.manifest, &new) {
            Ok(s) => s,
            Err(e) => {
                let err = Error::Conflict(format!("this update cannot be applied: {e}"));
                self.audit_refusal(&r, "manifest-update", Some(&user), &err)
                    .await;
                return Err(err);
            }
        };
        if summary.is_empty() {
            return Err(Error::Conflict(
                "the new manifest is the same as the one in force".into(),
            ));
        }
        let allowed = old
            .manifest
            .user_may(&user, ResourceKind::Manifest, None, Action::Update)
            // `packages: update` may only raise minimum SVNs: a new measurement, signer, debug
            // flag or TCB status list changes what runs, which needs `manifest: update`.
            || (summary.only_svn_upgrades()
                && summary.changes.iter().all(|c| {
                    c.package().is_some_and(|p| {
                        old.manifest.user_may(
                            &user,
                            ResourceKind::Packages,
                            Some(p),
                            Action::Update,
                        )
                    })
                }));
        if !allowed {
            let err = Error::Forbidden(format!(
                "user `{user}` may not apply this update ({}); it needs `manifest: update`{}",
                summary
                    .changes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
                if summary.only_svn_upgrades() {
                    " or `packages: update` on every changed package"
                } else if summary.only_packages() {
                    " (`packages: update` allows raising a package's minimum ISVSVN only)"
                } else {
                    ""
                }
            ));
            self.audit_refusal(&r, "manifest-update", Some(&user), &err)
                .await;
            return Err(err);
        }
        let changes: Vec<String> = summary.changes.iter().map(ToString::to_string).collect();
        self.install_manifest(&r, &snap, new, Some(user), changes, "manifest-update")
            .await
    }

    async fn install_manifest(
        &self,
        r: &Ready,
        snap: &Snapshot,
        manifest: Manifest,
        user: Option<String>,
        changes: Vec<String>,
        event: &str,
    ) -> Result<coffer_api::ManifestResponse, Error> {
        let now = now_unix();
        let ca = snap.ca.rotated(now)?;
        let mut ops = Vec::new();
        // With etcd: refused if another replica changed the manifest or CA meanwhile.
        let mut guards = snap.guards();
        // Shared generated secrets that do not exist yet (existing values are kept); RSA key
        // generation runs off the async workers.
        let mut missing = Vec::new();
        for (name, spec) in manifest.secrets.iter() {
            if spec.kind == SecretKind::UserDefined || !spec.is_shared() {
                continue;
            }
            if r.store.get(&secrets::shared_key(name))?.is_none() {
                missing.push((name.clone(), spec.clone()));
            }
        }
        let ca = Arc::new(ca);
        let gen_ca = ca.clone();
        let generated = blocking(move || {
            let mut out = Vec::new();
            for (name, spec) in missing {
                if let Some(v) = secrets::generate(&name, &spec, &gen_ca, now)? {
                    out.push((name, v));
                }
            }
            Ok(out)
        })
        .await?;
        for (name, v) in generated {
            ops.push(WriteOp::Put(
                secrets::shared_key(&name),
                v.to_bytes().to_vec(),
            ));
            guards.push(Guard::KvAbsent(secrets::shared_key(&name)));
        }
        // Recovery envelope for the new recovery keys.
        if !manifest.recovery_keys.is_empty() {
            let mut keys = Vec::new();
            for (name, pem) in manifest.recovery_keys.iter() {
                let k = coffer_manifest::parse_recovery_key(pem)
                    .map_err(|e| Error::Manifest(format!("recovery key `{name}`: {e}")))?;
                keys.push((name.clone(), k));
            }
            let threshold = manifest
                .recovery_threshold
                .map(|t| t as usize)
                .unwrap_or(keys.len());
            let env = recovery::build(r.store.state_key(), &keys, threshold)?;
            ops.push(WriteOp::PutMeta(
                M_RECOVERY.into(),
                serde_json::to_vec(&env).map_err(|e| Error::Store(e.to_string()))?,
            ));
        } else {
            // Keys removed from the manifest must not keep a way into the state.
            ops.push(WriteOp::DeleteMeta(M_RECOVERY.into()));
        }
        let hash = manifest.hash_hex();
        ops.push(WriteOp::Put(K_MANIFEST.into(), manifest.canonical_json()));
        ops.push(WriteOp::History(coffer_api::HistoryEntry {
            version: 0, // set by the store: the next version
            manifest_hash: hash.clone(),
            prev: [0; 32], // set by the store: the previous entry's hash
            author: user.clone(),
            time: now,
            changes: changes.clone(),
        }));
        ops.push(WriteOp::Put(
            K_CA.into(),
            serde_json::to_vec(ca.material()).map_err(|e| Error::Store(e.to_string()))?,
        ));
        let mut rec = record(event, "accepted");
        rec.user = user.clone();
        rec.detail = Some(if changes.is_empty() {
            format!(
                "manifest {hash}; intermediate CA #{}",
                ca.material().generation
            )
        } else {
            format!(
                "manifest {hash}; intermediate CA #{}; {}",
                ca.material().generation,
                changes.join("; ")
            )
        });
        ops.push(audit_op(&rec));
        r.writer
            .submit(Job {
                ops,
                guards,
                ..Job::default()
            })
            .await?;
        tracing::info!(%hash, event, user = user.as_deref().unwrap_or("-"), "manifest installed; intermediate CA rotated");
        if let Ok(mut g) = r.snapshot.write() {
            *g = Arc::new(Snapshot {
                ca,
                manifest: Some(Arc::new(LoadedManifest {
                    manifest,
                    hash: hash.clone(),
                })),
                // The writer returns once this replica's mirror has seen the commit.
                revisions: (r.store.kv_revision(K_MANIFEST), r.store.kv_revision(K_CA)),
            });
        }
        Ok(coffer_api::ManifestResponse {
            protocol_version: coffer_api::PROTOCOL_VERSION,
            manifest_hash: hash,
            changes,
        })
    }

    async fn audit_refusal(&self, r: &Ready, event: &str, user: Option<&str>, err: &Error) {
        let mut rec = record(event, "refused");
        rec.user = user.map(str::to_string);
        rec.detail = Some(err.to_string());
        if let Err(e) = r
            .writer
            .submit(Job {
                ops: vec![audit_op(&rec)],
                ..Job::default()
            })
            .await
        {
            tracing::error!(error = %e, "cannot write an audit record");
        }
    }

    /// Decides an activation; every decision is audited and counted.
    /// `peer` is the client's address: refusals that prove nothing are limited per address
    /// and summarised instead of audited one by one (see [`crate::refusals`]).
    pub async fn activate(
        &self,
        req: ActivationRequest,
        peer: Option<std::net::IpAddr>,
    ) -> Result<ActivationResponse, Error> {
        let start = Instant::now();
        if !self.refusals.allow(peer, start) {
            self.metrics.rate_limited.inc();
            return Err(Error::TooManyRequests(format!(
                "more than {} activations from this address were refused without verified \
                 evidence in the last {} s; try again later",
                crate::refusals::PER_PEER,
                crate::refusals::WINDOW.as_secs()
            )));
        }
        let r = self.ready_state()?;
        let snap = r.snapshot();
        let workload_label = snap
            .manifest
            .as_ref()
            .filter(|m| m.manifest.workloads.contains_key(&req.workload))
            .map(|_| req.workload.clone())
            .unwrap_or_else(|| "_unknown".into());
        let mut snap = snap;
        // Set once the evidence verified and bound the request's key.
        let mut proved = false;
        let mut result = self.activate_inner(&r, &snap, &req, &mut proved).await;
        // etcd: another replica changed the manifest while this was decided; decide again on
        // the new one (bounded: manifest changes are rare).
        for _ in 0..3 {
            let newer = r.snapshot();
            if !matches!(result, Err(Error::Conflict(_))) || Arc::ptr_eq(&newer, &snap) {
                break;
            }
            snap = newer;
            result = self.activate_inner(&r, &snap, &req, &mut proved).await;
        }
        let label = match &result {
            Ok(_) => "accepted".to_string(),
            Err(e) => kind_label(&e.kind().1),
        };
        self.metrics
            .activations
            .get_or_create(&ActivationLabels {
                workload: workload_label.clone(),
                result: label.clone(),
            })
            .inc();
        self.metrics.latency.observe(start.elapsed().as_secs_f64());
        match result {
            Ok(resp) => Ok(resp),
            Err(e) if !proved => {
                // Anyone can send these: counted and summarised, never one record each. Those
                // a launcher retries by design (no manifest yet, collateral service down) do
                // not count against its address.
                tracing::debug!(workload = %workload_label, reason = %e, "activation refused without verified evidence");
                let retried = matches!(
                    e,
                    Error::Conflict(_) | Error::CollateralUnavailable(_) | Error::Store(_)
                ) || matches!(
                    &e,
                    Error::Evidence {
                        kind: ErrorKind::CollateralUnavailable,
                        ..
                    }
                );
                let counted = if retried { None } else { peer };
                self.refusals
                    .record(counted, &workload_label, &label, Instant::now());
                Err(e)
            }
            Err(e) => {
                tracing::info!(workload = %req.workload, instance = %req.instance_id, reason = %e, "activation refused");
                // The limit refusal was audited by the writer in the same transaction.
                if !matches!(
                    e,
                    Error::ActivationLimit(_) | Error::RecoveryMode | Error::Tampered(_)
                ) {
                    let mut rec = record("activation", "refused");
                    rec.workload = Some(req.workload.clone());
                    rec.instance = Some(req.instance_id.to_string());
                    rec.detail = Some(e.to_string());
                    if let Err(we) = r
                        .writer
                        .submit(Job {
                            ops: vec![audit_op(&rec)],
                            ..Job::default()
                        })
                        .await
                    {
                        tracing::error!(error = %we, "cannot write an audit record");
                    }
                }
                Err(e)
            }
        }
    }

    /// Writes the summary of refusals without verified evidence once its window has ended
    /// (or at once with `flush`). Blocking: called from the background thread.
    pub fn flush_refusal_summary(&self, flush: bool) {
        let Some(detail) = self.refusals.take_summary(Instant::now(), flush) else {
            return;
        };
        let Mode::Ready(r) = &*self.mode() else {
            return;
        };
        let mut rec = record("activation", "refused-summary");
        rec.detail = Some(detail);
        if let Err(e) = r.writer.submit_blocking(Job {
            ops: vec![audit_op(&rec)],
            ..Job::default()
        }) {
            tracing::error!(error = %e, "cannot write the refusal summary");
        }
    }

    async fn activate_inner(
        &self,
        r: &Ready,
        snap: &Snapshot,
        req: &ActivationRequest,
        proved: &mut bool,
    ) -> Result<ActivationResponse, Error> {
        check_version(req.protocol_version)?;
        let loaded = snap.manifest.as_ref().ok_or_else(|| {
            Error::Conflict("no manifest is set yet; activations start once one is".into())
        })?;
        let manifest = &loaded.manifest;
        let workload = manifest.workloads.get(&req.workload).ok_or_else(|| {
            Error::NotFound(format!(
                "workload `{}` is not in the manifest",
                req.workload
            ))
        })?;
        let csr = pki::parse_csr(&req.csr_pem)?;
        let image = match req.image_measurement.as_deref() {
            None => None,
            Some(h) => Some(parse_image_measurement(h)?),
        };
        let now = now_unix();
        // Signature checks over the evidence and its collateral: CPU work, off the async workers.
        let verifier = self.verifier.clone();
        let evidence = req.evidence.clone();
        let verified = blocking(move || verifier.verify_evidence(&evidence, now)).await?;
        let expected = match &image {
            Some(m) => coffer_api::workload_report_data_for_image(csr.spki_der(), m),
            None => coffer_api::workload_report_data(csr.spki_der()),
        };
        if verified.report_data != expected {
            return Err(Error::PolicyMismatch(
                "report data does not bind the CSR's key and the image: bytes 0..32 must be SHA-256 of \
                 the CSR's DER SubjectPublicKeyInfo, bytes 32..64 the image binding of \
                 image_measurement (or zero without one) (replayed evidence, a key swap or \
                 another image)"
                    .into(),
            ));
        }
        *proved = true;
        let mut claims = verified.claims;
        claims.image_measurement = image;
        manifest
            .match_workload(&req.workload, &claims)
            .map_err(|m| Error::PolicyMismatch(m.to_string()))?;

        // Per-instance secrets this workload uses.
        let targets = manifest
            .referenced_targets(&req.workload)
            .map_err(|e| Error::Manifest(e.to_string()))?;
        let per_instance: Vec<String> = targets
            .iter()
            .filter_map(|t| match t {
                Target::Secret { name, .. } => manifest
                    .secrets
                    .get(name)
                    .filter(|s| s.kind != SecretKind::UserDefined && !s.is_shared())
                    .map(|_| name.clone()),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let known = r
            .store
            .get(&instance_key(&req.workload, &req.instance_id))?
            .is_some();
        // Per-instance secrets to generate: all of them for a new instance; for a restart, the
        // ones a manifest update added since its first activation (so it restarts instead of
        // failing). Generation (RSA keys) runs off the async workers.
        let mut missing = Vec::new();
        for name in &per_instance {
            let key = secrets::instance_secret_key(&req.workload, &req.instance_id, name);
            if !known || r.store.get(&key)?.is_none() {
                if let Some(spec) = manifest.secrets.get(name) {
                    missing.push((name.clone(), spec.clone()));
                }
            }
        }
        let generated = if missing.is_empty() {
            Vec::new()
        } else {
            let ca = snap.ca.clone();
            blocking(move || {
                let mut out = Vec::new();
                for (name, spec) in missing {
                    if let Some(v) = secrets::generate(&name, &spec, &ca, now)? {
                        out.push((name, v));
                    }
                }
                Ok(out)
            })
            .await?
        };
        let mut fresh: HashMap<String, StoredSecret> = HashMap::new();
        let mut new_only = Vec::new();
        let mut restart_ops = Vec::new();
        let mut restart_guards = Vec::new();
        for (name, v) in generated {
            let key = secrets::instance_secret_key(&req.workload, &req.instance_id, &name);
            let op = WriteOp::Put(key.clone(), v.to_bytes().to_vec());
            if known {
                restart_ops.push(op);
                restart_guards.push(crate::state::Guard::KvAbsent(key));
            } else {
                new_only.push(op);
            }
            fresh.insert(name, v);
        }
        if !known {
            new_only.push(WriteOp::Put(
                instance_key(&req.workload, &req.instance_id),
                serde_json::to_vec(&serde_json::json!({ "first_activation": now }))
                    .unwrap_or_default(),
            ));
        }

        let mut sans: Vec<String> = vec![req.workload.clone()];
        sans.extend(workload.sans.iter().cloned());
        let (leaf, not_after) = snap.ca.sign_workload(
            &csr,
            &req.workload,
            &req.instance_id,
            &sans,
            now,
            self.config.cert_hours,
        )?;

        let mut accepted = record("activation", "accepted");
        accepted.workload = Some(req.workload.clone());
        accepted.instance = Some(req.instance_id.to_string());
        accepted.detail = Some(format!("{claims}; certificate valid until {not_after}"));
        let mut refused = record("activation", "refused");
        refused.workload = accepted.workload.clone();
        refused.instance = accepted.instance.clone();
        let limit_reason = format!(
            "workload `{}` has reached its limit of {} activations (distinct instance UUIDs)",
            req.workload,
            workload.max_activations.unwrap_or(0)
        );
        refused.detail = Some(limit_reason.clone());

        // Render before anything is recorded: a workload that cannot get its parameters (e.g. a
        // user-defined secret not set yet) is refused without taking an activation slot.
        let render = |fresh: &HashMap<String, StoredSecret>| {
            render_parameters(
                manifest,
                &ActivationSource {
                    store: &r.store,
                    workload: &req.workload,
                    manifest,
                    fresh,
                    instance: req.instance_id,
                    root_der: snap.ca.root_der(),
                    leaf_der: &leaf,
                    intermediate_der: snap.ca.intermediate_der(),
                },
                &req.workload,
            )
        };
        let mut parameters = render(&fresh)?;
        if !restart_ops.is_empty() {
            accepted.detail = Some(format!(
                "{}; per-instance secret(s) added to the manifest since the first activation generated",
                accepted.detail.take().unwrap_or_default()
            ));
        }
        let mut ops = vec![audit_op(&accepted)];
        ops.extend(restart_ops);
        let mut guards = snap.guards();
        guards.extend(restart_guards);
        let outcome = r
            .writer
            .submit(Job {
                ops,
                new_only,
                refused: vec![audit_op(&refused)],
                register: Some(Register {
                    workload: req.workload.clone(),
                    instance: req.instance_id,
                    max: workload.max_activations,
                }),
                guards,
            })
            .await?;
        match outcome {
            Outcome::LimitReached => return Err(Error::ActivationLimit(limit_reason)),
            Outcome::Existing if !fresh.is_empty() => {
                // A concurrent first activation of this UUID won: use its stored values.
                fresh.clear();
                parameters = render(&fresh)?;
            }
            Outcome::Existing | Outcome::New | Outcome::Applied => {}
        }
        // Only the key in the CSR opens them: a replayed request gets nothing it can read.
        let sealed_parameters =
            coffer_api::sealed::seal(&parameters, csr.spki_der()).map_err(|e| {
                Error::BadRequest(format!("cannot seal the parameters to the CSR's key: {e}"))
            })?;
        Ok(ActivationResponse {
            protocol_version: coffer_api::PROTOCOL_VERSION,
            certificate_chain_pem: snap.ca.chain_pem(&leaf),
            root_ca_pem: snap.ca.root_pem().to_string(),
            not_after,
            sealed_parameters,
        })
    }

    /// Sets user-defined secrets (role `secrets: write` on each name).
    pub async fn set_secrets(
        &self,
        peer: Option<&[u8]>,
        req: coffer_api::SetSecretsRequest,
    ) -> Result<(), Error> {
        let r = self.ready_state()?;
        let snap = r.snapshot();
        let m = snap
            .manifest
            .as_ref()
            .ok_or_else(|| Error::Conflict("no manifest is set yet".into()))?;
        let user = authenticate(&m.manifest, peer)?;
        if req.secrets.is_empty() {
            return Err(Error::BadRequest("no secrets given".into()));
        }
        let mut ops = Vec::new();
        for (name, value) in &req.secrets {
            if !m
                .manifest
                .user_may(&user, ResourceKind::Secrets, Some(name), Action::Write)
            {
                let err = Error::Forbidden(format!("user `{user}` may not write secret `{name}`"));
                self.audit_refusal(&r, "secrets-set", Some(&user), &err)
                    .await;
                return Err(err);
            }
            let bytes = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(value.as_bytes())
                    .map_err(|_| Error::BadRequest(format!("value of `{name}` is not base64")))?,
            );
            m.manifest
                .check_user_value(name, &bytes)
                .map_err(|e| match e {
                    coffer_manifest::Error::UnknownSecret(_) => {
                        Error::NotFound(format!("secret `{name}` is not in the manifest"))
                    }
                    other => Error::BadRequest(other.to_string()),
                })?;
            ops.push(WriteOp::Put(
                secrets::user_key(name),
                StoredSecret::Bytes {
                    value: bytes.to_vec(),
                }
                .to_bytes()
                .to_vec(),
            ));
        }
        let mut rec = record("secrets-set", "accepted");
        rec.user = Some(user);
        rec.detail = Some(format!(
            "set {}",
            req.secrets.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        ops.push(audit_op(&rec));
        r.writer
            .submit(Job {
                ops,
                ..Job::default()
            })
            .await?;
        Ok(())
    }

    /// Reads user-defined and shared secrets (role `secrets: read` on each name).
    pub async fn get_secrets(
        &self,
        peer: Option<&[u8]>,
        names: &[String],
    ) -> Result<coffer_api::SecretsResponse, Error> {
        let r = self.ready_state()?;
        let snap = r.snapshot();
        let m = snap
            .manifest
            .as_ref()
            .ok_or_else(|| Error::Conflict("no manifest is set yet".into()))?;
        let user = authenticate(&m.manifest, peer)?;
        if names.is_empty() {
            return Err(Error::BadRequest(
                "name the secrets to read: ?names=a,b".into(),
            ));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = std::collections::BTreeMap::new();
        for name in names {
            if !m
                .manifest
                .user_may(&user, ResourceKind::Secrets, Some(name), Action::Read)
            {
                let err = Error::Forbidden(format!("user `{user}` may not read secret `{name}`"));
                self.audit_refusal(&r, "secrets-read", Some(&user), &err)
                    .await;
                return Err(err);
            }
            let spec = m.manifest.secrets.get(name).ok_or_else(|| {
                Error::NotFound(format!("secret `{name}` is not in the manifest"))
            })?;
            let key = if spec.kind == SecretKind::UserDefined {
                secrets::user_key(name)
            } else if spec.is_shared() {
                secrets::shared_key(name)
            } else {
                return Err(Error::BadRequest(format!(
                    "secret `{name}` is per instance; only shared and user-defined secrets can be read"
                )));
            };
            let raw = r
                .store
                .get(&key)?
                .ok_or_else(|| Error::NotFound(format!("secret `{name}` has no value yet")))?;
            let v = StoredSecret::from_bytes(&raw)?;
            let mut o = coffer_api::SecretOut {
                kind: spec.kind.as_str().to_string(),
                ..Default::default()
            };
            match &v {
                StoredSecret::Bytes { value } => o.value = Some(b64.encode(value)),
                StoredSecret::KeyPair { private, public } => {
                    o.private = Some(b64.encode(private));
                    o.public = Some(b64.encode(public));
                }
                StoredSecret::Certificate {
                    private,
                    public,
                    cert,
                } => {
                    o.private = Some(b64.encode(private));
                    o.public = Some(b64.encode(public));
                    o.cert = Some(b64.encode(cert));
                }
            }
            out.insert(name.clone(), o);
        }
        let mut rec = record("secrets-read", "accepted");
        rec.user = Some(user);
        rec.detail = Some(format!("read {}", names.join(", ")));
        r.writer
            .submit(Job {
                ops: vec![audit_op(&rec)],
                ..Job::default()
            })
            .await?;
        Ok(coffer_api::SecretsResponse { secrets: out })
    }

    /// Audit records (role `audit: read`).
    pub fn audit(
        &self,
        peer: Option<&[u8]>,
        after: u64,
        limit: usize,
    ) -> Result<coffer_api::AuditResponse, Error> {
        let r = self.ready_state()?;
        let snap = r.snapshot();
        let m = snap
            .manifest
            .as_ref()
            .ok_or_else(|| Error::Conflict("no manifest is set yet".into()))?;
        let user = authenticate(&m.manifest, peer)?;
        if !m
            .manifest
            .user_may(&user, ResourceKind::Audit, None, Action::Read)
        {
            return Err(Error::Forbidden(format!(
                "user `{user}` may not read the audit log"
            )));
        }
        let records = r
            .store
            .audit(after, limit.clamp(1, coffer_api::chain::MAX_PAGE))?;
        Ok(coffer_api::AuditResponse { records })
    }

    /// The upload session of recovery or tampered mode.
    fn session<'a>(&self, mode: &'a Mode) -> Result<&'a Mutex<Session>, Error> {
        match mode {
            Mode::Recovery(rec) => Ok(&rec.session),
            Mode::Tampered(t) => t.session.as_ref().ok_or_else(|| {
                Error::Conflict(
                    "the state was tampered with and the manifest had no recovery keys: it \
                     cannot be re-authenticated. Start a new deployment (empty --data-dir or a \
                     new --etcd-prefix)"
                        .into(),
                )
            }),
            Mode::Ready(_) => Err(Error::Conflict(
                "the Coordinator is neither in recovery nor in tampered mode".into(),
            )),
        }
    }

    /// Recovery status (challenge and entries), in recovery and tampered mode.
    pub fn recovery_status(&self) -> Result<coffer_api::RecoveryStatus, Error> {
        let mode = self.mode();
        let s = self
            .session(&mode)?
            .lock()
            .map_err(|_| Error::Recovery("session lock poisoned".into()))?;
        Ok(coffer_api::RecoveryStatus {
            protocol_version: coffer_api::PROTOCOL_VERSION,
            challenge: hex::encode(s.challenge),
            threshold: s.envelope.threshold,
            entries: s
                .envelope
                .entries
                .iter()
                .map(|e| coffer_api::RecoveryEntry {
                    name: e.name.clone(),
                    fingerprint: e.fingerprint.clone(),
                    ciphertext: e.ciphertext.clone(),
                })
                .collect(),
            accepted: s.accepted(),
            tamper: match &*mode {
                Mode::Tampered(t) => Some(t.report.clone()),
                _ => None,
            },
        })
    }

    /// Takes recovery uploads. Recovery mode: once the threshold is met and the key opens the
    /// store, re-seals it to this platform and serves again. Tampered mode: the uploads must
    /// say `reauthenticate`; once the threshold is met and the key is the state's own, the
    /// state is re-authenticated as it is (see [`TamperedStore::reauthenticate`]).
    pub async fn recover(
        &self,
        req: coffer_api::RecoverRequest,
    ) -> Result<coffer_api::RecoverResponse, Error> {
        check_version(req.protocol_version)?;
        let _g = self.change_lock.lock().await;
        let mode = self.mode();
        if matches!(&*mode, Mode::Tampered(_)) && !req.reauthenticate {
            return Err(Error::Conflict(
                "the Coordinator found its state TAMPERED with; an upload now re-authenticates \
                 the state as it is. Read the findings (`coffer status`), then upload with \
                 `coffer recover --reauthenticate` if the state is to be kept"
                    .into(),
            ));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut candidate = None;
        let (accepted, threshold) = {
            let mut s = self
                .session(&mode)?
                .lock()
                .map_err(|_| Error::Recovery("session lock poisoned".into()))?;
            for share in &req.shares {
                let secret = zeroize::Zeroizing::new(
                    b64.decode(share.secret.as_bytes())
                        .map_err(|_| Error::BadRequest("secret is not base64".into()))?,
                );
                let sig = b64
                    .decode(share.signature.as_bytes())
                    .map_err(|_| Error::BadRequest("signature is not base64".into()))?;
                if let Some(k) = s.upload(&share.fingerprint, &secret, &sig)? {
                    candidate = Some(k);
                }
            }
            (s.accepted().len(), s.envelope.threshold)
        };
        let pending = |state| coffer_api::RecoverResponse {
            state,
            accepted,
            threshold,
        };
        let Some(key) = candidate else {
            return Ok(pending(match &*mode {
                Mode::Tampered(_) => CoordinatorState::Tampered,
                _ => CoordinatorState::Recovery,
            }));
        };
        let state = match &*mode {
            Mode::Recovery(rec) => self.finish_recovery(rec, key, accepted).await?,
            Mode::Tampered(t) => self.reauthenticate(t, key, accepted).await?,
            Mode::Ready(_) => return Err(Error::Conflict("recovery already finished".into())),
        };
        Ok(pending(state))
    }

    /// Recovery mode, threshold met: the key must open the store; it is re-sealed here.
    async fn finish_recovery(
        &self,
        rec: &Recovering,
        key: StateKey,
        accepted: usize,
    ) -> Result<CoordinatorState, Error> {
        let raw = rec
            .raw
            .lock()
            .map_err(|_| Error::Recovery("lock poisoned".into()))?
            .take()
            .ok_or_else(|| Error::Recovery("recovery already finished".into()))?;
        if !raw.key_matches(&key)? {
            if let Ok(mut s) = rec.session.lock() {
                s.clear();
            }
            if let Ok(mut g) = rec.raw.lock() {
                *g = Some(raw);
            }
            return Err(Error::Recovery(
                "the uploaded key material does not open the store; uploads were cleared, start again".into(),
            ));
        }
        self.sealer.reset()?;
        let mut arec = record("recovery", "accepted");
        arec.detail = Some(format!(
            "state key recovered with {accepted} recovery key(s) and re-sealed"
        ));
        match self.unlocked(raw, key, arec)? {
            Reopened::Ready(ready, ops) => {
                ready
                    .writer
                    .submit(Job {
                        ops,
                        ..Job::default()
                    })
                    .await?;
                let state = self.serve_ready(ready)?;
                tracing::warn!("state recovered and re-sealed; serving again");
                Ok(state)
            }
            Reopened::Tampered => Ok(CoordinatorState::Tampered),
        }
    }

    /// Tampered mode, threshold met: the key must be the state's own; the state is
    /// re-authenticated as it is and served again.
    async fn reauthenticate(
        &self,
        t: &Tampered,
        key: StateKey,
        accepted: usize,
    ) -> Result<CoordinatorState, Error> {
        let state = t
            .state
            .lock()
            .map_err(|_| Error::Recovery("lock poisoned".into()))?
            .take()
            .ok_or_else(|| Error::Recovery("re-authentication already finished".into()))?;
        let own: bool = {
            use subtle::ConstantTimeEq;
            let stored = match &state {
                TamperedState::Opened(ts) => ts.state_key().as_bytes().ct_eq(key.as_bytes()),
                TamperedState::Running(store) => store.state_key().as_bytes().ct_eq(key.as_bytes()),
            };
            stored.into()
        };
        if !own {
            if let Some(s) = &t.session {
                if let Ok(mut s) = s.lock() {
                    s.clear();
                }
            }
            if let Ok(mut g) = t.state.lock() {
                *g = Some(state);
            }
            return Err(Error::Recovery(
                "the uploaded key material is not this state's key; uploads were cleared, start again"
                    .into(),
            ));
        }
        let mut rec = record(coffer_api::chain::REAUTHENTICATED_EVENT, "accepted");
        rec.detail = Some(format!(
            "the state was re-authenticated as it is by {accepted} recovery key(s) after: {}",
            t.report.findings.join("; ")
        ));
        let reset = |name: &str| {
            name.starts_with("secret/")
                || name.starts_with("user/")
                || name.starts_with(crate::state::writer::INSTANCE_PREFIX)
        };
        // Blocking store work (a whole-store check, an etcd transaction) off the async workers.
        let sealed_copy = sealed_copy_ops(&self.config, self.sealer.seal(&key)?);
        let (store, info) = tokio::task::spawn_blocking(move || match state {
            TamperedState::Opened(ts) => {
                ts.apply_meta(&sealed_copy)?;
                (*ts)
                    .reauthenticate(rec, reset)
                    .map(|(s, i)| (Arc::new(s), i))
            }
            TamperedState::Running(store) => {
                store.apply_meta(&sealed_copy)?;
                let info = store.reauthenticate(rec, reset)?;
                Ok((store, info))
            }
        })
        .await
        .map_err(|e| Error::Store(format!("re-authentication task: {e}")))??;
        tracing::warn!(
            dropped = ?info.dropped,
            breaks = ?info.breaks,
            manifest = info.manifest_present,
            "the tampered state was RE-AUTHENTICATED by the recovery-key holders; serving it again"
        );
        let ready = Self::ready(store)?;
        self.serve_ready(ready)
    }
}

impl Ready {
    /// The snapshot in force. With etcd, rebuilt first if another replica changed the manifest
    /// or CA (a cheap revision check against the mirror on every call).
    fn snapshot(&self) -> Arc<Snapshot> {
        let current = self
            .snapshot
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        if self.store.etcd().is_none() {
            return current;
        }
        let revisions = (
            self.store.kv_revision(K_MANIFEST),
            self.store.kv_revision(K_CA),
        );
        if revisions == current.revisions {
            return current;
        }
        match load_snapshot(&self.store) {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                if let Ok(mut g) = self.snapshot.write() {
                    *g = fresh.clone();
                }
                tracing::info!("manifest or CA changed on another replica: snapshot reloaded");
                fresh
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reload the snapshot; serving the previous one");
                current
            }
        }
    }
}

/// Builds a snapshot from the store (revisions read first: a value newer than its recorded
/// revision only causes one more reload, never a stale snapshot taken for current).
fn load_snapshot(store: &Store) -> Result<Snapshot, Error> {
    let revisions = (store.kv_revision(K_MANIFEST), store.kv_revision(K_CA));
    let ca = match store.get(K_CA)? {
        Some(b) => Ca::load(
            serde_json::from_slice::<CaMaterial>(&b)
                .map_err(|e| Error::Store(format!("CA: {e}")))?,
        )?,
        None => return Err(Error::Store("the store has no CA (corrupt state)".into())),
    };
    let manifest = match store.get(K_MANIFEST)? {
        Some(b) => {
            let m = Manifest::parse_stored(&b)
                .map_err(|e| Error::Store(format!("stored manifest no longer validates: {e:?}")))?;
            Some(Arc::new(LoadedManifest {
                hash: m.hash_hex(),
                manifest: m,
            }))
        }
        None => None,
    };
    Ok(Snapshot {
        ca: Arc::new(ca),
        manifest,
        revisions,
    })
}

/// Records this replica's sealed copy of the state key and, with etcd, clears its key join.
fn sealed_copy_ops(config: &Config, sealed: Vec<u8>) -> Vec<WriteOp> {
    let mut ops = vec![WriteOp::PutMeta(config.sealed_name(), sealed)];
    if let Some(r) = config.store.replica() {
        ops.push(WriteOp::DeleteMeta(format!("{JOIN_PREFIX}{r}")));
        ops.push(WriteOp::DeleteMeta(format!("{GRANT_PREFIX}{r}")));
    }
    ops
}

/// Publishes this replica's key-join request (replacing an old grant).
fn publish_join(raw: &RawStore, replica: &str, platform: &Platform) -> Result<Joiner, Error> {
    let (joiner, request) = Joiner::request(replica, |rd| platform.quote(rd))?;
    raw.apply_meta(&[
        WriteOp::DeleteMeta(format!("{GRANT_PREFIX}{replica}")),
        WriteOp::PutMeta(
            format!("{JOIN_PREFIX}{replica}"),
            serde_json::to_vec(&request).map_err(|e| Error::Store(e.to_string()))?,
        ),
    ])?;
    tracing::info!(
        replica,
        "no sealed copy of the state key opens here: asked the other replicas (key join)"
    );
    Ok(joiner)
}

/// The state key from a grant for `joiner`, once one is there (checked against the store).
fn poll_grant(
    raw: &RawStore,
    replica: &str,
    joiner: &Joiner,
    own: &MeasurementClaims,
    verifier: &EvidenceVerifier,
    accepted_tcb: &[String],
) -> Result<Option<StateKey>, Error> {
    let Some(grant) = raw.meta(&format!("{GRANT_PREFIX}{replica}"))? else {
        return Ok(None);
    };
    let key = joiner.accept(&grant, own, |q| {
        verify_peer_quote(verifier, q, accepted_tcb)
    })?;
    if !raw.key_matches(&key)? {
        return Err(Error::Unseal(
            "the key granted by another replica does not open this store".into(),
        ));
    }
    Ok(Some(key))
}

/// Verifies a quote for a key join: its measurement and report data.
fn verify_quote(
    verifier: &EvidenceVerifier,
    quote: &[u8],
) -> Result<(MeasurementClaims, [u8; 64]), Error> {
    let v = verifier.verify(quote, now_unix())?;
    Ok((claims_of(&v), v.report_data))
}

/// [`verify_quote`] for another replica (key join, both sides): its platform's TCB status must
/// be accepted, and is never `Revoked`.
fn verify_peer_quote(
    verifier: &EvidenceVerifier,
    quote: &[u8],
    accepted_tcb: &[String],
) -> Result<(MeasurementClaims, [u8; 64]), Error> {
    let (claims, rd) = verify_quote(verifier, quote)?;
    crate::attest::check_tcb_status(&claims.tcb_status, accepted_tcb)?;
    Ok((claims, rd))
}

/// This Coordinator's own measurement, as another replica would see it: its own quote,
/// verified like any other.
fn own_measurement(
    platform: &Platform,
    verifier: &EvidenceVerifier,
) -> Result<MeasurementClaims, Error> {
    let quote = platform.quote(keyjoin::report_data("self", "", &[], &[]))?;
    Ok(verify_quote(verifier, &quote)?.0)
}

fn render_parameters(
    manifest: &Manifest,
    source: &ActivationSource<'_>,
    workload: &str,
) -> Result<Parameters, Error> {
    let bad = |e: coffer_manifest::Error| {
        Error::Conflict(format!("cannot render the parameters of `{workload}`: {e}"))
    };
    let rendered = manifest.render_workload(workload, source).map_err(bad)?;
    let mut env = std::collections::BTreeMap::new();
    for (k, v) in rendered.env {
        env.insert(k, v.into_string().map_err(bad)?);
    }
    let argv = match rendered.argv {
        None => None,
        Some(a) => Some(
            a.into_iter()
                .map(|v| v.into_string().map_err(bad))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let image_key = rendered
        .image_key
        .map(|k| k.into_string().map_err(bad))
        .transpose()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let files = rendered
        .files
        .into_iter()
        .map(|f| FileParameter {
            path: f.path,
            content: b64.encode(f.content.as_bytes()),
            mode: f.mode,
        })
        .collect();
    Ok(Parameters {
        files,
        env,
        argv,
        host_env: rendered.host_env,
        image_key,
    })
}

/// Runs CPU-heavy work (quote verification, RSA key generation) on [`crate::work`]'s pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    crate::work::run(f).await
}

/// Refuses protocol versions outside the accepted range.
pub fn check_version(v: u32) -> Result<(), Error> {
    if coffer_api::protocol_version_supported(v) {
        Ok(())
    } else {
        Err(Error::UnsupportedProtocolVersion {
            got: v,
            min: coffer_api::MIN_PROTOCOL_VERSION,
            max: coffer_api::PROTOCOL_VERSION,
        })
    }
}

fn parse_manifest(body: &[u8]) -> Result<Manifest, Error> {
    Manifest::parse(body).map_err(|errs| {
        Error::Manifest(
            errs.errors()
                .iter()
                .map(|e| e.to_string().replace('\n', " "))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// Whether two certificates (DER) are the same or carry the same key (a re-issued one).
fn same_key(a: &[u8], b: &[u8]) -> bool {
    a == b || matches!((pki::cert_spki(a), pki::cert_spki(b)), (Ok(x), Ok(y)) if x == y)
}

/// The manifest user a client certificate (DER) belongs to.
pub fn authenticate(manifest: &Manifest, peer: Option<&[u8]>) -> Result<String, Error> {
    let der = peer.ok_or_else(|| {
        Error::Unauthenticated(
            "this call needs a client certificate of a manifest user (--cert/--key)".into(),
        )
    })?;
    if let Some(u) = manifest.user_for_certificate(der) {
        return Ok(u.to_string());
    }
    // Same key in a re-issued certificate: match by SPKI.
    let spki = pki::cert_spki(der)
        .map_err(|_| Error::Unauthenticated("the client certificate is not valid X.509".into()))?;
    for (name, u) in manifest.users.iter() {
        if let Ok(d) = coffer_manifest::certificate_der(&u.certificate) {
            if pki::cert_spki(&d).is_ok_and(|s| s == spki) {
                return Ok(name.clone());
            }
        }
    }
    Err(Error::Unauthenticated(
        "the client certificate belongs to no user of the manifest".into(),
    ))
}

/// An activation's `image_measurement`: 64 lower-case hex digits.
fn parse_image_measurement(h: &str) -> Result<[u8; 32], Error> {
    let bad = || {
        Error::BadRequest(format!(
            "image_measurement {:?} is not 64 lower-case hex digits",
            h.chars().take(80).collect::<String>()
        ))
    };
    if h.len() != 64
        || !h
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(h, &mut out).map_err(|_| bad())?;
    Ok(out)
}

/// The claims the manifest's policy checks, from verified evidence.
pub fn claims_of(v: &coffer_evidence::Verified) -> MeasurementClaims {
    use coffer_evidence::Measurement;
    match &v.measurement {
        Measurement::Sgx(m) => MeasurementClaims {
            mrenclave: Some(m.mrenclave),
            mrsigner: Some(m.mrsigner),
            isv_prod_id: Some(m.isv_prod_id),
            isv_svn: Some(m.isv_svn),
            debug: m.debug,
            tcb_status: v.tcb_status.to_string(),
            tcb_evaluation_data_number: Some(v.tcb_evaluation_data_number),
            ..MeasurementClaims::of_tee(Tee::Sgx)
        },
        Measurement::Tdx(m) => MeasurementClaims {
            debug: m.debug,
            tcb_status: v.tcb_status.to_string(),
            mrtd: Some(m.mrtd),
            rtmrs: Some(m.rtmr),
            mrconfigid: Some(m.mrconfigid),
            // A quote without a service TD field (TD 1.0) binds none: zero.
            mrservicetd: Some(m.mrservicetd.unwrap_or([0; 48])),
            tcb_evaluation_data_number: Some(v.tcb_evaluation_data_number),
            ..MeasurementClaims::of_tee(Tee::Tdx)
        },
    }
}

/// A fresh TLS key and an attested self-signed certificate, for the modes in which the CA is
/// not available (recovery) or not trusted (tampered): (certificate DER, PKCS#8 key).
fn self_signed_cert(platform: &Platform, now: i64) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let key = KeyPair::generate().map_err(|e| Error::Pki(e.to_string()))?;
    let quotes = ratls_quotes(platform, &key)?;
    let cert = pki::self_signed_server_cert(&key, &quotes, platform.is_simulation(), now)?;
    Ok((cert, key.serialize_der()))
}

/// The two quotes of an RA-TLS certificate for `key` (DICE and Gramine's legacy binding).
fn ratls_quotes(platform: &Platform, key: &KeyPair) -> Result<pki::RaTlsQuotes, Error> {
    let spki = pki::key_spki(key);
    Ok(pki::RaTlsQuotes {
        dice: platform.quote(coffer_evidence::ratls::dice_report_data(&spki))?,
        legacy: Some(platform.quote(coffer_api::workload_report_data(&spki))?),
    })
}

/// A fresh TLS key and RA-TLS server certificate signed by the root: (chain DER, PKCS#8 key).
fn server_cert(platform: &Platform, ca: &Ca, now: i64) -> Result<(Vec<Vec<u8>>, Vec<u8>), Error> {
    let key = KeyPair::generate().map_err(|e| Error::Pki(e.to_string()))?;
    let quotes = ratls_quotes(platform, &key)?;
    let cert = ca.server_cert(&key, &quotes, platform.is_simulation(), now)?;
    Ok((vec![cert, ca.root_der().to_vec()], key.serialize_der()))
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    Ok(())
}
