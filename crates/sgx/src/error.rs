//! The crate's one error type, split by cause so that a caller can tell a malformed input from a
//! bad signature from a misuse of the API.

/// Everything that can go wrong in `coffer-sgx`.
///
/// Messages name the failed check and where (byte offset, field); they never contain key
/// material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the SGXS stream failed in the underlying reader (not a format problem).
    #[error("reading the SGXS stream failed: {0}")]
    Read(#[source] std::io::Error),

    /// Writing an SGXS stream to the caller's writer failed.
    #[error("writing the SGXS stream failed: {0}")]
    Write(#[source] std::io::Error),

    /// The SGXS stream ended inside a record.
    #[error("SGXS stream truncated at byte {offset}: {what}")]
    SgxsTruncated {
        /// Byte offset in the stream where the incomplete record starts.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },

    /// An SGXS record has a tag this reader does not know.
    #[error("SGXS stream: unknown record tag {tag:#018x} at byte {offset}")]
    SgxsUnknownTag {
        /// Byte offset of the record.
        offset: u64,
        /// The tag found.
        tag: u64,
    },

    /// The stream is well-formed but not canonical, or describes something ECREATE/EADD/EEXTEND
    /// would refuse.
    #[error("SGXS stream: invalid record at byte {offset}: {reason}")]
    SgxsInvalid {
        /// Byte offset of the record.
        offset: u64,
        /// The rule that was broken.
        reason: String,
    },

    /// The stream starts with an "unsized" ECREATE: its enclave size is not fixed yet, so it has
    /// no MRENCLAVE.
    #[error("SGXS stream is unsized (enclave size not filled in); it cannot be measured")]
    SgxsUnsized,

    /// An enclave layout given through the API breaks an SGX rule.
    #[error("invalid enclave layout: {0}")]
    Layout(String),

    /// A SIGSTRUCT does not have the fixed length of 1808 bytes.
    #[error("SIGSTRUCT must be exactly 1808 bytes, got {len}")]
    SigstructLength {
        /// The length found.
        len: usize,
    },

    /// A fixed SIGSTRUCT header does not have the value the SDM prescribes.
    #[error("SIGSTRUCT {field} at byte {offset} is not the architectural constant")]
    SigstructHeader {
        /// Which header.
        field: &'static str,
        /// Its offset.
        offset: usize,
    },

    /// A reserved SIGSTRUCT field is not zero.
    #[error("SIGSTRUCT reserved bytes at offset {offset} are not zero")]
    SigstructReserved {
        /// Offset of the reserved field.
        offset: usize,
    },

    /// The RSA public exponent is not 3, which EINIT requires.
    #[error("RSA public exponent must be 3 for SGX, found {found}")]
    WrongExponent {
        /// The exponent found (decimal).
        found: String,
    },

    /// The RSA modulus is not 3072 bits, which EINIT requires.
    #[error("RSA key must be 3072 bits for SGX, found {bits} bits")]
    WrongKeySize {
        /// The size found.
        bits: usize,
    },

    /// The PKCS#1 v1.5 signature over the signed regions does not verify with the modulus.
    #[error("SIGSTRUCT signature does not verify (signed regions [0,128) and [900,1028) or SIGNATURE were changed, or MODULUS is not the signer's)")]
    BadSignature,

    /// Q1 or Q2 are not the values EINIT expects for this signature and modulus.
    #[error("SIGSTRUCT {field} is wrong for this signature and modulus")]
    BadQ {
        /// `Q1` or `Q2`.
        field: &'static str,
    },

    /// The ENCLAVEHASH in a SIGSTRUCT is not the expected MRENCLAVE.
    #[error("SIGSTRUCT ENCLAVEHASH {found} is not the expected MRENCLAVE {expected}")]
    EnclaveHashMismatch {
        /// Expected MRENCLAVE (hex).
        expected: String,
        /// ENCLAVEHASH found (hex).
        found: String,
    },

    /// A signing key could not be decoded or encoded (the message never contains key bytes).
    #[error("RSA signing key: {0}")]
    Key(String),

    /// An RSA operation failed.
    #[error("RSA operation failed: {0}")]
    Rsa(String),

    /// A SIGSTRUCT date is not a valid YYYYMMDD.
    #[error("invalid SIGSTRUCT date {0:?}: expected YYYYMMDD with a real month and day")]
    Date(String),

    /// The input for a Gramine manifest is invalid.
    #[error("Gramine manifest input: {field}: {reason}")]
    GramineInput {
        /// The offending field.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },

    /// A Gramine manifest to be measured is invalid or lacks a field the measurement needs.
    #[error("Gramine manifest: {0}")]
    GramineManifest(String),

    /// The PAL binary (`libpal.so`) is not an ELF file Gramine's signer could load.
    #[error("Gramine libpal.so: {0}")]
    Elf(String),

    /// A Gramine encrypted (protected) file cannot be written or does not verify.
    #[error("Gramine encrypted file: {0}")]
    EncryptedFile(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
