//! `coffer-launcher`: the premain of a confidential container.
//!
//! It is the converted image's entrypoint and runs inside the TEE before the app. It
//! 1. reads its settings ([`config`]) and the image's `/coffer/workload.json`;
//! 2. measures the image's trusted files against the workload file;
//! 3. generates a P-256 key, gets evidence whose report data binds the key
//!    ([`coffer_api::workload_report_data`]) from Gramine's `/dev/attestation`, Linux
//!    configfs-tsm (a TDX quote, or an SEV-SNP report with the host's certificate table), or —
//!    only when asked for by name — the simulated platform ([`evidence`]);
//! 4. activates with the Coordinator over TLS, checking the Coordinator first
//!    ([`config::CoordinatorTrust`]; never trust-on-first-use), retrying with capped backoff
//!    while it is unreachable and stopping at once on a refusal ([`activate`]);
//! 5. writes the TLS identity to `/coffer/tls/{cert.pem,key.pem,root-ca.pem}` and the
//!    manifest's files, decrypts protected files, merges the environment and argv
//!    ([`materialise`]);
//! 6. `execve`s the original `Entrypoint ++ Cmd` ([`exec`]), so the app keeps the PID, gets
//!    signals directly and its exit status is the container's.
//!
//! # Environment
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `COFFER_COORDINATOR` | `host:port` of the Coordinator | required |
//! | `COFFER_WORKLOAD` | workload name in the manifest | required |
//! | `COFFER_INSTANCE_ID` | instance UUID (same UUID → same per-instance secrets) | random per start, not persisted |
//! | `COFFER_EVIDENCE` | `auto`, `gramine`, `tsm`, `sim` | `auto` (never simulation) |
//! | `COFFER_ATTESTATION_ROOT` | Gramine attestation directory | `/dev/attestation` |
//! | `COFFER_TSM_ROOT` | configfs-tsm report directory | `/sys/kernel/config/tsm/report` |
//! | `COFFER_SIM_DIR` | directory of `sim-platform.json` (simulation) | — |
//! | `COFFER_ROOT_CA` | PEM root CA the Coordinator's TLS certificate must chain to | this, or a measurement pin |
//! | `COFFER_COORDINATOR_MRENCLAVE` | expected MRENCLAVE in the Coordinator's RA-TLS quote ([`ratls`]) | — |
//! | `COFFER_COORDINATOR_MRSIGNER`, `_ISVPRODID`, `_MIN_ISVSVN` | or its expected signer, product and lowest SVN | — |
//! | `COFFER_ROOTFS` | the image root (tests, `coffer run --no-runtime`) | `/` |
//! | `COFFER_CHROOT` | `1`: chroot into `COFFER_ROOTFS` before exec | `0` |
//! | `COFFER_ACTIVATE_TIMEOUT` | seconds to keep retrying an unreachable Coordinator | 300 |
//! | `COFFER_SECRET_DIRS` | under Gramine: `:`-separated in-enclave tmpfs directories for the manifest's files | `/coffer/tls` |
//!
//! Inside an SGX image converted with `--tee sgx`, Gramine's manifest fixes
//! `COFFER_EVIDENCE`, `COFFER_WORKLOAD`, the trust pin, `COFFER_SECRET_DIRS` and
//! `LD_LIBRARY_PATH`, passes only `COFFER_COORDINATOR`, `COFFER_INSTANCE_ID` and
//! `COFFER_ACTIVATE_TIMEOUT` from the host, and fixes argv: Kubernetes `args:` do not reach the
//! app there, which gets the image's `Entrypoint ++ Cmd` or the manifest's `parameters.argv`.
//!
//! The app's environment is its image's `Env`, the host variables the manifest names in
//! `parameters.host_env` (never the launcher's own or `LD_*`), and the manifest's `env`, which
//! wins. Every other host variable (the pod spec's, the runtime's) is dropped: the host is not
//! trusted, so `NODE_OPTIONS`, `PYTHONPATH` or `PATH` from it never steer the app.
//!
//! # Exit status
//!
//! The app's own once it runs. Before that: 78 configuration, 65 workload file / image
//! integrity / bad parameters, 71 evidence (no TEE, device error), 69 Coordinator unreachable,
//! 75 Coordinator reachable but not ready to activate (e.g. a user-defined secret not set),
//! 76 Coordinator not trusted or protocol error, 77 activation refused (the Coordinator's reason
//! is printed), 74 file I/O, 126 app not executable, 127 app not found.
//!
//! # Trusted files and simulation
//!
//! In a TD the launcher checks every trusted file against the workload file *before*
//! activating, so a modified image never receives secrets. Inside Gramine, Gramine itself
//! checks each trusted file against the measured manifest when it is opened, so the launcher
//! reports the workload file's image measurement without hashing the image again; there it
//! also refuses any manifest file outside `COFFER_SECRET_DIRS` (anything else would be written
//! through to the host's disk) and puts Gramine's glibc first in the app's `LD_LIBRARY_PATH`. In simulation the
//! simulated "hardware" measures what is on disk: the image measurement recomputed from the
//! files becomes the quote's MRENCLAVE, so the Coordinator refuses a modified image with a
//! policy mismatch; the launcher checks the files again after activation, before it writes or
//! runs anything.

