//! Fuzz the SEV-SNP certificate table the host hands a guest (configfs-tsm `auxblob`):
//! `coffer_launcher::evidence::snp_certificates` never panics, and what it returns lies inside
//! the table it was given.
#![no_main]

use coffer_launcher::evidence::snp_certificates;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(certs) = snp_certificates(data) {
        // Entries start after at least one 24-byte entry and the zero terminator.
        for c in &certs {
            assert!(c.len() <= data.len().saturating_sub(48));
        }
    }
});
