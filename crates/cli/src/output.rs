//! Printing results and errors, as text for people or JSON for scripts.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use crate::Global;

/// A failure with a kind that scripts can match on (`{"error": {"kind": ..., "message": ...}}`).
/// Commands return it inside `anyhow::Error`; anything else is reported with kind `error`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: String,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Prints `value` as one JSON object on stdout.
pub(crate) fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Reports `err` on stderr (text) or stdout (JSON) and returns exit status 1.
pub(crate) fn report_error(err: &anyhow::Error, global: Global) -> ExitCode {
    let (kind, message) = match err.downcast_ref::<Failure>() {
        Some(f) => (f.kind.clone(), f.message.clone()),
        None => ("error".to_string(), format!("{err:#}")),
    };
    if global.json {
        let body = serde_json::json!({ "error": { "kind": kind, "message": message } });
        println!("{body}");
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(1)
}

/// Reads at most `limit` bytes of `path`, refusing larger files; `flag` names the option.
pub(crate) fn read_bounded(path: &Path, limit: u64, flag: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| {
        Failure::new(
            "missing_input",
            format!("{flag}: cannot open {}: {e}", path.display()),
        )
    })?;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("{flag}: reading {}", path.display()))?;
    if buf.len() as u64 > limit {
        return Err(Failure::new(
            "usage",
            format!("{flag}: {} is larger than {limit} bytes", path.display()),
        )
        .into());
    }
    Ok(buf)
}
