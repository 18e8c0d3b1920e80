//! SIGSTRUCT (1808 bytes, SDM vol. 3D table 34-19): the enclave signature EINIT checks.
//!
//! The signature is RSASSA-PKCS1-v1_5 with SHA-256 over bytes `[0,128)` ‖ `[900,1028)`; the
//! modulus, signature, Q1 and Q2 are little-endian 384-byte integers, with
//! `Q1 = ⌊S² / N⌋` and `Q2 = ⌊(S³ − Q1·S·N) / N⌋` (the helper values EINIT uses to check the
//! signature with two multiplications). MRSIGNER is SHA-256 of the little-endian modulus.
//! PKCS#1 v1.5 is deterministic: the same body and key always give the same bytes.

use rsa::rand_core::CryptoRngCore;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::key::{check_public, SigningKey, EXPONENT, KEY_BYTES};
use crate::types::Attributes;

/// Fixed HEADER (offset 0).
pub const HEADER1: [u8; 16] = [0x06, 0, 0, 0, 0xE1, 0, 0, 0, 0, 0, 0x01, 0, 0, 0, 0, 0];
/// Fixed HEADER2 (offset 24).
pub const HEADER2: [u8; 16] = [
    0x01, 0x01, 0, 0, 0x60, 0, 0, 0, 0x60, 0, 0, 0, 0x01, 0, 0, 0,
];

/// Byte offsets of the SIGSTRUCT fields (SDM table 34-19).
pub mod offsets {
    /// HEADER (16).
    pub const HEADER: usize = 0;
    /// VENDOR (4): 0x8086 for Intel, 0 otherwise.
    pub const VENDOR: usize = 16;
    /// DATE (4), BCD yyyymmdd.
    pub const DATE: usize = 20;
    /// HEADER2 (16).
    pub const HEADER2: usize = 24;
    /// SWDEFINED (4).
    pub const SWDEFINED: usize = 40;
    /// Reserved (84).
    pub const RESERVED1: usize = 44;
    /// MODULUS (384).
    pub const MODULUS: usize = 128;
    /// EXPONENT (4).
    pub const EXPONENT: usize = 512;
    /// SIGNATURE (384).
    pub const SIGNATURE: usize = 516;
    /// MISCSELECT (4).
    pub const MISCSELECT: usize = 900;
    /// MISCMASK (4).
    pub const MISCMASK: usize = 904;
    /// CET_ATTRIBUTES (1).
    pub const CET_ATTRIBUTES: usize = 908;
    /// CET_ATTRIBUTES_MASK (1).
    pub const CET_ATTRIBUTES_MASK: usize = 909;
    /// Reserved (2).
    pub const RESERVED2: usize = 910;
    /// ISVFAMILYID (16, KSS).
    pub const ISVFAMILYID: usize = 912;
    /// ATTRIBUTES (16).
    pub const ATTRIBUTES: usize = 928;
    /// ATTRIBUTEMASK (16).
    pub const ATTRIBUTEMASK: usize = 944;
    /// ENCLAVEHASH (32).
    pub const ENCLAVEHASH: usize = 960;
    /// Reserved (16).
    pub const RESERVED3: usize = 992;
    /// ISVEXTPRODID (16, KSS).
    pub const ISVEXTPRODID: usize = 1008;
    /// ISVPRODID (2).
    pub const ISVPRODID: usize = 1024;
    /// ISVSVN (2).
    pub const ISVSVN: usize = 1026;
    /// Reserved (12).
    pub const RESERVED4: usize = 1028;
    /// Q1 (384).
    pub const Q1: usize = 1040;
    /// Q2 (384).
    pub const Q2: usize = 1424;
    /// Total size.
    pub const SIZE: usize = 1808;
}

