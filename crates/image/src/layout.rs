//! Image references (`oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:TAG]`),
//! loading an image's manifest and config from them (every blob checked against its
//! descriptor), and deterministic JSON.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Serialize;

use crate::tarball::{Kind, TarReader};
use crate::{paths, Digest, Error, Limits};

/// Where an image is read from or written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An OCI image layout directory.
    OciDir,
    /// A tar file holding an OCI image layout.
    OciArchive,
    /// A `docker save` archive (`manifest.json` + config + layers).
    DockerArchive,
}

impl Format {
    /// The transport prefix skopeo uses.
    pub fn prefix(self) -> &'static str {
        match self {
            Format::OciDir => "oci",
            Format::OciArchive => "oci-archive",
            Format::DockerArchive => "docker-archive",
        }
    }
}

/// An image reference: format, path, optional tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The format.
    pub format: Format,
    /// The directory or archive file.
    pub path: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name`, or a docker `RepoTags` entry).
    pub tag: Option<String>,
}

impl FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (prefix, rest) = s.split_once(':').ok_or_else(|| {
            Error::Unsupported(format!(
                "image reference {s:?}: expected oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:TAG]"
            ))
        })?;
        let format = match prefix {
            "oci" => Format::OciDir,
            "oci-archive" => Format::OciArchive,
            "docker-archive" => Format::DockerArchive,
            other => {
                return Err(Error::Unsupported(format!(
                    "image transport {other:?} (use oci:, oci-archive: or docker-archive:; copy registry images with `skopeo copy docker://… oci:DIR:TAG` first)"
                )))
            }
        };
        // As skopeo: the path ends at the first `:`; the rest is the tag (which for
        // docker-archive may itself be `name:tag`).
        let (path, tag) = match rest.split_once(':') {
            Some((p, t)) => (p, Some(t.to_string())),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(Error::Unsupported(format!(
                "image reference {s:?} has no path"
            )));
        }
        if let Some(t) = &tag {
            if t.is_empty() || t.len() > 256 || t.chars().any(|c| c.is_control()) {
                return Err(Error::Unsupported(format!("tag {t:?} is not a valid tag")));
            }
        }
        Ok(ImageRef {
            format,
            path: PathBuf::from(path),
            tag,
        })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.format.prefix(), self.path.display())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        Ok(())
    }
}

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// From the first bytes of a blob.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI layer media type for this compression.
    pub fn media_type(self) -> MediaType {
        match self {
            Compression::None => MediaType::ImageLayer,
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        }
    }
}

/// One layer of a loaded image.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The blob file.
    pub file: PathBuf,
    /// Expected digest of the blob (from the descriptor), when the source names one.
    pub digest: Option<Digest>,
    /// Expected size of the blob (from the descriptor), when the source names one.
    pub size: Option<u64>,
    /// Compression as declared (`None` = sniff).
    pub declared: Option<Compression>,
    /// Expected digest of the uncompressed tar (config `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Name for messages.
    pub name: String,
}

/// An image loaded from a source, its blobs verified lazily (layers) or at once (JSON).
#[derive(Debug)]
pub struct Loaded {
    /// The config.
    pub config: ImageConfiguration,
    /// The layers in order.
    pub layers: Vec<Layer>,
    /// Annotations of the source manifest (kept on the output manifest).
    pub annotations: BTreeMap<String, String>,
}

/// Serialises `value` as JSON with object keys sorted at every level (oci-spec uses `HashMap`s,
/// whose order would make output non-reproducible).
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<(String, serde_json::Value)> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    let v = serde_json::to_value(value).map_err(|e| Error::malformed("JSON", e))?;
    serde_json::to_vec(&sort(v)).map_err(|e| Error::malformed("JSON", e))
}

/// Reads a small file (JSON) completely, refusing more than `max` bytes.
fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, Error> {
    let f = fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::malformed(what, format!("{} is missing", path.display()))
        }
        _ => Error::io("opening", path, e),
    })?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("reading", path, e))?;
    if buf.len() as u64 > max {
        return Err(Error::LimitExceeded {
            what: format!("{what} ({})", path.display()),
            limit: max,
            hint: "raise --max-json if this image is genuine",
        });
    }
    Ok(buf)
}

