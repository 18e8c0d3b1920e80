//! A small pool of threads for CPU-heavy work (quote verification, RSA key generation), so it
//! never runs on the async workers and never holds up other requests.
//!
//! Why not tokio's own tools: `spawn_blocking` starts a thread per concurrent job (64 clients,
//! 64 threads verifying on 2 cores) and `block_in_place` hands the worker's scheduler to
//! another thread on every call; measured in `coordinator_load`, both cost more than the
//! verification itself (see BENCHMARKS.md). A fixed pool of one thread per core keeps the
//! work bounded and the hand-off to one channel send and one wake-up.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::Error;

type Task = Box<dyn FnOnce() + Send>;

fn pool() -> &'static Mutex<mpsc::Sender<Task>> {
    static POOL: OnceLock<Mutex<mpsc::Sender<Task>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..n {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("coffer-work-{i}"))
                .spawn(move || loop {
                    let task = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match task {
                        Ok(t) => t(),
                        Err(_) => return,
                    }
                });
        }
        Mutex::new(tx)
    })
}

/// Runs `f` on the pool and waits for its result without blocking the async worker.
pub(crate) async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task: Task = Box::new(move || {
        let _ = tx.send(f());
    });
    pool()
        .lock()
        .map_err(|_| Error::Platform("work pool poisoned".into()))?
        .send(task)
        .map_err(|_| Error::Platform("work pool stopped".into()))?;
    rx.await
        .map_err(|_| Error::Platform("a work pool job panicked".into()))?
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn jobs_run_off_the_runtime_and_answer() {
        let here = std::thread::current().id();
        let there = super::run(|| Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_ne!(here, there);
        let many = futures_join(32).await;
        assert_eq!(many, (0..32).sum::<u64>());
    }

    async fn futures_join(n: u64) -> u64 {
        let mut handles = Vec::new();
        for i in 0..n {
            handles.push(tokio::spawn(super::run(move || Ok(i))));
        }
        let mut sum = 0;
        for h in handles {
            sum += h.await.unwrap().unwrap();
        }
        sum
    }
}
