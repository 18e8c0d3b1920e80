//! `coffer k8s`: Coffer on Kubernetes — render the chart, serve the admission webhook, run the
//! node agent, show this machine's EPC.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use coffer_k8s::chart;
use coffer_k8s::webhook::{self, EvidenceMode, Tee, TlsFiles, WebhookConfig};
use coffer_node_agent::agent::{self, AgentConfig};
use coffer_node_agent::device_plugin;
use coffer_node_agent::epc::{self, CpuidSource, NativeCpuid, RecordedCpuid};

use super::coordinator::shutdown_signal;
use crate::output::{print_json, Failure};
use crate::Global;
use serde::Deserialize;

/// `coffer k8s --help`: examples across the subcommands.
pub(crate) const GROUP_HELP: &str = "EXAMPLES:
    Install Coffer's objects without Helm:
        coffer k8s render > coffer.yaml && kubectl apply -n coffer -f coffer.yaml

    A development cluster without SGX (SIMULATION, no protection; see `k8s webhook --help` for
    what Coffer pods then need):
        coffer k8s render --set simulation=true > coffer-sim.yaml

    A pod as the webhook admits it (e.g. to compute a Kata agent policy from it):
        coffer k8s inject -f pod.yaml --coordinator coffer-coordinator.coffer.svc:4433

    This machine's SGX EPC, as the node agent publishes it:
        coffer k8s epc";

/// Kubernetes subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum K8sCmd {
    /// Render the Helm chart's objects without Helm (same output as `helm template`).
    #[command(after_help = "EXAMPLES:
    The chart with its defaults (SGX hardware, embedded store), into namespace `coffer`:
        coffer k8s render > coffer.yaml && kubectl apply -n coffer -f coffer.yaml

    Three Coordinators on a 3-member etcd the chart deploys:
        coffer k8s render --set store.type=etcd --set coordinator.replicas=3

    The webhook certificate from cert-manager, values from a file:
        coffer k8s render -f my-values.yaml --set webhook.certManager.enabled=true

    The same objects with Helm:
        helm template coffer deploy/helm/coffer --namespace coffer")]
    Render(RenderArgs),
    /// Serve the mutating admission webhook that makes pods labelled for Coffer confidential.
    #[command(after_help = "EXAMPLES:
    Certificate written by the Coordinator (`--webhook-cert-dir`), CA bundle patched in:
        coffer k8s webhook --tls-dir /run/coffer-webhook --ca-bundle-for coffer-webhook \\
            --coordinator coffer-coordinator.coffer.svc:4433

    Certificate from a cert-manager Secret mounted at /tls:
        coffer k8s webhook --tls-dir /tls --coordinator coffer-coordinator.coffer.svc:4433

    A development cluster on simulated hardware (the chart's simulation=true runs this):
        coffer k8s webhook --tls-dir /run/coffer-webhook \\
            --coordinator coffer-coordinator.coffer.svc:4433 --evidence sim

WHAT IT INJECTS (pods with the label coffer.dev/workload=<name>):
    COFFER_COORDINATOR, COFFER_WORKLOAD, COFFER_INSTANCE_ID (the pod UID), COFFER_EVIDENCE;
    SGX: sgx.intel.com/epc (annotation coffer.dev/epc or --default-epc), sgx.intel.com/enclave,
    sgx.intel.com/provision for the container named by sgx.intel.com/quote-provider, or the
    aesmd socket when that annotation is `aesmd`, and the SGX node toleration;
    TDX/SNP (annotation coffer.dev/tee): runtimeClassName kata-qemu-tdx / kata-qemu-snp.

WHAT THE POD MUST SET ITSELF:
    COFFER_ROOT_CA (the Coordinator's root CA, mounted) or COFFER_COORDINATOR_MRENCLAVE: the
    launcher trusts no Coordinator on first use. With --evidence sim also COFFER_SIM_DIR, the
    directory of a mounted copy of the Coordinator's sim-platform.json (the file its --sim-dir
    holds; simulated quotes verify only against that platform): the webhook injects no sim
    directory, and the launcher refuses to start with COFFER_EVIDENCE=sim and no COFFER_SIM_DIR.")]
    Webhook(WebhookArgs),
    /// Print a pod as the webhook would admit it (for Kata agent policies computed afterwards).
    #[command(after_help = "EXAMPLES:
    The injected pod, then its Kata agent policy computed from it:
        coffer k8s inject -f pod.yaml --coordinator coffer-coordinator.coffer.svc:4433 \\
            --default-tee tdx > pod-injected.yaml
        genpolicy -y pod-injected.yaml

    A TDX pod from standard input, as JSON:
        kubectl create --dry-run=client -o json -f pod.yaml | coffer --json k8s inject -f - \\
            --coordinator coffer-coordinator.coffer.svc:4433

The webhook admits the result unchanged, so a policy computed from it stays valid. Warnings
go to standard error; a pod the webhook would refuse is refused here with the same message.")]
    Inject(InjectArgs),
    /// Run the node agent: publish the EPC capacity and serve the SGX devices to the kubelet.
    #[command(after_help = "EXAMPLES:
    As the chart's DaemonSet runs it (NODE_NAME from the downward API, the host's /dev
    mounted read-only at /host/dev):
        NODE_NAME=worker-1 coffer k8s node-agent --host-dev /host/dev

    Beside Intel's SGX device plugin, publishing only the EPC capacity:
        coffer k8s node-agent --node-name worker-1 --device-plugin off

    With other kubelet and device directories:
        coffer k8s node-agent --node-name worker-1 --plugin-dir /var/lib/kubelet/device-plugins \\
            --dev-root /dev

