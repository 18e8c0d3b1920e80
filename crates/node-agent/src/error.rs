//! The one error type of this crate.

/// What went wrong, split by cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a local file or socket failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or socket.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}
