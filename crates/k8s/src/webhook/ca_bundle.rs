//! Publishing the webhook's CA in its MutatingWebhookConfiguration.
//!
//! The API server trusts the webhook's certificate only through `clientConfig.caBundle`. When
//! the Coordinator (not cert-manager's CA injector) issues the webhook certificate, it must put
//! its CA there itself, and again after each CA rotation.

use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, TestOperation};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};

use crate::error::Error;

/// Sets `clientConfig.caBundle` of every webhook in the MutatingWebhookConfiguration
/// `webhook_config_name` to `ca_pem` (one or more PEM certificates).
///
/// Reads the object, then sends one JSON Patch (`application/json-patch+json`) that, for each
/// webhook whose bundle differs, first tests the webhook's name at its index and then sets the
/// bundle: a concurrent edit that reorders the list makes the patch fail instead of writing the
/// CA into the wrong webhook. Returns how many webhooks were changed (0: nothing was sent).
pub async fn patch_ca_bundle(
    client: kube::Client,
    webhook_config_name: &str,
    ca_pem: &[u8],
) -> Result<usize, Error> {
    let object = format!("MutatingWebhookConfiguration {webhook_config_name}");
    let certs = rustls_pemfile::certs(&mut &ca_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidConfig(format!("CA bundle PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::InvalidConfig(
            "the CA bundle holds no PEM CERTIFICATE".into(),
        ));
    }
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let current = api.get(webhook_config_name).await?;
    let webhooks = current.webhooks.unwrap_or_default();
    if webhooks.is_empty() {
        return Err(Error::KubeObject {
            object,
            message: "has no webhooks to give the CA bundle to".into(),
        });
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut ops = Vec::new();
    let mut changed = 0usize;
    for (i, w) in webhooks.iter().enumerate() {
        if w.client_config
            .ca_bundle
            .as_ref()
            .is_some_and(|b| b.0 == ca_pem)
        {
            continue;
        }
        changed += 1;
        ops.push(PatchOperation::Test(TestOperation {
            path: PointerBuf::from_tokens([String::from("webhooks"), i.to_string(), "name".into()]),
            value: serde_json::Value::String(w.name.clone()),
        }));
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens([
                String::from("webhooks"),
                i.to_string(),
                "clientConfig".into(),
                "caBundle".into(),
            ]),
            value: serde_json::Value::String(encoded.clone()),
        }));
    }
    if changed == 0 {
        return Ok(0);
    }
    api.patch(
        webhook_config_name,
        &PatchParams::default(),
        &Patch::Json::<()>(json_patch::Patch(ops)),
    )
    .await?;
    tracing::info!(%object, webhooks = changed, "caBundle updated");
    Ok(changed)
}
