//! The host is the adversary: real `coffer coordinator` processes whose store is edited
//! underneath them the way whoever runs the machine can (the redb file with redb itself, etcd
//! keys with an etcd client), while stopped and while running. Every edit must be found with
//! the finding that names it, and no secret may be served afterwards; a whole-store rollback,
//! which the Coordinator cannot see, must be refused by `coffer verify`, which remembers.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use redb::{Database, ReadableTable, TableDefinition};

const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const AUDIT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("audit");

/// A deployment in a temp dir: the manifest set and updated once, the password set, one
/// instance activated. The Coordinator is stopped (SIGKILL) when this returns.
struct Deployed {
    dir: tempfile::TempDir,
    data: PathBuf,
    sim: PathBuf,
    /// The sealed first manifest (what an "older value" attack puts back).
    first_manifest: Vec<u8>,
}

impl Deployed {
    fn store(&self) -> PathBuf {
        self.data.join("state.redb")
    }
}

fn updated_manifest() -> serde_json::Value {
    let mut m = manifest();
    m["workloads"]["extra"] = serde_json::json!({"package": "app"});
    m
}

async fn deploy() -> Deployed {
    let dir = tempfile::tempdir().unwrap();
    let (data, sim) = (dir.path().join("data"), dir.path().join("sim"));
    let p = start(&data, &sim);
    let (mut c, root) = attested(&p.addr, &sim, None).await;
    set_manifest(&mut c, &manifest()).await;
    p.sigkill();
    let first_manifest = read(&data.join("state.redb"), |tx| {
        tx.open_table(KV)
            .unwrap()
            .get("manifest")
            .unwrap()
            .unwrap()
            .value()
            .to_vec()
    });
    let p = start(&data, &sim);
    let u = users();
    let mut admin = Client::new(&p.addr, &Trust::RootCa(root), Some(&u.admin)).unwrap();
    put_secret(&mut admin, &password("first")).await.unwrap();
    let r: coffer_api::ManifestResponse = admin
        .call(
            Method::POST,
            "/api/v1/manifest/update",
            Some(&updated_manifest()),
        )
        .await
        .unwrap();
    assert!(!r.changes.is_empty());
    activate(
        &mut admin,
        &sim_platform(&sim),
        "web",
        uuid::Uuid::new_v4(),
        MR_APP,
    )
    .await
    .unwrap();
    p.sigkill();
    Deployed {
        dir,
        data,
        sim,
        first_manifest,
    }
}

fn password(v: &str) -> coffer_api::SetSecretsRequest {
    coffer_api::SetSecretsRequest {
        secrets: [("password".to_string(), b64().encode(v))].into(),
    }
}

fn read<T>(path: &Path, f: impl FnOnce(&redb::ReadTransaction) -> T) -> T {
    let db = Database::open(path).unwrap();
    let tx = db.begin_read().unwrap();
    f(&tx)
}

/// Edits the store file with redb, as the host can when the Coordinator is stopped.
fn edit(path: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = Database::open(path).unwrap();
    let tx = db.begin_write().unwrap();
    f(&tx);
    tx.commit().unwrap();
}

