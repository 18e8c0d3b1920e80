//! Gramine's rules for one manifest: which paths an enclave may open, create and execute.
//!
//! Modelled on Gramine v1.9 (`libos/src/fs/chroot/fs.c` and `trusted.c` for trusted and
//! allowed files, `libos/src/fs/tmpfs` for in-enclave mounts, `libos/src/libos_rtld.c` for the
//! ELF interpreter search, `libos/src/libos_init.c` for `loader.env`):
//! - the chroot filesystem shows no symlinks; the host follows them, and a file's trust is
//!   looked up by the path the app opened;
//! - a trusted file opens only when the content the host returns has the manifest's SHA-256;
//! - an allowed file opens unchecked and can be written, straight to the host's disk;
//! - a file neither trusted nor allowed cannot be opened or created;
//! - tmpfs and encrypted mounts are inside the enclave;
//! - `/proc`, `/dev` and `/sys` are Gramine's own pseudo-filesystems.

use std::collections::BTreeMap;

use crate::image::{normalise, Image, Node};
use crate::Error;

/// How an environment variable reaches the enclave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Env {
    /// Fixed in the manifest (measured).
    Fixed(String),
    /// Taken from the host at start.
    Passthrough,
}

/// The kind of an in-enclave mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountKind {
    /// `type = "tmpfs"`: memory of the enclave.
    Tmpfs,
    /// `type = "encrypted"`: Gramine's protected files, keyed inside the enclave.
    Encrypted,
}

/// What Gramine does when the enclave opens a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// A trusted file whose host content matches its hash; `target` is where the host led.
    Trusted {
        /// The host path the open reached.
        target: String,
    },
    /// An allowed file: opened unchecked (the host controls its content).
    Allowed,
    /// Inside an in-enclave mount.
    InEnclave(MountKind),
    /// Gramine's own `/proc`, `/dev` or `/sys`.
    Pseudo,
    /// A trusted path the host cannot resolve.
    Missing,
    /// A trusted path whose host content differs from the manifest.
    HashMismatch {
        /// The host path the open reached.
        target: String,
    },
    /// Neither trusted nor allowed: Gramine refuses it.
    Denied,
}

/// The rules of one manifest.
#[derive(Clone, Debug)]
pub struct Policy {
    /// `sgx.trusted_files`: path → SHA-256.
    pub trusted: BTreeMap<String, [u8; 32]>,
    /// `sgx.allowed_files`: files, and directories (ending in `/`).
    pub allowed: Vec<String>,
    /// `fs.mounts`.
    pub mounts: Vec<(String, MountKind)>,
    /// `loader.env`.
    pub env: BTreeMap<String, Env>,
    /// `loader.argv`.
    pub argv: Vec<String>,
    /// `libos.entrypoint`.
    pub entrypoint: String,
    /// `loader.entrypoint.uri` (without `file:`) and its `sha256`.
    pub loader_entrypoint: (String, [u8; 32]),
    /// `sys.enable_sigterm_injection`.
    pub sigterm_injection: bool,
}

fn hash(s: &str, what: &str) -> Result<[u8; 32], Error> {
    let mut h = [0u8; 32];
    hex::decode_to_slice(s, &mut h)
        .map_err(|_| Error::Manifest(format!("{what}: {s:?} is not a SHA-256")))?;
    Ok(h)
}

fn file_uri<'a>(v: &'a toml::Value, what: &str) -> Result<&'a str, Error> {
    v.as_str()
        .and_then(|u| u.strip_prefix("file:"))
        .ok_or_else(|| Error::Manifest(format!("{what}: {v} is not a file: URI")))
}

