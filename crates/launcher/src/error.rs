//! The launcher's one error type, split by cause, each with the exit status the process ends
//! with, so an operator (or an orchestrator's restart policy) can tell a refusal from an outage.

use std::path::PathBuf;

/// Everything that stops the launcher before it execs the app.
///
/// Messages name the failed step and what to do; they never contain secret values (file
/// contents, env values, keys): only paths, names and reasons.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A launcher setting (environment variable or argument) is missing or malformed.
    #[error("configuration: {0}")]
    Config(String),

    /// `/coffer/workload.json` is missing, malformed or does not match its own measurement.
    #[error("workload file {path}: {reason}")]
    Workload {
        /// Where the file was looked for.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// No TEE interface was found and no evidence source was chosen explicitly.
    #[error(
        "no TEE found: neither Gramine's {attestation} nor configfs-tsm {tsm} is present; run \
         inside an SGX enclave (Gramine) or a TDX guest, or set COFFER_EVIDENCE=sim to use the \
         SIMULATED platform explicitly (never for production secrets)"
    )]
    NoTee {
        /// The Gramine attestation directory looked at.
        attestation: PathBuf,
        /// The configfs-tsm report directory looked at.
        tsm: PathBuf,
    },

    /// The evidence source failed (device error, unexpected provider, race, malformed output).
    #[error("evidence ({source_name}): {reason}")]
    Evidence {
        /// `gramine`, `tsm` or `sim`.
        source_name: &'static str,
        /// What went wrong.
        reason: String,
    },

    /// The Coordinator could not be reached (or answered with a transient error) within the
    /// activation deadline.
    #[error(
        "Coordinator {addr} unreachable after {attempts} attempts over {secs} s: {last}; check \
         COFFER_COORDINATOR and that the Coordinator is running (COFFER_ACTIVATE_TIMEOUT sets the deadline)"
    )]
    Unreachable {
        /// The address dialled.
        addr: String,
        /// How many attempts were made.
        attempts: u32,
        /// How long the launcher tried.
        secs: u64,
        /// The last error seen.
        last: String,
    },

    /// The Coordinator answered but could not activate this workload yet (a user-defined
    /// secret not set, no manifest, recovery, …) until the activation deadline.
    #[error(
        "the Coordinator {addr} is reachable but could not activate `{workload}` within {secs} s: \
         {reason} (COFFER_ACTIVATE_TIMEOUT sets the deadline)"
    )]
    NotReady {
        /// The address dialled.
        addr: String,
        /// The workload.
        workload: String,
        /// How long the launcher waited.
        secs: u64,
        /// The Coordinator's last answer.
        reason: String,
    },

    /// The Coordinator's identity could not be established (TLS verification, RA-TLS evidence).
    #[error("Coordinator {addr} not trusted: {reason}")]
    CoordinatorUntrusted {
        /// The address dialled.
        addr: String,
        /// Why it is not trusted.
        reason: String,
    },

    /// The Coordinator refused the activation; its reason is shown as given.
    #[error("activation refused by the Coordinator ({kind}): {message}")]
    Refused {
        /// The Coordinator's error kind (`policy_mismatch`, `not_found`, …).
        kind: String,
        /// The Coordinator's reason.
        message: String,
    },

    /// The Coordinator answered something that is not a valid activation response.
    #[error("Coordinator protocol: {0}")]
    Protocol(String),

    /// A trusted or encrypted file of the image does not match the workload file.
    #[error(
        "image integrity: {0}; the image was modified after `coffer convert`, refusing to start it"
    )]
    Integrity(String),

    /// The Coordinator's parameters cannot be applied safely (path traversal, collision with a
    /// trusted file, bad base64, bad key).
    #[error("parameters: {0}")]
    Parameters(String),

    /// Writing a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The app could not be started.
    #[error("exec {program}: {reason}")]
    Exec {
        /// The program.
        program: String,
        /// Why.
        reason: String,
        /// Exit status to use (126: not executable, 127: not found).
        status: u8,
    },
}

impl Error {
    /// The process exit status for this error (sysexits.h values where one fits; 126/127 as a
    /// shell does for exec failures), documented in the crate docs.
    pub fn exit_status(&self) -> u8 {
        match self {
            Error::Config(_) => 78,                   // EX_CONFIG
            Error::Workload { .. } => 65,             // EX_DATAERR
            Error::NoTee { .. } => 71,                // EX_OSERR
            Error::Evidence { .. } => 71,             // EX_OSERR
            Error::Unreachable { .. } => 69,          // EX_UNAVAILABLE
            Error::NotReady { .. } => 75,             // EX_TEMPFAIL
            Error::CoordinatorUntrusted { .. } => 76, // EX_PROTOCOL
            Error::Refused { .. } => 77,              // EX_NOPERM
            Error::Protocol(_) => 76,                 // EX_PROTOCOL
            Error::Integrity(_) => 65,                // EX_DATAERR
            Error::Parameters(_) => 65,               // EX_DATAERR
            Error::Io { .. } => 74,                   // EX_IOERR
            Error::Exec { status, .. } => *status,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn evidence(source_name: &'static str, reason: impl Into<String>) -> Self {
        Error::Evidence {
            source_name,
            reason: reason.into(),
        }
    }
}
