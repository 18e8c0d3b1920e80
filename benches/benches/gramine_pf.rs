//! Gramine protected files (`--encrypt --tee sgx`): Coffer's writer and reader on 16 MiB,
//! beside the floor they cannot beat, one AES-128-GCM pass over the same bytes (the format
//! encrypts every 4 KiB node once, plus a small Merkle tree of node keys). Gramine's own C code
//! was timed once on the same input with a harness that is not part of this repository (it is
//! LGPL); BENCHMARKS.md records both.
//!
//! Run: `cargo bench -p coffer-benches --bench gramine_pf`.

// criterion_group! generates undocumented public items.
#![allow(missing_docs)]

use std::time::Duration;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce};
use coffer_sgx::gramine::pf;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const SIZE: usize = 16 << 20;
const KDK: [u8; 16] = [0x42; 16];

fn bench(c: &mut Criterion) {
    let content: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 251) as u8).collect();
    let mut rng = coffer_sgx::rand_core::OsRng;
    let file = pf::encrypt(&KDK, "/data/big16.bin", &content, &mut rng).unwrap();
    assert_eq!(
        &pf::decrypt(&KDK, "/data/big16.bin", &file).unwrap()[..],
        &content[..]
    );
    let mut g = c.benchmark_group("gramine_pf_16MiB");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("coffer encrypt", |b| {
        b.iter(|| pf::encrypt(&KDK, "/data/big16.bin", black_box(&content), &mut rng).unwrap())
    });
    g.bench_function("coffer decrypt", |b| {
        b.iter(|| pf::decrypt(&KDK, "/data/big16.bin", black_box(&file)).unwrap())
    });
    g.bench_function("floor: one AES-128-GCM pass", |b| {
        let cipher = Aes128Gcm::new((&KDK).into());
        let mut buf = content.clone();
        b.iter(|| {
            cipher
                .encrypt_in_place_detached(Nonce::from_slice(&[0; 12]), &[], black_box(&mut buf))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
