//! The PCCS client against a real PCCS-compatible HTTP server on 127.0.0.1, serving the DCAP
//! vectors' collateral (testdata/vectors/dcap) with the PCS v4 headers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use coffer_pccs::{
    import_collateral, CollateralRequest, CollateralSource, Error, Item, Origin, PccsConfig, PckCa,
    RawCollateral, Tee,
};

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors/dcap")
}

fn vector_collateral(name: &str) -> RawCollateral {
    let bytes = std::fs::read(vectors().join(format!("{name}_collateral.json"))).unwrap();
    RawCollateral::from_json(&bytes).unwrap()
}

/// The PEM chain inside a quote's certification data (type 5 carries it verbatim).
fn pck_chain_of_quote(name: &str) -> Vec<u8> {
    let q = std::fs::read(vectors().join(name)).unwrap();
    let begin = b"-----BEGIN CERTIFICATE-----";
    let end = b"-----END CERTIFICATE-----";
    let start = q.windows(begin.len()).position(|w| w == begin).unwrap();
    let stop = q.windows(end.len()).rposition(|w| w == end).unwrap() + end.len();
    q[start..stop].to_vec()
}

fn request_for(name: &str, tee: Tee) -> CollateralRequest {
    CollateralRequest::from_pck_chain_pem(tee, &pck_chain_of_quote(name)).unwrap()
}

/// An instant inside the collateral's validity window.
fn now_in_window(c: &RawCollateral) -> i64 {
    let date = |doc: &str, key: &str| {
        let v: serde_json::Value = serde_json::from_str(doc).unwrap();
        let s = v[key].as_str().unwrap().to_string();
        time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    };
    date(&c.tcb_info, "issueDate").max(date(&c.qe_identity, "issueDate")) + 3600
}

fn next_update_of(doc: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(doc).unwrap();
    time::OffsetDateTime::parse(
        v["nextUpdate"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp()
}

fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A minimal HTTP/1.1 server: one answer per path (with query), `Connection: close`.
struct Server {
    addr: String,
    routes: Arc<Mutex<HashMap<String, Answer>>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(routes: HashMap<String, Answer>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let routes = Arc::new(Mutex::new(routes));
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, h, s) = (routes.clone(), hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    h.fetch_add(1, Ordering::SeqCst);
                    serve(conn, &r);
                }
            }
        });
        Server {
            addr,
            routes,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, path: &str, answer: Answer) {
        self.routes.lock().unwrap().insert(path.to_string(), answer);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn serve(mut conn: TcpStream, routes: &Mutex<HashMap<String, Answer>>) {
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
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let answer = routes
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or(Answer {
            status: 404,
            headers: vec![],
            body: b"not found".to_vec(),
        });
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.body.len()
    );
    for (k, v) in &answer.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = conn.write_all(out.as_bytes());
    let _ = conn.write_all(&answer.body);
}

#[derive(Clone, Copy)]
enum CrlForm {
    Der,
    Hex,
    Pem,
}

fn crl_body(hex_der: &str, form: CrlForm) -> Vec<u8> {
    let der = hex::decode(hex_der).unwrap();
    match form {
        CrlForm::Der => der,
        CrlForm::Hex => hex_der.as_bytes().to_vec(),
        CrlForm::Pem => {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
            let lines: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            format!(
                "-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
                lines.join("\n")
            )
            .into_bytes()
        }
    }
}

/// The routes of a PCCS serving `c` for `req`, the PCK CRL in `form`.
fn pccs_routes(
    c: &RawCollateral,
    req: &CollateralRequest,
    form: CrlForm,
) -> HashMap<String, Answer> {
    let tee = req.tee.as_str();
    let mut routes = HashMap::new();
    routes.insert(
        format!("/{tee}/certification/v4/tcb?fmspc={}", req.fmspc_hex()),
        Answer {
            status: 200,
            headers: vec![(
                "TCB-Info-Issuer-Chain".into(),
                url_encode(&c.tcb_info_issuer_chain),
            )],
            body: format!(
                r#"{{"tcbInfo":{},"signature":"{}"}}"#,
                c.tcb_info, c.tcb_info_signature
            )
            .into_bytes(),
        },
    );
    routes.insert(
        format!("/{tee}/certification/v4/qe/identity"),
        Answer {
            status: 200,
            headers: vec![(
                "SGX-Enclave-Identity-Issuer-Chain".into(),
                url_encode(&c.qe_identity_issuer_chain),
            )],
            body: format!(
                r#"{{"enclaveIdentity":{},"signature":"{}"}}"#,
                c.qe_identity, c.qe_identity_signature
            )
            .into_bytes(),
        },
    );
    routes.insert(
        format!("/sgx/certification/v4/pckcrl?ca={}&encoding=der", req.ca),
        Answer {
            status: 200,
            headers: vec![(
                "SGX-PCK-CRL-Issuer-Chain".into(),
                url_encode(&c.pck_crl_issuer_chain),
            )],
            body: crl_body(&c.pck_crl, form),
        },
    );
    routes.insert(
        "/sgx/certification/v4/rootcacrl".into(),
        Answer {
            status: 200,
            headers: vec![],
            body: crl_body(&c.root_ca_crl, CrlForm::Hex),
        },
    );
    routes
}