/// Reads a blob named by a descriptor and checks its size and digest.
fn read_blob(
    dir: &Path,
    digest: &str,
    size: u64,
    max: u64,
    what: &str,
) -> Result<(Vec<u8>, Digest), Error> {
    let d = parse_oci_digest(digest, what)?;
    if size > max {
        return Err(Error::LimitExceeded {
            what: format!("{what} of {size} bytes"),
            limit: max,
            hint: "raise --max-json if this image is genuine",
        });
    }
    let bytes = read_bounded(&blob_path(dir, &d), max, what)?;
    check_blob(&bytes, &d, size, what)?;
    Ok((bytes, d))
}

fn check_blob(bytes: &[u8], d: &Digest, size: u64, what: &str) -> Result<(), Error> {
    if bytes.len() as u64 != size {
        return Err(Error::SizeMismatch {
            what: what.into(),
            expected: size,
            found: bytes.len() as u64,
        });
    }
    let found = Digest::of(bytes);
    if &found != d {
        return Err(Error::DigestMismatch {
            what: what.into(),
            expected: d.oci(),
            found: found.oci(),
        });
    }
    Ok(())
}

/// Parses `sha256:<hex>`; other algorithms are unsupported.
pub fn parse_oci_digest(s: &str, what: &str) -> Result<Digest, Error> {
    match s.split_once(':') {
        Some(("sha256", _)) => s
            .parse()
            .map_err(|_| Error::malformed(what, format!("bad digest {s:?}"))),
        Some((alg, _)) => Err(Error::Unsupported(format!(
            "{what}: digest algorithm {alg:?} (only sha256)"
        ))),
        None => Err(Error::malformed(what, format!("bad digest {s:?}"))),
    }
}

/// `DIR/blobs/sha256/<hex>`.
pub fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(d.hex())
}

fn layer_compression(mt: &MediaType, what: &str) -> Result<Compression, Error> {
    Ok(match mt {
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Compression::None,
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => Compression::Gzip,
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => Compression::Zstd,
        MediaType::Other(s) if s == "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            Compression::Gzip
        }
        MediaType::Other(s) if s == "application/vnd.docker.image.rootfs.diff.tar" => {
            Compression::None
        }
        other => {
            return Err(Error::Unsupported(format!(
                "{what}: layer media type {other}"
            )));
        }
    })
}

fn diff_ids(config: &ImageConfiguration, n: usize) -> Result<Vec<Digest>, Error> {
    let ids = config.rootfs().diff_ids();
    if ids.len() != n {
        return Err(Error::malformed(
            "config",
            format!("rootfs.diff_ids has {} entries for {n} layers", ids.len()),
        ));
    }
    ids.iter()
        .map(|s| parse_oci_digest(s, "config rootfs.diff_ids"))
        .collect()
}

fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::malformed("image config", e))
}

