//! SGX measurement throughput: MRENCLAVE of a 1 GiB enclave layout (every page EADDed and
//! EEXTENDed, the first one a TCS) given as an SGXS stream, in enclave bytes per second.
//!
//! - `coffer_sgx/bytes`: `measure_sgxs_bytes`, hashing the stream in place.
//! - `coffer_sgx/read`: `measure_sgxs` through `std::io::Read` (what the CLI does with a file;
//!   one copy into a 1 MiB buffer).
//! - `coffer_sgx/file` (only with `COFFER_BENCH_SGX_DUMP`): `measure_sgxs` on the dumped file,
//!   as `coffer sgx measure --sgxs FILE` does.
//! - `sgxs_crate`: the peer, Fortanix's `sgxs` crate (what `sgxs-sign` runs),
//!   `EnclaveHash::from_stream` on the same bytes, given the same `sha2` backend as ours (its own
//!   `sha2` feature does not build against sha2 0.10, so the bench plugs sha2 in through its
//!   `SgxHashOps` trait; `sgxs-sign` itself uses OpenSSL's SHA-256, timed separately in
//!   BENCHMARKS.md).
//!
//! Run: `cargo bench -p coffer-benches --bench sgx`. Uses ~1.3 GiB of memory for the stream.
//! `COFFER_BENCH_SGX_MIB` changes the enclave size (default 1024); `COFFER_BENCH_SGX_DUMP=FILE`
//! also writes the stream to FILE, to time the peer's command-line tool on the same input.

// `criterion_group!` expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use coffer_sgx::{measure_sgxs, measure_sgxs_bytes, SecinfoFlags, SgxsWriter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The peer's hash trait over the same SHA-256 implementation we use.
struct PeerSha256(sha2::Sha256);

impl sgxs::crypto::SgxHashOps for PeerSha256 {
    fn new() -> Self {
        PeerSha256(sha2::Digest::new())
    }
    fn update(&mut self, data: &[u8]) {
        sha2::Digest::update(&mut self.0, data);
    }
    fn finish(self) -> sgxs::crypto::Hash {
        sha2::Digest::finalize(self.0).into()
    }
}

fn layout(mib: u64) -> (Vec<u8>, [u8; 32]) {
    let size = mib << 20;
    let pages = size / 4096;
    let mut w = SgxsWriter::new(
        Vec::with_capacity((size / 256 * 320 + pages * 64 + 64) as usize),
        1,
        size,
    )
    .unwrap();
    let mut page = [0u8; 4096];
    for p in 0..pages {
        // Different content per page, cheap to make.
        page[..8].copy_from_slice(&p.to_le_bytes());
        page[2048..2056].copy_from_slice(&(!p).to_le_bytes());
        let flags = if p == 0 {
            SecinfoFlags::tcs()
        } else {
            SecinfoFlags::reg(true, true, p % 4 == 1)
        };
        w.add_page(p * 4096, if p == 0 { &[] } else { &page }, flags, true)
            .unwrap();
    }
    w.finish().unwrap()
}

fn bench(c: &mut Criterion) {
    let mib: u64 = std::env::var("COFFER_BENCH_SGX_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let (stream, expected) = layout(mib);
    let dump = std::env::var_os("COFFER_BENCH_SGX_DUMP");
    if let Some(path) = &dump {
        std::fs::write(path, &stream).expect("writing COFFER_BENCH_SGX_DUMP");
    }
    // Both implementations must agree before their speed means anything.
    assert_eq!(measure_sgxs_bytes(&stream).unwrap().mrenclave, expected);
    let peer =
        sgxs::sigstruct::EnclaveHash::from_stream::<_, PeerSha256>(&mut &stream[..]).unwrap();
    assert_eq!(
        peer,
        sgxs::sigstruct::EnclaveHash::new(expected),
        "the sgxs crate disagrees"
    );

    let mut g = c.benchmark_group(format!("sgx_measure_{mib}MiB"));
    g.throughput(Throughput::Bytes(mib << 20));
    g.sample_size(10);
    g.bench_function("coffer_sgx/bytes", |b| {
        b.iter(|| black_box(measure_sgxs_bytes(black_box(&stream)).unwrap().mrenclave))
    });
    g.bench_function("coffer_sgx/read", |b| {
        b.iter(|| {
            black_box(
                measure_sgxs(black_box(&stream[..]), |_| {})
                    .unwrap()
                    .mrenclave,
            )
        })
    });
    if let Some(path) = &dump {
        // What `coffer sgx measure --sgxs FILE` does: read the file (from the page cache here).
        g.bench_function("coffer_sgx/file", |b| {
            b.iter(|| {
                let f = std::fs::File::open(path).unwrap();
                let m = measure_sgxs(f, |_| {}).unwrap();
                assert_eq!(m.mrenclave, expected);
            })
        });
    }
    g.bench_function("sgxs_crate", |b| {
        b.iter(|| {
            black_box(
                sgxs::sigstruct::EnclaveHash::from_stream::<_, PeerSha256>(&mut black_box(
                    &stream[..],
                ))
                .unwrap(),
            )
        })
    });
    g.finish();

    // Ceilings: plain SHA-256 over the same stream bytes (the measured records are ~1.27 bytes
    // of stream per enclave byte), through each SHA-256 implementation available.
    let mut g = c.benchmark_group(format!("sgx_measure_{mib}MiB_sha256_ceiling"));
    g.throughput(Throughput::Bytes(mib << 20));
    g.sample_size(10);
    g.bench_function("sha2_raw", |b| {
        b.iter(|| black_box(<sha2::Sha256 as sha2::Digest>::digest(black_box(&stream))))
    });
    g.bench_function("ring_raw", |b| {
        b.iter(|| {
            black_box(ring::digest::digest(
                &ring::digest::SHA256,
                black_box(&stream),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
