//! The OCI layout side: the blobs a manifest names (digests validated before any becomes a
//! file name), writing a pulled image as a layout, reading the one to push.

use std::fs;
use std::path::{Path, PathBuf};

use crate::Error;

/// A blob a manifest names.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    /// `sha256:<64 lowercase hex>`, checked.
    pub(crate) digest: String,
    pub(crate) size: u64,
}

impl Blob {
    /// The hex part: the blob's file name.
    pub(crate) fn hex(&self) -> Result<&str, Error> {
        digest_hex(&self.digest)
    }
}

/// The hex of a `sha256:` digest; anything else (other algorithms, path characters) refused.
fn digest_hex(d: &str) -> Result<&str, Error> {
    match d.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(h)
        }
        _ => Err(Error::Unsupported(format!(
            "digest {d:?}: only sha256 digests (64 lowercase hex) are accepted"
        ))),
    }
}

fn descriptor(v: &serde_json::Value, what: &str) -> Result<Blob, Error> {
    let digest = v.get("digest").and_then(|d| d.as_str()).unwrap_or_default();
    digest_hex(digest)?;
    let size = v
        .get("size")
        .and_then(|s| s.as_u64())
        .ok_or_else(|| Error::Unsupported(format!("{what} descriptor has no size")))?;
    Ok(Blob {
        digest: digest.to_string(),
        size,
    })
}

/// The distinct blobs of an image manifest: the config, then the layers in order, each once
/// (a manifest may name a blob twice, e.g. empty layers; it is fetched, linked and pushed once).
pub(crate) fn manifest_blobs(m: &serde_json::Value) -> Result<Vec<Blob>, Error> {
    let config = m
        .get("config")
        .ok_or_else(|| Error::Unsupported("the manifest has no config (not an image)".into()))?;
    let mut out = vec![descriptor(config, "config")?];
    let layers = m
        .get("layers")
        .and_then(|l| l.as_array())
        .ok_or_else(|| Error::Unsupported("the manifest has no layers".into()))?;
    if layers.len() > 256 {
        return Err(Error::TooLarge {
            what: "the number of layers".into(),
            limit: 256,
        });
    }
    for l in layers {
        let b = descriptor(l, "layer")?;
        if !out.iter().any(|o| o.digest == b.digest) {
            out.push(b);
        }
    }
    Ok(out)
}

/// The digest of the linux/amd64 image of an index.
pub(crate) fn linux_amd64(index: &serde_json::Value) -> Option<String> {
    let entries = index.get("manifests")?.as_array()?;
    entries
        .iter()
        .find(|e| {
            let p = &e["platform"];
            p["os"] == "linux" && p["architecture"] == "amd64"
        })
        .and_then(|e| e["digest"].as_str())
        .filter(|d| digest_hex(d).is_ok())
        .map(str::to_string)
}

/// Writes a pulled image as an OCI layout at `dest` (which must not exist): blobs linked from
/// the cache (copied across file systems), the manifest, an index naming it with `tag`.
pub(crate) fn write(
    dest: &Path,
    cache: &Path,
    blobs: &[Blob],
    manifest: &[u8],
    manifest_digest: &str,
    media_type: &str,
    tag: &str,
) -> Result<(), Error> {
    let dir = dest.join("blobs/sha256");
    fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    for b in blobs {
        let (from, to) = (cache.join(b.hex()?), dir.join(b.hex()?));
        if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).map_err(Error::io("copying", &from))?;
        }
    }
    let mpath = dir.join(digest_hex(manifest_digest)?);
    fs::write(&mpath, manifest).map_err(Error::io("writing", &mpath))?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media_type,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag }
        }]
    });
    let ipath = dest.join("index.json");
    fs::write(&ipath, index.to_string()).map_err(Error::io("writing", &ipath))?;
    let lpath = dest.join("oci-layout");
    fs::write(&lpath, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(Error::io("writing", &lpath))
}

/// The path of a blob in the layout at `src`.
pub(crate) fn blob_path(src: &Path, b: &Blob) -> Result<PathBuf, Error> {
    Ok(src.join("blobs/sha256").join(b.hex()?))
}