/// Loads the image named by `tag` (or the only one) from an OCI layout directory.
pub fn load_oci_dir(dir: &Path, tag: Option<&str>, limits: &Limits) -> Result<Loaded, Error> {
    let layout = read_bounded(&dir.join("oci-layout"), limits.max_json, "oci-layout")?;
    let v: serde_json::Value =
        serde_json::from_slice(&layout).map_err(|e| Error::malformed("oci-layout", e))?;
    if v.get("imageLayoutVersion").and_then(|x| x.as_str()) != Some("1.0.0") {
        return Err(Error::malformed(
            "oci-layout",
            "imageLayoutVersion is not \"1.0.0\"",
        ));
    }
    let idx_bytes = read_bounded(&dir.join("index.json"), limits.max_json, "index.json")?;
    let index: ImageIndex =
        serde_json::from_slice(&idx_bytes).map_err(|e| Error::malformed("index.json", e))?;
    let ref_name = "org.opencontainers.image.ref.name";
    let candidates: Vec<_> = index
        .manifests()
        .iter()
        .filter(|d| match tag {
            Some(t) => {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(ref_name))
                    .map(String::as_str)
                    == Some(t)
            }
            None => true,
        })
        .collect();
    let desc = match candidates.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::malformed(
                "index.json",
                format!(
                    "no image tagged {:?} (tags: {})",
                    tag.unwrap_or(""),
                    tags(&index).join(", ")
                ),
            ))
        }
        _ => {
            return Err(Error::malformed(
                "index.json",
                format!(
                    "several images; name one with oci:DIR:TAG (tags: {})",
                    tags(&index).join(", ")
                ),
            ))
        }
    };
    let mut desc = desc.clone();
    // A nested index (multi-platform): pick linux/amd64, or the only manifest.
    for _ in 0..4 {
        if *desc.media_type() != MediaType::ImageIndex {
            break;
        }
        let (b, _) = read_blob(
            dir,
            desc.digest().as_ref(),
            desc.size(),
            limits.max_json,
            "nested index",
        )?;
        let nested: ImageIndex =
            serde_json::from_slice(&b).map_err(|e| Error::malformed("nested index", e))?;
        let pick = nested
            .manifests()
            .iter()
            .find(|d| {
                d.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == "linux" && p.architecture().to_string() == "amd64"
                })
            })
            .or_else(|| {
                if nested.manifests().len() == 1 {
                    nested.manifests().first()
                } else {
                    None
                }
            })
            .ok_or_else(|| {
                Error::Unsupported("a multi-platform index without a linux/amd64 image".into())
            })?;
        desc = pick.clone();
    }
    if *desc.media_type() != MediaType::ImageManifest
        && desc.media_type().to_string() != "application/vnd.docker.distribution.manifest.v2+json"
    {
        return Err(Error::Unsupported(format!(
            "manifest media type {}",
            desc.media_type()
        )));
    }
    let (mbytes, mdigest) = read_blob(
        dir,
        desc.digest().as_ref(),
        desc.size(),
        limits.max_json,
        "manifest",
    )?;
    let manifest: ImageManifest =
        serde_json::from_slice(&mbytes).map_err(|e| Error::malformed("manifest", e))?;
    let what = format!("config of manifest {}", mdigest.oci());
    let (cbytes, _) = read_blob(
        dir,
        manifest.config().digest().as_ref(),
        manifest.config().size(),
        limits.max_json,
        &what,
    )?;
    let config = parse_config(&cbytes)?;
    if manifest.layers().len() > limits.max_layers {
        return Err(Error::LimitExceeded {
            what: format!("{} layers", manifest.layers().len()),
            limit: limits.max_layers as u64,
            hint: "raise --max-layers if this image is genuine",
        });
    }
    let ids = diff_ids(&config, manifest.layers().len())?;
    let mut layers = Vec::new();
    for (i, (l, diff_id)) in manifest.layers().iter().zip(ids).enumerate() {
        let name = format!("layer {} ({})", i + 1, l.digest());
        let d = parse_oci_digest(l.digest().as_ref(), &name)?;
        layers.push(Layer {
            file: blob_path(dir, &d),
            digest: Some(d),
            size: Some(l.size()),
            declared: Some(layer_compression(l.media_type(), &name)?),
            diff_id,
            name,
        });
    }
    let annotations = manifest
        .annotations()
        .as_ref()
        .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(Loaded {
        config,
        layers,
        annotations,
    })
}

/// Loads the image `source` names, extracting an archive into `scratch` (an empty directory
/// the caller removes). A docker-archive holding an OCI layout (as `skopeo copy` can write)
/// is read as one.
pub fn load(source: &ImageRef, scratch: &Path, limits: &Limits) -> Result<Loaded, Error> {
    let tag = source.tag.as_deref();
    match source.format {
        Format::OciDir => load_oci_dir(&source.path, tag, limits),
        Format::OciArchive => {
            extract_archive(&source.path, scratch, limits)?;
            load_oci_dir(scratch, tag, limits)
        }
        Format::DockerArchive => {
            let links = extract_archive(&source.path, scratch, limits)?;
            if scratch.join("manifest.json").exists() || links.contains_key("/manifest.json") {
                load_docker_dir(scratch, &links, tag, limits)
            } else {
                load_oci_dir(scratch, tag, limits)
            }
        }
    }
}

