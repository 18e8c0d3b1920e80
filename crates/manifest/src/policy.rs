//! Matching verified evidence against a package (the activation policy).
//!
//! [`MeasurementClaims`] is a plain struct of what verified evidence says; the Coordinator
//! fills it from `coffer-evidence`'s `Verified`, so this crate stays independent of evidence
//! parsing. Checks run in a fixed order (TEE, debug, measurement, product, SVN, TCB status)
//! and the first failure is returned with a precise reason.

use std::fmt;

use crate::model::{Manifest, Package, SnpPackage, SnpTcb, Tee, Workload};

/// What verified evidence claims about the software and platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementClaims {
    /// TEE kind of the evidence.
    pub tee: Tee,
    /// SGX MRENCLAVE.
    pub mrenclave: Option<[u8; 32]>,
    /// SGX MRSIGNER.
    pub mrsigner: Option<[u8; 32]>,
    /// SGX ISVPRODID.
    pub isv_prod_id: Option<u16>,
    /// SGX ISVSVN.
    pub isv_svn: Option<u16>,
    /// Whether the enclave/TD runs in debug mode.
    pub debug: bool,
    /// The platform's TCB status, Intel spelling (e.g. `UpToDate`).
    pub tcb_status: String,
    /// TDX MRTD.
    pub mrtd: Option<[u8; 48]>,
    /// TDX RTMR0..3.
    pub rtmrs: Option<[[u8; 48]; 4]>,
    /// TDX MRCONFIGID.
    pub mrconfigid: Option<[u8; 48]>,
    /// The image measurement the evidence's report data binds (bytes 32..64), when the
    /// workload sent one.
    pub image_measurement: Option<[u8; 32]>,
    /// TDX MRSERVICETD (zero when the quote has none).
    pub mrservicetd: Option<[u8; 48]>,
    /// The collateral's `tcbEvaluationDataNumber`.
    pub tcb_evaluation_data_number: Option<u32>,
    /// SEV-SNP: the verified report's values.
    pub snp: Option<SnpClaims>,
}

impl MeasurementClaims {
    /// Claims of a `tee` with nothing measured: every value absent, not debug, no TCB status.
    /// Verifiers fill in what their evidence proves (`..MeasurementClaims::of_tee(tee)`).
    pub fn of_tee(tee: Tee) -> MeasurementClaims {
        MeasurementClaims {
            tee,
            mrenclave: None,
            mrsigner: None,
            isv_prod_id: None,
            isv_svn: None,
            debug: false,
            tcb_status: String::new(),
            mrtd: None,
            rtmrs: None,
            mrconfigid: None,
            image_measurement: None,
            mrservicetd: None,
            tcb_evaluation_data_number: None,
            snp: None,
        }
    }
}

/// What a verified SEV-SNP attestation report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpClaims {
    /// MEASUREMENT.
    pub measurement: [u8; 48],
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// ID_KEY_DIGEST.
    pub id_key_digest: [u8; 48],
    /// AUTHOR_KEY_DIGEST.
    pub author_key_digest: [u8; 48],
    /// The guest policy (bit 16 SMT, 18 migration agent, 19 debug; ABI in bits 0..16).
    pub policy: u64,
    /// The VMPL the report was requested from.
    pub vmpl: u32,
    /// REPORTED_TCB, decoded.
    pub reported_tcb: SnpTcb,
    /// Whether AMD's CRL was checked.
    pub crl_checked: bool,
}

