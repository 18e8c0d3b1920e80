//! SEV-SNP verification on real reports from go-sev-guest, virtee/sev and trustee
//! (`testdata/vectors/snp`, provenance in its README), each with its expected verdict; and
//! what an attacker can change: any bit of the signed report, a byte of the VCEK, another
//! chip's VCEK, another product's or a self-made ARK, a VCEK under the VLEK intermediate, the
//! clock.

use std::path::PathBuf;

use coffer_evidence::snp::{
    certificates, verify_snp, Product, Report, Signer, SnpAnchors, SnpCollateral, SIGNED_LEN,
};
use coffer_evidence::{ErrorKind, Item};

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors/snp")
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(vectors().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The certificates of a PEM bundle, in order.
fn pem(rel: &str) -> Vec<Vec<u8>> {
    certificates(&read(rel), Item::AskCertificate).unwrap()
}

#[derive(Clone)]
struct Case {
    report: Vec<u8>,
    vek: Vec<u8>,
    ask: Vec<u8>,
    ark: Vec<u8>,
    now: i64,
}

impl Case {
    /// A vector: its report, its VEK, and the KDS bundle `chain` whose certificate `ask_at` is
    /// the intermediate (the ARK is always second).
    fn load(report: &str, vek: &str, chain: &str, ask_at: usize, now: i64) -> Case {
        let chain = pem(chain);
        Case {
            report: read(report),
            vek: read(vek),
            ask: chain[ask_at].clone(),
            ark: chain[1].clone(),
            now,
        }
    }
    fn collateral(&self) -> SnpCollateral<'_> {
        SnpCollateral {
            vek: &self.vek,
            ask: &self.ask,
            ark: &self.ark,
            crl: None,
        }
    }
    fn verify(&self) -> Result<coffer_evidence::snp::SnpVerified, coffer_evidence::Error> {
        verify_snp(
            &self.report,
            &self.collateral(),
            &SnpAnchors::amd(),
            self.now,
        )
    }
}

/// go-sev-guest's Milan v2 report (debug policy), at 2022-09-24T01:00:00Z.
fn go_sev_guest() -> Case {
    Case::load(
        "go-sev-guest/attestation.bin",
        "go-sev-guest/vcek.testcer",
        "go-sev-guest/trust/ask_ark_milan.pem",
        0,
        1_663_981_200,
    )
}

/// virtee/sev's Milan v2 report, at 2023-11-14.
fn virtee() -> Case {
    Case::load(
        "virtee-sev/report_milan.bin.derived",
        "virtee-sev/vcek_milan.der",
        "virtee-sev/cert_chain_milan",
        0,
        1_700_000_000,
    )
}

/// trustee's VCEK-signed Milan report and its VLEK-signed v3 report (bundle: ASK, ARK, ASVK).
fn trustee_vcek() -> Case {
    Case::load(
        "trustee/test-report.bin",
        "trustee/test-vcek.der",
        "trustee/milan_ask_ark_asvk.pem",
        0,
        1_700_000_000,
    )
}

fn trustee_vlek() -> Case {
    Case::load(
        "trustee/test-vlek-report.bin",
        "trustee/test-vlek.der",
        "trustee/milan_ask_ark_asvk.pem",
        2,
        1_750_000_000,
    )
}

#[test]
fn virtee_report_hex_and_derived_binary_agree() {
    let hex_text = String::from_utf8(read("virtee-sev/report_milan.hex")).unwrap();
    let bytes = hex::decode(hex_text.trim()).unwrap();
    assert_eq!(bytes, read("virtee-sev/report_milan.bin.derived"));
}

#[test]
fn real_reports_verify_with_their_expected_fields() {
    let v = go_sev_guest().verify().expect("go-sev-guest vector");
    assert_eq!(v.product, Product::Milan);
    assert_eq!(v.report.signer, Signer::Vcek);
    assert_eq!(v.report.version, 2);
    assert!(v.report.debug(), "this vector's policy has DEBUG set");
    assert_eq!(v.report.policy, 0xb0000);
    assert_eq!(
        (
            v.reported_tcb.bootloader,
            v.reported_tcb.tee,
            v.reported_tcb.snp,
            v.reported_tcb.microcode
        ),
        (2, 0, 5, 68)
    );
    assert_eq!(&v.report.report_data[..5], &[1, 2, 3, 4, 5]);
    assert!(!v.crl_checked);

    let v = virtee().verify().expect("virtee vector");
    assert!(!v.report.debug());
    assert_eq!(v.report.current_version, (1, 52, 4));
    assert_eq!(
        (
            v.reported_tcb.bootloader,
            v.reported_tcb.snp,
            v.reported_tcb.microcode
        ),
        (3, 8, 115)
    );

    let v = trustee_vcek().verify().expect("trustee VCEK vector");
    assert_eq!(v.report.policy, 0x3001f);

    let v = trustee_vlek().verify().expect("trustee VLEK vector");
    assert_eq!(v.report.signer, Signer::Vlek);
    assert_eq!(v.report.version, 3);
    assert_eq!(v.report.cpuid, Some((0x19, 1, 1)));
    assert_eq!(v.report.chip_id, [0; 64]);
    assert_eq!(
        (
            v.reported_tcb.bootloader,
            v.reported_tcb.snp,
            v.reported_tcb.microcode
        ),
        (4, 24, 217)
    );
}

