//! Wire types of the Coffer Coordinator API (`/api/v1`), shared by the Coordinator, the launcher
//! and clients, so that both ends of every request compile against one definition.
//!
//! Every message carries [`PROTOCOL_VERSION`]; a receiver accepts any version in
//! [`MIN_PROTOCOL_VERSION`]`..=`[`PROTOCOL_VERSION`] and refuses others with
//! [`ErrorKind::UnsupportedProtocolVersion`], naming the range it accepts (an exact-match check
//! is the most reported failure of a peer's protocol, so we use a range from day one).
//!
//! Report-data bindings (what the TEE signs) are defined here too, as functions, so the party
//! that creates evidence and the party that checks it cannot disagree.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod chain;
pub mod sealed;

pub use chain::{
    coordinator_report_data_bound, history_extends, verify_audit, verify_history, AuditCheck,
    AuditVerifier, ChainError, HistoryEntry, HistoryResponse, StateSummary,
};
pub use sealed::{Activation, SealError, SealedParameters};

/// The protocol version this build speaks.
///
/// - 1: the first.
/// - 2: activation answers carry `sealed_parameters` (encrypted to the CSR's key) instead of
///   plaintext `parameters`, and quotes can bind the state head. A version-1 launcher could not
///   read a version-2 answer, so version 1 is no longer accepted: it is refused with the
///   supported range named, instead of failing on a missing field.
pub const PROTOCOL_VERSION: u32 = 2;
/// The oldest protocol version this build still accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 2;

/// Largest request body the Coordinator accepts on any endpoint (quotes with certificate chains
/// are ~5 KiB, TDX event logs can reach a few hundred KiB; manifests with many packages a few MiB).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// Whether `version` is inside the accepted range.
pub fn protocol_version_supported(version: u32) -> bool {
    (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version)
}

/// The report data a workload puts in its evidence: SHA-256 of the DER SubjectPublicKeyInfo of
/// the key in its CSR in bytes 0..32, zeros after. The Coordinator recomputes it from the CSR.
pub fn workload_report_data(csr_spki_der: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&Sha256::digest(csr_spki_der));
    out
}

/// The domain of the image slot of a workload's report data, so that no other 32 bytes Coffer
/// puts in report data (a nonce hash, a state head) can be read as an image binding.
pub const IMAGE_BINDING_DOMAIN: &[u8] = b"coffer/image-measurement/v1\0";

/// The report data of a workload that binds its image too, as the launcher sends it:
/// bytes 0..32 as [`workload_report_data`], bytes 32..64 SHA-256 of
/// [`IMAGE_BINDING_DOMAIN`] followed by the image measurement (the digest `coffer convert`
/// prints, which covers every file of the image and its configuration).
///
/// In a confidential VM (TDX, SEV-SNP) the firmware measurements (MRTD, MEASUREMENT) say
/// nothing about the container, so this slot is what ties the evidence to the image; what a
/// process in the VM can put there is bounded by the guest's policy (see DESIGN.md).
pub fn workload_report_data_for_image(
    csr_spki_der: &[u8],
    image_measurement: &[u8; 32],
) -> [u8; 64] {
    let mut out = workload_report_data(csr_spki_der);
    let mut h = Sha256::new();
    h.update(IMAGE_BINDING_DOMAIN);
    h.update(image_measurement);
    out[32..].copy_from_slice(&h.finalize());
    out
}

/// The report data of the Coordinator's own evidence: SHA-256 of its root CA certificate's DER
/// SubjectPublicKeyInfo in bytes 0..32 and SHA-256 of the client's nonce in bytes 32..64 (zeros
/// when no nonce was given), so a client can check both what it trusts and that the quote is fresh.
pub fn coordinator_report_data(root_spki_der: &[u8], nonce: Option<&[u8]>) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&Sha256::digest(root_spki_der));
    if let Some(nonce) = nonce {
        out[32..].copy_from_slice(&Sha256::digest(nonce));
    }
    out
}

/// The format of a piece of evidence. The TEE kind (SGX or TDX) of a DCAP quote is read from
/// the quote itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvidenceFormat {
    /// An Intel DCAP quote (SGX v3/v4/v5 or TDX v4/v5), real or from the simulated platform.
    DcapQuote,
    /// An AMD SEV-SNP attestation report (1184 bytes), with its endorsement `certificates`.
    SnpReport,
}

