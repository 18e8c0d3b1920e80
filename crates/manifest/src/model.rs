//! The manifest's types, exactly as they appear in JSON/YAML (field names are the document's).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::template::Template;

/// A deployment manifest. Obtain one with [`Manifest::parse`](crate::Manifest::parse), which
/// validates it; a value built by hand has not been checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Trusted measurements, by package name.
    #[serde(default)]
    pub packages: NameMap<Package>,
    /// Workloads that may start, by name (the name the launcher sends when it activates).
    #[serde(default)]
    pub workloads: NameMap<Workload>,
    /// Secrets the Coordinator generates or users set, by name.
    #[serde(default)]
    pub secrets: NameMap<SecretSpec>,
    /// Users of the client API, by name.
    #[serde(default)]
    pub users: NameMap<User>,
    /// Roles users can hold, by name.
    #[serde(default)]
    pub roles: NameMap<Role>,
    /// RSA public keys (PEM) the state key is encrypted to for recovery, by name.
    #[serde(default)]
    pub recovery_keys: NameMap<String>,
    /// How many recovery keys must take part in a recovery (k of n). Defaults to all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_threshold: Option<u32>,
    /// Which workloads talk to which over mutual TLS.
    #[serde(default)]
    pub tls: Vec<TlsRule>,
}

/// The kind of trusted execution environment.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Tee {
    /// Intel SGX enclave.
    Sgx,
    /// Intel TDX trust domain.
    Tdx,
    /// AMD SEV-SNP confidential VM.
    Snp,
}

impl fmt::Display for Tee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tee::Sgx => "SGX",
            Tee::Tdx => "TDX",
            Tee::Snp => "SEV-SNP",
        })
    }
}

/// The TCB statuses Intel's verification can report, in Intel's spelling.
pub const KNOWN_TCB_STATUSES: &[&str] = &[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "TDRelaunchAdvised",
    "TDRelaunchAdvisedConfigurationNeeded",
    "Revoked",
];

fn default_tcb_statuses() -> Vec<String> {
    vec!["UpToDate".to_string()]
}

/// A trusted software package: what a workload's evidence must show.
///
/// SGX: either `mrenclave` (one exact build) or `mrsigner` + `isv_prod_id` + minimum `isv_svn`
/// (any build of that product by that signer at or above that security version), or both (all
/// given values must match). TDX: `mrtd` with `rtmr0`..`rtmr2` or `mrconfigid` (the firmware
/// alone is not a workload), optionally `rtmr3`. SEV-SNP: `snp` ([`SnpPackage`]). Any:
/// `image_measurement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// Which TEE the package runs in: `sgx`, `tdx` or `snp`.
    pub tee: Tee,
    /// SGX: the enclave measurement, 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrenclave: Option<String>,
    /// SGX: hash of the enclave signer's key, 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrsigner: Option<String>,
    /// SGX: product ID (ISVPRODID), required with `mrsigner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isv_prod_id: Option<u16>,
    /// SGX: minimum security version (ISVSVN), required with `mrsigner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isv_svn: Option<u16>,
    /// TDX: the TD measurement, 96 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrtd: Option<String>,
    /// TDX: expected RTMR0, 96 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr0: Option<String>,
    /// TDX: expected RTMR1, 96 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr1: Option<String>,
    /// TDX: expected RTMR2, 96 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr2: Option<String>,
    /// TDX: expected RTMR3, 96 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr3: Option<String>,
    /// TDX: expected MRCONFIGID, 96 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrconfigid: Option<String>,
    /// The image measurement `coffer convert` prints, 64 hex digits: the launcher binds the
    /// image it checked into the evidence's report data, and the Coordinator requires this one.
    /// In a confidential VM it is what ties the evidence to the container image (MRTD measures
    /// only the firmware); with SGX, MRENCLAVE covers the image already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_measurement: Option<String>,
    /// TDX: expected MRSERVICETD, 96 hex digits (TD 1.5 quotes; a quote without one counts as
    /// zero, so all zeros requires that no service TD is bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrservicetd: Option<String>,
    /// The lowest `tcbEvaluationDataNumber` of the collateral accepted: refuses evidence judged
    /// against collateral from before a given TCB recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tcb_evaluation_data_number: Option<u32>,
    /// SGX images converted with `--tee sgx`: the in-enclave tmpfs directories their launcher
    /// writes the manifest's files to (the `--secret-dir`s, as `coffer convert` prints them).
    /// Inside Gramine any other path would reach the host's disk in plaintext, so the launcher
    /// refuses it; given here, a workload's file outside them is refused when the manifest is
    /// set, not when the enclave starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_dirs: Option<Vec<String>>,
    /// Whether debug enclaves/TDs are accepted. Default false: a debug TEE's memory is readable
    /// by the host, so accepting one is an explicit, visible choice.
    #[serde(default)]
    pub debug: bool,
    /// TCB statuses accepted, Intel spelling. Default `["UpToDate"]`. Intel's only: an SNP
    /// package sets `snp.min_reported_tcb`.
    #[serde(default = "default_tcb_statuses")]
    pub accepted_tcb_statuses: Vec<String>,
    /// SEV-SNP: what the attestation report must show (required with `"tee": "snp"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snp: Option<SnpPackage>,
}

