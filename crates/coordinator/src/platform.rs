//! The platform the Coordinator runs on: where its own evidence comes from and how workload
//! evidence is verified.
//!
//! - **Simulation** (`--simulation --sim-dir DIR`): the simulated platform persisted in
//!   `DIR/sim-platform.json` (created if absent, mode 0600) signs the Coordinator's quotes and
//!   provides the trust anchors and collateral that workload evidence is verified against. The
//!   Coordinator's simulated MRENCLAVE is SHA-256 of its own executable file, so a different
//!   build shows a different measurement.
//! - **SGX under Gramine** (default): quotes come from `/dev/attestation` (`user_report_data`
//!   then `quote`); workload evidence is verified against the pinned Intel root with collateral
//!   from `--collateral-dir` (offline files) or Intel PCS / a PCCS (`--pccs-url`, cached). Simulated evidence does
//!   not chain to the Intel root and is refused. Without `/dev/attestation` the Coordinator
//!   refuses to start: a missing TEE is never a silent fall-back to simulation.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use coffer_evidence::sim::{SgxQuoteSpec, SimPlatform, SimSnpPlatform};
use coffer_evidence::snp::{SnpAnchors, SnpCollateral};
use coffer_evidence::{Collateral, TrustAnchors, Verified, Verifier};
use coffer_manifest::{MeasurementClaims, SnpClaims, SnpTcb};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// The file name of a persisted simulated platform inside `--sim-dir`.
pub const SIM_PLATFORM_FILE: &str = "sim-platform.json";

/// The fixed ISVPRODID of the Coordinator enclave.
pub const COORDINATOR_ISV_PROD_ID: u16 = 1;

/// Where quotes and verification material come from.
pub enum Platform {
    /// The simulated platform.
    Simulated {
        /// The platform (holds private keys).
        sim: Box<SimPlatform>,
        /// Simulated MRENCLAVE of this Coordinator.
        mrenclave: [u8; 32],
    },
    /// Gramine SGX: `/dev/attestation` (configurable root).
    Gramine {
        /// The attestation pseudo-filesystem root.
        root: PathBuf,
    },
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Platform::Simulated { mrenclave, .. } => {
                write!(
                    f,
                    "Platform::Simulated(mrenclave={})",
                    hex::encode(mrenclave)
                )
            }
            Platform::Gramine { root } => write!(f, "Platform::Gramine({})", root.display()),
        }
    }
}

/// Loads `DIR/sim-platform.json`, creating a new simulated platform there if absent.
pub fn load_or_create_sim(dir: &Path) -> Result<SimPlatform, Error> {
    let path = dir.join(SIM_PLATFORM_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => SimPlatform::from_bytes(&bytes).map_err(|e| {
            Error::Config(format!(
                "{} is not a simulated platform: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::RngCore;
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::create_dir_all(dir)?;
            let mut seed = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut seed);
            let sim = SimPlatform::from_seed(seed);
            let bytes = sim.to_bytes();
            let tmp = path.with_extension("tmp");
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            // Another process may have created it meanwhile: keep theirs.
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&tmp);
                    Ok(sim)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let _ = std::fs::remove_file(&tmp);
                    load_or_create_sim(dir)
                }
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(Error::Config(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// SHA-256 of the running executable: the simulated measurement of this Coordinator.
pub fn own_measurement() -> Result<[u8; 32], Error> {
    let exe = std::env::current_exe()?;
    let mut f = std::fs::File::open(&exe)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().into())
}

/// The fixed MRSIGNER of simulated Coordinator quotes (SHA-256 of a label).
pub fn sim_mrsigner() -> [u8; 32] {
    Sha256::digest(b"coffer simulated coordinator signer").into()
}

impl Platform {
    /// Whether this is the simulated platform.
    pub fn is_simulation(&self) -> bool {
        matches!(self, Platform::Simulated { .. })
    }

    /// Evidence (a DCAP quote) with `report_data`.
    pub fn quote(&self, report_data: [u8; 64]) -> Result<Vec<u8>, Error> {
        match self {
            Platform::Simulated { sim, mrenclave } => {
                let spec = SgxQuoteSpec {
                    mrenclave: *mrenclave,
                    mrsigner: sim_mrsigner(),
                    isv_prod_id: COORDINATOR_ISV_PROD_ID,
                    isv_svn: 1,
                    debug: false,
                    report_data,
                    ..SgxQuoteSpec::default()
                };
                Ok(sim.sgx_quote(&spec))
            }
            Platform::Gramine { root } => gramine_quote(root, &report_data),
        }
    }
}

static GRAMINE_LOCK: Mutex<()> = Mutex::new(());

fn gramine_quote(root: &Path, report_data: &[u8; 64]) -> Result<Vec<u8>, Error> {
    // Writing user_report_data then reading quote is a two-step protocol on one global file:
    // serialise it.
    let _g = GRAMINE_LOCK
        .lock()
        .map_err(|_| Error::Platform("attestation lock poisoned".into()))?;
    let urd = root.join("user_report_data");
    std::fs::write(&urd, report_data)
        .map_err(|e| Error::Platform(format!("cannot write {}: {e}", urd.display())))?;
    let q = root.join("quote");
    std::fs::read(&q).map_err(|e| Error::Platform(format!("cannot read {}: {e}", q.display())))
}

/// Checks that Gramine's attestation interface is there (the no-TEE error).
pub fn check_gramine(root: &Path) -> Result<(), Error> {
    if root.join("quote").exists() && root.join("user_report_data").exists() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "no TEE detected: {} has no `quote`/`user_report_data` (not running inside a Gramine SGX enclave \
             with remote attestation). Run the Coordinator in an enclave, or start it with `--simulation \
             --sim-dir DIR` for development (simulated evidence, no protection)",
            root.display()
        )))
    }
}

