//! The mutating admission webhook: turns a pod labelled for Coffer into a confidential one.
//!
//! The API server sends every pod CREATE to `POST /mutate` as an `admission.k8s.io/v1`
//! AdmissionReview; [`review`] answers with an AdmissionReview whose response carries a JSON
//! Patch (RFC 6902) or a refusal with a message the pod's author sees in `kubectl`. The work is
//! split so that each part can be tested alone:
//!
//! - [`mutate_pod`] is the pure policy: a k8s-openapi [`Pod`] in, the mutated pod (or a
//!   [`Refusal`]) out. No I/O.
//! - [`review`] parses the AdmissionReview (bounded by [`MAX_REVIEW_BYTES`]), calls
//!   [`mutate_pod`] and computes the patch as the *diff* between the pod as received and the
//!   mutated pod (`json_patch::diff`), so the patch is minimal and always applies to what the API
//!   server holds.
//! - [`serve`] is the HTTPS server (rustls, certificates reloaded when their files change) and
//!   [`patch_ca_bundle`] publishes the CA in the MutatingWebhookConfiguration.
//!
//! # What a Coffer pod gets
//!
//! Every pod the webhook sees has its legacy EPC resources ([`LEGACY_EPC_MIB`], in MiB, as the
//! AKS FAQ's Job writes them) rewritten into [`RESOURCE_EPC`] with its own value, and the
//! pod annotation [`ANNOTATION_POD_EPC`] set to the sum: no node offers the old names, so such
//! a pod could never be scheduled. Nothing else changes for a pod without the label
//! [`LABEL_WORKLOAD`] (`coffer.dev/workload`), and such a pod is never refused (a conflict, or a
//! Kata policy computed from its spec, leaves it as it is, with a warning); the chart sends
//! those pods through a second webhook entry with `failurePolicy: Ignore`.
//!
//! A pod is for Coffer when it carries that label, whose value is the workload name in the
//! deployment manifest (as Marblerun's `marbletype`). Its confidential containers are those
//! listed in [`ANNOTATION_CONTAINERS`] (all, without it) minus those in
//! [`ANNOTATION_EXCLUDE`] (the list used is written into [`ANNOTATION_CONTAINERS`], so a
//! re-invocation after another webhook added a container leaves that one alone); init
//! containers never are (they run before the app, are not
//! converted images, and an enclave resource on them would be allocated to a container that
//! never starts an enclave). Each confidential container gets:
//!
//! - the launcher environment: `COFFER_COORDINATOR`, `COFFER_WORKLOAD` (the label),
//!   `COFFER_INSTANCE_ID` (the pod UID through the downward API, stable across container
//!   restarts, unique per pod) and `COFFER_EVIDENCE`;
//! - for SGX (annotation [`ANNOTATION_TEE`] absent → the configured default, or `sgx`): limits
//!   and requests (equal) `sgx.intel.com/epc` (the container's own value, else the annotation
//!   [`ANNOTATION_EPC`], else the configured default) and `sgx.intel.com/enclave: 1`; the
//!   toleration for SGX nodes; the pod annotation [`ANNOTATION_POD_EPC`] with the sum (Kata
//!   sizes a VM's EPC from it). Containers asking for EPC themselves, and the quote provider,
//!   are SGX containers too (Intel's rule), without the launcher environment.
//! - the quote provider named by `sgx.intel.com/quote-provider`, as Intel's webhook wires it:
//!   a container of that name (an aesmd sidecar) gets `sgx.intel.com/provision: 1` and shares
//!   its socket directory `/var/run/aesmd` with the other SGX containers through an in-memory
//!   `emptyDir`, and they get `SGX_AESM_ADDR=1`; the value `aesmd` without such a container
//!   means the node's aesmd: the host's `/var/run/aesmd` (`DirectoryOrCreate`) in every SGX
//!   container, with `SGX_AESM_ADDR=1`. Without the annotation a pod with confidential SGX
//!   containers gets the node's aesmd too (Gramine quotes only through its socket), except
//!   with simulated evidence;
//! - for TDX/SNP: the first configured RuntimeClass (`kata-qemu-tdx` / `kata-qemu-snp` by
//!   default), unless the pod already names one of the configured ones.
//!
//! A pod carrying a Kata agent policy ([`ANNOTATION_KATA_POLICY`]) that the webhook would
//! change is refused: the policy was computed from the spec before injection. `coffer k8s
//! inject` prints the injected pod to compute the policy from.
//!
//! # Rules for values already in the pod
//!
//! The webhook never overwrites what the pod's author wrote; it fills in what is missing and
//! refuses what contradicts it, so a pod never runs with settings its author did not expect:
//!
//! - `COFFER_*` and `SGX_AESM_ADDR` variables belong to the webhook: one already set to the same
//!   value is kept, one set to a different value is refused (the message names the container
//!   and the variable). Variables coming from `envFrom` are not visible here; explicit `env`
//!   takes precedence over them in Kubernetes, so the webhook's values win.
//! - A container's own `sgx.intel.com/epc` is kept; the annotation and the default only fill it
//!   in where it is missing (a warning tells the user when the annotation was not applied). A
//!   legacy EPC resource must agree with the container's own `sgx.intel.com/epc`.
//! - An existing `runtimeClassName` must be one of those configured for the TEE.
//!
//! Applying the webhook to a pod it already mutated changes nothing (empty patch).

use std::collections::BTreeMap;

use base64::Engine as _;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, HostPathVolumeSource,
    ObjectFieldSelector, Pod, PodSpec, ResourceRequirements, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;

use crate::error::Error;

mod ca_bundle;
mod quantity;
mod server;

pub use ca_bundle::patch_ca_bundle;
pub use server::{router, serve, TlsFiles, DEFAULT_RELOAD_INTERVAL};