DEVICES:
    A missing /dev/sgx_enclave or /dev/sgx_provision is not fatal: its resource is advertised
    as unhealthy (no pod is admitted for it) until the device node appears.")]
    NodeAgent(NodeAgentArgs),
    /// Show this machine's SGX EPC sections as read from CPUID leaf 0x12.
    #[command(after_help = "EXAMPLES:
    This machine:
        coffer k8s epc

    A CPUID dump recorded on another machine (lines `leaf subleaf eax ebx ecx edx`, hex):
        coffer k8s epc --cpuid-file server.cpuid --json

    Record this machine's CPUID values for a bug report:
        coffer k8s epc --record > this-machine.cpuid")]
    Epc(EpcArgs),
}

/// `coffer k8s render` arguments.
#[derive(Debug, Args)]
pub(crate) struct RenderArgs {
    /// Namespace the objects go to (Helm's `--namespace`).
    #[arg(long, short = 'n', default_value = "coffer")]
    namespace: String,
    /// Release name (Helm's first argument).
    #[arg(long, default_value = "coffer")]
    release: String,
    /// A values file, as `helm -f`; may be repeated, later files win.
    #[arg(long = "values", short = 'f', value_name = "FILE")]
    values: Vec<PathBuf>,
    /// A value, as `helm --set a.b=c`; may be repeated, applied after the files.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    set: Vec<String>,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

/// What the webhook injects (shared by `k8s webhook` and `k8s inject`).
#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// The Coordinator's address as pods reach it, injected as COFFER_COORDINATOR.
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: String,
    /// TEE for pods without the coffer.dev/tee annotation: sgx, tdx or snp.
    #[arg(long, default_value = "sgx")]
    default_tee: String,
    /// EPC limit for SGX containers without coffer.dev/epc or their own limit.
    #[arg(long, default_value = "10Mi")]
    default_epc: String,
    /// Injected as COFFER_EVIDENCE: auto, gramine, tsm, or sim (SIMULATION, development only;
    /// pods then also need COFFER_SIM_DIR, which is not injected: see `k8s webhook --help`).
    #[arg(long, default_value = "auto")]
    evidence: String,
    /// A RuntimeClass TDX pods may name (may be repeated; the first is set on pods naming
    /// none). Default: kata-qemu-tdx.
    #[arg(long = "tdx-runtime-class", value_name = "NAME")]
    tdx_runtime_classes: Vec<String>,
    /// A RuntimeClass SEV-SNP pods may name (may be repeated; the first is set on pods
    /// naming none). Default: kata-qemu-snp; AKS names its class kata-cc-isolation.
    #[arg(long = "snp-runtime-class", value_name = "NAME")]
    snp_runtime_classes: Vec<String>,
}

