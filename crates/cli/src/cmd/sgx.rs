//! `coffer sgx …`: compute and sign SGX enclave measurements on a machine without SGX.
//!
//! Glue only: file I/O, flags and printing here; the measurement and signature work is in
//! `coffer-sgx`, which never touches the disk.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use coffer_sgx::gramine::{self, GramineMeasurement, LayoutConstants};
use coffer_sgx::{
    format_date, measure_sgxs, parse_date, Attributes, SgxsMeasurement, SigningKey, Sigstruct,
    SigstructBody,
};
use serde::Serialize;

use crate::output::{print_json, Failure};
use crate::Global;

/// Largest SIGSTRUCT/manifest/key file read into memory (they are KiBs; this bounds a mistake).
const SMALL_FILE_LIMIT: u64 = 16 << 20;
/// Largest `libpal.so` read into memory.
const PAL_LIMIT: u64 = 256 << 20;
/// SGXS files at least this big get a progress bar on a terminal.
const PROGRESS_THRESHOLD: u64 = 16 << 20;

/// `coffer sgx --help`: examples across the subcommands.
pub(crate) const GROUP_HELP: &str = "EXAMPLES:
    Measure an enclave, sign it with a new key, then check the SIGSTRUCT against the measurement
    ($M: the MRENCLAVE that `measure` printed):
        coffer sgx measure --sgxs app.sgxs
        coffer sgx keygen --out enclave-key.pem
        coffer sgx sign --key enclave-key.pem --sgxs app.sgxs --isv-prod-id 1 --isv-svn 1 \\
            --out app.sig
        coffer sgx verify-sig app.sig --mrenclave $M

    The MRENCLAVE of a Gramine enclave, and what an existing SIGSTRUCT signs:
        coffer sgx measure --gramine-manifest app.manifest.sgx \\
            --gramine-dir /usr/lib/x86_64-linux-gnu/gramine
        coffer sgx inspect app.sig";

/// Subcommands of `coffer sgx`.
#[derive(Debug, Subcommand)]
pub(crate) enum SgxCmd {
    /// Generate an enclave signing key (RSA-3072, public exponent 3, as SGX requires).
    #[command(after_help = "EXAMPLES:
    coffer sgx keygen --out enclave-key.pem

The key is written with mode 0600 in PKCS#1 PEM (`RSA PRIVATE KEY`), the format gramine-sgx-sign
and sgxs-sign read. Its MRSIGNER is printed. An existing file is never overwritten unless --force.")]
    Keygen(KeygenArgs),
    /// Compute MRENCLAVE of an SGXS file or of a Gramine manifest with a Gramine installation.
    #[command(after_help = "EXAMPLES:
    coffer sgx measure --sgxs app.sgxs
    coffer sgx measure --gramine-manifest app.manifest.sgx \\
        --gramine-dir /usr/lib/x86_64-linux-gnu/gramine
    coffer --json sgx measure --sgxs app.sgxs

--gramine-dir is Gramine's library directory, the one holding sgx/libpal.so.")]
    Measure(MeasureArgs),
    /// Sign an enclave: write its SIGSTRUCT.
    #[command(after_help = "EXAMPLES:
    coffer sgx sign --key enclave-key.pem --sgxs app.sgxs --isv-prod-id 1 --isv-svn 3 --out app.sig
    coffer sgx sign --key enclave-key.pem --date 20260101 --out app.sig \\
        --mrenclave b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0
    coffer sgx sign --key enclave-key.pem --gramine-manifest app.manifest.sgx \\
        --gramine-dir /usr/lib/x86_64-linux-gnu/gramine --out app.sig

Numbers take decimal or 0x-hex. Without --date the date is today (UTC), or SOURCE_DATE_EPOCH when
set, for reproducible builds. Every ATTRIBUTES flag and MISCSELECT bit is enforced unless a mask
says otherwise, so a production SIGSTRUCT cannot start the enclave in debug mode.")]
    Sign(SignArgs),
    /// Show the fields of a SIGSTRUCT: MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN, attributes.
    #[command(after_help = "EXAMPLES:
    coffer sgx inspect app.sig
    coffer --json sgx inspect app.sig

The signature is checked and its status shown, but inspect succeeds either way; use verify-sig to
fail on a bad signature.")]
    Inspect(InspectArgs),
    /// Verify a SIGSTRUCT's signature as EINIT does, optionally against an expected MRENCLAVE.
    #[command(after_help = "EXAMPLES:
    coffer sgx verify-sig app.sig
    coffer sgx verify-sig app.sig \\
        --mrenclave b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0

Exit status 1 if the signature, exponent, key size, Q1/Q2 or the expected MRENCLAVE/MRSIGNER do not
match; the message names the check that failed.")]
    VerifySig(VerifySigArgs),
}

