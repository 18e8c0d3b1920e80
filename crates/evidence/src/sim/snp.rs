//! The simulated SEV-SNP platform: an ARK, an ASK and a chip's VCEK of its own, and
//! attestation reports in AMD's byte format signed by that VCEK. **Simulation: nothing it signs
//! proves anything about hardware.**
//!
//! It presents itself as a Milan part: the ARK ("ARK-Milan") and ASK ("SEV-Milan") are
//! RSA-2048 keys signing with RSASSA-PSS SHA-384 (salt 48) as AMD's do (AMD's are RSA-4096;
//! the verifier accepts 2048 to 8192 bits), the VCEK is a P-384 key whose certificate carries
//! AMD's extensions (the SPLs of its TCB, the chip's hwID, productName "Milan-B0"). Its
//! reports verify through the same [`crate::snp::verify_snp`] under
//! [`SimSnpPlatform::anchors`] and are refused under [`crate::snp::SnpAnchors::amd`]. Every
//! subject name contains "Coffer Simulated" besides the common name AMD's chain checks.
//!
//! Everything derives from the same 32-byte seed as the SGX/TDX [`super::SimPlatform`] (RSA
//! keys from a ChaCha20 stream keyed by HKDF, the VCEK by HKDF), so one persisted seed is
//! one simulated machine with both kinds of TEE.

use hkdf::Hkdf;
use p384::ecdsa::signature::Signer as _;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rsa::pkcs8::EncodePublicKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::RsaPrivateKey;
use sha2::{Sha256, Sha384};

use super::der::{bits, name, octet, oid, seq, time, tlv, uint};
use super::{CERT_NOT_AFTER, CERT_NOT_BEFORE};
use crate::snp::{Product, SnpAnchors, SnpCollateral, TcbVersion, REPORT_LEN, SIGNED_LEN};

/// The simulated chip's TCB (Milan layout): boot loader 3, TEE 0, SNP 8, microcode 115.
pub const SIM_SNP_TCB: TcbVersion = TcbVersion {
    fmc: None,
    bootloader: 3,
    tee: 0,
    snp: 8,
    microcode: 115,
};

/// Policy bit 17 (reserved, must be one) and bit 16 (SMT allowed): a production guest.
pub const SIM_SNP_POLICY: u64 = 0x3_0000;

/// What the simulated guest reports. `Default`: a production guest (policy
/// [`SIM_SNP_POLICY`], VMPL 0) with zero measurement, host data and report data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpReportSpec {
    /// MEASUREMENT: the launch digest.
    pub measurement: [u8; 48],
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// REPORT_DATA.
    pub report_data: [u8; 64],
    /// The guest policy.
    pub policy: u64,
    /// The VMPL the report was requested from.
    pub vmpl: u32,
    /// ID_KEY_DIGEST (zero: no ID block).
    pub id_key_digest: [u8; 48],
    /// AUTHOR_KEY_DIGEST (zero: no author key).
    pub author_key_digest: [u8; 48],
}

impl Default for SnpReportSpec {
    fn default() -> Self {
        SnpReportSpec {
            measurement: [0; 48],
            host_data: [0; 32],
            report_data: [0; 64],
            policy: SIM_SNP_POLICY,
            vmpl: 0,
            id_key_digest: [0; 48],
            author_key_digest: [0; 48],
        }
    }
}

/// A simulated SEV-SNP machine. `Debug` shows no key material.
#[derive(Clone)]
pub struct SimSnpPlatform {
    ark_key: RsaPrivateKey,
    vcek_key: p384::ecdsa::SigningKey,
    ark: Vec<u8>,
    ask: Vec<u8>,
    vcek: Vec<u8>,
    chip_id: [u8; 64],
    /// Randomness for PSS salts (deterministic: the same seed signs the same bytes).
    salt_seed: [u8; 32],
}

impl std::fmt::Debug for SimSnpPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSnpPlatform")
            .field("chip_id", &hex::encode(self.chip_id))
            .finish_non_exhaustive()
    }
}

fn okm<const N: usize>(seed: &[u8; 32], label: &str) -> [u8; N] {
    let hk = Hkdf::<Sha256>::new(Some(b"coffer-sim-snp/v1"), seed);
    let mut out = [0u8; N];
    // N ≤ 64 is far below HKDF-SHA-256's output limit.
    hk.expand(label.as_bytes(), &mut out)
        .unwrap_or_else(|_| unreachable!("HKDF output of {N} bytes"));
    out
}

