//! Semantic validation: every check, every problem reported with its path and a hint.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::error::ValidationError;
use crate::model::{
    Action, KeyType, Manifest, Package, ResourceKind, SecretKind, SecretSpec, Tee, UserValueType,
    KNOWN_TCB_STATUSES,
};
use crate::template::{Encoding, Part, SecretField, Target, Template};

/// Appends `.key` or `["key"]` to a path.
pub(crate) fn key_path(base: &str, key: &str) -> String {
    let ident = !key.is_empty()
        && key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ident {
        format!("{base}.{key}")
    } else {
        // serde_json escapes quotes and control characters; a String always serialises.
        format!("{base}[{}]", serde_json::to_string(key).unwrap_or_default())
    }
}

/// Names of packages, workloads, secrets, roles and recovery keys: they appear in templates
/// (dot-separated), URLs and logs.
fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// User names may also be e-mail-like.
fn valid_user_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b))
}

const NAME_HINT: &str =
    "names are 1-64 characters: letters, digits, '_' and '-', starting with a letter or digit";

/// Where a template is used: decides which encodings are allowed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    File,
    Env,
    Argv,
}

struct Checker<'a> {
    m: &'a Manifest,
    errors: Vec<ValidationError>,
    /// Loading a stored manifest: the rules for new manifests only (a TDX package pinning only
    /// MRTD, refused since 2026-12) are skipped.
    stored: bool,
}

