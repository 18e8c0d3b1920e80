//! `coffer k8s` as a user runs it: the rendered chart, the admission webhook as a real HTTPS
//! process whose certificate files appear after it starts (as when the Coordinator writes them),
//! the EPC reading from recorded CPUID values, and the node agent's DaemonSet container under runc.

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

/// A CA and a webhook certificate for the name the Coordinator client checks, written as
/// `tls.crt` and `tls.key` in `dir`; returns the CA.
fn write_webhook_certificate(dir: &Path) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
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
    std::fs::write(dir.join("tls.key"), leaf_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("tls.crt"), leaf.pem()).unwrap();
    ca
}

const REVIEW_UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

/// Sends the webhook at `addr` (its certificate under `ca_der`) a pod CREATE the way the API
/// server does, with `metadata` for the pod (one container); checks it is allowed and returns
/// the answer and the decoded JSON patch.
fn admit_over_https(
    addr: &str,
    ca_der: &[u8],
    user: &str,
    metadata: serde_json::Value,
) -> (serde_json::Value, String) {
    use base64::Engine;
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": REVIEW_UID,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": user},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": metadata,
                "spec": {"containers": [{"name": "app", "image": "example/web:1"}]}
            }
        }
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = rt.block_on(async {
        let mut client = Client::new(addr, &Trust::Service(ca_der.to_vec()), None).unwrap();
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
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().unwrap())
        .unwrap();
    (answer, String::from_utf8(patch).unwrap())
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
    let ca = write_webhook_certificate(dir.path());

    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("first line {line:?}: {e}"));
    let addr = v["listening"].as_str().unwrap().to_string();

    let (answer, patch) = admit_over_https(
        &addr,
        ca.der(),
        "admin",
        serde_json::json!({"name": "web", "labels": {"coffer.dev/workload": "web"}}),
    );
    let response = &answer["response"];
    assert_eq!(response["uid"], REVIEW_UID);
    assert_eq!(response["patchType"], "JSONPatch");
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

/// What runs a rendered pod's container under runc the way the kubelet runs it: the image is
/// the `coffer` binary and the libraries `ldd` names, bind-mounted read-only; the container's
/// command, args, user, capabilities and read-only root come from its spec; its volumes are
/// bind mounts of the test's directories; the kubelet's own mounts (`/dev/termination-log`,
/// the service account, `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`) come after them.
struct KubeletSim {
    runc: &'static str,
    dir: std::path::PathBuf,
}

