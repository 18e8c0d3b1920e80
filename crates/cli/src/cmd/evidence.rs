//! `coffer evidence …`: parse, verify and simulate DCAP quotes; verify SEV-SNP reports.
//!
//! Glue only: reading files, fetching collateral (`coffer-pccs`), printing. Parsing and every
//! verification check live in `coffer-evidence`, which does no I/O.
//!
//! Output contract (outside checks rely on it): `verify` exits 0 and, with `--json`, prints one
//! object with `tee`, `quote_version`, `tcb_status` (Intel spelling), `advisory_ids`,
//! `report_data`, `debug`, `tcb_date` (of the matched level), `tcb_evaluation_data_number`, the
//! measurement (`mrenclave`, `mrsigner`, `isv_prod_id`, `isv_svn` for SGX; `mrtd`,
//! `rtmr0`..`rtmr3`, `mrconfigid`, `mrseam`, `xfam`, `tee_tcb_svn`, `mrservicetd` (null before
//! quote v5) for TDX), hex in lower case. A refusal exits 1 with
//! `{"error":{"kind","message"}}`, `kind` being the evidence crate's `ErrorKind` in snake case.
//!
//! `verify --tee snp --quote REPORT --collateral DIR` verifies an AMD SEV-SNP report (raw 1184
//! bytes or hex) against the KDS certificates in DIR (`vcek.der` or `vlek.der`, `ask.pem` or
//! `asvk.pem`, `ark.pem`, optional `crl.der`) under AMD's pinned ARKs; with `--json` it prints
//! `tee: "snp"`, `report_version`, `product`, `signer` (`vcek`/`vlek`), `measurement`,
//! `host_data`, `report_data`, `chip_id`, `policy` (16 hex digits), `debug`, `migrate_ma`,
//! `smt_allowed`, `vmpl`, `guest_svn`, `family_id`, `image_id`, `id_key_digest`,
//! `author_key_digest`, `reported_tcb` (an object), `crl_checked`, `verified_at`; exit status
//! and errors as for DCAP.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use coffer_evidence::sim::{SgxQuoteSpec, SimPlatform, TdxQuoteSpec};
use coffer_evidence::{Collateral, Measurement, Quote, QuoteBody, Tee, TrustAnchors, Verified};
use serde_json::{json, Map, Value};

use crate::output::{print_json, Failure};
use crate::Global;

/// Largest quote file read (real quotes are a few KiB; TDX quotes with long chains stay far below).
const QUOTE_FILE_LIMIT: u64 = 1 << 20;
/// Largest collateral / PEM file read.
const SMALL_FILE_LIMIT: u64 = 16 << 20;
/// The simulated platform's file name inside its directory (shared with the Coordinator and the
/// launcher, see HELPERS.md).
const SIM_PLATFORM_FILE: &str = "sim-platform.json";

/// `coffer evidence --help`: examples across the subcommands.
pub(crate) const GROUP_HELP: &str = "EXAMPLES:
    A simulated SGX quote, made and verified end to end ($M: an MRENCLAVE, 64 hex digits):
        coffer evidence sim-platform --dir ./sim
        coffer evidence sim-quote --sim-dir ./sim --tee sgx --mrenclave $M --out app.quote
        coffer evidence sim-collateral --sim-dir ./sim --out sim-collateral.json \\
            --root-out sim-root.pem
        coffer evidence verify --quote app.quote --collateral sim-collateral.json \\
            --trust-root sim-root.pem

    What a quote claims, without verifying it:
        coffer evidence inspect --quote app.quote

    A hardware quote against Intel's PCS (the collateral is cached for offline use):
        coffer evidence verify --quote quote.bin --pccs-url https://api.trustedservices.intel.com";

