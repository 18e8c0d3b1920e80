//! Fuzzes the small formats of coffer-image: image references, `/coffer/workload.json`
//! (parse → validate → serialise → parse must round-trip) and protected-file decryption
//! (never panics; with a fixed key, random bytes never authenticate).
#![no_main]

use coffer_image::protect::{self, Key};
use coffer_image::{ImageRef, WorkloadFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(r) = s.parse::<ImageRef>() {
            assert_eq!(r.to_string().parse::<ImageRef>().ok(), Some(r));
        }
    }
    if let Ok(wf) = WorkloadFile::from_json(data) {
        let again = WorkloadFile::from_json(&wf.to_json()).expect("a valid file re-parses");
        assert_eq!(again, wf);
        assert_eq!(wf.measurement(), wf.image_measurement);
    }
    let key = Key::from_bytes([7u8; 32]);
    let mut out = Vec::new();
    assert!(protect::decrypt(&key, "/f", data, &mut out).is_err(), "forged protected file");
});