/// What an SEV-SNP guest's attestation report must show.
///
/// MEASUREMENT is the launch digest of the firmware, and of the kernel, initrd and command
/// line only when the firmware measures their hashes (`coffer measure snp`); HOST_DATA is
/// what the host passed at launch (Kata and Contrast put the digest of the guest's policy /
/// initdata there). So a package pins `measurement` with `host_data`, or an ID key (the key
/// that signed the guest's ID block) — MEASUREMENT alone is only firmware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnpPackage {
    /// MEASUREMENT (the launch digest), 96 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<String>,
    /// HOST_DATA, 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_data: Option<String>,
    /// SHA-384 of the ID key that signed the guest's ID block, 96 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_key_digest: Option<String>,
    /// SHA-384 of the author key that certified the ID key, 96 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_key_digest: Option<String>,
    /// Accept a guest whose policy allows a migration agent (which can export its memory).
    /// Default false.
    #[serde(default)]
    pub migration_agent: bool,
    /// Accept a guest whose policy allows SMT (siblings share core resources with the host).
    /// Default true: most hosts run with SMT.
    #[serde(default = "default_true")]
    pub smt: bool,
    /// The lowest firmware ABI the guest's policy may require, `"MAJOR.MINOR"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_abi: Option<String>,
    /// The lowest REPORTED_TCB accepted, per component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_reported_tcb: Option<SnpTcb>,
    /// The VMPL the report must come from. Default 0 (the guest kernel, no SVSM below it).
    #[serde(default)]
    pub vmpl: u32,
    /// Refuse evidence verified without AMD's CRL. Default false.
    #[serde(default)]
    pub require_crl: bool,
}

fn default_true() -> bool {
    true
}

/// An SEV-SNP TCB version, per component (security patch levels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnpTcb {
    /// Boot loader SPL.
    #[serde(default)]
    pub bootloader: u8,
    /// TEE (PSP OS) SPL.
    #[serde(default)]
    pub tee: u8,
    /// SNP firmware SPL.
    #[serde(default)]
    pub snp: u8,
    /// Microcode SPL.
    #[serde(default)]
    pub microcode: u8,
    /// FMC SPL (Turin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
}

/// A workload: a named role in the deployment, started from a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Name of the package its evidence must match.
    pub package: String,
    /// How many activations (instance starts, restarts with a new UUID) are allowed; absent =
    /// unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_activations: Option<u64>,
    /// What the workload receives.
    #[serde(default)]
    pub parameters: WorkloadParameters,
    /// Extra subject alternative names (DNS names or IP addresses) for the workload's own
    /// certificate, so that peers can reach it over mTLS by name.
    #[serde(default)]
    pub sans: Vec<String>,
}