fn rsa_key(seed: &[u8; 32], label: &str) -> RsaPrivateKey {
    let mut rng = ChaCha20Rng::from_seed(okm(seed, label));
    // Key generation only fails for unusable sizes; 2048 bits with e = 65537 is not one.
    RsaPrivateKey::new(&mut rng, 2048)
        .unwrap_or_else(|e| unreachable!("RSA-2048 key generation: {e}"))
}

/// OID 1.3.6.1.4.1.3704.1.`tail` (AMD's VCEK extensions), DER content bytes.
fn amd_oid(tail: &[u8]) -> Vec<u8> {
    let mut o = vec![0x2b, 0x06, 0x01, 0x04, 0x01, 0x9c, 0x78, 0x01];
    o.extend_from_slice(tail);
    oid(&o)
}

/// RSASSA-PSS with SHA-384, MGF1 SHA-384, salt 48: AMD's signature algorithm.
fn pss_sha384() -> Vec<u8> {
    let sha384 = seq(&[
        oid(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02]),
        tlv(0x05, &[]),
    ]);
    let mgf1 = seq(&[
        oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08]),
        sha384.clone(),
    ]);
    seq(&[
        oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a]),
        seq(&[tlv(0xa0, &sha384), tlv(0xa1, &mgf1), tlv(0xa2, &uint(48))]),
    ])
}

fn rsa_spki(key: &RsaPrivateKey) -> Vec<u8> {
    key.to_public_key()
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_else(|e| unreachable!("RSA public key DER: {e}"))
}

fn p384_spki(key: &p384::ecdsa::SigningKey) -> Vec<u8> {
    let point = key.verifying_key().to_encoded_point(false);
    seq(&[
        seq(&[
            oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            oid(&[0x2b, 0x81, 0x04, 0x00, 0x22]),
        ]),
        bits(point.as_bytes()),
    ])
}

struct Signing<'a> {
    key: &'a RsaPrivateKey,
    rng: ChaCha20Rng,
}

impl Signing<'_> {
    /// `tbs ‖ algorithm ‖ signature` as a certificate or CRL.
    fn sign(&mut self, tbs: Vec<u8>) -> Vec<u8> {
        let signer = rsa::pss::SigningKey::<Sha384>::new_with_salt_len(self.key.clone(), 48);
        let sig = signer.sign_with_rng(&mut self.rng, &tbs).to_vec();
        seq(&[tbs, pss_sha384(), bits(&sig)])
    }
}

struct CertSpec<'a> {
    serial: u64,
    subject: &'a str,
    issuer: &'a str,
    spki: Vec<u8>,
    ca: bool,
    extensions: Vec<Vec<u8>>,
}

fn tbs_certificate(c: CertSpec<'_>) -> Vec<u8> {
    let mut exts = c.extensions;
    if c.ca {
        let bool_true = tlv(0x01, &[0xff]);
        exts.push(seq(&[
            oid(&[0x55, 0x1d, 0x13]),
            bool_true.clone(),
            octet(&seq(&[bool_true])),
        ]));
    }
    let mut tbs = vec![
        tlv(0xa0, &uint(2)),
        uint(c.serial),
        pss_sha384(),
        name(c.issuer),
        seq(&[time(CERT_NOT_BEFORE), time(CERT_NOT_AFTER)]),
        name(c.subject),
        c.spki,
    ];
    if !exts.is_empty() {
        tbs.push(tlv(0xa3, &seq(&exts)));
    }
    seq(&tbs)
}

fn extension(oid_der: Vec<u8>, value: Vec<u8>) -> Vec<u8> {
    seq(&[oid_der, octet(&value)])
}

