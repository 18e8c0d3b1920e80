//! Intel DCAP quotes: SGX v3/v4/v5 and TDX v4/v5 (TD 1.0 and TD 1.5 bodies), parsed strictly.
//!
//! Layouts follow Intel's `sgx_quote_{3,4,5}.h` and the QVL (see
//! `testdata/vectors/quote-formats.md`). Every length is checked through [`crate::reader`];
//! the signature data must be consumed exactly.
//!
//! **Trailing bytes.** Real TDX quotes are handed out in a fixed-size buffer: the bytes after
//! the signature data are zero padding (70 bytes in the dcap-qvl TDX vector, ~3 KB in 8000-byte
//! quotes). Intel's QVL and dcap-qvl ignore whatever follows. We accept trailing bytes **only
//! if every one of them is zero** — padding carries no information, while a non-zero tail could
//! smuggle data past a verifier that hashes or forwards the whole buffer — and record their
//! count ([`Quote::padding_len`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Item};
use crate::reader::Reader;

/// Intel's QE vendor ID (`939A7233F79C4CA9940A0DB3957F0607`).
pub const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
];

/// Largest quote accepted (generous: real quotes are 1–8 KB; dcap-qvl caps fields at 1 MiB).
pub const MAX_QUOTE_LEN: usize = 1 << 21;
const MAX_FIELD_LEN: usize = 1 << 20;

/// TEE type value of SGX in the quote header.
pub(crate) const TEE_TYPE_SGX: u32 = 0x0000_0000;
/// TEE type value of TDX in the quote header.
pub(crate) const TEE_TYPE_TDX: u32 = 0x0000_0081;
/// Attestation key type ECDSA-256-with-P-256 (the only one supported).
pub(crate) const ATT_KEY_TYPE_ECDSA_P256: u16 = 2;

/// Size of an SGX report body (ISV enclave report and QE report).
pub(crate) const SGX_REPORT_BODY_LEN: usize = 384;
/// Size of a TDX 1.0 TD report body.
pub(crate) const TD10_REPORT_BODY_LEN: usize = 584;
/// Size of a TDX 1.5 TD report body.
pub(crate) const TD15_REPORT_BODY_LEN: usize = 648;
/// Size of the quote header.
pub(crate) const HEADER_LEN: usize = 48;

/// The kind of trusted execution environment that produced evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tee {
    /// An Intel SGX enclave.
    Sgx,
    /// An Intel TDX trust domain.
    Tdx,
}

impl fmt::Display for Tee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tee::Sgx => "sgx",
            Tee::Tdx => "tdx",
        })
    }
}

/// The 48-byte quote header, fields as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteHeader {
    /// 3, 4 or 5.
    pub version: u16,
    /// 2 = ECDSA P-256.
    pub att_key_type: u16,
    /// 0 = SGX, 0x81 = TDX.
    pub tee_type: u32,
    /// QE SVN (v3; reserved in v4/v5).
    pub qe_svn: u16,
    /// PCE SVN (v3; reserved in v4/v5).
    pub pce_svn: u16,
    /// QE vendor ID (Intel's is [`INTEL_QE_VENDOR_ID`]).
    pub qe_vendor_id: [u8; 16],
    /// User data; the first 16 bytes are the QE ID.
    pub user_data: [u8; 20],
}

/// An open enum: certification data type as found in the quote; unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertDataType(pub u16);

impl CertDataType {
    /// PPID in clear text.
    pub const PPID_CLEARTEXT: CertDataType = CertDataType(1);
    /// PPID encrypted with RSA-2048-OAEP.
    pub const PPID_RSA2048: CertDataType = CertDataType(2);
    /// PPID encrypted with RSA-3072-OAEP.
    pub const PPID_RSA3072: CertDataType = CertDataType(3);
    /// The PCK leaf certificate.
    pub const PCK_LEAF: CertDataType = CertDataType(4);
    /// The PCK certificate chain, PEM (leaf, CA, root).
    pub const PCK_CERT_CHAIN: CertDataType = CertDataType(5);
    /// QE report certification data (v4/v5 outer type).
    pub const QE_REPORT: CertDataType = CertDataType(6);
    /// Platform manifest.
    pub const PLATFORM_MANIFEST: CertDataType = CertDataType(7);
}