#[test]
fn every_bit_of_the_signed_report_matters() {
    for case in [virtee(), trustee_vlek()] {
        for byte in 0..SIGNED_LEN {
            let mut c = case.clone();
            c.report[byte] ^= 0x01;
            let e = c
                .verify()
                .expect_err(&format!("byte {byte:#x} flipped was accepted"));
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::BadSignature
                        | ErrorKind::Malformed
                        | ErrorKind::Unsupported
                        | ErrorKind::PolicyMismatch
                ),
                "byte {byte:#x}: {e}"
            );
        }
        // The signature itself.
        for byte in [
            SIGNED_LEN,
            SIGNED_LEN + 47,
            SIGNED_LEN + 72,
            SIGNED_LEN + 119,
        ] {
            let mut c = case.clone();
            c.report[byte] ^= 0x80;
            let e = c.verify().expect_err("signature changed");
            assert_eq!(e.kind(), ErrorKind::BadSignature, "{e}");
        }
        // The unused high bytes of R and the padding after the signature are checked too.
        for byte in [SIGNED_LEN + 48, SIGNED_LEN + 144, 0x4A0 - 1] {
            let mut c = case.clone();
            c.report[byte] = 1;
            assert_eq!(c.verify().unwrap_err().kind(), ErrorKind::Malformed);
        }
    }
}

#[test]
fn a_changed_or_foreign_certificate_is_refused() {
    // A byte of the VCEK (inside its signed part): its signature by the ASK fails.
    let mut c = trustee_vcek();
    c.vek[42] = c.vek[42].wrapping_add(1);
    let e = c.verify().unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::BadSignature | ErrorKind::Malformed),
        "{e}"
    );

    // Another chip's VCEK (a genuine one): the report's signature does not verify under it.
    let mut c = trustee_vcek();
    c.vek = read("virtee-sev/vcek_milan.der");
    let e = c.verify().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadSignature, "{e}");

    // Genoa's ARK for a Milan chain: the Milan ASK is not signed by it.
    let mut c = virtee();
    c.ark = pem("go-sev-guest/trust/ask_ark_genoa.pem")[1].clone();
    let e = c.verify().unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::BadSignature | ErrorKind::PolicyMismatch
        ),
        "{e}"
    );

    // The VLEK intermediate (ASVK) above a VCEK: refused.
    let mut c = trustee_vcek();
    c.ask = pem("trustee/milan_ask_ark_asvk.pem")[2].clone();
    let e = c.verify().unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::BadSignature | ErrorKind::PolicyMismatch
        ),
        "{e}"
    );

    // A root that is not AMD's: the anchors pin keys, not names.
    let c = virtee();
    let e = verify_snp(
        &c.report,
        &c.collateral(),
        &SnpAnchors::from_ark(
            Product::Milan,
            &pem("go-sev-guest/trust/ask_ark_genoa.pem")[1],
        )
        .unwrap(),
        c.now,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UntrustedRoot, "{e}");
}

#[test]
fn the_clock_matters() {
    // Before the VCEK was issued, and after it expired.
    for now in [1_600_000_000, 2_000_000_000] {
        let mut c = virtee();
        c.now = now;
        let e = c.verify().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Expired, "{e}");
    }
    // trustee's VLEK is valid for one year only.
    let mut c = trustee_vlek();
    c.now = 1_800_000_000;
    assert_eq!(c.verify().unwrap_err().kind(), ErrorKind::Expired);
}

#[test]
fn both_hwid_encodings_parse() {
    // trustee's synthetic VCEKs (bad signatures) carry hwID raw (legacy) and as an OCTET
    // STRING (new); neither verifies, but both must fail on the signature, not the parser.
    for f in [
        "trustee/test-vcek-invalid-legacy.der",
        "trustee/test-vcek-invalid-new.der",
    ] {
        let mut c = trustee_vcek();
        c.vek = read(f);
        let e = c.verify().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadSignature, "{f}: {e}");
    }
    let r = Report::parse(&read("trustee/test-report.bin")).unwrap();
    assert_eq!(r.signer, Signer::Vcek);
}
