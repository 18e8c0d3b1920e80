//! Fuzz the SEV-SNP side of `coffer_evidence::snp`: `Report::parse` never panics and agrees
//! with the bytes it accepted; `verify_snp` over arbitrary report and certificate bytes (split
//! from the input) never panics and never accepts (no input carries an AMD-signed chain).
#![no_main]

use coffer_evidence::snp::{
    certificates, verify_snp, Report, SnpAnchors, SnpCollateral, REPORT_LEN,
};
use coffer_evidence::Item;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Report::parse(data) {
        assert_eq!(data.len(), REPORT_LEN);
        assert!(matches!(r.version, 2 | 3 | 5));
        assert_eq!(&data[0x50..0x90], &r.report_data[..]);
        assert_eq!(&data[0x90..0xC0], &r.measurement[..]);
        assert_eq!(r.cpuid.is_some(), r.version >= 3);
        let _ = (r.debug(), r.abi_min(), r.product_from_cpuid());
    }
    let _ = certificates(data, Item::AskCertificate);
    if data.len() > REPORT_LEN + 3 {
        let (report, rest) = data.split_at(REPORT_LEN);
        let third = rest.len() / 3;
        let (vek, rest) = rest.split_at(third);
        let (ask, ark) = rest.split_at(third);
        let c = SnpCollateral {
            vek,
            ask,
            ark,
            crl: None,
        };
        assert!(verify_snp(report, &c, &SnpAnchors::amd(), 1_700_000_000).is_err());
    }
});
