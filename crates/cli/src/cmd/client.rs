//! Client commands that talk to a running Coordinator: `coffer verify`, `coffer status`,
//! `coffer secret …`, `coffer recover`, and the network half of `coffer manifest set|get|update`.
//!
//! Trust: with `--root-ca FILE` (written by `coffer verify --root-ca-out`) the Coordinator's
//! TLS certificate must chain to that root. Without it, every command first attests the
//! Coordinator (fresh nonce, quote verified, TLS certificate bound to the attested root); a
//! simulating Coordinator is refused unless `--allow-simulation --sim-dir DIR` is given.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use clap::{Args, Subcommand};
use coffer_coordinator::attest::{attest, Expectations};
use coffer_coordinator::client::Client;
use coffer_coordinator::client::Method;
use coffer_coordinator::platform::{self, CollateralSource, EvidenceVerifier};
use coffer_coordinator::tls::{ClientIdentity, Trust};

use crate::output::{print_json, Failure};
use crate::Global;

/// How to reach and trust the Coordinator (shared by every client command).
#[derive(Debug, Args, Clone)]
pub(crate) struct ConnectArgs {
    /// Coordinator address, host:port.
    #[arg(long, env = "COFFER_COORDINATOR", default_value = "127.0.0.1:4433")]
    pub(crate) coordinator: String,
    /// The Coordinator's root CA (PEM) from `coffer verify --root-ca-out`; without it the
    /// Coordinator is attested first.
    #[arg(long, env = "COFFER_ROOT_CA")]
    pub(crate) root_ca: Option<PathBuf>,
    /// Accept a Coordinator on the SIMULATED platform (development only; needs --sim-dir).
    #[arg(long, requires = "sim_dir")]
    pub(crate) allow_simulation: bool,
    /// Simulated platform directory whose root verifies a simulating Coordinator's quote.
    #[arg(long, env = "COFFER_SIM_DIR")]
    pub(crate) sim_dir: Option<PathBuf>,
    #[arg(long, value_name = "DIR", help = concat!(
        "Offline collateral to verify a real Coordinator's quote: ",
        collateral_dir_layout!()
    ))]
    pub(crate) collateral_dir: Option<PathBuf>,
    /// Accept only these Coordinator MRENCLAVE values (hex, repeatable).
    #[arg(long = "expected-mrenclave", value_parser = parse_hex32)]
    pub(crate) expected_mrenclave: Vec<[u8; 32]>,
    /// Accept the Coordinator's platform with this TCB status (Intel spelling, repeatable;
    /// default UpToDate). Revoked is never accepted.
    #[arg(long = "accept-tcb-status", value_name = "STATUS", value_parser = parse_tcb_status)]
    pub(crate) accept_tcb_status: Vec<String>,
}

/// Attestation flags that a pinned root CA would make ignored: every client command but
/// `verify` trusts `--root-ca` (or COFFER_ROOT_CA) instead of attesting. Refused when typed on
/// the command line, so nobody believes an MRENCLAVE was checked that was not.
pub(crate) fn pinned_root_conflict(m: &clap::ArgMatches) -> Option<String> {
    use clap::parser::ValueSource;
    let defined = |id: &str| m.try_contains_id(id).is_ok();
    if !defined("root_ca") || m.value_source("root_ca").is_none() {
        return None;
    }
    [
        ("expected_mrenclave", "--expected-mrenclave"),
        ("accept_tcb_status", "--accept-tcb-status"),
        ("allow_simulation", "--allow-simulation"),
        ("collateral_dir", "--collateral-dir"),
    ]
    .into_iter()
    .find(|(id, _)| defined(id) && m.value_source(id) == Some(ValueSource::CommandLine))
    .map(|(_, flag)| {
        format!(
            "'--root-ca' (or COFFER_ROOT_CA) trusts that root without attesting, so '{flag}' \
             would not be checked; drop --root-ca to attest, or check with `coffer verify` first"
        )
    })
}

