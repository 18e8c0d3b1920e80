//! `coffer convert`: an unmodified OCI/Docker image → a confidential image.
//!
//! 1. Load the source (archives are first extracted, bounded, into a private staging directory
//!    beside the output) and check every JSON blob against its descriptor.
//! 2. Read each layer once: a reader thread hashes the compressed blob (descriptor digest and
//!    size) while this thread decompresses, hashes the uncompressed stream (config `diff_id`),
//!    parses the tar and hashes every regular file, applying whiteouts (`.wh.NAME`) and opaque
//!    directories (`.wh..wh..opq`) to an in-memory view of the root filesystem. Nothing is
//!    unpacked to disk. Totals are bounded ([`Limits`]).
//! 3. Build `/coffer/workload.json` (the original Entrypoint/Cmd/Env/WorkingDir/User, trusted
//!    files, symlinks, encrypted files, the image measurement), encrypt the `--encrypt` files
//!    ([`crate::protect`]), rewrite every layer that held one of them without it, and add one
//!    layer with `/coffer/launcher`, the workload file and the encrypted files.
//! 4. Write config (Entrypoint = the launcher, Cmd cleared, labels added), manifest and index
//!    into a staging directory beside the target and rename it into place at the end (archives:
//!    tar the staging layout into a temporary file and rename that). On any error the staging
//!    paths are removed: no partial output.
//!
//! zstd layers are rewritten as plain tar (same entries, new digest and diff_id) because umoci
//! and older runtimes cannot read zstd; every rewritten layer is plain tar, since deflating it
//! again would cost ten times the hashing. Other layer blobs are hard-linked (or copied) byte
//! for byte, so their digests stay.
//! Output is reproducible: everything we write is sorted, timestamps are `SOURCE_DATE_EPOCH`
//! or 0, gzip headers carry mtime 0, JSON keys are sorted and encryption is deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc;

use oci_spec::image::{
    Descriptor, HistoryBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType, PlatformBuilder,
};
use sha2::{Digest as _, Sha256};

use crate::layout::{self, Compression, Format, ImageRef};
use crate::paths::{self, Globs};
use crate::protect::{self, Key, Salt};
use crate::tarball::{self, Kind, LimitHit, TarReader};
use crate::workload::{
    EncryptedFile, SgxInfo, Symlink, TrustedFile, WorkloadFile, DEFAULT_RUNTIME_MOUNTS,
    FORMAT_VERSION, LAUNCHER_PATH, WORKLOAD_PATH,
};
use crate::{Digest, Error};

/// Label carrying the image measurement on the converted image's config.
pub const LABEL_MEASUREMENT: &str = "dev.coffer.image-measurement";
/// Label carrying MRENCLAVE (SGX builds).
pub const LABEL_MRENCLAVE: &str = "dev.coffer.sgx.mrenclave";
/// Label carrying MRSIGNER (SGX builds).
pub const LABEL_MRSIGNER: &str = "dev.coffer.sgx.mrsigner";

/// Bounds on untrusted input. Defaults fit real images (tens of GiB, a million files).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Total uncompressed bytes across all layers (decompression-bomb bound).
    pub max_unpacked_size: u64,
    /// Total tar entries across all layers.
    pub max_entries: u64,
    /// Number of layers.
    pub max_layers: usize,
    /// Size of any JSON document (index, manifest, config).
    pub max_json: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_unpacked_size: 64 << 30,
            max_entries: 2_000_000,
            max_layers: 256,
            max_json: 8 << 20,
        }
    }
}

/// Everything `convert` needs.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// The input image.
    pub source: ImageRef,
    /// The output image (must not exist).
    pub target: ImageRef,
    /// The static launcher binary to put at `/coffer/launcher`.
    pub launcher: PathBuf,
    /// Globs of files to trust (empty: all files).
    pub trusted: Vec<String>,
    /// Globs of files that are writable/untrusted: never hashed.
    pub allowed: Vec<String>,
    /// Extra runtime-mounted paths (added to [`DEFAULT_RUNTIME_MOUNTS`]); never hashed.
    pub runtime_mounts: Vec<String>,
    /// Globs of files to store encrypted.
    pub encrypt: Vec<String>,
    /// The key for `encrypt` (required when `encrypt` is not empty).
    pub key: Option<Key>,
    /// ISVPRODID recorded in the workload file.
    pub isv_prod_id: u16,
    /// ISVSVN recorded in the workload file.
    pub isv_svn: u16,
    /// Timestamp for everything written (`SOURCE_DATE_EPOCH`; default 0).
    pub source_date_epoch: Option<u64>,
    /// Input bounds.
    pub limits: Limits,
    /// SGX results to record (labels and workload `sgx`), computed by a caller that signs the
    /// enclave elsewhere. `coffer_image::sgx::convert_sgx` (feature `sgx`) computes them itself
    /// and refuses this field.
    pub sgx: Option<SgxInfo>,
}

/// What a conversion produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConvertReport {
    /// The output path.
    pub output: PathBuf,
    /// The output reference (`oci:DIR:TAG` …).
    pub reference: String,
    /// The image measurement (simulation: the MRENCLAVE the launcher will report).
    pub image_measurement: Digest,
    /// Digest of the output manifest.
    pub manifest_digest: Digest,
    /// Digest of the output config.
    pub config_digest: Digest,
    /// Number of trusted files.
    pub trusted_files: usize,
    /// Number of symlinks recorded.
    pub symlinks: usize,
    /// Paths stored encrypted.
    pub encrypted_files: Vec<String>,
    /// Number of original layers rewritten (to drop plaintext of encrypted files, device
    /// nodes or FIFOs, or to re-encode zstd).
    pub rewritten_layers: usize,
    /// Device nodes and FIFOs left out (the runtime provides `/dev`).
    pub dropped_special_files: Vec<String>,
    /// Uncompressed bytes of layer content read.
    pub bytes_read: u64,
    /// ISVPRODID recorded.
    pub isv_prod_id: u16,
    /// ISVSVN recorded.
    pub isv_svn: u16,
    /// MRENCLAVE/MRSIGNER of the Gramine enclave (`--tee sgx` builds only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sgx: Option<SgxInfo>,
    /// The workload file written into the image.
    #[serde(skip)]
    pub workload: WorkloadFile,
}

