//! The one error type of this crate.

/// What went wrong, split by cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A request to the webhook is not an `admission.k8s.io/v1` AdmissionReview with a request
    /// (answered with HTTP 400: the API server, not the pod's author, sent something wrong).
    #[error("malformed AdmissionReview: {0}")]
    MalformedReview(String),
    /// A request body to the webhook is larger than the limit.
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The webhook's own configuration is unusable (checked at start-up).
    #[error("invalid webhook configuration: {0}")]
    InvalidConfig(String),
    /// The webhook's TLS certificate or key cannot be used.
    #[error("TLS certificate/key {path}: {message}")]
    Tls {
        /// The file (or files) concerned.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// A call to the Kubernetes API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object read from the Kubernetes API server is not what it must be.
    #[error("Kubernetes object {object}: {message}")]
    KubeObject {
        /// Kind and name of the object.
        object: String,
        /// What is wrong with it.
        message: String,
    },
    /// A chart template uses something outside the evaluator's subset of Helm's template
    /// language, or refers to a value that does not exist (a defect of the chart, or of a
    /// value's type).
    #[error("{template}:{line}: {message}")]
    Template {
        /// `coffer/templates/<file>`.
        template: String,
        /// 1-based line of the action.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The chart refuses the values it was given (a `fail` in a template).
    #[error("{template}:{line}: the chart refuses these values: {message}")]
    ChartRefused {
        /// `coffer/templates/<file>`.
        template: String,
        /// 1-based line of the `fail`.
        line: usize,
        /// The chart's reason.
        message: String,
    },
    /// Chart values (`--set`, a values file) are malformed or name an unknown value.
    #[error("chart values: {0}")]
    Values(String),
    /// A template rendered text that is not a Kubernetes object in YAML.
    #[error("{template}: rendered YAML is invalid: {message}")]
    RenderedYaml {
        /// `coffer/templates/<file>`.
        template: String,
        /// The parser's message.
        message: String,
    },
    /// The release name or namespace is not a valid Kubernetes name.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidRelease {
        /// `release name` or `namespace`.
        what: &'static str,
        /// The name given (truncated).
        value: String,
        /// Why it is invalid.
        reason: String,
    },
}
