//! One-shot timing of `coffer convert` on ≥ 1 GiB of files against `sha256sum`, a one-thread
//! `sha2` pass and a `tar` repack of the same files — the same input as the criterion bench
//! `benches/benches/convert.rs`, for a quick number without criterion:
//!
//!     cargo run --release -p coffer-benches --example convert_timing [RUNS]

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../benches/common/convert_input.rs"]
mod convert_input;

use convert_input::{convert_once, generate, BIG_FILES, BIG_SIZE, SMALL_FILES, SMALL_SIZE};

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
