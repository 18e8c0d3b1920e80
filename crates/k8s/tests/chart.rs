//! The Helm chart as `coffer k8s render` renders it: every document parsed into its
//! k8s-openapi type (which checks apiVersion and kind), re-serialised and compared with the
//! rendered YAML (so a misspelt field, which serde would skip, fails), and the fields that
//! matter checked. Plus: the chart's template directory is exactly what the renderer embeds,
//! every template renders for the defaults and each optional branch, and the evaluator refuses
//! what it does not implement with file:line.

use std::collections::BTreeSet;

use coffer_k8s::chart::{self, Release};
use coffer_k8s::Error;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Service, ServiceAccount, Volume,
};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_yaml::Value;

/// One rendered document.
#[derive(Debug, Clone)]
struct Doc {
    source: String,
    kind: String,
    name: String,
    yaml: Value,
}

/// The rendered objects of one set of values.
struct Rendered {
    text: String,
    docs: Vec<Doc>,
}

impl Rendered {
    fn find(&self, kind: &str, name: &str) -> Option<&Doc> {
        self.docs.iter().find(|d| d.kind == kind && d.name == name)
    }

    fn get<T: serde::de::DeserializeOwned>(&self, kind: &str, name: &str) -> T {
        let doc = self
            .find(kind, name)
            .unwrap_or_else(|| panic!("no {kind} {name} in\n{}", self.text));
        serde_yaml::from_value(doc.yaml.clone()).unwrap()
    }

    fn kinds(&self) -> BTreeSet<(String, String)> {
        self.docs
            .iter()
            .map(|d| (d.kind.clone(), d.name.clone()))
            .collect()
    }
}

fn overrides(sets: &[&str]) -> Value {
    let mut v = Value::Null;
    for s in sets {
        chart::merge_values(&mut v, chart::parse_set(s).unwrap());
    }
    v
}

fn release(ns: &str) -> Release {
    Release::new("coffer", ns).unwrap()
}

/// Parses `doc` as `T` and checks that nothing was lost: the typed object, serialised again,
/// equals the rendered YAML (as JSON, which is what the API server sees).
fn typed_roundtrip<T>(doc: &Doc)
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_yaml::from_value(doc.yaml.clone())
        .unwrap_or_else(|e| panic!("{} {} ({}): {e}", doc.kind, doc.name, doc.source));
    let mut back = serde_json::to_value(&typed).unwrap();
    // k8s-openapi writes apiVersion/kind into a StatefulSet's PVC templates; the API server
    // accepts both forms.
    if let Some(templates) = back.pointer_mut("/spec/volumeClaimTemplates") {
        for t in templates.as_array_mut().into_iter().flatten() {
            if let Some(o) = t.as_object_mut() {
                o.remove("apiVersion");
                o.remove("kind");
            }
        }
    }
    let orig = serde_json::to_value(&doc.yaml).unwrap();
    if let Some(path) = first_difference(&back, &orig, String::new()) {
        panic!(
            "{} {} ({}): the typed object differs at {path} (a field its type does not know?)",
            doc.kind, doc.name, doc.source
        );
    }
}

/// The JSON pointer of the first place where `a` and `b` differ.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value as J;
    match (a, b) {
        (J::Object(x), J::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, format!("{at}/{k}")),
                _ => Some(format!("{at}/{k}")),
            })
        }
        (J::Array(x), J::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, format!("{at}/{i}"))),
        _ if a == b => None,
        // A quantity written as a YAML number (`cpu: 1`) is read back as the string "1"; the
        // API server accepts both.
        (J::String(x), J::Number(y)) if *x == y.to_string() => None,
        _ => Some(format!("{at} ({a} vs {b})")),
    }
}

fn render_with(ns: &str, sets: &[&str]) -> Rendered {
    render_values(ns, &overrides(sets))
}

fn render_values(ns: &str, values: &Value) -> Rendered {
    render_release(&release(ns), values)
}

fn render_release(release: &Release, values: &Value) -> Rendered {
    let text = chart::render(release, values).unwrap_or_else(|e| panic!("render {values:?}: {e}"));
    assert!(
        text.starts_with("---\n# Source: coffer/templates/"),
        "{text}"
    );
    let mut docs = Vec::new();
    for chunk in text.split("---\n").skip(1) {
        let (header, body) = chunk.split_once('\n').unwrap();
        let source = header.strip_prefix("# Source: ").unwrap().to_string();
        let yaml: Value = serde_yaml::from_str(body).unwrap();
        let kind = yaml["kind"].as_str().unwrap().to_string();
        let name = yaml["metadata"]["name"].as_str().unwrap().to_string();
        let doc = Doc {
            source,
            kind,
            name,
            yaml,
        };
        match doc.kind.as_str() {
            "Deployment" => typed_roundtrip::<Deployment>(&doc),
            "DaemonSet" => typed_roundtrip::<DaemonSet>(&doc),
            "StatefulSet" => typed_roundtrip::<StatefulSet>(&doc),
            "Service" => typed_roundtrip::<Service>(&doc),
            "ServiceAccount" => typed_roundtrip::<ServiceAccount>(&doc),
            "ClusterRole" => typed_roundtrip::<ClusterRole>(&doc),
            "ClusterRoleBinding" => typed_roundtrip::<ClusterRoleBinding>(&doc),
            "PersistentVolumeClaim" => typed_roundtrip::<PersistentVolumeClaim>(&doc),
            "MutatingWebhookConfiguration" => typed_roundtrip::<MutatingWebhookConfiguration>(&doc),
            "RuntimeClass" => typed_roundtrip::<RuntimeClass>(&doc),
            "PodDisruptionBudget" => typed_roundtrip::<PodDisruptionBudget>(&doc),
            "ConfigMap" => typed_roundtrip::<k8s_openapi::api::core::v1::ConfigMap>(&doc),
            // cert-manager's kinds have no k8s-openapi type; their fields are checked by hand.
            "Issuer" | "Certificate" => {
                assert_eq!(doc.yaml["apiVersion"], "cert-manager.io/v1")
            }
            other => panic!("unexpected kind {other} from {}", doc.source),
        }
        docs.push(doc);
    }
    Rendered { text, docs }
}

fn container<'a>(spec: &'a k8s_openapi::api::core::v1::PodSpec, name: &str) -> &'a Container {
    spec.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn args(c: &Container) -> Vec<String> {
    c.args.clone().unwrap_or_default()
}

/// The value following `flag` in an argument list (clap's `--flag value` form).
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn volume<'a>(spec: &'a k8s_openapi::api::core::v1::PodSpec, name: &str) -> &'a Volume {
    spec.volumes
        .as_ref()
        .and_then(|v| v.iter().find(|v| v.name == name))
        .unwrap_or_else(|| panic!("no volume {name}"))
}