impl KubeletSim {
    /// `None` (and a note why) without runc or root.
    fn new(dir: &Path) -> Option<Self> {
        let runc = ["/usr/sbin/runc", "/usr/bin/runc"]
            .into_iter()
            .find(|p| Path::new(p).is_file());
        if runc.is_none() || !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs runc and root (CI has both)");
            return None;
        }
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        Some(KubeletSim {
            runc: runc?,
            dir: dir.to_path_buf(),
        })
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new(self.runc);
        cmd.arg("--root").arg(self.dir.join("runc-state"));
        cmd
    }

    /// The runtime's mounts and the image (coffer and its libraries).
    fn base_mounts(&self) -> Vec<serde_json::Value> {
        let mut mounts = vec![
            serde_json::json!({"destination": "/proc", "type": "proc", "source": "proc"}),
            serde_json::json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            serde_json::json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
            serde_json::json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
            serde_json::json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"]}),
            bind(Path::new(COFFER), "/usr/local/bin/coffer", true),
        ];
        let ldd = Command::new("ldd").arg(COFFER).output().expect("ldd");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            if let Some(lib) = line.split_whitespace().find(|w| w.starts_with('/')) {
                mounts.push(bind(Path::new(lib), lib, true));
            }
        }
        mounts
    }

    /// The container's volume mounts, each volume's source given by `source` (a directory of
    /// the test standing in for a hostPath, Secret or emptyDir).
    fn volume_mounts(
        pod: &serde_json::Value,
        container: &serde_json::Value,
        source: impl Fn(&serde_json::Value) -> std::path::PathBuf,
    ) -> Vec<serde_json::Value> {
        let volumes = pod["volumes"].as_array().expect("volumes");
        container["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .map(|m| {
                let v = volumes
                    .iter()
                    .find(|v| v["name"] == m["name"])
                    .expect("the mount's volume");
                bind(
                    &source(v),
                    m["mountPath"].as_str().unwrap(),
                    m["readOnly"] == true,
                )
            })
            .collect()
    }

    /// What the kubelet adds to every container, after its volumes.
    fn kubelet_mounts(&self) -> Vec<serde_json::Value> {
        let kubelet = self.dir.join("kubelet");
        let sa = kubelet.join("serviceaccount");
        std::fs::create_dir_all(&sa).unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["kubernetes.default.svc".into()]).unwrap();
        std::fs::write(sa.join("ca.crt"), ca.cert.pem()).unwrap();
        std::fs::write(sa.join("token"), "test-token").unwrap();
        std::fs::write(sa.join("namespace"), "coffer").unwrap();
        for (f, text) in [
            ("hosts", "127.0.0.1 localhost\n"),
            ("hostname", "coffer-pod-x\n"),
            ("resolv.conf", "nameserver 127.0.0.1\n"),
            ("termination-log", ""),
        ] {
            std::fs::write(kubelet.join(f), text).unwrap();
        }
        vec![
            bind(&sa, "/var/run/secrets/kubernetes.io/serviceaccount", true),
            bind(&kubelet.join("hosts"), "/etc/hosts", false),
            bind(&kubelet.join("hostname"), "/etc/hostname", false),
            bind(&kubelet.join("resolv.conf"), "/etc/resolv.conf", false),
            bind(
                &kubelet.join("termination-log"),
                "/dev/termination-log",
                false,
            ),
        ]
    }

    /// Writes the bundle's config.json for `container` with `mounts`, `extra_args` after the
    /// spec's, and `env` (what the kubelet resolves from the downward API and Services).
    /// `own_network`: a network namespace of its own (else the host's, to reach its port).
    fn write_config(
        &self,
        container: &serde_json::Value,
        mounts: Vec<serde_json::Value>,
        extra_args: &[&str],
        env: &[&str],
        own_network: bool,
    ) {
        let sc = &container["securityContext"];
        let mut args: Vec<String> = container["command"]
            .as_array()
            .into_iter()
            .chain(container["args"].as_array())
            .flatten()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        args.extend(extra_args.iter().map(|a| a.to_string()));
        // containerd's default capabilities, unless the spec drops them all.
        let caps: Vec<&str> = if sc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|c| c == "ALL"))
        {
            vec![]
        } else {
            vec![
                "CAP_CHOWN",
                "CAP_DAC_OVERRIDE",
                "CAP_FSETID",
                "CAP_FOWNER",
                "CAP_MKNOD",
                "CAP_NET_RAW",
                "CAP_SETGID",
                "CAP_SETUID",
                "CAP_SETFCAP",
                "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT",
                "CAP_KILL",
                "CAP_AUDIT_WRITE",
            ]
        };
        let mut env: Vec<String> = env.iter().map(|e| e.to_string()).collect();
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        let mut namespaces = vec![
            serde_json::json!({"type": "pid"}),
            serde_json::json!({"type": "ipc"}),
            serde_json::json!({"type": "uts"}),
            serde_json::json!({"type": "mount"}),
        ];
        if own_network {
            namespaces.push(serde_json::json!({"type": "network"}));
        }
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": sc["runAsUser"].as_u64().unwrap_or(0), "gid": 0},
                "args": args,
                "env": env,
                "cwd": "/",
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "noNewPrivileges": sc["allowPrivilegeEscalation"] == false,
            },
            "root": {"path": "rootfs", "readonly": sc["readOnlyRootFilesystem"] == true},
            "hostname": "coffer-pod-x",
            "mounts": mounts,
            "linux": {
                "namespaces": namespaces,
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
                "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
            }
        });
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
    }

    /// `runc run` of the bundle as container `id`, its standard error into `log`.
    fn start(&self, id: &str, log: &Path) -> std::process::Child {
        self.runc()
            .args(["run", "--bundle"])
            .arg(&self.dir)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.dir.join(format!("{id}.out"))).unwrap())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("runc run")
    }

    /// SIGTERM, as the kubelet stops a container; returns its exit status.
    fn stop(&self, id: &str, child: &mut std::process::Child) -> std::process::ExitStatus {
        let kill = self.runc().args(["kill", id, "TERM"]).output().unwrap();
        assert!(
            kill.status.success(),
            "{}",
            String::from_utf8_lossy(&kill.stderr)
        );
        let status = child.wait().unwrap();
        let _ = self.runc().args(["delete", "--force", id]).output();
        status
    }
}