/// Subcommands of `coffer evidence`.
#[derive(Debug, Subcommand)]
pub(crate) enum EvidenceCmd {
    /// Verify a DCAP quote (SGX v3/v4, TDX v4/v5) against Intel collateral.
    #[command(after_help = "EXAMPLES:
    coffer evidence verify --quote quote.bin --collateral collateral.json
    coffer --json evidence verify --quote q.hex --collateral c.json --now 2025-06-20T00:00:00Z
    coffer evidence verify --quote quote.bin --pccs-url https://pccs.example:8081
    coffer evidence verify --quote quote.bin --pccs-url https://api.trustedservices.intel.com
    coffer evidence verify --quote quote.bin --pccs-url https://pccs:8081 --pccs-tls-root ca.pem
    coffer evidence verify --quote quote.bin --collateral-dir ./collateral-cache --now 1750420800
    coffer --json evidence verify --tee snp --quote report.bin --collateral ./kds --now 1700000000
    coffer evidence verify --quote app.quote --collateral sim-collateral.json \\
        --trust-root sim-root.pem

The quote file holds raw bytes or hex (an optional 0x prefix and surrounding whitespace are
allowed). Collateral comes from a JSON file (the dcap-qvl shape), from a PCS/PCCS (--pccs-url;
items are cached in --pccs-cache and served from there while valid, so an unreachable service
does not stop verification), or from an offline directory (--collateral-dir: DIR/<fmspc>.json,
else DIR/collateral.json, else the --pccs-cache layout; `coffer coordinator` and the client
commands read the same). The Intel SGX Root CA is pinned; --trust-root replaces it (the
simulated platform's root, or a test root). The last example checks the quote that
`coffer evidence sim-quote --help` makes. Exit status 0 verified, 1 refused (the message names
the failed check).")]
    Verify(VerifyArgs),
    /// Parse a quote and print its fields, without verifying anything.
    #[command(after_help = "EXAMPLES:
    coffer evidence inspect --quote quote.bin
    coffer --json evidence inspect --quote quote.hex

Nothing is verified: the values are what the quote claims. Use `coffer evidence verify` to check
them.")]
    Inspect(InspectArgs),
    /// SIMULATION: produce a quote from the simulated platform with a chosen measurement.
    #[command(after_help = "EXAMPLES:
    coffer evidence sim-quote --sim-dir ./sim --tee sgx \\
        --mrenclave $(sha256sum app.bin | cut -c1-64) --out app.quote
    coffer evidence sim-quote --sim-dir ./sim --tee sgx --mrenclave $M --mrsigner $S \\
        --isv-prod-id 1 --isv-svn 2 --out app.quote
    coffer evidence sim-quote --sim-dir ./sim --tee tdx --mrtd $(printf 11%.0s $(seq 48)) \\
        --out td.quote
    coffer evidence sim-quote --sim-dir ./sim --tee snp --measurement $M48 --host-data $H32 \\
        --out guest.report --collateral-out snp-collateral
    coffer evidence verify --tee snp --quote guest.report --collateral snp-collateral \\
        --trust-root snp-collateral/ark.pem

The quote is in the real DCAP byte format (SGX v3, TDX v4), or AMD's report format (SEV-SNP v3), but
signed by the SIMULATED platform: it verifies only with the simulation root as trust anchor (see
sim-collateral --root-out; for SNP the ark.pem --collateral-out writes) and is refused under Intel's
and AMD's roots. Give sim-collateral the same --sim-dir. Without --sim-dir the
platform in the default directory is used (created on first use). Hashes are hex; --report-data
is exactly 64 bytes (default zeros). --mrenclave, --mrsigner, --isv-prod-id and --isv-svn are
refused with --tee tdx; --mrtd and --rtmr0..--rtmr3 with --tee sgx.")]
    SimQuote(Box<SimQuoteArgs>),
    /// SIMULATION: write the simulated platform's collateral (and its root certificate).
    #[command(after_help = "EXAMPLES:
    coffer evidence sim-collateral --sim-dir ./sim --out sim-collateral.json --root-out sim-root.pem
    coffer evidence sim-collateral --sim-dir ./sim --tee tdx --now 2026-01-01T00:00:00Z \\
        --out td-collateral.json

The collateral (dcap-qvl JSON shape) is valid around --now (default: the current time). Use the
--sim-dir the quotes came from (without it, the default directory, as for sim-quote). The root
certificate written with --root-out is what `verify --trust-root` needs to accept simulated quotes.")]
    SimCollateral(SimCollateralArgs),
    /// SIMULATION: create (or show) a persisted simulated platform in a directory.
    #[command(after_help = "EXAMPLES:
    coffer evidence sim-platform --dir ./sim
    coffer evidence sim-platform --dir ./sim --force
    coffer evidence sim-platform --dir ./sim --seed $(openssl rand -hex 32)

Writes DIR/sim-platform.json (mode 0600: it holds the simulated platform's private keys). Every
part of a simulated deployment must use the same file:
    the Coordinator                 coffer coordinator --simulation --sim-dir DIR
    clients that attest it          --allow-simulation --sim-dir DIR (or COFFER_SIM_DIR=DIR)
    the launcher in a workload      COFFER_EVIDENCE=sim and COFFER_SIM_DIR=DIR, the directory
                                    as the launcher sees it (`coffer run --sim-dir DIR` sets both)
    simulated quotes, collateral    coffer evidence sim-quote / sim-collateral --sim-dir DIR

An existing platform is kept unless --force, which replaces it (evidence made with the old one no
longer verifies). --seed on a directory that already has a platform succeeds only if the platform
is the one that seed makes; a different one is refused, naming the file (add --force to replace
it).")]
    SimPlatform(SimPlatformArgs),
}

/// `coffer evidence verify`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["collateral", "pccs_url", "collateral_dir"])))]
pub(crate) struct VerifyArgs {
    /// The quote (for --tee snp: the 1184-byte attestation report): raw bytes or hex.
    #[arg(long, value_name = "FILE")]
    quote: PathBuf,
    /// The TEE: sgx or tdx (DCAP quotes; the default, read from the quote), or snp (an AMD
    /// SEV-SNP attestation report, with --collateral DIR).
    #[arg(long, value_enum)]
    tee: Option<VerifyTee>,
    /// Collateral JSON (dcap-qvl shape: PEM chains, hex CRLs, signed JSON, hex signatures).
    /// With --tee snp a directory: vcek.der or vlek.der, ask.pem or asvk.pem, ark.pem (PEM or
    /// DER, as AMD's KDS serves them) and optionally crl.der.
    #[arg(long, value_name = "FILE|DIR")]
    collateral: Option<PathBuf>,
    /// Fetch collateral from this PCS/PCCS v4 base URL.
    #[arg(long, value_name = "URL")]
    pccs_url: Option<String>,
    #[arg(long, value_name = "DIR", help = concat!(
        "Read collateral from this offline directory, no network: ",
        collateral_dir_layout!()
    ))]
    collateral_dir: Option<PathBuf>,
    /// Cache directory for --pccs-url [default: $XDG_CACHE_HOME/coffer/pccs or ~/.cache/coffer/pccs].
    #[arg(long, value_name = "DIR", requires = "pccs_url")]
    pccs_cache: Option<PathBuf>,
    /// Do not use a cache with --pccs-url.
    #[arg(long, requires = "pccs_url", conflicts_with = "pccs_cache")]
    no_pccs_cache: bool,
    /// Root CA CRL URL for --pccs-url [default: Intel's for Intel's PCS, else {URL}/sgx/certification/v4/rootcacrl].
    #[arg(long, value_name = "URL", requires = "pccs_url")]
    root_ca_crl_url: Option<String>,
    /// Trust only these CA certificates (PEM) for the PCCS's HTTPS certificate (a PCCS with its
    /// own CA); collateral is signed by Intel either way.
    #[arg(long, value_name = "PEM", requires = "pccs_url")]
    pccs_tls_root: Option<PathBuf>,
    /// Refuse TCB info, QE identity and PCK CRL from --pccs-url issued longer ago than this
    /// many hours (cached copies are fetched again an hour before).
    #[arg(long, value_name = "HOURS", requires = "pccs_url", value_parser = clap::value_parser!(u32).range(1..=8760))]
    collateral_max_age: Option<u32>,
    /// Time limit per PCS/PCCS request, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10,
        requires = "pccs_url"
    )]
    pccs_timeout: u64,
    /// Verify as of this time: Unix seconds or RFC 3339 [default: now].
    #[arg(long, value_name = "UNIX|RFC3339", value_parser = parse_now)]
    now: Option<i64>,
    /// Trust this root certificate (PEM) instead of the pinned Intel SGX Root CA (with
    /// --tee snp: this ARK instead of AMD's, e.g. the simulated machine's ark.pem).
    #[arg(long, value_name = "PEM")]
    trust_root: Option<PathBuf>,
}

/// The TEE `verify --tee` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum VerifyTee {
    /// An SGX DCAP quote.
    Sgx,
    /// A TDX DCAP quote.
    Tdx,
    /// An AMD SEV-SNP attestation report.
    Snp,
}

/// `coffer evidence inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The quote (or SEV-SNP attestation report): raw bytes or hex.
    #[arg(long, value_name = "FILE")]
    quote: PathBuf,
    /// What the file holds: sgx or tdx (a DCAP quote; the default), or snp (a report).
    #[arg(long, value_enum)]
    tee: Option<VerifyTee>,
}

/// Which TEE a simulated quote comes from.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SimTee {
    /// An SGX enclave (DCAP quote v3).
    Sgx,
    /// A TDX trust domain (quote v4).
    Tdx,
    /// An SEV-SNP guest (attestation report v3, Milan).
    Snp,
}

/// Where the simulated platform lives.
#[derive(Debug, Args)]
pub(crate) struct SimDir {
    /// Directory of the simulated platform [default: $XDG_DATA_HOME/coffer/sim or ~/.local/share/coffer/sim].
    #[arg(long, value_name = "DIR")]
    sim_dir: Option<PathBuf>,
}

