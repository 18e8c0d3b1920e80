//! `coffer manifest …`: check, hash and publish deployment manifests.
//!
//! Local commands (`schema`, `verify`, `hash`) are glue over `coffer-manifest`: read the file
//! here, validate and hash there. Commands that talk to a Coordinator sit beside them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use coffer_manifest::{Format, Manifest, ValidationErrors, MAX_MANIFEST_BYTES};
use serde::Serialize;

use crate::output::{print_json, Failure};
use crate::Global;

/// `coffer manifest --help`: examples across the subcommands.
pub(crate) const GROUP_HELP: &str = "EXAMPLES:
    Check a manifest and print the hash clients pin:
        coffer manifest verify manifest.yaml
        coffer manifest hash manifest.yaml

    Set it on a Coordinator, then read back what is in force (the hash of the output is the same):
        coffer manifest set manifest.yaml --coordinator 127.0.0.1:4433 --root-ca root-ca.pem
        coffer manifest get --canonical --coordinator 127.0.0.1:4433 --root-ca root-ca.pem";

/// Subcommands of `coffer manifest`.
#[derive(Debug, Subcommand)]
pub(crate) enum ManifestCmd {
    /// Print the JSON Schema of the deployment manifest.
    #[command(after_help = "EXAMPLES:
    coffer manifest schema > coffer-manifest.schema.json

Editors that understand JSON Schema (VS Code: \"json.schemas\", or \"$schema\" tooling) then complete
and check manifests as you type. The schema checks structure; `coffer manifest verify` also checks
meaning (references, measurements, PEMs, placeholders).")]
    Schema,
    /// Validate a manifest: every problem with its JSON path, or OK and the canonical hash.
    #[command(after_help = "EXAMPLES:
    coffer manifest verify manifest.json
    coffer manifest verify manifest.yaml
    coffer --json manifest verify manifest.json
    cat manifest.json | coffer manifest verify -

JSON or YAML is detected from the content. Exit status 0 when valid, 1 when not; every problem is
listed with its path (e.g. $.workloads.web.parameters.env.DB_KEY) and a hint. With --json, problems
are in error.problems as {path, message, hint, line, column}.")]
    Verify(FileArgs),
    /// Print the canonical SHA-256 of a manifest: the value clients pin.
    #[command(after_help = "EXAMPLES:
    coffer manifest hash manifest.json
    coffer manifest hash --canonical manifest.yaml > manifest.canonical.json
    coffer --json manifest hash manifest.json

The hash is SHA-256 over the canonical JSON (defaults filled, keys sorted, no whitespace), so the
JSON and YAML forms of one manifest, or a re-ordered copy, have the same hash. Compare it with the
`manifest_hash` a Coordinator reports (`coffer status`, `coffer verify --manifest-hash`).")]
    Hash(HashArgs),
    /// Set the first manifest on a Coordinator (once).
    Set(crate::cmd::client::ManifestSetArgs),
    /// Print the manifest a Coordinator has in force (indented; --canonical: the hashed bytes).
    Get(crate::cmd::client::ManifestGetArgs),
    /// Replace a Coordinator's manifest (client certificate of a user whose role allows it).
    Update(crate::cmd::client::ManifestUpdateArgs),
    /// Print a Coordinator's manifest history (a hash chain), checked.
    Log(crate::cmd::client::ManifestLogArgs),
}

/// A manifest file argument.
#[derive(Debug, Args)]
pub(crate) struct FileArgs {
    /// The manifest (JSON or YAML); `-` reads standard input.
    file: PathBuf,
}

/// `coffer manifest hash`.
#[derive(Debug, Args)]
pub(crate) struct HashArgs {
    /// The manifest (JSON or YAML); `-` reads standard input.
    file: PathBuf,
    /// Print the canonical JSON that is hashed instead of the hash.
    #[arg(long)]
    canonical: bool,
}

/// Runs `coffer manifest …`.
pub(crate) fn run(cmd: ManifestCmd, global: Global) -> anyhow::Result<ExitCode> {
    match cmd {
        ManifestCmd::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&Manifest::json_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
        ManifestCmd::Verify(a) => verify(&a.file, global),
        ManifestCmd::Hash(a) => hash(&a, global),
        ManifestCmd::Set(a) => crate::cmd::client::manifest_set(a, global),
        ManifestCmd::Get(a) => crate::cmd::client::manifest_get(a, global),
        ManifestCmd::Update(a) => crate::cmd::client::manifest_update(a, global),
        ManifestCmd::Log(a) => crate::cmd::client::manifest_log(a, global),
    }
}

/// Reads a manifest file (or stdin for `-`), bounded to the size the parser accepts.
pub(crate) fn read_manifest_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    let limit = MAX_MANIFEST_BYTES as u64 + 1;
    let mut buf = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut buf)
            .context("cannot read the manifest from standard input")?;
    } else {
        let f = std::fs::File::open(path).map_err(|e| {
            Failure::new(
                "io",
                format!("cannot open manifest {}: {e}", path.display()),
            )
        })?;
        f.take(limit)
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
    }
    Ok(buf)
}

#[derive(Serialize)]
struct VerifyOk<'a> {
    valid: bool,
    file: String,
    format: &'a str,
    sha256: String,
    packages: usize,
    workloads: usize,
    secrets: usize,
    users: usize,
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Json => "json",
        Format::Yaml => "yaml",
    }
}

fn report_invalid(
    path: &Path,
    errs: &ValidationErrors,
    global: Global,
) -> anyhow::Result<ExitCode> {
    let message = format!("{} is invalid: {} problem(s)", path.display(), errs.len());
    if global.json {
        let body = serde_json::json!({
            "error": { "kind": "invalid-manifest", "message": message, "problems": errs }
        });
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        eprintln!("{errs}");
        eprintln!("error: {message}");
    }
    Ok(ExitCode::from(1))
}

fn verify(path: &Path, global: Global) -> anyhow::Result<ExitCode> {
    let bytes = read_manifest_bytes(path)?;
    let (m, format) = match Manifest::parse_with_format(&bytes) {
        Ok(x) => x,
        Err(errs) => return report_invalid(path, &errs, global),
    };
    let ok = VerifyOk {
        valid: true,
        file: path.display().to_string(),
        format: format_name(format),
        sha256: m.hash_hex(),
        packages: m.packages.len(),
        workloads: m.workloads.len(),
        secrets: m.secrets.len(),
        users: m.users.len(),
    };
    if global.json {
        print_json(&ok)?;
    } else {
        println!(
            "OK: {} is valid ({}; {} packages, {} workloads, {} secrets, {} users)",
            ok.file, ok.format, ok.packages, ok.workloads, ok.secrets, ok.users
        );
        println!("sha256: {}", ok.sha256);
    }
    Ok(ExitCode::SUCCESS)
}

fn hash(a: &HashArgs, global: Global) -> anyhow::Result<ExitCode> {
    let bytes = read_manifest_bytes(&a.file)?;
    let m = match Manifest::parse(&bytes) {
        Ok(m) => m,
        Err(errs) => return report_invalid(&a.file, &errs, global),
    };
    if a.canonical {
        // The canonical form is JSON already; print it as is (it is what is hashed).
        println!("{}", String::from_utf8_lossy(&m.canonical_json()));
    } else if global.json {
        print_json(&serde_json::json!({ "sha256": m.hash_hex() }))?;
    } else {
        println!("{}", m.hash_hex());
    }
    Ok(ExitCode::SUCCESS)
}
