//! Coffer deployment manifest: types, validation with JSON paths, canonical hash, secret
//! placeholders, and the activation policy check. Pure: no I/O, no clock, no randomness.
//!
//! One document describes a deployment: which **packages** (measurements) are trusted, which
//! **workloads** may start from them and what each receives (files, env, argv with secrets
//! filled in), which **secrets** exist, which **users** may do what (**roles**), the
//! **recovery keys**, and which workloads talk to which over mutual TLS (**tls**). The field
//! names follow Marblerun's manifest (Packages, Marbles, Secrets, Users, Roles, RecoveryKeys,
//! TLS) in snake_case, so its users find their way.
//!
//! # Use
//!
//! ```
//! let text = include_bytes!("../examples/manifest.json");
//! let manifest = coffer_manifest::Manifest::parse(text).expect("valid");
//! println!("pin this: {}", manifest.hash_hex());
//! ```
//!
//! [`Manifest::parse`] auto-detects JSON (first non-blank byte `{`) or YAML, refuses unknown
//! fields and duplicate names, runs every semantic check and returns either a validated
//! [`Manifest`] or [`ValidationErrors`]: every problem, each with its JSON path
//! (`$.workloads.web.parameters.env.DB_KEY`), a message and a hint.
//!
//! # Fields
//!
//! | path | meaning |
//! |---|---|
//! | `packages.NAME.tee` | `sgx`, `tdx` or `snp` |
//! | `packages.NAME.mrenclave` | SGX: exact enclave measurement, 64 hex |
//! | `packages.NAME.mrsigner`, `isv_prod_id`, `isv_svn` | SGX: signer (64 hex) + product + *minimum* SVN (all three together) |
//! | `packages.NAME.mrtd`, `rtmr0`..`rtmr3`, `mrconfigid` | TDX: 96 hex each; `mrtd` required, with `rtmr0`..`rtmr2` or `mrconfigid` (MRTD alone measures only the firmware) |
//! | `packages.NAME.mrservicetd` | TDX: 96 hex; a quote without one counts as zero |
//! | `packages.NAME.snp.measurement`, `host_data`, `id_key_digest`, `author_key_digest` | SEV-SNP: 96, 64, 96, 96 hex; `measurement` with `host_data`, or `id_key_digest` (MEASUREMENT alone measures only the firmware) |
//! | `packages.NAME.snp.migration_agent`, `smt`, `min_abi`, `vmpl`, `min_reported_tcb`, `require_crl` | SEV-SNP guest policy: migration agent allowed (default `false`), SMT allowed (default `true`), lowest ABI `"MAJOR.MINOR"`, the report's VMPL (default 0), lowest `{bootloader, tee, snp, microcode, fmc}`, AMD's CRL required (default `false`) |
//! | `packages.NAME.min_tcb_evaluation_data_number` | the lowest collateral `tcbEvaluationDataNumber` accepted |
//! | `packages.NAME.image_measurement` | 64 hex, as `coffer convert` prints it: the image the launcher binds into the evidence's report data (bytes 32..64) must be this one |
//! | `packages.NAME.debug` | accept debug TEEs (default `false`) |
//! | `packages.NAME.accepted_tcb_statuses` | Intel spelling, default `["UpToDate"]`; `Revoked` is refused |
//! | `workloads.NAME.package` | the package its evidence must match |
//! | `workloads.NAME.max_activations` | limit (≥ 1); absent = unlimited |
//! | `workloads.NAME.sans` | extra DNS/IP SANs of the workload's certificate |
//! | `workloads.NAME.parameters.files.PATH` | `{ "content": TEMPLATE, "mode": "0600" }`, PATH absolute, normalised, not under `/coffer` |
//! | `workloads.NAME.parameters.env.VAR` | TEMPLATE (no `.raw`; `COFFER_*` reserved) |
//! | `workloads.NAME.parameters.argv` | [TEMPLATE] replacing the image's command (no `.raw`) |
//! | `workloads.NAME.parameters.image_key` | exactly `{{ secrets.K.key.hex }}`, K a 256-bit symmetric secret |
//! | `secrets.NAME.type` | `symmetric`, `ecdsa-p256`, `rsa`, `certificate`, `user-defined` |
//! | `secrets.NAME.size` | bits: symmetric (required, 128..=4096, ×8), rsa / RSA certificate key (2048/3072/4096, default 3072), user-defined symmetric (required) |
//! | `secrets.NAME.shared` | one value for all instances (`true`) or per instance UUID (`false`, default); user-defined: always shared |
//! | `secrets.NAME.certificate` | `{ "subject": {"common_name", "organization"?, "organizational_unit"?, "country"?}, "sans": [..], "validity_days": 365, "key_type": "ecdsa-p256" \| "rsa" }`, signed by the Coordinator's CA |
//! | `secrets.NAME.value_type` | user-defined: `plain` (≤ 64 KiB, field `value`, default) or `symmetric` (exactly `size` bits, field `key`) |
//! | `users.NAME` | `{ "certificate": PEM, "roles": [ROLE] }` |
//! | `roles.NAME` | `{ "resource": "secrets" \| "packages" \| "manifest" \| "audit", "names": [..] or ["*"], "actions": [..] }`: secrets → `read`, `write` (user-defined only); packages → `update`; manifest → `update`; audit → `read` |
//! | `recovery_keys.NAME` | RSA public key PEM, ≥ 2048 bits |
//! | `recovery_threshold` | k of n recovery keys needed (default n) |
//! | `tls` | `[{ "from": W1, "to": W2 }]`: W1 may open mTLS connections to W2 |
//!
//! Placeholders are described in [`template`]. A full example (also in
//! `crates/manifest/examples/manifest.json`, checked by the tests):
//!
//! ```json
#![doc = include_str!("../examples/manifest.json")]
//! ```
//!
//! # Canonical hash
//!
//! Clients pin a deployment by [`Manifest::hash`]: SHA-256 over the **canonical JSON** of the
//! validated manifest, defined as:
//!
//! 1. parse (JSON or YAML) and validate;
//! 2. fill defaults (`debug: false`, `accepted_tcb_statuses: ["UpToDate"]`, `mode: "0600"`,
//!    `validity_days: 365`, `key_type`, `shared`, RSA `size: 3072`, user-defined
//!    `value_type: "plain"`, `recovery_threshold` = number of keys, absent maps/lists as empty)
//!    and write hex measurements in lower case, file modes as four octal digits;
//! 3. serialise every field the types define, leaving out only absent optional values, with
//!    object keys sorted by their UTF-8 bytes, no whitespace, strings escaped as serde_json
//!    does (`"` `\` and control characters; everything else as UTF-8), integers in decimal.
//!
//! So JSON and YAML of the same manifest, key order, whitespace and spelled-out defaults do not
//! change the hash; any change of meaning does. [`Manifest::canonical_json`] gives the bytes,
//! and re-parsing them yields the same hash (fuzzed).