fn q(s: &str) -> Quantity {
    Quantity(s.to_string())
}

fn rule(rules: &[PolicyRule], resource: &str) -> PolicyRule {
    rules
        .iter()
        .find(|r| {
            r.resources
                .as_deref()
                .unwrap_or_default()
                .contains(&resource.to_string())
        })
        .unwrap_or_else(|| panic!("no rule for {resource}"))
        .clone()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn template_directory_is_exactly_what_render_embeds() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/helm/coffer/templates"
    );
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        if name == "NOTES.txt" {
            continue;
        }
        let embedded = chart::TEMPLATES
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| {
                panic!("templates/{name} is in the chart but not in chart::TEMPLATES")
            });
        assert_eq!(
            embedded.1, text,
            "templates/{name} differs from the embedded copy"
        );
        on_disk.insert(name);
    }
    let embedded: BTreeSet<String> = chart::TEMPLATES
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(on_disk, embedded);
    let names: Vec<&str> = chart::TEMPLATES.iter().map(|(n, _)| *n).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(
        names, sorted,
        "TEMPLATES must be sorted like Helm's file order"
    );
}

/// The value sets that between them take every branch of every template.
const BRANCHES: &[&[&str]] = &[
    &[],
    &["store.type=embedded,coordinator.replicas=1"],
    &["webhook.certManager.enabled=true"],
    &["store.type=etcd"],
    &["store.type=etcd,coordinator.replicas=3"],
    &["store.type=etcd,etcd.replicas=1,coordinator.replicas=1"],
    &["store.type=etcd,coordinator.sgx.quoteProvider=self"],
    &["store.type=etcd,coordinator.tee=none"],
    &["webhook.certManager.enabled=true,simulation=true"],
    &["store.type=etcd,webhook.certManager.enabled=true,simulation=true,simulationPlatformSecret=coffer-sim"],
    &["store.type=etcd,etcd.deploy=false,etcd.endpoints={https://etcd-a:2379,https://etcd-b:2379}"],
    &["store.type=etcd,etcd.deploy=false,etcd.endpoints={https://etcd-a:2379},etcd.clientTLSSecret=etcd-client"],
    &["store.type=etcd,etcd.resources.limits.memory=256Mi,etcd.storage.storageClassName=fast"],
    &["runtimeClasses.tdx.enabled=true,runtimeClasses.snp.enabled=true"],
    &["simulation=true"],
    &["nodeAgent.enabled=false"],
    &["nodeAgent.enabled=false,webhook.certManager.enabled=true"],
    &["coordinator.tee=none"],
    &["coordinator.sgx.quoteProvider=self"],
    &["coordinator.pccsUrl=https://pccs.example:8081"],
    &[
        "coordinator.tee=none,coordinator.resources.limits.cpu=1,coordinator.nodeSelector.pool=a",
        "coordinator.tolerations={}",
    ],
    &[
        "coordinator.nodeSelector.pool=a,coordinator.extraArgs={--cert-hours-extra}",
        "webhook.resources.limits.memory=64Mi,nodeAgent.resources.limits.memory=32Mi",
        "coordinator.persistence.storageClassName=fast",
    ],
    &["nodeAgent.nodeSelector=null,nodeAgent.tolerations={}"],
];

#[test]
fn every_template_renders_for_defaults_and_each_branch() {
    for sets in BRANCHES {
        let o = overrides(sets);
        for (file, _) in chart::TEMPLATES {
            chart::render_template(file, &release("coffer"), &o)
                .unwrap_or_else(|e| panic!("{file} with {sets:?}: {e}"));
        }
        chart::render_notes(&release("coffer"), &o).unwrap();
        // Every document parses into its k8s-openapi type with no unknown field.
        render_with("coffer", sets);
    }
}

#[test]
fn node_agent_daemonset_runs_on_sgx_nodes_with_the_device_plugin_dirs() {
    let r = render_with("coffer", &[]);
    let ds: DaemonSet = r.get("DaemonSet", "coffer-node-agent");
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("coffer-node-agent")
    );
    let selector = pod.node_selector.clone().unwrap();
    assert_eq!(
        selector.get("feature.node.kubernetes.io/cpu-security.sgx.enabled"),
        Some(&"true".to_string())
    );
    assert_eq!(
        selector.get("kubernetes.io/arch"),
        Some(&"amd64".to_string())
    );
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref())
            .map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert_eq!(
        pod.tolerations.clone().unwrap()[0].key.as_deref(),
        Some("sgx.intel.com/epc")
    );
    let c = container(&pod, "node-agent");
    assert_eq!(
        args(c),
        strings(&[
            "k8s",
            "node-agent",
            "--host-dev",
            "/host/dev",
            "--device-plugin",
            "auto"
        ])
    );
    let env = &c.env.as_ref().unwrap()[0];
    assert_eq!(env.name, "NODE_NAME");
    let field = env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
    assert_eq!(field.field_path, "spec.nodeName");
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let res = c.resources.as_ref().unwrap();
    assert_eq!(res.requests.as_ref().unwrap()["memory"], q("32Mi"));
    assert_eq!(res.limits.as_ref().unwrap()["memory"], q("64Mi"));
    let hp = volume(&pod, "device-plugins").host_path.clone().unwrap();
    assert_eq!(hp.path, "/var/lib/kubelet/device-plugins");
    let hp = volume(&pod, "host-dev").host_path.clone().unwrap();
    assert_eq!(hp.path, "/dev");
    let mounts = c.volume_mounts.clone().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m.name == "device-plugins" && m.mount_path == "/var/lib/kubelet/device-plugins"));
    // Nothing over the container's own /dev, where the kubelet adds /dev/termination-log.
    assert!(mounts
        .iter()
        .any(|m| m.name == "host-dev" && m.mount_path == "/host/dev" && m.read_only == Some(true)));
    assert!(
        !mounts
            .iter()
            .any(|m| m.mount_path == "/dev" || m.mount_path.starts_with("/dev/")),
        "{mounts:?}"
    );

    // Without NFD (AKS): only the architecture; beside Intel's plugin: device plugins off.
    let r = render_with(
        "coffer",
        &["nodeAgent.nodeSelector=null,nodeAgent.devicePlugin=off"],
    );
    let ds: DaemonSet = r.get("DaemonSet", "coffer-node-agent");
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.node_selector
            .clone()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [("kubernetes.io/arch".to_string(), "amd64".to_string())]
    );
    assert_eq!(
        args(container(&pod, "node-agent"))
            .last()
            .map(String::as_str),
        Some("off")
    );

    let r = render_with("coffer", &["nodeAgent.enabled=false"]);
    assert!(r.find("DaemonSet", "coffer-node-agent").is_none());
    assert!(r.find("ServiceAccount", "coffer-node-agent").is_none());
    assert!(r.find("ClusterRole", "coffer-node-agent").is_none());
}

