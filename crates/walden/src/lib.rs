//! The `walden` command: configuration, the commands, and the quickstart. The only crate
//! that sees every other one.

// A command-line tool: messages for the user go to stdout/stderr directly.
#![allow(clippy::print_stderr)]

pub mod config;
pub mod models;
pub mod output;
pub mod progress;
pub mod quickstart;
pub mod serve;
pub mod verify;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use walden_lake::Lake;
use walden_pg::{CheckInput, CheckReport, Severity};
use walden_query::QueryEngine;
use walden_replicate::{StreamOptions, SyncOptions, SyncOutcome};

use crate::config::Config;

/// Runs the source preflight and returns the report.
pub async fn run_check(config: &Config) -> Result<CheckReport> {
    let source = config.source()?;
    let conn = source.connection()?;
    let client = conn.connect().await?;
    let selector = source.selector()?;
    let discover = source.discover_options()?;
    Ok(walden_pg::check(
        &client,
        &CheckInput {
            selector: &selector,
            discover: &discover,
            slot: &source.slot,
            publication: &source.publication,
        },
    )
    .await?)
}

/// Prints a check report; returns whether it passed.
pub fn print_check(report: &CheckReport) -> bool {
    for f in &report.findings {
        let mark = match f.severity {
            Severity::Ok => "ok  ",
            Severity::Warning => "warn",
            Severity::Error => "FAIL",
        };
        println!("{mark} {}: {}", f.subject, f.message);
        if let Some(fix) = f.fix.as_ref().filter(|_| f.severity != Severity::Ok) {
            println!("       fix: {fix}");
        }
    }
    let errors = report.errors().count();
    if errors == 0 {
        println!(
            "\nthe source is ready for walden ({} tables)",
            report.tables.len()
        );
        true
    } else {
        println!(
            "\n{errors} problem{} must be fixed before walden can replicate",
            if errors == 1 { "" } else { "s" }
        );
        false
    }
}

/// Serves Prometheus metrics at `http://<[serve] http_listen>/metrics` (replication lag in
/// bytes and seconds, changes per table, commits, flush durations, retained WAL, buffered
/// bytes, row-index memory, reconnects). A listener that cannot start is a warning, not a
/// failure: replication matters more than its metrics.
pub fn serve_metrics(config: &Config) {
    let addr = &config.serve.http_listen;
    let parsed: std::result::Result<std::net::SocketAddr, _> = addr.parse();
    let result = parsed
        .map_err(|e| format!("[serve] http_listen = {addr:?} is not an address: {e}"))
        .and_then(|addr| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .with_http_listener(addr)
                .install()
                .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))
        });
    match result {
        Ok(()) => tracing::info!(%addr, "metrics at /metrics"),
        Err(e) => tracing::warn!("{e}; replicating without metrics"),
    }
}

/// What `walden replicate` was asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicateArgs {
    /// Return once the lake holds the source's state as of the start.
    pub until_caught_up: bool,
    /// Drop the slot and copy every table again (the lake's tables are replaced
    /// atomically when the copy commits; readers see the old copy until then).
    pub resync: bool,
    pub show_progress: bool,
}

/// Turns SIGINT/SIGTERM into a stop request; a second signal exits at once (the lake
/// stays consistent: every commit is atomic, the next start resumes from it).
fn stop_on_signals() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    forward_signals(tx);
    rx
}

/// Sends `true` on `tx` at the first SIGINT/SIGTERM; exits the process at the second.
pub(crate) fn forward_signals(tx: tokio::sync::watch::Sender<bool>) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        for n in 0.. {
            let terminate = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_err() { return },
                _ = terminate => {}
            }
            if n > 0 {
                eprintln!("second stop signal: exiting now");
                std::process::exit(130);
            }
            tracing::warn!("stop requested: finishing the current flush");
            let _ = tx.send(true);
        }
    });
}

/// Replication: the initial copy when the lake has none (preflight first), then
/// streaming until stopped or, with `until_caught_up`, until the lake reaches the source's
/// position at the start.
pub async fn run_replicate(config: &Config, args: ReplicateArgs) -> Result<()> {
    replicate_until(config, args, stop_on_signals()).await
}