/// Progress events for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A new stage with its total (bytes; 0 if unknown).
    Stage(&'a str, u64),
    /// Bytes done in the current stage.
    Advance(u64),
}

#[derive(Debug, Clone)]
enum NodeKind {
    Dir,
    File {
        size: u64,
        sha256: Digest,
        spill: Option<PathBuf>,
    },
    Symlink(String),
}

#[derive(Debug, Clone)]
struct Node {
    kind: NodeKind,
    mode: u32,
    uid: u64,
    gid: u64,
    layer: usize,
}

/// The measured view of the root filesystem.
#[derive(Default)]
struct View {
    nodes: BTreeMap<String, Node>,
}

impl View {
    /// Removes the descendants of `dir` (not `dir` itself) that came from layers below `layer`.
    fn remove_below(&mut self, dir: &str, layer: usize, include_self: bool) {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, n)| n.layer < layer)
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
        if include_self && self.nodes.get(dir).is_some_and(|n| n.layer < layer) {
            self.nodes.remove(dir);
        }
    }

    fn remove_subtree(&mut self, dir: &str) {
        self.remove_below(dir, usize::MAX, false);
    }
}

/// Removes the staging paths unless disarmed.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() {
                let _ = fs::remove_dir_all(p);
            } else {
                let _ = fs::remove_file(p);
            }
        }
    }
}

/// A writer that hashes and counts what passes through.
struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }
    fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest(self.hash.finalize().into()), self.len)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        let done = buf.get(..n).unwrap_or_default();
        self.hash.update(done);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads chunks sent by the blob-reading thread.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn fill(&mut self) -> bool {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return false,
            }
        }
        true
    }
    fn peek(&mut self) -> &[u8] {
        self.fill();
        self.cur.get(self.pos..).unwrap_or_default()
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.fill() {
            return Ok(0);
        }
        let avail = self.cur.get(self.pos..).unwrap_or_default();
        let n = avail.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), avail.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n;
        Ok(n)
    }
}

/// Counts (and optionally hashes) the uncompressed stream, enforcing the total-size limit.
struct Counting<'a, R> {
    inner: R,
    hash: Option<Sha256>,
    total: &'a mut u64,
    limit: u64,
    layer_bytes: u64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.total += n as u64;
        self.layer_bytes += n as u64;
        if *self.total > self.limit {
            return Err(std::io::Error::other(LimitHit {
                what: "total uncompressed size of the layers".into(),
                limit: self.limit,
                hint: "raise --max-size if this image is genuine (or it is a decompression bomb)",
            }));
        }
        if let Some(h) = self.hash.as_mut() {
            h.update(buf.get(..n).unwrap_or_default());
        }
        Ok(n)
    }
}

struct Scan {
    /// Layer indices that held an entry matching `--encrypt`.
    rewrite: BTreeSet<usize>,
    /// Device nodes and FIFOs left out of the output (`layer name: path`).
    dropped: Vec<String>,
    bytes: u64,
    entries: u64,
    spill_count: u64,
}

fn io_err<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, p, e)
}

/// What an enclave build step (`--tee sgx`) adds to a conversion.
#[cfg_attr(not(feature = "sgx"), allow(dead_code))]
pub(crate) struct EnclaveOutput<'a> {
    /// Recorded in the labels and the report.
    pub(crate) info: SgxInfo,
    /// Files added to the coffer layer: `(absolute path under /coffer, bytes, mode)`; their
    /// parent directories are added too. Borrowed where the step already holds them (a
    /// Gramine installation is tens of MiB).
    pub(crate) files: Vec<(String, std::borrow::Cow<'a, [u8]>, u32)>,
    /// Arguments after `/coffer/launcher` in the image's ENTRYPOINT.
    pub(crate) entrypoint_args: Vec<String>,
}

/// An enclave build step: gets the sealed workload file and its exact JSON bytes (as written
/// into the image) and returns what to add.
pub(crate) type EnclaveHook<'a> =
    &'a dyn Fn(&WorkloadFile, &[u8]) -> Result<EnclaveOutput<'a>, Error>;

/// Writes the stored form of one `--encrypt` file from its plaintext (in the file at the
/// given path) instead of Coffer's own format, and returns the plaintext MAC to record
/// ([`EncryptedFile::plaintext_mac`]). `--tee sgx` uses Gramine's format.
pub(crate) type FileEncryptor<'a> =
    &'a dyn Fn(&Key, &str, &Digest, &Path, &mut dyn Write) -> Result<Option<Digest>, Error>;