#![forbid(unsafe_code)]

pub mod activate;
mod client;
pub mod config;
mod error;
pub mod evidence;
pub mod exec;
pub mod fsutil;
pub mod materialise;
pub mod ratls;
pub mod sim;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use coffer_image::workload::{WorkloadFile, WORKLOAD_PATH};

pub use client::COORDINATOR_SERVER_NAME;
pub use config::Config;
pub use error::Error;
pub use evidence::Source;

/// Reads and validates `/coffer/workload.json` under `rootfs`.
pub fn load_workload(rootfs: &Path) -> Result<WorkloadFile, Error> {
    let comps = fsutil::canonical_components(WORKLOAD_PATH).map_err(Error::Config)?;
    let (name, parents) = comps
        .split_last()
        .ok_or_else(|| Error::Config("workload path".into()))?;
    let path = rootfs.join(WORKLOAD_PATH.trim_start_matches('/'));
    let wrap = |reason: String| Error::Workload {
        path: path.clone(),
        reason,
    };
    let dir = fsutil::resolve_dir(rootfs, parents, false).map_err(|e| wrap(e.to_string()))?;
    let file = dir.join(name);
    let meta = fs::metadata(&file).map_err(|e| {
        wrap(format!("{e}; is this an image converted with `coffer convert` (COFFER_ROOTFS points at its root)?"))
    })?;
    if meta.len() > coffer_image::workload::MAX_WORKLOAD_FILE {
        return Err(wrap("too large".into()));
    }
    let bytes = fs::read(&file).map_err(|e| wrap(e.to_string()))?;
    WorkloadFile::from_json(&bytes).map_err(|e| wrap(e.to_string()))
}

/// Builds the TLS configuration for the Coordinator trust setting; also returns the pinned
/// root CA (PEM bytes) when there is one.
pub fn coordinator_tls(
    config: &Config,
    source: &Source,
) -> Result<(activate::CoordinatorTls, Option<Vec<u8>>), Error> {
    match config.trust()? {
        config::CoordinatorTrust::RootCa(path) => {
            let pem = fs::read(path)
                .map_err(|e| Error::Config(format!("COFFER_ROOT_CA {}: {e}", path.display())))?;
            Ok((
                activate::CoordinatorTls::Fixed(activate::tls_for_root_ca(&pem)?),
                Some(pem),
            ))
        }
        config::CoordinatorTrust::Measurement(m) => Ok((
            activate::CoordinatorTls::Measurement(Box::new(ratls::MeasurementTrust::new(
                source,
                m.clone(),
            )?)),
            None,
        )),
    }
}

