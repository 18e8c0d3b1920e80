//! The etcd backend against a REAL 3-member etcd cluster on 127.0.0.1: two replicas register
//! instances concurrently against a limit while one etcd member is SIGKILLed mid-stream; the
//! limit stays exact, audit sequence numbers stay unique and gap-free, and both replicas keep
//! committing through the surviving members.
//!
//! Skips (loudly) only if /usr/bin/etcd is absent and COFFER_REQUIRE_ETCD is unset.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coffer_coordinator::state::writer::instance_key;
use coffer_coordinator::state::{
    Commit, Guard, Initialised, RawStore, StateKey, Store, Unlocked, WriteOp,
};

/// Starts a 3-member cluster (`None`: etcd is not installed; the test skips).
fn cluster(dir: &std::path::Path) -> Option<(Vec<coffer_test_etcd::Member>, Vec<String>)> {
    coffer_test_etcd::start(dir, 3, None).map(|c| (c.members, c.urls))
}

/// The shared state under `/coffer` with `key`: created by the first caller, opened by the
/// others (waiting until the cluster answers).
fn connect(urls: &[String], key: &StateKey) -> Store {
    for _ in 0..300 {
        if let Ok(raw) = RawStore::open_etcd(urls, "/coffer", None) {
            let raw = if raw.is_initialised().unwrap() {
                raw
            } else {
                match raw.initialise(key.clone(), vec![]).unwrap() {
                    Initialised::Created(s) => return s,
                    Initialised::Lost(r) => r,
                }
            };
            match raw.unlock(key.clone(), 0).unwrap() {
                Unlocked::Verified(s) => return s,
                Unlocked::Tampered(t) => panic!("tampered: {:?}", t.findings()),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the etcd cluster never answered");
}

/// Waits until the cluster answers.
fn wait_for(urls: &[String]) {
    for _ in 0..300 {
        if RawStore::open_etcd(urls, "/probe", None).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the etcd cluster never answered");
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
                        // Decide on one state head; the commit is guarded by it.
                        let base = r.head_revision();
                        let name = instance_key("w", &id);
                        // A retried batch whose first attempt did commit finds its instance.
                        if r.get(&name).unwrap().is_some() {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        let n = r.count("instance/w/").unwrap();
                        let (ops, guards) = if n >= MAX {
                            (vec![audit("refused")], vec![])
                        } else {
                            (
                                vec![WriteOp::Put(name.clone(), vec![1]), audit("accepted")],
                                vec![Guard::KvAbsent(name)],
                            )
                        };
                        match r.apply_guarded(&ops, &guards, base) {
                            Ok(Commit::Done(_)) => {
                                if n >= MAX {
                                    refused.fetch_add(1, Ordering::SeqCst);
                                } else {
                                    accepted.fetch_add(1, Ordering::SeqCst);
                                }
                                break;
                            }
                            Ok(Commit::Conflict(at)) => {
                                let _ = r.etcd().unwrap().refresh_to(at);
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
        members.remove(0).kill();
    });
    eprintln!(
        "transactions retried after a transport failure: {}",
        transient.load(Ordering::SeqCst)
    );
    assert_eq!(accepted.load(Ordering::SeqCst), MAX);
    assert_eq!(refused.load(Ordering::SeqCst), 2 * EACH - MAX);
    let r = &replicas[0];
    r.etcd()
        .unwrap()
        .refresh_to(replicas[1].etcd().unwrap().revision())
        .unwrap();
    assert!(r.tampered().is_none());
    assert_eq!(r.scan("instance/w/").unwrap().len(), MAX);
    // The audit chain is whole: one linked record per decision, ending in the head.
    let records = r.audit(0, 1000).unwrap();
    assert_eq!(
        records.iter().map(|a| a.seq).collect::<Vec<u64>>(),
        (1..=(2 * EACH) as u64).collect::<Vec<u64>>()
    );
    assert_eq!(
        coffer_api::verify_audit(&records).unwrap().head,
        r.head().unwrap().audit_head
    );
}

mod coordinators {
    //! Two `Coordinator`s (the library `coffer coordinator` runs) sharing the 3-member
    //! cluster: the second gets the state key by the attested key join, both serve one state,
    //! the activation limit holds across them while an etcd member dies, and a manifest race
    //! has exactly one winner.

    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use base64::Engine;
    use coffer_api::{ActivationRequest, Evidence, EvidenceFormat};
    use coffer_coordinator::platform::{CollateralSource, EvidenceVerifier, Platform};
    use coffer_coordinator::seal::Sealer;
    use coffer_coordinator::{Config, Coordinator, Error, StoreConfig};
    use coffer_evidence::sim::{SgxQuoteSpec, SimPlatform};

    const SEED: [u8; 32] = [3; 32];
    const MR: [u8; 32] = [0x5a; 32];
    const MAX: usize = 60;
    const EACH: usize = 50;

    fn open(dir: &Path, name: &str, urls: &[String]) -> Coordinator {
        let data = dir.join(name);
        Coordinator::open(
            Config {
                data_dir: data.clone(),
                cert_hours: 1,
                accepted_tcb_statuses: Vec::new(),
                owner_certificate: None,
                store: StoreConfig::Etcd {
                    endpoints: urls.to_vec(),
                    prefix: "/coffer-coordinators".into(),
                    replica: name.into(),
                    tls: None,
                    join_timeout: Duration::from_secs(30),
                },
            },
            Platform::Simulated {
                sim: Box::new(SimPlatform::from_seed(SEED)),
                mrenclave: [1; 32],
            },
            EvidenceVerifier::new(
                SimPlatform::from_seed(SEED).trust_anchors(),
                CollateralSource::Simulated {
                    sim: Box::new(SimPlatform::from_seed(SEED)),
                    cache: Default::default(),
                },
            ),
            Sealer::KeyFile(data.join("sealing.key")),
        )
        .unwrap()
    }

    /// An activation of `instance` on `c`, its parameters opened with the launch key.
    async fn activate(
        c: &Coordinator,
        instance: uuid::Uuid,
    ) -> Result<coffer_api::Activation, Error> {
        let key = rcgen::KeyPair::generate().unwrap();
        let report_data =
            coffer_api::workload_report_data(&coffer_coordinator::pki::key_spki(&key));
        let quote = SimPlatform::from_seed(SEED).sgx_quote(&SgxQuoteSpec {
            mrenclave: MR,
            report_data,
            ..SgxQuoteSpec::default()
        });
        let req = ActivationRequest {
            protocol_version: coffer_api::PROTOCOL_VERSION,
            workload: "w".into(),
            instance_id: instance,
            csr_pem: coffer_coordinator::pki::make_csr(&key, "w").unwrap(),
            evidence: Evidence {
                format: EvidenceFormat::DcapQuote,
                data: base64::engine::general_purpose::STANDARD.encode(quote),
                certificates: Vec::new(),
            },
            image_measurement: None,
        };
        let r = c.activate(req, None).await?;
        Ok(r.open(&key.serialize_der())
            .expect("parameters open with the launch key"))
    }

    fn manifest(max: usize) -> Vec<u8> {
        let mr: String = MR.iter().map(|b| format!("{b:02x}")).collect();
        serde_json::to_vec(&serde_json::json!({
            "packages": {"app": {"tee": "sgx", "mrenclave": mr}},
            "workloads": {"w": {"package": "app", "max_activations": max, "parameters": {
                "env": {
                    "SHARED": "{{ secrets.shared.key.hex }}",
                    "MINE": "{{ secrets.mine.key.hex }}"
                }
            }}},
            "secrets": {
                "shared": {"type": "symmetric", "size": 256, "shared": true},
                "mine": {"type": "symmetric", "size": 256}
            }
        }))
        .unwrap()
    }

    fn env(r: &coffer_api::Activation, name: &str) -> String {
        r.parameters.env.get(name).cloned().unwrap()
    }

    #[test]
    fn two_coordinators_serve_one_state() {
        let dir = tempfile::tempdir().unwrap();
        let Some((mut members, urls)) = super::cluster(dir.path()) else {
            return;
        };
        // Wait until the cluster answers (a throwaway prefix).
        super::wait_for(&urls);
        let a = Arc::new(open(dir.path(), "a", &urls));
        a.start_background_tasks().unwrap();
        // b has its own sealing key: it can open no sealed copy and must join.
        let b = Arc::new(open(dir.path(), "b", &urls));
        b.start_background_tasks().unwrap();
        let root = |c: &Coordinator| c.quote(None, false).unwrap().root_ca_pem;
        assert_eq!(root(&a), root(&b), "b serves the same root CA");
        let status = b.status();
        assert_eq!(status.replica.as_ref().map(|r| r.name.as_str()), Some("b"));
        assert!(
            a.status().replica.unwrap().leader && !status.replica.unwrap().leader,
            "a initialised the state as leader"
        );

        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            // Both set the first manifest at once: exactly one wins, the other is told.
            let body = manifest(MAX);
            let (ra, rb) = tokio::join!(a.set_manifest(None, &body), b.set_manifest(None, &body));
            assert!(
                ra.is_ok() != rb.is_ok(),
                "exactly one first manifest: {ra:?} / {rb:?}"
            );
            let lost = ra.err().or(rb.err()).unwrap();
            assert!(matches!(lost, Error::Conflict(_)), "{lost}");
            assert_eq!(a.status().manifest_hash, b.status().manifest_hash);

            // 2 × 50 distinct instances against a limit of 60, half on each replica; one etcd
            // member is SIGKILLed mid-stream.
            let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for c in [a.clone(), b.clone()] {
                let done = done.clone();
                tasks.push(tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for _ in 0..EACH {
                        let id = uuid::Uuid::new_v4();
                        outcomes.push((id, activate(&c, id).await));
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    outcomes
                }));
            }
            while done.load(std::sync::atomic::Ordering::SeqCst) < EACH / 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            members.remove(0).kill();
            let mut accepted = Vec::new();
            let mut refused = 0;
            for t in tasks {
                for (id, result) in t.await.unwrap() {
                    match result {
                        Ok(r) => accepted.push((id, r)),
                        Err(Error::ActivationLimit(_)) => refused += 1,
                        Err(e) => panic!("unexpected refusal: {e}"),
                    }
                }
            }
            assert_eq!(accepted.len(), MAX);
            assert_eq!(refused, 2 * EACH - MAX);
            // Every accepted instance restarts on the other replica with its own secret and
            // the one shared secret.
            let shared = env(&accepted[0].1, "SHARED");
            for (id, first) in accepted.iter().take(10) {
                let again_a = activate(&a, *id).await.unwrap();
                let again_b = activate(&b, *id).await.unwrap();
                for again in [again_a, again_b] {
                    assert_eq!(env(&again, "MINE"), env(first, "MINE"));
                    assert_eq!(env(&again, "SHARED"), shared);
                }
            }
            // The limit still holds for a new instance on either replica.
            for c in [&a, &b] {
                let err = activate(c, uuid::Uuid::new_v4()).await.unwrap_err();
                assert!(matches!(err, Error::ActivationLimit(_)), "{err}");
            }
        });
    }
}
