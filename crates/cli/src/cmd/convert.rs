//! `coffer convert`: an unmodified OCI/Docker image → a confidential image (see
//! `coffer_image::convert` for the steps).

use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use coffer_image::protect::Key;
use coffer_image::{ConvertOptions, ImageRef, Limits, Progress};

use crate::output::{print_json, Failure};
use crate::Global;

/// TEE to build for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TeeArg {
    /// No TEE-specific artefacts: the image measurement pins the image (simulation and TDX
    /// images use it).
    None,
    /// Also emit the Gramine manifest and SIGSTRUCT (MRENCLAVE/MRSIGNER).
    Sgx,
}

/// Arguments of `coffer convert`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:
    Convert an OCI layout (e.g. from `skopeo copy docker://alpine oci:alpine:latest`):
        coffer convert oci:alpine:latest oci:alpine-cc:latest

    Store config files encrypted; the key goes to a file for the manifest secret `image_key`:
        coffer convert oci:app:1 oci-archive:app-cc.tar:1 --encrypt '/app/conf/**' --key-out app.key

    Reproduce the same image bit for bit (same input, options and key):
        SOURCE_DATE_EPOCH=0 coffer convert docker-archive:app.tar oci:out --encrypt /app/conf --key app.key

    Only trust /usr and /app, let the app write /var/cache:
        coffer convert oci:app oci:app-cc --trusted '/usr/**' --trusted '/app/**' --allowed /var/cache

OUTPUT:
    Prints the image measurement and a manifest `packages` entry to paste. In simulation the
    launcher reports the image measurement as MRENCLAVE. --json prints image_measurement,
    mrenclave, output, manifest_digest, … for scripts.

ENVIRONMENT:
    SOURCE_DATE_EPOCH    timestamp (seconds) for everything written (default 0)")]
pub(crate) struct ConvertArgs {
    /// The image to convert: oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:TAG]
    /// (gzip, zstd or uncompressed layers).
    source: String,

    /// Where to write the result: oci:DIR[:TAG], oci-archive:FILE[:TAG] or
    /// docker-archive:FILE[:TAG]. Must not exist.
    target: String,

    /// The static launcher binary (default: `coffer-launcher` next to this `coffer`).
    #[arg(long, value_name = "PATH")]
    launcher: Option<PathBuf>,

    /// Trust only files matching GLOB (repeatable; default: all files). `*` stays within one
    /// directory, `**` crosses directories, a directory covers its contents.
    #[arg(long, value_name = "GLOB")]
    trusted: Vec<String>,

    /// Files matching GLOB are writable/untrusted: never hashed (repeatable).
    #[arg(long, value_name = "GLOB")]
    allowed: Vec<String>,

    /// PATH is mounted at run time (a Kubernetes volume): never hashed (repeatable; /proc,
    /// /sys, /dev, /etc/hosts, /etc/hostname, /etc/resolv.conf, /run/secrets always are).
    #[arg(long = "mount", value_name = "PATH")]
    mounts: Vec<String>,

    /// Store files matching GLOB encrypted (repeatable, or several after one flag); their
    /// plaintext is removed from every layer.
    #[arg(long, value_name = "GLOB", num_args = 1..)]
    encrypt: Vec<String>,

    /// Write a new random key for --encrypt to FILE (mode 0600, must not exist); put it in the
    /// manifest as the secret `image_key`.
    #[arg(long, value_name = "FILE")]
    key_out: Option<PathBuf>,

    /// Reuse the key in FILE (64 hex characters or 32 raw bytes) for --encrypt.
    #[arg(long, value_name = "FILE", conflicts_with = "key_out")]
    key: Option<PathBuf>,

    /// ISVPRODID to record (the simulated platform reports it; SGX signs it).
    #[arg(long, default_value_t = 0)]
    isv_prod_id: u16,

    /// ISVSVN to record (the simulated platform reports it; SGX signs it).
    #[arg(long, default_value_t = 0)]
    isv_svn: u16,

    /// TEE to build for.
    #[arg(long, value_enum, default_value_t = TeeArg::None)]
    tee: TeeArg,

    /// RSA-3072 key (PEM) to sign the SGX enclave with (`--tee sgx`).
    #[arg(long, value_name = "KEY.pem")]
    sign_key: Option<PathBuf>,

    /// Refuse images whose layers unpack to more than this many bytes (decompression bombs).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_unpacked_size)]
    max_size: u64,

    /// Refuse images with more than this many layer entries.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_entries)]
    max_entries: u64,

    /// Refuse images with more than this many layers.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_layers)]
    max_layers: usize,

    /// Refuse index, manifest or config documents larger than this.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_json)]
    max_json: u64,

    /// Name of the package in the printed manifest snippet.
    #[arg(long, default_value = "app")]
    package_name: String,
}

fn default_launcher() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running coffer executable")?;
    Ok(exe.with_file_name("coffer-launcher"))
}

fn fail(e: coffer_image::Error) -> anyhow::Error {
    anyhow::Error::new(Failure::new(e.kind(), e.to_string()))
}

