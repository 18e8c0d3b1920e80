//! Gramine: the manifest of a converted image, and the MRENCLAVE `gramine-sgx-sign` computes.
//!
//! [`render_manifest`] writes the final, signed form of the manifest (what Gramine calls
//! `*.manifest.sgx`): every trusted file already carries its SHA-256, so no tool needs to hash
//! files again, and everything is in one canonical order (trusted files and allowed files sorted
//! by path bytes, environment variables by name). Gramine's own signer lists trusted files in
//! whatever order it walks them, so one image could get a different MRENCLAVE on every build;
//! ours gives one.
//!
//! [`measure`] computes the MRENCLAVE of that manifest with a given Gramine `libpal.so`,
//! following the enclave layout of Gramine's signer (`python/graminelibos/sgx_sign.py`,
//! v1.x): see [`layout`]. [`build`] does render, measure and sign in one call.

pub mod layout;
pub mod pf;

use serde::Serialize;

use crate::error::{Error, Result};

pub use layout::{measure, GramineMeasurement, LayoutConstants};

/// Where the launcher lives in a converted image; it is the enclave's entrypoint.
pub const LAUNCHER_PATH: &str = "/coffer/launcher";

/// The key name of encrypted mounts: the launcher writes the key to
/// `/dev/attestation/keys/coffer_image` after activation, before the app runs.
pub const ENCRYPTED_KEY_NAME: &str = "coffer_image";

/// How an environment variable reaches the enclave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvValue {
    /// A fixed value, measured as part of the manifest.
    Value(String),
    /// Taken from the untrusted host at start (`{ passthrough = true }`): not measured, so only
    /// for variables the launcher treats as untrusted.
    Passthrough,
}

/// Everything the manifest of a converted image depends on. The image converter fills it from
/// the conversion; the result is a deterministic function of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GramineInput {
    /// Gramine's LibOS (`libsysdb.so`) inside the image: `(absolute path, SHA-256)`. It is the
    /// loader entrypoint (`loader.entrypoint.uri`), checked at start against
    /// `loader.entrypoint.sha256` (Gramine ≥ 1.6 manifest syntax).
    pub libos: (String, [u8; 32]),
    /// Arguments given to the launcher after its own path (`loader.argv` is
    /// `[LAUNCHER_PATH] ++ args`). Usually empty: the launcher takes the original
    /// entrypoint from `/coffer/workload.json`. Being fixed, `loader.argv` makes Gramine
    /// discard the host's command line (`pal/src/pal_main.c`), so a pod's `args:` never reach
    /// the enclave.
    pub args: Vec<String>,
    /// Environment: `(name, value)`; names must be `[A-Za-z_][A-Za-z0-9_]*` and unique.
    pub env: Vec<(String, EnvValue)>,
    /// Trusted files: `(absolute path, SHA-256)`. Duplicates with equal hashes are merged; a path
    /// listed with two different hashes is an error.
    pub trusted_files: Vec<(String, [u8; 32])>,
    /// Allowed (untrusted, not hashed) files: absolute paths; a directory is written with a
    /// trailing `/`, and a trailing `/*` or `/**` glob is taken as that directory. Other glob
    /// characters are refused (Gramine has no globs).
    pub allowed_files: Vec<String>,
    /// Directories mounted as in-enclave tmpfs (e.g. `/tmp`).
    pub tmpfs: Vec<String>,
    /// Files stored in Gramine's encrypted format ([`pf`]), each mounted
    /// `type = "encrypted"` at its own path with the key [`ENCRYPTED_KEY_NAME`].
    pub encrypted_files: Vec<String>,
    /// `sgx.enclave_size` in bytes: a power of two.
    pub enclave_size: u64,
    /// `sgx.max_threads`.
    pub max_threads: u32,
    /// `sgx.isvprodid`.
    pub isv_prod_id: u16,
    /// `sgx.isvsvn`.
    pub isv_svn: u16,
    /// `sgx.debug`: a debug enclave (never for production).
    pub debug: bool,
}

/// Writes `s` as a TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn bad(field: &'static str, reason: impl Into<String>) -> Error {
    Error::GramineInput {
        field,
        reason: reason.into(),
    }
}

