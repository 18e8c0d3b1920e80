//! AMD Key Distribution Service (KDS) client: the VCEK of a chip at a TCB, a product's ASK and
//! ARK, and the ARK's CRL, for SEV-SNP evidence, with a cache and an offline directory like
//! the PCS client's.
//!
//! Everything fetched is verified by `coffer_evidence::snp` (the ARK pinned by key, the CRL
//! signed by it), so the service is not trusted; this module bounds the answers and names the
//! service and item in every error.
//!
//! Layout (cache and offline directory alike), under `DIR/kds/PRODUCT/`:
//! - `vcek-HWID-blB-teeT-snpS-ucodeU[-fmcF].der`: a chip's VCEK at a TCB (never changes);
//! - `cert_chain.pem`: ASK then ARK, as KDS serves them;
//! - `crl.der`: the ARK's CRL, served from the cache while `now` is before its nextUpdate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use coffer_evidence::snp::{certificates, Product, TcbVersion};
use coffer_evidence::Item as EvidenceItem;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::{cache, normalise_base, Error};

/// AMD's KDS.
pub const AMD_KDS_URL: &str = "https://kdsintf.amd.com";

/// Largest answer read (a certificate chain is about 4 KiB).
const MAX_ANSWER: u64 = 256 * 1024;

/// What to fetch for one report: the chip (its hwID: CHIP_ID, the first 8 bytes on Turin)
/// and the TCB its VCEK was derived for (REPORTED_TCB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdsRequest {
    /// The product the report's CPUID (or the caller) names.
    pub product: Product,
    /// The chip's hwID.
    pub hwid: Vec<u8>,
    /// REPORTED_TCB.
    pub tcb: TcbVersion,
}

impl KdsRequest {
    /// The request for a parsed report of `product`.
    pub fn for_report(report: &coffer_evidence::snp::Report, product: Product) -> Option<Self> {
        let tcb = TcbVersion::decode(report.reported_tcb, product)?;
        let hwid = match product {
            Product::Turin => report.chip_id[..8].to_vec(),
            _ => report.chip_id.to_vec(),
        };
        Some(KdsRequest { product, hwid, tcb })
    }

    /// The TCB's SPLs under KDS's names (`bl`, `tee`, `snp`, `ucode`, and `fmc` on Turin):
    /// the query of the VCEK URL and the name of its cache file.
    fn spls(&self) -> Vec<(&'static str, u8)> {
        let t = &self.tcb;
        let mut spls = vec![
            ("bl", t.bootloader),
            ("tee", t.tee),
            ("snp", t.snp),
            ("ucode", t.microcode),
        ];
        spls.extend(t.fmc.map(|fmc| ("fmc", fmc)));
        spls
    }

    fn vcek_file(&self) -> String {
        let spls: String = self
            .spls()
            .iter()
            .map(|(name, v)| format!("-{name}{v}"))
            .collect();
        format!("vcek-{}{spls}.der", hex::encode(&self.hwid))
    }

    fn vcek_path(&self) -> String {
        let query: Vec<String> = self
            .spls()
            .iter()
            .map(|(name, v)| format!("{name}SPL={v}"))
            .collect();
        format!(
            "/vcek/v1/{}/{}?{}",
            self.product,
            hex::encode(&self.hwid),
            query.join("&")
        )
    }
}

/// A chip's endorsement: VCEK, ASK, ARK (DER) and the ARK's CRL (DER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdsCollateral {
    /// The VCEK.
    pub vcek: Vec<u8>,
    /// The ASK.
    pub ask: Vec<u8>,
    /// The ARK.
    pub ark: Vec<u8>,
    /// The ARK's CRL.
    pub crl: Vec<u8>,
}

/// Where SEV-SNP collateral comes from.
#[derive(Debug, Clone)]
pub enum KdsSource {
    /// AMD's KDS (or a mirror), with an optional cache directory.
    Online {
        /// Base URL, e.g. [`AMD_KDS_URL`].
        base: String,
        /// The cache directory.
        cache_dir: Option<PathBuf>,
        /// The HTTP agent (time-limited).
        agent: ureq::Agent,
    },
    /// A directory in the layout above; never the network.
    Offline(PathBuf),
}

impl KdsSource {
    /// An online source at `base_url` with a 10 s limit per request.
    pub fn online(base_url: &str, cache_dir: Option<PathBuf>) -> Result<Self, Error> {
        let base = normalise_base(base_url)?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .max_redirects(3)
            .user_agent(concat!("coffer-pccs/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(KdsSource::Online {
            base,
            cache_dir,
            agent,
        })
    }

    /// An offline directory.
    pub fn offline(dir: impl Into<PathBuf>) -> Self {
        KdsSource::Offline(dir.into())
    }

    fn service(&self) -> String {
        match self {
            KdsSource::Online { base, .. } => base.clone(),
            KdsSource::Offline(dir) => format!("offline directory {}", dir.display()),
        }
    }

