//! Protected (encrypted) files: AES-256-GCM in authenticated chunks, each file bound to its
//! path, streaming over `Read`/`Write`.
//!
//! `coffer convert --encrypt GLOB` stores matching files in this format at their original path;
//! the launcher decrypts them after activation with the manifest secret `image_key` (a 32-byte
//! [`Key`]). The image never contains the key.
//!
//! # Byte layout (version 1)
//!
//! ```text
//! offset size  field
//!   0     8    magic "COFFPROT"
//!   8     2    version, u16 big-endian = 1
//!  10     2    reserved, must be 0
//!  12     4    chunk size C, u32 big-endian, plaintext bytes per chunk, 4 KiB ≤ C ≤ 16 MiB
//!  16    16    salt
//!  32    ...   chunks: chunk i = AES-256-GCM(file_key, nonce_i, aad, plaintext_i) || tag(16)
//! ```
//!
//! Every chunk but the last carries exactly `C` plaintext bytes; the last carries 1..=C (0 only
//! when the whole file is empty), so a file of `n` bytes has `max(1, ceil(n / C))` chunks.
//!
//! - `file_key (32) || nonce_prefix (7)` = HKDF-SHA256(ikm = key, salt = salt, info =
//!   `"coffer-protect/v1 file" || u32be(len(path)) || path`), 39 bytes of output.
//! - `nonce_i` = `nonce_prefix (7) || u32be(i) || last (1)` where `last` is 1 for the final
//!   chunk, 0 otherwise (the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár).
//! - `aad` = the 32 header bytes `|| u32be(len(path)) || path`.
//!
//! So a chunk authenticates only at its own index, only as final/non-final as written, only
//! under the header it was written with, and only for the path it was written for: swapping,
//! reordering, truncating (the final flag is missing), extending, or moving a file to another
//! path all fail authentication. Decryption writes a chunk only after it authenticates; a
//! truncation is detected at the end, so callers write the plaintext to a temporary file and
//! rename it only on success.
//!
//! # Why nonces never repeat under one key
//!
//! Conversion must be reproducible (same input and key → same bytes), so the salt is not
//! random but [`Salt::deterministic`]: the first 16 bytes of HMAC-SHA256(key, `"coffer-protect/v1
//! salt" || u32be(len(path)) || path || sha256(plaintext)`). AES-GCM's nonce is then a pure
//! function of (key, path, plaintext, chunk index, final flag):
//! - within one file, the chunk index and final flag differ for every chunk (at most 2³² chunks,
//!   checked);
//! - two files with different paths have different file keys (HKDF info differs);
//! - the same path with different plaintexts (e.g. a later image version converted with the same
//!   `--key`) gets a different salt, hence a different file key, unless HMAC-SHA256 truncated to
//!   128 bits collides (probability ≈ 2⁻¹²⁸ per pair);
//! - the same path with the same plaintext produces the *identical* ciphertext, which reveals
//!   only that the file did not change — no keystream or GHASH key is exposed.
//!
//! A (key, file key, nonce) triple is therefore never used for two different plaintexts.
//! [`Salt::random`] is available where reproducibility is not wanted.

use std::io::{Read, Write};
use std::path::PathBuf;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::{Digest, Error};

/// The 8 magic bytes that start a protected file.
pub const MAGIC: [u8; 8] = *b"COFFPROT";
/// The format version written and read.
pub const VERSION: u16 = 1;
/// Size of the header in bytes.
pub const HEADER_LEN: usize = 32;
/// Size of the GCM tag after each chunk.
pub const TAG_LEN: usize = 16;
/// Default plaintext bytes per chunk (64 KiB).
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest accepted chunk size.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// Largest accepted chunk size (bounds the memory a hostile header can make us allocate).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