fn tags(index: &ImageIndex) -> Vec<String> {
    index
        .manifests()
        .iter()
        .filter_map(|d| {
            d.annotations()
                .as_ref()?
                .get("org.opencontainers.image.ref.name")
                .cloned()
        })
        .collect()
}

/// Extracts an (untrusted) image archive into `into`: only regular files, directories and
/// symlinks, canonical paths, within the size and entry limits. Returns the symlinks (path →
/// canonical target inside the archive).
pub fn extract_archive(
    file: &Path,
    into: &Path,
    limits: &Limits,
) -> Result<BTreeMap<String, String>, Error> {
    let f = fs::File::open(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingInput {
            what: "image archive",
            path: file.to_path_buf(),
            hint: "check the path",
        },
        _ => Error::io("opening", file, e),
    })?;
    let ctx = format!("archive {}", file.display());
    let mut r = TarReader::new(std::io::BufReader::with_capacity(1 << 20, f), ctx.clone());
    let mut total: u64 = 0;
    let mut count: u64 = 0;
    let mut links = BTreeMap::new();
    let mut buf = vec![0u8; 1 << 20];
    while let Some(e) = r.next_entry()? {
        count += 1;
        if count > limits.max_entries {
            return Err(Error::LimitExceeded {
                what: format!("{ctx}: number of entries"),
                limit: limits.max_entries,
                hint: "raise --max-entries if this image is genuine",
            });
        }
        if e.path == "/" {
            continue;
        }
        let host = into.join(e.path.trim_start_matches('/'));
        match e.kind {
            Kind::Dir => {
                fs::create_dir_all(&host).map_err(|er| Error::io("creating", &host, er))?
            }
            Kind::Symlink => {
                let target = e.link.clone().unwrap_or_default();
                let resolved =
                    paths::resolve_link(&e.path, &target).ok_or_else(|| Error::UnsafePath {
                        path: e.path.clone(),
                        context: ctx.clone(),
                        reason: "symlink escapes the archive",
                    })?;
                links.insert(e.path.clone(), resolved);
            }
            Kind::File => {
                total = total.saturating_add(e.size);
                if total > limits.max_unpacked_size {
                    return Err(Error::LimitExceeded {
                        what: format!("{ctx}: total size"),
                        limit: limits.max_unpacked_size,
                        hint: "raise --max-size if this image is genuine",
                    });
                }
                if let Some(p) = host.parent() {
                    fs::create_dir_all(p).map_err(|er| Error::io("creating", p, er))?;
                }
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&host)
                    .map_err(|er| Error::io("creating", &host, er))?;
                loop {
                    let n = r.read_data(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    std::io::Write::write_all(&mut out, buf.get(..n).unwrap_or_default())
                        .map_err(|er| Error::io("writing", &host, er))?;
                }
            }
            other => {
                return Err(Error::ForbiddenEntry {
                    layer: ctx.clone(),
                    path: e.path.clone(),
                    kind: other.name(),
                    hint: "an image archive holds only files and directories",
                })
            }
        }
    }
    Ok(links)
}