/// Pod label that marks a pod for Coffer; its value is the workload name in the manifest.
pub const LABEL_WORKLOAD: &str = "coffer.dev/workload";
/// Pod annotation choosing the TEE: `sgx`, `tdx` or `snp`.
pub const ANNOTATION_TEE: &str = "coffer.dev/tee";
/// Pod annotation with the EPC limit per container (a quantity, e.g. `64Mi`).
pub const ANNOTATION_EPC: &str = "coffer.dev/epc";
/// Pod annotation the webhook sets when it injects `COFFER_EVIDENCE=sim`, so that
/// `kubectl describe pod` shows the pod runs on simulated evidence.
pub const ANNOTATION_SIMULATION: &str = "coffer.dev/simulation";
/// Pod annotation naming the quote provider (Intel device plugin convention).
pub const ANNOTATION_QUOTE_PROVIDER: &str = "sgx.intel.com/quote-provider";
/// Enclave page cache, in bytes (Intel SGX device plugin).
pub const RESOURCE_EPC: &str = "sgx.intel.com/epc";
/// Access to `/dev/sgx_enclave` (Intel SGX device plugin).
pub const RESOURCE_ENCLAVE: &str = "sgx.intel.com/enclave";
/// Access to `/dev/sgx_provision` (Intel SGX device plugin), for a pod's own quote provider.
pub const RESOURCE_PROVISION: &str = "sgx.intel.com/provision";
/// The older AKS resource: EPC in MiB, rewritten to [`RESOURCE_EPC`].
pub const RESOURCE_AKS_EPC_MIB: &str = "kubernetes.azure.com/sgx_epc_mem_in_MiB";
/// The older Intel/AKS resource name in the AKS FAQ's Job: EPC in MiB, rewritten to
/// [`RESOURCE_EPC`].
pub const RESOURCE_INTEL_EPC_MIB: &str = "sgx.intel.com/sgx_epc_mem_in_MiB";
/// The legacy EPC resources (MiB) no current node offers; every pod's are rewritten.
pub const LEGACY_EPC_MIB: [&str; 2] = [RESOURCE_INTEL_EPC_MIB, RESOURCE_AKS_EPC_MIB];
/// Pod annotation with the pod's total EPC, which Kata uses to size a VM's EPC (Intel's
/// webhook writes it too).
pub const ANNOTATION_POD_EPC: &str = "sgx.intel.com/epc";
/// Pod annotation listing the confidential containers (comma-separated names); without it
/// every container is one.
pub const ANNOTATION_CONTAINERS: &str = "coffer.dev/containers";
/// Pod annotation listing containers that stay ordinary (log shippers, proxies).
pub const ANNOTATION_EXCLUDE: &str = "coffer.dev/exclude-containers";
/// The Kata agent policy annotation (genpolicy, `az confcom katapolicygen`): computed from
/// the spec, so a pod that carries it must not be changed afterwards.
pub const ANNOTATION_KATA_POLICY: &str = "io.katacontainers.config.agent.policy";
/// Kata's initdata annotation (CoCo): measured at launch, it carries the agent policy too.
pub const ANNOTATION_KATA_INITDATA: &str = "io.katacontainers.config.hypervisor.cc_init_data";
/// The aesmd socket directory on SGX nodes (and inside the containers).
pub const AESMD_DIR: &str = "/var/run/aesmd";
/// Name of the volume the webhook adds for [`AESMD_DIR`].
pub const AESMD_VOLUME: &str = "coffer-aesmd";
/// Largest AdmissionReview accepted: the API server's own limit for an object (3 MiB) plus room
/// for the review envelope around it.
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024 + 64 * 1024;
/// Largest EPC limit accepted per container (1 TiB, far above any EPC built so far), so that a
/// typo like `10Ti` is refused rather than leaving the pod unschedulable forever.
pub const MAX_EPC_BYTES: u128 = 1 << 40;
/// Longest workload name: a label value has at most 63 characters.
pub const MAX_WORKLOAD_NAME: usize = 63;

/// The TEE a Coffer pod runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tee {
    /// An Intel SGX enclave (Gramine), scheduled through the SGX device plugin resources.
    Sgx,
    /// An Intel TDX confidential VM through Kata Containers (RuntimeClass `kata-qemu-tdx`).
    Tdx,
    /// An AMD SEV-SNP confidential VM through Kata Containers (RuntimeClass `kata-qemu-snp`).
    Snp,
}

impl Tee {
    /// The spelling in the `coffer.dev/tee` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sgx => "sgx",
            Self::Tdx => "tdx",
            Self::Snp => "snp",
        }
    }

    /// The default RuntimeClass of a pod of this TEE (`None` for SGX: ordinary runc); see
    /// [`WebhookConfig::runtime_classes`].
    pub fn default_runtime_class(self) -> Option<&'static str> {
        match self {
            Self::Sgx => None,
            Self::Tdx => Some("kata-qemu-tdx"),
            Self::Snp => Some("kata-qemu-snp"),
        }
    }
}

impl fmt::Display for Tee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tee {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sgx" => Ok(Self::Sgx),
            "tdx" => Ok(Self::Tdx),
            "snp" => Ok(Self::Snp),
            _ => Err(format!("unknown TEE {s:?}: expected one of sgx, tdx, snp")),
        }
    }
}

/// What the launcher uses as evidence (`COFFER_EVIDENCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceMode {
    /// Detect the TEE at start (the launcher refuses to start when none is found).
    Auto,
    /// Gramine's `/dev/attestation` (SGX).
    Gramine,
    /// The Linux configfs-tsm report interface (TDX, SNP).
    Tsm,
    /// SIMULATION: quotes from the simulated platform, accepted only by a Coordinator started
    /// with `--simulation`. Pods get the [`ANNOTATION_SIMULATION`] annotation and every
    /// admission answer carries a warning, so users see it.
    Sim,
}

impl EvidenceMode {
    /// The value of `COFFER_EVIDENCE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Gramine => "gramine",
            Self::Tsm => "tsm",
            Self::Sim => "sim",
        }
    }
}

impl fmt::Display for EvidenceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EvidenceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "gramine" => Ok(Self::Gramine),
            "tsm" => Ok(Self::Tsm),
            "sim" => Ok(Self::Sim),
            _ => Err(format!(
                "unknown evidence mode {s:?}: expected one of auto, gramine, tsm, sim"
            )),
        }
    }
}

/// The webhook's settings (from `coffer k8s webhook` flags or the chart's values).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Address of the Coordinator's activation endpoint as the pods reach it (`host:port`,
    /// e.g. `coffer-coordinator.coffer.svc:4433`), injected as `COFFER_COORDINATOR`.
    pub coordinator: String,
    /// TEE for Coffer pods without a `coffer.dev/tee` annotation (normally [`Tee::Sgx`]).
    pub default_tee: Tee,
    /// EPC limit per container for SGX pods without `coffer.dev/epc` and without their own
    /// limit, as a Kubernetes quantity (normally `10Mi`).
    pub default_epc: String,
    /// Injected as `COFFER_EVIDENCE` (normally [`EvidenceMode::Auto`]).
    pub evidence: EvidenceMode,
    /// Tolerations added to every Coffer pod besides the SGX one (e.g. the taint of a
    /// confidential node pool); each is added only when an equal one is not already there.
    pub extra_tolerations: Vec<Toleration>,
    /// The RuntimeClasses a TDX pod may name (the first is set on a pod that names none):
    /// `kata-qemu-tdx` by default; clusters name theirs differently (another CoCo class).
    pub tdx_runtime_classes: Vec<String>,
    /// The same for SEV-SNP: `kata-qemu-snp` by default (AKS: `kata-cc-isolation`).
    pub snp_runtime_classes: Vec<String>,
    /// Namespaces whose pods the webhook never changes (the chart's: `kube-system` and
    /// Coffer's own). A pod labelled for Coffer there is admitted unchanged with a warning
    /// that it runs without Coffer.
    pub excluded_namespaces: Vec<String>,
}