/// A TCB status a client may accept: Intel's spelling, never `Revoked`.
pub(crate) fn parse_tcb_status(s: &str) -> Result<String, String> {
    let status: coffer_evidence::TcbStatus = s.parse()?;
    if status == coffer_evidence::TcbStatus::Revoked {
        return Err("a Revoked TCB level is never accepted".into());
    }
    Ok(status.as_str().to_string())
}

impl ConnectArgs {
    /// What attesting requires of the Coordinator.
    pub(crate) fn expectations(&self) -> Expectations<'_> {
        Expectations {
            allow_simulation: self.allow_simulation,
            mrenclaves: &self.expected_mrenclave,
            tcb_statuses: &self.accept_tcb_status,
        }
    }
}

pub(crate) fn parse_hex32(s: &str) -> Result<[u8; 32], String> {
    let v = hex::decode(s.trim()).map_err(|_| format!("{s:?} is not hex"))?;
    v.try_into()
        .map_err(|_| "expected 64 hex digits (32 bytes)".to_string())
}

/// A client certificate for user endpoints.
#[derive(Debug, Args, Clone)]
pub(crate) struct IdentityArgs {
    /// Client certificate (PEM) of a manifest user.
    #[arg(long, env = "COFFER_CERT")]
    cert: PathBuf,
    /// Its private key (PEM, PKCS#8 `PRIVATE KEY`).
    #[arg(long, env = "COFFER_KEY")]
    key: PathBuf,
}

pub(crate) fn now() -> i64 {
    coffer_coordinator::core::now_unix()
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn verifier(c: &ConnectArgs) -> anyhow::Result<EvidenceVerifier> {
    if c.allow_simulation {
        let dir = c
            .sim_dir
            .clone()
            .context("--allow-simulation needs --sim-dir")?;
        let path = dir.join(platform::SIM_PLATFORM_FILE);
        let bytes = std::fs::read(&path).with_context(|| {
            format!("cannot read the simulated platform {} (create it with `coffer evidence sim-platform`)", path.display())
        })?;
        let sim = coffer_evidence::sim::SimPlatform::from_bytes(&bytes)
            .map_err(|e| Failure::new("config", format!("{}: {e}", path.display())))?;
        let sim2 = coffer_evidence::sim::SimPlatform::from_bytes(&bytes)
            .map_err(|e| Failure::new("config", format!("{}: {e}", path.display())))?;
        Ok(EvidenceVerifier::new(
            sim.trust_anchors(),
            CollateralSource::Simulated {
                sim: Box::new(sim2),
                cache: Default::default(),
            },
        ))
    } else {
        let dir = c.collateral_dir.clone().ok_or_else(|| {
            Failure::new(
                "config",
                "to attest a Coordinator on real hardware pass --collateral-dir DIR; for a simulating \
                 development Coordinator pass --allow-simulation --sim-dir DIR (commands other than \
                 verify also take --root-ca FILE from `coffer verify --root-ca-out` instead)",
            )
        })?;
        Ok(EvidenceVerifier::new(
            coffer_evidence::TrustAnchors::intel(),
            CollateralSource::Dir(dir),
        ))
    }
}

pub(crate) fn remote(e: coffer_coordinator::Error) -> anyhow::Error {
    match &e {
        coffer_coordinator::Error::Remote { kind, message, .. } => {
            let k = serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            Failure::new(k, message.clone()).into()
        }
        coffer_coordinator::Error::Evidence { kind, reason } => {
            let k = serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            Failure::new(k, format!("Coordinator attestation failed: {reason}")).into()
        }
        coffer_coordinator::Error::Io(_) => Failure::new("unreachable", e.to_string()).into(),
        _ => anyhow::Error::new(e),
    }
}

pub(crate) fn identity(id: Option<&IdentityArgs>) -> anyhow::Result<Option<ClientIdentity>> {
    let Some(id) = id else { return Ok(None) };
    let cert = std::fs::read_to_string(&id.cert)
        .with_context(|| format!("reading {}", id.cert.display()))?;
    let key = std::fs::read_to_string(&id.key)
        .with_context(|| format!("reading {}", id.key.display()))?;
    let cert_der = coffer_coordinator::pki::pem_decode(&cert, "CERTIFICATE").ok_or_else(|| {
        Failure::new(
            "config",
            format!("{} has no PEM CERTIFICATE", id.cert.display()),
        )
    })?;
    let key_der = coffer_coordinator::pki::pem_decode(&key, "PRIVATE KEY").ok_or_else(|| {
        Failure::new(
            "config",
            format!(
                "{} has no PKCS#8 `PRIVATE KEY` (convert with `openssl pkcs8 -topk8 -nocrypt`)",
                id.key.display()
            ),
        )
    })?;
    Ok(Some(ClientIdentity {
        chain: vec![cert_der],
        key_pkcs8: key_der,
    }))
}

/// Connects with `--root-ca`, or attests first and then trusts the attested root.
pub(crate) async fn connect(c: &ConnectArgs, id: Option<&IdentityArgs>) -> anyhow::Result<Client> {
    let root_der = match &c.root_ca {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            coffer_coordinator::pki::pem_decode(&pem, "CERTIFICATE").ok_or_else(|| {
                Failure::new(
                    "config",
                    format!("{} has no PEM CERTIFICATE", path.display()),
                )
            })?
        }
        None => {
            let v = verifier(c)?;
            let a = attest(&c.coordinator, &v, &c.expectations(), now())
                .await
                .map_err(remote)?;
            if a.simulation {
                eprintln!("warning: the Coordinator runs on the SIMULATED platform (accepted because of --allow-simulation)");
            }
            a.root_der
        }
    };
    Ok(Client::new(
        &c.coordinator,
        &Trust::RootCa(root_der),
        identity(id)?.as_ref(),
    )?)
}

