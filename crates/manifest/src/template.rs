//! Placeholders: a small, logic-free template syntax, parsed at validation, rendered only by
//! the Coordinator.
//!
//! # Grammar
//!
//! ```text
//! template    = *( literal / placeholder )
//! placeholder = "{{" *SP reference *SP "}}"
//! reference   = "secrets." NAME "." FIELD "." ENCODING
//!             / "coffer.root_ca." ENCODING
//!             / "coffer.workload.cert." ENCODING     ; the workload's own certificate
//!             / "coffer.workload.chain." ENCODING    ; its certificate + the intermediate CA
//! NAME        = 1*64( ALPHA / DIGIT / "_" / "-" )
//! FIELD       = "key" / "value" / "private" / "public" / "cert"
//! ENCODING    = "hex" / "base64" / "pem" / "raw" / "text"
//! SP          = " " / TAB
//! ```
//!
//! `{{` always opens a placeholder; there is no escape and no logic (no conditions, loops,
//! filters or defaults), so what a template can produce is obvious from reading it. Text
//! outside placeholders is copied as is (a lone `}}` is text).
//!
//! Fields by secret type: `symmetric` → `key`; `ecdsa-p256`, `rsa` → `private`, `public`;
//! `certificate` → `cert`, `private`, `public`; `user-defined` → `value` (`plain`) or `key`
//! (`symmetric`).
//!
//! Encodings: `hex` (lower case), `base64` (standard alphabet, padded), `raw` (the bytes
//! themselves; only in `files`, because env and argv cannot carry arbitrary bytes), `pem` (keys
//! and certificates only: PKCS#8 `PRIVATE KEY`, SPKI `PUBLIC KEY`, `CERTIFICATE`), `text` (a
//! `plain` user-defined value as UTF-8 text; rendering fails if it is not UTF-8 or holds NUL).
//! For keys and certificates, `hex`/`base64`/`raw` encode the DER.
//!
//! `coffer.workload.key` is recognised but refused at validation: the workload's private key is
//! generated inside the TEE and never reaches the Coordinator, so it cannot be templated.
//!
//! An unknown reference is a validation error with its path; a template never renders to an
//! empty string by mistake.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::error::Error;

/// Which field of a secret a placeholder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretField {
    /// Symmetric key bytes (`symmetric`, user-defined `symmetric`).
    Key,
    /// A user-defined `plain` value.
    Value,
    /// Private key, PKCS#8 DER.
    Private,
    /// Public key, SubjectPublicKeyInfo DER.
    Public,
    /// Certificate DER (`certificate` secrets).
    Cert,
}

impl SecretField {
    /// The template spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretField::Key => "key",
            SecretField::Value => "value",
            SecretField::Private => "private",
            SecretField::Public => "public",
            SecretField::Cert => "cert",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "key" => SecretField::Key,
            "value" => SecretField::Value,
            "private" => SecretField::Private,
            "public" => SecretField::Public,
            "cert" => SecretField::Cert,
            _ => return None,
        })
    }
}

/// How a value is written into the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encoding {
    /// Lower-case hex.
    Hex,
    /// Standard base64 with padding.
    Base64,
    /// PEM (keys and certificates).
    Pem,
    /// The bytes themselves (files only).
    Raw,
    /// UTF-8 text (user-defined plain values).
    Text,
}

impl Encoding {
    /// The template spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
            Encoding::Pem => "pem",
            Encoding::Raw => "raw",
            Encoding::Text => "text",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hex" => Encoding::Hex,
            "base64" => Encoding::Base64,
            "pem" => Encoding::Pem,
            "raw" => Encoding::Raw,
            "text" => Encoding::Text,
            _ => return None,
        })
    }
}

