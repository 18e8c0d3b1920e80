//! `coffer convert --tee sgx`: the Gramine manifest and SIGSTRUCT of a converted image.
//!
//! After the workload file is final, [`convert_sgx`] renders the Gramine manifest with
//! [`coffer_sgx::gramine`] (entrypoint `/coffer/launcher`; trusted files = the conversion's
//! trusted files plus `/coffer/workload.json`, each with its SHA-256; allowed files = the
//! `--allowed` paths and runtime mounts), measures MRENCLAVE with the given Gramine
//! `libpal.so`, signs the SIGSTRUCT and adds two files to the coffer layer:
//!
//! - [`GRAMINE_MANIFEST_PATH`] (`/coffer/gramine/coffer.manifest.sgx`): the measured manifest,
//!   byte for byte;
//! - [`GRAMINE_SIG_PATH`] (`/coffer/gramine/coffer.sig`): the 1808-byte SIGSTRUCT.
//!
//! MRENCLAVE/MRSIGNER go into the config labels and the report. The workload file's `sgx`
//! section stays empty on purpose: the manifest pins the workload file's SHA-256, so the file
//! cannot also carry the MRENCLAVE that depends on it.
//!
//! This computes what Gramine's signer (`gramine-sgx-sign`) computes for that `libpal.so`;
//! running the enclave needs that same Gramine installed (in the image or mounted from the
//! host at the LibOS path named in the manifest).

use coffer_sgx::gramine::{self, EnvValue, GramineInput, LayoutConstants};
use coffer_sgx::SigningKey;

use crate::convert::{convert_with, EnclaveOutput};
use crate::workload::{SgxInfo, WorkloadFile, WORKLOAD_PATH};
use crate::{ConvertOptions, ConvertReport, Digest, Error, Progress};

/// Where the signed Gramine manifest is written in the converted image.
pub const GRAMINE_MANIFEST_PATH: &str = "/coffer/gramine/coffer.manifest.sgx";
/// Where the SIGSTRUCT is written in the converted image.
pub const GRAMINE_SIG_PATH: &str = "/coffer/gramine/coffer.sig";
/// The default in-image path of Gramine's LibOS (Debian/Ubuntu packages).
pub const DEFAULT_LIBOS_PATH: &str = "/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so";

/// Launcher variables taken from the untrusted host: they only say where to reach the
/// Coordinator and how long to wait; everything they lead to is attested. Trust pins
/// (`COFFER_ROOT_CA`, `COFFER_COORDINATOR_MRENCLAVE`) and paths are never passed through.
const PASSTHROUGH_ENV: &[&str] = &[
    "COFFER_ACTIVATE_TIMEOUT",
    "COFFER_COORDINATOR",
    "COFFER_INSTANCE_ID",
];

/// What the Gramine step needs besides the conversion options.
#[derive(Debug, Clone)]
pub struct GramineOptions {
    /// The bytes of Gramine's `sgx/libpal.so` (the loader measured into the enclave).
    pub libpal: Vec<u8>,
    /// Gramine's LibOS: `(in-image path, SHA-256)`. If the image itself has a file at that path,
    /// its hash must be equal.
    pub libos: (String, [u8; 32]),
    /// The RSA-3072 (e = 3) key that signs the SIGSTRUCT.
    pub key: SigningKey,
    /// `sgx.enclave_size` (a power of two).
    pub enclave_size: u64,
    /// `sgx.max_threads`.
    pub max_threads: u32,
    /// `sgx.debug` (never for production).
    pub debug: bool,
}

/// SIGSTRUCT date from `SOURCE_DATE_EPOCH` (BCD `YYYYMMDD`), or 0 without one, so output is
/// reproducible.
pub fn sigstruct_date(source_date_epoch: Option<u64>) -> Result<u32, Error> {
    let Some(e) = source_date_epoch else {
        return Ok(0);
    };
    let t = i64::try_from(e)
        .ok()
        .and_then(|e| time::OffsetDateTime::from_unix_timestamp(e).ok())
        .ok_or_else(|| Error::Sgx(format!("SOURCE_DATE_EPOCH {e} is out of range")))?;
    let year = u16::try_from(t.year())
        .map_err(|_| Error::Sgx(format!("SOURCE_DATE_EPOCH {e} is out of range")))?;
    coffer_sgx::bcd_date(year, u8::from(t.month()), t.day()).map_err(sgx_err)
}

fn sgx_err(e: coffer_sgx::Error) -> Error {
    Error::Sgx(e.to_string())
}

/// The Gramine input for a final workload file (`wf_json` = its bytes as written).
pub fn gramine_input(
    wf: &WorkloadFile,
    wf_json: &[u8],
    g: &GramineOptions,
) -> Result<GramineInput, Error> {
    let mut trusted: Vec<(String, [u8; 32])> = wf
        .trusted_files
        .iter()
        .map(|t| (t.path.clone(), t.sha256.0))
        .collect();
    if let Some(t) = wf.trusted_files.iter().find(|t| t.path == g.libos.0) {
        if t.sha256.0 != g.libos.1 {
            return Err(Error::Sgx(format!(
                "the image's {} differs from the Gramine installation given with --gramine-dir; \
                 use the same Gramine version in both",
                g.libos.0
            )));
        }
    }
    trusted.push((WORKLOAD_PATH.to_string(), Digest::of(wf_json).0));
    for e in &wf.encrypted_files {
        trusted.push((e.path.clone(), e.sha256.0));
    }
    let mut allowed: Vec<String> = wf.allowed.clone();
    for m in &wf.runtime_mounts {
        // Runtime-mounted files under /etc (hosts, resolv.conf …) are files; the rest are
        // directories.
        if m.starts_with("/etc/") {
            allowed.push(m.clone());
        } else {
            allowed.push(format!("{}/", m.trim_end_matches('/')));
        }
    }
    Ok(GramineInput {
        libos: g.libos.clone(),
        args: Vec::new(),
        env: PASSTHROUGH_ENV
            .iter()
            .map(|n| (n.to_string(), EnvValue::Passthrough))
            .collect(),
        trusted_files: trusted,
        allowed_files: allowed,
        tmpfs: vec!["/tmp".into()],
        enclave_size: g.enclave_size,
        max_threads: g.max_threads,
        isv_prod_id: wf.isv_prod_id,
        isv_svn: wf.isv_svn,
        debug: g.debug,
    })
}