#![forbid(unsafe_code)]

mod error;
mod keys;
mod model;
mod policy;
pub mod template;
mod update;
mod validate;

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

pub use error::{Error, ValidationError, ValidationErrors};
pub use keys::{certificate_der, parse_recovery_key, MIN_RECOVERY_KEY_BITS};
pub use model::{
    Action, CertificateSpec, FileMode, FileSpec, KeyType, Manifest, NameMap, Package, ResourceKind,
    Role, SecretKind, SecretSpec, SnpPackage, SnpTcb, Subject, Tee, TlsRule, User, UserValueType,
    Workload, WorkloadParameters, KNOWN_TCB_STATUSES, MAX_USER_VALUE_BYTES,
};
pub use policy::{MeasurementClaims, Mismatch, SnpClaims};
pub use template::{render, Rendered, SecretSource, SecretValue, SourceError, Target, Template};
pub use update::{Change, UpdateSummary};

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// The document format, detected from the first non-blank byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON (the document starts with `{`).
    Json,
    /// YAML (anything else).
    Yaml,
}

/// Detects the format: JSON if the first byte after blanks (and a UTF-8 BOM) is `{`.
pub fn detect_format(bytes: &[u8]) -> Format {
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Format::Json,
        _ => Format::Yaml,
    }
}

fn serde_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::from("$");
    for seg in path.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => out = validate::key_path(&out, key),
            serde_path_to_error::Segment::Enum { variant } => {
                out = validate::key_path(&out, variant)
            }
            // An unknown segment (e.g. inside a value that did not finish) adds nothing useful.
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// Removes the location suffix (" at line L column C") and a YAML path prefix ("a.b: ") from a
/// serde message, since both are reported as separate fields.
fn clean_message(msg: &str) -> String {
    let mut m = msg;
    if let Some(i) = m.rfind(" at line ") {
        m = &m[..i];
    }
    if let Some(i) = m.find(": ") {
        let prefix = &m[..i];
        if !prefix.is_empty() && !prefix.contains(char::is_whitespace) && !prefix.contains('`') {
            m = &m[i + 2..];
        }
    }
    m.to_string()
}