/// What a placeholder refers to; the [`SecretSource`] is asked for exactly this.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A field of a secret declared in `secrets`.
    Secret {
        /// The secret's name.
        name: String,
        /// The field.
        field: SecretField,
    },
    /// The Coordinator's root CA certificate (DER).
    RootCa,
    /// The activating workload's certificate (DER).
    WorkloadCert,
    /// The workload's certificate followed by the intermediate CA (DER each).
    WorkloadChain,
    /// The workload's private key: never available (refused at validation).
    WorkloadKey,
}

/// One placeholder: a target and an encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// What to read.
    pub target: Target,
    /// How to write it.
    pub encoding: Encoding,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Secret { name, field } => write!(f, "secrets.{name}.{}", field.as_str())?,
            Target::RootCa => f.write_str("coffer.root_ca")?,
            Target::WorkloadCert => f.write_str("coffer.workload.cert")?,
            Target::WorkloadChain => f.write_str("coffer.workload.chain")?,
            Target::WorkloadKey => f.write_str("coffer.workload.key")?,
        }
        write!(f, ".{}", self.encoding.as_str())
    }
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as is.
    Literal(String),
    /// A placeholder.
    Placeholder(Reference),
}

/// A template: its source text and, if the syntax is right, its parts.
///
/// Deserializing never fails on bad placeholder syntax: the error is kept and reported by
/// validation with the template's path, so that every problem in a manifest is reported at once.
#[derive(Clone)]
pub struct Template {
    source: String,
    parsed: Result<Vec<Part>, String>,
}

impl Template {
    /// Parses `source`. Syntax errors are kept (see [`Template::syntax_error`]).
    pub fn new(source: impl Into<String>) -> Self {
        let source = source.into();
        let parsed = parse(&source);
        Template { source, parsed }
    }

    /// The text as written in the manifest.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The syntax error, if any.
    pub fn syntax_error(&self) -> Option<&str> {
        self.parsed.as_ref().err().map(String::as_str)
    }

    /// The parts, if the syntax is right.
    pub fn parts(&self) -> Option<&[Part]> {
        self.parsed.as_deref().ok()
    }

    /// The placeholders in order (none if the syntax is wrong).
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.parts().unwrap_or(&[]).iter().filter_map(|p| match p {
            Part::Placeholder(r) => Some(r),
            Part::Literal(_) => None,
        })
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The source is manifest text (public); values are never in a template.
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Template {}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Template::new)
    }
}

impl JsonSchema for Template {
    fn schema_name() -> Cow<'static, str> {
        "Template".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Text with placeholders such as {{ secrets.NAME.FIELD.ENCODING }}, \
                            {{ coffer.root_ca.pem }}, {{ coffer.workload.cert.pem }}."
        })
    }
}

