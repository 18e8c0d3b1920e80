//! Admission webhook: the per-pod cost of `coffer_k8s::webhook::review` (parse the
//! AdmissionReview, mutate the pod, diff into a JSON patch, encode the answer), on the Job pod
//! with an EPC limit from the webhook tests, a pod without the Coffer label (the common case in
//! a cluster: answered without a patch), and the already-patched pod (idempotence path).
//!
//! No peer is benchmarked: Intel's SGX webhook and Marblerun's injector are Go programs that
//! cannot be built here. The API server's own budget is the webhook's `timeoutSeconds` (10 s).
//!
//! Run: `cargo bench -p coffer-benches --bench webhook`

// `criterion_group!` expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use coffer_k8s::webhook::{review, WebhookConfig};

const JOB_POD: &str = include_str!("../../crates/k8s/tests/data/pods/job-epc.yaml");
const PLAIN_POD: &str = include_str!("../../crates/k8s/tests/data/pods/plain.yaml");

fn admission_review(pod_yaml: &str) -> Vec<u8> {
    let pod: serde_json::Value = serde_yaml::from_str(pod_yaml).expect("fixture pod");
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:job-controller"},
            "object": pod,
        }
    }))
    .expect("encode")
}

/// The pod after the webhook's patch: what a second pass (re-invocation) sees.
fn patched(pod_yaml: &str, cfg: &WebhookConfig) -> String {
    let answer: serde_json::Value =
        serde_json::from_slice(&review(&admission_review(pod_yaml), cfg).expect("review"))
            .expect("answer");
    use base64::Engine;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().expect("a patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("JSON patch");
    let mut pod: serde_json::Value = serde_yaml::from_str(pod_yaml).expect("pod");
    json_patch::patch(&mut pod, &patch).expect("patch applies");
    serde_yaml::to_string(&pod).expect("yaml")
}

fn bench(c: &mut Criterion) {
    let cfg = WebhookConfig::new("coffer-coordinator.coffer.svc:4433");
    let job = admission_review(JOB_POD);
    let plain = admission_review(PLAIN_POD);
    let again = admission_review(&patched(JOB_POD, &cfg));

    let mut g = c.benchmark_group("webhook_review");
    g.throughput(Throughput::Elements(1));
    g.bench_function("job_pod_with_epc", |b| {
        b.iter(|| review(std::hint::black_box(&job), &cfg).expect("review"))
    });
    g.bench_function("unlabelled_pod", |b| {
        b.iter(|| review(std::hint::black_box(&plain), &cfg).expect("review"))
    });
    g.bench_function("already_patched_pod", |b| {
        b.iter(|| review(std::hint::black_box(&again), &cfg).expect("review"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