/// Converts an image; see the module docs.
pub fn convert(
    opts: &ConvertOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<ConvertReport, Error> {
    convert_with(opts, None, None, progress)
}

/// [`convert`] with an optional enclave build step run once the workload file is final, and
/// an optional format for encrypted files.
pub(crate) fn convert_with(
    opts: &ConvertOptions,
    enclave: Option<EnclaveHook<'_>>,
    encryptor: Option<FileEncryptor<'_>>,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<ConvertReport, Error> {
    let encrypt = Globs::new(&opts.encrypt)?;
    let trusted = Globs::new(&opts.trusted)?;
    let allowed = Globs::new(&opts.allowed)?;
    let mut mounts: Vec<String> = DEFAULT_RUNTIME_MOUNTS
        .iter()
        .map(|s| s.to_string())
        .collect();
    for m in &opts.runtime_mounts {
        let c = paths::from_entry_name(m.as_bytes(), "--mount")?;
        if c == "/" {
            return Err(Error::UnsafePath {
                path: m.clone(),
                context: "--mount".into(),
                reason: "the root cannot be a runtime mount",
            });
        }
        mounts.push(c);
    }
    mounts.sort();
    mounts.dedup();
    if !encrypt.is_empty() && opts.key.is_none() {
        return Err(Error::BadKey("--encrypt needs a key (generate one with --key-out FILE, or reuse one with --key FILE)"));
    }
    let target = &opts.target.path;
    if fs::symlink_metadata(target).is_ok() {
        return Err(Error::OutputExists(target.clone()));
    }
    let launcher = fs::read(&opts.launcher).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingInput {
            what: "launcher binary",
            path: opts.launcher.clone(),
            hint: "build the static launcher with `bash scripts/build-launcher.sh` or pass --launcher PATH",
        },
        _ => Error::io("reading", &opts.launcher, e),
    })?;

    // Staging beside the target (same filesystem, so the final rename is atomic).
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let staging = parent.join(format!(".{base}.coffer-tmp-{}-{nonce}", std::process::id()));
    fs::create_dir(&staging).map_err(io_err("creating", &staging))?;
    let mut cleanup = Cleanup(vec![staging.clone()]);
    let work = staging.join("work");
    let out = staging.join("image");
    for d in [
        work.join("spill"),
        work.join("enc"),
        out.join("blobs").join("sha256"),
    ] {
        fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
    }

    // 1. Load.
    let input = work.join("input");
    fs::create_dir_all(&input).map_err(io_err("creating", &input))?;
    let loaded = layout::load(&opts.source, &input, &opts.limits)?;

    // 2. Scan the layers into the view.
    let mut view = View::default();
    let mut scan = Scan {
        rewrite: BTreeSet::new(),
        dropped: Vec::new(),
        bytes: 0,
        entries: 0,
        spill_count: 0,
    };
    let total: u64 = loaded
        .layers
        .iter()
        .map(|l| fs::metadata(&l.file).map(|m| m.len()).unwrap_or(0))
        .sum();
    progress(Progress::Stage("hashing layers", total));
    let mut verified: Vec<(Digest, u64, Compression)> = Vec::new();
    for (i, layer) in loaded.layers.iter().enumerate() {
        verified.push(scan_layer(
            i,
            layer,
            &mut view,
            &mut scan,
            &encrypt,
            &work.join("spill"),
            &opts.limits,
            progress,
        )?);
    }
    if view.nodes.keys().any(|k| paths::is_under(k, "/coffer")) {
        return Err(Error::Unsupported(
            "the image already has /coffer (is it converted already?); convert the original image"
                .into(),
        ));
    }

    // 3. Workload file and encrypted files.
    let epoch = opts.source_date_epoch.unwrap_or(0);
    let cfg = loaded.config.config().clone().unwrap_or_default();
    let mut wf = WorkloadFile {
        format_version: FORMAT_VERSION,
        entrypoint: cfg.entrypoint().clone().unwrap_or_default(),
        cmd: cfg.cmd().clone().unwrap_or_default(),
        env: cfg.env().clone().unwrap_or_default(),
        working_dir: cfg.working_dir().clone().unwrap_or_default(),
        user: cfg.user().clone().unwrap_or_default(),
        trusted_files: Vec::new(),
        symlinks: Vec::new(),
        allowed: allowed.patterns().to_vec(),
        runtime_mounts: mounts.clone(),
        encrypted_files: Vec::new(),
        isv_prod_id: opts.isv_prod_id,
        isv_svn: opts.isv_svn,
        image_measurement: Digest::default(),
        sgx: None,
    };
    struct Enc {
        path: String,
        file: PathBuf,
        size: u64,
        mode: u32,
        uid: u64,
        gid: u64,
    }
    let mut encs: Vec<Enc> = Vec::new();
    let key = opts.key.clone();
    for (path, node) in &view.nodes {
        if mounts.iter().any(|m| paths::is_under(path, m)) {
            continue;
        }
        match &node.kind {
            NodeKind::Dir => {}
            NodeKind::Symlink(t) => {
                if !allowed.is_match(path) {
                    wf.symlinks.push(Symlink {
                        path: path.clone(),
                        target: t.clone(),
                    });
                }
            }
            NodeKind::File {
                size,
                sha256,
                spill,
                ..
            } => {
                if encrypt.is_match(path) {
                    let (Some(spill), Some(key)) = (spill, key.as_ref()) else {
                        return Err(Error::malformed(
                            path.as_str(),
                            "internal: encrypted file without its content",
                        ));
                    };
                    let file = work.join("enc").join(format!("{}", encs.len()));
                    let f = fs::File::create(&file).map_err(io_err("creating", &file))?;
                    let mut hw = HashWriter::new(BufWriter::new(f));
                    let plaintext_mac = match encryptor {
                        Some(encrypt_file) => encrypt_file(key, path, sha256, spill, &mut hw)?,
                        None => {
                            let salt = Salt::deterministic(key, path, sha256);
                            let input = fs::File::open(spill).map_err(io_err("reading", spill))?;
                            protect::encrypt(
                                key,
                                path,
                                salt,
                                std::io::BufReader::new(input),
                                &mut hw,
                            )?;
                            None
                        }
                    };
                    let (_, digest, len) = hw.finish();
                    wf.encrypted_files.push(EncryptedFile {
                        path: path.clone(),
                        sha256: digest,
                        size: len,
                        mode: node.mode,
                        plaintext_mac,
                    });
                    encs.push(Enc {
                        path: path.clone(),
                        file,
                        size: len,
                        mode: node.mode,
                        uid: node.uid,
                        gid: node.gid,
                    });
                    let _ = size;
                } else if !allowed.is_match(path) && (trusted.is_empty() || trusted.is_match(path))
                {
                    wf.trusted_files.push(TrustedFile {
                        path: path.clone(),
                        sha256: *sha256,
                        size: *size,
                        mode: node.mode,
                    });
                }
            }
        }
    }
    wf.trusted_files.push(TrustedFile {
        path: LAUNCHER_PATH.into(),
        sha256: Digest::of(&launcher),
        size: launcher.len() as u64,
        mode: 0o755,
    });
    wf.seal();
    if let Some(s) = &opts.sgx {
        wf.sgx = Some(s.clone());
    }
    let wf_json = wf.to_json();
    // The enclave step measures the workload file as written (its `sgx` section stays empty:
    // the Gramine manifest lists the file's SHA-256, so it cannot also hold MRENCLAVE).
    let enclave_out = match enclave {
        Some(hook) => Some(hook(&wf, &wf_json)?),
        None => None,
    };
    let sgx_info = enclave_out
        .as_ref()
        .map(|e| e.info.clone())
        .or_else(|| opts.sgx.clone());

    // 4. Layers.
    let blobs = out.join("blobs").join("sha256");
    let mut layer_descs: Vec<Descriptor> = Vec::new();
    let mut diff_ids: Vec<String> = Vec::new();
    progress(Progress::Stage("writing layers", total));
    for (i, (layer, (digest, size, comp))) in loaded.layers.iter().zip(&verified).enumerate() {
        // zstd layers are rewritten too: umoci and older runtimes cannot read zstd.
        if scan.rewrite.contains(&i) || *comp == Compression::Zstd {
            let (d, s) = rewrite_layer(layer, *comp, &encrypt, &work, &blobs)?;
            layer_descs.push(descriptor(Compression::None.media_type(), s, &d)?);
            diff_ids.push(d.oci());
        } else {
            let dst = blobs.join(digest.hex());
            if !dst.exists() && fs::hard_link(&layer.file, &dst).is_err() {
                fs::copy(&layer.file, &dst).map_err(io_err("copying", &dst))?;
            }
            layer_descs.push(descriptor(comp.media_type(), *size, digest)?);
            diff_ids.push(layer.diff_id.oci());
        }
        progress(Progress::Advance(*size));
    }
    // The coffer layer, entries sorted by path.
    let mut entries: Vec<(String, LayerItem)> = vec![
        ("/coffer".into(), LayerItem::Dir),
        (LAUNCHER_PATH.into(), LayerItem::Bytes(&launcher, 0o755)),
        (WORKLOAD_PATH.into(), LayerItem::Bytes(&wf_json, 0o644)),
    ];
    if let Some(eo) = &enclave_out {
        let mut dirs = std::collections::BTreeSet::new();
        for (path, bytes, mode) in &eo.files {
            let mut d = paths::parent(path);
            while d != "/" && d != "/coffer" && dirs.insert(d.to_string()) {
                d = paths::parent(d);
            }
            entries.push((path.clone(), LayerItem::Bytes(bytes, *mode)));
        }
        entries.extend(dirs.into_iter().map(|d| (d, LayerItem::Dir)));
    }
    for e in &encs {
        entries.push((
            e.path.clone(),
            LayerItem::File {
                file: e.file.clone(),
                size: e.size,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
            },
        ));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let (d, s, diff) = write_new_layer(&entries, epoch, &blobs, &work)?;
    layer_descs.push(descriptor(MediaType::ImageLayerGzip, s, &d)?);
    diff_ids.push(diff.oci());

    // 5. Config, manifest, index.
    let mut config = loaded.config.clone();
    let mut c = cfg.clone();
    let mut entrypoint = vec![LAUNCHER_PATH.to_string()];
    if let Some(eo) = &enclave_out {
        entrypoint.extend(eo.entrypoint_args.iter().cloned());
    }
    c.set_entrypoint(Some(entrypoint));
    c.set_cmd(None);
    let mut labels = c.labels().clone().unwrap_or_default();
    labels.insert(LABEL_MEASUREMENT.into(), wf.image_measurement.hex());
    if let Some(s) = &sgx_info {
        labels.insert(LABEL_MRENCLAVE.into(), s.mrenclave.hex());
        labels.insert(LABEL_MRSIGNER.into(), s.mrsigner.hex());
    }
    c.set_labels(Some(labels));
    config.set_config(Some(c));
    let mut rootfs = config.rootfs().clone();
    rootfs.set_diff_ids(diff_ids);
    config.set_rootfs(rootfs);
    let mut history = config.history().clone().unwrap_or_default();
    let mut h = HistoryBuilder::default()
        .created_by("coffer convert")
        .comment(format!(
            "coffer launcher and workload; image measurement {}",
            wf.image_measurement
        ));
    if opts.source_date_epoch.is_some() {
        h = h.created(rfc3339(epoch));
    }
    history.push(h.build().map_err(|e| Error::malformed("history", e))?);
    config.set_history(Some(history));
    let config_bytes = layout::canonical_json(&config)?;
    let config_digest = write_blob(&blobs, &config_bytes)?;
    let mut mb = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            config_bytes.len() as u64,
            &config_digest,
        )?)
        .layers(layer_descs.clone());
    if !loaded.annotations.is_empty() {
        mb = mb.annotations(
            loaded
                .annotations
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    let manifest = mb.build().map_err(|e| Error::malformed("manifest", e))?;
    let manifest_bytes = layout::canonical_json(&manifest)?;
    let manifest_digest = write_blob(&blobs, &manifest_bytes)?;
    let mut mdesc = descriptor(
        MediaType::ImageManifest,
        manifest_bytes.len() as u64,
        &manifest_digest,
    )?;
    let platform = PlatformBuilder::default()
        .architecture(config.architecture().clone())
        .os(config.os().clone())
        .build()
        .map_err(|e| Error::malformed("platform", e))?;
    mdesc.set_platform(Some(platform));
    if let Some(t) = &opts.target.tag {
        mdesc.set_annotations(Some(
            [("org.opencontainers.image.ref.name".to_string(), t.clone())]
                .into_iter()
                .collect(),
        ));
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![mdesc])
        .build()
        .map_err(|e| Error::malformed("index", e))?;
    write_file(&out.join("index.json"), &layout::canonical_json(&index)?)?;
    write_file(
        &out.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    if opts.target.format == Format::DockerArchive {
        let tag = opts.target.tag.clone().map(|t| {
            if t.contains(':') {
                t
            } else {
                format!("coffer/converted:{t}")
            }
        });
        let m = serde_json::json!([{
            "Config": format!("blobs/sha256/{}", config_digest.hex()),
            "RepoTags": tag.map(|t| vec![t]).unwrap_or_default(),
            "Layers": layer_descs.iter().map(|d| format!("blobs/sha256/{}", d.digest().digest())).collect::<Vec<_>>(),
        }]);
        write_file(&out.join("manifest.json"), &layout::canonical_json(&m)?)?;
    }

    // 6. Into place.
    progress(Progress::Stage("finishing", 0));
    match opts.target.format {
        Format::OciDir => {
            fs::rename(&out, target).map_err(io_err("renaming into", target))?;
        }
        Format::OciArchive | Format::DockerArchive => {
            let tmp = parent.join(format!(
                ".{base}.coffer-tmp-{}-{nonce}.tar",
                std::process::id()
            ));
            cleanup.0.push(tmp.clone());
            tar_layout(&out, &tmp, epoch)?;
            fs::rename(&tmp, target).map_err(io_err("renaming into", target))?;
        }
    }
    drop(cleanup);
    Ok(ConvertReport {
        output: target.clone(),
        reference: opts.target.to_string(),
        image_measurement: wf.image_measurement,
        manifest_digest,
        config_digest,
        trusted_files: wf.trusted_files.len(),
        symlinks: wf.symlinks.len(),
        encrypted_files: wf.encrypted_files.iter().map(|e| e.path.clone()).collect(),
        rewritten_layers: scan.rewrite.len(),
        dropped_special_files: scan.dropped,
        bytes_read: scan.bytes,
        isv_prod_id: wf.isv_prod_id,
        isv_svn: wf.isv_svn,
        sgx: sgx_info,
        workload: wf,
    })
}

fn rfc3339(epoch: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(epoch).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn descriptor(mt: MediaType, size: u64, d: &Digest) -> Result<Descriptor, Error> {
    let od =
        oci_spec::image::Digest::from_str(&d.oci()).map_err(|e| Error::malformed("digest", e))?;
    Ok(Descriptor::new(mt, size, od))
}

fn write_file(p: &Path, bytes: &[u8]) -> Result<(), Error> {
    fs::write(p, bytes).map_err(io_err("writing", p))
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<Digest, Error> {
    let d = Digest::of(bytes);
    write_file(&blobs.join(d.hex()), bytes)?;
    Ok(d)
}

/// Reads one layer: verifies blob digest/size and diff_id, applies it to the view.
#[allow(clippy::too_many_arguments)]
fn scan_layer(
    index: usize,
    layer: &layout::Layer,
    view: &mut View,
    scan: &mut Scan,
    encrypt: &Globs,
    spill_dir: &Path,
    limits: &Limits,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<(Digest, u64, Compression), Error> {
    let file = fs::File::open(&layer.file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::malformed(
            layer.name.as_str(),
            format!("blob {} is missing", layer.file.display()),
        ),
        _ => Error::io("opening", &layer.file, e),
    })?;
    let meta_len = file
        .metadata()
        .map_err(io_err("reading", &layer.file))?
        .len();
    if let Some(s) = layer.size {
        if s != meta_len {
            return Err(Error::SizeMismatch {
                what: layer.name.clone(),
                expected: s,
                found: meta_len,
            });
        }
    }
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(8);
    std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<(Digest, u64), std::io::Error> {
            let mut file = file;
            let mut h = Sha256::new();
            let mut n_total = 0u64;
            let mut tx = Some(tx);
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                h.update(&buf);
                n_total += n as u64;
                progress(Progress::Advance(n as u64));
                // Keep hashing to the end even if the parser stopped (its error may be caused by a
                // corrupted blob, which the digest then names).
                if let Some(t) = &tx {
                    if t.send(buf).is_err() {
                        tx = None;
                    }
                }
            }
            Ok((Digest(h.finalize().into()), n_total))
        });
        let parsed = parse_layer(index, layer, rx, view, scan, encrypt, spill_dir, limits);
        let (digest, size) = match reader.join() {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(Error::io("reading", &layer.file, e)),
            Err(_) => {
                return Err(Error::io(
                    "reading",
                    &layer.file,
                    std::io::Error::other("reader thread panicked"),
                ))
            }
        };
        if let Some(expected) = layer.digest {
            if expected != digest {
                return Err(Error::DigestMismatch {
                    what: layer.name.clone(),
                    expected: expected.oci(),
                    found: digest.oci(),
                });
            }
        }
        let (comp, diff) = parsed?;
        let diff = diff.unwrap_or(digest);
        if diff != layer.diff_id {
            return Err(Error::DigestMismatch {
                what: format!(
                    "{} uncompressed content (config rootfs.diff_ids)",
                    layer.name
                ),
                expected: layer.diff_id.oci(),
                found: diff.oci(),
            });
        }
        Ok((digest, size, comp))
    })
}