/// A 32-byte key for protected files (the manifest secret `image_key`). Zeroed on drop and
/// never printed.
#[derive(Clone)]
pub struct Key(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        Key(k)
    }

    /// A key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(Zeroizing::new(bytes))
    }

    /// Parses a key file or secret value: exactly 32 raw bytes, or 64 hex characters with
    /// optional surrounding whitespace (the form `--key-out` writes).
    pub fn parse(data: &[u8]) -> Result<Self, Error> {
        let trimmed = data.trim_ascii();
        if trimmed.len() == 64 && trimmed.iter().all(u8::is_ascii_hexdigit) {
            let mut k = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(trimmed, k.as_mut())
                .map_err(|_| Error::BadKey("not valid hex"))?;
            return Ok(Key(k));
        }
        if data.len() == 32 {
            let mut k = Zeroizing::new([0u8; 32]);
            k.copy_from_slice(data);
            return Ok(Key(k));
        }
        Err(Error::BadKey("expected 64 hex characters or 32 raw bytes"))
    }

    /// The key as 64 lowercase hex characters (what `--key-out` writes, plus a newline).
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_ref()))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 16-byte key Gramine's encrypted mounts use for `--encrypt --tee sgx` files (its
    /// protected-file format takes an AES-128 key). The launcher writes it to
    /// `/dev/attestation/keys/coffer_image` inside the enclave; the image key never leaves it.
    pub fn gramine_kdk(&self) -> Zeroizing<[u8; 16]> {
        let hk = hkdf::Hkdf::<Sha256>::new(None, self.as_bytes());
        let mut k = Zeroizing::new([0u8; 16]);
        // 16 bytes is far below HKDF-SHA256's limit.
        let _ = hk.expand(b"coffer-protect/v1 gramine kdk", k.as_mut());
        k
    }

    /// A keyed digest of a file's plaintext at `path`, recorded in the workload file so the
    /// launcher can refuse an older ciphertext the host puts back in place: Gramine's format
    /// binds a file to its path, not to its version. Keyed, so the image reveals nothing about
    /// the plaintext.
    pub fn plaintext_mac(&self, path: &str, plaintext_sha256: &Digest) -> Digest {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.as_bytes())
            .unwrap_or_else(|_| unreachable_hmac());
        mac.update(b"coffer-protect/v1 plaintext");
        mac.update(&(path.len() as u32).to_be_bytes());
        mac.update(path.as_bytes());
        mac.update(plaintext_sha256.as_bytes());
        Digest(mac.finalize().into_bytes().into())
    }

    /// The seed of the random source for Gramine's format, so a conversion stays reproducible
    /// (one seed per key, path and content: the module docs' argument for salts applies).
    pub fn gramine_seed(&self, path: &str, plaintext_sha256: &Digest) -> Zeroizing<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.as_bytes())
            .unwrap_or_else(|_| unreachable_hmac());
        mac.update(b"coffer-protect/v1 gramine seed");
        mac.update(&(path.len() as u32).to_be_bytes());
        mac.update(path.as_bytes());
        mac.update(plaintext_sha256.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }
}

/// The 16-byte salt in a protected file's header, from which its file key and nonces derive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Salt(pub [u8; 16]);

impl Salt {
    /// The reproducible salt (module docs: why this never repeats a nonce).
    pub fn deterministic(key: &Key, path: &str, plaintext_sha256: &Digest) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
            .unwrap_or_else(|_| unreachable_hmac());
        mac.update(b"coffer-protect/v1 salt");
        mac.update(&(path.len() as u32).to_be_bytes());
        mac.update(path.as_bytes());
        mac.update(plaintext_sha256.as_bytes());
        let out = mac.finalize().into_bytes();
        let mut s = [0u8; 16];
        s.copy_from_slice(out.get(..16).unwrap_or(&[0u8; 16]));
        Salt(s)
    }

    /// A random salt, for callers that do not need reproducible output.
    pub fn random() -> Self {
        use rand::RngCore;
        let mut s = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut s);
        Salt(s)
    }
}

// HMAC-SHA256 accepts keys of any length; this cannot be reached.
fn unreachable_hmac() -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(&[0u8; 32]).unwrap_or_else(|_| unreachable_hmac())
}

/// Size of the protected form of `plaintext_len` bytes with chunk size `chunk_size`.
pub fn protected_len(plaintext_len: u64, chunk_size: u32) -> u64 {
    let c = u64::from(chunk_size.max(1));
    let chunks = plaintext_len.div_ceil(c).max(1);
    HEADER_LEN as u64 + plaintext_len + chunks * TAG_LEN as u64
}

struct FileCipher {
    aead: Aes256Gcm,
    nonce_prefix: [u8; 7],
    aad: Vec<u8>,
}

