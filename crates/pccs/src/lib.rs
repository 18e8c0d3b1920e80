//! Intel PCS / PCCS v4 collateral client with a local cache; AMD KDS for SEV-SNP in [`kds`].
//!
//! A DCAP quote is verified against *collateral*: the platform's TCB info, the quoting enclave's
//! identity, the PCK CRL and the Intel SGX Root CA CRL. Intel serves them from its Provisioning
//! Certification Service (PCS, `https://api.trustedservices.intel.com`); data centres usually run
//! a caching PCCS (`https://pccs-host:8081`) with the same v4 API. This crate fetches the four
//! items for one quote and assembles the [`RawCollateral`] (the dcap-qvl JSON shape that
//! `coffer_evidence` verifies).
//!
//! Everything fetched is signed by Intel and checked by the verifier, so the service is not
//! trusted; this crate only makes sure the answers are well-formed and bounded:
//! - every answer is size-limited ([`PccsConfig::max_response_bytes`]) and time-limited
//!   ([`PccsConfig::timeout`]);
//! - the signed JSON is kept **byte-exact** (the signature covers the bytes as served, so it is
//!   never re-serialised);
//! - CRLs are accepted as DER (PCS), hex (PCCS) or PEM and stored as DER;
//! - errors name the service and the item ([`Error`]).
//!
//! **Cache.** With a cache directory, each item is stored with its own validity (its
//! `nextUpdate`) and served from the cache while `now` is before it, without touching the
//! network; so an unreachable PCCS does not stop verification while the collateral is still
//! valid. An expired item is fetched again; if that fails the error says the cached copy expired.
//! **Offline mode** ([`CollateralSource::offline`]) reads the same layout from a directory and
//! never touches the network (copy a cache directory from a connected machine, or fill one with
//! [`import_collateral`]).
//!
//! The client is blocking (ureq); async callers run it on a blocking thread.
//!
//! ```no_run
//! use coffer_pccs::{CollateralRequest, CollateralSource, PccsConfig, PckCa, Tee};
//! let source = CollateralSource::online(
//!     PccsConfig::new("https://pccs.example:8081").with_cache_dir("/var/cache/coffer/pccs"),
//! )?;
//! let req = CollateralRequest { tee: Tee::Sgx, fmspc: [0x00, 0x90, 0x6e, 0xd5, 0, 0], ca: PckCa::Processor };
//! let fetched = source.fetch(&req, 1_750_000_000)?;
//! println!("{}", fetched.collateral.to_json());
//! # Ok::<(), coffer_pccs::Error>(())
//! ```

mod cache;
mod decode;
mod error;
pub mod kds;
mod request;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use error::Error;
pub use request::{CollateralRequest, PckCa, Tee};

use cache::Entry;

/// Intel's PCS base URL.
pub const INTEL_PCS_URL: &str = "https://api.trustedservices.intel.com";

/// Where Intel publishes the SGX Root CA CRL (the root certificate's CRL distribution point);
/// used when the base URL is Intel's PCS, which has no `rootcacrl` endpoint.
pub const INTEL_ROOT_CA_CRL_URL: &str =
    "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";

/// One collateral item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    /// TCB info for the platform's FMSPC.
    TcbInfo,
    /// The quoting enclave's identity (QE for SGX, TD_QE for TDX).
    QeIdentity,
    /// The CRL of the PCK CA (processor or platform).
    PckCrl,
    /// The CRL of the Intel SGX Root CA.
    RootCaCrl,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Item::TcbInfo => "TCB info",
            Item::QeIdentity => "QE identity",
            Item::PckCrl => "PCK CRL",
            Item::RootCaCrl => "root CA CRL",
        })
    }
}