/// `coffer sgx keygen`.
#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the private key (PEM).
    #[arg(long, value_name = "KEY.pem")]
    out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
}

/// `coffer sgx measure`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["sgxs", "gramine_manifest"])))]
pub(crate) struct MeasureArgs {
    /// An SGXS file (Fortanix EDP stream format).
    #[arg(long, value_name = "FILE")]
    sgxs: Option<PathBuf>,
    /// A final Gramine manifest (`*.manifest.sgx`); needs --gramine-dir.
    #[arg(long, value_name = "FILE", requires = "gramine_dir")]
    gramine_manifest: Option<PathBuf>,
    /// Gramine's library directory (holds `sgx/libpal.so`).
    #[arg(long, value_name = "DIR", requires = "gramine_manifest")]
    gramine_dir: Option<PathBuf>,
}

/// `coffer sgx sign`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["sgxs", "mrenclave", "gramine_manifest"])))]
pub(crate) struct SignArgs {
    /// The signing key (PEM, RSA-3072, e = 3).
    #[arg(long, value_name = "KEY.pem")]
    key: PathBuf,
    /// Measure this SGXS file.
    #[arg(long, value_name = "FILE")]
    sgxs: Option<PathBuf>,
    /// Sign this MRENCLAVE (64 hex digits) directly.
    #[arg(long, value_name = "HEX", value_parser = parse_hash32)]
    mrenclave: Option<[u8; 32]>,
    /// Measure this Gramine manifest (`*.manifest.sgx`); needs --gramine-dir. ISVPRODID, ISVSVN
    /// and DEBUG then come from the manifest unless given here.
    #[arg(long, value_name = "FILE", requires = "gramine_dir")]
    gramine_manifest: Option<PathBuf>,
    /// Gramine's library directory (holds `sgx/libpal.so`).
    #[arg(long, value_name = "DIR", requires = "gramine_manifest")]
    gramine_dir: Option<PathBuf>,
    /// ISVPRODID.
    #[arg(long, value_name = "N", value_parser = parse_u16)]
    isv_prod_id: Option<u16>,
    /// ISVSVN.
    #[arg(long, value_name = "N", value_parser = parse_u16)]
    isv_svn: Option<u16>,
    /// Mark the enclave DEBUG (debuggable, never for production).
    #[arg(long)]
    debug: bool,
    /// DATE as YYYYMMDD, or 0 for none (default: today in UTC, or SOURCE_DATE_EPOCH).
    #[arg(long, value_name = "YYYYMMDD")]
    date: Option<String>,
    /// VENDOR: 0 (default) or 0x8086 (Intel's own enclaves).
    #[arg(long, value_name = "N", value_parser = parse_u32, default_value = "0")]
    vendor: u32,
    /// SWDEFINED.
    #[arg(long, value_name = "N", value_parser = parse_u32, default_value = "0")]
    swdefined: u32,
    /// MISCSELECT.
    #[arg(long, value_name = "N", value_parser = parse_u32, default_value = "0")]
    miscselect: u32,
    /// MISCMASK (bits EINIT enforces).
    #[arg(long, value_name = "N", value_parser = parse_u32, default_value = "0xffffffff")]
    misc_mask: u32,
    /// ATTRIBUTEMASK.FLAGS (bits EINIT enforces).
    #[arg(long, value_name = "N", value_parser = parse_u64, default_value = "0xffffffffffffffff")]
    attributes_mask: u64,
    /// ATTRIBUTES.XFRM.
    #[arg(long, value_name = "N", value_parser = parse_u64, default_value = "0x3")]
    xfrm: u64,
    /// ATTRIBUTEMASK.XFRM.
    #[arg(long, value_name = "N", value_parser = parse_u64, default_value = "0")]
    xfrm_mask: u64,
    /// ISVFAMILYID (32 hex digits); sets the KSS attribute.
    #[arg(long, value_name = "HEX", value_parser = parse_hash16)]
    isv_family_id: Option<[u8; 16]>,
    /// ISVEXTPRODID (32 hex digits); sets the KSS attribute.
    #[arg(long, value_name = "HEX", value_parser = parse_hash16)]
    isv_ext_prod_id: Option<[u8; 16]>,
    /// Where to write the SIGSTRUCT (1808 bytes).
    #[arg(long, value_name = "SIGSTRUCT")]
    out: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
}

