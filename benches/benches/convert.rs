//! `coffer convert` on an image of ≥ 1 GiB of files, against `sha256sum` over the same files
//! (the reference: hashing them is the least any measurement can do) and against a plain
//! `tar` repack of them. Debian's `sha256sum` does not use the CPU's SHA extensions, so a
//! stricter reference is added: one thread reading the files and hashing them with the `sha2`
//! crate (which does), i.e. the floor for a single-pass measurement.
//!
//! The input is generated at bench time in a temporary directory (never committed): 240 files
//! of 4 MiB of pseudo-random bytes and 4096 files of 4 KiB (1.016 GiB in all), in one
//! uncompressed layer of an OCI layout. Everything is in the page cache after the first run.
//!
//! Run: `cargo bench -p coffer-benches --bench convert`
//! (`COFFER_BENCH_GZIP=1` adds the same image with a gzip layer, which is bound by inflate).

// `criterion_group!` expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use std::fs;
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "common/convert_input.rs"]
mod convert_input;

use convert_input::{convert_once, generate, BIG_FILES, BIG_SIZE, SMALL_FILES, SMALL_SIZE};

fn bench(c: &mut Criterion) {
    let input = generate();
    let total: usize = BIG_FILES * BIG_SIZE + SMALL_FILES * SMALL_SIZE;
    eprintln!(
        "input: {} files, {:.3} GiB",
        input.files.len(),
        total as f64 / (1u64 << 30) as f64
    );
    let mut g = c.benchmark_group("convert_1GiB");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.throughput(criterion::Throughput::Bytes(total as u64));
    let mut n = 0u64;
    g.bench_function("coffer_convert_uncompressed_layer", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    n += 1;
                    convert_once(&input, &input.oci, n)
                })
                .sum()
        })
    });
    if let Some(gz) = &input.oci_gz {
        g.bench_function("coffer_convert_gzip_layer", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        n += 1;
                        convert_once(&input, gz, n)
                    })
                    .sum()
            })
        });
    }
    g.bench_function("sha256sum_same_files", |b| {
        b.iter(|| {
            let st = Command::new("sha256sum")
                .args(&input.files)
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
        })
    });
    g.bench_function("sha2_one_thread_same_files", |b| {
        b.iter(|| {
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
                criterion::black_box(h.finalize());
            }
        })
    });
    g.bench_function("tar_repack_same_files", |b| {
        let out = input.work.join("repack.tar");
        b.iter(|| {
            let st = Command::new("tar")
                .arg("-cf")
                .arg(&out)
                .arg("-C")
                .arg(&input.root)
                .arg(".")
                .status()
                .unwrap();
            assert!(st.success());
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
