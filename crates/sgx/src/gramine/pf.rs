//! Gramine's encrypted-file format ("protected files", PF v2), written and read as Gramine
//! v1.9 does: `common/src/protected_files/protected_files.c` and `protected_files_format.h`,
//! and `Documentation/devel/encfiles.rst`.
//!
//! A file is a sequence of 4096-byte nodes, each encrypted with AES-128-GCM under its own
//! random key with a zero IV and no AAD; the key and tag of every node are kept in its parent,
//! so the whole file hangs off the metadata node:
//! - node 0, metadata: `file_id` (`GRAFS_PF`, u64 LE), version 2.0, a random 32-byte nonce,
//!   the GCM tag of the encrypted part, feature flags; then the encrypted part (the host path
//!   the file is bound to, NUL-padded to 772 bytes; the plaintext size; the root MHT node's key
//!   and tag; the first 3072 bytes of content); then zero padding. Its key is AES-128-CMAC of
//!   the user's key (the KDK) over `1u32 ‖ "SGX-PROTECTED-FS-METADATA-KEY"` (NUL-padded to 64)
//!   `‖ nonce ‖ 128u32` (NIST SP 800-108, counter mode);
//! - node 1, the root MHT node, present when the content is longer than 3072 bytes;
//! - then, for content offset `o ≥ 3072`, data node `d = (o − 3072) / 4096` at physical node
//!   `d + 2 + d / 96`, its key and tag in MHT node `d / 96` (slot `d % 96`); MHT node `m ≥ 1`
//!   sits at physical node `1 + 97m`, its key and tag in MHT node `(m − 1) / 32` (slot
//!   `96 + (m − 1) % 32`).
//!
//! The path check is what stops a host from swapping two encrypted files; nothing in the format
//! stops it from rolling one back to an older version (Gramine documents the same).

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce, Tag};
use cmac::{Cmac, Mac};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Size of every node.
pub const NODE_SIZE: usize = 4096;
/// Size of the user key (the KDK): AES-128.
pub const KEY_SIZE: usize = 16;
/// `GRAFS_PF` read as a little-endian u64.
pub const FILE_ID: u64 = 0x4650_5f53_4641_5247;
const MAJOR_VERSION: u8 = 2;
const MINOR_VERSION: u8 = 0;
const HAS_PENDING_WRITE: u8 = 0x01;
/// Content kept in the metadata node.
const MD_USER_DATA_SIZE: usize = 3072;
/// `file_path` in the encrypted metadata, NUL included.
const PATH_MAX_SIZE: usize = 260 + 512;
const DATA_NODES_PER_MHT: u64 = 96;
const CHILD_MHT_NODES: u64 = 32;
/// `metadata_plaintext_t`: file_id, versions, nonce, tag, feature flags.
const PLAIN_PART: usize = 8 + 1 + 1 + 32 + 16 + 1;
/// `metadata_decrypted_t`: path, size, root key, root tag, first 3 KiB.
const ENCRYPTED_PART: usize = PATH_MAX_SIZE + 8 + 16 + 16 + MD_USER_DATA_SIZE;
const KDF_LABEL: &[u8] = b"SGX-PROTECTED-FS-METADATA-KEY";
/// Largest content this module writes or reads (a bound for untrusted headers, not Gramine's).
pub const MAX_CONTENT: u64 = 1 << 36;

/// The metadata key for `nonce` (`ipf_generate_metadata_key`).
fn metadata_key(kdk: &[u8; KEY_SIZE], nonce: &[u8; 32]) -> Zeroizing<[u8; KEY_SIZE]> {
    let mut input = [0u8; 4 + 64 + 32 + 4];
    input[..4].copy_from_slice(&1u32.to_le_bytes());
    input[4..4 + KDF_LABEL.len()].copy_from_slice(KDF_LABEL);
    input[68..100].copy_from_slice(nonce);
    input[100..].copy_from_slice(&0x80u32.to_le_bytes());
    let mut mac = <Cmac<aes::Aes128> as Mac>::new(kdk.into());
    mac.update(&input);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

fn seal(key: &[u8; KEY_SIZE], buf: &mut [u8]) -> [u8; 16] {
    let cipher = Aes128Gcm::new(key.into());
    // A fixed zero IV is safe here because every key encrypts exactly one node.
    match cipher.encrypt_in_place_detached(Nonce::from_slice(&[0u8; 12]), &[], buf) {
        Ok(tag) => tag.into(),
        // Only for inputs beyond GCM's 64 GiB limit; nodes are 4 KiB.
        Err(_) => [0; 16],
    }
}

/// Which node failed to authenticate, named only when one does.
#[derive(Clone, Copy)]
enum Node {
    Metadata,
    Mht(u64),
    Data(u64),
}

fn open(key: &[u8; KEY_SIZE], buf: &mut [u8], tag: &[u8], node: Node) -> Result<()> {
    let cipher = Aes128Gcm::new(key.into());
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&[0u8; 12]),
            &[],
            buf,
            Tag::from_slice(tag),
        )
        .map_err(|_| {
            let what = match node {
                Node::Metadata => "the metadata node".to_string(),
                Node::Mht(m) => format!("MHT node {m}"),
                Node::Data(d) => format!("data node {d}"),
            };
            Error::EncryptedFile(format!(
                "{what} does not authenticate (wrong key, or modified)"
            ))
        })
}

