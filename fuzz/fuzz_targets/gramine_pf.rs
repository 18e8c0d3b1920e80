//! Fuzz `coffer_sgx::gramine::pf::decrypt`, the reader of Gramine protected files (which the
//! host stores, so their bytes are untrusted): it never panics and refuses everything not
//! encrypted under its key (no input here is); a file it writes from the input decrypts back to
//! the input and to nothing under another path.
#![no_main]

use coffer_sgx::gramine::pf;
use libfuzzer_sys::fuzz_target;

const KDK: [u8; 16] = [0x42; 16];

fuzz_target!(|data: &[u8]| {
    assert!(pf::decrypt(&KDK, "/data/x", data).is_err());
    if data.len() <= 64 * 1024 {
        let file = pf::encrypt(&KDK, "/data/x", data, &mut coffer_sgx::rand_core::OsRng).unwrap();
        assert_eq!(file.len() as u64, pf::encrypted_len(data.len() as u64));
        assert_eq!(&pf::decrypt(&KDK, "/data/x", &file).unwrap()[..], data);
        assert!(pf::decrypt(&KDK, "/data/y", &file).is_err());
    }
});
