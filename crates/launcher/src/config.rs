//! The launcher's settings, read from its environment (two stages: raw variables → a validated
//! [`Config`], so every problem is reported with the variable's name before anything happens).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::Error;

/// Default Gramine attestation pseudo-filesystem.
pub const DEFAULT_ATTESTATION_ROOT: &str = "/dev/attestation";
/// Default Linux configfs-tsm report directory.
pub const DEFAULT_TSM_ROOT: &str = "/sys/kernel/config/tsm/report";
/// Default time the launcher keeps trying to reach the Coordinator.
pub const DEFAULT_ACTIVATE_TIMEOUT: Duration = Duration::from_secs(300);

/// Which evidence source to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceChoice {
    /// Gramine's `/dev/attestation` if present, else configfs-tsm if present, else an error.
    /// Never the simulated platform.
    Auto,
    /// Gramine's `/dev/attestation` (SGX).
    Gramine,
    /// Linux configfs-tsm (TDX and SEV-SNP guests).
    Tsm,
    /// The SIMULATED platform in `COFFER_SIM_DIR` (development only).
    Sim,
}

impl EvidenceChoice {
    fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "" | "auto" => Ok(EvidenceChoice::Auto),
            "gramine" => Ok(EvidenceChoice::Gramine),
            "tsm" => Ok(EvidenceChoice::Tsm),
            "sim" => Ok(EvidenceChoice::Sim),
            other => Err(Error::Config(format!(
                "COFFER_EVIDENCE={other:?} is not one of auto, gramine, tsm, sim"
            ))),
        }
    }
}

/// How the launcher decides that it talks to the real Coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorTrust {
    /// The Coordinator's TLS certificate must chain to this root CA (PEM file, from `coffer
    /// verify` or the deployment), with the name `coffer-coordinator`.
    RootCa(PathBuf),
    /// The Coordinator's RA-TLS certificate must carry evidence that verifies (with the same
    /// platform trust anchors the launcher uses: the simulated platform's in `sim` mode, with
    /// collateral the Coordinator relays) and shows this identity ([`crate::ratls`]).
    Measurement(ExpectedCoordinator),
}

/// The Coordinator's expected SGX identity: its MRENCLAVE, or MRSIGNER with ISVPRODID and a
/// minimum ISVSVN (which survives Coordinator upgrades signed by the same key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpectedCoordinator {
    /// `COFFER_COORDINATOR_MRENCLAVE`.
    pub mrenclave: Option<[u8; 32]>,
    /// `COFFER_COORDINATOR_MRSIGNER`.
    pub mrsigner: Option<[u8; 32]>,
    /// `COFFER_COORDINATOR_ISVPRODID` (required with MRSIGNER).
    pub isv_prod_id: Option<u16>,
    /// `COFFER_COORDINATOR_MIN_ISVSVN` (default 0).
    pub min_isv_svn: u16,
}

impl std::fmt::Display for ExpectedCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(m) = self.mrenclave {
            write!(f, "MRENCLAVE {}", hex::encode(m))?;
        }
        if let Some(s) = self.mrsigner {
            if self.mrenclave.is_some() {
                f.write_str(", ")?;
            }
            write!(
                f,
                "MRSIGNER {} ISVPRODID {} ISVSVN ≥ {}",
                hex::encode(s),
                self.isv_prod_id.unwrap_or_default(),
                self.min_isv_svn
            )?;
        }
        Ok(())
    }
}