/// Where collateral for real evidence comes from.
pub enum CollateralSource {
    /// The simulated platform's collateral, regenerated hourly.
    Simulated {
        /// The platform.
        sim: Box<SimPlatform>,
        /// Cached collateral per TEE kind and when it was made.
        cache: Mutex<Vec<(coffer_evidence::Tee, i64, std::sync::Arc<Collateral>)>>,
    },
    /// Offline files: `DIR/<fmspc hex>.json`, else `DIR/collateral.json` (see
    /// [`offline_collateral_file`]), else the `coffer-pccs` cache layout (items copied from a
    /// `--pccs-cache` or `--pccs-url` cache directory).
    Dir(PathBuf),
    /// One given collateral set (an offline verification bundle).
    Fixed(std::sync::Arc<Collateral>),
    /// Intel PCS or a PCCS through `coffer-pccs`, with its per-item cache (an unreachable
    /// service does not stop activations while cached collateral is valid). The fetch is
    /// blocking (ureq); with a warm cache it is a file read.
    Pccs(Box<coffer_pccs::CollateralSource>),
}

const SIM_COLLATERAL_REFRESH: i64 = 3600;

/// The collateral JSON (dcap-qvl shape) that an offline collateral directory holds for `quote`:
/// `DIR/<fmspc hex>.json`, else `DIR/collateral.json`; `None` when neither is a file (the
/// directory is then read in the `coffer-pccs` cache layout, one file per item).
pub fn offline_collateral_file(dir: &Path, quote: &[u8]) -> Option<PathBuf> {
    let fmspc = coffer_evidence::Quote::parse(quote)
        .and_then(|q| q.fmspc())
        .ok()
        .map(hex::encode);
    if let Some(fmspc) = fmspc {
        let specific = dir.join(format!("{fmspc}.json"));
        if specific.is_file() {
            return Some(specific);
        }
    }
    let single = dir.join("collateral.json");
    single.is_file().then_some(single)
}

