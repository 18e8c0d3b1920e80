//! The etcd backend against a REAL 3-member etcd cluster on 127.0.0.1: two replicas register
//! instances concurrently against a limit while one etcd member is SIGKILLed mid-stream; the
//! limit stays exact, audit sequence numbers stay unique and gap-free, and both replicas keep
//! committing through the surviving members.
//!
//! Skips (loudly) only if /usr/bin/etcd is absent and COFFER_REQUIRE_ETCD is unset.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coffer_coordinator::etcd::{instance_guard, Commit, EtcdStore, Guard};
use coffer_coordinator::store::{StateKey, WriteOp};

struct Member {
    child: Child,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a 3-member cluster; returns the members and their client URLs.
fn cluster(dir: &std::path::Path) -> Option<(Vec<Member>, Vec<String>)> {
    if !std::path::Path::new("/usr/bin/etcd").exists() {
        assert!(
            std::env::var_os("COFFER_REQUIRE_ETCD").is_none(),
            "COFFER_REQUIRE_ETCD is set but /usr/bin/etcd is missing"
        );
        eprintln!(
            "\n*** SKIPPED: /usr/bin/etcd is not installed (apt-get install etcd-server) ***\n"
        );
        return None;
    }
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut members = Vec::new();
    let mut urls = Vec::new();
    for (i, (c, p)) in ports.iter().enumerate() {
        let url = format!("http://127.0.0.1:{c}");
        let peer = format!("http://127.0.0.1:{p}");
        let child = Command::new("/usr/bin/etcd")
            .args(["--name", &format!("m{i}"), "--data-dir"])
            .arg(dir.join(format!("m{i}")))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "coffer-test"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        members.push(Member { child });
        urls.push(url);
    }
    Some((members, urls))
}

fn connect(urls: &[String], key: &StateKey) -> EtcdStore {
    for _ in 0..300 {
        if let Ok(mut s) = EtcdStore::connect(urls, "/coffer") {
            s.set_state_key(key.clone());
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the etcd cluster never answered");
}

#[test]
fn two_replicas_keep_the_limit_exact_while_a_member_dies() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut members, urls)) = cluster(dir.path()) else {
        return;
    };
    let key = StateKey::generate();
    let replicas = [connect(&urls, &key), connect(&urls, &key)];
    const MAX: usize = 60;
    const EACH: usize = 50;
    let accepted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let transient = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for r in &replicas {
            let (accepted, refused, transient, done) = (&accepted, &refused, &transient, &done);
            s.spawn(move || {
                for _ in 0..EACH {
                    let id = uuid::Uuid::new_v4();
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        assert!(tries < 500, "no progress");
                        let counter = "count/w".to_string();
                        let rev = r.kv_revision(&counter);
                        let n: usize = r
                            .get(&counter)
                            .unwrap()
                            .map(|v| std::str::from_utf8(&v).unwrap().parse().unwrap())
                            .unwrap_or(0);
                        // A retried batch whose first attempt did commit finds its instance.
                        let name = format!("instance/w/{id}");
                        if r.get(&name).unwrap().is_some() {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        let mut guards = vec![Guard::KvRevision(counter.clone(), rev)];
                        let ops = if n >= MAX {
                            vec![WriteOp::Audit(b"refused".to_vec())]
                        } else {
                            guards.push(instance_guard("w", &id));
                            vec![
                                WriteOp::Put(counter.clone(), (n + 1).to_string().into_bytes()),
                                WriteOp::Put(name.clone(), vec![1]),
                                WriteOp::Audit(b"accepted".to_vec()),
                            ]
                        };
                        match r.apply(&ops, &guards) {
                            Ok(Commit::Done(_)) => {
                                if n >= MAX {
                                    refused.fetch_add(1, Ordering::SeqCst);
                                } else {
                                    accepted.fetch_add(1, Ordering::SeqCst);
                                }
                                break;
                            }
                            Ok(Commit::Conflict(at)) => {
                                let _ = r.refresh_to(at);
                            }
                            Ok(Commit::Retry) => {
                                // The member this request went to died; the mirror was re-read.
                                transient.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => panic!("the store failed: {e}"),
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // Mid-stream: SIGKILL one member (not necessarily the one either replica uses).
        while done.load(Ordering::SeqCst) < EACH / 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut victim = members.remove(0);
        victim.child.kill().unwrap();
        victim.child.wait().unwrap();
    });
    eprintln!(
        "transactions retried after a transport failure: {}",
        transient.load(Ordering::SeqCst)
    );
    assert_eq!(accepted.load(Ordering::SeqCst), MAX);
    assert_eq!(refused.load(Ordering::SeqCst), 2 * EACH - MAX);
    let r = &replicas[0];
    r.refresh_to(replicas[1].revision()).unwrap();
    assert_eq!(r.scan("instance/w/").unwrap().len(), MAX);
    let seqs: Vec<u64> = r.audit(0, 1000).unwrap().iter().map(|a| a.0).collect();
    assert_eq!(seqs, (1..=(2 * EACH) as u64).collect::<Vec<u64>>());
}
