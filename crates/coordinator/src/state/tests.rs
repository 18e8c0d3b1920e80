//! The embedded store against a hostile host: the file is edited between runs the way an
//! operator with the disk would (with redb itself, so every edit is a well-formed database),
//! and every edit must be found at the next open with the finding that names it.

use std::path::{Path, PathBuf};

use ::redb::{Database, ReadableTable, WriteTransaction};
use coffer_api::{AuditRecord, HistoryEntry};

use super::redb::{AUDIT, KV, META};
use super::*;

fn record(event: &str) -> AuditRecord {
    AuditRecord {
        seq: 0,
        prev: [0; 32],
        time: 1_700_000_000,
        event: event.into(),
        outcome: "accepted".into(),
        workload: None,
        instance: None,
        user: None,
        detail: None,
        chain_breaks: vec![],
    }
}

fn history(manifest: &[u8], author: Option<&str>) -> WriteOp {
    WriteOp::History(HistoryEntry {
        version: 0,
        manifest_hash: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(manifest)),
        prev: [0; 32],
        author: author.map(str::to_string),
        time: 1_700_000_000,
        changes: vec![],
    })
}

/// A store with a manifest (two versions), two secrets, an instance and six audit records.
/// Returns the path, the key and the sealed bytes of `secret/shared/a` and `manifest` after
/// the first commit (what an "older value" attack puts back).
struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    key: StateKey,
    old_a: Vec<u8>,
    old_manifest: Vec<u8>,
    instance: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let key = StateKey::generate();
    let Initialised::Created(store) = RawStore::open(&path)
        .unwrap()
        .initialise(key.clone(), vec![WriteOp::Audit(record("initialise"))])
        .unwrap()
    else {
        panic!("a new file is created here")
    };
    store
        .apply(&[
            WriteOp::Put("manifest".into(), b"{\"v\":1}".to_vec()),
            history(b"{\"v\":1}", None),
            WriteOp::Put("secret/shared/a".into(), b"A1".to_vec()),
            WriteOp::Put("secret/shared/b".into(), b"B1".to_vec()),
            WriteOp::Audit(record("manifest-set")),
        ])
        .unwrap();
    let old_a = sealed(&store, "secret/shared/a");
    let old_manifest = sealed(&store, "manifest");
    let id = uuid::Uuid::new_v4();
    let instance = writer::instance_key("web", &id);
    let mut activation = record("activation");
    activation.workload = Some("web".into());
    activation.instance = Some(id.to_string());
    store
        .apply(&[
            WriteOp::Put("manifest".into(), b"{\"v\":2}".to_vec()),
            history(b"{\"v\":2}", Some("admin")),
            WriteOp::Put("secret/shared/a".into(), b"A2".to_vec()),
            WriteOp::Put(instance.clone(), b"{}".to_vec()),
            WriteOp::Audit(record("manifest-update")),
            WriteOp::Audit(activation),
            WriteOp::Audit(record("secrets-read")),
            WriteOp::Audit(record("secrets-read")),
        ])
        .unwrap();
    drop(store);
    Fixture {
        _dir: dir,
        path,
        key,
        old_a,
        old_manifest,
        instance,
    }
}

fn sealed(store: &Store, name: &str) -> Vec<u8> {
    store.view().unwrap().kv.get(name).unwrap().clone()
}

/// Edits the file the way the host can: with redb, outside the Coordinator.
fn edit(path: &Path, f: impl FnOnce(&WriteTransaction)) {
    let db = Database::open(path).unwrap();
    let tx = db.begin_write().unwrap();
    f(&tx);
    tx.commit().unwrap();
}

fn open(path: &Path, key: &StateKey) -> Unlocked {
    RawStore::open(path)
        .unwrap()
        .unlock(key.clone(), 0)
        .unwrap()
}

/// Opens and expects tampering; returns the findings as text.
fn findings(path: &Path, key: &StateKey) -> String {
    match open(path, key) {
        Unlocked::Verified(_) => panic!("the edit was not found"),
        Unlocked::Tampered(t) => describe(t.findings()).join("; "),
    }
}