fn online(server: &Server, cache: Option<&std::path::Path>) -> CollateralSource {
    let mut cfg = PccsConfig::new(server.url());
    cfg.timeout = Duration::from_secs(10);
    cfg.cache_dir = cache.map(|p| p.to_path_buf());
    CollateralSource::online(cfg).unwrap()
}

#[test]
fn request_is_read_from_the_quotes_pck_certificate() {
    let sgx = request_for("sgx_quote", Tee::Sgx);
    let tdx = request_for("tdx_quote", Tee::Tdx);
    for (req, name) in [(sgx, "sgx_quote"), (tdx, "tdx_quote")] {
        let c = vector_collateral(name);
        let v: serde_json::Value = serde_json::from_str(&c.tcb_info).unwrap();
        assert_eq!(
            req.fmspc_hex(),
            v["fmspc"].as_str().unwrap().to_uppercase(),
            "{name}"
        );
        let ca = if pck_ca_of_chain(&c.pck_crl_issuer_chain) == "Platform" {
            PckCa::Platform
        } else {
            PckCa::Processor
        };
        assert_eq!(req.ca, ca, "{name}");
    }
}

/// The subject CN of the first certificate of a PEM chain, via the PCK CA naming.
fn pck_ca_of_chain(pem: &str) -> String {
    let first = pem.split("-----END CERTIFICATE-----").next().unwrap();
    let b64: String = first.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let text = String::from_utf8_lossy(&der).to_string();
    if text.contains("PCK Platform CA") {
        "Platform".into()
    } else {
        "Processor".into()
    }
}

#[test]
fn fetches_the_vector_collateral_byte_exact() {
    for (name, tee, form) in [
        ("sgx_quote", Tee::Sgx, CrlForm::Der),
        ("tdx_quote", Tee::Tdx, CrlForm::Pem),
    ] {
        let c = vector_collateral(name);
        let req = request_for(name, tee);
        let server = Server::start(pccs_routes(&c, &req, form));
        let fetched = online(&server, None)
            .fetch(&req, now_in_window(&c))
            .unwrap();
        assert_eq!(fetched.collateral, c, "{name}");
        assert!(fetched.items.iter().all(|i| i.origin == Origin::Network));
        assert_eq!(
            fetched.next_update(),
            next_update_of(&c.tcb_info)
                .min(next_update_of(&c.qe_identity))
                .min(fetched.items[2].next_update)
                .min(fetched.items[3].next_update)
        );
        assert_eq!(server.hits(), 4);
        server.shutdown();
    }
}

#[test]
fn hex_pck_crl_from_a_pccs_is_accepted() {
    let c = vector_collateral("sgx_quote");
    let req = request_for("sgx_quote", Tee::Sgx);
    let server = Server::start(pccs_routes(&c, &req, CrlForm::Hex));
    let fetched = online(&server, None)
        .fetch(&req, now_in_window(&c))
        .unwrap();
    assert_eq!(fetched.collateral.pck_crl, c.pck_crl);
    server.shutdown();
}

#[test]
fn cache_serves_while_valid_when_the_server_is_gone() {
    let c = vector_collateral("sgx_quote");
    let req = request_for("sgx_quote", Tee::Sgx);
    let cache = tempfile::tempdir().unwrap();
    let server = Server::start(pccs_routes(&c, &req, CrlForm::Der));
    let source = online(&server, Some(cache.path()));
    let now = now_in_window(&c);
    let first = source.fetch(&req, now).unwrap();
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    server.shutdown();

    let second = source.fetch(&req, now + 60).unwrap();
    assert_eq!(second.collateral, c);
    assert!(
        second.items.iter().all(|i| i.origin == Origin::Cache),
        "{:?}",
        second.items
    );
}