/// `coffer sgx inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The SIGSTRUCT file.
    sigstruct: PathBuf,
}

/// `coffer sgx verify-sig`.
#[derive(Debug, Args)]
pub(crate) struct VerifySigArgs {
    /// The SIGSTRUCT file.
    sigstruct: PathBuf,
    /// Also require this ENCLAVEHASH (64 hex digits).
    #[arg(long, value_name = "HEX", value_parser = parse_hash32)]
    mrenclave: Option<[u8; 32]>,
    /// Also require this MRSIGNER (64 hex digits).
    #[arg(long, value_name = "HEX", value_parser = parse_hash32)]
    mrsigner: Option<[u8; 32]>,
}

/// Runs `coffer sgx …`.
pub(crate) fn run(cmd: SgxCmd, global: Global) -> anyhow::Result<ExitCode> {
    match cmd {
        SgxCmd::Keygen(a) => keygen(a, global),
        SgxCmd::Measure(a) => measure(a, global),
        SgxCmd::Sign(a) => sign(a, global),
        SgxCmd::Inspect(a) => inspect(a, global),
        SgxCmd::VerifySig(a) => verify_sig(a, global),
    }
}

/// Maps a library error to a failure kind scripts can match on.
fn failure(e: coffer_sgx::Error, context: &str) -> anyhow::Error {
    use coffer_sgx::Error as E;
    let kind = match &e {
        E::Read(_) | E::Write(_) => "io",
        E::SgxsTruncated { .. }
        | E::SgxsUnknownTag { .. }
        | E::SgxsInvalid { .. }
        | E::SgxsUnsized
        | E::SigstructLength { .. }
        | E::SigstructHeader { .. }
        | E::SigstructReserved { .. }
        | E::Elf(_)
        | E::GramineManifest(_) => "malformed",
        E::WrongExponent { .. } | E::WrongKeySize { .. } => "bad_key",
        E::BadSignature | E::BadQ { .. } => "bad_signature",
        E::EnclaveHashMismatch { .. } => "mismatch",
        _ => "invalid_input",
    };
    Failure::new(kind, format!("{context}: {e}")).into()
}

fn read_small(path: &Path, limit: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let f = File::open(path).with_context(|| format!("cannot open {what} {}", path.display()))?;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if buf.len() as u64 > limit {
        return Err(Failure::new(
            "invalid_input",
            format!(
                "{what} {} is larger than {limit} bytes; is it the right file?",
                path.display()
            ),
        )
        .into());
    }
    Ok(buf)
}

/// Writes `data` to `path` atomically (temporary file in the same directory, then rename),
/// refusing to replace an existing file unless `force`.
fn write_atomic(path: &Path, data: &[u8], mode: u32, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        return Err(Failure::new(
            "exists",
            format!("{} exists; pass --force to replace it", path.display()),
        )
        .into());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        Failure::new(
            "invalid_input",
            format!("{} is not a file path", path.display()),
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(format!("cannot write {}", path.display())));
    }
    Ok(())
}

