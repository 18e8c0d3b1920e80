//! The device plugins against a test kubelet on real Unix sockets in a temporary plugin
//! directory: registration, `ListAndWatch` (health), `Allocate`, re-registration after the
//! kubelet deletes the sockets, clean shutdown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use coffer_node_agent::device_plugin::v1beta1::device_plugin_client::DevicePluginClient;
use coffer_node_agent::device_plugin::v1beta1::registration_server::{
    Registration, RegistrationServer,
};
use coffer_node_agent::device_plugin::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, DeviceSpec, Empty, ListAndWatchResponse,
    RegisterRequest,
};
use coffer_node_agent::device_plugin::{
    self, connect_unix, DevicePluginConfig, SgxResource, API_VERSION, ENCLAVE, HEALTHY,
    KUBELET_SOCKET, PROVISION, UNHEALTHY,
};
use coffer_node_agent::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Bound on every wait, so a broken plugin fails the test instead of hanging it. Generous:
/// nothing is asserted about how long anything takes.
const PATIENCE: Duration = Duration::from_secs(60);

const DEVICES: u32 = 5;

/// The kubelet's `Registration` service: records every request.
struct TestKubelet {
    seen: mpsc::UnboundedSender<RegisterRequest>,
}

#[tonic::async_trait]
impl Registration for TestKubelet {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let _ = self.seen.send(request.into_inner());
        Ok(Response::new(Empty {}))
    }
}

/// Serves a test kubelet on `<dir>/kubelet.sock`; returns its requests and its task.
fn start_kubelet(
    dir: &Path,
) -> Result<(mpsc::UnboundedReceiver<RegisterRequest>, JoinHandle<()>), std::io::Error> {
    let listener = tokio::net::UnixListener::bind(dir.join(KUBELET_SOCKET))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(TestKubelet { seen: tx }))
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await;
    });
    Ok((rx, task))
}

/// The host's device nodes are in `/dev`; the agent sees them at `dev_view` (as the DaemonSet
/// mounts the host's `/dev` at `/host/dev`): health follows `dev_view`, `Allocate` names `/dev`.
fn config(plugin_dir: &Path, dev_view: &Path) -> DevicePluginConfig {
    DevicePluginConfig {
        plugin_dir: plugin_dir.to_path_buf(),
        dev_root: PathBuf::from("/dev"),
        dev_view: Some(dev_view.to_path_buf()),
        devices_per_resource: DEVICES,
        health_interval: Duration::from_millis(50),
        socket_check_interval: Duration::from_millis(50),
        register_retry: Duration::from_millis(100),
        register_timeout: Duration::from_secs(10),
    }
}

/// The next registration of each resource, in whatever order they arrive.
async fn registrations(
    rx: &mut mpsc::UnboundedReceiver<RegisterRequest>,
) -> Result<Vec<RegisterRequest>, Box<dyn std::error::Error + Send + Sync>> {
    let mut got = Vec::new();
    while got.len() < 2 {
        let r = tokio::time::timeout(PATIENCE, rx.recv())
            .await?
            .ok_or("test kubelet stopped")?;
        got.push(r);
    }
    got.sort_by(|a, b| a.resource_name.cmp(&b.resource_name));
    Ok(got)
}

fn check_registrations(got: &[RegisterRequest]) {
    let expect = [
        ("sgx.intel.com/enclave", "coffer-sgx-enclave.sock"),
        ("sgx.intel.com/provision", "coffer-sgx-provision.sock"),
    ];
    assert_eq!(got.len(), 2);
    for (r, (name, endpoint)) in got.iter().zip(expect) {
        assert_eq!(r.version, "v1beta1");
        assert_eq!(r.version, API_VERSION);
        assert_eq!(r.resource_name, name);
        assert_eq!(r.endpoint, endpoint);
        let options = r
            .options
            .as_ref()
            .map(|o| (o.pre_start_required, o.get_preferred_allocation_available));
        assert_eq!(options, Some((false, false)));
    }
}

async fn dial(
    plugin_dir: &Path,
    resource: &SgxResource,
) -> Result<DevicePluginClient<tonic::transport::Channel>, tonic::transport::Error> {
    Ok(DevicePluginClient::new(
        connect_unix(&plugin_dir.join(resource.socket_name)).await?,
    ))
}

async fn next_list(
    stream: &mut Streaming<ListAndWatchResponse>,
) -> Result<ListAndWatchResponse, Box<dyn std::error::Error + Send + Sync>> {
    Ok(tokio::time::timeout(PATIENCE, stream.next())
        .await?
        .ok_or("ListAndWatch stream ended")??)
}