fn bind(src: &Path, dst: &str, ro: bool) -> serde_json::Value {
    let mut options = vec!["rbind", "rprivate"];
    if ro {
        options.push("ro");
    }
    serde_json::json!({"destination": dst, "type": "bind", "source": src, "options": options})
}

/// The rendered objects of `coffer k8s render` with `sets`, as JSON.
fn rendered(sets: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["--json", "k8s", "render"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, out, err) = coffer(&args);
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("kubectl List");
    list["items"].as_array().expect("items").clone()
}

fn find<'a>(items: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    items
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Waits (polling, bounded) until `ready`, failing with the log if the container ends first.
fn wait_until(child: &mut std::process::Child, log: &Path, what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the container ended ({status}) before {what}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {what}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The rendered node-agent DaemonSet's container under runc with the kubelet's mounts. One
/// argument is added to what the chart renders, `--cpuid-file` (this machine has no SGX). The
/// container must start, publish nothing (no API server answers), serve both device plugins
/// in the host's plugin directory, see the host's device nodes, and stop cleanly on SIGTERM,
/// removing its sockets. The chart's earlier layout (the host's `/dev` read-only over `/dev`)
/// is run too and must fail as it does under a kubelet.
#[test]
fn rendered_node_agent_daemonset_runs_under_runc_with_the_kubelets_mounts() {
    let t = tempfile::tempdir().expect("tempdir");
    let Some(sim) = KubeletSim::new(t.path()) else {
        return;
    };
    let items = rendered(&[]);
    let ds = find(&items, "DaemonSet", "coffer-node-agent");
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );

    let host = t.path().join("host");
    let host_dev = host.join("dev");
    let host_plugins = host.join("device-plugins");
    std::fs::create_dir_all(&host_dev).unwrap();
    std::fs::create_dir_all(&host_plugins).unwrap();
    for d in ["sgx_enclave", "sgx_provision"] {
        std::fs::write(host_dev.join(d), b"").unwrap();
    }
    let mut base = sim.base_mounts();
    base.push(bind(
        &cpuid_file("coffee-lake-128m.txt"),
        "/cpuid.txt",
        true,
    ));
    let volumes = KubeletSim::volume_mounts(pod, c, |v| {
        match v["hostPath"]["path"].as_str().expect("a hostPath") {
            "/dev" => host_dev.clone(),
            "/var/lib/kubelet/device-plugins" => host_plugins.clone(),
            other => panic!("the DaemonSet mounts host path {other}, which this test does not map"),
        }
    });
    let kubelet = sim.kubelet_mounts();
    let env = [
        "NODE_NAME=worker-1",
        "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "KUBERNETES_SERVICE_PORT=1",
        "COFFER_LOG=info",
    ];
    let extra = ["--cpuid-file", "/cpuid.txt"];

    // The chart as it is: the container starts and serves.
    let all: Vec<_> = base
        .iter()
        .chain(&volumes)
        .chain(&kubelet)
        .cloned()
        .collect();
    sim.write_config(c, all, &extra, &env, true);
    let id = format!("coffer-node-agent-test-{}", std::process::id());
    let log = t.path().join("agent.log");
    let mut child = sim.start(&id, &log);
    let sockets: Vec<_> = ["coffer-sgx-enclave.sock", "coffer-sgx-provision.sock"]
        .iter()
        .map(|s| host_plugins.join(s))
        .collect();
    wait_until(&mut child, &log, "plugin sockets", || {
        sockets.iter().all(|s| s.exists())
    });
    let status = sim.stop(&id, &mut child);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}:\n{text}");
    assert!(text.contains("EPC read from CPUID"), "{text}");
    assert!(!text.contains("SGX device missing"), "{text}");
    for s in &sockets {
        assert!(!s.exists(), "{} left behind", s.display());
    }

    // The earlier layout: the host's /dev read-only over the container's /dev. runc cannot
    // create /dev/termination-log in it, as under a kubelet.
    let old_dev = bind(&host_dev, "/dev", true);
    let all: Vec<_> = base
        .iter()
        .chain([&old_dev])
        .chain(volumes.iter().filter(|m| m["destination"] != "/host/dev"))
        .chain(&kubelet)
        .cloned()
        .collect();
    sim.write_config(c, all, &extra, &env, true);
    let out = sim
        .runc()
        .args(["run", "--bundle"])
        .arg(t.path())
        .arg(format!("{id}-old"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = sim
        .runc()
        .args(["delete", "--force", &format!("{id}-old")])
        .output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("read-only file system"), "{err}");
}