#[test]
fn expired_cache_is_fetched_again_and_named_when_the_server_is_gone() {
    let c = vector_collateral("sgx_quote");
    let req = request_for("sgx_quote", Tee::Sgx);
    let cache = tempfile::tempdir().unwrap();
    let server = Server::start(pccs_routes(&c, &req, CrlForm::Der));
    let source = online(&server, Some(cache.path()));
    source.fetch(&req, now_in_window(&c)).unwrap();
    assert_eq!(server.hits(), 4);

    // An hour before an item's nextUpdate it is fetched again (refresh ahead): half an hour
    // before the QE identity's (10:01), it and the PCK CRL (10:23) come from the service, the
    // TCB info (10:56) and the root CA CRL from the cache.
    let qe_next = next_update_of(&c.qe_identity);
    let later = source.fetch(&req, qe_next - 1800).unwrap();
    let origin =
        |f: &coffer_pccs::Fetched, item| f.items.iter().find(|i| i.item == item).unwrap().origin;
    assert_eq!(origin(&later, Item::QeIdentity), Origin::Network);
    assert_eq!(origin(&later, Item::PckCrl), Origin::Network);
    assert_eq!(origin(&later, Item::TcbInfo), Origin::Cache);
    assert_eq!(origin(&later, Item::RootCaCrl), Origin::Cache);
    assert_eq!(server.hits(), 6);
    // At its nextUpdate, a service that still serves the same QE identity is refused: stale.
    let err = source.fetch(&req, qe_next).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Stale {
                item: Item::QeIdentity,
                max_age: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("refresh the PCCS"), "{err}");
    server.shutdown();

    let err = source.fetch(&req, qe_next + 1).unwrap_err();
    match &err {
        Error::Unreachable {
            item,
            cached_expired_at,
            ..
        } => {
            assert_eq!(*item, Item::QeIdentity);
            assert_eq!(*cached_expired_at, Some(qe_next));
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("QE identity") && msg.contains("expired"),
        "{msg}"
    );
}

/// With a maximum age, items older than it (by their signed issue date) are fetched again; an
/// unreachable service inside the refresh-ahead window leaves the cached copy in use, with a
/// warning; past the maximum age nothing old is served, from the cache or from the service.
#[test]
fn a_maximum_age_refreshes_early_and_refuses_old_items() {
    let c = vector_collateral("sgx_quote");
    let req = request_for("sgx_quote", Tee::Sgx);
    let cache = tempfile::tempdir().unwrap();
    let server = Server::start(pccs_routes(&c, &req, CrlForm::Der));
    let day = 86_400;
    let mut cfg = PccsConfig::new(server.url()).with_max_age(Duration::from_secs(2 * day as u64));
    cfg.cache_dir = Some(cache.path().to_path_buf());
    let source = CollateralSource::online(cfg.clone()).unwrap();
    let now = now_in_window(&c);
    source.fetch(&req, now).unwrap();
    source.fetch(&req, now + 60).unwrap();
    assert_eq!(server.hits(), 4, "served from the cache while young");

    // The QE identity is the oldest of the three aged items (10:01 against the PCK CRL's
    // 10:23 and the TCB info's 10:56): half an hour before it is two days old it is fetched
    // again, the root CA CRL (a year old already) is not.
    let qe_issued = now_in_window(&c) - 3600 - (55 * 60 - 7);
    let qe_limit = qe_issued + 2 * day;
    let f = source.fetch(&req, qe_limit - 1800).unwrap();
    let origin =
        |f: &coffer_pccs::Fetched, item| f.items.iter().find(|i| i.item == item).unwrap().origin;
    assert_eq!(origin(&f, Item::QeIdentity), Origin::Network);
    assert_eq!(origin(&f, Item::RootCaCrl), Origin::Cache);
    server.shutdown();

    // The service is gone: inside the refresh window the cached copy is served, with a warning.
    let f = source.fetch(&req, qe_limit - 600).unwrap();
    assert_eq!(origin(&f, Item::QeIdentity), Origin::Cache);
    assert!(
        f.warnings
            .iter()
            .any(|w| w.contains("could not refresh the QE identity")),
        "{:?}",
        f.warnings
    );
    // Past the maximum age it is not served, and the error says when the copy stopped being good.
    match source.fetch(&req, qe_limit).unwrap_err() {
        Error::Unreachable {
            item: Item::QeIdentity,
            cached_expired_at,
            ..
        } => assert_eq!(cached_expired_at, Some(qe_limit)),
        other => panic!("expected Unreachable for the QE identity, got {other:?}"),
    }
    // A service that answers with the same old items is refused: it is stale.
    let server = Server::start(pccs_routes(&c, &req, CrlForm::Der));
    cfg.base_url = server.url();
    let err = CollateralSource::online(cfg)
        .unwrap()
        .fetch(&req, qe_limit)
        .unwrap_err();
    assert!(
        matches!(err, Error::Stale { item: Item::QeIdentity, max_age: Some(a), .. } if a == 2 * day),
        "{err:?}"
    );
    server.shutdown();
}

#[test]
fn not_found_names_the_item_and_the_status() {
    let c = vector_collateral("tdx_quote");
    let req = request_for("tdx_quote", Tee::Tdx);
    let mut routes = pccs_routes(&c, &req, CrlForm::Hex);
    routes.remove(&format!(
        "/tdx/certification/v4/tcb?fmspc={}",
        req.fmspc_hex()
    ));
    let server = Server::start(routes);
    let err = online(&server, None)
        .fetch(&req, now_in_window(&c))
        .unwrap_err();
    match &err {
        Error::Status {
            status: 404,
            item: Item::TcbInfo,
            service,
            ..
        } => assert_eq!(service, &server.url()),
        other => panic!("expected 404 for the TCB info, got {other:?}"),
    }
    assert!(err.to_string().contains("FMSPC"), "{err}");
    server.shutdown();
}

#[test]
fn malformed_answers_are_refused_naming_the_item() {
    let c = vector_collateral("sgx_quote");
    let req = request_for("sgx_quote", Tee::Sgx);
    let tcb_path = format!("/sgx/certification/v4/tcb?fmspc={}", req.fmspc_hex());
    let routes = pccs_routes(&c, &req, CrlForm::Der);
    let good_tcb = routes[&tcb_path].clone();
    let server = Server::start(routes);
    let source = online(&server, None);
    let now = now_in_window(&c);

    let cases: Vec<(Answer, &str)> = vec![
        (
            Answer {
                body: b"{not json".to_vec(),
                ..good_tcb.clone()
            },
            "not JSON",
        ),
        (
            Answer {
                headers: vec![],
                ..good_tcb.clone()
            },
            "TCB-Info-Issuer-Chain",
        ),
        (
            Answer {
                headers: vec![("TCB-Info-Issuer-Chain".into(), "garbage".into())],
                ..good_tcb.clone()
            },
            "no certificate",
        ),
        (
            Answer {
                body: format!(r#"{{"tcbInfo":{},"signature":"abcd"}}"#, c.tcb_info).into_bytes(),
                ..good_tcb.clone()
            },
            "64",
        ),
        (
            Answer {
                body: format!(
                    r#"{{"tcbInfo":{},"signature":"{}"}}"#,
                    c.tcb_info.replacen(
                        &format!(
                            "\"fmspc\":\"{}\"",
                            serde_json::from_str::<serde_json::Value>(&c.tcb_info).unwrap()
                                ["fmspc"]
                                .as_str()
                                .unwrap()
                        ),
                        "\"fmspc\":\"AAAAAAAAAAAA\"",
                        1
                    ),
                    c.tcb_info_signature
                )
                .into_bytes(),
                ..good_tcb.clone()
            },
            "FMSPC",
        ),
    ];
    for (answer, expect) in cases {
        server.set(&tcb_path, answer);
        let err = source.fetch(&req, now).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Malformed {
                    item: Item::TcbInfo,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(expect),
            "expected {expect:?} in {err}"
        );
    }

    server.set(&tcb_path, good_tcb);
    server.set(
        &format!("/sgx/certification/v4/pckcrl?ca={}&encoding=der", req.ca),
        Answer {
            status: 200,
            headers: vec![(
                "SGX-PCK-CRL-Issuer-Chain".into(),
                url_encode(&c.pck_crl_issuer_chain),
            )],
            body: b"\x30\x82\x01\x00 truncated".to_vec(),
        },
    );
    let err = source.fetch(&req, now).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Malformed {
                item: Item::PckCrl,
                ..
            }
        ),
        "{err:?}"
    );
    server.shutdown();
}