/// How to reach an online PCS/PCCS.
#[derive(Debug, Clone)]
pub struct PccsConfig {
    /// Base URL, e.g. [`INTEL_PCS_URL`] or `https://pccs-host:8081` (no `/sgx/...` suffix).
    pub base_url: String,
    /// Where to get the root CA CRL. `None`: [`INTEL_ROOT_CA_CRL_URL`] for Intel's PCS, else
    /// `{base_url}/sgx/certification/v4/rootcacrl` (PCCS).
    pub root_ca_crl_url: Option<String>,
    /// Limit for one whole request (connect, send, receive).
    pub timeout: Duration,
    /// Largest answer body accepted, in bytes.
    pub max_response_bytes: u64,
    /// Cache directory; `None` fetches every time.
    pub cache_dir: Option<PathBuf>,
    /// PEM certificates to trust for HTTPS *instead of* the Mozilla roots (a PCCS with its own
    /// CA). Collateral is signed by Intel either way; this only authenticates the transport.
    pub tls_roots_pem: Option<String>,
    /// The oldest the TCB info, QE identity and PCK CRL may be, counted from their own signed
    /// issue date (`issueDate`, the CRL's thisUpdate). Intel reissues them daily but dates them
    /// valid for a month; a verifier that wants revocations and TCB recoveries within a day
    /// says `1 day` here. An older cached item is fetched again, and an older item from the
    /// service is refused ([`Error::Stale`]). The root CA CRL, which Intel reissues about once
    /// a year, is good until its nextUpdate. `None`: every item is good until its nextUpdate.
    pub max_age: Option<Duration>,
    /// Fetch an item again this long before it stops being good (nextUpdate, or `max_age`),
    /// so verification never waits on an item just as it expires; while the service is
    /// unreachable the cached copy is still served, with a warning.
    pub refresh_ahead: Duration,
}

impl PccsConfig {
    /// A configuration with the defaults: 10 s timeout, 4 MiB answers, no cache, no maximum
    /// age, refresh one hour ahead.
    pub fn new(base_url: impl Into<String>) -> Self {
        PccsConfig {
            base_url: base_url.into(),
            root_ca_crl_url: None,
            timeout: Duration::from_secs(10),
            max_response_bytes: 4 * 1024 * 1024,
            cache_dir: None,
            tls_roots_pem: None,
            max_age: None,
            refresh_ahead: Duration::from_secs(3600),
        }
    }

    /// Sets the maximum age of items ([`PccsConfig::max_age`]).
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Until when `item`, issued at `issued` with `next_update`, may be used: its nextUpdate,
    /// or earlier under `max_age`.
    fn good_until(&self, item: Item, issued: i64, next_update: i64) -> i64 {
        match self.max_age {
            Some(age) if item != Item::RootCaCrl => {
                next_update.min(issued.saturating_add(secs(age)))
            }
            _ => next_update,
        }
    }

    /// Sets the cache directory.
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }
}

/// Where an item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Fetched from the service just now.
    Network,
    /// Served from the cache (still valid at `now`).
    Cache,
    /// Read from the offline directory.
    Offline,
}

/// Provenance and validity of one item of a [`Fetched`] collateral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemStatus {
    /// The item.
    pub item: Item,
    /// Where it came from.
    pub origin: Origin,
    /// Its issueDate / thisUpdate (Unix seconds).
    pub not_before: i64,
    /// Its nextUpdate (Unix seconds).
    pub next_update: i64,
}

/// The collateral for one quote in the dcap-qvl JSON shape (`QuoteCollateralV3`): PEM chains,
/// hex DER CRLs, the signed JSON documents as served and hex r||s signatures. This is the form
/// `coffer_evidence::Collateral::from_json` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawCollateral {
    /// PEM issuer chain of the PCK CRL.
    pub pck_crl_issuer_chain: String,
    /// Root CA CRL, hex DER.
    pub root_ca_crl: String,
    /// PCK CRL, hex DER.
    pub pck_crl: String,
    /// PEM issuer chain of the TCB info.
    pub tcb_info_issuer_chain: String,
    /// TCB info JSON as signed.
    pub tcb_info: String,
    /// TCB info signature, hex r||s.
    pub tcb_info_signature: String,
    /// PEM issuer chain of the QE identity.
    pub qe_identity_issuer_chain: String,
    /// QE identity JSON as signed.
    pub qe_identity: String,
    /// QE identity signature, hex r||s.
    pub qe_identity_signature: String,
}

