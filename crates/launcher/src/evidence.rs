//! Evidence sources: Gramine's `/dev/attestation`, Linux configfs-tsm, and the simulated
//! platform.
//!
//! Each takes the 64 bytes of report data the activation binds (the CSR key's hash) and returns
//! a DCAP quote. The roots of the hardware interfaces are configurable so tests can lay out a
//! directory that behaves like them. The simulated platform is used only when asked for by name
//! (`COFFER_EVIDENCE=sim`); `auto` with no TEE interface present is an error, never a fall-back.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{Config, EvidenceChoice};
use crate::Error;

/// Largest quote accepted from a device (real DCAP quotes with their PCK chain are ~5–10 KiB).
pub const MAX_QUOTE: u64 = 1 << 20;

/// A chosen evidence source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Gramine's attestation pseudo-filesystem at this root.
    Gramine(PathBuf),
    /// Linux configfs-tsm report directory at this root.
    Tsm(PathBuf),
    /// The SIMULATED platform persisted in this directory (`sim-platform.json`).
    Sim(PathBuf),
}

impl Source {
    /// Short name used in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Gramine(_) => "gramine",
            Source::Tsm(_) => "tsm",
            Source::Sim(_) => "sim",
        }
    }

    /// Whether this source is the simulated platform.
    pub fn is_simulated(&self) -> bool {
        matches!(self, Source::Sim(_))
    }

    /// Chooses the source the configuration asks for. `auto` looks for Gramine first (an SGX
    /// enclave), then configfs-tsm (a TDX guest), and fails when neither is present.
    pub fn choose(config: &Config) -> Result<Self, Error> {
        match config.evidence {
            EvidenceChoice::Gramine => {
                if !gramine_present(&config.attestation_root) {
                    return Err(Error::evidence(
                        "gramine",
                        format!(
                            "{} has no user_report_data/quote: not running in a Gramine enclave \
                             with sgx.remote_attestation = \"dcap\"",
                            config.attestation_root.display()
                        ),
                    ));
                }
                Ok(Source::Gramine(config.attestation_root.clone()))
            }
            EvidenceChoice::Tsm => {
                if !config.tsm_root.is_dir() {
                    return Err(Error::evidence(
                        "tsm",
                        format!(
                            "{} is not a directory: configfs not mounted or the kernel has no \
                             TSM report support (CONFIG_TSM_REPORTS)",
                            config.tsm_root.display()
                        ),
                    ));
                }
                Ok(Source::Tsm(config.tsm_root.clone()))
            }
            EvidenceChoice::Sim => match &config.sim_dir {
                Some(d) => Ok(Source::Sim(d.clone())),
                None => Err(Error::Config(
                    "COFFER_EVIDENCE=sim needs COFFER_SIM_DIR".into(),
                )),
            },
            EvidenceChoice::Auto => {
                if gramine_present(&config.attestation_root) {
                    Ok(Source::Gramine(config.attestation_root.clone()))
                } else if config.tsm_root.is_dir() {
                    Ok(Source::Tsm(config.tsm_root.clone()))
                } else {
                    Err(Error::NoTee {
                        attestation: config.attestation_root.clone(),
                        tsm: config.tsm_root.clone(),
                    })
                }
            }
        }
    }
}

fn gramine_present(root: &Path) -> bool {
    root.join("user_report_data").exists() && root.join("quote").exists()
}

/// Reads at most `limit` bytes of `path`; more is an error naming the file.
pub(crate) fn read_bounded(path: &Path, limit: u64, who: &'static str) -> Result<Vec<u8>, Error> {
    let f = fs::File::open(path)
        .map_err(|e| Error::evidence(who, format!("open {}: {e}", path.display())))?;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::evidence(who, format!("read {}: {e}", path.display())))?;
    if buf.len() as u64 > limit {
        return Err(Error::evidence(
            who,
            format!("{} is larger than {limit} bytes", path.display()),
        ));
    }
    Ok(buf)
}

fn write_attr(path: &Path, data: &[u8], who: &'static str) -> Result<(), Error> {
    // Pseudo-files: open the existing attribute, never create one; one write() of the whole
    // value, as both Gramine and configfs expect.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::evidence(who, format!("open {} for writing: {e}", path.display())))?;
    f.write_all(data)
        .map_err(|e| Error::evidence(who, format!("write {}: {e}", path.display())))
}

