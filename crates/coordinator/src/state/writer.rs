//! The single writer: every state change goes through one thread that groups the jobs waiting
//! at that moment into one durable redb transaction (group commit) and answers each job only
//! after that commit. One writer also makes the activation limit exact: the check "is this a
//! new instance, and is there room for it" and the insert happen in the same serial order.
//!
//! With etcd (several replicas) one writer per replica is not enough for that: the writer
//! decides from the replica's mirror at one state head, checks the job's own [`Job::guards`]
//! there, and sends the batch as one etcd transaction guarded by that head's revision (every
//! commit writes a new head, so the guard fails if any other replica committed meanwhile). If
//! another replica got there first, the writer brings the mirror up to date and decides again;
//! a job whose own guards no longer hold (the manifest changed under it) is answered with
//! [`Error::Conflict`].

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Commit, Guard, Store, WriteOp};
use crate::error::Error;

/// Registration of a workload instance, decided inside the writer.
#[derive(Debug, Clone)]
pub struct Register {
    /// Workload name.
    pub workload: String,
    /// Instance UUID.
    pub instance: uuid::Uuid,
    /// The workload's `max_activations`.
    pub max: Option<u64>,
}

/// What the writer decided for a [`Register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No registration was asked for; the ops were applied.
    Applied,
    /// A new instance was registered (`new_only` ops applied too).
    New,
    /// The instance was known (`new_only` ops dropped).
    Existing,
    /// The workload is at its limit (`refused` ops applied instead of the others).
    LimitReached,
}

/// A unit of work for the writer.
#[derive(Debug, Default)]
pub struct Job {
    /// Applied unless the registration hits the limit.
    pub ops: Vec<WriteOp>,
    /// Applied only for a new instance.
    pub new_only: Vec<WriteOp>,
    /// Applied only when the limit is reached.
    pub refused: Vec<WriteOp>,
    /// Optional instance registration.
    pub register: Option<Register>,
    /// What the caller's decision read (etcd): if one no longer holds, the job is refused
    /// with [`Error::Conflict`] instead of applied. The embedded store has one writer and
    /// ignores them.
    pub guards: Vec<Guard>,
}

/// Why a job was not applied.
#[derive(Clone)]
enum Failure {
    /// The commit failed; nothing of the batch was written.
    Store(String),
    /// The state is no longer trusted; nothing was written.
    Tampered(Vec<String>),
    /// One of the job's guards no longer holds.
    Stale,
}

impl Failure {
    fn of(e: &Error) -> Self {
        match e {
            Error::Tampered(f) => Failure::Tampered(f.clone()),
            other => Failure::Store(other.to_string()),
        }
    }
}

type Pending = (Job, oneshot::Sender<Result<Outcome, Failure>>);

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Pending>,
}

/// Prefix of instance records in `kv`: `instance/<workload>/<uuid>`.
pub const INSTANCE_PREFIX: &str = "instance/";

/// Most jobs grouped into one transaction.
const MAX_BATCH: usize = 512;

impl Writer {
    /// Starts the writer thread over `store`, loading the instance index.
    pub fn start(store: Arc<Store>) -> Result<Self, Error> {
        if store.etcd().is_some() {
            let (tx, rx) = mpsc::channel::<Pending>();
            std::thread::Builder::new()
                .name("coffer-store-writer".into())
                .spawn(move || run_shared(store, rx))
                .map_err(Error::Io)?;
            return Ok(Self { tx });
        }
        let mut index: HashMap<String, HashSet<uuid::Uuid>> = HashMap::new();
        for key in store.names(INSTANCE_PREFIX)? {
            let rest = key.strip_prefix(INSTANCE_PREFIX).unwrap_or_default();
            if let Some((w, id)) = rest.rsplit_once('/') {
                if let Ok(id) = uuid::Uuid::parse_str(id) {
                    index.entry(w.to_string()).or_default().insert(id);
                }
            }
        }
        let (tx, rx) = mpsc::channel::<Pending>();
        std::thread::Builder::new()
            .name("coffer-store-writer".into())
            .spawn(move || run(store, rx, index))
            .map_err(Error::Io)?;
        Ok(Self { tx })
    }

    /// Submits `job` and waits until it is durably committed.
    pub async fn submit(&self, job: Job) -> Result<Outcome, Error> {
        let rx = self.send(job)?;
        answer(rx.await)
    }

