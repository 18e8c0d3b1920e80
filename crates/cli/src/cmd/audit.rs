//! `coffer audit …`: read a Coordinator's audit log and check its hash chain (role
//! `audit: read`).

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::cmd::client::{connect, remote, runtime, ConnectArgs, IdentityArgs};
use crate::output::{print_json, Failure};
use crate::Global;

/// `coffer audit --help`: examples across the subcommands.
pub(crate) const GROUP_HELP: &str = "EXAMPLES:
    Check the whole log's hash chain, then read records (a user with role `audit: read`):
        coffer audit verify --cert auditor.pem --key auditor-key.pem --root-ca root-ca.pem
        coffer audit log --after 120 --limit 20 --cert auditor.pem --key auditor-key.pem \\
            --root-ca root-ca.pem";

/// Subcommands of `coffer audit`.
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCmd {
    /// Print audit records (every decision the Coordinator made, with its reason).
    #[command(after_help = "EXAMPLES:
    coffer audit log --cert auditor.pem --key auditor-key.pem --root-ca root-ca.pem
    coffer audit log --after 120 --limit 20 --cert auditor.pem --key auditor-key.pem \\
        --root-ca root-ca.pem
    coffer --json audit log --cert auditor.pem --key auditor-key.pem --root-ca root-ca.pem")]
    Log(LogArgs),
    /// Read the whole log and check its hash chain against the Coordinator's state head.
    #[command(after_help = "EXAMPLES:
    coffer audit verify --cert auditor.pem --key auditor-key.pem --root-ca root-ca.pem

Every record names the chain hash of the one before it; the last one must hash to the audit head
of the Coordinator's authenticated state. A dropped, reordered or edited record breaks the chain.
Breaks that the recovery-key holders accepted when they re-authenticated a tampered state are
listed (a `state-reauthenticated` record names them); any other break fails the check.
Exit status 0 when the chain holds, 1 when it does not.")]
    Verify(VerifyArgs),
}

/// `coffer audit log`.
#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Only records after this sequence number.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// At most this many records (1..=1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    limit: u64,
    #[command(flatten)]
    id: IdentityArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// `coffer audit verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    id: IdentityArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Runs `coffer audit …`.
pub(crate) fn run(cmd: AuditCmd, global: Global) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Log(a) => log(a, global),
        AuditCmd::Verify(a) => verify(a, global),
    }
}

fn log(a: LogArgs, global: Global) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let r: coffer_api::AuditResponse = rt.block_on(async {
        let mut c = connect(&a.connect, Some(&a.id)).await?;
        c.get(&format!(
            "/api/v1/audit?after={}&limit={}",
            a.after, a.limit
        ))
        .await
        .map_err(remote)
    })?;
    if global.json {
        print_json(&r)?;
        return Ok(ExitCode::SUCCESS);
    }
    for rec in &r.records {
        let mut line = format!("{:>6} {} {} {}", rec.seq, rec.time, rec.event, rec.outcome);
        for (k, v) in [
            ("workload", &rec.workload),
            ("instance", &rec.instance),
            ("user", &rec.user),
        ] {
            if let Some(v) = v {
                line.push_str(&format!(" {k}={v}"));
            }
        }
        if let Some(d) = &rec.detail {
            line.push_str(&format!(" — {d}"));
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(a: VerifyArgs, global: Global) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let (head, records) = rt.block_on(async {
        let mut c = connect(&a.connect, Some(&a.id)).await?;
        // The head first: records appended after it are not part of this check.
        let status: coffer_api::StatusResponse = c.get("/api/v1/status").await.map_err(remote)?;
        let head = status.state_head.ok_or_else(|| {
            Failure::new(
                "tampered",
                match status.tamper {
                    Some(t) => format!(
                        "the Coordinator serves no verified state: TAMPERED ({})",
                        t.findings.join("; ")
                    ),
                    None => "the Coordinator serves no verified state (recovery mode)".into(),
                },
            )
        })?;
        let mut records = Vec::new();
        let mut after = 0;
        while after < head.audit_seq {
            let page: coffer_api::AuditResponse = c
                .get(&format!(
                    "/api/v1/audit?after={after}&limit={}",
                    coffer_api::chain::MAX_PAGE
                ))
                .await
                .map_err(remote)?;
            let Some(last) = page.records.last() else {
                break;
            };
            after = last.seq;
            records.extend(page.records.into_iter().filter(|r| r.seq <= head.audit_seq));
        }
        Ok::<_, anyhow::Error>((head, records))
    })?;
    let check = coffer_api::verify_audit(&records)
        .map_err(|e| Failure::new("broken_chain", format!("the audit chain is broken: {e}")))?;
    let last = records.last().map_or(0, |r| r.seq);
    if last != head.audit_seq || check.head != head.audit_head {
        return Err(Failure::new(
            "broken_chain",
            format!(
                "the audit log ends at record {last} ({}) but the Coordinator's state head says record {} ({})",
                hex::encode(check.head),
                head.audit_seq,
                hex::encode(head.audit_head)
            ),
        )
        .into());
    }
    if global.json {
        print_json(&serde_json::json!({
            "verified": true,
            "records": check.records,
            "head": hex::encode(check.head),
            "acknowledged_breaks": check.acknowledged_breaks,
        }))?;
    } else {
        println!(
            "audit chain verified: {} records, head {}",
            check.records,
            hex::encode(check.head)
        );
        for b in &check.acknowledged_breaks {
            println!(
                "  break before record {b}, accepted by the recovery-key holders' re-authentication"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
