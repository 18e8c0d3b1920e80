//! Byte-exact checks against `testdata/vectors/sgx-sign` (the Linux SGX selftest enclave, its
//! SIGSTRUCT and key; provenance in the README there), plus the negative cases of SIGSTRUCT
//! verification.

use coffer_sgx::sgxs::flat_image_sgxs;
use coffer_sgx::{measure_sgxs, Error, SecinfoFlags, SigningKey, Sigstruct, SigstructBody};

const IMAGE: &[u8] = include_bytes!("../../../testdata/vectors/sgx-sign/encl.bin");
const SIGSTRUCT: &[u8] = include_bytes!("../../../testdata/vectors/sgx-sign/encl.ss");
const KEY: &str = include_str!("../../../testdata/vectors/sgx-sign/encl.pem");

const MRENCLAVE: &str = "b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0";
const MRSIGNER: &str = "2f9f8fd4fe12d77232f1d87571ca8252ca27714efe7705e46222cffd5a22e8c4";

fn vector_sgxs() -> (Vec<u8>, [u8; 32]) {
    // README: page 0 TCS, pages 1-5 REG|RWX, all EEXTENDed, size 0x8000, SSAFRAMESIZE 1.
    flat_image_sgxs(IMAGE, 1, SecinfoFlags(0x207)).unwrap()
}

#[test]
fn mrenclave_of_the_vector_enclave() {
    let (sgxs, mr) = vector_sgxs();
    assert_eq!(hex::encode(mr), MRENCLAVE);
    let m = measure_sgxs(&sgxs[..], |_| {}).unwrap();
    assert_eq!(hex::encode(m.mrenclave), MRENCLAVE);
    assert_eq!(m.enclave_size, 0x8000);
    assert_eq!(m.pages, 6);
    assert_eq!(m.tcs_pages, 1);
}

#[test]
fn vector_sigstruct_parses_and_verifies() {
    let s = Sigstruct::parse(SIGSTRUCT).unwrap();
    s.verify().unwrap();
    assert_eq!(hex::encode(s.mrsigner()), MRSIGNER);
    assert_eq!(hex::encode(s.body.enclave_hash), MRENCLAVE);
    s.verify_for(&vector_sgxs().1).unwrap();
    assert_eq!(s.body.vendor, 0);
    assert_eq!(s.body.date, 0);
    assert_eq!(s.exponent, 3);
    assert_eq!(s.body.miscselect, 0);
    assert_eq!(s.body.miscmask, 0);
    assert_eq!(s.body.attributes.flags, 0x4);
    assert_eq!(s.body.attributes.xfrm, 0x3);
    assert_eq!(s.body.attributes_mask.flags, 0);
    assert_eq!(s.body.attributes_mask.xfrm, 0);
    assert_eq!(s.body.isv_prod_id, 0);
    assert_eq!(s.body.isv_svn, 0);
    assert_eq!(
        s.to_bytes().as_slice(),
        SIGSTRUCT,
        "parse/encode round trip"
    );
}

#[test]
fn key_gives_the_vector_mrsigner() {
    let key = SigningKey::from_pem(KEY).unwrap();
    assert_eq!(hex::encode(key.mrsigner()), MRSIGNER);
    // Debug output never shows key material.
    let dbg = format!("{key:?}");
    assert!(
        dbg.contains(MRSIGNER) && !dbg.contains("BigUint") && dbg.len() < 200,
        "{dbg}"
    );
    // PEM round trip.
    let again = SigningKey::from_pem(&key.to_pem().unwrap()).unwrap();
    assert_eq!(again.mrsigner(), key.mrsigner());
}

#[test]
fn resigning_reproduces_the_vector_byte_for_byte() {
    let key = SigningKey::from_pem(KEY).unwrap();
    let mut body = SigstructBody::new(vector_sgxs().1);
    body.miscmask = 0;
    body.attributes_mask.flags = 0;
    body.attributes_mask.xfrm = 0;
    let s = Sigstruct::sign(body, &key, &mut rand_core::OsRng).unwrap();
    assert_eq!(s.to_bytes().as_slice(), SIGSTRUCT);
}