impl Checker<'_> {
    fn err(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let hint = hint.into();
        let mut e = ValidationError::new(path, message);
        if !hint.is_empty() {
            e = e.hint(hint);
        }
        self.errors.push(e);
    }

    fn hex_field(&mut self, path: &str, value: &Option<String>, hex_len: usize, what: &str) {
        let Some(v) = value else { return };
        if v.len() != hex_len {
            self.err(
                path,
                format!("{what} must be {hex_len} hex digits ({} bytes), got {} characters", hex_len / 2, v.len()),
                format!("copy the {what} printed by `coffer convert` or the quote, without 0x or spaces"),
            );
        } else if !v.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.err(path, format!("{what} is not hex"), "use only 0-9 and a-f");
        }
    }

    fn snp_package(&mut self, base: &str, p: &Package) {
        let f = |field: &str| format!("{base}.{field}");
        let intel = sgx_fields(p).into_iter().chain(tdx_fields(p)).chain([(
            "min_tcb_evaluation_data_number",
            p.min_tcb_evaluation_data_number.is_some(),
        )]);
        for (field, present) in intel {
            if present {
                self.err(
                    f(field),
                    format!("{field} is an Intel field but the package is SEV-SNP"),
                    "remove it; SEV-SNP values go under \"snp\"",
                );
            }
        }
        if p.accepted_tcb_statuses != ["UpToDate"] {
            self.err(
                f("accepted_tcb_statuses"),
                "accepted_tcb_statuses are Intel's TCB statuses; SEV-SNP has none",
                "remove it and set snp.min_reported_tcb to the lowest TCB you accept",
            );
        }
        let Some(snp) = &p.snp else {
            self.err(
                f("snp"),
                "SEV-SNP package without \"snp\"",
                "give snp.measurement (coffer measure snp) with snp.host_data, or snp.id_key_digest",
            );
            return;
        };
        let f = |field: &str| format!("{base}.snp.{field}");
        self.hex_field(&f("measurement"), &snp.measurement, 96, "MEASUREMENT");
        self.hex_field(&f("host_data"), &snp.host_data, 64, "HOST_DATA");
        self.hex_field(&f("id_key_digest"), &snp.id_key_digest, 96, "ID key digest");
        self.hex_field(
            &f("author_key_digest"),
            &snp.author_key_digest,
            96,
            "author key digest",
        );
        let pinned =
            (snp.measurement.is_some() && snp.host_data.is_some()) || snp.id_key_digest.is_some();
        if !pinned && !self.stored {
            self.err(
                format!("{base}.snp"),
                "this SEV-SNP package does not pin a workload: MEASUREMENT alone covers the \
                 firmware (and the kernel only with a hashes table), so any guest booted the same \
                 way, whatever container it runs, would activate as this workload",
                "pin measurement with host_data (the digest of the guest's policy or initdata \
                 that Kata and Contrast pass at launch), or id_key_digest; and image_measurement \
                 to bind the container image",
            );
        }
        if let Some(abi) = &snp.min_abi {
            if parse_abi(abi).is_none() {
                self.err(
                    f("min_abi"),
                    format!("min_abi {abi:?} is not MAJOR.MINOR"),
                    "write it like \"1.51\" (each part 0..255)",
                );
            }
        }
        if snp.vmpl > 3 {
            self.err(
                f("vmpl"),
                format!("VMPL {} does not exist (0..3)", snp.vmpl),
                "use 0 for a guest without an SVSM",
            );
        }
    }

    fn package(&mut self, name: &str, p: &Package) {
        let base = key_path("$.packages", name);
        let f = |field: &str| format!("{base}.{field}");
        if p.tee != Tee::Snp && p.snp.is_some() {
            self.err(
                f("snp"),
                format!("snp is for SEV-SNP packages but the package is {}", p.tee),
                "remove it, or set \"tee\": \"snp\"",
            );
        }
        match p.tee {
            Tee::Sgx => {
                for (field, present) in tdx_fields(p) {
                    if present {
                        self.err(
                            f(field),
                            format!("{field} is a TDX field but the package is SGX"),
                            "remove it, or set \"tee\": \"tdx\"",
                        );
                    }
                }
                self.hex_field(&f("mrenclave"), &p.mrenclave, 64, "MRENCLAVE");
                self.hex_field(&f("mrsigner"), &p.mrsigner, 64, "MRSIGNER");
                for (i, d) in p.secret_dirs.iter().flatten().enumerate() {
                    let canonical = d.starts_with('/')
                        && d.len() > 1
                        && !d.ends_with('/')
                        && !d
                            .split('/')
                            .skip(1)
                            .any(|c| c.is_empty() || c == "." || c == "..");
                    if !canonical || d == "/coffer" || d.starts_with("/coffer/") {
                        self.err(
                            format!("{}[{i}]", f("secret_dirs")),
                            format!("secret directory {d:?} is not a normalised absolute path outside /coffer"),
                            "copy the secret_dirs `coffer convert --tee sgx` printed",
                        );
                    }
                }
                if p.mrenclave.is_none() && p.mrsigner.is_none() {
                    self.err(
                        base.clone(),
                        "SGX package pins no measurement",
                        "give \"mrenclave\", or \"mrsigner\" with \"isv_prod_id\" and \"isv_svn\"",
                    );
                }
                if p.mrsigner.is_some() {
                    if p.isv_prod_id.is_none() {
                        self.err(
                            f("isv_prod_id"),
                            "isv_prod_id is required with mrsigner",
                            "a signer may sign several products; name the one you trust",
                        );
                    }
                    if p.isv_svn.is_none() {
                        self.err(
                            f("isv_svn"),
                            "isv_svn (minimum security version) is required with mrsigner",
                            "set the lowest ISVSVN you accept, e.g. 1",
                        );
                    }
                }
            }
            Tee::Tdx => {
                for (field, present) in sgx_fields(p) {
                    if present {
                        self.err(
                            f(field),
                            format!("{field} is an SGX field but the package is TDX"),
                            "remove it, or set \"tee\": \"sgx\"",
                        );
                    }
                }
                if p.mrtd.is_none() {
                    self.err(
                        f("mrtd"),
                        "TDX package needs mrtd",
                        "give the MRTD (96 hex digits) of the TD image",
                    );
                }
                self.hex_field(&f("mrtd"), &p.mrtd, 96, "MRTD");
                self.hex_field(&f("rtmr0"), &p.rtmr0, 96, "RTMR0");
                self.hex_field(&f("rtmr1"), &p.rtmr1, 96, "RTMR1");
                self.hex_field(&f("rtmr2"), &p.rtmr2, 96, "RTMR2");
                self.hex_field(&f("rtmr3"), &p.rtmr3, 96, "RTMR3");
                self.hex_field(&f("mrconfigid"), &p.mrconfigid, 96, "MRCONFIGID");
                self.hex_field(&f("mrservicetd"), &p.mrservicetd, 96, "MRSERVICETD");
                let boot = p.rtmr0.is_some() && p.rtmr1.is_some() && p.rtmr2.is_some();
                if p.mrtd.is_some() && !boot && p.mrconfigid.is_none() && !self.stored {
                    self.err(
                        f("mrtd"),
                        "this TDX package pins only the firmware (MRTD): any TD booted from the \
                         same TDVF, whatever kernel, initrd or container it runs, would activate \
                         as this workload",
                        "also pin rtmr0, rtmr1 and rtmr2 (the TD's configuration, kernel and \
                         command line, as Kata boots them), or mrconfigid; and image_measurement \
                         to bind the container image",
                    );
                }
            }
            Tee::Snp => self.snp_package(&base, p),
        }
        self.hex_field(
            &f("image_measurement"),
            &p.image_measurement,
            64,
            "image measurement",
        );
        if p.accepted_tcb_statuses.is_empty() {
            self.err(
                f("accepted_tcb_statuses"),
                "no TCB status accepted: nothing could ever activate",
                "use [\"UpToDate\"] or leave the field out",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, s) in p.accepted_tcb_statuses.iter().enumerate() {
            let path = format!("{}[{i}]", f("accepted_tcb_statuses"));
            if s == "Revoked" {
                self.err(
                    path,
                    "TCB status Revoked can never be accepted",
                    "a revoked platform's keys are compromised; remove it",
                );
            } else if !KNOWN_TCB_STATUSES.contains(&s.as_str()) {
                self.err(
                    path,
                    format!("unknown TCB status {s:?}"),
                    format!(
                        "use Intel's spelling: {}",
                        KNOWN_TCB_STATUSES[..8].join(", ")
                    ),
                );
            } else if !seen.insert(s) {
                self.err(
                    path,
                    format!("TCB status {s} listed twice"),
                    "list each status once",
                );
            }
        }
    }

    fn template(&mut self, path: &str, t: &Template, place: Place) {
        let Some(parts) = t.parts() else {
            let e = t.syntax_error().unwrap_or_default().to_string();
            self.err(
                path,
                format!("bad placeholder: {e}"),
                "see the placeholder grammar: {{ secrets.NAME.FIELD.ENCODING }}",
            );
            return;
        };
        for part in parts {
            match part {
                Part::Literal(text) => {
                    if place != Place::File && text.contains('\0') {
                        self.err(
                            path,
                            "contains a NUL character",
                            "env values and arguments cannot hold NUL",
                        );
                    }
                }
                Part::Placeholder(r) => {
                    if r.encoding == Encoding::Raw && place != Place::File {
                        self.err(
                            path,
                            format!("{{{{ {r} }}}}: .raw is allowed only in files"),
                            "use .hex, .base64 or .text in env and argv",
                        );
                    }
                    self.reference(path, &r.target, r.encoding, &r.to_string());
                }
            }
        }
    }

    fn reference(&mut self, path: &str, target: &Target, enc: Encoding, shown: &str) {
        let der = [
            Encoding::Pem,
            Encoding::Hex,
            Encoding::Base64,
            Encoding::Raw,
        ];
        let allowed: &[Encoding] = match target {
            Target::WorkloadKey => {
                self.err(
                    path,
                    format!("{{{{ {shown} }}}}: the workload's private key is generated inside the TEE and never reaches the Coordinator"),
                    "the launcher holds the key; use coffer.workload.cert / coffer.workload.chain for the certificate",
                );
                return;
            }
            Target::RootCa | Target::WorkloadCert => &der,
            Target::WorkloadChain => &[Encoding::Pem],
            Target::Secret { name, field } => {
                let Some(spec) = self.m.secrets.get(name) else {
                    let declared: Vec<&str> = self.m.secrets.keys().map(String::as_str).collect();
                    self.err(
                        path,
                        format!("{{{{ {shown} }}}}: secret {name:?} is not declared"),
                        if declared.is_empty() {
                            "declare it under \"secrets\"".to_string()
                        } else {
                            format!(
                                "declare it under \"secrets\" (declared: {})",
                                declared.join(", ")
                            )
                        },
                    );
                    return;
                };
                let fields = secret_fields(spec);
                if !fields.contains(field) {
                    let list: Vec<&str> = fields.iter().map(|f| f.as_str()).collect();
                    self.err(
                        path,
                        format!(
                            "{{{{ {shown} }}}}: a {} secret has no field {:?}",
                            kind_label(spec),
                            field.as_str()
                        ),
                        format!("use {}", list.join(" or ")),
                    );
                    return;
                }
                match field {
                    SecretField::Key => &[Encoding::Hex, Encoding::Base64, Encoding::Raw],
                    SecretField::Value => &[
                        Encoding::Text,
                        Encoding::Hex,
                        Encoding::Base64,
                        Encoding::Raw,
                    ],
                    SecretField::Private | SecretField::Public | SecretField::Cert => &der,
                }
            }
        };
        if !allowed.contains(&enc) {
            let list: Vec<&str> = allowed.iter().map(|e| e.as_str()).collect();
            self.err(
                path,
                format!(
                    "{{{{ {shown} }}}}: encoding .{} does not apply here",
                    enc.as_str()
                ),
                format!("use .{}", list.join(", .")),
            );
        }
    }

    fn image_key(&mut self, path: &str, t: &Template) {
        let Some(parts) = t.parts() else {
            self.template(path, t, Place::Env);
            return;
        };
        let single = match parts {
            [Part::Placeholder(r)] => Some(r),
            _ => None,
        };
        let ok = single.and_then(|r| match (&r.target, r.encoding) {
            (
                Target::Secret {
                    name,
                    field: SecretField::Key,
                },
                Encoding::Hex,
            ) => Some(name),
            _ => None,
        });
        let Some(name) = ok else {
            self.err(
                path,
                "image_key must be exactly {{ secrets.NAME.key.hex }}",
                "name a 256-bit symmetric secret and nothing else",
            );
            return;
        };
        match self.m.secrets.get(name) {
            None => self.err(
                path,
                format!("secret {name:?} is not declared"),
                "declare a symmetric secret of size 256",
            ),
            Some(s) => {
                let symmetric = s.kind == SecretKind::Symmetric
                    || (s.kind == SecretKind::UserDefined
                        && s.user_value_type() == Some(UserValueType::Symmetric));
                if !symmetric || s.size != Some(256) {
                    self.err(
                        path,
                        format!("secret {name:?} is not a 256-bit symmetric key"),
                        "image keys are AES-256 keys: \"type\": \"symmetric\", \"size\": 256",
                    );
                }
            }
        }
    }

    fn secret(&mut self, name: &str, s: &SecretSpec) {
        let base = key_path("$.secrets", name);
        let f = |field: &str| format!("{base}.{field}");
        if s.kind != SecretKind::Certificate && s.certificate.is_some() {
            self.err(
                f("certificate"),
                format!(
                    "\"certificate\" applies only to certificate secrets, not {}",
                    s.kind.as_str()
                ),
                "remove it, or set \"type\": \"certificate\"",
            );
        }
        if s.kind != SecretKind::UserDefined && s.value_type.is_some() {
            self.err(
                f("value_type"),
                "\"value_type\" applies only to user-defined secrets",
                "remove it",
            );
        }
        match s.kind {
            SecretKind::Symmetric => match s.size {
                None => self.err(
                    f("size"),
                    "symmetric secret needs a size in bits",
                    "e.g. \"size\": 256",
                ),
                Some(n) => self.symmetric_size(&f("size"), n),
            },
            SecretKind::EcdsaP256 => {
                if s.size.is_some() {
                    self.err(
                        f("size"),
                        "ecdsa-p256 keys have a fixed size",
                        "remove \"size\"",
                    );
                }
            }
            SecretKind::Rsa => self.rsa_size(&f("size"), s.size),
            SecretKind::Certificate => match &s.certificate {
                None => self.err(
                    f("certificate"),
                    "certificate secret needs a \"certificate\" block",
                    "give at least {\"subject\": {\"common_name\": \"...\"}}",
                ),
                Some(c) => {
                    let cb = f("certificate");
                    if c.key_type == KeyType::Rsa {
                        self.rsa_size(&f("size"), s.size);
                    } else if s.size.is_some() {
                        self.err(
                            f("size"),
                            "size applies only to RSA certificate keys",
                            "remove \"size\" or set \"key_type\": \"rsa\"",
                        );
                    }
                    let cn = &c.subject.common_name;
                    if cn.is_empty() || cn.chars().count() > 64 {
                        self.err(
                            format!("{cb}.subject.common_name"),
                            "common_name must be 1-64 characters",
                            "e.g. the service's DNS name",
                        );
                    }
                    for (field, v) in [
                        ("organization", &c.subject.organization),
                        ("organizational_unit", &c.subject.organizational_unit),
                    ] {
                        if let Some(v) = v {
                            if v.is_empty() || v.chars().count() > 64 {
                                self.err(
                                    format!("{cb}.subject.{field}"),
                                    format!("{field} must be 1-64 characters"),
                                    "shorten it",
                                );
                            }
                        }
                    }
                    if let Some(cc) = &c.subject.country {
                        if cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_uppercase()) {
                            self.err(
                                format!("{cb}.subject.country"),
                                format!("country {cc:?} is not a two-letter code"),
                                "e.g. \"DE\"",
                            );
                        }
                    }
                    if !(1..=3650).contains(&c.validity_days) {
                        self.err(
                            format!("{cb}.validity_days"),
                            format!("validity_days {} is outside 1..=3650", c.validity_days),
                            "certificates are renewed by the Coordinator; 90 or 365 are common",
                        );
                    }
                    self.sans(&format!("{cb}.sans"), &c.sans);
                }
            },
            SecretKind::UserDefined => {
                if s.shared == Some(false) {
                    self.err(
                        f("shared"),
                        "user-defined secrets are always shared",
                        "remove \"shared\"",
                    );
                }
                match (s.value_type.unwrap_or_default(), s.size) {
                    (UserValueType::Symmetric, None) => self.err(
                        f("size"),
                        "a symmetric user-defined secret needs a size in bits",
                        "e.g. \"size\": 256",
                    ),
                    (UserValueType::Symmetric, Some(n)) => self.symmetric_size(&f("size"), n),
                    (UserValueType::Plain, Some(_)) => self.err(
                        f("size"),
                        "size applies only to symmetric values",
                        "remove \"size\" or set \"value_type\": \"symmetric\"",
                    ),
                    (UserValueType::Plain, None) => {}
                }
            }
        }
    }

    fn symmetric_size(&mut self, path: &str, n: u32) {
        if n % 8 != 0 || !(128..=4096).contains(&n) {
            self.err(
                path,
                format!("size {n} bits is not a multiple of 8 in 128..=4096"),
                "AES-256 keys are 256 bits",
            );
        }
    }

    fn rsa_size(&mut self, path: &str, n: Option<u32>) {
        if let Some(n) = n {
            if ![2048, 3072, 4096].contains(&n) {
                self.err(
                    path,
                    format!("RSA size {n} is not 2048, 3072 or 4096"),
                    "3072 is the default",
                );
            }
        }
    }

    fn sans(&mut self, base: &str, sans: &[String]) {
        let mut seen = BTreeSet::new();
        for (i, s) in sans.iter().enumerate() {
            let path = format!("{base}[{i}]");
            if !(s.parse::<IpAddr>().is_ok() || valid_dns_name(s)) {
                self.err(
                    path.clone(),
                    format!("{s:?} is neither a DNS name nor an IP address"),
                    "e.g. \"db.default.svc\" or \"10.0.0.7\"",
                );
            }
            if let Some(why) = crate::reserved_name(s) {
                self.err(
                    path.clone(),
                    format!("{s:?} is reserved: {why}"),
                    "certificates issued from the manifest share the Coordinator's root CA; name \
                     the workload's own services, one by one",
                );
            }
            if !seen.insert(s) {
                self.err(path, format!("{s:?} listed twice"), "list each name once");
            }
        }
    }

    fn file_path(&mut self, path: &str, p: &str) {
        let bad = if !p.starts_with('/') {
            Some("is not absolute")
        } else if p.len() > 4096 {
            Some("is longer than 4096 bytes")
        } else if p.contains('\0') {
            Some("contains NUL")
        } else if p.ends_with('/') {
            Some("ends with '/' (a directory)")
        } else if p
            .split('/')
            .skip(1)
            .any(|c| c == ".." || c == "." || c.is_empty())
        {
            Some("contains '..', '.' or an empty component")
        } else if p == "/coffer" || p.starts_with("/coffer/") {
            Some("is under /coffer, which belongs to the launcher")
        } else {
            None
        };
        if let Some(why) = bad {
            self.err(
                path,
                format!("file path {p:?} {why}"),
                "use a normalised absolute path such as /etc/app/config.toml",
            );
        }
    }

    fn run(&mut self) {
        let m = self.m;
        for (kind, names) in [
            ("packages", m.packages.keys().collect::<Vec<_>>()),
            ("workloads", m.workloads.keys().collect()),
            ("secrets", m.secrets.keys().collect()),
            ("roles", m.roles.keys().collect()),
            ("recovery_keys", m.recovery_keys.keys().collect()),
        ] {
            for n in names {
                if !valid_name(n) {
                    self.err(
                        key_path(&format!("$.{kind}"), n),
                        format!("invalid name {n:?}"),
                        NAME_HINT,
                    );
                }
            }
        }
        for n in m.users.keys() {
            if !valid_user_name(n) {
                self.err(
                    key_path("$.users", n),
                    format!("invalid user name {n:?}"),
                    "user names are 1-128 characters: letters, digits, '_', '-', '.', '@'",
                );
            }
        }

        if m.packages.is_empty() {
            self.err(
                "$.packages",
                "no packages declared",
                "declare the measurement of at least one image",
            );
        }
        for (name, p) in &m.packages {
            self.package(name, p);
        }
        for (name, s) in &m.secrets {
            self.secret(name, s);
        }

        if m.workloads.is_empty() {
            self.err(
                "$.workloads",
                "no workloads declared",
                "declare at least one workload that uses a package",
            );
        }
        for (name, w) in &m.workloads {
            let base = key_path("$.workloads", name);
            if !m.packages.contains_key(&w.package) {
                let known: Vec<&str> = m.packages.keys().map(String::as_str).collect();
                self.err(
                    format!("{base}.package"),
                    format!("unknown package {:?}", w.package),
                    format!("declared packages: {}", known.join(", ")),
                );
            }
            if w.max_activations == Some(0) {
                self.err(
                    format!("{base}.max_activations"),
                    "max_activations 0 means the workload can never start",
                    "leave it out for no limit, or give at least 1",
                );
            }
            self.sans(&format!("{base}.sans"), &w.sans);
            let pb = format!("{base}.parameters");
            let secret_dirs = m
                .packages
                .get(&w.package)
                .and_then(|p| p.secret_dirs.as_ref());
            for (fp, spec) in &w.parameters.files {
                let path = key_path(&format!("{pb}.files"), fp);
                self.file_path(&path, fp);
                if let Some(dirs) = secret_dirs {
                    let inside = dirs.iter().any(|d| {
                        fp.strip_prefix(d.as_str())
                            .is_some_and(|rest| rest.starts_with('/'))
                    });
                    if !inside {
                        self.err(
                            path.clone(),
                            format!(
                                "file {fp:?} is outside the enclave's secret directories ({}): \
                                 inside SGX it would reach the host's disk, so the launcher \
                                 refuses it",
                                dirs.join(", ")
                            ),
                            "target a file in one of them, or convert the image again with \
                             --secret-dir for its directory and list it in secret_dirs",
                        );
                    }
                }
                self.template(&format!("{path}.content"), &spec.content, Place::File);
            }
            for (k, v) in &w.parameters.env {
                let path = key_path(&format!("{pb}.env"), k);
                let ok_name = k
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok_name {
                    self.err(
                        path.clone(),
                        format!("invalid environment variable name {k:?}"),
                        "use letters, digits and '_', not starting with a digit",
                    );
                } else if k.starts_with("COFFER_") {
                    self.err(
                        path.clone(),
                        format!("{k} uses the reserved COFFER_ prefix"),
                        "COFFER_ variables configure the launcher; pick another name",
                    );
                }
                self.template(&path, v, Place::Env);
            }
            let mut seen = BTreeSet::new();
            for (i, k) in w.parameters.host_env.iter().enumerate() {
                let path = format!("{pb}.host_env[{i}]");
                let ok_name = k
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok_name {
                    self.err(
                        path,
                        format!("invalid environment variable name {k:?}"),
                        "use letters, digits and '_', not starting with a digit",
                    );
                } else if k.starts_with("COFFER_") || k.starts_with("LD_") {
                    self.err(
                        path,
                        format!("{k} may not come from the host"),
                        "COFFER_ variables configure the launcher and LD_ ones the loader; the host never sets them for the app",
                    );
                } else if !seen.insert(k) {
                    self.err(path, format!("{k:?} listed twice"), "list each name once");
                }
            }
            if let Some(argv) = &w.parameters.argv {
                if argv.is_empty() {
                    self.err(
                        format!("{pb}.argv"),
                        "argv is empty",
                        "leave it out to keep the image's command, or give the program first",
                    );
                }
                for (i, a) in argv.iter().enumerate() {
                    self.template(&format!("{pb}.argv[{i}]"), a, Place::Argv);
                }
            }
            if let Some(k) = &w.parameters.image_key {
                self.image_key(&format!("{pb}.image_key"), k);
            }
        }

        for (name, u) in &m.users {
            let base = key_path("$.users", name);
            if let Err(e) = crate::keys::certificate_der(&u.certificate) {
                self.err(format!("{base}.certificate"), format!("bad certificate PEM: {e}"), "paste one PEM certificate (-----BEGIN CERTIFICATE-----), with \\n line breaks in JSON");
            }
            let mut seen = BTreeSet::new();
            for (i, r) in u.roles.iter().enumerate() {
                let path = format!("{base}.roles[{i}]");
                if !m.roles.contains_key(r) {
                    let known: Vec<&str> = m.roles.keys().map(String::as_str).collect();
                    self.err(
                        path,
                        format!("unknown role {r:?}"),
                        if known.is_empty() {
                            "declare it under \"roles\"".to_string()
                        } else {
                            format!("declared roles: {}", known.join(", "))
                        },
                    );
                } else if !seen.insert(r) {
                    self.err(
                        path,
                        format!("role {r:?} listed twice"),
                        "list each role once",
                    );
                }
            }
        }

        for (name, r) in &m.roles {
            let base = key_path("$.roles", name);
            if r.actions.is_empty() {
                self.err(
                    format!("{base}.actions"),
                    "role grants no action",
                    "list at least one action",
                );
            }
            let valid = r.resource.actions();
            let mut seen = BTreeSet::new();
            for (i, a) in r.actions.iter().enumerate() {
                let path = format!("{base}.actions[{i}]");
                if !valid.contains(a) {
                    let list: Vec<&str> = valid.iter().map(|a| a.as_str()).collect();
                    self.err(
                        path,
                        format!(
                            "action {:?} does not apply to {}",
                            a.as_str(),
                            r.resource.as_str()
                        ),
                        format!("{} allows: {}", r.resource.as_str(), list.join(", ")),
                    );
                } else if !seen.insert(a) {
                    self.err(
                        path,
                        format!("action {:?} listed twice", a.as_str()),
                        "list each action once",
                    );
                }
            }
            match r.resource {
                ResourceKind::Manifest | ResourceKind::Audit => {
                    if !r.names.is_empty() {
                        self.err(
                            format!("{base}.names"),
                            format!("{} roles take no names", r.resource.as_str()),
                            "remove \"names\"",
                        );
                    }
                }
                ResourceKind::Secrets | ResourceKind::Packages => {
                    if r.names.is_empty() {
                        self.err(
                            format!("{base}.names"),
                            format!(
                                "{} role names no {}",
                                r.resource.as_str(),
                                r.resource.as_str()
                            ),
                            "list the names, or [\"*\"] for all",
                        );
                    }
                    for (i, n) in r.names.iter().enumerate() {
                        let path = format!("{base}.names[{i}]");
                        if n == "*" {
                            continue;
                        }
                        if r.resource == ResourceKind::Packages {
                            if !m.packages.contains_key(n) {
                                self.err(
                                    path,
                                    format!("unknown package {n:?}"),
                                    "name a declared package or \"*\"",
                                );
                            }
                        } else {
                            match m.secrets.get(n) {
                                None => self.err(path, format!("unknown secret {n:?}"), "name a declared secret or \"*\""),
                                Some(s) if r.actions.contains(&Action::Write) && s.kind != SecretKind::UserDefined => self.err(
                                    path,
                                    format!("secret {n:?} is generated by the Coordinator and cannot be written"),
                                    "only user-defined secrets can be written; drop \"write\" or the name",
                                ),
                                Some(_) => {}
                            }
                        }
                    }
                }
            }
        }

        for (name, pem) in &m.recovery_keys {
            if let Err(e) = crate::keys::parse_recovery_key(pem) {
                self.err(
                    key_path("$.recovery_keys", name),
                    format!("bad recovery key: {e}"),
                    "give an RSA public key (2048 bits or more) as PEM: -----BEGIN PUBLIC KEY-----",
                );
            }
        }
        if let Some(k) = m.recovery_threshold {
            let n = m.recovery_keys.len();
            if n == 0 {
                self.err(
                    "$.recovery_threshold",
                    "recovery_threshold without recovery_keys",
                    "add recovery keys or remove the threshold",
                );
            } else if k == 0 || k as usize > n {
                self.err(
                    "$.recovery_threshold",
                    format!(
                        "recovery_threshold {k} is outside 1..={n} (the number of recovery keys)"
                    ),
                    "k must be at least 1 and at most the number of recovery keys",
                );
            }
        }

        let mut seen = BTreeSet::new();
        for (i, t) in m.tls.iter().enumerate() {
            let base = format!("$.tls[{i}]");
            for (field, w) in [("from", &t.from), ("to", &t.to)] {
                if !m.workloads.contains_key(w) {
                    self.err(
                        format!("{base}.{field}"),
                        format!("unknown workload {w:?}"),
                        "name a declared workload",
                    );
                }
            }
            if !seen.insert((&t.from, &t.to)) {
                self.err(
                    base,
                    format!("rule {} -> {} listed twice", t.from, t.to),
                    "list each rule once",
                );
            }
        }
    }
}

