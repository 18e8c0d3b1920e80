//! Recorded CPUID (`RecordedCpuid::parse`) and EPC enumeration (`epc::read_epc`) on whatever
//! a hypervisor or a recording file could say: never panics; a parsed recording re-renders
//! (`to_text`) and re-parses equal; an accepted EPC is consistent (sections non-empty,
//! 4 KiB-aligned, below 2^52, total = sum) and re-recording it reads the same.
#![no_main]

use coffer_node_agent::epc::{self, RecordedCpuid, MAX_EPC_SUBLEAVES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(rec) = RecordedCpuid::parse(data) else {
        return;
    };
    let again = RecordedCpuid::parse(rec.to_text().as_bytes()).expect("to_text re-parses");
    assert_eq!(again, rec, "parse/to_text round trip");
    let result = epc::read_epc(&rec);
    if let Ok(sgx) = &result {
        assert!(!sgx.sections.is_empty());
        assert!(sgx.sections.len() <= MAX_EPC_SUBLEAVES as usize);
        let mut sum: u128 = 0;
        for s in &sgx.sections {
            assert!(s.size > 0 && s.size % 4096 == 0 && s.size < 1 << 52);
            assert!(s.base % 4096 == 0 && s.base < 1 << 52);
            sum += u128::from(s.size);
        }
        assert_eq!(sum, u128::from(sgx.total_bytes));
    }
    let rerecorded = RecordedCpuid::record(&rec);
    assert_eq!(
        format!("{:?}", epc::read_epc(&rerecorded)),
        format!("{result:?}"),
        "a recording of what read_epc looked at reads the same"
    );
});
