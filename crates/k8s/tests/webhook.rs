//! The admission webhook over real HTTPS on 127.0.0.1: AdmissionReviews as the API server sends
//! them, with pods as users write them (tests/data/pods/*.yaml); the returned JSON patch is
//! applied to the pod and the result checked with k8s-openapi types.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use coffer_k8s::webhook::{
    patch_ca_bundle, serve, EvidenceMode, TlsFiles, WebhookConfig, MAX_REVIEW_BYTES,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use k8s_openapi::api::core::v1::{Container, Pod};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

const COORDINATOR: &str = "coffer-coordinator.coffer.svc:4433";

fn pods_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pods")
}

/// A pod fixture as the API server sends it: YAML as written, turned into JSON.
fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(pods_dir().join(name)).expect("fixture");
    serde_yaml::from_str(&text).expect("fixture YAML")
}

/// A certificate authority and a serving certificate for `localhost`, made in the test.
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn pki(cn: &str) -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{cn} CA"));
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("leaf");
    leaf.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let cert = leaf.signed_by(&leaf_key, &ca).expect("sign");
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        cert_pem: cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

struct Webhook {
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), coffer_k8s::Error>>>,
}

impl Webhook {
    async fn start(cfg: WebhookConfig, pki: &Pki) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tls.crt"), &pki.cert_pem).expect("write");
        std::fs::write(dir.path().join("tls.key"), &pki.key_pem).expect("write");
        let mut files = TlsFiles::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));
        files.reload_interval = Duration::from_millis(50);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, files, cfg, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("join").expect("serve ended cleanly");
        }
    }
}

