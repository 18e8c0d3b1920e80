//! Fuzz `coffer_evidence::Quote::parse`: never panics; a parsed quote re-encodes to the input
//! (minus zero padding), re-parses to the same value, and its accessors agree with the bytes.
#![no_main]

use coffer_evidence::{Quote, QuoteBody, Tee};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(q) = Quote::parse(data) else { return };
    let bytes = q.to_bytes();
    assert_eq!(bytes.len() + q.padding_len(), data.len());
    assert_eq!(&data[..bytes.len()], &bytes[..]);
    assert!(data[bytes.len()..].iter().all(|&b| b == 0));
    let again = Quote::parse(&bytes).expect("re-encoded quote parses");
    assert_eq!(again.padding_len(), 0);
    assert_eq!(again.to_bytes(), bytes);
    assert_eq!((again.header(), again.body()), (q.header(), q.body()));
    assert!(matches!(q.version(), 3..=5));
    assert_eq!(&data[..q.signed_bytes().len()], q.signed_bytes());
    match (q.tee(), q.body()) {
        (Tee::Sgx, QuoteBody::Sgx(b)) => assert_eq!(&b.report_data, q.report_data()),
        (Tee::Tdx, QuoteBody::Td(b)) => assert_eq!(&b.report_data, q.report_data()),
        _ => panic!("TEE kind and body disagree"),
    }
    assert_eq!(q.qe_report().to_bytes(), q.qe_report_bytes());
    // Derived lookups must not panic either.
    let _ = q.pck_chain_pem();
    let _ = q.fmspc();
    let _ = q.pck_ca();
});
