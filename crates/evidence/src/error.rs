//! The one error type of the crate, split by cause.
//!
//! A caller must be able to tell an outage (expired collateral) from an attack (bad signature)
//! from a policy decision (TCB level not matched), so every refusal maps to one
//! [`ErrorKind`]. Messages name the failed check and the item it was made on; they never
//! contain secrets (the crate handles none except in [`crate::sim`], whose keys never reach an
//! error).

use std::fmt;

/// Which piece of evidence or collateral a check was made on. Shown in error messages so that
/// an operator knows what to refresh or replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Item {
    /// The quote as a whole (header, body, signature data).
    Quote,
    /// The ISV enclave / TD report signature made with the attestation key.
    QuoteSignature,
    /// The Quoting Enclave report and its signature by the PCK key.
    QeReport,
    /// The binding of the attestation key and QE authentication data into the QE report data.
    QeReportData,
    /// The PCK leaf certificate (from the quote's certification data).
    PckCertificate,
    /// The PCK Processor/Platform CA certificate.
    PckCaCertificate,
    /// The root CA certificate that ends a chain.
    RootCaCertificate,
    /// The TCB Signing certificate (signs TCB info and QE identity).
    TcbSigningCertificate,
    /// The Root CA CRL.
    RootCaCrl,
    /// The PCK CA CRL.
    PckCrl,
    /// The TCB info document.
    TcbInfo,
    /// The QE identity document.
    QeIdentity,
    /// The collateral container (JSON).
    Collateral,
    /// The trust anchors given by the caller.
    TrustAnchors,
    /// The simulated-platform file.
    SimPlatform,
    /// An RA-TLS certificate (a TLS certificate carrying a quote over its key).
    RaTlsCertificate,
    /// An AMD SEV-SNP attestation report.
    SnpReport,
    /// The SNP report's signature by the VCEK or VLEK.
    SnpReportSignature,
    /// The VCEK or VLEK certificate.
    VekCertificate,
    /// The ASK or ASVK certificate.
    AskCertificate,
    /// AMD's root key certificate (ARK).
    ArkCertificate,
    /// AMD's CRL for a product.
    SnpCrl,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Item::Quote => "quote",
            Item::QuoteSignature => "quote signature",
            Item::QeReport => "QE report",
            Item::QeReportData => "QE report data",
            Item::PckCertificate => "PCK certificate",
            Item::PckCaCertificate => "PCK CA certificate",
            Item::RootCaCertificate => "root CA certificate",
            Item::TcbSigningCertificate => "TCB signing certificate",
            Item::RootCaCrl => "root CA CRL",
            Item::PckCrl => "PCK CRL",
            Item::TcbInfo => "TCB info",
            Item::QeIdentity => "QE identity",
            Item::Collateral => "collateral",
            Item::TrustAnchors => "trust anchors",
            Item::SimPlatform => "simulated platform",
            Item::RaTlsCertificate => "RA-TLS certificate",
            Item::SnpReport => "SNP report",
            Item::SnpReportSignature => "SNP report signature",
            Item::VekCertificate => "VCEK/VLEK certificate",
            Item::AskCertificate => "ASK/ASVK certificate",
            Item::ArkCertificate => "ARK certificate",
            Item::SnpCrl => "SNP CRL",
        })
    }
}

/// The cause class of an [`Error`]; stable for callers (metrics labels, HTTP mapping, CLI
/// `{"error":{"kind"}}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Bytes or JSON that do not follow the format (wrong length, bad encoding, trailing data).
    Malformed,
    /// A signature (or the QE report-data binding) does not verify: tampering or a wrong key.
    BadSignature,
    /// An item is not valid at `now` (not yet valid or expired).
    Expired,
    /// A certificate is listed in a CRL.
    Revoked,
    /// A chain does not end in a pinned trust anchor.
    UntrustedRoot,
    /// Evidence and collateral disagree (FMSPC, QE identity, TEE kind, TDX module …).
    PolicyMismatch,
    /// No TCB level of the TCB info / QE identity matches the platform.
    TcbNotMatched,
    /// A well-formed value this verifier does not support (e.g. a P-384 attestation key).
    Unsupported,
}

