//! Fuzz collateral parsing: `Collateral::from_json`, TCB info / QE identity parsing of its
//! documents (and of the raw input), and the PCS body splitter. Never panics; collateral that
//! parses serialises and re-parses to the same value.
#![no_main]

use coffer_evidence::{split_signed_json, Collateral, QeIdentity, TcbInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Collateral::from_json(data) {
        let again = Collateral::from_json(c.to_json().as_bytes()).expect("re-parse");
        assert_eq!(again, c);
        if let Ok(t) = TcbInfo::from_json(&c.tcb_info) {
            assert!(!t.tcb_levels.is_empty());
            assert!(t.tcb_levels.windows(2).all(|w| (w[0].sgx_components, w[0].pce_svn)
                >= (w[1].sgx_components, w[1].pce_svn)));
        }
        let _ = QeIdentity::from_json(&c.qe_identity);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = TcbInfo::from_json(s);
        let _ = QeIdentity::from_json(s);
        for field in ["tcbInfo", "enclaveIdentity"] {
            if let Ok((signed, sig)) = split_signed_json(s, field) {
                // Both are sub-slices of the input, byte for byte.
                assert!(s.contains(signed) && s.contains(sig));
                assert!(signed.starts_with('{'));
            }
        }
    }
});
