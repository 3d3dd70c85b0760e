//! `walden verify`: source and lake compared at one LSN, printed per table.

use anyhow::{Result, bail};
use walden_replicate::{TableReport, VerifyOptions, VerifyReport};

use crate::config::Config;

/// What `walden verify` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct VerifyArgs {
    /// Source tables (`schema.name`) to compare; empty: every replicated table.
    pub tables: Vec<String>,
    /// Differing rows listed per table at most.
    pub max_keys: usize,
}

/// Brings the lake to the source's current LSN through the replication slot (which must
/// be free: `walden replicate` stopped) and compares every replicated table there.
/// Ctrl-C / SIGTERM stop it; what the lake committed on the way stays committed.
pub async fn run_verify(config: &Config, args: &VerifyArgs) -> Result<VerifyReport> {
    let source = config.source()?;
    let lake = crate::open_existing_lake(config)?;
    let conn = source.connection()?;
    for t in &args.tables {
        if t.split('.').count() != 2 || t.split('.').any(str::is_empty) {
            bail!("--table {t:?}: name a table as schema.name (e.g. public.orders)");
        }
    }
    let options = VerifyOptions {
        stream: crate::stream_options(config, source)?,
        discover: source.discover_options()?,
        tables: args.tables.clone(),
        max_keys: args.max_keys,
    };
    Ok(walden_replicate::verify(&conn, &lake, &options, crate::stop_on_signals()).await?)
}

/// Prints the report: one line per table, the listed differences under it, and what to do
/// when something differs. Returns whether everything matches.
pub fn print_verify(report: &VerifyReport) -> bool {
    let lsn = walden_pg::format_lsn(report.lsn);
    if report.lake_lsn_before == report.lsn {
        println!("compared source and lake at LSN {lsn}");
    } else {
        println!(
            "compared source and lake at LSN {lsn} (the lake was brought there from {})",
            walden_pg::format_lsn(report.lake_lsn_before)
        );
    }
    let width = report
        .tables
        .iter()
        .map(|t| t.table.len())
        .max()
        .unwrap_or(0)
        .max(5);
    println!(
        "{:<width$} {:>12} {:>12}  result",
        "table", "source rows", "lake rows"
    );
    for t in &report.tables {
        let (source_rows, lake_rows) = match t.not_comparable {
            Some(_) => ("-".to_string(), "-".to_string()),
            None => (t.source_rows.to_string(), t.lake_rows.to_string()),
        };
        println!(
            "{:<width$} {source_rows:>12} {lake_rows:>12}  {}",
            t.table,
            outcome(t)
        );
        for d in &t.differences {
            let count = if d.count > 1 {
                format!(" (x{})", d.count)
            } else {
                String::new()
            };
            let detail = d
                .detail
                .as_ref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            println!("    {}: {}{count}{detail}", d.kind.describe(), d.key);
        }
        let listed: u64 = t.differences.iter().map(|d| d.count).sum();
        let total = t.missing_in_lake + t.extra_in_lake + t.different_values;
        if total > listed {
            println!("    ... and {} more", total - listed);
        }
    }
    let differing = report.differing().count();
    if differing == 0 {
        println!("all {} tables match at LSN {lsn}", report.tables.len());
        true
    } else {
        println!("{}", differs_hint(report));
        false
    }
}

fn outcome(t: &TableReport) -> String {
    if let Some(why) = &t.not_comparable {
        return format!("DIFFERS: {why}");
    }
    if t.matches {
        return "OK".into();
    }
    let mut parts = Vec::new();
    for (n, what) in [
        (t.missing_in_lake, "missing in lake"),
        (t.extra_in_lake, "extra in lake"),
        (t.different_values, "with different values"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    format!("DIFFERS: {}", parts.join(", "))
}

/// What differs and what to do about it.
pub fn differs_hint(report: &VerifyReport) -> String {
    format!(
        "{} of {} tables differ at LSN {}. `walden replicate --resync` copies every table \
         again (the lake keeps serving the old copy until the new one commits)",
        report.differing().count(),
        report.tables.len(),
        walden_pg::format_lsn(report.lsn)
    )
}

/// The report as JSON (LSNs in Postgres' text form).
pub fn print_verify_json(report: &VerifyReport) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
}
