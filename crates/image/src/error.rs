//! The one error type of this crate, split by cause so that a caller can tell a tampered or
//! hostile input (digest mismatch, path escape, limit) from a local problem (I/O, missing tool).

use std::path::PathBuf;

/// Everything that can go wrong while reading, measuring, protecting or converting an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a local file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", "creating", …).
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A path inside the image (tar entry, workload record, link target) is not acceptable:
    /// `..` components, escapes from the root, NUL bytes, empty names.
    #[error("unsafe path {path:?} in {context}: {reason}")]
    UnsafePath {
        /// The path as found (lossily decoded).
        path: String,
        /// Where it was found (layer digest, `workload.json`, …).
        context: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A layer holds an entry type that a confidential image must not carry (device nodes,
    /// FIFOs) or that we cannot represent.
    #[error("{layer}: entry {path:?} is a {kind}; {hint}")]
    ForbiddenEntry {
        /// Where it was found ("layer 2 (sha256:…)", "archive …").
        layer: String,
        /// The entry's path.
        path: String,
        /// The entry type ("character device", "block device", "FIFO", …).
        kind: &'static str,
        /// What the user can do.
        hint: &'static str,
    },

    /// A blob's content does not match the digest its descriptor names.
    #[error("{what}: digest mismatch, descriptor says {expected}, content is {found}")]
    DigestMismatch {
        /// Which blob (e.g. "layer 2 of manifest sha256:…").
        what: String,
        /// The digest the descriptor (or config diff_id) names.
        expected: String,
        /// The digest of the bytes actually read.
        found: String,
    },

    /// A blob's size does not match its descriptor.
    #[error("{what}: size mismatch, descriptor says {expected} bytes, content has {found}")]
    SizeMismatch {
        /// Which blob.
        what: String,
        /// The size in the descriptor.
        expected: u64,
        /// The size actually read (or at least this many, when reading stopped early).
        found: u64,
    },

    /// A configurable bound on untrusted input was reached (total unpacked size, number of
    /// entries, header or JSON size). The message names the option that raises it.
    #[error("{what} exceeds the limit of {limit}; {hint}")]
    LimitExceeded {
        /// What grew too large.
        what: String,
        /// The limit.
        limit: u64,
        /// How to raise it, if that is appropriate.
        hint: &'static str,
    },

    /// Input that is not a well-formed image (bad JSON, bad tar, truncated archive, missing
    /// blob, unknown media type).
    #[error("malformed image: {what}: {reason}")]
    Malformed {
        /// The part of the image concerned.
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The image or option asks for something this version does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// `/coffer/workload.json` is not valid (bad version, duplicate or unsorted records,
    /// unsafe paths, measurement that does not match its own records).
    #[error("invalid workload file: {0}")]
    InvalidWorkload(String),

    /// A trusted file on disk differs from its record (content, size, mode, type, link target).
    #[error("trusted file {path} differs from the image: {difference}")]
    TrustedFileMismatch {
        /// The path inside the root filesystem.
        path: String,
        /// What differs.
        difference: String,
    },

    /// A key for protected files has the wrong form (not 32 bytes raw or 64 hex characters).
    #[error("bad protection key: {0}")]
    BadKey(&'static str),

    /// A protected file's header is not ours or not a version we read.
    #[error("protected file {path}: bad header: {reason}")]
    BadProtectedHeader {
        /// The path the file is bound to.
        path: String,
        /// What is wrong with the header.
        reason: String,
    },

    /// A protected file's chunk failed authentication: wrong key, wrong path, tampered,
    /// reordered or truncated ciphertext.
    #[error("protected file {path}: chunk {chunk} failed authentication (wrong key, wrong path, or tampered ciphertext)")]
    Decrypt {
        /// The path the file is bound to.
        path: String,
        /// The index of the failing chunk.
        chunk: u64,
    },

    /// A protected file ends without its final chunk (truncated) or has data after it.
    #[error("protected file {path}: {reason}")]
    ProtectedTruncated {
        /// The path the file is bound to.
        path: String,
        /// What is missing or extra.
        reason: &'static str,
    },

    /// A glob given on the command line does not parse.
    #[error("bad glob {glob:?}: {reason}")]
    BadGlob {
        /// The glob.
        glob: String,
        /// The parser's message.
        reason: String,
    },

    /// The requested output already exists; conversion never overwrites.
    #[error("output {0} already exists; remove it or choose another path")]
    OutputExists(PathBuf),

    /// The SGX enclave build (`--tee sgx`: Gramine manifest, measurement, signing) failed.
    #[error("SGX enclave build: {0}")]
    Sgx(String),

    /// A required input file is absent (launcher binary, key file).
    #[error("{what} not found at {path}: {hint}")]
    MissingInput {
        /// What was looked for.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// What to do.
        hint: &'static str,
    },
}

impl Error {
    /// Short, stable name of the cause, for `{"error":{"kind":…}}` in JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::UnsafePath { .. } => "unsafe_path",
            Error::ForbiddenEntry { .. } => "forbidden_entry",
            Error::DigestMismatch { .. } => "digest_mismatch",
            Error::SizeMismatch { .. } => "size_mismatch",
            Error::LimitExceeded { .. } => "limit_exceeded",
            Error::Malformed { .. } => "malformed_image",
            Error::Unsupported(_) => "unsupported",
            Error::InvalidWorkload(_) => "invalid_workload",
            Error::TrustedFileMismatch { .. } => "trusted_file_mismatch",
            Error::BadKey(_) => "bad_key",
            Error::BadProtectedHeader { .. } => "bad_protected_header",
            Error::Decrypt { .. } => "decrypt_failed",
            Error::ProtectedTruncated { .. } => "protected_truncated",
            Error::BadGlob { .. } => "bad_glob",
            Error::OutputExists(_) => "output_exists",
            Error::MissingInput { .. } => "missing_input",
            Error::Sgx(_) => "sgx",
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Malformed {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