fn parse(source: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = source;
    let mut offset = 0usize;
    while let Some(open) = rest.find("{{") {
        let (text, after_text) = rest.split_at(open);
        if !text.is_empty() {
            parts.push(Part::Literal(text.to_string()));
        }
        let inner_and_rest = &after_text[2..];
        let Some(close) = inner_and_rest.find("}}") else {
            return Err(format!(
                "placeholder opened at byte {} is not closed with }}}}",
                offset + open
            ));
        };
        let inner = &inner_and_rest[..close];
        let reference = parse_reference(inner.trim_matches([' ', '\t']))
            .map_err(|e| format!("placeholder at byte {}: {e}", offset + open))?;
        parts.push(Part::Placeholder(reference));
        let consumed = open + 2 + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.to_string()));
    }
    Ok(parts)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_reference(s: &str) -> Result<Reference, String> {
    const FORMS: &str = "expected secrets.NAME.FIELD.ENCODING, coffer.root_ca.ENCODING, \
                         coffer.workload.cert.ENCODING or coffer.workload.chain.ENCODING";
    if s.is_empty() {
        return Err(format!("empty placeholder; {FORMS}"));
    }
    let segs: Vec<&str> = s.split('.').collect();
    let encoding_of = |e: &str| {
        Encoding::parse(e).ok_or_else(|| {
            format!("unknown encoding {e:?} in {s:?}; use hex, base64, pem, raw or text")
        })
    };
    match segs.as_slice() {
        ["secrets", name, field, enc] => {
            if !valid_name(name) {
                return Err(format!("bad secret name {name:?} in {s:?}"));
            }
            let field = SecretField::parse(field).ok_or_else(|| {
                format!("unknown field {field:?} in {s:?}; use key, value, private, public or cert")
            })?;
            Ok(Reference {
                target: Target::Secret {
                    name: (*name).to_string(),
                    field,
                },
                encoding: encoding_of(enc)?,
            })
        }
        ["coffer", "root_ca", enc] => Ok(Reference {
            target: Target::RootCa,
            encoding: encoding_of(enc)?,
        }),
        ["coffer", "workload", item, enc] => {
            let target = match *item {
                "cert" => Target::WorkloadCert,
                "chain" => Target::WorkloadChain,
                "key" => Target::WorkloadKey,
                other => {
                    return Err(format!(
                        "unknown item coffer.workload.{other} in {s:?}; use cert or chain"
                    ))
                }
            };
            Ok(Reference {
                target,
                encoding: encoding_of(enc)?,
            })
        }
        ["secrets", ..] => Err(format!("{s:?} has the wrong number of parts; {FORMS}")),
        ["coffer", ..] => Err(format!("unknown coffer reference {s:?}; {FORMS}")),
        _ => Err(format!("unknown reference {s:?}; {FORMS}")),
    }
}

/// A value handed to the renderer by the [`SecretSource`]: raw bytes (symmetric keys, user
/// values) or DER (keys, certificates; a chain has several parts). Zeroed on drop; Debug shows
/// only sizes.
pub struct SecretValue {
    parts: Vec<Zeroizing<Vec<u8>>>,
}

impl SecretValue {
    /// One value: raw bytes or one DER object.
    pub fn bytes(bytes: Vec<u8>) -> Self {
        SecretValue {
            parts: vec![Zeroizing::new(bytes)],
        }
    }

    /// A certificate chain, leaf first (DER each).
    pub fn der_chain(chain: Vec<Vec<u8>>) -> Self {
        SecretValue {
            parts: chain.into_iter().map(Zeroizing::new).collect(),
        }
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes: Vec<usize> = self.parts.iter().map(|p| p.len()).collect();
        write!(f, "SecretValue(<redacted, part sizes {sizes:?}>)")
    }
}

/// Why a [`SecretSource`] could not supply a value. The message must not contain the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError(pub String);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceError {}

/// Supplies secret values for one activation (the Coordinator implements it: generated secrets
/// for this workload instance, user-defined values, its root CA, the new workload certificate).
pub trait SecretSource {
    /// The value of `target`: raw bytes for `key`/`value`, DER for keys and certificates,
    /// a chain for [`Target::WorkloadChain`].
    fn resolve(&self, target: &Target) -> Result<SecretValue, SourceError>;
}

/// Rendered output (it usually holds secrets): zeroed on drop, Debug shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered(Zeroizing<Vec<u8>>);

impl Rendered {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, moved out (the caller now owns the secret).
    pub fn into_bytes(mut self) -> Vec<u8> {
        std::mem::take(&mut *self.0)
    }