/// Why evidence does not satisfy a package. Display is a reason fit for the caller and the
/// audit log (measurements are public values, never secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    /// The workload is not in the manifest.
    #[error("workload {0:?} is not in the manifest")]
    UnknownWorkload(String),
    /// The workload's package is missing (only for unvalidated manifests).
    #[error("package {0:?} is not in the manifest")]
    UnknownPackage(String),
    /// The evidence comes from another TEE kind.
    #[error("{got} evidence does not match package {package} ({expected})")]
    Tee {
        /// Package name.
        package: String,
        /// What the package requires.
        expected: Tee,
        /// What the evidence is.
        got: Tee,
    },
    /// The collateral predates the TCB recovery the package requires.
    #[error(
        "collateral tcbEvaluationDataNumber {got} is below package {package}'s minimum {minimum}: \
         fetch current collateral"
    )]
    TcbEvaluationTooOld {
        /// Package name.
        package: String,
        /// The collateral's number.
        got: u32,
        /// The package's minimum.
        minimum: u32,
    },
    /// A debug TEE, not allowed by the package.
    #[error("debug {what} not allowed by package {package}")]
    DebugNotAllowed {
        /// Package name.
        package: String,
        /// "enclave" or "TD".
        what: &'static str,
    },
    /// The evidence lacks a value the package checks.
    #[error("evidence has no {claim} (package {package} requires it)")]
    MissingClaim {
        /// Package name.
        package: String,
        /// E.g. "MRENCLAVE".
        claim: &'static str,
    },
    /// A measurement register differs.
    #[error(
        "{register} {} not in package {package} (expected {})",
        short(got),
        short(expected)
    )]
    Measurement {
        /// Package name.
        package: String,
        /// E.g. "MRENCLAVE", "RTMR2".
        register: &'static str,
        /// The evidence's value, hex.
        got: String,
        /// The package's value, hex.
        expected: String,
    },
    /// Another product.
    #[error("ISVPRODID {got} does not match package {package} (expected {expected})")]
    ProductId {
        /// Package name.
        package: String,
        /// Evidence value.
        got: u16,
        /// Package value.
        expected: u16,
    },
    /// Security version below the minimum.
    #[error("ISVSVN {got} below minimum {minimum} of package {package}")]
    SvnTooLow {
        /// Package name.
        package: String,
        /// Evidence value.
        got: u16,
        /// Package minimum.
        minimum: u16,
    },
    /// Platform TCB status not accepted.
    #[error("TCB status {got} not accepted by package {package} (accepted: {})", accepted.join(", "))]
    TcbStatus {
        /// Package name.
        package: String,
        /// Evidence value.
        got: String,
        /// The package's list.
        accepted: Vec<String>,
    },
    /// The SEV-SNP guest policy, VMPL, TCB or CRL check does not satisfy the package.
    #[error("SEV-SNP {detail} (package {package})")]
    SnpPolicy {
        /// Package name.
        package: String,
        /// What differs.
        detail: String,
    },
    /// The package's own value is not valid hex (only for unvalidated manifests).
    #[error("package {package} field {field} is not valid hex")]
    BadPackage {
        /// Package name.
        package: String,
        /// Field name.
        field: &'static str,
    },
}

fn short(h: &str) -> String {
    match h.get(..16) {
        Some(head) if h.len() > 16 => format!("{head}…"),
        _ => h.to_string(),
    }
}

fn check_hex<const N: usize>(
    package: &str,
    register: &'static str,
    field: &'static str,
    expected: &Option<String>,
    got: Option<&[u8; N]>,
) -> Result<(), Mismatch> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let mut want = [0u8; N];
    hex::decode_to_slice(expected, &mut want).map_err(|_| Mismatch::BadPackage {
        package: package.into(),
        field,
    })?;
    let Some(got) = got else {
        return Err(Mismatch::MissingClaim {
            package: package.into(),
            claim: register,
        });
    };
    if got != &want {
        return Err(Mismatch::Measurement {
            package: package.into(),
            register,
            got: hex::encode(got),
            expected: expected.to_ascii_lowercase(),
        });
    }
    Ok(())
}

