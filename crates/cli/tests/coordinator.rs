//! Integration tests of the Coordinator: the real `coffer coordinator` process on 127.0.0.1,
//! driven over HTTPS with simulated evidence from the simulated platform.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_accepted_and_restart_keeps_ca_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (data, simdir) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &simdir);
    let sim = sim_platform(&simdir);
    let (mut c, root) = attested(&p.addr, &simdir, None).await;
    let st: coffer_api::StatusResponse = c.get("/api/v1/status").await.unwrap();
    assert_eq!(st.state, coffer_api::CoordinatorState::AwaitingManifest);
    assert!(st.simulation);
    // No manifest yet: activations are refused with `conflict` (launchers retry).
    let (k, _) = refused_kind(activate(&mut c, &sim, "web", uuid::Uuid::new_v4(), MR_APP).await);
    assert_eq!(k, ErrorKind::Conflict);

    let set = set_manifest(&mut c, &manifest()).await;
    let again: Result<coffer_api::ManifestResponse, _> = c
        .call(Method::POST, "/api/v1/manifest", Some(&manifest()))
        .await;
    assert!(
        matches!(
            again,
            Err(Error::Remote {
                kind: ErrorKind::Conflict,
                ..
            })
        ),
        "{again:?}"
    );

    let id = uuid::Uuid::new_v4();
    let r1 = activate(&mut c, &sim, "web", id, MR_APP)
        .await
        .expect("accepted");
    // The chain: workload certificate signed by the intermediate, intermediate by the root.
    let certs: Vec<Vec<u8>> = pem_blocks(&r1.certificate_chain_pem);
    assert_eq!(certs.len(), 2);
    let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    let (_, int) = x509_parser::parse_x509_certificate(&certs[1]).unwrap();
    let (_, rootc) = x509_parser::parse_x509_certificate(&root).unwrap();
    leaf.verify_signature(Some(int.public_key())).unwrap();
    int.verify_signature(Some(rootc.public_key())).unwrap();
    assert!(r1.not_after > now() && r1.not_after <= now() + 24 * 3600 + 5);
    let db_key = r1.parameters.env["DB_KEY"].clone();
    let inst = r1.parameters.env["INST"].clone();
    assert_eq!(db_key.len(), 64);
    assert_eq!(inst.len(), 32);
    let ca_file = &r1.parameters.files[0];
    assert_eq!(ca_file.path, "/etc/coffer-ca.pem");
    assert_eq!(
        pem_blocks(&String::from_utf8(b64().decode(&ca_file.content).unwrap()).unwrap())[0],
        root
    );

    // Same UUID = restart: same per-instance secret. New UUID: new per-instance, same shared.
    let r2 = activate(&mut c, &sim, "web", id, MR_APP).await.unwrap();
    assert_eq!(r2.parameters.env["INST"], inst);
    let r3 = activate(&mut c, &sim, "web", uuid::Uuid::new_v4(), MR_APP)
        .await
        .unwrap();
    assert_ne!(r3.parameters.env["INST"], inst);
    assert_eq!(r3.parameters.env["DB_KEY"], db_key);

    // Restart the process: same root CA, manifest and secrets.
    drop(c);
    drop(p);
    let p = start(&data, &simdir);
    let (mut c, root2) = attested(&p.addr, &simdir, None).await;
    assert_eq!(root2, root);
    let st: coffer_api::StatusResponse = c.get("/api/v1/status").await.unwrap();
    assert_eq!(
        st.manifest_hash.as_deref(),
        Some(set.manifest_hash.as_str())
    );
    let r4 = activate(&mut c, &sim, "web", id, MR_APP).await.unwrap();
    assert_eq!(r4.parameters.env["INST"], inst);
    assert_eq!(r4.parameters.env["DB_KEY"], db_key);
    // Metrics count by workload and result, and show simulation.
    let (_, m) = c.request(Method::GET, "/metrics", None).await.unwrap();
    let m = String::from_utf8(m.to_vec()).unwrap();
    assert!(m.contains("coffer_coordinator_simulation 1"), "{m}");
    assert!(m.contains(r#"workload="web",result="accepted""#), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_failed_check() {
    let dir = tempfile::tempdir().unwrap();
    let (data, simdir) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &simdir);
    let sim = sim_platform(&simdir);
    let (mut c, _) = attested(&p.addr, &simdir, None).await;
    set_manifest(&mut c, &manifest()).await;

    let (k, m) = refused_kind(activate(&mut c, &sim, "web", uuid::Uuid::new_v4(), MR_OTHER).await);
    assert_eq!(k, ErrorKind::PolicyMismatch);
    assert!(m.contains("MRENCLAVE"), "{m}");

    // Debug enclave, package does not allow debug.
    let l = launch_key();
    let q = quote(&sim, MR_DEBUG, true, l.report_data);
    let (k, m) = refused_kind::<ActivationResponse>(
        c.call(
            Method::POST,
            "/api/v1/activate",
            Some(&request("dbg", uuid::Uuid::new_v4(), &l.csr_pem, &q)),
        )
        .await,
    );
    assert_eq!(k, ErrorKind::PolicyMismatch);
    assert!(m.contains("debug"), "{m}");

    // TCB status (UpToDate) not in the package's accepted list.
    let (k, m) = refused_kind(activate(&mut c, &sim, "tcb", uuid::Uuid::new_v4(), MR_TCB).await);
    assert_eq!(k, ErrorKind::PolicyMismatch);
    assert!(m.contains("TCB status"), "{m}");

    // Report data that does not bind the CSR's key.
    let l = launch_key();
    let q = quote(&sim, MR_APP, false, [7u8; 64]);
    let (k, m) = refused_kind::<ActivationResponse>(
        c.call(
            Method::POST,
            "/api/v1/activate",
            Some(&request("web", uuid::Uuid::new_v4(), &l.csr_pem, &q)),
        )
        .await,
    );
    assert_eq!(k, ErrorKind::PolicyMismatch);
    assert!(m.contains("report data"), "{m}");

    // Replayed evidence: a valid quote for key A sent with a CSR for key B.
    let a = launch_key();
    let b = launch_key();
    let qa = quote(&sim, MR_APP, false, a.report_data);
    let ok: ActivationResponse = c
        .call(
            Method::POST,
            "/api/v1/activate",
            Some(&request("web", uuid::Uuid::new_v4(), &a.csr_pem, &qa)),
        )
        .await
        .unwrap();
    assert!(!ok.certificate_chain_pem.is_empty());
    let (k, m) = refused_kind::<ActivationResponse>(
        c.call(
            Method::POST,
            "/api/v1/activate",
            Some(&request("web", uuid::Uuid::new_v4(), &b.csr_pem, &qa)),
        )
        .await,
    );
    assert_eq!(k, ErrorKind::PolicyMismatch);
    assert!(m.contains("report data"), "{m}");

    // Unknown workload.
    let (k, m) = refused_kind(activate(&mut c, &sim, "nope", uuid::Uuid::new_v4(), MR_APP).await);
    assert_eq!(k, ErrorKind::NotFound);
    assert!(m.contains("nope"), "{m}");

    // Activation limit: two distinct instances, the third refused, a restart still accepted.
    let first = uuid::Uuid::new_v4();
    activate(&mut c, &sim, "limited", first, MR_APP)
        .await
        .unwrap();
    activate(&mut c, &sim, "limited", uuid::Uuid::new_v4(), MR_APP)
        .await
        .unwrap();
    let (k, _) =
        refused_kind(activate(&mut c, &sim, "limited", uuid::Uuid::new_v4(), MR_APP).await);
    assert_eq!(k, ErrorKind::ActivationLimit);
    activate(&mut c, &sim, "limited", first, MR_APP)
        .await
        .expect("restart of a known instance");

    // Tampered quote (a byte of the signed report body flipped).
    let l = launch_key();
    let mut q = quote(&sim, MR_APP, false, l.report_data);
    q[100] ^= 0x01;
    let (k, _) = refused_kind::<ActivationResponse>(
        c.call(
            Method::POST,
            "/api/v1/activate",
            Some(&request("web", uuid::Uuid::new_v4(), &l.csr_pem, &q)),
        )
        .await,
    );
    assert_eq!(k, ErrorKind::BadSignature);

    // Protocol version outside the range; malformed JSON; oversized body.
    let l = launch_key();
    let q = quote(&sim, MR_APP, false, l.report_data);
    let mut req =
        serde_json::to_value(request("web", uuid::Uuid::new_v4(), &l.csr_pem, &q)).unwrap();
    req["protocol_version"] = 99.into();
    let (k, m) = refused_kind::<ActivationResponse>(
        c.call(Method::POST, "/api/v1/activate", Some(&req)).await,
    );
    assert_eq!(k, ErrorKind::UnsupportedProtocolVersion);
    let accepted = format!(
        "{}..={}",
        coffer_api::MIN_PROTOCOL_VERSION,
        coffer_api::PROTOCOL_VERSION
    );
    assert!(m.contains(&accepted), "{m}");
    let (st, body) = c
        .request(
            Method::POST,
            "/api/v1/activate",
            Some(b"{not json".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 400);
    let e: coffer_api::ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(e.error.kind, ErrorKind::BadRequest);
    let (st, body) = c
        .request(
            Method::POST,
            "/api/v1/activate",
            Some(vec![b' '; coffer_api::MAX_REQUEST_BYTES + 1]),
        )
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 413, "{}", String::from_utf8_lossy(&body));

    // Every refusal is counted by kind.
    let (_, m) = c.request(Method::GET, "/metrics", None).await.unwrap();
    let m = String::from_utf8(m.to_vec()).unwrap();
    assert!(
        m.contains(r#"workload="limited",result="activation_limit""#),
        "{m}"
    );
    assert!(
        m.contains(r#"workload="_unknown",result="not_found""#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_secrets_and_updates_are_role_checked() {
    let u = users();
    let dir = tempfile::tempdir().unwrap();
    let (data, simdir) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &simdir);
    let sim = sim_platform(&simdir);
    let (mut anon, root) = attested(&p.addr, &simdir, None).await;
    set_manifest(&mut anon, &manifest()).await;
    let mut admin = Client::new(&p.addr, &Trust::RootCa(root.clone()), Some(&u.admin)).unwrap();
    let mut reader = Client::new(&p.addr, &Trust::RootCa(root.clone()), Some(&u.reader)).unwrap();
    let mut stranger =
        Client::new(&p.addr, &Trust::RootCa(root.clone()), Some(&u.stranger)).unwrap();

    // The workload needing the user value cannot start before it is set.
    let (k, m) =
        refused_kind(activate(&mut anon, &sim, "withpw", uuid::Uuid::new_v4(), MR_APP).await);
    assert_eq!(k, ErrorKind::Conflict);
    // It names the secret and who can set it (admin holds `pw-rw`; reader may only read).
    assert!(
        m.contains("user-defined secret `password` has not been set yet")
            && m.contains("set by admin with `coffer secret set password`")
            && !m.contains("reader"),
        "{m}"
    );

    let set = coffer_api::SetSecretsRequest {
        secrets: [("password".to_string(), b64().encode("hunter2"))].into(),
    };
    assert_eq!(
        put_secret(&mut anon, &set).await,
        Err(ErrorKind::Unauthenticated)
    );
    assert_eq!(
        put_secret(&mut stranger, &set).await,
        Err(ErrorKind::Unauthenticated)
    );
    assert_eq!(
        put_secret(&mut reader, &set).await,
        Err(ErrorKind::Forbidden)
    );
    assert_eq!(put_secret(&mut admin, &set).await, Ok(()));
    let got: coffer_api::SecretsResponse =
        reader.get("/api/v1/secrets?names=password").await.unwrap();
    assert_eq!(
        got.secrets["password"].value.as_deref(),
        Some(b64().encode("hunter2").as_str())
    );
    let r = reader
        .get::<coffer_api::SecretsResponse>("/api/v1/secrets?names=db_key")
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Remote {
                kind: ErrorKind::Forbidden,
                ..
            })
        ),
        "{r:?}"
    );
    let r = activate(&mut anon, &sim, "withpw", uuid::Uuid::new_v4(), MR_APP)
        .await
        .unwrap();
    assert_eq!(r.parameters.env["PASSWORD"], "hunter2");

    // Manifest update: refused without the role, applied with it; the intermediate rotates,
    // the root stays.
    let q1: coffer_api::QuoteResponse = anon.get("/api/v1/quote").await.unwrap();
    let mut m2 = manifest();
    m2["workloads"]["extra"] = serde_json::json!({"package": "app"});
    let r: Result<coffer_api::ManifestResponse, _> = reader
        .call(Method::POST, "/api/v1/manifest/update", Some(&m2))
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Remote {
                kind: ErrorKind::Forbidden,
                ..
            })
        ),
        "{r:?}"
    );
    let r: Result<coffer_api::ManifestResponse, _> = anon
        .call(Method::POST, "/api/v1/manifest/update", Some(&m2))
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Remote {
                kind: ErrorKind::Unauthenticated,
                ..
            })
        ),
        "{r:?}"
    );
    let r: coffer_api::ManifestResponse = admin
        .call(Method::POST, "/api/v1/manifest/update", Some(&m2))
        .await
        .unwrap();
    assert!(
        r.changes.iter().any(|c| c.contains("extra")),
        "{:?}",
        r.changes
    );
    let q2: coffer_api::QuoteResponse = anon.get("/api/v1/quote").await.unwrap();
    assert_eq!(q1.root_ca_pem, q2.root_ca_pem);
    assert_ne!(q1.intermediate_ca_pem, q2.intermediate_ca_pem);
    activate(&mut anon, &sim, "extra", uuid::Uuid::new_v4(), MR_APP)
        .await
        .unwrap();

    // The audit log: admin may read it, reader may not; it holds refusals with reasons.
    let a: coffer_api::AuditResponse = admin.get("/api/v1/audit?limit=1000").await.unwrap();
    assert!(a.records.iter().any(|r| r.event == "manifest-update"
        && r.outcome == "refused"
        && r.user.as_deref() == Some("reader")));
    assert!(a.records.iter().any(|r| r.event == "manifest-update"
        && r.outcome == "accepted"
        && r.user.as_deref() == Some("admin")));
    assert!(a
        .records
        .iter()
        .any(|r| r.event == "activation" && r.outcome == "refused"));
    assert!(!serde_json::to_string(&a)
        .unwrap()
        .contains(&b64().encode("hunter2")));
    let r = reader
        .get::<coffer_api::AuditResponse>("/api/v1/audit")
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Remote {
                kind: ErrorKind::Forbidden,
                ..
            })
        ),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_write() {
    let u = users();
    let dir = tempfile::tempdir().unwrap();
    let (data, simdir) = (dir.path().join("data"), dir.path().join("sim"));
    let sim = std::sync::Arc::new(sim_platform(&simdir));
    let p = start(&data, &simdir);
    let (mut c, root) = attested(&p.addr, &simdir, None).await;
    set_manifest(&mut c, &manifest()).await;
    drop(c);
    let mut p = Some(p);
    // (instance, INST value) of every acknowledged activation; last acknowledged password.
    let mut acked: Vec<(uuid::Uuid, String)> = Vec::new();
    let mut last_password: Option<String> = None;
    for round in 0..4u32 {
        let proc_ = p.take().unwrap();
        let addr = proc_.addr.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for t in 0..4u32 {
            let (addr, root, sim, stop) = (addr.clone(), root.clone(), sim.clone(), stop.clone());
            let admin = u.admin.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = Client::new(&addr, &Trust::RootCa(root), Some(&admin)).unwrap();
                let mut acks = Vec::new();
                let mut pw = None;
                let mut i = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    if t == 0 {
                        let v = format!("pw-{round}-{i}");
                        let set = coffer_api::SetSecretsRequest {
                            secrets: [("password".to_string(), b64().encode(&v))].into(),
                        };
                        match put_secret_raw(&mut c, &set).await {
                            Some(true) => pw = Some(v),
                            Some(false) => panic!("secret set refused"),
                            None => break,
                        }
                    } else {
                        let id = uuid::Uuid::new_v4();
                        match activate(&mut c, &sim, "web", id, MR_APP).await {
                            Ok(r) => acks.push((id, r.parameters.env["INST"].clone())),
                            Err(Error::Remote { kind, message, .. }) => {
                                panic!("refused: {kind:?} {message}")
                            }
                            Err(_) => break, // the process died mid-request: not acknowledged
                        }
                    }
                }
                (acks, pw)
            }));
        }
        // Let the stream run until enough writes were acknowledged, then SIGKILL. The kill
        // lands at an arbitrary point of the stream; nothing below depends on timing.
        tokio::time::sleep(std::time::Duration::from_millis(
            300 + 150 * u64::from(round),
        ))
        .await;
        proc_.sigkill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            let (acks, pw) = t.await.unwrap();
            acked.extend(acks);
            if pw.is_some() {
                last_password = pw;
            }
        }
        let restarted = start(&data, &simdir);
        p = Some(restarted);
    }
    let proc_ = p.take().unwrap();
    assert!(
        acked.len() > 10,
        "the stream acknowledged only {} activations",
        acked.len()
    );
    let mut c = Client::new(&proc_.addr, &Trust::RootCa(root.clone()), Some(&u.admin)).unwrap();
    let st: coffer_api::StatusResponse = c.get("/api/v1/status").await.unwrap();
    assert_eq!(st.state, coffer_api::CoordinatorState::Ready);
    for (id, inst) in &acked {
        let r = activate(&mut c, &sim, "web", *id, MR_APP).await.unwrap();
        assert_eq!(
            &r.parameters.env["INST"], inst,
            "instance {id} lost its per-instance secret"
        );
    }
    // Every acknowledged activation is in the audit log.
    let mut seen = std::collections::HashSet::new();
    let mut after = 0;
    loop {
        let a: coffer_api::AuditResponse = c
            .get(&format!("/api/v1/audit?after={after}&limit=1000"))
            .await
            .unwrap();
        let Some(last) = a.records.last() else { break };
        after = last.seq;
        for r in &a.records {
            if r.event == "activation" && r.outcome == "accepted" {
                if let Some(i) = &r.instance {
                    seen.insert(i.clone());
                }
            }
        }
    }
    for (id, _) in &acked {
        assert!(
            seen.contains(&id.to_string()),
            "acknowledged activation {id} missing from the audit log"
        );
    }
    if let Some(pw) = last_password {
        let got: coffer_api::SecretsResponse =
            c.get("/api/v1/secrets?names=password").await.unwrap();
        let v = String::from_utf8(
            b64()
                .decode(got.secrets["password"].value.as_ref().unwrap())
                .unwrap(),
        )
        .unwrap();
        // The last acknowledged value, or one set after it whose answer the kill cut off.
        let (acked_round, acked_i) = parse_pw(&pw);
        let (r, i) = parse_pw(&v);
        assert!(
            (r, i) >= (acked_round, acked_i),
            "password went back from {pw} to {v}"
        );
    }
}

