//! `coffer verify`: attest a Coordinator before trusting it, check the manifest and state it
//! serves, remember its state head to detect a later rollback, and write or check offline
//! verification bundles.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use coffer_coordinator::attest::attest;
use coffer_coordinator::bundle::Bundle;
use coffer_coordinator::client::Client;
use coffer_coordinator::tls::Trust;

use crate::cmd::client::{now, remote, runtime, verifier, ConnectArgs};
use crate::cmd::known::{self, Known, KnownFile};
use crate::output::{print_json, Failure};
use crate::Global;

/// `coffer verify`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:
    Attest a development Coordinator, pin its manifest, save its root CA:
        coffer verify --coordinator 127.0.0.1:4433 --allow-simulation --sim-dir ./sim \\
            --manifest manifest.json --root-ca-out root-ca.pem

    A production Coordinator with a known measurement (MRENCLAVE from `coffer convert --tee
    sgx` or `coffer sgx measure`):
        coffer verify --coordinator coffer.example:4433 --collateral-dir ./collateral \\
            --expected-mrenclave \"$MRENCLAVE\" \\
            --manifest-hash \"$(coffer manifest hash manifest.json)\" --root-ca-out root-ca.pem

    Keep evidence for an auditor, and check it later on another machine, offline:
        coffer verify --coordinator coffer.example:4433 --collateral-dir ./collateral \\
            --save-bundle coffer-2026-12-04.bundle.json
        coffer verify --bundle coffer-2026-12-04.bundle.json --expected-mrenclave \"$MRENCLAVE\"

ROLLBACK:
    Every successful verification remembers the Coordinator's state head (generation, manifest
    history head, audit head) in the known-state file, under its root CA key. A later
    verification refuses the Coordinator if its manifest history does not extend the remembered
    head, or its generation or audit log went backwards: the signs of an old copy of its state
    put back by whoever runs the machine. A rollback before any client has seen the newer state
    cannot be detected this way.")]
// verify always attests; a root CA given to it is compared, never trusted instead.
#[command(mut_arg("root_ca", |a| a.help(
    "Refuse the Coordinator unless its attested root CA is this one (PEM, e.g. from an \
     earlier `--root-ca-out`)"
)))]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The manifest (JSON/YAML) the Coordinator must be running.
    #[arg(long, conflicts_with = "manifest_hash")]
    manifest: Option<PathBuf>,
    /// The canonical hash (hex) of the manifest the Coordinator must be running.
    #[arg(long)]
    manifest_hash: Option<String>,
    /// Write the attested root CA (PEM) here, for `--root-ca` and for mTLS clients.
    #[arg(long)]
    root_ca_out: Option<PathBuf>,
    /// The file that remembers each Coordinator's last verified state head (default
    /// $XDG_STATE_HOME/coffer/known-coordinators.json, else ~/.local/state/coffer/…).
    #[arg(long, env = "COFFER_KNOWN_STATE")]
    known_state: Option<PathBuf>,
    /// Neither check nor update the known-state file (the rollback check is skipped).
    #[arg(long)]
    no_remember: bool,
    /// Also write an offline verification bundle (quote, collateral, TLS chain, manifest
    /// history, manifest) to this file.
    #[arg(long, value_name = "FILE", conflicts_with = "bundle")]
    save_bundle: Option<PathBuf>,
    /// Check a bundle written by --save-bundle instead of a live Coordinator (no network).
    /// --expected-mrenclave, --accept-tcb-status, --manifest/--manifest-hash, --root-ca and
    /// --allow-simulation --sim-dir apply to the bundle; --coordinator, --collateral-dir,
    /// --root-ca-out, --known-state and --no-remember do not and are refused
    /// (COFFER_COORDINATOR and COFFER_KNOWN_STATE in the environment are ignored).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["collateral_dir", "root_ca_out", "no_remember"])]
    bundle: Option<PathBuf>,
    /// With --bundle: the time to check it at (Unix seconds or RFC 3339; default: when it was
    /// saved).
    #[arg(long, requires = "bundle", value_parser = crate::cmd::evidence::parse_now)]
    now: Option<i64>,
}