impl PolicyArgs {
    /// The webhook configuration these flags describe, checked.
    fn config(&self) -> anyhow::Result<WebhookConfig> {
        let tee: Tee = self
            .default_tee
            .parse()
            .map_err(|e: String| Failure::new("invalid-argument", format!("--default-tee: {e}")))?;
        let evidence: EvidenceMode = self
            .evidence
            .parse()
            .map_err(|e: String| Failure::new("invalid-argument", format!("--evidence: {e}")))?;
        let mut cfg = WebhookConfig::new(self.coordinator.clone());
        cfg.default_tee = tee;
        cfg.default_epc = self.default_epc.clone();
        cfg.evidence = evidence;
        if !self.tdx_runtime_classes.is_empty() {
            cfg.tdx_runtime_classes = self.tdx_runtime_classes.clone();
        }
        if !self.snp_runtime_classes.is_empty() {
            cfg.snp_runtime_classes = self.snp_runtime_classes.clone();
        }
        cfg.validate()
            .map_err(|e| Failure::new("invalid-argument", e.to_string()))?;
        Ok(cfg)
    }
}

/// `coffer k8s inject` arguments.
#[derive(Debug, Args)]
pub(crate) struct InjectArgs {
    /// The pod (YAML or JSON; `-` for standard input).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// `coffer k8s webhook` arguments.
#[derive(Debug, Args)]
pub(crate) struct WebhookArgs {
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: String,
    /// Directory with `tls.crt` and `tls.key` (and `ca.crt` for --ca-bundle-for), as written
    /// by the Coordinator's `--webhook-cert-dir` or mounted from a cert-manager Secret.
    /// The files are re-read when they change.
    #[arg(long)]
    tls_dir: PathBuf,
    /// Patch `caBundle` of this MutatingWebhookConfiguration with `ca.crt` at start-up.
    #[arg(long, value_name = "NAME")]
    ca_bundle_for: Option<String>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// A namespace whose pods are never changed (may be repeated); a pod labelled for Coffer
    /// there is admitted with a warning that it runs without Coffer.
    #[arg(long = "excluded-namespace", value_name = "NAMESPACE")]
    excluded_namespaces: Vec<String>,
    /// How long to wait for the certificate files to appear (the Coordinator writes them once
    /// it has started).
    #[arg(long, default_value_t = 300)]
    wait_secs: u64,
}

/// `coffer k8s node-agent` arguments.
#[derive(Debug, Args)]
pub(crate) struct NodeAgentArgs {
    /// This node's name (the chart sets NODE_NAME from `spec.nodeName`).
    #[arg(long, env = agent::NODE_NAME_ENV)]
    node_name: String,
    /// Where `sgx_enclave` and `sgx_provision` are on the host (what the kubelet gives pods).
    #[arg(long, default_value = device_plugin::DEFAULT_DEV_ROOT)]
    dev_root: PathBuf,
    /// Where this process sees the host's --dev-root, if elsewhere (the chart mounts the
    /// host's /dev read-only at /host/dev); device health is checked there.
    #[arg(long, value_name = "DIR")]
    host_dev: Option<PathBuf>,
    /// Serve sgx.intel.com/enclave and sgx.intel.com/provision: auto (unless Intel's SGX
    /// device plugin already serves this node), on, or off (only publish the EPC).
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    device_plugin: String,
    /// Read CPUID values from this recorded file (`coffer k8s epc --record`) instead of this
    /// processor: for tests, and for checking a node's EPC from a recording.
    #[arg(long, value_name = "FILE")]
    cpuid_file: Option<PathBuf>,
    /// The kubelet's device plugin directory (with `kubelet.sock`).
    #[arg(long, default_value = device_plugin::DEFAULT_PLUGIN_DIR)]
    plugin_dir: PathBuf,
    /// Device IDs advertised per resource: how many containers may use the shared SGX
    /// devices at once (the kubelet's default pod limit is 110).
    #[arg(long, default_value_t = device_plugin::DEFAULT_DEVICES_PER_RESOURCE,
          value_parser = clap::value_parser!(u32).range(1..=device_plugin::MAX_DEVICES_PER_RESOURCE as i64))]
    devices_per_resource: u32,
}

/// `coffer k8s epc` arguments.
#[derive(Debug, Args)]
pub(crate) struct EpcArgs {
    /// Read CPUID values from this recorded file instead of this processor.
    #[arg(long, conflicts_with = "record")]
    cpuid_file: Option<PathBuf>,
    /// Print this processor's CPUID values in the recorded-file format instead.
    #[arg(long)]
    record: bool,
}