impl fmt::Display for CertDataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "PPID cleartext",
            2 => "PPID RSA-2048-OAEP",
            3 => "PPID RSA-3072-OAEP",
            4 => "PCK leaf certificate",
            5 => "PCK certificate chain",
            6 => "QE report certification data",
            7 => "platform manifest",
            _ => return write!(f, "unknown (0x{:04x})", self.0),
        };
        write!(f, "{} ({name})", self.0)
    }
}

/// Certification data: what certifies the QE's key (normally the PCK chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificationData {
    /// The type as found.
    pub cert_type: CertDataType,
    /// The raw data.
    pub data: Vec<u8>,
}

/// An SGX report body (384 bytes): the ISV enclave report of an SGX quote and the QE report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgxReportBody {
    /// CPU security version.
    pub cpu_svn: [u8; 16],
    /// MISCSELECT.
    pub misc_select: u32,
    /// ISV extended product ID.
    pub isv_ext_prod_id: [u8; 16],
    /// ATTRIBUTES: flags (u64 LE; bit 1 = DEBUG) ‖ XFRM.
    pub attributes: [u8; 16],
    /// MRENCLAVE.
    pub mr_enclave: [u8; 32],
    /// MRSIGNER.
    pub mr_signer: [u8; 32],
    /// CONFIGID.
    pub config_id: [u8; 64],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// CONFIGSVN.
    pub config_svn: u16,
    /// ISV family ID.
    pub isv_family_id: [u8; 16],
    /// REPORTDATA.
    pub report_data: [u8; 64],
}

impl SgxReportBody {
    /// The DEBUG attribute (ATTRIBUTES.FLAGS bit 1): memory readable by the host.
    pub fn debug(&self) -> bool {
        self.attributes[0] & 0x02 != 0
    }

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        let cpu_svn = r.array("CPUSVN")?;
        let misc_select = r.u32("MISCSELECT")?;
        zero(r.take(12, "reserved1")?, "report reserved1")?;
        let isv_ext_prod_id = r.array("ISVEXTPRODID")?;
        let attributes = r.array("ATTRIBUTES")?;
        let mr_enclave = r.array("MRENCLAVE")?;
        zero(r.take(32, "reserved2")?, "report reserved2")?;
        let mr_signer = r.array("MRSIGNER")?;
        zero(r.take(32, "reserved3")?, "report reserved3")?;
        let config_id = r.array("CONFIGID")?;
        let isv_prod_id = r.u16("ISVPRODID")?;
        let isv_svn = r.u16("ISVSVN")?;
        let config_svn = r.u16("CONFIGSVN")?;
        zero(r.take(42, "reserved4")?, "report reserved4")?;
        let isv_family_id = r.array("ISVFAMILYID")?;
        let report_data = r.array("REPORTDATA")?;
        Ok(SgxReportBody {
            cpu_svn,
            misc_select,
            isv_ext_prod_id,
            attributes,
            mr_enclave,
            mr_signer,
            config_id,
            isv_prod_id,
            isv_svn,
            config_svn,
            isv_family_id,
            report_data,
        })
    }

    /// The 384-byte encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(SGX_REPORT_BODY_LEN);
        self.encode(&mut v);
        v
    }

    pub(crate) fn encode(&self, v: &mut Vec<u8>) {
        v.extend_from_slice(&self.cpu_svn);
        v.extend_from_slice(&self.misc_select.to_le_bytes());
        v.extend_from_slice(&[0; 12]);
        v.extend_from_slice(&self.isv_ext_prod_id);
        v.extend_from_slice(&self.attributes);
        v.extend_from_slice(&self.mr_enclave);
        v.extend_from_slice(&[0; 32]);
        v.extend_from_slice(&self.mr_signer);
        v.extend_from_slice(&[0; 32]);
        v.extend_from_slice(&self.config_id);
        v.extend_from_slice(&self.isv_prod_id.to_le_bytes());
        v.extend_from_slice(&self.isv_svn.to_le_bytes());
        v.extend_from_slice(&self.config_svn.to_le_bytes());
        v.extend_from_slice(&[0; 42]);
        v.extend_from_slice(&self.isv_family_id);
        v.extend_from_slice(&self.report_data);
    }
}

