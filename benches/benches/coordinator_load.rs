//! Load benchmark of the Coordinator: many concurrent clients activating over loopback HTTPS
//! with simulated evidence.
//!
//! The Coordinator runs in this process on a real socket (`coffer_coordinator::serve`, the same
//! code `coffer coordinator` runs) with a sealed store in a temporary directory; every
//! activation is verified (quote, CSR, policy), signed, audited and committed durably before it
//! is answered. Launcher-side work (key generation, CSR, quote) is done before the clock starts.
//!
//! Run: `cargo bench -p coffer-benches --bench coordinator_load`
//! Tunables (env): `COFFER_BENCH_ACTIVATIONS` (default 20000), `COFFER_BENCH_CLIENTS` (64),
//! `COFFER_BENCH_ETCD` (comma-separated etcd client URLs: use the shared etcd store instead of
//! the embedded one, under a fresh prefix).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use coffer_coordinator::client::{Client, Method};
use coffer_coordinator::platform::{CollateralSource, EvidenceVerifier, Platform};
use coffer_coordinator::seal::Sealer;
use coffer_coordinator::tls::Trust;
use coffer_coordinator::{Config, Coordinator};
use coffer_evidence::sim::{SgxQuoteSpec, SimPlatform};

const MR: [u8; 32] = [0x5a; 32];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us with few activations.
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let total = if quick {
        200
    } else {
        env_usize("COFFER_BENCH_ACTIVATIONS", 20_000)
    };
    let clients = if quick {
        8
    } else {
        env_usize("COFFER_BENCH_CLIENTS", 64)
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let seed = [7u8; 32];
    let sim = SimPlatform::from_seed(seed);
    let coordinator = Arc::new(
        Coordinator::open(
            Config {
                data_dir: dir.path().join("data"),
                cert_hours: 24,
                accepted_tcb_statuses: Vec::new(),
                owner_certificate: None,
                store: match std::env::var("COFFER_BENCH_ETCD") {
                    Ok(urls) => coffer_coordinator::StoreConfig::Etcd {
                        endpoints: urls.split(',').map(str::to_string).collect(),
                        prefix: format!("/coffer-bench-{}", uuid::Uuid::new_v4().simple()),
                        replica: "bench".into(),
                        tls: None,
                        join_timeout: Duration::from_secs(30),
                    },
                    Err(_) => coffer_coordinator::StoreConfig::Embedded,
                },
            },
            Platform::Simulated {
                sim: Box::new(SimPlatform::from_seed(seed)),
                mrenclave: [1; 32],
            },
            EvidenceVerifier::new(
                sim.trust_anchors(),
                CollateralSource::Simulated {
                    sim: Box::new(SimPlatform::from_seed(seed)),
                    cache: Default::default(),
                },
            ),
            Sealer::KeyFile(dir.path().join("data").join("sealing.key")),
        )
        .expect("open coordinator"),
    );

    eprintln!("preparing {total} activation requests (key, CSR, simulated quote each)…");
    let b64 = base64::engine::general_purpose::STANDARD;
    let requests: Vec<Vec<u8>> = (0..total)
        .map(|_| {
            let key = rcgen::KeyPair::generate().expect("key");
            let csr_pem = coffer_coordinator::pki::make_csr(&key, "bench").expect("csr");
            let report_data =
                coffer_api::workload_report_data(&coffer_coordinator::pki::key_spki(&key));
            let quote = sim.sgx_quote(&SgxQuoteSpec {
                mrenclave: MR,
                report_data,
                ..SgxQuoteSpec::default()
            });
            serde_json::to_vec(&coffer_api::ActivationRequest {
                protocol_version: coffer_api::PROTOCOL_VERSION,
                workload: "bench".into(),
                instance_id: uuid::Uuid::new_v4(),
                csr_pem,
                evidence: coffer_api::Evidence {
                    format: coffer_api::EvidenceFormat::DcapQuote,
                    data: b64.encode(quote),
                    certificates: Vec::new(),
                },
                image_measurement: None,
            })
            .expect("json")
        })
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let tls = coffer_coordinator::tls::server_config(coordinator.tls_slot()).expect("tls");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let root = {
            let q = coordinator.quote(None, false).expect("quote");
            coffer_coordinator::pki::pem_decode(&q.root_ca_pem, "CERTIFICATE").expect("root")
        };
        let router = coffer_coordinator::router(coordinator.clone());
        tokio::spawn(coffer_coordinator::serve(listener, Arc::new(tls), router, std::future::pending()));

        let manifest = serde_json::json!({
            "packages": {"app": {"tee": "sgx", "mrenclave": hex(MR)}},
            "workloads": {"bench": {"package": "app", "parameters": {
                "env": {"KEY": "{{ secrets.k.key.hex }}"},
                "files": {"/etc/ca.pem": {"content": "{{ coffer.root_ca.pem }}"}}
            }}},
            "secrets": {"k": {"type": "symmetric", "size": 256, "shared": true}}
        });
        let mut admin = Client::new(&addr, &Trust::RootCa(root.clone()), None).expect("client");
        let _: coffer_api::ManifestResponse =
            admin.call(Method::POST, "/api/v1/manifest", Some(&manifest)).await.expect("set manifest");

        let queue = Arc::new(std::sync::Mutex::new(requests));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (queue, addr, root) = (queue.clone(), addr.clone(), root.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = Client::new(&addr, &Trust::RootCa(root), None).expect("client");
                let mut lat = Vec::new();
                let mut errors = 0usize;
                while let Some(body) = next(&queue) {
                    let t = Instant::now();
                    match c.request(Method::POST, "/api/v1/activate", Some(body)).await {
                        Ok((st, _)) if st.is_success() => lat.push(t.elapsed()),
                        Ok((st, b)) => {
                            errors += 1;
                            eprintln!("error {st}: {}", String::from_utf8_lossy(&b));
                        }
                        Err(e) => {
                            errors += 1;
                            eprintln!("error: {e}");
                        }
                    }
                }
                (lat, errors)
            }));
        }
        let mut lat: Vec<Duration> = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.expect("task");
            lat.extend(l);
            errors += e;
        }
        let elapsed = start.elapsed();
        lat.sort();
        let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or_default();
        println!(
            "coordinator_load ({} store): {} activations, {clients} concurrent clients, {:.2} s, {:.0} activations/s, \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, errors {errors}",
            if std::env::var_os("COFFER_BENCH_ETCD").is_some() { "etcd" } else { "embedded" },
            lat.len(),
            elapsed.as_secs_f64(),
            lat.len() as f64 / elapsed.as_secs_f64(),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
        assert_eq!(errors, 0, "activations failed");
    });
}

/// Takes the next request; the lock is released before the caller awaits.
fn next(queue: &std::sync::Mutex<Vec<Vec<u8>>>) -> Option<Vec<u8>> {
    queue.lock().ok().and_then(|mut q| q.pop())
}

fn hex(b: [u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