/// The manifest (bytes and media type) tagged `tag` in the layout at `src` (or its only one),
/// and the blobs it names.
pub(crate) fn read(src: &Path, tag: Option<&str>) -> Result<(Vec<u8>, String, Vec<Blob>), Error> {
    let ipath = src.join("index.json");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(&ipath).map_err(Error::io("reading", &ipath))?)
            .map_err(|e| Error::Unsupported(format!("{}: {e}", ipath.display())))?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let named = |e: &&serde_json::Value| match tag {
        Some(t) => e["annotations"]["org.opencontainers.image.ref.name"] == t,
        None => true,
    };
    let chosen: Vec<&serde_json::Value> = entries.iter().filter(named).collect();
    let [entry] = chosen.as_slice() else {
        return Err(Error::Unsupported(format!(
            "{}: {} images match{}; name one with its tag",
            src.display(),
            chosen.len(),
            tag.map(|t| format!(" tag {t:?}")).unwrap_or_default()
        )));
    };
    let m = descriptor(entry, "manifest")?;
    let mpath = blob_path(src, &m)?;
    let bytes = fs::read(&mpath).map_err(Error::io("reading", &mpath))?;
    let found = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    if found != m.digest {
        return Err(Error::Digest {
            what: "the manifest to push".into(),
            expected: m.digest,
            found,
        });
    }
    let manifest: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Unsupported(format!("the manifest to push: {e}")))?;
    let media_type = entry["mediaType"]
        .as_str()
        .or(manifest["mediaType"].as_str())
        .unwrap_or(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE)
        .to_string();
    let blobs = manifest_blobs(&manifest)?;
    Ok((bytes, media_type, blobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_that_could_name_another_file_are_refused() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert!(digest_hex(&ok).is_ok());
        for bad in [
            "sha256:../../etc/passwd".to_string(),
            format!("sha512:{}", "a".repeat(128)),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}/", "a".repeat(63)),
            String::new(),
        ] {
            assert!(digest_hex(&bad).is_err(), "{bad}");
        }
        let m = serde_json::json!({
            "config": {"digest": ok, "size": 1},
            "layers": [{"digest": "sha256:../x", "size": 1}]
        });
        assert!(manifest_blobs(&m).is_err());
    }

    #[test]
    fn a_blob_named_twice_is_linked_once_and_stays_whole() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path().join("cache");
        fs::create_dir(&cache).unwrap();
        let data = b"layer bytes";
        let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data));
        fs::write(cache.join(&hex), data).unwrap();
        let config = format!("sha256:{}", "c".repeat(64));
        fs::write(cache.join("c".repeat(64)), b"{}").unwrap();
        let layer = serde_json::json!({"digest": format!("sha256:{hex}"), "size": data.len()});
        let m = serde_json::json!({
            "config": {"digest": config, "size": 2},
            "layers": [layer, layer]
        });
        let blobs = manifest_blobs(&m).unwrap();
        assert_eq!(blobs.len(), 2, "config and one layer");
        let manifest = b"{}";
        let mdigest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(manifest))
        );
        let dest = t.path().join("layout");
        write(&dest, &cache, &blobs, manifest, &mdigest, "x", "1").unwrap();
        assert_eq!(
            fs::read(dest.join("blobs/sha256").join(&hex)).unwrap(),
            data
        );
        assert_eq!(fs::read(cache.join(&hex)).unwrap(), data);
    }

    #[test]
    fn the_linux_amd64_image_of_an_index_is_picked() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index = serde_json::json!({"manifests": [
            {"digest": d('1'), "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": d('2'), "platform": {"os": "linux", "architecture": "amd64"}}
        ]});
        assert_eq!(linux_amd64(&index), Some(d('2')));
        let none = serde_json::json!({"manifests": [
            {"digest": d('1'), "platform": {"os": "linux", "architecture": "arm64"}}
        ]});
        assert_eq!(linux_amd64(&none), None);
    }
}
