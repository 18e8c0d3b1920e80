//! Sealing the state key to the platform.
//!
//! The state key encrypts the store; it is itself stored in the store's plaintext `meta` table
//! encrypted (AES-256-GCM) under a *sealing key* that only this platform can obtain:
//! - **simulation**: a random 32-byte key file `DATA_DIR/sealing.key` (mode 0600). Deleting it is
//!   the simulated equivalent of moving to new hardware: the Coordinator starts in recovery mode.
//! - **SGX (Gramine)**: the enclave's MRENCLAVE sealing key, read from
//!   `ATTESTATION_ROOT/keys/_sgx_mrenclave` (16 bytes; root default `/dev/attestation`) and
//!   stretched with HKDF-SHA256. A different enclave (or CPU) reads a different key.

use std::io::Write;
use std::path::PathBuf;

use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::state::{open_value, seal_value, StateKey};

const SEAL_AAD: &[u8] = b"coffer sealed state key v1";

/// Where the sealing key comes from.
#[derive(Debug, Clone)]
pub enum Sealer {
    /// Simulation: a 0600 key file.
    KeyFile(PathBuf),
    /// Gramine SGX: `ROOT/keys/_sgx_mrenclave`.
    Gramine(PathBuf),
}

impl Sealer {
    fn sealing_key(&self, create: bool) -> Result<Zeroizing<[u8; 32]>, Error> {
        match self {
            Sealer::KeyFile(path) => match std::fs::read(path) {
                Ok(bytes) => {
                    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                        Error::Unseal(format!(
                            "{} must hold 32 bytes, has {}",
                            path.display(),
                            bytes.len()
                        ))
                    })?;
                    Ok(Zeroizing::new(arr))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    let mut k = Zeroizing::new([0u8; 32]);
                    rand::rngs::OsRng.fill_bytes(k.as_mut());
                    write_key_file(path, k.as_ref())?;
                    Ok(k)
                }
                Err(e) => Err(Error::Unseal(format!(
                    "cannot read sealing key {}: {e}",
                    path.display()
                ))),
            },
            Sealer::Gramine(root) => {
                let path = root.join("keys").join("_sgx_mrenclave");
                let raw =
                    Zeroizing::new(std::fs::read(&path).map_err(|e| {
                        Error::Unseal(format!("cannot read {}: {e}", path.display()))
                    })?);
                if raw.len() != 16 {
                    return Err(Error::Unseal(format!(
                        "{} must hold 16 bytes, has {}",
                        path.display(),
                        raw.len()
                    )));
                }
                let hk = Hkdf::<Sha256>::new(Some(b"coffer"), &raw);
                let mut k = Zeroizing::new([0u8; 32]);
                hk.expand(b"coffer state sealing key v1", k.as_mut())
                    .map_err(|_| Error::Unseal("HKDF expand failed".into()))?;
                Ok(k)
            }
        }
    }

    /// Seals `key` (creating the simulated key file if needed).
    pub fn seal(&self, key: &StateKey) -> Result<Vec<u8>, Error> {
        let sk = self.sealing_key(true)?;
        Ok(seal_value(&sk, SEAL_AAD, key.as_bytes()))
    }

    /// Unseals a blob made by [`Sealer::seal`] on this platform.
    pub fn unseal(&self, blob: &[u8]) -> Result<StateKey, Error> {
        let sk = self.sealing_key(false)?;
        let plain = open_value(&sk, SEAL_AAD, blob).ok_or_else(|| {
            Error::Unseal("the sealing key of this platform does not open the state key".into())
        })?;
        StateKey::from_slice(&plain)
    }

    /// Replaces the simulated key file by a fresh one (after recovery on "new hardware").
    pub fn reset(&self) -> Result<(), Error> {
        if let Sealer::KeyFile(path) = self {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::Unseal(format!(
                        "cannot replace {}: {e}",
                        path.display()
                    )))
                }
            }
        }
        Ok(())
    }
}

fn write_key_file(path: &std::path::Path, key: &[u8]) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::Unseal(format!("cannot create {}: {e}", tmp.display())))?;
    f.write_all(key)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_seals_and_loss_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sealer::KeyFile(dir.path().join("sealing.key"));
        let k = StateKey::generate();
        let blob = s.seal(&k).unwrap();
        assert_eq!(s.unseal(&blob).unwrap().as_bytes(), k.as_bytes());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("sealing.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        s.reset().unwrap();
        assert!(matches!(s.unseal(&blob), Err(Error::Unseal(_))));
    }

    #[test]
    fn gramine_key_is_derived_from_the_mrenclave_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::fs::write(dir.path().join("keys/_sgx_mrenclave"), [1u8; 16]).unwrap();
        let s = Sealer::Gramine(dir.path().to_path_buf());
        let k = StateKey::generate();
        let blob = s.seal(&k).unwrap();
        assert_eq!(s.unseal(&blob).unwrap().as_bytes(), k.as_bytes());
        std::fs::write(dir.path().join("keys/_sgx_mrenclave"), [2u8; 16]).unwrap();
        assert!(matches!(s.unseal(&blob), Err(Error::Unseal(_))));
    }
}