/// The fields the signer chooses (everything except the key-dependent MODULUS, EXPONENT,
/// SIGNATURE, Q1, Q2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SigstructBody {
    /// VENDOR: 0x8086 for Intel's own enclaves, 0 for everyone else.
    pub vendor: u32,
    /// DATE as BCD `0xYYYYMMDD` (see [`bcd_date`]); 0 when unknown.
    pub date: u32,
    /// SWDEFINED: free for the software vendor.
    pub swdefined: u32,
    /// MISCSELECT the enclave requires.
    pub miscselect: u32,
    /// MISCMASK: which MISCSELECT bits EINIT enforces.
    pub miscmask: u32,
    /// CET_ATTRIBUTES.
    pub cet_attributes: u8,
    /// CET_ATTRIBUTES_MASK.
    pub cet_attributes_mask: u8,
    /// ISVFAMILYID (KSS).
    #[serde(with = "hex::serde")]
    pub isv_family_id: [u8; 16],
    /// ATTRIBUTES the enclave requires.
    pub attributes: Attributes,
    /// ATTRIBUTEMASK: which ATTRIBUTES bits EINIT enforces.
    pub attributes_mask: Attributes,
    /// ENCLAVEHASH: the MRENCLAVE this signature is for.
    #[serde(with = "hex::serde")]
    pub enclave_hash: [u8; 32],
    /// ISVEXTPRODID (KSS).
    #[serde(with = "hex::serde")]
    pub isv_ext_prod_id: [u8; 16],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
}

impl SigstructBody {
    /// A body for `enclave_hash` with production defaults: vendor 0, date 0, 64-bit, XFRM legacy
    /// (x87|SSE), DEBUG off, and every ATTRIBUTES flag and MISCSELECT bit enforced (so the same
    /// SIGSTRUCT cannot launch the enclave in debug mode). XFRM is not enforced, so the enclave
    /// may run with AVX etc. enabled by the loader.
    pub fn new(enclave_hash: [u8; 32]) -> Self {
        SigstructBody {
            vendor: 0,
            date: 0,
            swdefined: 0,
            miscselect: 0,
            miscmask: u32::MAX,
            cet_attributes: 0,
            cet_attributes_mask: 0,
            isv_family_id: [0; 16],
            attributes: Attributes {
                flags: Attributes::FLAG_MODE64BIT,
                xfrm: Attributes::XFRM_LEGACY,
            },
            attributes_mask: Attributes {
                flags: u64::MAX,
                xfrm: 0,
            },
            enclave_hash,
            isv_ext_prod_id: [0; 16],
            isv_prod_id: 0,
            isv_svn: 0,
        }
    }

    /// Sets or clears the DEBUG attribute (enforced by the mask as set).
    pub fn set_debug(&mut self, debug: bool) {
        if debug {
            self.attributes.flags |= Attributes::FLAG_DEBUG;
        } else {
            self.attributes.flags &= !Attributes::FLAG_DEBUG;
        }
    }

    /// Writes the body into a 1808-byte buffer (key-dependent fields left as they are).
    fn write(&self, b: &mut [u8; offsets::SIZE]) {
        use offsets as o;
        let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(o::HEADER, &HEADER1);
        put(o::VENDOR, &self.vendor.to_le_bytes());
        put(o::DATE, &self.date.to_le_bytes());
        put(o::HEADER2, &HEADER2);
        put(o::SWDEFINED, &self.swdefined.to_le_bytes());
        put(o::MISCSELECT, &self.miscselect.to_le_bytes());
        put(o::MISCMASK, &self.miscmask.to_le_bytes());
        put(o::CET_ATTRIBUTES, &[self.cet_attributes]);
        put(o::CET_ATTRIBUTES_MASK, &[self.cet_attributes_mask]);
        put(o::ISVFAMILYID, &self.isv_family_id);
        put(o::ATTRIBUTES, &self.attributes.to_bytes());
        put(o::ATTRIBUTEMASK, &self.attributes_mask.to_bytes());
        put(o::ENCLAVEHASH, &self.enclave_hash);
        put(o::ISVEXTPRODID, &self.isv_ext_prod_id);
        put(o::ISVPRODID, &self.isv_prod_id.to_le_bytes());
        put(o::ISVSVN, &self.isv_svn.to_le_bytes());
    }

