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

use base64::Engine as _;
use coffer_api::{Evidence, EvidenceFormat};

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
    /// The `outblob` (a TDX DCAP quote for `tdx_guest`, an SNP attestation report for
    /// `sev_guest`).
    pub outblob: Vec<u8>,
    /// The `auxblob`, when the provider has one (`sev_guest`: the host's certificate table).
    pub auxblob: Option<Vec<u8>>,
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
    let aux = entry.join("auxblob");
    let auxblob = if aux.exists() {
        Some(read_bounded(&aux, MAX_QUOTE, "tsm")?)
    } else {
        None
    };
    Ok(TsmReport {
        provider,
        outblob,
        auxblob,
    })
}

/// A DCAP quote as activation evidence.
pub fn dcap(quote: &[u8]) -> Evidence {
    Evidence {
        format: EvidenceFormat::DcapQuote,
        data: base64::engine::general_purpose::STANDARD.encode(quote),
        certificates: Vec::new(),
    }
}

/// A configfs-tsm report as activation evidence: a TDX quote, or an SEV-SNP report with the
/// certificates of the host's table (the Coordinator verifies them up to AMD's root).
pub fn tsm_evidence(root: &Path, report_data: &[u8; 64]) -> Result<Evidence, Error> {
    let report = tsm_report(root, report_data)?;
    match report.provider.as_str() {
        "tdx_guest" => Ok(dcap(&report.outblob)),
        "sev_guest" => {
            let table = report.auxblob.as_deref().unwrap_or_default();
            let certificates = snp_certificates(table)?;
            let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
            Ok(Evidence {
                format: EvidenceFormat::SnpReport,
                data: b64(&report.outblob),
                certificates: certificates.iter().map(|c| b64(c)).collect(),
            })
        }
        other => Err(Error::evidence(
            "tsm",
            format!("unknown provider {other:?}"),
        )),
    }
}

/// GUIDs of the SNP certificate table (GHCB specification, "SNP Extended Guest Request"), as
/// written: the wire carries these bytes in this order.
const VCEK_GUID: u128 = 0x63da758d_e664_4564_adc5_f4b93be8accd;
const VLEK_GUID: u128 = 0xa8074bc2_a25a_483e_aae6_39c045a0b8a1;
const ASK_GUID: u128 = 0x4ab7b379_bbac_4fe4_a02f_05aef327c782;
const ARK_GUID: u128 = 0xc0b406a4_a803_4952_9743_3fb6014cd0ae;

/// The VCEK (or VLEK), ASK and ARK of an SNP certificate table: entries of a 16-byte GUID, a
/// 4-byte offset and a 4-byte length (little-endian, from the table's start), ended by an
/// all-zero entry. Entries this launcher has no use for are skipped; a missing or repeated
/// certificate, or an entry outside the table, is an error that says what the host must fix.
pub fn snp_certificates(table: &[u8]) -> Result<[Vec<u8>; 3], Error> {
    let bad = |m: String| Error::evidence("tsm", format!("SNP certificate table: {m}"));
    let (mut vek, mut ask, mut ark) = (None, None, None);
    let mut at = 0;
    loop {
        let entry = table
            .get(at..at + 24)
            .ok_or_else(|| bad(format!("no terminating entry before byte {}", table.len())))?;
        at += 24;
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&entry[..16]);
        let guid = u128::from_be_bytes(guid);
        let offset = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]) as usize;
        let len = u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]) as usize;
        if guid == 0 {
            break;
        }
        let slot = match guid {
            VCEK_GUID | VLEK_GUID => &mut vek,
            ASK_GUID => &mut ask,
            ARK_GUID => &mut ark,
            _ => continue,
        };
        let der = offset
            .checked_add(len)
            .and_then(|end| table.get(offset..end))
            .ok_or_else(|| {
                bad(format!(
                    "entry {:032x} ({len} bytes at {offset}) lies outside the {}-byte table",
                    guid,
                    table.len()
                ))
            })?;
        if slot.replace(der.to_vec()).is_some() {
            return Err(bad(format!("certificate {guid:032x} appears twice")));
        }
    }
    match (vek, ask, ark) {
        (Some(vek), Some(ask), Some(ark)) => Ok([vek, ask, ark]),
        (vek, ask, ark) => Err(bad(format!(
            "it lacks {}: the host must provide the VCEK (or VLEK), ASK and ARK (e.g. \
             `snphost import`, or the hypervisor's SNP certificate setting)",
            [
                ("the VCEK/VLEK", vek.is_none()),
                ("the ASK", ask.is_none()),
                ("the ARK", ark.is_none())
            ]
            .iter()
            .filter(|(_, missing)| *missing)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
        ))),
    }
}

#[cfg(test)]
mod snp_table_tests {
    use super::*;

    fn table(entries: &[(u128, &[u8])]) -> Vec<u8> {
        let head = 24 * (entries.len() + 1);
        let mut t = Vec::new();
        let mut body = Vec::new();
        for (guid, der) in entries {
            t.extend_from_slice(&guid.to_be_bytes());
            t.extend_from_slice(&((head + body.len()) as u32).to_le_bytes());
            t.extend_from_slice(&(der.len() as u32).to_le_bytes());
            body.extend_from_slice(der);
        }
        t.extend_from_slice(&[0; 24]);
        t.extend_from_slice(&body);
        t
    }

    #[test]
    fn the_three_certificates_are_found_in_any_order() {
        let other = 0x92f81bc3_5811_4d3d_97ff_d19f88dc67ea; // AMD's CRL entry: skipped
        let t = table(&[
            (ARK_GUID, b"ark"),
            (other, b"crl"),
            (VCEK_GUID, b"vcek"),
            (ASK_GUID, b"ask"),
        ]);
        let [vek, ask, ark] = snp_certificates(&t).unwrap();
        assert_eq!(
            (&vek[..], &ask[..], &ark[..]),
            (&b"vcek"[..], &b"ask"[..], &b"ark"[..])
        );
        let t = table(&[(VLEK_GUID, b"vlek"), (ASK_GUID, b"ask"), (ARK_GUID, b"ark")]);
        assert_eq!(snp_certificates(&t).unwrap()[0], b"vlek");
    }

    #[test]
    fn a_bad_table_says_what_is_wrong() {
        let err = |t: &[u8]| snp_certificates(t).unwrap_err().to_string();
        assert!(err(&[]).contains("no terminating entry"));
        assert!(err(&table(&[(VCEK_GUID, b"v")])).contains("lacks the ASK, the ARK"));
        let twice = table(&[(ASK_GUID, b"a"), (ASK_GUID, b"b"), (ARK_GUID, b"c")]);
        assert!(err(&twice).contains("twice"));
        let mut outside = table(&[(VCEK_GUID, b"v"), (ASK_GUID, b"a"), (ARK_GUID, b"r")]);
        outside[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(err(&outside).contains("outside"));
    }
}