impl Package {
    /// Checks `claims` against this package (named `name` in messages).
    pub fn matches(&self, name: &str, claims: &MeasurementClaims) -> Result<(), Mismatch> {
        if claims.tee != self.tee {
            return Err(Mismatch::Tee {
                package: name.into(),
                expected: self.tee,
                got: claims.tee,
            });
        }
        if claims.debug && !self.debug {
            let what = match self.tee {
                Tee::Sgx => "enclave",
                Tee::Tdx => "TD",
                Tee::Snp => "guest",
            };
            return Err(Mismatch::DebugNotAllowed {
                package: name.into(),
                what,
            });
        }
        match self.tee {
            Tee::Sgx => {
                check_hex(
                    name,
                    "MRENCLAVE",
                    "mrenclave",
                    &self.mrenclave,
                    claims.mrenclave.as_ref(),
                )?;
                check_hex(
                    name,
                    "MRSIGNER",
                    "mrsigner",
                    &self.mrsigner,
                    claims.mrsigner.as_ref(),
                )?;
                if let Some(expected) = self.isv_prod_id {
                    let got = claims.isv_prod_id.ok_or(Mismatch::MissingClaim {
                        package: name.into(),
                        claim: "ISVPRODID",
                    })?;
                    if got != expected {
                        return Err(Mismatch::ProductId {
                            package: name.into(),
                            got,
                            expected,
                        });
                    }
                }
                if let Some(minimum) = self.isv_svn {
                    let got = claims.isv_svn.ok_or(Mismatch::MissingClaim {
                        package: name.into(),
                        claim: "ISVSVN",
                    })?;
                    if got < minimum {
                        return Err(Mismatch::SvnTooLow {
                            package: name.into(),
                            got,
                            minimum,
                        });
                    }
                }
            }
            Tee::Tdx => {
                check_hex(name, "MRTD", "mrtd", &self.mrtd, claims.mrtd.as_ref())?;
                let rtmr = |i: usize| claims.rtmrs.as_ref().and_then(|r| r.get(i));
                check_hex(name, "RTMR0", "rtmr0", &self.rtmr0, rtmr(0))?;
                check_hex(name, "RTMR1", "rtmr1", &self.rtmr1, rtmr(1))?;
                check_hex(name, "RTMR2", "rtmr2", &self.rtmr2, rtmr(2))?;
                check_hex(name, "RTMR3", "rtmr3", &self.rtmr3, rtmr(3))?;
                check_hex(
                    name,
                    "MRCONFIGID",
                    "mrconfigid",
                    &self.mrconfigid,
                    claims.mrconfigid.as_ref(),
                )?;
                check_hex(
                    name,
                    "MRSERVICETD",
                    "mrservicetd",
                    &self.mrservicetd,
                    claims.mrservicetd.as_ref(),
                )?;
            }
            Tee::Snp => {
                let (Some(want), Some(got)) = (&self.snp, &claims.snp) else {
                    return Err(Mismatch::MissingClaim {
                        package: name.into(),
                        claim: "SEV-SNP report",
                    });
                };
                check_snp(name, want, got)?;
            }
        }
        if let Some(minimum) = self.min_tcb_evaluation_data_number {
            let got = claims
                .tcb_evaluation_data_number
                .ok_or(Mismatch::MissingClaim {
                    package: name.into(),
                    claim: "tcbEvaluationDataNumber",
                })?;
            if got < minimum {
                return Err(Mismatch::TcbEvaluationTooOld {
                    package: name.into(),
                    got,
                    minimum,
                });
            }
        }
        check_hex(
            name,
            "image measurement",
            "image_measurement",
            &self.image_measurement,
            claims.image_measurement.as_ref(),
        )?;
        // Intel's TCB status; SEV-SNP has none (its TCB is checked by `snp.min_reported_tcb`).
        if self.tee != Tee::Snp
            && !self
                .accepted_tcb_statuses
                .iter()
                .any(|s| s == &claims.tcb_status)
        {
            return Err(Mismatch::TcbStatus {
                package: name.into(),
                got: claims.tcb_status.clone(),
                accepted: self.accepted_tcb_statuses.clone(),
            });
        }
        Ok(())
    }
}