/// Everything up to the exec: returns the plan to exec, or the error that stops the start.
pub fn prepare(
    config: &Config,
    host_env: &BTreeMap<String, String>,
    runtime_args: &[String],
) -> Result<exec::Plan, Error> {
    let rootfs = config.rootfs.as_path();
    let addr = config.coordinator()?;
    let workload = config.workload()?;
    config.trust()?;
    let wf = load_workload(rootfs)?;
    let source = Source::choose(config)?;
    let (tls, pinned_root) = coordinator_tls(config, &source)?;
    let user = materialise::resolve_user(rootfs, &wf.user)?;

    let in_enclave = matches!(source, Source::Gramine(_));
    // Inside Gramine every trusted file is checked by Gramine itself when opened, against the
    // hash in the measured manifest, under every path that reaches it
    // (`libos/src/fs/chroot/trusted.c`), and the manifest pins this workload file. Hashing the
    // image again would only repeat that, slowly; and symlinks are invisible there, so an
    // lstat-based check would see every link as a regular file.
    let measured = if in_enclave {
        None
    } else {
        let m = coffer_image::workload::measure_rootfs(rootfs, &wf)
            .map_err(|e| Error::Integrity(e.to_string()))?;
        if !source.is_simulated() {
            m.check().map_err(|e| Error::Integrity(e.to_string()))?;
        }
        Some(m)
    };
    let image_measurement = measured
        .as_ref()
        .map_or(wf.image_measurement, |m| m.measurement);

    let key = activate::WorkloadKey::generate()?;
    // The image as measured on disk (outside simulation checked above against the workload
    // file), or as Gramine enforces it.
    let report_data = key.report_data(&image_measurement.0);
    let evidence = match &source {
        Source::Gramine(root) => evidence::dcap(&evidence::gramine_quote(root, &report_data)?),
        Source::Tsm(root) => evidence::tsm_evidence(root, &report_data)?,
        Source::Sim(dir) => {
            eprintln!("coffer-launcher: WARNING: using the SIMULATED platform in {}: no hardware protection", dir.display());
            evidence::dcap(&sim::sim_quote(dir, &wf, &image_measurement, &report_data)?)
        }
    };
    let req = activate::Request {
        addr,
        workload,
        instance_id: config.instance_id,
        trust: config.trust()?,
        timeout: config.activate_timeout,
        image_measurement: image_measurement.0,
    };
    let activated = activate::activate(&req, &tls, &key, &evidence, pinned_root.as_deref())?;
    let resp = &activated.response;

    if let Some(m) = &measured {
        m.check().map_err(|e| Error::Integrity(e.to_string()))?;
    }
    materialise::check_file_paths(resp, &wf)?;
    if in_enclave {
        materialise::check_enclave_paths(resp, &config.secret_dirs)?;
    }
    let key_pem = key.private_key_pem();
    let written = materialise::write_files(rootfs, resp, &key_pem, &wf, user)?;
    let image_key = resp.parameters.image_key.as_deref();
    let decrypted = match &source {
        Source::Gramine(attestation) => {
            materialise::unlock_gramine_files(attestation, rootfs, &wf, image_key)?
        }
        _ => materialise::decrypt_files(rootfs, &wf, image_key, user)?,
    };
    let mut env = materialise::merge_env(
        &wf.env,
        host_env,
        &resp.parameters.host_env,
        &resp.parameters.env,
    );
    materialise::add_runtime_defaults(&mut env, rootfs, user);
    if in_enclave {
        // Gramine's glibc first, so the app's system calls go straight into the LibOS.
        let image_dirs = env.get("LD_LIBRARY_PATH").cloned();
        env.insert(
            "LD_LIBRARY_PATH".into(),
            coffer_image::gramine::library_path(image_dirs.as_deref()),
        );
    }
    let argv = materialise::argv(&wf, runtime_args, resp.parameters.argv.as_ref());
    eprintln!(
        "coffer-launcher: activated {workload} (instance {}, {} evidence); wrote {written} files, decrypted {decrypted}; starting {}",
        config.instance_id,
        source.name(),
        argv.first().map(String::as_str).unwrap_or("")
    );
    Ok(exec::Plan {
        argv,
        env,
        workdir: wf.working_dir.clone(),
        user,
    })
}

