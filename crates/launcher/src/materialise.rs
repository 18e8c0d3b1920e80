//! Applying an activation: the workload's TLS identity, the manifest's files, the decrypted
//! protected files, the environment and the command line.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use base64::Engine as _;
use coffer_api::Activation;
use coffer_image::workload::WorkloadFile;
use zeroize::Zeroizing;

use crate::{fsutil, Error};

/// Where the launcher always puts the workload's TLS identity (the manifest may add more
/// copies anywhere through its files):
/// `cert.pem` (the workload certificate followed by the intermediate CA, 0644), `key.pem` (the
/// PKCS#8 private key generated inside the TEE, 0600) and `root-ca.pem` (the Coordinator's root
/// CA, the trust anchor for mTLS between workloads, 0644).
pub const TLS_DIR: &str = "/coffer/tls";

/// Paths the Coordinator's files may not write to: the launcher's own inputs and kernel
/// interfaces.
const RESERVED: &[&str] = &[
    "/coffer/workload.json",
    "/coffer/launcher",
    "/proc",
    "/sys",
    "/dev",
];

/// The image's user, resolved to numeric ids (from the image's `/etc/passwd` and `/etc/group`
/// for names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Resolves the image config's `User` (`""`, `uid`, `uid:gid`, `name`, `name:group`).
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<Option<AppUser>, Error> {
    if user.is_empty() {
        return Ok(None);
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_db(rootfs, "/etc/passwd");
    let (uid, default_gid) = match u.parse::<u32>() {
        Ok(uid) => {
            let gid = lookup(&passwd, |f| {
                f.get(2).and_then(|s| s.parse::<u32>().ok()) == Some(uid)
            })
            .and_then(|f| f.get(3).and_then(|s| s.parse().ok()))
            .unwrap_or(uid);
            (uid, gid)
        }
        Err(_) => {
            let f = lookup(&passwd, |f| f.first() == Some(&u)).ok_or_else(|| {
                Error::Parameters(format!("user {u:?} of the image is not in its /etc/passwd"))
            })?;
            let uid = f.get(2).and_then(|s| s.parse().ok());
            let gid = f.get(3).and_then(|s| s.parse().ok());
            match (uid, gid) {
                (Some(uid), Some(gid)) => (uid, gid),
                _ => {
                    return Err(Error::Parameters(format!(
                        "bad /etc/passwd entry for {u:?}"
                    )))
                }
            }
        }
    };
    let gid = match g {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = read_db(rootfs, "/etc/group");
                lookup(&group, |f| f.first() == Some(&g))
                    .and_then(|f| f.get(2).and_then(|s| s.parse().ok()))
                    .ok_or_else(|| {
                        Error::Parameters(format!(
                            "group {g:?} of the image is not in its /etc/group"
                        ))
                    })?
            }
        },
    };
    Ok(Some(AppUser { uid, gid }))
}

/// The app user's home directory as runtimes set `HOME`: the image's `/etc/passwd` entry for
/// its uid (root without a user), `/` when there is none.
pub fn home_dir(rootfs: &Path, user: Option<AppUser>) -> String {
    let uid = user.map_or(0, |u| u.uid);
    let passwd = read_db(rootfs, "/etc/passwd");
    lookup(&passwd, |f| {
        f.get(2).and_then(|s| s.parse::<u32>().ok()) == Some(uid)
    })
    .and_then(|f| f.get(5).map(|h| h.to_string()))
    .filter(|h| h.starts_with('/'))
    .unwrap_or_else(|| "/".to_string())
}

/// What a runtime adds to the app's environment when the image and the manifest leave them
/// out: `PATH` (Docker's default) and `HOME` (from the image's `/etc/passwd`).
pub fn add_runtime_defaults(
    env: &mut BTreeMap<String, String>,
    rootfs: &Path,
    user: Option<AppUser>,
) {
    env.entry("PATH".to_string())
        .or_insert_with(|| crate::exec::DEFAULT_PATH.to_string());
    if !env.contains_key("HOME") {
        env.insert("HOME".to_string(), home_dir(rootfs, user));
    }
}