/// Checks an absolute, normalised path without control characters.
fn check_path(field: &'static str, p: &str, dir_ok: bool) -> Result<()> {
    if !p.starts_with('/') {
        return Err(bad(field, format!("{p:?} is not an absolute path")));
    }
    if p.chars().any(|c| c.is_control()) {
        return Err(bad(field, format!("{p:?} contains a control character")));
    }
    let body = if dir_ok {
        p.strip_suffix('/').unwrap_or(p)
    } else {
        p
    };
    if body.len() > 1
        && body
            .split('/')
            .skip(1)
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(bad(
            field,
            format!("{p:?} is not normalised (empty, `.` or `..` component)"),
        ));
    }
    if !dir_ok && p.len() > 1 && p.ends_with('/') {
        return Err(bad(
            field,
            format!("{p:?} names a directory, a file is expected"),
        ));
    }
    Ok(())
}

/// `sgx.enclave_size` as Gramine writes it (`"1G"`, `"256M"` …).
pub fn format_size(size: u64) -> String {
    const K: u64 = 1024;
    if size != 0 && size % (K * K * K) == 0 {
        format!("{}G", size / (K * K * K))
    } else if size != 0 && size % (K * K) == 0 {
        format!("{}M", size / (K * K))
    } else if size != 0 && size % K == 0 {
        format!("{}K", size / K)
    } else {
        size.to_string()
    }
}

