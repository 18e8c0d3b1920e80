//! TCB status: level selection and convergence, exactly as Intel's QVL does it
//! (`TcbLevelCheck.cpp`, `TdxModuleCheck.cpp`, `TDRelaunchCheck.cpp`,
//! `convergeTcbStatusWithQeTcbStatus`; see `testdata/vectors/quote-formats.md` §8).
//!
//! Pure functions over parsed values, so the table of Intel's unit tests can be checked
//! without certificates.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::collateral::{IsvSvnLevel, TcbInfo, TcbLevel};
use crate::error::Error;

/// A TCB status, in Intel's spelling (Display, serde, and the PCS JSON use the same strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TcbStatus {
    /// The platform is patched.
    UpToDate,
    /// Patched, but software mitigations are needed (see the advisories).
    SWHardeningNeeded,
    /// Patched, but the platform configuration needs changes (e.g. BIOS settings).
    ConfigurationNeeded,
    /// Both of the above.
    ConfigurationAndSWHardeningNeeded,
    /// The platform or QE is not patched.
    OutOfDate,
    /// Out of date and configuration changes needed.
    OutOfDateConfigurationNeeded,
    /// The TCB level is revoked.
    Revoked,
    /// TDX 1.5: the TD runs on an outdated module but a relaunch would pick up the update.
    TDRelaunchAdvised,
    /// As [`TcbStatus::TDRelaunchAdvised`], with configuration changes needed.
    TDRelaunchAdvisedConfigurationNeeded,
}

impl TcbStatus {
    /// Intel's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::Revoked => "Revoked",
            TcbStatus::TDRelaunchAdvised => "TDRelaunchAdvised",
            TcbStatus::TDRelaunchAdvisedConfigurationNeeded => {
                "TDRelaunchAdvisedConfigurationNeeded"
            }
        }
    }

    fn has_configuration(self) -> bool {
        matches!(
            self,
            TcbStatus::ConfigurationNeeded
                | TcbStatus::ConfigurationAndSWHardeningNeeded
                | TcbStatus::OutOfDateConfigurationNeeded
                | TcbStatus::TDRelaunchAdvisedConfigurationNeeded
        )
    }
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TcbStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "UpToDate" => TcbStatus::UpToDate,
            "SWHardeningNeeded" => TcbStatus::SWHardeningNeeded,
            "ConfigurationNeeded" => TcbStatus::ConfigurationNeeded,
            "ConfigurationAndSWHardeningNeeded" => TcbStatus::ConfigurationAndSWHardeningNeeded,
            "OutOfDate" => TcbStatus::OutOfDate,
            "OutOfDateConfigurationNeeded" => TcbStatus::OutOfDateConfigurationNeeded,
            "Revoked" => TcbStatus::Revoked,
            "TDRelaunchAdvised" => TcbStatus::TDRelaunchAdvised,
            "TDRelaunchAdvisedConfigurationNeeded" => {
                TcbStatus::TDRelaunchAdvisedConfigurationNeeded
            }
            other => return Err(format!("unrecognized TCB status {other:?}")),
        })
    }
}

/// The QE's TCB status as Intel's QVL classifies it (`EnclaveReportVerifier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QeStatus {
    Ok,
    OutOfDate,
    Revoked,
}

/// Step 2 of §8: the first (highest) level whose 16 SGX components and PCESVN are all ≤ the
/// PCK certificate's.
pub(crate) fn select_sgx_level<'a>(
    levels: &'a [TcbLevel],
    comps: &[u8; 16],
    pce_svn: u16,
) -> Option<&'a TcbLevel> {
    levels.iter().find(|l| sgx_matches(l, comps, pce_svn))
}

fn sgx_matches(l: &TcbLevel, comps: &[u8; 16], pce_svn: u16) -> bool {
    l.sgx_components
        .iter()
        .zip(comps)
        .all(|(lv, c)| u16::from(*c) >= *lv)
        && pce_svn >= l.pce_svn
}

