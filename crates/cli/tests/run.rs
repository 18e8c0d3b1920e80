//! `coffer run`: the real `coffer` binary unpacks a converted image (made by `coffer convert`
//! from an OCI layout holding the static busybox) and starts its launcher, under runc or as a
//! local process; the launcher's exit status comes back as `coffer run`'s.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn coffer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coffer"));
    c.env("COFFER_LOG", "error");
    c
}

/// The launcher to put into the image: the static build if present, else the workspace's.
fn launcher() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_coffer"));
    let dir = exe.parent().unwrap();
    let static_one = dir
        .parent()
        .unwrap()
        .join("x86_64-unknown-linux-gnu/release/coffer-launcher");
    if static_one.is_file() {
        return static_one;
    }
    let next = dir.join("coffer-launcher");
    assert!(
        next.is_file(),
        "build the launcher first: cargo build --workspace --bins (scripts/test.sh does)"
    );
    next
}

fn is_static(p: &Path) -> bool {
    // ldd (libc-bin) reports static executables either way, depending on the glibc version.
    let out = Command::new("ldd").arg(p).output().unwrap();
    let s = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    s.contains("not a dynamic executable") || s.contains("statically linked")
}

/// A one-layer OCI layout: static busybox, Entrypoint `busybox echo hello`.
fn source_image(dir: &Path) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let put = |data: &[u8]| {
        let hex = hex::encode(Sha256::digest(data));
        fs::write(dir.join("blobs/sha256").join(&hex), data).unwrap();
        format!("sha256:{hex}")
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    tar.append_data(&mut h, "bin/", std::io::empty()).unwrap();
    let bb = fs::read("/usr/bin/busybox")
        .or_else(|_| fs::read("/bin/busybox"))
        .expect("busybox-static");
    let mut h = tar::Header::new_ustar();
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(bb.len() as u64);
    tar.append_data(&mut h, "bin/busybox", bb.as_slice())
        .unwrap();
    let layer = tar.into_inner().unwrap();
    let layer_digest = put(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Entrypoint": ["/bin/busybox", "echo", "hello"], "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] }
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len() }]
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len() }]
        }))
        .unwrap(),
    )
    .unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn converted(tmp: &Path) -> PathBuf {
    let src = tmp.join("src");
    source_image(&src);
    let out = tmp.join("out");
    let st = coffer()
        .arg("convert")
        .arg(format!("oci:{}", src.display()))
        .arg(format!("oci:{}", out.display()))
        .arg("--launcher")
        .arg(launcher())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

#[test]
fn no_runtime_starts_the_launcher_and_passes_its_exit_status_through() {
    let tmp = tempfile::tempdir().unwrap();
    let image = converted(tmp.path());
    // No Coordinator configured: the launcher refuses with its configuration status (78),
    // which `coffer run` must return as its own.
    let out = coffer()
        .arg("run")
        .arg(&image)
        .arg("--no-runtime")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("COFFER_COORDINATOR is not set"), "{stderr}");
}

#[test]
fn runc_starts_the_container_and_passes_its_exit_status_through() {
    let runc = ["/usr/sbin/runc", "/usr/bin/runc"]
        .iter()
        .any(|p| Path::new(p).is_file());
    let l = launcher();
    let tmp = tempfile::tempdir().unwrap();
    let image = converted(tmp.path());
    let out = coffer()
        .arg("run")
        .arg(&image)
        .arg("--workload")
        .arg("w")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !runc {
        assert!(stderr.contains("runc is not installed"), "{stderr}");
    }
    if runc && !is_static(&l) {
        // A dynamically linked launcher cannot start in an image without a C library: runc
        // reports the exec failure and `coffer run` fails with it.
        assert_ne!(out.status.code(), Some(0), "{stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("COFFER_COORDINATOR is not set"), "{stderr}");
}

#[test]
fn a_modified_layer_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let image = converted(tmp.path());
    // Flip one byte of the biggest blob (the busybox layer).
    let blobs = image.join("blobs/sha256");
    let biggest = fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let mut data = fs::read(&biggest).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 1;
    fs::write(&biggest, data).unwrap();
    let out = coffer()
        .arg("run")
        .arg(&image)
        .arg("--no-runtime")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("digest") && stderr.contains("corrupt or was modified"),
        "{stderr}"
    );
}

#[test]
fn port_mapping_that_host_networking_cannot_do_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let image = converted(tmp.path());
    let out = coffer()
        .args(["run", "-p", "8080:80"])
        .arg(&image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("published as itself"), "{stderr}");
}