fn serde_hint(msg: &str) -> &'static str {
    if msg.contains("unknown field") {
        "remove the field or fix its spelling; `coffer manifest schema` lists every field"
    } else if msg.contains("missing field") {
        "add the field; `coffer manifest schema` shows what is required"
    } else if msg.contains("unknown variant") {
        "use one of the listed values"
    } else if msg.contains("duplicate") {
        "every name may appear once; merge or rename the entries"
    } else if msg.contains("invalid type") {
        "check the value's type against `coffer manifest schema`"
    } else {
        "fix the syntax at the given line and column"
    }
}

fn parse_error(
    path: String,
    msg: String,
    line: Option<usize>,
    column: Option<usize>,
) -> ValidationErrors {
    let message = clean_message(&msg);
    let hint = serde_hint(&message).to_string();
    ValidationErrors(vec![ValidationError {
        path,
        message,
        hint: Some(hint),
        line,
        column,
    }])
}

fn deserialize(bytes: &[u8], format: Format) -> Result<Manifest, ValidationErrors> {
    match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let m = serde_path_to_error::deserialize::<_, Manifest>(&mut de).map_err(|e| {
                let path = serde_path(e.path());
                let inner = e.into_inner();
                let (l, c) = (inner.line(), inner.column());
                let loc = (l > 0).then_some(l);
                parse_error(path, inner.to_string(), loc, loc.map(|_| c))
            })?;
            de.end().map_err(|e| {
                parse_error(
                    "$".into(),
                    format!("{e} (trailing data after the manifest)"),
                    Some(e.line()),
                    Some(e.column()),
                )
            })?;
            Ok(m)
        }
        Format::Yaml => {
            // First pass: measure the document with aliases expanded, without allocating, and
            // stop early if it is too big (an alias used many times multiplies its size).
            if let Err(e) = serde::de::DeserializeSeed::deserialize(
                yaml_budget::Counter(&mut yaml_budget::Budget::new(2 * MAX_MANIFEST_BYTES)),
                serde_yaml::Deserializer::from_slice(bytes),
            ) {
                let loc = e.location();
                return Err(parse_error(
                    "$".into(),
                    e.to_string(),
                    loc.as_ref().map(|l| l.line()),
                    loc.as_ref().map(|l| l.column()),
                ));
            }
            let de = serde_yaml::Deserializer::from_slice(bytes);
            serde_path_to_error::deserialize::<_, Manifest>(de).map_err(|e| {
                let path = serde_path(e.path());
                let inner = e.into_inner();
                let loc = inner.location();
                parse_error(
                    path,
                    inner.to_string(),
                    loc.as_ref().map(|l| l.line()),
                    loc.as_ref().map(|l| l.column()),
                )
            })
        }
    }
}

/// Measures a YAML document as the deserializer will see it (aliases expanded) without
/// building it, failing as soon as a byte budget is spent.
mod yaml_budget {
    use std::fmt;

    use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

    pub(crate) struct Budget {
        left: usize,
        limit: usize,
    }

    impl Budget {
        pub(crate) fn new(limit: usize) -> Self {
            Budget { left: limit, limit }
        }

        fn spend<E: serde::de::Error>(&mut self, n: usize) -> Result<(), E> {
            // Every node costs at least 1, so deep or wide alias trees are bounded too.
            match self.left.checked_sub(n.max(1)) {
                Some(l) => {
                    self.left = l;
                    Ok(())
                }
                None => Err(E::custom(format!(
                    "document expands to more than {} bytes (YAML aliases repeat their target; \
                     write values out or keep them smaller)",
                    self.limit
                ))),
            }
        }
    }

    pub(crate) struct Counter<'a>(pub(crate) &'a mut Budget);

    impl<'de> DeserializeSeed<'de> for Counter<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Counter<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any YAML value")
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
            self.0.spend(1)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
            self.0.spend(8)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
            self.0.spend(8)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
            self.0.spend(8)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
            self.0.spend(v.len())
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<(), E> {
            self.0.spend(v.len())
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
            self.0.spend(1)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
            self.0.spend(1)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
        fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            self.0.spend::<A::Error>(1)?;
            while seq.next_element_seed(Counter(&mut *self.0))?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            self.0.spend::<A::Error>(1)?;
            while map.next_key_seed(Counter(&mut *self.0))?.is_some() {
                map.next_value_seed(Counter(&mut *self.0))?;
            }
            Ok(())
        }
        fn visit_enum<A: serde::de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            Err(A::Error::custom("YAML tags are not used in manifests"))
        }
    }
}

