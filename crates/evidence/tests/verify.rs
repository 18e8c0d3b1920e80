//! End-to-end verification: the DCAP vectors, a walk over every byte of every signed region,
//! swapped certificates, clock moves, Intel's sample data, the TDX parse vectors and the
//! simulated platform.

use base64::Engine as _;
use coffer_evidence::sim::{SgxQuoteSpec, SimCollateralOptions, SimPlatform, TdxQuoteSpec};
use coffer_evidence::{
    split_signed_json, verify, Collateral, Error, ErrorKind, Item, Measurement, Quote, TcbStatus,
    Tee, TrustAnchors, Verifier,
};

const VEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/vectors");

fn read(p: &str) -> Vec<u8> {
    std::fs::read(format!("{VEC}/{p}")).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn read_str(p: &str) -> String {
    String::from_utf8(read(p)).unwrap()
}

fn vector(name: &str) -> (Vec<u8>, Collateral) {
    let q = read(&format!("dcap/{name}"));
    let c = Collateral::from_json(&read(&format!("dcap/{name}_collateral.json"))).unwrap();
    (q, c)
}

/// 2025-06-25T00:00:00Z: inside both vectors' collateral windows.
const NOW: i64 = 1_750_809_600;

fn intel() -> TrustAnchors {
    TrustAnchors::intel()
}

#[test]
fn sgx_vector_verifies_with_expected_status() {
    let (q, c) = vector("sgx_quote");
    let v = verify(&q, &c, &intel(), NOW).unwrap();
    assert_eq!(v.tee, Tee::Sgx);
    assert_eq!(v.quote_version, 3);
    assert_eq!(v.tcb_status, TcbStatus::ConfigurationAndSWHardeningNeeded);
    assert_eq!(v.advisory_ids, vec!["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert_eq!(hex::encode(v.fmspc), "00a067110000");
    let parsed = Quote::parse(&q).unwrap();
    assert_eq!(&v.report_data, parsed.report_data());
    let Measurement::Sgx(m) = &v.measurement else {
        panic!("not SGX")
    };
    assert_eq!(m.mrenclave, parsed.sgx_report().unwrap().mr_enclave);
    assert!(v.collateral_not_before <= NOW && NOW <= v.collateral_not_after);
    // The cached path gives the same answer, twice.
    let verifier = Verifier::new(intel());
    assert_eq!(verifier.verify(&q, &c, NOW).unwrap(), v);
    assert_eq!(verifier.verify(&q, &c, NOW).unwrap(), v);
}

#[test]
fn tdx_vector_verifies_with_expected_status() {
    let (q, c) = vector("tdx_quote");
    let v = verify(&q, &c, &intel(), NOW).unwrap();
    assert_eq!(v.tee, Tee::Tdx);
    assert_eq!(v.quote_version, 4);
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    assert!(v.advisory_ids.is_empty());
    let parsed = Quote::parse(&q).unwrap();
    assert_eq!(parsed.padding_len(), 70);
    let Measurement::Tdx(m) = &v.measurement else {
        panic!("not TDX")
    };
    let td = parsed.td_report().unwrap();
    assert_eq!(m.mrtd, td.mr_td);
    assert_eq!(m.rtmr, td.rtmr);
    assert_eq!(m.debug, td.debug());
    let verifier = Verifier::new(intel());
    assert_eq!(verifier.verify(&q, &c, NOW).unwrap(), v);
    assert_eq!(verifier.verify(&q, &c, NOW).unwrap(), v);
}

#[test]
fn vectors_are_refused_under_another_root() {
    let (q, c) = vector("sgx_quote");
    let sim = SimPlatform::from_seed([1; 32]);
    let e = verify(&q, &c, &sim.trust_anchors(), NOW).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UntrustedRoot, "{e}");
}

// ---------------------------------------------------------------------------------------------
// The tamper walk.

/// Every way of flipping the low bit of one DER byte of one certificate in PEM `text`, keeping
/// the text's line layout (so the surrounding lengths stay the same).
fn pem_der_flips(text: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut search = 0;
    while let Some(start) = text[search..].find("-----BEGIN CERTIFICATE-----") {
        let body_start = search + start + "-----BEGIN CERTIFICATE-----".len();
        let body_end = body_start
            + text[body_start..]
                .find("-----END CERTIFICATE-----")
                .unwrap();
        let positions: Vec<usize> = (body_start..body_end)
            .filter(|&i| !bytes[i].is_ascii_whitespace())
            .collect();
        let b64_text: String = positions.iter().map(|&i| bytes[i] as char).collect();
        let der = b64.decode(&b64_text).unwrap();
        for i in 0..der.len() {
            let mut d = der.clone();
            d[i] ^= 0x01;
            let enc = b64.encode(&d);
            assert_eq!(enc.len(), positions.len());
            let mut t = bytes.to_vec();
            for (p, c) in positions.iter().zip(enc.bytes()) {
                t[*p] = c;
            }
            out.push(String::from_utf8(t).unwrap());
        }
        search = body_end;
    }
    assert!(!out.is_empty());
    out
}

fn refused(q: &[u8], c: &Collateral) -> Error {
    refused_at(q, c, "")
}

fn refused_at(q: &[u8], c: &Collateral, what: &str) -> Error {
    match verify(q, c, &intel(), NOW) {
        Ok(v) => panic!(
            "tampered evidence verified ({what}): {:?} {:?}",
            v.tee, v.tcb_status
        ),
        Err(e) => e,
    }
}

use ErrorKind::*;
const CERT_KINDS: &[ErrorKind] = &[Malformed, Unsupported, BadSignature, UntrustedRoot];

fn assert_kind(e: &Error, allowed: &[ErrorKind], what: &str) {
    assert!(
        allowed.contains(&e.kind()),
        "{what}: {e} ({:?}) not in {allowed:?}",
        e.kind()
    );
}

fn walk(name: &str) -> usize {
    let (q, c) = vector(name);
    let parsed = Quote::parse(&q).unwrap();
    let signed_len = parsed.signed_bytes().len();
    let mut n = 0;

    // 1. Header and body: refused at parse (version, key type, TEE type, non-zero reserved
    //    fields) or by the quote signature.
    for i in 0..signed_len {
        let mut t = q.clone();
        t[i] ^= 0x01;
        let e = refused_at(&t, &c, &format!("signed byte {i}"));
        if i < 8 {
            assert_kind(&e, &[Malformed, Unsupported], &format!("header byte {i}"));
        } else if e.kind() == Malformed {
            assert!(e.to_string().contains("reserved"), "byte {i}: {e}");
        } else {
            assert_eq!(
                e,
                Error::BadSignature {
                    item: Item::QuoteSignature
                },
                "byte {i}"
            );
        }
        n += 1;
    }
    // 2. Signature data: quote signature, attestation key, QE report, its signature, auth data.
    let sd = signed_len + 4;
    let qe_off = if parsed.version() == 3 {
        sd + 128
    } else {
        sd + 134
    };
    let auth_off = qe_off + 384 + 64 + 2;
    let regions: [(usize, usize, &str); 5] = [
        (sd, sd + 64, "quote signature"),
        (sd + 64, sd + 128, "attestation key"),
        (qe_off, qe_off + 384, "QE report"),
        (qe_off + 384, qe_off + 448, "QE report signature"),
        (
            auth_off,
            auth_off + parsed.qe_auth_data().len(),
            "QE auth data",
        ),
    ];
    for (from, to, what) in regions {
        for i in from..to {
            let mut t = q.clone();
            t[i] ^= 0x01;
            let e = refused_at(&t, &c, &format!("{what} byte {i}"));
            match what {
                "quote signature" => {
                    assert_eq!(
                        e,
                        Error::BadSignature {
                            item: Item::QuoteSignature
                        },
                        "{what} {i}"
                    )
                }
                "attestation key" | "QE auth data" => {
                    assert_eq!(e, Error::QeReportDataMismatch, "{what} {i}")
                }
                "QE report" if e.kind() == Malformed => {
                    assert!(e.to_string().contains("reserved"), "{what} {i}: {e}")
                }
                _ => assert_eq!(
                    e,
                    Error::BadSignature {
                        item: Item::QeReport
                    },
                    "{what} {i}"
                ),
            }
            n += 1;
        }
    }
    // 3. The PCK chain in the quote: every DER byte of every certificate.
    let pem = parsed.pck_chain_pem().unwrap();
    let pem_off = q
        .windows(pem.len())
        .position(|w| w == pem.as_bytes())
        .unwrap();
    for (k, t_pem) in pem_der_flips(pem).into_iter().enumerate() {
        let mut t = q.clone();
        t[pem_off..pem_off + pem.len()].copy_from_slice(t_pem.as_bytes());
        let what = format!("PCK chain DER flip {k}");
        assert_kind(&refused_at(&t, &c, &what), CERT_KINDS, &what);
        n += 1;
    }
    // 4. Collateral: chains, CRLs, TCB info, QE identity and their signatures.
    type Field = fn(&mut Collateral) -> &mut String;
    let chains: [(&str, Field); 3] = [
        ("pck_crl_issuer_chain", |c| &mut c.pck_crl_issuer_chain),
        ("tcb_info_issuer_chain", |c| &mut c.tcb_info_issuer_chain),
        ("qe_identity_issuer_chain", |c| {
            &mut c.qe_identity_issuer_chain
        }),
    ];
    for (what, f) in chains {
        let mut base = c.clone();
        for (k, t_pem) in pem_der_flips(f(&mut base)).into_iter().enumerate() {
            let mut t = c.clone();
            *f(&mut t) = t_pem;
            let what = format!("{what} DER flip {k}");
            assert_kind(&refused_at(&q, &t, &what), CERT_KINDS, &what);
            n += 1;
        }
    }
    type Bytes = fn(&mut Collateral) -> &mut Vec<u8>;
    let crls: [(&str, Bytes, Item); 2] = [
        ("root_ca_crl", |c| &mut c.root_ca_crl, Item::RootCaCrl),
        ("pck_crl", |c| &mut c.pck_crl, Item::PckCrl),
    ];
    for (what, f, item) in crls {
        let len = f(&mut c.clone()).len();
        for i in 0..len {
            let mut t = c.clone();
            f(&mut t)[i] ^= 0x01;
            let e = refused_at(&q, &t, &format!("{what} byte {i}"));
            assert_kind(&e, &[Malformed, Unsupported, BadSignature], what);
            if e.kind() == BadSignature {
                assert_eq!(e.item(), Some(item), "{what} byte {i}");
            }
            n += 1;
        }
    }
    let docs: [(Field, Bytes, Item); 2] = [
        (
            |c| &mut c.tcb_info,
            |c| &mut c.tcb_info_signature,
            Item::TcbInfo,
        ),
        (
            |c| &mut c.qe_identity,
            |c| &mut c.qe_identity_signature,
            Item::QeIdentity,
        ),
    ];
    for (text, sig, item) in docs {
        let len = text(&mut c.clone()).len();
        for i in 0..len {
            let mut t = c.clone();
            let mut b = std::mem::take(text(&mut t)).into_bytes();
            b[i] ^= 0x01;
            *text(&mut t) = String::from_utf8(b).unwrap();
            assert_eq!(
                refused(&q, &t),
                Error::BadSignature { item },
                "{item} byte {i}"
            );
            n += 1;
        }
        for i in 0..64 {
            let mut t = c.clone();
            sig(&mut t)[i] ^= 0x01;
            assert_eq!(
                refused(&q, &t),
                Error::BadSignature { item },
                "{item} signature {i}"
            );
            n += 1;
        }
    }
    n
}

#[test]
fn every_single_byte_change_in_the_sgx_vector_is_refused() {
    let n = walk("sgx_quote");
    assert!(n > 10_000, "walked {n}");
}

#[test]
fn every_single_byte_change_in_the_tdx_vector_is_refused() {
    let n = walk("tdx_quote");
    assert!(n > 10_000, "walked {n}");
}

#[test]
fn non_zero_padding_and_truncation_are_refused() {
    let (q, c) = vector("tdx_quote");
    let mut t = q.clone();
    *t.last_mut().unwrap() = 1;
    assert_eq!(refused(&t, &c).kind(), Malformed);
    // Cutting into the zero padding is fine; cutting into the signature data is not.
    verify(&q[..q.len() - 70], &c, &intel(), NOW).unwrap();
    for cut in [71, 100, q.len() - 10] {
        let e = refused(&q[..q.len() - cut], &c);
        assert_eq!(e.kind(), Malformed, "cut {cut}: {e}");
    }
    // Zero padding only: still verifies, with any amount of it.
    let mut p = q.clone();
    p.extend_from_slice(&[0; 1000]);
    verify(&p, &c, &intel(), NOW).unwrap();
    let (s, sc) = vector("sgx_quote");
    let mut t = s.clone();
    t.push(7);
    assert_eq!(refused(&t, &sc).kind(), Malformed);
}

// ---------------------------------------------------------------------------------------------
// Swapped certificates and collateral.

fn pem_blocks(text: &str) -> Vec<String> {
    text.split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("BEGIN"))
        .map(|b| format!("{}\n", b.trim_start()))
        .collect()
}

/// Replaces the v3/v4 quote's PEM chain by `new_pem`, fixing both size fields.
fn with_chain(q: &[u8], new_pem: &str) -> Vec<u8> {
    let mut data = new_pem.as_bytes().to_vec();
    data.push(0);
    with_cert_data(q, 5, &data)
}

/// `q` with its (inner) certification data replaced; the quote signature does not cover it.
fn with_cert_data(q: &[u8], cert_type: u16, data: &[u8]) -> Vec<u8> {
    let parsed = Quote::parse(q).unwrap();
    let old = &parsed.certification_data().data;
    let off = q.len() - parsed.padding_len() - old.len();
    assert_eq!(&q[off..off + old.len()], &old[..]);
    let delta = data.len() as i64 - old.len() as i64;
    let mut out = q[..off].to_vec();
    out.extend_from_slice(data);
    out[off - 6..off - 4].copy_from_slice(&cert_type.to_le_bytes());
    let fix = |out: &mut Vec<u8>, at: usize| {
        let v = u32::from_le_bytes(out[at..at + 4].try_into().unwrap()) as i64 + delta;
        out[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
    };
    fix(&mut out, off - 4); // inner certification data size
    let sd = parsed.signed_bytes().len();
    fix(&mut out, sd); // signature data length
    if parsed.version() >= 4 {
        fix(&mut out, sd + 4 + 130); // outer certification data size
    }
    out
}

#[test]
fn swapped_certificates_are_refused() {
    let (sq, sc) = vector("sgx_quote");
    let (tq, tc) = vector("tdx_quote");
    let s_chain = pem_blocks(Quote::parse(&sq).unwrap().pck_chain_pem().unwrap());
    let t_chain = pem_blocks(Quote::parse(&tq).unwrap().pck_chain_pem().unwrap());
    assert_eq!(s_chain.len(), 3);
    // Sanity: rebuilding with the same chain still verifies.
    verify(&with_chain(&sq, &s_chain.concat()), &sc, &intel(), NOW).unwrap();
    verify(&with_chain(&tq, &t_chain.concat()), &tc, &intel(), NOW).unwrap();

    // Another platform's PCK leaf under this chain's CA: its signature does not verify.
    let leaf_swapped = [t_chain[0].clone(), s_chain[1].clone(), s_chain[2].clone()].concat();
    let e = refused(&with_chain(&sq, &leaf_swapped), &sc);
    assert_eq!(
        e,
        Error::BadSignature {
            item: Item::PckCertificate
        }
    );
    // Another platform's whole (valid) chain: the QE report was not signed by that PCK key.
    let e = refused(&with_chain(&sq, &t_chain.concat()), &sc);
    assert_eq!(
        e,
        Error::BadSignature {
            item: Item::QeReport
        }
    );
    // Listing order does not matter (the path is built by issuer names, as Intel's sample
    // data needs), but the set of certificates does.
    let reordered = [s_chain[1].clone(), s_chain[0].clone(), s_chain[2].clone()].concat();
    verify(&with_chain(&sq, &reordered), &sc, &intel(), NOW).unwrap();
    // The PCK CA as the leaf (CA used as an end entity).
    let ca_leaf = [s_chain[1].clone(), s_chain[1].clone(), s_chain[2].clone()].concat();
    assert_kind(
        &refused(&with_chain(&sq, &ca_leaf), &sc),
        &[BadSignature, PolicyMismatch],
        "CA leaf",
    );
    // Root missing.
    let short = [s_chain[0].clone(), s_chain[1].clone()].concat();
    assert_eq!(refused(&with_chain(&sq, &short), &sc).kind(), Malformed);

    // Collateral swaps between the two platforms.
    let mut c = sc.clone();
    c.pck_crl = tc.pck_crl.clone();
    assert_eq!(refused(&sq, &c), Error::BadSignature { item: Item::PckCrl });
    let mut c = sc.clone();
    c.pck_crl_issuer_chain = tc.pck_crl_issuer_chain.clone();
    c.pck_crl = tc.pck_crl.clone();
    let e = refused(&sq, &c);
    assert_eq!(e.kind(), PolicyMismatch, "{e}");
    assert!(e.to_string().contains("PCK CRL issuer"), "{e}");
    let mut c = sc.clone();
    c.tcb_info = tc.tcb_info.clone();
    c.tcb_info_signature = tc.tcb_info_signature.clone();
    let e = refused(&sq, &c);
    assert!(e.to_string().contains("TCB info id"), "{e}");
    let mut c = sc.clone();
    c.qe_identity = tc.qe_identity.clone();
    c.qe_identity_signature = tc.qe_identity_signature.clone();
    let e = refused(&sq, &c);
    assert!(e.to_string().contains("QE identity id"), "{e}");
    // Signature of one document on the other.
    let mut c = sc.clone();
    c.tcb_info_signature = sc.qe_identity_signature.clone();
    assert_eq!(
        refused(&sq, &c),
        Error::BadSignature {
            item: Item::TcbInfo
        }
    );
    // A CA chain where the TCB signing chain belongs.
    let mut c = sc.clone();
    c.tcb_info_issuer_chain = sc.pck_crl_issuer_chain.clone();
    assert_eq!(refused(&sq, &c).kind(), PolicyMismatch);
    // The PCK chain where the TCB signing chain belongs (three certificates, not two).
    let mut c = sc.clone();
    c.tcb_info_issuer_chain = s_chain.concat();
    assert_eq!(refused(&sq, &c).kind(), Malformed);
}

// ---------------------------------------------------------------------------------------------
// The clock.

#[derive(Debug, Clone, Copy)]
struct W {
    item: Item,
    nb: i64,
    na: i64,
    excl: bool,
}

fn cert_windows(pem: &str, items: &[Item], out: &mut Vec<W>) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut ders: Vec<Vec<u8>> = pem_blocks(pem)
        .iter()
        .map(|b| {
            let body: String = b
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<Vec<_>>()
                .concat();
            b64.decode(body.trim()).unwrap()
        })
        .collect();
    let first = x509_parser::parse_x509_certificate(&ders[0]).unwrap().1;
    if first.subject() == first.issuer() {
        ders.reverse();
    }
    for (d, item) in ders.iter().zip(items) {
        let c = x509_parser::parse_x509_certificate(d).unwrap().1;
        out.push(W {
            item: *item,
            nb: c.validity().not_before.timestamp(),
            na: c.validity().not_after.timestamp(),
            excl: false,
        });
    }
}

fn doc_window(json: &str, item: Item) -> W {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let t = |k: &str| {
        time::OffsetDateTime::parse(
            v[k].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp()
    };
    W {
        item,
        nb: t("issueDate"),
        na: t("nextUpdate"),
        excl: false,
    }
}

fn crl_window(der: &[u8], item: Item) -> W {
    let (_, crl) = x509_parser::parse_x509_crl(der).unwrap();
    W {
        item,
        nb: crl.last_update().timestamp(),
        na: crl.next_update().unwrap().timestamp(),
        excl: true,
    }
}

/// Every validity window of the vector, read independently of the crate.
fn windows(q: &[u8], c: &Collateral) -> Vec<W> {
    use Item::*;
    let mut w = Vec::new();
    let pck = coffer_evidence::Quote::parse(q)
        .unwrap()
        .pck_chain_pem()
        .unwrap()
        .to_string();
    cert_windows(
        &pck,
        &[PckCertificate, PckCaCertificate, RootCaCertificate],
        &mut w,
    );
    cert_windows(
        &c.pck_crl_issuer_chain,
        &[PckCaCertificate, RootCaCertificate],
        &mut w,
    );
    cert_windows(
        &c.tcb_info_issuer_chain,
        &[TcbSigningCertificate, RootCaCertificate],
        &mut w,
    );
    cert_windows(
        &c.qe_identity_issuer_chain,
        &[TcbSigningCertificate, RootCaCertificate],
        &mut w,
    );
    w.push(crl_window(&c.root_ca_crl, RootCaCrl));
    w.push(crl_window(&c.pck_crl, PckCrl));
    w.push(doc_window(&c.tcb_info, TcbInfo));
    w.push(doc_window(&c.qe_identity, QeIdentity));
    w
}

fn outside(w: &W, now: i64) -> bool {
    now < w.nb || if w.excl { now >= w.na } else { now > w.na }
}

/// The items the error may name at `now`: among expired windows, those that ended first;
/// otherwise among not-yet-valid windows, those that start last.
fn expected_items(ws: &[W], now: i64) -> Vec<Item> {
    let expired: Vec<&W> = ws
        .iter()
        .filter(|w| outside(w, now) && now >= w.nb)
        .collect();
    if let Some(min) = expired.iter().map(|w| w.na).min() {
        return expired
            .iter()
            .filter(|w| w.na == min)
            .map(|w| w.item)
            .collect();
    }
    let early: Vec<&W> = ws.iter().filter(|w| now < w.nb).collect();
    let max = early.iter().map(|w| w.nb).max().unwrap();
    early
        .iter()
        .filter(|w| w.nb == max)
        .map(|w| w.item)
        .collect()
}

fn clock_walk(name: &str) {
    let (q, c) = vector(name);
    let ws = windows(&q, &c);
    let v = verify(&q, &c, &intel(), NOW).unwrap();
    assert_eq!(
        v.collateral_not_before,
        ws.iter().map(|w| w.nb).max().unwrap()
    );
    assert_eq!(
        v.collateral_not_after,
        ws.iter().map(|w| w.na).min().unwrap()
    );
    let verifier = Verifier::new(intel());
    verifier.verify(&q, &c, NOW).unwrap();
    let mut named = std::collections::BTreeSet::new();
    for w in &ws {
        for now in [w.nb - 1, if w.excl { w.na } else { w.na + 1 }] {
            let want = expected_items(&ws, now);
            for e in [
                verify(&q, &c, &intel(), now).unwrap_err(),
                verifier.verify(&q, &c, now).unwrap_err(),
            ] {
                let Error::Expired { item, .. } = e else {
                    panic!("now {now}: {e}")
                };
                assert!(
                    want.contains(&item),
                    "now {now}: named {item}, expected one of {want:?}"
                );
                assert!(e.to_string().contains(&item.to_string()));
                named.insert(format!("{item}"));
            }
        }
        // Just inside the item's own window edges it is not the item that fails.
        for now in [w.nb, if w.excl { w.na - 1 } else { w.na }] {
            if let Err(Error::Expired { item, .. }) = verify(&q, &c, &intel(), now) {
                assert!(
                    item != w.item || ws.iter().any(|o| o.item == w.item && outside(o, now)),
                    "{item} refused at its own edge {now}"
                );
            }
        }
    }
    // Both ends of the binding window name TCB info / QE identity / CRL items, not only certs.
    assert!(named.len() >= 2, "{named:?}");
}

#[test]
fn moving_the_clock_outside_any_window_names_the_item_sgx() {
    clock_walk("sgx_quote");
}

#[test]
fn moving_the_clock_outside_any_window_names_the_item_tdx() {
    clock_walk("tdx_quote");
}

// ---------------------------------------------------------------------------------------------
// Intel's sample data (signed by a TEST root).

fn qvl_collateral(dir: &str) -> Collateral {
    let d = format!("intel-qvl-sample/qvl-sampleData/{dir}");
    let tcb = read_str(&format!("{d}tcbInfo.json"));
    let (tcb_info, tcb_sig) = split_signed_json(&tcb, "tcbInfo").unwrap();
    let qe = read_str(&format!("{d}qeIdentity.json"));
    let (qe_identity, qe_sig) = split_signed_json(&qe, "enclaveIdentity").unwrap();
    Collateral {
        pck_crl_issuer_chain: read_str(&format!("{d}pckSignChain.pem")),
        root_ca_crl: read(&format!("{d}rootCaCrl.der")),
        pck_crl: read(&format!("{d}intermediateCaCrl.der")),
        tcb_info_issuer_chain: read_str(&format!("{d}tcbSignChain.pem")),
        tcb_info: tcb_info.to_string(),
        tcb_info_signature: hex::decode(tcb_sig).unwrap(),
        qe_identity_issuer_chain: read_str(&format!("{d}tcbSignChain.pem")),
        qe_identity: qe_identity.to_string(),
        qe_identity_signature: hex::decode(qe_sig).unwrap(),
    }
}

/// An Intel sample quote with the sample's PCK chain as type-5 certification data (the samples
/// carry a PPID or DER; the QE report signature, not the quote's, covers the chain's leaf).
fn qvl_quote(dir: &str) -> Vec<u8> {
    let d = format!("intel-qvl-sample/qvl-sampleData/{dir}");
    let chain = read_str(&format!("{d}pckCert.pem")) + &read_str(&format!("{d}pckSignChain.pem"));
    with_chain(&read(&format!("{d}quote.dat")), &chain)
}

/// 2024-01-01T00:00:00Z: inside the SGX sample's windows (TCB signing cert ends 2026-08-28).
const QVL_NOW: i64 = 1_704_067_200;

#[test]
fn intel_sgx_sample_verifies_under_its_test_root_only() {
    let q = read("intel-qvl-sample/qvl-sampleData/quote.dat");
    let parsed = Quote::parse(&q).unwrap();
    assert_eq!(parsed.version(), 3);
    assert_eq!(parsed.certification_data().cert_type.0, 1);
    assert!(parsed.pck_chain_pem().is_none());
    let test_root = TrustAnchors::from_pem(&read_str(
        "intel-qvl-sample/qvl-sampleData/trustedRootCaCert.pem",
    ))
    .unwrap();
    assert!(!test_root.includes_intel());
    let c = qvl_collateral("");
    // As Intel's QvE, a quote whose certification data only names the platform (type 1, PPID
    // in clear) is refused: nothing in it proves the platform.
    let e = verify(&q, &c, &test_root, QVL_NOW).unwrap_err();
    assert_eq!(e.kind(), Unsupported, "{e}");
    assert!(e.to_string().contains("certification data type 1"), "{e}");

    let q = qvl_quote("");
    let v = verify(&q, &c, &test_root, QVL_NOW).unwrap();
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    assert_eq!(hex::encode(v.fmspc), "00707f000000");
    // Not under Intel's production root, although the subject says "Intel SGX Root CA".
    let e = verify(&q, &c, &intel(), QVL_NOW).unwrap_err();
    assert_eq!(e.kind(), UntrustedRoot, "{e}");
    // After the TCB signing certificate expired.
    let e = verify(&q, &c, &test_root, 1_788_000_000).unwrap_err();
    assert!(matches!(e, Error::Expired { .. }), "{e}");
}

#[test]
fn intel_tdx_sample_parses_and_its_chain_verifies_but_its_qe_identity_does_not_match() {
    let q = read("intel-qvl-sample/qvl-sampleData/tdx/quote.dat");
    let parsed = Quote::parse(&q).unwrap();
    assert_eq!((parsed.version(), parsed.tee()), (4, Tee::Tdx));
    let test_root = TrustAnchors::from_pem(&read_str(
        "intel-qvl-sample/qvl-sampleData/tdx/trustedRootCaCert.pem",
    ))
    .unwrap();
    let c = qvl_collateral("tdx/");
    // The sample's certification data is DER, not PEM: refused as it stands.
    let e = verify(&q, &c, &test_root, QVL_NOW).unwrap_err();
    assert_eq!(e.kind(), Malformed, "{e}");
    // With its chain as PEM every signature verifies, then the content mismatch the README
    // describes is found.
    let q = qvl_quote("tdx/");
    let e = verify(&q, &c, &test_root, QVL_NOW).unwrap_err();
    assert_eq!(e.kind(), PolicyMismatch, "{e}");
    assert!(e.to_string().contains("MRSIGNER"), "{e}");
    assert_eq!(
        verify(&q, &c, &intel(), QVL_NOW).unwrap_err().kind(),
        UntrustedRoot
    );
}

#[test]
fn intel_sample_tcb_info_documents_parse() {
    let sgx = read_str("intel-qvl-sample/qvl-sampleData/tcbInfo.json");
    let (t, _) = split_signed_json(&sgx, "tcbInfo").unwrap();
    let info = coffer_evidence::TcbInfo::from_json(t).unwrap();
    assert_eq!(
        (info.id.as_str(), info.version, info.tcb_levels.len()),
        ("SGX", 2, 6)
    );
    assert_eq!(info.tcb_levels[0].status, TcbStatus::UpToDate);
    let tdx = read_str("intel-qvl-sample/qvl-sampleData/tdx/tcbInfo.json");
    let (t, _) = split_signed_json(&tdx, "tcbInfo").unwrap();
    assert_eq!(coffer_evidence::TcbInfo::from_json(t).unwrap().id, "TDX");
    let v3 = read_str("intel-qvl-sample/PCKCertSelection-SampleData/tcb_info_4.json");
    let (t, _) = split_signed_json(&v3, "tcbInfo").unwrap();
    assert_eq!(coffer_evidence::TcbInfo::from_json(t).unwrap().version, 3);
    // tcbInfo version 1 is not supported.
    let v1 = read_str("intel-qvl-sample/PCKCertSelection-SampleData/tcb_info.json");
    let (t, _) = split_signed_json(&v1, "tcbInfo").unwrap();
    assert_eq!(
        coffer_evidence::TcbInfo::from_json(t).unwrap_err().kind(),
        Unsupported
    );
    for f in ["qeIdentity.json", "qveIdentity.json", "tdx/qeIdentity.json"] {
        let s = read_str(&format!("intel-qvl-sample/qvl-sampleData/{f}"));
        let (t, _) = split_signed_json(&s, "enclaveIdentity").unwrap();
        coffer_evidence::QeIdentity::from_json(t).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// TDX parse vectors.

#[test]
fn tdx_parse_vectors_parse_and_round_trip() {
    let cases = [
        (
            "tdx-parse/entropyxyz-tdx-quote/v4_quote.dat",
            4,
            Tee::Tdx,
            None,
        ),
        (
            "tdx-parse/entropyxyz-tdx-quote/known_pck_quote_1.dat",
            4,
            Tee::Tdx,
            None,
        ),
        (
            "tdx-parse/entropyxyz-tdx-quote/known_pck_quote_2.dat",
            4,
            Tee::Tdx,
            None,
        ),
        ("tdx-parse/trustee/tdx_quote_4.dat", 4, Tee::Tdx, None),
        ("tdx-parse/trustee/tdx_quote_5.dat", 5, Tee::Tdx, Some(3)),
        ("tdx-parse/trustee/tdx_quote_6.dat", 4, Tee::Tdx, None),
        (
            "tdx-parse/trustee/az-tdx-vtpm_td-quote.bin",
            4,
            Tee::Tdx,
            None,
        ),
        ("tdx-parse/trustee/occlum_quote.dat", 3, Tee::Sgx, None),
        ("dcap/sgx_quote", 3, Tee::Sgx, None),
        ("dcap/tdx_quote", 4, Tee::Tdx, None),
    ];
    for (f, version, tee, body_type) in cases {
        let q = read(f);
        let p = Quote::parse(&q).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(
            (p.version(), p.tee(), p.body_type()),
            (version, tee, body_type),
            "{f}"
        );
        let bytes = p.to_bytes();
        assert_eq!(bytes.len() + p.padding_len(), q.len(), "{f}");
        assert_eq!(&q[..bytes.len()], &bytes[..], "{f}");
        let again = Quote::parse(&bytes).unwrap();
        assert_eq!(
            (again.header(), again.body(), again.to_bytes()),
            (p.header(), p.body(), bytes.clone()),
            "{f}"
        );
        assert!(p.pck_chain_pem().is_some(), "{f}");
        p.fmspc().unwrap_or_else(|e| panic!("{f}: {e}"));
        p.pck_ca().unwrap_or_else(|e| panic!("{f}: {e}"));
        if body_type == Some(3) {
            assert!(p.td_report().unwrap().tee_tcb_svn2.is_some());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The simulated platform.

const SIM_NOW: i64 = 1_800_000_000;

#[test]
fn sim_sgx_quote_round_trips_through_verify() {
    let sim = SimPlatform::from_seed([3; 32]);
    for debug in [false, true] {
        let spec = SgxQuoteSpec {
            mrenclave: [0x11; 32],
            mrsigner: [0x22; 32],
            isv_prod_id: 7,
            isv_svn: 9,
            debug,
            report_data: [0x5a; 64],
            ..SgxQuoteSpec::default()
        };
        let q = sim.sgx_quote(&spec);
        let p = Quote::parse(&q).unwrap();
        assert_eq!((p.version(), p.tee()), (3, Tee::Sgx));
        let v = verify(&q, &sim.collateral(SIM_NOW), &sim.trust_anchors(), SIM_NOW).unwrap();
        assert_eq!(v.tcb_status, TcbStatus::UpToDate);
        assert_eq!(v.report_data, [0x5a; 64]);
        assert_eq!(v.fmspc, coffer_evidence::sim::SIM_FMSPC);
        let Measurement::Sgx(m) = v.measurement else {
            panic!()
        };
        assert_eq!(
            (m.mrenclave, m.mrsigner, m.isv_prod_id, m.isv_svn),
            ([0x11; 32], [0x22; 32], 7, 9)
        );
        assert_eq!(m.debug, debug);
    }
}

#[test]
fn sim_tdx_quote_round_trips_through_verify() {
    let sim = SimPlatform::from_seed([4; 32]);
    for debug in [false, true] {
        let spec = TdxQuoteSpec {
            mrtd: [1; 48],
            rtmr: [[2; 48], [3; 48], [4; 48], [5; 48]],
            mrconfigid: [6; 48],
            report_data: [7; 64],
            debug,
            ..TdxQuoteSpec::default()
        };
        let q = sim.tdx_quote(&spec);
        let p = Quote::parse(&q).unwrap();
        assert_eq!((p.version(), p.tee()), (4, Tee::Tdx));
        let c = sim.collateral_for(Tee::Tdx, SIM_NOW);
        let v = verify(&q, &c, &sim.trust_anchors(), SIM_NOW).unwrap();
        assert_eq!(v.tcb_status, TcbStatus::UpToDate);
        assert_eq!(v.report_data, [7; 64]);
        let Measurement::Tdx(m) = v.measurement else {
            panic!()
        };
        assert_eq!(
            (m.mrtd, m.rtmr[3], m.mrconfigid, m.debug),
            ([1; 48], [5; 48], [6; 48], debug)
        );
        // SGX collateral does not fit a TDX quote.
        let e = verify(&q, &sim.collateral(SIM_NOW), &sim.trust_anchors(), SIM_NOW).unwrap_err();
        assert_eq!(e.kind(), PolicyMismatch, "{e}");
    }
}

/// A module identity for the module's version is what counts, not `tdxModule`: a stale
/// `tdxModule` beside a right identity does not refuse the quote.
#[test]
fn the_module_identity_replaces_tdx_module() {
    let sim = SimPlatform::from_seed([4; 32]);
    let q = sim.tdx_quote(&TdxQuoteSpec {
        module_version: 1,
        ..TdxQuoteSpec::default()
    });
    let c = sim.collateral_with(
        Tee::Tdx,
        SIM_NOW,
        &SimCollateralOptions {
            stale_tdx_module: true,
            ..SimCollateralOptions::default()
        },
    );
    let v = verify(&q, &c, &sim.trust_anchors(), SIM_NOW).unwrap();
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    // Without an identity for the module's version (minor version 0), `tdxModule` counts.
    let q0 = sim.tdx_quote(&TdxQuoteSpec::default());
    let e = verify(&q0, &c, &sim.trust_anchors(), SIM_NOW).unwrap_err();
    assert!(e.to_string().contains("MRSIGNERSEAM"), "{e}");
}

/// Intel's QVL refuses a TDX module with any SEAMATTRIBUTES bit set, whatever the collateral's
/// mask allows; so do we (the quote is otherwise valid and correctly signed).
#[test]
fn a_non_production_tdx_module_is_refused() {
    let sim = SimPlatform::from_seed([4; 32]);
    let q = sim.tdx_quote(&TdxQuoteSpec {
        seam_attributes: [0, 0, 0, 0, 0, 0, 0, 0x80],
        ..TdxQuoteSpec::default()
    });
    let c = sim.collateral_for(Tee::Tdx, SIM_NOW);
    let e = verify(&q, &c, &sim.trust_anchors(), SIM_NOW).unwrap_err();
    assert_eq!(e.kind(), PolicyMismatch, "{e}");
    assert!(e.to_string().contains("SEAMATTRIBUTES"), "{e}");
}

#[test]
fn sim_quotes_are_refused_under_the_intel_root_and_other_sims() {
    let sim = SimPlatform::from_seed([5; 32]);
    let q = sim.sgx_quote(&SgxQuoteSpec::default());
    let e = verify(&q, &sim.collateral(SIM_NOW), &intel(), SIM_NOW).unwrap_err();
    assert_eq!(e.kind(), UntrustedRoot);
    assert!(e.to_string().contains("Coffer Simulated"), "{e}");
    let other = SimPlatform::from_seed([6; 32]);
    let e = verify(
        &q,
        &sim.collateral(SIM_NOW),
        &other.trust_anchors(),
        SIM_NOW,
    )
    .unwrap_err();
    assert_eq!(e.kind(), UntrustedRoot);
    // Another platform's collateral (different PCK CA) under its own root.
    let e = verify(
        &q,
        &other.collateral(SIM_NOW),
        &other.trust_anchors(),
        SIM_NOW,
    )
    .unwrap_err();
    assert_eq!(e.kind(), UntrustedRoot);
    let tq = sim.tdx_quote(&TdxQuoteSpec::default());
    let e = verify(
        &tq,
        &sim.collateral_for(Tee::Tdx, SIM_NOW),
        &intel(),
        SIM_NOW,
    )
    .unwrap_err();
    assert_eq!(e.kind(), UntrustedRoot);
}

#[test]
fn sim_platform_persists_and_is_deterministic() {
    let sim = SimPlatform::from_seed([8; 32]);
    let bytes = sim.to_bytes();
    let back = SimPlatform::from_bytes(&bytes).unwrap();
    let spec = SgxQuoteSpec {
        report_data: [9; 64],
        ..SgxQuoteSpec::default()
    };
    assert_eq!(back.sgx_quote(&spec), sim.sgx_quote(&spec));
    assert_eq!(back.collateral(SIM_NOW), sim.collateral(SIM_NOW));
    assert_eq!(back.trust_anchors(), sim.trust_anchors());
    // The quote verifies with the reloaded platform's anchors and collateral.
    verify(
        &sim.sgx_quote(&spec),
        &back.collateral(SIM_NOW),
        &back.trust_anchors(),
        SIM_NOW,
    )
    .unwrap();
    assert!(sim.root_ca_pem().contains("BEGIN CERTIFICATE"));
    assert!(!format!("{sim:?}").contains(&hex::encode([8u8; 32])));
    for bad in [
        &b"{}"[..],
        b"not json",
        br#"{"format":"x","version":1,"seed":"00"}"#,
    ] {
        assert!(SimPlatform::from_bytes(bad).is_err());
    }
    let short = br#"{"format":"coffer-sim-platform","version":1,"seed":"0011"}"#;
    assert_eq!(
        SimPlatform::from_bytes(short).unwrap_err().kind(),
        Malformed
    );
}

#[test]
fn sim_collateral_options_drive_status_revocation_and_expiry() {
    let sim = SimPlatform::from_seed([10; 32]);
    let q = sim.sgx_quote(&SgxQuoteSpec::default());
    let a = sim.trust_anchors();
    let with = |o: SimCollateralOptions| sim.collateral_with(Tee::Sgx, SIM_NOW, &o);
    let c = with(SimCollateralOptions {
        revoke_pck: true,
        ..Default::default()
    });
    let e = verify(&q, &c, &a, SIM_NOW).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Revoked {
                item: Item::PckCertificate,
                by: Item::PckCrl,
                ..
            }
        ),
        "{e}"
    );
    let c = with(SimCollateralOptions {
        platform_status: TcbStatus::ConfigurationNeeded,
        platform_advisories: vec!["SIM-SA-1".into()],
        qe_status: TcbStatus::OutOfDate,
        ..Default::default()
    });
    let v = verify(&q, &c, &a, SIM_NOW).unwrap();
    // Intel's convergence: CN + QE OutOfDate → OutOfDateConfigurationNeeded.
    assert_eq!(v.tcb_status, TcbStatus::OutOfDateConfigurationNeeded);
    assert_eq!(v.advisory_ids, vec!["SIM-SA-1"]);
    let c = with(SimCollateralOptions {
        qe_status: TcbStatus::Revoked,
        ..Default::default()
    });
    assert_eq!(
        verify(&q, &c, &a, SIM_NOW).unwrap().tcb_status,
        TcbStatus::Revoked
    );
    // Expired collateral, on both the uncached and the cached path.
    let c = sim.collateral(SIM_NOW);
    let later = SIM_NOW + 31 * 24 * 3600;
    assert_eq!(verify(&q, &c, &a, later).unwrap_err().kind(), Expired);
    let verifier = Verifier::new(a.clone());
    verifier.verify(&q, &c, SIM_NOW).unwrap();
    assert_eq!(verifier.verify(&q, &c, later).unwrap_err().kind(), Expired);
    assert_eq!(
        verifier.verify(&q, &c, SIM_NOW - 7200).unwrap_err().kind(),
        Expired
    );
    // A cached platform still needs a good quote signature.
    let mut t = q.clone();
    t[100] ^= 1;
    assert_eq!(
        verifier.verify(&t, &c, SIM_NOW).unwrap_err(),
        Error::BadSignature {
            item: Item::QuoteSignature
        }
    );
    // A cached platform is still checked against the revocation list of new collateral.
    let revoked = with(SimCollateralOptions {
        revoke_pck: true,
        ..Default::default()
    });
    assert_eq!(
        verifier.verify(&q, &revoked, SIM_NOW).unwrap_err().kind(),
        Revoked
    );
    verifier.clear_cache();
    assert_eq!(
        verifier.verify(&q, &c, SIM_NOW).unwrap().tcb_status,
        TcbStatus::UpToDate
    );
}

#[test]
fn sim_tcb_level_below_every_level_is_refused_saying_so() {
    let sim = SimPlatform::from_seed([11; 32]);
    let a = sim.trust_anchors();
    for tee in [Tee::Sgx, Tee::Tdx] {
        let q = match tee {
            Tee::Sgx => sim.sgx_quote(&SgxQuoteSpec::default()),
            Tee::Tdx => sim.tdx_quote(&TdxQuoteSpec::default()),
        };
        let o = SimCollateralOptions {
            platform_below_all_levels: true,
            ..Default::default()
        };
        let e = verify(&q, &sim.collateral_with(tee, SIM_NOW, &o), &a, SIM_NOW).unwrap_err();
        assert_eq!(e.kind(), TcbNotMatched, "{e}");
        assert!(e.to_string().contains("no TCB info level"), "{e}");
        let o = SimCollateralOptions {
            qe_below_all_levels: true,
            ..Default::default()
        };
        let e = verify(&q, &sim.collateral_with(tee, SIM_NOW, &o), &a, SIM_NOW).unwrap_err();
        assert_eq!(e.kind(), TcbNotMatched, "{e}");
        assert!(e.to_string().contains("QE ISVSVN"), "{e}");
    }
}