/// Decompresses and parses a layer from the channel; returns the compression and the diff_id
/// (`None` when uncompressed: then it equals the blob digest).
#[allow(clippy::too_many_arguments)]
fn parse_layer(
    index: usize,
    layer: &layout::Layer,
    rx: mpsc::Receiver<Vec<u8>>,
    view: &mut View,
    scan: &mut Scan,
    encrypt: &Globs,
    spill_dir: &Path,
    limits: &Limits,
) -> Result<(Compression, Option<Digest>), Error> {
    let mut ch = ChannelReader {
        rx,
        cur: Vec::new(),
        pos: 0,
    };
    let sniffed = Compression::sniff(ch.peek());
    if let Some(declared) = layer.declared {
        if declared != sniffed {
            return Err(Error::malformed(
                layer.name.as_str(),
                format!("descriptor says {declared:?} compression but the blob is {sniffed:?}"),
            ));
        }
    }
    let inner: Box<dyn Read> = match sniffed {
        Compression::None => Box::new(ch),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            std::io::BufReader::with_capacity(1 << 16, ch),
        )),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(ch)
                .map_err(|e| Error::malformed(layer.name.as_str(), e))?,
        ),
    };
    let mut total = scan.bytes;
    let counting = Counting {
        inner,
        hash: if sniffed == Compression::None {
            None
        } else {
            Some(Sha256::new())
        },
        total: &mut total,
        limit: limits.max_unpacked_size,
        layer_bytes: 0,
    };
    let mut tar = TarReader::new(counting, layer.name.clone());
    let mut buf = vec![0u8; 256 * 1024];
    while let Some(e) = tar.next_entry()? {
        scan.entries += 1;
        if scan.entries > limits.max_entries {
            return Err(Error::LimitExceeded {
                what: "number of layer entries".into(),
                limit: limits.max_entries,
                hint: "raise --max-entries if this image is genuine",
            });
        }
        let name = paths::file_name(&e.path);
        if let Some(victim) = name.strip_prefix(".wh.") {
            if e.kind == Kind::Dir {
                return Err(Error::malformed(
                    layer.name.as_str(),
                    format!("whiteout {} is a directory", e.path),
                ));
            }
            let dir = paths::parent(&e.path);
            if victim == ".wh..opq" {
                view.remove_below(dir, index, false);
            } else if victim.is_empty() || victim == "." || victim == ".." {
                return Err(Error::UnsafePath {
                    path: e.path.clone(),
                    context: layer.name.clone(),
                    reason: "whiteout of an invalid name",
                });
            } else {
                view.remove_below(&paths::join(dir, victim), index, true);
            }
            continue;
        }
        if e.path == "/" {
            if e.kind != Kind::Dir {
                return Err(Error::malformed(
                    layer.name.as_str(),
                    "the root entry is not a directory",
                ));
            }
            continue;
        }
        if matches!(e.kind, Kind::CharDevice | Kind::BlockDevice | Kind::Fifo) {
            // Every image made from a root filesystem tarball has these; the runtime provides
            // /dev. The layer is rewritten without them, so what a runtime unpacks and what the
            // view (and thus the measurement) holds stay the same.
            scan.rewrite.insert(index);
            scan.dropped.push(e.path.clone());
            continue;
        }
        // Parents must be directories (implicitly created when absent, as tar extraction does).
        let mut anc = paths::parent(&e.path);
        let mut missing = Vec::new();
        while anc != "/" {
            match view.nodes.get(anc).map(|n| &n.kind) {
                Some(NodeKind::Dir) => break,
                Some(NodeKind::Symlink(_)) => {
                    return Err(Error::Unsupported(format!(
                        "{}: entry {} lies below {anc}, which an earlier entry made a symlink (extraction would follow it)",
                        layer.name, e.path
                    )))
                }
                Some(NodeKind::File { .. }) => {
                    return Err(Error::malformed(layer.name.as_str(), format!("entry {} lies below the file {anc}", e.path)))
                }
                None => missing.push(anc.to_string()),
            }
            anc = paths::parent(anc);
        }
        for m in missing {
            view.nodes.insert(
                m,
                Node {
                    kind: NodeKind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    layer: index,
                },
            );
        }
        let kind = match e.kind {
            Kind::Dir => NodeKind::Dir,
            Kind::Symlink => {
                let t = e.link.clone().unwrap_or_default();
                if t.is_empty() || paths::resolve_link(&e.path, &t).is_none() {
                    return Err(Error::UnsafePath {
                        path: format!("{} -> {t}", e.path),
                        context: layer.name.clone(),
                        reason: "symlink target is empty or climbs out of the root",
                    });
                }
                NodeKind::Symlink(t)
            }
            Kind::Hardlink => {
                let t = e.link.clone().unwrap_or_default();
                let Some(Node {
                    kind:
                        NodeKind::File {
                            size,
                            sha256,
                            spill,
                            ..
                        },
                    ..
                }) = view.nodes.get(&t)
                else {
                    return Err(Error::malformed(
                        layer.name.as_str(),
                        format!(
                            "hard link {} points to {t}, which is not a regular file in the image",
                            e.path
                        ),
                    ));
                };
                if encrypt.is_match(&e.path) != encrypt.is_match(&t) {
                    return Err(Error::Unsupported(format!(
                        "{} is a hard link to {t}; --encrypt must cover both or neither",
                        e.path
                    )));
                }
                if encrypt.is_match(&e.path) {
                    scan.rewrite.insert(index);
                }
                NodeKind::File {
                    size: *size,
                    sha256: *sha256,
                    spill: spill.clone(),
                }
            }
            Kind::File => {
                let spill = if encrypt.is_match(&e.path) {
                    scan.rewrite.insert(index);
                    scan.spill_count += 1;
                    Some(spill_dir.join(scan.spill_count.to_string()))
                } else {
                    None
                };
                let mut out = match &spill {
                    Some(p) => Some(BufWriter::new(
                        fs::File::create(p).map_err(io_err("creating", p))?,
                    )),
                    None => None,
                };
                let mut h = Sha256::new();
                let mut n_total = 0u64;
                loop {
                    let n = tar.read_data(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    let chunk = buf.get(..n).unwrap_or_default();
                    h.update(chunk);
                    n_total += n as u64;
                    if let (Some(o), Some(p)) = (out.as_mut(), spill.as_ref()) {
                        o.write_all(chunk).map_err(io_err("writing", p))?;
                    }
                }
                if let (Some(mut o), Some(p)) = (out, spill.as_ref()) {
                    o.flush().map_err(io_err("writing", p))?;
                }
                NodeKind::File {
                    size: n_total,
                    sha256: Digest(h.finalize().into()),
                    spill,
                }
            }
            // Dropped above, before any parent is implied.
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => continue,
        };
        let replacing_dir = matches!(
            view.nodes.get(&e.path).map(|n| &n.kind),
            Some(NodeKind::Dir)
        );
        if replacing_dir && !matches!(kind, NodeKind::Dir) {
            view.remove_subtree(&e.path);
        }
        view.nodes.insert(
            e.path.clone(),
            Node {
                kind,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                layer: index,
            },
        );
    }
    // Drain what follows the end-of-archive marker so digests cover the whole stream.
    let mut counting = tar.into_inner();
    loop {
        match counting.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(tarball::stream_error(&layer.name, e)),
        }
    }
    let diff = counting.hash.take().map(|h| Digest(h.finalize().into()));
    drop(counting);
    scan.bytes = total;
    Ok((sniffed, diff))
}