/// What a tampered Coordinator answers: status `tampered` naming `expect`; no secret, no
/// first manifest, no activation; the metric counts it.
async fn assert_tampered(addr: &str, sim: &Path, expect: &str) {
    let (mut c, self_cert) = attested(addr, sim, None).await;
    let st: coffer_api::StatusResponse = c.get("/api/v1/status").await.unwrap();
    assert_eq!(st.state, coffer_api::CoordinatorState::Tampered, "{st:?}");
    let findings = st.tamper.as_ref().unwrap().findings.join("; ");
    assert!(
        findings.contains(expect),
        "expected {expect:?} in: {findings}"
    );
    assert!(st.manifest_hash.is_none() && st.state_head.is_none());
    let u = users();
    let mut admin = Client::new(addr, &Trust::RootCa(self_cert), Some(&u.admin)).unwrap();
    let r: Result<coffer_api::SecretsResponse, _> =
        admin.get("/api/v1/secrets?names=password").await;
    assert!(
        matches!(
            &r,
            Err(Error::Remote {
                kind: ErrorKind::Tampered,
                status: 503,
                ..
            })
        ),
        "a secret from a tampered state: {r:?}"
    );
    // Never back to "awaiting manifest": a stranger's first manifest is refused.
    let r: Result<coffer_api::ManifestResponse, _> = c
        .call(Method::POST, "/api/v1/manifest", Some(&manifest()))
        .await;
    assert!(
        matches!(
            &r,
            Err(Error::Remote {
                kind: ErrorKind::Tampered,
                ..
            })
        ),
        "{r:?}"
    );
    let r = activate(
        &mut c,
        &sim_platform(sim),
        "web",
        uuid::Uuid::new_v4(),
        MR_APP,
    )
    .await;
    assert!(
        matches!(
            &r,
            Err(Error::Remote {
                kind: ErrorKind::Tampered,
                ..
            })
        ),
        "{r:?}"
    );
    let (_, m) = c.request(Method::GET, "/metrics", None).await.unwrap();
    let m = String::from_utf8(m.to_vec()).unwrap();
    assert!(m.contains("coffer_coordinator_tampered 1"), "{m}");
    assert!(
        m.contains("coffer_coordinator_tamper_detected_total 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_edits_under_a_stopped_coordinator_are_found() {
    type Edit = Box<dyn Fn(&Deployed)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "delete the manifest",
            Box::new(|d| {
                edit(&d.store(), |tx| {
                    tx.open_table(KV).unwrap().remove("manifest").unwrap();
                })
            }),
            "the manifest is missing although manifest version 2 was set",
        ),
        (
            "put back the first manifest",
            Box::new(|d| {
                let old = d.first_manifest.clone();
                edit(&d.store(), |tx| {
                    tx.open_table(KV)
                        .unwrap()
                        .insert("manifest", old.as_slice())
                        .unwrap();
                })
            }),
            "the one the manifest history ends with (an older manifest put back?)",
        ),
        (
            "swap the password and the shared key",
            Box::new(|d| {
                edit(&d.store(), |tx| {
                    let mut kv = tx.open_table(KV).unwrap();
                    let a = kv.get("user/password").unwrap().unwrap().value().to_vec();
                    let b = kv
                        .get("secret/shared/db_key")
                        .unwrap()
                        .unwrap()
                        .value()
                        .to_vec();
                    kv.insert("user/password", b.as_slice()).unwrap();
                    kv.insert("secret/shared/db_key", a.as_slice()).unwrap();
                })
            }),
            "value `secret/shared/db_key` fails authentication",
        ),
        (
            "delete an instance record (resets the activation limit)",
            Box::new(|d| {
                edit(&d.store(), |tx| {
                    let mut kv = tx.open_table(KV).unwrap();
                    let name = kv
                        .iter()
                        .unwrap()
                        .map(|e| e.unwrap().0.value().to_string())
                        .find(|k| k.starts_with("instance/web/"))
                        .unwrap();
                    kv.remove(name.as_str()).unwrap();
                })
            }),
            "instance record `instance/web/",
        ),
        (
            "drop audit records",
            Box::new(|d| {
                edit(&d.store(), |tx| {
                    tx.open_table(AUDIT).unwrap().remove(2).unwrap();
                })
            }),
            "audit record 2 is missing",
        ),
        (
            "delete the state head",
            Box::new(|d| {
                edit(&d.store(), |tx| {
                    tx.open_table(META).unwrap().remove("head").unwrap();
                })
            }),
            "the state head is missing",
        ),
    ];
    for (what, edit_store, expect) in cases {
        let d = deploy().await;
        edit_store(&d);
        let p = start(&d.data, &d.sim);
        eprintln!("case: {what}");
        assert_tampered(&p.addr, &d.sim, expect).await;
        // The finding is in the audit chain, and it survives a restart.
        drop(p);
        let p = start(&d.data, &d.sim);
        let (mut c, _) = attested(&p.addr, &d.sim, None).await;
        let st: coffer_api::StatusResponse = c.get("/api/v1/status").await.unwrap();
        assert_eq!(st.state, coffer_api::CoordinatorState::Tampered, "{what}");
        drop(d.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_edit_under_a_running_coordinator_is_never_served_and_found_at_restart() {
    let d = deploy().await;
    let p = start(&d.data, &d.sim);
    let (_, root) = attested(&p.addr, &d.sim, None).await;
    // The host rewrites the file in place (bypassing redb's lock): the password is deleted.
    let copy = d.dir.path().join("edited.redb");
    std::fs::copy(d.store(), &copy).unwrap();
    edit(&copy, |tx| {
        tx.open_table(KV).unwrap().remove("user/password").unwrap();
    });
    std::fs::write(d.store(), std::fs::read(&copy).unwrap()).unwrap();
    // The running Coordinator serves what it verified, never the edit …
    let u = users();
    let mut admin = Client::new(&p.addr, &Trust::RootCa(root), Some(&u.admin)).unwrap();
    let r: coffer_api::SecretsResponse = admin.get("/api/v1/secrets?names=password").await.unwrap();
    assert_eq!(
        b64()
            .decode(r.secrets["password"].value.as_ref().unwrap())
            .unwrap(),
        b"first"
    );
    // … and its commit of that read's audit record lands in a file that is no longer its own.
    // Restarted on it, it refuses to start and names the store: nothing is served from it.
    p.sigkill();
    let (ok, v, out) = cli(&[
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--simulation",
        "--sim-dir",
        d.sim.to_str().unwrap(),
        "--data-dir",
        d.data.to_str().unwrap(),
    ]);
    assert!(!ok, "{out}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("state.redb") && msg.contains("changed outside the Coordinator"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_file_replaced_under_a_running_coordinator_is_found_at_restart() {
    // The host swaps in an edited copy by rename (a new inode): the running Coordinator keeps
    // its own file open and never reads the copy; restarted, it finds the edit.
    let d = deploy().await;
    let p = start(&d.data, &d.sim);
    let copy = d.dir.path().join("edited.redb");
    std::fs::copy(d.store(), &copy).unwrap();
    edit(&copy, |tx| {
        tx.open_table(KV).unwrap().remove("user/password").unwrap();
    });
    std::fs::rename(&copy, d.store()).unwrap();
    let (_, root) = attested(&p.addr, &d.sim, None).await;
    let u = users();
    let mut admin = Client::new(&p.addr, &Trust::RootCa(root), Some(&u.admin)).unwrap();
    let r: coffer_api::SecretsResponse = admin.get("/api/v1/secrets?names=password").await.unwrap();
    assert!(r.secrets.contains_key("password"));
    p.sigkill();
    let p = start(&d.data, &d.sim);
    assert_tampered(&p.addr, &d.sim, "1 value(s) were deleted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recovery_key_holder_reauthenticates_a_tampered_state() {
    let d = deploy().await;
    edit(&d.store(), |tx| {
        tx.open_table(AUDIT).unwrap().remove(3).unwrap();
    });
    let p = start(&d.data, &d.sim);
    let key = d.dir.path().join("recovery.pem");
    std::fs::write(&key, &users().recovery_priv_pem).unwrap();
    let recover = |extra: &[&str]| {
        let mut args = vec![
            "recover",
            "--key",
            key.to_str().unwrap(),
            "--coordinator",
            &p.addr,
            "--allow-simulation",
            "--sim-dir",
            d.sim.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };
    // Without --reauthenticate the holder is shown the findings and nothing happens.
    let (ok, v, out) = recover(&[]);
    assert!(!ok, "{out}");
    assert_eq!(v["error"]["kind"], "tampered", "{out}");
    assert!(out.contains("audit record 3 is missing"), "{out}");
    let (ok, v, out) = recover(&["--reauthenticate"]);
    assert!(ok, "{out}");
    assert_eq!(v["state"], "ready", "{out}");
    // Served again, with the same root, manifest and secret; the audit chain checks out and
    // names the accepted break.
    let (_, root) = attested(&p.addr, &d.sim, None).await;
    let u = users();
    let mut admin = Client::new(&p.addr, &Trust::RootCa(root.clone()), Some(&u.admin)).unwrap();
    let r: coffer_api::SecretsResponse = admin.get("/api/v1/secrets?names=password").await.unwrap();
    assert!(r.secrets.contains_key("password"));
    let root_pem = d.dir.path().join("root.pem");
    std::fs::write(
        &root_pem,
        coffer_coordinator::pki::pem_encode("CERTIFICATE", &root),
    )
    .unwrap();
    let cert = d.dir.path().join("admin.pem");
    let key_pem = d.dir.path().join("admin-key.pem");
    std::fs::write(&cert, &u.admin_pem).unwrap();
    std::fs::write(
        &key_pem,
        coffer_coordinator::pki::pem_encode("PRIVATE KEY", &u.admin.key_pkcs8),
    )
    .unwrap();
    let (ok, v, out) = cli(&[
        "audit",
        "verify",
        "--coordinator",
        &p.addr,
        "--root-ca",
        root_pem.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key_pem.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert_eq!(v["acknowledged_breaks"], serde_json::json!([4]), "{out}");
    // It stays verified across a restart.
    drop(p);
    let p = start(&d.data, &d.sim);
    let (mut c, _) = attested(&p.addr, &d.sim, None).await;
    let st: coffer_api::StatusResponse = c.get("/api/v1/status").await.unwrap();
    assert_eq!(st.state, coffer_api::CoordinatorState::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coffer_verify_refuses_a_rolled_back_coordinator_and_bundles_check_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sim) = (dir.path().join("data"), dir.path().join("sim"));
    let known = dir.path().join("known.json");
    let verify = |addr: &str, extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--coordinator",
            addr,
            "--allow-simulation",
            "--sim-dir",
            sim.to_str().unwrap(),
            "--known-state",
            known.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let p = start(&data, &sim);
    let (mut c, root) = attested(&p.addr, &sim, None).await;
    set_manifest(&mut c, &manifest()).await;
    let (ok, v, out) = verify(&p.addr, &[]);
    assert!(ok, "{out}");
    assert_eq!(v["state_head"]["manifest_version"], 1);
    // The host snapshots the whole store …
    p.sigkill();
    let snapshot = dir.path().join("snapshot.redb");
    std::fs::copy(data.join("state.redb"), &snapshot).unwrap();
    // … the owner updates the manifest and a client verifies it (and saves a bundle) …
    let p = start(&data, &sim);
    let u = users();
    let mut admin = Client::new(&p.addr, &Trust::RootCa(root.clone()), Some(&u.admin)).unwrap();
    let _: coffer_api::ManifestResponse = admin
        .call(
            Method::POST,
            "/api/v1/manifest/update",
            Some(&updated_manifest()),
        )
        .await
        .unwrap();
    let bundle = dir.path().join("bundle.json");
    let (ok, v, out) = verify(&p.addr, &["--save-bundle", bundle.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert_eq!(v["state_head"]["manifest_version"], 2, "{out}");
    let head_v2 = v["state_head"]["manifest_head"]
        .as_str()
        .unwrap()
        .to_string();
    // … then the host puts the old copy back: consistent, so the Coordinator serves it …
    p.sigkill();
    std::fs::copy(&snapshot, data.join("state.redb")).unwrap();
    let p = start(&data, &sim);
    let (mut c, _) = attested(&p.addr, &sim, None).await;
    let st: coffer_api::StatusResponse = c.get("/api/v1/status").await.unwrap();
    assert_eq!(st.state, coffer_api::CoordinatorState::Ready);
    // … but a client that remembers refuses it and names both heads.
    let (ok, v, out) = verify(&p.addr, &[]);
    assert!(!ok, "a rolled-back Coordinator was accepted: {out}");
    assert_eq!(v["error"]["kind"], "rollback", "{out}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("version 1") && msg.contains(&head_v2), "{msg}");
    // A client that does not remember cannot tell (the documented limit).
    let (ok, _, out) = verify(&p.addr, &["--no-remember"]);
    assert!(ok, "{out}");
    drop(p);

    // The bundle checks offline (no Coordinator running) …
    let (ok, v, out) = cli(&[
        "verify",
        "--bundle",
        bundle.to_str().unwrap(),
        "--allow-simulation",
        "--sim-dir",
        sim.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert_eq!(v["state_head"]["manifest_version"], 2, "{out}");
    assert_eq!(v["history"].as_array().unwrap().len(), 2, "{out}");
    // --root-ca is checked against the root the bundle attests: its own passes, another fails.
    let own_root = dir.path().join("root.pem");
    std::fs::write(
        &own_root,
        coffer_coordinator::pki::pem_encode("CERTIFICATE", &root),
    )
    .unwrap();
    let other_root = dir.path().join("other-root.pem");
    std::fs::write(&other_root, &u.admin_pem).unwrap();
    for (pem, accepted) in [(&own_root, true), (&other_root, false)] {
        let (ok, v, out) = cli(&[
            "verify",
            "--bundle",
            bundle.to_str().unwrap(),
            "--allow-simulation",
            "--sim-dir",
            sim.to_str().unwrap(),
            "--root-ca",
            pem.to_str().unwrap(),
        ]);
        assert_eq!(ok, accepted, "{out}");
        if !accepted {
            assert_eq!(v["error"]["kind"], "untrusted_root", "{out}");
        }
    }
    // … and every edit of it is refused with the reason.
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    type Tamper = fn(&mut serde_json::Value);
    let cases: [(&str, Tamper, &str); 5] = [
        (
            "history entry edited",
            |b| b["history"][0]["author"] = "mallory".into(),
            "does not name the hash of entry",
        ),
        (
            "history truncated",
            |b| {
                b["history"].as_array_mut().unwrap().pop();
            },
            "the quote binds version 2",
        ),
        (
            "manifest swapped",
            |b| b["manifest"] = "{}".into(),
            "hashes to",
        ),
        (
            "nonce changed",
            |b| b["nonce"] = "00".repeat(32).into(),
            "nonce",
        ),
        (
            "quote byte flipped",
            |b| {
                let q = b["quote"]["evidence"]["data"].as_str().unwrap();
                let mut raw = b64().decode(q).unwrap();
                raw[300] ^= 1;
                b["quote"]["evidence"]["data"] = b64().encode(raw).into();
            },
            "",
        ),
    ];
    for (what, tamper, expect) in cases {
        let mut b = original.clone();
        tamper(&mut b);
        let path = dir.path().join("tampered-bundle.json");
        std::fs::write(&path, serde_json::to_vec(&b).unwrap()).unwrap();
        let (ok, v, out) = cli(&[
            "verify",
            "--bundle",
            path.to_str().unwrap(),
            "--allow-simulation",
            "--sim-dir",
            sim.to_str().unwrap(),
        ]);
        assert!(!ok, "{what}: accepted: {out}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(expect),
            "{what}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_edits_under_a_running_coordinator_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = coffer_test_etcd::start(dir.path(), 1, None) else {
        return;
    };
    let url = cluster.urls[0].clone();
    let sim = dir.path().join("sim");
    let etcd_args = |prefix: &'static str, name: &'static str| {
        [
            "--store",
            "etcd",
            "--etcd-endpoints",
            Box::leak(url.clone().into_boxed_str()),
            "--etcd-prefix",
            prefix,
            "--replica-name",
            name,
        ]
    };
    let mut host = etcd_client::Client::connect([url.as_str()], None)
        .await
        .unwrap();
    for (prefix, what, expect) in [
        ("/t1", "delete the password", "1 value(s) were deleted"),
        ("/t2", "put back the first manifest", "a value was replaced"),
        (
            "/t3",
            "delete an audit record",
            "audit record 2 was deleted",
        ),
        ("/t4", "roll the head back", "the state was rolled back"),
    ] {
        let data = dir.path().join(&prefix[1..]);
        let p = start_with(&data, &sim, &etcd_args(prefix, "a"));
        let (mut c, root) = attested(&p.addr, &sim, None).await;
        set_manifest(&mut c, &manifest()).await;
        let first_rev = host
            .get(format!("{prefix}/meta/head"), None)
            .await
            .unwrap()
            .kvs()[0]
            .mod_revision();
        let u = users();
        let mut admin = Client::new(&p.addr, &Trust::RootCa(root), Some(&u.admin)).unwrap();
        put_secret(&mut admin, &password("first")).await.unwrap();
        let _: coffer_api::ManifestResponse = admin
            .call(
                Method::POST,
                "/api/v1/manifest/update",
                Some(&updated_manifest()),
            )
            .await
            .unwrap();
        let at = |rev: i64| etcd_client::GetOptions::new().with_revision(rev);
        match what {
            "delete the password" => {
                host.delete(format!("{prefix}/kv/user/password"), None)
                    .await
                    .unwrap();
            }
            "put back the first manifest" => {
                let old = host
                    .get(format!("{prefix}/kv/manifest"), Some(at(first_rev)))
                    .await
                    .unwrap()
                    .kvs()[0]
                    .value()
                    .to_vec();
                host.put(format!("{prefix}/kv/manifest"), old, None)
                    .await
                    .unwrap();
            }
            "delete an audit record" => {
                host.delete(format!("{prefix}/audit/{:020}", 2), None)
                    .await
                    .unwrap();
            }
            _ => {
                let old = host
                    .get(format!("{prefix}/meta/head"), Some(at(first_rev)))
                    .await
                    .unwrap()
                    .kvs()[0]
                    .value()
                    .to_vec();
                host.put(format!("{prefix}/meta/head"), old, None)
                    .await
                    .unwrap();
            }
        }
        // The running replica finds it through its watch, without a restart.
        let mut tampered = false;
        for _ in 0..100 {
            // Attested afresh each time: in tampered mode the CA is not used any more (the one
            // attestation that races the switch of certificates fails and is repeated).
            let Ok((mut c, _)) = try_attested(&p.addr, &sim, None).await else {
                continue;
            };
            let st: coffer_api::StatusResponse = c.get("/api/v1/status").await.unwrap();
            if st.state == coffer_api::CoordinatorState::Tampered {
                tampered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(tampered, "{what}: not found");
        assert_tampered(&p.addr, &sim, expect).await;
    }
    // The same under a stopped replica: found when it starts.
    let data = dir.path().join("t5");
    let p = start_with(&data, &sim, &etcd_args("/t5", "a"));
    let (mut c, root) = attested(&p.addr, &sim, None).await;
    set_manifest(&mut c, &manifest()).await;
    let mut admin = Client::new(&p.addr, &Trust::RootCa(root), Some(&users().admin)).unwrap();
    put_secret(&mut admin, &password("first")).await.unwrap();
    p.sigkill();
    host.delete("/t5/kv/user/password", None).await.unwrap();
    let p = start_with(&data, &sim, &etcd_args("/t5", "a"));
    assert_tampered(&p.addr, &sim, "1 value(s) were deleted").await;
}
