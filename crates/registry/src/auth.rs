//! Registry credentials: `--creds`, else the registry's entry in the containers/Docker auth file.

use std::path::{Path, PathBuf};

use base64::Engine;
use oci_client::secrets::RegistryAuth;

use crate::{Error, Options};

/// The auth file skopeo and podman read, else Docker's: `$REGISTRY_AUTH_FILE`,
/// `$XDG_RUNTIME_DIR/containers/auth.json` if it exists, `$DOCKER_CONFIG/config.json`,
/// `~/.docker/config.json`.
pub fn default_auth_file() -> PathBuf {
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return PathBuf::from(p);
    }
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR") {
        let p = PathBuf::from(run).join("containers/auth.json");
        if p.is_file() {
            return p;
        }
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return PathBuf::from(d).join("config.json");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".docker/config.json")
}

/// The credentials for `registry` (host[:port]): `--creds`, else the auth file's entry, else
/// anonymous. Never logged.
pub fn credentials_for(registry: &str, opts: &Options) -> Result<RegistryAuth, Error> {
    if let Some(c) = &opts.creds {
        return split_user_pass(c, "--creds");
    }
    let file = opts.auth_file.clone().unwrap_or_else(default_auth_file);
    match std::fs::read(&file) {
        Ok(bytes) => from_auth_file(&bytes, &file, registry),
        // No auth file (or it was never created): anonymous, as skopeo.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RegistryAuth::Anonymous),
        Err(e) => Err(Error::io("reading auth file", &file)(e)),
    }
}

fn split_user_pass(s: &str, what: &str) -> Result<RegistryAuth, Error> {
    match s.split_once(':') {
        Some((user, pass)) if !user.is_empty() => {
            Ok(RegistryAuth::Basic(user.to_string(), pass.to_string()))
        }
        _ => Err(Error::Config(format!("{what}: expected USER:PASSWORD"))),
    }
}

/// The `auths` entry for `registry` in a containers/Docker auth file.
fn from_auth_file(bytes: &[u8], file: &Path, registry: &str) -> Result<RegistryAuth, Error> {
    let bad = |why: String| Error::Config(format!("auth file {}: {why}", file.display()));
    if bytes.len() as u64 > crate::MAX_JSON {
        return Err(bad("too large".into()));
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
        return Ok(RegistryAuth::Anonymous);
    };
    // Keys are host[:port], sometimes with a scheme or Docker Hub's legacy URL.
    // Docker Hub goes by several names in auth files.
    let hub = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    let docker_hub = hub.contains(&registry);
    let entry = auths.iter().find_map(|(key, entry)| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        let matches = host == registry || (docker_hub && hub.contains(&host));
        matches.then_some(entry)
    });
    let Some(entry) = entry else {
        return Ok(RegistryAuth::Anonymous);
    };
    let Some(b64) = entry.get("auth").and_then(|a| a.as_str()) else {
        return Err(bad(format!(
            "the entry for {registry} has no \"auth\" field (credential helpers are not \
             supported; pass --creds USER:PASS)"
        )));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad(format!("the \"auth\" of {registry} is not base64")))?;
    let text = String::from_utf8(decoded)
        .map_err(|_| bad(format!("the \"auth\" of {registry} is not UTF-8")))?;
    split_user_pass(
        &text,
        &format!("auth file {} entry {registry}", file.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(json: &str, registry: &str) -> Result<RegistryAuth, Error> {
        from_auth_file(json.as_bytes(), Path::new("auth.json"), registry)
    }

    #[test]
    fn auth_file_entries_are_matched_by_host_and_decoded() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let file = format!(
            r#"{{"auths": {{"https://127.0.0.1:5000/v2/": {{"auth": "{b64}"}},
                "https://index.docker.io/v1/": {{"auth": "{b64}"}}}}}}"#
        );
        match auth(&file, "127.0.0.1:5000").unwrap() {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("alice", "s3cret")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            auth(&file, "docker.io").unwrap(),
            RegistryAuth::Basic(..)
        ));
        // podman and skopeo write Docker Hub as "docker.io"; the client says index.docker.io.
        let podman = format!(r#"{{"auths": {{"docker.io": {{"auth": "{b64}"}}}}}}"#);
        assert!(matches!(
            auth(&podman, "index.docker.io").unwrap(),
            RegistryAuth::Basic(..)
        ));
        assert!(matches!(
            auth(&file, "127.0.0.1:5001").unwrap(),
            RegistryAuth::Anonymous
        ));
        assert!(matches!(auth("{}", "x").unwrap(), RegistryAuth::Anonymous));
    }

    #[test]
    fn unusable_entries_are_refused_with_the_reason() {
        let e = auth(r#"{"auths": {"r:1": {"identitytoken": "x"}}}"#, "r:1").unwrap_err();
        assert!(e.to_string().contains("credential helpers"), "{e}");
        let e = auth(r#"{"auths": {"r:1": {"auth": "%%%"}}}"#, "r:1").unwrap_err();
        assert!(e.to_string().contains("not base64"), "{e}");
        let e = auth("not json", "r:1").unwrap_err();
        assert!(e.to_string().contains("auth.json"), "{e}");
        // The secret never appears in an error.
        let b64 = base64::engine::general_purpose::STANDARD.encode("no-colon-s3cret");
        let e = auth(
            &format!(r#"{{"auths": {{"r:1": {{"auth": "{b64}"}}}}}}"#),
            "r:1",
        )
        .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(split_user_pass(":x", "--creds").is_err());
    }
}