/// Files, environment and argv a workload receives, with placeholders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadParameters {
    /// Files to write, by absolute path.
    #[serde(default)]
    pub files: NameMap<FileSpec>,
    /// Environment variables to set.
    #[serde(default)]
    pub env: NameMap<Template>,
    /// Replacement argv (program and arguments); absent = the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<Template>>,
    /// The key of the image's protected files: exactly `{{ secrets.NAME.key.hex }}` of a
    /// 256-bit symmetric secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_key: Option<Template>,
    /// Names of environment variables the host (the pod spec, the container runtime) may still
    /// pass to the app, e.g. `["TZ", "HOSTNAME"]`. Every other host variable is dropped: the
    /// app sees its image's `Env`, these, and `env` above (which wins). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_env: Vec<String>,
}

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// The content template.
    pub content: Template,
    /// Unix permission bits as an octal string, default `"0600"`.
    #[serde(default)]
    pub mode: FileMode,
}

/// Unix permission bits, written as an octal string (`"0600"`, `"644"`, `"0o755"`) because JSON
/// has no octal numbers and YAML's differ between versions. Serialised as four digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl Default for FileMode {
    fn default() -> Self {
        FileMode(0o600)
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:04o}", self.0))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FileMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an octal string like \"0600\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileMode, E> {
                let digits = v.strip_prefix("0o").unwrap_or(v);
                if digits.is_empty()
                    || digits.len() > 5
                    || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
                {
                    return Err(E::custom(format!(
                        "file mode {v:?} is not an octal string like \"0600\""
                    )));
                }
                let m = u32::from_str_radix(digits, 8).map_err(E::custom)?;
                if m > 0o7777 {
                    return Err(E::custom(format!("file mode {v:?} is above 7777")));
                }
                Ok(FileMode(m))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FileMode, E> {
                Err(E::custom(format!(
                    "file mode {v} is a number; write it as an octal string, e.g. \"0600\" \
                     (JSON numbers are decimal, so 600 would not mean rw-------)"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FileMode, E> {
                Err(E::custom(format!(
                    "file mode {v} is a number; write it as an octal string, e.g. \"0600\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for FileMode {
    fn schema_name() -> Cow<'static, str> {
        "FileMode".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(0o)?[0-7]{1,5}$",
            "description": "Unix permission bits as an octal string, e.g. \"0600\"."
        })
    }
}

/// What kind of secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SecretKind {
    /// Random bytes; `size` in bits (multiple of 8, 128..=4096).
    Symmetric,
    /// An ECDSA P-256 key pair.
    EcdsaP256,
    /// An RSA key pair; `size` in bits (2048, 3072 or 4096; default 3072).
    Rsa,
    /// A key pair and an X.509 certificate signed by the Coordinator's CA.
    Certificate,
    /// A value users set later through the API.
    UserDefined,
}

impl SecretKind {
    /// The document spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Symmetric => "symmetric",
            SecretKind::EcdsaP256 => "ecdsa-p256",
            SecretKind::Rsa => "rsa",
            SecretKind::Certificate => "certificate",
            SecretKind::UserDefined => "user-defined",
        }
    }
}

/// Key type of a certificate secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// ECDSA P-256 (default).
    #[default]
    EcdsaP256,
    /// RSA; the secret's `size` gives the bits (default 3072).
    Rsa,
}

/// What users may set for a user-defined secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UserValueType {
    /// Any bytes up to 64 KiB (a password, a token, a config snippet). Field `value`.
    #[default]
    Plain,
    /// Exactly `size` bits of key material. Field `key`.
    Symmetric,
}

/// Largest value accepted for a `plain` user-defined secret.
pub const MAX_USER_VALUE_BYTES: usize = 64 * 1024;

/// A secret's declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// Kind of secret.
    #[serde(rename = "type")]
    pub kind: SecretKind,
    /// Size in bits: symmetric (required), rsa (default 3072), certificate with an RSA key
    /// (default 3072), user-defined symmetric (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// One value for every instance (true) or one per instance UUID (false, the default for
    /// generated secrets). User-defined secrets are always shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    /// Certificate secrets: what to put in the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateSpec>,
    /// User-defined secrets: what may be set (default `plain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<UserValueType>,
}

impl SecretSpec {
    /// Whether all instances share one value.
    pub fn is_shared(&self) -> bool {
        self.shared.unwrap_or(self.kind == SecretKind::UserDefined)
    }

