//! The input of the conversion benchmarks, shared by the criterion bench
//! (`benches/convert.rs`) and the one-shot timing (`examples/convert_timing.rs`; the real-image
//! benchmark `examples/convert_debian.rs` uses [`write_layout`] and [`options`]): 256 files of
//! 4 MiB of pseudo-random bytes and 4096 files of 4 KiB (1.016 GiB), in one uncompressed layer of
//! an OCI layout generated in a temporary directory (never committed).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use coffer_image::layout::Format;
use coffer_image::{convert, ConvertOptions, Digest, ImageRef, Limits};

pub(crate) const BIG_FILES: usize = 256;
pub(crate) const BIG_SIZE: usize = 4 << 20;
pub(crate) const SMALL_FILES: usize = 4096;
pub(crate) const SMALL_SIZE: usize = 4 << 10;

/// xorshift64*: fast, deterministic filler (content must not be compressible or trivially
/// hashable for the comparison to be fair).
pub(crate) fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

pub(crate) struct Input {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) root: PathBuf,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) oci: PathBuf,
    pub(crate) oci_gz: Option<PathBuf>,
    pub(crate) launcher: PathBuf,
    pub(crate) work: PathBuf,
}

pub(crate) fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = Digest::of(bytes);
    fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    d.oci()
}

/// The SHA-256 of a file (`sha256:<hex>`), read in 1 MiB pieces.
pub(crate) fn file_digest(path: &Path) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    let mut f = fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    format!("sha256:{:x}", hash.finalize())
}

/// Writes an OCI layout at `dir`, tagged `bench`, whose one layer is `layer_file` (hard-linked,
/// else copied; never read into memory). `diff_id` is the digest of the uncompressed tar;
/// `None` for an uncompressed layer, whose diff_id is its own digest.
pub(crate) fn write_layout(dir: &Path, layer_file: &Path, media_type: &str, diff_id: Option<&str>) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let ld = file_digest(layer_file);
    let blob = dir.join("blobs/sha256").join(&ld["sha256:".len()..]);
    if fs::hard_link(layer_file, &blob).is_err() {
        fs::copy(layer_file, &blob).unwrap();
    }
    let size = fs::metadata(&blob).unwrap().len();
    let diff_id = diff_id.unwrap_or(&ld);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/app"], "Cmd": ["--serve"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}
    });
    let cb = serde_json::to_vec(&config).unwrap();
    let cd = put_blob(dir, &cb);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cb.len()},
        "layers": [{"mediaType": media_type, "digest": ld, "size": size}]
    });
    let mb = serde_json::to_vec(&manifest).unwrap();
    let md = put_blob(dir, &mb);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mb.len(),
        "annotations": {"org.opencontainers.image.ref.name": "bench"}}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

pub(crate) fn generate() -> Input {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    let mut files = Vec::new();
    let mut buf = vec![0u8; BIG_SIZE];
    for i in 0..BIG_FILES {
        let d = root.join(format!("big/{:02}", i % 16));
        fs::create_dir_all(&d).unwrap();
        fill(&mut buf, i as u64 + 1);
        let p = d.join(format!("f{i}.bin"));
        fs::write(&p, &buf).unwrap();
        files.push(p);
    }
    for i in 0..SMALL_FILES {
        let d = root.join(format!("small/{:03}", i % 64));
        fs::create_dir_all(&d).unwrap();
        fill(&mut buf[..SMALL_SIZE], 1_000_000 + i as u64);
        let p = d.join(format!("s{i}.txt"));
        fs::write(&p, &buf[..SMALL_SIZE]).unwrap();
        files.push(p);
    }
    // One uncompressed layer with the whole tree.
    let layer = dir.path().join("layer.tar");
    let mut b = tar::Builder::new(std::io::BufWriter::new(fs::File::create(&layer).unwrap()));
    b.append_dir_all(".", &root).unwrap();
    b.into_inner().unwrap().flush().unwrap();
    let oci = dir.path().join("oci");
    write_layout(&oci, &layer, "application/vnd.oci.image.layer.v1.tar", None);
    let oci_gz = if std::env::var_os("COFFER_BENCH_GZIP").is_some() {
        let gz = dir.path().join("layer.tar.gz");
        gzip(&layer, &gz);
        let p = dir.path().join("oci-gz");
        write_layout(
            &p,
            &gz,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Some(&file_digest(&layer)),
        );
        Some(p)
    } else {
        None
    };
    fs::remove_file(&layer).unwrap();
    let launcher = dir.path().join("launcher");
    fs::write(&launcher, b"stand-in launcher for the benchmark").unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    Input {
        root,
        files,
        oci,
        oci_gz,
        launcher,
        work,
        _dir: dir,
    }
}

/// gzip through the system `gzip -1` (the bench crate does not depend on flate2).
pub(crate) fn gzip(src: &Path, dst: &Path) {
    let out = fs::File::create(dst).unwrap();
    let st = Command::new("gzip")
        .arg("-1")
        .arg("-c")
        .arg(src)
        .stdout(out)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Options of a plain conversion (no encryption, all files trusted) from the OCI layout `src`
/// (tag `bench`) to `out` (tag `cc`).
pub(crate) fn options(src: &Path, out: &Path, launcher: &Path) -> ConvertOptions {
    ConvertOptions {
        source: ImageRef {
            format: Format::OciDir,
            path: src.to_path_buf(),
            tag: Some("bench".into()),
        },
        target: ImageRef {
            format: Format::OciDir,
            path: out.to_path_buf(),
            tag: Some("cc".into()),
        },
        launcher: launcher.to_path_buf(),
        trusted: vec![],
        allowed: vec![],
        runtime_mounts: vec![],
        encrypt: vec![],
        key: None,
        isv_prod_id: 0,
        isv_svn: 0,
        source_date_epoch: None,
        limits: Limits::default(),
        sgx: None,
    }
}

pub(crate) fn convert_once(input: &Input, src: &Path, n: u64) -> Duration {
    let out = input.work.join(format!("out-{n}"));
    let opts = options(src, &out, &input.launcher);
    let t = Instant::now();
    let r = convert(&opts, &|_| {}).unwrap();
    let d = t.elapsed();
    assert_eq!(r.trusted_files, BIG_FILES + SMALL_FILES + 1);
    fs::remove_dir_all(&out).unwrap();
    d
}