#[test]
fn default_chart_deploys_the_coordinator_webhook_and_node_agent() {
    let r = render_with("coffer", &[]);
    let want: BTreeSet<(String, String)> = [
        ("ServiceAccount", "coffer-coordinator"),
        ("ServiceAccount", "coffer-node-agent"),
        ("ClusterRole", "coffer-node-agent"),
        ("ClusterRole", "coffer-webhook-cabundle"),
        ("ClusterRoleBinding", "coffer-node-agent"),
        ("ClusterRoleBinding", "coffer-webhook-cabundle"),
        ("Service", "coffer-coordinator"),
        ("Service", "coffer-webhook"),
        ("Deployment", "coffer-coordinator"),
        ("DaemonSet", "coffer-node-agent"),
        ("PersistentVolumeClaim", "coffer-coordinator-data"),
        ("MutatingWebhookConfiguration", "coffer-webhook"),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(r.kinds(), want);

    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    assert_eq!(d.metadata.namespace.as_deref(), Some("coffer"));
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("coffer-coordinator")
    );
    let c = container(&pod, "coordinator");
    assert_eq!(c.image.as_deref(), Some("ghcr.io/coffer-dev/coffer:0.1.0"));
    assert_eq!(c.command, Some(strings(&["coffer"])));
    let a = args(c);
    assert_eq!(a[0], "coordinator");
    assert_eq!(flag(&a, "--listen"), Some("0.0.0.0:4433"));
    assert_eq!(flag(&a, "--data-dir"), Some("/var/lib/coffer"));
    assert!(!a
        .iter()
        .any(|x| x.starts_with("--store") || x.starts_with("--etcd")));
    assert_eq!(flag(&a, "--cert-hours"), Some("24"));
    assert_eq!(flag(&a, "--webhook-cert-dir"), Some("/run/coffer-webhook"));
    assert_eq!(flag(&a, "--webhook-dns"), Some("coffer-webhook.coffer.svc"));
    assert!(!a.iter().any(|x| x == "--simulation" || x == "--sim-dir"));
    // The Coordinator runs in an SGX enclave: EPC, enclave device, aesmd for quotes.
    let limits = c.resources.as_ref().unwrap().limits.clone().unwrap();
    assert_eq!(limits.get("sgx.intel.com/epc"), Some(&q("64Mi")));
    assert_eq!(limits.get("sgx.intel.com/enclave"), Some(&q("1")));
    assert_eq!(limits.get("sgx.intel.com/provision"), None);
    let env = c.env.clone().unwrap();
    assert!(env
        .iter()
        .any(|e| e.name == "SGX_AESM_ADDR" && e.value.as_deref() == Some("1")));
    let aesmd = volume(&pod, "aesmd").host_path.clone().unwrap();
    assert_eq!(aesmd.path, "/var/run/aesmd");
    assert!(c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .any(|m| m.name == "aesmd" && m.mount_path == "/var/run/aesmd"));
    assert_eq!(
        pod.node_selector
            .clone()
            .unwrap()
            .get("feature.node.kubernetes.io/cpu-security.sgx.enabled"),
        Some(&"true".to_string())
    );
    let tol = &pod.tolerations.clone().unwrap()[0];
    assert_eq!(
        (
            tol.key.as_deref(),
            tol.operator.as_deref(),
            tol.effect.as_deref()
        ),
        (
            Some("sgx.intel.com/epc"),
            Some("Exists"),
            Some("NoSchedule")
        )
    );
    let probe = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .tcp_socket
        .as_ref()
        .unwrap();
    assert_eq!(
        probe.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("api".into())
    );
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 4433);

    // The webhook: a second container sharing the in-memory certificate directory.
    let w = container(&pod, "webhook");
    let wa = args(w);
    assert_eq!(&wa[..2], &strings(&["k8s", "webhook"])[..]);
    assert_eq!(flag(&wa, "--listen"), Some("0.0.0.0:8443"));
    assert_eq!(flag(&wa, "--tls-dir"), Some("/run/coffer-webhook"));
    assert_eq!(flag(&wa, "--ca-bundle-for"), Some("coffer-webhook"));
    assert_eq!(
        flag(&wa, "--coordinator"),
        Some("coffer-coordinator.coffer.svc:4433")
    );
    assert_eq!(flag(&wa, "--default-tee"), Some("sgx"));
    assert_eq!(flag(&wa, "--default-epc"), Some("10Mi"));
    let excluded: Vec<&str> = wa
        .windows(2)
        .filter(|w| w[0] == "--excluded-namespace")
        .map(|w| w[1].as_str())
        .collect();
    assert_eq!(excluded, ["kube-system", "coffer"]);
    assert_eq!(flag(&wa, "--tdx-runtime-class"), Some("kata-qemu-tdx"));
    assert_eq!(flag(&wa, "--snp-runtime-class"), Some("kata-qemu-snp"));
    assert_eq!(flag(&wa, "--evidence"), None);
    assert_eq!(w.ports.as_ref().unwrap()[0].container_port, 8443);
    let tls = volume(&pod, "webhook-tls").empty_dir.clone().unwrap();
    assert_eq!(tls.medium.as_deref(), Some("Memory"));
    for c in [c, w] {
        assert!(c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.name == "webhook-tls" && m.mount_path == "/run/coffer-webhook"));
    }

    let svc: Service = r.get("Service", "coffer-coordinator");
    let port = &svc.spec.unwrap().ports.unwrap()[0];
    assert_eq!(port.port, 4433);
    let svc: Service = r.get("Service", "coffer-webhook");
    let spec = svc.spec.unwrap();
    let port = &spec.ports.unwrap()[0];
    assert_eq!(port.port, 443);
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("webhook".into()))
    );
    assert_eq!(
        spec.selector.unwrap().get("app.kubernetes.io/component"),
        Some(&"coordinator".to_string())
    );

    let m: MutatingWebhookConfiguration = r.get("MutatingWebhookConfiguration", "coffer-webhook");
    assert!(m.metadata.annotations.is_none());
    let webhooks = m.webhooks.unwrap();
    // The second entry sees the unlabelled pods (legacy EPC names only), never blocking them.
    let names = webhooks.get(1).unwrap();
    assert_eq!(names.name, "epc-names.webhook.coffer.dev");
    assert_eq!(names.failure_policy.as_deref(), Some("Ignore"));
    let sel = &names
        .object_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (sel.key.as_str(), sel.operator.as_str()),
        ("coffer.dev/workload", "DoesNotExist")
    );
    let narrowed = render_with(
        "coffer",
        &["webhook.legacyEpcNamesNamespaces={team-a,team-b}"],
    );
    let nm: MutatingWebhookConfiguration =
        narrowed.get("MutatingWebhookConfiguration", "coffer-webhook");
    let exprs = nm.webhooks.unwrap()[1]
        .namespace_selector
        .clone()
        .unwrap()
        .match_expressions
        .unwrap();
    assert_eq!(exprs[1].operator, "In");
    assert_eq!(exprs[1].values, Some(strings(&["team-a", "team-b"])));
    assert_eq!(names.timeout_seconds, Some(2));
    // One install's webhook narrowed to its namespaces, so a second install does not overlap.
    let scoped = render_with("coffer", &["webhook.namespaces={shop}"]);
    let sm: MutatingWebhookConfiguration =
        scoped.get("MutatingWebhookConfiguration", "coffer-webhook");
    let pods = sm.webhooks.unwrap()[0]
        .namespace_selector
        .clone()
        .unwrap()
        .match_expressions
        .unwrap();
    assert_eq!(
        (pods[1].operator.as_str(), pods[1].values.clone()),
        ("In", Some(strings(&["shop"])))
    );
    // The third sees labelled pods in the excluded namespaces, only to warn.
    let excluded = webhooks.get(2).unwrap();
    assert_eq!(excluded.name, "excluded.webhook.coffer.dev");
    assert_eq!(excluded.failure_policy.as_deref(), Some("Ignore"));
    let ns = &excluded
        .namespace_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .as_ref()
        .unwrap()[0];
    assert_eq!(ns.operator, "In");
    assert_eq!(ns.values, Some(strings(&["kube-system", "coffer"])));
    let wh = &webhooks[0];
    assert_eq!(wh.admission_review_versions, strings(&["v1"]));
    assert_eq!(wh.side_effects, "None");
    assert_eq!(wh.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(wh.timeout_seconds, Some(10));
    let svc_ref = wh.client_config.service.as_ref().unwrap();
    assert_eq!(
        (
            svc_ref.name.as_str(),
            svc_ref.namespace.as_str(),
            svc_ref.path.as_deref(),
            svc_ref.port
        ),
        ("coffer-webhook", "coffer", Some("/mutate"), Some(443))
    );
    assert!(wh.client_config.ca_bundle.is_none());
    let rules = wh.rules.as_ref().unwrap();
    assert_eq!(rules[0].operations, Some(strings(&["CREATE"])));
    assert_eq!(rules[0].resources, Some(strings(&["pods"])));
    let sel = &wh
        .object_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (sel.key.as_str(), sel.operator.as_str()),
        ("coffer.dev/workload", "Exists")
    );
    let ns = &wh
        .namespace_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (ns.key.as_str(), ns.operator.as_str(), ns.values.clone()),
        (
            "kubernetes.io/metadata.name",
            "NotIn",
            Some(strings(&["kube-system", "coffer"]))
        )
    );

    // RBAC: the webhook may patch only its own configuration; the node agent its Node.
    let cr: ClusterRole = r.get("ClusterRole", "coffer-webhook-cabundle");
    let rules = cr.rules.unwrap();
    let mw = rule(&rules, "mutatingwebhookconfigurations");
    assert_eq!(
        mw.api_groups,
        Some(strings(&["admissionregistration.k8s.io"]))
    );
    assert_eq!(mw.resource_names, Some(strings(&["coffer-webhook"])));
    assert_eq!(mw.verbs, strings(&["get", "patch"]));
    let crb: ClusterRoleBinding = r.get("ClusterRoleBinding", "coffer-webhook-cabundle");
    let subj = &crb.subjects.unwrap()[0];
    assert_eq!(
        (
            subj.kind.as_str(),
            subj.name.as_str(),
            subj.namespace.as_deref()
        ),
        ("ServiceAccount", "coffer-coordinator", Some("coffer"))
    );
    let cr: ClusterRole = r.get("ClusterRole", "coffer-node-agent");
    let rules = cr.rules.unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rule(&rules, "nodes").verbs, strings(&["get"]));
    assert_eq!(rule(&rules, "nodes/status").verbs, strings(&["patch"]));
    let crb: ClusterRoleBinding = r.get("ClusterRoleBinding", "coffer-node-agent");
    assert_eq!(crb.role_ref.name, "coffer-node-agent");
    assert_eq!(crb.subjects.unwrap()[0].name, "coffer-node-agent");
}

