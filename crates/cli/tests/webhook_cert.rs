//! `coffer coordinator --webhook-cert-dir DIR --webhook-dns NAME`: the real process writes the
//! admission webhook's certificate files, signed by the root CA the Coordinator attests with.
//! (Process start-up copied from tests/coordinator.rs, minimal, so that file stays untouched.)

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coffer_coordinator::platform::{CollateralSource, EvidenceVerifier};
use x509_parser::prelude::*;

const COFFER: &str = env!("CARGO_BIN_EXE_coffer");

struct Proc {
    child: Child,
    addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, sim: &Path, extra: &[&str]) -> Proc {
    let mut child = Command::new(COFFER)
        .args(["--json", "coordinator", "--listen", "127.0.0.1:0"])
        .args(["--simulation", "--sim-dir"])
        .arg(sim)
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start coffer coordinator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("first line {line:?}: {e}"));
    Proc {
        child,
        addr: v["listening"].as_str().unwrap().to_string(),
    }
}

fn pem_der(pem: &[u8]) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).unwrap();
    p.contents
}

#[tokio::test]
async fn webhook_certificate_files_are_signed_by_the_attested_root() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sim, out) = (
        dir.path().join("data"),
        dir.path().join("sim"),
        dir.path().join("webhook-tls"),
    );
    let out_s = out.to_str().unwrap().to_string();
    let p = start(
        &data,
        &sim,
        &[
            "--webhook-cert-dir",
            &out_s,
            "--webhook-dns",
            "coffer-webhook.coffer.svc",
            "--webhook-dns",
            "coffer-webhook.coffer.svc.cluster.local",
        ],
    );
    // Poll (generously) for the files: they are written once the Coordinator is ready.
    let mut found = false;
    for _ in 0..600 {
        if out.join("tls.crt").exists() {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "tls.crt was never written");
    let sim_platform = coffer_coordinator::platform::load_or_create_sim(&sim).unwrap();
    let verifier = EvidenceVerifier::new(
        sim_platform.trust_anchors(),
        CollateralSource::Simulated {
            sim: Box::new(coffer_coordinator::platform::load_or_create_sim(&sim).unwrap()),
            cache: Default::default(),
        },
    );
    let a = coffer_coordinator::attest::attest(
        &p.addr,
        &verifier,
        &coffer_coordinator::attest::Expectations {
            allow_simulation: true,
            mrenclaves: &[],
            tcb_statuses: &[],
        },
        coffer_coordinator::core::now_unix(),
    )
    .await
    .expect("attest");
    // ca.crt is the attested root; tls.crt verifies under it and names exactly the SANs.
    let ca = pem_der(&std::fs::read(out.join("ca.crt")).unwrap());
    assert_eq!(ca, a.root_der);
    let leaf = pem_der(&std::fs::read(out.join("tls.crt")).unwrap());
    let (_, cert) = X509Certificate::from_der(&leaf).unwrap();
    let (_, root) = X509Certificate::from_der(&ca).unwrap();
    cert.verify_signature(Some(root.public_key())).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let dns: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        dns,
        [
            "coffer-webhook.coffer.svc",
            "coffer-webhook.coffer.svc.cluster.local"
        ]
    );
    // The key file is private and matches the certificate.
    let key_path = out.join("tls.key");
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
    assert_eq!(
        rcgen::PublicKeyData::subject_public_key_info(&key),
        cert.tbs_certificate.subject_pki.raw.to_vec()
    );
}

#[test]
fn invalid_webhook_dns_names_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(COFFER)
        .args(["--json", "coordinator", "--listen", "127.0.0.1:0"])
        .args(["--simulation", "--sim-dir"])
        .arg(dir.path().join("sim"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--webhook-cert-dir")
        .arg(dir.path().join("tls"))
        .args(["--webhook-dns", "Bad_Name"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("`Bad_Name` is not a valid DNS name"),
        "{text}"
    );
    assert!(!dir.path().join("tls").exists());
}
