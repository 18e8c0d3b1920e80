//! The node agent's top-level run loop: what `coffer k8s node-agent` runs in the DaemonSet.
//!
//! 1. Read the EPC size from CPUID ([`crate::epc::read_epc`]); a node without SGX is an error
//!    (the DaemonSet is meant for SGX nodes only, selected by the NFD label).
//! 2. Look at the SGX device nodes under the device root. A missing one is logged, not fatal:
//!    its resource is then advertised as unhealthy until the node appears (a driver loaded
//!    after the agent), as the device plugin API intends.
//! 3. Keep the Node's `sgx.intel.com/epc` capacity published: publish at start, then every
//!    [`AgentConfig::check_interval`] read it back and re-publish when it is missing or
//!    different (a kubelet that re-registers its Node zeroes extended resources; a deleted
//!    and re-created Node has none; someone may edit it), and re-publish unconditionally
//!    every [`AgentConfig::republish_interval`]. A failed read-back publishes anyway (the
//!    patch is idempotent). API errors are retried with exponential backoff up to
//!    [`AgentConfig::retry_max`]; the agent never gives up on the API server, because a
//!    DaemonSet pod that exits is only restarted later with the same problem.
//! 4. Beside it, serve the device plugins for `sgx.intel.com/enclave` and
//!    `sgx.intel.com/provision` ([`crate::device_plugin::run_all`]), unless
//!    [`AgentConfig::device_plugin`] says not to: by default they are left to Intel's SGX
//!    device plugin when it already serves this node, so no resource is registered twice.
//!
//! Both stop when the `shutdown` future completes ([`run`] uses SIGTERM/SIGINT); a device
//! plugin failing stops the EPC loop too and is returned, so the pod restarts as a whole.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::device_plugin::{self, DevicePluginConfig};
use crate::epc::{self, CpuidSource};
use crate::Error;

/// The environment variable the DaemonSet sets to the node's name through the downward API
/// (`valueFrom.fieldRef.fieldPath: spec.nodeName`).
pub const NODE_NAME_ENV: &str = "NODE_NAME";

/// The enclave device (in-kernel driver, Linux 5.11+), relative to the device root.
pub const ENCLAVE_DEVICE: &str = device_plugin::ENCLAVE.device;

/// The provisioning device (for quoting enclaves), relative to the device root.
pub const PROVISION_DEVICE: &str = device_plugin::PROVISION.device;

/// Everything the agent needs; [`AgentConfig::new`] fills in the defaults.
#[derive(Clone)]
pub struct AgentConfig {
    /// This node's name (from [`NODE_NAME_ENV`]).
    pub node_name: String,
    /// Where CPUID values come from: [`epc::NativeCpuid`] in production, a
    /// [`epc::RecordedCpuid`] in tests.
    pub cpuid: Arc<dyn CpuidSource + Send + Sync>,
    /// The device plugins' settings, including the device root (`devices.dev_root`, default
    /// `/dev`) and the kubelet plugin directory (`devices.plugin_dir`, default
    /// `/var/lib/kubelet/device-plugins`).
    pub devices: DevicePluginConfig,
    /// How often the published capacity is read back and repaired (default 60 s).
    pub check_interval: Duration,
    /// How often the capacity is re-published even when it looks right (default 10 min).
    pub republish_interval: Duration,
    /// First wait after a failed API call (default 1 s); doubled per failure.
    pub retry_initial: Duration,
    /// Longest wait between retries (default 5 min).
    pub retry_max: Duration,
    /// Whether to serve the device plugins (default [`DevicePluginMode::Auto`]).
    pub device_plugin: DevicePluginMode,
}

/// Whether the agent serves `sgx.intel.com/enclave` and `sgx.intel.com/provision` itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevicePluginMode {
    /// Serve them unless Intel's SGX device plugin already does on this node (its sockets in
    /// the kubelet's plugin directory accept connections); checked once at start.
    Auto,
    /// Always serve them.
    On,
    /// Never: another plugin provides the resources; the agent only publishes the EPC.
    Off,
}