/// Evidence as sent over the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// How to read `data`.
    pub format: EvidenceFormat,
    /// The raw evidence, base64 (standard alphabet, padded).
    pub data: String,
    /// SEV-SNP: the certificates the guest's firmware returned with the report (the host's
    /// certificate table): VCEK or VLEK, then ASK or ASVK, then ARK, each DER in base64. They
    /// are verified up to a pinned AMD root, so the host cannot substitute its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
}

/// `POST /api/v1/activate`: a workload instance asks for its identity and parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationRequest {
    /// Protocol version of the sender.
    pub protocol_version: u32,
    /// Name of the workload in the manifest.
    pub workload: String,
    /// The instance's UUID; a restart with the same UUID gets the same per-instance secrets.
    pub instance_id: uuid::Uuid,
    /// PKCS#10 CSR (PEM) for a P-256 key generated inside the TEE; report data binds its key.
    pub csr_pem: String,
    /// Evidence whose report data is [`workload_report_data`] of the CSR's key, or, with
    /// `image_measurement`, [`workload_report_data_for_image`].
    pub evidence: Evidence,
    /// The image measurement the launcher checked the image against (64 hex digits), bound
    /// into the evidence's report data; a package may pin it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_measurement: Option<String>,
}

/// One file the launcher writes before the app starts.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileParameter {
    /// Absolute path inside the container.
    pub path: String,
    /// File content, base64.
    pub content: String,
    /// Unix mode, default 0o600.
    #[serde(default = "default_file_mode")]
    pub mode: u32,
}

impl std::fmt::Debug for FileParameter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // File contents usually hold secrets: never print them.
        f.debug_struct("FileParameter")
            .field("path", &self.path)
            .field(
                "content",
                &format_args!("<{} base64 chars>", self.content.len()),
            )
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

fn default_file_mode() -> u32 {
    0o600
}

/// What a workload receives, with secrets filled in. Debug output never shows values.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameters {
    /// Files to write.
    #[serde(default)]
    pub files: Vec<FileParameter>,
    /// Environment variables to set (merged over the image's).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Replacement argv, if the manifest gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Names of host (pod spec, runtime) environment variables the app may still receive; every
    /// other host variable is dropped by the launcher.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_env: Vec<String>,
    /// Key (hex, 32 bytes) that decrypts the image's protected files, if the manifest gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_key: Option<String>,
}

impl std::fmt::Debug for Parameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parameters")
            .field("files", &self.files)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("argv", &self.argv.as_ref().map(|a| a.len()))
            .field("image_key", &self.image_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Answer to a successful activation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationResponse {
    /// Protocol version of the Coordinator.
    pub protocol_version: u32,
    /// The workload certificate followed by the intermediate CA, PEM.
    pub certificate_chain_pem: String,
    /// The Coordinator's root CA, PEM: the trust anchor for mTLS between workloads.
    pub root_ca_pem: String,
    /// Expiry of the workload certificate, Unix seconds; re-activate before it.
    pub not_after: i64,
    /// Files, env, argv with secrets filled in, encrypted to the CSR's key
    /// ([`sealed`]): a replayed request gets an answer only the TEE's own key opens.
    pub sealed_parameters: SealedParameters,
}

/// `GET /api/v1/quote?nonce=HEX`: the Coordinator's own evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteResponse {
    /// Protocol version of the Coordinator.
    pub protocol_version: u32,
    /// Evidence whose report data is [`coordinator_report_data`] of the root CA key and nonce.
    pub evidence: Evidence,
    /// The Coordinator's root CA certificate, PEM.
    pub root_ca_pem: String,
    /// The current intermediate CA certificate, PEM.
    pub intermediate_ca_pem: String,
    /// True when the Coordinator runs on the simulated platform.
    pub simulation: bool,
    /// With `state=1`: the state the quote binds (its report data is then
    /// [`coordinator_report_data_bound`], else [`coordinator_report_data`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateSummary>,
}

/// Lifecycle state of a Coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoordinatorState {
    /// Started, no manifest set yet.
    AwaitingManifest,
    /// Manifest set; activations are served.
    Ready,
    /// The state key could not be unsealed; waiting for `POST /api/v1/recover`.
    Recovery,
    /// The stored state does not match its authenticated head (the host edited, deleted or
    /// rolled back part of it). Nothing is served until the recovery-key holders
    /// re-authenticate it with `POST /api/v1/recover`.
    Tampered,
}

