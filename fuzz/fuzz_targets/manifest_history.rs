//! Fuzz the manifest-history and audit-chain checks a client runs on what a Coordinator serves
//! (`coffer_api::verify_history`, `history_extends`, `verify_audit`).
//!
//! Beyond "no panic": a history that checks out extends each of its own prefixes' heads and
//! no head it does not contain; an audit log that checks out without acknowledged breaks links
//! every record to the one before it.
#![no_main]

use coffer_api::chain::CHAIN_START;
use coffer_api::{AuditResponse, HistoryEntry, HistoryResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = serde_json::from_slice::<HistoryResponse>(data) {
        if let Ok((version, head)) = coffer_api::verify_history(&h.entries) {
            assert_eq!(version, h.entries.len() as u64);
            assert!(coffer_api::history_extends(&h.entries, version, &head));
            for (i, e) in h.entries.iter().enumerate() {
                let (v, hd) = coffer_api::verify_history(&h.entries[..=i]).unwrap();
                assert_eq!((v, hd), (e.version, e.hash()));
                assert!(coffer_api::history_extends(&h.entries, v, &hd));
            }
            let mut other = head;
            other[0] ^= 1;
            assert!(!coffer_api::history_extends(&h.entries, version, &other));
            assert!(!coffer_api::history_extends(&h.entries, version + 1, &head));
        }
        // Hashing is a function of the fields only.
        let again: Vec<HistoryEntry> =
            serde_json::from_slice(&serde_json::to_vec(&h.entries).unwrap()).unwrap();
        for (a, b) in h.entries.iter().zip(&again) {
            assert_eq!(a.hash(), b.hash());
        }
    }
    if let Ok(a) = serde_json::from_slice::<AuditResponse>(data) {
        if let Ok(check) = coffer_api::verify_audit(&a.records) {
            assert_eq!(check.records, a.records.len() as u64);
            if check.acknowledged_breaks.is_empty() {
                let mut prev = CHAIN_START;
                for (i, r) in a.records.iter().enumerate() {
                    assert_eq!(r.seq, i as u64 + 1);
                    assert_eq!(r.prev, prev);
                    prev = r.chain_hash();
                }
                assert_eq!(prev, check.head);
            }
        }
    }
});
