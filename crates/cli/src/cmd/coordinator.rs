//! `coffer coordinator`: run the Coordinator server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use coffer_coordinator::platform::{self, CollateralSource, EvidenceVerifier, Platform};
use coffer_coordinator::seal::Sealer;
use coffer_coordinator::{Config, Coordinator, StoreConfig};

use crate::output::Failure;
use crate::Global;

/// Arguments of `coffer coordinator`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:
    Development on a machine without SGX (simulated evidence, NO protection):
        coffer coordinator --simulation --sim-dir ./sim --data-dir ./coordinator-state

    Inside a Gramine SGX enclave, with offline collateral or a PCCS:
        coffer coordinator --listen 0.0.0.0:4433 --data-dir /data --collateral-dir /collateral
        coffer coordinator --listen 0.0.0.0:4433 --data-dir /data --pccs-url https://pccs:8081

    Any port (the address is printed on stdout as {\"listening\": ADDR} with --json):
        coffer --json coordinator --listen 127.0.0.1:0 --simulation --sim-dir ./sim \\
            --data-dir ./state

    Several replicas sharing one state in etcd (high availability; each replica keeps only its
    own sealing key in --data-dir; the first one initialises, the others get the state key from
    a running replica after attesting to it):
        coffer coordinator --data-dir /data --collateral-dir /collateral --store etcd \\
            --etcd-endpoints http://etcd-0:2379,http://etcd-1:2379,http://etcd-2:2379 \\
            --etcd-prefix /coffer --replica-name coordinator-0

    The same over mutual TLS to etcd:
        coffer coordinator ... --store etcd --etcd-endpoints https://etcd-0:2379 \\
            --etcd-ca /etcd-tls/ca.crt --etcd-cert /etcd-tls/tls.crt --etcd-key /etcd-tls/tls.key

    Also issue the admission webhook's TLS certificate (tls.crt, tls.key, ca.crt; renewed daily):
        coffer coordinator --data-dir /data --collateral-dir /collateral \\
            --webhook-cert-dir /webhook-tls --webhook-dns coffer-webhook.coffer.svc")]
pub(crate) struct CoordinatorArgs {
    /// Address to listen on (HTTPS). Port 0 picks a free port; the address is printed.
    #[arg(long, default_value = "127.0.0.1:4433", env = "COFFER_LISTEN")]
    listen: String,
    /// Directory of the sealed state (created 0700 if absent).
    #[arg(long, env = "COFFER_DATA_DIR")]
    data_dir: PathBuf,
    /// Run on the SIMULATED platform: accept simulated evidence, seal with a key file. No
    /// hardware protection; for development only. Needs --sim-dir.
    #[arg(long, requires = "sim_dir")]
    simulation: bool,
    /// Directory of the simulated platform (`sim-platform.json`, created if absent); only with
    /// --simulation. Workloads and clients must use the same platform (see `coffer evidence
    /// sim-platform --help`).
    #[arg(long, value_name = "DIR", requires = "simulation")]
    sim_dir: Option<PathBuf>,
    #[arg(long, value_name = "DIR", conflicts_with_all = ["simulation", "pccs_url"], help = concat!(
        "Offline collateral for real evidence: ",
        collateral_dir_layout!()
    ))]
    collateral_dir: Option<PathBuf>,
    /// Fetch collateral for real evidence from Intel PCS or a PCCS at this URL (cached in
    /// DATA_DIR/pccs-cache; cached items keep serving while valid if the service is down).
    #[arg(long, conflicts_with = "simulation")]
    pccs_url: Option<String>,
    /// With --pccs-url: refuse TCB info, QE identity and PCK CRL issued longer ago than this
    /// many hours (Intel reissues them daily but dates them valid for a month), so revocations
    /// and TCB recoveries reach the Coordinator within that time. Items are fetched again an
    /// hour before they age out.
    #[arg(long, value_name = "HOURS", requires = "pccs_url", value_parser = clap::value_parser!(u32).range(1..=8760))]
    collateral_max_age: Option<u32>,
    /// SEV-SNP workloads: fetch AMD's CRL for every report, and the VCEK, ASK and ARK when the
    /// host's certificate table is empty, from AMD's KDS (https://kdsintf.amd.com) or a mirror
    /// at this URL (cached in DATA_DIR/kds-cache). With --collateral-dir DIR, the same items are
    /// read from DIR/kds/PRODUCT/ (crl.der, cert_chain.pem, vcek-*.der) when DIR/kds exists.
    /// Without either, SNP evidence must carry its certificates and is verified without a CRL.
    #[arg(long, value_name = "URL", conflicts_with_all = ["simulation", "collateral_dir"])]
    kds_url: Option<String>,
    /// Lifetime of workload certificates, in hours (re-activate to renew).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=8760))]
    cert_hours: u32,
    /// With --store etcd: accept another replica's platform with this TCB status (Intel
    /// spelling, repeatable; default UpToDate) when it joins this state or grants it the key.
    /// Revoked is never accepted.
    #[arg(long = "accept-tcb-status", value_name = "STATUS", value_parser = crate::cmd::client::parse_tcb_status)]
    accept_tcb_status: Vec<String>,
    /// The owner's client certificate (PEM): only a client presenting it (`coffer manifest
    /// set --cert/--key`) may set the first manifest. Without it, whoever reaches the
    /// Coordinator first sets it (set it before exposing the port, and check with
    /// `coffer verify --manifest`).
    #[arg(long, value_name = "FILE", env = "COFFER_OWNER_CERT")]
    owner_cert: Option<PathBuf>,
    /// Root of Gramine's attestation interface (SGX mode).
    #[arg(
        long,
        default_value = "/dev/attestation",
        env = "COFFER_ATTESTATION_ROOT"
    )]
    attestation_root: PathBuf,
    /// Write a TLS server certificate for the admission webhook (signed by the Coordinator's
    /// root CA, 30 days, renewed daily) as `tls.crt`, `tls.key` (0600) and `ca.crt` into DIR.
    /// Written once the Coordinator is ready (after recovery, if it starts in recovery mode).
    #[arg(long, value_name = "DIR", requires = "webhook_dns")]
    webhook_cert_dir: Option<PathBuf>,
    /// DNS name for the webhook certificate (repeatable), e.g. coffer-webhook.coffer.svc.
    #[arg(long, value_name = "NAME", requires = "webhook_cert_dir")]
    webhook_dns: Vec<String>,
    /// Where the sealed state lives: `embedded` (a redb file in --data-dir; one Coordinator)
    /// or `etcd` (shared by several replicas with leader election; etcd only sees ciphertext).
    #[arg(long, value_enum, default_value = "embedded", env = "COFFER_STORE")]
    store: StoreKind,
    /// etcd client URLs, comma-separated (with --store etcd).
    #[arg(
        long,
        value_name = "URLS",
        value_delimiter = ',',
        env = "COFFER_ETCD_ENDPOINTS",
        required_if_eq("store", "etcd")
    )]
    etcd_endpoints: Vec<String>,
    /// Key prefix of this deployment in etcd (with --store etcd).
    #[arg(long, default_value = "/coffer", env = "COFFER_ETCD_PREFIX")]
    etcd_prefix: String,
    /// This replica's name among those sharing the etcd store (default: the host name, which
    /// is the pod name in Kubernetes).
    #[arg(long, value_name = "NAME", env = "COFFER_REPLICA_NAME")]
    replica_name: Option<String>,
    /// With --store etcd: seconds start-up waits for the leader's new state or for another
    /// replica to hand over the state key (key join) before recovery mode.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    join_timeout: u64,
    /// CA certificate (PEM) of the etcd members: enables TLS (use https:// endpoints).
    #[arg(long, value_name = "FILE", env = "COFFER_ETCD_CA")]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's --client-cert-auth. Needs --etcd-key and --etcd-ca.
    #[arg(long, value_name = "FILE", requires_all = ["etcd_key", "etcd_ca"], env = "COFFER_ETCD_CERT")]
    etcd_cert: Option<PathBuf>,
    /// Client private key (PEM) for --etcd-cert. Needs --etcd-cert.
    #[arg(
        long,
        value_name = "FILE",
        requires = "etcd_cert",
        env = "COFFER_ETCD_KEY"
    )]
    etcd_key: Option<PathBuf>,
}