fn read_db(rootfs: &Path, path: &str) -> String {
    let Ok(comps) = fsutil::canonical_components(path) else {
        return String::new();
    };
    let Some((name, parents)) = comps.split_last() else {
        return String::new();
    };
    match fsutil::resolve_dir(rootfs, parents, false) {
        Ok(dir) => fs::read(dir.join(name))
            .ok()
            .filter(|b| b.len() < 16 << 20)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn lookup<'a>(db: &'a str, pred: impl Fn(&Vec<&'a str>) -> bool) -> Option<Vec<&'a str>> {
    db.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| pred(f))
}

/// Checks every file path of the response before anything is written, so a bad path stops the
/// start with nothing changed.
pub fn check_file_paths(resp: &Activation, wf: &WorkloadFile) -> Result<(), Error> {
    let recorded: BTreeSet<&str> = wf
        .trusted_files
        .iter()
        .map(|f| f.path.as_str())
        .chain(wf.encrypted_files.iter().map(|f| f.path.as_str()))
        .chain(wf.symlinks.iter().map(|f| f.path.as_str()))
        .collect();
    for f in &resp.parameters.files {
        fsutil::canonical_components(&f.path).map_err(|e| {
            Error::Parameters(format!("the Coordinator's file path is refused: {e}"))
        })?;
        for r in RESERVED {
            if f.path == *r
                || f.path
                    .strip_prefix(r)
                    .is_some_and(|rest| rest.starts_with('/'))
            {
                return Err(Error::Parameters(format!(
                    "the Coordinator's file {:?} is under the reserved path {r}",
                    f.path
                )));
            }
        }
        if recorded.contains(f.path.as_str()) {
            return Err(Error::Parameters(format!(
                "the Coordinator's file {:?} would replace a measured file of the image",
                f.path
            )));
        }
        if f.mode > 0o7777 {
            return Err(Error::Parameters(format!(
                "file {:?}: mode {:o} is not a permission mode",
                f.path, f.mode
            )));
        }
    }
    Ok(())
}

/// Inside an enclave only in-enclave tmpfs directories keep a file off the host's disk:
/// Gramine writes any other allowed path through to the host in plaintext. Every file of the
/// activation must therefore lie under one of `secret_dirs` (fixed by the measured manifest),
/// and the start stops before anything is written when one does not.
pub fn check_enclave_paths(resp: &Activation, secret_dirs: &[String]) -> Result<(), Error> {
    for f in &resp.parameters.files {
        let inside = secret_dirs.iter().any(|d| {
            f.path
                .strip_prefix(d.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        });
        if !inside {
            return Err(Error::Parameters(format!(
                "the manifest's file {:?} is outside the enclave's tmpfs directories ({}): \
                 inside SGX it would land on the host's disk in plaintext; target one of \
                 them, or convert the image again with --secret-dir for its directory",
                f.path,
                secret_dirs.join(", ")
            )));
        }
    }
    Ok(())
}

/// Writes the TLS identity and the Coordinator's files under `rootfs`, owned by the app's user
/// when it has one. Returns how many files were written.
pub fn write_files(
    rootfs: &Path,
    resp: &Activation,
    key_pem: &str,
    wf: &WorkloadFile,
    owner: Option<AppUser>,
) -> Result<usize, Error> {
    check_file_paths(resp, wf)?;
    // Decode everything first: a bad base64 value stops the start before any write.
    let mut decoded = Vec::with_capacity(resp.parameters.files.len());
    for f in &resp.parameters.files {
        let content = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(f.content.as_bytes())
                .map_err(|_| {
                    Error::Parameters(format!("content of file {:?} is not base64", f.path))
                })?,
        );
        decoded.push((f, content));
    }
    let own = owner.map(|u| (u.uid, u.gid));
    fsutil::write_file(
        rootfs,
        &format!("{TLS_DIR}/cert.pem"),
        resp.certificate_chain_pem.as_bytes(),
        0o644,
        own,
    )?;
    fsutil::write_file(
        rootfs,
        &format!("{TLS_DIR}/key.pem"),
        key_pem.as_bytes(),
        0o600,
        own,
    )?;
    fsutil::write_file(
        rootfs,
        &format!("{TLS_DIR}/root-ca.pem"),
        resp.root_ca_pem.as_bytes(),
        0o644,
        own,
    )?;
    for (f, content) in &decoded {
        fsutil::write_file(rootfs, &f.path, content, f.mode, own)?;
    }
    Ok(3 + decoded.len())
}

/// Decrypts the image's protected files in place with the Coordinator's `image_key`. The
/// ciphertext was already checked against the measurement; decryption authenticates every
/// chunk and its binding to the path, and the plaintext replaces the file only when complete.
pub fn decrypt_files(
    rootfs: &Path,
    wf: &WorkloadFile,
    image_key: Option<&str>,
    owner: Option<AppUser>,
) -> Result<usize, Error> {
    let Some(key) = image_key_for(wf, image_key)? else {
        return Ok(0);
    };
    if let Some(ef) = wf
        .encrypted_files
        .iter()
        .find(|e| e.plaintext_mac.is_some())
    {
        return Err(Error::Integrity(format!(
            "{} is stored in Gramine's encrypted format: this image runs only inside Gramine \
             (it was converted with --tee sgx)",
            ef.path
        )));
    }
    for ef in &wf.encrypted_files {
        let comps = fsutil::canonical_components(&ef.path).map_err(Error::Integrity)?;
        let (name, parents) = comps
            .split_last()
            .ok_or_else(|| Error::Integrity("empty encrypted path".into()))?;
        let dir = fsutil::resolve_dir(rootfs, parents, false)?;
        let src = dir.join(name);
        let input = fs::File::open(&src).map_err(|e| Error::io("opening", &src, e))?;
        let mut plain = Zeroizing::new(Vec::with_capacity(ef.size as usize));
        coffer_image::protect::decrypt(&key, &ef.path, std::io::BufReader::new(input), &mut *plain)
            .map_err(|e| Error::Integrity(format!("decrypting {}: {e}", ef.path)))?;
        fsutil::write_file(
            rootfs,
            &ef.path,
            &plain,
            ef.mode,
            owner.map(|u| (u.uid, u.gid)),
        )?;
    }
    Ok(wf.encrypted_files.len())
}

/// The manifest's `image_key` when the image has encrypted files (`None` when it has none).
fn image_key_for(
    wf: &WorkloadFile,
    image_key: Option<&str>,
) -> Result<Option<coffer_image::protect::Key>, Error> {
    if wf.encrypted_files.is_empty() {
        return Ok(None);
    }
    let key_text = image_key.ok_or_else(|| {
        Error::Parameters(format!(
            "the image has {} encrypted files but the manifest gives this workload no image_key",
            wf.encrypted_files.len()
        ))
    })?;
    coffer_image::protect::Key::parse(key_text.as_bytes())
        .map(Some)
        .map_err(|e| Error::Parameters(format!("image_key: {e}")))
}

/// Inside Gramine: unlocks the image's encrypted mounts and checks what they show.
///
/// Writes the Gramine key of `image_key` to `<attestation>/keys/coffer_image`, the name every
/// encrypted mount of a converted image uses (Gramine reads it when a file is first opened,
/// `libos/src/fs/libos_fs_encrypted.c`). Then reads each encrypted file through its mount and
/// compares the keyed digest of the plaintext with the one the measured workload file records:
/// Gramine's format binds a file to its path, not its version, so a host could otherwise put
/// back an older ciphertext. Nothing is written to the host's disk.
pub fn unlock_gramine_files(
    attestation_root: &Path,
    rootfs: &Path,
    wf: &WorkloadFile,
    image_key: Option<&str>,
) -> Result<usize, Error> {
    use sha2::Digest as _;
    let Some(key) = image_key_for(wf, image_key)? else {
        return Ok(0);
    };
    let slot = attestation_root
        .join("keys")
        .join(coffer_image::gramine::ENCRYPTED_KEY_NAME);
    let kdk = key.gramine_kdk();
    fs::write(&slot, kdk.as_slice())
        .map_err(|e| Error::io("writing the encrypted-mount key to", &slot, e))?;
    for ef in &wf.encrypted_files {
        let Some(want) = &ef.plaintext_mac else {
            return Err(Error::Integrity(format!(
                "{} is stored in Coffer's own encrypted format, which Gramine refuses to have \
                 decrypted in place; convert the image with --tee sgx",
                ef.path
            )));
        };
        let comps = fsutil::canonical_components(&ef.path).map_err(Error::Integrity)?;
        let (name, parents) = comps
            .split_last()
            .ok_or_else(|| Error::Integrity("empty encrypted path".into()))?;
        let src = fsutil::resolve_dir(rootfs, parents, false)?.join(name);
        let mut file = fs::File::open(&src).map_err(|e| Error::io("opening", &src, e))?;
        let mut hash = sha2::Sha256::new();
        std::io::copy(&mut file, &mut hash).map_err(|e| Error::io("reading", &src, e))?;
        let got = key.plaintext_mac(&ef.path, &coffer_image::Digest(hash.finalize().into()));
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&got.0[..], &want.0[..])) {
            return Err(Error::Integrity(format!(
                "{} is not the version this image was converted with (an older or another \
                 ciphertext was put in its place)",
                ef.path
            )));
        }
    }
    Ok(wf.encrypted_files.len())
}