impl WebhookConfig {
    /// The defaults: SGX, `10Mi` of EPC, `COFFER_EVIDENCE=auto`, no extra tolerations.
    pub fn new(coordinator: impl Into<String>) -> Self {
        Self {
            coordinator: coordinator.into(),
            default_tee: Tee::Sgx,
            default_epc: "10Mi".to_string(),
            evidence: EvidenceMode::Auto,
            extra_tolerations: Vec::new(),
            tdx_runtime_classes: Tee::Tdx
                .default_runtime_class()
                .map(String::from)
                .into_iter()
                .collect(),
            snp_runtime_classes: Tee::Snp
                .default_runtime_class()
                .map(String::from)
                .into_iter()
                .collect(),
            excluded_namespaces: Vec::new(),
        }
    }

    /// The RuntimeClasses a pod of `tee` may name; the first is the one set when it names none.
    pub fn runtime_classes(&self, tee: Tee) -> &[String] {
        match tee {
            Tee::Sgx => &[],
            Tee::Tdx => &self.tdx_runtime_classes,
            Tee::Snp => &self.snp_runtime_classes,
        }
    }

    /// Checks the settings, so that a bad flag stops the webhook at start-up rather than
    /// refusing every pod later. [`serve`] calls it.
    pub fn validate(&self) -> Result<(), Error> {
        let (host, port) = self.coordinator.rsplit_once(':').ok_or_else(|| {
            Error::InvalidConfig(format!(
                "coordinator address {:?} is not host:port",
                self.coordinator
            ))
        })?;
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
            });
        if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(Error::InvalidConfig(format!(
                "coordinator address {:?} is not host:port",
                self.coordinator
            )));
        }
        parse_epc(&self.default_epc)
            .map_err(|e| Error::InvalidConfig(format!("default EPC {e}")))?;
        for tee in [Tee::Tdx, Tee::Snp] {
            let classes = self.runtime_classes(tee);
            if classes.is_empty() {
                return Err(Error::InvalidConfig(format!(
                    "no RuntimeClass for {tee} pods"
                )));
            }
            if let Some(bad) = classes.iter().find(|c| !is_dns_subdomain(c)) {
                return Err(Error::InvalidConfig(format!(
                    "RuntimeClass {bad:?} for {tee} pods is not a DNS subdomain name"
                )));
            }
        }
        Ok(())
    }
}

/// A Kubernetes object name (RFC 1123 subdomain): what a RuntimeClass name must be.
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Why a Coffer pod was refused; the message is what the pod's author sees in `kubectl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

fn refuse<T>(msg: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(msg.into()))
}

/// The result of [`mutate_pod`].
#[derive(Debug, Clone)]
pub struct Mutation {
    /// The pod as it must be created (equal to the input when nothing applies).
    pub pod: Pod,
    /// Messages for the user (sent as admission warnings, shown by `kubectl`).
    pub warnings: Vec<String>,
}

/// An EPC size: the bytes it means, and the string as written.
#[derive(Debug, Clone)]
struct Epc {
    bytes: u128,
    text: String,
}

fn parse_epc(s: &str) -> Result<Epc, String> {
    let bytes = quantity::parse_whole(s).map_err(|e| format!("{s:?} {e}"))?;
    if bytes == 0 {
        return Err(format!("{s:?} is zero"));
    }
    if bytes > MAX_EPC_BYTES {
        return Err(format!("{s:?} is larger than 1Ti"));
    }
    Ok(Epc {
        bytes,
        text: s.to_string(),
    })
}

/// Checks a workload name: it must be a label value and a manifest workload name at once.
pub fn validate_workload_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_WORKLOAD_NAME {
        return Err(format!("is longer than {MAX_WORKLOAD_NAME} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("may contain only letters, digits, '_', '.' and '-'".into());
    }
    let first = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    let last = name
        .bytes()
        .last()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    if !first || !last {
        return Err("must begin and end with a letter or digit".into());
    }
    Ok(())
}

/// What an environment variable must hold.
enum EnvWant<'a> {
    Value(&'a str),
    PodUid,
}

fn env_matches(e: &EnvVar, want: &EnvWant<'_>) -> bool {
    match want {
        EnvWant::Value(v) => e.value.as_deref() == Some(*v) && e.value_from.is_none(),
        EnvWant::PodUid => {
            e.value.as_deref().is_none_or(str::is_empty)
                && e.value_from.as_ref().is_some_and(|s| {
                    s.field_ref.as_ref().is_some_and(|f| {
                        f.field_path == "metadata.uid"
                            && f.api_version.as_deref().is_none_or(|v| v == "v1")
                    }) && s.config_map_key_ref.is_none()
                        && s.secret_key_ref.is_none()
                        && s.resource_field_ref.is_none()
                })
        }
    }
}

fn ensure_env(c: &mut Container, name: &str, want: EnvWant<'_>) -> Result<(), Refusal> {
    let env = c.env.get_or_insert_with(Vec::new);
    let mut found = false;
    for e in env.iter().filter(|e| e.name == name) {
        if !env_matches(e, &want) {
            let expected = match want {
                EnvWant::Value(v) => format!("{v:?}"),
                EnvWant::PodUid => "the pod UID (fieldRef metadata.uid)".to_string(),
            };
            return refuse(format!(
                "container {:?} sets env {name} to another value than the Coffer webhook's \
                 ({expected}); remove it from the pod spec: the webhook sets it",
                c.name
            ));
        }
        found = true;
    }
    if !found {
        env.push(match want {
            EnvWant::Value(v) => EnvVar {
                name: name.to_string(),
                value: Some(v.to_string()),
                value_from: None,
            },
            EnvWant::PodUid => EnvVar {
                name: name.to_string(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".to_string()),
                        field_path: "metadata.uid".to_string(),
                    }),
                    ..Default::default()
                }),
            },
        });
    }
    Ok(())
}

/// Reads one resource of a container from limits and requests; both must agree.
fn read_resource(
    c: &Container,
    key: &str,
    parse: impl Fn(&str) -> Result<u128, String>,
) -> Result<Option<(u128, String)>, Refusal> {
    let res = c.resources.as_ref();
    let get =
        |m: Option<&BTreeMap<String, Quantity>>| m.and_then(|m| m.get(key)).map(|q| q.0.clone());
    let limit = get(res.and_then(|r| r.limits.as_ref()));
    let request = get(res.and_then(|r| r.requests.as_ref()));
    let parse_named = |which: &str, s: &str| {
        parse(s).map_err(|e| Refusal(format!("container {:?}: {which} {key}: {e}", c.name)))
    };
    match (limit, request) {
        (None, None) => Ok(None),
        (Some(l), None) => Ok(Some((parse_named("limit", &l)?, l))),
        (None, Some(r)) => Ok(Some((parse_named("request", &r)?, r))),
        (Some(l), Some(r)) => {
            let lb = parse_named("limit", &l)?;
            let rb = parse_named("request", &r)?;
            if lb != rb {
                return refuse(format!(
                    "container {:?}: limit {key} {l:?} and request {r:?} differ; an extended \
                     resource needs equal limit and request",
                    c.name
                ));
            }
            Ok(Some((lb, l)))
        }
    }
}

/// Sets `key` in limits and requests of `c` when missing (the existing string is kept).
fn set_resource(c: &mut Container, key: &str, value: &str) {
    let res = c
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    for map in [&mut res.limits, &mut res.requests] {
        map.get_or_insert_with(BTreeMap::new)
            .entry(key.to_string())
            .or_insert_with(|| Quantity(value.to_string()));
    }
}