impl Manifest {
    /// Parses and validates a manifest (JSON or YAML, auto-detected). On success the manifest
    /// is normalised (defaults filled, hex in lower case), ready for hashing and use.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ValidationErrors> {
        Self::parse_with_format(bytes).map(|(m, _)| m)
    }

    /// Like [`Manifest::parse`], also returning the detected format.
    pub fn parse_with_format(bytes: &[u8]) -> Result<(Manifest, Format), ValidationErrors> {
        Self::parse_checked(bytes, false)
    }

    /// Parses a manifest that was accepted before (the Coordinator's stored one): every check
    /// but the rules added since for new manifests, so an upgrade never stops a Coordinator
    /// from serving the manifest it has. Setting or updating a manifest uses [`Manifest::parse`].
    pub fn parse_stored(bytes: &[u8]) -> Result<Manifest, ValidationErrors> {
        Self::parse_checked(bytes, true).map(|(m, _)| m)
    }

    fn parse_checked(bytes: &[u8], stored: bool) -> Result<(Manifest, Format), ValidationErrors> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ValidationErrors(vec![ValidationError::new(
                "$",
                format!(
                    "manifest is {} bytes, more than the limit of {MAX_MANIFEST_BYTES}",
                    bytes.len()
                ),
            )
            .hint(
                "split large file contents into user-defined secrets or the image",
            )]));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ValidationErrors(vec![ValidationError::new(
                "$",
                "manifest is empty",
            )
            .hint("start from `crates/manifest/examples/manifest.json`")]));
        }
        let format = detect_format(bytes);
        let mut m = deserialize(bytes, format)?;
        let errors = validate::validate(&m, stored);
        if !errors.is_empty() {
            return Err(ValidationErrors(errors));
        }
        m.normalize();
        // YAML aliases and JSON escaping can make the canonical form larger than the input;
        // bound it too, so every accepted manifest's canonical form is itself accepted.
        let canonical_len = m.canonical_json().len();
        if canonical_len > MAX_MANIFEST_BYTES {
            return Err(ValidationErrors(vec![ValidationError::new(
                "$",
                format!(
                    "manifest expands to {canonical_len} bytes in canonical form, more than the limit of {MAX_MANIFEST_BYTES}"
                ),
            )
            .hint("avoid large repeated YAML aliases; keep big contents out of the manifest")]));
        }
        Ok((m, format))
    }

    /// Runs every semantic check on this value (parse already does).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let errors = validate::validate(self, false);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }

    fn normalize(&mut self) {
        for p in self.packages.values_mut() {
            if let Some(snp) = &mut p.snp {
                for h in [
                    &mut snp.measurement,
                    &mut snp.host_data,
                    &mut snp.id_key_digest,
                    &mut snp.author_key_digest,
                ]
                .into_iter()
                .flatten()
                {
                    h.make_ascii_lowercase();
                }
            }
            for h in [
                &mut p.image_measurement,
                &mut p.mrservicetd,
                &mut p.mrenclave,
                &mut p.mrsigner,
                &mut p.mrtd,
                &mut p.rtmr0,
                &mut p.rtmr1,
                &mut p.rtmr2,
                &mut p.rtmr3,
                &mut p.mrconfigid,
            ]
            .into_iter()
            .flatten()
            {
                h.make_ascii_lowercase();
            }
        }
        for s in self.secrets.values_mut() {
            s.shared = Some(s.is_shared());
            match s.kind {
                SecretKind::Rsa => {
                    s.size.get_or_insert(3072);
                }
                SecretKind::Certificate if s.certificate_key_type() == Some(KeyType::Rsa) => {
                    s.size.get_or_insert(3072);
                }
                SecretKind::UserDefined => {
                    s.value_type.get_or_insert(UserValueType::Plain);
                }
                _ => {}
            }
        }
        if !self.recovery_keys.is_empty() && self.recovery_threshold.is_none() {
            self.recovery_threshold = Some(self.recovery_keys.len() as u32);
        }
    }

    /// The canonical JSON bytes (see the crate docs for the exact rule).
    pub fn canonical_json(&self) -> Vec<u8> {
        // Serialising these types to a Value cannot fail: every map key is a string and there
        // are no floats.
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let mut out = Vec::new();
        write_canonical(&value, &mut out);
        out
    }

    /// SHA-256 of [`Manifest::canonical_json`]: what clients pin.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_json()).into()
    }

    /// [`Manifest::hash`] in lower-case hex.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash())
    }

    /// The JSON Schema of the manifest (draft 2020-12), as published by `coffer manifest schema`.
    pub fn json_schema() -> serde_json::Value {
        let schema = schemars::schema_for!(Manifest);
        serde_json::to_value(&schema).unwrap_or(serde_json::Value::Null)
    }

    /// The placeholders a workload's parameters use, so the Coordinator knows which secrets to
    /// produce for an activation.
    pub fn referenced_targets(&self, workload: &str) -> Result<BTreeSet<Target>, Error> {
        let w = self
            .workloads
            .get(workload)
            .ok_or_else(|| Error::UnknownWorkload(workload.into()))?;
        let p = &w.parameters;
        let templates = p
            .files
            .values()
            .map(|f| &f.content)
            .chain(p.env.values())
            .chain(p.argv.iter().flatten())
            .chain(p.image_key.iter());
        Ok(templates
            .flat_map(|t| t.references().map(|r| r.target.clone()))
            .collect())
    }

    /// Renders a workload's parameters with values from `source` (Coordinator only, after the
    /// evidence matched). Env and argv are UTF-8 by construction (no `.raw` there; `.text` is
    /// checked when rendered).
    pub fn render_workload(
        &self,
        workload: &str,
        source: &dyn SecretSource,
    ) -> Result<RenderedParameters, Error> {
        let w = self
            .workloads
            .get(workload)
            .ok_or_else(|| Error::UnknownWorkload(workload.into()))?;
        let p = &w.parameters;
        let mut files = Vec::with_capacity(p.files.len());
        for (path, spec) in &p.files {
            files.push(RenderedFile {
                path: path.clone(),
                content: render(&spec.content, source)?,
                mode: spec.mode.0,
            });
        }
        let mut env = BTreeMap::new();
        for (k, v) in &p.env {
            env.insert(k.clone(), render(v, source)?);
        }
        let argv = match &p.argv {
            None => None,
            Some(a) => Some(
                a.iter()
                    .map(|t| render(t, source))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let image_key = p
            .image_key
            .as_ref()
            .map(|t| render(t, source))
            .transpose()?;
        Ok(RenderedParameters {
            files,
            env,
            argv,
            image_key,
            host_env: p.host_env.clone(),
        })
    }

    /// The user whose certificate (DER) is `der`, if any. Certificates are public, so a plain
    /// comparison is fine.
    pub fn user_for_certificate(&self, der: &[u8]) -> Option<&str> {
        self.users
            .iter()
            .find(|(_, u)| certificate_der(&u.certificate).is_ok_and(|d| d == der))
            .map(|(n, _)| n.as_str())
    }

    /// Whether `user` holds a role that allows `action` on `resource` (named `name` for
    /// secrets and packages; `None` for manifest and audit). Unknown users may nothing.
    pub fn user_may(
        &self,
        user: &str,
        resource: ResourceKind,
        name: Option<&str>,
        action: Action,
    ) -> bool {
        let Some(u) = self.users.get(user) else {
            return false;
        };
        u.roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .any(|role| {
                role.resource == resource
                    && role.actions.contains(&action)
                    && match (resource, name) {
                        (ResourceKind::Manifest | ResourceKind::Audit, _) => true,
                        (_, Some(n)) => role.names.iter().any(|x| x == "*" || x == n),
                        (_, None) => false,
                    }
            })
    }

    /// The users whose roles allow `action` on `resource` (`name` as in [`Manifest::user_may`]),
    /// sorted; for messages that say who can act.
    pub fn users_allowed(
        &self,
        resource: ResourceKind,
        name: Option<&str>,
        action: Action,
    ) -> Vec<&str> {
        self.users
            .keys()
            .filter(|u| self.user_may(u, resource, name, action))
            .map(String::as_str)
            .collect()
    }

    /// Checks a value a user wants to set for the user-defined secret `name`.
    pub fn check_user_value(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        let spec = self
            .secrets
            .get(name)
            .ok_or_else(|| Error::UnknownSecret(name.into()))?;
        let refuse = |reason: String| {
            Err(Error::UserValue {
                secret: name.into(),
                reason,
            })
        };
        match spec.user_value_type() {
            None => refuse(format!(
                "it is a generated {} secret, not user-defined",
                spec.kind.as_str()
            )),
            Some(UserValueType::Plain) if value.len() > MAX_USER_VALUE_BYTES => refuse(format!(
                "{} bytes is more than {MAX_USER_VALUE_BYTES}",
                value.len()
            )),
            Some(UserValueType::Plain) => Ok(()),
            Some(UserValueType::Symmetric) => {
                let bits = spec.size.unwrap_or(0) as usize;
                if value.len() * 8 == bits {
                    Ok(())
                } else {
                    refuse(format!(
                        "expected exactly {} bytes ({bits} bits), got {}",
                        bits / 8,
                        value.len()
                    ))
                }
            }
        }
    }

    /// Compares `old` and `new` (both validated): what an update changes, or why it can never
    /// be applied. Who may apply it is the Coordinator's decision (see [`UpdateSummary`]).
    pub fn check_update(old: &Manifest, new: &Manifest) -> Result<UpdateSummary, Error> {
        update::check_update(old, new)
    }
}

/// DNS names only Coffer's own services carry. Certificates issued from a manifest (workload
/// SANs, certificate secrets) chain to the same root CA as the Coordinator's and the admission
/// webhook's, so a manifest that could name them would let a workload impersonate either.
pub const RESERVED_NAMES: &[&str] = &["coffer-coordinator", "coffer-webhook"];

/// Why a certificate name is reserved (see [`RESERVED_NAMES`]), if it is: one of the names, a
/// name under them (`coffer-webhook.coffer.svc`), or a wildcard over Kubernetes service names
/// (`*.coffer.svc` covers the webhook's `coffer-webhook.coffer.svc`). The Coordinator's own
/// name has a single label, which no wildcard matches.
pub fn reserved_name(name: &str) -> Option<&'static str> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    if let Some(domain) = lower.strip_prefix("*.") {
        return domain.split('.').any(|l| l == "svc").then_some(
            "a wildcard over Kubernetes service names covers the admission webhook's name",
        );
    }
    RESERVED_NAMES
        .iter()
        .any(|r| lower == *r || lower.starts_with(&format!("{r}.")))
        .then_some("it is the name of the Coordinator or of the admission webhook")
}

