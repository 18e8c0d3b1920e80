//! One-shot timing of `coffer convert` on ≥ 1 GiB of files against `sha256sum`, a one-thread
//! `sha2` pass and a `tar` repack of the same files — the same input as the criterion bench
//! `benches/benches/convert.rs`, for a quick number without criterion:
//!
//!     cargo run --release -p coffer-image --example convert_timing [RUNS]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use coffer_image::layout::Format;
use coffer_image::{convert, ConvertOptions, Digest, ImageRef, Limits};

const BIG_FILES: usize = 256;
const BIG_SIZE: usize = 4 << 20;
const SMALL_FILES: usize = 4096;
const SMALL_SIZE: usize = 4 << 10;

/// xorshift64*: fast, deterministic filler (content must not be compressible or trivially
/// hashable for the comparison to be fair).
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

struct Input {
    _dir: tempfile::TempDir,
    root: PathBuf,
    files: Vec<PathBuf>,
    oci: PathBuf,
    oci_gz: Option<PathBuf>,
    launcher: PathBuf,
    work: PathBuf,
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = Digest::of(bytes);
    fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    d.oci()
}

fn write_layout(dir: &Path, layer_file: &Path, media_type: &str, diff_id: &str) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let blob = fs::read(layer_file).unwrap();
    let ld = put_blob(dir, &blob);
    let size = blob.len();
    drop(blob);
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

fn generate() -> Input {
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
    let diff_id = Digest::of(&fs::read(&layer).unwrap()).oci();
    let oci = dir.path().join("oci");
    write_layout(
        &oci,
        &layer,
        "application/vnd.oci.image.layer.v1.tar",
        &diff_id,
    );
    let oci_gz = if std::env::var_os("COFFER_BENCH_GZIP").is_some() {
        let gz = dir.path().join("layer.tar.gz");
        gzip(&layer, &gz);
        let p = dir.path().join("oci-gz");
        write_layout(
            &p,
            &gz,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &diff_id,
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
fn gzip(src: &Path, dst: &Path) {
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

fn convert_once(input: &Input, src: &Path, n: u64) -> Duration {
    let out = input.work.join(format!("out-{n}"));
    let opts = ConvertOptions {
        source: ImageRef {
            format: Format::OciDir,
            path: src.to_path_buf(),
            tag: Some("bench".into()),
        },
        target: ImageRef {
            format: Format::OciDir,
            path: out.clone(),
            tag: Some("cc".into()),
        },
        launcher: input.launcher.clone(),
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
    };
    let t = Instant::now();
    let r = convert(&opts, &|_| {}).unwrap();
    let d = t.elapsed();
    assert_eq!(r.trusted_files, BIG_FILES + SMALL_FILES + 1);
    fs::remove_dir_all(&out).unwrap();
    d
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    best
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let input = generate();
    let total: usize = BIG_FILES * BIG_SIZE + SMALL_FILES * SMALL_SIZE;
    let gib = total as f64 / (1u64 << 30) as f64;
    println!(
        "input: {} files, {gib:.3} GiB; best of {runs} runs",
        input.files.len()
    );
    let mut n = 0;
    let conv = (0..runs)
        .map(|_| {
            n += 1;
            convert_once(&input, &input.oci, n)
        })
        .min()
        .unwrap();
    let conv_gz = input.oci_gz.as_ref().map(|gz| {
        (0..runs)
            .map(|_| {
                n += 1;
                convert_once(&input, gz, n)
            })
            .min()
            .unwrap()
    });
    let sum = time(runs, || {
        let st = Command::new("sha256sum")
            .args(&input.files)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
    });
    let sha2_1t = time(runs, || {
        use sha2::Digest as _;
        let mut buf = vec![0u8; 1 << 20];
        for f in &input.files {
            let mut h = sha2::Sha256::new();
            let mut file = fs::File::open(f).unwrap();
            loop {
                let n = std::io::Read::read(&mut file, &mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            std::hint::black_box(h.finalize());
        }
    });
    let out = input.work.join("repack.tar");
    let tar_t = time(runs, || {
        let st = Command::new("tar")
            .arg("-cf")
            .arg(&out)
            .arg("-C")
            .arg(&input.root)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
    });
    let row = |name: &str, d: Duration| {
        println!(
            "{name:40} {:7.3} s  {:7.1} MiB/s  {:5.2}x of sha256sum",
            d.as_secs_f64(),
            total as f64 / (1 << 20) as f64 / d.as_secs_f64(),
            d.as_secs_f64() / sum.as_secs_f64()
        )
    };
    row("coffer convert (uncompressed layer)", conv);
    if let Some(d) = conv_gz {
        row("coffer convert (gzip layer)", d);
    }
    row("sha256sum (coreutils)", sum);
    row("sha2, one thread, read+hash", sha2_1t);
    row("tar -cf (plain repack)", tar_t);
}