fn write_key_file(path: &Path, key: &Key) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            Failure::new(
                "key_out",
                format!(
                    "cannot create key file {}: {e} (it must not exist already)",
                    path.display()
                ),
            )
        })?;
    let hexed = key.to_hex();
    f.write_all(hexed.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing key file {}", path.display()))?;
    Ok(())
}

/// Runs `coffer convert`.
pub(crate) fn run(args: ConvertArgs, global: Global) -> anyhow::Result<ExitCode> {
    let source: ImageRef = args.source.parse().map_err(fail)?;
    let target: ImageRef = args.target.parse().map_err(fail)?;
    if args.tee == TeeArg::Sgx {
        return Err(Failure::new(
            "unsupported",
            "`--tee sgx` is not available in this build yet: the Gramine manifest and SIGSTRUCT \
             step is not wired into convert. Convert without --tee (the image measurement pins the \
             image; simulation reports it as MRENCLAVE), or sign with `coffer sgx` separately.",
        )
        .into());
    }
    if args.sign_key.is_some() {
        return Err(Failure::new("usage", "--sign-key is only used with --tee sgx").into());
    }
    let launcher = match args.launcher {
        Some(p) => p,
        None => default_launcher()?,
    };
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(v.trim().parse::<u64>().map_err(|_| {
            Failure::new(
                "usage",
                format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"),
            )
        })?),
        _ => None,
    };

    // The key: reused, or new and written before conversion (removed again on failure).
    let mut created_key_file: Option<PathBuf> = None;
    let key = if args.encrypt.is_empty() {
        if args.key.is_some() || args.key_out.is_some() {
            return Err(
                Failure::new("usage", "--key and --key-out are only used with --encrypt").into(),
            );
        }
        None
    } else if let Some(p) = &args.key {
        let bytes =
            std::fs::read(p).with_context(|| format!("reading key file {}", p.display()))?;
        Some(Key::parse(&bytes).map_err(fail)?)
    } else if let Some(p) = &args.key_out {
        let k = Key::generate();
        write_key_file(p, &k)?;
        created_key_file = Some(p.clone());
        Some(k)
    } else {
        return Err(Failure::new(
            "usage",
            "--encrypt needs --key-out FILE (new random key) or --key FILE (reuse a key)",
        )
        .into());
    };

    let opts = ConvertOptions {
        source,
        target,
        launcher,
        trusted: args.trusted,
        allowed: args.allowed,
        runtime_mounts: args.mounts,
        encrypt: args.encrypt,
        key,
        isv_prod_id: args.isv_prod_id,
        isv_svn: args.isv_svn,
        source_date_epoch,
        limits: Limits {
            max_unpacked_size: args.max_size,
            max_entries: args.max_entries,
            max_layers: args.max_layers,
            max_json: args.max_json,
        },
        sgx: None,
    };

    let bar = if std::io::stderr().is_terminal() && !global.json {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:16} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let on_progress = |p: Progress<'_>| {
        if let Some(b) = &bar {
            match p {
                Progress::Stage(name, total) => {
                    b.set_message(name.to_string());
                    b.set_length(total);
                    b.set_position(0);
                }
                Progress::Advance(n) => b.inc(n),
            }
        }
    };
    let result = coffer_image::convert(&opts, &on_progress);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(p) = created_key_file {
                let _ = std::fs::remove_file(p);
            }
            return Err(fail(e));
        }
    };

    let m = report.image_measurement.to_string();
    let package = serde_json::json!({
        args.package_name.clone(): {
            "tee": "sgx",
            "mrenclave": m,
            "isv_prod_id": report.isv_prod_id,
            "isv_svn": report.isv_svn,
            "debug": false,
        }
    });
    if global.json {
        print_json(&serde_json::json!({
            "output": report.output,
            "reference": report.reference,
            "image_measurement": m,
            "mrenclave": m,
            "mrenclave_source": "simulation (image measurement)",
            "manifest_digest": report.manifest_digest.oci(),
            "config_digest": report.config_digest.oci(),
            "trusted_files": report.trusted_files,
            "symlinks": report.symlinks,
            "encrypted_files": report.encrypted_files,
            "rewritten_layers": report.rewritten_layers,
            "bytes_read": report.bytes_read,
            "key_file": args.key_out.as_ref().or(args.key.as_ref()),
            "packages": package,
        }))?;
    } else {
        println!("converted image written to {}", report.reference);
        println!("  manifest digest     {}", report.manifest_digest.oci());
        println!("  image measurement   {m}");
        println!(
            "  trusted files       {} ({} symlinks, {} encrypted, {} MiB read)",
            report.trusted_files,
            report.symlinks,
            report.encrypted_files.len(),
            report.bytes_read >> 20
        );
        if let Some(k) = args.key_out.as_ref().or(args.key.as_ref()) {
            println!(
                "  encryption key      {} (put it in the manifest as the secret `image_key`; it is not in the image)",
                k.display()
            );
        }
        println!();
        println!(
            "Simulation reports the image measurement as MRENCLAVE. Manifest `packages` entry:"
        );
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "packages": package }))?
        );
    }
    Ok(ExitCode::SUCCESS)
}