impl CollateralSource {
    fn collateral(&self, quote: &[u8], now: i64) -> Result<std::sync::Arc<Collateral>, Error> {
        match self {
            CollateralSource::Simulated { sim, cache } => {
                let tee = coffer_evidence::Quote::parse(quote)
                    .map_err(evidence_error)?
                    .tee();
                let mut g = cache
                    .lock()
                    .map_err(|_| Error::Platform("collateral cache poisoned".into()))?;
                if let Some((_, _, c)) = g.iter().find(|(t, made, _)| {
                    *t == tee && now >= *made && now - *made < SIM_COLLATERAL_REFRESH
                }) {
                    return Ok(c.clone());
                }
                let c = std::sync::Arc::new(sim.collateral_for(tee, now));
                g.retain(|(t, _, _)| *t != tee);
                g.push((tee, now, c.clone()));
                Ok(c)
            }
            CollateralSource::Fixed(c) => Ok(c.clone()),
            CollateralSource::Dir(dir) => {
                if let Some(path) = offline_collateral_file(dir, quote) {
                    let bytes = std::fs::read(&path).map_err(|e| {
                        Error::CollateralUnavailable(format!(
                            "cannot read collateral {} from --collateral-dir: {e}",
                            path.display()
                        ))
                    })?;
                    return Collateral::from_json(&bytes)
                        .map(std::sync::Arc::new)
                        .map_err(|e| {
                            Error::CollateralUnavailable(format!(
                                "{} is not valid collateral: {e}",
                                path.display()
                            ))
                        });
                }
                // Neither file: the directory holds items in the coffer-pccs cache layout.
                let q = coffer_evidence::Quote::parse(quote).map_err(evidence_error)?;
                let req = coffer_pccs::CollateralRequest::for_quote(&q)
                    .map_err(|e| Error::CollateralUnavailable(e.to_string()))?;
                let fmspc = hex::encode(req.fmspc);
                let fetched = coffer_pccs::CollateralSource::offline(dir.clone())
                    .fetch(&req, now)
                    .map_err(|e| {
                        Error::CollateralUnavailable(format!(
                            "collateral for FMSPC {fmspc} not found in --collateral-dir: no \
                             {fmspc}.json or collateral.json, and {e}"
                        ))
                    })?;
                fetched
                    .to_collateral()
                    .map(std::sync::Arc::new)
                    .map_err(|e| {
                        Error::CollateralUnavailable(format!(
                            "--collateral-dir {} holds invalid collateral: {e}",
                            dir.display()
                        ))
                    })
            }
            CollateralSource::Pccs(src) => {
                let q = coffer_evidence::Quote::parse(quote).map_err(evidence_error)?;
                let req = coffer_pccs::CollateralRequest::for_quote(&q)
                    .map_err(|e| Error::CollateralUnavailable(e.to_string()))?;
                let fetched = src
                    .fetch(&req, now)
                    .map_err(|e| Error::CollateralUnavailable(e.to_string()))?;
                fetched
                    .to_collateral()
                    .map(std::sync::Arc::new)
                    .map_err(|e| {
                        Error::CollateralUnavailable(format!(
                            "{} served invalid collateral: {e}",
                            src.service()
                        ))
                    })
            }
        }
    }
}

/// Verifies workload evidence: pinned anchors, cached collateral checks.
pub struct EvidenceVerifier {
    verifier: Verifier,
    collateral: CollateralSource,
    /// SEV-SNP: the pinned roots (AMD's, or the simulated machine's when the collateral is
    /// simulated), made on first use (the simulated ARK costs an RSA key generation).
    snp: OnceLock<SnpSide>,
    /// The simulated ARK's CRL and when it was made.
    sim_snp_crl: Mutex<Option<(i64, Arc<Vec<u8>>)>>,
    /// AMD KDS (or its offline directory): the CRL, and the VCEK when the host's table lacks it.
    kds: Option<coffer_pccs::kds::KdsSource>,
}

struct SnpSide {
    anchors: SnpAnchors,
    sim: Option<SimSnpPlatform>,
}

/// Verified evidence, reduced to what the Coordinator decides on.
#[derive(Debug, Clone)]
pub struct VerifiedEvidence {
    /// What the manifest's policy checks.
    pub claims: MeasurementClaims,
    /// The 64 bytes of report data, authenticated.
    pub report_data: [u8; 64],
}

impl EvidenceVerifier {
    /// A verifier for `anchors` with collateral from `collateral`. SEV-SNP reports are
    /// verified under AMD's pinned roots, or, with simulated collateral, under the simulated
    /// machine's ARK only.
    pub fn new(anchors: TrustAnchors, collateral: CollateralSource) -> Self {
        Self {
            verifier: Verifier::new(anchors),
            collateral,
            snp: OnceLock::new(),
            sim_snp_crl: Mutex::new(None),
            kds: None,
        }
    }

    /// Takes SEV-SNP collateral from AMD's KDS (or an offline directory in its layout): the
    /// CRL for every report, and the VCEK, ASK and ARK when the evidence comes without them.
    pub fn with_kds(mut self, kds: coffer_pccs::kds::KdsSource) -> Self {
        self.kds = Some(kds);
        self
    }

