//! `coffer-registry`: images from and to OCI registries, for `coffer convert docker://REF …`,
//! `coffer convert … docker://REF` and `coffer run docker://REF`.
//!
//! The registry is untrusted like every other input: a pulled image is written as an OCI layout
//! whose every blob was checked against the digest that names it (the manifest against the
//! digest the tag resolved to or the one pinned in the reference), so `coffer convert` and
//! `coffer run` read it exactly as they read a local layout. Blobs stream to disk through a
//! cache shared by all pulls and pushes (`~/.cache/coffer/blobs`); nothing holds a whole layer
//! in memory. A push sends only the blobs the registry does not have yet, several at once.
//!
//! Credentials and TLS follow skopeo: `--creds USER:PASS`, else the `auths` entry for the
//! registry in the containers/Docker auth file; `--tls-verify=false` allows plain HTTP and
//! unverified HTTPS; `--cert-dir DIR` adds the `*.crt` CA certificates in DIR. Registries that
//! answer with a bearer challenge get their token from the realm they name (the credentials
//! go there, not to the registry).

mod auth;
mod layout;
mod transfer;

use std::path::PathBuf;

pub use auth::{credentials_for, default_auth_file};
pub use transfer::{pull, push, registry_of, PullReport, PushReport};

/// Largest manifest, index or config accepted from a registry.
pub const MAX_JSON: u64 = 8 << 20;

/// Largest total of blob sizes an image may name (as `coffer convert`'s unpacked-size limit).
pub const MAX_IMAGE: u64 = 64 << 30;

/// How to reach registries.
#[derive(Clone)]
pub struct Options {
    /// Require HTTPS and verify certificates (skopeo's `--tls-verify`). When false, HTTPS is
    /// tried without verification, then plain HTTP.
    pub tls_verify: bool,
    /// Directory whose `*.crt` files are extra trusted CA certificates (PEM).
    pub cert_dir: Option<PathBuf>,
    /// `USER:PASSWORD` for the registry; overrides the auth file.
    pub creds: Option<String>,
    /// The auth file to read credentials from (default: [`default_auth_file`]).
    pub auth_file: Option<PathBuf>,
    /// The blob cache shared between pulls and pushes.
    pub cache_dir: PathBuf,
    /// Blobs transferred at once.
    pub parallel: usize,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("tls_verify", &self.tls_verify)
            .field("cert_dir", &self.cert_dir)
            .field("creds", &self.creds.as_ref().map(|_| "<redacted>"))
            .field("auth_file", &self.auth_file)
            .field("cache_dir", &self.cache_dir)
            .field("parallel", &self.parallel)
            .finish()
    }
}

impl Options {
    /// Defaults as skopeo's: verified HTTPS, credentials from the auth file, the user's cache.
    pub fn new(cache_dir: PathBuf) -> Self {
        Options {
            tls_verify: true,
            cert_dir: None,
            creds: None,
            auth_file: None,
            cache_dir,
            parallel: 4,
        }
    }
}

/// The default blob cache: `$XDG_CACHE_HOME/coffer/blobs`, else `~/.cache/coffer/blobs`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("coffer").join("blobs")
}

/// Where progress goes (shared with the upload streams, hence `Arc`).
pub type ProgressFn = std::sync::Arc<dyn Fn(Progress) + Send + Sync>;

/// Progress of a transfer, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// The transfer starts: this many bytes of blobs to move.
    Start(u64),
    /// Bytes moved (or found already there).
    Advance(u64),
}

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference does not parse.
    #[error(
        "image reference {reference:?}: {reason} (use docker://HOST[:PORT]/NAME[:TAG|@DIGEST])"
    )]
    Reference {
        /// What was given.
        reference: String,
        /// Why it is refused.
        reason: String,
    },
    /// The registry could not be reached or spoke no TLS we accept.
    #[error("cannot reach registry {registry}: {reason}")]
    Connect {
        /// host[:port].
        registry: String,
        /// The transport error, with what to do.
        reason: String,
    },
    /// The registry refused the credentials (or there were none).
    #[error("registry {registry} refused access to {repository}: {reason}; pass --creds USER:PASS or log in (auth file {auth_file})")]
    Auth {
        /// host[:port].
        registry: String,
        /// The repository.
        repository: String,
        /// What the registry said.
        reason: String,
        /// The auth file that was read.
        auth_file: String,
    },
    /// The registry answered, but not as the distribution spec says.
    #[error("registry {registry}: {reason}")]
    Registry {
        /// host[:port].
        registry: String,
        /// What happened.
        reason: String,
    },
    /// Content does not match the digest that names it: the registry (or the path to it)
    /// changed it.
    #[error("{what}: content has digest {found}, expected {expected}; the registry served modified content")]
    Digest {
        /// Which blob.
        what: String,
        /// The digest that names it.
        expected: String,
        /// The digest of what arrived.
        found: String,
    },
    /// Something larger than the limits.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// What.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// Unsupported content.
    #[error("{0}")]
    Unsupported(String),
    /// The credentials or certificate files are unusable.
    #[error("{0}")]
    Config(String),
    /// Local file I/O.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl Error {
    fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    }

    /// A short machine-readable kind for `--json` errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Reference { .. } => "usage",
            Error::Connect { .. } => "registry_unreachable",
            Error::Auth { .. } => "registry_auth",
            Error::Registry { .. } => "registry",
            Error::Digest { .. } => "digest_mismatch",
            Error::TooLarge { .. } => "limit",
            Error::Unsupported(_) => "unsupported",
            Error::Config(_) => "config",
            Error::Io { .. } => "io",
        }
    }
}