/// Physical node of data node `d`.
fn data_physical(d: u64) -> u64 {
    d + 2 + d / DATA_NODES_PER_MHT
}

/// Physical node of MHT node `m` (`m = 0` is the root, node 1).
fn mht_physical(m: u64) -> u64 {
    1 + m * (1 + DATA_NODES_PER_MHT)
}

/// Data and MHT node counts for content of `size` bytes.
fn node_counts(size: u64) -> (u64, u64) {
    if size <= MD_USER_DATA_SIZE as u64 {
        return (0, 0);
    }
    let data = (size - MD_USER_DATA_SIZE as u64).div_ceil(NODE_SIZE as u64);
    (data, data.div_ceil(DATA_NODES_PER_MHT))
}

/// Length of the protected file for content of `size` bytes.
pub fn encrypted_len(size: u64) -> u64 {
    let (data, _) = node_counts(size);
    let nodes = if data == 0 {
        1
    } else {
        data_physical(data - 1) + 1
    };
    nodes * NODE_SIZE as u64
}

fn check_path(path: &str) -> Result<()> {
    if path.len() >= PATH_MAX_SIZE || path.contains('\0') || !path.starts_with('/') {
        return Err(Error::EncryptedFile(format!(
            "path {path:?} must be absolute, without NUL and shorter than {PATH_MAX_SIZE} bytes"
        )));
    }
    Ok(())
}