/// `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// Protocol version of the Coordinator.
    pub protocol_version: u32,
    /// Lifecycle state.
    pub state: CoordinatorState,
    /// Canonical SHA-256 of the manifest in force, hex, if one is set.
    pub manifest_hash: Option<String>,
    /// True when the Coordinator runs on the simulated platform and accepts simulated evidence.
    pub simulation: bool,
    /// Coordinator software version.
    pub version: String,
    /// The heads of the authenticated state (absent in recovery and tampered mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_head: Option<StateSummary>,
    /// What was found, in tampered mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper: Option<TamperReport>,
    /// This replica, when several Coordinators share an etcd store (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaStatus>,
}

/// Why a Coordinator refuses to serve its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TamperReport {
    /// Unix seconds of the detection.
    pub detected_at: i64,
    /// Each finding, e.g. "value `manifest` is missing".
    pub findings: Vec<String>,
}

/// A Coordinator replica sharing an etcd store with others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The replica's name (`--replica-name`; the pod name in Kubernetes).
    pub name: String,
    /// Whether it holds the leader lease (it alone initialises a new state).
    pub leader: bool,
    /// The shared store (`etcd`).
    pub store: String,
}

/// Answer to `POST /api/v1/manifest` and `POST /api/v1/manifest/update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestResponse {
    /// Protocol version of the Coordinator.
    pub protocol_version: u32,
    /// Canonical SHA-256 of the manifest now in force, hex.
    pub manifest_hash: String,
    /// What the update changed (empty for the first manifest).
    #[serde(default)]
    pub changes: Vec<String>,
}

/// `PUT /api/v1/secrets`: user-defined secret values to set (client certificate required).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSecretsRequest {
    /// Secret name → value, base64 (standard alphabet).
    pub secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for SetSecretsRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetSecretsRequest")
            .field("names", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One secret as read by a user (`GET /api/v1/secrets?names=a,b`). Binary fields are base64;
/// keys are DER (PKCS#8 private, SPKI public), certificates DER.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretOut {
    /// The secret's type as declared in the manifest.
    pub kind: String,
    /// Symmetric key or user value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<String>,
    /// Public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<String>,
    /// Certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
}

impl std::fmt::Debug for SecretOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretOut")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Answer to `GET /api/v1/secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsResponse {
    /// Name → value.
    pub secrets: BTreeMap<String, SecretOut>,
}

/// One recovery key's entry, as `GET /api/v1/recover` shows it in recovery mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryEntry {
    /// Name of the recovery key in the manifest.
    pub name: String,
    /// SHA-256 of its DER SubjectPublicKeyInfo, hex.
    pub fingerprint: String,
    /// RSA-OAEP-SHA256 ciphertext of the state key (or of this key's share), base64.
    pub ciphertext: String,
}

/// `GET /api/v1/recover`: what a recovery key owner needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryStatus {
    /// Protocol version of the Coordinator.
    pub protocol_version: u32,
    /// Random challenge (hex) every upload signs.
    pub challenge: String,
    /// How many distinct keys must upload.
    pub threshold: usize,
    /// One entry per recovery key.
    pub entries: Vec<RecoveryEntry>,
    /// Fingerprints of keys that have uploaded so far.
    pub accepted: Vec<String>,
    /// In tampered mode: what was found. Uploads then re-authenticate the state as it is and
    /// must say so ([`RecoverRequest::reauthenticate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper: Option<TamperReport>,
}

/// One upload in `POST /api/v1/recover`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryShare {
    /// Fingerprint of the recovery key (see [`RecoveryEntry`]).
    pub fingerprint: String,
    /// The decrypted entry, base64.
    pub secret: String,
    /// RSA-PSS-SHA256 signature, base64, over `"coffer-recover-v1\0" ‖ challenge ‖ secret` with
    /// the recovery private key.
    pub signature: String,
}

impl std::fmt::Debug for RecoveryShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryShare")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// `POST /api/v1/recover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// Protocol version of the sender.
    pub protocol_version: u32,
    /// The uploads.
    pub shares: Vec<RecoveryShare>,
    /// The key owner accepts the tampered state as it is now (tampered mode only; refused
    /// without it, so nobody re-authenticates a state by accident).
    #[serde(default)]
    pub reauthenticate: bool,
}