impl SimSnpPlatform {
    /// Derives the machine (keys, certificates, chip ID) from `seed`.
    pub fn from_seed(seed: [u8; 32]) -> SimSnpPlatform {
        let ark_key = rsa_key(&seed, "ark");
        let ask_key = rsa_key(&seed, "ask");
        let vcek_key = {
            let mut label = 0u32;
            loop {
                let bytes: [u8; 48] = okm(&seed, &format!("vcek/{label}"));
                if let Ok(k) = p384::ecdsa::SigningKey::from_slice(&bytes) {
                    break k;
                }
                label += 1;
            }
        };
        let chip_id: [u8; 64] = okm(&seed, "chip-id");
        let mut signing = Signing {
            key: &ark_key,
            rng: ChaCha20Rng::from_seed(okm(&seed, "certificate-salts")),
        };
        let ark = signing.sign(tbs_certificate(CertSpec {
            serial: 1,
            subject: "ARK-Milan",
            issuer: "ARK-Milan",
            spki: rsa_spki(&ark_key),
            ca: true,
            extensions: Vec::new(),
        }));
        let ask = signing.sign(tbs_certificate(CertSpec {
            serial: 2,
            subject: "SEV-Milan",
            issuer: "ARK-Milan",
            spki: rsa_spki(&ask_key),
            ca: true,
            extensions: Vec::new(),
        }));
        let t = SIM_SNP_TCB;
        let vcek = Signing {
            key: &ask_key,
            rng: signing.rng.clone(),
        }
        .sign(tbs_certificate(CertSpec {
            serial: 0,
            subject: "SEV-VCEK",
            issuer: "SEV-Milan",
            spki: p384_spki(&vcek_key),
            ca: false,
            extensions: vec![
                extension(amd_oid(&[0x03, 0x01]), uint(t.bootloader.into())),
                extension(amd_oid(&[0x03, 0x02]), uint(t.tee.into())),
                extension(amd_oid(&[0x03, 0x03]), uint(t.snp.into())),
                extension(amd_oid(&[0x03, 0x08]), uint(t.microcode.into())),
                extension(amd_oid(&[0x04]), octet(&chip_id)),
                extension(amd_oid(&[0x02]), tlv(0x16, b"Milan-B0")),
            ],
        }));
        SimSnpPlatform {
            ark_key,
            vcek_key,
            ark,
            ask,
            vcek,
            chip_id,
            salt_seed: okm(&seed, "crl-salts"),
        }
    }

    /// The anchors that pin this machine's ARK (as a Milan root).
    pub fn anchors(&self) -> SnpAnchors {
        SnpAnchors::from_ark(Product::Milan, &self.ark)
            .unwrap_or_else(|e| unreachable!("the simulated ARK parses: {e}"))
    }

    /// The VCEK certificate (DER), as the host's certificate table or AMD's KDS serves it.
    pub fn vcek_der(&self) -> &[u8] {
        &self.vcek
    }

    /// The ASK certificate (DER).
    pub fn ask_der(&self) -> &[u8] {
        &self.ask
    }

    /// The ARK certificate (DER).
    pub fn ark_der(&self) -> &[u8] {
        &self.ark
    }

    /// The chip's CHIP_ID.
    pub fn chip_id(&self) -> [u8; 64] {
        self.chip_id
    }

    /// VCEK, ASK and ARK, with `crl` when given.
    pub fn collateral<'a>(&'a self, crl: Option<&'a [u8]>) -> SnpCollateral<'a> {
        SnpCollateral {
            vek: &self.vcek,
            ask: &self.ask,
            ark: &self.ark,
            crl,
        }
    }

    /// The ARK's CRL, valid from `this_update` to `next_update`, listing `revoked` serials
    /// (the ASK's is 2).
    pub fn crl(&self, this_update: i64, next_update: i64, revoked: &[u64]) -> Vec<u8> {
        let mut tbs = vec![
            uint(1),
            pss_sha384(),
            name("ARK-Milan"),
            time(this_update),
            time(next_update),
        ];
        if !revoked.is_empty() {
            tbs.push(seq(&revoked
                .iter()
                .map(|s| seq(&[uint(*s), time(this_update)]))
                .collect::<Vec<_>>()));
        }
        Signing {
            key: &self.ark_key,
            rng: ChaCha20Rng::from_seed(self.salt_seed),
        }
        .sign(seq(&tbs))
    }