/// Renders the final Gramine manifest (`.manifest.sgx`) of a converted image, canonically:
/// equal inputs up to the order of their lists give byte-identical output.
pub fn render_manifest(input: &GramineInput) -> Result<String> {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;

    if !input.enclave_size.is_power_of_two() || input.enclave_size < 1 << 20 {
        return Err(bad(
            "enclave_size",
            format!(
                "{:#x} must be a power of two of at least 1 MiB",
                input.enclave_size
            ),
        ));
    }
    if input.max_threads == 0 || input.max_threads > 4096 {
        return Err(bad(
            "max_threads",
            format!("{} must be between 1 and 4096", input.max_threads),
        ));
    }
    check_path("libos", &input.libos.0, false)?;
    for a in &input.args {
        if a.contains('\0') {
            return Err(bad("args", "an argument contains NUL"));
        }
    }

    let mut env = BTreeMap::new();
    for (name, value) in &input.env {
        let mut cs = name.chars();
        let ok = cs
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(bad("env", format!("{name:?} is not a valid variable name")));
        }
        if let EnvValue::Value(v) = value {
            if v.contains('\0') {
                return Err(bad("env", format!("value of {name} contains NUL")));
            }
        }
        if env.insert(name.as_str(), value).is_some() {
            return Err(bad("env", format!("{name} is set twice")));
        }
    }

    let mut trusted: BTreeMap<&str, [u8; 32]> = BTreeMap::new();
    for (path, hash) in &input.trusted_files {
        check_path("trusted_files", path, false)?;
        if let Some(prev) = trusted.insert(path.as_str(), *hash) {
            if prev != *hash {
                return Err(bad(
                    "trusted_files",
                    format!("{path:?} is listed with two different SHA-256 values"),
                ));
            }
        }
    }

    let mut allowed = std::collections::BTreeSet::new();
    for g in &input.allowed_files {
        let p = if let Some(d) = g.strip_suffix("/**").or_else(|| g.strip_suffix("/*")) {
            format!("{d}/")
        } else {
            g.clone()
        };
        if p.contains(['*', '?', '[', ']', '{', '}']) {
            return Err(bad("allowed_files", format!("{g:?}: Gramine has no glob patterns; name a file or a directory (`/dir/` or `/dir/**`)")));
        }
        check_path("allowed_files", &p, true)?;
        if trusted.contains_key(p.as_str()) {
            return Err(bad(
                "allowed_files",
                format!("{p:?} is also a trusted file"),
            ));
        }
        allowed.insert(p);
    }
    let mut tmpfs = std::collections::BTreeSet::new();
    for t in &input.tmpfs {
        check_path("tmpfs", t, true)?;
        if t == "/" {
            return Err(bad("tmpfs", "the root cannot be a tmpfs"));
        }
        tmpfs.insert(t.trim_end_matches('/').to_string());
    }

    let mut encrypted = std::collections::BTreeSet::new();
    for e in &input.encrypted_files {
        check_path("encrypted_files", e, false)?;
        if trusted.contains_key(e.as_str())
            || allowed
                .iter()
                .any(|a| a == e || (a.ends_with('/') && e.starts_with(a.as_str())))
            || tmpfs.iter().any(|t| e.starts_with(&format!("{t}/")))
        {
            return Err(bad(
                "encrypted_files",
                format!("{e:?} is also trusted, allowed or under a tmpfs mount"),
            ));
        }
        encrypted.insert(e.clone());
    }

    let mut m = String::new();
    // Writing to a String cannot fail; `let _ =` keeps clippy quiet without unwrap.
    let _ = writeln!(m, "# Gramine manifest rendered by Coffer (canonical form; do not edit: MRENCLAVE covers every byte).");
    let _ = writeln!(m, "libos.entrypoint = {}", toml_str(LAUNCHER_PATH));
    let _ = writeln!(
        m,
        "loader.entrypoint.uri = {}",
        toml_str(&format!("file:{}", input.libos.0))
    );
    let _ = writeln!(
        m,
        "loader.entrypoint.sha256 = \"{}\"",
        hex::encode(input.libos.1)
    );
    let _ = writeln!(m, "loader.log_level = \"error\"");
    let argv: Vec<String> = std::iter::once(LAUNCHER_PATH.to_string())
        .chain(input.args.iter().cloned())
        .map(|a| toml_str(&a))
        .collect();
    let _ = writeln!(m, "loader.argv = [{}]", argv.join(", "));
    for (name, value) in &env {
        match value {
            EnvValue::Value(v) => {
                let _ = writeln!(m, "loader.env.{name} = {}", toml_str(v));
            }
            EnvValue::Passthrough => {
                let _ = writeln!(m, "loader.env.{name} = {{ passthrough = true }}");
            }
        }
    }
    let _ = writeln!(m, "fs.root.uri = \"file:/\"");
    let _ = writeln!(m, "fs.mounts = [");
    for t in &tmpfs {
        let _ = writeln!(m, "  {{ type = \"tmpfs\", path = {} }},", toml_str(t));
    }
    for e in &encrypted {
        let _ = writeln!(
            m,
            "  {{ type = \"encrypted\", path = {}, uri = {}, key_name = \"{ENCRYPTED_KEY_NAME}\" }},",
            toml_str(e),
            toml_str(&format!("file:{e}"))
        );
    }
    let _ = writeln!(m, "]");
    // kubelet stops a pod with SIGTERM; Gramine drops host signals unless told otherwise
    // (`libos/src/bookkeep/libos_signal.c`).
    let _ = writeln!(m, "sys.enable_sigterm_injection = true");
    let _ = writeln!(m, "sgx.debug = {}", input.debug);
    let _ = writeln!(m, "sgx.edmm_enable = false");
    let _ = writeln!(
        m,
        "sgx.enclave_size = {}",
        toml_str(&format_size(input.enclave_size))
    );
    let _ = writeln!(m, "sgx.max_threads = {}", input.max_threads);
    let _ = writeln!(m, "sgx.isvprodid = {}", input.isv_prod_id);
    let _ = writeln!(m, "sgx.isvsvn = {}", input.isv_svn);
    let _ = writeln!(m, "sgx.remote_attestation = \"dcap\"");
    let _ = writeln!(m, "sgx.trusted_files = [");
    for (path, hash) in &trusted {
        let _ = writeln!(
            m,
            "  {{ uri = {}, sha256 = \"{}\" }},",
            toml_str(&format!("file:{path}")),
            hex::encode(hash)
        );
    }
    let _ = writeln!(m, "]");
    let _ = writeln!(m, "sgx.allowed_files = [");
    for p in &allowed {
        let _ = writeln!(m, "  {},", toml_str(&format!("file:{p}")));
    }
    let _ = writeln!(m, "]");
    Ok(m)
}

/// Gramine's default ATTRIBUTEMASK.XFRM (`SGX_XFRM_MASK_CONST` in `sgx_arch.h`).
pub const XFRM_MASK: u64 = 0xffff_ffff_fff9_ff1b;