fn kind_label(s: &SecretSpec) -> String {
    match s.user_value_type() {
        Some(v) => format!(
            "user-defined ({})",
            if v == UserValueType::Plain {
                "plain"
            } else {
                "symmetric"
            }
        ),
        None => s.kind.as_str().to_string(),
    }
}

/// The fields a secret of this declaration has.
pub(crate) fn secret_fields(s: &SecretSpec) -> &'static [SecretField] {
    match s.kind {
        SecretKind::Symmetric => &[SecretField::Key],
        SecretKind::EcdsaP256 | SecretKind::Rsa => &[SecretField::Private, SecretField::Public],
        SecretKind::Certificate => &[SecretField::Cert, SecretField::Private, SecretField::Public],
        SecretKind::UserDefined => match s.value_type.unwrap_or_default() {
            UserValueType::Plain => &[SecretField::Value],
            UserValueType::Symmetric => &[SecretField::Key],
        },
    }
}

fn valid_dns_name(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Runs every check; returns all problems.
/// Every check. `stored`: the manifest was accepted before and is being loaded again; the
/// rules added since for new manifests ([`Checker::stored`]) are not applied, so a Coordinator
/// keeps serving the manifest it has after an upgrade.
pub(crate) fn validate(m: &Manifest, stored: bool) -> Vec<ValidationError> {
    let mut c = Checker {
        m,
        errors: Vec::new(),
        stored,
    };
    c.run();
    c.errors
}

/// The SGX-only fields of a package, each with whether it is given.
fn sgx_fields(p: &Package) -> [(&'static str, bool); 5] {
    [
        ("mrenclave", p.mrenclave.is_some()),
        ("mrsigner", p.mrsigner.is_some()),
        ("isv_prod_id", p.isv_prod_id.is_some()),
        ("isv_svn", p.isv_svn.is_some()),
        ("secret_dirs", p.secret_dirs.is_some()),
    ]
}

/// The TDX-only fields of a package, each with whether it is given.
fn tdx_fields(p: &Package) -> [(&'static str, bool); 7] {
    [
        ("mrtd", p.mrtd.is_some()),
        ("rtmr0", p.rtmr0.is_some()),
        ("rtmr1", p.rtmr1.is_some()),
        ("rtmr2", p.rtmr2.is_some()),
        ("rtmr3", p.rtmr3.is_some()),
        ("mrconfigid", p.mrconfigid.is_some()),
        ("mrservicetd", p.mrservicetd.is_some()),
    ]
}

/// `"MAJOR.MINOR"` (each 0..=255), as an SEV-SNP policy's minimum ABI.
pub(crate) fn parse_abi(s: &str) -> Option<(u8, u8)> {
    let (major, minor) = s.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}