impl FileCipher {
    fn new(key: &Key, path: &str, header: &[u8; HEADER_LEN], salt: &[u8; 16]) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), key.as_bytes());
        let mut info = Vec::with_capacity(path.len() + 26);
        info.extend_from_slice(b"coffer-protect/v1 file");
        info.extend_from_slice(&(path.len() as u32).to_be_bytes());
        info.extend_from_slice(path.as_bytes());
        let mut okm = Zeroizing::new([0u8; 39]);
        // 39 bytes is far below HKDF-SHA256's 8160-byte limit.
        let _ = hk.expand(&info, okm.as_mut());
        let (k, p) = okm.split_at(32);
        let aead =
            Aes256Gcm::new_from_slice(k).unwrap_or_else(|_| Aes256Gcm::new(&[0u8; 32].into()));
        let mut nonce_prefix = [0u8; 7];
        nonce_prefix.copy_from_slice(p);
        let mut aad = Vec::with_capacity(HEADER_LEN + 4 + path.len());
        aad.extend_from_slice(header);
        aad.extend_from_slice(&(path.len() as u32).to_be_bytes());
        aad.extend_from_slice(path.as_bytes());
        FileCipher {
            aead,
            nonce_prefix,
            aad,
        }
    }

    fn nonce(&self, index: u32, last: bool) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..7].copy_from_slice(&self.nonce_prefix);
        n[7..11].copy_from_slice(&index.to_be_bytes());
        n[11] = u8::from(last);
        n
    }
}

fn header_bytes(chunk_size: u32, salt: &Salt) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_be_bytes());
    h[12..16].copy_from_slice(&chunk_size.to_be_bytes());
    h[16..32].copy_from_slice(&salt.0);
    h
}

/// Reads until `buf` is full or the input ends; returns the number of bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8], path: &str) -> Result<usize, Error> {
    let mut n = 0;
    while n < buf.len() {
        let Some(rest) = buf.get_mut(n..) else { break };
        match r.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("reading", PathBuf::from(path), e)),
        }
    }
    Ok(n)
}

/// Encrypts `input` into `output` bound to `path` (canonical image path), with the default
/// chunk size. Returns the number of bytes written.
pub fn encrypt<R: Read, W: Write>(
    key: &Key,
    path: &str,
    salt: Salt,
    input: R,
    output: W,
) -> Result<u64, Error> {
    encrypt_with_chunk_size(key, path, salt, DEFAULT_CHUNK_SIZE, input, output)
}

/// [`encrypt`] with an explicit chunk size (between [`MIN_CHUNK_SIZE`] and [`MAX_CHUNK_SIZE`]).
pub fn encrypt_with_chunk_size<R: Read, W: Write>(
    key: &Key,
    path: &str,
    salt: Salt,
    chunk_size: u32,
    mut input: R,
    mut output: W,
) -> Result<u64, Error> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(Error::Unsupported(format!(
            "chunk size {chunk_size} (must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE})"
        )));
    }
    let header = header_bytes(chunk_size, &salt);
    let cipher = FileCipher::new(key, path, &header, &salt.0);
    let wr = |e| Error::io("writing", PathBuf::from(path), e);
    output.write_all(&header).map_err(wr)?;
    let c = chunk_size as usize;
    let mut cur = Zeroizing::new(vec![0u8; c + TAG_LEN]);
    let mut next = Zeroizing::new(vec![0u8; c + TAG_LEN]);
    let mut cur_len = read_full(&mut input, cur.get_mut(..c).unwrap_or_default(), path)?;
    let mut index: u32 = 0;
    let mut written = HEADER_LEN as u64;
    loop {
        let (next_len, last) = if cur_len == c {
            let n = read_full(&mut input, next.get_mut(..c).unwrap_or_default(), path)?;
            (n, n == 0)
        } else {
            (0, true)
        };
        let nonce = cipher.nonce(index, last);
        let (pt, _) = cur.split_at_mut(cur_len);
        let tag = cipher
            .aead
            .encrypt_in_place_detached(&Nonce::from(nonce), &cipher.aad, pt)
            .map_err(|_| Error::Unsupported("AES-GCM refused the chunk".into()))?;
        output.write_all(pt).map_err(wr)?;
        output.write_all(&tag).map_err(wr)?;
        written += (cur_len + TAG_LEN) as u64;
        if last {
            break;
        }
        index = index.checked_add(1).ok_or_else(|| Error::LimitExceeded {
            what: format!("protected file {path}"),
            limit: u64::from(u32::MAX) * u64::from(chunk_size),
            hint: "use a larger chunk size",
        })?;
        std::mem::swap(&mut cur, &mut next);
        cur_len = next_len;
    }
    output.flush().map_err(wr)?;
    Ok(written)
}

