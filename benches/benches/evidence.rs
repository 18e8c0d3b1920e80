//! DCAP quote verification: coffer-evidence beside the `dcap-qvl` crate (Phala), on the same
//! real quotes and collateral (testdata/vectors/dcap, from dcap-qvl's own test suite).
//!
//! - `full/<vector>/coffer` and `full/<vector>/dcap-qvl`: one complete verification each
//!   (quote parse, every chain, CRL, signature and TCB check). Collateral is parsed outside the
//!   loop for both, as a server holding collateral would.
//! - `cached/<vector>/coffer`: repeated verification of quotes from one platform with
//!   `Verifier`'s caches warm, collateral passed by reference (each item is hashed to find it);
//!   `cached/<vector>/coffer-shared`: the same with the collateral shared as an `Arc`
//!   (`Verifier::verify_shared`, found by identity, as the Coordinator does). Every cached item
//!   is still checked for validity at `now` and the quote signature is verified every time.
//!   dcap-qvl has no such cache, so its `full` number is the comparison.
//! - `floor/<vector>/p256-verify`: one bare ECDSA P-256 verification with ring (the quote's
//!   own signature): a full verification needs nine distinct ones, a cached one exactly one.
//!
//! Run: `cargo bench -p coffer-benches --bench evidence`.

// criterion_group! generates undocumented public items.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};

struct Vector {
    name: &'static str,
    quote: Vec<u8>,
    ours: coffer_evidence::Collateral,
    theirs: dcap_qvl::QuoteCollateralV3,
    now: i64,
    status: &'static str,
}

fn rfc3339(s: &str) -> i64 {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 date in the vector")
        .unix_timestamp()
}

fn load(name: &'static str, status: &'static str) -> Vector {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/vectors/dcap");
    let quote = std::fs::read(dir.join(name)).expect("vector quote");
    let json = std::fs::read(dir.join(format!("{name}_collateral.json"))).expect("collateral");
    let ours = coffer_evidence::Collateral::from_json(&json).expect("our collateral parse");
    let theirs: dcap_qvl::QuoteCollateralV3 =
        serde_json::from_slice(&json).expect("dcap-qvl collateral parse");
    let issue = |doc: &str| {
        let v: serde_json::Value = serde_json::from_str(doc).expect("signed JSON");
        rfc3339(v["issueDate"].as_str().expect("issueDate"))
    };
    // Inside every item's window: an hour after the later of the two issue dates.
    let now = issue(&ours.tcb_info).max(issue(&ours.qe_identity)) + 3600;
    Vector {
        name,
        quote,
        ours,
        theirs,
        now,
        status,
    }
}

fn vectors() -> Vec<Vector> {
    let v = vec![
        load("sgx_quote", "ConfigurationAndSWHardeningNeeded"),
        load("tdx_quote", "UpToDate"),
    ];
    // Both verifiers must accept each vector with the expected status before anything is timed.
    for x in &v {
        let ours = coffer_evidence::verify(
            &x.quote,
            &x.ours,
            &coffer_evidence::TrustAnchors::intel(),
            x.now,
        )
        .expect("coffer verifies the vector");
        assert_eq!(ours.tcb_status.as_str(), x.status, "{}", x.name);
        let theirs = dcap_qvl::verify::verify(&x.quote, &x.theirs, x.now as u64)
            .expect("dcap-qvl verifies the vector");
        assert_eq!(theirs.status, x.status, "{}", x.name);
    }
    v
}

fn bench(c: &mut Criterion) {
    let anchors = coffer_evidence::TrustAnchors::intel();
    for v in vectors() {
        let mut g = c.benchmark_group(format!("evidence/full/{}", v.name));
        g.bench_function("coffer", |b| {
            b.iter(|| {
                coffer_evidence::verify(black_box(&v.quote), &v.ours, &anchors, v.now)
                    .expect("verifies")
            })
        });
        g.bench_function("dcap-qvl", |b| {
            b.iter(|| {
                dcap_qvl::verify::verify(black_box(&v.quote), &v.theirs, v.now as u64)
                    .expect("verifies")
            })
        });
        g.finish();

        let verifier = coffer_evidence::Verifier::new(anchors.clone());
        verifier
            .verify(&v.quote, &v.ours, v.now)
            .expect("warm the cache");
        let shared = std::sync::Arc::new(v.ours.clone());
        verifier
            .verify_shared(&v.quote, &shared, v.now)
            .expect("warm the cache");
        let mut g = c.benchmark_group(format!("evidence/cached/{}", v.name));
        g.bench_function("coffer", |b| {
            b.iter(|| {
                verifier
                    .verify(black_box(&v.quote), &v.ours, v.now)
                    .expect("verifies")
            })
        });
        g.bench_function("coffer-shared", |b| {
            b.iter(|| {
                verifier
                    .verify_shared(black_box(&v.quote), &shared, v.now)
                    .expect("verifies")
            })
        });
        g.finish();

        let q = coffer_evidence::Quote::parse(&v.quote).expect("parses");
        let mut key = vec![0x04];
        key.extend_from_slice(q.attestation_key());
        let key =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, key);
        key.verify(q.signed_bytes(), q.signature())
            .expect("the quote signature verifies");
        let mut g = c.benchmark_group(format!("evidence/floor/{}", v.name));
        g.bench_function("p256-verify", |b| {
            b.iter(|| key.verify(black_box(q.signed_bytes()), q.signature()))
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
