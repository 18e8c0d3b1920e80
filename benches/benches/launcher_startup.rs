//! Start-up overhead of `coffer-launcher`: wall time from spawning the launcher to the end of
//! the app it execs (`busybox true`, which exits at once), with a real Coordinator on loopback
//! HTTPS and the SIMULATED platform. What is timed: reading and validating the workload file,
//! hashing the trusted files (the 1–2 MiB static busybox), P-256 key generation, CSR, simulated
//! quote, TLS handshake, activation (verified, signed and durably committed by the
//! Coordinator), writing the TLS files, exec.
//!
//! The Coordinator runs in this process (`coffer_coordinator::serve`, the code `coffer
//! coordinator` runs); the launcher is the real binary: `COFFER_LAUNCHER`, else the static
//! build (`bash scripts/build-launcher.sh`), else `target/release/coffer-launcher`.
//!
//! Run: `bash scripts/build-launcher.sh && cargo bench -p coffer-benches --bench launcher_startup`
//! Tunable (env): `COFFER_BENCH_STARTS` (default 50).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_coordinator::client::{Client, Method};
use coffer_coordinator::platform::{CollateralSource, EvidenceVerifier, Platform};
use coffer_coordinator::seal::Sealer;
use coffer_coordinator::tls::Trust;
use coffer_coordinator::{Config, Coordinator};
use coffer_evidence::sim::SimPlatform;
use coffer_image::workload::{Symlink, TrustedFile, WorkloadFile};
use coffer_image::Digest;
use sha2::Digest as _;

fn launcher() -> PathBuf {
    if let Some(p) = std::env::var_os("COFFER_LAUNCHER") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for c in [
        "target/x86_64-unknown-linux-gnu/release/coffer-launcher",
        "target/release/coffer-launcher",
    ] {
        let p = root.join(c);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "no coffer-launcher: run `bash scripts/build-launcher.sh` first (or set COFFER_LAUNCHER)"
    );
}

fn rootfs(dir: &Path) -> WorkloadFile {
    let bb = ["/usr/bin/busybox", "/bin/busybox"]
        .iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox-static");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("coffer")).unwrap();
    std::fs::copy(bb, dir.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/true")).unwrap();
    let data = std::fs::read(dir.join("bin/busybox")).unwrap();
    let mut wf = WorkloadFile {
        format_version: coffer_image::workload::FORMAT_VERSION,
        entrypoint: vec!["/bin/busybox".into(), "true".into()],
        cmd: vec![],
        env: vec!["PATH=/bin".into()],
        working_dir: "/".into(),
        user: String::new(),
        trusted_files: vec![TrustedFile {
            path: "/bin/busybox".into(),
            sha256: Digest(sha2::Sha256::digest(&data).into()),
            size: data.len() as u64,
            mode: 0o755,
        }],
        symlinks: vec![Symlink {
            path: "/bin/true".into(),
            target: "busybox".into(),
        }],
        allowed: vec![],
        runtime_mounts: vec![],
        encrypted_files: vec![],
        isv_prod_id: 1,
        isv_svn: 1,
        image_measurement: Digest([0; 32]),
        sgx: None,
    };
    std::fs::set_permissions(
        dir.join("bin/busybox"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    wf.seal();
    std::fs::write(dir.join("coffer/workload.json"), wf.to_json()).unwrap();
    wf
}

fn main() {
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let starts: usize = if quick {
        3
    } else {
        std::env::var("COFFER_BENCH_STARTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50)
    };
    let launcher = launcher();
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = [9u8; 32];
    let sim = SimPlatform::from_seed(seed);
    let sim_dir = dir.path().join("sim");
    std::fs::create_dir_all(&sim_dir).unwrap();
    std::fs::write(sim_dir.join("sim-platform.json"), sim.to_bytes()).unwrap();
    let root = dir.path().join("rootfs");
    let wf = rootfs(&root);

    let coordinator = Arc::new(
        Coordinator::open(
            Config {
                data_dir: dir.path().join("data"),
                cert_hours: 24,
                accepted_tcb_statuses: Vec::new(),
                owner_certificate: None,
                store: coffer_coordinator::StoreConfig::Embedded,
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (addr, root_pem) = rt.block_on(async {
        let tls = coffer_coordinator::tls::server_config(coordinator.tls_slot()).expect("tls");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let q = coordinator.quote(None, false).expect("quote");
        let root =
            coffer_coordinator::pki::pem_decode(&q.root_ca_pem, "CERTIFICATE").expect("root");
        let router = coffer_coordinator::router(coordinator.clone());
        tokio::spawn(coffer_coordinator::serve(
            listener,
            Arc::new(tls),
            router,
            std::future::pending(),
        ));
        let manifest = serde_json::json!({
            "packages": {"app": {"tee": "sgx", "mrenclave": wf.image_measurement.hex()}},
            "workloads": {"app": {"package": "app", "parameters": {
                "env": {"KEY": "{{ secrets.k.key.hex }}"},
                "files": {"/etc/app/key": {"content": "{{ secrets.k.key.hex }}"}}
            }}},
            "secrets": {"k": {"type": "symmetric", "size": 256, "shared": true}}
        });
        let mut admin = Client::new(&addr, &Trust::RootCa(root), None).expect("client");
        let _: coffer_api::ManifestResponse = admin
            .call(Method::POST, "/api/v1/manifest", Some(&manifest))
            .await
            .expect("set manifest");
        (addr, q.root_ca_pem)
    });
    let ca = dir.path().join("root-ca.pem");
    std::fs::write(&ca, root_pem).unwrap();

    let mut times: Vec<Duration> = Vec::with_capacity(starts);
    for _ in 0..starts {
        let t = Instant::now();
        let out = Command::new(&launcher)
            .env_clear()
            .env("COFFER_COORDINATOR", &addr)
            .env("COFFER_WORKLOAD", "app")
            .env("COFFER_ROOT_CA", &ca)
            .env("COFFER_EVIDENCE", "sim")
            .env("COFFER_SIM_DIR", &sim_dir)
            .env("COFFER_ROOTFS", &root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("spawn launcher");
        let elapsed = t.elapsed();
        assert!(
            out.status.success(),
            "launcher failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        times.push(elapsed);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "launcher start → app exit (busybox true), {} starts, simulated platform, Coordinator on loopback:\n  median {:.1} ms  p90 {:.1} ms  min {:.1} ms  max {:.1} ms\n  launcher {}",
        times.len(),
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(times[0]),
        ms(times[times.len() - 1]),
        launcher.display()
    );
    drop(rt);
}
