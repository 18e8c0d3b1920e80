//! Fuzzes the Coordinator's activation request parser (`POST /api/v1/activate` body) and the
//! CSR parser it feeds: never a panic; a parsed request re-serialises and re-parses to the same
//! value; a CSR that parses yields a P-256 SPKI that the report-data binding hashes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = coffer_coordinator::api::parse_activation_request(data) else { return };
    assert!(coffer_api::protocol_version_supported(req.protocol_version));
    let again = serde_json::to_vec(&req).expect("serialise");
    let back = coffer_coordinator::api::parse_activation_request(&again).expect("re-parse");
    assert_eq!(back, req);
    if let Ok(key) = coffer_coordinator::pki::parse_csr(&req.csr_pem) {
        assert!(!key.spki_der().is_empty());
        let rd = coffer_api::workload_report_data(key.spki_der());
        assert_eq!(rd[32..], [0u8; 32]);
    }
});
