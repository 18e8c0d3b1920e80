//! The on-disk form of one collateral item, shared by the cache and the offline directory.
//!
//! One JSON file per item, written atomically (temporary file + rename), so a crash never leaves a
//! half-written item. Validity is never trusted from the file: it is re-read from the item
//! itself (the signed JSON's `nextUpdate`, the CRL's nextUpdate) each time.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decode;
use crate::{Error, Item};

/// Largest cache/offline file read (the biggest real item, a PCK CRL, is far smaller).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// One item as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Always 1.
    pub(crate) format: u32,
    /// Which item (`tcb_info`, `qe_identity`, `pck_crl`, `root_ca_crl`).
    pub(crate) item: Item,
    /// Where it was fetched from (URL), or `import`.
    pub(crate) source: String,
    /// When it was fetched (Unix seconds).
    pub(crate) fetched_at: i64,
    /// The issuer chain (PEM); none for the root CA CRL (signed by the pinned root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) issuer_chain: Option<String>,
    /// The signed JSON object (TCB info, QE identity) or the CRL as hex DER.
    pub(crate) body: String,
    /// The signature (hex r||s) of TCB info and QE identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) signature: Option<String>,
}

impl Entry {
    /// `(issue/thisUpdate, nextUpdate)` read from the item itself.
    pub(crate) fn validity(&self) -> Result<(i64, i64), String> {
        match self.item {
            Item::TcbInfo | Item::QeIdentity => decode::signed_object_dates(&self.body),
            Item::PckCrl | Item::RootCaCrl => {
                let crl = decode::crl(self.body.as_bytes())?;
                Ok((crl.this_update, crl.next_update))
            }
        }
    }
}

/// Reads an entry; `Ok(None)` when the file does not exist.
pub(crate) fn read(path: &Path) -> Result<Option<Entry>, Error> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Cache {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Cache {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::Cache {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "file is too large"),
        });
    }
    let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| Error::Cache {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })?;
    if entry.format != 1 {
        return Err(Error::Cache {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unknown cache format {}", entry.format),
            ),
        });
    }
    Ok(Some(entry))
}

/// Writes an entry atomically into `dir` (created if missing).
pub(crate) fn write(dir: &Path, name: &str, entry: &Entry) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(entry).map_err(|e| Error::Cache {
        path: dir.join(name),
        source: std::io::Error::other(e.to_string()),
    })?;
    write_bytes(dir, name, &json)
}

/// Writes `bytes` atomically as `dir/name` (`dir` created if missing).
pub(crate) fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let err = |path: PathBuf| move |source| Error::Cache { path, source };
    std::fs::create_dir_all(dir).map_err(err(dir.to_path_buf()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Cache { path, source });
    }
    Ok(())
}
