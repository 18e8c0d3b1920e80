//! The single writer: every state change goes through one thread that groups the jobs waiting
//! at that moment into one durable redb transaction (group commit) and answers each job only
//! after that commit. One writer also makes the activation limit exact: the check "is this a
//! new instance, and is there room for it" and the insert happen in the same serial order.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::error::Error;
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
}

type Pending = (Job, oneshot::Sender<Result<Outcome, String>>);

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
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((job, tx))
            .map_err(|_| Error::Store("the store writer stopped".into()))?;
        rx.await
            .map_err(|_| Error::Store("the store writer stopped".into()))?
            .map_err(Error::Store)
    }
}

/// Key of an instance record.
pub fn instance_key(workload: &str, instance: &uuid::Uuid) -> String {
    format!("{INSTANCE_PREFIX}{workload}/{instance}")
}

fn run(
    store: Arc<Store>,
    rx: mpsc::Receiver<Pending>,
    mut index: HashMap<String, HashSet<uuid::Uuid>>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
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
            match outcome {
                Outcome::LimitReached => ops.extend(job.refused.iter().cloned()),
                Outcome::New => {
                    ops.extend(job.ops.iter().cloned());
                    ops.extend(job.new_only.iter().cloned());
                }
                Outcome::Applied | Outcome::Existing => ops.extend(job.ops.iter().cloned()),
            }
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
                Err(e) => Err(e.to_string()),
            });
        }
    }
}