/// Rewrites a layer without the entries `encrypt` matches (their plaintext must not stay in
/// the image), uncompressed. Returns its digest (which is also its diff_id) and size.
fn rewrite_layer(
    layer: &layout::Layer,
    comp: Compression,
    encrypt: &Globs,
    work: &Path,
    blobs: &Path,
) -> Result<(Digest, u64), Error> {
    let f = fs::File::open(&layer.file).map_err(io_err("opening", &layer.file))?;
    let input: Box<dyn Read> = match comp {
        Compression::None => Box::new(std::io::BufReader::new(f)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            f,
        ))),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(f)
                .map_err(|e| Error::malformed(layer.name.as_str(), e))?,
        ),
    };
    let tmp = work.join("rewrite.tmp");
    let out = fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
    // A rewritten layer is written uncompressed, whatever it was: deflating it again would cost
    // ten times the hashing (BENCHMARKS.md, "Real images built from Debian packages"), and the
    // layers rewritten are few (those with device nodes or encrypted files).
    let mut w = HashWriter::new(BufWriter::new(out));
    let mut tar = TarReader::new(input, layer.name.clone());
    let mut buf = vec![0u8; 256 * 1024];
    let werr = io_err("writing", &tmp);
    let write = |w: &mut HashWriter<_>, b: &[u8]| -> Result<(), Error> {
        w.write_all(b).map_err(|e| Error::io("writing", &tmp, e))
    };
    while let Some(e) = tar.next_entry()? {
        write(&mut w, &e.global_raw)?;
        let drop_it = match e.kind {
            Kind::File | Kind::Hardlink => encrypt.is_match(&e.path),
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => true,
            Kind::Dir | Kind::Symlink => false,
        };
        if drop_it {
            continue;
        }
        write(&mut w, &e.raw)?;
        loop {
            let n = tar.read_data(&mut buf)?;
            if n == 0 {
                break;
            }
            write(&mut w, buf.get(..n).unwrap_or_default())?;
        }
        write(&mut w, &vec![0u8; tarball::padding(e.size)])?;
    }
    write(&mut w, &[0u8; 1024])?;
    let (mut out, diff, size) = w.finish();
    out.flush().map_err(werr)?;
    let dst = blobs.join(diff.hex());
    fs::rename(&tmp, &dst).map_err(io_err("renaming", &dst))?;
    Ok((diff, size))
}

