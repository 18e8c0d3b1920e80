//! What Intel's QVL and QvE refuse, refused here with every signature valid: the simulated
//! platform signs whatever content each test publishes (`SimCollateralOptions::edit_*`), so the
//! refusal can only come from the check under test, and each test names the reason it expects.

use coffer_evidence::sim::{
    SgxQuoteSpec, SimCollateralOptions, SimPlatform, SimQe, TdxQuoteSpec, SERIALS,
};
use coffer_evidence::{verify, Collateral, Error, ErrorKind, Item, TcbStatus, Tee, Verifier};
use serde_json::Value;

const NOW: i64 = 1_800_000_000;

fn sim() -> SimPlatform {
    SimPlatform::from_seed([42; 32])
}

fn collateral(tee: Tee, o: SimCollateralOptions) -> Collateral {
    sim().collateral_with(tee, NOW, &o)
}

fn sgx_quote() -> Vec<u8> {
    sim().sgx_quote(&SgxQuoteSpec::default())
}

/// Refused on the uncached and on the cached path alike, with the same error.
fn refused(q: &[u8], c: &Collateral) -> Error {
    let anchors = sim().trust_anchors();
    let e = verify(q, c, &anchors, NOW).expect_err("accepted");
    let cached = Verifier::new(anchors);
    assert_eq!(cached.verify(q, c, NOW).unwrap_err(), e, "cached path");
    assert_eq!(cached.verify(q, c, NOW).unwrap_err(), e, "warm cached path");
    e
}

fn assert_reason(e: &Error, kind: ErrorKind, words: &str) {
    assert_eq!(e.kind(), kind, "{e}");
    assert!(
        e.to_string().contains(words),
        "{e:?} does not say {words:?}"
    );
}

fn edit_tcb(f: fn(&mut Value)) -> SimCollateralOptions {
    SimCollateralOptions {
        edit_tcb_info: Some(f),
        ..SimCollateralOptions::default()
    }
}

fn edit_qe(f: fn(&mut Value)) -> SimCollateralOptions {
    SimCollateralOptions {
        edit_qe_identity: Some(f),
        ..SimCollateralOptions::default()
    }
}

#[test]
fn the_baseline_verifies() {
    let v = verify(
        &sgx_quote(),
        &collateral(Tee::Sgx, SimCollateralOptions::default()),
        &sim().trust_anchors(),
        NOW,
    )
    .unwrap();
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
}

#[test]
fn a_qe_vendor_id_other_than_intels_is_refused() {
    let q = sim().sgx_quote(&SgxQuoteSpec {
        qe: SimQe {
            vendor_id: [0x11; 16],
            ..SimQe::default()
        },
        ..SgxQuoteSpec::default()
    });
    let e = refused(&q, &collateral(Tee::Sgx, SimCollateralOptions::default()));
    assert_reason(&e, ErrorKind::PolicyMismatch, "QE vendor ID");
}

#[test]
fn fmspc_or_pce_id_of_the_tcb_info_must_be_the_pck_certificates() {
    let c = collateral(Tee::Sgx, edit_tcb(|t| t["fmspc"] = "00906ED50000".into()));
    assert_reason(
        &refused(&sgx_quote(), &c),
        ErrorKind::PolicyMismatch,
        "FMSPC",
    );
    let c = collateral(Tee::Sgx, edit_tcb(|t| t["pceId"] = "0100".into()));
    assert_reason(
        &refused(&sgx_quote(), &c),
        ErrorKind::PolicyMismatch,
        "PCE-ID",
    );
}

#[test]
fn the_qe_must_match_its_identity() {
    let q = sgx_quote();
    let c = collateral(Tee::Sgx, edit_qe(|j| j["isvprodid"] = 7.into()));
    assert_reason(
        &refused(&q, &c),
        ErrorKind::PolicyMismatch,
        "QE identity ISVPRODID",
    );
    let c = collateral(Tee::Sgx, edit_qe(|j| j["miscselect"] = "00000001".into()));
    assert_reason(
        &refused(&q, &c),
        ErrorKind::PolicyMismatch,
        "QE identity MISCSELECT",
    );
    let c = collateral(
        Tee::Sgx,
        edit_qe(|j| j["attributes"] = "31000000000000000000000000000000".into()),
    );
    assert_reason(
        &refused(&q, &c),
        ErrorKind::PolicyMismatch,
        "QE identity ATTRIBUTES",
    );
    let c = collateral(
        Tee::Sgx,
        edit_qe(|j| j["mrsigner"] = "AB".repeat(32).into()),
    );
    assert_reason(
        &refused(&q, &c),
        ErrorKind::PolicyMismatch,
        "QE identity MRSIGNER",
    );
}