    /// As [`Writer::submit`], from a plain thread (outside any async runtime).
    pub fn submit_blocking(&self, job: Job) -> Result<Outcome, Error> {
        let rx = self.send(job)?;
        answer(rx.blocking_recv())
    }

    fn send(&self, job: Job) -> Result<oneshot::Receiver<Result<Outcome, Failure>>, Error> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((job, tx))
            .map_err(|_| Error::Store("the store writer stopped".into()))?;
        Ok(rx)
    }
}

fn answer(
    reply: Result<Result<Outcome, Failure>, oneshot::error::RecvError>,
) -> Result<Outcome, Error> {
    match reply {
        Err(_) => Err(Error::Store("the store writer stopped".into())),
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(Failure::Store(e))) => Err(Error::Store(e)),
        Ok(Err(Failure::Tampered(f))) => Err(Error::Tampered(f)),
        Ok(Err(Failure::Stale)) => Err(Error::Conflict(
            "the state changed on another Coordinator replica while this request was decided; \
             nothing was written. Read the current state and try again"
                .into(),
        )),
    }
}

/// Key of an instance record.
pub fn instance_key(workload: &str, instance: &uuid::Uuid) -> String {
    format!("{INSTANCE_PREFIX}{workload}/{instance}")
}

fn collect(first: Pending, rx: &mpsc::Receiver<Pending>) -> Vec<Pending> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    batch
}

/// The ops a job contributes for `outcome`.
fn ops_for(job: &Job, outcome: Outcome, ops: &mut Vec<WriteOp>) {
    match outcome {
        Outcome::LimitReached => ops.extend(job.refused.iter().cloned()),
        Outcome::New => {
            ops.extend(job.ops.iter().cloned());
            ops.extend(job.new_only.iter().cloned());
        }
        Outcome::Applied | Outcome::Existing => ops.extend(job.ops.iter().cloned()),
    }
}

fn run(
    store: Arc<Store>,
    rx: mpsc::Receiver<Pending>,
    mut index: HashMap<String, HashSet<uuid::Uuid>>,
) {
    while let Ok(first) = rx.recv() {
        let batch = collect(first, &rx);
        let mut ops = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut added: Vec<(String, uuid::Uuid)> = Vec::new();
        for (job, _) in &batch {
            let outcome = match &job.register {
                None => Outcome::Applied,
                Some(r) => {
                    let set = index.entry(r.workload.clone()).or_default();
                    if set.contains(&r.instance) {
                        Outcome::Existing
                    } else if r.max.is_some_and(|m| set.len() as u64 >= m) {
                        Outcome::LimitReached
                    } else {
                        set.insert(r.instance);
                        added.push((r.workload.clone(), r.instance));
                        Outcome::New
                    }
                }
            };
            ops_for(job, outcome, &mut ops);
            outcomes.push(outcome);
        }
        let result = store.apply(&ops);
        if let Err(e) = &result {
            tracing::error!(error = %e, jobs = batch.len(), "store commit failed; nothing of this batch was written");
            for (w, id) in added {
                if let Some(set) = index.get_mut(&w) {
                    set.remove(&id);
                }
            }
        }
        for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
            let _ = reply.send(match &result {
                Ok(()) => Ok(outcome),
                Err(e) => Err(Failure::of(e)),
            });
        }
    }
}

/// Whether `guard` holds in the replica's mirror.
fn holds(store: &Store, guard: &Guard) -> bool {
    match guard {
        Guard::KvAbsent(n) => store.kv_revision(n) == 0,
        Guard::KvRevision(n, r) => store.kv_revision(n) == *r,
        Guard::MetaAbsent(n) => store.meta(n).ok().flatten().is_none(),
    }
}

/// A batch decided from the mirror: the transaction and each job's outcome.
struct Decided {
    ops: Vec<WriteOp>,
    guards: Vec<Guard>,
    outcomes: Vec<Outcome>,
}

