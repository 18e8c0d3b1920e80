//! Test support: a small activation server over real TLS on 127.0.0.1 that verifies evidence
//! with `coffer_evidence::verify` against the simulated platform's anchors (what the
//! Coordinator does, reduced to one workload), image root filesystems with a real static
//! busybox, and directories that behave like Gramine's `/dev/attestation` and configfs-tsm.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use coffer_api::{
    ActivationRequest, ActivationResponse, ErrorBody, ErrorDetail, ErrorKind, FileParameter,
    Parameters,
};
use coffer_evidence::sim::{SgxQuoteSpec, SimPlatform, TdxQuoteSpec};
use coffer_image::workload::{Symlink, TrustedFile, WorkloadFile};
use coffer_image::Digest;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use sha2::{Digest as _, Sha256};

pub const LAUNCHER: &str = env!("CARGO_BIN_EXE_coffer-launcher");

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A simulated platform persisted in a temporary directory, as `coffer evidence sim-platform`
/// writes it.
pub struct Sim {
    pub dir: tempfile::TempDir,
    pub platform: SimPlatform,
}

impl Sim {
    pub fn new() -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let platform = SimPlatform::from_seed([7u8; 32]);
        let path = dir.path().join("sim-platform.json");
        fs::write(&path, platform.to_bytes()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        Sim { dir, platform }
    }
}

/// What the server accepts.
#[derive(Clone, Debug)]
pub enum Expect {
    /// SGX quote with this MRENCLAVE.
    Sgx([u8; 32]),
    /// TDX quote with this MRTD.
    Tdx([u8; 48]),
    /// SEV-SNP report with this MEASUREMENT (the simulated machine's SNP side).
    Snp([u8; 48]),
}

/// How the server answers an accepted activation.
#[derive(Clone, Default)]
pub struct Answer {
    pub files: Vec<(String, Vec<u8>, u32)>,
    pub env: BTreeMap<String, String>,
    pub argv: Option<Vec<String>>,
    pub image_key: Option<String>,
    /// Host variables the manifest lets through.
    pub host_env: Vec<String>,
    /// Refuse every activation with this reason instead.
    pub refuse: Option<String>,
    /// Answer every activation with 409 conflict and this message (the Coordinator is up but
    /// cannot activate yet, e.g. a user-defined secret is not set).
    pub not_ready: Option<String>,
    /// Serve a certificate that chains to the root with the Coordinator's name but carries no
    /// RA-TLS quote (what a workload or webhook certificate under the same root looks like).
    pub impostor_certificate: bool,
    /// The body of `GET /api/v1/collateral` (404 without one).
    pub collateral: Option<Vec<u8>>,
}

pub struct Server {
    pub addr: String,
    pub root_ca_pem: String,
    pub requests: Arc<AtomicU32>,
    pub last_request: Arc<Mutex<Option<ActivationRequest>>>,
}

struct Ca {
    key: KeyPair,
    params: CertificateParams,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.clone().self_signed(&key).unwrap();
    Ca {
        key,
        params,
        pem: cert.pem(),
    }
}

fn der_octet_string(data: &[u8]) -> Vec<u8> {
    let len = data.len();
    let mut out = vec![0x04];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(data);
    out
}

/// A root CA PEM unrelated to any server (for "wrong root" tests).
pub fn unrelated_root_pem() -> String {
    ca("someone else").pem
}

impl Server {
    /// Starts the server on `listener`.
    pub fn start_on(
        listener: TcpListener,
        sim: &SimPlatform,
        expect: Expect,
        answer: Answer,
    ) -> Server {
        let addr = listener.local_addr().unwrap();
        let (server, go) = Server::start_later(addr, sim, expect, answer, Some(listener));
        go.send(()).unwrap();
        server
    }