/// A SIGSTRUCT body for a Gramine enclave with the values `gramine-sgx-sign` uses for a manifest
/// without `sgx.cpu_features`/`sgx.use_exinfo`: MODE64BIT, DEBUG from the manifest, XFRM legacy
/// (x87|SSE) with Gramine's XFRM mask, all flags and MISCSELECT bits enforced, ISVPRODID/ISVSVN
/// from the manifest. `date` is BCD (see [`crate::bcd_date`]).
pub fn sigstruct_body(measurement: &GramineMeasurement, date: u32) -> crate::SigstructBody {
    let mut b = crate::SigstructBody::new(measurement.mrenclave);
    b.date = date;
    b.isv_prod_id = measurement.isv_prod_id;
    b.isv_svn = measurement.isv_svn;
    b.attributes_mask.xfrm = XFRM_MASK;
    b.set_debug(measurement.debug);
    b
}

/// Everything `coffer convert --tee sgx` needs to ship for Gramine, from one call.
#[derive(Clone, Debug)]
pub struct GramineBuild {
    /// The final manifest (`<app>.manifest.sgx`), byte-exact what was measured.
    pub manifest: String,
    /// Its measurement.
    pub measurement: GramineMeasurement,
    /// The signed SIGSTRUCT (`<app>.sig`): `sigstruct.to_bytes()`.
    pub sigstruct: crate::Sigstruct,
}