/// `--bundle` with a flag that only a live check uses and that clap cannot refuse itself,
/// because the flag also reads an environment variable (a conflict would then fire on the
/// environment alone): the usage error naming both. Only flags on the command line count.
pub(crate) fn bundle_conflict(m: &clap::ArgMatches) -> Option<String> {
    let given = |id: &str| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    if !given("bundle") {
        return None;
    }
    [
        (
            "coordinator",
            "--coordinator <COORDINATOR>",
            "the bundle names the Coordinator it was saved from",
        ),
        (
            "known_state",
            "--known-state <KNOWN_STATE>",
            "a bundle check neither reads nor updates the known-state file",
        ),
    ]
    .into_iter()
    .find(|(id, _, _)| given(id))
    .map(|(_, flag, why)| {
        format!("the argument '--bundle <FILE>' cannot be used with '{flag}' ({why})")
    })
}

/// The root CA given with --root-ca (DER), which the attested one must equal.
fn read_pinned_root(args: &VerifyArgs) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(path) = &args.connect.root_ca else {
        return Ok(None);
    };
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(
        coffer_coordinator::pki::pem_decode(&pem, "CERTIFICATE").ok_or_else(|| {
            Failure::new(
                "config",
                format!("{} has no PEM CERTIFICATE", path.display()),
            )
        })?,
    ))
}

/// Refuses an attested root CA that is not the one --root-ca names.
fn check_root(pinned: Option<&Vec<u8>>, attested: &[u8]) -> Result<(), Failure> {
    match pinned {
        Some(root) if root.as_slice() != attested => Err(Failure::new(
            "untrusted_root",
            "the attested Coordinator's root CA is not the one given with --root-ca (another \
             deployment, or a Coordinator that started over with a new state)",
        )),
        _ => Ok(()),
    }
}

/// The manifest hash the user expects, from --manifest or --manifest-hash.
fn expected_hash(args: &VerifyArgs) -> anyhow::Result<Option<String>> {
    Ok(match (&args.manifest, &args.manifest_hash) {
        (Some(path), _) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let m = coffer_manifest::Manifest::parse(&bytes).map_err(|e| {
                Failure::new("invalid_manifest", format!("{}: {e:?}", path.display()))
            })?;
            Some(m.hash_hex())
        }
        (None, Some(h)) => Some(h.trim().to_ascii_lowercase()),
        (None, None) => None,
    })
}

fn check_manifest(expected: &Option<String>, got: Option<&str>) -> Result<(), Failure> {
    match (expected, got) {
        (None, _) => Ok(()),
        (Some(want), Some(got)) if got == want => Ok(()),
        (Some(want), Some(got)) => Err(Failure::new(
            "manifest_mismatch",
            format!("the Coordinator runs manifest {got}, not the expected {want}"),
        )),
        (Some(_), None) => Err(Failure::new(
            "manifest_mismatch",
            "the Coordinator has no manifest yet; set it first",
        )),
    }
}