impl ErrorKind {
    /// The snake-case name used in JSON errors and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Malformed => "malformed",
            ErrorKind::BadSignature => "bad_signature",
            ErrorKind::Expired => "expired",
            ErrorKind::Revoked => "revoked",
            ErrorKind::UntrustedRoot => "untrusted_root",
            ErrorKind::PolicyMismatch => "policy_mismatch",
            ErrorKind::TcbNotMatched => "tcb_not_matched",
            ErrorKind::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why evidence was refused (or could not be parsed / produced).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes of `item` do not follow the format.
    #[error("malformed {item}: {detail}")]
    Malformed {
        /// The item that failed to parse.
        item: Item,
        /// What exactly is wrong, with offsets or field names.
        detail: String,
    },
    /// A well-formed value this verifier does not support.
    #[error("unsupported {item}: {detail}")]
    Unsupported {
        /// Where the value was found.
        item: Item,
        /// The value (in hex) and what is supported.
        detail: String,
    },
    /// The signature on `item` does not verify with its issuer's key.
    #[error("bad signature on the {item}")]
    BadSignature {
        /// The signed item.
        item: Item,
    },
    /// QE report data is not SHA-256(attestation key ‖ QE authentication data): the attestation
    /// key was not certified by this QE.
    #[error("QE report data does not bind the attestation key and QE authentication data")]
    QeReportDataMismatch,
    /// `item` is not valid at `now`.
    #[error("{item} is not valid at {}: valid from {} until {}", fmt_time(*now), fmt_time(*not_before), fmt_time(*not_after))]
    Expired {
        /// The item whose validity window does not contain `now`.
        item: Item,
        /// The time verification was asked for (Unix seconds).
        now: i64,
        /// Start of the item's window (Unix seconds).
        not_before: i64,
        /// End of the item's window (Unix seconds).
        not_after: i64,
    },
    /// `item` is listed as revoked by the CRL `by`.
    #[error("{item} (serial {serial}) is revoked by the {by}")]
    Revoked {
        /// The revoked certificate.
        item: Item,
        /// Its serial number in hex.
        serial: String,
        /// The CRL that lists it.
        by: Item,
    },
    /// The chain of `item` does not end in a pinned trust anchor.
    #[error("the {item} chain does not end in a pinned trust anchor: {detail}")]
    UntrustedRoot {
        /// The chain's first item.
        item: Item,
        /// Which root was found instead.
        detail: String,
    },
    /// Evidence and collateral disagree on `check`.
    #[error("{check} mismatch: {detail}")]
    Mismatch {
        /// The check that failed, e.g. "QE identity MRSIGNER".
        check: &'static str,
        /// Both sides of the comparison (public values only).
        detail: String,
    },
    /// No TCB level matches the platform; Intel's QVL calls this TCB_NOT_SUPPORTED.
    #[error("TCB level not matched: {detail}")]
    TcbNotMatched {
        /// Which level list had no match and the platform's values.
        detail: String,
    },
}

impl Error {
    /// The cause class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Malformed { .. } => ErrorKind::Malformed,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::BadSignature { .. } | Error::QeReportDataMismatch => ErrorKind::BadSignature,
            Error::Expired { .. } => ErrorKind::Expired,
            Error::Revoked { .. } => ErrorKind::Revoked,
            Error::UntrustedRoot { .. } => ErrorKind::UntrustedRoot,
            Error::Mismatch { .. } => ErrorKind::PolicyMismatch,
            Error::TcbNotMatched { .. } => ErrorKind::TcbNotMatched,
        }
    }

    /// The item the failed check was made on, when there is one.
    pub fn item(&self) -> Option<Item> {
        match self {
            Error::Malformed { item, .. }
            | Error::Unsupported { item, .. }
            | Error::BadSignature { item }
            | Error::Expired { item, .. }
            | Error::Revoked { item, .. }
            | Error::UntrustedRoot { item, .. } => Some(*item),
            Error::QeReportDataMismatch => Some(Item::QeReportData),
            Error::Mismatch { .. } | Error::TcbNotMatched { .. } => None,
        }
    }

    pub(crate) fn malformed(item: Item, detail: impl Into<String>) -> Self {
        Error::Malformed {
            item,
            detail: detail.into(),
        }
    }

    pub(crate) fn unsupported(item: Item, detail: impl Into<String>) -> Self {
        Error::Unsupported {
            item,
            detail: detail.into(),
        }
    }

    pub(crate) fn mismatch(check: &'static str, detail: impl Into<String>) -> Self {
        Error::Mismatch {
            check,
            detail: detail.into(),
        }
    }
}

/// RFC 3339 rendering of a Unix time for messages; falls back to the number when out of range.
pub(crate) fn fmt_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{t}"))
}