#[test]
fn oversized_answers_are_refused() {
    let c = vector_collateral("tdx_quote");
    let req = request_for("tdx_quote", Tee::Tdx);
    let mut routes = pccs_routes(&c, &req, CrlForm::Der);
    let crl_path = format!("/sgx/certification/v4/pckcrl?ca={}&encoding=der", req.ca);
    routes.get_mut(&crl_path).unwrap().body = vec![b'0'; 64 * 1024];
    let server = Server::start(routes);
    let mut cfg = PccsConfig::new(server.url());
    cfg.max_response_bytes = 16 * 1024;
    let err = CollateralSource::online(cfg)
        .unwrap()
        .fetch(&req, now_in_window(&c))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                item: Item::PckCrl,
                limit: 16384,
                ..
            }
        ),
        "{err:?}"
    );
    server.shutdown();
}

#[test]
fn unreachable_service_without_cache_names_service_and_item() {
    // Bind and drop a listener: nothing listens on that port any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let c = vector_collateral("sgx_quote");
    let req = request_for("sgx_quote", Tee::Sgx);
    let url = format!("http://{addr}");
    let err = CollateralSource::online(PccsConfig::new(url.clone()))
        .unwrap()
        .fetch(&req, now_in_window(&c))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unreachable {
                item: Item::TcbInfo,
                cached_expired_at: None,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&url) && msg.contains("TCB info"), "{msg}");
}