    /// The user value type, for user-defined secrets.
    pub fn user_value_type(&self) -> Option<UserValueType> {
        (self.kind == SecretKind::UserDefined).then(|| self.value_type.unwrap_or_default())
    }

    /// The key type of a certificate secret.
    pub fn certificate_key_type(&self) -> Option<KeyType> {
        self.certificate.as_ref().map(|c| c.key_type)
    }
}

fn default_validity_days() -> u32 {
    365
}

/// The content of a certificate secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    /// Subject distinguished name.
    pub subject: Subject,
    /// Subject alternative names: DNS names (optionally `*.` wildcard) or IP addresses.
    #[serde(default)]
    pub sans: Vec<String>,
    /// Validity in days from issuance, 1..=3650 (default 365).
    #[serde(default = "default_validity_days")]
    pub validity_days: u32,
    /// Key type (default `ecdsa-p256`).
    #[serde(default)]
    pub key_type: KeyType,
}

/// A certificate subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// CN, 1..=64 characters.
    pub common_name: String,
    /// O.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// OU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizational_unit: Option<String>,
    /// C, two letters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// A user of the client API, authenticated by a client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The user's client certificate, PEM (one certificate).
    pub certificate: String,
    /// Names of the roles the user holds.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The kind of resource a role grants access to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    /// User-defined and generated secrets; actions `read`, `write` (write: user-defined only).
    Secrets,
    /// Packages; action `update` (change these packages in a manifest update, e.g. raise SVN).
    Packages,
    /// The whole manifest; action `update` (any manifest update). `names` must be empty.
    Manifest,
    /// The audit log; action `read`. `names` must be empty.
    Audit,
}

impl ResourceKind {
    /// The document spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Secrets => "secrets",
            ResourceKind::Packages => "packages",
            ResourceKind::Manifest => "manifest",
            ResourceKind::Audit => "audit",
        }
    }

    /// Actions that make sense on this kind.
    pub fn actions(self) -> &'static [Action] {
        match self {
            ResourceKind::Secrets => &[Action::Read, Action::Write],
            ResourceKind::Packages | ResourceKind::Manifest => &[Action::Update],
            ResourceKind::Audit => &[Action::Read],
        }
    }
}

/// An action on a resource.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Read a value.
    Read,
    /// Set a value.
    Write,
    /// Change through a manifest update.
    Update,
}

impl Action {
    /// The document spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Update => "update",
        }
    }
}

/// A role: actions on named resources of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// The resource kind.
    pub resource: ResourceKind,
    /// Resource names (`"*"` = all of this kind). Required for secrets and packages, empty
    /// for manifest and audit.
    #[serde(default)]
    pub names: Vec<String>,
    /// Allowed actions.
    pub actions: Vec<Action>,
}

/// `from` may open mutual-TLS connections to `to`: `from`'s client certificate is accepted by
/// `to`, and `from` trusts `to`'s server certificate (both from the Coordinator's CA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsRule {
    /// Client workload.
    pub from: String,
    /// Server workload.
    pub to: String,
}

/// A map from names to values that refuses duplicate keys when deserialized (plain maps keep
/// the last duplicate silently, so `{"a":1,"a":2}` would hide a mistake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameMap<V>(pub BTreeMap<String, V>);

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        NameMap(BTreeMap::new())
    }
}

impl<V> Deref for NameMap<V> {
    type Target = BTreeMap<String, V>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<V> std::ops::DerefMut for NameMap<V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'a, V> IntoIterator for &'a NameMap<V> {
    type Item = (&'a String, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, String, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<V> FromIterator<(String, V)> for NameMap<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        NameMap(iter.into_iter().collect())
    }
}

impl<V: Serialize> Serialize for NameMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for NameMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = NameMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicate name {key:?}; every name may appear once"
                        )));
                    }
                    let value = map.next_value::<V>()?;
                    out.insert(key, value);
                }
                Ok(NameMap(out))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}

impl<V: JsonSchema> JsonSchema for NameMap<V> {
    fn schema_name() -> Cow<'static, str> {
        <BTreeMap<String, V> as JsonSchema>::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        <BTreeMap<String, V> as JsonSchema>::schema_id()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        <BTreeMap<String, V> as JsonSchema>::json_schema(g)
    }
}
