//! Canonical paths inside an image, and glob matching over them.
//!
//! Every path this crate records or compares is *canonical*: absolute (`/` first), components
//! separated by single `/`, no `.` or `..` component, no trailing `/`, no NUL, valid UTF-8, at
//! most [`MAX_PATH_LEN`] bytes. The root itself is `/`. Tar entry names are turned into this
//! form by [`from_entry_name`], which refuses anything that could climb out of the root.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::Error;

/// Longest path we accept (Linux's PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;

/// Turns a tar entry name (`./usr/bin/x`, `usr/bin/x/`, `/etc/passwd`) into a canonical path.
/// `..` anywhere is refused, not resolved: a layer that needs it is hostile or broken.
pub fn from_entry_name(raw: &[u8], context: &str) -> Result<String, Error> {
    let unsafe_path = |reason| Error::UnsafePath {
        path: String::from_utf8_lossy(raw).into_owned(),
        context: context.to_string(),
        reason,
    };
    if raw.len() > MAX_PATH_LEN {
        return Err(unsafe_path("longer than 4096 bytes"));
    }
    let s = std::str::from_utf8(raw).map_err(|_| unsafe_path("not valid UTF-8"))?;
    if s.contains('\0') {
        return Err(unsafe_path("contains a NUL byte"));
    }
    let mut out = String::with_capacity(s.len() + 1);
    for comp in s.split('/') {
        match comp {
            "" | "." => continue,
            ".." => return Err(unsafe_path("contains a `..` component")),
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Checks that `path` is already canonical (see the module docs).
pub fn check_canonical(path: &str, context: &str) -> Result<(), Error> {
    let bad = |reason| Error::UnsafePath {
        path: path.to_string(),
        context: context.to_string(),
        reason,
    };
    if path.len() > MAX_PATH_LEN {
        return Err(bad("longer than 4096 bytes"));
    }
    if path == "/" {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(bad("not absolute"));
    };
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    for comp in rest.split('/') {
        match comp {
            "" => return Err(bad("empty component or trailing `/`")),
            "." | ".." => return Err(bad("contains a `.` or `..` component")),
            _ => {}
        }
    }
    Ok(())
}

/// Parent of a canonical path (`/` for top-level entries and for `/` itself).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => path.get(..i).unwrap_or("/"),
    }
}

/// Last component of a canonical path.
pub fn file_name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => path.get(i + 1..).unwrap_or(""),
        None => path,
    }
}

/// Joins a canonical directory and one component.
pub fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Whether `path` is `prefix` or lies below it (both canonical).
pub fn is_under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// Resolves a symlink target relative to the link's directory, lexically, staying inside the
/// root: returns the canonical absolute path the link names, or `None` when `..` would climb
/// above `/` (an escape).
pub fn resolve_link(link_path: &str, target: &str) -> Option<String> {
    let mut stack: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        for c in parent(link_path).split('/').filter(|c| !c.is_empty()) {
            stack.push(c);
        }
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                stack.pop()?;
            }
            c => stack.push(c),
        }
    }
    if stack.is_empty() {
        return Some("/".to_string());
    }
    Some(stack.iter().fold(String::new(), |mut acc, c| {
        acc.push('/');
        acc.push_str(c);
        acc
    }))
}

/// A set of globs over canonical paths. `*` and `?` do not cross `/`, `**` does; a glob that
/// does not start with `/` is taken as starting with `/`; a glob also matches everything below
/// what it matches, so `--encrypt /app/conf` covers the files in that directory.
#[derive(Debug, Clone)]
pub struct Globs {
    set: GlobSet,
    patterns: Vec<String>,
}

impl Globs {
    /// Compiles `patterns`.
    pub fn new(patterns: &[String]) -> Result<Self, Error> {
        let mut builder = GlobSetBuilder::new();
        let mut normalised = Vec::with_capacity(patterns.len());
        for p in patterns {
            let p = if p.starts_with('/') {
                p.clone()
            } else {
                format!("/{p}")
            };
            let p = p.trim_end_matches('/').to_string();
            let p = if p.is_empty() { "/".to_string() } else { p };
            for variant in [p.clone(), format!("{}/**", p.trim_end_matches('/'))] {
                let glob = GlobBuilder::new(&variant)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| Error::BadGlob {
                        glob: p.clone(),
                        reason: e.to_string(),
                    })?;
                builder.add(glob);
            }
            normalised.push(p);
        }
        let set = builder.build().map_err(|e| Error::BadGlob {
            glob: patterns.join(" "),
            reason: e.to_string(),
        })?;
        Ok(Self {
            set,
            patterns: normalised,
        })
    }

    /// Whether any glob matches `path`.
    pub fn is_match(&self, path: &str) -> bool {
        self.set.is_match(path)
    }

    /// Whether there are no globs at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The globs, normalised (leading `/`, no trailing `/`).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_canonicalised() {
        assert_eq!(from_entry_name(b"./usr/bin/x", "t").unwrap(), "/usr/bin/x");
        assert_eq!(from_entry_name(b"usr//lib/", "t").unwrap(), "/usr/lib");
        assert_eq!(from_entry_name(b"/etc/passwd", "t").unwrap(), "/etc/passwd");
        assert_eq!(from_entry_name(b"./", "t").unwrap(), "/");
    }

    #[test]
    fn dotdot_is_refused() {
        let e = from_entry_name(b"usr/../../etc/shadow", "layer").unwrap_err();
        assert!(matches!(
            e,
            Error::UnsafePath {
                reason: "contains a `..` component",
                ..
            }
        ));
        assert!(from_entry_name(b"a\0b", "t").is_err());
        assert!(from_entry_name(&[0xff, 0xfe], "t").is_err());
    }

    #[test]
    fn canonical_check() {
        check_canonical("/a/b", "t").unwrap();
        check_canonical("/", "t").unwrap();
        for bad in ["a/b", "/a/", "/a//b", "/a/./b", "/a/../b", ""] {
            assert!(check_canonical(bad, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn links_resolve_inside_root_only() {
        assert_eq!(resolve_link("/lib", "usr/lib").unwrap(), "/usr/lib");
        assert_eq!(
            resolve_link("/usr/bin/sh", "../../bin/busybox").unwrap(),
            "/bin/busybox"
        );
        assert_eq!(resolve_link("/a/b", "/etc/x").unwrap(), "/etc/x");
        assert!(resolve_link("/a/b", "../../etc").is_none());
        assert!(resolve_link("/x", "/../etc").is_none());
    }

    #[test]
    fn globs_match_below_and_not_across_slash() {
        let g = Globs::new(&["/app/*.key".into(), "etc/conf".into()]).unwrap();
        assert!(g.is_match("/app/a.key"));
        assert!(!g.is_match("/app/sub/a.key"));
        assert!(g.is_match("/etc/conf"));
        assert!(g.is_match("/etc/conf/x/y"));
        assert!(!g.is_match("/etc/config"));
        let all = Globs::new(&["/**".into()]).unwrap();
        assert!(all.is_match("/a/b/c"));
    }

    #[test]
    fn under() {
        assert!(is_under("/proc/1", "/proc"));
        assert!(is_under("/proc", "/proc"));
        assert!(!is_under("/procx", "/proc"));
        assert!(is_under("/x", "/"));
    }
}