#[test]
fn an_untouched_store_verifies_and_chains() {
    let f = fixture();
    let Unlocked::Verified(s) = open(&f.path, &f.key) else {
        panic!("an untouched store must verify")
    };
    let head = s.head().unwrap();
    assert_eq!(head.generation, 3);
    assert_eq!(head.history_version, 2);
    assert_eq!(s.get("secret/shared/a").unwrap().unwrap().as_slice(), b"A2");
    let records = s.audit(0, 100).unwrap();
    assert_eq!(records.len(), 6);
    let check = coffer_api::verify_audit(&records).unwrap();
    assert_eq!(check.head, head.audit_head);
    // A page from the middle links to the record before it.
    let page = s.audit(3, 2).unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 5]);
    let history = s.history().unwrap();
    let (v, h) = coffer_api::verify_history(&history).unwrap();
    assert_eq!((v, h), (head.history_version, head.history_head));
    assert_eq!(history[1].author.as_deref(), Some("admin"));
}

#[test]
fn a_deleted_value_is_found() {
    let f = fixture();
    edit(&f.path, |tx| {
        tx.open_table(KV)
            .unwrap()
            .remove("secret/shared/b")
            .unwrap();
    });
    let found = findings(&f.path, &f.key);
    assert!(found.contains("1 value(s) were deleted"), "{found}");
}

#[test]
fn a_deleted_instance_is_named() {
    let f = fixture();
    edit(&f.path, |tx| {
        tx.open_table(KV)
            .unwrap()
            .remove(f.instance.as_str())
            .unwrap();
    });
    let found = findings(&f.path, &f.key);
    assert!(
        found.contains(&format!("instance record `{}` is missing", f.instance)),
        "{found}"
    );
    assert!(found.contains("activation limit"), "{found}");
}

#[test]
fn an_older_value_put_back_is_found() {
    let f = fixture();
    edit(&f.path, |tx| {
        tx.open_table(KV)
            .unwrap()
            .insert("secret/shared/a", f.old_a.as_slice())
            .unwrap();
    });
    let found = findings(&f.path, &f.key);
    assert!(found.contains("a value was replaced"), "{found}");
}

#[test]
fn an_older_manifest_put_back_is_named() {
    let f = fixture();
    edit(&f.path, |tx| {
        tx.open_table(KV)
            .unwrap()
            .insert("manifest", f.old_manifest.as_slice())
            .unwrap();
    });
    let found = findings(&f.path, &f.key);
    assert!(
        found.contains("the one the manifest history ends with (an older manifest put back?)"),
        "{found}"
    );
}

#[test]
fn a_deleted_manifest_never_reopens_manifest_set() {
    let f = fixture();
    edit(&f.path, |tx| {
        tx.open_table(KV).unwrap().remove("manifest").unwrap();
    });
    let found = findings(&f.path, &f.key);
    assert!(
        found.contains("the manifest is missing although manifest version 2 was set"),
        "{found}"
    );
}

#[test]
fn swapped_values_are_found_and_named() {
    let f = fixture();
    edit(&f.path, |tx| {
        let mut kv = tx.open_table(KV).unwrap();
        let a = kv.get("secret/shared/a").unwrap().unwrap().value().to_vec();
        let b = kv.get("secret/shared/b").unwrap().unwrap().value().to_vec();
        kv.insert("secret/shared/a", b.as_slice()).unwrap();
        kv.insert("secret/shared/b", a.as_slice()).unwrap();
    });
    let found = findings(&f.path, &f.key);
    assert!(
        found.contains("value `secret/shared/a` fails authentication"),
        "{found}"
    );
    assert!(found.contains("a value was replaced"), "{found}");
}

#[test]
fn dropped_audit_records_are_found() {
    for (drop, expect) in [
        (3u64, "audit record 3 is missing"),
        (6, "audit record 6 is missing"),
    ] {
        let f = fixture();
        edit(&f.path, |tx| {
            tx.open_table(AUDIT).unwrap().remove(drop).unwrap();
        });
        let found = findings(&f.path, &f.key);
        assert!(found.contains(expect), "drop {drop}: {found}");
    }
}

#[test]
fn an_edited_or_deleted_head_is_found() {
    let f = fixture();
    edit(&f.path, |tx| {
        let mut meta = tx.open_table(META).unwrap();
        let mut h = meta.get("head").unwrap().unwrap().value().to_vec();
        let last = h.len() - 1;
        h[last] ^= 1;
        meta.insert("head", h.as_slice()).unwrap();
    });
    assert!(findings(&f.path, &f.key).contains("the state head fails authentication"));
    edit(&f.path, |tx| {
        tx.open_table(META).unwrap().remove("head").unwrap();
    });
    assert!(findings(&f.path, &f.key).contains("the state head is missing"));
}

