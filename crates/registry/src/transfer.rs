//! Pull (registry → verified OCI layout, through the blob cache) and push (OCI layout →
//! registry, only the blobs it lacks).

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::layout::{self, Blob};
use crate::{auth, Error, Options, Progress, ProgressFn};

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// The reference pulled, normalised (`registry/repository:tag` or `@digest`).
    pub reference: String,
    /// The tag written into the layout's index (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// Digest of the image manifest.
    pub manifest_digest: String,
    /// Blobs (config and layers).
    pub blobs: usize,
    /// Bytes downloaded.
    pub downloaded: u64,
    /// Bytes found in the cache.
    pub cached: u64,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushReport {
    /// The reference pushed to.
    pub reference: String,
    /// Digest of the pushed manifest (`REPO@DIGEST` pins it).
    pub manifest_digest: String,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the registry already had (not sent again).
    pub skipped: usize,
    /// Bytes uploaded.
    pub bytes: u64,
}

fn parse_reference(s: &str) -> Result<Reference, Error> {
    let bare = s.strip_prefix("docker://").unwrap_or(s);
    Reference::from_str(bare).map_err(|e| Error::Reference {
        reference: s.to_string(),
        reason: e.to_string(),
    })
}

/// The registry (host[:port]) a `docker://` reference names.
pub fn registry_of(reference: &str) -> Result<String, Error> {
    Ok(parse_reference(reference)?.resolve_registry().to_string())
}

fn install_crypto() {
    // reqwest is built without a bundled provider; the workspace's is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn extra_roots(dir: &Path) -> Result<Vec<Certificate>, Error> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(Error::io("reading --cert-dir", dir))?;
    for entry in rd.flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "crt") {
            let data = std::fs::read(&p).map_err(Error::io("reading", &p))?;
            if !String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE-----") {
                return Err(Error::Config(format!(
                    "{}: not a PEM certificate",
                    p.display()
                )));
            }
            out.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
    }
    if out.is_empty() {
        return Err(Error::Config(format!(
            "--cert-dir {}: no *.crt certificate in it",
            dir.display()
        )));
    }
    Ok(out)
}

fn client(opts: &Options, protocol: ClientProtocol) -> Result<Client, Error> {
    let extra_root_certificates = match &opts.cert_dir {
        Some(d) => extra_roots(d)?,
        None => Vec::new(),
    };
    let config = ClientConfig {
        protocol,
        accept_invalid_certificates: !opts.tls_verify,
        extra_root_certificates,
        platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
        max_concurrent_download: opts.parallel.max(1),
        max_concurrent_upload: opts.parallel.max(1),
        user_agent: concat!("coffer/", env!("CARGO_PKG_VERSION")),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        connect_timeout: Some(std::time::Duration::from_secs(15)),
        ..ClientConfig::default()
    };
    // try_from, not new: new silently drops certificates it cannot use.
    Client::try_from(config).map_err(|e| Error::Config(format!("registry client: {}", chain(&e))))
}

/// The error and its causes on one line (reqwest hides the TLS reason in its sources).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

fn is_transport(e: &OciDistributionError) -> bool {
    matches!(e, OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() || r.is_request())
}

fn is_denied(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => true,
        OciDistributionError::ServerError { code, .. } => *code == 401 || *code == 403,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|x| matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
        _ => false,
    }
}

/// Maps a client error to ours, naming the registry and what to do.
fn remote(e: OciDistributionError, r: &Reference, opts: &Options) -> Error {
    let registry = r.resolve_registry().to_string();
    if is_denied(&e) {
        return Error::Auth {
            registry,
            repository: r.repository().to_string(),
            reason: chain(&e),
            auth_file: opts
                .auth_file
                .clone()
                .unwrap_or_else(auth::default_auth_file)
                .display()
                .to_string(),
        };
    }
    if is_transport(&e) {
        let mut reason = chain(&e);
        if opts.tls_verify && reason.to_lowercase().contains("certificate") {
            reason.push_str(
                "; trust the registry's CA with --cert-dir DIR (its *.crt), or pass \
                 --tls-verify=false",
            );
        } else if opts.tls_verify {
            reason.push_str("; a registry without TLS needs --tls-verify=false");
        }
        return Error::Connect { registry, reason };
    }
    Error::Registry {
        registry,
        reason: chain(&e),
    }
}

