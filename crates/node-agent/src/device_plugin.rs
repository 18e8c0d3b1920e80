//! The kubelet device plugin API `v1beta1` for the SGX devices: one gRPC server per resource
//! on a Unix socket in the kubelet's plugin directory.
//!
//! Pods ask for `sgx.intel.com/enclave: 1` (to create enclaves through `/dev/sgx_enclave`) and,
//! when they are their own quote provider, `sgx.intel.com/provision: 1` (`/dev/sgx_provision`).
//! The kubelet only admits such pods on a node where a device plugin has registered the
//! resource, and only puts the device node into the container's device cgroup and `/dev` when
//! the plugin's `Allocate` answer names it. That is what this module does, with the names
//! Intel's SGX device plugin (and AKS) use, so pods written for them run unchanged.
//!
//! The device nodes are shared: any number of containers may open them at once (the EPC, not
//! the device, is the limited resource, and it is accounted as `sgx.intel.com/epc`). So, like
//! Intel's plugin, each resource advertises [`DevicePluginConfig::devices_per_resource`]
//! interchangeable device IDs (default 110, the kubelet's default pod limit per node), all
//! mapping to the same device node.
//!
//! Life cycle per resource ([`serve_resource`]; [`run_all`] runs both):
//! 1. bind `<plugin dir>/<socket>` and serve `DevicePlugin`;
//! 2. register with the kubelet at `<plugin dir>/kubelet.sock` (retried until it answers:
//!    the kubelet may start after the agent);
//! 3. `ListAndWatch` sends the device list, then again whenever the device node under the
//!    device root appears or disappears (polled every
//!    [`DevicePluginConfig::health_interval`]: a missing node makes every ID `Unhealthy`, so
//!    the kubelet stops admitting pods that need it);
//! 4. a restarting kubelet deletes every file in its plugin directory and forgets all
//!    plugins; the socket is checked every [`DevicePluginConfig::socket_check_interval`] and
//!    when it is gone the server is stopped, re-created and registered again.

use std::future::Future;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::pin::{pin, Pin};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use crate::Error;

/// The generated types and services of the vendored `proto/api.proto` (package `v1beta1`).
pub mod v1beta1 {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    tonic::include_proto!("v1beta1");
}

use v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use v1beta1::registration_client::RegistrationClient;
use v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse, Device, DevicePluginOptions,
    DeviceSpec, Empty, ListAndWatchResponse, PreStartContainerRequest, PreStartContainerResponse,
    PreferredAllocationRequest, PreferredAllocationResponse, RegisterRequest,
};

/// The API version sent in `RegisterRequest.version`; the kubelet refuses other values.
pub const API_VERSION: &str = "v1beta1";

/// The kubelet's registration socket, relative to the plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";

/// The kubelet's default device plugin directory.
pub const DEFAULT_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";

/// Where the SGX device nodes are on a host by default.
pub const DEFAULT_DEV_ROOT: &str = "/dev";

/// The sockets Intel's SGX device plugin serves in the kubelet's plugin directory (its
/// `pkg/deviceplugin/server.go` names them `<namespace>-<device type>.sock`).
pub const INTEL_PLUGIN_SOCKETS: [&str; 2] =
    ["sgx.intel.com-enclave.sock", "sgx.intel.com-provision.sock"];

/// The first of Intel's SGX plugin sockets in `plugin_dir` that accepts a connection: Intel's
/// plugin is running on this node.
pub fn intel_plugin_serving(plugin_dir: &Path) -> Option<PathBuf> {
    INTEL_PLUGIN_SOCKETS
        .iter()
        .map(|name| plugin_dir.join(name))
        .find(|p| std::os::unix::net::UnixStream::connect(p).is_ok())
}

/// Default number of device IDs per resource: the kubelet's default `maxPods`, so one node
/// never runs out of SGX "devices" before it runs out of pods.
pub const DEFAULT_DEVICES_PER_RESOURCE: u32 = 110;