/// Parses a protected file's header; returns the chunk size and salt.
pub fn parse_header(header: &[u8], path: &str) -> Result<(u32, Salt), Error> {
    let bad = |reason: String| Error::BadProtectedHeader {
        path: path.to_string(),
        reason,
    };
    let get = |a: usize, b: usize| {
        header
            .get(a..b)
            .ok_or_else(|| bad("shorter than 32 bytes".into()))
    };
    if header.len() != HEADER_LEN {
        return Err(bad(format!(
            "{} bytes, expected {HEADER_LEN}",
            header.len()
        )));
    }
    if get(0, 8)? != MAGIC {
        return Err(bad(
            "no COFFPROT magic (not a file encrypted by coffer convert)".into(),
        ));
    }
    let version = u16::from_be_bytes(get(8, 10)?.try_into().unwrap_or([0, 0]));
    if version != VERSION {
        return Err(bad(format!(
            "version {version}, this build reads version {VERSION}"
        )));
    }
    if get(10, 12)? != [0, 0] {
        return Err(bad("reserved bytes are not zero".into()));
    }
    let chunk_size = u32::from_be_bytes(get(12, 16)?.try_into().unwrap_or([0; 4]));
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(bad(format!("chunk size {chunk_size} out of range")));
    }
    let mut salt = [0u8; 16];
    salt.copy_from_slice(get(16, 32)?);
    Ok((chunk_size, Salt(salt)))
}

