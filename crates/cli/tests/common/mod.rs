//! What the tests of the real `coffer coordinator` process share: starting it on 127.0.0.1,
//! attesting it, the users and manifest of a deployment, simulated launches.
//! Each test binary uses part of it.

#![allow(dead_code)]

pub(crate) mod image;

pub(crate) use std::io::{BufRead, BufReader};
pub(crate) use std::path::Path;
pub(crate) use std::process::{Child, Command, Stdio};
pub(crate) use std::sync::OnceLock;

pub(crate) use base64::Engine;
pub(crate) use coffer_api::{
    ActivationRequest, ActivationResponse, ErrorKind, Evidence, EvidenceFormat,
};
pub(crate) use coffer_coordinator::client::{Client, Method};
pub(crate) use coffer_coordinator::platform::{CollateralSource, EvidenceVerifier};
pub(crate) use coffer_coordinator::tls::{ClientIdentity, Trust};
pub(crate) use coffer_coordinator::Error;
pub(crate) use coffer_evidence::sim::{SgxQuoteSpec, SimPlatform};

pub(crate) const COFFER: &str = env!("CARGO_BIN_EXE_coffer");
pub(crate) const MR_APP: [u8; 32] = [0xa1; 32];
pub(crate) const MR_DEBUG: [u8; 32] = [0xb2; 32];
pub(crate) const MR_TCB: [u8; 32] = [0xc3; 32];
pub(crate) const MR_OTHER: [u8; 32] = [0xd4; 32];

pub(crate) fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// A running Coordinator process; killed on drop.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub(crate) fn sigkill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(data: &Path, sim: &Path) -> Proc {
    start_with(data, sim, &[])
}

/// Starts `coffer coordinator` with `extra` arguments; its log goes to `data/../coordinator.log`.
pub(crate) fn start_with(data: &Path, sim: &Path, extra: &[&str]) -> Proc {
    let log = data.with_file_name(format!(
        "{}.log",
        data.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("coordinator")
    ));
    let mut child = Command::new(COFFER)
        .args([
            "--json",
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--simulation",
            "--sim-dir",
        ])
        .arg(sim)
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::create(&log)
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .expect("start coffer coordinator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        let _ = child.wait();
        panic!(
            "the Coordinator did not start (first line {line:?}: {e}); its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert_eq!(
        v["simulation"], true,
        "the Coordinator did not start: {line}"
    );
    Proc {
        child,
        addr: v["listening"].as_str().unwrap().to_string(),
    }
}

pub(crate) fn sim_platform(dir: &Path) -> SimPlatform {
    coffer_coordinator::platform::load_or_create_sim(dir).unwrap()
}

pub(crate) fn sim_verifier(dir: &Path) -> EvidenceVerifier {
    let sim = sim_platform(dir);
    EvidenceVerifier::new(
        sim.trust_anchors(),
        CollateralSource::Simulated {
            sim: Box::new(sim_platform(dir)),
            cache: Default::default(),
        },
    )
}

pub(crate) fn now() -> i64 {
    coffer_coordinator::core::now_unix()
}

/// Attests the Coordinator and returns a client trusting its root (and the root DER).
pub(crate) async fn attested(
    addr: &str,
    sim: &Path,
    id: Option<&ClientIdentity>,
) -> (Client, Vec<u8>) {
    try_attested(addr, sim, id).await.expect("attest")
}

/// [`attested`], failing instead of panicking.
pub(crate) async fn try_attested(
    addr: &str,
    sim: &Path,
    id: Option<&ClientIdentity>,
) -> Result<(Client, Vec<u8>), Error> {
    let v = sim_verifier(sim);
    let a = coffer_coordinator::attest::attest(
        addr,
        &v,
        &coffer_coordinator::attest::Expectations {
            allow_simulation: true,
            mrenclaves: &[],
            tcb_statuses: &[],
        },
        now(),
    )
    .await?;
    assert!(a.simulation);
    Ok((
        Client::new(addr, &Trust::RootCa(a.root_der.clone()), id)?,
        a.root_der,
    ))
}

pub(crate) struct Users {
    pub(crate) admin: ClientIdentity,
    pub(crate) admin_pem: String,
    pub(crate) reader: ClientIdentity,
    pub(crate) reader_pem: String,
    pub(crate) stranger: ClientIdentity,
    pub(crate) recovery_priv_pem: String,
    pub(crate) recovery_pub_pem: String,
}

pub(crate) fn user(cn: &str) -> (ClientIdentity, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![format!("{cn}.users.test")]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (
        ClientIdentity {
            chain: vec![cert.der().to_vec()],
            key_pkcs8: key.serialize_der(),
        },
        cert.pem(),
    )
}

pub(crate) fn users() -> &'static Users {
    static U: OnceLock<Users> = OnceLock::new();
    U.get_or_init(|| {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let (admin, admin_pem) = user("admin");
        let (reader, reader_pem) = user("reader");
        let (stranger, _) = user("stranger");
        // One RSA-2048 key for all tests (generated once: key generation is slow).
        let rk = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        Users {
            admin,
            admin_pem,
            reader,
            reader_pem,
            stranger,
            recovery_priv_pem: rk.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            recovery_pub_pem: rk
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        }
    })
}