fn tampered(off: usize) -> Sigstruct {
    let mut b = SIGSTRUCT.to_vec();
    b[off] ^= 0x01;
    Sigstruct::parse(&b).unwrap()
}

#[test]
fn modified_signed_regions_fail_verification() {
    // [0,128): DATE; [900,1028): MISCSELECT, ATTRIBUTES, ENCLAVEHASH, ISVSVN.
    for off in [20, 900, 928, 960, 991, 1026] {
        assert!(
            matches!(tampered(off).verify(), Err(Error::BadSignature)),
            "offset {off}"
        );
    }
    // SIGNATURE itself.
    assert!(matches!(tampered(600).verify(), Err(Error::BadSignature)));
    // A different modulus (still 3072 bits) is a different signer: the signature fails.
    assert!(matches!(tampered(200).verify(), Err(Error::BadSignature)));
}

#[test]
fn modified_q1_q2_fail_verification() {
    assert!(matches!(
        tampered(1040).verify(),
        Err(Error::BadQ { field: "Q1" })
    ));
    assert!(matches!(
        tampered(1807).verify(),
        Err(Error::BadQ { field: "Q2" })
    ));
}

#[test]
fn wrong_exponent_and_key_size_are_refused() {
    let mut s = Sigstruct::parse(SIGSTRUCT).unwrap();
    s.exponent = 65537;
    assert!(matches!(s.verify(), Err(Error::WrongExponent { found }) if found == "65537"));
    let mut s = Sigstruct::parse(SIGSTRUCT).unwrap();
    s.modulus[383] = 0; // top byte zero: a 3064-bit modulus
    assert!(matches!(s.verify(), Err(Error::WrongKeySize { bits }) if bits < 3072));
}

#[test]
fn wrong_enclave_hash_is_named() {
    let s = Sigstruct::parse(SIGSTRUCT).unwrap();
    let e = s.verify_for(&[0; 32]).unwrap_err();
    assert!(matches!(e, Error::EnclaveHashMismatch { .. }));
    assert!(e.to_string().contains(MRENCLAVE));
}

#[test]
fn keys_with_wrong_exponent_or_size_are_refused() {
    // RSA-2048 and e = 65537 keys made once with openssl and inlined (generating them here would
    // make the test slow).
    let e65537 = include_str!("data/rsa3072-e65537.pem");
    assert!(
        matches!(SigningKey::from_pem(e65537), Err(Error::WrongExponent { found }) if found == "65537")
    );
    let small = include_str!("data/rsa2048-e3.pem");
    assert!(matches!(
        SigningKey::from_pem(small),
        Err(Error::WrongKeySize { bits: 2048 })
    ));
    assert!(matches!(SigningKey::from_pem("hello"), Err(Error::Key(_))));
    assert!(matches!(
        SigningKey::from_pem(
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"
        ),
        Err(Error::Key(_))
    ));
}

#[test]
fn kss_fields_are_signed() {
    let key = SigningKey::from_pem(KEY).unwrap();
    let mut body = SigstructBody::new([7; 32]);
    body.isv_family_id = [0x42; 16];
    body.isv_ext_prod_id = [0x43; 16];
    body.attributes.flags |= coffer_sgx::Attributes::FLAG_KSS;
    let s = Sigstruct::sign(body, &key, &mut rand_core::OsRng).unwrap();
    s.verify().unwrap();
    let parsed = Sigstruct::parse(&s.to_bytes()).unwrap();
    assert_eq!(parsed.body.isv_family_id, [0x42; 16]);
    assert_eq!(parsed.body.isv_ext_prod_id, [0x43; 16]);
    // ISVFAMILYID and ISVEXTPRODID are inside [900,1028): changing one breaks the signature.
    assert!(matches!(
        tampered_bytes(&s.to_bytes(), 912).verify(),
        Err(Error::BadSignature)
    ));
    assert!(matches!(
        tampered_bytes(&s.to_bytes(), 1008).verify(),
        Err(Error::BadSignature)
    ));
}

fn tampered_bytes(b: &[u8], off: usize) -> Sigstruct {
    let mut b = b.to_vec();
    b[off] ^= 1;
    Sigstruct::parse(&b).unwrap()
}