fn keygen(a: KeygenArgs, global: Global) -> anyhow::Result<ExitCode> {
    if a.out.exists() && !a.force {
        return Err(Failure::new(
            "exists",
            format!("{} exists; pass --force to replace it", a.out.display()),
        )
        .into());
    }
    if !global.json && std::io::stderr().is_terminal() {
        eprintln!("generating an RSA-3072 key with exponent 3 (takes a few seconds)…");
    }
    let key = SigningKey::generate(&mut coffer_sgx::rand_core::OsRng)
        .map_err(|e| failure(e, "key generation"))?;
    let pem = key.to_pem().map_err(|e| failure(e, "key encoding"))?;
    write_atomic(&a.out, pem.as_bytes(), 0o600, a.force)?;
    let mrsigner = hex::encode(key.mrsigner());
    if global.json {
        print_json(&serde_json::json!({ "key": a.out, "mrsigner": mrsigner }))?;
    } else {
        println!("wrote {}", a.out.display());
        println!("MRSIGNER  {mrsigner}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Hashes an SGXS file, with a progress bar when stderr is a terminal and the file is big.
fn measure_sgxs_file(path: &Path) -> anyhow::Result<SgxsMeasurement> {
    let f =
        File::open(path).with_context(|| format!("cannot open SGXS file {}", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = if std::io::stderr().is_terminal() && len >= PROGRESS_THRESHOLD {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "measuring {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let result = measure_sgxs(f, |n| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result.map_err(|e| failure(e, &format!("SGXS file {}", path.display())))
}

fn pal_path(dir: &Path) -> anyhow::Result<PathBuf> {
    for p in [dir.join("sgx").join("libpal.so"), dir.join("libpal.so")] {
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Failure::new(
        "invalid_input",
        format!(
            "no sgx/libpal.so under {}; pass Gramine's library directory (e.g. /usr/lib/x86_64-linux-gnu/gramine)",
            dir.display()
        ),
    )
    .into())
}

fn measure_gramine(manifest: &Path, dir: &Path) -> anyhow::Result<GramineMeasurement> {
    let text = read_small(manifest, SMALL_FILE_LIMIT, "Gramine manifest")?;
    let pal = pal_path(dir)?;
    let pal_bytes = read_small(&pal, PAL_LIMIT, "libpal.so")?;
    gramine::measure(&text, &pal_bytes, &LayoutConstants::V1).map_err(|e| {
        failure(
            e,
            &format!(
                "Gramine manifest {} with {}",
                manifest.display(),
                pal.display()
            ),
        )
    })
}

fn measure(a: MeasureArgs, global: Global) -> anyhow::Result<ExitCode> {
    let s = a;
    if let Some(path) = s.sgxs {
        let m = measure_sgxs_file(&path)?;
        if global.json {
            print_json(&m)?;
        } else {
            println!("MRENCLAVE      {}", hex::encode(m.mrenclave));
            println!("enclave size   {:#x}", m.enclave_size);
            println!("SSA frame size {} page(s)", m.ssa_frame_size);
            println!("pages          {} ({} TCS)", m.pages, m.tcs_pages);
            println!(
                "chunks         {} measured, {} unmeasured",
                m.measured_chunks, m.unmeasured_chunks
            );
        }
    } else if let (Some(manifest), Some(dir)) = (s.gramine_manifest, s.gramine_dir) {
        let m = measure_gramine(&manifest, &dir)?;
        if global.json {
            print_json(&m)?;
        } else {
            println!("MRENCLAVE    {}", hex::encode(m.mrenclave));
            println!("enclave size {:#x}", m.enclave_size);
            println!("max threads  {}", m.max_threads);
            println!("pages        {}", m.pages);
            println!("debug        {}", m.debug);
        }
    } else {
        return Err(Failure::new(
            "usage",
            "give --sgxs FILE or --gramine-manifest FILE --gramine-dir DIR",
        )
        .into());
    }
    Ok(ExitCode::SUCCESS)
}

/// Today's date in UTC, or SOURCE_DATE_EPOCH's, as BCD.
fn default_date() -> anyhow::Result<u32> {
    let now = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => {
            let secs: i64 = v.trim().parse().map_err(|_| {
                Failure::new(
                    "invalid_input",
                    format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"),
                )
            })?;
            time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| {
                Failure::new(
                    "invalid_input",
                    format!("SOURCE_DATE_EPOCH={v:?} is out of range"),
                )
            })?
        }
        Err(_) => time::OffsetDateTime::now_utc(),
    };
    coffer_sgx::bcd_date(now.year() as u16, u8::from(now.month()), now.day())
        .map_err(|e| failure(e, "date"))
}

#[derive(Serialize)]
struct SignOutput {
    sigstruct: PathBuf,
    mrenclave: String,
    mrsigner: String,
    isv_prod_id: u16,
    isv_svn: u16,
    debug: bool,
    date: String,
}

fn sign(a: SignArgs, global: Global) -> anyhow::Result<ExitCode> {
    if a.out.exists() && !a.force {
        return Err(Failure::new(
            "exists",
            format!("{} exists; pass --force to replace it", a.out.display()),
        )
        .into());
    }
    let mut pem = read_small(&a.key, SMALL_FILE_LIMIT, "signing key")?;
    let key = SigningKey::from_pem_bytes(&pem);
    pem.fill(0); // best effort: do not leave the key text lying in freed memory
    let key = key.map_err(|e| failure(e, &format!("signing key {}", a.key.display())))?;

    let (mrenclave, mut prod, mut svn, mut debug) = if let Some(path) = &a.sgxs {
        (measure_sgxs_file(path)?.mrenclave, 0, 0, false)
    } else if let Some(m) = a.mrenclave {
        (m, 0, 0, false)
    } else if let (Some(manifest), Some(dir)) = (&a.gramine_manifest, &a.gramine_dir) {
        let m = measure_gramine(manifest, dir)?;
        (m.mrenclave, m.isv_prod_id, m.isv_svn, m.debug)
    } else {
        return Err(Failure::new(
            "usage",
            "give --sgxs, --mrenclave or --gramine-manifest with --gramine-dir",
        )
        .into());
    };
    prod = a.isv_prod_id.unwrap_or(prod);
    svn = a.isv_svn.unwrap_or(svn);
    debug |= a.debug;

    let mut body = SigstructBody::new(mrenclave);
    body.vendor = a.vendor;
    body.date = match a.date.as_deref() {
        Some("0") => 0,
        Some(d) => parse_date(d).map_err(|e| failure(e, "--date"))?,
        None => default_date()?,
    };
    body.swdefined = a.swdefined;
    body.miscselect = a.miscselect;
    body.miscmask = a.misc_mask;
    body.attributes.xfrm = a.xfrm;
    body.attributes_mask = Attributes {
        flags: a.attributes_mask,
        xfrm: a.xfrm_mask,
    };
    body.set_debug(debug);
    body.isv_prod_id = prod;
    body.isv_svn = svn;
    if a.isv_family_id.is_some() || a.isv_ext_prod_id.is_some() {
        body.isv_family_id = a.isv_family_id.unwrap_or_default();
        body.isv_ext_prod_id = a.isv_ext_prod_id.unwrap_or_default();
        body.attributes.flags |= Attributes::FLAG_KSS;
    }
    let date = body.date;
    let s = Sigstruct::sign(body, &key, &mut coffer_sgx::rand_core::OsRng)
        .map_err(|e| failure(e, "signing"))?;
    s.verify()
        .map_err(|e| failure(e, "self-check of the new SIGSTRUCT"))?;
    write_atomic(&a.out, &s.to_bytes(), 0o644, a.force)?;
    let out = SignOutput {
        sigstruct: a.out.clone(),
        mrenclave: hex::encode(mrenclave),
        mrsigner: hex::encode(s.mrsigner()),
        isv_prod_id: prod,
        isv_svn: svn,
        debug,
        date: format_date(date),
    };
    if global.json {
        print_json(&out)?;
    } else {
        println!("wrote {}", a.out.display());
        println!("MRENCLAVE  {}", out.mrenclave);
        println!("MRSIGNER   {}", out.mrsigner);
        println!("ISVPRODID  {prod}");
        println!("ISVSVN     {svn}");
        if debug {
            println!("DEBUG      yes (never trust a debug enclave in production)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct InspectOutput {
    mrenclave: String,
    mrsigner: String,
    isv_prod_id: u16,
    isv_svn: u16,
    debug: bool,
    attributes: Attributes,
    attribute_flags: Vec<String>,
    attributes_mask: Attributes,
    miscselect: u32,
    misc_mask: u32,
    vendor: u32,
    date: String,
    swdefined: u32,
    isv_family_id: String,
    isv_ext_prod_id: String,
    exponent: u32,
    signature_valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_error: Option<String>,
}

fn load_sigstruct(path: &Path) -> anyhow::Result<Sigstruct> {
    let bytes = read_small(path, SMALL_FILE_LIMIT, "SIGSTRUCT")?;
    Sigstruct::parse(&bytes).map_err(|e| failure(e, &format!("SIGSTRUCT {}", path.display())))
}

fn inspect(a: InspectArgs, global: Global) -> anyhow::Result<ExitCode> {
    let s = load_sigstruct(&a.sigstruct)?;
    let check = s.verify();
    let b = &s.body;
    let out = InspectOutput {
        mrenclave: hex::encode(b.enclave_hash),
        mrsigner: hex::encode(s.mrsigner()),
        isv_prod_id: b.isv_prod_id,
        isv_svn: b.isv_svn,
        debug: b.attributes.debug(),
        attributes: b.attributes,
        attribute_flags: b.attributes.flag_names(),
        attributes_mask: b.attributes_mask,
        miscselect: b.miscselect,
        misc_mask: b.miscmask,
        vendor: b.vendor,
        date: format_date(b.date),
        swdefined: b.swdefined,
        isv_family_id: hex::encode(b.isv_family_id),
        isv_ext_prod_id: hex::encode(b.isv_ext_prod_id),
        exponent: s.exponent,
        signature_valid: check.is_ok(),
        signature_error: check.err().map(|e| e.to_string()),
    };
    if global.json {
        print_json(&out)?;
    } else {
        println!("MRENCLAVE     {}", out.mrenclave);
        println!("MRSIGNER      {}", out.mrsigner);
        println!("ISVPRODID     {}", out.isv_prod_id);
        println!("ISVSVN        {}", out.isv_svn);
        println!(
            "ATTRIBUTES    flags {:#x} [{}] xfrm {:#x}",
            out.attributes.flags,
            out.attribute_flags.join(" "),
            out.attributes.xfrm
        );
        println!(
            "ATTRIBUTEMASK flags {:#x} xfrm {:#x}",
            out.attributes_mask.flags, out.attributes_mask.xfrm
        );
        println!(
            "MISCSELECT    {:#x} mask {:#x}",
            out.miscselect, out.misc_mask
        );
        println!("DEBUG         {}", if out.debug { "yes" } else { "no" });
        println!("VENDOR        {:#x}", out.vendor);
        println!("DATE          {}", out.date);
        if b.isv_family_id != [0; 16] || b.isv_ext_prod_id != [0; 16] {
            println!("ISVFAMILYID   {}", out.isv_family_id);
            println!("ISVEXTPRODID  {}", out.isv_ext_prod_id);
        }
        match &out.signature_error {
            None => println!("signature     valid"),
            Some(e) => println!("signature     INVALID: {e}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_sig(a: VerifySigArgs, global: Global) -> anyhow::Result<ExitCode> {
    let s = load_sigstruct(&a.sigstruct)?;
    let ctx = format!("SIGSTRUCT {}", a.sigstruct.display());
    match a.mrenclave {
        Some(m) => s.verify_for(&m),
        None => s.verify(),
    }
    .map_err(|e| failure(e, &ctx))?;
    if let Some(expected) = a.mrsigner {
        if s.mrsigner() != expected {
            return Err(Failure::new(
                "mismatch",
                format!(
                    "{ctx}: MRSIGNER {} is not the expected {}",
                    hex::encode(s.mrsigner()),
                    hex::encode(expected)
                ),
            )
            .into());
        }
    }
    let out = serde_json::json!({
        "valid": true,
        "mrenclave": hex::encode(s.body.enclave_hash),
        "mrsigner": hex::encode(s.mrsigner()),
    });
    if global.json {
        print_json(&out)?;
    } else {
        println!("SIGSTRUCT {} is valid", a.sigstruct.display());
        println!("MRENCLAVE {}", hex::encode(s.body.enclave_hash));
        println!("MRSIGNER  {}", hex::encode(s.mrsigner()));
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_num(s: &str) -> Result<u64, String> {
    let r = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else {
        s.parse::<u64>()
    };
    r.map_err(|_| format!("{s:?} is not a decimal or 0x-hex number"))
}

fn parse_u64(s: &str) -> Result<u64, String> {
    parse_num(s)
}

fn parse_u32(s: &str) -> Result<u32, String> {
    u32::try_from(parse_num(s)?).map_err(|_| format!("{s} does not fit in 32 bits"))
}

fn parse_u16(s: &str) -> Result<u16, String> {
    u16::try_from(parse_num(s)?).map_err(|_| format!("{s} does not fit in 16 bits (0..=65535)"))
}

fn parse_hash32(s: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| format!("expected 64 hex digits, got {s:?}"))?;
    Ok(out)
}

fn parse_hash16(s: &str) -> Result<[u8; 16], String> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(s, &mut out).map_err(|_| format!("expected 32 hex digits, got {s:?}"))?;
    Ok(out)
}