/// `coffer status`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:
    coffer status --coordinator 127.0.0.1:4433 --root-ca root-ca.pem
    coffer --json status --allow-simulation --sim-dir ./sim")]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Runs `coffer status`.
pub(crate) fn status(args: StatusArgs, global: Global) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let s: coffer_api::StatusResponse = rt.block_on(async {
        let mut c = connect(&args.connect, None).await?;
        c.get("/api/v1/status").await.map_err(remote)
    })?;
    if global.json {
        print_json(&s)?;
    } else {
        println!("state       {:?}", s.state);
        println!(
            "manifest    {}",
            s.manifest_hash.as_deref().unwrap_or("(none)")
        );
        println!(
            "simulation  {}",
            if s.simulation {
                "YES (no hardware protection)"
            } else {
                "no"
            }
        );
        println!(
            "version     {} (protocol {})",
            s.version, s.protocol_version
        );
        if let Some(h) = &s.state_head {
            println!(
                "history     version {} (head {})",
                h.manifest_version,
                hex::encode(h.manifest_head)
            );
            println!(
                "generation  {} (audit record {})",
                h.generation, h.audit_seq
            );
        }
        if let Some(t) = &s.tamper {
            println!("TAMPERED    the stored state does not match its authenticated head; nothing is served:");
            for f in &t.findings {
                println!("  - {f}");
            }
            println!(
                "            the recovery-key holders decide: `coffer recover --reauthenticate`"
            );
        }
        if let Some(r) = &s.replica {
            println!(
                "replica     {} ({} store, {})",
                r.name,
                r.store,
                if r.leader { "leader" } else { "follower" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `coffer secret --help`: examples across the subcommands.
pub(crate) const SECRET_GROUP_HELP: &str = "EXAMPLES:
    Set a user-defined secret, then read it (client certificate of a manifest user):
        coffer secret set db_password --value 's3cret' --cert alice.pem --key alice-key.pem \\
            --root-ca root-ca.pem
        coffer secret get db_password --cert alice.pem --key alice-key.pem --root-ca root-ca.pem

    The same with COFFER_COORDINATOR, COFFER_ROOT_CA, COFFER_CERT and COFFER_KEY set:
        coffer secret set api_key --hex 00112233445566778899aabbccddeeff
        coffer secret get api_key";

/// `coffer secret …`.
#[derive(Debug, Subcommand)]
pub(crate) enum SecretCmd {
    /// Set a user-defined secret (role `secrets: write`).
    #[command(after_help = "EXAMPLES:
    coffer secret set db_password --value 's3cret' --cert alice.pem --key alice-key.pem \\
        --root-ca root-ca.pem
    coffer secret set tls_key --file key.bin --cert alice.pem --key alice-key.pem \\
        --root-ca root-ca.pem")]
    Set(SecretSetArgs),
    /// Read a shared or user-defined secret (role `secrets: read`).
    #[command(after_help = "EXAMPLES:
    coffer secret get db_password --cert alice.pem --key alice-key.pem --root-ca root-ca.pem
    coffer --json secret get api_cert --cert alice.pem --key alice-key.pem --root-ca root-ca.pem")]
    Get(SecretGetArgs),
}

/// `coffer secret set`.
#[derive(Debug, Args)]
// Exactly one of --value, --file and --hex (the group's members conflict with each other).
#[command(group(clap::ArgGroup::new("secret_value").required(true).args(["value", "file", "hex"])))]
pub(crate) struct SecretSetArgs {
    /// Secret name (declared `user-defined` in the manifest).
    name: String,
    /// The value as text (one of --value, --file, --hex).
    #[arg(long)]
    value: Option<String>,
    /// Read the value from a file (bytes).
    #[arg(long)]
    file: Option<PathBuf>,
    /// The value as hex (e.g. a symmetric key).
    #[arg(long)]
    hex: Option<String>,
    #[command(flatten)]
    id: IdentityArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// `coffer secret get`.
#[derive(Debug, Args)]
pub(crate) struct SecretGetArgs {
    /// Secret name.
    name: String,
    #[command(flatten)]
    id: IdentityArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Runs `coffer secret …`.
pub(crate) fn secret(cmd: SecretCmd, global: Global) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match cmd {
        SecretCmd::Set(a) => {
            let value = match (&a.value, &a.file, &a.hex) {
                (Some(v), _, _) => v.as_bytes().to_vec(),
                (_, Some(f), _) => {
                    std::fs::read(f).with_context(|| format!("reading {}", f.display()))?
                }
                (_, _, Some(h)) => {
                    hex::decode(h.trim()).map_err(|_| Failure::new("usage", "--hex is not hex"))?
                }
                _ => return Err(Failure::new("usage", "give --value, --file or --hex").into()),
            };
            let req = coffer_api::SetSecretsRequest {
                secrets: [(
                    a.name.clone(),
                    base64::engine::general_purpose::STANDARD.encode(&value),
                )]
                .into(),
            };
            rt.block_on(async {
                let mut c = connect(&a.connect, Some(&a.id)).await?;
                let body = serde_json::to_vec(&req)?;
                let (st, bytes) = c
                    .request(Method::PUT, "/api/v1/secrets", Some(body))
                    .await
                    .map_err(remote)?;
                if !st.is_success() {
                    coffer_coordinator::client::decode::<serde_json::Value>(st, &bytes)
                        .map_err(remote)?;
                }
                Ok::<_, anyhow::Error>(())
            })?;
            if global.json {
                print_json(&serde_json::json!({"set": a.name}))?;
            } else {
                println!("secret `{}` set", a.name);
            }
        }
        SecretCmd::Get(a) => {
            let r: coffer_api::SecretsResponse = rt.block_on(async {
                let mut c = connect(&a.connect, Some(&a.id)).await?;
                c.get(&format!("/api/v1/secrets?names={}", a.name))
                    .await
                    .map_err(remote)
            })?;
            let s = r.secrets.get(&a.name).ok_or_else(|| {
                Failure::new(
                    "not_found",
                    format!("the Coordinator did not return `{}`", a.name),
                )
            })?;
            if global.json {
                print_json(&r)?;
            } else {
                let b64 = base64::engine::general_purpose::STANDARD;
                if let Some(v) = &s.value {
                    let bytes = b64.decode(v)?;
                    match String::from_utf8(bytes.clone()) {
                        Ok(t) if !t.contains('\0') => println!("{t}"),
                        _ => println!("{}", hex::encode(bytes)),
                    }
                }
                for (field, tag) in [
                    (&s.cert, "CERTIFICATE"),
                    (&s.public, "PUBLIC KEY"),
                    (&s.private, "PRIVATE KEY"),
                ] {
                    if let Some(v) = field {
                        print!(
                            "{}",
                            coffer_coordinator::pki::pem_encode(tag, &b64.decode(v)?)
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `coffer recover`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:
    After the sealed state key was lost (new hardware), each recovery key owner runs:
        coffer recover --key recovery-key.pem --coordinator 10.0.0.5:4433 \\
            --collateral-dir ./collateral
    Development:
        coffer recover --key recovery-key.pem --allow-simulation --sim-dir ./sim

    A Coordinator that found its stored state TAMPERED with serves nothing. Read what it found
    (`coffer status`); to keep the state as it is now, each recovery key owner runs:
        coffer recover --key recovery-key.pem --reauthenticate --root-ca root-ca.pem")]
pub(crate) struct RecoverArgs {
    /// The recovery private key (PEM, PKCS#8 or PKCS#1 RSA).
    #[arg(long)]
    key: PathBuf,
    /// Accept a TAMPERED state as it is now (values that fail authentication are dropped;
    /// the audit log records what was found). Needed only when the Coordinator reports
    /// `tampered`.
    #[arg(long)]
    reauthenticate: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Runs `coffer recover`.
pub(crate) fn recover(args: RecoverArgs, global: Global) -> anyhow::Result<ExitCode> {
    let pem = std::fs::read_to_string(&args.key)
        .with_context(|| format!("reading {}", args.key.display()))?;
    let key = coffer_coordinator::recovery::parse_rsa_private(&pem)
        .map_err(|e| Failure::new("config", e.to_string()))?;
    let fp = coffer_coordinator::recovery::private_fingerprint(&key)
        .map_err(|e| Failure::new("config", e.to_string()))?;
    let rt = runtime()?;
    let resp: coffer_api::RecoverResponse = rt.block_on(async {
        let mut c = connect(&args.connect, None).await?;
        let st: coffer_api::RecoveryStatus = c.get("/api/v1/recover").await.map_err(remote)?;
        if let Some(t) = &st.tamper {
            if !args.reauthenticate {
                return Err(Failure::new(
                    "tampered",
                    format!(
                        "the Coordinator found its stored state TAMPERED with:\n  - {}\nUploading \
                         your key now re-authenticates the state as it is. If that is what you \
                         want, run again with --reauthenticate",
                        t.findings.join("\n  - ")
                    ),
                )
                .into());
            }
        }
        let entry = st
            .entries
            .iter()
            .find(|e| e.fingerprint == fp)
            .ok_or_else(|| {
                Failure::new(
                    "not_found",
                    format!(
                        "this key (fingerprint {fp}) is not one of the Coordinator's recovery keys"
                    ),
                )
            })?;
        let challenge = hex::decode(&st.challenge)
            .map_err(|_| Failure::new("protocol", "challenge is not hex"))?;
        let (secret, sig) =
            coffer_coordinator::recovery::client_answer(&key, &entry.ciphertext, &challenge)
                .map_err(|e| Failure::new("recovery", e.to_string()))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let req = coffer_api::RecoverRequest {
            protocol_version: coffer_api::PROTOCOL_VERSION,
            shares: vec![coffer_api::RecoveryShare {
                fingerprint: fp.clone(),
                secret: b64.encode(&*secret),
                signature: b64.encode(sig),
            }],
            reauthenticate: args.reauthenticate,
        };
        c.call(Method::POST, "/api/v1/recover", Some(&req))
            .await
            .map_err(remote)
    })?;
    if global.json {
        print_json(&resp)?;
    } else if matches!(
        resp.state,
        coffer_api::CoordinatorState::Recovery | coffer_api::CoordinatorState::Tampered
    ) {
        println!(
            "upload accepted: {} of {} recovery keys; the others must run `coffer recover` too",
            resp.accepted, resp.threshold
        );
    } else {
        println!("recovered: the Coordinator is {:?} again", resp.state);
    }
    Ok(ExitCode::SUCCESS)
}

/// `coffer manifest set`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:
    coffer manifest set manifest.json --coordinator 127.0.0.1:4433 --root-ca root-ca.pem
    coffer manifest set manifest.yaml --allow-simulation --sim-dir ./sim
    coffer manifest set manifest.json --cert owner.pem --key owner-key.pem --root-ca root-ca.pem

The first manifest can be set once. A Coordinator started with --owner-cert takes it only from
that certificate (--cert/--key here); without one, from anyone who reaches it first: check
afterwards with `coffer verify --manifest manifest.json`. Later changes go through
`coffer manifest update`.")]
pub(crate) struct ManifestSetArgs {
    /// The manifest (JSON or YAML).
    file: PathBuf,
    /// The owner's client certificate (PEM), for a Coordinator started with --owner-cert.
    #[arg(long, requires = "key", env = "COFFER_CERT")]
    cert: Option<PathBuf>,
    /// Its private key (PEM, PKCS#8).
    #[arg(long, requires = "cert", env = "COFFER_KEY")]
    key: Option<PathBuf>,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// `coffer manifest get`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:
    coffer manifest get --coordinator 127.0.0.1:4433 --root-ca root-ca.pem > in-force.json
    coffer manifest get --canonical --root-ca root-ca.pem > in-force.canonical.json

Without --canonical the manifest is printed indented, so its bytes are not the ones that are
hashed; `coffer manifest hash in-force.json` still prints the Coordinator's manifest hash. With
--canonical the bytes are the canonical JSON as the Coordinator serves it (followed by a
newline, as `coffer manifest hash --canonical` prints it): their SHA-256 is the manifest hash.")]
pub(crate) struct ManifestGetArgs {
    /// Print the canonical JSON (the bytes the manifest hash is over) instead of indented JSON.
    #[arg(long)]
    canonical: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// `coffer manifest log`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:
    coffer manifest log --coordinator 127.0.0.1:4433 --root-ca root-ca.pem
    coffer --json manifest log --allow-simulation --sim-dir ./sim

Every version names the hash of the one before it; the chain is checked before it is printed.
`coffer verify` remembers its head and refuses a Coordinator whose history stops extending it.")]
pub(crate) struct ManifestLogArgs {
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Runs `coffer manifest log`: the manifest history, checked, oldest first.
pub(crate) fn manifest_log(a: ManifestLogArgs, global: Global) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let h: coffer_api::HistoryResponse = rt.block_on(async {
        let mut c = connect(&a.connect, None).await?;
        c.get("/api/v1/manifest/history").await.map_err(remote)
    })?;
    let (version, head) = coffer_api::verify_history(&h.entries).map_err(|e| {
        Failure::new(
            "broken_chain",
            format!("the Coordinator's manifest history is broken: {e}"),
        )
    })?;
    if global.json {
        print_json(&serde_json::json!({
            "entries": h.entries,
            "version": version,
            "head": hex::encode(head),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    for e in &h.entries {
        let when = time::OffsetDateTime::from_unix_timestamp(e.time)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| e.time.to_string());
        let what = if e.manifest_hash == coffer_api::chain::NO_MANIFEST {
            "(manifest cleared)".to_string()
        } else {
            e.manifest_hash.clone()
        };
        println!(
            "v{:<4} {when}  {what}  by {}",
            e.version,
            e.author.as_deref().unwrap_or("(first manifest: anyone)")
        );
        for c in &e.changes {
            println!("       - {c}");
        }
    }
    println!("head: version {version}, {}", hex::encode(head));
    Ok(ExitCode::SUCCESS)
}

/// `coffer manifest update`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:
    coffer manifest update manifest-v2.json --cert admin.pem --key admin-key.pem \\
        --root-ca root-ca.pem

Needs a user whose role allows it: `manifest: update`, or `packages: update` on every changed
package when the update only raises minimum ISVSVNs (a new MRENCLAVE, MRSIGNER, debug flag or TCB
status list needs `manifest: update`). The intermediate CA rotates.")]
pub(crate) struct ManifestUpdateArgs {
    /// The new manifest (JSON or YAML).
    file: PathBuf,
    #[command(flatten)]
    id: IdentityArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

fn manifest_call(
    c: &ConnectArgs,
    id: Option<&IdentityArgs>,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<serde_json::Value> {
    let rt = runtime()?;
    rt.block_on(async {
        let mut client = connect(c, id).await?;
        let (st, bytes) = client.request(method, path, body).await.map_err(remote)?;
        coffer_coordinator::client::decode::<serde_json::Value>(st, &bytes).map_err(remote)
    })
}

fn print_manifest_answer(v: &serde_json::Value, what: &str, global: Global) -> anyhow::Result<()> {
    if global.json {
        print_json(v)?;
    } else {
        println!(
            "manifest {what}: {}",
            v["manifest_hash"].as_str().unwrap_or("?")
        );
        for c in v["changes"].as_array().into_iter().flatten() {
            println!("  - {}", c.as_str().unwrap_or_default());
        }
    }
    Ok(())
}

/// Runs `coffer manifest set`.
pub(crate) fn manifest_set(a: ManifestSetArgs, global: Global) -> anyhow::Result<ExitCode> {
    let body = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let owner = match (&a.cert, &a.key) {
        (Some(cert), Some(key)) => Some(IdentityArgs {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let v = manifest_call(
        &a.connect,
        owner.as_ref(),
        Method::POST,
        "/api/v1/manifest",
        Some(body),
    )?;
    print_manifest_answer(&v, "set", global)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `coffer manifest get`: the manifest in force, indented or (`--canonical`) as the
/// canonical bytes the Coordinator serves.
pub(crate) fn manifest_get(a: ManifestGetArgs, _global: Global) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let body = rt.block_on(async {
        let mut client = connect(&a.connect, None).await?;
        let (st, bytes) = client
            .request(Method::GET, "/api/v1/manifest", None)
            .await
            .map_err(remote)?;
        if !st.is_success() {
            coffer_coordinator::client::decode::<serde_json::Value>(st, &bytes).map_err(remote)?;
        }
        Ok::<_, anyhow::Error>(bytes.to_vec())
    })?;
    if a.canonical {
        let text = String::from_utf8(body)
            .map_err(|_| Failure::new("protocol", "the Coordinator's manifest is not UTF-8"))?;
        println!("{text}");
    } else {
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            Failure::new(
                "protocol",
                format!("the Coordinator's manifest is not JSON: {e}"),
            )
        })?;
        print_json(&v)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `coffer manifest update`.
pub(crate) fn manifest_update(a: ManifestUpdateArgs, global: Global) -> anyhow::Result<ExitCode> {
    let body = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let v = manifest_call(
        &a.connect,
        Some(&a.id),
        Method::POST,
        "/api/v1/manifest/update",
        Some(body),
    )?;
    print_manifest_answer(&v, "updated", global)?;
    Ok(ExitCode::SUCCESS)
}