impl RawCollateral {
    /// The collateral as JSON (the dcap-qvl shape).
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The verifier's form of this collateral.
    pub fn to_collateral(&self) -> Result<coffer_evidence::Collateral, coffer_evidence::Error> {
        coffer_evidence::Collateral::from_json(self.to_json().as_bytes())
    }

    /// Parses collateral JSON in the dcap-qvl shape.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The result of [`CollateralSource::fetch`].
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The collateral, ready for the verifier.
    pub collateral: RawCollateral,
    /// Where each item came from and how long it is valid.
    pub items: Vec<ItemStatus>,
    /// Problems that did not stop the fetch (e.g. the cache directory is not writable).
    pub warnings: Vec<String>,
}

impl Fetched {
    /// The verifier's form of the collateral (see [`RawCollateral::to_collateral`]).
    pub fn to_collateral(&self) -> Result<coffer_evidence::Collateral, coffer_evidence::Error> {
        self.collateral.to_collateral()
    }

    /// The earliest nextUpdate of the items: the collateral as a whole is valid until then.
    pub fn next_update(&self) -> i64 {
        self.items
            .iter()
            .map(|i| i.next_update)
            .min()
            .unwrap_or(i64::MIN)
    }
}

/// Where collateral comes from: an online service (with an optional cache) or an offline
/// directory.
#[derive(Debug, Clone)]
pub struct CollateralSource {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Online {
        config: Box<PccsConfig>,
        base: String,
        root_crl_url: String,
        agent: ureq::Agent,
    },
    Offline {
        dir: PathBuf,
    },
}