fn tls_client(ca: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("root");
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// One HTTPS request as the API server makes it; returns status and body.
async fn request(
    addr: std::net::SocketAddr,
    ca: &CertificateDer<'static>,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = tls_client(ca)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok((status, body))
}

/// An AdmissionReview as kube-apiserver sends it for a pod CREATE.
fn admission_review(uid: &str, pod: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""),
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:job-controller",
                "uid": "8c4d7d36-2d5e-4d63-9d55-3b9e3c3b1f0a",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

/// What the webhook answered, decoded.
struct Answer {
    allowed: bool,
    message: String,
    patch: Option<json_patch::Patch>,
    warnings: Vec<String>,
}

async fn admit(hook: &Webhook, ca: &CertificateDer<'static>, pod: &Value) -> Answer {
    let uid = "705ab4f5-6393-11e8-b7cc-42010a800002";
    let body = serde_json::to_vec(&admission_review(uid, pod)).expect("json");
    let (status, body) = request(
        hook.addr,
        ca,
        "POST",
        "/mutate",
        Some("application/json"),
        body,
    )
    .await
    .expect("request");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("response JSON");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    let r = &v["response"];
    assert_eq!(r["uid"], uid, "the response must carry the request's uid");
    let patch = r.get("patch").map(|p| {
        assert_eq!(r["patchType"], "JSONPatch");
        let b64 = p.as_str().expect("patch is a base64 string");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        serde_json::from_slice::<json_patch::Patch>(&raw).expect("JSON patch")
    });
    Answer {
        allowed: r["allowed"].as_bool().expect("allowed"),
        message: r["status"]["message"].as_str().unwrap_or("").to_string(),
        patch,
        warnings: r["warnings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Sends `pod`, applies the patch, checks that a second review of the result changes nothing,
/// and returns the mutated pod (raw JSON and typed).
async fn mutate(hook: &Webhook, ca: &CertificateDer<'static>, pod: &Value) -> (Value, Pod) {
    let a = admit(hook, ca, pod).await;
    assert!(a.allowed, "refused: {}", a.message);
    let mut patched = pod.clone();
    if let Some(p) = &a.patch {
        json_patch::patch(&mut patched, p).expect("the patch applies to the pod as sent");
    }
    let again = admit(hook, ca, &patched).await;
    assert!(
        again.allowed,
        "refused on the second pass: {}",
        again.message
    );
    assert!(
        again.patch.is_none(),
        "not idempotent: second patch {:?}",
        again.patch
    );
    let typed: Pod = serde_json::from_value(patched.clone()).expect("a valid Pod");
    (patched, typed)
}

fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    pod.spec
        .as_ref()
        .expect("spec")
        .containers
        .iter()
        .find(|c| c.name == name)
        .expect("container")
}

fn env(c: &Container, name: &str) -> Option<String> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

fn resource(c: &Container, which: &str, key: &str) -> Option<String> {
    let r = c.resources.as_ref()?;
    let m = if which == "limits" {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    }?;
    m.get(key).map(|q| q.0.clone())
}

fn assert_launcher_env(c: &Container, workload: &str, evidence: &str) {
    assert_eq!(env(c, "COFFER_COORDINATOR").as_deref(), Some(COORDINATOR));
    assert_eq!(env(c, "COFFER_WORKLOAD").as_deref(), Some(workload));
    assert_eq!(env(c, "COFFER_EVIDENCE").as_deref(), Some(evidence));
    let id = c
        .env
        .as_ref()
        .and_then(|e| e.iter().find(|e| e.name == "COFFER_INSTANCE_ID"))
        .expect("COFFER_INSTANCE_ID");
    let field = id
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("fieldRef");
    assert_eq!(field.field_path, "metadata.uid");
}

fn sgx_tolerated(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .is_some_and(|t| {
            t.iter().any(|t| {
                t.key.as_deref() == Some("sgx.intel.com/epc")
                    && t.operator.as_deref() == Some("Exists")
                    && t.effect.as_deref() == Some("NoSchedule")
            })
        })
}

fn cfg() -> WebhookConfig {
    WebhookConfig::new(COORDINATOR)
}

#[tokio::test]
async fn fixtures_are_mutated_as_documented_and_idempotently() {
    let pki = pki("coffer-webhook");
    let hook = Webhook::start(cfg(), &pki).await;
    let ca = &pki.ca_der;

    // Job pod with its own EPC limit: kept, request filled in, enclave, toleration, env.
    let (raw, pod) = mutate(&hook, ca, &fixture("job-epc.yaml")).await;
    let c = container(&pod, "hello");
    assert_launcher_env(c, "hello", "auto");
    assert_eq!(env(c, "GREETING").as_deref(), Some("hi"), "user env kept");
    assert_eq!(
        resource(c, "limits", "sgx.intel.com/epc").as_deref(),
        Some("10Mi")
    );
    assert_eq!(
        resource(c, "requests", "sgx.intel.com/epc").as_deref(),
        Some("10Mi")
    );
    assert_eq!(
        resource(c, "limits", "sgx.intel.com/enclave").as_deref(),
        Some("1")
    );
    assert_eq!(
        resource(c, "requests", "sgx.intel.com/enclave").as_deref(),
        Some("1")
    );
    assert_eq!(resource(c, "limits", "sgx.intel.com/provision"), None);
    assert_eq!(resource(c, "requests", "cpu").as_deref(), Some("100m"));
    assert!(sgx_tolerated(&pod));
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.runtime_class_name.clone()),
        None
    );
    assert_eq!(raw["metadata"]["ownerReferences"][0]["kind"], "Job");

    // AKS legacy resource rewritten.
    let (_, pod) = mutate(&hook, ca, &fixture("aks-epc.yaml")).await;
    let c = container(&pod, "oe-helloworld");
    assert_launcher_env(c, "oe-helloworld", "auto");
    assert_eq!(
        resource(c, "limits", "sgx.intel.com/epc").as_deref(),
        Some("8Mi")
    );
    assert_eq!(
        resource(c, "requests", "sgx.intel.com/epc").as_deref(),
        Some("8Mi")
    );
    assert_eq!(
        resource(c, "limits", "kubernetes.azure.com/sgx_epc_mem_in_MiB"),
        None
    );
    assert!(sgx_tolerated(&pod));

    // TDX: runtime class, no SGX resources, no SGX toleration.
    let (_, pod) = mutate(&hook, ca, &fixture("tdx.yaml")).await;
    assert_eq!(
        pod.spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.as_deref()),
        Some("kata-qemu-tdx")
    );
    let c = container(&pod, "api");
    assert_launcher_env(c, "api", "auto");
    assert_eq!(resource(c, "limits", "sgx.intel.com/epc"), None);
    assert_eq!(resource(c, "limits", "sgx.intel.com/enclave"), None);
    assert!(!sgx_tolerated(&pod));

    // aesmd quote provider: host socket in every container, default EPC from the annotation.
    let (_, pod) = mutate(&hook, ca, &fixture("aesmd.yaml")).await;
    let spec = pod.spec.as_ref().expect("spec");
    let vol = spec
        .volumes
        .as_ref()
        .and_then(|v| v.iter().find(|v| v.name == "coffer-aesmd"))
        .expect("aesmd volume");
    let hp = vol.host_path.as_ref().expect("hostPath");
    assert_eq!(hp.path, "/var/run/aesmd");
    assert_eq!(hp.type_.as_deref(), Some("DirectoryOrCreate"));
    for name in ["frontend", "backend"] {
        let c = container(&pod, name);
        assert_launcher_env(c, "shop", "auto");
        assert_eq!(env(c, "SGX_AESM_ADDR").as_deref(), Some("1"));
        assert!(c.volume_mounts.as_ref().is_some_and(|m| m
            .iter()
            .any(|m| m.name == "coffer-aesmd" && m.mount_path == "/var/run/aesmd")));
        assert_eq!(
            resource(c, "limits", "sgx.intel.com/epc").as_deref(),
            Some("64Mi")
        );
        assert_eq!(resource(c, "limits", "sgx.intel.com/provision"), None);
    }
    assert!(container(&pod, "frontend")
        .volume_mounts
        .as_ref()
        .is_some_and(|m| m.iter().any(|m| m.name == "cache")));

    // The pod is its own quote provider: provision only on that container; default EPC; the
    // toleration it already has is not duplicated.
    let (_, pod) = mutate(&hook, ca, &fixture("self-provider.yaml")).await;
    let app = container(&pod, "app");
    assert_eq!(
        resource(app, "limits", "sgx.intel.com/provision").as_deref(),
        Some("1")
    );
    assert_eq!(
        resource(app, "requests", "sgx.intel.com/provision").as_deref(),
        Some("1")
    );
    assert_eq!(
        resource(app, "limits", "sgx.intel.com/epc").as_deref(),
        Some("10Mi")
    );
    let metrics = container(&pod, "metrics");
    assert_eq!(resource(metrics, "limits", "sgx.intel.com/provision"), None);
    assert_eq!(
        resource(metrics, "limits", "sgx.intel.com/enclave").as_deref(),
        Some("1")
    );
    // The provider's aesmd socket directory is shared in memory with the other SGX container.
    assert_eq!(env(app, "SGX_AESM_ADDR"), None);
    assert_eq!(env(metrics, "SGX_AESM_ADDR").as_deref(), Some("1"));
    assert_eq!(
        pod.spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .map(Vec::len),
        Some(1)
    );
    let vols = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap();
    assert_eq!(vols.len(), 1);
    assert_eq!(
        vols[0].empty_dir.as_ref().and_then(|e| e.medium.as_deref()),
        Some("Memory")
    );

    hook.stop().await;
}

