//! The one error type of this crate, split by cause so a caller can tell an outage (the service
//! is down: retry later, or serve from cache) from bad data (the service answered nonsense: do not
//! retry blindly) from a local problem (the cache directory is not writable).

use std::path::PathBuf;

use crate::Item;

/// Why collateral could not be obtained. Every variant names the service (its base URL or the
/// offline directory) and the collateral item, so an operator knows what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configured base URL cannot be used.
    #[error("invalid collateral service URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The PEM given to authenticate the service's HTTPS certificate holds no certificate.
    #[error("the TLS roots for {url} hold no PEM certificate")]
    InvalidTlsRoots {
        /// The base URL they were given for.
        url: String,
    },

    /// The quote does not say which collateral it needs (no PCK certificate chain, no FMSPC…).
    #[error("cannot tell which collateral the quote needs: {0}")]
    Request(String),

    /// The service could not be reached, or the connection failed or timed out.
    #[error("{service}: could not fetch the {item} ({url}): {reason}{}", cached_note(*.cached_expired_at))]
    Unreachable {
        /// The service (base URL).
        service: String,
        /// The item being fetched.
        item: Item,
        /// The full URL.
        url: String,
        /// The transport error, as text.
        reason: String,
        /// When a cached copy existed but had already expired: its nextUpdate (Unix seconds).
        cached_expired_at: Option<i64>,
    },

    /// The service answered with an HTTP status other than 200.
    #[error("{service}: HTTP {status} for the {item} ({url}){}{}", status_hint(*.status, *.item), cached_note(*.cached_expired_at))]
    Status {
        /// The service (base URL).
        service: String,
        /// The item being fetched.
        item: Item,
        /// The full URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// When a cached copy existed but had already expired: its nextUpdate (Unix seconds).
        cached_expired_at: Option<i64>,
    },

    /// The answer was larger than the configured limit; it was not read further.
    #[error("{service}: the {item} answer is larger than the limit of {limit} bytes; raise the limit only if the service is trusted to send that much")]
    TooLarge {
        /// The service (base URL).
        service: String,
        /// The item being fetched.
        item: Item,
        /// The limit in bytes.
        limit: u64,
    },

    /// The answer arrived but is not what the PCS v4 API specifies.
    #[error("{service}: malformed {item}: {reason}")]
    Malformed {
        /// The service (base URL) or the offline/cache file.
        service: String,
        /// The item.
        item: Item,
        /// What is wrong.
        reason: String,
    },

    /// The service served an item that is already past its nextUpdate, or older than the
    /// configured maximum age: a stale PCCS, or a replay of old collateral.
    #[error("{service}: the {item} it serves was issued {} and is no longer good{}; refresh the PCCS's collateral from Intel", crate::fmt_time(*.issued), max_age_note(*.max_age))]
    Stale {
        /// The service (base URL).
        service: String,
        /// The item.
        item: Item,
        /// Its issue date / thisUpdate (Unix seconds).
        issued: i64,
        /// The configured maximum age in seconds, if any.
        max_age: Option<i64>,
    },

    /// AMD KDS (or its offline directory): an SEV-SNP item could not be obtained.
    #[error("{service}: {what}: {reason}")]
    Kds {
        /// The service (base URL) or the offline directory.
        service: String,
        /// The item, e.g. "the VCEK of chip 1a2b… at TcbVersion { … }".
        what: String,
        /// What went wrong.
        reason: String,
    },

    /// Offline mode: the directory has no copy of this item.
    #[error("offline collateral directory {}: no {item} ({}); fill it with `coffer`'s cache of an online machine or import a collateral JSON", .dir.display(), .file.display())]
    OfflineMissing {
        /// The offline directory.
        dir: PathBuf,
        /// The item.
        item: Item,
        /// The file that was looked for.
        file: PathBuf,
    },

    /// Reading or writing the cache (or the offline directory) failed.
    #[error("collateral cache {}: {source}", .path.display())]
    Cache {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn cached_note(expired_at: Option<i64>) -> String {
    match expired_at {
        Some(t) => format!("; the cached copy expired at {}", crate::fmt_time(t)),
        None => String::new(),
    }
}

fn max_age_note(max_age: Option<i64>) -> String {
    match max_age {
        Some(s) => format!(" (past its nextUpdate, or older than the maximum age of {s} s)"),
        None => " (past its nextUpdate)".to_string(),
    }
}

fn status_hint(status: u16, item: Item) -> &'static str {
    match (status, item) {
        (404, Item::TcbInfo) => " (the service does not know this FMSPC: is the platform registered?)",
        (404, _) => " (is the URL a PCS/PCCS v4 base URL, e.g. https://api.trustedservices.intel.com or https://pccs:8081?)",
        (401 | 403, _) => " (the service refused access: check the API key or PCCS access rules)",
        (429, _) => " (rate limited: retry later)",
        (500..=599, _) => " (the service is failing: retry later)",
        _ => "",
    }
}
