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

use crate::output::{print_json, read_bounded, Failure};
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

    Straight from a registry to a registry (credentials from --creds or the auth file, as
    `skopeo login` / `docker login` write it; blobs the registry has are not sent again):
        coffer convert docker://registry.example/app:1 docker://registry.example/app-cc:1

    A local registry without TLS, or one with a private CA:
        coffer convert docker://127.0.0.1:5000/app:1 oci:app-cc --tls-verify=false
        coffer convert docker://reg.lan/app:1 docker://reg.lan/app-cc:1 --cert-dir /etc/reg-ca

    Store config files encrypted; the key goes to a file for the manifest secret `image_key`:
        coffer convert oci:app:1 oci-archive:app-cc.tar:1 --encrypt '/app/conf/**' --key-out app.key

    Reproduce the same image bit for bit (same input, options and key):
        SOURCE_DATE_EPOCH=0 coffer convert docker-archive:app.tar oci:out \\
            --encrypt /app/conf --key app.key

    Only trust /usr and /app, let the app write /var/cache:
        coffer convert oci:app oci:app-cc --trusted '/usr/**' --trusted '/app/**' \\
            --allowed /var/cache

    Build for SGX with Gramine (Gramine goes into the image; prints MRENCLAVE and MRSIGNER):
        coffer convert oci:app oci:app-sgx --tee sgx --sign-key enclave-key.pem \\
            --gramine-dir /usr/lib/x86_64-linux-gnu/gramine --workload web \\
            --coordinator-root-ca coordinator-root.pem --secret-dir /etc/app/secrets

OUTPUT:
    Prints the image measurement and a manifest `packages` entry to paste. In simulation the
    launcher reports the image measurement as MRENCLAVE. --json prints image_measurement,
    mrenclave, output, manifest_digest, … for scripts.

SGX (--tee sgx):
    The Gramine installation in --gramine-dir goes into the image under /coffer/gramine, with
    the glibc its host loader was built against, so the enclave that runs is the one measured
    and the image needs no shell or libc of its own. Coffer renders the Gramine manifest
    (every trusted file with its SHA-256, also under each symlink path that reaches it;
    --allowed paths and runtime mounts as allowed files; /tmp, /coffer/tls and every
    --secret-dir as in-enclave tmpfs), computes the MRENCLAVE that Gramine's signer computes
    for the image's libpal.so, and signs the SIGSTRUCT with --sign-key (date from
    SOURCE_DATE_EPOCH, or none, so output stays reproducible). The ENTRYPOINT becomes
    `/coffer/launcher --start-gramine-sgx`, which starts Gramine; inside the enclave the
    launcher's workload name and trust pin (the Coordinator's root CA, or its MRENCLAVE or
    MRSIGNER, checked in its RA-TLS quote) are measured, and only
    COFFER_COORDINATOR, COFFER_INSTANCE_ID and COFFER_ACTIVATE_TIMEOUT come from the host.
    The app's arguments are the image's and the manifest's `parameters.argv`: Gramine ignores
    a pod's `args:`. --encrypt files are written in Gramine's encrypted-file format and
    mounted `type = \"encrypted\"`: the launcher writes their key (from the manifest secret
    image_key) inside the enclave and checks each file's version before the app runs. The
    manifest's secret files must target /coffer/tls or a --secret-dir; the launcher refuses
    any other path rather than write a secret to the host's disk.
    --allowed must name files or directories (`/dir/**`), as Gramine has no globs.

ENVIRONMENT:
    SOURCE_DATE_EPOCH    timestamp (seconds) for everything written (default 0)")]
pub(crate) struct ConvertArgs {
    /// The image to convert: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:TAG]
    /// or docker://REGISTRY/NAME[:TAG|@DIGEST] (gzip, zstd or uncompressed layers).
    source: String,

    /// Where to write the result: oci:DIR[:TAG], oci-archive:FILE[:TAG] or
    /// docker-archive:FILE[:TAG] (must not exist), or docker://REGISTRY/NAME[:TAG] (pushed).
    target: String,