#[test]
fn offline_directory_serves_imported_collateral() {
    let c = vector_collateral("tdx_quote");
    let req = request_for("tdx_quote", Tee::Tdx);
    let dir = tempfile::tempdir().unwrap();
    let source = CollateralSource::offline(dir.path());
    let err = source.fetch(&req, 0).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OfflineMissing {
                item: Item::TcbInfo,
                ..
            }
        ),
        "{err:?}"
    );

    import_collateral(dir.path(), &req, &c, 0).unwrap();
    // Offline items are returned whatever `now` is; the verifier judges validity.
    let fetched = source.fetch(&req, i64::MAX).unwrap();
    assert_eq!(fetched.collateral, c);
    assert!(fetched.items.iter().all(|i| i.origin == Origin::Offline));

    // Collateral for another TEE is refused, naming the item.
    let wrong = CollateralRequest {
        tee: Tee::Sgx,
        ..req
    };
    assert!(import_collateral(dir.path(), &wrong, &c, 0).is_err());
}

#[test]
fn a_cache_from_an_online_machine_works_as_an_offline_directory() {
    let c = vector_collateral("sgx_quote");
    let req = request_for("sgx_quote", Tee::Sgx);
    let cache = tempfile::tempdir().unwrap();
    let server = Server::start(pccs_routes(&c, &req, CrlForm::Hex));
    online(&server, Some(cache.path()))
        .fetch(&req, now_in_window(&c))
        .unwrap();
    server.shutdown();
    let fetched = CollateralSource::offline(cache.path())
        .fetch(&req, 0)
        .unwrap();
    assert_eq!(fetched.collateral, c);
}

#[test]
fn fetched_collateral_verifies_the_vector_quotes() {
    for (name, tee, status) in [
        ("sgx_quote", Tee::Sgx, "ConfigurationAndSWHardeningNeeded"),
        ("tdx_quote", Tee::Tdx, "UpToDate"),
    ] {
        let c = vector_collateral(name);
        let quote_bytes = std::fs::read(vectors().join(name)).unwrap();
        let quote = coffer_evidence::Quote::parse(&quote_bytes).unwrap();
        let req = CollateralRequest::for_quote(&quote).unwrap();
        assert_eq!(req, request_for(name, tee), "{name}");
        let server = Server::start(pccs_routes(&c, &req, CrlForm::Hex));
        let now = now_in_window(&c);
        let fetched = online(&server, None).fetch(&req, now).unwrap();
        server.shutdown();
        let collateral = fetched.to_collateral().unwrap();
        let verified = coffer_evidence::verify(
            &quote_bytes,
            &collateral,
            &coffer_evidence::TrustAnchors::intel(),
            now,
        )
        .unwrap();
        assert_eq!(verified.tcb_status.as_str(), status, "{name}");
    }
}

#[test]
fn root_ca_crl_url_is_configurable_and_der_is_accepted() {
    let c = vector_collateral("sgx_quote");
    let req = request_for("sgx_quote", Tee::Sgx);
    let mut routes = pccs_routes(&c, &req, CrlForm::Der);
    routes.remove("/sgx/certification/v4/rootcacrl");
    routes.insert(
        "/IntelSGXRootCA.der".into(),
        Answer {
            status: 200,
            headers: vec![],
            body: crl_body(&c.root_ca_crl, CrlForm::Der),
        },
    );
    let server = Server::start(routes);
    let mut cfg = PccsConfig::new(server.url());
    cfg.root_ca_crl_url = Some(format!("{}/IntelSGXRootCA.der", server.url()));
    let fetched = CollateralSource::online(cfg)
        .unwrap()
        .fetch(&req, now_in_window(&c))
        .unwrap();
    assert_eq!(fetched.collateral.root_ca_crl, c.root_ca_crl);

    // Without the setting, a PCCS's rootcacrl endpoint is asked, which this server lacks.
    let err = online(&server, None)
        .fetch(&req, now_in_window(&c))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                status: 404,
                item: Item::RootCaCrl,
                ..
            }
        ),
        "{err:?}"
    );
    server.shutdown();
}