/// A client that reached the registry and authenticated for `op`: verified HTTPS, or with
/// `--tls-verify=false` unverified HTTPS and then plain HTTP.
async fn connect(
    r: &Reference,
    opts: &Options,
    auth: &RegistryAuth,
    op: RegistryOperation,
) -> Result<Client, Error> {
    install_crypto();
    let protocols = if opts.tls_verify {
        vec![ClientProtocol::Https]
    } else {
        vec![ClientProtocol::Https, ClientProtocol::Http]
    };
    let mut last = None;
    for p in protocols {
        let c = client(opts, p)?;
        match c.auth(r, auth, op).await {
            Ok(_) => return Ok(c),
            Err(e) if is_transport(&e) => last = Some(e),
            Err(e) => return Err(remote(e, r, opts)),
        }
    }
    Err(match last {
        Some(e) => remote(e, r, opts),
        None => Error::Connect {
            registry: r.resolve_registry().to_string(),
            reason: "no protocol to try".into(),
        },
    })
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn check_json(bytes: &[u8], expected: Option<&str>, what: &str) -> Result<String, Error> {
    if bytes.len() as u64 > crate::MAX_JSON {
        return Err(Error::TooLarge {
            what: what.into(),
            limit: crate::MAX_JSON,
        });
    }
    let found = format!("sha256:{}", sha256_hex(bytes));
    if let Some(exp) = expected {
        if exp != found {
            return Err(Error::Digest {
                what: what.into(),
                expected: exp.into(),
                found,
            });
        }
    }
    Ok(found)
}

/// Pulls `reference` into a new OCI layout at `dest`: every blob through the cache, checked
/// against its digest; the manifest against the digest it resolved to.
pub async fn pull(
    reference: &str,
    dest: &Path,
    opts: &Options,
    progress: &ProgressFn,
) -> Result<PullReport, Error> {
    let r = parse_reference(reference)?;
    let auth = auth::credentials_for(r.resolve_registry(), opts)?;
    let c = connect(&r, opts, &auth, RegistryOperation::Pull).await?;
    let accepted = [
        OCI_IMAGE_MEDIA_TYPE,
        IMAGE_MANIFEST_MEDIA_TYPE,
        OCI_IMAGE_INDEX_MEDIA_TYPE,
        IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    ];
    let (bytes, served_digest) = c
        .pull_manifest_raw(&r, &auth, &accepted)
        .await
        .map_err(|e| remote(e, &r, opts))?;
    // A pinned digest is checked; a tag's manifest must match the digest the registry names.
    let mut digest = check_json(&bytes, r.digest().or(Some(&served_digest)), "manifest")?;
    let mut bytes = bytes.to_vec();
    let mut manifest: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Unsupported(format!("the manifest of {reference} is not JSON: {e}")))?;
    // A multi-platform index: the linux/amd64 image, by digest.
    if manifest.get("manifests").is_some() {
        let pick = layout::linux_amd64(&manifest).ok_or_else(|| {
            Error::Unsupported(format!("{reference}: the index has no linux/amd64 image"))
        })?;
        let by_digest = Reference::with_digest(
            r.registry().to_string(),
            r.repository().to_string(),
            pick.clone(),
        );
        let (b, _) = c
            .pull_manifest_raw(&by_digest, &auth, &accepted[..2])
            .await
            .map_err(|e| remote(e, &r, opts))?;
        digest = check_json(&b, Some(&pick), "platform manifest")?;
        bytes = b.to_vec();
        manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Unsupported(format!("platform manifest: {e}")))?;
    }
    let media_type = manifest
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or(OCI_IMAGE_MEDIA_TYPE)
        .to_string();
    let blobs = layout::manifest_blobs(&manifest)?;
    let total = blobs
        .iter()
        .try_fold(0u64, |sum, b| sum.checked_add(b.size))
        .filter(|t| *t <= crate::MAX_IMAGE)
        .ok_or_else(|| Error::TooLarge {
            what: format!("{reference} (the sizes its manifest names)"),
            limit: crate::MAX_IMAGE,
        })?;
    progress(Progress::Start(total));
    let cache = opts.cache_dir.join("sha256");
    tokio::fs::create_dir_all(&cache)
        .await
        .map_err(Error::io("creating the blob cache", &cache))?;
    let downloaded = AtomicU64::new(0);
    let cached = AtomicU64::new(0);
    futures::stream::iter(blobs.iter().map(Ok))
        .try_for_each_concurrent(opts.parallel.max(1), |b| {
            let (c, r, cache) = (&c, &r, &cache);
            let (downloaded, cached) = (&downloaded, &cached);
            async move {
                let path = cache.join(b.hex()?);
                // A cached blob is used only if it still has its digest (the cache is a
                // directory anyone with the user's rights can write).
                if cached_blob_ok(&path, b).await {
                    cached.fetch_add(b.size, Ordering::Relaxed);
                    progress(Progress::Advance(b.size));
                    return Ok(());
                }
                fetch_blob(c, r, b, &path, opts, progress).await?;
                downloaded.fetch_add(b.size, Ordering::Relaxed);
                Ok::<(), Error>(())
            }
        })
        .await?;
    let tag = r.tag().unwrap_or("latest").to_string();
    layout::write(dest, &cache, &blobs, &bytes, &digest, &media_type, &tag)?;
    Ok(PullReport {
        reference: r.whole(),
        tag,
        manifest_digest: digest,
        blobs: blobs.len(),
        downloaded: downloaded.into_inner(),
        cached: cached.into_inner(),
    })
}