    /// As UTF-8 text (env and argv always are, given a validated manifest).
    pub fn into_string(self) -> Result<String, Error> {
        String::from_utf8(self.into_bytes()).map_err(|_| Error::Encoding {
            reference: "(template)".into(),
            reason: "rendered bytes are not UTF-8".into(),
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rendered(<{} bytes redacted>)", self.0.len())
    }
}

fn pem_label(target: &Target) -> Option<&'static str> {
    match target {
        Target::Secret {
            field: SecretField::Private,
            ..
        } => Some("PRIVATE KEY"),
        Target::Secret {
            field: SecretField::Public,
            ..
        } => Some("PUBLIC KEY"),
        Target::Secret {
            field: SecretField::Cert,
            ..
        }
        | Target::RootCa
        | Target::WorkloadCert
        | Target::WorkloadChain => Some("CERTIFICATE"),
        _ => None,
    }
}

/// Renders `template` with values from `source`.
///
/// Only the Coordinator calls this, after the workload's evidence has been verified. Every
/// placeholder must resolve; an error names the placeholder (never a value).
pub fn render(template: &Template, source: &dyn SecretSource) -> Result<Rendered, Error> {
    let parts = template
        .parts()
        .ok_or_else(|| Error::TemplateSyntax(template.syntax_error().unwrap_or("").to_string()))?;
    let mut out = Zeroizing::new(Vec::with_capacity(template.source.len()));
    for part in parts {
        match part {
            Part::Literal(t) => out.extend_from_slice(t.as_bytes()),
            Part::Placeholder(r) => render_reference(r, source, &mut out)?,
        }
    }
    Ok(Rendered(out))
}

fn render_reference(
    r: &Reference,
    source: &dyn SecretSource,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let enc_err = |reason: &str| Error::Encoding {
        reference: r.to_string(),
        reason: reason.into(),
    };
    if r.target == Target::WorkloadKey {
        return Err(enc_err("the workload's private key never leaves the TEE"));
    }
    let value = source.resolve(&r.target).map_err(|e| Error::Source {
        reference: r.to_string(),
        reason: e.0,
    })?;
    if r.encoding == Encoding::Pem {
        let label = pem_label(&r.target).ok_or_else(|| enc_err("this value has no PEM form"))?;
        if value.parts.is_empty() {
            return Err(enc_err("the source returned no value"));
        }
        for part in &value.parts {
            let p = pem::Pem::new(label, part.to_vec());
            let text = Zeroizing::new(pem::encode_config(
                &p,
                pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
            ));
            out.extend_from_slice(text.as_bytes());
        }
        return Ok(());
    }
    let [one] = value.parts.as_slice() else {
        return Err(enc_err("a certificate chain can only be rendered as pem"));
    };
    match r.encoding {
        Encoding::Hex => out.extend_from_slice(Zeroizing::new(hex::encode(&**one)).as_bytes()),
        Encoding::Base64 => out.extend_from_slice(
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&**one)).as_bytes(),
        ),
        Encoding::Raw => out.extend_from_slice(one),
        Encoding::Text => {
            if std::str::from_utf8(one).is_err() {
                return Err(enc_err("the value is not UTF-8 text; use .hex or .base64"));
            }
            if one.contains(&0) {
                return Err(enc_err(
                    "the value contains a NUL byte; use .hex or .base64",
                ));
            }
            out.extend_from_slice(one);
        }
        Encoding::Pem => return Err(enc_err("unreachable encoding")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literals_and_placeholders() {
        let t = Template::new("a={{ secrets.db.key.hex }};b={{coffer.root_ca.pem}} }}");
        let parts = t.parts().unwrap();
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[0], Part::Literal("a=".into()));
        assert_eq!(
            parts[1],
            Part::Placeholder(Reference {
                target: Target::Secret {
                    name: "db".into(),
                    field: SecretField::Key
                },
                encoding: Encoding::Hex
            })
        );
        assert_eq!(
            parts[3],
            Part::Placeholder(Reference {
                target: Target::RootCa,
                encoding: Encoding::Pem
            })
        );
        assert_eq!(parts[4], Part::Literal(" }}".into()));
    }

