//! HA Coordinators: two real `coffer coordinator --store etcd` processes on a real 3-member
//! etcd cluster on 127.0.0.1, driven over HTTPS with simulated evidence.
//!
//! - the second replica gets the state key by the attested key join and serves the same root CA;
//! - concurrent activations on both replicas keep the activation limit exact while an etcd
//!   member is SIGKILLed mid-stream; audit sequence numbers stay gap-free;
//! - concurrent manifest updates on both replicas: every accepted one is audited, the losers
//!   get `conflict`, and both replicas end on the same manifest;
//! - SIGKILL of the first replica: the second keeps serving with the same CA and secrets and
//!   takes the leader lease; the first, restarted, unseals its own sealed copy.
//!
//! Skips (loudly) only if /usr/bin/etcd is absent and COFFER_REQUIRE_ETCD is unset.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use coffer_api::{ActivationRequest, ActivationResponse, ErrorKind, Evidence, EvidenceFormat};
use coffer_coordinator::client::{Client, Method};
use coffer_coordinator::platform::{CollateralSource, EvidenceVerifier};
use coffer_coordinator::tls::{ClientIdentity, Trust};
use coffer_coordinator::Error;
use coffer_evidence::sim::{SgxQuoteSpec, SimPlatform};

const COFFER: &str = env!("CARGO_BIN_EXE_coffer");
const MR: [u8; 32] = [0xa1; 32];
const LIMIT: usize = 40;
const EACH: usize = 30;

/// A Coordinator process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Coordinator replica; returns the process and its address once it listens.
fn replica(dir: &Path, name: &str, urls: &[String]) -> (Proc, String) {
    let mut child = Command::new(COFFER)
        .args([
            "--json",
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--simulation",
        ])
        .arg("--sim-dir")
        .arg(dir.join("sim"))
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(["--store", "etcd", "--etcd-prefix", "/coffer-ha"])
        .args(["--etcd-endpoints", &urls.join(","), "--replica-name", name])
        .stdout(Stdio::piped())
        // Kept in the temp dir: what the replica logged, should the test fail.
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{name}: first line {line:?}: {e}"));
    let addr = v["listening"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} did not start: {line}"));
    (Proc(child), addr.to_string())
}

/// The replicas' logs, for a failure message.
fn replica_logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["a", "b"] {
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        out.push_str(&format!("--- replica {name}\n{log}"));
    }
    out
}

fn sim(dir: &Path) -> SimPlatform {
    coffer_coordinator::platform::load_or_create_sim(&dir.join("sim")).unwrap()
}

/// Attests the replica and returns a client trusting its root, and the root DER.
async fn attested(dir: &Path, addr: &str, id: Option<&ClientIdentity>) -> (Client, Vec<u8>) {
    let v = EvidenceVerifier::new(
        sim(dir).trust_anchors(),
        CollateralSource::Simulated {
            sim: Box::new(sim(dir)),
            cache: Default::default(),
        },
    );
    let expect = coffer_coordinator::attest::Expectations {
        allow_simulation: true,
        mrenclaves: &[],
        tcb_statuses: &[],
    };
    let now = coffer_coordinator::core::now_unix();
    let a = coffer_coordinator::attest::attest(addr, &v, &expect, now)
        .await
        .unwrap_or_else(|e| panic!("attest {addr}: {e:?}\n{}", replica_logs(dir)));
    let c = Client::new(addr, &Trust::RootCa(a.root_der.clone()), id).unwrap();
    (c, a.root_der)
}