/// A TD report body: TDX 1.0 (584 bytes) or TDX 1.5 (648 bytes, with the `*_v15` fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReport {
    /// TEE_TCB_SVN (byte 0 = TDX module SVN, byte 1 = module major version).
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM.
    pub mr_seam: [u8; 48],
    /// MRSIGNERSEAM (zero for Intel modules).
    pub mr_signer_seam: [u8; 48],
    /// SEAMATTRIBUTES.
    pub seam_attributes: [u8; 8],
    /// TDATTRIBUTES (byte 0 bit 0 = DEBUG).
    pub td_attributes: [u8; 8],
    /// XFAM.
    pub xfam: [u8; 8],
    /// MRTD.
    pub mr_td: [u8; 48],
    /// MRCONFIGID.
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// RTMR0..3.
    pub rtmr: [[u8; 48]; 4],
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// TDX 1.5 only: TEE_TCB_SVN2.
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// TDX 1.5 only: MRSERVICETD.
    pub mr_service_td: Option<[u8; 48]>,
}

impl TdReport {
    /// The TD DEBUG attribute (TDATTRIBUTES bit 0).
    pub fn debug(&self) -> bool {
        self.td_attributes[0] & 0x01 != 0
    }

    fn parse(r: &mut Reader<'_>, v15: bool) -> Result<Self, Error> {
        let tee_tcb_svn = r.array("TEE_TCB_SVN")?;
        let mr_seam = r.array("MRSEAM")?;
        let mr_signer_seam = r.array("MRSIGNERSEAM")?;
        let seam_attributes = r.array("SEAMATTRIBUTES")?;
        let td_attributes = r.array("TDATTRIBUTES")?;
        let xfam = r.array("XFAM")?;
        let mr_td = r.array("MRTD")?;
        let mr_config_id = r.array("MRCONFIGID")?;
        let mr_owner = r.array("MROWNER")?;
        let mr_owner_config = r.array("MROWNERCONFIG")?;
        let rtmr = [
            r.array("RTMR0")?,
            r.array("RTMR1")?,
            r.array("RTMR2")?,
            r.array("RTMR3")?,
        ];
        let report_data = r.array("REPORTDATA")?;
        let (tee_tcb_svn2, mr_service_td) = if v15 {
            (
                Some(r.array("TEE_TCB_SVN2")?),
                Some(r.array("MRSERVICETD")?),
            )
        } else {
            (None, None)
        };
        Ok(TdReport {
            tee_tcb_svn,
            mr_seam,
            mr_signer_seam,
            seam_attributes,
            td_attributes,
            xfam,
            mr_td,
            mr_config_id,
            mr_owner,
            mr_owner_config,
            rtmr,
            report_data,
            tee_tcb_svn2,
            mr_service_td,
        })
    }

    fn encode(&self, v: &mut Vec<u8>) {
        for part in [
            &self.tee_tcb_svn[..],
            &self.mr_seam,
            &self.mr_signer_seam,
            &self.seam_attributes,
            &self.td_attributes,
            &self.xfam,
            &self.mr_td,
            &self.mr_config_id,
            &self.mr_owner,
            &self.mr_owner_config,
            &self.rtmr[0],
            &self.rtmr[1],
            &self.rtmr[2],
            &self.rtmr[3],
            &self.report_data,
        ] {
            v.extend_from_slice(part);
        }
        if let (Some(svn2), Some(st)) = (&self.tee_tcb_svn2, &self.mr_service_td) {
            v.extend_from_slice(svn2);
            v.extend_from_slice(st);
        }
    }
}

/// The attested body of a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // a value per quote; boxing buys nothing
pub enum QuoteBody {
    /// SGX ISV enclave report.
    Sgx(SgxReportBody),
    /// TD report (1.0 or 1.5).
    Td(TdReport),
}

/// A parsed DCAP quote. Construct with [`Quote::parse`]; verification is [`crate::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    header: QuoteHeader,
    body_type: Option<u16>,
    body: QuoteBody,
    signed: Vec<u8>,
    signature: [u8; 64],
    attestation_key: [u8; 64],
    qe_report: SgxReportBody,
    qe_report_raw: Vec<u8>,
    qe_report_signature: [u8; 64],
    qe_auth_data: Vec<u8>,
    outer_cert_type: Option<CertDataType>,
    certification_data: CertificationData,
    padding_len: usize,
}