/// Whether the cache holds `b` intact (same size and digest).
async fn cached_blob_ok(path: &Path, b: &Blob) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(mut f) = tokio::fs::File::open(path).await else {
        return false;
    };
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        match f.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                len += n as u64;
                if len > b.size {
                    return false;
                }
                hash.update(buf.get(..n).unwrap_or_default());
            }
            Err(_) => return false,
        }
    }
    len == b.size && format!("sha256:{}", hex::encode(hash.finalize())) == b.digest
}

/// Streams one blob into the cache: hashed as it arrives, never longer than its descriptor
/// says, renamed into place only when its digest matches.
async fn fetch_blob(
    c: &Client,
    r: &Reference,
    b: &Blob,
    path: &Path,
    opts: &Options,
    progress: &ProgressFn,
) -> Result<(), Error> {
    // A fresh, unpredictable file in the cache (removed if this future is dropped or fails),
    // renamed over the blob's name only once its digest matched.
    let cache = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(cache)
        .map_err(Error::io("creating a temporary file in", cache))?;
    let tmp_path = tmp.path().to_path_buf();
    let mut out = tokio::fs::File::from_std(tmp.reopen().map_err(Error::io("opening", &tmp_path))?);
    let result = async {
        let mut stream = c
            .pull_blob_stream(r, b.digest.as_str())
            .await
            .map_err(|e| remote(e, r, opts))?;
        let mut hash = Sha256::new();
        let mut len = 0u64;
        while let Some(chunk) = stream.stream.next().await {
            let chunk = chunk.map_err(|e| {
                // The client checks the digest too, and reports it at the stream's end.
                let digest = e.get_ref().and_then(|i| i.downcast_ref::<DigestError>());
                match digest {
                    Some(DigestError::VerificationError { expected, actual }) => Error::Digest {
                        what: format!("blob of {}", r.whole()),
                        expected: expected.clone(),
                        found: actual.clone(),
                    },
                    _ => Error::Registry {
                        registry: r.resolve_registry().to_string(),
                        reason: format!("reading blob {}: {e}", b.digest),
                    },
                }
            })?;
            len += chunk.len() as u64;
            if len > b.size {
                return Err(Error::TooLarge {
                    what: format!("blob {} (its descriptor says {} bytes)", b.digest, b.size),
                    limit: b.size,
                });
            }
            hash.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(Error::io("writing", &tmp_path))?;
            progress(Progress::Advance(chunk.len() as u64));
        }
        out.flush().await.map_err(Error::io("writing", &tmp_path))?;
        let found = format!("sha256:{}", hex::encode(hash.finalize()));
        if found != b.digest || len != b.size {
            return Err(Error::Digest {
                what: format!("blob of {} ({len} bytes)", r.whole()),
                expected: format!("{} ({} bytes)", b.digest, b.size),
                found,
            });
        }
        Ok(())
    }
    .await;
    result?;
    tmp.persist(path)
        .map_err(|e| Error::io("renaming", &tmp_path)(e.error))?;
    Ok(())
}

