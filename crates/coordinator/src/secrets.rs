//! Generated and user-defined secrets: generation from the manifest's declarations, storage
//! form, and the [`SecretSource`] the manifest's renderer reads during an activation.
//!
//! Store keys: `secret/shared/<name>` (one value for all instances), `secret/instance/<workload>/
//! <uuid>/<name>` (per instance: a restart with the same UUID gets the same value), and
//! `user/<name>` (values users set through the API).

use std::collections::HashMap;

use coffer_manifest::template::SecretField;
use coffer_manifest::{
    Action, KeyType, Manifest, ResourceKind, SecretKind, SecretSource, SecretSpec, SecretValue,
    SourceError, Target,
};
use rand::RngCore;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::pki::Ca;
use crate::state::Store;

/// A secret as stored (serialised as JSON inside the encrypted store).
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StoredSecret {
    /// Raw bytes: a symmetric key or a user value.
    Bytes {
        /// The bytes.
        #[serde(with = "b64")]
        value: Vec<u8>,
    },
    /// A key pair.
    KeyPair {
        /// PKCS#8 DER.
        #[serde(with = "b64")]
        private: Vec<u8>,
        /// SPKI DER.
        #[serde(with = "b64")]
        public: Vec<u8>,
    },
    /// A key pair with a certificate.
    Certificate {
        /// PKCS#8 DER.
        #[serde(with = "b64")]
        private: Vec<u8>,
        /// SPKI DER.
        #[serde(with = "b64")]
        public: Vec<u8>,
        /// Certificate DER.
        #[serde(with = "b64")]
        cert: Vec<u8>,
    },
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredSecret(<redacted>)")
    }
}

impl Drop for StoredSecret {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        match self {
            StoredSecret::Bytes { value } => value.zeroize(),
            StoredSecret::KeyPair { private, .. } | StoredSecret::Certificate { private, .. } => {
                private.zeroize()
            }
        }
    }
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

impl StoredSecret {
    /// Serialises for the store.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a stored value.
    pub fn from_bytes(b: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(b)
            .map_err(|e| Error::Store(format!("stored secret is corrupt: {e}")))
    }

    /// The field a placeholder asks for.
    pub fn field(&self, field: SecretField) -> Option<Vec<u8>> {
        match (self, field) {
            (StoredSecret::Bytes { value }, SecretField::Key | SecretField::Value) => {
                Some(value.clone())
            }
            (
                StoredSecret::KeyPair { private, .. } | StoredSecret::Certificate { private, .. },
                SecretField::Private,
            ) => Some(private.clone()),
            (
                StoredSecret::KeyPair { public, .. } | StoredSecret::Certificate { public, .. },
                SecretField::Public,
            ) => Some(public.clone()),
            (StoredSecret::Certificate { cert, .. }, SecretField::Cert) => Some(cert.clone()),
            _ => None,
        }
    }
}

/// Store key of a shared secret.
pub fn shared_key(name: &str) -> String {
    format!("secret/shared/{name}")
}

/// Store key of a per-instance secret.
pub fn instance_secret_key(workload: &str, instance: &uuid::Uuid, name: &str) -> String {
    format!("secret/instance/{workload}/{instance}/{name}")
}

/// Store key of a user-defined value.
pub fn user_key(name: &str) -> String {
    format!("user/{name}")
}

fn rsa_key(bits: u32) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let k = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits as usize)
        .map_err(|e| Error::Pki(e.to_string()))?;
    let private = k
        .to_pkcs8_der()
        .map_err(|e| Error::Pki(e.to_string()))?
        .as_bytes()
        .to_vec();
    let public = k
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| Error::Pki(e.to_string()))?
        .as_bytes()
        .to_vec();
    Ok((private, public))
}

fn ec_key() -> Result<(KeyPair, Vec<u8>, Vec<u8>), Error> {
    let k = KeyPair::generate().map_err(|e| Error::Pki(e.to_string()))?;
    let private = k.serialize_der();
    let public = crate::pki::key_spki(&k);
    Ok((k, private, public))
}