    fn snp_side(&self) -> &SnpSide {
        self.snp.get_or_init(|| match &self.collateral {
            CollateralSource::Simulated { sim, .. } => {
                let sim = sim.snp();
                SnpSide {
                    anchors: sim.anchors(),
                    sim: Some(sim),
                }
            }
            _ => SnpSide {
                anchors: SnpAnchors::amd(),
                sim: None,
            },
        })
    }

    /// Verifies evidence of any format at `now`: a DCAP quote with collateral from the
    /// source, an SEV-SNP report with the certificates it came with (or, when it has none,
    /// AMD KDS's, see [`EvidenceVerifier::with_kds`]). AMD's CRL is checked for simulated SNP
    /// evidence and whenever KDS is configured; otherwise the claims say it was not, and a
    /// package that requires one refuses the evidence.
    pub fn verify_evidence(
        &self,
        evidence: &coffer_api::Evidence,
        now: i64,
    ) -> Result<VerifiedEvidence, Error> {
        let data = base64_field(&evidence.data, "evidence.data")?;
        match evidence.format {
            coffer_api::EvidenceFormat::DcapQuote => {
                let v = self.verify(&data, now)?;
                Ok(VerifiedEvidence {
                    claims: crate::core::claims_of(&v),
                    report_data: v.report_data,
                })
            }
            coffer_api::EvidenceFormat::SnpReport => {
                self.verify_snp(&data, &evidence.certificates, now)
            }
        }
    }

    fn verify_snp(
        &self,
        report: &[u8],
        certificates: &[String],
        now: i64,
    ) -> Result<VerifiedEvidence, Error> {
        let side = self.snp_side();
        // KDS: everything when the evidence has no certificates, else only the CRL (when the
        // report names its product; a version 2 report does not, and goes without).
        let (from_kds, kds_crl) = match (&side.sim, &self.kds) {
            (None, Some(kds)) => {
                let parsed = coffer_evidence::snp::Report::parse(report).map_err(evidence_error)?;
                if certificates.is_empty() {
                    (Some(kds_collateral(kds, &parsed, now)?), None)
                } else {
                    let crl = parsed
                        .product_from_cpuid()
                        .map(|p| kds.crl(p, now))
                        .transpose()
                        .map_err(|e| Error::CollateralUnavailable(e.to_string()))?;
                    (None, crl)
                }
            }
            _ => (None, None),
        };
        let (vek, ask, ark) = match (certificates, &from_kds) {
            ([vek, ask, ark], _) => (
                base64_field(vek, "evidence.certificates[0]")?,
                base64_field(ask, "evidence.certificates[1]")?,
                base64_field(ark, "evidence.certificates[2]")?,
            ),
            ([], Some(k)) => (k.vcek.clone(), k.ask.clone(), k.ark.clone()),
            _ => {
                return Err(Error::Evidence {
                    kind: coffer_api::ErrorKind::MalformedEvidence,
                    reason: format!(
                        "snp-report evidence carries {} certificates; it needs 3 (VCEK or VLEK, \
                         ASK or ASVK, ARK), as the host's SNP certificate table holds them: \
                         load them on the host (e.g. `snphost import`), or start the \
                         Coordinator with --kds-url to fetch them",
                        certificates.len()
                    ),
                })
            }
        };
        let crl = match (&side.sim, from_kds) {
            (Some(sim), _) => Some(self.sim_snp_crl(sim, now)?),
            (None, Some(k)) => Some(Arc::new(k.crl)),
            (None, None) => kds_crl.map(Arc::new),
        };
        let collateral = SnpCollateral {
            vek: &vek,
            ask: &ask,
            ark: &ark,
            crl: crl.as_deref().map(Vec::as_slice),
        };
        let v = coffer_evidence::snp::verify_snp(report, &collateral, &side.anchors, now)
            .map_err(evidence_error)?;
        let r = &v.report;
        let t = v.reported_tcb;
        let claims = MeasurementClaims {
            debug: r.debug(),
            snp: Some(SnpClaims {
                measurement: r.measurement,
                host_data: r.host_data,
                id_key_digest: r.id_key_digest,
                author_key_digest: r.author_key_digest,
                policy: r.policy,
                vmpl: r.vmpl,
                reported_tcb: SnpTcb {
                    bootloader: t.bootloader,
                    tee: t.tee,
                    snp: t.snp,
                    microcode: t.microcode,
                    fmc: t.fmc,
                },
                crl_checked: v.crl_checked,
            }),
            ..MeasurementClaims::of_tee(coffer_manifest::Tee::Snp)
        };
        Ok(VerifiedEvidence {
            claims,
            report_data: r.report_data,
        })
    }

