//! The single writer: every state change goes through one thread that groups the jobs waiting
//! at that moment into one durable redb transaction (group commit) and answers each job only
//! after that commit. One writer also makes the activation limit exact: the check "is this a
//! new instance, and is there room for it" and the insert happen in the same serial order.
//!
//! With etcd (several replicas) one writer per replica is not enough for that: the writer
//! decides from the replica's mirror and sends the batch as one etcd transaction guarded by
//! what the decisions read (the instance key's absence, the workload's instance counter's
//! revision, the job's own [`Job::guards`], the audit head). If another replica got there
//! first, the writer brings the mirror up to date and decides again; a job whose own guards no
//! longer hold (the manifest changed under it) is answered with [`Error::Conflict`].

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::error::Error;
use crate::etcd::{Commit, Guard};
use crate::store::{Store, WriteOp};

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
enum Failure {
    /// The commit failed; nothing of the batch was written.
    Store(String),
    /// One of the job's guards no longer holds.
    Stale,
}

type Pending = (Job, oneshot::Sender<Result<Outcome, Failure>>);

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Pending>,
}

/// Prefix of instance records in `kv`: `instance/<workload>/<uuid>`.
pub const INSTANCE_PREFIX: &str = "instance/";

/// Prefix of per-workload instance counters (etcd only; guards of the activation limit).
const COUNT_PREFIX: &str = "instance-count/";

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
        for (key, _) in store.scan(INSTANCE_PREFIX)? {
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
                Err(e) => Err(Failure::Store(e.to_string())),
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

fn decide_shared(store: &Store, batch: &[Pending]) -> Decided {
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
                let (known, mine) = added.entry(r.workload.as_str()).or_insert_with(|| {
                    let prefix = format!("{INSTANCE_PREFIX}{}/", r.workload);
                    let known = store.etcd().map_or(0, |e| e.kv_count(&prefix));
                    (known, HashSet::new())
                });
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
        // Every limit decision reads the workload's count: guard it with the counter.
        if let (Some(r), Outcome::New | Outcome::LimitReached) = (&job.register, outcome) {
            let counter = format!("{COUNT_PREFIX}{}", r.workload);
            guards.push(Guard::KvRevision(
                counter.clone(),
                store.kv_revision(&counter),
            ));
        }
        ops_for(job, outcome, &mut ops);
        outcomes.push(outcome);
    }
    let mut unique: Vec<Guard> = Vec::with_capacity(guards.len());
    for g in guards {
        if !unique.contains(&g) {
            unique.push(g);
        }
    }
    let guards = unique;
    for (workload, (known, ids)) in added {
        if !ids.is_empty() {
            ops.push(WriteOp::Put(
                format!("{COUNT_PREFIX}{workload}"),
                (known + ids.len()).to_string().into_bytes(),
            ));
        }
    }
    Decided {
        ops,
        guards,
        outcomes,
    }
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
        let decided = decide_shared(store, &batch);
        // + 1: the audit-head compare the store adds.
        let too_large = decided.ops.len() > MAX_TXN_OPS || decided.guards.len() + 1 > MAX_TXN_OPS;
        if too_large && batch.len() > 1 {
            let second = batch.split_off(batch.len() / 2);
            commit_shared(store, batch);
            commit_shared(store, second);
            return;
        }
        let failure = match store.apply_guarded(&decided.ops, &decided.guards) {
            Ok(Commit::Done(_)) => {
                for ((_, reply), outcome) in batch.into_iter().zip(decided.outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                return;
            }
            Ok(Commit::Conflict(rev)) => store.etcd().and_then(|e| e.refresh_to(rev).err()),
            Ok(Commit::Retry) => None,
            Err(e) => Some(e),
        };
        attempts += 1;
        let failure = failure.map(|e| e.to_string()).or_else(|| {
            (attempts >= MAX_ATTEMPTS)
                .then(|| format!("etcd: gave up after {MAX_ATTEMPTS} conflicting attempts"))
        });
        if let Some(e) = failure {
            tracing::error!(error = %e, jobs = batch.len(), "etcd commit failed; nothing of this batch was written");
            for (_, reply) in batch {
                let _ = reply.send(Err(Failure::Store(e.clone())));
            }
            return;
        }
    }
}
