//! Fuzz `coffer_k8s::webhook::review` (the AdmissionReview the API server POSTs to `/mutate`).
//!
//! Beyond "no panic": an answer is an `admission.k8s.io/v1` AdmissionReview response; when it
//! carries a patch, the patch applies to the pod that was sent, and reviewing the patched pod
//! again yields no patch (the webhook is idempotent).
#![no_main]

use base64::Engine as _;
use coffer_k8s::webhook::{review, WebhookConfig};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let cfg = WebhookConfig::new("coffer-coordinator.coffer.svc:4433");
    let Ok(answer) = review(data, &cfg) else {
        return;
    };
    let answer: Value = serde_json::from_slice(&answer).expect("the answer is JSON");
    assert_eq!(answer["kind"], "AdmissionReview");
    let Some(patch) = answer["response"]["patch"].as_str() else {
        return;
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&raw).expect("patch is a JSON patch");
    // serde_json skips fields the review type ignores without checking their escapes (a lone
    // surrogate `\udc00` there is accepted by `review` but not by `Value`): nothing to re-check.
    let Ok(mut request) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Some(object) = request.pointer_mut("/request/object") else {
        panic!("a patch without an object");
    };
    // The API server holds the pod in canonical form; the patch must apply to it.
    // Duplicate keys: `Value` keeps the last, the review types may have seen another one; only
    // an object that is this pod can be checked.
    let Ok(pod) = serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(object.clone()) else {
        return;
    };
    let mut canonical = serde_json::to_value(&pod).expect("encode");
    json_patch::patch(&mut canonical, &patch).expect("the patch applies");
    *object = canonical;
    let again = review(&serde_json::to_vec(&request).expect("encode"), &cfg).expect("re-review");
    let again: Value = serde_json::from_slice(&again).expect("JSON");
    assert_eq!(again["response"]["allowed"], true, "patched pod refused: {again}");
    assert!(again["response"].get("patch").is_none(), "not idempotent: {again}");
});