    /// SHA-256 over the signed regions `[0,128)` ‖ `[900,1028)`: what PKCS#1 v1.5 signs.
    pub fn signed_digest(&self) -> [u8; 32] {
        let mut b = [0u8; offsets::SIZE];
        self.write(&mut b);
        digest_regions(&b)
    }
}

fn digest_regions(b: &[u8; offsets::SIZE]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&b[..128]);
    h.update(&b[900..1028]);
    h.finalize().into()
}

/// A complete SIGSTRUCT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sigstruct {
    /// The signed fields.
    pub body: SigstructBody,
    /// MODULUS, little-endian.
    pub modulus: [u8; KEY_BYTES],
    /// EXPONENT (3 for any SIGSTRUCT EINIT accepts).
    pub exponent: u32,
    /// SIGNATURE, little-endian.
    pub signature: [u8; KEY_BYTES],
    /// Q1, little-endian.
    pub q1: [u8; KEY_BYTES],
    /// Q2, little-endian.
    pub q2: [u8; KEY_BYTES],
}

impl Sigstruct {
    /// Signs `body` with `key`. `rng` only blinds the RSA private-key operation against timing
    /// side channels; the result does not depend on it (PKCS#1 v1.5 is deterministic).
    pub fn sign<R: CryptoRngCore>(
        body: SigstructBody,
        key: &SigningKey,
        rng: &mut R,
    ) -> Result<Sigstruct> {
        let digest = body.signed_digest();
        let sig_be = key
            .rsa()
            .sign_with_rng(rng, Pkcs1v15Sign::new::<Sha256>(), &digest)
            .map_err(|e| Error::Rsa(format!("signing failed: {e}")))?;
        let modulus = key.modulus_le();
        let s = BigUint::from_bytes_be(&sig_be);
        let n = BigUint::from_bytes_le(&modulus);
        let (q1, q2) = q1_q2(&s, &n);
        Ok(Sigstruct {
            body,
            modulus,
            exponent: EXPONENT,
            signature: le_384(&s),
            q1,
            q2,
        })
    }

    /// The 1808-byte encoding.
    pub fn to_bytes(&self) -> [u8; offsets::SIZE] {
        use offsets as o;
        let mut b = [0u8; o::SIZE];
        self.body.write(&mut b);
        b[o::MODULUS..o::MODULUS + KEY_BYTES].copy_from_slice(&self.modulus);
        b[o::EXPONENT..o::EXPONENT + 4].copy_from_slice(&self.exponent.to_le_bytes());
        b[o::SIGNATURE..o::SIGNATURE + KEY_BYTES].copy_from_slice(&self.signature);
        b[o::Q1..o::Q1 + KEY_BYTES].copy_from_slice(&self.q1);
        b[o::Q2..o::Q2 + KEY_BYTES].copy_from_slice(&self.q2);
        b
    }