/// Validated launcher settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `COFFER_COORDINATOR`: `host:port` of the Coordinator's client API.
    pub coordinator: Option<String>,
    /// `COFFER_WORKLOAD`: the workload name in the manifest.
    pub workload: Option<String>,
    /// `COFFER_INSTANCE_ID`: UUID of this instance; random (not persisted) when unset, so a
    /// restarted container is a new instance unless the orchestrator passes a stable id.
    pub instance_id: uuid::Uuid,
    /// True when `instance_id` came from the environment.
    pub instance_id_given: bool,
    /// `COFFER_EVIDENCE`.
    pub evidence: EvidenceChoice,
    /// `COFFER_ATTESTATION_ROOT` (default `/dev/attestation`).
    pub attestation_root: PathBuf,
    /// `COFFER_TSM_ROOT` (default `/sys/kernel/config/tsm/report`).
    pub tsm_root: PathBuf,
    /// `COFFER_SIM_DIR`: directory holding `sim-platform.json` (simulation only).
    pub sim_dir: Option<PathBuf>,
    /// `COFFER_ROOT_CA`, or the Coordinator's measurement (`COFFER_COORDINATOR_*`).
    pub trust: Option<CoordinatorTrust>,
    /// `COFFER_ROOTFS`: the image's root directory (default `/`).
    pub rootfs: PathBuf,
    /// `COFFER_CHROOT=1`: chroot into `rootfs` before exec (used by `coffer run --no-runtime`).
    pub chroot: bool,
    /// `COFFER_ACTIVATE_TIMEOUT`: seconds to keep retrying an unreachable Coordinator.
    pub activate_timeout: Duration,
    /// `COFFER_SECRET_DIRS`: under Gramine, the in-enclave tmpfs directories the manifest's
    /// files may go to (the converted image's manifest fixes it); always includes
    /// [`crate::materialise::TLS_DIR`].
    pub secret_dirs: Vec<String>,
}

/// Names of the variables the launcher reads; they are removed from the app's environment.
pub const LAUNCHER_VARS: &[&str] = &[
    "COFFER_COORDINATOR",
    "COFFER_WORKLOAD",
    "COFFER_INSTANCE_ID",
    "COFFER_EVIDENCE",
    "COFFER_ATTESTATION_ROOT",
    "COFFER_TSM_ROOT",
    "COFFER_SIM_DIR",
    "COFFER_ROOT_CA",
    "COFFER_COORDINATOR_MRENCLAVE",
    "COFFER_COORDINATOR_MRSIGNER",
    "COFFER_COORDINATOR_ISVPRODID",
    "COFFER_COORDINATOR_MIN_ISVSVN",
    "COFFER_ROOTFS",
    "COFFER_CHROOT",
    "COFFER_ACTIVATE_TIMEOUT",
    "COFFER_SECRET_DIRS",
];