/// Gramine: write `user_report_data` (64 bytes), read `quote`.
///
/// When `attestation_type` is present it must say `dcap` (Gramine writes `none` when the
/// manifest does not enable remote attestation, and then `quote` cannot work).
pub fn gramine_quote(root: &Path, report_data: &[u8; 64]) -> Result<Vec<u8>, Error> {
    let kind_path = root.join("attestation_type");
    if kind_path.exists() {
        let kind = read_bounded(&kind_path, 64, "gramine")?;
        let kind = String::from_utf8_lossy(&kind);
        if kind.trim() != "dcap" {
            return Err(Error::evidence(
                "gramine",
                format!(
                    "attestation type is {:?}; build the enclave with sgx.remote_attestation = \"dcap\"",
                    kind.trim()
                ),
            ));
        }
    }
    write_attr(&root.join("user_report_data"), report_data, "gramine")?;
    let quote = read_bounded(&root.join("quote"), MAX_QUOTE, "gramine")?;
    if quote.is_empty() {
        return Err(Error::evidence(
            "gramine",
            "the quote is empty (is the AESM/QE service reachable?)",
        ));
    }
    Ok(quote)
}

/// What a configfs-tsm report returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsmReport {
    /// The `provider` attribute (`tdx_guest`, `sev_guest`, …).
    pub provider: String,
    /// The `outblob` (a TDX DCAP quote for `tdx_guest`).
    pub outblob: Vec<u8>,
}

/// How long to wait for the attribute files of a fresh configfs-tsm entry. The kernel creates
/// them together with the directory, so on a real system the first look succeeds; the wait
/// only matters for a user-space stand-in (tests) that creates them after `mkdir`.
const TSM_ATTR_WAIT: Duration = Duration::from_secs(5);

/// configfs-tsm, as `Documentation/ABI/testing/configfs-tsm` describes it: create an entry
/// directory, write `inblob` (64 bytes), read `outblob` and `provider`, and check that
/// `generation` advanced by exactly one from before our write to after reading `outblob` (the
/// kernel increments it on every write to `inblob`; another writer on the entry would make the
/// outblob belong to someone else's inblob). The entry is removed afterwards.
pub fn tsm_report(root: &Path, inblob: &[u8; 64]) -> Result<TsmReport, Error> {
    let entry = root.join(format!("coffer-{}", uuid::Uuid::new_v4().simple()));
    fs::create_dir(&entry).map_err(|e| {
        Error::evidence(
            "tsm",
            format!("create report entry {}: {e}", entry.display()),
        )
    })?;
    let result = tsm_report_in(&entry, inblob);
    // configfs removes the attributes with the directory; a plain directory (a stand-in) keeps
    // its files and refuses, which is harmless.
    let _ = fs::remove_dir(&entry);
    result
}

fn read_generation(entry: &Path) -> Result<u64, Error> {
    let raw = read_bounded(&entry.join("generation"), 32, "tsm")?;
    String::from_utf8_lossy(&raw)
        .trim()
        .parse::<u64>()
        .map_err(|_| Error::evidence("tsm", "generation is not a number"))
}

fn tsm_report_in(entry: &Path, inblob: &[u8; 64]) -> Result<TsmReport, Error> {
    let start = Instant::now();
    while !entry.join("generation").exists() {
        if start.elapsed() > TSM_ATTR_WAIT {
            return Err(Error::evidence(
                "tsm",
                format!(
                    "{} has no generation attribute: not a configfs-tsm report entry",
                    entry.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let before = read_generation(entry)?;
    write_attr(&entry.join("inblob"), inblob, "tsm")?;
    let outblob = read_bounded(&entry.join("outblob"), MAX_QUOTE, "tsm")?;
    let after = read_generation(entry)?;
    if after != before.wrapping_add(1) {
        return Err(Error::evidence(
            "tsm",
            format!(
                "generation went from {before} to {after} around our inblob write: another writer \
                 used the report entry, so the outblob may not carry our report data; retry"
            ),
        ));
    }
    let provider = String::from_utf8_lossy(&read_bounded(&entry.join("provider"), 64, "tsm")?)
        .trim()
        .to_string();
    if outblob.is_empty() {
        return Err(Error::evidence(
            "tsm",
            format!("provider {provider} returned an empty outblob"),
        ));
    }
    Ok(TsmReport { provider, outblob })
}

/// Turns a configfs-tsm report into a quote the activation protocol can carry.
pub fn tsm_quote(root: &Path, report_data: &[u8; 64]) -> Result<Vec<u8>, Error> {
    let report = tsm_report(root, report_data)?;
    match report.provider.as_str() {
        "tdx_guest" => Ok(report.outblob),
        "sev_guest" => Err(Error::evidence(
            "tsm",
            "provider sev_guest (AMD SEV-SNP): the activation protocol carries DCAP quotes only so far",
        )),
        other => Err(Error::evidence("tsm", format!("unknown provider {other:?}"))),
    }
}