/// Upper bound on [`DevicePluginConfig::devices_per_resource`]: far above any node's pod
/// limit, and keeps a device list well inside gRPC's 4 MiB message limit.
pub const MAX_DEVICES_PER_RESOURCE: u32 = 10_000;

/// The health string the kubelet counts as allocatable.
pub const HEALTHY: &str = "Healthy";

/// The health string that makes the kubelet stop allocating a device.
pub const UNHEALTHY: &str = "Unhealthy";

/// One SGX resource served by a device plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SgxResource {
    /// The extended resource name pods request (`sgx.intel.com/enclave`).
    pub resource_name: &'static str,
    /// The socket file name in the plugin directory (the `endpoint` of the registration).
    pub socket_name: &'static str,
    /// The device node's file name, under the device root on the host and under `/dev` in
    /// the container.
    pub device: &'static str,
    /// The prefix of the advertised device IDs (`<prefix>-0`, `<prefix>-1`, …).
    pub id_prefix: &'static str,
}

/// `sgx.intel.com/enclave`: `/dev/sgx_enclave`, needed to create enclaves.
pub const ENCLAVE: SgxResource = SgxResource {
    resource_name: "sgx.intel.com/enclave",
    socket_name: "coffer-sgx-enclave.sock",
    device: "sgx_enclave",
    id_prefix: "sgx-enclave",
};

/// `sgx.intel.com/provision`: `/dev/sgx_provision`, needed only by quoting enclaves (pods that
/// are their own quote provider).
pub const PROVISION: SgxResource = SgxResource {
    resource_name: "sgx.intel.com/provision",
    socket_name: "coffer-sgx-provision.sock",
    device: "sgx_provision",
    id_prefix: "sgx-provision",
};

/// The resources [`run_all`] serves.
pub const RESOURCES: [SgxResource; 2] = [ENCLAVE, PROVISION];

impl SgxResource {
    /// The device path inside the container: always under `/dev`, whatever the host's root.
    pub fn container_path(&self) -> String {
        format!("/dev/{}", self.device)
    }

    /// The advertised device IDs, `<prefix>-0` to `<prefix>-<count-1>`.
    pub fn device_ids(&self, count: u32) -> Vec<String> {
        (0..count)
            .map(|i| format!("{}-{i}", self.id_prefix))
            .collect()
    }

    /// Whether `id` is one of the `count` IDs this resource advertises: the prefix, a dash and
    /// a decimal index below `count` in canonical form (no sign, no leading zero), so one
    /// device has exactly one spelling.
    pub fn is_device_id(&self, id: &str, count: u32) -> bool {
        let Some(index) = id
            .strip_prefix(self.id_prefix)
            .and_then(|rest| rest.strip_prefix('-'))
        else {
            return false;
        };
        let canonical = !index.is_empty()
            && index.len() <= 10
            && index.bytes().all(|b| b.is_ascii_digit())
            && (index == "0" || !index.starts_with('0'));
        canonical && index.parse::<u32>().is_ok_and(|i| i < count)
    }
}

/// Where and how the device plugins run. [`DevicePluginConfig::default`] is the production
/// setting; tests point the directories at temporary ones and shorten the intervals.
#[derive(Clone, Debug)]
pub struct DevicePluginConfig {
    /// The kubelet's device plugin directory (its `kubelet.sock`, our sockets).
    pub plugin_dir: PathBuf,
    /// The directory holding `sgx_enclave` and `sgx_provision` on the host: what the kubelet
    /// is told to give a container.
    pub dev_root: PathBuf,
    /// Where this process sees the host's `dev_root`, when not at the same path: the
    /// DaemonSet mounts the host's `/dev` read-only at `/host/dev` (mounting it over the
    /// container's own `/dev` would keep the kubelet from adding `/dev/termination-log`).
    /// Health is checked here; `None` checks `dev_root` itself.
    pub dev_view: Option<PathBuf>,
    /// Device IDs advertised per resource (1..=[`MAX_DEVICES_PER_RESOURCE`]).
    pub devices_per_resource: u32,
    /// How often the device nodes are checked for health (default 5 s).
    pub health_interval: Duration,
    /// How often the plugin sockets are checked for deletion by a restarting kubelet
    /// (default 1 s).
    pub socket_check_interval: Duration,
    /// Wait between failed registration attempts (default 5 s).
    pub register_retry: Duration,
    /// Bound on one registration attempt (default 10 s): a kubelet that accepts the
    /// connection but never answers must not stall the plugin.
    pub register_timeout: Duration,
}