fn admin() -> (ClientIdentity, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["admin.users.test".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let id = ClientIdentity {
        chain: vec![cert.der().to_vec()],
        key_pkcs8: key.serialize_der(),
    };
    (id, cert.pem())
}

fn manifest(admin_pem: &str, extra: Option<&str>) -> serde_json::Value {
    let mut m = serde_json::json!({
        "packages": {"app": {"tee": "sgx", "mrenclave": hex::encode(MR)}},
        "workloads": {
            "web": {"package": "app", "max_activations": LIMIT, "parameters": {"env": {
                "SHARED": "{{ secrets.shared.key.hex }}",
                "MINE": "{{ secrets.mine.key.hex }}"
            }}},
            "free": {"package": "app"}
        },
        "secrets": {
            "shared": {"type": "symmetric", "size": 256, "shared": true},
            "mine": {"type": "symmetric", "size": 128},
            "password": {"type": "user-defined"}
        },
        "users": {"admin": {"certificate": admin_pem, "roles": ["all"]}},
        "roles": {
            "all-secrets": {"resource": "secrets", "names": ["password"], "actions": ["read", "write"]},
            "all": {"resource": "manifest", "actions": ["update"]},
            "audit": {"resource": "audit", "actions": ["read"]}
        }
    });
    m["users"]["admin"]["roles"] = serde_json::json!(["all", "all-secrets", "audit"]);
    if let Some(w) = extra {
        m["workloads"][w] = serde_json::json!({"package": "app"});
    }
    m
}

async fn activate(
    c: &mut Client,
    sim: &SimPlatform,
    workload: &str,
    id: uuid::Uuid,
) -> Result<coffer_api::Activation, Error> {
    let key = rcgen::KeyPair::generate().unwrap();
    let report_data = coffer_api::workload_report_data(&coffer_coordinator::pki::key_spki(&key));
    let quote = sim.sgx_quote(&SgxQuoteSpec {
        mrenclave: MR,
        report_data,
        ..SgxQuoteSpec::default()
    });
    let req = ActivationRequest {
        protocol_version: coffer_api::PROTOCOL_VERSION,
        workload: workload.into(),
        instance_id: id,
        csr_pem: coffer_coordinator::pki::make_csr(&key, workload).unwrap(),
        evidence: Evidence {
            format: EvidenceFormat::DcapQuote,
            data: base64::engine::general_purpose::STANDARD.encode(quote),
            certificates: Vec::new(),
        },
        image_measurement: None,
    };
    let r: ActivationResponse = c.call(Method::POST, "/api/v1/activate", Some(&req)).await?;
    Ok(r.open(&key.serialize_der())
        .expect("parameters open with the launch key"))
}

async fn status(c: &mut Client) -> coffer_api::StatusResponse {
    c.get("/api/v1/status").await.unwrap()
}

fn kind(r: &Result<impl std::fmt::Debug, Error>) -> Option<ErrorKind> {
    match r {
        Err(Error::Remote { kind, .. }) => Some(kind.clone()),
        _ => None,
    }
}

fn env(r: &coffer_api::Activation, name: &str) -> String {
    r.parameters.env[name].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_serve_one_state_through_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_path_buf();
    let Some(coffer_test_etcd::Cluster { mut members, urls }) =
        coffer_test_etcd::start(&dir, 3, None)
    else {
        return;
    };
    sim(&dir); // One simulated platform for both replicas (their sealing keys differ).
    let (admin_id, admin_pem) = admin();

    let (a, addr_a) = replica(&dir, "a", &urls);
    let (mut ca, root) = attested(&dir, &addr_a, Some(&admin_id)).await;
    let _: coffer_api::ManifestResponse = ca
        .call(
            Method::POST,
            "/api/v1/manifest",
            Some(&manifest(&admin_pem, None)),
        )
        .await
        .unwrap();
    let set = coffer_api::SetSecretsRequest {
        secrets: [("password".to_string(), "aHVudGVyMg==".to_string())].into(),
    };
    let (st, _) = ca
        .request(
            Method::PUT,
            "/api/v1/secrets",
            Some(serde_json::to_vec(&set).unwrap()),
        )
        .await
        .unwrap();
    assert!(st.is_success(), "{st}");

    // b has its own sealing key: it listens only after the key join.
    let (_b, addr_b) = replica(&dir, "b", &urls);
    let (mut cb, root_b) = attested(&dir, &addr_b, Some(&admin_id)).await;
    assert_eq!(root, root_b, "both replicas serve one root CA");
    let (sa, sb) = (status(&mut ca).await, status(&mut cb).await);
    assert_eq!(sa.manifest_hash, sb.manifest_hash);
    let (ra, rb) = (sa.replica.unwrap(), sb.replica.unwrap());
    assert_eq!((ra.name.as_str(), rb.name.as_str()), ("a", "b"));
    assert!(ra.leader && !rb.leader, "a initialised the state as leader");

    // 2 × 30 activations at once, one stream per replica, against a limit of 40; one etcd
    // member dies after the first 15.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut streams = Vec::new();
    for addr in [addr_a.clone(), addr_b.clone()] {
        let (root, dir, done) = (root.clone(), dir.clone(), done.clone());
        streams.push(tokio::spawn(async move {
            let mut c = Client::new(&addr, &Trust::RootCa(root), None).unwrap();
            let sim = sim(&dir);
            let mut out = Vec::new();
            for _ in 0..EACH {
                let id = uuid::Uuid::new_v4();
                out.push((id, activate(&mut c, &sim, "web", id).await));
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            out
        }));
    }
    // Bounded: streams that hang fail the test instead of hanging it.
    for _ in 0..6000 {
        if done.load(std::sync::atomic::Ordering::SeqCst) >= EACH / 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        done.load(std::sync::atomic::Ordering::SeqCst) >= EACH / 2,
        "the activation streams made no progress in 30 s"
    );
    members.remove(0).kill();
    let mut accepted = Vec::new();
    let mut limited = 0;
    for s in streams {
        for (id, r) in s.await.unwrap() {
            match kind(&r) {
                None => accepted.push((id, r.unwrap())),
                Some(ErrorKind::ActivationLimit) => limited += 1,
                Some(k) => panic!("activation refused with {k:?}: {r:?}"),
            }
        }
    }
    assert_eq!(accepted.len(), LIMIT, "the limit is exact across replicas");
    assert_eq!(limited, 2 * EACH - LIMIT);
    // An instance restarting on the other replica gets its own and the shared secret back.
    let shared = env(&accepted[0].1, "SHARED");
    let s = sim(&dir);
    for (id, first) in accepted.iter().take(6) {
        for c in [&mut ca, &mut cb] {
            let again = activate(c, &s, "web", *id).await.unwrap();
            assert_eq!(env(&again, "MINE"), env(first, "MINE"));
            assert_eq!(env(&again, "SHARED"), shared);
        }
    }

    // Concurrent updates, one per replica, from the same base manifest.
    let (ua, ub) = (
        manifest(&admin_pem, Some("x")),
        manifest(&admin_pem, Some("y")),
    );
    let (wa, wb) = tokio::join!(
        ca.call::<_, coffer_api::ManifestResponse>(
            Method::POST,
            "/api/v1/manifest/update",
            Some(&ua)
        ),
        cb.call::<_, coffer_api::ManifestResponse>(
            Method::POST,
            "/api/v1/manifest/update",
            Some(&ub)
        ),
    );
    let won: Vec<&coffer_api::ManifestResponse> = [&wa, &wb].into_iter().flatten().collect();
    assert!(!won.is_empty(), "{wa:?} / {wb:?}");
    eprintln!("concurrent updates: a {:?}, b {:?}", kind(&wa), kind(&wb));
    for r in [&wa, &wb] {
        if r.is_err() {
            assert_eq!(kind(r), Some(ErrorKind::Conflict), "{r:?}");
        }
    }
    let (sa, sb) = (status(&mut ca).await, status(&mut cb).await);
    assert_eq!(sa.manifest_hash, sb.manifest_hash);
    assert!(won
        .iter()
        .any(|w| Some(&w.manifest_hash) == sa.manifest_hash.as_ref()));

    // The audit log, read on b: gap-free sequence numbers, one record per accepted update.
    let audit: coffer_api::AuditResponse = cb.get("/api/v1/audit?limit=1000").await.unwrap();
    let seqs: Vec<u64> = audit.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let updates = audit
        .records
        .iter()
        .filter(|r| r.event == "manifest-update" && r.outcome == "accepted")
        .count();
    assert_eq!(updates, won.len());
    // The manifest in force is the one the last accepted update installed.
    let last = audit
        .records
        .iter()
        .rev()
        .find(|r| r.event == "manifest-update" && r.outcome == "accepted")
        .unwrap();
    let hash = sa.manifest_hash.as_deref().unwrap();
    assert!(
        last.detail.as_deref().unwrap().contains(hash),
        "{last:?} / {hash}"
    );

    // a dies; b keeps serving with the same CA and secrets, and becomes the leader.
    drop(a);
    let fresh = activate(&mut cb, &s, "free", uuid::Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(
        coffer_coordinator::pki::pem_decode(&fresh.root_ca_pem, "CERTIFICATE").unwrap(),
        root
    );
    let again = activate(&mut cb, &s, "web", accepted[0].0).await.unwrap();
    assert_eq!(env(&again, "MINE"), env(&accepted[0].1, "MINE"));
    let got: coffer_api::SecretsResponse = cb.get("/api/v1/secrets?names=password").await.unwrap();
    assert_eq!(
        got.secrets["password"].value.as_deref(),
        Some("aHVudGVyMg==")
    );
    let mut leader = false;
    for _ in 0..300 {
        if status(&mut cb).await.replica.unwrap().leader {
            leader = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(leader, "b did not take the leader lease after a died");

    // a restarts on its old data directory: it opens its own sealed copy.
    let (_a, addr_a) = replica(&dir, "a", &urls);
    let (mut ca, root_a) = attested(&dir, &addr_a, None).await;
    assert_eq!(root_a, root);
    assert_eq!(status(&mut ca).await.manifest_hash, sb.manifest_hash);

    // Logs written to a file are plain text: no terminal colour codes.
    let logs = replica_logs(&dir);
    assert!(logs.contains(" WARN ") && !logs.contains('\x1b'), "{logs}");
}