/// The rendered webhook container (certificates from cert-manager's Secret) under runc with
/// the kubelet's mounts, in the host's network: it serves on the port the chart names, mutates
/// a pod the way the API server asks, and stops cleanly on SIGTERM.
#[test]
fn rendered_webhook_container_runs_under_runc_and_mutates_a_pod() {
    let t = tempfile::tempdir().expect("tempdir");
    let Some(sim) = KubeletSim::new(t.path()) else {
        return;
    };
    let items = rendered(&["webhook.certManager.enabled=true"]);
    let d = find(&items, "Deployment", "coffer-coordinator");
    let pod = &d["spec"]["template"]["spec"];
    let c = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "webhook")
        .expect("webhook container");
    let port = c["ports"][0]["containerPort"].as_u64().expect("port");

    // The Secret cert-manager writes: tls.crt, tls.key, ca.crt.
    let secret = t.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let ca = write_webhook_certificate(&secret);
    std::fs::write(secret.join("ca.crt"), ca.pem()).unwrap();

    let volumes = KubeletSim::volume_mounts(pod, c, |v| {
        assert_eq!(v["secret"]["secretName"], "coffer-webhook-tls", "{v}");
        secret.clone()
    });
    let all: Vec<_> = sim
        .base_mounts()
        .into_iter()
        .chain(volumes)
        .chain(sim.kubelet_mounts())
        .collect();
    sim.write_config(c, all, &[], &["COFFER_LOG=info"], false);
    let id = format!("coffer-webhook-test-{}", std::process::id());
    let log = t.path().join("webhook.log");
    let mut child = sim.start(&id, &log);
    let addr = format!("127.0.0.1:{port}");
    wait_until(&mut child, &log, "the webhook's port", || {
        std::net::TcpStream::connect(&addr).is_ok()
    });

    let (_, patch) = admit_over_https(
        &addr,
        ca.der(),
        "system:serviceaccount:kube-system:replicaset-controller",
        serde_json::json!({"generateName": "web-7d4b9c-", "labels": {"coffer.dev/workload": "web"}}),
    );
    assert!(
        patch.contains("coffer-coordinator.coffer.svc:4433"),
        "{patch}"
    );
    assert!(patch.contains("sgx.intel.com/enclave"), "{patch}");

    let status = sim.stop(&id, &mut child);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}:\n{text}");
}

/// `coffer k8s inject` prints the pod as the webhook admits it; the printed pod goes through
/// again unchanged (so a Kata policy computed from it stays valid), and a pod the webhook
/// refuses is refused with the webhook's reason.
#[test]
fn inject_prints_the_admitted_pod() {
    let t = tempfile::tempdir().unwrap();
    let pod = Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/tests/data/pods/tdx.yaml");
    let coord = ["--coordinator", "coffer-coordinator.coffer.svc:4433"];
    let mut args = vec!["k8s", "inject", "-f", pod.to_str().unwrap()];
    args.extend(coord);
    let (ok, first, err) = coffer(&args);
    assert!(ok, "{err}");
    let v: serde_yaml::Value = serde_yaml::from_str(&first).unwrap();
    assert_eq!(
        v["spec"]["runtimeClassName"].as_str(),
        Some("kata-qemu-tdx")
    );
    assert!(first.contains("COFFER_WORKLOAD"), "{first}");
    let injected = t.path().join("injected.yaml");
    std::fs::write(&injected, &first).unwrap();
    let mut args = vec!["k8s", "inject", "-f", injected.to_str().unwrap()];
    args.extend(coord);
    let (ok, second, err) = coffer(&args);
    assert!(ok, "{err}");
    assert_eq!(first, second, "not idempotent");

    let mut refused = v.clone();
    refused["spec"]["runtimeClassName"] = "kata-qemu-snp".into();
    let bad = t.path().join("bad.yaml");
    std::fs::write(&bad, serde_yaml::to_string(&refused).unwrap()).unwrap();
    let mut args = vec!["--json", "k8s", "inject", "-f", bad.to_str().unwrap()];
    args.extend(coord);
    let (ok, out, _) = coffer(&args);
    assert!(!ok);
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["error"]["kind"], "refused", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("runtimeClassName \"kata-qemu-snp\""),
        "{e}"
    );
}