impl Default for DevicePluginConfig {
    fn default() -> Self {
        Self {
            plugin_dir: PathBuf::from(DEFAULT_PLUGIN_DIR),
            dev_root: PathBuf::from(DEFAULT_DEV_ROOT),
            dev_view: None,
            devices_per_resource: DEFAULT_DEVICES_PER_RESOURCE,
            health_interval: Duration::from_secs(5),
            socket_check_interval: Duration::from_secs(1),
            register_retry: Duration::from_secs(5),
            register_timeout: Duration::from_secs(10),
        }
    }
}

impl DevicePluginConfig {
    /// Checks what would otherwise fail later (a zero interval panics a tokio timer; a
    /// non-UTF-8 device root cannot be put into a `DeviceSpec`).
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::DevicePluginConfig { reason });
        if self.devices_per_resource == 0 || self.devices_per_resource > MAX_DEVICES_PER_RESOURCE {
            return bad(format!(
                "devices per resource is {}; it must be between 1 and {MAX_DEVICES_PER_RESOURCE}",
                self.devices_per_resource
            ));
        }
        for (name, d) in [
            ("health interval", self.health_interval),
            ("socket check interval", self.socket_check_interval),
            ("registration retry", self.register_retry),
            ("registration timeout", self.register_timeout),
        ] {
            if d.is_zero() {
                return bad(format!("the {name} is zero"));
            }
        }
        if self.dev_root.to_str().is_none() {
            return bad(format!(
                "the device root {} is not UTF-8",
                self.dev_root.display()
            ));
        }
        Ok(())
    }

    /// The host path of a resource's device node.
    pub fn host_path(&self, resource: &SgxResource) -> PathBuf {
        self.dev_root.join(resource.device)
    }

    /// Where this process sees a resource's device node on the host (for health checks).
    pub fn view_path(&self, resource: &SgxResource) -> PathBuf {
        self.dev_view
            .as_ref()
            .unwrap_or(&self.dev_root)
            .join(resource.device)
    }

    /// The path of a resource's plugin socket.
    pub fn socket_path(&self, resource: &SgxResource) -> PathBuf {
        self.plugin_dir.join(resource.socket_name)
    }
}

/// The options this plugin registers with and answers `GetDevicePluginOptions` with: no
/// `PreStartContainer` (a shared device node needs no reset) and no preferred allocation
/// (all IDs are interchangeable).
pub fn plugin_options() -> DevicePluginOptions {
    DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: false,
    }
}

/// The `ListAndWatch` message: all `count` IDs with one health (the device node is shared, so
/// they are healthy or not together).
pub fn device_list(resource: &SgxResource, count: u32, healthy: bool) -> ListAndWatchResponse {
    let health = if healthy { HEALTHY } else { UNHEALTHY };
    ListAndWatchResponse {
        devices: resource
            .device_ids(count)
            .into_iter()
            .map(|id| Device {
                id,
                health: health.to_owned(),
                topology: None,
            })
            .collect(),
    }
}

