//! A bounded, streaming reader of (untrusted) tar streams: layers and image archives.
//!
//! We read tar ourselves rather than through the `tar` crate because a layer is hostile input:
//! the `tar` crate reads GNU long-name and PAX extension headers into memory whatever size
//! they declare, which a compressed layer can make gigabytes. Here every extension header is
//! bounded ([`MAX_EXTENSION`]), every header's checksum is verified, numbers are parsed
//! strictly (octal or base-256), and an entry's raw header blocks are kept so that a layer can
//! be rewritten byte for byte minus the entries we drop (for `--encrypt`).
//!
//! Supported: ustar (with `prefix`), GNU long names/links (`L`/`K`), PAX local and global
//! headers (`x`/`g`: `path`, `linkpath`, `size`, `uid`, `gid`). Refused: GNU sparse files,
//! multi-volume and other unknown extension types.

use std::io::Read;

use crate::paths;
use crate::Error;

/// Largest GNU long-name or PAX extension header we read (1 MiB).
pub const MAX_EXTENSION: u64 = 1 << 20;
const BLOCK: usize = 512;

/// The type of a tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file (`0`, NUL, or contiguous `7`).
    File,
    /// A hard link to an earlier entry (`1`).
    Hardlink,
    /// A symbolic link (`2`).
    Symlink,
    /// A character device (`3`).
    CharDevice,
    /// A block device (`4`).
    BlockDevice,
    /// A directory (`5`).
    Dir,
    /// A FIFO (`6`).
    Fifo,
}

impl Kind {
    /// A human name for error messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "regular file",
            Kind::Hardlink => "hard link",
            Kind::Symlink => "symlink",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
            Kind::Dir => "directory",
            Kind::Fifo => "FIFO",
        }
    }
}

/// One entry's header, after extension headers are applied.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Canonical path (see [`crate::paths`]).
    pub path: String,
    /// The entry type.
    pub kind: Kind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u64,
    /// Owner group id.
    pub gid: u64,
    /// Size of the entry's data.
    pub size: u64,
    /// Link target: raw for symlinks, canonical path for hard links.
    pub link: Option<String>,
    /// The raw header blocks of this entry (local extension headers + the header itself).
    pub raw: Vec<u8>,
    /// Raw PAX global headers that preceded this entry (kept when the entry is dropped).
    pub global_raw: Vec<u8>,
}

/// Streaming reader of a tar stream.
pub struct TarReader<R> {
    inner: R,
    /// Data bytes of the current entry not yet consumed.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    context: String,
    done: bool,
}

fn truncated(context: &str) -> Error {
    Error::malformed(context, "truncated tar stream (ends inside an entry)")
}

fn read_exact_or<R: Read>(r: &mut R, buf: &mut [u8], context: &str) -> Result<usize, Error> {
    let mut n = 0;
    while n < buf.len() {
        let Some(rest) = buf.get_mut(n..) else { break };
        match r.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(stream_error(context, e)),
        }
    }
    Ok(n)
}

/// Maps an I/O error of the (decompressing) stream to our error type.
pub(crate) fn stream_error(context: &str, e: std::io::Error) -> Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<LimitHit>())
    {
        Some(l) => Error::LimitExceeded {
            what: l.what.clone(),
            limit: l.limit,
            hint: l.hint,
        },
        None => match e.kind() {
            std::io::ErrorKind::UnexpectedEof => truncated(context),
            _ => Error::malformed(context, format!("cannot read layer stream: {e}")),
        },
    }
}

/// Carried inside an `io::Error` by limiting readers so the limit survives the decompressor.
#[derive(Debug)]
pub(crate) struct LimitHit {
    pub(crate) what: String,
    pub(crate) limit: u64,
    pub(crate) hint: &'static str,
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} exceeds the limit of {}", self.what, self.limit)
    }
}

impl std::error::Error for LimitHit {}

fn field(h: &[u8; BLOCK], a: usize, b: usize) -> &[u8] {
    h.get(a..b).unwrap_or_default()
}

fn cstr(f: &[u8]) -> &[u8] {
    match f.iter().position(|&c| c == 0) {
        Some(i) => f.get(..i).unwrap_or_default(),
        None => f,
    }
}