impl Quote {
    /// Parses a quote strictly: known version (3, 4, 5), ECDSA P-256 key, known TEE type, body
    /// type/size (v5), exact signature-data length, v4/v5 certification data type 6 consumed
    /// exactly, and nothing after the signature data except zero padding.
    pub fn parse(bytes: &[u8]) -> Result<Quote, Error> {
        if bytes.len() > MAX_QUOTE_LEN {
            return Err(Error::malformed(
                Item::Quote,
                format!(
                    "{} bytes is larger than the {MAX_QUOTE_LEN}-byte limit",
                    bytes.len()
                ),
            ));
        }
        let mut r = Reader::new(bytes, Item::Quote);
        let header = QuoteHeader {
            version: r.u16("header version")?,
            att_key_type: r.u16("attestation key type")?,
            tee_type: r.u32("TEE type")?,
            qe_svn: r.u16("QE SVN")?,
            pce_svn: r.u16("PCE SVN")?,
            qe_vendor_id: r.array("QE vendor ID")?,
            user_data: r.array("user data")?,
        };
        if !(3..=5).contains(&header.version) {
            return Err(Error::unsupported(
                Item::Quote,
                format!("quote version {} (supported: 3, 4, 5)", header.version),
            ));
        }
        if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256 {
            return Err(Error::unsupported(
                Item::Quote,
                format!(
                    "attestation key type 0x{:04x} (supported: 2 = ECDSA P-256)",
                    header.att_key_type
                ),
            ));
        }
        let tee = match header.tee_type {
            TEE_TYPE_SGX => Tee::Sgx,
            TEE_TYPE_TDX => Tee::Tdx,
            t => {
                return Err(Error::unsupported(
                    Item::Quote,
                    format!("TEE type 0x{t:08x} (supported: 0x00000000 SGX, 0x00000081 TDX)"),
                ))
            }
        };
        if header.version == 3 && tee != Tee::Sgx {
            return Err(Error::malformed(
                Item::Quote,
                "a version 3 quote must be an SGX quote",
            ));
        }
        let (body_type, body) = if header.version == 5 {
            let ty = r.u16("v5 body type")?;
            let size = r.u32("v5 body size")?;
            let (expected, want_tee) = match ty {
                1 => (SGX_REPORT_BODY_LEN, Tee::Sgx),
                2 => (TD10_REPORT_BODY_LEN, Tee::Tdx),
                3 => (TD15_REPORT_BODY_LEN, Tee::Tdx),
                _ => {
                    return Err(Error::unsupported(
                        Item::Quote,
                        format!("v5 body type 0x{ty:04x} (supported: 1 SGX, 2 TD 1.0, 3 TD 1.5)"),
                    ))
                }
            };
            if size as usize != expected {
                return Err(Error::malformed(
                    Item::Quote,
                    format!("v5 body type {ty} has size {size}, expected {expected}"),
                ));
            }
            if want_tee != tee {
                return Err(Error::malformed(
                    Item::Quote,
                    format!("v5 body type {ty} does not match TEE type {tee}"),
                ));
            }
            let mut b = r.sub(expected, "body")?;
            let body = match ty {
                1 => QuoteBody::Sgx(SgxReportBody::parse(&mut b)?),
                2 => QuoteBody::Td(TdReport::parse(&mut b, false)?),
                _ => QuoteBody::Td(TdReport::parse(&mut b, true)?),
            };
            (Some(ty), body)
        } else {
            let body = match tee {
                Tee::Sgx => QuoteBody::Sgx(SgxReportBody::parse(
                    &mut r.sub(SGX_REPORT_BODY_LEN, "body")?,
                )?),
                Tee::Tdx => QuoteBody::Td(TdReport::parse(
                    &mut r.sub(TD10_REPORT_BODY_LEN, "body")?,
                    false,
                )?),
            };
            (None, body)
        };
        let signed_len = r.pos();
        let signed = bytes.get(..signed_len).unwrap_or_default().to_vec();
        let sig_len = r.u32("signature data length")? as usize;
        if sig_len > MAX_FIELD_LEN {
            return Err(Error::malformed(
                Item::Quote,
                format!("signature data length {sig_len} exceeds {MAX_FIELD_LEN}"),
            ));
        }
        let mut s = r.sub(sig_len, "signature data")?;
        let signature = s.array("quote signature")?;
        let attestation_key = s.array("attestation key")?;
        let (outer_cert_type, qe_report_raw, qe_report, qe_report_signature, qe_auth_data, cert) =
            if header.version == 3 {
                let (a, b, c, d, e) = parse_qe_section(&mut s)?;
                s.finish("the certification data")?;
                (None, a, b, c, d, e)
            } else {
                let outer = CertDataType(s.u16("certification data type")?);
                if outer != CertDataType::QE_REPORT {
                    return Err(Error::unsupported(
                        Item::Quote,
                        format!(
                            "v{} certification data type {outer} (expected 6, QE report \
                             certification data)",
                            header.version
                        ),
                    ));
                }
                let size = s.u32("certification data size")? as usize;
                let mut inner = s.sub(size, "QE report certification data")?;
                let (a, b, c, d, e) = parse_qe_section(&mut inner)?;
                inner.finish("the inner certification data")?;
                s.finish("the certification data")?;
                (Some(outer), a, b, c, d, e)
            };
        let padding = r.rest();
        if let Some(i) = padding.iter().position(|&b| b != 0) {
            return Err(Error::malformed(
                Item::Quote,
                format!(
                    "{} bytes after the signature data, with a non-zero byte at offset {} (only \
                     zero padding is accepted)",
                    padding.len(),
                    bytes.len() - padding.len() + i
                ),
            ));
        }
        Ok(Quote {
            header,
            body_type,
            body,
            signed,
            signature,
            attestation_key,
            qe_report,
            qe_report_raw,
            qe_report_signature,
            qe_auth_data,
            outer_cert_type,
            certification_data: cert,
            padding_len: padding.len(),
        })
    }