/// Converts an image and builds its Gramine enclave (see the module docs).
pub fn convert_sgx(
    opts: &ConvertOptions,
    g: &GramineOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<ConvertReport, Error> {
    if opts.sgx.is_some() {
        return Err(Error::Sgx(
            "ConvertOptions::sgx must be empty: convert_sgx computes MRENCLAVE/MRSIGNER itself"
                .into(),
        ));
    }
    let date = sigstruct_date(opts.source_date_epoch)?;
    let hook = |wf: &WorkloadFile, wf_json: &[u8]| -> Result<EnclaveOutput, Error> {
        let input = gramine_input(wf, wf_json, g)?;
        let built = gramine::build(
            &input,
            &g.libpal,
            &LayoutConstants::V1,
            &g.key,
            date,
            &mut coffer_sgx::rand_core::OsRng,
        )
        .map_err(sgx_err)?;
        Ok(EnclaveOutput {
            info: SgxInfo {
                mrenclave: Digest(built.measurement.mrenclave),
                mrsigner: Digest(built.sigstruct.mrsigner()),
            },
            files: vec![
                (GRAMINE_MANIFEST_PATH.into(), built.manifest.into_bytes()),
                (GRAMINE_SIG_PATH.into(), built.sigstruct.to_bytes().to_vec()),
            ],
        })
    };
    convert_with(opts, Some(&hook), progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{TrustedFile, FORMAT_VERSION};

    fn wf() -> WorkloadFile {
        let mut wf = WorkloadFile {
            format_version: FORMAT_VERSION,
            entrypoint: vec!["/bin/app".into()],
            cmd: vec![],
            env: vec![],
            working_dir: String::new(),
            user: String::new(),
            trusted_files: vec![
                TrustedFile {
                    path: "/bin/app".into(),
                    sha256: Digest::of(b"app"),
                    size: 3,
                    mode: 0o755,
                },
                TrustedFile {
                    path: DEFAULT_LIBOS_PATH.into(),
                    sha256: Digest::of(b"libos"),
                    size: 5,
                    mode: 0o644,
                },
            ],
            symlinks: vec![],
            allowed: vec!["/data/**".into()],
            runtime_mounts: vec!["/proc".into(), "/etc/hosts".into()],
            encrypted_files: vec![],
            isv_prod_id: 1,
            isv_svn: 2,
            image_measurement: Digest::default(),
            sgx: None,
        };
        wf.seal();
        wf
    }

    fn opts(libos_hash: [u8; 32]) -> GramineOptions {
        GramineOptions {
            libpal: Vec::new(),
            libos: (DEFAULT_LIBOS_PATH.into(), libos_hash),
            // Any valid key: the input step does not sign. The vector key avoids keygen.
            key: SigningKey::from_pem_bytes(include_bytes!(
                "../../../testdata/vectors/sgx-sign/encl.pem"
            ))
            .unwrap(),
            enclave_size: 1 << 30,
            max_threads: 16,
            debug: false,
        }
    }

    #[test]
    fn input_pins_workload_file_and_lists_mounts() {
        let wf = wf();
        let json = wf.to_json();
        let i = gramine_input(&wf, &json, &opts(Digest::of(b"libos").0)).unwrap();
        assert!(i
            .trusted_files
            .contains(&(WORKLOAD_PATH.to_string(), Digest::of(&json).0)));
        assert!(i.allowed_files.contains(&"/proc/".to_string()));
        assert!(i.allowed_files.contains(&"/etc/hosts".to_string()));
        assert_eq!((i.isv_prod_id, i.isv_svn), (1, 2));
        let text = gramine::render_manifest(&i).unwrap();
        assert!(text.contains("\"file:/data/\""));
    }

    #[test]
    fn libos_differing_from_the_image_is_refused() {
        let wf = wf();
        let e = gramine_input(&wf, &wf.to_json(), &opts([0; 32])).unwrap_err();
        assert_eq!(e.kind(), "sgx");
        assert!(e.to_string().contains(DEFAULT_LIBOS_PATH), "{e}");
    }

    #[test]
    fn sigstruct_date_follows_source_date_epoch() {
        assert_eq!(sigstruct_date(None).unwrap(), 0);
        assert_eq!(sigstruct_date(Some(0)).unwrap(), 0x1970_0101);
        assert_eq!(sigstruct_date(Some(1_700_000_000)).unwrap(), 0x2023_1114);
        assert_eq!(sigstruct_date(Some(u64::MAX)).unwrap_err().kind(), "sgx");
    }
}