impl std::str::FromStr for DevicePluginMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err(format!("{s:?} is not one of auto, on, off")),
        }
    }
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("node_name", &self.node_name)
            .field("devices", &self.devices)
            .field("check_interval", &self.check_interval)
            .field("republish_interval", &self.republish_interval)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .field("device_plugin", &self.device_plugin)
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
            devices: DevicePluginConfig::default(),
            check_interval: Duration::from_secs(60),
            republish_interval: Duration::from_secs(600),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            device_plugin: DevicePluginMode::Auto,
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
/// SIGINT. Returns an error for what retrying cannot fix (no SGX, invalid node name, no client
/// configuration, a plugin socket another plugin serves); API errors are retried, never
/// returned.
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
    for (name, d) in [
        ("check interval", cfg.check_interval),
        ("first retry wait", cfg.retry_initial),
    ] {
        if d.is_zero() {
            return Err(Error::AgentConfig {
                reason: format!("the {name} is zero (it would poll the API server in a loop)"),
            });
        }
    }
    cfg.devices.validate()?;
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
    let serve_plugins = match cfg.device_plugin {
        DevicePluginMode::On => true,
        DevicePluginMode::Off => false,
        DevicePluginMode::Auto => {
            match device_plugin::intel_plugin_serving(&cfg.devices.plugin_dir) {
                Some(socket) => {
                    tracing::info!(socket = %socket.display(),
                    "Intel's SGX device plugin serves this node: leaving sgx.intel.com/enclave \
                     and sgx.intel.com/provision to it");
                    false
                }
                None => true,
            }
        }
    };
    if serve_plugins {
        report_devices(&cfg.devices);
    } else {
        tracing::info!("device plugins off: only the EPC capacity is published");
    }

    // One stop signal for both halves: the caller's shutdown, or a device plugin failing.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let plugins = async {
        let result = if serve_plugins {
            device_plugin::run_all(cfg.devices.clone(), stopped(stop_rx.clone())).await
        } else {
            stopped(stop_rx.clone()).await;
            Ok(())
        };
        let _ = stop_tx.send(true);
        result
    };
    let publish = publish_loop(&cfg, &client, sgx.total_bytes, stopped(stop_rx.clone()));
    let work = async { tokio::join!(plugins, publish).0 };
    let mut work = std::pin::pin!(work);
    let mut shutdown = std::pin::pin!(shutdown);
    let result = tokio::select! {
        result = &mut work => result,
        () = &mut shutdown => {
            let _ = stop_tx.send(true);
            work.await
        }
    };
    tracing::info!("node agent stopped");
    result
}

/// Keeps the capacity published until `stop` completes (see the [module docs](self)).
async fn publish_loop(
    cfg: &AgentConfig,
    client: &kube::Client,
    epc_bytes: u64,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut backoff = cfg.retry_initial;
    let mut last_publish: Option<Instant> = None;
    loop {
        let force = last_publish.is_none_or(|t| t.elapsed() >= cfg.republish_interval);
        // A hanging API call must not hold up shutdown: the round itself races the stop.
        let round = tokio::select! {
            () = &mut stop => break,
            round = sync_capacity(client, &cfg.node_name, epc_bytes, force) => round,
        };
        let wait = match round {
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
            () = &mut stop => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
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
        // A failed read is not fatal: publishing is idempotent, so publish instead.
        let current = match epc::published_epc(client.clone(), node).await {
            Ok(current) => current,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Node's EPC capacity back; publishing");
                None
            }
        };
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

/// Logs the SGX device nodes that are missing (as this process sees the host's device root):
/// their resources are advertised as unhealthy until they appear.
pub fn report_devices(devices: &DevicePluginConfig) {
    for (resource, consequence) in [
        (
            device_plugin::ENCLAVE,
            "no enclave can start on this node until the SGX driver is loaded (Linux 5.11+); \
             sgx.intel.com/enclave is advertised as unhealthy",
        ),
        (
            device_plugin::PROVISION,
            "pods that are their own quote provider cannot run here; sgx.intel.com/provision \
             is advertised as unhealthy",
        ),
    ] {
        let path = devices.view_path(&resource);
        if !path.exists() {
            tracing::warn!(path = %path.display(), "SGX device missing: {consequence}");
        }
    }
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