/// The pod of the AKS FAQ's Job, exactly as written: not labelled for Coffer, EPC under the
/// legacy name. It gets `sgx.intel.com/epc` with its own 10Mi (not the default), and nothing
/// else of Coffer's; labelled, it keeps its 10Mi too.
#[tokio::test]
async fn legacy_epc_names_are_rewritten_for_every_pod() {
    let pki = pki("coffer-webhook");
    let hook = Webhook::start(cfg(), &pki).await;
    let ca = &pki.ca_der;
    let job = fixture("aks-faq-job.yaml");
    let a = admit(&hook, ca, &job).await;
    assert!(
        a.warnings.iter().any(|w| w.contains("rewritten")),
        "{:?}",
        a.warnings
    );
    let (raw, pod) = mutate(&hook, ca, &job).await;
    let c = container(&pod, "sgxtest");
    for which in ["limits", "requests"] {
        assert_eq!(
            resource(c, which, "sgx.intel.com/epc").as_deref(),
            Some("10Mi")
        );
        assert_eq!(resource(c, which, "sgx.intel.com/sgx_epc_mem_in_MiB"), None);
    }
    assert_eq!(raw["metadata"]["annotations"]["sgx.intel.com/epc"], "10Mi");
    assert_eq!(env(c, "COFFER_WORKLOAD"), None);
    assert_eq!(resource(c, "limits", "sgx.intel.com/enclave"), None);

    // Not Coffer's pod, so never refused: a conflicting EPC, or a Kata policy computed from
    // the spec, leaves it as it is, with a warning.
    let mut conflicting = job.clone();
    conflicting["spec"]["containers"][0]["resources"]["limits"]["sgx.intel.com/epc"] =
        json!("64Mi");
    let mut with_policy = job.clone();
    with_policy["metadata"]["annotations"] =
        json!({"io.katacontainers.config.hypervisor.cc_init_data": "aW5pdGRhdGE="});
    for pod in [conflicting, with_policy] {
        let a = admit(&hook, ca, &pod).await;
        assert!(a.allowed, "{}", a.message);
        assert!(a.patch.is_none(), "{:?}", a.patch);
        assert!(
            a.warnings.iter().any(|w| w.contains("left as they are")),
            "{:?}",
            a.warnings
        );
    }

    let mut labelled = job.clone();
    labelled["metadata"]["labels"]["coffer.dev/workload"] = json!("sgx-test");
    let (_, pod) = mutate(&hook, ca, &labelled).await;
    let c = container(&pod, "sgxtest");
    assert_launcher_env(c, "sgx-test", "auto");
    assert_eq!(
        resource(c, "limits", "sgx.intel.com/epc").as_deref(),
        Some("10Mi")
    );
    assert_eq!(
        resource(c, "limits", "sgx.intel.com/enclave").as_deref(),
        Some("1")
    );
    hook.stop().await;
}

