//! `walden-bench freshness`: how long after its commit a source transaction is visible in
//! the lake, under a steady write load.
//!
//! pgbench runs its built-in TPC-B-like script at a fixed rate (`-R`). A probe client
//! commits one row into `walden_probe` every `probe_interval` with `synchronous_commit =
//! on`, and records when its COMMIT returned and the end LSN of its commit record. That LSN
//! is exact: the probe reads its xid and the insert position inside the transaction, and
//! after the commit finds its own commit record in the WAL with `pg_walinspect`.
//! (`pg_current_wal_lsn()` after COMMIT would be only an upper bound: pgbench's records
//! written meanwhile are in it.)
//!
//! walden side: the probe is visible when the lake's committed progress LSN reaches that
//! end LSN. The progress is committed in the same catalog transaction as the tables'
//! metadata pointers (what any reader of the lake sees), it is always the end LSN of the
//! last source transaction in the lake (or a keepalive position, taken only with nothing
//! buffered), and transactions reach the lake in commit order: so `progress >= end LSN`
//! holds from exactly the lake commit that made the probe's row readable. A thread reads
//! it (`Lake::progress`, one SQLite row) every 10 ms.
//!
//! Baseline, in the same run on the same load: `pg_recvlogical` on its own pgoutput slot
//! (same publication, protocol 1) writing what it receives to a file, which a second
//! thread scans for the probes' markers every 10 ms. That is the lag of logical decoding
//! itself, which no consumer can beat.
//!
//! Lag = the poller's time of the first observation − the time COMMIT returned to the
//! probe; both pollers add up to 10 ms of polling granularity (5 ms on average).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use walden_testkit::{LocalPgOptions, LocalPostgres};

use crate::{bench_config, log_field, median, peak_rss, percentile, spawn_walden};

/// How often the pollers look.
const POLL: Duration = Duration::from_millis(10);
/// A probe's marker: `PROBE` and 8 digits, found verbatim in pgoutput's text-format tuple.
const MARKER_LEN: usize = 13;

pub(crate) struct Options {
    pub scale: u32,
    pub rate: u32,
    pub clients: u32,
    pub seconds: u64,
    pub warmup: u64,
    pub probe_interval: Duration,
    pub maintenance_interval_ms: u64,
    pub runs: usize,
}

/// One probe transaction.
struct Probe {
    n: i64,
    /// When its COMMIT returned, seconds since the run's start.
    committed: f64,
    /// The end LSN of its commit record.
    end_lsn: u64,
}

/// Lag percentiles of one side of one run, in seconds.
#[derive(Clone, Copy)]
struct Lags {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Lags {
    fn of(v: &[f64]) -> Self {
        Self {
            p50: percentile(v, 0.50),
            p95: percentile(v, 0.95),
            p99: percentile(v, 0.99),
            max: percentile(v, 1.0),
        }
    }