pub(crate) fn manifest() -> serde_json::Value {
    let u = users();
    serde_json::json!({
        "packages": {
            "app": {"tee": "sgx", "mrenclave": hex::encode(MR_APP)},
            "debugpkg": {"tee": "sgx", "mrenclave": hex::encode(MR_DEBUG)},
            "tcbpkg": {"tee": "sgx", "mrenclave": hex::encode(MR_TCB), "accepted_tcb_statuses": ["SWHardeningNeeded"]}
        },
        "workloads": {
            "web": {"package": "app", "parameters": {
                "env": {"DB_KEY": "{{ secrets.db_key.key.hex }}", "INST": "{{ secrets.inst_key.key.hex }}"},
                "files": {"/etc/coffer-ca.pem": {"content": "{{ coffer.root_ca.pem }}"}}
            }},
            "withpw": {"package": "app", "parameters": {"env": {"PASSWORD": "{{ secrets.password.value.text }}"}}},
            "limited": {"package": "app", "max_activations": 2},
            "dbg": {"package": "debugpkg"},
            "tcb": {"package": "tcbpkg"}
        },
        "secrets": {
            "db_key": {"type": "symmetric", "size": 256, "shared": true},
            "inst_key": {"type": "symmetric", "size": 128},
            "password": {"type": "user-defined"}
        },
        "users": {
            "admin": {"certificate": u.admin_pem, "roles": ["pw-rw", "updater", "auditor"]},
            "reader": {"certificate": u.reader_pem, "roles": ["pw-r"]}
        },
        "roles": {
            "pw-rw": {"resource": "secrets", "names": ["password"], "actions": ["read", "write"]},
            "pw-r": {"resource": "secrets", "names": ["password"], "actions": ["read"]},
            "updater": {"resource": "manifest", "actions": ["update"]},
            "auditor": {"resource": "audit", "actions": ["read"]}
        },
        "recovery_keys": {"owner": u.recovery_pub_pem}
    })
}

pub(crate) struct Launch {
    pub(crate) csr_pem: String,
    pub(crate) report_data: [u8; 64],
    /// The private key (PKCS#8 DER): the only key the answer's parameters open with.
    pub(crate) key_pkcs8: Vec<u8>,
}

pub(crate) fn launch_key() -> Launch {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr_pem = coffer_coordinator::pki::make_csr(&key, "w").unwrap();
    let report_data = coffer_api::workload_report_data(&coffer_coordinator::pki::key_spki(&key));
    Launch {
        csr_pem,
        report_data,
        key_pkcs8: key.serialize_der(),
    }
}

pub(crate) fn quote(
    sim: &SimPlatform,
    mrenclave: [u8; 32],
    debug: bool,
    report_data: [u8; 64],
) -> Vec<u8> {
    sim.sgx_quote(&SgxQuoteSpec {
        mrenclave,
        debug,
        report_data,
        ..SgxQuoteSpec::default()
    })
}

pub(crate) fn request(
    workload: &str,
    id: uuid::Uuid,
    csr_pem: &str,
    quote: &[u8],
) -> ActivationRequest {
    ActivationRequest {
        protocol_version: coffer_api::PROTOCOL_VERSION,
        workload: workload.into(),
        instance_id: id,
        csr_pem: csr_pem.into(),
        evidence: Evidence {
            format: EvidenceFormat::DcapQuote,
            data: b64().encode(quote),
            certificates: Vec::new(),
        },
        image_measurement: None,
    }
}

pub(crate) async fn activate(
    c: &mut Client,
    sim: &SimPlatform,
    workload: &str,
    id: uuid::Uuid,
    mr: [u8; 32],
) -> Result<coffer_api::Activation, Error> {
    let l = launch_key();
    let q = quote(sim, mr, false, l.report_data);
    let r: ActivationResponse = c
        .call(
            Method::POST,
            "/api/v1/activate",
            Some(&request(workload, id, &l.csr_pem, &q)),
        )
        .await?;
    Ok(r.open(&l.key_pkcs8)
        .expect("the parameters open with the launch key"))
}

pub(crate) fn refused_kind<T: std::fmt::Debug>(r: Result<T, Error>) -> (ErrorKind, String) {
    match r {
        Err(Error::Remote { kind, message, .. }) => (kind, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

pub(crate) async fn set_manifest(
    c: &mut Client,
    m: &serde_json::Value,
) -> coffer_api::ManifestResponse {
    c.call(Method::POST, "/api/v1/manifest", Some(m))
        .await
        .expect("set manifest")
}

pub(crate) fn pem_blocks(s: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("-----BEGIN CERTIFICATE-----") {
        let block = &rest[i..];
        out.push(coffer_coordinator::pki::pem_decode(block, "CERTIFICATE").unwrap());
        rest = &block[27..];
    }
    out
}

pub(crate) async fn put_secret(
    c: &mut Client,
    set: &coffer_api::SetSecretsRequest,
) -> Result<(), ErrorKind> {
    let (st, body) = c
        .request(
            Method::PUT,
            "/api/v1/secrets",
            Some(serde_json::to_vec(set).unwrap()),
        )
        .await
        .unwrap();
    if st.is_success() {
        Ok(())
    } else {
        Err(serde_json::from_slice::<coffer_api::ErrorBody>(&body)
            .unwrap()
            .error
            .kind)
    }
}

pub(crate) fn cli(args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(COFFER)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        v,
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// `coffer recover --key FILE` against the Coordinator at `addr` (simulated evidence).
pub(crate) fn cli_recover(
    keyfile: &Path,
    addr: &str,
    simdir: &Path,
) -> (bool, serde_json::Value, String) {
    cli(&[
        "recover",
        "--key",
        keyfile.to_str().unwrap(),
        "--coordinator",
        addr,
        "--allow-simulation",
        "--sim-dir",
        simdir.to_str().unwrap(),
    ])
}