/// Resolves an archive member name (following the archive's own symlinks, at most 8 hops).
fn archive_member(
    root: &Path,
    links: &BTreeMap<String, String>,
    name: &str,
    ctx: &str,
) -> Result<PathBuf, Error> {
    let mut p = paths::from_entry_name(name.as_bytes(), ctx)?;
    for _ in 0..8 {
        match links.get(&p) {
            Some(t) => p = t.clone(),
            None => return Ok(root.join(p.trim_start_matches('/'))),
        }
    }
    Err(Error::malformed(ctx, format!("symlink loop at {name}")))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Loads a `docker save` archive already extracted into `root`.
pub fn load_docker_dir(
    root: &Path,
    links: &BTreeMap<String, String>,
    tag: Option<&str>,
    limits: &Limits,
) -> Result<Loaded, Error> {
    let ctx = "docker archive manifest.json";
    let mbytes = read_bounded(
        &archive_member(root, links, "manifest.json", ctx)?,
        limits.max_json,
        ctx,
    )?;
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(&mbytes).map_err(|e| Error::malformed(ctx, e))?;
    let matches_tag = |e: &DockerManifestEntry, t: &str| {
        e.repo_tags.as_ref().is_some_and(|ts| {
            ts.iter()
                .any(|x| x == t || x.rsplit_once(':').map(|(_, b)| b) == Some(t))
        })
    };
    let chosen: Vec<&DockerManifestEntry> = match tag {
        Some(t) => entries.iter().filter(|e| matches_tag(e, t)).collect(),
        None => entries.iter().collect(),
    };
    let entry = match chosen.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::malformed(
                ctx,
                format!("no image tagged {:?}", tag.unwrap_or("")),
            ))
        }
        _ => {
            return Err(Error::malformed(
                ctx,
                "several images; name one with docker-archive:FILE:TAG",
            ))
        }
    };
    let cpath = archive_member(root, links, &entry.config, ctx)?;
    let cbytes = read_bounded(&cpath, limits.max_json, "image config")?;
    // Docker names the config after its digest; check it when it does.
    let stem = entry.config.trim_end_matches(".json");
    let stem = stem.rsplit('/').next().unwrap_or(stem);
    if let Ok(expected) = stem.parse::<Digest>() {
        check_blob(&cbytes, &expected, cbytes.len() as u64, "image config")?;
    }
    let config = parse_config(&cbytes)?;
    if entry.layers.len() > limits.max_layers {
        return Err(Error::LimitExceeded {
            what: format!("{} layers", entry.layers.len()),
            limit: limits.max_layers as u64,
            hint: "raise --max-layers if this image is genuine",
        });
    }
    let ids = diff_ids(&config, entry.layers.len())?;
    let mut layers = Vec::new();
    for (i, (l, diff_id)) in entry.layers.iter().zip(ids).enumerate() {
        let name = format!("layer {} ({l})", i + 1);
        let file = archive_member(root, links, l, ctx)?;
        // `blobs/sha256/<hex>` names the blob's digest (docker ≥ 25); older names do not.
        let digest = l
            .strip_prefix("blobs/sha256/")
            .and_then(|h| h.parse::<Digest>().ok());
        layers.push(Layer {
            file,
            digest,
            size: None,
            declared: None,
            diff_id,
            name,
        });
    }
    Ok(Loaded {
        config,
        layers,
        annotations: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r: ImageRef = "oci:/tmp/x:v1".parse().unwrap();
        assert_eq!(
            (r.format, r.path.as_path(), r.tag.as_deref()),
            (Format::OciDir, Path::new("/tmp/x"), Some("v1"))
        );
        let r: ImageRef = "oci:./a/b".parse().unwrap();
        assert_eq!(r.tag, None);
        let r: ImageRef = "docker-archive:img.tar".parse().unwrap();
        assert_eq!(r.format, Format::DockerArchive);
        assert!("docker://alpine".parse::<ImageRef>().is_err());
        assert!("oci:".parse::<ImageRef>().is_err());
        assert_eq!(
            "oci-archive:/a.tar:t"
                .parse::<ImageRef>()
                .unwrap()
                .to_string(),
            "oci-archive:/a.tar:t"
        );
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut m = std::collections::HashMap::new();
        for k in ["z", "a", "m"] {
            m.insert(k.to_string(), 1);
        }
        assert_eq!(canonical_json(&m).unwrap(), br#"{"a":1,"m":1,"z":1}"#);
    }

    #[test]
    fn digests() {
        assert!(matches!(
            parse_oci_digest("sha512:ab", "x"),
            Err(Error::Unsupported(_))
        ));
        assert!(parse_oci_digest("sha256:00", "x").is_err());
    }
}