#[test]
fn the_same_head_rolled_back_is_a_mismatch_with_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let key = StateKey::generate();
    let Initialised::Created(s) = RawStore::open(&path)
        .unwrap()
        .initialise(key.clone(), vec![WriteOp::Audit(record("initialise"))])
        .unwrap()
    else {
        panic!()
    };
    s.apply(&[WriteOp::Put("secret/shared/a".into(), b"1".to_vec())])
        .unwrap();
    let old_head = s.meta("head").unwrap().unwrap();
    s.apply(&[
        WriteOp::Put("secret/shared/a".into(), b"2".to_vec()),
        WriteOp::Audit(record("x")),
    ])
    .unwrap();
    drop(s);
    edit(&path, |tx| {
        tx.open_table(META)
            .unwrap()
            .insert("head", old_head.as_slice())
            .unwrap();
    });
    let found = findings(&path, &key);
    assert!(found.contains("audit record 2 is beyond"), "{found}");
    assert!(found.contains("a value was replaced"), "{found}");
}

#[test]
fn a_whole_store_rollback_is_consistent_and_only_clients_can_tell() {
    // The documented limit: an old but complete copy of the file verifies; its generation is
    // older, which is what `coffer verify` compares against what it remembers.
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.redb");
    let Initialised::Created(s) = RawStore::open(&p)
        .unwrap()
        .initialise(f.key.clone(), vec![])
        .unwrap()
    else {
        panic!()
    };
    s.apply(&[WriteOp::Put("x".into(), b"1".to_vec())]).unwrap();
    drop(s);
    std::fs::copy(&p, p.with_extension("copy")).unwrap();
    let s = match open(&p, &f.key) {
        Unlocked::Verified(s) => s,
        Unlocked::Tampered(t) => panic!("{:?}", t.findings()),
    };
    s.apply(&[WriteOp::Put("x".into(), b"2".to_vec())]).unwrap();
    let newer = s.head().unwrap().generation;
    drop(s);
    std::fs::copy(p.with_extension("copy"), &p).unwrap();
    let Unlocked::Verified(s) = open(&p, &f.key) else {
        panic!("a consistent copy verifies")
    };
    assert!(s.head().unwrap().generation < newer);
    drop(s);
    // A process that already verified the newer generation refuses it.
    let raw = RawStore::open(&p).unwrap();
    match raw.unlock(f.key.clone(), newer).unwrap() {
        Unlocked::Verified(_) => panic!("a rollback below a seen generation must be refused"),
        Unlocked::Tampered(t) => {
            assert!(describe(t.findings()).join(";").contains("rolled back"))
        }
    }
}

#[test]
fn a_deleted_key_check_does_not_start_a_new_state_over_the_old() {
    let f = fixture();
    edit(&f.path, |tx| {
        tx.open_table(META).unwrap().remove("key_check").unwrap();
    });
    let raw = RawStore::open(&f.path).unwrap();
    assert!(!raw.is_initialised().unwrap());
    let err = raw.initialise(StateKey::generate(), vec![]).err().unwrap();
    assert!(
        matches!(&err, Error::Tampered(m) if m[0].contains("no key check")),
        "{err}"
    );
}

#[test]
fn reauthentication_keeps_what_is_there_and_acknowledges_the_breaks() {
    let f = fixture();
    edit(&f.path, |tx| {
        tx.open_table(AUDIT).unwrap().remove(3).unwrap();
        let mut kv = tx.open_table(KV).unwrap();
        kv.insert("secret/shared/a", f.old_a.as_slice()).unwrap();
        kv.insert("secret/shared/junk", [0u8; 40].as_slice())
            .unwrap();
    });
    let Unlocked::Tampered(mut t) = open(&f.path, &f.key) else {
        panic!("tampered")
    };
    // The finding goes into the stored audit chain (the values stay as found).
    assert!(t.record(record("tamper-detected")).unwrap());
    let (s, info) = t
        .reauthenticate(record(coffer_api::chain::REAUTHENTICATED_EVENT), |_| false)
        .unwrap();
    assert_eq!(info.dropped, ["secret/shared/junk"]);
    assert_eq!(info.breaks, [4]);
    assert!(info.manifest_present);
    assert_eq!(s.get("secret/shared/a").unwrap().unwrap().as_slice(), b"A1");
    let records = s.audit(0, 100).unwrap();
    let check = coffer_api::verify_audit(&records).unwrap();
    assert_eq!(check.acknowledged_breaks, [4]);
    assert_eq!(records.last().unwrap().event, "state-reauthenticated");
    assert_eq!(records[records.len() - 2].event, "tamper-detected");
    let gen = s.head().unwrap().generation;
    drop(s);
    // It stays verified across restarts.
    let Unlocked::Verified(s) = open(&f.path, &f.key) else {
        panic!("re-authenticated state must verify")
    };
    assert_eq!(s.head().unwrap().generation, gen);
}

