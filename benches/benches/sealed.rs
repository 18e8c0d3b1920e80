//! The per-activation cost of sealing parameters to the workload's key (`coffer_api::sealed`):
//! `seal` runs on the Coordinator for every activation (one ephemeral P-256 key and one key
//! agreement, ring), `open` once in each launcher (RustCrypto p256). Beside them, one ECDSA
//! P-256 signature verification (ring), the unit a TLS handshake with a client certificate
//! would have cost instead.
//!
//! Run: `cargo bench -p coffer-benches --bench sealed`

// `criterion_group!` expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use rcgen::{PublicKeyData, SigningKey};

fn params() -> coffer_api::Parameters {
    coffer_api::Parameters {
        files: vec![coffer_api::FileParameter {
            path: "/etc/ca.pem".into(),
            content: "A".repeat(1000),
            mode: 0o600,
        }],
        env: [("KEY".to_string(), "ab".repeat(32))].into(),
        argv: None,
        host_env: Vec::new(),
        image_key: None,
    }
}

fn bench(c: &mut Criterion) {
    let key = rcgen::KeyPair::generate().expect("key");
    let spki = key.subject_public_key_info();
    let pkcs8 = key.serialize_der();
    let p = params();
    let sealed = coffer_api::sealed::seal(&p, &spki).expect("seal");
    let mut g = c.benchmark_group("activation_parameters");
    g.bench_function("seal (Coordinator, per activation)", |b| {
        b.iter(|| coffer_api::sealed::seal(&p, &spki).expect("seal"))
    });
    g.bench_function("open (launcher, once)", |b| {
        b.iter(|| coffer_api::sealed::open(&sealed, &pkcs8).expect("open"))
    });
    let msg = b"tls 1.3 certificate verify";
    let sig = key.sign(msg).expect("sign");
    let pk = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        key.der_bytes().to_vec(),
    );
    g.bench_function("peer: one ECDSA P-256 verify (ring)", |b| {
        b.iter(|| pk.verify(msg, &sig).expect("verify"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