fn remove_resource(c: &mut Container, key: &str) {
    if let Some(res) = c.resources.as_mut() {
        for m in [&mut res.limits, &mut res.requests].into_iter().flatten() {
            m.remove(key);
        }
    }
}

fn parse_count(s: &str) -> Result<u128, String> {
    quantity::parse_whole(s).map_err(|e| format!("{s:?} {e}"))
}

/// Requires `key` to be absent or exactly 1 in `c`, then sets it to 1.
fn ensure_one_device(c: &mut Container, key: &str) -> Result<(), Refusal> {
    if let Some((n, text)) = read_resource(c, key, parse_count)? {
        if n != 1 {
            return refuse(format!(
                "container {:?} asks for {key} {text:?}; a Coffer container uses exactly 1",
                c.name
            ));
        }
    }
    set_resource(c, key, "1");
    Ok(())
}

fn parse_aks_mib(s: &str) -> Result<u128, String> {
    let mib = parse_count(s)?;
    if mib == 0 {
        return Err(format!("{s:?} is zero"));
    }
    let bytes = mib
        .checked_mul(1 << 20)
        .filter(|b| *b <= MAX_EPC_BYTES)
        .ok_or_else(|| format!("{s:?} MiB is larger than 1Ti"))?;
    Ok(bytes)
}

fn is_sgx_resource(key: &str) -> bool {
    key.starts_with("sgx.intel.com/") || key == RESOURCE_AKS_EPC_MIB
}

fn toleration_covers(t: &Toleration, want: &Toleration) -> bool {
    if t == want {
        return true;
    }
    let exists = t.operator.as_deref() == Some("Exists");
    let key_ok = t.key.is_none() || t.key == want.key;
    let effect_ok = t.effect.is_none() || t.effect == want.effect;
    exists
        && key_ok
        && effect_ok
        && t.toleration_seconds.is_none()
        && want.operator.as_deref() == Some("Exists")
}

fn ensure_toleration(tolerations: &mut Option<Vec<Toleration>>, want: &Toleration) {
    let list = tolerations.get_or_insert_with(Vec::new);
    if !list.iter().any(|t| toleration_covers(t, want)) {
        list.push(want.clone());
    }
}

/// The toleration of the taint Intel's and AKS's SGX node pools carry.
pub fn sgx_toleration() -> Toleration {
    Toleration {
        key: Some(RESOURCE_EPC.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some("NoSchedule".to_string()),
        value: None,
        toleration_seconds: None,
    }
}

/// The quote provider of an SGX pod.
enum QuoteProvider {
    None,
    /// A container of the pod (by index).
    Container(usize),
    /// The node's aesmd, through the host socket directory.
    Aesmd,
}

/// Rewrites the legacy EPC resources of `c` (MiB: [`LEGACY_EPC_MIB`]) into [`RESOURCE_EPC`]
/// with the container's own value. A container asking for EPC under two names must ask for
/// the same amount.
fn rewrite_legacy_epc(c: &mut Container, warnings: &mut Vec<String>) -> Result<(), Refusal> {
    let has_legacy = c.resources.as_ref().is_some_and(|r| {
        [&r.limits, &r.requests]
            .into_iter()
            .flatten()
            .any(|m| LEGACY_EPC_MIB.iter().any(|k| m.contains_key(*k)))
    });
    if !has_legacy {
        return Ok(());
    }
    let mut own = read_resource(c, RESOURCE_EPC, |s| parse_epc(s).map(|e| e.bytes))?;
    for legacy in LEGACY_EPC_MIB {
        let Some((bytes, text)) = read_resource(c, legacy, parse_aks_mib)? else {
            continue;
        };
        match &own {
            Some((b, own_text)) if *b != bytes => {
                return refuse(format!(
                    "container {:?}: conflicting EPC: {RESOURCE_EPC} {own_text:?} but {legacy} \
                     {text:?} ({text}Mi); keep only {RESOURCE_EPC}",
                    c.name
                ))
            }
            Some(_) => {}
            None => {
                let mib = format!("{}Mi", bytes >> 20);
                set_resource(c, RESOURCE_EPC, &mib);
                own = Some((bytes, mib.clone()));
                warnings.push(format!(
                    "container {:?}: {legacy} {text} rewritten to {RESOURCE_EPC} {mib} (no node \
                     offers {legacy})",
                    c.name
                ));
            }
        }
        remove_resource(c, legacy);
    }
    Ok(())
}

/// The EPC a container asks for, in bytes (after [`rewrite_legacy_epc`]).
fn epc_bytes(c: &Container) -> u128 {
    read_resource(c, RESOURCE_EPC, |s| parse_epc(s).map(|e| e.bytes))
        .ok()
        .flatten()
        .map_or(0, |(b, _)| b)
}

/// Sets [`ANNOTATION_POD_EPC`] to the sum of the containers' EPC (when there is any).
fn annotate_pod_epc(pod: &mut Pod, warnings: &mut Vec<String>) {
    let total: u128 = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(epc_bytes)
        .sum();
    if total == 0 {
        return;
    }
    let text = if total % (1 << 20) == 0 {
        format!("{}Mi", total >> 20)
    } else {
        total.to_string()
    };
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match annotations.get(ANNOTATION_POD_EPC) {
        Some(v) if *v == text => {}
        Some(v) => {
            warnings.push(format!(
                "annotation {ANNOTATION_POD_EPC} {v:?} replaced by {text:?}, the sum of the \
                 containers' {RESOURCE_EPC}"
            ));
            annotations.insert(ANNOTATION_POD_EPC.to_string(), text);
        }
        None => {
            annotations.insert(ANNOTATION_POD_EPC.to_string(), text);
        }
    }
}

/// The container names listed in `annotation` (comma-separated), each a container of the pod.
fn listed_containers(
    annotations: &BTreeMap<String, String>,
    annotation: &str,
    containers: &[Container],
) -> Result<Option<Vec<String>>, Refusal> {
    let Some(list) = annotations.get(annotation) else {
        return Ok(None);
    };
    let names: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(unknown) = names
        .iter()
        .find(|n| !containers.iter().any(|c| c.name == **n))
    {
        return refuse(format!(
            "annotation {annotation} names {unknown:?}, which is not a container of this pod"
        ));
    }
    Ok(Some(names))
}

/// The Kata annotation carrying a policy computed from the pod's spec, when there is one: the
/// agent policy itself, or initdata (which CoCo measures and which holds the policy).
fn kata_policy_annotation(pod: &Pod) -> Option<&'static str> {
    let annotations = pod.metadata.annotations.as_ref()?;
    [ANNOTATION_KATA_POLICY, ANNOTATION_KATA_INITDATA]
        .into_iter()
        .find(|a| annotations.contains_key(*a))
}