/// The app's environment: the image's `Env`, then the host variables the manifest lets
/// through (`host_env`, never the launcher's settings or `LD_*` loader variables), then the
/// Coordinator's, which wins. Every other host variable is dropped: the host (the pod spec,
/// the runtime) is not trusted, so `NODE_OPTIONS`, `PYTHONPATH` or a `PATH` it sets never steer
/// the app unless the manifest says so.
pub fn merge_env(
    image_env: &[String],
    host_env: &BTreeMap<String, String>,
    allowed_from_host: &[String],
    coordinator_env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for kv in image_env {
        if let Some((k, v)) = kv.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
    for name in allowed_from_host {
        if crate::config::LAUNCHER_VARS.contains(&name.as_str()) || name.starts_with("LD_") {
            continue;
        }
        if let Some(v) = host_env.get(name) {
            env.insert(name.clone(), v.clone());
        }
    }
    for (k, v) in coordinator_env {
        env.insert(k.clone(), v.clone());
    }
    env
}

/// The app's argv: the Coordinator's replacement if it gives one, else `Entrypoint ++ Cmd`
/// with the runtime's arguments (Kubernetes `args:`) in place of `Cmd` when there are any.
pub fn argv(
    wf: &WorkloadFile,
    runtime_args: &[String],
    coordinator: Option<&Vec<String>>,
) -> Vec<String> {
    match coordinator {
        Some(a) => a.clone(),
        None if runtime_args.is_empty() => wf.argv(None),
        None => wf.argv(Some(runtime_args)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_precedence_and_filtering() {
        let host: BTreeMap<String, String> = [
            ("A", "host"),
            ("LD_PRELOAD", "/evil.so"),
            ("COFFER_COORDINATOR", "x:1"),
            ("NODE_OPTIONS", "--require /evil.js"),
            ("PYTHONPATH", "/evil"),
            ("PATH", "/evil/bin"),
            ("TZ", "Europe/Berlin"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let coord: BTreeMap<String, String> = [("B".to_string(), "secret".to_string())].into();
        let allowed = [
            "A".to_string(),
            "TZ".into(),
            "LD_PRELOAD".into(),
            "COFFER_COORDINATOR".into(),
        ];
        let env = merge_env(
            &["A=img".into(), "B=img".into(), "PATH=/bin".into()],
            &host,
            &allowed,
            &coord,
        );
        assert_eq!(env.get("A").unwrap(), "host");
        assert_eq!(env.get("TZ").unwrap(), "Europe/Berlin");
        assert_eq!(env.get("B").unwrap(), "secret");
        assert_eq!(
            env.get("PATH").unwrap(),
            "/bin",
            "the host's PATH is not allowed"
        );
        for dropped in [
            "LD_PRELOAD",
            "COFFER_COORDINATOR",
            "NODE_OPTIONS",
            "PYTHONPATH",
        ] {
            assert!(!env.contains_key(dropped), "{dropped}");
        }
        // Nothing allowed: only the image's and the Coordinator's.
        let env = merge_env(&["A=img".into()], &host, &[], &coord);
        assert_eq!(env.len(), 2);
        assert_eq!(env.get("A").unwrap(), "img");
    }

    #[test]
    fn users() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:1000:1001::/:/bin/sh\nredis:x:999:999::/var/lib/redis:/usr/sbin/nologin\n",
        )
        .unwrap();
        fs::write(root.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let r = root.path();
        assert_eq!(resolve_user(r, "").unwrap(), None);
        assert_eq!(
            resolve_user(r, "web").unwrap(),
            Some(AppUser {
                uid: 1000,
                gid: 1001
            })
        );
        assert_eq!(
            resolve_user(r, "web:staff").unwrap(),
            Some(AppUser { uid: 1000, gid: 50 })
        );
        assert_eq!(
            resolve_user(r, "1000").unwrap(),
            Some(AppUser {
                uid: 1000,
                gid: 1001
            })
        );
        assert_eq!(
            resolve_user(r, "7:8").unwrap(),
            Some(AppUser { uid: 7, gid: 8 })
        );
        assert!(
            matches!(resolve_user(r, "nobody"), Err(Error::Parameters(m)) if m.contains("nobody"))
        );
        assert!(
            matches!(resolve_user(r, "web:nogroup"), Err(Error::Parameters(m)) if m.contains("nogroup"))
        );

        // HOME as runtimes set it: the passwd entry's, root's without a user, / when unknown.
        let home = |u: &str| home_dir(r, resolve_user(r, u).unwrap());
        assert_eq!(home("redis"), "/var/lib/redis");
        assert_eq!(home("999:0"), "/var/lib/redis");
        assert_eq!(home(""), "/root");
        assert_eq!(home("7:8"), "/");
        let mut env = BTreeMap::from([("HOME".to_string(), "/srv".to_string())]);
        add_runtime_defaults(&mut env, r, resolve_user(r, "redis").unwrap());
        assert_eq!(env["HOME"], "/srv", "an image's or manifest's HOME wins");
        assert_eq!(env["PATH"], crate::exec::DEFAULT_PATH);
        let mut env = BTreeMap::from([("PATH".to_string(), "/bin".to_string())]);
        add_runtime_defaults(&mut env, r, resolve_user(r, "redis").unwrap());
        assert_eq!(env["HOME"], "/var/lib/redis");
        assert_eq!(env["PATH"], "/bin");
    }
}