/// `coffer evidence sim-quote`.
#[derive(Debug, Args)]
pub(crate) struct SimQuoteArgs {
    /// The TEE to simulate.
    #[arg(long, value_enum)]
    tee: SimTee,
    /// MRENCLAVE (SGX), 32 bytes hex.
    #[arg(long, value_name = "HEX", value_parser = parse_hex::<32>, required_if_eq("tee", "sgx"))]
    mrenclave: Option<[u8; 32]>,
    /// MRSIGNER (SGX), 32 bytes hex [default: zeros].
    #[arg(long, value_name = "HEX", value_parser = parse_hex::<32>)]
    mrsigner: Option<[u8; 32]>,
    /// ISVPRODID (SGX).
    #[arg(long, value_name = "N", default_value_t = 0)]
    isv_prod_id: u16,
    /// ISVSVN (SGX).
    #[arg(long, value_name = "N", default_value_t = 0)]
    isv_svn: u16,
    /// Set the DEBUG attribute.
    #[arg(long)]
    debug: bool,
    /// Report data, exactly 64 bytes hex [default: zeros].
    #[arg(long, value_name = "HEX", value_parser = parse_hex::<64>)]
    report_data: Option<[u8; 64]>,
    /// MRTD (TDX), 48 bytes hex [default: zeros].
    #[arg(long, value_name = "HEX", value_parser = parse_hex::<48>)]
    mrtd: Option<[u8; 48]>,
    /// RTMR0 (TDX), 48 bytes hex [default: zeros].
    #[arg(long, value_name = "HEX", value_parser = parse_hex::<48>)]
    rtmr0: Option<[u8; 48]>,
    /// RTMR1 (TDX), 48 bytes hex [default: zeros].
    #[arg(long, value_name = "HEX", value_parser = parse_hex::<48>)]
    rtmr1: Option<[u8; 48]>,
    /// RTMR2 (TDX), 48 bytes hex [default: zeros].
    #[arg(long, value_name = "HEX", value_parser = parse_hex::<48>)]
    rtmr2: Option<[u8; 48]>,
    /// RTMR3 (TDX), 48 bytes hex [default: zeros].
    #[arg(long, value_name = "HEX", value_parser = parse_hex::<48>)]
    rtmr3: Option<[u8; 48]>,
    /// MEASUREMENT (SEV-SNP), 48 bytes hex [default: zeros].
    #[arg(long, value_name = "HEX", value_parser = parse_hex::<48>)]
    measurement: Option<[u8; 48]>,
    /// HOST_DATA (SEV-SNP), 32 bytes hex [default: zeros].
    #[arg(long, value_name = "HEX", value_parser = parse_hex::<32>)]
    host_data: Option<[u8; 32]>,
    /// SEV-SNP: write vcek.der, ask.pem, ark.pem and crl.der (valid around now) here, the
    /// directory `verify --tee snp --collateral` reads.
    #[arg(long, value_name = "DIR")]
    collateral_out: Option<PathBuf>,
    #[command(flatten)]
    sim: SimDir,
    /// Where to write the quote (raw bytes).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Flags of `sim-quote` that only one TEE's quote has: (argument id, flag).
const SGX_ONLY: [(&str, &str); 4] = [
    ("mrenclave", "--mrenclave"),
    ("mrsigner", "--mrsigner"),
    ("isv_prod_id", "--isv-prod-id"),
    ("isv_svn", "--isv-svn"),
];
const TDX_ONLY: [(&str, &str); 5] = [
    ("mrtd", "--mrtd"),
    ("rtmr0", "--rtmr0"),
    ("rtmr1", "--rtmr1"),
    ("rtmr2", "--rtmr2"),
    ("rtmr3", "--rtmr3"),
];
const SNP_ONLY: [(&str, &str); 3] = [
    ("measurement", "--measurement"),
    ("host_data", "--host-data"),
    ("collateral_out", "--collateral-out"),
];

/// `sim-quote` with a flag of the other TEE (e.g. `--tee tdx --mrenclave …`): the message for
/// the usage error, naming both flags. clap has no conflict that depends on a value.
pub(crate) fn sim_quote_conflict(m: &clap::ArgMatches) -> Option<String> {
    let given = |id: &str| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let tee = m.get_one::<SimTee>("tee")?;
    let (foreign, tee_name, own) = match tee {
        SimTee::Sgx => (
            [&TDX_ONLY[..], &SNP_ONLY[..]],
            "sgx",
            "an SGX quote takes --mrenclave, --mrsigner, --isv-prod-id, --isv-svn",
        ),
        SimTee::Tdx => (
            [&SGX_ONLY[..], &SNP_ONLY[..]],
            "tdx",
            "a TDX quote takes --mrtd, --rtmr0..--rtmr3",
        ),
        SimTee::Snp => (
            [&SGX_ONLY[..], &TDX_ONLY[..]],
            "snp",
            "an SEV-SNP report takes --measurement, --host-data, --collateral-out",
        ),
    };
    let (_, flag) = foreign.concat().into_iter().find(|(id, _)| given(id))?;
    Some(format!(
        "the argument '{flag}' cannot be used with '--tee {tee_name}': it is a field of the \
         other TEE's quote ({own})"
    ))
}

/// `coffer evidence sim-collateral`.
#[derive(Debug, Args)]
pub(crate) struct SimCollateralArgs {
    /// Collateral for this TEE's quotes (TDX needs TCB info "TDX" and QE identity "TD_QE").
    #[arg(long, value_enum, default_value = "sgx")]
    tee: SimTee,
    #[command(flatten)]
    sim: SimDir,
    /// The collateral is valid around this time: Unix seconds or RFC 3339 [default: now].
    #[arg(long, value_name = "UNIX|RFC3339", value_parser = parse_now)]
    now: Option<i64>,
    /// Where to write the collateral JSON.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Where to write the simulated root CA certificate (PEM), for `verify --trust-root`.
    #[arg(long, value_name = "PEM")]
    root_out: Option<PathBuf>,
}

/// `coffer evidence sim-platform`.
#[derive(Debug, Args)]
pub(crate) struct SimPlatformArgs {
    /// Directory to hold `sim-platform.json`.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Derive the platform from this 32-byte seed (hex) instead of fresh randomness. A platform
    /// already in DIR must be this seed's (else refused) unless --force.
    #[arg(long, value_name = "HEX", value_parser = parse_hex::<32>)]
    seed: Option<[u8; 32]>,
    /// Replace an existing platform.
    #[arg(long)]
    force: bool,
}

/// Runs `coffer evidence …`.
pub(crate) fn run(cmd: EvidenceCmd, global: Global) -> anyhow::Result<ExitCode> {
    match cmd {
        EvidenceCmd::Verify(a) => verify(a, global),
        EvidenceCmd::Inspect(a) => inspect(a, global),
        EvidenceCmd::SimQuote(a) => sim_quote(*a, global),
        EvidenceCmd::SimCollateral(a) => sim_collateral(a, global),
        EvidenceCmd::SimPlatform(a) => sim_platform(a, global),
    }
}

// ---------------------------------------------------------------------------------------------
// verify

fn verify(a: VerifyArgs, global: Global) -> anyhow::Result<ExitCode> {
    let now = match a.now {
        Some(t) => t,
        None => unix_now()?,
    };
    let quote_bytes = read_quote(&a.quote)?;
    if a.tee == Some(VerifyTee::Snp) {
        return verify_snp(&a, &quote_bytes, now, global);
    }
    let anchors = match &a.trust_root {
        Some(path) => {
            let pem = read_text(path, "trust root")?;
            TrustAnchors::from_pem(&pem).map_err(|e| {
                Failure::new(
                    e.kind().as_str(),
                    format!("trust root {}: {e}", path.display()),
                )
            })?
        }
        None => TrustAnchors::intel(),
    };

    let mut source = Map::new();
    // A collateral JSON: --collateral, or the one an offline directory holds for this quote
    // (the same lookup as the Coordinator's --collateral-dir).
    let collateral_file = match (&a.collateral, &a.collateral_dir) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(dir)) => {
            coffer_coordinator::platform::offline_collateral_file(dir, &quote_bytes)
        }
        (None, None) => None,
    };
    let collateral = if let Some(path) = &collateral_file {
        let bytes = read_limited(path, SMALL_FILE_LIMIT, "collateral")?;
        match &a.collateral_dir {
            Some(dir) if a.collateral.is_none() => {
                source.insert("source".into(), json!("offline"));
                source.insert("dir".into(), json!(dir.display().to_string()));
            }
            _ => {
                source.insert("source".into(), json!("file"));
            }
        }
        source.insert("file".into(), json!(path.display().to_string()));
        Collateral::from_json(&bytes).map_err(|e| {
            Failure::new(
                e.kind().as_str(),
                format!("collateral {}: {e}", path.display()),
            )
        })?
    } else {
        let quote = Quote::parse(&quote_bytes).map_err(refused)?;
        let req = coffer_pccs::CollateralRequest::for_quote(&quote).map_err(unavailable)?;
        let fetch_source = if let Some(url) = &a.pccs_url {
            let mut cfg = coffer_pccs::PccsConfig::new(url.clone());
            cfg.timeout = std::time::Duration::from_secs(a.pccs_timeout.max(1));
            cfg.root_ca_crl_url = a.root_ca_crl_url.clone();
            cfg.max_age = a
                .collateral_max_age
                .map(|h| std::time::Duration::from_secs(u64::from(h) * 3600));
            if let Some(p) = &a.pccs_tls_root {
                cfg.tls_roots_pem = Some(read_text(p, "PCCS TLS root")?);
            }
            cfg.cache_dir = if a.no_pccs_cache {
                None
            } else {
                a.pccs_cache
                    .clone()
                    .or_else(|| default_dir("XDG_CACHE_HOME", ".cache", "pccs"))
            };
            source.insert("source".into(), json!("pccs"));
            source.insert("url".into(), json!(url));
            if let Some(d) = &cfg.cache_dir {
                source.insert("cache".into(), json!(d.display().to_string()));
            }
            coffer_pccs::CollateralSource::online(cfg).map_err(unavailable)?
        } else {
            let dir = a.collateral_dir.clone().unwrap_or_default();
            source.insert("source".into(), json!("offline"));
            source.insert("dir".into(), json!(dir.display().to_string()));
            coffer_pccs::CollateralSource::offline(dir)
        };
        let fetched = fetch_source
            .fetch(&req, now)
            .map_err(|e| match &a.collateral_dir {
                Some(dir) => Failure::new(
                    "collateral_unavailable",
                    format!(
                        "--collateral-dir {} has no {}.json or collateral.json, and {e}",
                        dir.display(),
                        hex::encode(req.fmspc)
                    ),
                )
                .into(),
                None => unavailable(e),
            })?;
        for w in &fetched.warnings {
            eprintln!("warning: {w}");
        }
        source.insert("items".into(), serde_json::to_value(&fetched.items)?);
        fetched.to_collateral().map_err(|e| {
            Failure::new(
                e.kind().as_str(),
                format!("collateral from {}: {e}", fetch_source.service()),
            )
        })?
    };

    let verified =
        coffer_evidence::verify(&quote_bytes, &collateral, &anchors, now).map_err(refused)?;
    let quote_tee = match verified.tee {
        Tee::Sgx => VerifyTee::Sgx,
        Tee::Tdx => VerifyTee::Tdx,
    };
    if let Some(t) = a.tee.filter(|t| *t != quote_tee) {
        return Err(Failure::new(
            "policy_mismatch",
            format!(
                "--tee {} but the quote is a {} quote",
                format!("{t:?}").to_lowercase(),
                verified.tee
            ),
        )
        .into());
    }
    let custom_root = a.trust_root.is_some();
    let out = verified_json(&verified, now, custom_root, Value::Object(source));
    if global.json {
        print_json(&out)?;
    } else {
        print_verified_text(&verified, now, custom_root);
    }
    Ok(ExitCode::SUCCESS)
}

