//! Attacks on the trust boundaries around the Coordinator, each against a real `coffer
//! coordinator` process on 127.0.0.1, each refused:
//! - a `packages: update` user changes what runs (not only an SVN);
//! - a manifest names the Coordinator, so a workload could impersonate it;
//! - a leaked activation request is replayed to read the parameters;
//! - anyone floods refused activations into the audit log;
//! - a manifest update adds a per-instance secret and existing instances cannot restart;
//! - a stranger sets the first manifest of a Coordinator that has an owner;
//! - collateral for hardware quotes: `--pccs-url` is used (and named when unreachable);
//! - a TD with the package's firmware and boot measurements runs another container image;
//! - an SEV-SNP guest with another measurement, host data, policy, VMPL or chain.

mod common;

use common::*;

fn signer_manifest(svn: u16, mrsigner: [u8; 32], debug: bool) -> serde_json::Value {
    let u = users();
    serde_json::json!({
        "packages": {
            "app": {"tee": "sgx", "mrsigner": hex::encode(mrsigner), "isv_prod_id": 1,
                    "isv_svn": svn, "debug": debug}
        },
        "workloads": {"web": {"package": "app"}},
        "users": {
            "admin": {"certificate": u.admin_pem, "roles": ["updater"]},
            "bumper": {"certificate": u.reader_pem, "roles": ["svn"]}
        },
        "roles": {
            "updater": {"resource": "manifest", "actions": ["update"]},
            "svn": {"resource": "packages", "names": ["app"], "actions": ["update"]}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_update_may_only_raise_svns() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sim) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &sim);
    let (mut c, root) = attested(&p.addr, &sim, None).await;
    set_manifest(&mut c, &signer_manifest(1, [7; 32], false)).await;
    let u = users();
    let mut bumper = Client::new(&p.addr, &Trust::RootCa(root), Some(&u.reader)).unwrap();
    // Raising the minimum SVN: allowed.
    let r: Result<coffer_api::ManifestResponse, _> = bumper
        .call(
            Method::POST,
            "/api/v1/manifest/update",
            Some(&signer_manifest(2, [7; 32], false)),
        )
        .await;
    assert!(r.is_ok(), "{r:?}");
    // Another signer, or debug enclaves: what runs changes; refused, and the history keeps
    // only the allowed version.
    for (what, m) in [
        ("another MRSIGNER", signer_manifest(3, [8; 32], false)),
        ("debug allowed", signer_manifest(3, [7; 32], true)),
    ] {
        let r: Result<coffer_api::ManifestResponse, _> = bumper
            .call(Method::POST, "/api/v1/manifest/update", Some(&m))
            .await;
        match r {
            Err(Error::Remote {
                kind: ErrorKind::Forbidden,
                message,
                ..
            }) => assert!(
                message.contains("allows raising a package's minimum ISVSVN only"),
                "{what}: {message}"
            ),
            other => panic!("{what}: {other:?}"),
        }
    }
    let h: coffer_api::HistoryResponse = c.get("/api/v1/manifest/history").await.unwrap();
    assert_eq!(h.entries.len(), 2);
    assert_eq!(h.entries[1].author.as_deref(), Some("bumper"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_cannot_name_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sim) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &sim);
    let (mut c, _) = attested(&p.addr, &sim, None).await;
    let mut m = manifest();
    m["workloads"]["web"]["sans"] = serde_json::json!(["coffer-coordinator"]);
    let r: Result<coffer_api::ManifestResponse, _> =
        c.call(Method::POST, "/api/v1/manifest", Some(&m)).await;
    match r {
        Err(Error::Remote {
            kind: ErrorKind::BadRequest,
            message,
            ..
        }) => assert!(
            message.contains("\"coffer-coordinator\" is reserved"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_activation_request_yields_nothing_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sim) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &sim);
    let (mut c, root) = attested(&p.addr, &sim, None).await;
    set_manifest(&mut c, &manifest()).await;
    let platform = sim_platform(&sim);
    // The launcher's request, as an eavesdropper on the host would capture it.
    let l = launch_key();
    let q = quote(&platform, MR_APP, false, l.report_data);
    let req = request("web", uuid::Uuid::new_v4(), &l.csr_pem, &q);
    let first: ActivationResponse = c
        .call(Method::POST, "/api/v1/activate", Some(&req))
        .await
        .unwrap();
    let secret = first.clone().open(&l.key_pkcs8).unwrap().parameters.env["DB_KEY"].clone();
    // Replayed by someone else, on their own connection.
    let mut attacker = Client::new(&p.addr, &Trust::RootCa(root), None).unwrap();
    let (status, body) = attacker
        .request(
            Method::POST,
            "/api/v1/activate",
            Some(serde_json::to_vec(&req).unwrap()),
        )
        .await
        .unwrap();
    assert!(status.is_success());
    assert!(
        !String::from_utf8_lossy(&body).contains(&secret),
        "the secret travels in the clear"
    );
    let replayed: ActivationResponse = serde_json::from_slice(&body).unwrap();
    let attacker_key = rcgen::KeyPair::generate().unwrap().serialize_der();
    assert_eq!(
        replayed.open(&attacker_key).unwrap_err(),
        coffer_api::SealError::Authentication
    );
}

/// Posts a raw activation request body; the status and the answer's text.
async fn send(c: &mut Client, body: Vec<u8>) -> (u16, String) {
    let (status, body) = c
        .request(Method::POST, "/api/v1/activate", Some(body))
        .await
        .unwrap();
    (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

/// In a confidential VM the firmware and boot registers do not measure the container: only
/// the image binding in the report data (bytes 32..64) does. A TD with the right MRTD and
/// RTMRs activates only with the pinned image, and only when its evidence binds the image it
/// claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_td_running_another_image_does_not_activate() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sim) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &sim);
    let (mut c, _) = attested(&p.addr, &sim, None).await;
    let (image, other) = ([0xc3u8; 32], [0xc4u8; 32]);
    let rtmr = [[0x10u8; 48], [0x11; 48], [0x12; 48], [0; 48]];
    let u = users();
    let m = serde_json::json!({
        "packages": {"td": {"tee": "tdx", "mrtd": hex::encode([0xa1u8; 48]),
            "rtmr0": hex::encode(rtmr[0]), "rtmr1": hex::encode(rtmr[1]),
            "rtmr2": hex::encode(rtmr[2]), "image_measurement": hex::encode(image)}},
        "workloads": {"batch": {"package": "td"}},
        "users": {"admin": {"certificate": u.admin_pem, "roles": ["updater"]}},
        "roles": {"updater": {"resource": "manifest", "actions": ["update"]}}
    });
    set_manifest(&mut c, &m).await;
    let platform = sim_platform(&sim);
    let try_activate = |bound: Option<[u8; 32]>, claimed: Option<[u8; 32]>| {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr_pem = coffer_coordinator::pki::make_csr(&key, "w").unwrap();
        let spki = coffer_coordinator::pki::key_spki(&key);
        let report_data = match bound {
            Some(i) => coffer_api::workload_report_data_for_image(&spki, &i),
            None => coffer_api::workload_report_data(&spki),
        };
        let q = platform.tdx_quote(&coffer_evidence::sim::TdxQuoteSpec {
            mrtd: [0xa1; 48],
            rtmr,
            report_data,
            ..Default::default()
        });
        let mut req = request("batch", uuid::Uuid::new_v4(), &csr_pem, &q);
        req.image_measurement = claimed.map(hex::encode);
        serde_json::to_vec(&req).unwrap()
    };
    // The pinned image, bound: activated.
    let (status, body) = send(&mut c, try_activate(Some(image), Some(image))).await;
    assert_eq!(status, 200, "{body}");
    // Another image in the same TD: refused, naming the image measurement.
    let (status, body) = send(&mut c, try_activate(Some(other), Some(other))).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("image measurement"), "{body}");
    // Claiming the pinned image without evidence that binds it: refused.
    let (status, body) = send(&mut c, try_activate(Some(other), Some(image))).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("report data does not bind"), "{body}");
    // No image at all (an old launcher, or a process that is not the launcher): refused.
    let (status, body) = send(&mut c, try_activate(None, None)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("image measurement"), "{body}");
}

/// An SEV-SNP guest activates only with its package's MEASUREMENT, HOST_DATA, guest policy
/// and container image, under the (simulated) AMD chain it came with; a tampered report, a
/// foreign chip's chain, a debug or migratable guest, another host data or missing
/// certificates are refused, each naming the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_snp_guest_activates_only_as_its_package_says() {
    use coffer_evidence::sim::{SimSnpPlatform, SnpReportSpec, SIM_SNP_POLICY};
    let dir = tempfile::tempdir().unwrap();
    let (data, sim) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &sim);
    let (mut c, root) = attested(&p.addr, &sim, None).await;
    let image = [0xc3u8; 32];
    let u = users();
    let m = serde_json::json!({
        "packages": {"vm": {"tee": "snp", "image_measurement": hex::encode(image),
            "snp": {"measurement": hex::encode([0xa1u8; 48]), "host_data": hex::encode([0xb2u8; 32]),
                    "min_reported_tcb": {"bootloader": 3, "snp": 8, "microcode": 115},
                    "require_crl": true}}},
        "workloads": {"guest": {"package": "vm"}},
        "users": {"admin": {"certificate": u.admin_pem, "roles": ["updater"]}},
        "roles": {"updater": {"resource": "manifest", "actions": ["update"]}}
    });
    set_manifest(&mut c, &m).await;
    let machine = sim_platform(&sim).snp();
    let stranger = SimSnpPlatform::from_seed([0x5a; 32]);
    struct Try<'a> {
        spec: SnpReportSpec,
        signer: &'a SimSnpPlatform,
        certs: Vec<Vec<u8>>,
        flip: Option<usize>,
    }
    let certs = |m: &SimSnpPlatform| {
        vec![
            m.vcek_der().to_vec(),
            m.ask_der().to_vec(),
            m.ark_der().to_vec(),
        ]
    };
    let good = || SnpReportSpec {
        measurement: [0xa1; 48],
        host_data: [0xb2; 32],
        ..SnpReportSpec::default()
    };
    let body_for = |t: Try<'_>, key: &rcgen::KeyPair| {
        let csr_pem = coffer_coordinator::pki::make_csr(key, "w").unwrap();
        let spki = coffer_coordinator::pki::key_spki(key);
        let mut report = t.signer.report(&SnpReportSpec {
            report_data: coffer_api::workload_report_data_for_image(&spki, &image),
            ..t.spec
        });
        if let Some(at) = t.flip {
            report[at] ^= 1;
        }
        let mut req = request("guest", uuid::Uuid::new_v4(), &csr_pem, &report);
        req.evidence.format = EvidenceFormat::SnpReport;
        req.evidence.certificates = t.certs.iter().map(|c| b64().encode(c)).collect();
        req.image_measurement = Some(hex::encode(image));
        serde_json::to_vec(&req).unwrap()
    };
    let body = |t: Try<'_>| body_for(t, &rcgen::KeyPair::generate().unwrap());
    // A report from this machine with its own chain.
    let mine = |spec: SnpReportSpec| Try {
        spec,
        signer: &machine,
        certs: certs(&machine),
        flip: None,
    };
    let guest_key = rcgen::KeyPair::generate().unwrap();
    let captured = body_for(mine(good()), &guest_key);
    let (status, text) = send(&mut c, captured.clone()).await;
    assert_eq!(status, 200, "{text}");
    let answer: ActivationResponse = serde_json::from_str(&text).unwrap();
    answer.open(&guest_key.serialize_der()).unwrap();

    // The request replayed by someone who captured it on the host: the answer is sealed to the
    // guest's key; with the replayer's own key in the request, the report no longer binds it.
    let mut replayer = Client::new(&p.addr, &Trust::RootCa(root), None).unwrap();
    let (status, text) = send(&mut replayer, captured.clone()).await;
    assert_eq!(status, 200, "{text}");
    let replayed: ActivationResponse = serde_json::from_str(&text).unwrap();
    let replayer_key = rcgen::KeyPair::generate().unwrap();
    assert_eq!(
        replayed.open(&replayer_key.serialize_der()).unwrap_err(),
        coffer_api::SealError::Authentication
    );
    let mut req: coffer_api::ActivationRequest = serde_json::from_slice(&captured).unwrap();
    req.csr_pem = coffer_coordinator::pki::make_csr(&replayer_key, "w").unwrap();
    let (status, text) = send(&mut replayer, serde_json::to_vec(&req).unwrap()).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("report data"), "{text}");

    let cases: Vec<(&str, Try<'_>, u16, &str)> = vec![
        (
            "one bit of MEASUREMENT flipped after signing",
            Try {
                flip: Some(0x90),
                ..mine(good())
            },
            403,
            "signature",
        ),
        (
            "another machine's report and chain",
            Try {
                signer: &stranger,
                certs: certs(&stranger),
                ..mine(good())
            },
            403,
            "not a pinned AMD root key",
        ),
        (
            "another chip's VCEK under this machine's ARK",
            Try {
                certs: vec![
                    stranger.vcek_der().to_vec(),
                    machine.ask_der().to_vec(),
                    machine.ark_der().to_vec(),
                ],
                ..mine(good())
            },
            403,
            "signature",
        ),
        (
            "a debug guest",
            mine(SnpReportSpec {
                policy: SIM_SNP_POLICY | 1 << 19,
                ..good()
            }),
            403,
            "debug guest",
        ),
        (
            "a guest that allows a migration agent",
            mine(SnpReportSpec {
                policy: SIM_SNP_POLICY | 1 << 18,
                ..good()
            }),
            403,
            "migration agent",
        ),
        (
            "other host data",
            mine(SnpReportSpec {
                host_data: [0xb3; 32],
                ..good()
            }),
            403,
            "HOST_DATA",
        ),
        (
            "a report from VMPL 1",
            mine(SnpReportSpec { vmpl: 1, ..good() }),
            403,
            "VMPL 1",
        ),
        (
            "no certificates",
            Try {
                certs: Vec::new(),
                ..mine(good())
            },
            400,
            "needs 3",
        ),
    ];
    for (what, t, want_status, words) in cases {
        let (status, text) = send(&mut c, body(t)).await;
        assert_eq!(status, want_status, "{what}: {text}");
        assert!(text.contains(words), "{what}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_activations_is_limited_and_summarised() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sim) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &sim);
    let (mut c, root) = attested(&p.addr, &sim, None).await;
    set_manifest(&mut c, &manifest()).await;
    let u = users();
    let mut admin = Client::new(&p.addr, &Trust::RootCa(root.clone()), Some(&u.admin)).unwrap();
    let before: coffer_api::AuditResponse = admin.get("/api/v1/audit?limit=1000").await.unwrap();
    // Anyone: unknown workloads with attacker-chosen names, garbage evidence.
    let platform = sim_platform(&sim);
    let mut kinds = Vec::new();
    for i in 0..40 {
        let l = launch_key();
        let q = quote(&platform, MR_APP, false, l.report_data);
        let mut req = request(
            &format!("nope-{i}-{}", "x".repeat(200)),
            uuid::Uuid::new_v4(),
            &l.csr_pem,
            &q,
        );
        if i % 2 == 0 {
            req.workload = "web".into();
            req.evidence.data = b64().encode(b"garbage");
        }
        let r: Result<ActivationResponse, _> =
            c.call(Method::POST, "/api/v1/activate", Some(&req)).await;
        kinds.push(refused_kind(r).0);
    }
    assert!(kinds[..30]
        .iter()
        .all(|k| matches!(k, ErrorKind::NotFound | ErrorKind::MalformedEvidence)));
    assert!(
        kinds[30..].iter().all(|k| *k == ErrorKind::RateLimited),
        "{kinds:?}"
    );
    // Nothing of it is in the audit log one by one …
    let after: coffer_api::AuditResponse = admin.get("/api/v1/audit?limit=1000").await.unwrap();
    assert_eq!(after.records.len(), before.records.len());
    let (_, m) = c.request(Method::GET, "/metrics", None).await.unwrap();
    let m = String::from_utf8(m.to_vec()).unwrap();
    assert!(
        m.contains("coffer_coordinator_activations_rate_limited_total 10"),
        "{m}"
    );
    assert!(
        m.contains(r#"workload="_unknown",result="not_found""#),
        "{m}"
    );
    // … but in one summary, written at the end of its window (here: at shutdown).
    let pid = p.child.id().to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    let mut p = p;
    let _ = p.child.wait();
    let p = start(&data, &sim);
    let (_, root) = attested(&p.addr, &sim, None).await;
    let mut admin = Client::new(&p.addr, &Trust::RootCa(root), Some(&u.admin)).unwrap();
    let log: coffer_api::AuditResponse = admin.get("/api/v1/audit?limit=1000").await.unwrap();
    let summaries: Vec<&coffer_api::AuditRecord> = log
        .records
        .iter()
        .filter(|r| r.outcome == "refused-summary")
        .collect();
    assert_eq!(summaries.len(), 1, "{:?}", log.records);
    let d = summaries[0].detail.as_deref().unwrap();
    assert!(
        d.starts_with("30 activation(s) refused without verified evidence"),
        "{d}"
    );
    assert!(d.contains("15 × not_found for workload _unknown"), "{d}");
    assert!(
        d.contains("15 × malformed_evidence for workload web"),
        "{d}"
    );
    assert!(!d.contains("nope-"), "attacker strings are not stored: {d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_per_instance_secret_does_not_break_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sim) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &sim);
    let (mut c, root) = attested(&p.addr, &sim, None).await;
    set_manifest(&mut c, &manifest()).await;
    let platform = sim_platform(&sim);
    let id = uuid::Uuid::new_v4();
    let first = activate(&mut c, &platform, "web", id, MR_APP)
        .await
        .unwrap();
    // The owner adds a per-instance secret the workload uses.
    let mut m = manifest();
    m["secrets"]["extra"] = serde_json::json!({"type": "symmetric", "size": 128});
    m["workloads"]["web"]["parameters"]["env"]["EXTRA"] =
        serde_json::json!("{{ secrets.extra.key.hex }}");
    let mut admin = Client::new(&p.addr, &Trust::RootCa(root), Some(&users().admin)).unwrap();
    let _: coffer_api::ManifestResponse = admin
        .call(Method::POST, "/api/v1/manifest/update", Some(&m))
        .await
        .unwrap();
    // The existing instance restarts: same old secret, a new one generated, and kept.
    let again = activate(&mut c, &platform, "web", id, MR_APP)
        .await
        .unwrap();
    assert_eq!(again.parameters.env["INST"], first.parameters.env["INST"]);
    let extra = again.parameters.env["EXTRA"].clone();
    assert_eq!(extra.len(), 32);
    let third = activate(&mut c, &platform, "web", id, MR_APP)
        .await
        .unwrap();
    assert_eq!(third.parameters.env["EXTRA"], extra);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_sets_the_first_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sim) = (dir.path().join("data"), dir.path().join("sim"));
    let (owner, owner_pem) = user("owner");
    let owner_file = dir.path().join("owner.pem");
    std::fs::write(&owner_file, &owner_pem).unwrap();
    let p = start_with(&data, &sim, &["--owner-cert", owner_file.to_str().unwrap()]);
    let (mut anon, root) = attested(&p.addr, &sim, None).await;
    let u = users();
    let mut stranger =
        Client::new(&p.addr, &Trust::RootCa(root.clone()), Some(&u.stranger)).unwrap();
    for (who, c, kind) in [
        ("no certificate", &mut anon, ErrorKind::Unauthenticated),
        ("a stranger", &mut stranger, ErrorKind::Forbidden),
    ] {
        let r: Result<coffer_api::ManifestResponse, _> = c
            .call(Method::POST, "/api/v1/manifest", Some(&manifest()))
            .await;
        assert!(
            matches!(&r, Err(Error::Remote { kind: k, .. }) if *k == kind),
            "{who}: {r:?}"
        );
    }
    let mut owner_client = Client::new(&p.addr, &Trust::RootCa(root), Some(&owner)).unwrap();
    set_manifest(&mut owner_client, &manifest()).await;
    let h: coffer_api::HistoryResponse = anon.get("/api/v1/manifest/history").await.unwrap();
    assert_eq!(h.entries[0].author.as_deref(), Some("owner"));
}

/// A `coffer coordinator` in hardware mode: `dir/attestation` is laid out like Gramine's
/// `/dev/attestation` (its quote from the simulated platform `[2; 32]`), the data directory is
/// `dir/<data>`, and `extra` adds flags. Returns the process and its address.
fn hardware_coordinator(dir: &Path, data: &str, extra: &[&std::ffi::OsStr]) -> (Child, String) {
    let att = dir.join("attestation");
    std::fs::create_dir_all(att.join("keys")).unwrap();
    let platform = SimPlatform::from_seed([2; 32]);
    std::fs::write(att.join("quote"), quote(&platform, MR_APP, false, [0; 64])).unwrap();
    std::fs::write(att.join("user_report_data"), [0u8; 64]).unwrap();
    std::fs::write(att.join("keys/_sgx_mrenclave"), [7u8; 16]).unwrap();
    let mut child = Command::new(COFFER)
        .args(["--json", "coordinator", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--attestation-root")
        .arg(&att)
        .arg("--data-dir")
        .arg(dir.join(data))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = v["listening"]
        .as_str()
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    assert_eq!(v["simulation"], false);
    (child, addr)
}

/// An address nothing listens on.
fn closed_port() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    closed.local_addr().unwrap().to_string()
}

#[test]
fn hardware_collateral_comes_from_the_pccs_url() {
    // The Coordinator starts in hardware mode; its PCCS is unreachable.
    let dir = tempfile::tempdir().unwrap();
    let platform = SimPlatform::from_seed([2; 32]);
    let pccs = format!("https://{}", closed_port());
    let (mut child, addr) =
        hardware_coordinator(dir.path(), "data", &["--pccs-url".as_ref(), pccs.as_ref()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(async {
        // The RA-TLS certificate cannot be verified without collateral either: record it.
        let rec = std::sync::Arc::new(coffer_coordinator::tls::RecordingVerifier::default());
        let mut c = Client::new(&addr, &Trust::Attest(rec), None).unwrap();
        let _: coffer_api::ManifestResponse = c
            .call(Method::POST, "/api/v1/manifest", Some(&manifest()))
            .await
            .unwrap();
        let l = launch_key();
        let q = quote(&platform, MR_APP, false, l.report_data);
        c.call::<_, ActivationResponse>(
            Method::POST,
            "/api/v1/activate",
            Some(&request("web", uuid::Uuid::new_v4(), &l.csr_pem, &q)),
        )
        .await
    });
    let _ = child.kill();
    let _ = child.wait();
    // The quote's collateral was asked of the PCCS, which is down: the refusal names it.
    let (kind, msg) = refused_kind(r);
    assert_eq!(kind, ErrorKind::CollateralUnavailable, "{msg}");
    let host = pccs.trim_start_matches("https://");
    assert!(msg.contains(host), "{msg}");
}

/// A hardware-mode Coordinator verifies SEV-SNP evidence under AMD's pinned roots only (the
/// simulated machine's chain is refused); a report without certificates needs a KDS, and with
/// `--kds-url` the KDS is asked for the VCEK and the CRL, and named in the refusal when down.
#[test]
fn hardware_snp_evidence_needs_amds_roots_and_asks_the_kds_url() {
    use coffer_evidence::sim::SnpReportSpec;
    let dir = tempfile::tempdir().unwrap();
    let platform = SimPlatform::from_seed([2; 32]);
    let kds = format!("http://{}", closed_port());
    let (mut child, addr) = hardware_coordinator(
        dir.path(),
        "data",
        &["--collateral-dir".as_ref(), dir.path().as_os_str()],
    );
    let snp = platform.snp();
    let manifest = serde_json::json!({
        "packages": {"vm": {"tee": "snp",
            "snp": {"measurement": hex::encode([0u8; 48]), "host_data": hex::encode([0u8; 32])}}},
        "workloads": {"guest": {"package": "vm"}}
    });
    let send = |addr: &str, with_certs: bool| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let rec = std::sync::Arc::new(coffer_coordinator::tls::RecordingVerifier::default());
            let mut c = Client::new(addr, &Trust::Attest(rec), None).unwrap();
            let _: Result<coffer_api::ManifestResponse, _> = c
                .call(Method::POST, "/api/v1/manifest", Some(&manifest))
                .await;
            let l = launch_key();
            let report = snp.report(&SnpReportSpec {
                report_data: l.report_data,
                ..SnpReportSpec::default()
            });
            let mut req = request("guest", uuid::Uuid::new_v4(), &l.csr_pem, &report);
            req.evidence.format = EvidenceFormat::SnpReport;
            if with_certs {
                req.evidence.certificates = [snp.vcek_der(), snp.ask_der(), snp.ark_der()]
                    .iter()
                    .map(|d| b64().encode(d))
                    .collect();
            }
            c.call::<_, ActivationResponse>(Method::POST, "/api/v1/activate", Some(&req))
                .await
        })
    };
    // The simulated machine's chain is not AMD's.
    let (kind, msg) = refused_kind(send(&addr, true));
    assert_eq!(kind, ErrorKind::UntrustedRoot, "{msg}");
    assert!(msg.contains("pinned AMD root"), "{msg}");
    // Without certificates, and no KDS (the offline directory has no kds/): refused, saying
    // how to get them.
    let (kind, msg) = refused_kind(send(&addr, false));
    assert_eq!(kind, ErrorKind::MalformedEvidence, "{msg}");
    assert!(
        msg.contains("needs 3") && msg.contains("--kds-url"),
        "{msg}"
    );
    let _ = child.kill();
    let _ = child.wait();

    // With --kds-url the KDS is asked, and named when it is down.
    let (mut child, addr) = hardware_coordinator(
        dir.path(),
        "data2",
        &[
            "--pccs-url".as_ref(),
            kds.as_ref(),
            "--kds-url".as_ref(),
            kds.as_ref(),
        ],
    );
    let (kind, msg) = refused_kind(send(&addr, false));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(kind, ErrorKind::CollateralUnavailable, "{msg}");
    assert!(msg.contains(kds.trim_start_matches("http://")), "{msg}");
}