fn parse_pw(s: &str) -> (u32, u32) {
    let mut it = s
        .trim_start_matches("pw-")
        .split('-')
        .map(|x| x.parse::<u32>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

async fn put_secret_raw(c: &mut Client, set: &coffer_api::SetSecretsRequest) -> Option<bool> {
    match c
        .request(
            Method::PUT,
            "/api/v1/secrets",
            Some(serde_json::to_vec(set).unwrap()),
        )
        .await
    {
        Ok((st, _)) => Some(st.is_success()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_with_the_recovery_key_after_the_sealing_key_is_lost() {
    let u = users();
    let dir = tempfile::tempdir().unwrap();
    let (data, simdir) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &simdir);
    let sim = sim_platform(&simdir);
    let (mut c, root) = attested(&p.addr, &simdir, None).await;
    set_manifest(&mut c, &manifest()).await;
    let id = uuid::Uuid::new_v4();
    let inst = activate(&mut c, &sim, "web", id, MR_APP)
        .await
        .unwrap()
        .parameters
        .env["INST"]
        .clone();
    drop(c);
    drop(p);
    std::fs::remove_file(data.join("sealing.key")).unwrap();

    let p = start(&data, &simdir);
    let (mut c, _) = attested(&p.addr, &simdir, None).await;
    let st: coffer_api::StatusResponse = c.get("/api/v1/status").await.unwrap();
    assert_eq!(st.state, coffer_api::CoordinatorState::Recovery);
    let (k, _) = refused_kind(activate(&mut c, &sim, "web", id, MR_APP).await);
    assert_eq!(k, ErrorKind::RecoveryMode);

    // A wrong key is refused by the CLI (not a recovery key of this Coordinator).
    let keyfile = dir.path().join("recovery.pem");
    std::fs::write(&keyfile, &u.recovery_priv_pem).unwrap();
    let sim_s = simdir.to_str().unwrap();
    let (ok, v, all) = cli(&[
        "recover",
        "--key",
        keyfile.to_str().unwrap(),
        "--coordinator",
        &p.addr,
        "--allow-simulation",
        "--sim-dir",
        sim_s,
    ]);
    assert!(ok, "{all}");
    assert_eq!(v["state"], "ready", "{all}");

    let mut c = Client::new(&p.addr, &Trust::RootCa(root.clone()), None).unwrap();
    let r = activate(&mut c, &sim, "web", id, MR_APP).await.unwrap();
    assert_eq!(r.parameters.env["INST"], inst);
    // Re-sealed to the new key file: a restart comes up ready.
    drop(c);
    drop(p);
    assert!(data.join("sealing.key").exists());
    let p = start(&data, &simdir);
    let (mut c, root2) = attested(&p.addr, &simdir, None).await;
    assert_eq!(root2, root);
    let st: coffer_api::StatusResponse = c.get("/api/v1/status").await.unwrap();
    assert_eq!(st.state, coffer_api::CoordinatorState::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_with_two_of_three_shamir_shares() {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let u = users();
    // Two more RSA-2048 keys (the shared test key is the third).
    let extra: Vec<rsa::RsaPrivateKey> = (0..2)
        .map(|_| rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap())
        .collect();
    let pub_pem =
        |k: &rsa::RsaPrivateKey| k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
    let mut m = manifest();
    m["recovery_keys"] = serde_json::json!({
        "owner": u.recovery_pub_pem,
        "second": pub_pem(&extra[0]),
        "third": pub_pem(&extra[1]),
    });
    m["recovery_threshold"] = serde_json::json!(2);

    let dir = tempfile::tempdir().unwrap();
    let (data, simdir) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &simdir);
    let sim = sim_platform(&simdir);
    let (mut c, root) = attested(&p.addr, &simdir, None).await;
    set_manifest(&mut c, &m).await;
    let id = uuid::Uuid::new_v4();
    let inst = activate(&mut c, &sim, "web", id, MR_APP)
        .await
        .unwrap()
        .parameters
        .env["INST"]
        .clone();
    drop(c);
    drop(p);
    std::fs::remove_file(data.join("sealing.key")).unwrap();

    let p = start(&data, &simdir);
    let (mut c, _) = attested(&p.addr, &simdir, None).await;
    let st: coffer_api::RecoveryStatus = c.get("/api/v1/recover").await.unwrap();
    assert_eq!((st.threshold, st.entries.len()), (2, 3));
    drop(c);

    let second = dir.path().join("second.pem");
    let third = dir.path().join("third.pem");
    for (path, k) in [(&second, &extra[0]), (&third, &extra[1])] {
        std::fs::write(path, k.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    }
    // One share: accepted, still in recovery (1 of 2).
    let (ok, v, all) = cli_recover(&third, &p.addr, &simdir);
    assert!(ok, "{all}");
    assert_eq!(v["state"], "recovery", "{all}");
    assert_eq!(
        (v["accepted"].as_u64(), v["threshold"].as_u64()),
        (Some(1), Some(2)),
        "{all}"
    );
    // The same key again does not count twice.
    let (ok, v, all) = cli_recover(&third, &p.addr, &simdir);
    assert!(ok, "{all}");
    assert_eq!(
        (v["state"].as_str(), v["accepted"].as_u64()),
        (Some("recovery"), Some(1)),
        "{all}"
    );
    let (mut c, _) = attested(&p.addr, &simdir, None).await;
    let (k, _) = refused_kind(activate(&mut c, &sim, "web", id, MR_APP).await);
    assert_eq!(k, ErrorKind::RecoveryMode);
    drop(c);
    // A second, different key: k = 2 shares interpolate the state key.
    let (ok, v, all) = cli_recover(&second, &p.addr, &simdir);
    assert!(ok, "{all}");
    assert_eq!(v["state"], "ready", "{all}");

    let mut c = Client::new(&p.addr, &Trust::RootCa(root.clone()), None).unwrap();
    let r = activate(&mut c, &sim, "web", id, MR_APP).await.unwrap();
    assert_eq!(r.parameters.env["INST"], inst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_verify_pins_manifest_and_refuses_simulation_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (data, simdir) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &simdir);
    let (mut c, root) = attested(&p.addr, &simdir, None).await;
    let m = manifest();
    set_manifest(&mut c, &m).await;
    let mfile = dir.path().join("manifest.json");
    std::fs::write(&mfile, serde_json::to_vec(&m).unwrap()).unwrap();
    let rootout = dir.path().join("root.pem");
    let sim_s = simdir.to_str().unwrap();

    let (ok, v, all) = cli(&[
        "verify",
        "--coordinator",
        &p.addr,
        "--allow-simulation",
        "--sim-dir",
        sim_s,
        "--manifest",
        mfile.to_str().unwrap(),
        "--root-ca-out",
        rootout.to_str().unwrap(),
    ]);
    assert!(ok, "{all}");
    assert_eq!(v["verified"], true);
    assert_eq!(v["simulation"], true);
    let written = std::fs::read_to_string(&rootout).unwrap();
    assert_eq!(
        coffer_coordinator::pki::pem_decode(&written, "CERTIFICATE").unwrap(),
        root
    );

    // Without --allow-simulation: refused, naming simulation.
    let (ok, v, all) = cli(&[
        "verify",
        "--coordinator",
        &p.addr,
        "--collateral-dir",
        sim_s,
    ]);
    assert!(!ok, "{all}");
    assert_eq!(v["error"]["kind"], "untrusted_root", "{all}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SIMULATED"),
        "{all}"
    );

    // Another manifest hash: refused.
    let (ok, v, all) = cli(&[
        "verify",
        "--coordinator",
        &p.addr,
        "--allow-simulation",
        "--sim-dir",
        sim_s,
        "--manifest-hash",
        &"00".repeat(32),
    ]);
    assert!(!ok, "{all}");
    assert_eq!(v["error"]["kind"], "manifest_mismatch", "{all}");

    // Expected MRENCLAVE that is not the Coordinator's: refused.
    let (ok, v, all) = cli(&[
        "verify",
        "--coordinator",
        &p.addr,
        "--allow-simulation",
        "--sim-dir",
        sim_s,
        "--expected-mrenclave",
        &"11".repeat(32),
    ]);
    assert!(!ok, "{all}");
    assert_eq!(v["error"]["kind"], "policy_mismatch", "{all}");

    // status with the pinned root.
    let (ok, v, all) = cli(&[
        "status",
        "--coordinator",
        &p.addr,
        "--root-ca",
        rootout.to_str().unwrap(),
    ]);
    assert!(ok, "{all}");
    assert_eq!(v["state"], "ready");
    assert_eq!(v["simulation"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manifest_and_secret_commands() {
    let u = users();
    let dir = tempfile::tempdir().unwrap();
    let (data, simdir) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &simdir);
    let sim_s = simdir.to_str().unwrap().to_string();
    let file = |name: &str, content: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_string()
    };
    let m1 = file("m1.json", &serde_json::to_vec(&manifest()).unwrap());
    let (ok, v, all) = cli(&[
        "manifest",
        "set",
        &m1,
        "--coordinator",
        &p.addr,
        "--allow-simulation",
        "--sim-dir",
        &sim_s,
    ]);
    assert!(ok, "{all}");
    let hash = v["manifest_hash"].as_str().unwrap().to_string();
    let root = dir.path().join("root.pem");
    let root_s = root.to_str().unwrap().to_string();
    let (ok, _, all) = cli(&[
        "verify",
        "--coordinator",
        &p.addr,
        "--allow-simulation",
        "--sim-dir",
        &sim_s,
        "--manifest-hash",
        &hash,
        "--root-ca-out",
        &root_s,
    ]);
    assert!(ok, "{all}");
    let (ok, v, all) = cli(&[
        "manifest",
        "get",
        "--coordinator",
        &p.addr,
        "--root-ca",
        &root_s,
    ]);
    assert!(ok, "{all}");
    assert!(v["workloads"]["web"].is_object(), "{all}");
    // The indented form hashes (canonically) to the same manifest hash.
    let in_force = file("in-force.json", all.as_bytes());
    let (ok, h, all) = cli(&["manifest", "hash", &in_force]);
    assert!(ok, "{all}");
    assert_eq!(h["sha256"], hash.as_str(), "{all}");
    // --canonical prints the bytes the manifest hash is over (and a newline).
    use sha2::Digest as _;
    let out = std::process::Command::new(COFFER)
        .args(["manifest", "get", "--canonical", "--coordinator", &p.addr])
        .args(["--root-ca", &root_s])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let canonical = out.stdout.strip_suffix(b"\n").unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(canonical)), hash);

    let admin_cert = file("admin.pem", u.admin_pem.as_bytes());
    let admin_key = file(
        "admin-key.pem",
        coffer_coordinator::pki::pem_encode("PRIVATE KEY", &u.admin.key_pkcs8).as_bytes(),
    );
    let reader_cert = file("reader.pem", u.reader_pem.as_bytes());
    let reader_key = file(
        "reader-key.pem",
        coffer_coordinator::pki::pem_encode("PRIVATE KEY", &u.reader.key_pkcs8).as_bytes(),
    );
    let conn = [
        "--coordinator",
        p.addr.as_str(),
        "--root-ca",
        root_s.as_str(),
    ];
    let mut args = vec![
        "secret",
        "set",
        "password",
        "--value",
        "hunter2",
        "--cert",
        &admin_cert,
        "--key",
        &admin_key,
    ];
    args.extend(conn);
    let (ok, _, all) = cli(&args);
    assert!(ok, "{all}");
    let mut args = vec![
        "secret",
        "set",
        "password",
        "--value",
        "x",
        "--cert",
        &reader_cert,
        "--key",
        &reader_key,
    ];
    args.extend(conn);
    let (ok, v, all) = cli(&args);
    assert!(!ok, "{all}");
    assert_eq!(v["error"]["kind"], "forbidden", "{all}");
    let mut args = vec![
        "secret",
        "get",
        "password",
        "--cert",
        &reader_cert,
        "--key",
        &reader_key,
    ];
    args.extend(conn);
    let (ok, v, all) = cli(&args);
    assert!(ok, "{all}");
    assert_eq!(
        v["secrets"]["password"]["value"],
        b64().encode("hunter2"),
        "{all}"
    );

    let mut m2 = manifest();
    m2["workloads"]["extra"] = serde_json::json!({"package": "app"});
    let m2 = file("m2.json", &serde_json::to_vec(&m2).unwrap());
    let mut args = vec![
        "manifest",
        "update",
        &m2,
        "--cert",
        &reader_cert,
        "--key",
        &reader_key,
    ];
    args.extend(conn);
    let (ok, v, all) = cli(&args);
    assert!(!ok, "{all}");
    assert_eq!(v["error"]["kind"], "forbidden", "{all}");
    let mut args = vec![
        "manifest",
        "update",
        &m2,
        "--cert",
        &admin_cert,
        "--key",
        &admin_key,
    ];
    args.extend(conn);
    let (ok, v, all) = cli(&args);
    assert!(ok, "{all}");
    assert_ne!(v["manifest_hash"].as_str().unwrap(), hash);
    assert!(v["changes"].to_string().contains("extra"), "{all}");
}

/// Without `--simulation` (here: a stand-in Gramine attestation directory and offline collateral
/// from the simulated platform), simulated evidence does not chain to the pinned Intel root and
/// is refused, naming the root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_evidence_is_refused_without_simulation() {
    let dir = tempfile::tempdir().unwrap();
    let simdir = dir.path().join("sim");
    let sim = sim_platform(&simdir);
    // The stand-in for Gramine's /dev/attestation: a quote file, a report-data file, a sealing key.
    let att = dir.path().join("attestation");
    std::fs::create_dir_all(att.join("keys")).unwrap();
    std::fs::write(att.join("keys/_sgx_mrenclave"), [5u8; 16]).unwrap();
    std::fs::write(att.join("user_report_data"), [0u8; 64]).unwrap();
    std::fs::write(att.join("quote"), quote(&sim, [1; 32], false, [0; 64])).unwrap();
    let coll = dir.path().join("collateral");
    std::fs::create_dir_all(&coll).unwrap();
    std::fs::write(
        coll.join("collateral.json"),
        serde_json::to_vec(&sim.collateral(now())).unwrap(),
    )
    .unwrap();
    let mut child = Command::new(COFFER)
        .args([
            "--json",
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--attestation-root",
        ])
        .arg(&att)
        .arg("--collateral-dir")
        .arg(&coll)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert_eq!(v["simulation"], false);
    let p = Proc {
        child,
        addr: v["listening"].as_str().unwrap().to_string(),
    };
    let st: coffer_api::StatusResponse = {
        // This stand-in's quote cannot be attested (it is simulated); trust the TLS layer blindly
        // only to drive the test, never in a client.
        let rec = std::sync::Arc::new(coffer_coordinator::tls::RecordingVerifier::default());
        let mut c = Client::new(&p.addr, &Trust::Attest(rec), None).unwrap();
        set_manifest(&mut c, &manifest()).await;
        let (k, m) =
            refused_kind(activate(&mut c, &sim, "web", uuid::Uuid::new_v4(), MR_APP).await);
        assert_eq!(k, ErrorKind::UntrustedRoot, "{m}");
        // The same collateral in the --pccs-cache layout (one file per item) is found too …
        std::fs::remove_file(coll.join("collateral.json")).unwrap();
        let q = coffer_evidence::Quote::parse(&quote(&sim, MR_APP, false, [0; 64])).unwrap();
        let req = coffer_pccs::CollateralRequest::for_quote(&q).unwrap();
        let raw = serde_json::to_vec(&sim.collateral(now())).unwrap();
        let raw = coffer_pccs::RawCollateral::from_json(&raw).unwrap();
        coffer_pccs::import_collateral(&coll, &req, &raw, now()).unwrap();
        let (k, m) =
            refused_kind(activate(&mut c, &sim, "web", uuid::Uuid::new_v4(), MR_APP).await);
        assert_eq!(k, ErrorKind::UntrustedRoot, "{m}");
        // … and a directory without it says what it looked for.
        for f in std::fs::read_dir(&coll).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        let (k, m) =
            refused_kind(activate(&mut c, &sim, "web", uuid::Uuid::new_v4(), MR_APP).await);
        assert_eq!(k, ErrorKind::CollateralUnavailable, "{m}");
        assert!(m.contains("collateral.json"), "{m}");
        c.get("/api/v1/status").await.unwrap()
    };
    assert!(!st.simulation);
}