/// Generates a value for a declared secret (`None` for user-defined secrets).
pub fn generate(
    name: &str,
    spec: &SecretSpec,
    ca: &Ca,
    now: i64,
) -> Result<Option<StoredSecret>, Error> {
    Ok(Some(match spec.kind {
        SecretKind::UserDefined => return Ok(None),
        SecretKind::Symmetric => {
            let bits = spec.size.unwrap_or(256);
            let mut v = vec![0u8; (bits / 8) as usize];
            rand::rngs::OsRng.fill_bytes(&mut v);
            StoredSecret::Bytes { value: v }
        }
        SecretKind::EcdsaP256 => {
            let (_, private, public) = ec_key()?;
            StoredSecret::KeyPair { private, public }
        }
        SecretKind::Rsa => {
            let (private, public) = rsa_key(spec.size.unwrap_or(3072))?;
            StoredSecret::KeyPair { private, public }
        }
        SecretKind::Certificate => {
            let cs = spec.certificate.as_ref().ok_or_else(|| {
                Error::Manifest(format!(
                    "certificate secret `{name}` has no `certificate` section"
                ))
            })?;
            let key = match cs.key_type {
                KeyType::EcdsaP256 => ec_key()?.0,
                KeyType::Rsa => {
                    let (private, _) = rsa_key(spec.size.unwrap_or(3072))?;
                    KeyPair::from_pkcs8_der_and_sign_algo(
                        &rustls_pki_types::PrivatePkcs8KeyDer::from(private),
                        &rcgen::PKCS_RSA_SHA256,
                    )
                    .map_err(|e| Error::Pki(e.to_string()))?
                }
            };
            let mut p = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cs.subject.common_name.clone());
            if let Some(o) = &cs.subject.organization {
                dn.push(DnType::OrganizationName, o.clone());
            }
            if let Some(ou) = &cs.subject.organizational_unit {
                dn.push(DnType::OrganizationalUnitName, ou.clone());
            }
            if let Some(c) = &cs.subject.country {
                dn.push(DnType::CountryName, c.clone());
            }
            p.distinguished_name = dn;
            p.not_before = time::OffsetDateTime::from_unix_timestamp(now - 60)
                .map_err(|e| Error::Pki(e.to_string()))?;
            p.not_after = time::OffsetDateTime::from_unix_timestamp(
                now + i64::from(cs.validity_days) * 86400,
            )
            .map_err(|e| Error::Pki(e.to_string()))?;
            let mut serial = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut serial);
            serial[0] = (serial[0] & 0x7f) | 1;
            p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
            p.use_authority_key_identifier_extension = true;
            p.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            for s in &cs.sans {
                let san = match s.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(s.clone().try_into().map_err(|_| {
                        Error::Manifest(format!("secret `{name}`: SAN {s:?} is not a DNS name"))
                    })?),
                };
                p.subject_alt_names.push(san);
            }
            let cert = ca.sign_with_root(&p, &key)?;
            StoredSecret::Certificate {
                private: key.serialize_der(),
                public: crate::pki::key_spki(&key),
                cert,
            }
        }
    }))
}

/// The values one activation renders from.
pub struct ActivationSource<'a> {
    /// The store (shared and user values).
    pub store: &'a Store,
    /// Workload name.
    pub workload: &'a str,
    /// The manifest in force (declarations, and who may set user-defined secrets).
    pub manifest: &'a Manifest,
    /// Per-instance values generated for this activation (new instance) — else read from the store.
    pub fresh: &'a HashMap<String, StoredSecret>,
    /// Instance UUID.
    pub instance: uuid::Uuid,
    /// Root CA DER.
    pub root_der: &'a [u8],
    /// Workload certificate DER.
    pub leaf_der: &'a [u8],
    /// Intermediate CA DER.
    pub intermediate_der: &'a [u8],
}

/// Why a workload waits for a user-defined secret, naming who can end the wait.
fn unset_secret(manifest: &Manifest, name: &str) -> String {
    let setters = manifest.users_allowed(ResourceKind::Secrets, Some(name), Action::Write);
    let who = if setters.is_empty() {
        "no user of the manifest may set it: give a user a role with `write` on it in a manifest update".to_string()
    } else {
        format!(
            "it is set by {} with `coffer secret set {name}`",
            setters.join(" or ")
        )
    };
    format!("user-defined secret `{name}` has not been set yet; {who}")
}

impl SecretSource for ActivationSource<'_> {
    fn resolve(&self, target: &Target) -> Result<SecretValue, SourceError> {
        match target {
            Target::RootCa => Ok(SecretValue::bytes(self.root_der.to_vec())),
            Target::WorkloadCert => Ok(SecretValue::bytes(self.leaf_der.to_vec())),
            Target::WorkloadChain => Ok(SecretValue::der_chain(vec![
                self.leaf_der.to_vec(),
                self.intermediate_der.to_vec(),
            ])),
            Target::WorkloadKey => Err(SourceError(
                "the workload's private key never leaves the TEE and cannot be templated".into(),
            )),
            Target::Secret { name, field } => {
                let spec = self
                    .manifest
                    .secrets
                    .get(name)
                    .ok_or_else(|| SourceError(format!("secret `{name}` is not declared")))?;
                let stored = if spec.kind == SecretKind::UserDefined {
                    let raw = self
                        .store
                        .get(&user_key(name))
                        .map_err(|e| SourceError(e.to_string()))?
                        .ok_or_else(|| SourceError(unset_secret(self.manifest, name)))?;
                    StoredSecret::from_bytes(&raw).map_err(|e| SourceError(e.to_string()))?
                } else if spec.is_shared() {
                    let raw = self
                        .store
                        .get(&shared_key(name))
                        .map_err(|e| SourceError(e.to_string()))?
                        .ok_or_else(|| {
                            SourceError(format!("shared secret `{name}` is missing from the store"))
                        })?;
                    StoredSecret::from_bytes(&raw).map_err(|e| SourceError(e.to_string()))?
                } else if let Some(s) = self.fresh.get(name) {
                    s.clone()
                } else {
                    let raw = self
                        .store
                        .get(&instance_secret_key(self.workload, &self.instance, name))
                        .map_err(|e| SourceError(e.to_string()))?
                        .ok_or_else(|| {
                            SourceError(format!(
                                "per-instance secret `{name}` is missing for this instance"
                            ))
                        })?;
                    StoredSecret::from_bytes(&raw).map_err(|e| SourceError(e.to_string()))?
                };
                stored.field(*field).map(SecretValue::bytes).ok_or_else(|| {
                    SourceError(format!("secret `{name}` has no field `{}`", field.as_str()))
                })
            }
        }
    }
}