    /// Prepares a server for `addr` (its certificates exist at once) that binds and serves only
    /// when the returned sender fires, so a client can meet a closed port first.
    pub fn start_later(
        addr: std::net::SocketAddr,
        sim: &SimPlatform,
        expect: Expect,
        answer: Answer,
        listener: Option<TcpListener>,
    ) -> (Server, std::sync::mpsc::Sender<()>) {
        let root = ca("test coordinator root");
        let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut sp = CertificateParams::new(vec!["coffer-coordinator".to_string()]).unwrap();
        sp.subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        if !answer.impostor_certificate {
            // As the Coordinator's own certificate: a quote over the certificate's key.
            let quote = sim.sgx_quote(&coffer_evidence::sim::SgxQuoteSpec {
                report_data: coffer_api::workload_report_data(
                    &rcgen::PublicKeyData::subject_public_key_info(&server_key),
                ),
                ..Default::default()
            });
            sp.custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    coffer_evidence::ratls::RATLS_QUOTE_OID,
                    der_octet_string(&quote),
                ));
        }
        let issuer = Issuer::from_params(&root.params, &root.key);
        let server_cert = sp.signed_by(&server_key, &issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .unwrap();
        let tls = Arc::new(tls);
        let requests = Arc::new(AtomicU32::new(0));
        let last_request = Arc::new(Mutex::new(None));
        let state = Arc::new(State {
            platform: sim.clone(),
            expect,
            answer,
            root_pem: root.pem.clone(),
            issuer_key: root.key,
            issuer_params: root.params,
            requests: requests.clone(),
            last: last_request.clone(),
        });
        let (go, wait) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if wait.recv().is_err() {
                return;
            }
            let listener = listener.unwrap_or_else(|| TcpListener::bind(addr).unwrap());
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let tls = tls.clone();
                let state = state.clone();
                std::thread::spawn(move || {
                    let _ = handle(stream, tls, &state);
                });
            }
        });
        (
            Server {
                addr: addr.to_string(),
                root_ca_pem: root.pem,
                requests,
                last_request,
            },
            go,
        )
    }

    pub fn start(sim: &SimPlatform, expect: Expect, answer: Answer) -> Server {
        Server::start_on(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            sim,
            expect,
            answer,
        )
    }
}

struct State {
    platform: SimPlatform,
    expect: Expect,
    answer: Answer,
    root_pem: String,
    issuer_key: KeyPair,
    issuer_params: CertificateParams,
    requests: Arc<AtomicU32>,
    last: Arc<Mutex<Option<ActivationRequest>>>,
}