/// Runs a `coffer k8s` subcommand.
pub(crate) fn run(cmd: K8sCmd, global: Global) -> anyhow::Result<ExitCode> {
    match cmd {
        K8sCmd::Render(a) => render(a, global),
        K8sCmd::Webhook(a) => runtime()?.block_on(serve_webhook(a, global)),
        K8sCmd::Inject(a) => inject(a, global),
        K8sCmd::NodeAgent(a) => runtime()?.block_on(node_agent(a)),
        K8sCmd::Epc(a) => show_epc(a, global),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn render(args: RenderArgs, global: Global) -> anyhow::Result<ExitCode> {
    let release = chart::Release::new(&args.release, &args.namespace)
        .map_err(|e| Failure::new("invalid-argument", e.to_string()))?;
    let mut overrides = serde_yaml::Value::Mapping(Default::default());
    for path in &args.values {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading values file {}", path.display()))?;
        let v = chart::parse_values_file(&path.display().to_string(), &text)
            .map_err(|e| Failure::new("invalid-values", e.to_string()))?;
        chart::merge_values(&mut overrides, v);
    }
    for expr in &args.set {
        let v = chart::parse_set(expr)
            .map_err(|e| Failure::new("invalid-values", format!("--set {expr}: {e}")))?;
        chart::merge_values(&mut overrides, v);
    }
    let yaml = chart::render(&release, &overrides).map_err(|e| {
        Failure::new(
            "render",
            format!("{e}; check the values you set against deploy/helm/coffer/values.yaml"),
        )
    })?;
    let text = if global.json {
        // One kubectl-compatible List (`kubectl apply -f` takes it) instead of YAML documents.
        let mut items = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&yaml) {
            let v = serde_json::Value::deserialize(doc).context("re-reading the rendered YAML")?;
            if !v.is_null() {
                items.push(v);
            }
        }
        let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items });
        format!("{}\n", serde_json::to_string_pretty(&list)?)
    } else {
        yaml
    };
    match &args.output {
        Some(path) => super::evidence::write_atomic(path, text.as_bytes(), false)?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve_webhook(args: WebhookArgs, global: Global) -> anyhow::Result<ExitCode> {
    let mut cfg = args.policy.config()?;
    cfg.excluded_namespaces = args.excluded_namespaces.clone();
    if cfg.evidence == EvidenceMode::Sim {
        tracing::warn!("SIMULATION: Coffer pods get COFFER_EVIDENCE=sim and prove nothing");
        eprintln!("warning: SIMULATION: pods will use simulated evidence (development only)");
    }

    let tls = TlsFiles::new(args.tls_dir.join("tls.crt"), args.tls_dir.join("tls.key"));
    let mut wanted = vec![tls.cert_path.clone(), tls.key_path.clone()];
    let ca_path = args.tls_dir.join("ca.crt");
    if args.ca_bundle_for.is_some() {
        wanted.push(ca_path.clone());
    }
    wait_for_files(&wanted, Duration::from_secs(args.wait_secs)).await?;
    if let Some(name) = &args.ca_bundle_for {
        let ca =
            std::fs::read(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
        let client = kube::Client::try_default().await.map_err(|e| {
            Failure::new(
                "kubernetes",
                format!("no Kubernetes client configuration ({e}); run inside the cluster or set KUBECONFIG, or drop --ca-bundle-for"),
            )
        })?;
        let changed = webhook::patch_ca_bundle(client, name, &ca)
            .await
            .map_err(|e| {
                Failure::new(
                    "kubernetes",
                    format!("patching the CA bundle of {name}: {e}"),
                )
            })?;
        tracing::info!(webhook_configuration = %name, changed, "CA bundle in place");
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    if global.json {
        // One line, so a supervisor or test can read the address before anything else.
        println!(
            "{}",
            serde_json::json!({ "listening": addr.to_string(), "path": "/mutate" })
        );
    } else {
        println!("coffer webhook: serving https://{addr}/mutate");
    }
    webhook::serve(listener, tls, cfg, shutdown_signal())
        .await
        .map_err(|e| Failure::new("webhook", e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

/// Waits until every file in `paths` exists, or fails after `limit` naming the missing ones.
async fn wait_for_files(paths: &[PathBuf], limit: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let missing: Vec<String> = paths
            .iter()
            .filter(|p| !p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(
                "tls",
                format!(
                    "{} still missing after {} s; start the Coordinator with --webhook-cert-dir, or mount the cert-manager Secret there",
                    missing.join(", "),
                    limit.as_secs()
                ),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn inject(args: InjectArgs, global: Global) -> anyhow::Result<ExitCode> {
    let cfg = args.policy.config()?;
    use std::io::Read as _;
    let source: Box<dyn std::io::Read> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&args.file)
                .with_context(|| format!("reading {}", args.file.display()))?,
        )
    };
    let mut text = String::new();
    source
        .take(MAX_POD_BYTES)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", args.file.display()))?;
    if text.len() as u64 >= MAX_POD_BYTES {
        return Err(Failure::new(
            "invalid-input",
            format!("the pod is larger than {MAX_POD_BYTES} bytes (the API server's limit)"),
        )
        .into());
    }
    let pod: k8s_openapi::api::core::v1::Pod = serde_yaml::from_str(&text)
        .map_err(|e| Failure::new("invalid-input", format!("not a Pod in YAML or JSON: {e}")))?;
    if pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(webhook::LABEL_WORKLOAD))
        .is_none()
    {
        eprintln!(
            "warning: the pod has no {} label: the webhook only rewrites its legacy EPC resources",
            webhook::LABEL_WORKLOAD
        );
    }
    let m = webhook::mutate_pod(&pod, &cfg)
        .map_err(|r| Failure::new("refused", format!("the webhook would refuse this pod: {r}")))?;
    for w in &m.warnings {
        eprintln!("warning: {w}");
    }
    if global.json {
        println!("{}", serde_json::to_string_pretty(&m.pod)?);
    } else {
        print!("{}", serde_yaml::to_string(&m.pod)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Largest pod `k8s inject` reads: the API server's own limit for an object.
const MAX_POD_BYTES: u64 = 3 * 1024 * 1024;

async fn node_agent(args: NodeAgentArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = match &args.cpuid_file {
        Some(path) => AgentConfig::with_cpuid(
            args.node_name,
            Arc::new(
                RecordedCpuid::load(path)
                    .map_err(|e| Failure::new("invalid-input", e.to_string()))?,
            ),
        ),
        None => AgentConfig::new(args.node_name),
    };
    cfg.device_plugin = args
        .device_plugin
        .parse()
        .map_err(|e: String| Failure::new("usage", e))?;
    cfg.devices.dev_root = args.dev_root;
    cfg.devices.dev_view = args.host_dev;
    cfg.devices.plugin_dir = args.plugin_dir;
    cfg.devices.devices_per_resource = args.devices_per_resource;
    agent::run(cfg)
        .await
        .map_err(|e| Failure::new("node-agent", e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

fn show_epc(args: EpcArgs, global: Global) -> anyhow::Result<ExitCode> {
    if args.record {
        if global.json {
            return Err(Failure::new(
                "usage",
                "--record prints the text format that --cpuid-file reads; drop --json",
            )
            .into());
        }
        print!("{}", RecordedCpuid::record(&NativeCpuid).to_text());
        return Ok(ExitCode::SUCCESS);
    }
    let source: Arc<dyn CpuidSource + Send + Sync> = match &args.cpuid_file {
        Some(path) => Arc::new(
            RecordedCpuid::load(path).map_err(|e| Failure::new("invalid-input", e.to_string()))?,
        ),
        None => Arc::new(NativeCpuid),
    };
    let found = epc::read_epc(source.as_ref()).map_err(|e| {
        use coffer_node_agent::Error as E;
        let kind = match e {
            E::SgxNotSupported | E::SgxLeafAbsent { .. } | E::SgxDisabled | E::NoEpcSections => {
                "no-sgx"
            }
            _ => "malformed-cpuid",
        };
        Failure::new(kind, e.to_string())
    })?;
    if global.json {
        let sections: Vec<_> = found
            .sections
            .iter()
            .map(|s| {
                serde_json::json!({
                    "subleaf": s.subleaf,
                    "base": format!("{:#x}", s.base),
                    "size": s.size,
                    "protection": s.protection.to_string(),
                })
            })
            .collect();
        print_json(&serde_json::json!({
            "sgx2": found.sgx2,
            "max_enclave_size_64_log2": found.max_enclave_size_64_log2,
            "sections": sections,
            "total_bytes": found.total_bytes,
            "resource": epc::EPC_RESOURCE,
        }))?;
    } else {
        println!(
            "SGX{} with {} EPC section(s), {} bytes in all ({} = {}):",
            if found.sgx2 { "2" } else { "1" },
            found.sections.len(),
            found.total_bytes,
            epc::EPC_RESOURCE,
            found.total_bytes
        );
        for s in &found.sections {
            println!(
                "  sub-leaf {:>2}: base {:#014x}, {:>14} bytes, {}",
                s.subleaf, s.base, s.size, s.protection
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