#[test]
fn a_debug_qe_is_refused_even_when_the_identity_masks_the_debug_bit() {
    let q = sim().sgx_quote(&SgxQuoteSpec {
        qe: SimQe {
            debug: true,
            ..SimQe::default()
        },
        ..SgxQuoteSpec::default()
    });
    // Under the identity's mask the DEBUG bit differs: an ATTRIBUTES mismatch.
    let c = collateral(Tee::Sgx, SimCollateralOptions::default());
    assert_reason(
        &refused(&q, &c),
        ErrorKind::PolicyMismatch,
        "QE identity ATTRIBUTES",
    );
    // With DEBUG masked out, the debug check itself refuses it.
    let c = collateral(
        Tee::Sgx,
        edit_qe(|j| j["attributesMask"] = "F9FFFFFFFFFFFFFF0000000000000000".into()),
    );
    assert_reason(&refused(&q, &c), ErrorKind::PolicyMismatch, "debug mode");
}

#[test]
fn a_tdx_module_signer_other_than_the_tcb_infos_is_refused() {
    let q = sim().tdx_quote(&TdxQuoteSpec::default());
    let c = collateral(
        Tee::Tdx,
        edit_tcb(|t| t["tdxModule"]["mrsigner"] = "11".repeat(48).into()),
    );
    assert_reason(&refused(&q, &c), ErrorKind::PolicyMismatch, "MRSIGNERSEAM");
}

#[test]
fn a_tdx_module_svn_below_every_level_of_its_identity_is_refused() {
    let q = sim().tdx_quote(&TdxQuoteSpec {
        module_version: 1,
        ..TdxQuoteSpec::default()
    });
    let c = collateral(
        Tee::Tdx,
        edit_tcb(|t| {
            t["tdxModuleIdentities"][0]["tcbLevels"][0]["tcb"]["isvsvn"] = 200.into();
        }),
    );
    assert_reason(&refused(&q, &c), ErrorKind::TcbNotMatched, "TDX_01");
}