/// `verify --tee snp`: the report against the VEK chain in the `--collateral` directory.
fn verify_snp(a: &VerifyArgs, report: &[u8], now: i64, global: Global) -> anyhow::Result<ExitCode> {
    use coffer_evidence::snp::{self, Signer, SnpAnchors, SnpCollateral};
    use coffer_evidence::Item;
    let Some(dir) = a
        .collateral
        .as_ref()
        .filter(|_| a.pccs_url.is_none() && a.collateral_dir.is_none())
    else {
        return Err(Failure::new(
            "usage",
            "--tee snp takes --collateral DIR (vcek.der or vlek.der, ask.pem or asvk.pem, ark.pem, \
             optionally crl.der), optionally --trust-root ARK, and neither --pccs-url nor \
             --collateral-dir",
        )
        .into());
    };
    let anchors = match &a.trust_root {
        None => SnpAnchors::amd(),
        Some(path) => {
            let bytes = read_limited(path, SMALL_FILE_LIMIT, "trust root")?;
            let der = snp::certificates(&bytes, Item::TrustAnchors)
                .ok()
                .and_then(|c| c.into_iter().last())
                .unwrap_or_default();
            SnpAnchors::from_ark_der(&der).map_err(|e| {
                Failure::new(
                    e.kind().as_str(),
                    format!("trust root {}: {e}", path.display()),
                )
            })?
        }
    };
    let parsed = snp::Report::parse(report).map_err(refused)?;
    let (vek_name, ask_name) = match parsed.signer {
        Signer::Vcek => ("vcek.der", "ask.pem"),
        Signer::Vlek => ("vlek.der", "asvk.pem"),
    };
    // A KDS cert_chain bundle holds the intermediate first, then the ARK: either file may be
    // one, so the intermediate is the first certificate and the ARK the last.
    let load = |name: &str, item: Item, last: bool| -> anyhow::Result<Vec<u8>> {
        let path = dir.join(name);
        let bytes = read_limited(&path, SMALL_FILE_LIMIT, name)?;
        let mut certs = snp::certificates(&bytes, item)
            .map_err(|e| Failure::new(e.kind().as_str(), format!("{}: {e}", path.display())))?;
        if certs.len() > 2 {
            return Err(Failure::new(
                "malformed",
                format!(
                    "{} holds {} certificates; expected one, or a KDS cert_chain (two)",
                    path.display(),
                    certs.len()
                ),
            )
            .into());
        }
        Ok(if last {
            certs.pop()
        } else {
            certs.into_iter().next()
        }
        .unwrap_or_default())
    };
    let vek = load(vek_name, Item::VekCertificate, false)?;
    let ask = load(ask_name, Item::AskCertificate, false)?;
    let ark = load("ark.pem", Item::ArkCertificate, true)?;
    let crl_path = dir.join("crl.der");
    let crl = if crl_path.exists() {
        Some(read_limited(&crl_path, SMALL_FILE_LIMIT, "crl.der")?)
    } else {
        None
    };
    let collateral = SnpCollateral {
        vek: &vek,
        ask: &ask,
        ark: &ark,
        crl: crl.as_deref(),
    };
    let v = snp::verify_snp(report, &collateral, &anchors, now).map_err(refused)?;
    let r = &v.report;
    let t = &v.reported_tcb;
    let mut tcb = Map::new();
    if let Some(fmc) = t.fmc {
        tcb.insert("fmc".into(), json!(fmc));
    }
    tcb.insert("bootloader".into(), json!(t.bootloader));
    tcb.insert("tee".into(), json!(t.tee));
    tcb.insert("snp".into(), json!(t.snp));
    tcb.insert("microcode".into(), json!(t.microcode));
    let out = json!({
        "tee": "snp",
        "report_version": r.version,
        "product": v.product.as_str(),
        "signer": r.signer.as_str(),
        "measurement": hex::encode(r.measurement),
        "host_data": hex::encode(r.host_data),
        "report_data": hex::encode(r.report_data),
        "chip_id": hex::encode(r.chip_id),
        "policy": format!("{:016x}", r.policy),
        "debug": r.debug(),
        "migrate_ma": r.migrate_ma(),
        "smt_allowed": r.smt_allowed(),
        "vmpl": r.vmpl,
        "guest_svn": r.guest_svn,
        "family_id": hex::encode(r.family_id),
        "image_id": hex::encode(r.image_id),
        "id_key_digest": hex::encode(r.id_key_digest),
        "author_key_digest": hex::encode(r.author_key_digest),
        "reported_tcb": tcb,
        "crl_checked": v.crl_checked,
        "verified_at": fmt_time(now),
    });
    if global.json {
        print_json(&out)?;
    } else {
        println!(
            "verified: SNP report v{} ({}, signed by its {}) at {}",
            r.version,
            v.product,
            r.signer.as_str().to_uppercase(),
            fmt_time(now)
        );
        println!("measurement:   {}", hex::encode(r.measurement));
        println!("host_data:     {}", hex::encode(r.host_data));
        println!("report_data:   {}", hex::encode(r.report_data));
        println!("policy:        {:016x} (debug {})", r.policy, r.debug());
        println!("vmpl:          {}", r.vmpl);
        println!("reported_tcb:  {t:?}");
        if !v.crl_checked {
            println!(
                "crl:           not checked (no crl.der in {})",
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A refusal by the verifier (or a quote that does not parse): kind = the evidence ErrorKind.
fn refused(e: coffer_evidence::Error) -> anyhow::Error {
    let hint = match e.kind() {
        coffer_evidence::ErrorKind::Expired => {
            "; get fresh collateral (e.g. --pccs-url) or check the clock / --now"
        }
        coffer_evidence::ErrorKind::UntrustedRoot => {
            "; simulated evidence needs --trust-root with the simulation root"
        }
        _ => "",
    };
    Failure::new(e.kind().as_str(), format!("quote refused: {e}{hint}")).into()
}

/// Collateral could not be obtained (service down, bad answer, offline directory incomplete).
fn unavailable(e: coffer_pccs::Error) -> anyhow::Error {
    Failure::new(
        "collateral_unavailable",
        format!("{e}; pass --collateral FILE or --collateral-dir DIR to verify offline"),
    )
    .into()
}

fn verified_json(v: &Verified, now: i64, custom_root: bool, source: Value) -> Value {
    let mut o = Map::new();
    o.insert("verified".into(), json!(true));
    o.insert("tee".into(), json!(v.tee.to_string()));
    o.insert("quote_version".into(), json!(v.quote_version));
    o.insert("tcb_status".into(), json!(v.tcb_status.as_str()));
    o.insert("advisory_ids".into(), json!(v.advisory_ids));
    o.insert("report_data".into(), json!(hex::encode(v.report_data)));
    o.insert("debug".into(), json!(v.measurement.debug()));
    insert_measurement(&mut o, &v.measurement);
    o.insert("fmspc".into(), json!(hex::encode(v.fmspc)));
    o.insert("tcb_date".into(), json!(v.tcb_date));
    o.insert(
        "tcb_evaluation_data_number".into(),
        json!(v.tcb_evaluation_data_number),
    );
    o.insert(
        "collateral_not_before".into(),
        json!(v.collateral_not_before),
    );
    o.insert("collateral_not_after".into(), json!(v.collateral_not_after));
    o.insert(
        "collateral_valid_from".into(),
        json!(fmt_time(v.collateral_not_before)),
    );
    o.insert(
        "collateral_valid_until".into(),
        json!(fmt_time(v.collateral_not_after)),
    );
    o.insert("now".into(), json!(now));
    o.insert(
        "trust_root".into(),
        json!(if custom_root { "custom" } else { "intel" }),
    );
    o.insert("collateral".into(), source);
    Value::Object(o)
}

fn insert_measurement(o: &mut Map<String, Value>, m: &Measurement) {
    match m {
        Measurement::Sgx(s) => {
            o.insert("mrenclave".into(), json!(hex::encode(s.mrenclave)));
            o.insert("mrsigner".into(), json!(hex::encode(s.mrsigner)));
            o.insert("isv_prod_id".into(), json!(s.isv_prod_id));
            o.insert("isv_svn".into(), json!(s.isv_svn));
            o.insert("attributes".into(), json!(hex::encode(s.attributes)));
            o.insert("miscselect".into(), json!(format!("{:08x}", s.miscselect)));
        }
        Measurement::Tdx(t) => {
            o.insert("mrtd".into(), json!(hex::encode(t.mrtd)));
            for (i, r) in t.rtmr.iter().enumerate() {
                o.insert(format!("rtmr{i}"), json!(hex::encode(r)));
            }
            o.insert("mrconfigid".into(), json!(hex::encode(t.mrconfigid)));
            o.insert("mrowner".into(), json!(hex::encode(t.mrowner)));
            o.insert("mrownerconfig".into(), json!(hex::encode(t.mrownerconfig)));
            o.insert("td_attributes".into(), json!(hex::encode(t.td_attributes)));
            o.insert("xfam".into(), json!(hex::encode(t.xfam)));
            o.insert("mrseam".into(), json!(hex::encode(t.mrseam)));
            o.insert("tee_tcb_svn".into(), json!(hex::encode(t.tee_tcb_svn)));
            o.insert("mrservicetd".into(), json!(t.mrservicetd.map(hex::encode)));
        }
    }
}

fn print_verified_text(v: &Verified, now: i64, custom_root: bool) {
    println!(
        "verified: {} quote v{} at {}{}",
        v.tee.to_string().to_uppercase(),
        v.quote_version,
        fmt_time(now),
        if custom_root {
            " (custom trust root, not Intel's)"
        } else {
            ""
        }
    );
    println!("tcb status:    {}", v.tcb_status.as_str());
    if v.advisory_ids.is_empty() {
        println!("advisories:    none");
    } else {
        println!("advisories:    {}", v.advisory_ids.join(", "));
    }
    match &v.measurement {
        Measurement::Sgx(s) => {
            println!("mrenclave:     {}", hex::encode(s.mrenclave));
            println!("mrsigner:      {}", hex::encode(s.mrsigner));
            println!("isv_prod_id:   {}", s.isv_prod_id);
            println!("isv_svn:       {}", s.isv_svn);
        }
        Measurement::Tdx(t) => {
            println!("mrtd:          {}", hex::encode(t.mrtd));
            for (i, r) in t.rtmr.iter().enumerate() {
                println!("rtmr{i}:         {}", hex::encode(r));
            }
        }
    }
    println!("debug:         {}", v.measurement.debug());
    println!("report_data:   {}", hex::encode(v.report_data));
    println!("fmspc:         {}", hex::encode(v.fmspc));
    println!(
        "collateral:    valid {} .. {}",
        fmt_time(v.collateral_not_before),
        fmt_time(v.collateral_not_after)
    );
}

// ---------------------------------------------------------------------------------------------
// inspect

fn inspect(a: InspectArgs, global: Global) -> anyhow::Result<ExitCode> {
    let bytes = read_quote(&a.quote)?;
    if a.tee == Some(VerifyTee::Snp) {
        let r = coffer_evidence::snp::Report::parse(&bytes).map_err(|e| {
            Failure::new(
                e.kind().as_str(),
                format!("report {} does not parse: {e}", a.quote.display()),
            )
        })?;
        let mut o = Map::new();
        o.insert("verified".into(), json!(false));
        o.insert("tee".into(), json!("snp"));
        o.insert("report_version".into(), json!(r.version));
        o.insert("signer".into(), json!(r.signer.as_str()));
        if let Some(p) = r.product_from_cpuid() {
            o.insert("product".into(), json!(p.as_str()));
        }
        o.insert("measurement".into(), json!(hex::encode(r.measurement)));
        o.insert("host_data".into(), json!(hex::encode(r.host_data)));
        o.insert("report_data".into(), json!(hex::encode(r.report_data)));
        o.insert("chip_id".into(), json!(hex::encode(r.chip_id)));
        o.insert("policy".into(), json!(format!("{:016x}", r.policy)));
        o.insert("debug".into(), json!(r.debug()));
        o.insert("vmpl".into(), json!(r.vmpl));
        o.insert(
            "reported_tcb".into(),
            json!(format!("{:016x}", r.reported_tcb)),
        );
        o.insert(
            "current_tcb".into(),
            json!(format!("{:016x}", r.current_tcb)),
        );
        let (ma, mi, b) = r.current_version;
        o.insert("firmware".into(), json!(format!("{ma}.{mi}.{b}")));
        return print_inspected(o, global);
    }
    let q = Quote::parse(&bytes).map_err(|e| {
        Failure::new(
            e.kind().as_str(),
            format!("quote {} does not parse: {e}", a.quote.display()),
        )
    })?;
    let mut o = Map::new();
    o.insert("verified".into(), json!(false));
    o.insert("tee".into(), json!(q.tee().to_string()));
    o.insert("quote_version".into(), json!(q.version()));
    if let Some(t) = q.body_type() {
        o.insert("body_type".into(), json!(t));
    }
    let h = q.header();
    o.insert("qe_vendor_id".into(), json!(hex::encode(h.qe_vendor_id)));
    o.insert("report_data".into(), json!(hex::encode(q.report_data())));
    match q.body() {
        QuoteBody::Sgx(r) => {
            o.insert("debug".into(), json!(r.debug()));
            o.insert("mrenclave".into(), json!(hex::encode(r.mr_enclave)));
            o.insert("mrsigner".into(), json!(hex::encode(r.mr_signer)));
            o.insert("isv_prod_id".into(), json!(r.isv_prod_id));
            o.insert("isv_svn".into(), json!(r.isv_svn));
            o.insert("attributes".into(), json!(hex::encode(r.attributes)));
            o.insert("miscselect".into(), json!(format!("{:08x}", r.misc_select)));
            o.insert("cpu_svn".into(), json!(hex::encode(r.cpu_svn)));
        }
        QuoteBody::Td(t) => {
            o.insert("debug".into(), json!(t.debug()));
            o.insert("mrtd".into(), json!(hex::encode(t.mr_td)));
            for (i, r) in t.rtmr.iter().enumerate() {
                o.insert(format!("rtmr{i}"), json!(hex::encode(r)));
            }
            o.insert("mrconfigid".into(), json!(hex::encode(t.mr_config_id)));
            o.insert("mrowner".into(), json!(hex::encode(t.mr_owner)));
            o.insert(
                "mrownerconfig".into(),
                json!(hex::encode(t.mr_owner_config)),
            );
            o.insert("td_attributes".into(), json!(hex::encode(t.td_attributes)));
            o.insert("tee_tcb_svn".into(), json!(hex::encode(t.tee_tcb_svn)));
            o.insert("mrseam".into(), json!(hex::encode(t.mr_seam)));
        }
    }
    o.insert(
        "cert_data_type".into(),
        json!(q.certification_data().cert_type.0),
    );
    match q.fmspc() {
        Ok(f) => {
            o.insert("fmspc".into(), json!(hex::encode(f)));
        }
        Err(e) => {
            o.insert("fmspc_error".into(), json!(e.to_string()));
        }
    }
    if let Ok(ca) = q.pck_ca() {
        o.insert("pck_ca".into(), json!(ca.as_str()));
    }
    print_inspected(o, global)
}

/// What `inspect` found: JSON, or lines under a NOT VERIFIED banner.
fn print_inspected(o: Map<String, Value>, global: Global) -> anyhow::Result<ExitCode> {
    if global.json {
        print_json(&Value::Object(o))?;
    } else {
        println!("NOT VERIFIED: these are the values the quote claims.");
        for (k, v) in &o {
            if k == "verified" {
                continue;
            }
            let shown = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{:<16}{shown}", format!("{k}:"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// simulation

fn sim_quote(a: SimQuoteArgs, global: Global) -> anyhow::Result<ExitCode> {
    let (dir, defaulted) = sim_dir(&a.sim)?;
    let (platform, created) = load_or_create_platform(&dir, None, false)?;
    let report_data = a.report_data.unwrap_or([0u8; 64]);
    let (tee, quote) = match a.tee {
        SimTee::Sgx => {
            let mrenclave = a
                .mrenclave
                .ok_or_else(|| Failure::new("usage", "--mrenclave is required for --tee sgx"))?;
            let spec = SgxQuoteSpec {
                mrenclave,
                mrsigner: a.mrsigner.unwrap_or([0u8; 32]),
                isv_prod_id: a.isv_prod_id,
                isv_svn: a.isv_svn,
                debug: a.debug,
                report_data,
                ..Default::default()
            };
            ("sgx", platform.sgx_quote(&spec))
        }
        SimTee::Tdx => {
            let z = [0u8; 48];
            let spec = TdxQuoteSpec {
                mrtd: a.mrtd.unwrap_or(z),
                rtmr: [
                    a.rtmr0.unwrap_or(z),
                    a.rtmr1.unwrap_or(z),
                    a.rtmr2.unwrap_or(z),
                    a.rtmr3.unwrap_or(z),
                ],
                report_data,
                debug: a.debug,
                ..Default::default()
            };
            ("tdx", platform.tdx_quote(&spec))
        }
        SimTee::Snp => {
            let snp = platform.snp();
            let mut policy = coffer_evidence::sim::SIM_SNP_POLICY;
            if a.debug {
                policy |= 1 << 19;
            }
            let report = snp.report(&coffer_evidence::sim::SnpReportSpec {
                measurement: a.measurement.unwrap_or([0; 48]),
                host_data: a.host_data.unwrap_or([0; 32]),
                report_data,
                policy,
                ..Default::default()
            });
            if let Some(dir) = &a.collateral_out {
                let now = unix_now()?;
                std::fs::create_dir_all(dir)
                    .map_err(|e| Failure::new("io", format!("{}: {e}", dir.display())))?;
                // PEM, as AMD's KDS serves the chain.
                let pem = |der: &[u8]| coffer_coordinator::pki::pem_encode("CERTIFICATE", der);
                write_atomic(&dir.join("vcek.der"), snp.vcek_der(), false)?;
                write_atomic(&dir.join("ask.pem"), pem(snp.ask_der()).as_bytes(), false)?;
                write_atomic(&dir.join("ark.pem"), pem(snp.ark_der()).as_bytes(), false)?;
                write_atomic(
                    &dir.join("crl.der"),
                    &snp.crl(now - 3600, now + 30 * 86_400, &[]),
                    false,
                )?;
            }
            ("snp", report)
        }
    };
    write_atomic(&a.out, &quote, false)?;
    if global.json {
        print_json(&json!({
            "simulated": true,
            "tee": tee,
            "out": a.out.display().to_string(),
            "bytes": quote.len(),
            "sim_dir": dir.display().to_string(),
            "sim_dir_default": defaulted,
            "platform_created": created,
        }))?;
    } else {
        say_sim_dir(&dir, defaulted, created);
        if tee == "snp" {
            println!(
                "SIMULATED SEV-SNP report ({} bytes) written to {}",
                quote.len(),
                a.out.display()
            );
            println!("SIMULATED: verifies only with --trust-root and the ark.pem of --collateral-out; refused under AMD's roots");
        } else {
            println!(
                "SIMULATED {} quote ({} bytes) written to {}",
                tee.to_uppercase(),
                quote.len(),
                a.out.display()
            );
            println!("SIMULATED: verifies only with the simulation root (sim-collateral --root-out); refused under the Intel root");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sim_collateral(a: SimCollateralArgs, global: Global) -> anyhow::Result<ExitCode> {
    let (dir, defaulted) = sim_dir(&a.sim)?;
    let (platform, created) = load_or_create_platform(&dir, None, false)?;
    let now = match a.now {
        Some(t) => t,
        None => unix_now()?,
    };
    let tee = match a.tee {
        SimTee::Sgx => Tee::Sgx,
        SimTee::Tdx => Tee::Tdx,
        SimTee::Snp => {
            return Err(Failure::new(
                "usage",
                "SEV-SNP collateral (VCEK, ASK, ARK, CRL) comes from `sim-quote --tee snp \
                 --collateral-out DIR`",
            )
            .into())
        }
    };
    let collateral = platform.collateral_for(tee, now);
    write_atomic(&a.out, collateral.to_json().as_bytes(), false)?;
    if let Some(root) = &a.root_out {
        write_atomic(root, platform.root_ca_pem().as_bytes(), false)?;
    }
    if global.json {
        print_json(&json!({
            "simulated": true,
            "tee": tee.to_string(),
            "out": a.out.display().to_string(),
            "root_out": a.root_out.as_ref().map(|p| p.display().to_string()),
            "now": now,
            "sim_dir": dir.display().to_string(),
            "sim_dir_default": defaulted,
            "platform_created": created,
        }))?;
    } else {
        say_sim_dir(&dir, defaulted, created);
        println!(
            "SIMULATED {} collateral valid around {} written to {}",
            tee.to_string().to_uppercase(),
            fmt_time(now),
            a.out.display()
        );
        if let Some(root) = &a.root_out {
            println!(
                "SIMULATED root CA certificate written to {} (use it with verify --trust-root)",
                root.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sim_platform(a: SimPlatformArgs, global: Global) -> anyhow::Result<ExitCode> {
    let (platform, created) = load_or_create_platform(&a.dir, a.seed, a.force)?;
    if let (Some(seed), false) = (a.seed, created) {
        // An existing platform was kept: the seed was not used. Fine when it is the platform
        // this seed makes (running the same command again); anything else would be ignored.
        if platform.to_bytes() != SimPlatform::from_seed(seed).to_bytes() {
            return Err(Failure::new(
                "exists",
                format!(
                    "--seed was not used: {} already holds a simulated platform from another \
                     seed, and it is kept. Add --force to replace it with the platform of this \
                     seed (evidence made with the old one no longer verifies), or drop --seed \
                     to use the existing one",
                    a.dir.join(SIM_PLATFORM_FILE).display()
                ),
            )
            .into());
        }
    }
    let fingerprints: Vec<String> = platform
        .trust_anchors()
        .key_fingerprints()
        .iter()
        .map(hex::encode)
        .collect();
    let path = a.dir.join(SIM_PLATFORM_FILE);
    if global.json {
        print_json(&json!({
            "simulated": true,
            "file": path.display().to_string(),
            "created": created,
            "root_key_sha256": fingerprints,
        }))?;
    } else {
        println!(
            "SIMULATED platform {} {}",
            if created {
                "created in"
            } else {
                "already exists in"
            },
            path.display()
        );
        for f in &fingerprints {
            println!("SIMULATED root key SHA-256: {f}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn say_sim_dir(dir: &Path, defaulted: bool, created: bool) {
    let what = if created {
        "created a new SIMULATED platform"
    } else {
        "using the SIMULATED platform"
    };
    if defaulted {
        println!(
            "SIMULATED: {what} in the default directory {} (choose one with --sim-dir)",
            dir.display()
        );
    } else {
        println!("SIMULATED: {what} in {}", dir.display());
    }
}

/// The simulated platform's directory and whether it is the default one.
fn sim_dir(s: &SimDir) -> anyhow::Result<(PathBuf, bool)> {
    match &s.sim_dir {
        Some(d) => Ok((d.clone(), false)),
        None => default_dir("XDG_DATA_HOME", ".local/share", "sim")
            .map(|d| (d, true))
            .ok_or_else(|| {
                Failure::new(
                    "usage",
                    "no default simulation directory: set HOME or pass --sim-dir DIR",
                )
                .into()
            }),
    }
}

/// `$XDG_VAR/coffer/leaf` or `$HOME/home_rel/coffer/leaf`.
fn default_dir(xdg_var: &str, home_rel: &str, leaf: &str) -> Option<PathBuf> {
    if let Some(x) = std::env::var_os(xdg_var).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("coffer").join(leaf));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty())?;
    Some(PathBuf::from(home).join(home_rel).join("coffer").join(leaf))
}

/// Loads `dir/sim-platform.json`, or creates it (from `seed` or fresh randomness).
fn load_or_create_platform(
    dir: &Path,
    seed: Option<[u8; 32]>,
    force: bool,
) -> anyhow::Result<(SimPlatform, bool)> {
    let path = dir.join(SIM_PLATFORM_FILE);
    if !force && path.exists() {
        let bytes = read_limited(&path, SMALL_FILE_LIMIT, "simulated platform")?;
        let p = SimPlatform::from_bytes(&bytes).map_err(|e| {
            Failure::new(
                e.kind().as_str(),
                format!("simulated platform {}: {e} (recreate it with `coffer evidence sim-platform --dir {} --force`)", path.display(), dir.display()),
            )
        })?;
        return Ok((p, false));
    }
    let seed = match seed {
        Some(s) => s,
        None => random_seed()?,
    };
    let p = SimPlatform::from_seed(seed);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&path, &p.to_bytes(), true)?;
    Ok((p, true))
}

fn random_seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("reading /dev/urandom for a new simulated platform seed (or pass --seed)")?;
    Ok(seed)
}

// ---------------------------------------------------------------------------------------------
// helpers

/// Reads a quote file: raw bytes, or hex with an optional `0x` prefix and surrounding whitespace.
fn read_quote(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = read_limited(path, QUOTE_FILE_LIMIT, "quote")?;
    Ok(decode_quote_bytes(bytes)
        .map_err(|msg| Failure::new("malformed", format!("quote {}: {msg}", path.display())))?)
}

/// Raw quotes start with the version (3, 4 or 5, little-endian), never an ASCII hex digit, so
/// text made only of hex digits is hex.
fn decode_quote_bytes(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let trimmed = bytes.trim_ascii();
    let body = trimmed
        .strip_prefix(b"0x")
        .or_else(|| trimmed.strip_prefix(b"0X"))
        .unwrap_or(trimmed);
    let looks_hex = !body.is_empty() && body.iter().all(u8::is_ascii_hexdigit);
    if looks_hex {
        return hex::decode(body).map_err(|_| "hex text with an odd number of digits".to_string());
    }
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if trimmed.first().is_some_and(u8::is_ascii_hexdigit) {
        return Err("looks like hex text but holds a character that is not a hex digit".into());
    }
    Ok(bytes)
}

fn read_limited(path: &Path, limit: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| {
        Failure::new(
            "io",
            format!("cannot open the {what} file {}: {e}", path.display()),
        )
    })?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| {
        Failure::new(
            "io",
            format!("reading the {what} file {}: {e}", path.display()),
        )
    })?;
    if bytes.len() as u64 > limit {
        return Err(Failure::new(
            "malformed",
            format!(
                "the {what} file {} is larger than {limit} bytes",
                path.display()
            ),
        )
        .into());
    }
    Ok(bytes)
}

fn read_text(path: &Path, what: &str) -> anyhow::Result<String> {
    let bytes = read_limited(path, SMALL_FILE_LIMIT, what)?;
    String::from_utf8(bytes).map_err(|_| {
        Failure::new(
            "malformed",
            format!("the {what} file {} is not UTF-8 text", path.display()),
        )
        .into()
    })
}

/// Writes `bytes` to `path` via a temporary file and a rename, so a failure never leaves a
/// partial file. `private` files get mode 0600.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if private { 0o600 } else { 0o644 });
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Failure::new("io", format!("writing {}: {e}", path.display())).into());
    }
    Ok(())
}

fn unix_now() -> anyhow::Result<i64> {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    i64::try_from(d.as_secs()).context("the system clock is out of range")
}

/// `--now`: Unix seconds or RFC 3339.
pub(crate) fn parse_now(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            format!(
                "{s:?} is neither Unix seconds nor an RFC 3339 time (e.g. 2025-06-20T00:00:00Z)"
            )
        })
}

/// Exactly `N` bytes of hex, optional `0x`.
fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let t = s.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    let v = hex::decode(t).map_err(|_| format!("{s:?} is not hex"))?;
    <[u8; N]>::try_from(v.as_slice()).map_err(|_| {
        format!(
            "expected {N} bytes ({} hex digits), got {} bytes",
            N * 2,
            v.len()
        )
    })
}

fn fmt_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{t}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_bytes_raw_and_hex() {
        let raw = vec![3u8, 0, 2, 0, 0xff];
        assert_eq!(decode_quote_bytes(raw.clone()).unwrap(), raw);
        assert_eq!(
            decode_quote_bytes(b"  0x030002\n".to_vec()).unwrap(),
            vec![3, 0, 2]
        );
        assert_eq!(
            decode_quote_bytes(b"0300FF".to_vec()).unwrap(),
            vec![3, 0, 0xff]
        );
        assert!(decode_quote_bytes(b"030".to_vec()).is_err());
        assert!(decode_quote_bytes(b"0300zz".to_vec()).is_err());
        assert!(decode_quote_bytes(Vec::new()).is_err());
    }

    #[test]
    fn now_parsing() {
        assert_eq!(parse_now("1750000000").unwrap(), 1_750_000_000);
        assert_eq!(parse_now("2025-06-15T15:06:40Z").unwrap(), 1_750_000_000);
        assert!(parse_now("yesterday").is_err());
    }

    #[test]
    fn hex_args_have_exact_lengths() {
        assert_eq!(parse_hex::<2>("0xabcd").unwrap(), [0xab, 0xcd]);
        assert!(parse_hex::<2>("abcdef")
            .unwrap_err()
            .contains("expected 2 bytes"));
        assert!(parse_hex::<2>("zz").is_err());
    }
}