impl Config {
    /// Reads the settings from `env` (the process environment in production, a map in tests).
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Self, Error> {
        let get = |k: &str| env.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
        let coordinator = get("COFFER_COORDINATOR").map(str::to_string);
        if let Some(c) = &coordinator {
            validate_addr(c)?;
        }
        let workload = get("COFFER_WORKLOAD").map(str::to_string);
        if let Some(w) = &workload {
            if w.len() > 256 || w.chars().any(|c| c.is_control()) {
                return Err(Error::Config(
                    "COFFER_WORKLOAD must be a workload name of the manifest (≤ 256 printable characters)".into(),
                ));
            }
        }
        let (instance_id, instance_id_given) = match get("COFFER_INSTANCE_ID") {
            Some(s) => (
                uuid::Uuid::parse_str(s).map_err(|e| {
                    Error::Config(format!("COFFER_INSTANCE_ID={s:?} is not a UUID: {e}"))
                })?,
                true,
            ),
            None => (uuid::Uuid::new_v4(), false),
        };
        let evidence = EvidenceChoice::parse(get("COFFER_EVIDENCE").unwrap_or("auto"))?;
        let path = |k: &str, d: &str| PathBuf::from(get(k).unwrap_or(d));
        let sim_dir = get("COFFER_SIM_DIR").map(PathBuf::from);
        if evidence == EvidenceChoice::Sim && sim_dir.is_none() {
            return Err(Error::Config(
                "COFFER_EVIDENCE=sim needs COFFER_SIM_DIR (the directory holding sim-platform.json)".into(),
            ));
        }
        let hash = |k: &str| -> Result<Option<[u8; 32]>, Error> {
            get(k)
                .map(|h| {
                    let mut m = [0u8; 32];
                    hex::decode_to_slice(h, &mut m)
                        .map_err(|_| Error::Config(format!("{k} must be 64 hex digits")))?;
                    Ok(m)
                })
                .transpose()
        };
        let number = |k: &str| -> Result<Option<u16>, Error> {
            get(k)
                .map(|n| {
                    n.parse::<u16>()
                        .map_err(|_| Error::Config(format!("{k}={n:?} is not a number 0..=65535")))
                })
                .transpose()
        };
        let expected = ExpectedCoordinator {
            mrenclave: hash("COFFER_COORDINATOR_MRENCLAVE")?,
            mrsigner: hash("COFFER_COORDINATOR_MRSIGNER")?,
            isv_prod_id: number("COFFER_COORDINATOR_ISVPRODID")?,
            min_isv_svn: number("COFFER_COORDINATOR_MIN_ISVSVN")?.unwrap_or(0),
        };
        if expected.mrsigner.is_some() && expected.isv_prod_id.is_none() {
            return Err(Error::Config(
                "COFFER_COORDINATOR_MRSIGNER needs COFFER_COORDINATOR_ISVPRODID (one signer signs \
                 many products)"
                    .into(),
            ));
        }
        let pinned = expected.mrenclave.is_some() || expected.mrsigner.is_some();
        let trust = match (get("COFFER_ROOT_CA"), pinned) {
            (Some(_), true) => {
                return Err(Error::Config(
                    "set either COFFER_ROOT_CA or the Coordinator's measurement \
                     (COFFER_COORDINATOR_MRENCLAVE or _MRSIGNER), not both"
                        .into(),
                ))
            }
            (Some(p), false) => Some(CoordinatorTrust::RootCa(PathBuf::from(p))),
            (None, true) => Some(CoordinatorTrust::Measurement(expected)),
            (None, false) => None,
        };
        let chroot = match get("COFFER_CHROOT") {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => {
                return Err(Error::Config(format!(
                    "COFFER_CHROOT={other:?}: use 1 or 0"
                )))
            }
        };
        let activate_timeout = match get("COFFER_ACTIVATE_TIMEOUT") {
            None => DEFAULT_ACTIVATE_TIMEOUT,
            Some(s) => {
                Duration::from_secs(s.parse::<u64>().ok().filter(|n| *n <= 86_400).ok_or_else(
                    || Error::Config(format!("COFFER_ACTIVATE_TIMEOUT={s:?}: seconds, 0..=86400")),
                )?)
            }
        };
        let mut secret_dirs = vec![crate::materialise::TLS_DIR.to_string()];
        for d in get("COFFER_SECRET_DIRS").unwrap_or("").split(':') {
            if d.is_empty() {
                continue;
            }
            crate::fsutil::canonical_components(d).map_err(|e| {
                Error::Config(format!(
                    "COFFER_SECRET_DIRS: {d:?} is not a canonical path: {e}"
                ))
            })?;
            if !secret_dirs.iter().any(|s| s == d) {
                secret_dirs.push(d.to_string());
            }
        }
        let rootfs = path("COFFER_ROOTFS", "/");
        if !rootfs.is_absolute() {
            return Err(Error::Config(
                "COFFER_ROOTFS must be an absolute path".into(),
            ));
        }
        Ok(Config {
            coordinator,
            workload,
            instance_id,
            instance_id_given,
            evidence,
            attestation_root: path("COFFER_ATTESTATION_ROOT", DEFAULT_ATTESTATION_ROOT),
            tsm_root: path("COFFER_TSM_ROOT", DEFAULT_TSM_ROOT),
            sim_dir,
            trust,
            rootfs,
            chroot,
            activate_timeout,
            secret_dirs,
        })
    }

    /// The Coordinator address, or a configuration error naming the variable.
    pub fn coordinator(&self) -> Result<&str, Error> {
        self.coordinator.as_deref().ok_or_else(|| {
            Error::Config("COFFER_COORDINATOR is not set (host:port of the Coordinator)".into())
        })
    }

    /// The workload name, or a configuration error naming the variable.
    pub fn workload(&self) -> Result<&str, Error> {
        self.workload.as_deref().ok_or_else(|| {
            Error::Config("COFFER_WORKLOAD is not set (the workload's name in the manifest)".into())
        })
    }

    /// The Coordinator trust setting, or a configuration error explaining the choices.
    pub fn trust(&self) -> Result<&CoordinatorTrust, Error> {
        self.trust.as_ref().ok_or_else(|| {
            Error::Config(
                "no way to check the Coordinator: set COFFER_ROOT_CA to its root CA (PEM, from \
                 `coffer verify`), or its expected measurement (COFFER_COORDINATOR_MRENCLAVE, or \
                 COFFER_COORDINATOR_MRSIGNER with _ISVPRODID and _MIN_ISVSVN); the launcher \
                 never trusts a Coordinator on first use"
                    .into(),
            )
        })
    }
}