/// A TD 1.5 quote (version 5, body type 3) whose TDX level and module are out of date, but
/// whose TEE_TCB_SVN2 says the already-loaded module would reach the latest level: Intel's
/// status is TDRelaunchAdvised. A TEE_TCB_SVN2 naming a module version the TCB info has no
/// `TDX_xx` identity for is refused.
#[test]
fn a_v5_td15_quote_verifies_end_to_end_and_relaunch_is_advised_as_intel_says() {
    let sim = sim();
    let anchors = sim.trust_anchors();
    let plain = sim.tdx_quote(&TdxQuoteSpec {
        td15: Some(([0; 16], [0x5e; 48])),
        ..TdxQuoteSpec::default()
    });
    let v = verify(
        &plain,
        &collateral(Tee::Tdx, SimCollateralOptions::default()),
        &anchors,
        NOW,
    )
    .unwrap();
    assert_eq!(v.quote_version, 5);
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    let coffer_evidence::Measurement::Tdx(m) = &v.measurement else {
        panic!("not TDX")
    };
    assert_eq!(m.mrservicetd, Some([0x5e; 48]));

    // The latest TDX level wants TDX component 2 at 3 (the TD has 2): the TD matches the
    // OutOfDate level; its module (TDX_01, SVN 5) is OutOfDate below SVN 10.
    let relaunch = |t: &mut Value| {
        t["tcbLevels"][0]["tcb"]["tdxtcbcomponents"][2]["svn"] = 3.into();
        t["tcbLevels"][1]["tcb"]["tdxtcbcomponents"][2]["svn"] = 2.into();
        t["tdxModuleIdentities"][0]["tcbLevels"] = serde_json::json!([
            { "tcb": { "isvsvn": 10 }, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": "UpToDate" },
            { "tcb": { "isvsvn": 0 }, "tcbDate": "2023-01-01T00:00:00Z", "tcbStatus": "OutOfDate" },
        ]);
    };
    let c = collateral(Tee::Tdx, edit_tcb(relaunch));
    let td = |svn2_module_version: u8| {
        let mut svn2 = [0u8; 16];
        svn2[0] = 10;
        svn2[1] = svn2_module_version;
        svn2[2] = 3;
        sim.tdx_quote(&TdxQuoteSpec {
            module_version: 1,
            td15: Some((svn2, [0; 48])),
            ..TdxQuoteSpec::default()
        })
    };
    let v = verify(&td(1), &c, &anchors, NOW).unwrap();
    assert_eq!(v.tcb_status, TcbStatus::TDRelaunchAdvised);
    // The same TD in a TD 1.0 quote has no TEE_TCB_SVN2: plainly out of date.
    let td10 = sim.tdx_quote(&TdxQuoteSpec {
        module_version: 1,
        ..TdxQuoteSpec::default()
    });
    assert_eq!(
        verify(&td10, &c, &anchors, NOW).unwrap().tcb_status,
        TcbStatus::OutOfDate
    );
    assert_reason(&refused(&td(2), &c), ErrorKind::TcbNotMatched, "TDX_02");
}

#[test]
fn a_ca_or_signer_listed_in_the_root_crl_is_revoked() {
    let q = sgx_quote();
    for (serial, item) in [
        (SERIALS.pck_ca, Item::PckCaCertificate),
        (SERIALS.tcb_signing, Item::TcbSigningCertificate),
        (SERIALS.root_ca, Item::RootCaCertificate),
    ] {
        let c = collateral(
            Tee::Sgx,
            SimCollateralOptions {
                root_crl_revokes: vec![serial],
                ..SimCollateralOptions::default()
            },
        );
        let e = refused(&q, &c);
        assert!(
            matches!(e, Error::Revoked { item: i, by: Item::RootCaCrl, .. } if i == item),
            "{item}: {e}"
        );
    }
}

#[test]
fn a_qe_identity_chain_to_another_root_is_refused() {
    let other = SimPlatform::from_seed([43; 32]);
    let mut c = collateral(Tee::Sgx, SimCollateralOptions::default());
    let theirs = other.collateral_with(Tee::Sgx, NOW, &SimCollateralOptions::default());
    c.qe_identity_issuer_chain = theirs.qe_identity_issuer_chain;
    c.qe_identity = theirs.qe_identity;
    c.qe_identity_signature = theirs.qe_identity_signature;
    // Under our root only: their root is not pinned.
    assert_reason(
        &refused(&sgx_quote(), &c),
        ErrorKind::UntrustedRoot,
        "not pinned",
    );
    // Both roots pinned: each chain verifies, but they end in different roots.
    let both =
        coffer_evidence::TrustAnchors::from_pem(&(sim().root_ca_pem() + &other.root_ca_pem()))
            .unwrap();
    let e = verify(&sgx_quote(), &c, &both, NOW).unwrap_err();
    assert_reason(&e, ErrorKind::PolicyMismatch, "different roots");
}

#[test]
fn tcb_info_of_another_tcb_type_or_component_count_is_refused() {
    let c = collateral(Tee::Sgx, edit_tcb(|t| t["tcbType"] = 1.into()));
    assert_reason(
        &refused(&sgx_quote(), &c),
        ErrorKind::Unsupported,
        "tcbType 1",
    );
    let c = collateral(
        Tee::Sgx,
        edit_tcb(|t| {
            let comps = t["tcbLevels"][0]["tcb"]["sgxtcbcomponents"]
                .as_array_mut()
                .unwrap();
            comps.pop();
        }),
    );
    assert_reason(&refused(&sgx_quote(), &c), ErrorKind::Malformed, "15");
    let c = collateral(
        Tee::Sgx,
        edit_tcb(|t| {
            let comps = t["tcbLevels"][0]["tcb"]["sgxtcbcomponents"]
                .as_array_mut()
                .unwrap();
            comps.push(serde_json::json!({ "svn": 0 }));
        }),
    );
    assert_reason(&refused(&sgx_quote(), &c), ErrorKind::Malformed, "17");
}

#[test]
fn crls_need_next_update_and_the_extensions_intel_requires() {
    let c = collateral(
        Tee::Sgx,
        SimCollateralOptions {
            crls_without_next_update: true,
            ..SimCollateralOptions::default()
        },
    );
    assert_reason(
        &refused(&sgx_quote(), &c),
        ErrorKind::Malformed,
        "without nextUpdate",
    );
    let c = collateral(
        Tee::Sgx,
        SimCollateralOptions {
            crls_without_authority_key_id: true,
            ..SimCollateralOptions::default()
        },
    );
    assert_reason(
        &refused(&sgx_quote(), &c),
        ErrorKind::Malformed,
        "Authority Key Identifier",
    );
}

/// The sim's TCB info, QE identity and CRLs are issued at NOW − 1 h and end at NOW + 30 days:
/// the first second and the last are inside for the documents, while a CRL's nextUpdate is
/// exclusive (RFC 5280: a new CRL is due at that instant).
#[test]
fn time_boundaries_are_exact() {
    let c = collateral(Tee::Sgx, SimCollateralOptions::default());
    let q = sgx_quote();
    let anchors = sim().trust_anchors();
    let issue = NOW - 3600;
    let next = NOW + 30 * 24 * 3600;
    let verifier = Verifier::new(anchors.clone());
    for (now, ok) in [
        (issue - 1, false),
        (issue, true),
        (next - 1, true),
        (next, false),
    ] {
        let got = verify(&q, &c, &anchors, now);
        assert_eq!(got.is_ok(), ok, "at {now}: {got:?}");
        assert_eq!(verifier.verify(&q, &c, now).is_ok(), ok, "cached, at {now}");
        if let Err(e) = got {
            assert_eq!(e.kind(), ErrorKind::Expired, "{e}");
        }
    }
    // At `next` both CRLs are due; the one listed first is named.
    let e = verify(&q, &c, &anchors, next).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Expired {
                item: Item::RootCaCrl | Item::PckCrl,
                ..
            }
        ),
        "{e}"
    );
    // A TCB info that ends one second before the CRLs: its last second is still inside.
    let c = collateral(
        Tee::Sgx,
        edit_tcb(|t| {
            t["nextUpdate"] = "2027-01-16T08:00:00Z".into();
        }),
    );
    let end = NOW + 86_400; // 2027-01-16T08:00:00Z
    assert!(verify(&q, &c, &anchors, end).is_ok());
    let e = verify(&q, &c, &anchors, end + 1).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Expired {
                item: Item::TcbInfo,
                ..
            }
        ),
        "{e}"
    );
}