/// Intel's aesmd sidecar: the app and the aesmd container share the socket directory in
/// memory; the app gets SGX_AESM_ADDR, aesmd gets provision; the unlisted log shipper is left
/// as it was.
#[tokio::test]
async fn aesmd_sidecar_and_per_container_selection() {
    let pki = pki("coffer-webhook");
    let hook = Webhook::start(cfg(), &pki).await;
    let (raw, pod) = mutate(&hook, &pki.ca_der, &fixture("aesmd-sidecar.yaml")).await;
    let app = container(&pod, "app");
    assert_launcher_env(app, "shop", "auto");
    assert_eq!(env(app, "SGX_AESM_ADDR").as_deref(), Some("1"));
    assert_eq!(
        resource(app, "limits", "sgx.intel.com/epc").as_deref(),
        Some("64Mi")
    );
    assert_eq!(resource(app, "limits", "sgx.intel.com/provision"), None);
    let aesmd = container(&pod, "aesmd");
    assert_eq!(env(aesmd, "COFFER_WORKLOAD"), None, "aesmd is not listed");
    assert_eq!(env(aesmd, "SGX_AESM_ADDR"), None);
    assert_eq!(
        resource(aesmd, "limits", "sgx.intel.com/provision").as_deref(),
        Some("1")
    );
    assert_eq!(
        resource(aesmd, "limits", "sgx.intel.com/epc").as_deref(),
        Some("1Mi")
    );
    for c in [app, aesmd] {
        assert_eq!(
            resource(c, "limits", "sgx.intel.com/enclave").as_deref(),
            Some("1")
        );
        assert!(c.volume_mounts.as_ref().is_some_and(|m| m
            .iter()
            .any(|m| m.name == "coffer-aesmd" && m.mount_path == "/var/run/aesmd")));
    }
    let original = fixture("aesmd-sidecar.yaml");
    assert_eq!(
        raw["spec"]["containers"][2], original["spec"]["containers"][2],
        "the log shipper was changed"
    );
    let vols = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap();
    let v = vols.iter().find(|v| v.name == "coffer-aesmd").unwrap();
    assert_eq!(
        v.empty_dir.as_ref().and_then(|e| e.medium.as_deref()),
        Some("Memory")
    );
    assert!(v.host_path.is_none());
    assert_eq!(raw["metadata"]["annotations"]["sgx.intel.com/epc"], "65Mi");

    // An opt-out instead of a list; a name that is no container is refused.
    let mut opt_out = original.clone();
    let ann = opt_out["metadata"]["annotations"].as_object_mut().unwrap();
    ann.remove("coffer.dev/containers");
    ann.insert(
        "coffer.dev/exclude-containers".into(),
        json!("log-shipper, aesmd"),
    );
    let (raw2, _) = mutate(&hook, &pki.ca_der, &opt_out).await;
    assert_eq!(raw2["spec"], raw["spec"]);
    // Without the list, the quote provider is not taken for a confidential container.
    let mut unlisted = original.clone();
    unlisted["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("coffer.dev/containers");
    let (raw3, pod3) = mutate(&hook, &pki.ca_der, &unlisted).await;
    assert_eq!(env(container(&pod3, "aesmd"), "COFFER_WORKLOAD"), None);
    assert_eq!(
        raw3["metadata"]["annotations"]["coffer.dev/containers"],
        "app,log-shipper"
    );

    // Intel's webhook ran first and mounted its socket volume in the aesmd container only:
    // the app shares that one, and no volume of Coffer's is added.
    let mut half = original.clone();
    half["spec"]["volumes"] = json!([{"name": "aesmd-socket", "emptyDir": {"medium": "Memory"}}]);
    half["spec"]["containers"][1]["volumeMounts"] =
        json!([{"name": "aesmd-socket", "mountPath": "/var/run/aesmd"}]);
    let (_, pod) = mutate(&hook, &pki.ca_der, &half).await;
    let vols = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap();
    assert_eq!(vols.len(), 1, "{vols:?}");
    assert!(container(&pod, "app")
        .volume_mounts
        .as_ref()
        .is_some_and(|m| m.iter().any(|m| m.name == "aesmd-socket")));

    // Intel's webhook ran first and wired its own socket volume: kept, none of ours added.
    let mut intel = original.clone();
    intel["spec"]["volumes"] = json!([{"name": "aesmd-socket", "emptyDir": {"medium": "Memory"}}]);
    for i in [0, 1] {
        intel["spec"]["containers"][i]["volumeMounts"] =
            json!([{"name": "aesmd-socket", "mountPath": "/var/run/aesmd"}]);
    }
    intel["spec"]["containers"][0]["env"] = json!([{"name": "SGX_AESM_ADDR", "value": "1"}]);
    let (_, pod) = mutate(&hook, &pki.ca_der, &intel).await;
    let vols = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap();
    assert_eq!(vols.len(), 1, "{vols:?}");
    assert_eq!(vols[0].name, "aesmd-socket");
    let app = container(&pod, "app");
    assert_eq!(env(app, "SGX_AESM_ADDR").as_deref(), Some("1"));
    assert_eq!(app.volume_mounts.as_ref().map(Vec::len), Some(1));

    let mut typo = original.clone();
    typo["metadata"]["annotations"]["coffer.dev/containers"] = json!("ap");
    let a = admit(&hook, &pki.ca_der, &typo).await;
    assert!(!a.allowed);
    assert!(
        a.message
            .contains("coffer.dev/containers names \"ap\", which is not a container"),
        "{}",
        a.message
    );
    hook.stop().await;
}

/// A Kata agent policy computed before injection is refused with what to do; one computed
/// from the injected pod (which the webhook leaves unchanged) is admitted.
#[tokio::test]
async fn kata_agent_policy_must_be_computed_after_injection() {
    let pki = pki("coffer-webhook");
    let hook = Webhook::start(cfg(), &pki).await;
    let mut tdx = fixture("tdx.yaml");
    let policy = "cGFja2FnZSBhZ2VudF9wb2xpY3k=";
    tdx["metadata"]["annotations"]["io.katacontainers.config.agent.policy"] = json!(policy);
    let a = admit(&hook, &pki.ca_der, &tdx).await;
    assert!(!a.allowed);
    assert!(
        a.message.contains("coffer k8s inject -f pod.yaml"),
        "{}",
        a.message
    );
    // Injected first, then the policy added: admitted with no change.
    let (mut injected, _) = mutate(&hook, &pki.ca_der, &fixture("tdx.yaml")).await;
    injected["metadata"]["annotations"]["io.katacontainers.config.agent.policy"] = json!(policy);
    let a = admit(&hook, &pki.ca_der, &injected).await;
    assert!(a.allowed, "{}", a.message);
    assert!(a.patch.is_none(), "{:?}", a.patch);
    hook.stop().await;
}

/// A labelled pod in an excluded namespace is admitted unchanged, with a warning that it runs
/// without Coffer; the node's aesmd hostPath comes with a Pod Security warning.
#[tokio::test]
async fn excluded_namespace_and_host_path_warnings() {
    let pki = pki("coffer-webhook");
    let mut c = cfg();
    c.excluded_namespaces = vec!["kube-system".into(), "default".into()];
    let hook = Webhook::start(c, &pki).await;
    let a = admit(&hook, &pki.ca_der, &fixture("job-epc.yaml")).await;
    assert!(a.allowed);
    assert!(a.patch.is_none(), "{:?}", a.patch);
    assert!(
        a.warnings.iter().any(|w| w.contains("runs WITHOUT Coffer")),
        "{:?}",
        a.warnings
    );
    hook.stop().await;

    let hook = Webhook::start(cfg(), &pki).await;
    let a = admit(&hook, &pki.ca_der, &fixture("aesmd.yaml")).await;
    assert!(a.allowed);
    assert!(
        a.warnings
            .iter()
            .any(|w| w.contains("hostPath /var/run/aesmd") && w.contains("Pod Security")),
        "{:?}",
        a.warnings
    );
    // The sidecar layout needs no hostPath and gets no such warning.
    let a = admit(&hook, &pki.ca_der, &fixture("aesmd-sidecar.yaml")).await;
    assert!(!a.warnings.iter().any(|w| w.contains("Pod Security")));
    hook.stop().await;
}

/// A cluster whose SNP class is AKS's `kata-cc-isolation`: a pod naming it is kept, one naming
/// none gets the first configured class, and an SGX pod naming it is refused.
#[tokio::test]
async fn configured_runtime_classes_per_tee() {
    let pki = pki("coffer-webhook");
    let mut c = cfg();
    c.snp_runtime_classes = vec!["kata-cc-isolation".into(), "kata-qemu-snp".into()];
    let hook = Webhook::start(c, &pki).await;
    let mut snp = fixture("tdx.yaml");
    snp["metadata"]["annotations"]["coffer.dev/tee"] = json!("snp");
    let (_, pod) = mutate(&hook, &pki.ca_der, &snp).await;
    assert_eq!(
        pod.spec.as_ref().unwrap().runtime_class_name.as_deref(),
        Some("kata-cc-isolation")
    );
    snp["spec"]["runtimeClassName"] = json!("kata-qemu-snp");
    let (_, pod) = mutate(&hook, &pki.ca_der, &snp).await;
    assert_eq!(
        pod.spec.as_ref().unwrap().runtime_class_name.as_deref(),
        Some("kata-qemu-snp")
    );
    let mut sgx = fixture("job-epc.yaml");
    sgx["spec"]["runtimeClassName"] = json!("kata-cc-isolation");
    let a = admit(&hook, &pki.ca_der, &sgx).await;
    assert!(!a.allowed);
    assert!(a.message.contains("confidential VM"), "{}", a.message);
    hook.stop().await;
}

/// Re-invocation (reinvocationPolicy IfNeeded): after Coffer's patch another webhook adds a
/// service-mesh proxy and the API server sends the pod again. The proxy is left alone: the
/// first pass wrote the confidential containers into coffer.dev/containers.
#[tokio::test]
async fn reinvocation_after_another_webhook_leaves_its_container_alone() {
    let pki = pki("coffer-webhook");
    let hook = Webhook::start(cfg(), &pki).await;
    let (mut raw, _) = mutate(&hook, &pki.ca_der, &fixture("job-epc.yaml")).await;
    assert_eq!(
        raw["metadata"]["annotations"]["coffer.dev/containers"],
        "hello"
    );
    let proxy = json!({"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0",
        "args": ["proxy", "sidecar"]});
    raw["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(proxy.clone());
    let a = admit(&hook, &pki.ca_der, &raw).await;
    assert!(a.allowed, "{}", a.message);
    assert!(a.patch.is_none(), "the proxy was changed: {:?}", a.patch);
    hook.stop().await;
}

#[tokio::test]
async fn pod_without_label_gets_no_patch() {
    let pki = pki("coffer-webhook");
    let hook = Webhook::start(cfg(), &pki).await;
    let a = admit(&hook, &pki.ca_der, &fixture("plain.yaml")).await;
    assert!(a.allowed);
    assert!(a.patch.is_none(), "{:?}", a.patch);
    assert!(a.warnings.is_empty());
    hook.stop().await;
}

#[tokio::test]
async fn refusals_name_the_problem() {
    let pki = pki("coffer-webhook");
    let hook = Webhook::start(cfg(), &pki).await;
    let cases = [
        ("refuse-bad-quantity.yaml", "annotation coffer.dev/epc: \"10MB\" not a Kubernetes quantity (unknown suffix)"),
        ("refuse-conflicting-epc.yaml", "container \"web\": conflicting EPC: sgx.intel.com/epc \"10Mi\" but kubernetes.azure.com/sgx_epc_mem_in_MiB \"8\" (8Mi)"),
        ("refuse-unknown-tee.yaml", "annotation coffer.dev/tee: unknown TEE \"sev\": expected one of sgx, tdx, snp"),
        ("refuse-sgx-on-tdx.yaml", "container \"web\" asks for SGX resource sgx.intel.com/epc, but the pod asks for TEE tdx"),
        ("refuse-bad-quote-provider.yaml", "annotation sgx.intel.com/quote-provider \"qe\" is neither \"aesmd\" nor the name of a container of this pod"),
        ("refuse-runtime-class.yaml", "the pod names runtimeClassName \"kata-qemu-snp\", but TEE tdx needs one of [\"kata-qemu-tdx\"]"),
    ];
    for (file, want) in cases {
        let a = admit(&hook, &pki.ca_der, &fixture(file)).await;
        assert!(!a.allowed, "{file} was allowed");
        assert!(a.patch.is_none(), "{file}: a refusal carries no patch");
        assert!(
            a.message.starts_with("Coffer: ") && a.message.contains(want),
            "{file}: message {:?} does not contain {want:?}",
            a.message
        );
    }
    // More refusals made by editing a good fixture.
    let mut zero = fixture("job-epc.yaml");
    zero["spec"]["containers"][0]["resources"]["limits"]["sgx.intel.com/epc"] = json!("0");
    let a = admit(&hook, &pki.ca_der, &zero).await;
    assert!(
        !a.allowed && a.message.contains("limit sgx.intel.com/epc: \"0\" is zero"),
        "{}",
        a.message
    );
    let mut huge = fixture("job-epc.yaml");
    huge["metadata"]["annotations"] = json!({"coffer.dev/epc": "2Ti"});
    huge["spec"]["containers"][0]["resources"]["limits"] = json!({});
    let a = admit(&hook, &pki.ca_der, &huge).await;
    assert!(
        !a.allowed && a.message.contains("\"2Ti\" is larger than 1Ti"),
        "{}",
        a.message
    );
    let mut neg = huge.clone();
    neg["metadata"]["annotations"] = json!({"coffer.dev/epc": "-10Mi"});
    let a = admit(&hook, &pki.ca_der, &neg).await;
    assert!(
        !a.allowed && a.message.contains("\"-10Mi\" is negative"),
        "{}",
        a.message
    );
    let mut name = fixture("job-epc.yaml");
    name["metadata"]["labels"]["coffer.dev/workload"] = json!("hello world");
    let a = admit(&hook, &pki.ca_der, &name).await;
    assert!(
        !a.allowed && a.message.contains("is not a workload name"),
        "{}",
        a.message
    );
    let mut env = fixture("job-epc.yaml");
    env["spec"]["containers"][0]["env"] =
        json!([{"name": "COFFER_COORDINATOR", "value": "evil:1"}]);
    let a = admit(&hook, &pki.ca_der, &env).await;
    assert!(
        !a.allowed
            && a.message
                .contains("container \"hello\" sets env COFFER_COORDINATOR"),
        "{}",
        a.message
    );
    hook.stop().await;
}

#[tokio::test]
async fn simulation_is_visible_to_the_user() {
    let pki = pki("coffer-webhook");
    let mut c = cfg();
    c.evidence = EvidenceMode::Sim;
    let hook = Webhook::start(c, &pki).await;
    let a = admit(&hook, &pki.ca_der, &fixture("job-epc.yaml")).await;
    assert!(a.allowed);
    assert!(
        a.warnings.iter().any(|w| w.starts_with("SIMULATION")),
        "{:?}",
        a.warnings
    );
    let (_, pod) = mutate(&hook, &pki.ca_der, &fixture("job-epc.yaml")).await;
    assert_launcher_env(container(&pod, "hello"), "hello", "sim");
    let ann = pod.metadata.annotations.unwrap_or_default();
    assert!(ann
        .get("coffer.dev/simulation")
        .is_some_and(|v| v.starts_with("SIMULATION")));
    hook.stop().await;
}

#[tokio::test]
async fn malformed_oversized_and_wrong_type_bodies() {
    let pki = pki("coffer-webhook");
    let hook = Webhook::start(cfg(), &pki).await;
    let ca = &pki.ca_der;
    let (status, body) = request(
        hook.addr,
        ca,
        "POST",
        "/mutate",
        Some("application/json"),
        b"{not json".to_vec(),
    )
    .await
    .expect("request");
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).expect("JSON error");
    assert_eq!(v["error"]["kind"], "malformed");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("malformed AdmissionReview")));

    let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    let (status, body) = request(
        hook.addr,
        ca,
        "POST",
        "/mutate",
        Some("application/json"),
        no_request.to_string().into_bytes(),
    )
    .await
    .expect("request");
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("no request"));

    let big = vec![b' '; MAX_REVIEW_BYTES + 1];
    let (status, body) = request(
        hook.addr,
        ca,
        "POST",
        "/mutate",
        Some("application/json"),
        big,
    )
    .await
    .expect("request");
    assert_eq!(status, 413);
    let v: Value = serde_json::from_slice(&body).expect("JSON error");
    assert_eq!(v["error"]["kind"], "too_large");

    let (status, _) = request(
        hook.addr,
        ca,
        "POST",
        "/mutate",
        Some("text/plain"),
        b"{}".to_vec(),
    )
    .await
    .expect("request");
    assert_eq!(status, 415);

    let (status, body) = request(hook.addr, ca, "GET", "/healthz", None, Vec::new())
        .await
        .expect("request");
    assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));
    hook.stop().await;
}

