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

/// Files of this machine's glibc that Gramine's runtime glibc (glibc 2.40 built for Gramine,
/// `subprojects/packagefiles/glibc-2.40/meson.build`) also ships.
const RUNTIME_GLIBC: &[&str] = &[
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libdl.so.2",
    "libm.so.6",
    "libmvec.so.1",
    "libpthread.so.0",
    "libresolv.so.2",
    "librt.so.1",
    "libutil.so.1",
    "libanl.so.1",
    "libnss_dns.so.2",
    "libnss_files.so.2",
];

/// A stand-in Gramine library directory laid out as Gramine installs it (this machine has
/// no Gramine): `sgx/libpal.so` is a real ELF shared object (libc), `sgx/loader` a real
/// dynamically linked program (`echo`, so a started image prints what Gramine's loader would
/// get), `runtime/glibc` this machine's glibc libraries under the names Gramine's has, and
/// `libsysdb.so` a file to hash.
pub(crate) fn gramine_dir(t: &Path) -> PathBuf {
    let d = t.join("gramine");
    std::fs::create_dir_all(d.join("sgx")).unwrap();
    std::fs::create_dir_all(d.join("runtime/glibc")).unwrap();
    let libdir = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("libc.so.6").exists())
        .expect("this machine's glibc");
    for lib in RUNTIME_GLIBC {
        if libdir.join(lib).exists() {
            std::fs::copy(libdir.join(lib), d.join("runtime/glibc").join(lib)).unwrap();
        }
    }
    std::fs::copy(libdir.join("libc.so.6"), d.join("sgx/libpal.so")).unwrap();
    std::fs::copy("/bin/echo", d.join("sgx/loader")).unwrap();
    std::fs::write(d.join("libsysdb.so"), b"stand-in libsysdb\n").unwrap();
    d
}

/// The SGX signing key of the test vectors (RSA-3072, e = 3).
pub(crate) fn sgx_vector_key() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors/sgx-sign/encl.pem")
}

/// A PEM certificate standing in for the Coordinator's root CA.
pub(crate) fn stand_in_root_ca() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/vectors/intel-qvl-sample/PCKCertSelection-SampleData/pck0_sample.pem")
}

fn target_dir() -> PathBuf {
    // target/debug/coffer → target/
    PathBuf::from(env!("CARGO_BIN_EXE_coffer"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf()
}

/// A Debian root filesystem tarball built by scripts/build-debian-images.sh.
pub(crate) fn rootfs_tarball(name: &str) -> PathBuf {
    let p = target_dir()
        .join("debian-images")
        .join(format!("{name}.tar"));
    assert!(
        p.is_file(),
        "{} is missing: build it with `bash scripts/build-debian-images.sh` (scripts/test.sh does)",
        p.display()
    );
    p
}