/// Pushes the image tagged `tag` (or the only one) of the OCI layout at `src` to `reference`:
/// blobs the registry has are not sent again, the others stream from disk in parallel; the
/// manifest goes last.
pub async fn push(
    src: &Path,
    tag: Option<&str>,
    reference: &str,
    opts: &Options,
    progress: &ProgressFn,
) -> Result<PushReport, Error> {
    let mut r = parse_reference(reference)?;
    if r.digest().is_some() {
        return Err(Error::Reference {
            reference: reference.into(),
            reason: "a push names a tag, not a digest".into(),
        });
    }
    if r.tag().is_none() {
        r = Reference::with_tag(
            r.registry().to_string(),
            r.repository().to_string(),
            "latest".into(),
        );
    }
    let (manifest_bytes, media_type, blobs) = layout::read(src, tag)?;
    let auth = auth::credentials_for(r.resolve_registry(), opts)?;
    let c = connect(&r, opts, &auth, RegistryOperation::Push).await?;
    progress(Progress::Start(
        blobs.iter().fold(0u64, |sum, b| sum.saturating_add(b.size)),
    ));
    let uploaded = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    futures::stream::iter(blobs.iter().map(Ok))
        .try_for_each_concurrent(opts.parallel.max(1), |b| {
            let (c, r, src) = (&c, &r, src);
            let (uploaded, bytes) = (&uploaded, &bytes);
            async move {
                if c.blob_exists(r, &b.digest)
                    .await
                    .map_err(|e| remote(e, r, opts))?
                {
                    progress(Progress::Advance(b.size));
                    return Ok(());
                }
                let path = layout::blob_path(src, b)?;
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(Error::io("opening", &path))?;
                let p = progress.clone();
                let stream =
                    tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).map(move |chunk| {
                        let chunk = chunk?;
                        p(Progress::Advance(chunk.len() as u64));
                        Ok::<_, OciDistributionError>(chunk)
                    });
                c.push_blob_stream(r, stream, &b.digest, Some(b.size))
                    .await
                    .map_err(|e| remote(e, r, opts))?;
                uploaded.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(b.size, Ordering::Relaxed);
                Ok::<(), Error>(())
            }
        })
        .await?;
    let content_type = http::HeaderValue::from_str(&media_type)
        .map_err(|_| Error::Unsupported(format!("manifest media type {media_type:?}")))?;
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest_bytes));
    c.push_manifest_raw(&r, manifest_bytes, content_type)
        .await
        .map_err(|e| remote(e, &r, opts))?;
    let uploaded = uploaded.into_inner() as usize;
    Ok(PushReport {
        reference: r.whole(),
        manifest_digest,
        uploaded,
        skipped: blobs.len() - uploaded,
        bytes: bytes.into_inner(),
    })
}