/// The `Allocate` answer: for each container, the one device node (read/write) however many
/// IDs it was given. Refuses with `InvalidArgument` naming the first ID this plugin does not
/// advertise, or a container request with no ID, because the kubelet asking for those means
/// its view and ours differ and guessing would hand out the wrong device.
pub fn allocate_response(
    resource: &SgxResource,
    count: u32,
    host_path: &str,
    request: &AllocateRequest,
) -> Result<AllocateResponse, Status> {
    let mut container_responses = Vec::with_capacity(request.container_requests.len());
    for (i, container) in request.container_requests.iter().enumerate() {
        if container.devices_ids.is_empty() {
            return Err(Status::invalid_argument(format!(
                "container request {i} for {} names no device ID",
                resource.resource_name
            )));
        }
        if let Some(bad) = container
            .devices_ids
            .iter()
            .find(|id| !resource.is_device_id(id, count))
        {
            // Device IDs are at most 63 characters; show no more of a hostile one.
            let shown: String = bad.chars().take(64).collect();
            return Err(Status::invalid_argument(format!(
                "unknown device ID {shown:?} for {}: this plugin advertises {}-0 to {}-{}",
                resource.resource_name,
                resource.id_prefix,
                resource.id_prefix,
                count.saturating_sub(1)
            )));
        }
        container_responses.push(ContainerAllocateResponse {
            devices: vec![DeviceSpec {
                container_path: resource.container_path(),
                host_path: host_path.to_owned(),
                permissions: "rw".to_owned(),
            }],
            ..Default::default()
        });
    }
    Ok(AllocateResponse {
        container_responses,
    })
}

/// The `DevicePlugin` service of one resource in one server generation.
struct SgxDevicePlugin {
    resource: SgxResource,
    count: u32,
    host_path: String,
    /// Current health of the device node (from the health poller).
    health: watch::Receiver<bool>,
    /// Becomes `true` when this server generation stops: ends the `ListAndWatch` streams,
    /// which would otherwise hold the graceful shutdown open forever.
    stop: watch::Receiver<bool>,
}

type ListAndWatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for SgxDevicePlugin {
    async fn get_device_plugin_options(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(plugin_options()))
    }

    type ListAndWatchStream = ListAndWatchStream;

    async fn list_and_watch(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let mut health = self.health.clone();
        let mut stop = self.stop.clone();
        let (resource, count) = (self.resource, self.count);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let healthy = *health.borrow_and_update();
                if tx
                    .send(Ok(device_list(&resource, count, healthy)))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::select! {
                    changed = health.changed() => if changed.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_preferred_allocation(
        &self,
        _request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        Err(Status::unimplemented(
            "GetPreferredAllocation is not offered (get_preferred_allocation_available is false): \
             all device IDs are interchangeable",
        ))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let answer = allocate_response(
            &self.resource,
            self.count,
            &self.host_path,
            request.get_ref(),
        )?;
        tracing::debug!(
            resource = self.resource.resource_name,
            containers = answer.container_responses.len(),
            "allocated"
        );
        Ok(Response::new(answer))
    }

    async fn pre_start_container(
        &self,
        _request: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        // Not requested in the options; answering success is harmless if a kubelet calls it.
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

/// A gRPC channel to a Unix socket: how the plugin reaches the kubelet, and how a kubelet (or
/// a test standing in for one) reaches a plugin. The URI is a placeholder that gRPC needs for
/// its `:authority`; the connection always goes to `socket`.
pub async fn connect_unix(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

/// Registers `resource` with the kubelet at `<plugin_dir>/kubelet.sock`, announcing the
/// socket name (the kubelet dials `<plugin_dir>/<endpoint>`), [`API_VERSION`] and
/// [`plugin_options`]. The kubelet then calls `ListAndWatch` on our socket. `timeout` bounds
/// the whole attempt.
pub async fn register(
    plugin_dir: &Path,
    resource: &SgxResource,
    timeout: Duration,
) -> Result<(), Error> {
    let kubelet = plugin_dir.join(KUBELET_SOCKET);
    let fail = |reason: String| Error::Registration {
        resource: resource.resource_name,
        socket: kubelet.display().to_string(),
        reason,
    };
    let attempt = async {
        let channel = connect_unix(&kubelet)
            .await
            .map_err(|e| fail(describe_transport(&e)))?;
        RegistrationClient::new(channel)
            .register(RegisterRequest {
                version: API_VERSION.to_owned(),
                endpoint: resource.socket_name.to_owned(),
                resource_name: resource.resource_name.to_owned(),
                options: Some(plugin_options()),
            })
            .await
            .map_err(|s| {
                fail(format!(
                    "the kubelet refused: {:?}: {}",
                    s.code(),
                    s.message()
                ))
            })?;
        Ok(())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| fail(format!("no answer within {timeout:?}")))?
}

/// A transport error with its causes (tonic's own text is just "transport error").
fn describe_transport(e: &tonic::transport::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Aborts a spawned task when dropped, so a cancelled [`serve_resource`] leaves no server or
/// poller running behind it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether the device node exists (a missing node, or one we may not even look at, is
/// unhealthy).
async fn device_present(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok()
}

/// Polls the device node and publishes changes of its presence.
async fn poll_health(path: PathBuf, interval: Duration, tx: watch::Sender<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let present = device_present(&path).await;
        let changed = tx.send_if_modified(|h| {
            let changed = *h != present;
            *h = present;
            changed
        });
        if changed {
            if present {
                tracing::info!(device = %path.display(), "SGX device is back: healthy");
            } else {
                tracing::warn!(device = %path.display(), "SGX device is gone: unhealthy");
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// Removes a socket left by an earlier run (a crash leaves it behind and `bind` would fail).
/// A socket that still accepts connections belongs to a running plugin (a second agent, or
/// another install) and is left alone and refused, as is anything that is not a socket.
fn remove_stale_socket(path: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::SocketInUse {
                    path: path.display().to_string(),
                });
            }
            std::fs::remove_file(path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })
        }
        Ok(_) => Err(Error::SocketPathOccupied {
            path: path.display().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Whether our socket file is still there (the kubelet deletes it when it restarts).
fn socket_present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// What ends one server generation.
enum GenerationEnd {
    /// The caller's shutdown.
    Shutdown,
    /// The socket was deleted: serve again and re-register.
    SocketGone,
}

/// Serves one resource until `shutdown` completes: binds its socket, registers with the
/// kubelet (retrying), reports health, and re-creates the socket and re-registers whenever a
/// restarting kubelet deletes it. Returns `Ok` after a clean shutdown (the socket removed);
/// an error for what retrying cannot fix (invalid configuration, the socket cannot be
/// bound, a non-socket file in its place, the gRPC server failing).
pub async fn serve_resource(
    cfg: &DevicePluginConfig,
    resource: SgxResource,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    cfg.validate()?;
    let device = cfg.view_path(&resource);
    let host = cfg.host_path(&resource);
    let host_path = host
        .to_str()
        .ok_or_else(|| Error::DevicePluginConfig {
            reason: format!("the device path {} is not UTF-8", host.display()),
        })?
        .to_owned();
    let socket = cfg.socket_path(&resource);
    let mut shutdown = pin!(shutdown);

    let initial = device_present(&device).await;
    if !initial {
        tracing::warn!(device = %device.display(), resource = resource.resource_name,
            "SGX device missing: advertising the resource as unhealthy");
    }
    let (health_tx, health_rx) = watch::channel(initial);
    let _health = AbortOnDrop(tokio::spawn(poll_health(
        device.clone(),
        cfg.health_interval,
        health_tx,
    )));

    loop {
        remove_stale_socket(&socket)?;
        let listener = UnixListener::bind(&socket).map_err(|source| Error::Io {
            path: socket.display().to_string(),
            source,
        })?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let plugin = SgxDevicePlugin {
            resource,
            count: cfg.devices_per_resource,
            host_path: host_path.clone(),
            health: health_rx.clone(),
            stop: stop_rx.clone(),
        };
        let mut server_stop = stop_rx.clone();
        let mut server = AbortOnDrop(tokio::spawn(
            Server::builder()
                .add_service(DevicePluginServer::new(plugin))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                }),
        ));
        tracing::info!(resource = resource.resource_name, socket = %socket.display(),
            "device plugin serving");

        let plugin_dir = cfg.plugin_dir.clone();
        let (retry, timeout) = (cfg.register_retry, cfg.register_timeout);
        let mut registration = AbortOnDrop(tokio::spawn(async move {
            loop {
                match register(&plugin_dir, &resource, timeout).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?retry, "device plugin not registered yet");
                        tokio::time::sleep(retry).await;
                    }
                }
            }
        }));
        let mut registered = false;
        let mut tick = tokio::time::interval(cfg.socket_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let end = loop {
            tokio::select! {
                () = &mut shutdown => break GenerationEnd::Shutdown,
                done = &mut server.0 => {
                    let reason = match done {
                        Ok(Ok(())) => "stopped unexpectedly".to_owned(),
                        Ok(Err(e)) => describe_transport(&e),
                        Err(e) => format!("server task failed: {e}"),
                    };
                    return Err(Error::DevicePluginServe { resource: resource.resource_name, reason });
                }
                _ = &mut registration.0, if !registered => {
                    registered = true;
                    tracing::info!(resource = resource.resource_name, "registered with the kubelet");
                }
                _ = tick.tick() => {
                    if !socket_present(&socket) {
                        tracing::info!(resource = resource.resource_name, socket = %socket.display(),
                            "plugin socket deleted (kubelet restarted?): serving again and re-registering");
                        break GenerationEnd::SocketGone;
                    }
                }
            }
        };

        drop(registration);
        let _ = stop_tx.send(true);
        // Graceful stop ends the streams; a client that keeps its connection open must not
        // hold the plugin forever, so the wait is bounded (the guard aborts the rest).
        match tokio::time::timeout(Duration::from_secs(5), &mut server.0).await {
            Ok(Ok(Err(e))) => tracing::warn!(resource = resource.resource_name,
                error = %describe_transport(&e), "device plugin server stopped with an error"),
            Err(_) => tracing::warn!(
                resource = resource.resource_name,
                "device plugin server did not stop within 5 s; aborted"
            ),
            _ => {}
        }
        drop(server);
        if let GenerationEnd::Shutdown = end {
            if socket_present(&socket) {
                if let Err(e) = std::fs::remove_file(&socket) {
                    tracing::warn!(socket = %socket.display(), error = %e, "could not remove the plugin socket");
                }
            }
            tracing::info!(resource = resource.resource_name, "device plugin stopped");
            return Ok(());
        }
    }
}

/// Runs the device plugins for both resources ([`RESOURCES`]: `sgx.intel.com/enclave` and
/// `sgx.intel.com/provision`) until `shutdown` completes, then stops both and removes their
/// sockets. This is what the node agent runs beside the EPC capacity loop.
///
/// A missing device node is not an error: the resource is advertised as unhealthy (and
/// becomes healthy when the node appears), so a node without `/dev/sgx_provision` still
/// serves `sgx.intel.com/enclave`. Returns the first error of either plugin (see
/// [`serve_resource`]); the other is then stopped too.
pub async fn run_all(
    cfg: DevicePluginConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    cfg.validate()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let both = async {
        tokio::try_join!(
            serve_resource(&cfg, ENCLAVE, stopped(stop_rx.clone())),
            serve_resource(&cfg, PROVISION, stopped(stop_rx.clone())),
        )
        .map(|_| ())
    };
    let mut both = pin!(both);
    let mut shutdown = pin!(shutdown);
    tokio::select! {
        result = &mut both => result,
        () = &mut shutdown => {
            let _ = stop_tx.send(true);
            both.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1beta1::ContainerAllocateRequest;
    use super::*;

    fn request(ids: &[&[&str]]) -> AllocateRequest {
        AllocateRequest {
            container_requests: ids
                .iter()
                .map(|c| ContainerAllocateRequest {
                    devices_ids: c.iter().map(|s| (*s).to_owned()).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn device_ids_are_canonical() {
        assert_eq!(
            ENCLAVE.device_ids(3),
            ["sgx-enclave-0", "sgx-enclave-1", "sgx-enclave-2"]
        );
        assert!(ENCLAVE.is_device_id("sgx-enclave-0", 3));
        assert!(ENCLAVE.is_device_id("sgx-enclave-2", 3));
        for bad in [
            "sgx-enclave-3",
            "sgx-enclave-01",
            "sgx-enclave-+1",
            "sgx-enclave-",
            "sgx-enclave",
            "sgx-enclave-1 ",
            "sgx-provision-0",
            "sgx-enclave-99999999999",
            "",
        ] {
            assert!(!ENCLAVE.is_device_id(bad, 3), "{bad:?} accepted");
        }
        for id in ENCLAVE.device_ids(110) {
            assert!(ENCLAVE.is_device_id(&id, 110));
        }
    }

    #[test]
    fn device_list_health() {
        let list = device_list(&PROVISION, 2, true);
        assert_eq!(list.devices.len(), 2);
        assert!(list.devices.iter().all(|d| d.health == HEALTHY));
        assert_eq!(list.devices[1].id, "sgx-provision-1");
        let list = device_list(&PROVISION, 2, false);
        assert!(list.devices.iter().all(|d| d.health == UNHEALTHY));
    }

    #[test]
    fn allocate_maps_the_device() {
        let answer = allocate_response(
            &ENCLAVE,
            4,
            "/host/dev/sgx_enclave",
            &request(&[&["sgx-enclave-0"], &["sgx-enclave-1", "sgx-enclave-3"]]),
        );
        let answer = answer.map_err(|s| s.message().to_owned());
        let Ok(answer) = answer else {
            panic!("refused: {answer:?}");
        };
        assert_eq!(answer.container_responses.len(), 2);
        for c in &answer.container_responses {
            assert_eq!(
                c.devices,
                [DeviceSpec {
                    container_path: "/dev/sgx_enclave".into(),
                    host_path: "/host/dev/sgx_enclave".into(),
                    permissions: "rw".into(),
                }]
            );
            assert!(c.envs.is_empty() && c.mounts.is_empty());
        }
    }

    #[test]
    fn allocate_refuses_unknown_ids() {
        let long = "x".repeat(1000);
        for (ids, needle) in [
            (&["sgx-enclave-0", "sgx-enclave-4"][..], "\"sgx-enclave-4\""),
            (&["sgx-provision-0"][..], "\"sgx-provision-0\""),
            (&[long.as_str()][..], &"x".repeat(64)),
            (&[][..], "names no device ID"),
        ] {
            let Err(status) = allocate_response(&ENCLAVE, 4, "/dev/sgx_enclave", &request(&[ids]))
            else {
                panic!("{ids:?} accepted");
            };
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(needle), "{}", status.message());
            assert!(!status.message().contains(&"x".repeat(65)));
        }
    }

    #[test]
    fn config_validation() {
        assert!(DevicePluginConfig::default().validate().is_ok());
        let bad = [
            DevicePluginConfig {
                devices_per_resource: 0,
                ..Default::default()
            },
            DevicePluginConfig {
                devices_per_resource: MAX_DEVICES_PER_RESOURCE + 1,
                ..Default::default()
            },
            DevicePluginConfig {
                health_interval: Duration::ZERO,
                ..Default::default()
            },
            DevicePluginConfig {
                socket_check_interval: Duration::ZERO,
                ..Default::default()
            },
        ];
        for cfg in bad {
            assert!(
                matches!(cfg.validate(), Err(Error::DevicePluginConfig { .. })),
                "{cfg:?} accepted"
            );
        }
    }

    #[test]
    fn stale_socket_handling() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("not-a-socket.sock");
        std::fs::write(&file, b"keep me")?;
        assert!(matches!(
            remove_stale_socket(&file),
            Err(Error::SocketPathOccupied { .. })
        ));
        assert_eq!(std::fs::read(&file)?, b"keep me");

        // A socket some process still serves is not removed.
        let live = dir.path().join("live.sock");
        let listener = std::os::unix::net::UnixListener::bind(&live)?;
        assert!(matches!(
            remove_stale_socket(&live),
            Err(Error::SocketInUse { .. })
        ));
        assert!(socket_present(&live));
        drop(listener);
        remove_stale_socket(&live)?;
        assert!(!socket_present(&live));

        let sock = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock)?);
        assert!(socket_present(&sock));
        remove_stale_socket(&sock)?;
        assert!(!socket_present(&sock));
        remove_stale_socket(&sock)?; // absent: nothing to do
        Ok(())
    }
}
