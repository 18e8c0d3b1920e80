//! The node agent's top-level run loop: what `coffer k8s node-agent` runs in the DaemonSet.
//!
//! 1. Read the EPC size from CPUID ([`crate::epc::read_epc`]); a node without SGX is an error
//!    (the DaemonSet is meant for SGX nodes only, selected by the NFD label).
//! 2. Check that the SGX device nodes exist under the device root (`/dev/sgx_enclave` is
//!    required; `/dev/sgx_provision` only warns: enclaves run without it, only quoting
//!    enclaves need it).
//! 3. Keep the Node's `sgx.intel.com/epc` capacity published: publish at start, then every
//!    [`AgentConfig::check_interval`] read it back and re-publish when it is missing or
//!    different (the kubelet re-registering a Node, or someone editing it, resets it), and
//!    re-publish unconditionally every [`AgentConfig::republish_interval`]. API errors are
//!    retried with exponential backoff up to [`AgentConfig::retry_max`]; the agent never
//!    gives up on the API server, because a DaemonSet pod that exits is only restarted
//!    later with the same problem.
//!
//! The loop stops when the `shutdown` future completes ([`run`] uses SIGTERM/SIGINT).
//!
//! Not yet wired: the device plugin servers of [`crate::device_plugin`] (see the report of
//! the session that built this: that module's entry point was not available when this loop
//! was written), so [`run`] serves only the EPC capacity.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::epc::{self, CpuidSource};
use crate::Error;

/// The environment variable the DaemonSet sets to the node's name through the downward API
/// (`valueFrom.fieldRef.fieldPath: spec.nodeName`).
pub const NODE_NAME_ENV: &str = "NODE_NAME";

/// Where the SGX device nodes are by default.
pub const DEFAULT_DEV_ROOT: &str = "/dev";

/// The kubelet's device plugin directory (its `kubelet.sock` and the plugins' sockets).
pub const DEFAULT_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";

/// The enclave device (in-kernel driver, Linux 5.11+), relative to the device root.
pub const ENCLAVE_DEVICE: &str = "sgx_enclave";

/// The provisioning device (for quoting enclaves), relative to the device root.
pub const PROVISION_DEVICE: &str = "sgx_provision";

/// Everything the agent needs; [`AgentConfig::new`] fills in the defaults.
#[derive(Clone)]
pub struct AgentConfig {
    /// This node's name (from [`NODE_NAME_ENV`]).
    pub node_name: String,
    /// Where CPUID values come from: [`epc::NativeCpuid`] in production, a
    /// [`epc::RecordedCpuid`] in tests.
    pub cpuid: Arc<dyn CpuidSource + Send + Sync>,
    /// The device root (default [`DEFAULT_DEV_ROOT`]).
    pub dev_root: PathBuf,
    /// The kubelet device plugin directory (default [`DEFAULT_PLUGIN_DIR`]).
    pub plugin_dir: PathBuf,
    /// How often the published capacity is read back and repaired (default 60 s).
    pub check_interval: Duration,
    /// How often the capacity is re-published even when it looks right (default 10 min).
    pub republish_interval: Duration,
    /// First wait after a failed API call (default 1 s); doubled per failure.
    pub retry_initial: Duration,
    /// Longest wait between retries (default 5 min).
    pub retry_max: Duration,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("node_name", &self.node_name)
            .field("dev_root", &self.dev_root)
            .field("plugin_dir", &self.plugin_dir)
            .field("check_interval", &self.check_interval)
            .field("republish_interval", &self.republish_interval)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// The defaults for `node_name`, reading this processor's CPUID.
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    pub fn new(node_name: impl Into<String>) -> Self {
        Self::with_cpuid(node_name, Arc::new(epc::NativeCpuid))
    }