/// Encrypts `content` as Gramine would have written it to the host path `path` (the mount's
/// URI path, normalised) under the key `kdk`. `rng` supplies the nonce and the node keys.
pub fn encrypt<R: CryptoRngCore>(
    kdk: &[u8; KEY_SIZE],
    path: &str,
    content: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>> {
    check_path(path)?;
    let size = content.len() as u64;
    if size > MAX_CONTENT {
        return Err(Error::EncryptedFile(format!("{size} bytes is too large")));
    }
    let (data_nodes, mht_nodes) = node_counts(size);
    let mut out = vec![0u8; encrypted_len(size) as usize];
    // Plaintext MHT nodes: 96 data slots then 32 child slots of (key, tag).
    let mut mht: Vec<Zeroizing<Vec<u8>>> = (0..mht_nodes)
        .map(|_| Zeroizing::new(vec![0u8; NODE_SIZE]))
        .collect();
    let body = content.get(MD_USER_DATA_SIZE..).unwrap_or_default();
    for d in 0..data_nodes {
        let start = (d as usize) * NODE_SIZE;
        let chunk = body.get(start..).unwrap_or_default();
        let chunk = &chunk[..chunk.len().min(NODE_SIZE)];
        let mut node = Zeroizing::new([0u8; NODE_SIZE]);
        node[..chunk.len()].copy_from_slice(chunk);
        let mut key = Zeroizing::new([0u8; KEY_SIZE]);
        rng.fill_bytes(&mut *key);
        let tag = seal(&key, &mut *node);
        let p = data_physical(d) as usize * NODE_SIZE;
        out[p..p + NODE_SIZE].copy_from_slice(&*node);
        let slot = (d % DATA_NODES_PER_MHT) as usize * 32;
        let parent = &mut mht[(d / DATA_NODES_PER_MHT) as usize];
        parent[slot..slot + 16].copy_from_slice(&*key);
        parent[slot + 16..slot + 32].copy_from_slice(&tag);
    }
    // Children before parents: higher MHT numbers first.
    for m in (1..mht_nodes).rev() {
        let mut key = Zeroizing::new([0u8; KEY_SIZE]);
        rng.fill_bytes(&mut *key);
        let mut node = mht[m as usize].clone();
        let tag = seal(&key, &mut node);
        let p = mht_physical(m) as usize * NODE_SIZE;
        out[p..p + NODE_SIZE].copy_from_slice(&node);
        let slot = (DATA_NODES_PER_MHT + (m - 1) % CHILD_MHT_NODES) as usize * 32;
        let parent = &mut mht[((m - 1) / CHILD_MHT_NODES) as usize];
        parent[slot..slot + 16].copy_from_slice(&*key);
        parent[slot + 16..slot + 32].copy_from_slice(&tag);
    }
    let mut meta = Zeroizing::new(vec![0u8; ENCRYPTED_PART]);
    meta[..path.len()].copy_from_slice(path.as_bytes());
    meta[PATH_MAX_SIZE..PATH_MAX_SIZE + 8].copy_from_slice(&size.to_le_bytes());
    if mht_nodes > 0 {
        let mut key = Zeroizing::new([0u8; KEY_SIZE]);
        rng.fill_bytes(&mut *key);
        let mut root = mht[0].clone();
        let tag = seal(&key, &mut root);
        out[NODE_SIZE..2 * NODE_SIZE].copy_from_slice(&root);
        meta[PATH_MAX_SIZE + 8..PATH_MAX_SIZE + 24].copy_from_slice(&*key);
        meta[PATH_MAX_SIZE + 24..PATH_MAX_SIZE + 40].copy_from_slice(&tag);
    }
    let head = &content[..content.len().min(MD_USER_DATA_SIZE)];
    meta[PATH_MAX_SIZE + 40..PATH_MAX_SIZE + 40 + head.len()].copy_from_slice(head);
    let mut nonce = [0u8; 32];
    rng.fill_bytes(&mut nonce);
    let tag = seal(&metadata_key(kdk, &nonce), &mut meta);
    out[..8].copy_from_slice(&FILE_ID.to_le_bytes());
    out[8] = MAJOR_VERSION;
    out[9] = MINOR_VERSION;
    out[10..42].copy_from_slice(&nonce);
    out[42..58].copy_from_slice(&tag);
    out[58] = 0;
    out[PLAIN_PART..PLAIN_PART + ENCRYPTED_PART].copy_from_slice(&meta);
    Ok(out)
}

/// Decrypts and authenticates a protected file bound to `path`; refuses a wrong key, another
/// path, a modified or truncated node, and a file of the wrong length for its size.
pub fn decrypt(kdk: &[u8; KEY_SIZE], path: &str, file: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let bad = |m: String| Error::EncryptedFile(m);
    let header = file
        .get(..NODE_SIZE)
        .ok_or_else(|| bad(format!("{} bytes is shorter than one node", file.len())))?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&header[..8]);
    if u64::from_le_bytes(id) != FILE_ID {
        return Err(bad("not a Gramine protected file (no GRAFS_PF id)".into()));
    }
    if header[8] != MAJOR_VERSION {
        return Err(bad(format!(
            "format version {}.{} is not 2.0",
            header[8], header[9]
        )));
    }
    if header[58] & HAS_PENDING_WRITE != 0 {
        return Err(bad(
            "the file has a pending write (an interrupted update)".into()
        ));
    }
    let mut nonce = [0u8; 32];
    nonce.copy_from_slice(&header[10..42]);
    let mut meta = Zeroizing::new(header[PLAIN_PART..PLAIN_PART + ENCRYPTED_PART].to_vec());
    open(
        &metadata_key(kdk, &nonce),
        &mut meta,
        &header[42..58],
        Node::Metadata,
    )?;
    let stored_path = meta[..PATH_MAX_SIZE]
        .split(|b| *b == 0)
        .next()
        .unwrap_or_default();
    if stored_path != path.as_bytes() {
        return Err(bad(format!(
            "the file is bound to {:?}, not {path:?} (moved or swapped)",
            String::from_utf8_lossy(stored_path)
        )));
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&meta[PATH_MAX_SIZE..PATH_MAX_SIZE + 8]);
    let size = u64::from_le_bytes(size);
    if size > MAX_CONTENT || encrypted_len(size) != file.len() as u64 {
        return Err(bad(format!(
            "{} bytes on disk do not hold {size} bytes of content",
            file.len()
        )));
    }
    let mut content = Zeroizing::new(Vec::with_capacity(size as usize));
    let head = (size as usize).min(MD_USER_DATA_SIZE);
    content.extend_from_slice(&meta[PATH_MAX_SIZE + 40..PATH_MAX_SIZE + 40 + head]);
    let (data_nodes, mht_nodes) = node_counts(size);
    if data_nodes == 0 {
        return Ok(content);
    }
    let node_at = |physical: u64| -> Zeroizing<Vec<u8>> {
        let p = physical as usize * NODE_SIZE;
        Zeroizing::new(file[p..p + NODE_SIZE].to_vec())
    };
    // Decrypt MHT nodes parent first; each holds its children's keys and tags.
    let mut mht: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(mht_nodes as usize);
    let mut root = node_at(1);
    let mut root_key = [0u8; KEY_SIZE];
    root_key.copy_from_slice(&meta[PATH_MAX_SIZE + 8..PATH_MAX_SIZE + 24]);
    let root_key = Zeroizing::new(root_key);
    open(
        &root_key,
        &mut root,
        &meta[PATH_MAX_SIZE + 24..PATH_MAX_SIZE + 40],
        Node::Mht(0),
    )?;
    mht.push(root);
    for m in 1..mht_nodes {
        let parent = &mht[((m - 1) / CHILD_MHT_NODES) as usize];
        let slot = (DATA_NODES_PER_MHT + (m - 1) % CHILD_MHT_NODES) as usize * 32;
        let mut key = Zeroizing::new([0u8; KEY_SIZE]);
        key.copy_from_slice(&parent[slot..slot + 16]);
        let tag = parent[slot + 16..slot + 32].to_vec();
        let mut node = node_at(mht_physical(m));
        open(&key, &mut node, &tag, Node::Mht(m))?;
        mht.push(node);
    }
    // One node buffer for all data nodes, wiped when dropped.
    let mut node = Zeroizing::new([0u8; NODE_SIZE]);
    for d in 0..data_nodes {
        let parent = &mht[(d / DATA_NODES_PER_MHT) as usize];
        let slot = (d % DATA_NODES_PER_MHT) as usize * 32;
        let mut key = Zeroizing::new([0u8; KEY_SIZE]);
        key.copy_from_slice(&parent[slot..slot + 16]);
        let p = data_physical(d) as usize * NODE_SIZE;
        node.copy_from_slice(&file[p..p + NODE_SIZE]);
        open(
            &key,
            &mut *node,
            &parent[slot + 16..slot + 32],
            Node::Data(d),
        )?;
        let want = (size as usize - content.len()).min(NODE_SIZE);
        content.extend_from_slice(&node[..want]);
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::RngCore;

    /// A deterministic stand-in for the random source, so files can be compared byte for byte.
    struct Counter(u8);
    impl RngCore for Counter {
        fn next_u32(&mut self) -> u32 {
            let mut b = [0; 4];
            self.fill_bytes(&mut b);
            u32::from_le_bytes(b)
        }
        fn next_u64(&mut self) -> u64 {
            let mut b = [0; 8];
            self.fill_bytes(&mut b);
            u64::from_le_bytes(b)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for b in dest {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> std::result::Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl rand_core::CryptoRng for Counter {}

    const KDK: [u8; 16] = [0x42; 16];

    /// AES-128-CMAC as the KDF uses it, against RFC 4493's example 2 (16-byte message).
    #[test]
    fn cmac_matches_rfc_4493() {
        let key: [u8; 16] = hex::decode("2b7e151628aed2a6abf7158809cf4f3c")
            .unwrap()
            .try_into()
            .unwrap();
        let mut mac = <Cmac<aes::Aes128> as Mac>::new((&key).into());
        mac.update(&hex::decode("6bc1bee22e409f96e93d7e117393172a").unwrap());
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "070a16b46b4d4144f79bdd9dd04a287c"
        );
    }

    /// A one-node file assembled by hand from the layout in `protected_files_format.h`
    /// (independently of [`encrypt`]): the reader accepts it and the writer reproduces it.
    #[test]
    fn a_small_file_built_from_the_spec_round_trips() {
        let path = "/app/conf/db.toml";
        let content = b"password = \"hunter2\"\n";
        let nonce = [7u8; 32];
        // KDF input: counter 1, label NUL-padded to 64, nonce, 128 bits; 104 bytes.
        let mut kdf = Vec::new();
        kdf.extend_from_slice(&[1, 0, 0, 0]);
        let mut label = b"SGX-PROTECTED-FS-METADATA-KEY".to_vec();
        label.resize(64, 0);
        kdf.extend_from_slice(&label);
        kdf.extend_from_slice(&nonce);
        kdf.extend_from_slice(&[0x80, 0, 0, 0]);
        assert_eq!(kdf.len(), 104);
        let mut mac = <Cmac<aes::Aes128> as Mac>::new((&KDK).into());
        mac.update(&kdf);
        let key: [u8; 16] = mac.finalize().into_bytes().into();
        // metadata_decrypted_t: path[772], size u64, root key[16], root mac[16], data[3072].
        let mut plain = vec![0u8; 3884];
        plain[..path.len()].copy_from_slice(path.as_bytes());
        plain[772..780].copy_from_slice(&(content.len() as u64).to_le_bytes());
        plain[812..812 + content.len()].copy_from_slice(content);
        let tag = Aes128Gcm::new((&key).into())
            .encrypt_in_place_detached(Nonce::from_slice(&[0; 12]), &[], &mut plain)
            .unwrap();
        let mut file = vec![0u8; 4096];
        file[..8].copy_from_slice(b"GRAFS_PF");
        file[8] = 2;
        file[10..42].copy_from_slice(&nonce);
        file[42..58].copy_from_slice(&tag);
        file[59..59 + 3884].copy_from_slice(&plain);

        assert_eq!(&decrypt(&KDK, path, &file).unwrap()[..], content);
        // The writer, given the same nonce, writes the same bytes.
        struct Fixed([u8; 32]);
        impl RngCore for Fixed {
            fn next_u32(&mut self) -> u32 {
                0
            }
            fn next_u64(&mut self) -> u64 {
                0
            }
            fn fill_bytes(&mut self, d: &mut [u8]) {
                d.copy_from_slice(&self.0[..d.len()])
            }
            fn try_fill_bytes(
                &mut self,
                d: &mut [u8],
            ) -> std::result::Result<(), rand_core::Error> {
                self.fill_bytes(d);
                Ok(())
            }
        }
        impl rand_core::CryptoRng for Fixed {}
        assert_eq!(
            encrypt(&KDK, path, content, &mut Fixed(nonce)).unwrap(),
            file
        );
    }

    #[test]
    fn layout_follows_the_node_numbering() {
        // Sizes around every boundary: metadata only, one data node, the first child MHT node.
        let cases: &[(usize, u64)] = &[
            (0, 1),
            (3072, 1),
            (3073, 3),
            (3072 + 4096, 3),
            (3072 + 4097, 4),
            (3072 + 96 * 4096, 98),
            (3072 + 96 * 4096 + 1, 100),
            (3072 + 97 * 4096, 100),
        ];
        for &(size, nodes) in cases {
            assert_eq!(encrypted_len(size as u64), nodes * 4096, "size {size}");
        }
        // MHT node 1 at physical 98, its first data node at 99; MHT 33 hangs off MHT 1.
        assert_eq!(mht_physical(1), 98);
        assert_eq!(data_physical(96), 99);
        assert_eq!(data_physical(95), 97);
        assert_eq!((33 - 1) / CHILD_MHT_NODES, 1);
    }

    #[test]
    fn every_size_round_trips_and_any_flipped_byte_is_refused() {
        let mut rng = Counter(0);
        for size in [0usize, 1, 3071, 3072, 3073, 10_000, 3072 + 96 * 4096 + 5000] {
            let mut content = vec![0u8; size];
            rng.fill_bytes(&mut content);
            let file = encrypt(&KDK, "/data/blob", &content, &mut rng).unwrap();
            assert_eq!(file.len() as u64, encrypted_len(size as u64));
            assert_eq!(
                &decrypt(&KDK, "/data/blob", &file).unwrap()[..],
                &content[..],
                "size {size}"
            );
            // One flipped byte in the metadata node (header, tag, encrypted part), the root
            // and the first child MHT node, and the first and last data nodes.
            let last = file.len() / NODE_SIZE - 1;
            for node in [0, 1, 2, 97, 98, 99, last]
                .into_iter()
                .filter(|n| *n <= last)
            {
                for off in [0usize, 9, 20, 50, 100, 3000] {
                    let mut bad = file.clone();
                    bad[node * NODE_SIZE + off] ^= 1;
                    if node == 0 && off == 9 {
                        // The minor version is not authenticated; Gramine ignores it too.
                        continue;
                    }
                    assert!(
                        decrypt(&KDK, "/data/blob", &bad).is_err(),
                        "size {size} node {node} off {off}"
                    );
                }
            }
            assert!(decrypt(&[0x43; 16], "/data/blob", &file).is_err());
            assert!(decrypt(&KDK, "/data/other", &file).is_err());
            if file.len() > NODE_SIZE {
                assert!(decrypt(&KDK, "/data/blob", &file[..file.len() - NODE_SIZE]).is_err());
            }
        }
    }

    #[test]
    fn the_same_content_never_encrypts_the_same_way_twice() {
        let mut rng = Counter(0);
        let a = encrypt(&KDK, "/x", b"same", &mut rng).unwrap();
        let b = encrypt(&KDK, "/x", b"same", &mut rng).unwrap();
        assert_ne!(a, b);
        assert!(encrypt(&KDK, "relative", b"", &mut rng).is_err());
        assert!(encrypt(&KDK, &format!("/{}", "a".repeat(800)), b"", &mut rng).is_err());
    }
}
