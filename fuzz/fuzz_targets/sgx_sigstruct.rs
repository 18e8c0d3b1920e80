//! SIGSTRUCT parsing: never panics; whatever parses re-encodes to the same 1808 bytes;
//! verification of arbitrary input never panics and never accepts a signature with a wrong
//! exponent.
#![no_main]

use coffer_sgx::Sigstruct;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Sigstruct::parse(data) {
        assert_eq!(&s.to_bytes()[..], data, "parse/to_bytes round trip");
        let verdict = s.verify();
        if s.exponent != 3 {
            assert!(verdict.is_err());
        }
        let _ = s.mrsigner();
    }
});