/// Applies the Coffer policy to `pod`. Every pod's legacy EPC resources are rewritten
/// ([`LEGACY_EPC_MIB`]); pods without [`LABEL_WORKLOAD`] get nothing else.
///
/// Pure and deterministic; applying it to its own output gives the same pod back.
pub fn mutate_pod(pod: &Pod, cfg: &WebhookConfig) -> Result<Mutation, Refusal> {
    let mut warnings = Vec::new();
    let mut out = pod.clone();
    let rewritten = match out.spec.as_mut() {
        None => Ok(()),
        Some(spec) => spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
            .try_for_each(|c| rewrite_legacy_epc(c, &mut warnings)),
    };
    let labels = pod.metadata.labels.as_ref();
    let Some(workload) = labels.and_then(|l| l.get(LABEL_WORKLOAD)) else {
        // Not Coffer's pod: never refused, only its legacy EPC names rewritten, and not even
        // that when it carries a Kata policy computed from the spec as it is.
        let policy = kata_policy_annotation(pod);
        return Ok(match (rewritten, policy) {
            (Err(r), _) => Mutation {
                pod: pod.clone(),
                warnings: vec![format!("legacy EPC resources left as they are: {r}")],
            },
            (Ok(()), Some(a)) if out != *pod => Mutation {
                pod: pod.clone(),
                warnings: vec![format!(
                    "legacy EPC resources left as they are: the pod carries {a}, computed from \
                     its spec; rewrite them to {RESOURCE_EPC} before computing the policy"
                )],
            },
            (Ok(()), _) => {
                if out != *pod {
                    annotate_pod_epc(&mut out, &mut warnings);
                }
                Mutation { pod: out, warnings }
            }
        });
    };
    rewritten?;
    validate_workload_name(workload).map_err(|e| {
        Refusal(format!(
            "label {LABEL_WORKLOAD} {workload:?} is not a workload name: it {e}"
        ))
    })?;
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let tee = match annotations.get(ANNOTATION_TEE) {
        None => cfg.default_tee,
        Some(t) => t
            .parse::<Tee>()
            .map_err(|e| Refusal(format!("annotation {ANNOTATION_TEE}: {e}")))?,
    };
    let Some(spec) = out.spec.as_mut() else {
        return refuse("the pod has no spec");
    };
    if spec.containers.is_empty() {
        return refuse("the pod has no containers");
    }
    // Which containers are confidential: those listed (all without a list), minus the
    // excluded ones.
    let listed = listed_containers(&annotations, ANNOTATION_CONTAINERS, &spec.containers)?;
    let excluded =
        listed_containers(&annotations, ANNOTATION_EXCLUDE, &spec.containers)?.unwrap_or_default();
    // Without a list, every container but the quote provider (an aesmd sidecar, not a
    // converted image).
    let provider = annotations.get(ANNOTATION_QUOTE_PROVIDER);
    let confidential: Vec<bool> = spec
        .containers
        .iter()
        .map(|c| {
            let selected = match &listed {
                Some(l) => l.contains(&c.name),
                None => provider != Some(&c.name),
            };
            selected && !excluded.contains(&c.name)
        })
        .collect();
    if !confidential.contains(&true) {
        return refuse(format!(
            "no confidential container is left: annotations {ANNOTATION_CONTAINERS} and \
             {ANNOTATION_EXCLUDE} exclude every container"
        ));
    }
    // The selection is written into the pod, so that a re-invocation after another webhook
    // added a container (a service-mesh proxy) leaves that container alone.
    if listed.is_none() {
        let names: Vec<&str> = spec
            .containers
            .iter()
            .zip(&confidential)
            .filter(|(_, conf)| **conf)
            .map(|(c, _)| c.name.as_str())
            .collect();
        out.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANNOTATION_CONTAINERS.to_string(), names.join(","));
    }

    for (c, _) in spec
        .containers
        .iter_mut()
        .zip(&confidential)
        .filter(|(_, conf)| **conf)
    {
        ensure_env(c, "COFFER_COORDINATOR", EnvWant::Value(&cfg.coordinator))?;
        ensure_env(c, "COFFER_WORKLOAD", EnvWant::Value(workload))?;
        ensure_env(c, "COFFER_INSTANCE_ID", EnvWant::PodUid)?;
        ensure_env(c, "COFFER_EVIDENCE", EnvWant::Value(cfg.evidence.as_str()))?;
    }

    match tee {
        Tee::Sgx => mutate_sgx(spec, &annotations, cfg, &confidential, &mut warnings)?,
        Tee::Tdx | Tee::Snp => {
            let classes = cfg.runtime_classes(tee);
            let Some(want) = classes.first() else {
                return refuse(format!(
                    "the Coffer webhook has no RuntimeClass for {tee} pods; ask the cluster \
                     operator to configure one"
                ));
            };
            for a in [ANNOTATION_EPC, ANNOTATION_QUOTE_PROVIDER] {
                if annotations.contains_key(a) {
                    return refuse(format!(
                        "annotation {a} is for SGX pods, but the pod asks for TEE {tee}; remove it"
                    ));
                }
            }
            let all = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten());
            for c in all {
                let res = c.resources.as_ref();
                let keys = res
                    .and_then(|r| r.limits.as_ref())
                    .into_iter()
                    .chain(res.and_then(|r| r.requests.as_ref()))
                    .flat_map(|m| m.keys());
                for k in keys {
                    if is_sgx_resource(k) {
                        return refuse(format!(
                            "container {:?} asks for SGX resource {k}, but the pod asks for TEE \
                             {tee} (a Kata confidential VM without SGX); remove the resource or \
                             set annotation {ANNOTATION_TEE} to sgx",
                            c.name
                        ));
                    }
                }
            }
            match spec.runtime_class_name.as_deref() {
                None => spec.runtime_class_name = Some(want.clone()),
                Some(rc) if classes.iter().any(|c| c == rc) => {}
                Some(rc) => {
                    return refuse(format!(
                        "the pod names runtimeClassName {rc:?}, but TEE {tee} needs one of \
                         {classes:?}; remove runtimeClassName from the pod spec, or ask the \
                         cluster operator to add {rc:?} to the webhook's {tee} classes"
                    ))
                }
            }
        }
    }

    for t in &cfg.extra_tolerations {
        ensure_toleration(&mut spec.tolerations, t);
    }
    if tee == Tee::Sgx {
        annotate_pod_epc(&mut out, &mut warnings);
    }
    if cfg.evidence == EvidenceMode::Sim {
        let text = simulation_notice();
        out.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANNOTATION_SIMULATION.to_string(), text.clone());
        warnings.push(text);
    }
    if let Some(a) = kata_policy_annotation(pod).filter(|_| out != *pod) {
        return refuse(format!(
            "the pod carries a Kata agent policy ({a}) computed from the spec before the Coffer \
             webhook changed it, so the Kata agent would deny the changed containers; print the \
             injected pod with `coffer k8s inject -f pod.yaml`, generate the policy from that \
             (genpolicy, az confcom katapolicygen) and apply it"
        ));
    }
    Ok(Mutation { pod: out, warnings })
}

