//! `coffer convert` on real images built from Debian packages (root filesystem tarballs from
//! `scripts/build-debian-images.sh`, made into one-layer OCI images as `docker import` does;
//! a `.tar.gz` becomes a gzip layer, as registries serve them), against `sha256sum` over the
//! same bytes; prints time, throughput and the process's peak resident memory (entries are
//! counted for uncompressed tarballs only):
//!
//!     bash scripts/build-debian-images.sh --bench
//!     cargo run --release -p coffer-benches --example convert_debian -- RUNS TARBALL...
//!
//! Peak memory is the kernel's high-water mark of this whole process (VmHWM), read before and
//! after the conversions: everything else the example does streams with a 1 MiB buffer.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use coffer_image::convert;
use sha2::Digest;

#[allow(dead_code)] // the synthetic input's generator is the other examples'
#[path = "../benches/common/convert_input.rs"]
mod convert_input;

fn peak_rss_mib() -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Writes `dir` as an OCI layout whose one layer is `rootfs` (a `.tar.gz` becomes a gzip
/// layer, as registries serve them); returns the number of tar entries (uncompressed only).
fn layout(dir: &Path, rootfs: &Path) -> usize {
    let gzip = rootfs.extension().is_some_and(|e| e == "gz");
    if gzip {
        // The diff_id is the digest of the tar inside.
        let mut child = Command::new("gzip")
            .arg("-dc")
            .arg(rootfs)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut h = sha2::Sha256::new();
        std::io::copy(child.stdout.as_mut().unwrap(), &mut h).unwrap();
        assert!(child.wait().unwrap().success());
        let diff_id = format!("sha256:{:x}", h.finalize());
        let media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
        convert_input::write_layout(dir, rootfs, media_type, Some(&diff_id));
        return 0;
    }
    convert_input::write_layout(dir, rootfs, "application/vnd.oci.image.layer.v1.tar", None);
    tar::Archive::new(fs::File::open(rootfs).unwrap())
        .entries()
        .unwrap()
        .try_fold(0, |n, e| e.map(|_| n + 1))
        .unwrap()
}

fn launcher() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/x86_64-unknown-linux-gnu/release/coffer-launcher");
    assert!(p.is_file(), "run `bash scripts/build-launcher.sh` first");
    p
}

fn best<F: FnMut() -> Duration>(runs: usize, mut f: F) -> Duration {
    (0..runs).map(|_| f()).min().unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let tarballs: Vec<PathBuf> = args.map(PathBuf::from).collect();
    assert!(
        !tarballs.is_empty(),
        "usage: convert_debian RUNS TARBALL..."
    );
    let work = tempfile::Builder::new()
        .prefix("coffer-convert-debian-")
        .tempdir_in(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .unwrap();
    println!("| image | entries | size | `coffer convert` | `sha256sum` | ratio | peak RSS |");
    println!("|---|---|---|---|---|---|---|");
    for (i, tarball) in tarballs.iter().enumerate() {
        let src = work.path().join(format!("src-{i}"));
        let entries = layout(&src, tarball);
        let bytes = fs::metadata(tarball).unwrap().len();
        let before = peak_rss_mib();
        let mut n = 0;
        let conv = best(runs, || {
            n += 1;
            let out = work.path().join(format!("out-{i}-{n}"));
            let opts = convert_input::options(&src, &out, &launcher());
            let t = Instant::now();
            convert(&opts, &|_| {}).unwrap();
            let d = t.elapsed();
            fs::remove_dir_all(&out).unwrap();
            d
        });
        let after = peak_rss_mib();
        let sum = best(runs, || {
            let t = Instant::now();
            let st = Command::new("sha256sum")
                .arg(tarball)
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
            t.elapsed()
        });
        let mib = bytes as f64 / (1u64 << 20) as f64;
        println!(
            "| {} | {entries} | {mib:.0} MiB | {:.2} s ({:.0} MiB/s) | {:.2} s | {:.2}× | {:.0} MiB (before: {:.0}) |",
            tarball.file_name().unwrap().to_string_lossy(),
            conv.as_secs_f64(),
            mib / conv.as_secs_f64(),
            sum.as_secs_f64(),
            conv.as_secs_f64() / sum.as_secs_f64(),
            after,
            before,
        );
    }
}