#[test]
fn etcd_store_deploys_ha_coordinators_on_a_3_member_etcd() {
    let r = render_with("coffer", &["store.type=etcd"]);
    let kinds = r.kinds();
    for (k, n) in [
        ("StatefulSet", "coffer-etcd"),
        ("Service", "coffer-etcd"),
        ("Deployment", "coffer-coordinator"),
        ("MutatingWebhookConfiguration", "coffer-webhook"),
    ] {
        assert!(kinds.contains(&(k.to_string(), n.to_string())), "{k} {n}");
    }
    // No volume claim: the state lives in etcd.
    assert!(r
        .find("PersistentVolumeClaim", "coffer-coordinator-data")
        .is_none());
    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    // Rolling updates where an old replica (which holds the state key and can hand it to a
    // joining one) stops only once a new one is ready.
    let strategy = spec.strategy.clone().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let ru = strategy.rolling_update.unwrap();
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(ru.max_surge, Some(IntOrString::Int(1)));
    let pod = spec.template.spec.unwrap();
    let c = container(&pod, "coordinator");
    let a = args(c);
    // The exact command line of `coffer coordinator` on the chart's etcd.
    assert_eq!(
        a,
        strings(&[
            "coordinator",
            "--listen",
            "0.0.0.0:4433",
            "--data-dir",
            "/var/lib/coffer",
            "--store",
            "etcd",
            "--etcd-endpoints",
            "http://coffer-etcd-0.coffer-etcd.coffer.svc:2379,\
             http://coffer-etcd-1.coffer-etcd.coffer.svc:2379,\
             http://coffer-etcd-2.coffer-etcd.coffer.svc:2379",
            "--etcd-prefix",
            "/coffer",
            "--replica-name",
            "$(POD_NAME)",
            "--cert-hours",
            "24",
            "--webhook-cert-dir",
            "/run/coffer-webhook",
            "--webhook-dns",
            "coffer-webhook.coffer.svc",
        ])
    );
    assert_eq!(flag(&a, "--store"), Some("etcd"));
    assert_eq!(
        flag(&a, "--etcd-endpoints"),
        Some(
            "http://coffer-etcd-0.coffer-etcd.coffer.svc:2379,\
             http://coffer-etcd-1.coffer-etcd.coffer.svc:2379,\
             http://coffer-etcd-2.coffer-etcd.coffer.svc:2379"
        )
    );
    assert_eq!(flag(&a, "--etcd-prefix"), Some("/coffer"));
    // The replica name is the pod name, from the downward API (Kubernetes expands
    // $(POD_NAME) in args from the container's env).
    assert_eq!(flag(&a, "--replica-name"), Some("$(POD_NAME)"));
    let env = c.env.clone().unwrap();
    let pod_name = env.iter().find(|e| e.name == "POD_NAME").unwrap();
    let field = pod_name
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(field.field_path, "metadata.name");
    // SGX through aesmd (the default) still gets its socket address beside it.
    assert!(env
        .iter()
        .any(|e| e.name == "SGX_AESM_ADDR" && e.value.as_deref() == Some("1")));
    assert_eq!(flag(&a, "--etcd-ca"), None);
    assert!(!a.iter().any(|x| x == "--simulation" || x == "--sim-dir"));
    // The directory holds only this replica's local files.
    assert!(volume(&pod, "data").empty_dir.is_some());
    // A joining replica listens only once it has the state key: start-up gets 150 s.
    let startup = c.startup_probe.as_ref().unwrap();
    assert_eq!(
        startup.period_seconds.unwrap() * startup.failure_threshold.unwrap(),
        150
    );
    // Replicas prefer different nodes.
    let anti = pod
        .affinity
        .as_ref()
        .unwrap()
        .pod_anti_affinity
        .as_ref()
        .unwrap()
        .preferred_during_scheduling_ignored_during_execution
        .clone()
        .unwrap();
    assert_eq!(
        anti[0].pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    assert_eq!(
        anti[0]
            .pod_affinity_term
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()
            .get("app.kubernetes.io/component"),
        Some(&"coordinator".to_string())
    );
    // Node drains evict one Coordinator and one etcd member at a time.
    for (name, component) in [
        ("coffer-coordinator", "coordinator"),
        ("coffer-etcd", "etcd"),
    ] {
        let pdb: PodDisruptionBudget = r.get("PodDisruptionBudget", name);
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)), "{name}");
        assert_eq!(spec.min_available, None, "{name}");
        let sel = spec.selector.unwrap().match_labels.unwrap();
        assert_eq!(
            sel.get("app.kubernetes.io/component"),
            Some(&component.to_string())
        );
        assert_eq!(
            sel.get("app.kubernetes.io/instance"),
            Some(&"coffer".into())
        );
    }
    // Helm's install order: budgets before the workloads they guard.
    let pos = |k: &str| r.docs.iter().position(|d| d.kind == k).unwrap();
    assert!(pos("PodDisruptionBudget") < pos("Deployment"));
    assert!(pos("PodDisruptionBudget") < pos("StatefulSet"));
    // An explicit replica count is kept.
    let r = render_with("coffer", &["store.type=etcd,coordinator.replicas=3"]);
    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    assert_eq!(d.spec.unwrap().replicas, Some(3));
    // Without SGX through aesmd the pod name is the only env.
    let r = render_with("coffer", &["store.type=etcd,coordinator.tee=none"]);
    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    let pod = d.spec.unwrap().template.spec.unwrap();
    let env = container(&pod, "coordinator").env.clone().unwrap();
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["POD_NAME"]);
}