/// Parses an octal or base-256 numeric field.
fn number(f: &[u8], name: &str, context: &str) -> Result<u64, Error> {
    let bad = || {
        Error::malformed(
            context,
            format!("tar header field `{name}` is not a number"),
        )
    };
    if let Some((&first, rest)) = f.split_first() {
        if first & 0x80 != 0 {
            if first & 0x40 != 0 {
                return Err(bad()); // negative
            }
            let mut v: u64 = u64::from(first & 0x3f);
            for &b in rest {
                v = v
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(u64::from(b)))
                    .ok_or_else(bad)?;
            }
            return Ok(v);
        }
    }
    let mut v: u64 = 0;
    let mut started = false;
    let mut ended = false;
    for &c in f {
        match c {
            b' ' | 0 if !started => {}
            b' ' | 0 => ended = true,
            b'0'..=b'7' if !ended => {
                started = true;
                v = v
                    .checked_mul(8)
                    .and_then(|v| v.checked_add(u64::from(c - b'0')))
                    .ok_or_else(bad)?;
            }
            _ => return Err(bad()),
        }
    }
    Ok(v)
}

fn checksum_ok(h: &[u8; BLOCK], context: &str) -> Result<bool, Error> {
    let stored = number(field(h, 148, 156), "chksum", context)?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    Ok(stored == unsigned || i64::try_from(stored).ok() == Some(signed))
}

/// Parsed PAX records of interest.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
}