enum LayerItem<'a> {
    Dir,
    Bytes(&'a [u8], u32),
    File {
        file: PathBuf,
        size: u64,
        mode: u32,
        uid: u64,
        gid: u64,
    },
}

fn header(
    kind: tar::EntryType,
    mode: u32,
    size: u64,
    epoch: u64,
    uid: u64,
    gid: u64,
) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(epoch);
    h.set_uid(uid);
    h.set_gid(gid);
    h
}

/// Writes the coffer layer (gzip, deterministic). Returns (digest, size, diff_id).
fn write_new_layer(
    entries: &[(String, LayerItem<'_>)],
    epoch: u64,
    blobs: &Path,
    work: &Path,
) -> Result<(Digest, u64, Digest), Error> {
    let tmp = work.join("layer.tmp");
    let out = fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
    let gz = flate2::GzBuilder::new().mtime(0).write(
        HashWriter::new(BufWriter::new(out)),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(HashWriter::new(gz));
    let werr = |e| Error::io("writing", &tmp, e);
    for (path, item) in entries {
        let rel = path.trim_start_matches('/');
        match item {
            LayerItem::Dir => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0, epoch, 0, 0);
                b.append_data(&mut h, format!("{rel}/"), std::io::empty())
                    .map_err(werr)?;
            }
            LayerItem::Bytes(data, mode) => {
                let mut h = header(
                    tar::EntryType::Regular,
                    *mode,
                    data.len() as u64,
                    epoch,
                    0,
                    0,
                );
                b.append_data(&mut h, rel, *data).map_err(werr)?;
            }
            LayerItem::File {
                file,
                size,
                mode,
                uid,
                gid,
            } => {
                let mut h = header(tar::EntryType::Regular, *mode, *size, epoch, *uid, *gid);
                let f = fs::File::open(file).map_err(io_err("reading", file))?;
                b.append_data(&mut h, rel, std::io::BufReader::new(f))
                    .map_err(werr)?;
            }
        }
    }
    let w = b.into_inner().map_err(werr)?;
    let (gz, diff, _) = w.finish();
    let inner = gz.finish().map_err(werr)?;
    let (mut bw, digest, size) = inner.finish();
    bw.flush().map_err(werr)?;
    drop(bw);
    let dst = blobs.join(digest.hex());
    fs::rename(&tmp, &dst).map_err(io_err("renaming", &dst))?;
    Ok((digest, size, diff))
}

/// Tars an image layout directory deterministically (sorted, mtime `epoch`, owner 0).
fn tar_layout(dir: &Path, to: &Path, epoch: u64) -> Result<(), Error> {
    let f = fs::File::create(to).map_err(io_err("creating", to))?;
    let mut b = tar::Builder::new(BufWriter::new(f));
    let werr = |e| Error::io("writing", to, e);
    let mut names: Vec<String> = Vec::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1) {
        let e = e.map_err(|e| Error::io("reading", dir, std::io::Error::other(e.to_string())))?;
        let rel = e
            .path()
            .strip_prefix(dir)
            .map_err(|_| Error::io("reading", dir, std::io::Error::other("walk outside dir")))?;
        let mut s = rel.to_string_lossy().into_owned();
        if e.file_type().is_dir() {
            s.push('/');
        }
        names.push(s);
    }
    names.sort();
    for n in names {
        if n.ends_with('/') {
            let mut h = header(tar::EntryType::Directory, 0o755, 0, epoch, 0, 0);
            b.append_data(&mut h, &n, std::io::empty()).map_err(werr)?;
        } else {
            let p = dir.join(&n);
            let f = fs::File::open(&p).map_err(io_err("reading", &p))?;
            let size = f.metadata().map_err(io_err("reading", &p))?.len();
            let mut h = header(tar::EntryType::Regular, 0o644, size, epoch, 0, 0);
            b.append_data(&mut h, &n, std::io::BufReader::with_capacity(1 << 20, f))
                .map_err(werr)?;
        }
    }
    let mut w = b.into_inner().map_err(werr)?;
    w.flush().map_err(werr)?;
    w.into_inner()
        .map_err(|e| Error::io("writing", to, e.into_error()))?
        .sync_all()
        .map_err(werr)?;
    Ok(())
}