/// Step 3: among SGX-matching levels, the first whose TDX components are ≤ TEE_TCB_SVN,
/// skipping components 0 and 1 when TEE_TCB_SVN[1] > 0 (the module identity decides those).
pub(crate) fn select_tdx_level<'a>(
    levels: &'a [TcbLevel],
    comps: &[u8; 16],
    pce_svn: u16,
    tee_tcb_svn: &[u8; 16],
) -> Option<&'a TcbLevel> {
    let skip = if tee_tcb_svn[1] > 0 { 2 } else { 0 };
    levels
        .iter()
        .filter(|l| sgx_matches(l, comps, pce_svn))
        .find(|l| {
            l.tdx_components.is_some_and(|t| {
                t.iter()
                    .zip(tee_tcb_svn)
                    .skip(skip)
                    .all(|(lv, s)| u16::from(*s) >= *lv)
            })
        })
}

/// Step 4: the TDX module identity level for TEE_TCB_SVN (`None` when TEE_TCB_SVN[1] == 0, i.e.
/// no module identity applies). Errors: no identity for the major version, or no level.
pub(crate) fn select_module_level<'a>(
    info: &'a TcbInfo,
    tee_tcb_svn: &[u8; 16],
) -> Result<Option<(&'a crate::collateral::TdxModuleIdentity, &'a IsvSvnLevel)>, Error> {
    if tee_tcb_svn[1] == 0 {
        return Ok(None);
    }
    let want = format!("TDX_{:02X}", tee_tcb_svn[1]);
    let id = info
        .tdx_module_identities
        .iter()
        .find(|m| m.id.eq_ignore_ascii_case(&want))
        .ok_or_else(|| {
            Error::mismatch(
                "TDX module identity",
                format!("TCB info has no {want} identity"),
            )
        })?;
    let level = id
        .tcb_levels
        .iter()
        .find(|l| u16::from(tee_tcb_svn[0]) >= l.isv_svn)
        .ok_or_else(|| Error::TcbNotMatched {
            detail: format!(
                "no {want} module level for module SVN {} (lowest is {})",
                tee_tcb_svn[0],
                id.tcb_levels.last().map(|l| l.isv_svn).unwrap_or_default()
            ),
        })?;
    Ok(Some((id, level)))
}

/// Converges the TDX platform status with the module status (`TdxModuleCheck`).
pub fn converge_tdx_module(tdx: TcbStatus, module: TcbStatus) -> TcbStatus {
    match module {
        TcbStatus::OutOfDate => match tdx {
            TcbStatus::UpToDate | TcbStatus::SWHardeningNeeded => TcbStatus::OutOfDate,
            TcbStatus::ConfigurationNeeded | TcbStatus::ConfigurationAndSWHardeningNeeded => {
                TcbStatus::OutOfDateConfigurationNeeded
            }
            other => other,
        },
        TcbStatus::Revoked => TcbStatus::Revoked,
        _ => tdx,
    }
}

/// The QE level for the QE report's ISVSVN and its QVL classification.
pub(crate) fn select_qe_level(levels: &[IsvSvnLevel], isv_svn: u16) -> Option<&IsvSvnLevel> {
    levels.iter().find(|l| isv_svn >= l.isv_svn)
}

pub(crate) fn qe_status(level: &IsvSvnLevel) -> QeStatus {
    match level.status {
        TcbStatus::UpToDate => QeStatus::Ok,
        TcbStatus::Revoked => QeStatus::Revoked,
        _ => QeStatus::OutOfDate,
    }
}