fn check_snp(name: &str, want: &SnpPackage, got: &SnpClaims) -> Result<(), Mismatch> {
    check_hex(
        name,
        "MEASUREMENT",
        "snp.measurement",
        &want.measurement,
        Some(&got.measurement),
    )?;
    check_hex(
        name,
        "HOST_DATA",
        "snp.host_data",
        &want.host_data,
        Some(&got.host_data),
    )?;
    check_hex(
        name,
        "ID_KEY_DIGEST",
        "snp.id_key_digest",
        &want.id_key_digest,
        Some(&got.id_key_digest),
    )?;
    check_hex(
        name,
        "AUTHOR_KEY_DIGEST",
        "snp.author_key_digest",
        &want.author_key_digest,
        Some(&got.author_key_digest),
    )?;
    let refuse = |detail: String| {
        Err(Mismatch::SnpPolicy {
            package: name.into(),
            detail,
        })
    };
    if got.policy & (1 << 18) != 0 && !want.migration_agent {
        return refuse("guest policy allows a migration agent, which can export its memory".into());
    }
    if got.policy & (1 << 16) != 0 && !want.smt {
        return refuse("guest policy allows SMT, which the package does not".into());
    }
    if let Some(min) = &want.min_abi {
        let Some(min) = crate::validate::parse_abi(min) else {
            return Err(Mismatch::BadPackage {
                package: name.into(),
                field: "snp.min_abi",
            });
        };
        let abi = ((got.policy >> 8) as u8, got.policy as u8);
        if abi < min {
            return refuse(format!(
                "guest policy's minimum ABI {}.{} is below {}.{}",
                abi.0, abi.1, min.0, min.1
            ));
        }
    }
    if got.vmpl != want.vmpl {
        return refuse(format!(
            "report from VMPL {}, the package requires VMPL {}",
            got.vmpl, want.vmpl
        ));
    }
    if let Some(min) = &want.min_reported_tcb {
        let t = &got.reported_tcb;
        for (component, have, need) in [
            ("boot loader", t.bootloader, min.bootloader),
            ("TEE", t.tee, min.tee),
            ("SNP firmware", t.snp, min.snp),
            ("microcode", t.microcode, min.microcode),
            ("FMC", t.fmc.unwrap_or(0), min.fmc.unwrap_or(0)),
        ] {
            if have < need {
                return refuse(format!(
                    "REPORTED_TCB {component} SPL {have} is below the minimum {need}"
                ));
            }
        }
    }
    if want.require_crl && !got.crl_checked {
        return refuse(
            "evidence was verified without AMD's CRL, which the package requires".into(),
        );
    }
    Ok(())
}

impl Manifest {
    /// Looks up `workload` and checks `claims` against its package: the activation policy.
    pub fn match_workload(
        &self,
        workload: &str,
        claims: &MeasurementClaims,
    ) -> Result<&Workload, Mismatch> {
        let w = self
            .workloads
            .get(workload)
            .ok_or_else(|| Mismatch::UnknownWorkload(workload.into()))?;
        let p = self
            .packages
            .get(&w.package)
            .ok_or_else(|| Mismatch::UnknownPackage(w.package.clone()))?;
        p.matches(&w.package, claims)?;
        Ok(w)
    }
}

impl fmt::Display for MeasurementClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.tee)?;
        if let Some(m) = &self.mrenclave {
            write!(f, " MRENCLAVE={}", hex::encode(m))?;
        }
        if let Some(m) = &self.mrsigner {
            write!(f, " MRSIGNER={}", hex::encode(m))?;
        }
        if let Some(p) = self.isv_prod_id {
            write!(f, " ISVPRODID={p}")?;
        }
        if let Some(s) = self.isv_svn {
            write!(f, " ISVSVN={s}")?;
        }
        if let Some(m) = &self.mrtd {
            write!(f, " MRTD={}", hex::encode(m))?;
        }
        if let Some(snp) = &self.snp {
            write!(
                f,
                " MEASUREMENT={} HOST_DATA={} VMPL={}",
                hex::encode(snp.measurement),
                hex::encode(snp.host_data),
                snp.vmpl
            )?;
        }
        if let Some(m) = &self.image_measurement {
            write!(f, " image={}", hex::encode(m))?;
        }
        write!(f, " debug={} tcb={}", self.debug, self.tcb_status)
    }
}
