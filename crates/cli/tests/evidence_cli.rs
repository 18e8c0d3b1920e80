//! `coffer evidence …` end to end: the real `coffer` binary on the DCAP vectors, tampered and
//! hex-encoded quotes, moved clocks, the simulated platform, and `--pccs-url` against a
//! PCCS-compatible HTTP server on 127.0.0.1.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use coffer_pccs::{import_collateral, CollateralRequest, CollateralSource, Item, RawCollateral};
use serde_json::Value;

fn coffer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coffer"));
    c.env_remove("COFFER_LOG");
    c
}

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors/dcap")
}

fn quote_path(name: &str) -> PathBuf {
    vectors().join(name)
}

fn collateral_path(name: &str) -> PathBuf {
    vectors().join(format!("{name}_collateral.json"))
}

fn raw_collateral(name: &str) -> RawCollateral {
    RawCollateral::from_json(&std::fs::read(collateral_path(name)).unwrap()).unwrap()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {}", self.stdout))
    }
}

fn run(args: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut c = coffer();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run coffer");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Validity of each item of a vector's collateral: (item, not_before, next_update).
fn item_windows(name: &str) -> Vec<(Item, i64, i64)> {
    let c = raw_collateral(name);
    let quote = coffer_evidence::Quote::parse(&std::fs::read(quote_path(name)).unwrap()).unwrap();
    let req = CollateralRequest::for_quote(&quote).unwrap();
    let dir = tempfile::tempdir().unwrap();
    import_collateral(dir.path(), &req, &c, 0).unwrap();
    let fetched = CollateralSource::offline(dir.path())
        .fetch(&req, 0)
        .unwrap();
    fetched
        .items
        .iter()
        .map(|i| (i.item, i.not_before, i.next_update))
        .collect()
}

/// An instant inside every item's window.
fn now_in_window(name: &str) -> i64 {
    item_windows(name).iter().map(|w| w.1).max().unwrap() + 60
}

/// `verify --json` of a vector with its collateral; `--now` inside the window unless `extra`
/// gives one.
fn verify_vector(name: &str, extra: &[&str]) -> Run {
    let now = now_in_window(name).to_string();
    let now_given = extra.contains(&"--now");
    let q = quote_path(name);
    let c = collateral_path(name);
    let mut args = vec![
        "--json",
        "evidence",
        "verify",
        "--quote",
        q.to_str().unwrap(),
        "--collateral",
        c.to_str().unwrap(),
    ];
    if !now_given {
        args.extend_from_slice(&["--now", &now]);
    }
    args.extend_from_slice(extra);
    run(&args, &[])
}

fn is_lower_hex(v: &Value, bytes: usize) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == bytes * 2
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[test]
fn verifies_the_sgx_vector() {
    let r = verify_vector("sgx_quote", &[]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["tee"], "sgx");
    assert_eq!(j["quote_version"], 3);
    assert_eq!(j["tcb_status"], "ConfigurationAndSWHardeningNeeded");
    let mut adv: Vec<&str> = j["advisory_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    adv.sort_unstable();
    assert_eq!(adv, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert!(is_lower_hex(&j["report_data"], 64), "{}", j["report_data"]);
    assert!(is_lower_hex(&j["mrenclave"], 32));
    assert!(is_lower_hex(&j["mrsigner"], 32));
    assert!(j["isv_prod_id"].is_u64() && j["isv_svn"].is_u64());
    assert!(j["debug"].is_boolean());
    assert!(is_lower_hex(&j["fmspc"], 6));
    assert_eq!(j["trust_root"], "intel");
}

#[test]
fn verifies_the_tdx_vector() {
    let r = verify_vector("tdx_quote", &[]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["tee"], "tdx");
    assert_eq!(j["quote_version"], 4);
    assert_eq!(j["tcb_status"], "UpToDate");
    assert_eq!(j["advisory_ids"], serde_json::json!([]));
    assert!(is_lower_hex(&j["mrtd"], 48));
    for i in 0..4 {
        assert!(is_lower_hex(&j[format!("rtmr{i}")], 48), "rtmr{i}");
    }
    assert_eq!(j["debug"], false);
    // What Intel's QVL exposes too: the module, the TD's features, the collateral's
    // evaluation number and the matched level's date.
    assert!(is_lower_hex(&j["mrseam"], 48));
    assert!(is_lower_hex(&j["xfam"], 8));
    assert!(is_lower_hex(&j["tee_tcb_svn"], 16));
    assert_eq!(
        j["mrservicetd"],
        serde_json::Value::Null,
        "a v4 quote has none"
    );
    assert!(j["tcb_evaluation_data_number"].as_u64().unwrap() > 0, "{j}");
    assert!(j["tcb_date"].as_str().unwrap().starts_with("20"), "{j}");
}

#[test]
fn text_output_names_the_status() {
    let now = now_in_window("tdx_quote").to_string();
    let r = run(
        &[
            "evidence",
            "verify",
            "--quote",
            quote_path("tdx_quote").to_str().unwrap(),
            "--collateral",
            collateral_path("tdx_quote").to_str().unwrap(),
            "--now",
            &now,
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("tcb status:    UpToDate"), "{}", r.stdout);
}

#[test]
fn hex_quote_with_prefix_and_whitespace_verifies_the_same() {
    let raw = verify_vector("sgx_quote", &[]).json();
    let dir = tempfile::tempdir().unwrap();
    let hex_path = dir.path().join("quote.hex");
    let bytes = std::fs::read(quote_path("sgx_quote")).unwrap();
    std::fs::write(&hex_path, format!("\n  0x{}  \n", hex::encode(&bytes))).unwrap();
    let now = now_in_window("sgx_quote").to_string();
    let r = run(
        &[
            "--json",
            "evidence",
            "verify",
            "--quote",
            hex_path.to_str().unwrap(),
            "--collateral",
            collateral_path("sgx_quote").to_str().unwrap(),
            "--now",
            &now,
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let j = r.json();
    for k in [
        "tee",
        "tcb_status",
        "mrenclave",
        "mrsigner",
        "report_data",
        "advisory_ids",
    ] {
        assert_eq!(j[k], raw[k], "{k}");
    }
}

#[test]
fn tampered_quote_is_refused_with_the_failed_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(quote_path("sgx_quote")).unwrap();
    // A byte of MRENCLAVE (report body offset 64, after the 48-byte header): signed by the
    // attestation key.
    bytes[48 + 64] ^= 0x01;
    let p = dir.path().join("tampered");
    std::fs::write(&p, &bytes).unwrap();
    let now = now_in_window("sgx_quote").to_string();
    let r = run(
        &[
            "--json",
            "evidence",
            "verify",
            "--quote",
            p.to_str().unwrap(),
            "--collateral",
            collateral_path("sgx_quote").to_str().unwrap(),
            "--now",
            &now,
        ],
        &[],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    let j = r.json();
    assert_eq!(j["error"]["kind"], "bad_signature", "{j}");
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quote signature"),
        "{j}"
    );
}

#[test]
fn truncated_quote_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(quote_path("tdx_quote")).unwrap();
    let p = dir.path().join("short");
    // Cut inside the certification data (the end of a quote may be zero padding).
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let r = run(
        &[
            "--json",
            "evidence",
            "verify",
            "--quote",
            p.to_str().unwrap(),
            "--collateral",
            collateral_path("tdx_quote").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 1);
    assert_eq!(r.json()["error"]["kind"], "malformed");
}

#[test]
fn now_outside_the_window_is_refused_naming_the_item() {
    for name in ["sgx_quote", "tdx_quote"] {
        let windows = item_windows(name);
        let (item, _, next) = *windows.iter().min_by_key(|w| w.2).unwrap();
        let r = verify_vector(name, &["--now", &(next + 1).to_string()]);
        assert_eq!(r.code, 1, "{name}: {}", r.stdout);
        let j = r.json();
        assert_eq!(j["error"]["kind"], "expired", "{name}: {j}");
        let msg = j["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&item.to_string()),
            "{name}: expected {item} in {msg}"
        );
    }
}

#[test]
fn rfc3339_now_is_accepted() {
    let now = now_in_window("tdx_quote");
    let t = time::OffsetDateTime::from_unix_timestamp(now).unwrap();
    let s = t
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = verify_vector("tdx_quote", &["--now", &s]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert_eq!(r.json()["now"], now);
}

#[test]
fn inspect_prints_the_claimed_fields() {
    let r = run(
        &[
            "--json",
            "evidence",
            "inspect",
            "--quote",
            quote_path("tdx_quote").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["verified"], false);
    assert_eq!(j["tee"], "tdx");
    assert_eq!(j["quote_version"], 4);
    assert!(is_lower_hex(&j["mrtd"], 48));
    let verified = verify_vector("tdx_quote", &[]).json();
    assert_eq!(j["mrtd"], verified["mrtd"]);
    assert_eq!(j["fmspc"], verified["fmspc"]);
}

#[test]
fn simulated_quotes_verify_with_the_sim_root_only() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let seed = "07".repeat(32);
    let r = run(
        &[
            "evidence",
            "sim-platform",
            "--dir",
            sim.to_str().unwrap(),
            "--seed",
            &seed,
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.lines().all(|l| l.contains("SIMULATED")),
        "{}",
        r.stdout
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sim.join("sim-platform.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The same seed again keeps the platform; another seed is refused, not ignored.
    let again = |seed: &str| {
        let dir = sim.to_str().unwrap();
        run(
            &[
                "--json",
                "evidence",
                "sim-platform",
                "--dir",
                dir,
                "--seed",
                seed,
            ],
            &[],
        )
    };
    let r = again(&seed);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(r.json()["created"], false);
    let r = again(&"08".repeat(32));
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.json()["error"]["kind"], "exists");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("--seed was not used") && msg.contains("sim-platform.json"),
        "{msg}"
    );

    let mrenclave = "ab".repeat(32);
    let report_data = "cd".repeat(64);
    let r = run(
        &[
            "evidence",
            "sim-quote",
            "--tee",
            "sgx",
            "--mrenclave",
            &mrenclave,
            "--isv-prod-id",
            "7",
            "--isv-svn",
            "3",
            "--report-data",
            &report_data,
            "--sim-dir",
            sim.to_str().unwrap(),
            "--out",
            &d("q.bin"),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.lines().all(|l| l.contains("SIMULATED")),
        "{}",
        r.stdout
    );

    let r = run(
        &[
            "evidence",
            "sim-collateral",
            "--sim-dir",
            sim.to_str().unwrap(),
            "--out",
            &d("c.json"),
            "--root-out",
            &d("root.pem"),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.lines().all(|l| l.contains("SIMULATED")),
        "{}",
        r.stdout
    );

    let r = run(
        &[
            "--json",
            "evidence",
            "verify",
            "--quote",
            &d("q.bin"),
            "--collateral",
            &d("c.json"),
            "--trust-root",
            &d("root.pem"),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["mrenclave"], mrenclave.as_str());
    assert_eq!(j["report_data"], report_data.as_str());
    assert_eq!(j["isv_prod_id"], 7);
    assert_eq!(j["isv_svn"], 3);
    assert_eq!(j["tcb_status"], "UpToDate");
    assert_eq!(j["trust_root"], "custom");

    // --collateral-dir reads DIR/collateral.json as the Coordinator's --collateral-dir does.
    let offline = dir.path().join("offline");
    std::fs::create_dir(&offline).unwrap();
    std::fs::copy(d("c.json"), offline.join("collateral.json")).unwrap();
    let r = run(
        &[
            "--json",
            "evidence",
            "verify",
            "--quote",
            &d("q.bin"),
            "--collateral-dir",
            offline.to_str().unwrap(),
            "--trust-root",
            &d("root.pem"),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert_eq!(r.json()["collateral"]["source"], "offline");

    // Under the pinned Intel root the same quote is refused.
    let r = run(
        &[
            "--json",
            "evidence",
            "verify",
            "--quote",
            &d("q.bin"),
            "--collateral",
            &d("c.json"),
        ],
        &[],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.json()["error"]["kind"], "untrusted_root");
}

#[test]
fn simulated_tdx_quote_round_trip_in_the_default_dir() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let env: [(&str, &Path); 2] = [("HOME", home.path()), ("XDG_DATA_HOME", &data)];
    let d = |n: &str| home.path().join(n).to_str().unwrap().to_string();
    let mrtd = "11".repeat(48);
    let rtmr2 = "22".repeat(48);
    let r = run(
        &[
            "evidence",
            "sim-quote",
            "--tee",
            "tdx",
            "--mrtd",
            &mrtd,
            "--rtmr2",
            &rtmr2,
            "--out",
            &d("td.quote"),
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("default directory"), "{}", r.stdout);
    assert!(
        r.stdout.lines().all(|l| l.contains("SIMULATED")),
        "{}",
        r.stdout
    );
    assert!(data.join("coffer/sim/sim-platform.json").exists());

    let r = run(
        &[
            "evidence",
            "sim-collateral",
            "--tee",
            "tdx",
            "--out",
            &d("c.json"),
            "--root-out",
            &d("root.pem"),
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(
        &[
            "--json",
            "evidence",
            "verify",
            "--quote",
            &d("td.quote"),
            "--collateral",
            &d("c.json"),
            "--trust-root",
            &d("root.pem"),
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["tee"], "tdx");
    assert_eq!(j["mrtd"], mrtd.as_str());
    assert_eq!(j["rtmr2"], rtmr2.as_str());
    assert_eq!(j["rtmr0"], "00".repeat(48).as_str());
}

#[test]
fn sim_quote_refuses_short_report_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q");
    let r = run(
        &[
            "evidence",
            "sim-quote",
            "--tee",
            "sgx",
            "--mrenclave",
            &"ab".repeat(32),
            "--report-data",
            "abcd",
            "--sim-dir",
            dir.path().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("expected 64 bytes"), "{}", r.stderr);
    assert!(!out.exists());
}

// --- a PCCS-compatible server on 127.0.0.1 -------------------------------------------------

/// Path with query → (status, headers, body).
type Routes = HashMap<String, (u16, Vec<(String, String)>, Vec<u8>)>;

struct Server {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(routes: Routes) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    serve(conn, &routes);
                }
            }
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn serve(mut conn: TcpStream, routes: &Routes) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let missing = (404, vec![], b"not found".to_vec());
    let (status, headers, body) = routes.get(path).unwrap_or(&missing);
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = conn.write_all(out.as_bytes());
    let _ = conn.write_all(body);
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn pccs_routes(name: &str) -> Routes {
    let c = raw_collateral(name);
    let quote = coffer_evidence::Quote::parse(&std::fs::read(quote_path(name)).unwrap()).unwrap();
    let req = CollateralRequest::for_quote(&quote).unwrap();
    let tee = req.tee.as_str();
    let mut r = HashMap::new();
    r.insert(
        format!("/{tee}/certification/v4/tcb?fmspc={}", req.fmspc_hex()),
        (
            200,
            vec![(
                "TCB-Info-Issuer-Chain".into(),
                url_encode(&c.tcb_info_issuer_chain),
            )],
            format!(
                r#"{{"tcbInfo":{},"signature":"{}"}}"#,
                c.tcb_info, c.tcb_info_signature
            )
            .into_bytes(),
        ),
    );
    r.insert(
        format!("/{tee}/certification/v4/qe/identity"),
        (
            200,
            vec![(
                "SGX-Enclave-Identity-Issuer-Chain".into(),
                url_encode(&c.qe_identity_issuer_chain),
            )],
            format!(
                r#"{{"enclaveIdentity":{},"signature":"{}"}}"#,
                c.qe_identity, c.qe_identity_signature
            )
            .into_bytes(),
        ),
    );
    r.insert(
        format!("/sgx/certification/v4/pckcrl?ca={}&encoding=der", req.ca),
        (
            200,
            vec![(
                "SGX-PCK-CRL-Issuer-Chain".into(),
                url_encode(&c.pck_crl_issuer_chain),
            )],
            hex::decode(&c.pck_crl).unwrap(),
        ),
    );
    r.insert(
        "/sgx/certification/v4/rootcacrl".into(),
        (200, vec![], c.root_ca_crl.clone().into_bytes()),
    );
    r
}

fn verify_via_pccs(name: &str, url: &str, cache: &Path) -> Run {
    let now = now_in_window(name).to_string();
    run(
        &[
            "--json",
            "evidence",
            "verify",
            "--quote",
            quote_path(name).to_str().unwrap(),
            "--pccs-url",
            url,
            "--pccs-cache",
            cache.to_str().unwrap(),
            "--pccs-timeout",
            "5",
            "--now",
            &now,
        ],
        &[],
    )
}

#[test]
fn pccs_url_fetches_verifies_and_caches() {
    for (name, status) in [
        ("sgx_quote", "ConfigurationAndSWHardeningNeeded"),
        ("tdx_quote", "UpToDate"),
    ] {
        let cache = tempfile::tempdir().unwrap();
        let server = Server::start(pccs_routes(name));
        let url = server.url();
        let r = verify_via_pccs(name, &url, cache.path());
        assert_eq!(r.code, 0, "{name}: {} {}", r.stdout, r.stderr);
        let j = r.json();
        assert_eq!(j["tcb_status"], status);
        assert_eq!(j["collateral"]["source"], "pccs");
        assert!(j["collateral"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["origin"] == "network"));
        server.shutdown();

        // The service is gone; the cached items are still valid at `now`.
        let r = verify_via_pccs(name, &url, cache.path());
        assert_eq!(r.code, 0, "{name}: {} {}", r.stdout, r.stderr);
        let j = r.json();
        assert_eq!(j["tcb_status"], status);
        assert!(j["collateral"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["origin"] == "cache"));

        // The same directory works offline.
        let now = now_in_window(name).to_string();
        let r = run(
            &[
                "--json",
                "evidence",
                "verify",
                "--quote",
                quote_path(name).to_str().unwrap(),
                "--collateral-dir",
                cache.path().to_str().unwrap(),
                "--now",
                &now,
            ],
            &[],
        );
        assert_eq!(r.code, 0, "{name}: {} {}", r.stdout, r.stderr);
    }
}

#[test]
fn pccs_without_the_fmspc_is_reported_naming_service_and_item() {
    let mut routes = pccs_routes("sgx_quote");
    routes.retain(|k, _| !k.contains("/tcb?"));
    let server = Server::start(routes);
    let cache = tempfile::tempdir().unwrap();
    let r = verify_via_pccs("sgx_quote", &server.url(), cache.path());
    server.shutdown();
    assert_eq!(r.code, 1, "{}", r.stdout);
    let j = r.json();
    assert_eq!(j["error"]["kind"], "collateral_unavailable");
    let msg = j["error"]["message"].as_str().unwrap();
    assert!(msg.contains("TCB info") && msg.contains("404"), "{msg}");
}

/// A KDS-shaped collateral directory for an SNP vector: the VEK, the intermediate and the ARK
/// (both from a cert_chain bundle, as KDS serves it).
fn snp_dir(dir: &Path, vek: &str, vek_name: &str, chain: &str, ask_name: &str) {
    let snp = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors/snp");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(snp.join(vek), dir.join(vek_name)).unwrap();
    let bundle = std::fs::read_to_string(snp.join(chain)).unwrap();
    let blocks: Vec<String> = bundle
        .split_inclusive("-----END CERTIFICATE-----\n")
        .map(str::to_string)
        .collect();
    // trustee's bundle is ASK, ARK, ASVK.
    let (ask, ark) = match ask_name {
        "asvk.pem" => (blocks[2].clone(), blocks[1].clone()),
        _ => (blocks[0].clone(), blocks[1].clone()),
    };
    std::fs::write(dir.join(ask_name), ask).unwrap();
    std::fs::write(dir.join("ark.pem"), ark).unwrap();
}

#[test]
fn snp_reports_verify_with_the_documented_json_and_refusals() {
    let t = tempfile::tempdir().unwrap();
    let snp = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors/snp");
    let vcek = t.path().join("vcek");
    snp_dir(
        &vcek,
        "trustee/test-vcek.der",
        "vcek.der",
        "trustee/milan_ask_ark_asvk.pem",
        "ask.pem",
    );
    let report = snp.join("trustee/test-report.bin");
    let verify = |report: &Path, dir: &Path, now: &str| -> Run {
        let (report, dir) = (report.display().to_string(), dir.display().to_string());
        run(
            &[
                "--json",
                "evidence",
                "verify",
                "--tee",
                "snp",
                "--quote",
                &report,
                "--collateral",
                &dir,
                "--now",
                now,
            ],
            &[],
        )
    };
    let r = verify(&report, &vcek, "1700000000");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v = r.json();
    assert_eq!(v["tee"], "snp");
    assert_eq!(v["report_version"], 2);
    assert_eq!(v["signer"], "vcek");
    assert_eq!(v["policy"], "000000000003001f");
    assert_eq!(v["debug"], false);
    assert_eq!(v["vmpl"], 0);
    assert_eq!(v["crl_checked"], false);
    assert_eq!(v["reported_tcb"]["snp"], 8);
    assert_eq!(v["reported_tcb"]["microcode"], 115);
    for (field, bytes) in [
        ("measurement", 48),
        ("host_data", 32),
        ("report_data", 64),
        ("chip_id", 64),
    ] {
        assert!(is_lower_hex(&v[field], bytes), "{field}: {}", v[field]);
    }

    // The VLEK-signed v3 report, with its ASVK.
    let vlek = t.path().join("vlek");
    snp_dir(
        &vlek,
        "trustee/test-vlek.der",
        "vlek.der",
        "trustee/milan_ask_ark_asvk.pem",
        "asvk.pem",
    );
    let r = verify(
        &snp.join("trustee/test-vlek-report.bin"),
        &vlek,
        "2025-06-15T15:06:40Z",
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["signer"], "vlek");
    assert_eq!(r.json()["report_version"], 3);

    // inspect reads the same fields without verifying.
    let r = run(
        &[
            "--json",
            "evidence",
            "inspect",
            "--tee",
            "snp",
            "--quote",
            snp.join("trustee/test-vlek-report.bin").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let i = r.json();
    assert_eq!(i["verified"], false);
    assert_eq!(
        (i["signer"].as_str(), i["product"].as_str()),
        (Some("vlek"), Some("Milan"))
    );
    assert_eq!(i["vmpl"], 1);

    // One byte of the measurement changed: bad signature, exit 1.
    let mut bytes = std::fs::read(&report).unwrap();
    bytes[0x90] ^= 1;
    let tampered = t.path().join("tampered.bin");
    std::fs::write(&tampered, &bytes).unwrap();
    let r = verify(&tampered, &vcek, "1700000000");
    assert_eq!(r.code, 1);
    assert_eq!(r.json()["error"]["kind"], "bad_signature", "{}", r.stdout);

    // The clock after the VCEK expired.
    let r = verify(&report, &vcek, "2040-01-01T00:00:00Z");
    assert_eq!(r.code, 1);
    assert_eq!(r.json()["error"]["kind"], "expired", "{}", r.stdout);

    // A directory without the ARK: the file is named.
    std::fs::remove_file(vcek.join("ark.pem")).unwrap();
    let r = verify(&report, &vcek, "1700000000");
    assert_ne!(r.code, 0);
    assert!(r.stdout.contains("ark.pem"), "{}", r.stdout);
}

/// `sim-quote --tee snp` writes a simulated SEV-SNP report and the directory `verify --tee
/// snp --collateral` reads; it verifies only with `--trust-root` on the simulated ARK, with
/// the CRL checked, and one flipped bit is refused.
#[test]
fn simulated_snp_reports_verify_only_under_the_simulated_ark() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let (m, h) = ("a1".repeat(48), "b2".repeat(32));
    let r = run(
        &[
            "evidence",
            "sim-quote",
            "--tee",
            "snp",
            "--measurement",
            &m,
            "--host-data",
            &h,
            "--sim-dir",
            &d("sim"),
            "--out",
            &d("report.bin"),
            "--collateral-out",
            &d("snp"),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("SIMULATED SEV-SNP report"),
        "{}",
        r.stdout
    );
    let verify = |report: &str, trust: bool| {
        let mut args = vec![
            "--json",
            "evidence",
            "verify",
            "--tee",
            "snp",
            "--quote",
            report,
            "--collateral",
        ];
        let c = d("snp");
        let ark = d("snp/ark.pem");
        args.push(&c);
        if trust {
            args.extend(["--trust-root", &ark]);
        }
        let r = run(&args, &[]);
        (r.code, r.stdout)
    };
    let (code, out) = verify(&d("report.bin"), true);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tee"], "snp");
    assert_eq!(v["measurement"], m);
    assert_eq!(v["host_data"], h);
    assert_eq!(v["signer"], "vcek");
    assert_eq!(v["crl_checked"], true);
    assert_eq!(v["reported_tcb"]["snp"], 8);
    let (code, out) = verify(&d("report.bin"), false);
    assert_ne!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"]["kind"], "untrusted_root", "{out}");
    let mut bytes = std::fs::read(d("report.bin")).unwrap();
    bytes[0x91] ^= 0x01;
    std::fs::write(d("flipped.bin"), bytes).unwrap();
    let (code, out) = verify(&d("flipped.bin"), true);
    assert_ne!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"]["kind"], "bad_signature", "{out}");
}