/// The SGX part of [`mutate_pod`]: EPC and the enclave device for every SGX container (the
/// confidential ones, those asking for EPC themselves, the quote provider), and the quote
/// provider's wiring, as Intel's SGX webhook does it.
fn mutate_sgx(
    spec: &mut PodSpec,
    annotations: &BTreeMap<String, String>,
    cfg: &WebhookConfig,
    confidential: &[bool],
    warnings: &mut Vec<String>,
) -> Result<(), Refusal> {
    let annotation_epc = match annotations.get(ANNOTATION_EPC) {
        None => None,
        Some(s) => {
            Some(parse_epc(s).map_err(|e| Refusal(format!("annotation {ANNOTATION_EPC}: {e}")))?)
        }
    };
    let default_epc = parse_epc(&cfg.default_epc).map_err(|e| {
        Refusal(format!(
            "the Coffer webhook's default EPC {e}; ask the cluster operator to fix it"
        ))
    })?;
    if let Some(rc) = spec.runtime_class_name.as_deref() {
        let vm = cfg
            .runtime_classes(Tee::Tdx)
            .iter()
            .chain(cfg.runtime_classes(Tee::Snp))
            .any(|c| c == rc);
        if vm {
            return refuse(format!(
                "runtimeClassName {rc:?} runs the pod in a confidential VM, but the pod asks for \
                 TEE sgx; set annotation {ANNOTATION_TEE} to tdx or snp"
            ));
        }
    }
    let provider = match annotations
        .get(ANNOTATION_QUOTE_PROVIDER)
        .map(String::as_str)
    {
        // Gramine gets quotes only from aesmd's socket (`pal/src/host/linux-sgx/host_platform.c`
        // connects to /var/run/aesmd/aesm.socket), so a confidential container without a
        // named provider uses the node's aesmd. Simulated evidence needs none.
        None if cfg.evidence != EvidenceMode::Sim && confidential.iter().any(|c| *c) => {
            QuoteProvider::Aesmd
        }
        None => QuoteProvider::None,
        Some(name) => match spec.containers.iter().position(|c| c.name == name) {
            Some(i) => QuoteProvider::Container(i),
            None if name == "aesmd" => QuoteProvider::Aesmd,
            None => {
                return refuse(format!(
                    "annotation {ANNOTATION_QUOTE_PROVIDER} {name:?} is neither \"aesmd\" nor \
                     the name of a container of this pod"
                ))
            }
        },
    };
    let mut sgx = Vec::new();
    for (i, c) in spec.containers.iter_mut().enumerate() {
        let own = read_resource(c, RESOURCE_EPC, |s| parse_epc(s).map(|e| e.bytes))?;
        let is_provider = matches!(provider, QuoteProvider::Container(p) if p == i);
        if !(confidential[i] || own.is_some() || is_provider) {
            continue;
        }
        let text = match (&own, &annotation_epc) {
            (Some((b, text)), Some(a)) if a.bytes != *b => {
                warnings.push(format!(
                    "container {:?} keeps its own {RESOURCE_EPC} {text:?}; annotation \
                     {ANNOTATION_EPC} {:?} applies only to containers without one",
                    c.name, a.text
                ));
                text.clone()
            }
            (Some((_, text)), _) => text.clone(),
            (None, a) => a.as_ref().unwrap_or(&default_epc).text.clone(),
        };
        // Fills in the request (or limit) where only one was written.
        set_resource(c, RESOURCE_EPC, &text);
        ensure_one_device(c, RESOURCE_ENCLAVE)?;
        sgx.push(i);
    }
    // The quote provider (Intel's convention): a container of the pod that runs aesmd gets
    // /dev/sgx_provision and shares its socket directory with the other SGX containers (an
    // in-memory emptyDir); "aesmd" without such a container is the node's aesmd (hostPath).
    let socket_volume = match provider {
        QuoteProvider::None => None,
        QuoteProvider::Container(p) => {
            ensure_one_device(&mut spec.containers[p], RESOURCE_PROVISION)?;
            (sgx.len() >= 2).then(aesmd_shared_volume)
        }
        QuoteProvider::Aesmd => Some(aesmd_host_volume()),
    };
    if let Some(volume) = socket_volume {
        let host_path = volume.host_path.is_some();
        // A socket directory of the right kind already mounted in one SGX container (Intel's
        // webhook's aesmd-socket, or the user's) is the one the others must share.
        let shared = sgx
            .iter()
            .flat_map(|&i| spec.containers[i].volume_mounts.iter().flatten())
            .filter(|m| m.mount_path.trim_end_matches('/') == AESMD_DIR)
            .find(|m| {
                spec.volumes
                    .iter()
                    .flatten()
                    .any(|v| v.name == m.name && same_aesmd_source(v, &volume))
            })
            .map(|m| m.name.clone());
        let name = shared.as_deref().unwrap_or(AESMD_VOLUME);
        let mut used = false;
        for &i in &sgx {
            let c = &mut spec.containers[i];
            used |= ensure_aesmd_mount(c, spec.volumes.as_deref(), &volume, name)?;
            if !matches!(provider, QuoteProvider::Container(p) if p == i) {
                ensure_env(c, "SGX_AESM_ADDR", EnvWant::Value("1"))?;
            }
        }
        if used {
            ensure_aesmd_volume(&mut spec.volumes, volume)?;
            if host_path {
                warnings.push(format!(
                    "the pod gets the hostPath {AESMD_DIR} (the node's aesmd socket); a \
                     namespace enforcing the baseline or restricted Pod Security Standard \
                     refuses it: label the namespace pod-security.kubernetes.io/enforce=privileged \
                     or run aesmd as a sidecar container named in {ANNOTATION_QUOTE_PROVIDER}"
                ));
            }
        }
    }
    ensure_toleration(&mut spec.tolerations, &sgx_toleration());
    Ok(())
}

fn simulation_notice() -> String {
    "SIMULATION: COFFER_EVIDENCE=sim, this pod's evidence is simulated, not from a TEE".to_string()
}

/// The node's aesmd socket directory (created if missing, as Intel's webhook does: on AKS
/// the aesmd DaemonSet may start after the pod).
fn aesmd_host_volume() -> Volume {
    Volume {
        name: AESMD_VOLUME.to_string(),
        host_path: Some(HostPathVolumeSource {
            path: AESMD_DIR.to_string(),
            type_: Some("DirectoryOrCreate".to_string()),
        }),
        ..Default::default()
    }
}

/// The socket directory an aesmd container of the pod shares with the others: in memory.
fn aesmd_shared_volume() -> Volume {
    Volume {
        name: AESMD_VOLUME.to_string(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_string()),
            size_limit: None,
        }),
        ..Default::default()
    }
}

fn is_aesmd_host_path(v: &Volume) -> bool {
    v.host_path
        .as_ref()
        .is_some_and(|h| h.path.trim_end_matches('/') == AESMD_DIR)
}