fn assert_list(list: &ListAndWatchResponse, resource: &SgxResource, health: &str) {
    let ids: Vec<&str> = list.devices.iter().map(|d| d.id.as_str()).collect();
    let expect: Vec<String> = (0..DEVICES)
        .map(|i| format!("{}-{i}", resource.id_prefix))
        .collect();
    assert_eq!(ids, expect);
    assert!(
        list.devices.iter().all(|d| d.health == health),
        "{list:?} not all {health}"
    );
}

fn allocate_request(ids: &[&str]) -> AllocateRequest {
    AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        }],
    }
}

fn dev_root_with_devices() -> Result<tempfile::TempDir, std::io::Error> {
    let dev = tempfile::tempdir()?;
    std::fs::write(dev.path().join("sgx_enclave"), b"")?;
    std::fs::write(dev.path().join("sgx_provision"), b"")?;
    Ok(dev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_list_allocate_health_reregister_shutdown() -> TestResult {
    let plugins = tempfile::tempdir()?;
    let dev = dev_root_with_devices()?;
    let (mut kubelet_rx, kubelet) = start_kubelet(plugins.path())?;

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(device_plugin::run_all(
        config(plugins.path(), dev.path()),
        async move {
            let _ = stop_rx.await;
        },
    ));

    // Both resources register, naming their sockets.
    check_registrations(&registrations(&mut kubelet_rx).await?);

    // As the kubelet does after a registration: options, ListAndWatch, Allocate.
    let mut streams = Vec::new();
    for resource in [ENCLAVE, PROVISION] {
        let mut client = dial(plugins.path(), &resource).await?;
        let options = client
            .get_device_plugin_options(Empty {})
            .await?
            .into_inner();
        assert!(!options.pre_start_required && !options.get_preferred_allocation_available);

        let mut stream = client.list_and_watch(Empty {}).await?.into_inner();
        assert_list(&next_list(&mut stream).await?, &resource, HEALTHY);

        let first = format!("{}-0", resource.id_prefix);
        let last = format!("{}-{}", resource.id_prefix, DEVICES - 1);
        let answer = client
            .allocate(allocate_request(&[&first, &last]))
            .await?
            .into_inner();
        assert_eq!(answer.container_responses.len(), 1);
        assert_eq!(
            answer.container_responses[0].devices,
            [DeviceSpec {
                container_path: format!("/dev/{}", resource.device),
                host_path: format!("/dev/{}", resource.device),
                permissions: "rw".into(),
            }]
        );

        let unknown = format!("{}-{DEVICES}", resource.id_prefix);
        let refused = client.allocate(allocate_request(&[&first, &unknown])).await;
        let Err(status) = refused else {
            panic!("{unknown} was allocated");
        };
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains(&format!("{unknown:?}")),
            "{}",
            status.message()
        );
        streams.push((resource, client, stream));
    }

    // The enclave device disappears: its IDs turn unhealthy; it comes back: healthy again.
    std::fs::remove_file(dev.path().join("sgx_enclave"))?;
    let (resource, _, stream) = &mut streams[0];
    assert_list(&next_list(stream).await?, resource, UNHEALTHY);
    std::fs::write(dev.path().join("sgx_enclave"), b"")?;
    assert_list(&next_list(stream).await?, resource, HEALTHY);

    // A kubelet restart deletes every socket in the plugin directory: both plugins serve
    // again and register a second time.
    for resource in [ENCLAVE, PROVISION] {
        std::fs::remove_file(plugins.path().join(resource.socket_name))?;
    }
    check_registrations(&registrations(&mut kubelet_rx).await?);
    for resource in [ENCLAVE, PROVISION] {
        let mut client = dial(plugins.path(), &resource).await?;
        let mut stream = client.list_and_watch(Empty {}).await?.into_inner();
        assert_list(&next_list(&mut stream).await?, &resource, HEALTHY);
    }
    // The old generation's streams were ended by the plugin.
    for (_, _, stream) in &mut streams {
        let end = tokio::time::timeout(PATIENCE, stream.next()).await?;
        assert!(
            !matches!(end, Some(Ok(_))),
            "old stream still sends: {end:?}"
        );
    }

    // Shutdown: run_all returns Ok and removes its sockets.
    let _ = stop_tx.send(());
    tokio::time::timeout(PATIENCE, agent).await???;
    for resource in [ENCLAVE, PROVISION] {
        assert!(!plugins.path().join(resource.socket_name).exists());
    }
    kubelet.abort();
    Ok(())
}

#[tokio::test]
async fn registers_once_the_kubelet_comes_up_and_missing_device_is_unhealthy() -> TestResult {
    let plugins = tempfile::tempdir()?;
    let dev = tempfile::tempdir()?;
    // No sgx_provision on this node.
    std::fs::write(dev.path().join("sgx_enclave"), b"")?;

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(device_plugin::run_all(
        config(plugins.path(), dev.path()),
        async move {
            let _ = stop_rx.await;
        },
    ));
    // The plugins serve before any kubelet exists; it starts later.
    for resource in [ENCLAVE, PROVISION] {
        let socket = plugins.path().join(resource.socket_name);
        tokio::time::timeout(PATIENCE, async {
            while !socket.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await?;
    }
    let (mut kubelet_rx, kubelet) = start_kubelet(plugins.path())?;
    check_registrations(&registrations(&mut kubelet_rx).await?);

    let mut client = dial(plugins.path(), &PROVISION).await?;
    let mut stream = client.list_and_watch(Empty {}).await?.into_inner();
    assert_list(&next_list(&mut stream).await?, &PROVISION, UNHEALTHY);
    std::fs::write(dev.path().join("sgx_provision"), b"")?;
    assert_list(&next_list(&mut stream).await?, &PROVISION, HEALTHY);

    let _ = stop_tx.send(());
    tokio::time::timeout(PATIENCE, agent).await???;
    kubelet.abort();
    Ok(())
}

#[tokio::test]
async fn refuses_to_replace_a_file_that_is_not_a_socket() -> TestResult {
    let plugins = tempfile::tempdir()?;
    let dev = dev_root_with_devices()?;
    let squatter = plugins.path().join(ENCLAVE.socket_name);
    std::fs::write(&squatter, b"not ours")?;
    let result = tokio::time::timeout(
        PATIENCE,
        device_plugin::run_all(config(plugins.path(), dev.path()), std::future::pending()),
    )
    .await?;
    match result {
        Err(Error::SocketPathOccupied { path }) => {
            assert_eq!(path, squatter.display().to_string());
        }
        other => panic!("expected SocketPathOccupied, got {other:?}"),
    }
    assert_eq!(std::fs::read(&squatter)?, b"not ours");
    Ok(())
}

#[tokio::test]
async fn invalid_config_is_refused() -> TestResult {
    let cfg = DevicePluginConfig {
        devices_per_resource: 0,
        ..DevicePluginConfig::default()
    };
    let result = device_plugin::run_all(cfg, std::future::pending()).await;
    assert!(
        matches!(result, Err(Error::DevicePluginConfig { ref reason }) if reason.contains("devices per resource")),
        "{result:?}"
    );
    Ok(())
}

/// A kubelet that refuses every registration, as one does for an unsupported version or a
/// resource name another plugin holds.
struct RefusingKubelet;

#[tonic::async_trait]
impl Registration for RefusingKubelet {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        Err(Status::invalid_argument(format!(
            "resource {} is already registered",
            request.get_ref().resource_name
        )))
    }
}

#[tokio::test]
async fn registration_errors_name_the_cause() -> TestResult {
    let plugins = tempfile::tempdir()?;
    let kubelet_socket = plugins.path().join(KUBELET_SOCKET);

    // No kubelet listening.
    let result = device_plugin::register(plugins.path(), &ENCLAVE, PATIENCE).await;
    match result {
        Err(Error::Registration {
            resource, socket, ..
        }) => {
            assert_eq!(resource, "sgx.intel.com/enclave");
            assert_eq!(socket, kubelet_socket.display().to_string());
        }
        other => panic!("expected a Registration error, got {other:?}"),
    }

    // A kubelet that answers with a refusal: its message is kept.
    let listener = tokio::net::UnixListener::bind(&kubelet_socket)?;
    let kubelet = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(RefusingKubelet))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    let result = device_plugin::register(plugins.path(), &PROVISION, PATIENCE).await;
    match result {
        Err(Error::Registration {
            resource, reason, ..
        }) => {
            assert_eq!(resource, "sgx.intel.com/provision");
            assert!(
                reason.contains("sgx.intel.com/provision is already registered"),
                "{reason}"
            );
        }
        other => panic!("expected a Registration error, got {other:?}"),
    }
    kubelet.abort();
    Ok(())
}