    /// Parses exactly 1808 bytes. Headers must be the architectural constants and reserved
    /// bytes zero. Parsing does not verify the signature: call [`Sigstruct::verify`].
    pub fn parse(bytes: &[u8]) -> Result<Sigstruct> {
        use offsets as o;
        let b: &[u8; o::SIZE] = bytes
            .try_into()
            .map_err(|_| Error::SigstructLength { len: bytes.len() })?;
        // From here on `b` is a fixed-size array and every range below is a constant inside it.
        if b[o::HEADER..o::HEADER + 16] != HEADER1 {
            return Err(Error::SigstructHeader {
                field: "HEADER",
                offset: o::HEADER,
            });
        }
        if b[o::HEADER2..o::HEADER2 + 16] != HEADER2 {
            return Err(Error::SigstructHeader {
                field: "HEADER2",
                offset: o::HEADER2,
            });
        }
        for (off, len) in [
            (o::RESERVED1, 84),
            (o::RESERVED2, 2),
            (o::RESERVED3, 16),
            (o::RESERVED4, 12),
        ] {
            if b[off..off + len].iter().any(|&x| x != 0) {
                return Err(Error::SigstructReserved { offset: off });
            }
        }
        let u32_at = |off: usize| u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
        let u16_at = |off: usize| u16::from_le_bytes([b[off], b[off + 1]]);
        let u64_at = |off: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[off..off + 8]);
            u64::from_le_bytes(a)
        };
        let arr16 = |off: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[off..off + 16]);
            a
        };
        let arr384 = |off: usize| {
            let mut a = [0u8; KEY_BYTES];
            a.copy_from_slice(&b[off..off + KEY_BYTES]);
            a
        };
        let mut enclave_hash = [0u8; 32];
        enclave_hash.copy_from_slice(&b[o::ENCLAVEHASH..o::ENCLAVEHASH + 32]);
        let body = SigstructBody {
            vendor: u32_at(o::VENDOR),
            date: u32_at(o::DATE),
            swdefined: u32_at(o::SWDEFINED),
            miscselect: u32_at(o::MISCSELECT),
            miscmask: u32_at(o::MISCMASK),
            cet_attributes: b[o::CET_ATTRIBUTES],
            cet_attributes_mask: b[o::CET_ATTRIBUTES_MASK],
            isv_family_id: arr16(o::ISVFAMILYID),
            attributes: Attributes {
                flags: u64_at(o::ATTRIBUTES),
                xfrm: u64_at(o::ATTRIBUTES + 8),
            },
            attributes_mask: Attributes {
                flags: u64_at(o::ATTRIBUTEMASK),
                xfrm: u64_at(o::ATTRIBUTEMASK + 8),
            },
            enclave_hash,
            isv_ext_prod_id: arr16(o::ISVEXTPRODID),
            isv_prod_id: u16_at(o::ISVPRODID),
            isv_svn: u16_at(o::ISVSVN),
        };
        Ok(Sigstruct {
            body,
            modulus: arr384(o::MODULUS),
            exponent: u32_at(o::EXPONENT),
            signature: arr384(o::SIGNATURE),
            q1: arr384(o::Q1),
            q2: arr384(o::Q2),
        })
    }

    /// MRSIGNER: SHA-256 of the little-endian MODULUS, as EINIT computes it.
    pub fn mrsigner(&self) -> [u8; 32] {
        Sha256::digest(self.modulus).into()
    }

    /// Checks what EINIT checks of the signature: exponent 3, a 3072-bit modulus, the PKCS#1
    /// v1.5 SHA-256 signature over the signed regions, and Q1/Q2.
    pub fn verify(&self) -> Result<()> {
        let n = BigUint::from_bytes_le(&self.modulus);
        let e = BigUint::from(self.exponent);
        check_public(&n, &e)?;
        let s = BigUint::from_bytes_le(&self.signature);
        if s >= n {
            return Err(Error::BadSignature);
        }
        let public = RsaPublicKey::new(n.clone(), e)
            .map_err(|e| Error::Rsa(format!("bad public key: {e}")))?;
        let mut sig_be = self.signature;
        sig_be.reverse();
        public
            .verify(
                Pkcs1v15Sign::new::<Sha256>(),
                &self.body.signed_digest(),
                &sig_be,
            )
            .map_err(|_| Error::BadSignature)?;
        let (q1, q2) = q1_q2(&s, &n);
        if q1 != self.q1 {
            return Err(Error::BadQ { field: "Q1" });
        }
        if q2 != self.q2 {
            return Err(Error::BadQ { field: "Q2" });
        }
        Ok(())
    }

    /// [`Sigstruct::verify`], then checks that ENCLAVEHASH is `mrenclave`.
    pub fn verify_for(&self, mrenclave: &[u8; 32]) -> Result<()> {
        self.verify()?;
        if &self.body.enclave_hash != mrenclave {
            return Err(Error::EnclaveHashMismatch {
                expected: hex::encode(mrenclave),
                found: hex::encode(self.body.enclave_hash),
            });
        }
        Ok(())
    }
}