fn ensure_aesmd_volume(volumes: &mut Option<Vec<Volume>>, want: Volume) -> Result<(), Refusal> {
    let list = volumes.get_or_insert_with(Vec::new);
    match list.iter().find(|v| v.name == AESMD_VOLUME) {
        Some(v) if *v == want => Ok(()),
        Some(_) => refuse(format!(
            "the pod has a volume named {AESMD_VOLUME:?} that is not the aesmd socket directory \
             the webhook adds; rename it"
        )),
        None => {
            list.push(want);
            Ok(())
        }
    }
}

/// Whether `v` provides the aesmd socket directory the way `want` does: the node's directory
/// (hostPath) or one shared inside the pod (emptyDir, as Intel's webhook adds it).
fn same_aesmd_source(v: &Volume, want: &Volume) -> bool {
    if want.host_path.is_some() {
        is_aesmd_host_path(v)
    } else {
        v.empty_dir.is_some()
    }
}

/// Mounts the aesmd socket directory (volume `name`) in `c`; true when the mount uses
/// [`AESMD_VOLUME`]. A mount the container already has there from a volume of the same kind
/// (the user's own, or Intel's webhook's `aesmd-socket`) is kept.
fn ensure_aesmd_mount(
    c: &mut Container,
    volumes: Option<&[Volume]>,
    want: &Volume,
    name: &str,
) -> Result<bool, Refusal> {
    let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
    let existing = mounts
        .iter()
        .find(|m| m.mount_path.trim_end_matches('/') == AESMD_DIR);
    match existing {
        Some(m) if m.name == AESMD_VOLUME => Ok(true),
        Some(m) => {
            let same = volumes
                .into_iter()
                .flatten()
                .any(|v| v.name == m.name && same_aesmd_source(v, want));
            if same {
                Ok(false)
            } else {
                refuse(format!(
                    "container {:?} mounts volume {:?} at {AESMD_DIR}, where the aesmd quote \
                     provider's socket goes; remove that mount",
                    c.name, m.name
                ))
            }
        }
        None => {
            mounts.push(VolumeMount {
                name: name.to_string(),
                mount_path: AESMD_DIR.to_string(),
                ..Default::default()
            });
            Ok(name == AESMD_VOLUME)
        }
    }
}

/// Answers one admission request (already parsed) with a response: allowed with the patch,
/// allowed unchanged, or refused with the message of a [`Refusal`].
///
/// Only pod CREATEs are mutated: a pod's spec is immutable afterwards, so an UPDATE (or a
/// request for another kind, from a misconfigured webhook) is allowed unchanged.
pub fn review_request(
    req: &AdmissionRequest<DynamicObject>,
    cfg: &WebhookConfig,
) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod";
    if req.operation != Operation::Create || !is_pod || req.sub_resource.is_some() {
        return resp;
    }
    let Some(object) = req.object.as_ref() else {
        return resp.deny("the AdmissionReview request has no object");
    };
    if let Some(ns) = req
        .namespace
        .as_deref()
        .filter(|ns| cfg.excluded_namespaces.iter().any(|e| e == ns))
    {
        let labelled = object
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(LABEL_WORKLOAD));
        let mut resp = resp;
        if labelled {
            resp.warnings = Some(vec![format!(
                "Coffer does not change pods in namespace {ns:?} (excluded: the system's and \
                 Coffer's own); this pod labelled {LABEL_WORKLOAD} runs WITHOUT Coffer: create \
                 it in another namespace"
            )]);
        }
        return resp;
    }
    let original = match serde_json::to_value(object).and_then(serde_json::from_value::<Pod>) {
        Ok(p) => p,
        Err(e) => return resp.deny(format!("the pod object is malformed: {e}")),
    };
    let mutation = match mutate_pod(&original, cfg) {
        Ok(m) => m,
        Err(r) => {
            tracing::info!(uid = %req.uid, reason = %r, "pod refused");
            let mut resp = resp.deny(format!("Coffer: {r}"));
            resp.result.code = 400;
            resp.result.reason = "BadRequest".to_string();
            return resp;
        }
    };
    let (left, right) = match (
        serde_json::to_value(&original),
        serde_json::to_value(&mutation.pod),
    ) {
        (Ok(l), Ok(r)) => (l, r),
        (Err(e), _) | (_, Err(e)) => {
            return resp.deny(format!("internal: cannot encode the pod: {e}"))
        }
    };
    let patch = json_patch::diff(&left, &right);
    let mut resp = resp;
    if !mutation.warnings.is_empty() {
        resp.warnings = Some(mutation.warnings);
    }
    if patch.0.is_empty() {
        return resp;
    }
    match resp.clone().with_patch(patch) {
        Ok(r) => r,
        Err(e) => resp.deny(format!("internal: cannot encode the patch: {e}")),
    }
}