/// Harness logic shared by the fuzz target and the tests (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    use crate::template::Target;
    use crate::{Manifest, SecretSource, SecretValue, SourceError};

    struct Fixed;

    impl SecretSource for Fixed {
        fn resolve(&self, target: &Target) -> Result<SecretValue, SourceError> {
            match target {
                Target::WorkloadChain => {
                    Ok(SecretValue::der_chain(vec![vec![0x30, 0], vec![0x30, 0]]))
                }
                _ => Ok(SecretValue::bytes(vec![0x41; 32])),
            }
        }
    }

    /// Parses `data` and checks the invariants: errors are non-empty and `$`-rooted; a valid
    /// manifest's canonical JSON re-parses to the same canonical bytes and hash; rendering
    /// every workload returns (Ok or Err) without panicking. Panics if an invariant breaks.
    pub fn check_parse(data: &[u8]) {
        match Manifest::parse(data) {
            Err(errs) => {
                assert!(!errs.is_empty(), "empty error list");
                for e in errs.errors() {
                    assert!(e.path.starts_with('$'), "path {:?}", e.path);
                }
                let _ = errs.to_string();
            }
            Ok(m) => {
                let canon = m.canonical_json();
                let again = match Manifest::parse(&canon) {
                    Ok(a) => a,
                    Err(e) => panic!("canonical form does not re-validate: {e}"),
                };
                assert_eq!(
                    again.canonical_json(),
                    canon,
                    "canonical form is not a fixed point"
                );
                assert_eq!(again.hash(), m.hash());
                for name in m.workloads.keys() {
                    let _ = m.render_workload(name, &Fixed);
                }
            }
        }
    }
}

/// One rendered file.
#[derive(Debug, Clone)]
pub struct RenderedFile {
    /// Absolute path.
    pub path: String,
    /// Content (Debug shows only the length).
    pub content: Rendered,
    /// Unix mode bits.
    pub mode: u32,
}

/// A workload's parameters with secrets filled in. Debug shows no values.
#[derive(Debug, Clone)]
pub struct RenderedParameters {
    /// Files, sorted by path.
    pub files: Vec<RenderedFile>,
    /// Environment variables.
    pub env: BTreeMap<String, Rendered>,
    /// Replacement argv.
    pub argv: Option<Vec<Rendered>>,
    /// Image key (hex text).
    pub image_key: Option<Rendered>,
    /// Host variables the app may still receive.
    pub host_env: Vec<String>,
}

fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                write_canonical(val, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}