/// [`run_replicate`], stopping when `cancel` turns true.
pub async fn replicate_until(
    config: &Config,
    args: ReplicateArgs,
    cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let source = config.source()?;
    // Local problems first: a lake we cannot write must not cost the source anything.
    let lake = Lake::open(&config.lake.warehouse)?;
    let conn = source.connection()?;
    if args.resync {
        let dropped = walden_replicate::prepare_resync(&conn, &lake, &source.slot).await?;
        println!(
            "re-sync: {}; copying every table again",
            if dropped {
                format!("dropped slot {}", source.slot)
            } else {
                format!("slot {} did not exist", source.slot)
            }
        );
    }
    let synced = lake
        .progress(&source.slot)?
        .and_then(|p| {
            p.state
                .get("phase")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .is_some_and(|phase| phase == "streaming");
    if !synced {
        let outcome = initial_sync(config, args.show_progress, cancel.clone()).await?;
        print_sync(&outcome, &config.lake.warehouse);
    }
    if *cancel.borrow() {
        return Ok(());
    }
    let options = StreamOptions {
        until_caught_up: args.until_caught_up,
        ..stream_options(config, source)?
    };
    if !args.until_caught_up {
        println!(
            "streaming changes from slot {} (Ctrl-C or SIGTERM to stop)",
            source.slot
        );
    }
    let outcome = walden_replicate::stream(&conn, &lake, &options, cancel).await?;
    println!(
        "{} at LSN {}",
        if outcome.caught_up {
            "caught up: the lake holds the source"
        } else {
            "stopped: the lake is committed and acknowledged"
        },
        walden_pg::format_lsn(outcome.lsn)
    );
    Ok(())
}

/// Streaming as configured (runs until stopped).
fn stream_options(config: &Config, source: &config::SourceSection) -> Result<StreamOptions> {
    Ok(StreamOptions {
        slot: source.slot.clone(),
        publication: source.publication.clone(),
        flush_interval: std::time::Duration::from_millis(config.lake.flush_interval_ms),
        spill_bytes: config.lake.max_buffer_bytes as usize,
        writer: writer_options(config),
        heartbeat_interval: (source.heartbeat_interval_ms > 0)
            .then(|| std::time::Duration::from_millis(source.heartbeat_interval_ms)),
        retained_wal_warn_bytes: source.retained_wal_warn_bytes,
        discover: source.discover_options()?,
        copy_parallelism: source.copy_parallelism,
        tables: source.tables.clone(),
        discovery_interval: std::time::Duration::from_millis(
            source.table_discovery_interval_ms.max(100),
        ),
        maintenance: walden_replicate::MaintenanceOptions {
            interval: (config.lake.maintenance_interval_ms > 0)
                .then(|| std::time::Duration::from_millis(config.lake.maintenance_interval_ms)),
            snapshot_retention: std::time::Duration::from_millis(config.lake.snapshot_retention_ms),
            small_file_bytes: config.lake.target_file_size_bytes / 4,
            sort_budget_bytes: config.lake.compaction_sort_bytes,
            ..Default::default()
        },
        ..Default::default()
    })
}

/// The initial copy alone (preflight first); Ctrl-C / SIGTERM stop it cleanly, dropping
/// its slot. With a completed copy in the lake, it copies nothing and says so.
pub async fn run_initial_sync(config: &Config, show_progress: bool) -> Result<SyncOutcome> {
    initial_sync(config, show_progress, stop_on_signals()).await
}

async fn initial_sync(
    config: &Config,
    show_progress: bool,
    cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<SyncOutcome> {
    let source = config.source()?;
    let lake = Lake::open(&config.lake.warehouse)?;
    let report = run_check(config).await?;
    if report.has_errors() {
        print_check(&report);
        bail!("the source failed the preflight (see above); nothing was changed");
    }
    let observer: Arc<dyn walden_replicate::SyncObserver> = if show_progress {
        Arc::new(progress::Bars::default())
    } else {
        Arc::new(walden_replicate::Quiet)
    };
    let options = SyncOptions {
        slot: source.slot.clone(),
        publication: source.publication.clone(),
        parallelism: source.copy_parallelism,
        part_bytes: source.copy_part_bytes.max(1),
        writer: writer_options(config),
        observer,
        ..Default::default()
    };
    let conn = source.connection()?;
    Ok(walden_replicate::initial_sync(&conn, &lake, report.tables, &options, cancel).await?)
}

fn writer_options(config: &Config) -> walden_lake::WriterOptions {
    walden_lake::WriterOptions {
        target_file_size_bytes: config.lake.target_file_size_bytes,
        ..Default::default()
    }
}

pub fn print_sync(outcome: &SyncOutcome, warehouse: &Path) {
    let lsn = walden_pg::format_lsn(outcome.lsn);
    if outcome.already_synced {
        println!(
            "nothing to copy: the lake at {} already holds the initial sync at LSN {lsn}",
            warehouse.display()
        );
        return;
    }
    let rows: u64 = outcome.tables.iter().map(|(_, n)| n).sum();
    println!(
        "copied {} tables ({rows} rows) into {} as of LSN {lsn}",
        outcome.tables.len(),
        warehouse.display()
    );
    for (name, n) in &outcome.tables {
        println!("  {:<40} {n:>12} rows", name.to_string());
    }
}

/// Opens an existing lake (never creates one for a read).
pub fn open_existing_lake(config: &Config) -> Result<Lake> {
    let w = &config.lake.warehouse;
    if !w.join("catalog.db").exists() {
        bail!(
            "no lake at {}: run `walden replicate` first (or set [lake] warehouse)",
            w.display()
        );
    }
    Ok(Lake::open(w)?)
}

pub async fn run_query(config: &Config, sql: &str, format: output::Format) -> Result<()> {
    let lake = open_existing_lake(config)?;
    let batches = QueryEngine::new(lake)
        .sql(sql)
        .await
        .context("query failed")?;
    output::print(&batches, format)
}

/// Replication progress, per-table rows and files, and the source side: lag in bytes and
/// time, the slot's confirmed position and the WAL it retains.
pub async fn run_status(config: &Config) -> Result<()> {
    let lake = open_existing_lake(config)?;
    let slot = config
        .source
        .as_ref()
        .map(|s| s.slot.clone())
        .unwrap_or_else(|| "walden".into());
    let progress = lake.progress(&slot)?;
    match &progress {
        Some(p) => {
            let when = chrono::DateTime::from_timestamp_millis(p.committed_at_ms)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            let age = (chrono::Utc::now().timestamp_millis() - p.committed_at_ms).max(0);
            let phase = p.state.get("phase").and_then(|v| v.as_str()).unwrap_or("?");
            println!(
                "slot {slot}: {phase}, lake at LSN {} (last commit {when}, {:.1} s ago)",
                walden_pg::format_lsn(p.lsn),
                age as f64 / 1000.0
            );
        }
        None => println!("slot {slot}: no replication recorded in this lake"),
    }
    println!(
        "{:<40} {:>14} {:>8} {:>8}",
        "table", "rows", "files", "deletes"
    );
    for name in lake.list_tables()? {
        let Some(t) = lake.load_table(&name).await? else {
            continue;
        };
        let get = |k: &str| -> u64 {
            t.snapshot_property(k)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        println!(
            "{:<40} {:>14} {:>8} {:>8}",
            name.to_string(),
            get("total-records").saturating_sub(get("total-position-deletes")),
            get("total-data-files"),
            get("total-delete-files")
        );
    }
    if let Some(source) = &config.source {
        let conn = source.connection()?;
        match conn.connect().await {
            Ok(client) => {
                let current: String = client
                    .query_one("SELECT pg_current_wal_lsn()::text", &[])
                    .await?
                    .get(0);
                let current = walden_pg::parse_lsn(&current).unwrap_or(0);
                if let Some(p) = &progress {
                    println!(
                        "source at LSN {}: the lake is {} bytes of WAL behind",
                        walden_pg::format_lsn(current),
                        current.saturating_sub(p.lsn)
                    );
                }
                match walden_pg::slot_info(&client, &source.slot).await? {
                    Some(info) => println!(
                        "source slot {}: confirmed flush {}, retains {} bytes of WAL, wal_status {}",
                        source.slot,
                        info.confirmed_flush_lsn
                            .map(walden_pg::format_lsn)
                            .unwrap_or_else(|| "-".into()),
                        info.restart_lsn
                            .map(|r| current.saturating_sub(r))
                            .unwrap_or(0),
                        info.wal_status.unwrap_or_else(|| "-".into())
                    ),
                    None => println!("source slot {}: does not exist", source.slot),
                }
            }
            Err(e) => println!("source: unreachable ({e})"),
        }
    }
    Ok(())
}

pub async fn run_teardown(config: &Config, lake_tables: bool) -> Result<()> {
    let source = config.source()?;
    let conn = source.connection()?;
    let lake = Lake::open(&config.lake.warehouse)?;
    let (slot, publication, forgotten) =
        walden_replicate::teardown(&conn, &lake, &source.slot, &source.publication, lake_tables)
            .await?;
    println!(
        "slot {}: {}",
        source.slot,
        if slot { "dropped" } else { "did not exist" }
    );
    println!(
        "publication {}: {}",
        source.publication,
        if publication {
            "dropped"
        } else {
            "did not exist"
        }
    );
    if lake_tables {
        println!("removed {forgotten} tables from the lake's catalog (their files stay on disk)");
    } else {
        println!("the lake's tables stay readable; a new `walden replicate` re-syncs them");
    }
    Ok(())
}