#[test]
fn simulated_replicas_share_one_platform_from_a_secret() {
    // Without the Secret the replicas could not attest each other: refused, with the fix.
    let e = chart::render(
        &release("coffer"),
        &overrides(&["store.type=etcd,simulation=true"]),
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::ChartRefused { message, .. }
            if message.contains("simulationPlatformSecret")
                && message.contains("coffer evidence sim-platform --dir ./sim")
                && message.contains("`kubectl create secret generic coffer-sim -n coffer \
                    --from-file=sim-platform.json=./sim/sim-platform.json`")),
        "{e}"
    );
    // The command names the release's namespace.
    let e = chart::render(
        &release("prod"),
        &overrides(&["store.type=etcd,simulation=true"]),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("coffer-sim -n prod --from-file"),
        "{e}"
    );
    let r = render_with(
        "coffer",
        &["store.type=etcd,simulation=true,simulationPlatformSecret=coffer-sim"],
    );
    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    let pod = d.spec.unwrap().template.spec.unwrap();
    let c = container(&pod, "coordinator");
    let a = args(c);
    assert!(a.iter().any(|x| x == "--simulation"));
    assert_eq!(flag(&a, "--sim-dir"), Some("/var/lib/coffer-sim"));
    let secret = volume(&pod, "sim-platform").secret.clone().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("coffer-sim"));
    // Only the platform file, so a Secret without that key fails at mount, naming it.
    let items = secret.items.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].key, "sim-platform.json");
    assert_eq!(items[0].path, "sim-platform.json");
    // Each replica's own sealing key stays in its own (not shared) data directory.
    assert_eq!(flag(&a, "--data-dir"), Some("/var/lib/coffer"));
    assert!(volume(&pod, "data").empty_dir.is_some());
    // No SGX in simulation: the pod name is the only env.
    let names: Vec<&str> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["POD_NAME"]);
    assert!(c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .any(|m| m.name == "sim-platform"
            && m.mount_path == "/var/lib/coffer-sim"
            && m.read_only == Some(true)));
    // One Coordinator in simulation keeps its simulated platform beside its state.
    let r = render_with("coffer", &["simulation=true"]);
    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    let pod = d.spec.unwrap().template.spec.unwrap();
    let a = args(container(&pod, "coordinator"));
    assert_eq!(flag(&a, "--sim-dir"), Some("/var/lib/coffer/sim"));
}

#[test]
fn etcd_over_tls_mounts_the_client_secret() {
    let r = render_with(
        "coffer",
        &["store.type=etcd,etcd.deploy=false,etcd.endpoints={https://etcd-a:2379},etcd.clientTLSSecret=etcd-client"],
    );
    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    let pod = d.spec.unwrap().template.spec.unwrap();
    let c = container(&pod, "coordinator");
    let a = args(c);
    assert_eq!(flag(&a, "--etcd-ca"), Some("/etc/coffer/etcd-tls/ca.crt"));
    assert_eq!(
        flag(&a, "--etcd-cert"),
        Some("/etc/coffer/etcd-tls/tls.crt")
    );
    assert_eq!(flag(&a, "--etcd-key"), Some("/etc/coffer/etcd-tls/tls.key"));
    let secret = volume(&pod, "etcd-tls").secret.clone().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("etcd-client"));
    assert!(c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .any(|m| m.name == "etcd-tls" && m.read_only == Some(true)));
}

