//! TEE evidence: parse and verify Intel SGX and TDX DCAP quotes against Intel PCS collateral,
//! to the standard of Intel's Quote Verification Library; plus a simulated platform.
//!
//! The crate answers one question — *is this a genuine, up-to-date TEE running this code?* — as
//! a pure function: bytes and time in, verdict out. It does no I/O, reads no clock and keeps no
//! global state ([`Verifier`] holds its cache explicitly).
//!
//! # Example
//!
//! ```
//! use coffer_evidence::{sim::{SimPlatform, SgxQuoteSpec}, verify, Measurement, TcbStatus, TrustAnchors};
//!
//! // A simulated platform (development machines have no TEE); real quotes come from hardware
//! // and real collateral from Intel PCS / a PCCS, verified under `TrustAnchors::intel()`.
//! let platform = SimPlatform::from_seed([7; 32]);
//! let now = 1_750_000_000;
//! let quote = platform.sgx_quote(&SgxQuoteSpec {
//!     mrenclave: [0xab; 32],
//!     report_data: [1; 64],
//!     ..SgxQuoteSpec::default()
//! });
//! let collateral = platform.collateral(now);
//!
//! let verified = verify(&quote, &collateral, &platform.trust_anchors(), now).unwrap();
//! assert_eq!(verified.tcb_status, TcbStatus::UpToDate);
//! assert_eq!(verified.report_data, [1; 64]);
//! let Measurement::Sgx(m) = &verified.measurement else { unreachable!() };
//! assert_eq!(m.mrenclave, [0xab; 32]);
//! assert!(!m.debug);
//!
//! // The same quote is refused under Intel's root: simulation never passes for hardware.
//! let err = verify(&quote, &collateral, &TrustAnchors::intel(), now).unwrap_err();
//! assert_eq!(err.kind(), coffer_evidence::ErrorKind::UntrustedRoot);
//! ```
//!
//! # What is checked, and the error each failure gives
//!
//! The threat: an attacker controls the host, the network and the bytes of the quote and of
//! the collateral; only the pinned root key ([`TrustAnchors`]) and `now` are trusted. Every
//! check below must pass; the first failure is returned.
//!
//! | check | error ([`ErrorKind`]) |
//! |---|---|
//! | quote parses strictly: version 3/4/5, ECDSA P-256 key, SGX/TDX TEE type, v5 body type/size, exact signature-data and certification-data lengths, reserved report fields zero, only zero padding after the signature data | [`Error::Malformed`] / [`Error::Unsupported`] |
//! | collateral JSON, PEM, DER (certificates, CRLs, SGX extension), TCB info and QE identity JSON parse strictly (no two levels for one TCB or ISVSVN; TDX module levels only UpToDate, OutOfDate or Revoked) | [`Error::Malformed`] / [`Error::Unsupported`] |
//! | every chain (PCK, PCK CRL issuer, TCB info issuer, QE identity issuer) ends in a root whose **public key is pinned** | [`Error::UntrustedRoot`] |
//! | each certificate's signature by its issuer (and the root's self-signature unless it is the anchor certificate itself); issuer names linked; CA flags; end entity not a CA; QVL's CN phrases | [`Error::BadSignature`] / [`Error::Mismatch`] |
//! | quote certification data is type 5 (the PCK chain), as Intel's QvE requires | [`Error::Unsupported`] |
//! | Root CA CRL signed by the root, PCK CRL signed by the PCK CA that issued the PCK certificate; both carry nextUpdate and the CRL Number and Authority Key Identifier extensions (Intel's `CRL_REQUIRED_EXTENSIONS`) | [`Error::BadSignature`] / [`Error::Mismatch`] / [`Error::Malformed`] |
//! | no certificate of any chain, the root included, is listed in the Root CA CRL or PCK CRL | [`Error::Revoked`] |
//! | TCB info and QE identity signatures over the exact signed JSON text, by the TCB Signing key | [`Error::BadSignature`] |
//! | QE report signature by the PCK leaf key | [`Error::BadSignature`] (`QeReport`) |
//! | QE report data = SHA-256(attestation key ‖ QE auth data) | [`Error::QeReportDataMismatch`] |
//! | quote signature over header ‖ body by the attestation key | [`Error::BadSignature`] (`QuoteSignature`) |
//! | every certificate, both CRLs, TCB info and QE identity valid at `now` (the item that expired first is named) | [`Error::Expired`] |
//! | QE vendor ID is Intel's; QE identity id (QE / TD_QE), MRSIGNER, ISVPRODID, MISCSELECT and ATTRIBUTES under masks; QE not in debug mode | [`Error::Mismatch`] |
//! | TCB info id (SGX / TDX) matches the quote; FMSPC and PCE-ID match the PCK certificate; TDX module SEAMATTRIBUTES zero (as Intel's QVL requires), MRSIGNERSEAM / SEAMATTRIBUTES match `tdxModule` (and the module identity) | [`Error::Mismatch`] |
//! | a platform TCB level matches the PCK's CPUSVN components and PCESVN (TDX: and TEE_TCB_SVN; module identity for module versions > 0); a QE level matches the QE ISVSVN; a TD 1.5 relaunch check finds the `TDX_xx` identity TEE_TCB_SVN2 names | [`Error::TcbNotMatched`] |
//!
//! The TCB status ([`TcbStatus`]) is computed and merged as Intel's QVL does (see [`tcb`]);
//! `Revoked` and `OutOfDate` levels are *reported*, not refused, as are the SGX `DEBUG` and TD
//! `DEBUG` attributes ([`Measurement::debug`]): policy belongs to the caller (the Coordinator).
//!
//! # Decisions worth knowing
//! - **Zero padding after the signature data.** Real TDX quotes arrive in fixed-size buffers,
//!   zero-padded after the signature data (70 bytes in the dcap-qvl TDX vector). Intel's QVL
//!   ignores whatever follows; we accept trailing bytes only when every one is zero (padding
//!   carries nothing, a non-zero tail could smuggle data past anything that forwards or hashes
//!   the whole buffer) and report the count in [`Quote::padding_len`].
//! - **Pinned by key.** [`TrustAnchors`] pin public keys; a chain root with the pinned key is
//!   accepted if it is byte-identical to the anchor certificate or correctly self-signed.
//!   Subject names ("Intel SGX Root CA") mean nothing: Intel's own sample data uses a test root
//!   with that name, and it is refused under [`TrustAnchors::intel`].
//! - **Canonical DER only.** The outer signature algorithm and BIT STRING of certificates and
//!   CRLs are not covered by their signatures; anything but the one canonical encoding is
//!   refused, so no byte of accepted evidence can change without a refusal.
//! - **Chains are path-built.** Certificates may be listed in any order (Intel's sample data
//!   lists some root first); the path is built by issuer names, then every link is verified.
//! - **Statuses as Intel merges them**, not as dcap-qvl does (see [`tcb`]): e.g. platform
//!   `ConfigurationNeeded` with an out-of-date QE gives `OutOfDateConfigurationNeeded`.
//!
//! # Performance
//! Verification is bound by ECDSA P-256 verification (`ring`): a full [`verify`] makes nine
//! (TCB signing certificate, root CA CRL, TCB info, QE identity, PCK CA certificate — once,
//! although it appears in two chains — PCK CRL, PCK leaf, QE report, quote; the pinned root's
//! self-signature is not checked when the chain carries the anchor certificate itself) and
//! parses everything once. [`Verifier`] remembers verified collateral *items* (keyed by SHA-256
//! of their bytes and issuer key, so collateral for a new FMSPC costs only its TCB info's
//! signature), the last collateral sets (found by identity when shared as an `Arc`, else by
//! equal bytes, nothing hashed) and verified platforms (keyed by the PCK chain's DER
//! certificates, so a re-encoded chain is the same platform; the last ones also by the quote's
//! bytes); all least-recently-used. A repeated quote from a known platform costs one signature
//! (the quote's) plus time-validity and revocation checks.

//! # Not checked here
//! The report body's policy (debug, TD attributes, MRSERVICETD …), expected measurements and
//! freshness of report data are the caller's policy. Collateral freshness beyond its own
//! `nextUpdate` (fetching newer collateral, a maximum age) belongs to the PCCS client
//! (`coffer-pccs`, `PccsConfig::max_age`).

#![forbid(unsafe_code)]

mod cache;
mod collateral;
mod error;
mod pki;
mod quote;
pub mod ratls;
mod reader;
pub mod sim;
pub mod snp;
pub mod tcb;
mod verify;

pub use collateral::{
    split_signed_json, Collateral, IsvSvnLevel, QeIdentity, TcbInfo, TcbLevel, TdxModule,
    TdxModuleIdentity, MAX_COLLATERAL_LEN,
};
pub use error::{Error, ErrorKind, Item};
pub use pki::{PckCa, TrustAnchors};
pub use quote::{
    CertDataType, CertificationData, Quote, QuoteBody, QuoteHeader, SgxReportBody, TdReport, Tee,
    INTEL_QE_VENDOR_ID, MAX_QUOTE_LEN,
};
pub use tcb::TcbStatus;
pub use verify::{verify, Measurement, SgxMeasurement, TdxMeasurement, Verified, Verifier};
