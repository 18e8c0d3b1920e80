//! TLS certificates for in-cluster services (the Kubernetes admission webhook): issued by the
//! Coordinator's root CA so that no cert-manager is needed, and written as the usual
//! `tls.crt` / `tls.key` / `ca.crt` triple that the webhook reads (and the chart's
//! `caBundle` comes from `ca.crt`).

use std::io::Write;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::Error;

/// Most DNS names in one service certificate.
pub const MAX_DNS_NAMES: usize = 32;

/// A service certificate with its key. `Debug` never shows the key.
pub struct ServiceCertificate {
    /// Leaf certificate PEM (signed directly by the root, so the chain is the leaf alone).
    pub chain_pem: String,
    /// PKCS#8 private key PEM. Zeroised on drop; never logged.
    pub key_pem: Zeroizing<String>,
    /// The Coordinator's root CA PEM (the trust anchor clients pin).
    pub ca_pem: String,
}

impl std::fmt::Debug for ServiceCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCertificate")
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"<redacted>")
            .field("ca_pem", &self.ca_pem)
            .finish()
    }
}

/// Checks DNS names for a service certificate: 1..=32 names, each 1..=253 bytes of
/// dot-separated labels of 1..=63 `[a-z0-9-]` not starting or ending with `-`, optionally a
/// leading `*.` wildcard. Why: names come from the command line / chart values, and a
/// malformed SAN must be refused with its name rather than produce an unusable certificate.
pub fn validate_dns_names(names: &[String]) -> Result<(), Error> {
    if names.is_empty() || names.len() > MAX_DNS_NAMES {
        return Err(Error::BadRequest(format!(
            "a service certificate needs 1..={MAX_DNS_NAMES} DNS names, got {}",
            names.len()
        )));
    }
    for n in names {
        let body = n.strip_prefix("*.").unwrap_or(n);
        let ok = !body.is_empty()
            && n.len() <= 253
            && body.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if !ok {
            return Err(Error::BadRequest(format!(
                "`{n}` is not a valid DNS name (lower-case labels of a-z 0-9 -, e.g. \
                 coffer-webhook.coffer.svc)"
            )));
        }
        // Root-signed like the Coordinator's own certificate: it must never carry its name.
        let lower = n.to_ascii_lowercase();
        if lower == crate::pki::SERVER_NAME
            || lower.starts_with(&format!("{}.", crate::pki::SERVER_NAME))
        {
            return Err(Error::BadRequest(format!(
                "`{n}` would cover the Coordinator's own name; a service certificate may not carry it"
            )));
        }
    }
    Ok(())
}

impl ServiceCertificate {
    /// Writes `tls.crt`, `tls.key` (0600) and `ca.crt` into `dir`, each atomically (temp file
    /// in the same directory, fsync, rename), so a reader never sees a half-written file. The
    /// key is renamed into place last-but-one and the certificate last, so `tls.crt` never
    /// names a key that is not yet there.
    pub fn write_to_dir(&self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir)?;
        write_atomic(dir, "ca.crt", self.ca_pem.as_bytes(), 0o644)?;
        write_atomic(dir, "tls.key", self.key_pem.as_bytes(), 0o600)?;
        write_atomic(dir, "tls.crt", self.chain_pem.as_bytes(), 0o644)?;
        Ok(())
    }
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_checked() {
        validate_dns_names(&[
            "coffer-webhook.coffer.svc".into(),
            "webhook.example.org".into(),
        ])
        .unwrap();
        for reserved in ["coffer-coordinator", "Coffer-Coordinator.x"] {
            assert!(
                validate_dns_names(&[reserved.into()]).is_err(),
                "{reserved}"
            );
        }
        for bad in ["", "UPPER.case", "a..b", "-a.b", "a_b", "a b", "a.b-"] {
            let err = validate_dns_names(&[bad.to_string()]).unwrap_err();
            assert!(
                matches!(&err, Error::BadRequest(m) if m.contains("not a valid DNS name")),
                "{bad}: {err}"
            );
        }
        assert!(matches!(validate_dns_names(&[]), Err(Error::BadRequest(_))));
        let many: Vec<String> = (0..33).map(|i| format!("n{i}.svc")).collect();
        assert!(matches!(
            validate_dns_names(&many),
            Err(Error::BadRequest(_))
        ));
    }

    /// The certificate chains to the root, names exactly the SANs, lives 30 days; a
    /// certificate from another CA does not verify under this root.
    #[test]
    fn service_certificate_is_signed_by_the_root() {
        use x509_parser::prelude::*;
        let now = 1_800_000_000;
        let ca = crate::pki::Ca::generate(now).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let names = vec!["coffer-webhook.coffer.svc".to_string()];
        let der = ca.service_cert(&key, &names, now).unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let (_, root) = X509Certificate::from_der(ca.root_der()).unwrap();
        cert.verify_signature(Some(root.public_key())).unwrap();
        assert_eq!(cert.validity().not_after.timestamp(), now + 30 * 86400);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let dns: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|g| match g {
                GeneralName::DNSName(d) => d.to_string(),
                other => panic!("unexpected SAN {other:?}"),
            })
            .collect();
        assert_eq!(dns, names);
        let other = crate::pki::Ca::generate(now).unwrap();
        let (_, other_root) = X509Certificate::from_der(other.root_der()).unwrap();
        assert!(cert
            .verify_signature(Some(other_root.public_key()))
            .is_err());
    }

    #[test]
    fn files_are_written_with_modes_and_no_temp_left() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let c = ServiceCertificate {
            chain_pem: "CHAIN".into(),
            key_pem: Zeroizing::new("KEY".into()),
            ca_pem: "CA".into(),
        };
        c.write_to_dir(dir.path()).unwrap();
        c.write_to_dir(dir.path()).unwrap(); // Renewal overwrites in place.
        let mode = |n: &str| {
            std::fs::metadata(dir.path().join(n))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("tls.key"), 0o600);
        assert_eq!(std::fs::read(dir.path().join("tls.crt")).unwrap(), b"CHAIN");
        assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), b"CA");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        assert!(!format!("{c:?}").contains("KEY"));
    }
}