fn parse_pax(data: &[u8], into: &mut Pax, context: &str) -> Result<(), Error> {
    let bad = |r: &str| Error::malformed(context, format!("bad PAX header: {r}"));
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&c| c == b' ')
            .ok_or_else(|| bad("record without length"))?;
        let len: usize = std::str::from_utf8(rest.get(..sp).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("record length is not a number"))?;
        if len <= sp + 1 || len > rest.len() {
            return Err(bad("record length out of range"));
        }
        let rec = rest
            .get(sp + 1..len)
            .ok_or_else(|| bad("record length out of range"))?;
        rest = rest.get(len..).unwrap_or_default();
        let rec = rec
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("record does not end in newline"))?;
        let eq = rec
            .iter()
            .position(|&c| c == b'=')
            .ok_or_else(|| bad("record without `=`"))?;
        let (k, v) = (
            rec.get(..eq).unwrap_or_default(),
            rec.get(eq + 1..).unwrap_or_default(),
        );
        let num = |v: &[u8]| -> Result<u64, Error> {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("numeric record is not a number"))
        };
        match k {
            b"path" => into.path = Some(v.to_vec()),
            b"linkpath" => into.linkpath = Some(v.to_vec()),
            b"size" => into.size = Some(num(v)?),
            b"uid" => into.uid = Some(num(v)?),
            b"gid" => into.gid = Some(num(v)?),
            k if k.starts_with(b"GNU.sparse") => {
                return Err(Error::Unsupported(format!(
                    "{context}: GNU sparse files in a layer"
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

impl<R: Read> TarReader<R> {
    /// A reader over `inner`; `context` names the stream in errors (e.g. the layer digest).
    pub fn new(inner: R, context: impl Into<String>) -> Self {
        TarReader {
            inner,
            remaining: 0,
            padding: 0,
            context: context.into(),
            done: false,
        }
    }

    /// Skips whatever is left of the current entry's data and padding.
    fn skip_rest(&mut self) -> Result<(), Error> {
        let mut buf = [0u8; 8192];
        let mut left = self.remaining + self.padding;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = read_exact_or(
                &mut self.inner,
                buf.get_mut(..want).unwrap_or_default(),
                &self.context,
            )?;
            if n == 0 {
                return Err(truncated(&self.context));
            }
            left -= n as u64;
        }
        self.remaining = 0;
        self.padding = 0;
        Ok(())
    }

    fn read_block(&mut self, b: &mut [u8; BLOCK]) -> Result<bool, Error> {
        let n = read_exact_or(&mut self.inner, b, &self.context)?;
        match n {
            0 => Ok(false),
            BLOCK => Ok(true),
            _ => Err(truncated(&self.context)),
        }
    }

    fn read_extension(&mut self, size: u64, raw: &mut Vec<u8>) -> Result<Vec<u8>, Error> {
        if size > MAX_EXTENSION {
            return Err(Error::LimitExceeded {
                what: format!("{}: a tar extension header of {size} bytes", self.context),
                limit: MAX_EXTENSION,
                hint: "the layer is malformed or hostile",
            });
        }
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        let mut data = vec![0u8; usize::try_from(padded).unwrap_or(0)];
        let n = read_exact_or(&mut self.inner, &mut data, &self.context)?;
        if n as u64 != padded {
            return Err(truncated(&self.context));
        }
        raw.extend_from_slice(&data);
        data.truncate(usize::try_from(size).unwrap_or(0));
        Ok(data)
    }

    /// The next entry, or `None` at the end of the archive. Unread data of the previous entry
    /// is skipped.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, Error> {
        if self.done {
            return Ok(None);
        }
        self.skip_rest()?;
        let mut raw = Vec::new();
        let mut global_raw = Vec::new();
        let mut pax = Pax::default();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let mut h = [0u8; BLOCK];
            if !self.read_block(&mut h)? {
                // EOF without the end-of-archive blocks: accepted only between entries.
                if raw.is_empty() && global_raw.is_empty() {
                    self.done = true;
                    return Ok(None);
                }
                return Err(truncated(&self.context));
            }
            if h.iter().all(|&b| b == 0) {
                if !raw.is_empty() {
                    return Err(truncated(&self.context));
                }
                self.done = true;
                return Ok(None);
            }
            if !checksum_ok(&h, &self.context)? {
                return Err(Error::malformed(
                    &self.context,
                    "tar header checksum mismatch",
                ));
            }
            let typeflag = h[156];
            let size = number(field(&h, 124, 136), "size", &self.context)?;
            match typeflag {
                b'x' => {
                    raw.extend_from_slice(&h);
                    let d = self.read_extension(size, &mut raw)?;
                    parse_pax(&d, &mut pax, &self.context)?;
                    continue;
                }
                b'g' => {
                    global_raw.extend_from_slice(&h);
                    let d = self.read_extension(size, &mut global_raw)?;
                    // Global records set defaults; we only need to check they are well formed.
                    parse_pax(&d, &mut Pax::default(), &self.context)?;
                    continue;
                }
                b'L' => {
                    raw.extend_from_slice(&h);
                    long_name = Some(cstr(&self.read_extension(size, &mut raw)?).to_vec());
                    continue;
                }
                b'K' => {
                    raw.extend_from_slice(&h);
                    long_link = Some(cstr(&self.read_extension(size, &mut raw)?).to_vec());
                    continue;
                }
                _ => {}
            }
            raw.extend_from_slice(&h);
            let kind = match typeflag {
                b'0' | 0 | b'7' => Kind::File,
                b'1' => Kind::Hardlink,
                b'2' => Kind::Symlink,
                b'3' => Kind::CharDevice,
                b'4' => Kind::BlockDevice,
                b'5' => Kind::Dir,
                b'6' => Kind::Fifo,
                b'S' => {
                    return Err(Error::Unsupported(format!(
                        "{}: GNU sparse files in a layer",
                        self.context
                    )))
                }
                other => {
                    return Err(Error::malformed(
                        &self.context,
                        format!("unknown tar entry type 0x{other:02x}"),
                    ))
                }
            };
            let ustar = field(&h, 257, 263) == b"ustar\0";
            let name: Vec<u8> = if let Some(p) = pax.path.take() {
                p
            } else if let Some(l) = long_name.take() {
                l
            } else if ustar && h[345] != 0 {
                let mut p = cstr(field(&h, 345, 500)).to_vec();
                p.push(b'/');
                p.extend_from_slice(cstr(field(&h, 0, 100)));
                p
            } else {
                cstr(field(&h, 0, 100)).to_vec()
            };
            let link_raw: Vec<u8> = pax
                .linkpath
                .take()
                .or(long_link.take())
                .unwrap_or_else(|| cstr(field(&h, 157, 257)).to_vec());
            let path = paths::from_entry_name(&name, &self.context)?;
            let size = pax.size.unwrap_or(size);
            let mode = u32::try_from(number(field(&h, 100, 108), "mode", &self.context)? & 0o7777)
                .unwrap_or(0);
            let uid = pax
                .uid
                .unwrap_or(number(field(&h, 108, 116), "uid", &self.context)?);
            let gid = pax
                .gid
                .unwrap_or(number(field(&h, 116, 124), "gid", &self.context)?);
            let link = match kind {
                Kind::Symlink => {
                    Some(String::from_utf8(link_raw).map_err(|_| Error::UnsafePath {
                        path: path.clone(),
                        context: self.context.clone(),
                        reason: "symlink target is not valid UTF-8",
                    })?)
                }
                Kind::Hardlink => Some(paths::from_entry_name(&link_raw, &self.context)?),
                _ => None,
            };
            // Links, directories and devices carry no data whatever their size field says
            // (except that POSIX lets a hard link carry data; we refuse that ambiguity).
            let data = match kind {
                Kind::File => size,
                Kind::Hardlink if size != 0 => {
                    return Err(Error::malformed(
                        &self.context,
                        format!("hard link {path} carries data"),
                    ))
                }
                _ => 0,
            };
            self.remaining = data;
            self.padding = (BLOCK as u64 - data % BLOCK as u64) % BLOCK as u64;
            return Ok(Some(Entry {
                path,
                kind,
                mode,
                uid,
                gid,
                size: data,
                link,
                raw,
                global_raw,
            }));
        }
    }

    /// Reads the current entry's data (returns 0 at its end).
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = read_exact_or(
            &mut self.inner,
            buf.get_mut(..want).unwrap_or_default(),
            &self.context,
        )?;
        if n == 0 {
            return Err(truncated(&self.context));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// The underlying reader (to drain what follows the end-of-archive marker).
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// The padding that follows `size` bytes of entry data.
pub fn padding(size: u64) -> usize {
    usize::try_from((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, ty, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                b.append_link(&mut h, path, l).unwrap();
            } else {
                b.append_data(&mut h, path, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn all(data: &[u8]) -> Result<Vec<(Entry, Vec<u8>)>, Error> {
        let mut r = TarReader::new(data, "test");
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            let mut d = Vec::new();
            let mut buf = [0u8; 100];
            loop {
                let n = r.read_data(&mut buf)?;
                if n == 0 {
                    break;
                }
                d.extend_from_slice(&buf[..n]);
            }
            out.push((e, d));
        }
        Ok(out)
    }

    #[test]
    fn reads_files_links_and_long_names() {
        let long = format!("a/{}/file", "x".repeat(200));
        let t = build(&[
            ("bin/", tar::EntryType::Directory, b"", None),
            ("bin/app", tar::EntryType::Regular, b"hello world", None),
            (&long, tar::EntryType::Regular, b"long", None),
            ("bin/sh", tar::EntryType::Symlink, b"", Some("app")),
            ("bin/hl", tar::EntryType::Link, b"", Some("bin/app")),
        ]);
        let es = all(&t).unwrap();
        assert_eq!(es.len(), 5);
        assert_eq!(es[0].0.kind, Kind::Dir);
        assert_eq!(
            (es[1].0.path.as_str(), es[1].1.as_slice()),
            ("/bin/app", &b"hello world"[..])
        );
        assert_eq!(es[2].0.path, format!("/{long}"));
        assert_eq!(es[2].1, b"long");
        assert_eq!(es[3].0.link.as_deref(), Some("app"));
        assert_eq!(es[4].0.link.as_deref(), Some("/bin/app"));
        assert_eq!(es[4].0.kind, Kind::Hardlink);
    }

    #[test]
    fn refuses_dotdot_bad_checksum_truncation() {
        let mut t = build(&[("a", tar::EntryType::Regular, b"x", None)]);
        // Rename to "../a" and fix the checksum.
        t[..4].copy_from_slice(b"../a");
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(&t[..512]);
        h.set_cksum();
        t[..512].copy_from_slice(h.as_bytes());
        assert!(matches!(all(&t).unwrap_err(), Error::UnsafePath { .. }));
        let mut t = build(&[("a", tar::EntryType::Regular, b"x", None)]);
        t[0] = b'b';
        assert!(
            matches!(all(&t).unwrap_err(), Error::Malformed { reason, .. } if reason.contains("checksum"))
        );
        let t = build(&[("a", tar::EntryType::Regular, &[1u8; 2000], None)]);
        assert!(
            matches!(all(&t[..1000]).unwrap_err(), Error::Malformed { reason, .. } if reason.contains("truncated"))
        );
        assert!(
            matches!(all(&t[..300]).unwrap_err(), Error::Malformed { reason, .. } if reason.contains("truncated"))
        );
    }

    #[test]
    fn refuses_huge_extension_header() {
        let mut h = tar::Header::new_ustar();
        h.set_path("././@PaxHeader").unwrap();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(MAX_EXTENSION + 1);
        h.set_cksum();
        let e = all(h.as_bytes()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::LimitExceeded {
                    limit: MAX_EXTENSION,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(number(b"0000644\0", "m", "t").unwrap(), 0o644);
        assert_eq!(number(b"  12 \0", "m", "t").unwrap(), 0o12);
        assert_eq!(
            number(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0], "m", "t").unwrap(),
            256
        );
        assert!(number(b"12a", "m", "t").is_err());
        assert!(number(
            &[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            "m",
            "t"
        )
        .is_err());
    }

    #[test]
    fn pax_overrides_path_and_size() {
        let mut b = tar::Builder::new(Vec::new());
        let long = "p/".repeat(80) + "f";
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        // Write a PAX header by hand.
        let rec = format!("path={long}\n");
        let len = rec.len() + 4;
        let rec = format!("{len} {rec}");
        assert_eq!(rec.len(), len);
        let mut xh = tar::Header::new_ustar();
        xh.set_path("PaxHeader").unwrap();
        xh.set_entry_type(tar::EntryType::XHeader);
        xh.set_size(rec.len() as u64);
        xh.set_cksum();
        b.append(&xh, rec.as_bytes()).unwrap();
        h.set_path("short").unwrap();
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
        let t = b.into_inner().unwrap();
        let es = all(&t).unwrap();
        assert_eq!(es.len(), 1);
        assert_eq!(es[0].0.path, format!("/{long}"));
        assert_eq!(es[0].0.mode, 0o600);
        assert_eq!(es[0].1, b"abc");
    }
}