fn decide_shared(store: &Store, batch: &[Pending]) -> Result<Decided, Error> {
    let mut ops = Vec::new();
    let mut guards = Vec::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    // Per workload: its instances in the mirror (counted once per batch, not per job) and
    // those this batch registers.
    let mut added: HashMap<&str, (usize, HashSet<uuid::Uuid>)> = HashMap::new();
    for (job, _) in batch {
        guards.extend(job.guards.iter().cloned());
        let outcome = match &job.register {
            None => Outcome::Applied,
            Some(r) => {
                let key = instance_key(&r.workload, &r.instance);
                let (known, mine) = match added.entry(r.workload.as_str()) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let prefix = format!("{INSTANCE_PREFIX}{}/", r.workload);
                        v.insert((store.count(&prefix)?, HashSet::new()))
                    }
                };
                if mine.contains(&r.instance) || store.kv_revision(&key) != 0 {
                    Outcome::Existing
                } else if r.max.is_some_and(|m| (*known + mine.len()) as u64 >= m) {
                    Outcome::LimitReached
                } else {
                    mine.insert(r.instance);
                    guards.push(Guard::KvAbsent(key));
                    Outcome::New
                }
            }
        };
        ops_for(job, outcome, &mut ops);
        outcomes.push(outcome);
    }
    let mut unique: Vec<Guard> = Vec::with_capacity(guards.len());
    for g in guards {
        if !unique.contains(&g) {
            unique.push(g);
        }
    }
    Ok(Decided {
        ops,
        guards: unique,
        outcomes,
    })
}

/// Conflicts (or transport retries) after which a batch is abandoned with an error.
const MAX_ATTEMPTS: usize = 100;

/// etcd refuses a transaction with more than 128 compares or operations (`--max-txn-ops`
/// default): a batch whose decision exceeds this is split.
const MAX_TXN_OPS: usize = 128;

/// Most jobs grouped into one etcd transaction (an activation adds about three operations).
const MAX_SHARED_BATCH: usize = 32;

fn run_shared(store: Arc<Store>, rx: mpsc::Receiver<Pending>) {
    let mut waiting: std::collections::VecDeque<Pending> = Default::default();
    loop {
        if waiting.is_empty() {
            match rx.recv() {
                Ok(p) => waiting.push_back(p),
                Err(_) => return,
            }
        }
        while let Ok(p) = rx.try_recv() {
            waiting.push_back(p);
        }
        let take = waiting.len().min(MAX_SHARED_BATCH);
        let batch: Vec<Pending> = waiting.drain(..take).collect();
        commit_shared(&store, batch);
    }
}

/// Decides and commits one batch, refreshing and deciding again on conflicts; a batch too
/// large for one etcd transaction is split in halves.
fn commit_shared(store: &Store, mut batch: Vec<Pending>) {
    let mut attempts = 0;
    loop {
        // Every decision below is taken on the state with this head; the commit is guarded
        // by it, so a decision on a state another replica has since changed is never written.
        let base = store.head_revision();
        // Jobs whose own decision went stale are answered and leave the batch.
        let (live, stale): (Vec<Pending>, Vec<Pending>) = batch
            .into_iter()
            .partition(|(job, _)| job.guards.iter().all(|g| holds(store, g)));
        for (_, reply) in stale {
            let _ = reply.send(Err(Failure::Stale));
        }
        batch = live;
        if batch.is_empty() {
            return;
        }
        let decided = match decide_shared(store, &batch) {
            Ok(d) => d,
            Err(e) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(Failure::of(&e)));
                }
                return;
            }
        };
        // + 1: the state head every commit writes.
        let too_large =
            decided.ops.len() + 1 > MAX_TXN_OPS || decided.guards.len() + 1 > MAX_TXN_OPS;
        if too_large && batch.len() > 1 {
            let second = batch.split_off(batch.len() / 2);
            commit_shared(store, batch);
            commit_shared(store, second);
            return;
        }
        let failure = match store.apply_guarded(&decided.ops, &decided.guards, base) {
            Ok(Commit::Done(_)) => {
                for ((_, reply), outcome) in batch.into_iter().zip(decided.outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                return;
            }
            Ok(Commit::Conflict(rev)) => store
                .etcd()
                .and_then(|e| e.refresh_to(rev).err())
                .map(|e| Failure::of(&e)),
            Ok(Commit::Retry) => None,
            Err(e) => Some(Failure::of(&e)),
        };
        attempts += 1;
        let failure = failure.or_else(|| {
            (attempts >= MAX_ATTEMPTS).then(|| {
                Failure::Store(format!(
                    "etcd: gave up after {MAX_ATTEMPTS} conflicting attempts"
                ))
            })
        });
        if let Some(f) = failure {
            let reason = match &f {
                Failure::Store(e) => e.clone(),
                Failure::Tampered(t) => format!("tampered: {}", t.join("; ")),
                Failure::Stale => "stale".into(),
            };
            tracing::error!(error = %reason, jobs = batch.len(), "etcd commit failed; nothing of this batch was written");
            for (_, reply) in batch {
                let _ = reply.send(Err(f.clone()));
            }
            return;
        }
    }
}