    /// The simulated ARK's CRL, remade hourly (valid from an hour before to a day after).
    fn sim_snp_crl(&self, sim: &SimSnpPlatform, now: i64) -> Result<Arc<Vec<u8>>, Error> {
        let mut g = self
            .sim_snp_crl
            .lock()
            .map_err(|_| Error::Platform("SNP CRL cache poisoned".into()))?;
        if let Some((made, crl)) = g.as_ref() {
            if now >= *made && now - *made < SIM_COLLATERAL_REFRESH {
                return Ok(crl.clone());
            }
        }
        let crl = Arc::new(sim.crl(now - 3600, now + 86_400, &[]));
        *g = Some((now, crl.clone()));
        Ok(crl)
    }

    /// Verifies a DCAP quote at `now`. Collateral that the source keeps (simulated, a PCCS
    /// client's cache) is recognised by identity, so a warm activation costs the quote's own
    /// signature and no hashing of collateral.
    pub fn verify(&self, quote: &[u8], now: i64) -> Result<Verified, Error> {
        let collateral = self.collateral.collateral(quote, now)?;
        self.verifier
            .verify_shared(quote, &collateral, now)
            .map_err(evidence_error)
    }

    /// The collateral a quote is verified with at `now` (cached).
    pub fn collateral_for(
        &self,
        quote: &[u8],
        now: i64,
    ) -> Result<std::sync::Arc<Collateral>, Error> {
        self.collateral.collateral(quote, now)
    }

    /// Verifies a DCAP quote with the given collateral at `now` (an offline bundle).
    pub fn verify_with(
        &self,
        quote: &[u8],
        collateral: &Collateral,
        now: i64,
    ) -> Result<Verified, Error> {
        self.verifier
            .verify(quote, collateral, now)
            .map_err(evidence_error)
    }
}

/// KDS collateral for a report: the product from its CPUID (version 3 and later).
fn kds_collateral(
    kds: &coffer_pccs::kds::KdsSource,
    parsed: &coffer_evidence::snp::Report,
    now: i64,
) -> Result<coffer_pccs::kds::KdsCollateral, Error> {
    let product = parsed.product_from_cpuid().ok_or_else(|| Error::Evidence {
        kind: coffer_api::ErrorKind::UnsupportedEvidence,
        reason: "the SNP report names no known product in its CPUID fields (version 2 reports \
                 have none), so its KDS collateral cannot be chosen; send the certificates with \
                 the report"
            .into(),
    })?;
    let req = coffer_pccs::kds::KdsRequest::for_report(parsed, product).ok_or_else(|| {
        Error::Evidence {
            kind: coffer_api::ErrorKind::MalformedEvidence,
            reason: format!("REPORTED_TCB sets bytes that {product} reserves"),
        }
    })?;
    kds.fetch(&req, now)
        .map_err(|e| Error::CollateralUnavailable(e.to_string()))
}

fn base64_field(value: &str, field: &str) -> Result<Vec<u8>, Error> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_bytes())
        .map_err(|_| Error::Evidence {
            kind: coffer_api::ErrorKind::MalformedEvidence,
            reason: format!("{field} is not base64 (standard alphabet, padded)"),
        })
}

/// Maps an evidence error to the API's kinds (the message names the failed check).
pub fn evidence_error(e: coffer_evidence::Error) -> Error {
    use coffer_api::ErrorKind as A;
    use coffer_evidence::ErrorKind as E;
    let kind = match e.kind() {
        E::Malformed => A::MalformedEvidence,
        E::BadSignature => A::BadSignature,
        E::Expired => A::ExpiredCollateral,
        E::Revoked => A::Revoked,
        E::UntrustedRoot => A::UntrustedRoot,
        E::PolicyMismatch | E::TcbNotMatched => A::PolicyMismatch,
        E::Unsupported => A::UnsupportedEvidence,
    };
    Error::Evidence {
        kind,
        reason: e.to_string(),
    }
}