#[test]
fn bad_tls_roots_are_refused_up_front() {
    let mut cfg = PccsConfig::new("https://pccs.invalid:8081");
    cfg.tls_roots_pem = Some("not a certificate".into());
    assert!(matches!(
        CollateralSource::online(cfg),
        Err(Error::InvalidTlsRoots { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// AMD KDS, served by the same 127.0.0.1 server with the simulated SEV-SNP machine's chain.

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// The KDS fetches a chip's VCEK at its reported TCB, the product's chain and CRL; the result
/// verifies the report with the CRL checked; the cache serves while the service is gone and
/// the CRL is valid, and names the item when it is not; an unknown chip's 404 says what to
/// check; the offline directory is the cache's layout.
#[test]
fn kds_collateral_is_fetched_cached_and_verifies_the_report() {
    use coffer_evidence::sim::{SimSnpPlatform, SnpReportSpec};
    use coffer_evidence::snp::{verify_snp, Product, Report, SnpCollateral};
    use coffer_pccs::kds::{KdsRequest, KdsSource};
    let now = 1_800_000_000;
    let machine = SimSnpPlatform::from_seed([9; 32]);
    let report = machine.report(&SnpReportSpec::default());
    let parsed = Report::parse(&report).unwrap();
    let req = KdsRequest::for_report(&parsed, Product::Milan).unwrap();
    let crl = machine.crl(now - 3600, now + 86_400, &[]);
    let vcek_path = format!(
        "/vcek/v1/Milan/{}?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115",
        hex::encode(machine.chip_id())
    );
    let ok = |body: Vec<u8>| Answer {
        status: 200,
        headers: vec![],
        body,
    };
    let mut routes = HashMap::new();
    routes.insert(vcek_path.clone(), ok(machine.vcek_der().to_vec()));
    routes.insert(
        "/vcek/v1/Milan/cert_chain".to_string(),
        ok((pem_of(machine.ask_der()) + &pem_of(machine.ark_der())).into_bytes()),
    );
    routes.insert("/vcek/v1/Milan/crl".to_string(), ok(crl.clone()));
    let server = Server::start(routes);
    let cache = tempfile::tempdir().unwrap();
    let source = KdsSource::online(&server.url(), Some(cache.path().to_path_buf())).unwrap();
    let got = source.fetch(&req, now).unwrap();
    assert_eq!(server.hits(), 3);
    let collateral = SnpCollateral {
        vek: &got.vcek,
        ask: &got.ask,
        ark: &got.ark,
        crl: Some(&got.crl),
    };
    let v = verify_snp(&report, &collateral, &machine.anchors(), now).unwrap();
    assert!(v.crl_checked);

    // From the cache while the CRL is good, with the service gone.
    server.shutdown();
    assert_eq!(source.fetch(&req, now + 60).unwrap(), got);
    // Past the CRL's nextUpdate it must be fetched again: the error names it and the expiry.
    let err = source.fetch(&req, now + 86_400).unwrap_err().to_string();
    assert!(
        err.contains("Milan CRL") && err.contains("expired"),
        "{err}"
    );

    // The cache directory works as an offline directory.
    let offline = KdsSource::offline(cache.path());
    assert_eq!(offline.fetch(&req, now + 60).unwrap(), got);
    let other = KdsRequest {
        hwid: vec![0xee; 64],
        ..req.clone()
    };
    let err = offline.fetch(&other, now).unwrap_err().to_string();
    assert!(
        err.contains("offline directory") && err.contains("VCEK"),
        "{err}"
    );

    // An unknown chip online: KDS's 404, explained.
    let server = Server::start(HashMap::new());
    let source = KdsSource::online(&server.url(), None).unwrap();
    let err = source.fetch(&other, now).unwrap_err().to_string();
    assert!(
        err.contains("HTTP 404") && err.contains("does not know this chip"),
        "{err}"
    );
    server.shutdown();
}