    #[test]
    fn syntax_errors_are_kept_not_thrown() {
        for (src, frag) in [
            ("{{ secrets.db.key.hex", "not closed"),
            ("{{ }}", "empty placeholder"),
            ("{{ secrets.db.key }}", "wrong number of parts"),
            ("{{ secrets.db.key.rot13 }}", "unknown encoding \"rot13\""),
            (
                "{{ secrets.db.password.hex }}",
                "unknown field \"password\"",
            ),
            ("{{ coffer.workload.token.pem }}", "coffer.workload.token"),
            ("{{ env.HOME }}", "unknown reference"),
            ("{{ secrets.d b.key.hex }}", "bad secret name"),
        ] {
            let t = Template::new(src);
            let e = t.syntax_error().unwrap_or_else(|| panic!("{src} parsed"));
            assert!(e.contains(frag), "{src}: {e}");
        }
    }

    struct Src;
    impl SecretSource for Src {
        fn resolve(&self, target: &Target) -> Result<SecretValue, SourceError> {
            match target {
                Target::Secret { name, .. } if name == "k" => {
                    Ok(SecretValue::bytes(vec![0xde, 0xad]))
                }
                Target::Secret { name, .. } if name == "bin" => {
                    Ok(SecretValue::bytes(vec![0xff, 0]))
                }
                Target::Secret { name, .. } if name == "nul" => {
                    Ok(SecretValue::bytes(b"a\0b".to_vec()))
                }
                Target::Secret { name, .. } if name == "pw" => {
                    Ok(SecretValue::bytes(b"hunter2".to_vec()))
                }
                Target::WorkloadChain => Ok(SecretValue::der_chain(vec![vec![1], vec![2]])),
                Target::RootCa => Ok(SecretValue::bytes(vec![1, 2, 3])),
                _ => Err(SourceError("no such secret in this test".into())),
            }
        }
    }

    #[test]
    fn renders_each_encoding() {
        let r = |s: &str| render(&Template::new(s), &Src).map(|r| r.into_bytes());
        assert_eq!(r("x{{ secrets.k.key.hex }}y").unwrap(), b"xdeady");
        assert_eq!(r("{{ secrets.k.key.base64 }}").unwrap(), b"3q0=");
        assert_eq!(r("{{ secrets.k.key.raw }}").unwrap(), vec![0xde, 0xad]);
        assert_eq!(r("{{ secrets.pw.value.text }}").unwrap(), b"hunter2");
        assert_eq!(
            r("{{ coffer.root_ca.pem }}").unwrap(),
            b"-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n"
        );
        let chain = String::from_utf8(r("{{ coffer.workload.chain.pem }}").unwrap()).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    }

    #[test]
    fn render_errors_name_the_placeholder() {
        let e = render(&Template::new("{{ secrets.nope.key.hex }}"), &Src).unwrap_err();
        assert!(
            matches!(e, Error::Source { ref reference, .. } if reference == "secrets.nope.key.hex")
        );
        let e = render(&Template::new("{{ secrets.bin.value.text }}"), &Src).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
        let e = render(&Template::new("{{ secrets.nul.value.text }}"), &Src).unwrap_err();
        assert!(e.to_string().contains("NUL"), "{e}");
        let e = render(&Template::new("{{ secrets.k.key.pem }}"), &Src).unwrap_err();
        assert!(e.to_string().contains("no PEM form"), "{e}");
        let e = render(&Template::new("{{ coffer.workload.chain.hex }}"), &Src).unwrap_err();
        assert!(e.to_string().contains("only be rendered as pem"), "{e}");
        let e = render(&Template::new("{{ coffer.workload.key.pem }}"), &Src).unwrap_err();
        assert!(e.to_string().contains("never leaves the TEE"), "{e}");
        let e = render(&Template::new("{{ oops"), &Src).unwrap_err();
        assert!(matches!(e, Error::TemplateSyntax(_)));
    }

    #[test]
    fn debug_of_rendered_values_hides_them() {
        let out = render(&Template::new("pw={{ secrets.pw.value.text }}"), &Src).unwrap();
        let d = format!("{out:?}");
        assert!(!d.contains("hunter2") && d.contains("10 bytes"), "{d}");
        let v = SecretValue::bytes(b"hunter2".to_vec());
        assert!(!format!("{v:?}").contains("hunter2"));
    }
}
