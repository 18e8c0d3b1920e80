//! `coffer k8s` as a user runs it: the rendered chart, the admission webhook as a real HTTPS
//! process whose certificate files appear after it starts (as when the Coordinator writes them),
//! and the EPC reading from recorded CPUID values.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use coffer_coordinator::client::{Client, Method};
use coffer_coordinator::tls::Trust;

const COFFER: &str = env!("CARGO_BIN_EXE_coffer");

fn cpuid_file(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../node-agent/tests/data/cpuid")
        .join(name)
}

fn coffer(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(COFFER)
        .args(args)
        .output()
        .expect("run coffer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kinds(yaml: &str) -> Vec<(String, String)> {
    yaml.split("\n---\n")
        .filter_map(|doc| serde_yaml::from_str::<serde_yaml::Value>(doc).ok())
        .filter(|v| !v.is_null())
        .map(|v| {
            (
                v["kind"].as_str().unwrap_or_default().to_string(),
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn render_applies_values_files_then_set_and_writes_the_output_file() {
    let (ok, out, err) = coffer(&["k8s", "render"]);
    assert!(ok, "{err}");
    let default = kinds(&out);
    assert!(default.contains(&("Deployment".into(), "coffer-coordinator".into())));
    assert!(default.contains(&("DaemonSet".into(), "coffer-node-agent".into())));
    assert!(default.contains(&(
        "MutatingWebhookConfiguration".into(),
        "coffer-webhook".into()
    )));
    assert!(!default.iter().any(|(k, _)| k == "StatefulSet"));
    // --json: the same objects, as one kubectl-compatible List.
    let (ok, out, err) = coffer(&["--json", "k8s", "render"]);
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["kind"], "List");
    let json_kinds: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let s = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_string();
            (s(&v["kind"]), s(&v["metadata"]["name"]))
        })
        .collect();
    assert_eq!(json_kinds, default);

    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "webhook:\n  defaultEpc: 32Mi\n  certManager:\n    enabled: true\n",
    )
    .unwrap();
    let outfile = dir.path().join("coffer.yaml");
    let (ok, stdout, err) = coffer(&[
        "k8s",
        "render",
        "--namespace",
        "confidential",
        "-f",
        values.to_str().unwrap(),
        "--set",
        "webhook.defaultEpc=64Mi",
        "-o",
        outfile.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.is_empty(), "with -o nothing goes to stdout");
    let text = std::fs::read_to_string(&outfile).unwrap();
    let objects = kinds(&text);
    assert!(
        objects.contains(&("Certificate".into(), "coffer-webhook".into())),
        "{objects:?}"
    );
    let deployment = text
        .split("\n---\n")
        .map(|d| serde_yaml::from_str::<serde_yaml::Value>(d).unwrap())
        .find(|v| v["kind"] == "Deployment")
        .unwrap();
    assert_eq!(deployment["metadata"]["namespace"], "confidential");
    let webhook = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "webhook")
        .unwrap();
    let args: Vec<&str> = webhook["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let epc = args.iter().position(|a| *a == "--default-epc").unwrap();
    assert_eq!(args[epc + 1], "64Mi", "--set wins over -f: {args:?}");
    assert!(text.contains("coffer-coordinator.confidential.svc:4433"));

    // HA: Coordinators on the chart's etcd, which the Coordinator command accepts.
    let (ok, out, _) = coffer(&["k8s", "render", "--set", "store.type=etcd"]);
    assert!(ok, "{out}");
    assert!(out.contains("kind: StatefulSet") && out.contains("name: coffer-etcd"));
    assert!(out.contains("- --store\n") && out.contains("- etcd\n"));
    assert!(
        out.contains("- --replica-name\n            - $(POD_NAME)\n"),
        "{out}"
    );
    assert!(out.contains("kind: PodDisruptionBudget"));
    // In simulation the replicas need a shared simulated platform; the error says how.
    let (ok, out, _) = coffer(&[
        "--json",
        "k8s",
        "render",
        "--set",
        "store.type=etcd,simulation=true",
    ]);
    assert!(!ok);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kubectl create secret generic coffer-sim -n coffer"),
        "{v}"
    );

    let (ok, out, _) = coffer(&["--json", "k8s", "render", "--set", "store.type=nosuch"]);
    assert!(!ok, "an unknown store type must be refused");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["error"]["kind"], "render");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("store.type must be etcd or embedded"),
        "{v}"
    );
    let (ok, out, _) = coffer(&["--json", "k8s", "render", "--namespace", "Bad_NS"]);
    assert!(!ok);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["error"]["kind"], "invalid-argument");
}

#[test]
fn epc_reads_recorded_cpuid_and_refuses_a_machine_without_sgx() {
    let file = cpuid_file("icelake-sp-2-socket.txt");
    let (ok, out, err) = coffer(&[
        "--json",
        "k8s",
        "epc",
        "--cpuid-file",
        file.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total_bytes"], 137_438_953_472u64);
    assert_eq!(v["sections"].as_array().unwrap().len(), 2);
    assert_eq!(v["resource"], "sgx.intel.com/epc");

    let file = cpuid_file("no-sgx.txt");
    let (ok, out, _) = coffer(&[
        "--json",
        "k8s",
        "epc",
        "--cpuid-file",
        file.to_str().unwrap(),
    ]);
    assert!(!ok);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["error"]["kind"], "no-sgx");
    assert!(v["error"]["message"].as_str().unwrap().contains("SGX"));
}

struct Webhook(Child);

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn webhook_process_waits_for_its_certificate_then_mutates_a_pod_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(COFFER)
        .args([
            "--json",
            "k8s",
            "webhook",
            "--listen",
            "127.0.0.1:0",
            "--coordinator",
            "coffer-coordinator.coffer.svc:4433",
            "--tls-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start coffer k8s webhook");
    let stdout = child.stdout.take().unwrap();
    let _guard = Webhook(child);

    // The certificate appears only after the process started, as when the Coordinator in the
    // same pod writes it; the server name is the one the Coordinator client checks.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec![coffer_coordinator::pki::SERVER_NAME.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
    std::fs::write(dir.path().join("tls.key"), leaf_key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("tls.crt"), leaf.pem()).unwrap();

    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("first line {line:?}: {e}"));
    let addr = v["listening"].as_str().unwrap().to_string();

    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "apps",
            "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web", "labels": {"coffer.dev/workload": "web"}},
                "spec": {"containers": [{"name": "app", "image": "example/web:1"}]}
            }
        }
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = rt.block_on(async {
        let mut client = Client::new(&addr, &Trust::Service(ca.der().to_vec()), None).unwrap();
        client
            .request(
                Method::POST,
                "/mutate",
                Some(serde_json::to_vec(&review).unwrap()),
            )
            .await
            .unwrap()
    });
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let response = &answer["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    use base64::Engine;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch = String::from_utf8(patch).unwrap();
    for needle in [
        "COFFER_COORDINATOR",
        "coffer-coordinator.coffer.svc:4433",
        "COFFER_INSTANCE_ID",
        "metadata.uid",
        "sgx.intel.com/enclave",
        "10Mi",
    ] {
        assert!(patch.contains(needle), "{needle} missing from {patch}");
    }
}
