//! SEV-SNP report verification: coffer-evidence beside virtee's `sev` crate 7.1.0 (RustCrypto
//! back end, feature `crypto_nossl`), on the same real reports and certificates
//! (testdata/vectors/snp: virtee's own Milan vector and trustee's). Both sides start from bytes
//! (the report, DER certificates) and verify the ARK's self-signature, ASK ← ARK, VCEK ← ASK
//! and the report's signature; both must accept each vector before anything is timed. Coffer
//! also checks validity at `now`, REPORTED_TCB against the VCEK and CHIP_ID against its hwID,
//! which virtee's `Verifiable` does not.
//!
//! Run: `cargo bench -p coffer-benches --bench snp`.

// criterion_group! generates undocumented public items.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use coffer_evidence::snp::{certificates, verify_snp, SnpAnchors, SnpCollateral};
use coffer_evidence::Item;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sev::certs::snp::{Certificate, Chain, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;

struct Vector {
    name: &'static str,
    report: Vec<u8>,
    vek: Vec<u8>,
    ask: Vec<u8>,
    ark: Vec<u8>,
    now: i64,
}

fn load(name: &'static str, report: &str, vek: &str, chain: &str, now: i64) -> Vector {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/vectors/snp");
    let read = |f: &str| std::fs::read(dir.join(f)).expect("vector file");
    let certs = certificates(&read(chain), Item::AskCertificate).expect("PEM chain");
    Vector {
        name,
        report: read(report),
        vek: read(vek),
        ask: certs[0].clone(),
        ark: certs[1].clone(),
        now,
    }
}

fn ours(v: &Vector, anchors: &SnpAnchors) -> bool {
    let c = SnpCollateral {
        vek: &v.vek,
        ask: &v.ask,
        ark: &v.ark,
        crl: None,
    };
    verify_snp(&v.report, &c, anchors, v.now).is_ok()
}

fn theirs(v: &Vector) -> bool {
    let cert = |der: &[u8]| Certificate::from_der(der).expect("sev parses the certificate");
    let chain = Chain {
        ca: sev::certs::snp::ca::Chain {
            ark: cert(&v.ark),
            ask: cert(&v.ask),
        },
        vek: cert(&v.vek),
    };
    let report = AttestationReport::from_bytes(&v.report).expect("sev parses the report");
    (&chain, &report).verify().is_ok()
}

fn bench(c: &mut Criterion) {
    let vectors = [
        load(
            "virtee-milan",
            "virtee-sev/report_milan.bin.derived",
            "virtee-sev/vcek_milan.der",
            "virtee-sev/cert_chain_milan",
            1_700_000_000,
        ),
        load(
            "trustee-milan",
            "trustee/test-report.bin",
            "trustee/test-vcek.der",
            "trustee/milan_ask_ark_asvk.pem",
            1_700_000_000,
        ),
    ];
    let anchors = SnpAnchors::amd();
    let mut g = c.benchmark_group("snp");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    for v in &vectors {
        assert!(ours(v, &anchors), "coffer refuses {}", v.name);
        assert!(theirs(v), "sev refuses {}", v.name);
        g.bench_function(format!("{}/coffer", v.name), |b| {
            b.iter(|| black_box(ours(black_box(v), &anchors)))
        });
        g.bench_function(format!("{}/sev", v.name), |b| {
            b.iter(|| black_box(theirs(black_box(v))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