#[test]
fn etcd_statefulset_builds_initial_cluster_from_the_replica_count() {
    let r = render_with("prod", &["store.type=etcd,etcd.replicas=5"]);
    let ss: StatefulSet = r.get("StatefulSet", "coffer-etcd");
    let spec = ss.spec.unwrap();
    assert_eq!(spec.replicas, Some(5));
    assert_eq!(spec.service_name.as_deref(), Some("coffer-etcd"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    let pvc = &spec.volume_claim_templates.unwrap()[0];
    let req = pvc
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .clone()
        .unwrap();
    assert_eq!(req.get("storage"), Some(&q("1Gi")));
    let pod = spec.template.spec.unwrap();
    let c = container(&pod, "etcd");
    assert_eq!(c.image.as_deref(), Some("registry.k8s.io/etcd:3.5.21-0"));
    let cmd = c.command.clone().unwrap();
    let ic = cmd
        .iter()
        .find_map(|a| a.strip_prefix("--initial-cluster="))
        .unwrap();
    let want: Vec<String> = (0..5)
        .map(|i| format!("coffer-etcd-{i}=http://coffer-etcd-{i}.coffer-etcd.prod.svc:2380"))
        .collect();
    assert_eq!(ic, want.join(","));
    assert!(cmd.contains(&"--name=$(POD_NAME)".to_string()));
    assert!(cmd.contains(&"--initial-cluster-state=new".to_string()));
    assert!(cmd.contains(
        &"--initial-advertise-peer-urls=http://$(POD_NAME).coffer-etcd.prod.svc:2380".to_string()
    ));
    let svc: Service = r.get("Service", "coffer-etcd");
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    let ports: Vec<i32> = spec.ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, vec![2379, 2380]);

    // The Coordinator's endpoints follow the same count and namespace.
    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    let pod = d.spec.unwrap().template.spec.unwrap();
    let a = args(container(&pod, "coordinator"));
    let eps: Vec<String> = (0..5)
        .map(|i| format!("http://coffer-etcd-{i}.coffer-etcd.prod.svc:2379"))
        .collect();
    assert_eq!(flag(&a, "--etcd-endpoints"), Some(eps.join(",").as_str()));
    assert_eq!(flag(&a, "--webhook-dns"), Some("coffer-webhook.prod.svc"));
}

#[test]
fn existing_etcd_cluster_is_used_by_its_endpoints() {
    let r = render_with(
        "coffer",
        &["store.type=etcd,etcd.deploy=false,etcd.endpoints={https://etcd-a:2379,https://etcd-b:2379},etcd.prefix=/c2"],
    );
    assert!(r.find("StatefulSet", "coffer-etcd").is_none());
    assert!(r.find("Service", "coffer-etcd").is_none());
    assert!(r.find("PodDisruptionBudget", "coffer-etcd").is_none());
    assert!(r
        .find("PodDisruptionBudget", "coffer-coordinator")
        .is_some());
    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    let pod = d.spec.unwrap().template.spec.unwrap();
    let a = args(container(&pod, "coordinator"));
    assert_eq!(
        flag(&a, "--etcd-endpoints"),
        Some("https://etcd-a:2379,https://etcd-b:2379")
    );
    assert_eq!(flag(&a, "--etcd-prefix"), Some("/c2"));

    let e = chart::render(
        &release("coffer"),
        &overrides(&["store.type=etcd,etcd.deploy=false"]),
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::ChartRefused { message, .. } if message.contains("needs etcd.endpoints")),
        "{e}"
    );
}

#[test]
fn embedded_store_runs_one_replica_on_a_volume() {
    // The default store.
    assert_eq!(chart::default_values()["store"]["type"], "embedded");
    let r = render_with("coffer", &[]);
    assert_eq!(r.text, render_with("coffer", &["store.type=embedded"]).text);
    assert!(r.find("StatefulSet", "coffer-etcd").is_none());
    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    let pod = spec.template.spec.unwrap();
    let a = args(container(&pod, "coordinator"));
    assert_eq!(flag(&a, "--data-dir"), Some("/var/lib/coffer"));
    assert!(!a
        .iter()
        .any(|x| x.starts_with("--store") || x.starts_with("--etcd")));
    let claim = volume(&pod, "data")
        .persistent_volume_claim
        .clone()
        .unwrap();
    assert_eq!(claim.claim_name, "coffer-coordinator-data");
    let pvc: PersistentVolumeClaim = r.get("PersistentVolumeClaim", "coffer-coordinator-data");
    let spec = pvc.spec.unwrap();
    assert_eq!(spec.access_modes, Some(strings(&["ReadWriteOnce"])));
    assert_eq!(
        spec.resources.unwrap().requests.unwrap().get("storage"),
        Some(&q("1Gi"))
    );
    assert!(spec.storage_class_name.is_none());

    // Two writers of one volume would corrupt it: the chart refuses.
    let e = chart::render(
        &release("coffer"),
        &overrides(&["store.type=embedded,coordinator.replicas=2"]),
    )
    .unwrap_err();
    match e {
        Error::ChartRefused {
            template,
            line,
            message,
        } => {
            assert_eq!(template, "coffer/templates/coordinator.yaml");
            assert_eq!(line, 17);
            assert!(
                message.contains("exactly 1 Coordinator replica"),
                "{message}"
            );
        }
        other => panic!("{other}"),
    }
}

#[test]
fn cert_manager_issues_the_webhook_certificate_and_injects_the_ca() {
    let r = render_with("coffer", &["webhook.certManager.enabled=true"]);
    let issuer = &r.find("Issuer", "coffer-webhook-selfsigned").unwrap().yaml;
    assert_eq!(issuer["metadata"]["namespace"], "coffer");
    assert!(issuer["spec"]["selfSigned"].is_mapping());
    let cert = &r.find("Certificate", "coffer-webhook").unwrap().yaml;
    assert_eq!(cert["metadata"]["namespace"], "coffer");
    assert_eq!(cert["spec"]["secretName"], "coffer-webhook-tls");
    assert_eq!(cert["spec"]["dnsNames"][0], "coffer-webhook.coffer.svc");
    assert_eq!(
        cert["spec"]["issuerRef"]["name"],
        "coffer-webhook-selfsigned"
    );
    assert_eq!(cert["spec"]["issuerRef"]["kind"], "Issuer");

    let m: MutatingWebhookConfiguration = r.get("MutatingWebhookConfiguration", "coffer-webhook");
    assert_eq!(
        m.metadata
            .annotations
            .unwrap()
            .get("cert-manager.io/inject-ca-from"),
        Some(&"coffer/coffer-webhook".to_string())
    );
    // cert-manager patches the caBundle: the webhook needs no permission and no flag for it.
    assert!(r.find("ClusterRole", "coffer-webhook-cabundle").is_none());
    assert!(r
        .find("ClusterRoleBinding", "coffer-webhook-cabundle")
        .is_none());
    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    let pod = d.spec.unwrap().template.spec.unwrap();
    let a = args(container(&pod, "coordinator"));
    assert!(!a.iter().any(|x| x.starts_with("--webhook-")));
    let wa = args(container(&pod, "webhook"));
    assert_eq!(flag(&wa, "--ca-bundle-for"), None);
    assert_eq!(flag(&wa, "--tls-dir"), Some("/run/coffer-webhook"));
    let secret = volume(&pod, "webhook-tls").secret.clone().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("coffer-webhook-tls"));
    // cert-manager kinds come after the known kinds, as Helm orders them.
    let kinds: Vec<&str> = r.docs.iter().map(|d| d.kind.as_str()).collect();
    assert_eq!(&kinds[kinds.len() - 2..], &["Certificate", "Issuer"]);
}

