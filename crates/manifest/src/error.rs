//! Errors of this crate: validation problems (a list, each with its JSON path) and the one
//! error enum for everything else (rendering, user values, updates).

use std::fmt;

use serde::Serialize;

/// One problem found in a manifest.
///
/// `path` is a JSONPath-like location (`$.workloads.web.parameters.env.DB_KEY`; keys that are
/// not plain identifiers are quoted: `$.workloads.web.parameters.files["/etc/app.conf"]`), so a
/// person can find the spot and a tool can point at it. `line`/`column` (1-based) are known for
/// parse errors only: semantic checks run on the parsed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationError {
    /// Where the problem is.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// 1-based line in the input, for parse errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column in the input, for parse errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl ValidationError {
    /// A semantic problem at `path`.
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            hint: None,
            line: None,
            column: None,
        }
    }

    /// Adds a hint.
    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, " (line {l}, column {c})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n    hint: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found in a manifest (never empty when returned as an error).
///
/// A document that does not deserialize (bad JSON/YAML, wrong type, unknown field) yields the
/// one parse error serde stops at; a document that deserializes yields *every* semantic problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    /// The problems, in document order of the checks.
    pub fn errors(&self) -> &[ValidationError] {
        &self.0
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no problem (never the case for a returned error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some problem is at exactly `path`.
    pub fn has_path(&self, path: &str) -> bool {
        self.0.iter().any(|e| e.path == path)
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "manifest is invalid: {n} problem{}",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, e) in self.0.iter().enumerate() {
            if i + 1 < n {
                writeln!(f, "  {e}")?;
            } else {
                write!(f, "  {e}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Errors of this crate other than manifest validation. Messages never contain secret values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The manifest is invalid (see the list).
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
    /// The template was not accepted at validation; it cannot be rendered.
    #[error("template cannot be rendered: {0}")]
    TemplateSyntax(String),
    /// The secret source could not supply a value.
    #[error("cannot render {{{{ {reference} }}}}: {reason}")]
    Source {
        /// The placeholder, e.g. `secrets.db.key.hex`.
        reference: String,
        /// Why, from the source (never a value).
        reason: String,
    },
    /// A value does not fit the encoding asked for (e.g. `.text` of bytes that are not UTF-8).
    #[error("cannot render {{{{ {reference} }}}}: {reason}")]
    Encoding {
        /// The placeholder.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The named workload is not in the manifest.
    #[error("workload {0:?} is not in the manifest")]
    UnknownWorkload(String),
    /// The named secret is not in the manifest.
    #[error("secret {0:?} is not in the manifest")]
    UnknownSecret(String),
    /// A value set for a user-defined secret does not satisfy its declaration.
    #[error("value for secret {secret:?} refused: {reason}")]
    UserValue {
        /// The secret's name.
        secret: String,
        /// Why (sizes and kinds, never the value).
        reason: String,
    },
    /// A PEM or key could not be read.
    #[error("{what}: {reason}")]
    BadKey {
        /// What was being read.
        what: String,
        /// Why.
        reason: String,
    },
    /// A manifest update changes something that may never change (see `check_update`).
    #[error("manifest update refused: {}", .0.join("; "))]
    UpdateRefused(Vec<String>),
}
