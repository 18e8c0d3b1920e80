//! Fuzz RA-TLS reading in `coffer_evidence::ratls`: the DICE tagged-evidence parser (CBOR tag
//! 60000 over `[quote, claims]`) and certificate reading never panic; what the parser accepts
//! holds a quote no longer than its input.
#![no_main]

use coffer_evidence::ratls::{parse_dice_evidence, read};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = parse_dice_evidence(data) {
        assert!(e.quote.len() <= data.len());
    }
    if let Ok(r) = read(data) {
        assert!(r.quote.len() <= data.len());
        assert_eq!(&r.expected_report_data[32..], &[0u8; 32]);
    }
});