    fn median(runs: &[Lags]) -> Self {
        let m = |f: fn(&Lags) -> f64| median(runs.iter().map(f).collect());
        Self {
            p50: m(|l| l.p50),
            p95: m(|l| l.p95),
            p99: m(|l| l.p99),
            max: m(|l| l.max),
        }
    }
}

struct RunResult {
    tps: f64,
    probes: usize,
    walden: Lags,
    baseline: Lags,
    /// Probes in the warm-up: the worst lag of walden and of the baseline.
    warmup_max: (f64, f64),
    /// Lake commits of the run (from walden's log): median and max milliseconds.
    flush_ms: (f64, f64),
    /// Compaction steps during the run and the longest one, ms.
    compactions: (usize, f64),
    /// Row-index builds (table, rows, milliseconds).
    index_builds: Vec<(String, u64, u64)>,
    peak_rss: u64,
}

pub(crate) async fn run(o: &Options, walden: &Path) -> Result<()> {
    let pg = LocalPostgres::start(LocalPgOptions {
        data_dir: None,
        settings: vec![("shared_buffers".into(), "1GB".into())],
    })?;
    let url = pg.create_database("bench").await?;
    let client = pg.connect("bench").await?;
    eprintln!("pgbench -i -s {} ...", o.scale);
    let status = Command::new(pg.bin_dir().join("pgbench"))
        .args(["-i", "-q", "-s", &o.scale.to_string(), &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("pgbench -i failed");
    }
    client
        .batch_execute(
            "ALTER TABLE pgbench_history REPLICA IDENTITY FULL;
             CREATE TABLE walden_probe (
                 id int8 PRIMARY KEY, marker text NOT NULL, at timestamptz NOT NULL DEFAULT now());
             CREATE EXTENSION pg_walinspect;",
        )
        .await?;

    let mut results = Vec::new();
    for run in 0..o.runs {
        let r = one_run(&pg, &url, o, walden).await?;
        eprintln!(
            "run {}: pgbench {:.1} TPS, {} probes; lag p50/p95/p99/max: walden {}, \
             pg_recvlogical {}; warm-up max: walden {:.3}, pg_recvlogical {:.3}; \
             lake commits median {:.0} ms, max {:.0} ms; index builds {:?}; peak RSS {:.0} MiB",
            run + 1,
            r.tps,
            r.probes,
            fmt_lags(&r.walden),
            fmt_lags(&r.baseline),
            r.warmup_max.0,
            r.warmup_max.1,
            r.flush_ms.0,
            r.flush_ms.1,
            r.index_builds,
            r.peak_rss as f64 / 1048576.0
        );
        results.push(r);
    }

    let tps: Vec<f64> = results.iter().map(|r| r.tps).collect();
    let w = Lags::median(&results.iter().map(|r| r.walden).collect::<Vec<_>>());
    let b = Lags::median(&results.iter().map(|r| r.baseline).collect::<Vec<_>>());
    let per_run = |f: fn(&RunResult) -> f64| {
        results
            .iter()
            .map(|r| format!("{:.3}", f(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "freshness under pgbench -s {} -R {} -c {}: {} s measured after {} s of warm-up, a probe \
         every {} ms, {} runs, medians:",
        o.scale,
        o.rate,
        o.clients,
        o.seconds,
        o.warmup,
        o.probe_interval.as_millis(),
        o.runs
    );
    println!(
        "  pgbench achieved:               {:>9.1} TPS (runs: {})",
        median(tps),
        per_run(|r| r.tps)
    );
    println!("  commit -> visible, seconds:          p50      p95      p99      max");
    println!("  pg_recvlogical (own slot):      {}", fmt_row(&b));
    println!("  walden (lake progress):         {}", fmt_row(&w));
    println!(
        "  walden p50 by run:              {}",
        per_run(|r| r.walden.p50)
    );
    println!(
        "  walden p99 by run:              {}",
        per_run(|r| r.walden.p99)
    );
    println!(
        "  walden lake commits:            median {:.0} ms, max {:.0} ms (median over runs)",
        median(results.iter().map(|r| r.flush_ms.0).collect()),
        median(results.iter().map(|r| r.flush_ms.1).collect())
    );
    println!(
        "  compaction steps under load:    {} (longest, ms: {})",
        per_run(|r| r.compactions.0 as f64),
        per_run(|r| r.compactions.1)
    );
    println!(
        "  warm-up worst lag (not above):  walden {}, pg_recvlogical {}",
        per_run(|r| r.warmup_max.0),
        per_run(|r| r.warmup_max.1)
    );
    println!(
        "  walden peak RSS:                {:>9.0} MiB (max over runs)",
        results.iter().map(|r| r.peak_rss).max().unwrap_or(0) as f64 / 1048576.0
    );
    Ok(())
}

fn fmt_lags(l: &Lags) -> String {
    format!("{:.3}/{:.3}/{:.3}/{:.3}", l.p50, l.p95, l.p99, l.max)
}

fn fmt_row(l: &Lags) -> String {
    format!(
        "{:>8.3} {:>8.3} {:>8.3} {:>8.3}",
        l.p50, l.p95, l.p99, l.max
    )
}

/// One run: a fresh lake (initial copy), then walden streaming and pg_recvlogical
/// receiving while pgbench and the probes write.
async fn one_run(pg: &LocalPostgres, url: &str, o: &Options, walden: &Path) -> Result<RunResult> {
    let client = pg.connect("bench").await?;
    let (dir, cfg) = bench_config(url)?;
    let text = std::fs::read_to_string(&cfg)?.replace(
        "[lake]\n",
        &format!(
            "[lake]\nmaintenance_interval_ms = {}\nsnapshot_retention_ms = 60000\n",
            o.maintenance_interval_ms
        ),
    );
    std::fs::write(&cfg, text)?;
    let cfg_arg = cfg.to_str().unwrap_or_default().to_string();
    eprintln!("initial copy ...");
    crate::catch_up(walden, &cfg_arg)?;
    // The baseline's own slot (walden's publication exists now).
    crate::fresh_recv_slot(&client).await?;
    let recv_out = dir.join("recv.out");
    let mut recv = Command::new(pg.bin_dir().join("pg_recvlogical"))
        .args([
            "-d",
            url,
            "--slot",
            "bench_recv",
            "--start",
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=bench",
            // No fsync: the file is only watched.
            "-F",
            "0",
            "-f",
        ])
        .arg(&recv_out)
        .stdout(Stdio::null())
        // PostgreSQL 15's pg_recvlogical reports its stop by SIGINT as an "unexpected
        // termination"; kept out of the bench's output.
        .stderr(std::fs::File::create(dir.join("recv.log"))?)
        .spawn()?;
    let log = dir.join("walden.log");
    let mut streamer = spawn_walden(
        walden,
        &[
            "--config",
            &cfg_arg,
            "--log",
            "warn,walden_replicate=debug",
            "replicate",
            "--quiet",
        ],
        Some(&log),
    )?;

    // Both consumers attached.
    let t = Instant::now();
    loop {
        let active: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_replication_slots
                  WHERE slot_name IN ('bench', 'bench_recv') AND active",
                &[],
            )
            .await?
            .get(0);
        if active == 2 {
            break;
        }
        if let Some(s) = streamer.try_wait()? {
            bail!("walden exited ({s}); its log: {}", log.display());
        }
        if let Some(s) = recv.try_wait()? {
            bail!("pg_recvlogical exited ({s})");
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the consumers did not start within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Mutex::new(Vec::<(f64, u64)>::new()));
    let received = Arc::new(Mutex::new(Vec::<(i64, f64)>::new()));
    let lake_poller = poll_lake(
        dir.join("lake"),
        base,
        stop.clone(),
        progress.clone(),
        streamer.id(),
    );
    let recv_poller = poll_recv(recv_out, base, stop.clone(), received.clone());

    let total = o.warmup + o.seconds;
    let pgbench = Command::new(pg.bin_dir().join("pgbench"))
        .args([
            "-n",
            "-c",
            &o.clients.to_string(),
            "-j",
            &o.clients.min(2).to_string(),
            "-R",
            &o.rate.to_string(),
            "-T",
            &total.to_string(),
            url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pgbench = tokio::task::spawn_blocking(move || pgbench.wait_with_output());
    let probes = probe(pg, base, Duration::from_secs(total), o.probe_interval).await?;
    let out = pgbench.await??;
    if !out.status.success() {
        bail!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tps = parse_tps(&String::from_utf8_lossy(&out.stdout))?;

    // Every probe visible on both sides (or 60 s).
    let last = probes.last().map_or(0, |p| p.end_lsn);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        let lake_done = lock(&progress).last().is_some_and(|&(_, lsn)| lsn >= last);
        let recv_done = lock(&received).len() >= probes.len();
        if lake_done && recv_done {
            break;
        }
        if let Some(s) = streamer.try_wait()? {
            bail!("walden exited ({s}); its log: {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let peak = join(lake_poller)?;
    join(recv_poller)?;
    let stopped = interrupt(&mut streamer, "walden")?;
    if !stopped.success() {
        bail!("walden failed ({stopped}); its log: {}", log.display());
    }
    interrupt(&mut recv, "pg_recvlogical")?;

    // Lags.
    let progress = std::mem::take(&mut *lock(&progress));
    let received: HashMap<i64, f64> = std::mem::take(&mut *lock(&received)).into_iter().collect();
    let (mut w, mut b) = (Vec::new(), Vec::new());
    let (mut warm_w, mut warm_b) = (f64::NAN, f64::NAN);
    let mut missing = (0, 0);
    for p in &probes {
        let i = progress.partition_point(|&(_, lsn)| lsn < p.end_lsn);
        let lake = progress.get(i).map(|&(t, _)| t - p.committed);
        let recv = received.get(&p.n).map(|&t| t - p.committed);
        if lake.is_none() {
            missing.0 += 1;
        }
        if recv.is_none() {
            missing.1 += 1;
        }
        if p.committed < o.warmup as f64 {
            warm_w = lake.map_or(warm_w, |l| l.max(warm_w));
            warm_b = recv.map_or(warm_b, |l| l.max(warm_b));
        } else {
            w.extend(lake);
            b.extend(recv);
        }
    }
    if missing != (0, 0) {
        bail!(
            "probes never seen within 60 s after the load: {} in the lake, {} by pg_recvlogical",
            missing.0,
            missing.1
        );
    }

    // walden's own account: lake commits and row-index builds.
    let text = std::fs::read_to_string(&log)?;
    let mut flushes = Vec::new();
    let mut index_builds = Vec::new();
    let mut compactions = Vec::new();
    for line in text.lines() {
        if line.contains(" compacted ") {
            compactions.extend(log_field(line, "elapsed_ms").and_then(|v| v.parse::<f64>().ok()));
        } else if line.contains(" committed ") {
            flushes.extend(log_field(line, "elapsed_ms").and_then(|v| v.parse::<f64>().ok()));
        } else if line.contains("built the row index") {
            index_builds.push((
                log_field(line, "table").unwrap_or("?").to_string(),
                log_field(line, "rows")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                log_field(line, "elapsed_ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            ));
        }
    }

    let status = Command::new(walden)
        .args(["--config", &cfg_arg, "teardown"])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("walden teardown failed");
    }
    drop_slot_when_released(&client, "bench_recv").await?;
    let _ = std::fs::remove_dir_all(&dir);

    Ok(RunResult {
        tps,
        probes: w.len(),
        walden: Lags::of(&w),
        baseline: Lags::of(&b),
        warmup_max: (warm_w, warm_b),
        flush_ms: (median(flushes.clone()), percentile(&flushes, 1.0)),
        compactions: (
            compactions.len(),
            compactions.iter().copied().fold(0.0, f64::max),
        ),
        index_builds,
        peak_rss: peak,
    })
}

/// Commits a probe every `every` until `until` after `base`; returns them in order.
async fn probe(
    pg: &LocalPostgres,
    base: Instant,
    until: Duration,
    every: Duration,
) -> Result<Vec<Probe>> {
    let client = pg.connect("bench").await?;
    client.batch_execute("SET synchronous_commit = on").await?;
    let mut n: i64 = client
        .query_one("SELECT coalesce(max(id), 0) FROM walden_probe", &[])
        .await?
        .get(0);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probes = Vec::new();
    while base.elapsed() < until {
        ticker.tick().await;
        n += 1;
        client.batch_execute("BEGIN").await?;
        let row = client
            .query_one(
                "INSERT INTO walden_probe (id, marker) VALUES ($1, $2)
                 RETURNING pg_current_xact_id()::xid::text, pg_current_wal_insert_lsn()::text",
                &[&n, &format!("PROBE{n:08}")],
            )
            .await?;
        client.batch_execute("COMMIT").await?;
        let committed = base.elapsed().as_secs_f64();
        let (xid, before): (String, String) = (row.get(0), row.get(1));
        // The commit record is after `before` (read inside the transaction) and flushed.
        let end: String = client
            .query_one(
                &format!(
                    "SELECT end_lsn::text FROM pg_get_wal_records_info_till_end_of_wal('{before}')
                      WHERE xid = '{xid}' AND resource_manager = 'Transaction'
                        AND record_type LIKE 'COMMIT%'"
                ),
                &[],
            )
            .await
            .with_context(|| format!("finding the commit record of probe {n} (xid {xid})"))?
            .get(0);
        probes.push(Probe {
            n,
            committed,
            end_lsn: parse_lsn(&end)?,
        });
    }
    Ok(probes)
}

/// Reads the lake's committed progress every [`POLL`]; records each new LSN with the time
/// it was first seen. Returns walden's peak RSS, sampled every 10 polls.
fn poll_lake(
    warehouse: PathBuf,
    base: Instant,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<(f64, u64)>>>,
    pid: u32,
) -> JoinHandle<Result<u64>> {
    std::thread::spawn(move || {
        let lake = walden_lake::Lake::open(&warehouse)?;
        let mut last = 0;
        let mut peak = 0;
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if let Some(p) = lake.progress("bench")?
                && p.lsn > last
            {
                last = p.lsn;
                lock(&out).push((base.elapsed().as_secs_f64(), p.lsn));
            }
            if i.is_multiple_of(10)
                && let Some(rss) = peak_rss(pid)
            {
                peak = peak.max(rss);
            }
            i += 1;
            std::thread::sleep(POLL);
        }
        Ok(peak)
    })
}

/// Scans what pg_recvlogical appends to `path` every [`POLL`] for probe markers; records
/// each with the time its bytes were read.
fn poll_recv(
    path: PathBuf,
    base: Instant,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<(i64, f64)>>>,
) -> JoinHandle<Result<()>> {
    std::thread::spawn(move || {
        let mut file = None;
        // The last bytes of the previous read: too short to hold a whole marker, so none
        // is counted twice, and a marker cut by a read is found by the next one.
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if file.is_none() {
                file = std::fs::File::open(&path).ok();
            }
            if let Some(f) = file.as_mut() {
                buf.clear();
                buf.extend_from_slice(&tail);
                if f.read_to_end(&mut buf)? > 0 {
                    let t = base.elapsed().as_secs_f64();
                    let found: Vec<i64> = buf
                        .windows(MARKER_LEN)
                        .filter_map(|w| {
                            let digits = w.strip_prefix(b"PROBE")?;
                            if !digits.iter().all(u8::is_ascii_digit) {
                                return None;
                            }
                            std::str::from_utf8(digits).ok()?.parse().ok()
                        })
                        .collect();
                    lock(&out).extend(found.into_iter().map(|n| (n, t)));
                    tail = buf[buf.len().saturating_sub(MARKER_LEN - 1)..].to_vec();
                }
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn join<T>(handle: JoinHandle<Result<T>>) -> Result<T> {
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("a poller panicked"))?
}

/// SIGINT, then waits (a minute at most, then SIGKILL).
fn interrupt(child: &mut Child, what: &str) -> Result<ExitStatus> {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if t.elapsed() > Duration::from_secs(60) {
            child.kill()?;
            child.wait()?;
            bail!("{what} did not stop within 60 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Drops a slot once its walsender has let go of it.
async fn drop_slot_when_released(
    client: &walden_testkit::tokio_postgres::Client,
    slot: &str,
) -> Result<()> {
    let t = Instant::now();
    loop {
        let dropped = client
            .query_opt(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                  WHERE slot_name = $1 AND NOT active",
                &[&slot],
            )
            .await?;
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?
            .get(0);
        if dropped.is_some() || left == 0 {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("slot {slot} still in use after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `X/Y` (hex) as a 64-bit position.
fn parse_lsn(s: &str) -> Result<u64> {
    let (hi, lo) = s.split_once('/').context("an LSN has a '/'")?;
    Ok((u64::from_str_radix(hi, 16)? << 32) | u64::from_str_radix(lo, 16)?)
}

/// pgbench's `tps = N (without initial connection time)`.
fn parse_tps(out: &str) -> Result<f64> {
    out.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no tps in pgbench's output:\n{out}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_and_tps_parse() {
        assert_eq!(parse_lsn("0/1543A80").unwrap(), 0x1543A80);
        assert_eq!(parse_lsn("1/0").unwrap(), 1 << 32);
        assert_eq!(
            parse_tps(
                "latency average = 1.2 ms\ntps = 499.871 (without initial connection time)\n"
            )
            .unwrap(),
            499.871
        );
    }
}