    /// The ARK's CRL for `product` at `now` (Unix seconds): for evidence that brought its
    /// own certificates.
    pub fn crl(&self, product: Product, now: i64) -> Result<Vec<u8>, Error> {
        let product = product.as_str();
        self.item(
            product,
            "crl.der",
            &format!("/vcek/v1/{product}/crl"),
            &format!("the {product} CRL"),
            now,
            crl_next_update,
        )
    }

    /// The VCEK, ASK, ARK and CRL for `req` at `now` (Unix seconds).
    pub fn fetch(&self, req: &KdsRequest, now: i64) -> Result<KdsCollateral, Error> {
        let crl = self.crl(req.product, now)?;
        let product = req.product.as_str();
        let vcek_what = format!(
            "the VCEK of chip {}… at {:?}",
            hex::encode(&req.hwid[..req.hwid.len().min(8)]),
            req.tcb
        );
        let vcek = self.item(
            product,
            &req.vcek_file(),
            &req.vcek_path(),
            &vcek_what,
            now,
            |_| Ok(None),
        )?;
        let chain_what = format!("the {product} certificate chain (ASK, ARK)");
        let chain = self.item(
            product,
            "cert_chain.pem",
            &format!("/vcek/v1/{product}/cert_chain"),
            &chain_what,
            now,
            |_| Ok(None),
        )?;
        let chain = certificates(&chain, EvidenceItem::AskCertificate)
            .map_err(|e| self.error(&chain_what, e.to_string()))?;
        let [ask, ark] = <[Vec<u8>; 2]>::try_from(chain).map_err(|c| {
            self.error(
                &chain_what,
                format!("{} certificates, expected the ASK and the ARK", c.len()),
            )
        })?;
        Ok(KdsCollateral {
            vcek,
            ask,
            ark,
            crl,
        })
    }

    fn error(&self, what: &str, reason: String) -> Error {
        Error::Kds {
            service: self.service(),
            what: what.to_string(),
            reason,
        }
    }

    /// One item: from the cache (or offline directory) while `expires` says it is good,
    /// else from the service, then cached.
    fn item(
        &self,
        product: &str,
        file: &str,
        path: &str,
        what: &str,
        now: i64,
        expires: fn(&[u8]) -> Result<Option<i64>, String>,
    ) -> Result<Vec<u8>, Error> {
        let local = |dir: &Path| dir.join("kds").join(product).join(file);
        match self {
            KdsSource::Offline(dir) => {
                let p = local(dir);
                let bytes = read_limited(&p).map_err(|e| self.error(what, e))?;
                Ok(bytes)
            }
            KdsSource::Online {
                base,
                cache_dir,
                agent,
            } => {
                let mut expired_at = None;
                if let Some(dir) = cache_dir {
                    if let Ok(bytes) = read_limited(&local(dir)) {
                        match expires(&bytes) {
                            Ok(None) => return Ok(bytes),
                            Ok(Some(next)) if now < next => return Ok(bytes),
                            Ok(Some(next)) => expired_at = Some(next),
                            Err(_) => {} // a damaged cache file is fetched again
                        }
                    }
                }
                let url = format!("{base}{path}");
                let bytes = get(agent, &url).map_err(|reason| {
                    let note = expired_at.map_or(String::new(), |t| {
                        format!("; the cached copy expired at {}", crate::fmt_time(t))
                    });
                    self.error(what, format!("{url}: {reason}{note}"))
                })?;
                expires(&bytes).map_err(|e| self.error(what, e))?;
                if let Some(dir) = cache_dir {
                    let p = local(dir);
                    if let Some(parent) = p.parent() {
                        // The cache is an optimisation: a write failure costs a refetch.
                        let _ = cache::write_bytes(parent, file, &bytes);
                    }
                }
                Ok(bytes)
            }
        }
    }
}

/// A CRL's nextUpdate (`Ok(None)` for a CRL without one: served until refetched by hand).
fn crl_next_update(der: &[u8]) -> Result<Option<i64>, String> {
    let (_, crl) =
        CertificateRevocationList::from_der(der).map_err(|e| format!("not a DER CRL: {e}"))?;
    Ok(crl.next_update().map(|t| t.timestamp()))
}

fn read_limited(p: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_ANSWER + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    if bytes.len() as u64 > MAX_ANSWER {
        return Err(format!("{} is larger than {MAX_ANSWER} bytes", p.display()));
    }
    Ok(bytes)
}

fn get(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    if status != 200 {
        let hint = match status {
            404 => " (KDS does not know this chip or TCB: is the TCB current, and is it a VCEK, not a VLEK?)",
            429 => " (rate limited: KDS allows few requests per chip; retry later, and keep a cache)",
            500..=599 => " (the service is failing: retry later)",
            _ => "",
        };
        return Err(format!("HTTP {status}{hint}"));
    }
    resp.body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => {
                format!("the answer is larger than {MAX_ANSWER} bytes")
            }
            e => format!("reading the answer: {e}"),
        })
}