fn validate_addr(addr: &str) -> Result<(), Error> {
    let bad = || Error::Config(format!("COFFER_COORDINATOR={addr:?} is not host:port"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    if addr.contains('/') || addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let c = Config::from_env(&env(&[])).unwrap();
        assert_eq!(c.evidence, EvidenceChoice::Auto);
        assert_eq!(c.attestation_root, PathBuf::from("/dev/attestation"));
        assert_eq!(c.tsm_root, PathBuf::from("/sys/kernel/config/tsm/report"));
        assert_eq!(c.rootfs, PathBuf::from("/"));
        assert!(!c.instance_id_given && !c.chroot);
        assert!(
            matches!(c.coordinator(), Err(Error::Config(m)) if m.contains("COFFER_COORDINATOR"))
        );
        assert!(matches!(c.trust(), Err(Error::Config(m)) if m.contains("first use")));
    }

    #[test]
    fn parses_everything() {
        let c = Config::from_env(&env(&[
            ("COFFER_COORDINATOR", "127.0.0.1:4433"),
            ("COFFER_WORKLOAD", "web"),
            ("COFFER_INSTANCE_ID", "67e55044-10b1-426f-9247-bb680e5fe0c8"),
            ("COFFER_EVIDENCE", "sim"),
            ("COFFER_SIM_DIR", "/sim"),
            ("COFFER_COORDINATOR_MRENCLAVE", &"ab".repeat(32)),
            ("COFFER_ACTIVATE_TIMEOUT", "5"),
        ]))
        .unwrap();
        assert_eq!(c.coordinator().unwrap(), "127.0.0.1:4433");
        assert!(c.instance_id_given);
        assert_eq!(
            c.trust().unwrap(),
            &CoordinatorTrust::Measurement(ExpectedCoordinator {
                mrenclave: Some([0xab; 32]),
                ..Default::default()
            })
        );
        assert_eq!(c.activate_timeout, Duration::from_secs(5));
        assert_eq!(c.secret_dirs, ["/coffer/tls"]);
        let c =
            Config::from_env(&env(&[("COFFER_SECRET_DIRS", "/coffer/tls:/etc/app/s:")])).unwrap();
        assert_eq!(c.secret_dirs, ["/coffer/tls", "/etc/app/s"]);
    }

    #[test]
    fn rejects_bad_values_naming_the_variable() {
        for (k, v, needle) in [
            ("COFFER_EVIDENCE", "sgx", "COFFER_EVIDENCE"),
            ("COFFER_COORDINATOR", "localhost", "COFFER_COORDINATOR"),
            ("COFFER_COORDINATOR", "https://x:1", "COFFER_COORDINATOR"),
            ("COFFER_INSTANCE_ID", "nope", "COFFER_INSTANCE_ID"),
            (
                "COFFER_COORDINATOR_MRENCLAVE",
                "abcd",
                "COFFER_COORDINATOR_MRENCLAVE",
            ),
            (
                "COFFER_COORDINATOR_MRSIGNER",
                &"ab".repeat(32),
                "COFFER_COORDINATOR_ISVPRODID",
            ),
            (
                "COFFER_COORDINATOR_ISVPRODID",
                "-1",
                "COFFER_COORDINATOR_ISVPRODID",
            ),
            (
                "COFFER_COORDINATOR_MIN_ISVSVN",
                "x",
                "COFFER_COORDINATOR_MIN_ISVSVN",
            ),
            ("COFFER_ROOTFS", "relative", "COFFER_ROOTFS"),
            ("COFFER_CHROOT", "yes", "COFFER_CHROOT"),
            ("COFFER_ACTIVATE_TIMEOUT", "-1", "COFFER_ACTIVATE_TIMEOUT"),
            ("COFFER_SECRET_DIRS", "/a:b/../c", "COFFER_SECRET_DIRS"),
        ] {
            let err = Config::from_env(&env(&[(k, v)])).unwrap_err();
            assert!(
                matches!(&err, Error::Config(m) if m.contains(needle)),
                "{k}={v}: {err}"
            );
        }
    }

    #[test]
    fn sim_needs_a_directory() {
        let err = Config::from_env(&env(&[("COFFER_EVIDENCE", "sim")])).unwrap_err();
        assert!(matches!(err, Error::Config(m) if m.contains("COFFER_SIM_DIR")));
    }
}