    #[command(flatten)]
    registry: crate::cmd::registry::RegistryArgs,

    /// The static launcher binary (default: what `scripts/build-launcher.sh` builds, found
    /// beside this `coffer` in target/, else `coffer-launcher` next to it).
    #[arg(long, value_name = "PATH", env = "COFFER_LAUNCHER")]
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

    /// Store files matching GLOB encrypted (repeatable); their plaintext is removed from every
    /// layer.
    #[arg(long, value_name = "GLOB")]
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

    /// RSA-3072 key (PEM, exponent 3) to sign the SGX enclave with (required with `--tee sgx`).
    #[arg(long, value_name = "KEY.pem")]
    sign_key: Option<PathBuf>,

    /// Gramine's library directory, holding `libsysdb.so`, `sgx/libpal.so`, `sgx/loader` and
    /// `runtime/glibc` (required with `--tee sgx`; e.g. /usr/lib/x86_64-linux-gnu/gramine). It
    /// is copied into the image and MRENCLAVE is computed for it.
    #[arg(long, value_name = "DIR")]
    gramine_dir: Option<PathBuf>,

    /// The workload's name in the Coordinator's manifest (required with `--tee sgx`: inside
    /// an enclave it is measured, not read from the host).
    #[arg(long, value_name = "NAME")]
    workload: Option<String>,

    /// The Coordinator's root CA, PEM (`--tee sgx`; from `coffer verify`): the launcher inside
    /// the enclave trusts only a Coordinator that chains to it. Or pin its measurement instead.
    #[arg(long, value_name = "FILE")]
    coordinator_root_ca: Option<PathBuf>,

    /// The Coordinator's expected MRENCLAVE (`--tee sgx`, instead of --coordinator-root-ca):
    /// the launcher checks it in the Coordinator's RA-TLS quote inside the enclave, with
    /// collateral the Coordinator relays, so the image can be converted before the
    /// Coordinator exists.
    #[arg(long, value_name = "HEX")]
    coordinator_mrenclave: Option<String>,

    /// The Coordinator's expected MRSIGNER (`--tee sgx`, instead of --coordinator-root-ca; with
    /// --coordinator-isv-prod-id and --coordinator-min-isv-svn): survives Coordinator upgrades
    /// signed by the same key.
    #[arg(long, value_name = "HEX")]
    coordinator_mrsigner: Option<String>,

    /// The Coordinator's ISVPRODID (with --coordinator-mrsigner).
    #[arg(long, value_name = "N")]
    coordinator_isv_prod_id: Option<u16>,

    /// The lowest Coordinator ISVSVN accepted (with --coordinator-mrsigner).
    #[arg(long, value_name = "N", default_value_t = 0)]
    coordinator_min_isv_svn: u16,

    /// A directory for the manifest's secret files, made an in-enclave tmpfs (`--tee sgx`;
    /// repeatable). /coffer/tls always is one.
    #[arg(long = "secret-dir", value_name = "DIR")]
    secret_dirs: Vec<String>,

    /// SGX enclave size (`--tee sgx`): a power of two, e.g. 256M, 1G, 4G.
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    enclave_size: String,

    /// Maximum enclave threads (`--tee sgx`).
    #[arg(long, value_name = "N", default_value_t = 16)]
    max_threads: u32,