/// Converges the platform status with the QE status (`convergeTcbStatusWithQeTcbStatus`).
pub(crate) fn converge_qe(platform: TcbStatus, qe: QeStatus) -> TcbStatus {
    match qe {
        QeStatus::OutOfDate => match platform {
            TcbStatus::UpToDate | TcbStatus::SWHardeningNeeded => TcbStatus::OutOfDate,
            TcbStatus::ConfigurationNeeded | TcbStatus::ConfigurationAndSWHardeningNeeded => {
                TcbStatus::OutOfDateConfigurationNeeded
            }
            other => other,
        },
        QeStatus::Revoked => TcbStatus::Revoked,
        QeStatus::Ok => platform,
    }
}

/// Inputs of the TD relaunch check (TDX 1.5 bodies only).
pub(crate) struct RelaunchInput<'a> {
    pub(crate) info: &'a TcbInfo,
    pub(crate) qe: QeStatus,
    pub(crate) sgx_status: TcbStatus,
    pub(crate) tdx_status: TcbStatus,
    pub(crate) module_status: Option<TcbStatus>,
    pub(crate) tee_tcb_svn2: &'a [u8; 16],
}

/// Step 5 (`TDRelaunchCheck`): `Some(relaunch status)` when relaunching the TD would reach the
/// latest TCB. A TEE_TCB_SVN2 that names a module version the TCB info has no `TDX_xx`
/// identity for is refused, as Intel's QVL refuses it, not read as "no relaunch".
pub(crate) fn td_relaunch(i: &RelaunchInput<'_>) -> Result<Option<TcbStatus>, Error> {
    if i.qe != QeStatus::Ok {
        return Ok(None);
    }
    let sgx_ok = matches!(
        i.sgx_status,
        TcbStatus::UpToDate
            | TcbStatus::SWHardeningNeeded
            | TcbStatus::ConfigurationNeeded
            | TcbStatus::ConfigurationAndSWHardeningNeeded
    );
    let tdx_ood = matches!(
        i.tdx_status,
        TcbStatus::OutOfDate | TcbStatus::OutOfDateConfigurationNeeded
    );
    if !sgx_ok || !tdx_ood || i.module_status != Some(TcbStatus::OutOfDate) {
        return Ok(None);
    }
    let Some(latest_tdx) = i.info.tcb_levels.first().and_then(|l| l.tdx_components) else {
        return Ok(None);
    };
    let svn2 = i.tee_tcb_svn2;
    let module_ok = if svn2[1] == 0 {
        u16::from(svn2[0]) >= latest_tdx[0]
    } else {
        let want = format!("TDX_{:02X}", svn2[1]);
        let id = i
            .info
            .tdx_module_identities
            .iter()
            .find(|m| m.id.eq_ignore_ascii_case(&want))
            .ok_or_else(|| Error::TcbNotMatched {
                detail: format!(
                    "TEE_TCB_SVN2 names TDX module version {:02x}, and the TCB info has no \
                     {want} module identity to check a relaunch against",
                    svn2[1]
                ),
            })?;
        id.tcb_levels
            .first()
            .is_some_and(|l| u16::from(svn2[0]) >= l.isv_svn)
    };
    if !module_ok || u16::from(svn2[2]) < latest_tdx[2] {
        return Ok(None);
    }
    Ok(Some(
        if i.sgx_status.has_configuration() || i.tdx_status.has_configuration() {
            TcbStatus::TDRelaunchAdvisedConfigurationNeeded
        } else {
            TcbStatus::TDRelaunchAdvised
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collateral::TdxModule;
    use TcbStatus::*;

    fn level(sgx: [u16; 16], pce: u16, tdx: Option<[u16; 16]>, status: TcbStatus) -> TcbLevel {
        TcbLevel {
            sgx_components: sgx,
            pce_svn: pce,
            tdx_components: tdx,
            tcb_date: String::new(),
            status,
            advisory_ids: vec![],
        }
    }

    fn svn(first: &[u16]) -> [u16; 16] {
        let mut a = [0u16; 16];
        a[..first.len()].copy_from_slice(first);
        a
    }

    fn isv(isv_svn: u16, status: TcbStatus) -> IsvSvnLevel {
        IsvSvnLevel {
            isv_svn,
            tcb_date: String::new(),
            status,
            advisory_ids: vec![],
        }
    }

    #[test]
    fn status_strings_round_trip_in_intel_spelling() {
        for s in [
            UpToDate,
            SWHardeningNeeded,
            ConfigurationNeeded,
            ConfigurationAndSWHardeningNeeded,
            OutOfDate,
            OutOfDateConfigurationNeeded,
            Revoked,
            TDRelaunchAdvised,
            TDRelaunchAdvisedConfigurationNeeded,
        ] {
            assert_eq!(s.as_str().parse::<TcbStatus>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("Unknown".parse::<TcbStatus>().is_err());
    }

    #[test]
    fn sgx_level_is_first_with_all_components_and_pcesvn_covered() {
        let levels = vec![
            level(svn(&[5, 5]), 10, None, UpToDate),
            level(svn(&[4, 5]), 10, None, SWHardeningNeeded),
            level(svn(&[4, 4]), 9, None, OutOfDate),
        ];
        let pck = |a: u8, b: u8| {
            let mut c = [0u8; 16];
            c[0] = a;
            c[1] = b;
            c
        };
        assert_eq!(
            select_sgx_level(&levels, &pck(5, 5), 10).unwrap().status,
            UpToDate
        );
        assert_eq!(
            select_sgx_level(&levels, &pck(9, 9), 11).unwrap().status,
            UpToDate
        );
        // One component lower: the next level.
        assert_eq!(
            select_sgx_level(&levels, &pck(4, 9), 10).unwrap().status,
            SWHardeningNeeded
        );
        // PCESVN lower than the first two levels.
        assert_eq!(
            select_sgx_level(&levels, &pck(5, 5), 9).unwrap().status,
            OutOfDate
        );
        // Below every level: not supported.
        assert!(select_sgx_level(&levels, &pck(3, 9), 10).is_none());
        assert!(select_sgx_level(&levels, &pck(9, 9), 8).is_none());
    }

    #[test]
    fn tdx_level_skips_module_components_when_module_version_set() {
        let levels = vec![
            level(svn(&[1]), 1, Some(svn(&[9, 9, 3])), UpToDate),
            level(svn(&[1]), 1, Some(svn(&[0, 0, 2])), OutOfDate),
        ];
        let sgx = {
            let mut c = [0u8; 16];
            c[0] = 1;
            c
        };
        let mut tee = [0u8; 16];
        tee[2] = 3;
        // TEE_TCB_SVN[1] == 0: all components compared, 0 < 9 → second level.
        assert_eq!(
            select_tdx_level(&levels, &sgx, 1, &tee).unwrap().status,
            OutOfDate
        );
        // TEE_TCB_SVN[1] > 0: components 0 and 1 skipped → first level.
        tee[1] = 1;
        assert_eq!(
            select_tdx_level(&levels, &sgx, 1, &tee).unwrap().status,
            UpToDate
        );
        tee[2] = 1;
        assert!(select_tdx_level(&levels, &sgx, 1, &tee).is_none());
    }

    // The convergence tables of Intel's QuoteVerifierTcbStatusUT / TdxModuleCheck.
    #[test]
    fn module_convergence_matches_intel() {
        let table = [
            (UpToDate, UpToDate, UpToDate),
            (SWHardeningNeeded, UpToDate, SWHardeningNeeded),
            (ConfigurationNeeded, UpToDate, ConfigurationNeeded),
            (UpToDate, OutOfDate, OutOfDate),
            (SWHardeningNeeded, OutOfDate, OutOfDate),
            (ConfigurationNeeded, OutOfDate, OutOfDateConfigurationNeeded),
            (
                ConfigurationAndSWHardeningNeeded,
                OutOfDate,
                OutOfDateConfigurationNeeded,
            ),
            (OutOfDate, OutOfDate, OutOfDate),
            (
                OutOfDateConfigurationNeeded,
                OutOfDate,
                OutOfDateConfigurationNeeded,
            ),
            (UpToDate, Revoked, Revoked),
            (OutOfDate, Revoked, Revoked),
            (Revoked, UpToDate, Revoked),
        ];
        for (tdx, module, want) in table {
            assert_eq!(
                converge_tdx_module(tdx, module),
                want,
                "{tdx} + module {module}"
            );
        }
    }

    #[test]
    fn qe_convergence_matches_intel_not_dcap_qvl() {
        let table = [
            (UpToDate, QeStatus::Ok, UpToDate),
            (
                ConfigurationAndSWHardeningNeeded,
                QeStatus::Ok,
                ConfigurationAndSWHardeningNeeded,
            ),
            (UpToDate, QeStatus::OutOfDate, OutOfDate),
            (SWHardeningNeeded, QeStatus::OutOfDate, OutOfDate),
            // dcap-qvl's severity max gives OutOfDate here; Intel gives OutOfDateConfigurationNeeded.
            (
                ConfigurationNeeded,
                QeStatus::OutOfDate,
                OutOfDateConfigurationNeeded,
            ),
            (
                ConfigurationAndSWHardeningNeeded,
                QeStatus::OutOfDate,
                OutOfDateConfigurationNeeded,
            ),
            (OutOfDate, QeStatus::OutOfDate, OutOfDate),
            (
                OutOfDateConfigurationNeeded,
                QeStatus::OutOfDate,
                OutOfDateConfigurationNeeded,
            ),
            (Revoked, QeStatus::OutOfDate, Revoked),
            (UpToDate, QeStatus::Revoked, Revoked),
            (Revoked, QeStatus::Ok, Revoked),
        ];
        for (p, qe, want) in table {
            assert_eq!(converge_qe(p, qe), want, "{p} + QE {qe:?}");
        }
    }

    #[test]
    fn qe_level_selection() {
        let levels = vec![isv(8, UpToDate), isv(6, OutOfDate), isv(2, Revoked)];
        assert_eq!(
            qe_status(select_qe_level(&levels, 9).unwrap()),
            QeStatus::Ok
        );
        assert_eq!(
            qe_status(select_qe_level(&levels, 7).unwrap()),
            QeStatus::OutOfDate
        );
        assert_eq!(
            qe_status(select_qe_level(&levels, 2).unwrap()),
            QeStatus::Revoked
        );
        assert!(select_qe_level(&levels, 1).is_none());
    }

    fn tdx_info() -> TcbInfo {
        let m = TdxModule {
            mrsigner: [0; 48],
            attributes: [0; 8],
            attributes_mask: [0xff; 8],
        };
        TcbInfo {
            id: "TDX".into(),
            version: 3,
            issue_date: 0,
            next_update: 1,
            fmspc: [0; 6],
            pce_id: [0; 2],
            tcb_type: 0,
            tcb_evaluation_data_number: 17,
            tcb_levels: vec![
                level(svn(&[1]), 1, Some(svn(&[5, 0, 3])), UpToDate),
                level(svn(&[1]), 1, Some(svn(&[3, 0, 2])), OutOfDate),
            ],
            tdx_module: Some(m.clone()),
            tdx_module_identities: vec![crate::collateral::TdxModuleIdentity {
                id: "TDX_01".into(),
                module: m,
                tcb_levels: vec![isv(4, UpToDate), isv(2, OutOfDate)],
            }],
        }
    }

    #[test]
    fn module_identity_selection() {
        let info = tdx_info();
        let mut tee = [0u8; 16];
        assert!(select_module_level(&info, &tee).unwrap().is_none());
        tee[1] = 1;
        tee[0] = 4;
        assert_eq!(
            select_module_level(&info, &tee).unwrap().unwrap().1.status,
            UpToDate
        );
        tee[0] = 3;
        assert_eq!(
            select_module_level(&info, &tee).unwrap().unwrap().1.status,
            OutOfDate
        );
        tee[0] = 1;
        assert_eq!(
            select_module_level(&info, &tee).unwrap_err().kind(),
            crate::ErrorKind::TcbNotMatched
        );
        tee[1] = 3;
        assert_eq!(
            select_module_level(&info, &tee).unwrap_err().kind(),
            crate::ErrorKind::PolicyMismatch
        );
    }

    // TDRelaunchCheck rows: relaunch advised only when QE is fine, SGX level acceptable, TDX
    // and module out of date, and TEE_TCB_SVN2 reaches the latest level.
    #[test]
    fn td_relaunch_rows() {
        let info = tdx_info();
        let mut svn2 = [0u8; 16];
        svn2[0] = 5;
        svn2[2] = 3;
        let base = |qe, sgx, tdx, module, svn2: &[u8; 16]| {
            td_relaunch(&RelaunchInput {
                info: &info,
                qe,
                sgx_status: sgx,
                tdx_status: tdx,
                module_status: module,
                tee_tcb_svn2: &svn2.clone(),
            })
            .unwrap()
        };
        assert_eq!(
            base(QeStatus::Ok, UpToDate, OutOfDate, Some(OutOfDate), &svn2),
            Some(TDRelaunchAdvised)
        );
        assert_eq!(
            base(
                QeStatus::Ok,
                ConfigurationNeeded,
                OutOfDate,
                Some(OutOfDate),
                &svn2
            ),
            Some(TDRelaunchAdvisedConfigurationNeeded)
        );
        assert_eq!(
            base(
                QeStatus::Ok,
                UpToDate,
                OutOfDateConfigurationNeeded,
                Some(OutOfDate),
                &svn2
            ),
            Some(TDRelaunchAdvisedConfigurationNeeded)
        );
        assert_eq!(
            base(
                QeStatus::OutOfDate,
                UpToDate,
                OutOfDate,
                Some(OutOfDate),
                &svn2
            ),
            None
        );
        assert_eq!(
            base(
                QeStatus::Revoked,
                UpToDate,
                OutOfDate,
                Some(OutOfDate),
                &svn2
            ),
            None
        );
        assert_eq!(
            base(QeStatus::Ok, OutOfDate, OutOfDate, Some(OutOfDate), &svn2),
            None
        );
        assert_eq!(
            base(QeStatus::Ok, UpToDate, UpToDate, Some(OutOfDate), &svn2),
            None
        );
        assert_eq!(
            base(QeStatus::Ok, UpToDate, OutOfDate, Some(UpToDate), &svn2),
            None
        );
        assert_eq!(base(QeStatus::Ok, UpToDate, OutOfDate, None, &svn2), None);
        let mut low = svn2;
        low[2] = 2;
        assert_eq!(
            base(QeStatus::Ok, UpToDate, OutOfDate, Some(OutOfDate), &low),
            None
        );
        // Module major version set: compare with the TDX_01 identity's latest level (4).
        let mut v = [0u8; 16];
        v[0] = 4;
        v[1] = 1;
        v[2] = 3;
        assert_eq!(
            base(QeStatus::Ok, UpToDate, OutOfDate, Some(OutOfDate), &v),
            Some(TDRelaunchAdvised)
        );
        v[0] = 3;
        assert_eq!(
            base(QeStatus::Ok, UpToDate, OutOfDate, Some(OutOfDate), &v),
            None
        );
        // A module version without a TDX_xx identity is refused, not "no relaunch".
        v[1] = 2;
        let e = td_relaunch(&RelaunchInput {
            info: &info,
            qe: QeStatus::Ok,
            sgx_status: UpToDate,
            tdx_status: OutOfDate,
            module_status: Some(OutOfDate),
            tee_tcb_svn2: &v,
        })
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::TcbNotMatched, "{e}");
        assert!(e.to_string().contains("TDX_02"), "{e}");
    }
}
