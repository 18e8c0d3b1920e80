//! A converted image's root filesystem as Gramine's untrusted host sees it: the layers of an
//! OCI layout applied in order, held in memory, with symlinks that the host follows.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::Error;

/// Files up to this size are kept whole (configuration, the workload file); ELF files always.
const KEEP_WHOLE: u64 = 256 << 10;
/// Largest file kept in memory (ELF files beyond it are refused as unexpected).
const MAX_KEPT: u64 = 512 << 20;
/// Symlinks followed while resolving one path, as Linux allows.
const MAX_LINKS: usize = 40;

/// One entry of the root filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// SHA-256 of the content.
        sha256: [u8; 32],
        /// Permission bits.
        mode: u32,
        /// The content, for ELF files and small files; `None` for large data files.
        bytes: Option<Vec<u8>>,
    },
    /// A symbolic link with its target as stored.
    Link(String),
}

/// A root filesystem: canonical absolute path → entry.
#[derive(Clone, Debug, Default)]
pub struct Image {
    nodes: BTreeMap<String, Node>,
}

/// Lexically normalises `path` (absolute; `.` and `..` removed, `..` stops at `/`).
pub fn normalise(path: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            c => stack.push(c),
        }
    }
    format!("/{}", stack.join("/"))
}

impl Image {
    /// An empty root (tests build images entry by entry).
    pub fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_string(), Node::Dir);
        Image { nodes }
    }

    /// Adds a regular file (and its parent directories).
    pub fn add_file(&mut self, path: &str, content: &[u8], mode: u32) {
        self.insert(
            path,
            Node::File {
                sha256: Sha256::digest(content).into(),
                mode,
                bytes: Some(content.to_vec()),
            },
        );
    }

    /// Adds a symlink (and its parent directories).
    pub fn add_link(&mut self, path: &str, target: &str) {
        self.insert(path, Node::Link(target.to_string()));
    }

    fn insert(&mut self, path: &str, node: Node) {
        let path = normalise(path);
        let mut parent = String::new();
        for c in path
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            parent.push('/');
            parent.push_str(c);
            self.nodes.entry(parent.clone()).or_insert(Node::Dir);
        }
        // A whole subtree is replaced when a directory becomes something else.
        if !matches!(node, Node::Dir) {
            self.remove_tree(&path);
        }
        self.nodes.insert(path, node);
    }

    fn remove_tree(&mut self, path: &str) {
        self.remove_below(path);
        self.nodes.remove(path);
    }

    /// Removes everything below the directory `path`, keeping `path` itself.
    fn remove_below(&mut self, path: &str) {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// The entry at exactly `path` (no symlink followed).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Every entry, in path order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Follows `path` the way the host kernel does inside the container's root: every symlink,
    /// the last one too, `..` after a link taken from where the link led. Returns the final
    /// path and entry, or `None` when a component is missing, a loop or too many links.
    pub fn resolve(&self, path: &str) -> Option<(String, &Node)> {
        let mut pending: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(str::to_string)
            .collect();
        let mut current: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = pending.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    current.pop();
                    continue;
                }
                _ => {}
            }
            current.push(c);
            let here = format!("/{}", current.join("/"));
            match self.nodes.get(&here)? {
                Node::Link(target) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return None;
                    }
                    current.pop();
                    if target.starts_with('/') {
                        current.clear();
                    }
                    pending.extend(
                        target
                            .split('/')
                            .filter(|c| !c.is_empty())
                            .rev()
                            .map(str::to_string),
                    );
                }
                Node::File { .. } if !pending.is_empty() => return None,
                _ => {}
            }
        }
        let p = format!("/{}", current.join("/"));
        let node = self.nodes.get(&p)?;
        Some((p, node))
    }

    /// Reads an OCI image layout directory with one image (as `coffer convert` writes it):
    /// its layers, gzip or uncompressed, applied in order with OCI whiteouts.
    pub fn from_oci_layout(dir: &Path) -> Result<Image, Error> {
        let read_json = |p: &Path| -> Result<serde_json::Value, Error> {
            let bytes = std::fs::read(p).map_err(|e| Error::Io(p.display().to_string(), e))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::Image(format!("{}: {e}", p.display())))
        };
        let blob = |digest: &str| -> Result<std::path::PathBuf, Error> {
            let hex = digest
                .strip_prefix("sha256:")
                .ok_or_else(|| Error::Image(format!("digest {digest:?} is not sha256")))?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Image(format!("digest {digest:?} is malformed")));
            }
            Ok(dir.join("blobs/sha256").join(hex))
        };
        let index = read_json(&dir.join("index.json"))?;
        let manifest_digest = index["manifests"][0]["digest"]
            .as_str()
            .ok_or_else(|| Error::Image("index.json lists no manifest".into()))?;
        let manifest = read_json(&blob(manifest_digest)?)?;
        let layers = manifest["layers"]
            .as_array()
            .ok_or_else(|| Error::Image("the manifest lists no layers".into()))?;
        let mut image = Image::new();
        for layer in layers {
            let digest = layer["digest"]
                .as_str()
                .ok_or_else(|| Error::Image("a layer has no digest".into()))?;
            let path = blob(digest)?;
            let file =
                std::fs::File::open(&path).map_err(|e| Error::Io(path.display().to_string(), e))?;
            let mut head = [0u8; 2];
            let gz = {
                let mut f = &file;
                f.read_exact(&mut head).is_ok() && head == [0x1f, 0x8b]
            };
            let file =
                std::fs::File::open(&path).map_err(|e| Error::Io(path.display().to_string(), e))?;
            if gz {
                image.apply_layer(flate2::read::GzDecoder::new(file))?;
            } else {
                image.apply_layer(file)?;
            }
        }
        Ok(image)
    }

    /// Applies one layer tarball.
    pub fn apply_layer<R: Read>(&mut self, reader: R) -> Result<(), Error> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive
            .entries()
            .map_err(|e| Error::Image(format!("layer: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::Image(format!("layer entry: {e}")))?;
            let raw = entry
                .path()
                .map_err(|e| Error::Image(format!("layer entry path: {e}")))?
                .to_string_lossy()
                .into_owned();
            let path = normalise(&format!("/{raw}"));
            let name = path.rsplit('/').next().unwrap_or_default().to_string();
            let parent = path[..path.len() - name.len()]
                .trim_end_matches('/')
                .to_string();
            if name == ".wh..wh..opq" {
                self.remove_below(if parent.is_empty() { "/" } else { &parent });
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                self.remove_tree(&format!("{parent}/{hidden}"));
                continue;
            }
            let kind = entry.header().entry_type();
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            if kind.is_dir() {
                self.insert(&path, Node::Dir);
            } else if kind.is_symlink() {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::Image(format!("{path}: {e}")))?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.insert(&path, Node::Link(target));
            } else if kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::Image(format!("{path}: {e}")))?
                    .map(|t| normalise(&format!("/{}", t.to_string_lossy())))
                    .unwrap_or_default();
                let node = self.nodes.get(&target).cloned().ok_or_else(|| {
                    Error::Image(format!("{path}: hard link to missing {target}"))
                })?;
                self.insert(&path, node);
            } else if kind.is_file() {
                let size = entry.size();
                let mut hasher = Sha256::new();
                let mut kept = Vec::new();
                let mut buf = vec![0u8; 64 << 10];
                let mut first = true;
                // Coffer's own files (the manifest can be large) are kept whole too.
                let mut keep =
                    size <= KEEP_WHOLE || (path.starts_with("/coffer/") && size <= MAX_KEPT);
                loop {
                    let n = entry
                        .read(&mut buf)
                        .map_err(|e| Error::Image(format!("{path}: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    let chunk = &buf[..n];
                    if first {
                        keep |= chunk.starts_with(b"\x7fELF") && size <= MAX_KEPT;
                        first = false;
                    }
                    hasher.update(chunk);
                    if keep {
                        kept.extend_from_slice(chunk);
                    }
                }
                self.insert(
                    &path,
                    Node::File {
                        sha256: hasher.finalize().into(),
                        mode,
                        bytes: keep.then_some(kept),
                    },
                );
            }
            // Device nodes and FIFOs: `coffer convert` drops them; nothing to model.
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_follows_links_like_the_kernel() {
        let mut i = Image::new();
        i.add_file("/usr/bin/busybox", b"bb", 0o755);
        i.add_file("/usr/lib/x86_64-linux-gnu/libc.so.6", b"libc", 0o644);
        i.add_link("/bin", "usr/bin");
        i.add_link("/lib", "usr/lib");
        i.add_link("/usr/bin/sh", "busybox");
        i.add_link("/usr/lib/libc", "x86_64-linux-gnu/libc.so.6");
        i.add_link("/loop", "/loop");
        i.add_link("/up", "../../../usr/bin/busybox");
        assert_eq!(i.resolve("/bin/sh").unwrap().0, "/usr/bin/busybox");
        assert_eq!(
            i.resolve("/lib/libc").unwrap().0,
            "/usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        // `..` after a link is taken from where the link led.
        assert_eq!(
            i.resolve("/bin/../lib/libc").unwrap().0,
            "/usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(i.resolve("/up").unwrap().0, "/usr/bin/busybox");
        assert!(i.resolve("/loop").is_none());
        assert!(i.resolve("/bin/busybox/x").is_none());
        assert!(i.resolve("/missing").is_none());
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts() {
        let layer = |entries: &[(&str, Option<&[u8]>)]| {
            let mut b = tar::Builder::new(Vec::new());
            for (path, content) in entries {
                let mut h = tar::Header::new_gnu();
                match content {
                    Some(c) => {
                        h.set_size(c.len() as u64);
                        h.set_entry_type(tar::EntryType::Regular);
                        h.set_mode(0o644);
                        h.set_cksum();
                        b.append_data(&mut h, path, *c).unwrap();
                    }
                    None => {
                        h.set_size(0);
                        h.set_entry_type(tar::EntryType::Directory);
                        h.set_mode(0o755);
                        h.set_cksum();
                        b.append_data(&mut h, path, &[][..]).unwrap();
                    }
                }
            }
            b.into_inner().unwrap()
        };
        let mut i = Image::new();
        i.apply_layer(
            &layer(&[
                ("etc/", None),
                ("etc/a", Some(b"1")),
                ("etc/b", Some(b"2")),
                ("opt/x/y", Some(b"3")),
            ])[..],
        )
        .unwrap();
        i.apply_layer(
            &layer(&[
                ("etc/.wh.a", Some(b"")),
                ("opt/x/.wh..wh..opq", Some(b"")),
                ("etc/b", Some(b"new")),
            ])[..],
        )
        .unwrap();
        assert!(i.get("/etc/a").is_none());
        assert!(i.get("/opt/x/y").is_none());
        assert!(matches!(i.get("/opt/x"), Some(Node::Dir)));
        match i.get("/etc/b") {
            Some(Node::File { sha256, .. }) => {
                assert_eq!(*sha256, <[u8; 32]>::from(Sha256::digest(b"new")))
            }
            other => panic!("{other:?}"),
        }
    }
}