    /// Build a DEBUG enclave (`--tee sgx`): its memory is readable by the host; never for
    /// production. Off by default.
    #[arg(long)]
    debug_enclave: bool,

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
    use crate::cmd::registry::{self, DOCKER};
    args.registry
        .check_one_registry(&args.source, &args.target)?;
    // Registry images go through a local layout: pulled before, pushed after conversion.
    let scratch = tempfile::Builder::new()
        .prefix("coffer-convert-")
        .tempdir()?;
    let mut pulled = None;
    let source: ImageRef = if args.source.starts_with(DOCKER) {
        let dir = scratch.path().join("pulled");
        let p = registry::pull(&args.source, &dir, &args.registry, global.json)?;
        let tag = p.tag.clone();
        pulled = Some(p);
        ImageRef {
            format: coffer_image::Format::OciDir,
            path: dir,
            tag: Some(tag),
        }
    } else {
        args.source.parse().map_err(fail)?
    };
    const PUSH_TAG: &str = "coffer";
    let push_to = args.target.starts_with(DOCKER).then(|| args.target.clone());
    let target: ImageRef = match &push_to {
        Some(_) => ImageRef {
            format: coffer_image::Format::OciDir,
            path: scratch.path().join("converted"),
            tag: Some(PUSH_TAG.into()),
        },
        None => args.target.parse().map_err(fail)?,
    };
    let gramine = if args.tee == TeeArg::Sgx {
        Some(gramine_options(&args)?)
    } else {
        if args.sign_key.is_some()
            || args.gramine_dir.is_some()
            || args.debug_enclave
            || args.workload.is_some()
            || args.coordinator_root_ca.is_some()
            || args.coordinator_mrenclave.is_some()
            || args.coordinator_mrsigner.is_some()
            || !args.secret_dirs.is_empty()
        {
            return Err(Failure::new(
                "usage",
                "--sign-key, --gramine-dir, --workload, --coordinator-*, --secret-dir and \
                 --debug-enclave are only used with --tee sgx",
            )
            .into());
        }
        None
    };
    let launcher = crate::cmd::launcher_binary::find_launcher(args.launcher.as_deref())
        .map_err(|e| Failure::new("missing_input", format!("{e:#}")))?;
    if !launcher.is_static {
        eprintln!(
            "coffer convert: warning: {} is dynamically linked: images without a matching C \
             library cannot start it; build the static one with `bash scripts/build-launcher.sh`",
            launcher.path.display()
        );
    }
    let launcher = launcher.path;
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
    let result = match &gramine {
        Some(g) => coffer_image::sgx::convert_sgx(&opts, g, &on_progress),
        None => coffer_image::convert(&opts, &on_progress),
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    // A failed conversion or push leaves no new key file behind.
    let converted = result.map_err(fail).and_then(|mut report| {
        let pushed = match &push_to {
            Some(dest) => {
                let p =
                    registry::push(&report.output, PUSH_TAG, dest, &args.registry, global.json)?;
                report.reference = format!("{DOCKER}{}", p.reference);
                report.output = PathBuf::from(&p.reference);
                Some(p)
            }
            None => None,
        };
        Ok((report, pushed))
    });
    let (report, pushed) = match converted {
        Ok(r) => r,
        Err(e) => {
            if let Some(p) = created_key_file {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };

    let m = report.image_measurement.to_string();
    if let Some(sgx) = &report.sgx {
        let key_file = args.key_out.as_ref().or(args.key.as_ref());
        return print_sgx(
            (
                &args.package_name,
                args.debug_enclave,
                key_file,
                &args.secret_dirs,
            ),
            &global,
            &report,
            sgx,
            &m,
        );
    }
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
        let mut v = serde_json::json!({
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
            "dropped_special_files": report.dropped_special_files,
            "bytes_read": report.bytes_read,
            "key_file": args.key_out.as_ref().or(args.key.as_ref()),
            "packages": package,
            "image_key_manifest": key_file_fragment(args.key_out.as_ref().or(args.key.as_ref()), &args.package_name),
        });
        if let Some(p) = &pulled {
            v["pulled"] = serde_json::json!({
                "reference": p.reference,
                "manifest_digest": p.manifest_digest,
                "blobs": p.blobs,
                "downloaded_bytes": p.downloaded,
                "cached_bytes": p.cached,
            });
        }
        if let Some(p) = &pushed {
            v["pushed"] = serde_json::json!({
                "reference": p.reference,
                "manifest_digest": p.manifest_digest,
                "uploaded_blobs": p.uploaded,
                "skipped_blobs": p.skipped,
                "uploaded_bytes": p.bytes,
            });
        }
        print_json(&v)?;
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
        print_notes(report.dropped_special_files.as_slice());
        println!();
        println!(
            "Simulation reports the image measurement as MRENCLAVE. Manifest `packages` entry:"
        );
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "packages": package }))?
        );
        print_key_instructions(
            args.key_out.as_ref().or(args.key.as_ref()),
            &args.package_name,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Name of the secret the printed manifest fragment declares for an image key.
const IMAGE_KEY_SECRET: &str = "image_key";

/// What the conversion left out, said once.
fn print_notes(dropped: &[String]) {
    if let Some(first) = dropped.first() {
        println!(
            "  note                dropped {} device node(s)/FIFO(s) such as {first}: the runtime provides /dev",
            dropped.len()
        );
    }
}

/// The manifest pieces an encrypted image needs: a user-defined 256-bit secret that the key
/// holder sets, and the workload parameter that hands it to the launcher.
fn key_file_fragment(key_file: Option<&PathBuf>, package: &str) -> Option<serde_json::Value> {
    key_file?;
    Some(serde_json::json!({
        "secrets": {
            IMAGE_KEY_SECRET: { "type": "user-defined", "value_type": "symmetric", "size": 256 }
        },
        "workloads": {
            package: {
                "package": package,
                "parameters": { "image_key": format!("{{{{ secrets.{IMAGE_KEY_SECRET}.key.hex }}}}") }
            }
        },
        "roles": {
            "image-key-setter": { "resource": "secrets", "names": [IMAGE_KEY_SECRET], "actions": ["write"] }
        }
    }))
}

/// For `--encrypt`: the manifest fragment and the command that hands the key to the
/// Coordinator (the key is not in the image; without it the launcher cannot decrypt).
fn print_key_instructions(key_file: Option<&PathBuf>, package: &str) -> anyhow::Result<()> {
    let (Some(k), Some(fragment)) = (key_file, key_file_fragment(key_file, package)) else {
        return Ok(());
    };
    println!();
    println!(
        "The encrypted files need the key in {} (it is not in the image). Merge into the manifest\n\
         (give the role `image-key-setter` to the user who sets the key):",
        k.display()
    );
    println!("{}", serde_json::to_string_pretty(&fragment)?);
    println!();
    println!("Once the manifest is set, hand the key to the Coordinator:");
    println!(
        "    coffer secret set {IMAGE_KEY_SECRET} --hex \"$(cat {})\" --coordinator HOST:PORT \\\n        --cert USER.pem --key USER-key.pem --root-ca coordinator-root.pem",
        k.display()
    );
    Ok(())
}

/// Largest key file read into memory (keys are KiBs; this bounds a mistake).
const KEY_FILE_LIMIT: u64 = 1 << 20;

/// Everything `--tee sgx` needs, checked before any conversion work.
fn gramine_options(args: &ConvertArgs) -> anyhow::Result<coffer_image::sgx::GramineOptions> {
    let Some(key_path) = &args.sign_key else {
        return Err(Failure::new(
            "usage",
            "--tee sgx needs --sign-key KEY.pem (an RSA-3072 key with exponent 3; \
             `coffer sgx keygen` makes one)",
        )
        .into());
    };
    let Some(dir) = &args.gramine_dir else {
        return Err(Failure::new(
            "usage",
            "--tee sgx needs --gramine-dir DIR (Gramine's library directory holding \
             sgx/libpal.so, e.g. /usr/lib/x86_64-linux-gnu/gramine)",
        )
        .into());
    };
    let mut pem = read_bounded(key_path, KEY_FILE_LIMIT, "--sign-key")?;
    let parsed = coffer_sgx::SigningKey::from_pem_bytes(&pem);
    // Best-effort wipe of the private key text (the parsed key zeroizes itself).
    pem.fill(0);
    let key = parsed
        .map_err(|e| Failure::new("bad_key", format!("--sign-key {}: {e}", key_path.display())))?;
    let Some(workload) = args.workload.clone() else {
        return Err(Failure::new(
            "usage",
            "--tee sgx needs --workload NAME (the workload's name in the Coordinator's \
             manifest; inside the enclave it is measured, not taken from the host)",
        )
        .into());
    };
    let coordinator = coordinator_pin(args)?;
    let installation =
        coffer_image::sgx::Installation::read(dir, &coffer_image::sgx::default_host_lib_dirs())
            .map_err(|e| Failure::new("gramine", format!("--gramine-dir: {e}")))?;
    let enclave_size = coffer_sgx::gramine::layout::parse_size(&args.enclave_size)
        .ok()
        .filter(|s| s.is_power_of_two() && *s >= 1 << 20)
        .ok_or_else(|| {
            Failure::new(
                "usage",
                format!(
                    "--enclave-size {:?} must be a power of two of at least 1M (e.g. 256M, 1G)",
                    args.enclave_size
                ),
            )
        })?;
    Ok(coffer_image::sgx::GramineOptions {
        installation,
        key,
        enclave_size,
        max_threads: args.max_threads,
        debug: args.debug_enclave,
        workload,
        coordinator,
        secret_dirs: args.secret_dirs.clone(),
    })
}

/// The launcher's Coordinator pin from `--coordinator-root-ca` or `--coordinator-mr*`.
fn coordinator_pin(args: &ConvertArgs) -> anyhow::Result<coffer_image::sgx::CoordinatorPin> {
    use coffer_image::sgx::CoordinatorPin;
    let hash = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<[u8; 32]>> {
        v.as_ref()
            .map(|h| {
                let mut m = [0u8; 32];
                hex::decode_to_slice(h.trim(), &mut m)
                    .map_err(|_| Failure::new("usage", format!("{flag} must be 64 hex digits")))?;
                Ok(m)
            })
            .transpose()
    };
    let mrenclave = hash("--coordinator-mrenclave", &args.coordinator_mrenclave)?;
    let mrsigner = hash("--coordinator-mrsigner", &args.coordinator_mrsigner)?;
    let measured = mrenclave.is_some() || mrsigner.is_some();
    match (&args.coordinator_root_ca, measured) {
        (Some(_), true) => Err(Failure::new(
            "usage",
            "give either --coordinator-root-ca or the Coordinator's measurement \
             (--coordinator-mrenclave or --coordinator-mrsigner), not both",
        )
        .into()),
        (None, false) => Err(Failure::new(
            "usage",
            "--tee sgx needs the launcher's trust pin for the Coordinator: \
             --coordinator-root-ca FILE (its root CA, PEM, from `coffer verify`), or its \
             measurement: --coordinator-mrenclave HEX, or --coordinator-mrsigner HEX with \
             --coordinator-isv-prod-id N and --coordinator-min-isv-svn N",
        )
        .into()),
        (None, true) => {
            if mrsigner.is_some() && args.coordinator_isv_prod_id.is_none() {
                return Err(Failure::new(
                    "usage",
                    "--coordinator-mrsigner needs --coordinator-isv-prod-id (one key signs many \
                     enclaves)",
                )
                .into());
            }
            Ok(CoordinatorPin::Measurement {
                mrenclave,
                mrsigner,
                isv_prod_id: args.coordinator_isv_prod_id,
                min_isv_svn: args.coordinator_min_isv_svn,
            })
        }
        (Some(path), false) => {
            let pem = read_bounded(path, KEY_FILE_LIMIT, "--coordinator-root-ca")?;
            let certs = {
                use rustls::pki_types::{pem::PemObject as _, CertificateDer};
                CertificateDer::pem_slice_iter(&pem)
                    .filter(|c| c.is_ok())
                    .count()
            };
            if certs == 0 {
                return Err(Failure::new(
                    "bad_key",
                    format!(
                        "--coordinator-root-ca {}: no PEM certificate in it",
                        path.display()
                    ),
                )
                .into());
            }
            Ok(CoordinatorPin::RootCa(pem))
        }
    }
}

/// Output of a `--tee sgx` conversion: real MRENCLAVE/MRSIGNER (no simulation label).
fn print_sgx(
    (package_name, debug, key_file, secret_dirs): (&str, bool, Option<&PathBuf>, &[String]),
    global: &Global,
    report: &coffer_image::ConvertReport,
    sgx: &coffer_image::workload::SgxInfo,
    measurement: &str,
) -> anyhow::Result<ExitCode> {
    let package = serde_json::json!({
        package_name: {
            "tee": "sgx",
            "mrenclave": sgx.mrenclave.hex(),
            "mrsigner": sgx.mrsigner.hex(),
            "isv_prod_id": report.isv_prod_id,
            "isv_svn": report.isv_svn,
            "debug": debug,
            "secret_dirs": secret_dirs,
        }
    });
    if global.json {
        print_json(&serde_json::json!({
            "output": report.output,
            "reference": report.reference,
            "image_measurement": measurement,
            "mrenclave": sgx.mrenclave.hex(),
            "mrsigner": sgx.mrsigner.hex(),
            "gramine_manifest": coffer_image::gramine::MANIFEST,
            "sigstruct": coffer_image::gramine::SIG,
            "debug_enclave": debug,
            "manifest_digest": report.manifest_digest.oci(),
            "config_digest": report.config_digest.oci(),
            "trusted_files": report.trusted_files,
            "symlinks": report.symlinks,
            "encrypted_files": report.encrypted_files,
            "rewritten_layers": report.rewritten_layers,
            "dropped_special_files": report.dropped_special_files,
            "bytes_read": report.bytes_read,
            "key_file": key_file,
            "packages": package,
            "image_key_manifest": key_file_fragment(key_file, package_name),
        }))?;
    } else {
        println!("converted image written to {}", report.reference);
        println!("  manifest digest     {}", report.manifest_digest.oci());
        println!("  image measurement   {measurement}");
        println!("  MRENCLAVE           {}", sgx.mrenclave.hex());
        println!("  MRSIGNER            {}", sgx.mrsigner.hex());
        println!(
            "  Gramine files       {} and {}",
            coffer_image::gramine::MANIFEST,
            coffer_image::gramine::SIG
        );
        println!(
            "  starts with         /coffer/launcher {} (Gramine's loader, then the enclave)",
            coffer_image::gramine::START_FLAG
        );
        if debug {
            println!("  WARNING: debug enclave (sgx.debug = true): never use it in production");
        }
        println!(
            "  trusted files       {} ({} symlinks, {} encrypted, {} MiB read)",
            report.trusted_files,
            report.symlinks,
            report.encrypted_files.len(),
            report.bytes_read >> 20
        );
        print_notes(report.dropped_special_files.as_slice());
        println!();
        println!("Manifest `packages` entry pinning this enclave:");
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "packages": package }))?
        );
        print_key_instructions(key_file, package_name)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_image_key_fragment_is_a_valid_manifest_part() {
        let mut m = key_file_fragment(Some(&PathBuf::from("image.key")), "web").unwrap();
        assert!(key_file_fragment(None, "web").is_none());
        m["packages"] = serde_json::json!({"web": {"tee": "sgx", "mrenclave": "ab".repeat(32)}});
        m["users"] = serde_json::json!({"alice": {
            "certificate": rcgen::generate_simple_self_signed(vec!["alice".into()]).unwrap().cert.pem(),
            "roles": ["image-key-setter"]
        }});
        let parsed = coffer_manifest::Manifest::parse(&serde_json::to_vec(&m).unwrap());
        assert!(parsed.is_ok(), "{:?}", parsed.err());
    }
}
