//! Fuzz `coffer_api::sealed::open` (a launcher opens the Coordinator's sealed parameters; a
//! machine in the middle controls the bytes). Random input never authenticates.
#![no_main]

use coffer_api::SealedParameters;
use libfuzzer_sys::fuzz_target;

/// A fixed P-256 PKCS#8 key (the launcher's own, in the real flow).
fn key() -> Vec<u8> {
    use p256::pkcs8::EncodePrivateKey;
    p256::SecretKey::from_slice(&[3u8; 32])
        .unwrap()
        .to_pkcs8_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = serde_json::from_slice::<SealedParameters>(data) {
        assert!(coffer_api::sealed::open(&s, &key()).is_err());
    }
});