/// Reads the etcd TLS files named on the command line.
/// Flags that only an etcd store uses, refused when typed on the command line next to the
/// embedded store (they would be silently ignored); from the environment they are left alone,
/// as a shared pod spec may set them for every replica.
pub(crate) fn embedded_store_conflict(m: &clap::ArgMatches) -> Option<String> {
    use clap::parser::ValueSource;
    let etcd = m.get_one::<StoreKind>("store") == Some(&StoreKind::Etcd);
    if etcd {
        return None;
    }
    let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    [
        ("etcd_endpoints", "--etcd-endpoints"),
        ("etcd_prefix", "--etcd-prefix"),
        ("replica_name", "--replica-name"),
        ("join_timeout", "--join-timeout"),
        ("etcd_ca", "--etcd-ca"),
        ("etcd_cert", "--etcd-cert"),
        ("etcd_key", "--etcd-key"),
        ("accept_tcb_status", "--accept-tcb-status"),
    ]
    .into_iter()
    .find(|(id, _)| given(id))
    .map(|(_, flag)| {
        format!("'{flag}' is used only with '--store etcd' (the store is embedded); add --store etcd or drop {flag}")
    })
}

fn etcd_tls(
    args: &CoordinatorArgs,
) -> anyhow::Result<Option<coffer_coordinator::state::etcd::EtcdTls>> {
    let read =
        |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let Some(ca) = &args.etcd_ca else {
        return Ok(None);
    };
    let identity = match (&args.etcd_cert, &args.etcd_key) {
        (Some(c), Some(k)) => Some((read(c)?, zeroize::Zeroizing::new(read(k)?))),
        _ => None,
    };
    Ok(Some(coffer_coordinator::state::etcd::EtcdTls {
        ca_pem: read(ca)?,
        identity,
    }))
}