#[test]
fn reauthentication_without_a_manifest_resets_secrets() {
    let f = fixture();
    edit(&f.path, |tx| {
        tx.open_table(KV).unwrap().remove("manifest").unwrap();
    });
    let Unlocked::Tampered(t) = open(&f.path, &f.key) else {
        panic!("tampered")
    };
    let (s, info) = t
        .reauthenticate(record(coffer_api::chain::REAUTHENTICATED_EVENT), |n| {
            n.starts_with("secret/") || n.starts_with(writer::INSTANCE_PREFIX)
        })
        .unwrap();
    assert!(!info.manifest_present);
    assert!(s.get("secret/shared/a").unwrap().is_none());
    assert!(s.get(&f.instance).unwrap().is_none());
    // The history says so: version 3 clears the manifest; the next one set is version 4.
    let history = s.history().unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[2].manifest_hash, coffer_api::chain::NO_MANIFEST);
    assert_eq!(history[2].author.as_deref(), Some("recovery-key holders"));
    coffer_api::verify_history(&history).unwrap();
}

#[test]
fn values_written_by_the_store_cannot_be_the_head() {
    let f = fixture();
    let Unlocked::Verified(s) = open(&f.path, &f.key) else {
        panic!()
    };
    for op in [
        WriteOp::PutMeta("head".into(), vec![]),
        WriteOp::DeleteMeta("key_check".into()),
    ] {
        assert!(s.apply(std::slice::from_ref(&op)).is_err(), "{op:?}");
        assert!(s.apply_meta(&[op]).is_err());
    }
}

#[test]
fn a_running_store_serves_only_what_it_verified() {
    // The host rewrites the file in place under a running Coordinator (bypassing redb's
    // lock): reads come from the values verified at open, so the edit is never served, and
    // the store's own next commit writes its own state over the edit.
    let f = fixture();
    let Unlocked::Verified(s) = open(&f.path, &f.key) else {
        panic!()
    };
    let copy = f.path.with_extension("edited");
    std::fs::copy(&f.path, &copy).unwrap();
    edit(&copy, |tx| {
        tx.open_table(KV)
            .unwrap()
            .remove("secret/shared/b")
            .unwrap();
    });
    std::fs::write(&f.path, std::fs::read(&copy).unwrap()).unwrap();
    assert_eq!(s.get("secret/shared/b").unwrap().unwrap().as_slice(), b"B1");
    s.apply(&[WriteOp::Audit(record("after-the-edit"))])
        .unwrap();
    drop(s);
    let Unlocked::Verified(s) = open(&f.path, &f.key) else {
        panic!("the store's own commit must leave its own verified state")
    };
    assert_eq!(s.get("secret/shared/b").unwrap().unwrap().as_slice(), b"B1");
    assert_eq!(s.audit(6, 10).unwrap()[0].event, "after-the-edit");
}

#[test]
fn audit_reads_check_what_the_file_holds() {
    // Audit records are read from the file: one the host removed while the store runs is
    // found by the read, which then marks the state tampered.
    let f = fixture();
    let Unlocked::Verified(s) = open(&f.path, &f.key) else {
        panic!()
    };
    let Backend::Embedded(db) = &s.backend else {
        panic!()
    };
    let removed = {
        let all = db.audit(0, 100).unwrap();
        all[2].clone()
    };
    db.commit(&[Sealed::Audit(removed.0, None)]).unwrap();
    let err = s.audit(0, 100).unwrap_err();
    assert!(
        matches!(&err, Error::Tampered(m) if m[0].contains("audit record 3 is missing")),
        "{err}"
    );
    assert!(s.tampered().is_some());
    assert!(matches!(s.get("secret/shared/a"), Err(Error::Tampered(_))));
}