    /// Re-encodes the quote (without padding); `parse(q.to_bytes()) == q` up to padding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = self.signed.clone();
        let qe = encode_qe_section(
            &self.qe_report_raw,
            &self.qe_report_signature,
            &self.qe_auth_data,
            &self.certification_data,
        );
        let mut sig = Vec::with_capacity(128 + 6 + qe.len());
        sig.extend_from_slice(&self.signature);
        sig.extend_from_slice(&self.attestation_key);
        match self.outer_cert_type {
            Some(t) => {
                sig.extend_from_slice(&t.0.to_le_bytes());
                sig.extend_from_slice(&(qe.len() as u32).to_le_bytes());
                sig.extend_from_slice(&qe);
            }
            None => sig.extend_from_slice(&qe),
        }
        v.extend_from_slice(&(sig.len() as u32).to_le_bytes());
        v.extend_from_slice(&sig);
        v
    }

    /// The kind of TEE that produced the quote.
    pub fn tee(&self) -> Tee {
        match self.body {
            QuoteBody::Sgx(_) => Tee::Sgx,
            QuoteBody::Td(_) => Tee::Tdx,
        }
    }

    /// Quote format version (3, 4 or 5).
    pub fn version(&self) -> u16 {
        self.header.version
    }

    /// The header fields.
    pub fn header(&self) -> &QuoteHeader {
        &self.header
    }

    /// v5 body type (1 SGX, 2 TD 1.0, 3 TD 1.5); `None` for v3/v4.
    pub fn body_type(&self) -> Option<u16> {
        self.body_type
    }

    /// The attested body.
    pub fn body(&self) -> &QuoteBody {
        &self.body
    }

    /// The SGX report body, for SGX quotes.
    pub fn sgx_report(&self) -> Option<&SgxReportBody> {
        match &self.body {
            QuoteBody::Sgx(b) => Some(b),
            QuoteBody::Td(_) => None,
        }
    }

    /// The TD report body, for TDX quotes.
    pub fn td_report(&self) -> Option<&TdReport> {
        match &self.body {
            QuoteBody::Td(b) => Some(b),
            QuoteBody::Sgx(_) => None,
        }
    }

    /// The 64 bytes of report data the enclave / TD chose (unverified until [`crate::verify`]).
    pub fn report_data(&self) -> &[u8; 64] {
        match &self.body {
            QuoteBody::Sgx(b) => &b.report_data,
            QuoteBody::Td(b) => &b.report_data,
        }
    }

    /// The bytes the quote signature covers: header, v5 body descriptor, body.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed
    }

    /// Quote signature, raw r ‖ s (big-endian).
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// Attestation public key, raw x ‖ y (big-endian).
    pub fn attestation_key(&self) -> &[u8; 64] {
        &self.attestation_key
    }

    /// The Quoting Enclave's report.
    pub fn qe_report(&self) -> &SgxReportBody {
        &self.qe_report
    }

    /// The raw 384 bytes of the QE report (what the PCK key signed).
    pub fn qe_report_bytes(&self) -> &[u8] {
        &self.qe_report_raw
    }

    /// QE report signature r ‖ s, by the PCK key.
    pub fn qe_report_signature(&self) -> &[u8; 64] {
        &self.qe_report_signature
    }

    /// QE authentication data.
    pub fn qe_auth_data(&self) -> &[u8] {
        &self.qe_auth_data
    }

    /// The (inner, for v4/v5) certification data.
    pub fn certification_data(&self) -> &CertificationData {
        &self.certification_data
    }

    /// Number of zero bytes found after the signature data.
    pub fn padding_len(&self) -> usize {
        self.padding_len
    }

    /// The PCK certificate chain as PEM text, when the certification data is type 5 and is text
    /// (one trailing NUL is allowed and removed).
    pub fn pck_chain_pem(&self) -> Option<&str> {
        if self.certification_data.cert_type != CertDataType::PCK_CERT_CHAIN {
            return None;
        }
        let d = &self.certification_data.data;
        let d = d.strip_suffix(&[0]).unwrap_or(d);
        std::str::from_utf8(d).ok()
    }

    /// FMSPC from the PCK leaf certificate's SGX extension (what a PCCS fetch needs).
    pub fn fmspc(&self) -> Result<[u8; 6], Error> {
        Ok(self.pck_leaf_info()?.fmspc)
    }

    /// Which PCK CA issued the leaf (selects `pckcrl?ca=processor|platform`).
    pub fn pck_ca(&self) -> Result<crate::PckCa, Error> {
        crate::pki::pck_ca_of_leaf(&self.first_pck_cert()?)
    }

    fn first_pck_cert(&self) -> Result<Vec<u8>, Error> {
        let pem = self.pck_chain_pem().ok_or_else(|| {
            Error::unsupported(
                Item::Quote,
                format!(
                    "certification data type {} carries no PEM PCK chain",
                    self.certification_data.cert_type
                ),
            )
        })?;
        crate::pki::parse_pem_chain(pem, Item::PckCertificate)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::malformed(Item::PckCertificate, "empty PCK chain"))
    }

    fn pck_leaf_info(&self) -> Result<crate::pki::SgxExtension, Error> {
        crate::pki::sgx_extension_of(&self.first_pck_cert()?)
    }
}