/// `--store` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    /// One redb file in --data-dir.
    Embedded,
    /// etcd v3, shared by replicas.
    Etcd,
}

/// The host name (the pod name in Kubernetes), for the default replica name.
fn host_name() -> anyhow::Result<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read the host name; pass --replica-name")?;
    Ok(raw.trim().to_string())
}

/// Runs `coffer coordinator`.
pub(crate) fn run(args: CoordinatorArgs, global: Global) -> anyhow::Result<ExitCode> {
    let (platform, verifier, sealer) = if args.simulation {
        let dir = args
            .sim_dir
            .clone()
            .context("--simulation needs --sim-dir")?;
        let sim = platform::load_or_create_sim(&dir)
            .map_err(|e| Failure::new("config", e.to_string()))?;
        let sim2 = platform::load_or_create_sim(&dir)
            .map_err(|e| Failure::new("config", e.to_string()))?;
        let anchors = sim.trust_anchors();
        let mrenclave = platform::own_measurement().context("hashing the coffer executable")?;
        (
            Platform::Simulated {
                sim: Box::new(sim),
                mrenclave,
            },
            EvidenceVerifier::new(
                anchors,
                CollateralSource::Simulated {
                    sim: Box::new(sim2),
                    cache: Default::default(),
                },
            ),
            Sealer::KeyFile(
                args.data_dir
                    .join(coffer_coordinator::core::SEALING_KEY_FILE),
            ),
        )
    } else {
        platform::check_gramine(&args.attestation_root)
            .map_err(|e| Failure::new("no_tee", e.to_string()))?;
        let collateral = match (&args.collateral_dir, &args.pccs_url) {
            (Some(dir), _) => CollateralSource::Dir(dir.clone()),
            (None, Some(url)) => {
                // Fetched and cached per item; cached collateral keeps serving while it is
                // valid even if the service is down.
                let mut cfg = coffer_pccs::PccsConfig::new(url.clone())
                    .with_cache_dir(args.data_dir.join("pccs-cache"));
                if let Some(hours) = args.collateral_max_age {
                    cfg = cfg.with_max_age(std::time::Duration::from_secs(u64::from(hours) * 3600));
                }
                CollateralSource::Pccs(Box::new(
                    coffer_pccs::CollateralSource::online(cfg)
                        .map_err(|e| Failure::new("config", format!("--pccs-url: {e}")))?,
                ))
            }
            (None, None) => {
                return Err(Failure::new(
                    "config",
                    "real evidence needs collateral: pass --pccs-url URL (Intel PCS or your PCCS, \
                     cached) or --collateral-dir DIR (offline files)",
                )
                .into())
            }
        };
        (
            Platform::Gramine {
                root: args.attestation_root.clone(),
            },
            {
                let verifier =
                    EvidenceVerifier::new(coffer_evidence::TrustAnchors::intel(), collateral);
                match (&args.kds_url, &args.collateral_dir) {
                    (Some(url), _) => verifier.with_kds(
                        coffer_pccs::kds::KdsSource::online(
                            url,
                            Some(args.data_dir.join("kds-cache")),
                        )
                        .map_err(|e| Failure::new("config", format!("--kds-url: {e}")))?,
                    ),
                    (None, Some(dir)) if dir.join("kds").is_dir() => {
                        verifier.with_kds(coffer_pccs::kds::KdsSource::offline(dir.clone()))
                    }
                    _ => verifier,
                }
            },
            Sealer::Gramine(args.attestation_root.clone()),
        )
    };
    if args.webhook_cert_dir.is_some() {
        coffer_coordinator::service_cert::validate_dns_names(&args.webhook_dns)
            .map_err(|e| Failure::new("config", format!("--webhook-dns: {e}")))?;
    }
    let simulation = platform.is_simulation();
    if simulation {
        eprintln!(
            "\n  *** SIMULATION ***  This Coordinator runs on the SIMULATED platform: it accepts simulated\n  \
             evidence and seals its state with a key file. It protects NOTHING. Development only.\n"
        );
        tracing::warn!(
            "SIMULATION mode: simulated evidence accepted, state sealed with a key file"
        );
    }
    let store = match args.store {
        StoreKind::Embedded => StoreConfig::Embedded,
        StoreKind::Etcd => {
            let replica = match &args.replica_name {
                Some(n) => n.clone(),
                None => host_name()?,
            };
            coffer_coordinator::replica::validate_name(&replica)
                .map_err(|e| Failure::new("config", format!("--replica-name: {e}")))?;
            coffer_coordinator::state::etcd::validate_prefix(&args.etcd_prefix)
                .map_err(|e| Failure::new("config", format!("--etcd-prefix: {e}")))?;
            StoreConfig::Etcd {
                endpoints: args.etcd_endpoints.clone(),
                prefix: args.etcd_prefix.clone(),
                replica,
                tls: etcd_tls(&args)?,
                join_timeout: std::time::Duration::from_secs(args.join_timeout),
            }
        }
    };
    let config = Config {
        data_dir: args.data_dir.clone(),
        cert_hours: args.cert_hours,
        accepted_tcb_statuses: args.accept_tcb_status.clone(),
        owner_certificate: match &args.owner_cert {
            None => None,
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("reading --owner-cert {}", path.display()))?;
                let der =
                    coffer_coordinator::pki::pem_decode(&pem, "CERTIFICATE").ok_or_else(|| {
                        Failure::new(
                            "config",
                            format!("--owner-cert {} has no PEM CERTIFICATE", path.display()),
                        )
                    })?;
                coffer_coordinator::pki::cert_spki(&der).map_err(|e| {
                    Failure::new("config", format!("--owner-cert {}: {e}", path.display()))
                })?;
                Some(der)
            }
        },
        store,
    };
    // Opened before the async runtime exists: with etcd, start-up makes blocking calls (and
    // may wait for the leader or for another replica to answer a key join).
    let coordinator = Arc::new(
        Coordinator::open(config, platform, verifier, sealer)
            .map_err(|e| Failure::new("start", e.to_string()))?,
    );
    coordinator
        .start_background_tasks()
        .map_err(|e| Failure::new("start", e.to_string()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let on_exit = coordinator.clone();
    rt.block_on(async move {
        let tls = coffer_coordinator::tls::server_config(coordinator.tls_slot())?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let status = coordinator.status();
        if global.json {
            println!(
                "{}",
                serde_json::json!({"listening": addr.to_string(), "state": status.state, "simulation": simulation})
            );
        } else {
            println!("coffer coordinator listening on https://{addr} (state: {:?}{})", status.state, if simulation { ", SIMULATION" } else { "" });
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tracing::info!(%addr, simulation, state = ?status.state, "Coordinator listening");
        // The TLS certificate is valid 30 days: renew it daily.
        let renew = coordinator.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(24 * 3600));
            tick.tick().await;
            loop {
                tick.tick().await;
                let c = renew.clone();
                match tokio::task::spawn_blocking(move || c.renew_tls_certificate()).await {
                    Ok(Ok(())) => tracing::info!("TLS server certificate renewed"),
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot renew the TLS server certificate"),
                    Err(e) => tracing::error!(error = %e, "TLS renewal task failed"),
                }
            }
        });
        if let Some(dir) = args.webhook_cert_dir.clone() {
            tokio::spawn(webhook_certificates(coordinator.clone(), dir, args.webhook_dns.clone()));
        }
        let router = coffer_coordinator::router(coordinator);
        coffer_coordinator::serve(listener, Arc::new(tls), router, shutdown_signal()).await?;
        tracing::info!("Coordinator stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    // What the last window of refused activations held goes into the audit log.
    on_exit.flush_refusal_summary(true);
    Ok(ExitCode::SUCCESS)
}

/// Keeps the webhook's certificate files current: written as soon as the Coordinator is ready
/// (retried every 10 s while it waits for recovery or on a write error), then renewed daily
/// (the certificate is valid 30 days).
async fn webhook_certificates(coordinator: Arc<Coordinator>, dir: PathBuf, names: Vec<String>) {
    loop {
        let (c, d, n) = (coordinator.clone(), dir.clone(), names.clone());
        let done = tokio::task::spawn_blocking(move || {
            c.issue_service_certificate(&n)
                .and_then(|cert| cert.write_to_dir(&d))
        })
        .await;
        let wait = match done {
            Ok(Ok(())) => {
                tracing::info!(dir = %dir.display(), "webhook TLS certificate written");
                std::time::Duration::from_secs(24 * 3600)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot write the webhook TLS certificate yet; retrying in 10 s");
                std::time::Duration::from_secs(10)
            }
            Err(e) => {
                tracing::error!(error = %e, "webhook certificate task failed; retrying in 10 s");
                std::time::Duration::from_secs(10)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Resolves on SIGTERM (how Kubernetes stops a container) or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