/// Decrypts a protected file from `input` into `output`, checking it is bound to `path`.
/// Only authenticated plaintext is written, but a truncation is detected only at the end:
/// write to a temporary file and keep it only when this returns `Ok`. Returns the plaintext
/// length.
pub fn decrypt<R: Read, W: Write>(
    key: &Key,
    path: &str,
    mut input: R,
    mut output: W,
) -> Result<u64, Error> {
    let mut header = [0u8; HEADER_LEN];
    let n = read_full(&mut input, &mut header, path)?;
    if n < HEADER_LEN {
        return Err(Error::ProtectedTruncated {
            path: path.to_string(),
            reason: "shorter than its 32-byte header",
        });
    }
    let (chunk_size, salt) = parse_header(&header, path)?;
    let cipher = FileCipher::new(key, path, &header, &salt.0);
    let rec = chunk_size as usize + TAG_LEN;
    let mut cur = vec![0u8; rec];
    let mut next = vec![0u8; rec];
    let mut cur_len = read_full(&mut input, &mut cur, path)?;
    let mut index: u32 = 0;
    let mut total = 0u64;
    loop {
        let (next_len, last) = if cur_len == rec {
            let n = read_full(&mut input, &mut next, path)?;
            (n, n == 0)
        } else {
            (0, true)
        };
        if cur_len < TAG_LEN {
            return Err(Error::ProtectedTruncated {
                path: path.to_string(),
                reason: "ends inside a chunk (truncated)",
            });
        }
        let (ct, tag) = cur.split_at_mut(cur_len - TAG_LEN);
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag.get(..TAG_LEN).unwrap_or(&[0u8; TAG_LEN]));
        let tag = Tag::from(tag_bytes);
        let nonce = cipher.nonce(index, last);
        if cipher
            .aead
            .decrypt_in_place_detached(&Nonce::from(nonce), &cipher.aad, ct, &tag)
            .is_err()
        {
            ct.zeroize();
            return Err(Error::Decrypt {
                path: path.to_string(),
                chunk: u64::from(index),
            });
        }
        output
            .write_all(ct)
            .map_err(|e| Error::io("writing", PathBuf::from(path), e))?;
        total += ct.len() as u64;
        ct.zeroize();
        if last {
            break;
        }
        index = index.checked_add(1).ok_or(Error::ProtectedTruncated {
            path: path.to_string(),
            reason: "has more than 2^32 chunks",
        })?;
        std::mem::swap(&mut cur, &mut next);
        cur_len = next_len;
    }
    output
        .flush()
        .map_err(|e| Error::io("writing", PathBuf::from(path), e))?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_bytes([7u8; 32])
    }

    fn enc(data: &[u8], path: &str, cs: u32) -> Vec<u8> {
        let salt = Salt::deterministic(&key(), path, &Digest::of(data));
        let mut out = Vec::new();
        let n = encrypt_with_chunk_size(&key(), path, salt, cs, data, &mut out).unwrap();
        assert_eq!(n as usize, out.len());
        assert_eq!(out.len() as u64, protected_len(data.len() as u64, cs));
        out
    }

    fn dec(ct: &[u8], path: &str) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        decrypt(&key(), path, ct, &mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_chunk_boundaries() {
        for len in [0usize, 1, 4095, 4096, 4097, 8192, 3 * 4096 + 5] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let ct = enc(&data, "/app/secret", 4096);
            assert_eq!(dec(&ct, "/app/secret").unwrap(), data, "len {len}");
            if len > 0 {
                assert_ne!(
                    ct.get(HEADER_LEN..HEADER_LEN + len.min(16)),
                    data.get(..len.min(16))
                );
            }
        }
    }

    #[test]
    fn deterministic_and_distinct() {
        let a = enc(b"hello", "/a", 4096);
        assert_eq!(a, enc(b"hello", "/a", 4096));
        assert_ne!(a, enc(b"hellp", "/a", 4096));
        assert_ne!(a, enc(b"hello", "/b", 4096));
    }

    #[test]
    fn wrong_path_or_key_fails() {
        let ct = enc(b"secret data", "/a", 4096);
        assert!(matches!(
            dec(&ct, "/b").unwrap_err(),
            Error::Decrypt { chunk: 0, .. }
        ));
        let mut out = Vec::new();
        let e = decrypt(&Key::from_bytes([8; 32]), "/a", &ct[..], &mut out).unwrap_err();
        assert!(matches!(e, Error::Decrypt { chunk: 0, .. }));
        assert!(out.is_empty());
    }

    #[test]
    fn tamper_truncate_extend_reorder_fail() {
        let data = vec![5u8; 3 * 4096];
        let ct = enc(&data, "/f", 4096);
        // Flip one ciphertext byte in chunk 1.
        let mut t = ct.clone();
        t[HEADER_LEN + 4096 + TAG_LEN + 10] ^= 1;
        assert!(matches!(
            dec(&t, "/f").unwrap_err(),
            Error::Decrypt { chunk: 1, .. }
        ));
        // Drop the last chunk: chunk 1 is now read as final and fails.
        let t = &ct[..HEADER_LEN + 2 * (4096 + TAG_LEN)];
        assert!(matches!(
            dec(t, "/f").unwrap_err(),
            Error::Decrypt { chunk: 1, .. }
        ));
        // Cut inside the tag of the last chunk.
        let t = &ct[..ct.len() - 3];
        assert!(matches!(
            dec(t, "/f").unwrap_err(),
            Error::Decrypt { chunk: 2, .. }
        ));
        // Append garbage.
        let mut t = ct.clone();
        t.extend_from_slice(&[0u8; 20]);
        assert!(matches!(
            dec(&t, "/f").unwrap_err(),
            Error::Decrypt { chunk: 2, .. }
        ));
        // Swap chunks 0 and 1.
        let r = 4096 + TAG_LEN;
        let mut t = ct.clone();
        let (c0, c1) = (
            ct[HEADER_LEN..HEADER_LEN + r].to_vec(),
            ct[HEADER_LEN + r..HEADER_LEN + 2 * r].to_vec(),
        );
        t[HEADER_LEN..HEADER_LEN + r].copy_from_slice(&c1);
        t[HEADER_LEN + r..HEADER_LEN + 2 * r].copy_from_slice(&c0);
        assert!(matches!(
            dec(&t, "/f").unwrap_err(),
            Error::Decrypt { chunk: 0, .. }
        ));
        // Header: change chunk size within range -> authentication fails or truncation.
        let mut t = ct.clone();
        t[15] ^= 0x01;
        assert!(dec(&t, "/f").is_err());
        // Short header.
        assert!(matches!(
            dec(&ct[..20], "/f").unwrap_err(),
            Error::ProtectedTruncated { .. }
        ));
        // Bad magic / reserved / version.
        let mut t = ct.clone();
        t[0] = b'X';
        assert!(matches!(
            dec(&t, "/f").unwrap_err(),
            Error::BadProtectedHeader { .. }
        ));
        let mut t = ct.clone();
        t[11] = 1;
        assert!(matches!(
            dec(&t, "/f").unwrap_err(),
            Error::BadProtectedHeader { .. }
        ));
        let mut t = ct.clone();
        t[9] = 2;
        assert!(matches!(
            dec(&t, "/f").unwrap_err(),
            Error::BadProtectedHeader { .. }
        ));
    }

    #[test]
    fn key_parsing_and_redaction() {
        let k = Key::generate();
        let hexed = format!("{}\n", k.to_hex().as_str());
        assert_eq!(
            Key::parse(hexed.as_bytes()).unwrap().as_bytes(),
            k.as_bytes()
        );
        assert_eq!(Key::parse(k.as_bytes()).unwrap().as_bytes(), k.as_bytes());
        assert!(matches!(Key::parse(b"abcd"), Err(Error::BadKey(_))));
        assert_eq!(format!("{k:?}"), "Key(<redacted>)");
    }

    #[test]
    fn chunk_size_bounds() {
        let mut out = Vec::new();
        let e = encrypt_with_chunk_size(&key(), "/a", Salt([0; 16]), 100, &b"x"[..], &mut out);
        assert!(matches!(e, Err(Error::Unsupported(_))));
    }
}