#[test]
fn runtime_classes_for_tdx_and_snp() {
    let r = render_with("coffer", &[]);
    assert!(r.docs.iter().all(|d| d.kind != "RuntimeClass"));
    let r = render_with(
        "coffer",
        &[
            "runtimeClasses.tdx.enabled=true,runtimeClasses.snp.enabled=true",
            "runtimeClasses.snp.overhead.memory=1Gi",
        ],
    );
    for (name, label, memory) in [
        (
            "kata-qemu-tdx",
            "feature.node.kubernetes.io/cpu-security.tdx.enabled",
            "2048Mi",
        ),
        (
            "kata-qemu-snp",
            "feature.node.kubernetes.io/cpu-security.sev.snp.enabled",
            "1Gi",
        ),
    ] {
        let rc: RuntimeClass = r.get("RuntimeClass", name);
        assert_eq!(rc.handler, name);
        let fixed = rc.overhead.unwrap().pod_fixed.unwrap();
        assert_eq!(fixed.get("memory"), Some(&q(memory)));
        assert_eq!(fixed.get("cpu"), Some(&q("1")));
        let sel = rc.scheduling.unwrap().node_selector.unwrap();
        assert_eq!(sel.len(), 1);
        assert_eq!(sel.get(label), Some(&"true".to_string()));
    }
    let r = render_with("coffer", &["runtimeClasses.snp.enabled=true"]);
    let names: Vec<&str> = r
        .docs
        .iter()
        .filter(|d| d.kind == "RuntimeClass")
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(names, vec!["kata-qemu-snp"]);
}

#[test]
fn simulation_is_labelled_and_asks_for_no_sgx() {
    let r = render_with("coffer", &["simulation=true"]);
    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    assert!(d
        .metadata
        .annotations
        .unwrap()
        .get("coffer.dev/simulation")
        .unwrap()
        .starts_with("SIMULATION"));
    let pod = d.spec.unwrap().template.spec.unwrap();
    let c = container(&pod, "coordinator");
    let a = args(c);
    assert!(a.contains(&"--simulation".to_string()));
    assert_eq!(flag(&a, "--sim-dir"), Some("/var/lib/coffer/sim"));
    assert!(c.resources.is_none());
    assert_eq!(
        flag(&args(container(&pod, "webhook")), "--evidence"),
        Some("sim")
    );
    assert!(pod.node_selector.is_none());
    assert!(pod.volumes.unwrap().iter().all(|v| v.name != "aesmd"));
    assert!(r.text.contains("# SIMULATION: simulated evidence"));
    let notes = chart::render_notes(&release("coffer"), &overrides(&["simulation=true"])).unwrap();
    assert!(notes.contains("*** SIMULATION ***"), "{notes}");
    let notes = chart::render_notes(&release("coffer"), &Value::Null).unwrap();
    assert!(!notes.contains("SIMULATION"));

    // Without simulation there is no --simulation anywhere.
    let r = render_with("coffer", &[]);
    assert!(!r.text.contains("--simulation"));
}

#[test]
fn self_quote_provider_gets_provision_and_no_aesmd() {
    let r = render_with(
        "coffer",
        &["coordinator.sgx.quoteProvider=self,coordinator.sgx.epc=128Mi"],
    );
    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    let pod = d.spec.unwrap().template.spec.unwrap();
    let c = container(&pod, "coordinator");
    let limits = c.resources.clone().unwrap().limits.unwrap();
    assert_eq!(limits.get("sgx.intel.com/epc"), Some(&q("128Mi")));
    assert_eq!(limits.get("sgx.intel.com/provision"), Some(&q("1")));
    assert!(c.env.is_none());
    assert!(pod.volumes.unwrap().iter().all(|v| v.name != "aesmd"));

    let e = chart::render(
        &release("coffer"),
        &overrides(&["coordinator.sgx.quoteProvider=pccs"]),
    )
    .unwrap_err();
    assert!(matches!(e, Error::ChartRefused { .. }), "{e}");
}

#[test]
fn values_file_then_set_override_in_helm_order() {
    let mut o = chart::parse_values_file(
        "my-values.yaml",
        "store:\n  type: embedded\nimage:\n  tag: \"9.9\"\ncoordinator:\n  pccsUrl: https://a\n",
    )
    .unwrap();
    chart::merge_values(
        &mut o,
        chart::parse_set("coordinator.pccsUrl=https://b").unwrap(),
    );
    let text = chart::render(&release("coffer"), &o).unwrap();
    let d: Deployment = serde_yaml::from_str(
        text.split("---\n")
            .find(|d| d.contains("kind: Deployment"))
            .unwrap()
            .split_once('\n')
            .unwrap()
            .1,
    )
    .unwrap();
    let pod = d.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let c = container(&pod, "coordinator");
    assert_eq!(c.image.as_deref(), Some("ghcr.io/coffer-dev/coffer:9.9"));
    assert_eq!(flag(&args(c), "--pccs-url"), Some("https://b"));
    assert_eq!(d.spec.unwrap().replicas, Some(1));

    assert!(matches!(
        chart::parse_values_file("v.yaml", "- a\n- b\n"),
        Err(Error::Values(m)) if m.contains("must be a YAML map")
    ));
    assert!(matches!(
        chart::parse_values_file("v.yaml", "a: [\n"),
        Err(Error::Values(m)) if m.starts_with("v.yaml: not YAML")
    ));
}

#[test]
fn output_is_a_helm_style_stream_in_install_order() {
    let r = render_with("coffer", &["webhook.certManager.enabled=true"]);
    let kinds: Vec<&str> = r.docs.iter().map(|d| d.kind.as_str()).collect();
    let pos = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    assert!(pos("ServiceAccount") < pos("ClusterRole"));
    assert!(pos("ClusterRoleBinding") < pos("Service"));
    assert!(pos("Service") < pos("DaemonSet"));
    assert!(pos("DaemonSet") < pos("Deployment"));
    assert!(pos("Deployment") < pos("MutatingWebhookConfiguration"));
    for d in &r.docs {
        assert!(d.source.starts_with("coffer/templates/") && d.source.ends_with(".yaml"));
    }
    // Same input, same bytes.
    let again = chart::render(
        &release("coffer"),
        &overrides(&["webhook.certManager.enabled=true"]),
    )
    .unwrap();
    assert!(again == r.text, "two renders differ");
}