type QeSection = (Vec<u8>, SgxReportBody, [u8; 64], Vec<u8>, CertificationData);

fn parse_qe_section(s: &mut Reader<'_>) -> Result<QeSection, Error> {
    let mut qr = s.sub(SGX_REPORT_BODY_LEN, "QE report")?;
    let raw = qr.take(SGX_REPORT_BODY_LEN, "QE report")?.to_vec();
    let qe_report = SgxReportBody::parse(&mut Reader::new(&raw, Item::QeReport))?;
    let qe_sig = s.array("QE report signature")?;
    let auth_len = s.u16("QE auth data size")? as usize;
    let auth = s.take(auth_len, "QE auth data")?.to_vec();
    let cert_type = CertDataType(s.u16("certification data type")?);
    let cert_len = s.u32("certification data size")? as usize;
    if cert_len > MAX_FIELD_LEN {
        return Err(Error::malformed(
            Item::Quote,
            format!("certification data size {cert_len} exceeds {MAX_FIELD_LEN}"),
        ));
    }
    let data = s.take(cert_len, "certification data")?.to_vec();
    Ok((
        raw,
        qe_report,
        qe_sig,
        auth,
        CertificationData { cert_type, data },
    ))
}

fn encode_qe_section(
    qe_report: &[u8],
    qe_sig: &[u8; 64],
    auth: &[u8],
    cert: &CertificationData,
) -> Vec<u8> {
    let mut v = Vec::with_capacity(qe_report.len() + 72 + auth.len() + cert.data.len());
    v.extend_from_slice(qe_report);
    v.extend_from_slice(qe_sig);
    v.extend_from_slice(&(auth.len() as u16).to_le_bytes());
    v.extend_from_slice(auth);
    v.extend_from_slice(&cert.cert_type.0.to_le_bytes());
    v.extend_from_slice(&(cert.data.len() as u32).to_le_bytes());
    v.extend_from_slice(&cert.data);
    v
}