/// Answer to `POST /api/v1/recover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverResponse {
    /// State after the upload (`ready`/`awaiting-manifest` when recovered).
    pub state: CoordinatorState,
    /// Keys accepted so far.
    pub accepted: usize,
    /// Keys needed.
    pub threshold: usize,
}

/// One audit log record. Records form a hash chain ([`AuditRecord::chain_hash`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number (increasing, starts at 1).
    #[serde(default)]
    pub seq: u64,
    /// Chain hash of record `seq - 1` (zeros for record 1), hex.
    #[serde(with = "hex::serde", default)]
    pub prev: chain::Hash,
    /// Unix seconds.
    pub time: i64,
    /// `activation`, `manifest-set`, `manifest-update`, `secrets-set`, `secrets-read`, `recovery`.
    pub event: String,
    /// `accepted` or `refused`.
    pub outcome: String,
    /// Workload, for activations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Instance UUID, for activations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Manifest user, for client API calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Why (refusals) or what (changes); never secret values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Only in `state-reauthenticated` records: where the chain before it was broken (the
    /// sequence numbers of the first records after each break), as the recovery-key holders
    /// accepted it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain_breaks: Vec<u64>,
}

/// Answer to `GET /api/v1/audit?after=N&limit=M`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditResponse {
    /// Records in sequence order.
    pub records: Vec<AuditRecord>,
}

/// Error kinds a client can act on; the message says more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request body or a parameter is malformed.
    BadRequest,
    /// The sender's protocol version is outside the accepted range.
    UnsupportedProtocolVersion,
    /// The evidence is malformed.
    MalformedEvidence,
    /// A signature in the evidence or its collateral does not verify.
    BadSignature,
    /// Collateral or a certificate is outside its validity window.
    ExpiredCollateral,
    /// A certificate of the evidence is revoked (listed in a CRL).
    Revoked,
    /// The evidence does not chain to a trusted root: e.g. simulated evidence sent to a
    /// Coordinator that was not started with `--simulation`.
    UntrustedRoot,
    /// The evidence is well formed but of a kind this Coordinator does not support.
    UnsupportedEvidence,
    /// The evidence verifies but does not satisfy the manifest.
    PolicyMismatch,
    /// Collateral could not be fetched from the provisioning service.
    CollateralUnavailable,
    /// The workload has reached its activation limit.
    ActivationLimit,
    /// The named workload, secret or resource does not exist.
    NotFound,
    /// No valid client certificate.
    Unauthenticated,
    /// The client's roles do not allow the action.
    Forbidden,
    /// The action conflicts with the current state (e.g. manifest already set).
    Conflict,
    /// The request body exceeds the limit.
    PayloadTooLarge,
    /// The client's address caused too many refused requests; try again later.
    RateLimited,
    /// The Coordinator is in recovery mode.
    RecoveryMode,
    /// The Coordinator found its stored state tampered with and serves nothing from it.
    Tampered,
    /// Something went wrong inside the Coordinator; details are in its log, never here.
    Internal,
}

/// The body of every error answer: `{"error": {"kind": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// See [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// A reason a person can act on; never contains secrets.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_range() {
        assert!(protocol_version_supported(PROTOCOL_VERSION));
        assert!(!protocol_version_supported(0));
        assert!(!protocol_version_supported(PROTOCOL_VERSION + 1));
    }

    #[test]
    fn report_data_binds_key_and_nonce() {
        let a = coordinator_report_data(b"key", Some(b"n1"));
        let b = coordinator_report_data(b"key", Some(b"n2"));
        assert_eq!(a[..32], b[..32]);
        assert_ne!(a[32..], b[32..]);
        assert_eq!(coordinator_report_data(b"key", None)[32..], [0u8; 32]);
        assert_eq!(workload_report_data(b"key")[32..], [0u8; 32]);
        assert_ne!(workload_report_data(b"key")[..32], [0u8; 32]);
    }

    #[test]
    fn debug_hides_secrets() {
        let p = Parameters {
            files: vec![FileParameter {
                path: "/s".into(),
                content: "c2VjcmV0".into(),
                mode: 0o600,
            }],
            env: [("K".to_string(), "topsecret".to_string())].into(),
            argv: Some(vec!["app".into(), "topsecret".into()]),
            host_env: Vec::new(),
            image_key: Some("00".repeat(32)),
        };
        let s = format!("{p:?}");
        assert!(!s.contains("topsecret") && !s.contains("c2VjcmV0") && !s.contains("0000"));
    }
}