/// The caches are keyed by content: new collateral for another FMSPC, a re-encoded PCK chain
/// and collateral passed by `Arc` all verify, and a changed item is verified afresh.
#[test]
fn the_verifier_cache_is_keyed_by_content() {
    let sim = sim();
    let q = sgx_quote();
    let verifier = Verifier::new(sim.trust_anchors());
    let c = std::sync::Arc::new(collateral(Tee::Sgx, SimCollateralOptions::default()));
    verifier.verify_shared(&q, &c, NOW).unwrap();
    verifier.verify_shared(&q, &c, NOW).unwrap();
    // Same items, another TCB info: its (bad) signature is checked, the rest is known.
    let mut other = (*c).clone();
    other.tcb_info = other.tcb_info.replace("\"tcbType\":0", "\"tcbType\":0 ");
    assert_eq!(
        verifier.verify(&q, &other, NOW).unwrap_err(),
        Error::BadSignature {
            item: Item::TcbInfo
        }
    );
    // The PCK chain re-encoded (other line breaks): the same platform.
    let parsed = coffer_evidence::Quote::parse(&q).unwrap();
    let pem = parsed.pck_chain_pem().unwrap().replace('\n', "\r\n");
    let mut data = pem.into_bytes();
    data.push(0);
    let off = q.len() - parsed.certification_data().data.len();
    let delta = data.len() - parsed.certification_data().data.len();
    let mut q2 = q[..off].to_vec();
    q2.extend_from_slice(&data);
    for at in [off - 4, parsed.signed_bytes().len()] {
        let v = u32::from_le_bytes(q2[at..at + 4].try_into().unwrap()) + delta as u32;
        q2[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    assert_eq!(
        verifier.verify_shared(&q2, &c, NOW).unwrap(),
        verifier.verify_shared(&q, &c, NOW).unwrap()
    );
    // The same content in a new Arc, or by reference, is found by its bytes.
    drop(c);
    let c = std::sync::Arc::new(collateral(Tee::Sgx, SimCollateralOptions::default()));
    verifier.verify_shared(&q, &c, NOW).unwrap();
    verifier.verify(&q, &c, NOW).unwrap();
    verifier.clear_cache();
    verifier.verify_shared(&q, &c, NOW).unwrap();
    // One byte changed anywhere in a remembered set makes it another set, verified afresh.
    let mut crl = (*c).clone();
    let last = crl.pck_crl.len() - 1;
    crl.pck_crl[last] ^= 1;
    assert_eq!(
        verifier.verify(&q, &crl, NOW).unwrap_err(),
        Error::BadSignature { item: Item::PckCrl }
    );
}