fn handle(tcp: TcpStream, tls: Arc<rustls::ServerConfig>, state: &State) -> std::io::Result<()> {
    let conn = rustls::ServerConnection::new(tls).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let body = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(h)) = req.parse(&buf) {
            let len: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= h + len {
                break buf[h..h + len].to_vec();
            }
        }
    };
    if buf.starts_with(b"GET /api/v1/collateral ") {
        let (status, body) = match &state.answer.collateral {
            Some(c) => (200, c.clone()),
            None => (404, b"{}".to_vec()),
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(&body)?;
        s.flush()?;
        s.conn.send_close_notify();
        let _ = s.flush();
        return Ok(());
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let (status, json) = match decide(state, &body) {
        Ok(resp) => (200, serde_json::to_vec(&resp).unwrap()),
        Err((status, kind, message)) => (
            status,
            serde_json::to_vec(&ErrorBody {
                error: ErrorDetail { kind, message },
            })
            .unwrap(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        json.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(&json)?;
    s.flush()?;
    s.conn.send_close_notify();
    let _ = s.flush();
    Ok(())
}

fn decide(state: &State, body: &[u8]) -> Result<ActivationResponse, (u16, ErrorKind, String)> {
    let req: ActivationRequest =
        serde_json::from_slice(body).map_err(|e| (400, ErrorKind::BadRequest, e.to_string()))?;
    *state.last.lock().unwrap() = Some(req.clone());
    if let Some(reason) = &state.answer.refuse {
        return Err((403, ErrorKind::PolicyMismatch, reason.clone()));
    }
    if let Some(reason) = &state.answer.not_ready {
        return Err((409, ErrorKind::Conflict, reason.clone()));
    }
    let b64 = |d: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(d)
            .map_err(|_| (400, ErrorKind::MalformedEvidence, "base64".to_string()))
    };
    let quote = b64(&req.evidence.data)?;
    let now = now();
    // (report data, the measurement this server checks)
    let (report_data, measured_ok) = if req.evidence.format == coffer_api::EvidenceFormat::SnpReport
    {
        let certs: Vec<Vec<u8>> = req
            .evidence
            .certificates
            .iter()
            .map(|c| b64(c))
            .collect::<Result<_, _>>()?;
        let [vek, ask, ark] = &certs[..] else {
            return Err((400, ErrorKind::MalformedEvidence, "3 certificates".into()));
        };
        let snp = state.platform.snp();
        let collateral = coffer_evidence::snp::SnpCollateral {
            vek,
            ask,
            ark,
            crl: None,
        };
        let v = coffer_evidence::snp::verify_snp(&quote, &collateral, &snp.anchors(), now)
            .map_err(|e| (403, ErrorKind::BadSignature, e.to_string()))?;
        let ok = matches!(state.expect, Expect::Snp(m) if m == v.report.measurement);
        (v.report.report_data, ok)
    } else {
        let tee = coffer_evidence::Quote::parse(&quote)
            .map_err(|e| (400, ErrorKind::MalformedEvidence, e.to_string()))?
            .tee();
        let verified = coffer_evidence::verify(
            &quote,
            &state.platform.collateral_for(tee, now),
            &state.platform.trust_anchors(),
            now,
        )
        .map_err(|e| (403, ErrorKind::BadSignature, e.to_string()))?;
        let ok = match (&state.expect, &verified.measurement) {
            (Expect::Sgx(want), coffer_evidence::Measurement::Sgx(m)) => m.mrenclave == *want,
            (Expect::Tdx(want), coffer_evidence::Measurement::Tdx(m)) => m.mrtd == *want,
            _ => false,
        };
        (verified.report_data, ok)
    };
    let csr = rcgen::CertificateSigningRequestParams::from_pem(&req.csr_pem)
        .map_err(|e| (400, ErrorKind::BadRequest, e.to_string()))?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&csr.public_key);
    let expected = match req.image_measurement.as_deref().map(hex::decode) {
        Some(Ok(m)) if m.len() == 32 => {
            let mut image = [0u8; 32];
            image.copy_from_slice(&m);
            coffer_api::workload_report_data_for_image(&spki, &image)
        }
        Some(_) => return Err((400, ErrorKind::BadRequest, "image_measurement".into())),
        None => coffer_api::workload_report_data(&spki),
    };
    if report_data != expected {
        return Err((
            403,
            ErrorKind::PolicyMismatch,
            "report data does not bind the CSR key".into(),
        ));
    }
    if !measured_ok {
        return Err((
            403,
            ErrorKind::PolicyMismatch,
            "measurement is not one of the workload's packages".into(),
        ));
    }
    let issuer = Issuer::from_params(&state.issuer_params, &state.issuer_key);
    let cert = csr
        .signed_by(&issuer)
        .map_err(|e| (500, ErrorKind::Internal, e.to_string()))?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let parameters = Parameters {
        files: state
            .answer
            .files
            .iter()
            .map(|(p, c, m)| FileParameter {
                path: p.clone(),
                content: b64(c),
                mode: *m,
            })
            .collect(),
        env: state.answer.env.clone(),
        argv: state.answer.argv.clone(),
        host_env: state.answer.host_env.clone(),
        image_key: state.answer.image_key.clone(),
    };
    Ok(ActivationResponse {
        protocol_version: coffer_api::PROTOCOL_VERSION,
        certificate_chain_pem: cert.pem(),
        root_ca_pem: state.root_pem.clone(),
        not_after: now + 3600,
        sealed_parameters: coffer_api::sealed::seal(&parameters, &spki)
            .map_err(|e| (400, ErrorKind::BadRequest, e.to_string()))?,
    })
}

/// An image root filesystem with the static busybox as `/bin/busybox` (trusted), `/bin/sh` a
/// symlink to it, and a workload file recording them; `entrypoint` is the original command.
pub struct Image {
    pub dir: tempfile::TempDir,
    pub wf: WorkloadFile,
}

pub fn busybox() -> PathBuf {
    for p in ["/usr/bin/busybox", "/bin/busybox"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!("busybox-static is required: bash scripts/install-deps.sh");
}

impl Image {
    pub fn new(entrypoint: &[&str], cmd: &[&str], extra_files: &[(&str, &[u8])]) -> Image {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("coffer")).unwrap();
        fs::copy(busybox(), root.join("bin/busybox")).unwrap();
        fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        let mut trusted = vec![trusted(root, "/bin/busybox")];
        for (p, c) in extra_files {
            let host = root.join(p.trim_start_matches('/'));
            fs::create_dir_all(host.parent().unwrap()).unwrap();
            fs::write(&host, c).unwrap();
            fs::set_permissions(&host, fs::Permissions::from_mode(0o644)).unwrap();
            trusted.push(trusted_file(root, p));
        }
        let mut wf = WorkloadFile {
            format_version: coffer_image::workload::FORMAT_VERSION,
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into(), "FROM_IMAGE=image".into()],
            working_dir: "/".into(),
            user: String::new(),
            trusted_files: trusted,
            symlinks: vec![Symlink {
                path: "/bin/sh".into(),
                target: "busybox".into(),
            }],
            allowed: vec![],
            runtime_mounts: vec![],
            encrypted_files: vec![],
            isv_prod_id: 1,
            isv_svn: 2,
            image_measurement: Digest([0; 32]),
            sgx: None,
        };
        wf.seal();
        let img = Image { dir, wf };
        img.write_workload();
        img
    }

    pub fn write_workload(&self) {
        fs::write(
            self.dir.path().join("coffer/workload.json"),
            self.wf.to_json(),
        )
        .unwrap();
    }

    pub fn reseal(&mut self) {
        self.wf.seal();
        self.write_workload();
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn measurement(&self) -> [u8; 32] {
        self.wf.image_measurement.0
    }
}

fn trusted(root: &Path, path: &str) -> TrustedFile {
    trusted_file(root, path)
}

pub fn trusted_file(root: &Path, path: &str) -> TrustedFile {
    let host = root.join(path.trim_start_matches('/'));
    let data = fs::read(&host).unwrap();
    let mode = fs::metadata(&host).unwrap().permissions().mode() & 0o7777;
    TrustedFile {
        path: path.into(),
        sha256: Digest(Sha256::digest(&data).into()),
        size: data.len() as u64,
        mode,
    }
}

fn mkfifo(path: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo {}", path.display());
}

/// A directory that behaves like Gramine's `/dev/attestation` for DCAP: `attestation_type`
/// says `dcap`, `user_report_data` is a plain file, `keys/` takes encrypted-mount keys, and
/// `quote` is a FIFO served by a thread
/// that, each time the launcher opens it, produces a simulated SGX quote (MRENCLAVE `mrenclave`)
/// over the report data most recently written — as Gramine's pseudo-file does. It simulates
/// the file interface only; the quote comes from the simulated platform.
pub fn fake_gramine(platform: &SimPlatform, mrenclave: [u8; 32]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("attestation_type"), "dcap").unwrap();
    fs::write(dir.path().join("user_report_data"), [0u8; 64]).unwrap();
    fs::write(dir.path().join("my_target_info"), [0u8; 512]).unwrap();
    // Encrypted mounts read their keys from here (`keys/<name>`, 16 raw bytes).
    fs::create_dir(dir.path().join("keys")).unwrap();
    mkfifo(&dir.path().join("quote"));
    let root = dir.path().to_path_buf();
    let platform = platform.clone();
    std::thread::spawn(move || loop {
        // Blocks until a reader opens the quote.
        let Ok(mut w) = fs::OpenOptions::new().write(true).open(root.join("quote")) else {
            return;
        };
        let rd = fs::read(root.join("user_report_data")).unwrap_or_default();
        let mut report_data = [0u8; 64];
        if rd.len() == 64 {
            report_data.copy_from_slice(&rd);
        }
        let q = platform.sgx_quote(&SgxQuoteSpec {
            mrenclave,
            report_data,
            ..SgxQuoteSpec::default()
        });
        let _ = w.write_all(&q);
        drop(w);
        // Wait until that reader has closed the quote (opening for writing without blocking
        // fails with ENXIO when nobody reads), so the next quote goes to the next reader.
        loop {
            use std::os::unix::fs::OpenOptionsExt;
            const O_NONBLOCK: i32 = 0o4000;
            match fs::OpenOptions::new()
                .write(true)
                .custom_flags(O_NONBLOCK)
                .open(root.join("quote"))
            {
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
                Err(_) => break,
            }
        }
    });
    dir
}

/// A directory that behaves like `/sys/kernel/config/tsm/report` with a `tdx_guest` provider:
/// a watcher thread gives every new entry directory its attributes (`provider`, `inblob`,
/// `generation`, and `outblob` as a FIFO); when the launcher opens `outblob` it bumps
/// `generation` and writes a simulated TDX quote (MRTD `mrtd`) over the 64 bytes in `inblob`.
/// In configfs the attributes exist at once and `generation` bumps on the `inblob` write; here
/// they appear a moment after `mkdir` and the bump happens before `outblob` is served, which
/// the launcher's ordering (generation read before the write and after the read) accepts
/// either way. `bump_twice` simulates another writer racing on the entry.
pub fn fake_tsm(platform: &SimPlatform, mrtd: [u8; 48], bump_twice: bool) -> tempfile::TempDir {
    let platform = platform.clone();
    fake_tsm_with("tdx_guest", None, bump_twice, move |report_data| {
        platform.tdx_quote(&TdxQuoteSpec {
            mrtd,
            report_data,
            ..TdxQuoteSpec::default()
        })
    })
}

/// [`fake_tsm`] with a `sev_guest` provider: the outblob is a simulated SNP report (the
/// machine's SNP side, MEASUREMENT `measurement`), the auxblob the certificate table `table`
/// (see [`snp_table`]).
pub fn fake_snp_tsm(
    snp: &coffer_evidence::sim::SimSnpPlatform,
    measurement: [u8; 48],
    table: Vec<u8>,
) -> tempfile::TempDir {
    let snp = snp.clone();
    fake_tsm_with("sev_guest", Some(table), false, move |report_data| {
        snp.report(&coffer_evidence::sim::SnpReportSpec {
            measurement,
            report_data,
            ..Default::default()
        })
    })
}

/// An SNP certificate table (GHCB layout: GUID, offset, length; zero entry last) holding
/// `entries` (GUID as written, DER).
pub fn snp_table(entries: &[(u128, &[u8])]) -> Vec<u8> {
    let head = 24 * (entries.len() + 1);
    let (mut t, mut body) = (Vec::new(), Vec::new());
    for (guid, der) in entries {
        t.extend_from_slice(&guid.to_be_bytes());
        t.extend_from_slice(&((head + body.len()) as u32).to_le_bytes());
        t.extend_from_slice(&(der.len() as u32).to_le_bytes());
        body.extend_from_slice(der);
    }
    t.extend_from_slice(&[0; 24]);
    t.extend_from_slice(&body);
    t
}

fn fake_tsm_with(
    provider: &'static str,
    auxblob: Option<Vec<u8>>,
    bump_twice: bool,
    make: impl Fn([u8; 64]) -> Vec<u8> + Send + Sync + 'static,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let make = Arc::new(make);
    std::thread::spawn(move || {
        let mut seen = std::collections::HashSet::new();
        loop {
            let Ok(rd) = fs::read_dir(&root) else { return };
            for e in rd.flatten() {
                let p = e.path();
                if !p.is_dir() || !seen.insert(p.clone()) {
                    continue;
                }
                fs::write(p.join("provider"), format!("{provider}\n")).unwrap();
                fs::write(p.join("inblob"), b"").unwrap();
                if let Some(aux) = &auxblob {
                    fs::write(p.join("auxblob"), aux).unwrap();
                }
                mkfifo(&p.join("outblob"));
                let tmp = p.join(".generation");
                fs::write(&tmp, "0\n").unwrap();
                fs::rename(&tmp, p.join("generation")).unwrap();
                let make = make.clone();
                std::thread::spawn(move || {
                    let Ok(mut w) = fs::OpenOptions::new().write(true).open(p.join("outblob"))
                    else {
                        return;
                    };
                    let inblob = fs::read(p.join("inblob")).unwrap_or_default();
                    let mut report_data = [0u8; 64];
                    if inblob.len() == 64 {
                        report_data.copy_from_slice(&inblob);
                    }
                    fs::write(p.join("generation"), if bump_twice { "2\n" } else { "1\n" })
                        .unwrap();
                    let _ = w.write_all(&make(report_data));
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    dir
}

/// The launcher command with a clean environment pointing at `server` and `image`.
pub fn launcher(image: &Image, server: &Server, ca_file: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(LAUNCHER);
    c.env_clear()
        .env("COFFER_COORDINATOR", &server.addr)
        .env("COFFER_WORKLOAD", "app")
        .env("COFFER_ROOT_CA", ca_file)
        .env("COFFER_ROOTFS", image.root())
        .env("COFFER_ACTIVATE_TIMEOUT", "20")
        .env("COFFER_ATTESTATION_ROOT", "/nonexistent/attestation")
        .env("COFFER_TSM_ROOT", "/nonexistent/tsm");
    c
}

/// Writes `pem` to a file in `dir` and returns its path.
pub fn write_pem(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, pem).unwrap();
    p
}

/// The real Coordinator (`coffer_coordinator::serve`, what `coffer coordinator --simulation`
/// runs) in this process on 127.0.0.1, on the simulated platform `sim` with its own simulated
/// MRENCLAVE `coordinator_mrenclave`, with `manifest` set. Returns its address and root CA PEM.
pub struct RealCoordinator {
    pub addr: String,
    pub root_ca_pem: String,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

pub fn real_coordinator(
    seed: [u8; 32],
    coordinator_mrenclave: [u8; 32],
    manifest: serde_json::Value,
) -> RealCoordinator {
    use coffer_coordinator::client::{Client, Method};
    use coffer_coordinator::platform::{CollateralSource, EvidenceVerifier, Platform};
    use coffer_coordinator::seal::Sealer;
    use coffer_coordinator::tls::Trust;
    use coffer_coordinator::{Config, Coordinator};
    let dir = tempfile::tempdir().unwrap();
    let sim = SimPlatform::from_seed(seed);
    let coordinator = Arc::new(
        Coordinator::open(
            Config {
                data_dir: dir.path().join("data"),
                cert_hours: 1,
                accepted_tcb_statuses: Vec::new(),
                owner_certificate: None,
                store: coffer_coordinator::StoreConfig::Embedded,
            },
            Platform::Simulated {
                sim: Box::new(SimPlatform::from_seed(seed)),
                mrenclave: coordinator_mrenclave,
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
        .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (addr, root_ca_pem) = rt.block_on(async {
        let tls = coffer_coordinator::tls::server_config(coordinator.tls_slot()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let q = coordinator.quote(None, false).unwrap();
        let root = coffer_coordinator::pki::pem_decode(&q.root_ca_pem, "CERTIFICATE").unwrap();
        let router = coffer_coordinator::router(coordinator.clone());
        tokio::spawn(coffer_coordinator::serve(
            listener,
            Arc::new(tls),
            router,
            std::future::pending(),
        ));
        let mut admin = Client::new(&addr, &Trust::RootCa(root), None).unwrap();
        let _: coffer_api::ManifestResponse = admin
            .call(Method::POST, "/api/v1/manifest", Some(&manifest))
            .await
            .unwrap();
        (addr, q.root_ca_pem)
    });
    RealCoordinator {
        addr,
        root_ca_pem,
        _rt: rt,
        _dir: dir,
    }
}