/// Applies one in-memory layer blob (gzip, zstd or plain tar) to an empty view and returns the
/// resulting paths with their kinds; used by the fuzz target and tests to exercise the same
/// decompression, tar and whiteout code as [`convert`] without files.
pub fn scan_layer_bytes(
    data: &[u8],
    limits: &Limits,
) -> Result<Vec<(String, &'static str)>, Error> {
    let layer = layout::Layer {
        file: PathBuf::from("<memory>"),
        digest: None,
        size: None,
        declared: None,
        diff_id: Digest::default(),
        name: "layer".into(),
    };
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(1);
    let chunk = data.to_vec();
    let sender = std::thread::spawn(move || {
        let _ = tx.send(chunk);
    });
    let mut view = View::default();
    let mut scan = Scan {
        rewrite: BTreeSet::new(),
        dropped: Vec::new(),
        bytes: 0,
        entries: 0,
        spill_count: 0,
    };
    let none = Globs::new(&[])?;
    let r = parse_layer(
        0,
        &layer,
        rx,
        &mut view,
        &mut scan,
        &none,
        Path::new("/nonexistent"),
        limits,
    );
    let _ = sender.join();
    r?;
    Ok(view
        .nodes
        .iter()
        .map(|(k, n)| {
            let kind = match n.kind {
                NodeKind::Dir => "dir",
                NodeKind::File { .. } => "file",
                NodeKind::Symlink(_) => "symlink",
            };
            (k.clone(), kind)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, ty, d, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(0o644);
            h.set_size(d.len() as u64);
            match link {
                Some(l) => b.append_link(&mut h, p, l).unwrap(),
                None => b.append_data(&mut h, p, *d).unwrap(),
            }
        }
        b.into_inner().unwrap()
    }

    fn paths(v: &[(String, &'static str)]) -> Vec<String> {
        v.iter().map(|(p, k)| format!("{p}:{k}")).collect()
    }

    #[test]
    fn parents_are_implied_and_dirs_replaced_by_files_lose_children() {
        use tar::EntryType::*;
        let t = tar(&[
            ("a/b/c", Regular, b"1", None),
            ("a/b/d", Regular, b"2", None),
            ("a/b", Regular, b"now a file", None),
        ]);
        let v = scan_layer_bytes(&t, &Limits::default()).unwrap();
        assert_eq!(paths(&v), ["/a:dir", "/a/b:file"]);
    }

    #[test]
    fn whiteouts_in_one_layer_only_hide_lower_layers() {
        use tar::EntryType::*;
        // In a single layer, a whiteout of a sibling added by the same layer keeps it.
        let t = tar(&[
            ("d/x", Regular, b"1", None),
            ("d/.wh.x", Regular, b"", None),
            ("d/.wh..wh..opq", Regular, b"", None),
        ]);
        let v = scan_layer_bytes(&t, &Limits::default()).unwrap();
        assert_eq!(paths(&v), ["/d:dir", "/d/x:file"]);
    }

    #[test]
    fn symlink_parent_and_bad_hardlink_are_refused() {
        use tar::EntryType::*;
        let t = tar(&[
            ("lib", Symlink, b"", Some("usr/lib")),
            ("lib/x", Regular, b"1", None),
        ]);
        assert!(
            matches!(scan_layer_bytes(&t, &Limits::default()), Err(Error::Unsupported(m)) if m.contains("symlink"))
        );
        let t = tar(&[("h", Link, b"", Some("missing"))]);
        assert!(matches!(
            scan_layer_bytes(&t, &Limits::default()),
            Err(Error::Malformed { .. })
        ));
        let t = tar(&[(".wh..", Regular, b"", None)]);
        assert!(scan_layer_bytes(&t, &Limits::default()).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for data in [
            &b""[..],
            b"\x1f\x8b\x08\x00garbage",
            b"\x28\xb5\x2f\xfdgarbage",
            &[0u8; 100],
        ] {
            let _ = scan_layer_bytes(data, &Limits::default());
        }
        assert!(scan_layer_bytes(b"\x1f\x8b\x08\x00garbage", &Limits::default()).is_err());
    }
}