    /// A version 3 ATTESTATION_REPORT for the guest `spec` describes, signed by the VCEK.
    pub fn report(&self, spec: &SnpReportSpec) -> Vec<u8> {
        let mut r = vec![0u8; REPORT_LEN];
        let put = |r: &mut Vec<u8>, off: usize, b: &[u8]| r[off..off + b.len()].copy_from_slice(b);
        let t = SIM_SNP_TCB;
        let tcb = u64::from_le_bytes([t.bootloader, t.tee, 0, 0, 0, 0, t.snp, t.microcode]);
        put(&mut r, 0x00, &3u32.to_le_bytes());
        put(&mut r, 0x08, &spec.policy.to_le_bytes());
        put(&mut r, 0x30, &spec.vmpl.to_le_bytes());
        put(&mut r, 0x34, &1u32.to_le_bytes()); // ECDSA P-384 with SHA-384
        put(&mut r, 0x38, &tcb.to_le_bytes()); // CURRENT_TCB
        put(&mut r, 0x40, &1u64.to_le_bytes()); // PLATFORM_INFO: SMT enabled
        let author = u32::from(spec.author_key_digest != [0; 48]);
        put(&mut r, 0x48, &author.to_le_bytes()); // signed by the VCEK
        put(&mut r, 0x50, &spec.report_data);
        put(&mut r, 0x90, &spec.measurement);
        put(&mut r, 0xC0, &spec.host_data);
        put(&mut r, 0xE0, &spec.id_key_digest);
        put(&mut r, 0x110, &spec.author_key_digest);
        put(&mut r, 0x180, &tcb.to_le_bytes()); // REPORTED_TCB
        put(&mut r, 0x188, &[0x19, 0x01, 0x01]); // CPUID: family 19h, model 1: Milan
        put(&mut r, 0x1A0, &self.chip_id);
        put(&mut r, 0x1E0, &tcb.to_le_bytes()); // COMMITTED_TCB
        put(&mut r, 0x1E8, &[4, 55, 1]); // firmware 1.55.4
        put(&mut r, 0x1EC, &[4, 55, 1]);
        put(&mut r, 0x1F0, &tcb.to_le_bytes()); // LAUNCH_TCB
        let sig: p384::ecdsa::Signature = self.vcek_key.sign(&r[..SIGNED_LEN]);
        let (rr, ss) = sig.split_bytes();
        let mut le = |off: usize, be: &[u8]| {
            for (i, b) in be.iter().rev().enumerate() {
                r[off + i] = *b;
            }
        };
        le(SIGNED_LEN, &rr);
        le(SIGNED_LEN + 72, &ss);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snp::{verify_snp, Signer};
    use crate::ErrorKind;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn reports_verify_under_the_sims_ark_only() {
        let sim = SimSnpPlatform::from_seed([5; 32]);
        let spec = SnpReportSpec {
            measurement: [0xaa; 48],
            host_data: [0xbb; 32],
            report_data: [0xcc; 64],
            ..SnpReportSpec::default()
        };
        let report = sim.report(&spec);
        let crl = sim.crl(NOW - 3600, NOW + 86_400, &[]);
        let v = verify_snp(&report, &sim.collateral(Some(&crl)), &sim.anchors(), NOW).unwrap();
        assert_eq!(v.report.measurement, [0xaa; 48]);
        assert_eq!(v.report.host_data, [0xbb; 32]);
        assert_eq!(v.report.report_data, [0xcc; 64]);
        assert_eq!(v.report.signer, Signer::Vcek);
        assert_eq!(v.product, Product::Milan);
        assert_eq!(v.reported_tcb, SIM_SNP_TCB);
        assert!(v.crl_checked && !v.report.debug() && v.report.smt_allowed());

        // Not under AMD's roots, nor under another simulated machine's.
        let e = verify_snp(&report, &sim.collateral(None), &SnpAnchors::amd(), NOW).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UntrustedRoot, "{e}");
        let other = SimSnpPlatform::from_seed([6; 32]);
        let e = verify_snp(&report, &sim.collateral(None), &other.anchors(), NOW).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UntrustedRoot, "{e}");
        // Another chip's VCEK under the right chain: its signature does not match.
        let mixed = SnpCollateral {
            vek: other.vcek_der(),
            ..sim.collateral(None)
        };
        let e = verify_snp(&report, &mixed, &sim.anchors(), NOW).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadSignature, "{e}");
        // A revoked ASK.
        let crl = sim.crl(NOW - 3600, NOW + 86_400, &[2]);
        let e = verify_snp(&report, &sim.collateral(Some(&crl)), &sim.anchors(), NOW).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Revoked, "{e}");
        // One flipped bit of the signed region.
        let mut t = report.clone();
        t[0x95] ^= 1;
        let e = verify_snp(&t, &sim.collateral(None), &sim.anchors(), NOW).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadSignature, "{e}");
    }

    #[test]
    fn the_seed_is_the_machine() {
        let a = SimSnpPlatform::from_seed([7; 32]);
        let b = SimSnpPlatform::from_seed([7; 32]);
        assert_eq!(a.vcek_der(), b.vcek_der());
        assert_eq!(a.ark_der(), b.ark_der());
        assert_eq!(a.chip_id(), b.chip_id());
        let c = SimSnpPlatform::from_seed([8; 32]);
        assert_ne!(a.chip_id(), c.chip_id());
    }
}
