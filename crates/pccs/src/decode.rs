//! Decoding of PCS/PCCS answers: the signed JSON objects (kept byte-exact), issuer-chain headers
//! (URL-encoded PEM), CRLs (DER, PEM or hex — PCCS and PCS differ) and their validity.
//!
//! All input here is untrusted: every function is total (no indexing that can panic) and returns
//! a reason string that the caller wraps with the service and item names.

use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

/// A signed PCS JSON document (`{"tcbInfo": {…}, "signature": "…"}` or
/// `{"enclaveIdentity": {…}, "signature": "…"}`) split into the exact signed bytes and the
/// signature, plus the validity read from the signed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignedJson {
    /// The signed object, byte-exact as served (the signature covers these bytes).
    pub(crate) body: String,
    /// The signature, hex as served (lower-cased).
    pub(crate) signature_hex: String,
    /// `issueDate`, Unix seconds.
    pub(crate) issue_date: i64,
    /// `nextUpdate`, Unix seconds.
    pub(crate) next_update: i64,
}

/// Splits a signed PCS JSON answer. `member` is `tcbInfo` or `enclaveIdentity`.
pub(crate) fn signed_json(answer: &[u8], member: &str) -> Result<SignedJson, String> {
    let text = std::str::from_utf8(answer).map_err(|_| "the answer is not UTF-8".to_string())?;
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let obj = doc.as_object().ok_or("the answer is not a JSON object")?;
    let inner = obj
        .get(member)
        .and_then(|v| v.as_object())
        .ok_or_else(|| format!("the answer has no `{member}` object"))?;
    let signature = obj
        .get("signature")
        .and_then(|v| v.as_str())
        .ok_or("the answer has no `signature` string")?;
    let sig = hex::decode(signature).map_err(|_| "`signature` is not hex".to_string())?;
    if sig.len() != 64 {
        return Err(format!(
            "`signature` is {} bytes, an ECDSA P-256 r||s signature is 64",
            sig.len()
        ));
    }
    let issue_date = json_time(inner, "issueDate")?;
    let next_update = json_time(inner, "nextUpdate")?;
    let body = raw_member(text, member)
        .ok_or_else(|| format!("cannot locate the exact bytes of `{member}`"))?
        .to_string();
    Ok(SignedJson {
        body,
        signature_hex: hex::encode(sig),
        issue_date,
        next_update,
    })
}

/// Reads the validity dates from a signed object already split (the cache and offline files
/// hold the object itself).
pub(crate) fn signed_object_dates(body: &str) -> Result<(i64, i64), String> {
    let doc: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let obj = doc.as_object().ok_or("not a JSON object")?;
    Ok((json_time(obj, "issueDate")?, json_time(obj, "nextUpdate")?))
}

fn json_time(obj: &serde_json::Map<String, serde_json::Value>, key: &str) -> Result<i64, String> {
    let s = obj
        .get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("`{key}` is missing or not a string"))?;
    parse_rfc3339(s).ok_or_else(|| format!("`{key}` {s:?} is not an RFC 3339 time"))
}

/// Parses an RFC 3339 time to Unix seconds.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Returns the exact text of the value of top-level member `key` in the JSON object `doc`.
///
/// `doc` must already be known to be valid JSON (the caller parsed it); this scanner only
/// locates byte ranges and never panics on any input.
pub(crate) fn raw_member<'a>(doc: &'a str, key: &str) -> Option<&'a str> {
    let b = doc.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match b.get(i)? {
            b'}' => return None,
            b'"' => {}
            _ => return None,
        }
        let key_end = skip_string(b, i)?;
        let this_key = doc.get(i + 1..key_end - 1)?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = skip_value(b, start)?;
        if this_key == key {
            return doc.get(start..end);
        }
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i += 1,
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `b[i]` is `"`; returns the index just past the closing quote.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match b.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// Returns the index just past the JSON value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// Decodes an issuer-chain header: URL-encoded PEM (PCS), or plain PEM (some PCCS versions).
/// Checks that it holds at least one certificate and that each parses.
pub(crate) fn issuer_chain(header: &[u8]) -> Result<String, String> {
    let decoded = percent_decode(header)?;
    let text = String::from_utf8(decoded).map_err(|_| "the chain is not UTF-8".to_string())?;
    check_pem_chain(&text)?;
    Ok(text)
}

/// Checks that `text` is a non-empty sequence of PEM certificates that parse as X.509.
pub(crate) fn check_pem_chain(text: &str) -> Result<(), String> {
    let mut count = 0usize;
    for pem in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
        let pem = pem.map_err(|e| format!("bad PEM in the chain: {e}"))?;
        if pem.label != "CERTIFICATE" {
            return Err(format!(
                "the chain holds a {:?} block, not a certificate",
                pem.label
            ));
        }
        pem.parse_x509()
            .map_err(|e| format!("certificate {} of the chain: {e}", count + 1))?;
        count += 1;
    }
    if count == 0 {
        return Err("the chain holds no certificate".into());
    }
    Ok(())
}