#[test]
fn evaluator_errors_name_file_and_line() {
    let rel = release("coffer");
    let e = chart::render_source(
        "x.yaml",
        "a: 1\nb: 2\nc: {{ upper .Release.Name }}\n",
        &rel,
        &Value::Null,
    )
    .unwrap_err();
    match e {
        Error::Template {
            template,
            line,
            message,
        } => {
            assert_eq!((template.as_str(), line), ("coffer/templates/x.yaml", 3));
            assert!(message.contains("unknown function \"upper\""), "{message}");
        }
        other => panic!("{other}"),
    }
    let e = chart::render_source(
        "y.yaml",
        "a:\n  b: {{ .Values.coordinator.replica }}\n",
        &rel,
        &Value::Null,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "coffer/templates/y.yaml:2: no value at .Values.coordinator.replica \
         (a missing key; check the name or values.yaml)"
    );
    let e = chart::render_source(
        "z.yaml",
        "{{- if .Values.simulation }}\nx: 1\n",
        &rel,
        &Value::Null,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "coffer/templates/z.yaml:1: unclosed if: missing {{ end }}"
    );
    let e = chart::render_source("w.yaml", "x: 1\n{{- end }}\n", &rel, &Value::Null).unwrap_err();
    assert_eq!(
        e.to_string(),
        "coffer/templates/w.yaml:2: end without if or range"
    );
    let e =
        chart::render_source("v.yaml", "{{ include \"x\" . }}", &rel, &Value::Null).unwrap_err();
    assert!(matches!(e, Error::Template { line: 1, .. }), "{e}");
    // A value of the wrong type is a template error too, never a silent rendering.
    let e = chart::render(&rel, &overrides(&["coordinator.replicas=three"])).unwrap_err();
    assert!(
        matches!(&e, Error::Template { template, .. } if template == "coffer/templates/coordinator.yaml"),
        "{e}"
    );
    assert!(matches!(
        Release::new("coffer", "Not_A_Namespace"),
        Err(Error::InvalidRelease { .. })
    ));
}

/// `coordinator.ownerCertificate`: the PEM in a ConfigMap, mounted read-only, passed as
/// `--owner-cert`; absent by default.
#[test]
fn an_owner_certificate_pins_who_sets_the_first_manifest() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBdjCCARugAwIBAgIU\n-----END CERTIFICATE-----\n";
    let default = render_with("coffer", &[]);
    assert!(!default.text.contains("--owner-cert"));
    let values: Value =
        serde_yaml::from_str(&format!("coordinator:\n  ownerCertificate: {pem:?}\n")).unwrap();
    let r = render_values("coffer", &values);
    let cm = r
        .docs
        .iter()
        .find(|d| d.kind == "ConfigMap" && d.name == "coffer-coordinator-owner")
        .expect("the owner ConfigMap");
    assert_eq!(cm.yaml["data"]["owner.pem"].as_str(), Some(pem));
    let dep = r
        .docs
        .iter()
        .find(|d| d.kind == "Deployment" && d.name == "coffer-coordinator")
        .unwrap();
    let dep: Deployment = serde_yaml::from_value(dep.yaml.clone()).unwrap();
    let spec = dep.spec.unwrap().template.spec.unwrap();
    let c = container(&spec, "coordinator");
    assert_eq!(
        flag(&args(c), "--owner-cert"),
        Some("/etc/coffer/owner/owner.pem")
    );
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "owner")
        .unwrap();
    assert_eq!(mount.mount_path, "/etc/coffer/owner");
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(
        volume(&spec, "owner").config_map.as_ref().unwrap().name,
        "coffer-coordinator-owner"
    );
}

#[test]
fn two_releases_get_distinct_cluster_scoped_names() {
    let a = render_with("coffer", &[]);
    let b = render_release(&Release::new("prod", "confidential").unwrap(), &Value::Null);
    let cluster_scoped = |r: &Rendered| -> BTreeSet<(String, String)> {
        r.kinds()
            .into_iter()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "ClusterRole" | "ClusterRoleBinding" | "MutatingWebhookConfiguration"
                )
            })
            .collect()
    };
    let (ca, cb) = (cluster_scoped(&a), cluster_scoped(&b));
    assert_eq!(ca.len(), 5, "{ca:?}");
    assert!(ca.is_disjoint(&cb), "{ca:?} {cb:?}");
    // The webhook patches its own configuration, and RBAC allows exactly that one.
    let m: MutatingWebhookConfiguration = b.get("MutatingWebhookConfiguration", "prod-webhook");
    for wh in m.webhooks.unwrap() {
        assert_eq!(wh.reinvocation_policy.as_deref(), Some("IfNeeded"));
    }
    let role: ClusterRole = b.get("ClusterRole", "prod-webhook-cabundle");
    assert_eq!(
        role.rules.unwrap()[0].resource_names,
        Some(strings(&["prod-webhook"]))
    );
    let binding: ClusterRoleBinding = b.get("ClusterRoleBinding", "prod-node-agent");
    assert_eq!(binding.role_ref.name, "prod-node-agent");
    let d: Deployment = b.get("Deployment", "coffer-coordinator");
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        flag(&args(container(&pod, "webhook")), "--ca-bundle-for"),
        Some("prod-webhook")
    );
}

#[test]
fn coordinator_on_aks_schedules_on_epc_alone_with_cpu_and_memory() {
    let r = render_with(
        "coffer",
        &["coordinator.sgx.nfdNodeSelector=false,coordinator.resources.requests.cpu=500m,coordinator.resources.requests.memory=256Mi,coordinator.resources.limits.memory=1Gi"],
    );
    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert!(pod.node_selector.is_none(), "{:?}", pod.node_selector);
    let res = container(&pod, "coordinator").resources.clone().unwrap();
    let requests = res.requests.unwrap();
    assert_eq!(requests["cpu"], q("500m"));
    assert_eq!(requests["memory"], q("256Mi"));
    let limits = res.limits.unwrap();
    assert_eq!(limits["memory"], q("1Gi"));
    assert_eq!(limits["sgx.intel.com/epc"], q("64Mi"));
    assert_eq!(limits["sgx.intel.com/enclave"], q("1"));
    let aesmd = volume(&pod, "aesmd").host_path.clone().unwrap();
    assert_eq!(aesmd.type_.as_deref(), Some("DirectoryOrCreate"));

    // The default keeps NFD's label.
    let r = render_with("coffer", &[]);
    let d: Deployment = r.get("Deployment", "coffer-coordinator");
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert!(pod
        .node_selector
        .unwrap()
        .contains_key("feature.node.kubernetes.io/cpu-security.sgx.enabled"));
}