/// Building blocks for the simulated platform's quotes (same encoders as [`Quote::to_bytes`]).
pub(crate) struct QuoteParts<'a> {
    pub(crate) header: &'a QuoteHeader,
    pub(crate) body: &'a QuoteBody,
}

impl QuoteParts<'_> {
    /// Header ‖ (v5: body type ‖ body size ‖) body: the bytes the attestation key signs.
    pub(crate) fn signed_region(&self) -> Vec<u8> {
        let h = self.header;
        let mut v = Vec::with_capacity(HEADER_LEN + TD10_REPORT_BODY_LEN);
        v.extend_from_slice(&h.version.to_le_bytes());
        v.extend_from_slice(&h.att_key_type.to_le_bytes());
        v.extend_from_slice(&h.tee_type.to_le_bytes());
        v.extend_from_slice(&h.qe_svn.to_le_bytes());
        v.extend_from_slice(&h.pce_svn.to_le_bytes());
        v.extend_from_slice(&h.qe_vendor_id);
        v.extend_from_slice(&h.user_data);
        let at = v.len();
        match self.body {
            QuoteBody::Sgx(b) => b.encode(&mut v),
            QuoteBody::Td(b) => b.encode(&mut v),
        }
        if h.version == 5 {
            let (ty, len) = match self.body {
                QuoteBody::Sgx(_) => (1u16, SGX_REPORT_BODY_LEN),
                QuoteBody::Td(b) if b.mr_service_td.is_some() => (3, TD15_REPORT_BODY_LEN),
                QuoteBody::Td(_) => (2, TD10_REPORT_BODY_LEN),
            };
            let mut descriptor = ty.to_le_bytes().to_vec();
            descriptor.extend_from_slice(&(len as u32).to_le_bytes());
            v.splice(at..at, descriptor);
        }
        v
    }
}

/// Assembles a v3 (no outer type) or v4/v5 (outer type 6) quote from its parts.
#[allow(clippy::too_many_arguments)]
pub(crate) fn assemble(
    signed: Vec<u8>,
    outer_type: bool,
    signature: &[u8; 64],
    attestation_key: &[u8; 64],
    qe_report: &[u8],
    qe_sig: &[u8; 64],
    auth: &[u8],
    cert: &CertificationData,
) -> Vec<u8> {
    let qe = encode_qe_section(qe_report, qe_sig, auth, cert);
    let mut sig = Vec::with_capacity(134 + qe.len());
    sig.extend_from_slice(signature);
    sig.extend_from_slice(attestation_key);
    if outer_type {
        sig.extend_from_slice(&CertDataType::QE_REPORT.0.to_le_bytes());
        sig.extend_from_slice(&(qe.len() as u32).to_le_bytes());
    }
    sig.extend_from_slice(&qe);
    let mut v = signed;
    v.extend_from_slice(&(sig.len() as u32).to_le_bytes());
    v.extend_from_slice(&sig);
    v
}