/// Answers an AdmissionReview body (JSON, as the API server POSTs it) with the response body.
///
/// `Err` means the body is not an `admission.k8s.io/v1` AdmissionReview with a request at all
/// (the server answers HTTP 400 or 413); a review of an unacceptable pod is an `Ok` answer with
/// `allowed: false` and the reason. Never panics, whatever the bytes.
pub fn review(body: &[u8], cfg: &WebhookConfig) -> Result<Vec<u8>, Error> {
    if body.len() > MAX_REVIEW_BYTES {
        return Err(Error::BodyTooLarge {
            limit: MAX_REVIEW_BYTES,
        });
    }
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| Error::MalformedReview(e.to_string()))?;
    if review.types.api_version != kube::core::admission::META_API_VERSION_V1
        || review.types.kind != kube::core::admission::META_KIND
    {
        return Err(Error::MalformedReview(format!(
            "expected apiVersion {} kind {}, got apiVersion {:?} kind {:?}",
            kube::core::admission::META_API_VERSION_V1,
            kube::core::admission::META_KIND,
            review.types.api_version,
            review.types.kind
        )));
    }
    let req: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| Error::MalformedReview("no request in the AdmissionReview".into()))?;
    let mut resp = review_request(&req, cfg);
    // kube-core serialises `patch` (a Vec<u8>) as an array of numbers; the API documents (and
    // Go's []byte encodes) a base64 string, so the patch is written in that canonical form.
    let patch = resp.patch.take();
    let mut value = serde_json::to_value(resp.into_review())
        .map_err(|e| Error::MalformedReview(format!("cannot encode the response: {e}")))?;
    if let (Some(p), Some(obj)) = (
        patch,
        value.get_mut("response").and_then(|r| r.as_object_mut()),
    ) {
        obj.insert(
            "patch".to_string(),
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(p)),
        );
    }
    serde_json::to_vec(&value)
        .map_err(|e| Error::MalformedReview(format!("cannot encode the response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("test pod")
    }

    fn coffer_pod(annotations: serde_json::Value, containers: serde_json::Value) -> Pod {
        pod(json!({
            "metadata": {"name": "p", "labels": {"coffer.dev/workload": "web"}, "annotations": annotations},
            "spec": {"containers": containers}
        }))
    }

    fn cfg() -> WebhookConfig {
        WebhookConfig::new("coffer-coordinator.coffer.svc:4433")
    }

    fn limit(p: &Pod, i: usize, key: &str) -> Option<String> {
        p.spec
            .as_ref()?
            .containers
            .get(i)?
            .resources
            .as_ref()?
            .limits
            .as_ref()?
            .get(key)
            .map(|q| q.0.clone())
    }

    #[test]
    fn workload_names() {
        assert!(validate_workload_name("web-1.a_b").is_ok());
        assert_eq!(validate_workload_name(""), Err("is empty".into()));
        assert!(validate_workload_name(&"a".repeat(64)).is_err());
        assert!(validate_workload_name(&"a".repeat(63)).is_ok());
        assert!(validate_workload_name("-web").is_err());
        assert!(validate_workload_name("we b").is_err());
        assert!(validate_workload_name("web/x").is_err());
    }

    #[test]
    fn config_validation() {
        assert!(cfg().validate().is_ok());
        let mut c = cfg();
        c.coordinator = "nohost".into();
        assert!(matches!(c.validate(), Err(Error::InvalidConfig(m)) if m.contains("host:port")));
        let mut c = cfg();
        c.default_epc = "0".into();
        assert!(matches!(c.validate(), Err(Error::InvalidConfig(m)) if m.contains("is zero")));
    }

    #[test]
    fn unlabelled_pod_is_unchanged() {
        let p = pod(json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a"}]}}));
        let m = mutate_pod(&p, &cfg()).expect("allowed");
        assert_eq!(m.pod, p);
    }

    #[test]
    fn epc_sources_in_order() {
        let p = coffer_pod(
            json!({"coffer.dev/epc": "64Mi"}),
            json!([
                {"name": "own", "resources": {"limits": {"sgx.intel.com/epc": "8Mi"}}},
                {"name": "aks", "resources": {"limits": {"kubernetes.azure.com/sgx_epc_mem_in_MiB": "64"}}},
                {"name": "none"}
            ]),
        );
        let m = mutate_pod(&p, &cfg()).expect("allowed");
        assert_eq!(limit(&m.pod, 0, RESOURCE_EPC).as_deref(), Some("8Mi"));
        assert_eq!(limit(&m.pod, 1, RESOURCE_EPC).as_deref(), Some("64Mi"));
        assert_eq!(limit(&m.pod, 1, RESOURCE_AKS_EPC_MIB), None);
        assert_eq!(limit(&m.pod, 2, RESOURCE_EPC).as_deref(), Some("64Mi"));
        assert_eq!(m.warnings.len(), 3, "{:?}", m.warnings);
        assert!(m.warnings[0].contains("rewritten to sgx.intel.com/epc 64Mi"));
        assert!(m.warnings[1].contains("keeps its own"));
        assert!(m.warnings[2].contains("hostPath /var/run/aesmd"));
        let again = mutate_pod(&m.pod, &cfg()).expect("allowed");
        assert_eq!(again.pod, m.pod);
    }

    #[test]
    fn gramine_pods_always_get_the_nodes_aesmd_socket_and_the_enclave_device() {
        let p = coffer_pod(json!({}), json!([{"name": "app"}]));
        let m = mutate_pod(&p, &cfg()).expect("allowed");
        let spec = m.pod.spec.as_ref().unwrap();
        let c = &spec.containers[0];
        assert_eq!(limit(&m.pod, 0, RESOURCE_ENCLAVE).as_deref(), Some("1"));
        assert!(limit(&m.pod, 0, RESOURCE_EPC).is_some());
        assert!(c
            .volume_mounts
            .iter()
            .flatten()
            .any(|v| v.mount_path == AESMD_DIR && v.name == AESMD_VOLUME));
        let v = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == AESMD_VOLUME)
            .expect("the aesmd volume");
        assert_eq!(v.host_path.as_ref().unwrap().path, AESMD_DIR);
        // Simulated evidence needs no aesmd.
        let mut sim = cfg();
        sim.evidence = EvidenceMode::Sim;
        let m = mutate_pod(&p, &sim).expect("allowed");
        assert!(m.pod.spec.unwrap().volumes.unwrap_or_default().is_empty());
    }

    #[test]
    fn enclave_count_other_than_one_is_refused() {
        let p = coffer_pod(
            json!({}),
            json!([{"name": "a", "resources": {"limits": {"sgx.intel.com/enclave": "2"}}}]),
        );
        let r = mutate_pod(&p, &cfg()).expect_err("refused");
        assert!(r.0.contains("exactly 1"), "{r}");
    }

    #[test]
    fn limit_and_request_must_agree() {
        let p = coffer_pod(
            json!({}),
            json!([{"name": "a", "resources": {"limits": {"sgx.intel.com/epc": "8Mi"}, "requests": {"sgx.intel.com/epc": "4Mi"}}}]),
        );
        let r = mutate_pod(&p, &cfg()).expect_err("refused");
        assert!(r.0.contains("differ"), "{r}");
    }

    #[test]
    fn env_conflict_is_refused_and_equal_env_kept() {
        let p = coffer_pod(
            json!({}),
            json!([{"name": "a", "env": [{"name": "COFFER_WORKLOAD", "value": "other"}]}]),
        );
        let r = mutate_pod(&p, &cfg()).expect_err("refused");
        assert!(
            r.0.contains("COFFER_WORKLOAD") && r.0.contains("\"a\""),
            "{r}"
        );
        let p = coffer_pod(
            json!({}),
            json!([{"name": "a", "env": [{"name": "COFFER_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}]}]),
        );
        let m = mutate_pod(&p, &cfg()).expect("allowed");
        let env = m
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.containers[0].env.clone())
            .unwrap_or_default();
        assert_eq!(
            env.iter()
                .filter(|e| e.name == "COFFER_INSTANCE_ID")
                .count(),
            1
        );
    }

    #[test]
    fn sim_is_labelled() {
        let mut c = cfg();
        c.evidence = EvidenceMode::Sim;
        let p = coffer_pod(json!({}), json!([{"name": "a"}]));
        let m = mutate_pod(&p, &c).expect("allowed");
        let ann = m.pod.metadata.annotations.clone().unwrap_or_default();
        assert!(ann
            .get(ANNOTATION_SIMULATION)
            .is_some_and(|v| v.starts_with("SIMULATION")));
        assert!(m.warnings.iter().any(|w| w.starts_with("SIMULATION")));
    }

    #[test]
    fn existing_broad_toleration_is_enough() {
        let p = pod(json!({
            "metadata": {"labels": {"coffer.dev/workload": "web"}},
            "spec": {"containers": [{"name": "a"}], "tolerations": [{"operator": "Exists"}]}
        }));
        let m = mutate_pod(&p, &cfg()).expect("allowed");
        assert_eq!(
            m.pod.spec.and_then(|s| s.tolerations).map(|t| t.len()),
            Some(1)
        );
    }

    #[test]
    fn review_rejects_garbage_and_wrong_version() {
        assert!(matches!(
            review(b"{", &cfg()),
            Err(Error::MalformedReview(_))
        ));
        let body = json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"});
        let e = review(body.to_string().as_bytes(), &cfg()).expect_err("refused");
        assert!(e.to_string().contains("v1beta1"), "{e}");
    }
}