/// Runs `coffer verify`.
pub(crate) fn verify(args: VerifyArgs, global: Global) -> anyhow::Result<ExitCode> {
    if args.bundle.is_some() {
        return verify_bundle(args, global);
    }
    let expected = expected_hash(&args)?;
    let pinned_root = read_pinned_root(&args)?;
    let rt = runtime()?;
    let (attested, status, history, manifest) = rt.block_on(async {
        let v = verifier(&args.connect)?;
        let a = attest(
            &args.connect.coordinator,
            &v,
            &args.connect.expectations(),
            now(),
        )
        .await
        .map_err(remote)?;
        let mut client = Client::new(
            &args.connect.coordinator,
            &Trust::RootCa(a.root_der.clone()),
            None,
        )?;
        let s: coffer_api::StatusResponse = client.get("/api/v1/status").await.map_err(remote)?;
        let (history, manifest) = if a.state.is_some() {
            let h: coffer_api::HistoryResponse = client
                .get("/api/v1/manifest/history")
                .await
                .map_err(remote)?;
            let m = if s.manifest_hash.is_some() && args.save_bundle.is_some() {
                let (st, body) = client
                    .request(
                        coffer_coordinator::client::Method::GET,
                        "/api/v1/manifest",
                        None,
                    )
                    .await
                    .map_err(remote)?;
                st.is_success().then(|| body.to_vec())
            } else {
                None
            };
            (h.entries, m)
        } else {
            (Vec::new(), None)
        };
        Ok::<_, anyhow::Error>((a, s, history, manifest))
    })?;
    check_root(pinned_root.as_ref(), &attested.root_der)?;
    if let Some(t) = &status.tamper {
        return Err(Failure::new(
            "tampered",
            format!(
                "the Coordinator is genuine but found its stored state TAMPERED with; it serves \
                 nothing:\n  - {}",
                t.findings.join("\n  - ")
            ),
        )
        .into());
    }
    // The history must contain the head the quote binds (the TEE's word, not the host's); it
    // may have grown since, if a manifest update landed between the two requests.
    let mut history = history;
    if let Some(state) = &attested.state {
        coffer_api::verify_history(&history).map_err(|e| {
            Failure::new(
                "tampered",
                format!("the Coordinator's manifest history: {e}"),
            )
        })?;
        if !coffer_api::history_extends(&history, state.manifest_version, &state.manifest_head) {
            return Err(Failure::new(
                "tampered",
                format!(
                    "the manifest history served does not contain version {} ({}), the head the \
                     attested quote binds",
                    state.manifest_version,
                    hex::encode(state.manifest_head)
                ),
            )
            .into());
        }
        history.truncate(usize::try_from(state.manifest_version).unwrap_or(usize::MAX));
        let last = history
            .last()
            .map(|e| e.manifest_hash.as_str())
            .filter(|h| *h != coffer_api::chain::NO_MANIFEST);
        let same_version = status
            .state_head
            .as_ref()
            .is_some_and(|h| h.manifest_version == state.manifest_version);
        if same_version && last != status.manifest_hash.as_deref() {
            return Err(Failure::new(
                "tampered",
                "the manifest in force is not the one the attested manifest history ends with",
            )
            .into());
        }
    }
    check_manifest(&expected, status.manifest_hash.as_deref())?;
    // Remembered state: refuse a rollback, then remember this one.
    let known_path = if args.no_remember {
        None
    } else {
        args.known_state.clone().or_else(known::default_path)
    };
    let mut remembered = None;
    if let (Some(path), Some(state)) = (&known_path, &attested.state) {
        let id = known::identity(&attested.root_der)?;
        let mut file = KnownFile::load(path)?;
        if let Some(k) = file.get(&id) {
            known::check_forward(k, state, &history)?;
            remembered = Some(k.state.generation);
        }
        file.set(
            id,
            Known {
                address: args.connect.coordinator.clone(),
                verified_at: now(),
                state: state.clone(),
            },
        );
        file.save(path)?;
    }
    if let Some(out) = &args.root_ca_out {
        std::fs::write(out, &attested.root_pem)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(out) = &args.save_bundle {
        if attested.state.is_none() {
            return Err(Failure::new(
                "usage",
                "the Coordinator serves no verified state (recovery mode): there is nothing to bundle",
            )
            .into());
        }
        let bundle = Bundle::new(
            &args.connect.coordinator,
            &attested,
            history.clone(),
            manifest,
            now(),
        )?;
        std::fs::write(out, bundle.to_json())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if global.json {
        print_json(&serde_json::json!({
            "verified": true,
            "simulation": attested.simulation,
            "mrenclave": attested.mrenclave,
            "tcb_status": attested.tcb_status,
            "state": status.state,
            "manifest_hash": status.manifest_hash,
            "state_head": attested.state,
            "previously_verified_generation": remembered,
            "root_ca_out": args.root_ca_out,
            "bundle": args.save_bundle,
        }))?;
    } else {
        println!(
            "Coordinator at {} verified{}",
            args.connect.coordinator,
            if attested.simulation {
                " (SIMULATION)"
            } else {
                ""
            }
        );
        if let Some(m) = &attested.mrenclave {
            println!("  MRENCLAVE   {m}");
        }
        println!("  TCB status  {}", attested.tcb_status);
        println!("  state       {:?}", status.state);
        println!(
            "  manifest    {}",
            status.manifest_hash.as_deref().unwrap_or("(none)")
        );
        if let Some(s) = &attested.state {
            println!(
                "  history     version {} (head {})",
                s.manifest_version,
                hex::encode(s.manifest_head)
            );
            println!(
                "  generation  {}{}",
                s.generation,
                match remembered {
                    Some(g) => format!(" (previously verified: {g})"),
                    None => String::new(),
                }
            );
        }
        if let Some(out) = &args.root_ca_out {
            println!("  root CA  -> {}", out.display());
        }
        if let Some(out) = &args.save_bundle {
            println!("  bundle   -> {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `coffer verify --bundle FILE`: the same checks on saved evidence, with no network.
fn verify_bundle(args: VerifyArgs, global: Global) -> anyhow::Result<ExitCode> {
    let Some(path) = &args.bundle else {
        return Err(Failure::new("usage", "--bundle FILE is required here").into());
    };
    let expected = expected_hash(&args)?;
    let pinned_root = read_pinned_root(&args)?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bundle = Bundle::parse(&bytes).map_err(|e| Failure::new("bad_request", e.to_string()))?;
    let anchors = if args.connect.allow_simulation {
        let dir = args.connect.sim_dir.clone().ok_or_else(|| {
            Failure::new(
                "usage",
                "--allow-simulation needs --sim-dir with the platform's root",
            )
        })?;
        let sim_path = dir.join(coffer_coordinator::platform::SIM_PLATFORM_FILE);
        let sim = coffer_evidence::sim::SimPlatform::from_bytes(
            &std::fs::read(&sim_path).with_context(|| format!("reading {}", sim_path.display()))?,
        )
        .map_err(|e| Failure::new("config", format!("{}: {e}", sim_path.display())))?;
        sim.trust_anchors()
    } else {
        coffer_evidence::TrustAnchors::intel()
    };
    let at = args.now.unwrap_or(bundle.created);
    let checked = bundle
        .check(anchors, &args.connect.expectations(), at)
        .map_err(remote)?;
    check_root(pinned_root.as_ref(), &checked.attested.root_der)?;
    check_manifest(&expected, checked.manifest_hash.as_deref())?;
    let a = &checked.attested;
    if global.json {
        print_json(&serde_json::json!({
            "verified": true,
            "bundle": path,
            "coordinator": bundle.coordinator,
            "created": bundle.created,
            "checked_at": at,
            "simulation": a.simulation,
            "mrenclave": a.mrenclave,
            "tcb_status": a.tcb_status,
            "manifest_hash": checked.manifest_hash,
            "state_head": checked.state,
            "history": bundle.history,
        }))?;
    } else {
        println!(
            "bundle {} verified{} (saved from {} at {})",
            path.display(),
            if a.simulation { " (SIMULATION)" } else { "" },
            bundle.coordinator,
            bundle.created
        );
        if let Some(m) = &a.mrenclave {
            println!("  MRENCLAVE   {m}");
        }
        println!("  TCB status  {}", a.tcb_status);
        println!(
            "  manifest    {}",
            checked.manifest_hash.as_deref().unwrap_or("(none)")
        );
        println!(
            "  history     version {} (head {})",
            checked.state.manifest_version,
            hex::encode(checked.state.manifest_head)
        );
        println!("  generation  {}", checked.state.generation);
        for e in &bundle.history {
            println!(
                "    v{} {} by {} at {}",
                e.version,
                e.manifest_hash,
                e.author.as_deref().unwrap_or("(first manifest)"),
                e.time
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