fn le_384(v: &BigUint) -> [u8; KEY_BYTES] {
    let mut out = [0u8; KEY_BYTES];
    let le = v.to_bytes_le();
    // Callers pass values < N < 2^3072, so `le` fits; a longer value would be a bug upstream and
    // is truncated rather than panicking (verification then fails on the Q check).
    let len = le.len().min(KEY_BYTES);
    out[..len].copy_from_slice(&le[..len]);
    out
}

fn q1_q2(s: &BigUint, n: &BigUint) -> ([u8; KEY_BYTES], [u8; KEY_BYTES]) {
    let s2 = s * s;
    let q1 = &s2 / n;
    let s3 = &s2 * s;
    let q2 = (s3 - &q1 * s * n) / n;
    (le_384(&q1), le_384(&q2))
}

/// Encodes a date as SIGSTRUCT's BCD `0xYYYYMMDD`, refusing impossible dates.
pub fn bcd_date(year: u16, month: u8, day: u8) -> Result<u32> {
    let bad = || Error::Date(format!("{year:04}{month:02}{day:02}"));
    if !(1..=9999).contains(&year) || !(1..=12).contains(&month) {
        return Err(bad());
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day == 0 || day > days {
        return Err(bad());
    }
    let digits = format!("{year:04}{month:02}{day:02}");
    u32::from_str_radix(&digits, 16).map_err(|_| bad())
}

/// Parses `YYYYMMDD` into SIGSTRUCT's BCD date.
pub fn parse_date(s: &str) -> Result<u32> {
    let bad = || Error::Date(s.to_string());
    if s.len() != 8 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let y: u16 = s[..4].parse().map_err(|_| bad())?;
    let m: u8 = s[4..6].parse().map_err(|_| bad())?;
    let d: u8 = s[6..].parse().map_err(|_| bad())?;
    bcd_date(y, m, d)
}

/// Shows a BCD date as `YYYY-MM-DD` (or the raw hex if it is not BCD, e.g. `0` → "none").
pub fn format_date(date: u32) -> String {
    if date == 0 {
        return "none".into();
    }
    let h = format!("{date:08x}");
    if h.bytes().all(|c| c.is_ascii_digit()) {
        format!("{}-{}-{}", &h[..4], &h[4..6], &h[6..])
    } else {
        format!("{date:#010x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> SigstructBody {
        let mut b = SigstructBody::new([0xee; 32]);
        b.vendor = 0x8086;
        b.date = 0x2026_1122;
        b.swdefined = 0x1111_1111;
        b.miscselect = 0x2222_2222;
        b.miscmask = 0x3333_3333;
        b.cet_attributes = 0x44;
        b.cet_attributes_mask = 0x55;
        b.isv_family_id = [0x66; 16];
        b.attributes = Attributes {
            flags: 0x0706,
            xfrm: 0x0807,
        };
        b.attributes_mask = Attributes {
            flags: 0x0908,
            xfrm: 0x0a09,
        };
        b.isv_ext_prod_id = [0x77; 16];
        b.isv_prod_id = 0x8888;
        b.isv_svn = 0x9999;
        b
    }

    #[test]
    fn field_offsets_match_sdm() {
        let s = Sigstruct {
            body: body(),
            modulus: [0xa1; 384],
            exponent: 3,
            signature: [0xa2; 384],
            q1: [0xa3; 384],
            q2: [0xa4; 384],
        };
        let b = s.to_bytes();
        assert_eq!(b.len(), 1808);
        assert_eq!(&b[0..16], &HEADER1);
        assert_eq!(&b[16..20], &0x8086u32.to_le_bytes());
        assert_eq!(&b[20..24], &0x2026_1122u32.to_le_bytes());
        assert_eq!(&b[24..40], &HEADER2);
        assert_eq!(&b[40..44], &0x1111_1111u32.to_le_bytes());
        assert!(b[44..128].iter().all(|&x| x == 0));
        assert!(b[128..512].iter().all(|&x| x == 0xa1));
        assert_eq!(&b[512..516], &3u32.to_le_bytes());
        assert!(b[516..900].iter().all(|&x| x == 0xa2));
        assert_eq!(&b[900..904], &0x2222_2222u32.to_le_bytes());
        assert_eq!(&b[904..908], &0x3333_3333u32.to_le_bytes());
        assert_eq!(b[908], 0x44);
        assert_eq!(b[909], 0x55);
        assert_eq!(&b[910..912], &[0, 0]);
        assert_eq!(&b[912..928], &[0x66; 16]);
        assert_eq!(&b[928..936], &0x0706u64.to_le_bytes());
        assert_eq!(&b[936..944], &0x0807u64.to_le_bytes());
        assert_eq!(&b[944..952], &0x0908u64.to_le_bytes());
        assert_eq!(&b[952..960], &0x0a09u64.to_le_bytes());
        assert_eq!(&b[960..992], &[0xee; 32]);
        assert!(b[992..1008].iter().all(|&x| x == 0));
        assert_eq!(&b[1008..1024], &[0x77; 16]);
        assert_eq!(&b[1024..1026], &0x8888u16.to_le_bytes());
        assert_eq!(&b[1026..1028], &0x9999u16.to_le_bytes());
        assert!(b[1028..1040].iter().all(|&x| x == 0));
        assert!(b[1040..1424].iter().all(|&x| x == 0xa3));
        assert!(b[1424..1808].iter().all(|&x| x == 0xa4));
        assert_eq!(
            Sigstruct::parse(&b).unwrap(),
            s,
            "parse is the inverse of to_bytes"
        );
    }

    #[test]
    fn parse_refuses_malformed_input() {
        let s = Sigstruct {
            body: body(),
            modulus: [1; 384],
            exponent: 3,
            signature: [2; 384],
            q1: [3; 384],
            q2: [4; 384],
        };
        let b = s.to_bytes();
        assert!(matches!(
            Sigstruct::parse(&b[..1807]),
            Err(Error::SigstructLength { len: 1807 })
        ));
        let mut long = b.to_vec();
        long.push(0);
        assert!(matches!(
            Sigstruct::parse(&long),
            Err(Error::SigstructLength { len: 1809 })
        ));
        let mut x = b;
        x[4] = 0;
        assert!(matches!(
            Sigstruct::parse(&x),
            Err(Error::SigstructHeader {
                field: "HEADER",
                ..
            })
        ));
        let mut x = b;
        x[30] = 1;
        assert!(matches!(
            Sigstruct::parse(&x),
            Err(Error::SigstructHeader {
                field: "HEADER2",
                ..
            })
        ));
        for off in [44, 127, 910, 995, 1030] {
            let mut x = b;
            x[off] = 1;
            assert!(
                matches!(Sigstruct::parse(&x), Err(Error::SigstructReserved { .. })),
                "offset {off}"
            );
        }
    }

    #[test]
    fn signed_digest_covers_exactly_the_two_regions() {
        let a = body();
        let base = a.signed_digest();
        let mut b = a.clone();
        b.isv_svn += 1; // in [900,1028)
        assert_ne!(b.signed_digest(), base);
        let mut c = a.clone();
        c.date = 0; // in [0,128)
        assert_ne!(c.signed_digest(), base);
        let mut d = a.clone();
        d.enclave_hash[0] ^= 1;
        assert_ne!(d.signed_digest(), base);
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("20261122").unwrap(), 0x2026_1122);
        assert_eq!(parse_date("20240229").unwrap(), 0x2024_0229);
        for bad in [
            "20230229",
            "20261301",
            "20260100",
            "2026112",
            "2026-11-2",
            "abcdefgh",
            "20260431",
        ] {
            assert!(matches!(parse_date(bad), Err(Error::Date(_))), "{bad}");
        }
        assert_eq!(format_date(0x2026_1122), "2026-11-22");
        assert_eq!(format_date(0), "none");
        assert_eq!(format_date(0xdead_beef), "0xdeadbeef");
    }
}