/// A human-readable account of what the launcher would do, without activating.
pub fn check_report(config: &Config, runtime_args: &[String]) -> (String, bool) {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut ok = true;
    let mut line = |ok_line: bool, s: String| {
        let _ = writeln!(out, "{} {s}", if ok_line { "ok  " } else { "FAIL" });
        ok_line
    };
    ok &= line(
        true,
        format!("root filesystem: {}", config.rootfs.display()),
    );
    ok &= match config.coordinator() {
        Ok(a) => line(
            true,
            format!("Coordinator: {a} (TLS name {COORDINATOR_SERVER_NAME})"),
        ),
        Err(e) => line(false, e.to_string()),
    };
    ok &= match config.workload() {
        Ok(w) => line(true, format!("workload: {w}")),
        Err(e) => line(false, e.to_string()),
    };
    ok &= line(
        true,
        format!(
            "instance id: {} ({})",
            config.instance_id,
            if config.instance_id_given {
                "COFFER_INSTANCE_ID"
            } else {
                "random, not persisted"
            }
        ),
    );
    ok &= match config.trust() {
        Ok(config::CoordinatorTrust::RootCa(p)) => line(
            p.is_file(),
            format!("Coordinator trust: TLS chain to root CA {}", p.display()),
        ),
        Ok(config::CoordinatorTrust::Measurement(m)) => line(
            true,
            format!("Coordinator trust: RA-TLS evidence with {m} (collateral relayed by it)"),
        ),
        Err(e) => line(false, e.to_string()),
    };
    let source = Source::choose(config);
    ok &= match &source {
        Ok(s @ Source::Sim(d)) => line(
            true,
            format!(
                "evidence: {} (SIMULATED platform in {})",
                s.name(),
                d.display()
            ),
        ),
        Ok(s @ (Source::Gramine(r) | Source::Tsm(r))) => {
            line(true, format!("evidence: {} at {}", s.name(), r.display()))
        }
        Err(e) => line(false, e.to_string()),
    };
    match load_workload(&config.rootfs) {
        Ok(wf) => {
            ok &= line(
                true,
                format!(
                    "workload file: image measurement {}, {} trusted files, {} encrypted, {} symlinks",
                    wf.image_measurement.hex(),
                    wf.trusted_files.len(),
                    wf.encrypted_files.len(),
                    wf.symlinks.len()
                ),
            );
            ok &= match coffer_image::workload::measure_rootfs(&config.rootfs, &wf) {
                Ok(m) => match m.check() {
                    Ok(()) => line(true, "trusted files match the workload file".into()),
                    Err(e) => line(false, format!("trusted files: {e}")),
                },
                Err(e) => line(false, format!("measuring: {e}")),
            };
            let argv = materialise::argv(&wf, runtime_args, None);
            ok &= line(
                true,
                format!(
                    "would exec {:?} with {} more arguments in {} as {} (the Coordinator may replace argv)",
                    argv.first().map(String::as_str).unwrap_or(""),
                    argv.len().saturating_sub(1),
                    if wf.working_dir.is_empty() { "/" } else { &wf.working_dir },
                    if wf.user.is_empty() { "root" } else { &wf.user }
                ),
            );
            ok &= line(
                true,
                format!(
                    "would write {}/cert.pem, key.pem, root-ca.pem and the manifest's files",
                    materialise::TLS_DIR
                ),
            );
        }
        Err(e) => ok &= line(false, e.to_string()),
    }
    (out, ok)
}