impl Policy {
    /// Reads a Gramine manifest (TOML).
    pub fn from_manifest(text: &str) -> Result<Policy, Error> {
        let v: toml::Value =
            toml::from_str(text).map_err(|e| Error::Manifest(format!("not TOML: {e}")))?;
        let mut trusted = BTreeMap::new();
        for t in v["sgx"]
            .get("trusted_files")
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
        {
            let uri = file_uri(&t["uri"], "sgx.trusted_files")?;
            let h = hash(t.get("sha256").and_then(|h| h.as_str()).unwrap_or(""), uri)?;
            trusted.insert(normalise(uri), h);
        }
        let mut allowed = Vec::new();
        for a in v["sgx"]
            .get("allowed_files")
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
        {
            allowed.push(file_uri(a, "sgx.allowed_files")?.to_string());
        }
        let mut mounts = Vec::new();
        for m in v
            .get("fs")
            .and_then(|f| f.get("mounts"))
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
        {
            let path = m
                .get("path")
                .and_then(|p| p.as_str())
                .ok_or_else(|| Error::Manifest("a mount has no path".into()))?;
            let kind = match m.get("type").and_then(|t| t.as_str()).unwrap_or("chroot") {
                "tmpfs" => MountKind::Tmpfs,
                "encrypted" => MountKind::Encrypted,
                other => {
                    return Err(Error::Manifest(format!(
                        "mount {path}: type {other:?} is not modelled"
                    )))
                }
            };
            mounts.push((normalise(path), kind));
        }
        let mut env = BTreeMap::new();
        if let Some(t) = v
            .get("loader")
            .and_then(|l| l.get("env"))
            .and_then(|e| e.as_table())
        {
            for (k, val) in t {
                let e = match val {
                    toml::Value::String(s) => Env::Fixed(s.clone()),
                    toml::Value::Table(t)
                        if t.get("passthrough").and_then(|p| p.as_bool()) == Some(true) =>
                    {
                        Env::Passthrough
                    }
                    toml::Value::Table(t) => match t.get("value").and_then(|p| p.as_str()) {
                        Some(s) => Env::Fixed(s.to_string()),
                        None => {
                            return Err(Error::Manifest(format!("loader.env.{k} is not modelled")))
                        }
                    },
                    _ => return Err(Error::Manifest(format!("loader.env.{k} is not modelled"))),
                };
                env.insert(k.clone(), e);
            }
        }
        let argv = v
            .get("loader")
            .and_then(|l| l.get("argv"))
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let entrypoint = v
            .get("libos")
            .and_then(|l| l.get("entrypoint"))
            .and_then(|e| e.as_str())
            .ok_or_else(|| Error::Manifest("no libos.entrypoint".into()))?
            .to_string();
        let le = v
            .get("loader")
            .and_then(|l| l.get("entrypoint"))
            .ok_or_else(|| Error::Manifest("no loader.entrypoint".into()))?;
        let loader_entrypoint = (
            file_uri(&le["uri"], "loader.entrypoint.uri")?.to_string(),
            hash(
                le.get("sha256").and_then(|h| h.as_str()).unwrap_or(""),
                "loader.entrypoint.sha256",
            )?,
        );
        let sigterm_injection = v
            .get("sys")
            .and_then(|s| s.get("enable_sigterm_injection"))
            .and_then(|b| b.as_bool())
            .unwrap_or(false);
        Ok(Policy {
            trusted,
            allowed,
            mounts,
            env,
            argv,
            entrypoint,
            loader_entrypoint,
            sigterm_injection,
        })
    }

    /// The in-enclave mount `path` lies in, if any.
    pub fn mount_of(&self, path: &str) -> Option<MountKind> {
        let p = normalise(path);
        self.mounts
            .iter()
            .filter(|(m, _)| under(&p, m))
            .max_by_key(|(m, _)| m.len())
            .map(|(_, k)| *k)
    }

    fn is_allowed(&self, path: &str) -> bool {
        self.allowed.iter().any(|a| match a.strip_suffix('/') {
            Some(dir) => under(path, if dir.is_empty() { "/" } else { dir }),
            None => a == path,
        })
    }

    /// What Gramine does when the enclave opens `path` for reading.
    pub fn open(&self, image: &Image, path: &str) -> Access {
        let p = normalise(path);
        if let Some(k) = self.mount_of(&p) {
            return Access::InEnclave(k);
        }
        if ["/proc", "/dev", "/sys"].iter().any(|d| under(&p, d)) {
            return Access::Pseudo;
        }
        if let Some(want) = self.trusted.get(&p) {
            return match image.resolve(&p) {
                Some((target, Node::File { sha256, .. })) if sha256 == want => {
                    Access::Trusted { target }
                }
                Some((target, Node::File { .. })) => Access::HashMismatch { target },
                _ => Access::Missing,
            };
        }
        if self.is_allowed(&p) {
            return Access::Allowed;
        }
        Access::Denied
    }

    /// Where a file the enclave creates or writes at `path` ends up: inside the enclave, on
    /// the host's disk in plaintext (an allowed path), or refused.
    pub fn create(&self, path: &str) -> Access {
        let p = normalise(path);
        if let Some(k) = self.mount_of(&p) {
            return Access::InEnclave(k);
        }
        if self.trusted.contains_key(&p) {
            // Trusted files are read-only in Gramine.
            return Access::Denied;
        }
        if self.is_allowed(&p) {
            return Access::Allowed;
        }
        Access::Denied
    }

    /// The fixed value of `name`, if the manifest fixes one.
    pub fn fixed(&self, name: &str) -> Option<&str> {
        match self.env.get(name) {
            Some(Env::Fixed(v)) => Some(v),
            _ => None,
        }
    }

    /// Gramine's library search path for the ELF interpreter: `LD_LIBRARY_PATH` from
    /// `loader.env` when set, else `/lib` and `/lib64` (`find_interp` in `libos_rtld.c`).
    pub fn interpreter_dirs(&self) -> Vec<String> {
        match self.fixed("LD_LIBRARY_PATH") {
            Some(v) => v
                .split(':')
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect(),
            None => vec!["/lib".into(), "/lib64".into()],
        }
    }
}

/// Whether `path` is `dir` or below it.
pub fn under(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}