impl CollateralSource {
    /// An online source. Fails if the URL is not `http(s)://host[:port][/path]` or the TLS roots
    /// do not parse.
    pub fn online(config: PccsConfig) -> Result<Self, Error> {
        let base = normalise_base(&config.base_url)?;
        let root_crl_url = match &config.root_ca_crl_url {
            Some(u) => {
                normalise_base(u)?;
                u.clone()
            }
            None if host_of(&base) == Some("api.trustedservices.intel.com") => {
                INTEL_ROOT_CA_CRL_URL.to_string()
            }
            None => format!("{base}/sgx/certification/v4/rootcacrl"),
        };
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout))
            .max_redirects(3)
            .user_agent(concat!("coffer-pccs/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.tls_roots_pem {
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(pem.as_bytes()) {
                if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
                    certs.push(c);
                }
            }
            if certs.is_empty() {
                return Err(Error::InvalidTlsRoots {
                    url: config.base_url.clone(),
                });
            }
            builder = builder.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                    .build(),
            );
        }
        let agent = builder.build().new_agent();
        Ok(CollateralSource {
            inner: Inner::Online {
                config: Box::new(config),
                base,
                root_crl_url,
                agent,
            },
        })
    }

    /// An offline source: items are read from `dir` (the cache layout), never from the network.
    /// Items are returned even when expired; the verifier refuses them at `now`, naming the item.
    pub fn offline(dir: impl Into<PathBuf>) -> Self {
        CollateralSource {
            inner: Inner::Offline { dir: dir.into() },
        }
    }

    /// A short name of the source for messages: the base URL or `offline directory …`.
    pub fn service(&self) -> String {
        match &self.inner {
            Inner::Online { base, .. } => base.clone(),
            Inner::Offline { dir } => format!("offline directory {}", dir.display()),
        }
    }

    /// Gets the four collateral items for `req`, from the cache while valid at `now_unix`,
    /// else from the service (or the offline directory), and assembles them.
    pub fn fetch(&self, req: &CollateralRequest, now_unix: i64) -> Result<Fetched, Error> {
        let mut warnings = Vec::new();
        let mut items = Vec::with_capacity(4);
        let mut get = |item| -> Result<Entry, Error> {
            let (entry, origin) = self.item(req, item, now_unix, &mut warnings)?;
            let (not_before, next_update) =
                entry.validity().map_err(|reason| Error::Malformed {
                    service: self.service(),
                    item,
                    reason,
                })?;
            items.push(ItemStatus {
                item,
                origin,
                not_before,
                next_update,
            });
            Ok(entry)
        };
        let tcb = get(Item::TcbInfo)?;
        let qe = get(Item::QeIdentity)?;
        let pck_crl = get(Item::PckCrl)?;
        let root_crl = get(Item::RootCaCrl)?;
        let collateral = RawCollateral {
            pck_crl_issuer_chain: pck_crl.issuer_chain.unwrap_or_default(),
            root_ca_crl: root_crl.body,
            pck_crl: pck_crl.body,
            tcb_info_issuer_chain: tcb.issuer_chain.unwrap_or_default(),
            tcb_info: tcb.body,
            tcb_info_signature: tcb.signature.unwrap_or_default(),
            qe_identity_issuer_chain: qe.issuer_chain.unwrap_or_default(),
            qe_identity: qe.body,
            qe_identity_signature: qe.signature.unwrap_or_default(),
        };
        Ok(Fetched {
            collateral,
            items,
            warnings,
        })
    }

    fn item(
        &self,
        req: &CollateralRequest,
        item: Item,
        now: i64,
        warnings: &mut Vec<String>,
    ) -> Result<(Entry, Origin), Error> {
        let name = file_name(req, item);
        match &self.inner {
            Inner::Offline { dir } => {
                let path = dir.join(&name);
                let entry = cache::read(&path)?.ok_or_else(|| Error::OfflineMissing {
                    dir: dir.clone(),
                    item,
                    file: PathBuf::from(&name),
                })?;
                check_entry(
                    &entry,
                    req,
                    item,
                    &format!("offline file {}", path.display()),
                )?;
                Ok((entry, Origin::Offline))
            }
            Inner::Online {
                config,
                base,
                root_crl_url,
                agent,
            } => {
                let mut expired_at = None;
                // A cached item inside its refresh-ahead window: served only if a refresh fails.
                let mut fallback = None;
                if let Some(dir) = &config.cache_dir {
                    let path = dir.join(&name);
                    match cache::read(&path) {
                        Ok(Some(entry)) => {
                            let label = format!("cache file {}", path.display());
                            match check_entry(&entry, req, item, &label)
                                .and_then(|()| validity_of(&entry, item, &label))
                            {
                                Ok((issued, next)) => {
                                    let until = config.good_until(item, issued, next);
                                    let ahead = secs(config.refresh_ahead);
                                    if now < until.saturating_sub(ahead) {
                                        return Ok((entry, Origin::Cache));
                                    } else if now < until {
                                        fallback = Some((entry, until));
                                    } else {
                                        expired_at = Some(until);
                                    }
                                }
                                Err(e) => warnings.push(format!("ignored {e}")),
                            }
                        }
                        Ok(None) => {}
                        Err(e) => warnings.push(format!("ignored {e}")),
                    }
                }
                let url = match item {
                    Item::TcbInfo => format!(
                        "{base}/{}/certification/v4/tcb?fmspc={}",
                        req.tee,
                        req.fmspc_hex()
                    ),
                    Item::QeIdentity => format!("{base}/{}/certification/v4/qe/identity", req.tee),
                    Item::PckCrl => {
                        format!(
                            "{base}/sgx/certification/v4/pckcrl?ca={}&encoding=der",
                            req.ca
                        )
                    }
                    Item::RootCaCrl => root_crl_url.clone(),
                };
                let service = if item == Item::RootCaCrl {
                    origin_of(root_crl_url)
                } else {
                    base.clone()
                };
                let fetched =
                    fetch_item(agent, config.max_response_bytes, &service, item, &url, now)
                        .and_then(|entry| {
                            check_entry(&entry, req, item, &service)?;
                            let (issued, next) = validity_of(&entry, item, &service)?;
                            if config.good_until(item, issued, next) <= now {
                                return Err(Error::Stale {
                                    service: service.clone(),
                                    item,
                                    issued,
                                    max_age: config.max_age.map(secs),
                                });
                            }
                            Ok(entry)
                        });
                let entry = match (fetched, fallback) {
                    (Ok(entry), _) => entry,
                    (Err(e), Some((cached, until))) => {
                        warnings.push(format!(
                            "could not refresh the {item} ahead of time ({e}); serving the \
                             cached copy, good until {}",
                            fmt_time(until)
                        ));
                        return Ok((cached, Origin::Cache));
                    }
                    (Err(e), None) => return Err(with_expired(e, expired_at)),
                };
                if let Some(dir) = &config.cache_dir {
                    if let Err(e) = cache::write(dir, &name, &entry) {
                        warnings.push(format!("could not cache the {item}: {e}"));
                    }
                }
                Ok((entry, Origin::Network))
            }
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn validity_of(entry: &Entry, item: Item, label: &str) -> Result<(i64, i64), Error> {
    entry.validity().map_err(|reason| Error::Malformed {
        service: label.to_string(),
        item,
        reason,
    })
}

/// Checks that a stored or fetched item is the one asked for (right kind, FMSPC and TEE).
fn check_entry(
    entry: &Entry,
    req: &CollateralRequest,
    item: Item,
    label: &str,
) -> Result<(), Error> {
    let bad = |reason: String| Error::Malformed {
        service: label.to_string(),
        item,
        reason,
    };
    if entry.item != item {
        return Err(bad(format!(
            "the file holds the {}, not the {item}",
            entry.item
        )));
    }
    match item {
        Item::TcbInfo | Item::QeIdentity => {
            let doc: serde_json::Value =
                serde_json::from_str(&entry.body).map_err(|e| bad(format!("not JSON: {e}")))?;
            let id = doc.get("id").and_then(|v| v.as_str()).unwrap_or_default();
            let expected_ids: &[&str] = match (item, req.tee) {
                (Item::TcbInfo, Tee::Sgx) => &["SGX"],
                (Item::TcbInfo, Tee::Tdx) => &["TDX"],
                (_, Tee::Sgx) => &["QE"],
                (_, Tee::Tdx) => &["TD_QE"],
            };
            if !expected_ids.contains(&id) {
                return Err(bad(format!(
                    "its id is {id:?}, expected {:?} for {}",
                    expected_ids[0], req.tee
                )));
            }
            if item == Item::TcbInfo {
                let fmspc = doc
                    .get("fmspc")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                if !fmspc.eq_ignore_ascii_case(&req.fmspc_hex()) {
                    return Err(bad(format!(
                        "it is for FMSPC {fmspc:?}, not {}",
                        req.fmspc_hex()
                    )));
                }
            }
            if entry.signature.is_none() || entry.issuer_chain.is_none() {
                return Err(bad("signature or issuer chain missing".into()));
            }
        }
        Item::PckCrl => {
            if entry.issuer_chain.is_none() {
                return Err(bad("issuer chain missing".into()));
            }
        }
        Item::RootCaCrl => {}
    }
    Ok(())
}

fn with_expired(e: Error, expired_at: Option<i64>) -> Error {
    match e {
        Error::Unreachable {
            service,
            item,
            url,
            reason,
            ..
        } => Error::Unreachable {
            service,
            item,
            url,
            reason,
            cached_expired_at: expired_at,
        },
        Error::Status {
            service,
            item,
            url,
            status,
            ..
        } => Error::Status {
            service,
            item,
            url,
            status,
            cached_expired_at: expired_at,
        },
        other => other,
    }
}

fn fetch_item(
    agent: &ureq::Agent,
    limit: u64,
    service: &str,
    item: Item,
    url: &str,
    now: i64,
) -> Result<Entry, Error> {
    let unreachable = |reason: String| Error::Unreachable {
        service: service.to_string(),
        item,
        url: url.to_string(),
        reason,
        cached_expired_at: None,
    };
    let malformed = |reason: String| Error::Malformed {
        service: service.to_string(),
        item,
        reason,
    };
    let mut resp = agent
        .get(url)
        .call()
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(Error::Status {
            service: service.to_string(),
            item,
            url: url.to_string(),
            status,
            cached_expired_at: None,
        });
    }
    let header = |name: &str| -> Result<String, Error> {
        let value = resp
            .headers()
            .get(name)
            .ok_or_else(|| malformed(format!("the answer lacks the {name} header")))?;
        decode::issuer_chain(value.as_bytes()).map_err(|r| malformed(format!("{name}: {r}")))
    };
    let issuer_chain = match item {
        // v4 name first; PCS v3 and older PCCS send `SGX-TCB-Info-Issuer-Chain`.
        Item::TcbInfo
            if resp.headers().contains_key("SGX-TCB-Info-Issuer-Chain")
                && !resp.headers().contains_key("TCB-Info-Issuer-Chain") =>
        {
            Some(header("SGX-TCB-Info-Issuer-Chain")?)
        }
        Item::TcbInfo => Some(header("TCB-Info-Issuer-Chain")?),
        Item::QeIdentity => Some(header("SGX-Enclave-Identity-Issuer-Chain")?),
        Item::PckCrl => Some(header("SGX-PCK-CRL-Issuer-Chain")?),
        Item::RootCaCrl => None,
    };
    let body = match resp.body_mut().with_config().limit(limit).read_to_vec() {
        Ok(b) => b,
        Err(ureq::Error::BodyExceedsLimit(_)) => {
            return Err(Error::TooLarge {
                service: service.to_string(),
                item,
                limit,
            })
        }
        Err(e) => return Err(unreachable(format!("reading the answer: {e}"))),
    };
    let (body, signature) = match item {
        Item::TcbInfo | Item::QeIdentity => {
            let member = if item == Item::TcbInfo {
                "tcbInfo"
            } else {
                "enclaveIdentity"
            };
            let signed = decode::signed_json(&body, member).map_err(malformed)?;
            (signed.body, Some(signed.signature_hex))
        }
        Item::PckCrl | Item::RootCaCrl => {
            let crl = decode::crl(&body).map_err(malformed)?;
            (hex::encode(crl.der), None)
        }
    };
    Ok(Entry {
        format: 1,
        item,
        source: url.to_string(),
        fetched_at: now,
        issuer_chain,
        body,
        signature,
    })
}

/// The file name of an item in the cache / offline layout.
fn file_name(req: &CollateralRequest, item: Item) -> String {
    match item {
        Item::TcbInfo => format!("tcb-info-{}-{}.json", req.tee, req.fmspc_hex()),
        Item::QeIdentity => format!("qe-identity-{}.json", req.tee),
        Item::PckCrl => format!("pck-crl-{}.json", req.ca),
        Item::RootCaCrl => "root-ca-crl.json".to_string(),
    }
}

/// Writes collateral (e.g. a dcap-qvl collateral JSON saved elsewhere) into `dir` in the
/// cache/offline layout, so `CollateralSource::offline(dir)` can serve it for `req`. Each item
/// is checked for form (JSON with dates, hex signature, PEM chain, DER CRL) before it is written.
pub fn import_collateral(
    dir: &Path,
    req: &CollateralRequest,
    c: &RawCollateral,
    now_unix: i64,
) -> Result<(), Error> {
    let label = format!("import into {}", dir.display());
    let bad = |item, reason: String| Error::Malformed {
        service: label.clone(),
        item,
        reason,
    };
    let chain = |item, pem: &str| {
        decode::check_pem_chain(pem)
            .map(|()| Some(pem.to_string()))
            .map_err(|r| bad(item, r))
    };
    let sig = |item, s: &str| match hex::decode(s) {
        Ok(b) if b.len() == 64 => Ok(Some(hex::encode(b))),
        _ => Err(bad(item, "the signature is not 64 bytes of hex".into())),
    };
    let crl = |item, h: &str| {
        decode::crl(h.as_bytes())
            .map(|c| hex::encode(c.der))
            .map_err(|r| bad(item, r))
    };
    let entry = |item, issuer_chain, body: String, signature| Entry {
        format: 1,
        item,
        source: "import".into(),
        fetched_at: now_unix,
        issuer_chain,
        body,
        signature,
    };
    let entries = [
        entry(
            Item::TcbInfo,
            chain(Item::TcbInfo, &c.tcb_info_issuer_chain)?,
            c.tcb_info.clone(),
            sig(Item::TcbInfo, &c.tcb_info_signature)?,
        ),
        entry(
            Item::QeIdentity,
            chain(Item::QeIdentity, &c.qe_identity_issuer_chain)?,
            c.qe_identity.clone(),
            sig(Item::QeIdentity, &c.qe_identity_signature)?,
        ),
        entry(
            Item::PckCrl,
            chain(Item::PckCrl, &c.pck_crl_issuer_chain)?,
            crl(Item::PckCrl, &c.pck_crl)?,
            None,
        ),
        entry(
            Item::RootCaCrl,
            None,
            crl(Item::RootCaCrl, &c.root_ca_crl)?,
            None,
        ),
    ];
    for e in &entries {
        check_entry(e, req, e.item, &label)?;
        validity_of(e, e.item, &label)?;
    }
    for e in &entries {
        cache::write(dir, &file_name(req, e.item), e)?;
    }
    Ok(())
}

fn normalise_base(url: &str) -> Result<String, Error> {
    let invalid = |reason| Error::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid("it must start with https:// (or http:// for a local PCCS)"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(invalid("it has no host"));
    }
    if url.contains(['?', '#', ' ']) {
        return Err(invalid("a base URL has no query, fragment or spaces"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let hostport = rest.split('/').next()?;
    Some(hostport.rsplit_once(':').map_or(hostport, |(h, _)| h))
}

fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            format!("{scheme}://{}", rest.split('/').next().unwrap_or_default())
        }
        None => url.to_string(),
    }
}

/// Formats Unix seconds as RFC 3339 (for messages).
pub(crate) fn fmt_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{t} (Unix)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            normalise_base("https://pccs:8081/").unwrap(),
            "https://pccs:8081"
        );
        assert!(normalise_base("ftp://x").is_err());
        assert!(normalise_base("https://").is_err());
        assert!(normalise_base("https://x/?a").is_err());
        assert_eq!(
            host_of("https://api.trustedservices.intel.com"),
            Some("api.trustedservices.intel.com")
        );
        assert_eq!(host_of("https://h:8081/x"), Some("h"));
    }

    #[test]
    fn intel_pcs_uses_the_published_root_crl() {
        let s = CollateralSource::online(PccsConfig::new(INTEL_PCS_URL)).unwrap();
        let Inner::Online { root_crl_url, .. } = &s.inner else {
            panic!("online")
        };
        assert_eq!(root_crl_url, INTEL_ROOT_CA_CRL_URL);
        let s = CollateralSource::online(PccsConfig::new("https://pccs:8081")).unwrap();
        let Inner::Online { root_crl_url, .. } = &s.inner else {
            panic!("online")
        };
        assert_eq!(
            root_crl_url,
            "https://pccs:8081/sgx/certification/v4/rootcacrl"
        );
    }

    #[test]
    fn file_names() {
        let req = CollateralRequest {
            tee: Tee::Tdx,
            fmspc: [0x00, 0x80, 0x6f, 0x05, 0, 0],
            ca: PckCa::Platform,
        };
        assert_eq!(
            file_name(&req, Item::TcbInfo),
            "tcb-info-tdx-00806F050000.json"
        );
        assert_eq!(file_name(&req, Item::PckCrl), "pck-crl-platform.json");
    }
}