fn zero(b: &[u8], what: &str) -> Result<(), Error> {
    if b.iter().any(|&x| x != 0) {
        return Err(Error::malformed(Item::Quote, format!("{what} is not zero")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SgxQuoteSpec, SimPlatform, TdxQuoteSpec};
    use crate::ErrorKind;

    fn sgx_v3() -> Vec<u8> {
        SimPlatform::from_seed([1; 32]).sgx_quote(&SgxQuoteSpec::default())
    }

    /// Turns a v3/v4 quote into v5 with a body descriptor (signature no longer verifies, the
    /// parser does not care).
    fn to_v5(q: &[u8], ty: u16, size: u32, body_len: usize) -> Vec<u8> {
        let mut v = q[..HEADER_LEN].to_vec();
        v[0..2].copy_from_slice(&5u16.to_le_bytes());
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v.extend_from_slice(&q[HEADER_LEN..HEADER_LEN + body_len]);
        if ty == 3 {
            v.extend_from_slice(&[0u8; 64]);
        }
        let rest = &q[HEADER_LEN + body_len..];
        // v5 uses the v4 signature data layout: rebuild from a v4 quote's tail.
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn v5_bodies_parse_and_descriptors_are_checked() {
        let sim = SimPlatform::from_seed([1; 32]);
        let tdx = sim.tdx_quote(&TdxQuoteSpec::default());
        let q = Quote::parse(&to_v5(&tdx, 2, 584, TD10_REPORT_BODY_LEN)).unwrap();
        assert_eq!(
            (q.version(), q.tee(), q.body_type()),
            (5, Tee::Tdx, Some(2))
        );
        let q = Quote::parse(&to_v5(&tdx, 3, 648, TD10_REPORT_BODY_LEN)).unwrap();
        assert_eq!(q.body_type(), Some(3));
        assert!(q.td_report().unwrap().mr_service_td.is_some());
        let e = Quote::parse(&to_v5(&tdx, 2, 600, TD10_REPORT_BODY_LEN)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Malformed);
        let e = Quote::parse(&to_v5(&tdx, 1, 384, TD10_REPORT_BODY_LEN)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Malformed, "{e}");
        let e = Quote::parse(&to_v5(&tdx, 9, 584, TD10_REPORT_BODY_LEN)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        // An SGX body in a v5 quote needs the v4 signature-data layout: take it from a TDX quote.
        let mut sgx5 = sgx_v3()[..HEADER_LEN + SGX_REPORT_BODY_LEN].to_vec();
        sgx5.extend_from_slice(&tdx[HEADER_LEN + TD10_REPORT_BODY_LEN..]);
        let q = Quote::parse(&to_v5(&sgx5, 1, 384, SGX_REPORT_BODY_LEN)).unwrap();
        assert_eq!(
            (q.version(), q.tee(), q.body_type()),
            (5, Tee::Sgx, Some(1))
        );
    }

    #[test]
    fn header_policy_is_enforced() {
        let q = sgx_v3();
        let mut t = q.clone();
        t[2] = 3; // P-384 attestation key
        assert_eq!(Quote::parse(&t).unwrap_err().kind(), ErrorKind::Unsupported);
        let mut t = q.clone();
        t[4] = 0x81; // TDX in a v3 quote
        assert_eq!(Quote::parse(&t).unwrap_err().kind(), ErrorKind::Malformed);
        let mut t = q.clone();
        t[0] = 2;
        assert_eq!(Quote::parse(&t).unwrap_err().kind(), ErrorKind::Unsupported);
        let mut t = q.clone();
        t[4] = 0x7f;
        assert_eq!(Quote::parse(&t).unwrap_err().kind(), ErrorKind::Unsupported);
        assert!(Quote::parse(&[0; 10]).is_err());
        assert!(Quote::parse(&vec![0; MAX_QUOTE_LEN + 1]).is_err());
        let e = Quote::parse(&q[..q.len() - 1]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Malformed);
        assert_eq!(Quote::parse(&q).unwrap().to_bytes(), q);
    }

    #[test]
    fn v4_requires_outer_type_6_consumed_exactly() {
        let tdx = SimPlatform::from_seed([2; 32]).tdx_quote(&TdxQuoteSpec::default());
        let outer = HEADER_LEN + TD10_REPORT_BODY_LEN + 4 + 128;
        let mut t = tdx.clone();
        t[outer] = 5;
        assert_eq!(Quote::parse(&t).unwrap_err().kind(), ErrorKind::Unsupported);
        // Outer size one larger than the inner structure: trailing bytes inside type 6.
        let mut t = tdx.clone();
        let size = u32::from_le_bytes(t[outer + 2..outer + 6].try_into().unwrap());
        t[outer + 2..outer + 6].copy_from_slice(&(size + 1).to_le_bytes());
        let sd = HEADER_LEN + TD10_REPORT_BODY_LEN;
        let len = u32::from_le_bytes(t[sd..sd + 4].try_into().unwrap());
        t[sd..sd + 4].copy_from_slice(&(len + 1).to_le_bytes());
        t.push(0);
        let e = Quote::parse(&t).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
        let cd = CertDataType(0x1234);
        assert_eq!(cd.to_string(), "unknown (0x1234)");
        assert_eq!(
            CertDataType::PCK_CERT_CHAIN.to_string(),
            "5 (PCK certificate chain)"
        );
    }
}
