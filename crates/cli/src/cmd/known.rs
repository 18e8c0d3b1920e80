//! What `coffer verify` remembers: per Coordinator (keyed by its root CA key), the last state
//! head it verified. A whole-state rollback of a Coordinator (an old but consistent copy of its
//! store or of etcd) cannot be prevented without trusted monotonic hardware, but a client that
//! remembers can tell: the rolled-back Coordinator's manifest history no longer extends the
//! remembered head, or its generation or audit log went backwards.
//!
//! The file (`--known-state`, default `$XDG_STATE_HOME/coffer/known-coordinators.json`, else
//! `~/.local/state/coffer/known-coordinators.json`) holds hashes and counters only, nothing
//! secret; it is written atomically (temp file, fsync, rename) with mode 0600.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use coffer_api::{HistoryEntry, StateSummary};
use serde::{Deserialize, Serialize};

use crate::output::Failure;

/// The file's format version.
const VERSION: u32 = 1;

/// Largest known-state file read (hashes and counters: far below this).
const MAX_BYTES: u64 = 4 << 20;

/// One Coordinator's last verified state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Known {
    /// Where it was reached (informational).
    pub(crate) address: String,
    /// When it was verified, Unix seconds.
    pub(crate) verified_at: i64,
    /// The state head verified then.
    pub(crate) state: StateSummary,
}

/// The file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KnownFile {
    version: u32,
    /// By SHA-256 of the Coordinator's root CA SubjectPublicKeyInfo, hex.
    coordinators: BTreeMap<String, Known>,
}

/// The default path of the file.
pub(crate) fn default_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("coffer/known-coordinators.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/state/coffer/known-coordinators.json"))
}

/// The key a Coordinator is remembered under.
pub(crate) fn identity(root_der: &[u8]) -> anyhow::Result<String> {
    use sha2::Digest;
    let spki = coffer_coordinator::pki::cert_spki(root_der)?;
    Ok(hex::encode(sha2::Sha256::digest(spki)))
}

impl KnownFile {
    /// Reads the file; a missing file is an empty one.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    version: VERSION,
                    ..Self::default()
                })
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_BYTES + 1), &mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        if bytes.len() as u64 > MAX_BYTES {
            return Err(Failure::new(
                "config",
                format!("{} is larger than {MAX_BYTES} bytes", path.display()),
            )
            .into());
        }
        let file: KnownFile = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::new(
                "config",
                format!(
                    "{} is not a known-coordinators file ({e}); move it aside to start afresh",
                    path.display()
                ),
            )
        })?;
        if file.version != VERSION {
            return Err(Failure::new(
                "config",
                format!(
                    "{}: version {} is not {VERSION}",
                    path.display(),
                    file.version
                ),
            )
            .into());
        }
        Ok(file)
    }

    /// What is remembered of `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&Known> {
        self.coordinators.get(id)
    }

    /// Remembers `known` for `id`.
    pub(crate) fn set(&mut self, id: String, known: Known) {
        self.coordinators.insert(id, known);
    }

    /// Writes the file atomically, mode 0600.
    pub(crate) fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(self)?)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// Checks that a Coordinator's verified `state` and `history` move forward from `known`: its
/// history extends the remembered head, and neither its generation nor its audit log went
/// backwards. The refusal names both heads.
pub(crate) fn check_forward(
    known: &Known,
    state: &StateSummary,
    history: &[HistoryEntry],
) -> Result<(), Failure> {
    let when = time::OffsetDateTime::from_unix_timestamp(known.verified_at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| known.verified_at.to_string());
    let head = |v: u64, h: &[u8; 32]| format!("version {v}, head {}", hex::encode(h));
    if !coffer_api::history_extends(
        history,
        known.state.manifest_version,
        &known.state.manifest_head,
    ) {
        return Err(Failure::new(
            "rollback",
            format!(
                "the Coordinator's manifest history ({}) does not extend the one verified on {when} ({}): \
                 its state was rolled back or forked. Do not trust it; if this is an intended new \
                 deployment, remove its entry from the known-state file",
                head(state.manifest_version, &state.manifest_head),
                head(known.state.manifest_version, &known.state.manifest_head),
            ),
        ));
    }
    if state.generation < known.state.generation || state.audit_seq < known.state.audit_seq {
        return Err(Failure::new(
            "rollback",
            format!(
                "the Coordinator's state (generation {}, audit record {}) is older than the one verified \
                 on {when} (generation {}, audit record {}): its state was rolled back",
                state.generation, state.audit_seq, known.state.generation, known.state.audit_seq
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_api::chain::CHAIN_START;

    fn history(n: u64) -> Vec<HistoryEntry> {
        let mut out: Vec<HistoryEntry> = Vec::new();
        for v in 1..=n {
            out.push(HistoryEntry {
                version: v,
                manifest_hash: format!("{v:064x}"),
                prev: out.last().map_or(CHAIN_START, HistoryEntry::hash),
                author: None,
                time: v as i64,
                changes: vec![],
            });
        }
        out
    }

    fn state(h: &[HistoryEntry], generation: u64, audit_seq: u64) -> StateSummary {
        StateSummary {
            generation,
            manifest_version: h.len() as u64,
            manifest_head: h.last().map_or(CHAIN_START, HistoryEntry::hash),
            audit_seq,
            audit_head: [7; 32],
        }
    }

    #[test]
    fn forward_is_accepted_and_every_rollback_refused() {
        let h3 = history(3);
        let known = Known {
            address: "x".into(),
            verified_at: 0,
            state: state(&h3[..2], 10, 20),
        };
        check_forward(&known, &state(&h3, 11, 21), &h3).unwrap();
        check_forward(&known, &state(&h3[..2], 10, 20), &h3[..2]).unwrap();
        // History rolled back (shorter), forked (another entry 2), generation or audit older.
        let err = check_forward(&known, &state(&h3[..1], 12, 22), &h3[..1]).unwrap_err();
        assert!(err.message.contains("does not extend"), "{}", err.message);
        let mut fork = history(2);
        fork[1].author = Some("mallory".into());
        let err = check_forward(&known, &state(&fork, 12, 22), &fork).unwrap_err();
        assert!(err.message.contains("version 2"), "{}", err.message);
        let err = check_forward(&known, &state(&h3, 9, 22), &h3).unwrap_err();
        assert!(err.message.contains("generation 9"), "{}", err.message);
        let err = check_forward(&known, &state(&h3, 12, 19), &h3).unwrap_err();
        assert!(err.message.contains("audit record 19"), "{}", err.message);
    }

    #[test]
    fn the_file_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known.json");
        let mut f = KnownFile::load(&path).unwrap();
        f.set(
            "id".into(),
            Known {
                address: "a".into(),
                verified_at: 1,
                state: state(&history(1), 1, 1),
            },
        );
        f.save(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(KnownFile::load(&path).unwrap().get("id"), f.get("id"));
        std::fs::write(&path, b"{\"version\":1,\"coordinators\":{},\"x\":1}").unwrap();
        assert!(KnownFile::load(&path).is_err());
    }
}