    /// The defaults for `node_name` with CPUID values from `cpuid`.
    pub fn with_cpuid(
        node_name: impl Into<String>,
        cpuid: Arc<dyn CpuidSource + Send + Sync>,
    ) -> Self {
        Self {
            node_name: node_name.into(),
            cpuid,
            dev_root: PathBuf::from(DEFAULT_DEV_ROOT),
            plugin_dir: PathBuf::from(DEFAULT_PLUGIN_DIR),
            check_interval: Duration::from_secs(60),
            republish_interval: Duration::from_secs(600),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }

    /// The defaults with the node name from [`NODE_NAME_ENV`] (validated).
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    pub fn from_env() -> Result<Self, Error> {
        let name = std::env::var(NODE_NAME_ENV).unwrap_or_default();
        epc::validate_node_name(&name)?;
        Ok(Self::new(name))
    }
}

/// Runs the agent with the in-cluster (or kubeconfig) Kubernetes client until SIGTERM or
/// SIGINT. Returns an error for what retrying cannot fix (no SGX, missing device, invalid
/// node name, no client configuration); API errors are retried, never returned.
pub async fn run(cfg: AgentConfig) -> Result<(), Error> {
    let client = kube::Client::try_default()
        .await
        .map_err(|source| Error::KubeClient {
            source: Box::new(source),
        })?;
    run_with(cfg, client, shutdown_signal()).await
}

/// [`run`] with a given client and shutdown future: the testable core.
pub async fn run_with(
    cfg: AgentConfig,
    client: kube::Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    epc::validate_node_name(&cfg.node_name)?;
    let sgx = epc::read_epc(&*cfg.cpuid)?;
    for s in &sgx.sections {
        tracing::info!(
            subleaf = s.subleaf,
            base = format_args!("{:#x}", s.base),
            size = s.size,
            protection = %s.protection,
            "EPC section"
        );
    }
    tracing::info!(
        node = %cfg.node_name,
        epc_bytes = sgx.total_bytes,
        sgx2 = sgx.sgx2,
        "EPC read from CPUID"
    );
    check_devices(&cfg.dev_root)?;

    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = cfg.retry_initial;
    let mut last_publish: Option<Instant> = None;
    loop {
        let force = last_publish.is_none_or(|t| t.elapsed() >= cfg.republish_interval);
        let wait = match sync_capacity(&client, &cfg.node_name, sgx.total_bytes, force).await {
            Ok(published) => {
                if published {
                    last_publish = Some(Instant::now());
                }
                backoff = cfg.retry_initial;
                cfg.check_interval
            }
            Err(e) => {
                let wait = backoff;
                tracing::warn!(error = %e, retry_in = ?wait, "EPC capacity not published; retrying");
                backoff = backoff.saturating_mul(2).min(cfg.retry_max);
                wait
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!("node agent stopping");
    Ok(())
}

/// One round: unless `force`, read the capacity back and stop if it is right; otherwise
/// publish. Returns whether it published.
async fn sync_capacity(
    client: &kube::Client,
    node: &str,
    epc_bytes: u64,
    force: bool,
) -> Result<bool, Error> {
    if !force {
        let current = epc::published_epc(client.clone(), node).await?;
        if current == Some(epc_bytes) {
            return Ok(false);
        }
        tracing::info!(
            ?current,
            epc_bytes,
            "Node EPC capacity missing or changed; re-publishing"
        );
    }
    epc::publish_epc(client.clone(), node, epc_bytes).await?;
    Ok(true)
}

/// `sgx_enclave` must exist under `dev_root`; a missing `sgx_provision` is only logged.
pub fn check_devices(dev_root: &Path) -> Result<(), Error> {
    let enclave = dev_root.join(ENCLAVE_DEVICE);
    if !enclave.exists() {
        return Err(Error::DeviceMissing {
            path: enclave.display().to_string(),
        });
    }
    let provision = dev_root.join(PROVISION_DEVICE);
    if !provision.exists() {
        tracing::warn!(
            path = %provision.display(),
            "no SGX provisioning device: pods that are their own quote provider cannot run here"
        );
    }
    Ok(())
}

/// Completes on SIGTERM (the kubelet stopping the pod) or SIGINT. If the handlers cannot be
/// installed it never completes (the pod is then stopped by SIGKILL after the grace period),
/// rather than stopping the agent at once.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => {}
        r = tokio::signal::ctrl_c() => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot listen for SIGINT");
                std::future::pending::<()>().await;
            }
        }
    }
}
