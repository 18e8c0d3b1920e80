//! What the image tests share: OCI layouts written from layers and a config, the busybox
//! layer, the launcher the images carry, runc, free ports.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The launcher to put into images: the static build of `scripts/build-launcher.sh` if
/// present, else the workspace's `coffer-launcher`.
pub(crate) fn launcher() -> PathBuf {
    let static_one = static_launcher_path();
    if static_one.is_file() {
        return static_one;
    }
    let next = PathBuf::from(super::COFFER).with_file_name("coffer-launcher");
    assert!(
        next.is_file(),
        "build the launcher first: cargo build --workspace --bins (scripts/test.sh does)"
    );
    next
}

/// The static launcher, which images without a C library need.
pub(crate) fn static_launcher() -> PathBuf {
    let p = static_launcher_path();
    assert!(
        p.is_file(),
        "{} is missing: build it with `bash scripts/build-launcher.sh` (scripts/test.sh does)",
        p.display()
    );
    p
}

fn static_launcher_path() -> PathBuf {
    // target/debug/coffer → target/x86_64-unknown-linux-gnu/release/coffer-launcher
    let target = PathBuf::from(super::COFFER);
    let target = target.parent().and_then(Path::parent).unwrap();
    target.join("x86_64-unknown-linux-gnu/release/coffer-launcher")
}

/// Whether runc is installed.
pub(crate) fn runc_installed() -> bool {
    runc().is_some()
}

/// The runc binary, if installed.
pub(crate) fn runc() -> Option<&'static str> {
    ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tar layer holding `bin/` and the static busybox as `bin/busybox`.
pub(crate) fn busybox_layer() -> Vec<u8> {
    let bb = fs::read("/usr/bin/busybox")
        .or_else(|_| fs::read("/bin/busybox"))
        .expect("busybox-static (bash scripts/install-deps.sh)");
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    tar.append_data(&mut h, "bin/", std::io::empty()).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(bb.len() as u64);
    tar.append_data(&mut h, "bin/busybox", bb.as_slice())
        .unwrap();
    tar.into_inner().unwrap()
}

/// Writes a blob into the layout at `dir`; returns its digest and size.
pub(crate) fn put_blob(dir: &Path, data: &[u8]) -> (String, usize) {
    let hex = hex::encode(Sha256::digest(data));
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("blobs/sha256").join(&hex), data).unwrap();
    (format!("sha256:{hex}"), data.len())
}

/// Writes an OCI image layout at `dir`: uncompressed `layers`, the image config `config`
/// (`{"Entrypoint": …, "Env": …}`, linux/amd64), the index naming the manifest with `tag`.
pub(crate) fn oci_layout(
    dir: &Path,
    layers: &[&[u8]],
    config: serde_json::Value,
    tag: Option<&str>,
) {
    let layers: Vec<(String, usize)> = layers.iter().map(|l| put_blob(dir, l)).collect();
    let config = put_blob(
        dir,
        &serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| &l.0).collect::<Vec<_>>() }
        }))
        .unwrap(),
    );
    let manifest = put_blob(
        dir,
        &serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1 },
            "layers": layers.iter().map(|(d, n)| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n
            })).collect::<Vec<_>>()
        }))
        .unwrap(),
    );
    write_index(dir, &manifest, tag);
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// The layout's index.json naming one manifest (digest, size), tagged `tag`.
pub(crate) fn write_index(dir: &Path, (digest, size): &(String, usize), tag: Option<&str>) {
    let mut entry = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size
    });
    if let Some(t) = tag {
        entry["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": t });
    }
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [entry] });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}