/// Renders the manifest for `input`, measures it with Gramine's `libpal.so` bytes, and signs it.
/// `date` is the SIGSTRUCT date (BCD, see [`crate::bcd_date`]; pass a fixed one for
/// reproducible output); `rng` only blinds the RSA operation.
pub fn build<R: rand_core::CryptoRngCore>(
    input: &GramineInput,
    libpal: &[u8],
    constants: &LayoutConstants,
    key: &crate::SigningKey,
    date: u32,
    rng: &mut R,
) -> Result<GramineBuild> {
    let manifest = render_manifest(input)?;
    let measurement = measure(manifest.as_bytes(), libpal, constants)?;
    let sigstruct = crate::Sigstruct::sign(sigstruct_body(&measurement, date), key, rng)?;
    Ok(GramineBuild {
        manifest,
        measurement,
        sigstruct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn input() -> GramineInput {
        GramineInput {
            libos: (
                "/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so".into(),
                [0x11; 32],
            ),
            args: vec![],
            env: vec![
                ("PATH".into(), EnvValue::Value("/usr/bin:/bin".into())),
                ("COFFER_COORDINATOR".into(), EnvValue::Passthrough),
            ],
            trusted_files: vec![
                ("/usr/bin/app".into(), [0xaa; 32]),
                ("/etc/app.conf".into(), [0xbb; 32]),
                ("/coffer/launcher".into(), [0xcc; 32]),
            ],
            allowed_files: vec!["/data/**".into(), "/var/log/app.log".into()],
            tmpfs: vec!["/tmp".into()],
            encrypted_files: vec!["/etc/app/db.key".into()],
            enclave_size: 1 << 30,
            max_threads: 16,
            isv_prod_id: 7,
            isv_svn: 3,
            debug: false,
        }
    }

    #[test]
    fn renders_gramine_syntax_and_parses_as_toml() {
        let text = render_manifest(&input()).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["libos"]["entrypoint"].as_str(), Some("/coffer/launcher"));
        assert_eq!(v["loader"]["argv"].as_array().unwrap().len(), 1);
        assert_eq!(v["loader"]["env"]["PATH"].as_str(), Some("/usr/bin:/bin"));
        assert_eq!(
            v["loader"]["env"]["COFFER_COORDINATOR"]["passthrough"].as_bool(),
            Some(true)
        );
        assert_eq!(v["sgx"]["enclave_size"].as_str(), Some("1G"));
        assert_eq!(v["sys"]["enable_sigterm_injection"].as_bool(), Some(true));
        let mounts = v["fs"]["mounts"].as_array().unwrap();
        assert_eq!(mounts[1]["type"].as_str(), Some("encrypted"));
        assert_eq!(mounts[1]["uri"].as_str(), Some("file:/etc/app/db.key"));
        assert_eq!(mounts[1]["key_name"].as_str(), Some("coffer_image"));
        assert_eq!(v["sgx"]["max_threads"].as_integer(), Some(16));
        assert_eq!(v["sgx"]["remote_attestation"].as_str(), Some("dcap"));
        assert_eq!(v["sgx"]["isvprodid"].as_integer(), Some(7));
        let tf = v["sgx"]["trusted_files"].as_array().unwrap();
        let uris: Vec<&str> = tf.iter().map(|t| t["uri"].as_str().unwrap()).collect();
        assert_eq!(
            uris,
            [
                "file:/coffer/launcher",
                "file:/etc/app.conf",
                "file:/usr/bin/app",
            ]
        );
        assert_eq!(
            v["loader"]["entrypoint"]["uri"].as_str(),
            Some("file:/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so")
        );
        assert_eq!(
            v["loader"]["entrypoint"]["sha256"].as_str(),
            Some(hex::encode([0x11; 32]).as_str())
        );
        assert_eq!(
            tf[2]["sha256"].as_str(),
            Some(hex::encode([0xaa; 32]).as_str())
        );
        let allowed: Vec<&str> = v["sgx"]["allowed_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(allowed, ["file:/data/", "file:/var/log/app.log"]);
    }

    #[test]
    fn order_of_input_lists_does_not_matter() {
        let a = input();
        let mut b = input();
        b.trusted_files.reverse();
        b.env.reverse();
        b.allowed_files.reverse();
        b.trusted_files.push(("/usr/bin/app".into(), [0xaa; 32])); // exact duplicate merges
        assert_eq!(render_manifest(&a).unwrap(), render_manifest(&b).unwrap());
    }

    #[test]
    fn special_characters_are_escaped() {
        let mut i = input();
        i.trusted_files.push(("/opt/we\"ird\\name".into(), [1; 32]));
        i.env
            .push(("MSG".into(), EnvValue::Value("a \"b\"\nc".into())));
        let text = render_manifest(&i).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["loader"]["env"]["MSG"].as_str(), Some("a \"b\"\nc"));
        assert!(v["sgx"]["trusted_files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["uri"].as_str() == Some("file:/opt/we\"ird\\name")));
    }

    #[test]
    fn refuses_bad_input() {
        type Edit = Box<dyn Fn(&mut GramineInput)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|i| i.enclave_size = 3 << 20), "enclave_size"),
            (Box::new(|i| i.max_threads = 0), "max_threads"),
            (
                Box::new(|i| i.trusted_files.push(("relative/x".into(), [0; 32]))),
                "trusted_files",
            ),
            (
                Box::new(|i| i.trusted_files.push(("/a/../b".into(), [0; 32]))),
                "trusted_files",
            ),
            (
                Box::new(|i| i.trusted_files.push(("/usr/bin/app".into(), [0; 32]))),
                "trusted_files",
            ),
            (
                Box::new(|i| i.trusted_files.push(("/a\u{1}b".into(), [0; 32]))),
                "trusted_files",
            ),
            (
                Box::new(|i| i.allowed_files.push("/data/*.log".into())),
                "allowed_files",
            ),
            (
                Box::new(|i| i.allowed_files.push("/usr/bin/app".into())),
                "allowed_files",
            ),
            (
                Box::new(|i| i.env.push(("1BAD".into(), EnvValue::Passthrough))),
                "env",
            ),
            (
                Box::new(|i| i.env.push(("PATH".into(), EnvValue::Passthrough))),
                "env",
            ),
            (Box::new(|i| i.tmpfs.push("/".into())), "tmpfs"),
            (
                Box::new(|i| i.encrypted_files.push("/usr/bin/app".into())),
                "encrypted_files",
            ),
            (
                Box::new(|i| i.encrypted_files.push("/tmp/x".into())),
                "encrypted_files",
            ),
        ];
        for (f, field) in cases {
            let mut i = input();
            f(&mut i);
            match render_manifest(&i) {
                Err(Error::GramineInput { field: got, .. }) => assert_eq!(got, field),
                other => panic!("expected error on {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(format_size(1 << 30), "1G");
        assert_eq!(format_size(256 << 20), "256M");
        assert_eq!(format_size(64 << 10), "64K");
        assert_eq!(format_size(100), "100");
    }
}