fn percent_decode(input: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input.len());
    let mut it = input.iter();
    while let Some(&c) = it.next() {
        if c == b'%' {
            let hi = it.next().and_then(|c| (*c as char).to_digit(16));
            let lo = it.next().and_then(|c| (*c as char).to_digit(16));
            match (hi, lo) {
                // Both digits are < 16, so the value fits a byte.
                (Some(h), Some(l)) => out.push(((h << 4) | l) as u8),
                _ => return Err("bad %-escape in the URL-encoded chain".into()),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// A CRL as DER, with its validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Crl {
    /// The DER bytes.
    pub(crate) der: Vec<u8>,
    /// thisUpdate, Unix seconds.
    pub(crate) this_update: i64,
    /// nextUpdate, Unix seconds.
    pub(crate) next_update: i64,
}

/// Decodes a CRL answer: DER (Intel PCS with `encoding=der`), PEM, or hex text (PCCS).
pub(crate) fn crl(answer: &[u8]) -> Result<Crl, String> {
    let trimmed = answer.trim_ascii();
    let unprefixed = trimmed.strip_prefix(b"0x").unwrap_or(trimmed);
    let der = if trimmed.starts_with(b"-----BEGIN") {
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(trimmed).map_err(|e| format!("bad PEM: {e}"))?;
        if pem.label != "X509 CRL" {
            return Err(format!("PEM block {:?} is not an X509 CRL", pem.label));
        }
        pem.contents
    } else if !unprefixed.is_empty() && unprefixed.iter().all(u8::is_ascii_hexdigit) {
        // A DER CRL always holds non-hex bytes (tags such as 0x06), so all-hex text is hex.
        hex::decode(unprefixed).map_err(|_| "odd-length hex".to_string())?
    } else {
        answer.to_vec()
    };
    let (rest, parsed) =
        CertificateRevocationList::from_der(&der).map_err(|e| format!("not a CRL: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the CRL", rest.len()));
    }
    let this_update = parsed.last_update().timestamp();
    let next_update = parsed
        .next_update()
        .ok_or("the CRL has no nextUpdate")?
        .timestamp();
    drop(parsed);
    Ok(Crl {
        der,
        this_update,
        next_update,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_member_keeps_exact_bytes() {
        let doc =
            r#" { "a" : [1, {"x":"}"}], "tcbInfo" :{"k": "v\"}" , "n":[ ]} ,"signature":"00"}"#;
        assert_eq!(
            raw_member(doc, "tcbInfo"),
            Some(r#"{"k": "v\"}" , "n":[ ]}"#)
        );
        assert_eq!(raw_member(doc, "a"), Some(r#"[1, {"x":"}"}]"#));
        assert_eq!(raw_member(doc, "signature"), Some(r#""00""#));
        assert_eq!(raw_member(doc, "missing"), None);
    }

    #[test]
    fn raw_member_is_total_on_truncations() {
        let doc = r#"{"tcbInfo":{"k":"v\\","l":[1,2,{"m":null}]},"signature":"ab"}"#;
        for n in 0..doc.len() {
            if let Some(prefix) = doc.get(..n) {
                let _ = raw_member(prefix, "signature");
            }
        }
        assert_eq!(raw_member(doc, "signature"), Some(r#""ab""#));
    }

    #[test]
    fn signed_json_rejects_bad_signature_length() {
        let doc = br#"{"tcbInfo":{"issueDate":"2025-06-19T10:56:11Z","nextUpdate":"2025-07-19T10:56:11Z"},"signature":"abcd"}"#;
        let err = signed_json(doc, "tcbInfo").unwrap_err();
        assert!(err.contains("64"), "{err}");
    }

    #[test]
    fn signed_json_requires_dates() {
        let sig = "00".repeat(64);
        let doc =
            format!(r#"{{"tcbInfo":{{"issueDate":"2025-06-19T10:56:11Z"}},"signature":"{sig}"}}"#);
        let err = signed_json(doc.as_bytes(), "tcbInfo").unwrap_err();
        assert!(err.contains("nextUpdate"), "{err}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"a%20b%0A").unwrap(), b"a b\n");
        assert!(percent_decode(b"a%2").is_err());
        assert!(percent_decode(b"a%zz").is_err());
    }

    #[test]
    fn crl_rejects_garbage() {
        assert!(crl(b"hello").is_err());
        assert!(crl(b"3000").is_err());
        assert!(crl(&[0x30, 0x03, 0x02, 0x01]).is_err());
    }
}