#[tokio::test]
async fn rotated_certificate_is_served_without_restart() {
    let first = pki("first");
    let hook = Webhook::start(cfg(), &first).await;
    let (status, _) = request(
        hook.addr,
        &first.ca_der,
        "GET",
        "/healthz",
        None,
        Vec::new(),
    )
    .await
    .expect("first certificate");
    assert_eq!(status, 200);

    let second = pki("second");
    // A rotation caught half-way (new key, old certificate) must not break the old one.
    std::fs::write(hook.dir.path().join("tls.key"), &second.key_pem).expect("write");
    let (status, _) = request(
        hook.addr,
        &first.ca_der,
        "GET",
        "/healthz",
        None,
        Vec::new(),
    )
    .await
    .expect("old certificate still served during a half rotation");
    assert_eq!(status, 200);
    std::fs::write(hook.dir.path().join("tls.crt"), &second.cert_pem).expect("write");

    // Wait (bounded) until the reload task has picked up the new pair.
    let mut served_second = false;
    for _ in 0..200 {
        if request(
            hook.addr,
            &second.ca_der,
            "GET",
            "/healthz",
            None,
            Vec::new(),
        )
        .await
        .is_ok_and(|(s, _)| s == 200)
        {
            served_second = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(served_second, "the rotated certificate was never served");
    let old = request(
        hook.addr,
        &first.ca_der,
        "GET",
        "/healthz",
        None,
        Vec::new(),
    )
    .await;
    assert!(
        old.as_ref().is_err_and(|e| e.starts_with("TLS:")),
        "the old CA must no longer be accepted: {old:?}"
    );
    hook.stop().await;
}

#[tokio::test]
async fn unusable_certificate_stops_start_up() {
    let a = pki("a");
    let b = pki("b");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tls.crt"), &a.cert_pem).expect("write");
    std::fs::write(dir.path().join("tls.key"), &b.key_pem).expect("write");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let files = TlsFiles::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let err = serve(listener, files, cfg(), std::future::pending())
        .await
        .expect_err("mismatched key refused");
    assert!(matches!(err, coffer_k8s::Error::Tls { .. }), "{err}");
    assert!(err.to_string().contains("certificate and key"), "{err}");
}

#[tokio::test]
async fn ca_bundle_is_patched_into_every_webhook() {
    use futures::future::join;
    use http::{Method, Request, Response};
    use kube::client::Body;

    let pki = pki("coffer-webhook");
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let current = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "coffer-webhook", "resourceVersion": "41"},
        "webhooks": [
            {"name": "pods.coffer.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "clientConfig": {"service": {"name": "coffer-webhook", "namespace": "coffer", "path": "/mutate"}}},
            {"name": "pods-ns.coffer.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "clientConfig": {"service": {"name": "coffer-webhook", "namespace": "coffer", "path": "/mutate"},
                              "caBundle": base64::engine::general_purpose::STANDARD.encode(b"old")}}
        ]
    });
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(pki.ca_pem.as_bytes());
    let api_server = async {
        let (req, send) = handle.next_request().await.expect("GET");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().path(),
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/coffer-webhook"
        );
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&current).expect("json")))
                .expect("response"),
        );
        let (req, send) = handle.next_request().await.expect("PATCH");
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(
            req.uri().path(),
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/coffer-webhook"
        );
        assert_eq!(
            req.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json-patch+json")
        );
        let body = req.into_body().collect_bytes().await.expect("body");
        let body: Value = serde_json::from_slice(&body).expect("patch JSON");
        assert_eq!(
            body,
            json!([
                {"op": "test", "path": "/webhooks/0/name", "value": "pods.coffer.dev"},
                {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": ca_b64},
                {"op": "test", "path": "/webhooks/1/name", "value": "pods-ns.coffer.dev"},
                {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": ca_b64},
            ])
        );
        let mut patched = current.clone();
        let p: json_patch::Patch = serde_json::from_value(body).expect("patch");
        json_patch::patch(&mut patched, &p).expect("applies");
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&patched).expect("json")))
                .expect("response"),
        );
    };
    let (changed, ()) = join(
        patch_ca_bundle(client, "coffer-webhook", pki.ca_pem.as_bytes()),
        api_server,
    )
    .await;
    assert_eq!(changed.expect("patched"), 2);
}

#[tokio::test]
async fn ca_bundle_refuses_non_pem() {
    let (service, _handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let client = kube::Client::new(service, "default");
    let err = patch_ca_bundle(client, "coffer-webhook", b"not a certificate")
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("no PEM CERTIFICATE"), "{err}");
}
