//! walden's benchmarks, each a ratio against a baseline measured in the same run on the
//! same server, as medians of several runs:
//!
//! - `initial-copy`: the initial copy of one big table against
//!   `psql -c "COPY t TO STDOUT (FORMAT binary)" > /dev/null`;
//! - `streaming`: applying a backlog of updates, inserts and deletes against
//!   `pg_recvlogical` merely decoding the same changes from its own pgoutput slot into
//!   `/dev/null`, plus walden's peak memory with its row index;
//! - `freshness`: commit-to-visible lag of probe transactions under a steady pgbench
//!   load, against the same probes received by `pg_recvlogical` from its own slot;
//! - `memory`: peak memory and row-index size of streaming into a table of millions of
//!   rows (the index covers every live row), with the source's own primary-key index as
//!   the reference;
//! - `models`: an incremental model build after 1% new rows against a full rebuild of the
//!   same model, and a full build of the example project on the quickstart's shop;
//! - `mcp`: the MCP front end's overhead over the bare query service (a small query
//!   through the `query` tool) and `describe_table` of a 100-column table, in process;
//! - `tpch`: the 22 TPC-H queries on walden's query engine over a lake replicated from
//!   Postgres, against Postgres itself and DuckDB over Parquet files of the same data.
//!
//! Build both binaries in release mode first: `cargo build --release -p walden -p walden-bench`.

// A command-line tool: progress goes to stderr, results to stdout.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use walden_testkit::{LocalPgOptions, LocalPostgres};

mod bigtxn;
mod freshness;
mod mcp;
mod memory;
mod models;
mod tpch;

#[derive(Parser)]
#[command(
    name = "walden-bench",
    about = "walden benchmarks (ratios against same-run baselines)"
)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// MCP tool-call overhead over `QueryService::execute` of the same SQL (small result),
    /// and `describe_table` of a 100-column table; in process, no Postgres needed.
    Mcp {
        /// Rows of the small table the query aggregates.
        #[arg(long, default_value_t = 1000)]
        rows: u64,
        /// Runs of each; medians are reported.
        #[arg(long, default_value_t = 50)]
        runs: usize,
    },
    /// Incremental model build after 1% new rows vs a full rebuild; the example project's
    /// full build on the quickstart shop.
    Models {
        /// Rows in the source table of the incremental model.
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        /// Runs of each; medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Orders in the quickstart shop for the example project's build.
        #[arg(long, default_value_t = 100_000)]
        quickstart_scale: u32,
        #[arg(long)]
        walden: Option<PathBuf>,
    },
    /// Initial copy of one table vs COPY (FORMAT binary) to /dev/null.
    InitialCopy {
        /// Rows in the table.
        #[arg(long, default_value_t = 5_000_000)]
        rows: u64,
        /// Runs of each side; medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The walden binary (default: next to this one).
        #[arg(long)]
        walden: Option<PathBuf>,
    },
    /// Applying a backlog of changes vs pg_recvlogical decoding it to /dev/null.
    Streaming {
        /// Rows in the table before the backlog.
        #[arg(long, default_value_t = 2_000_000)]
        rows: u64,
        /// Changed rows in each backlog (60% updates, 25% inserts, 15% deletes, in
        /// transactions of 1000).
        #[arg(long, default_value_t = 1_500_000)]
        changes: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        walden: Option<PathBuf>,
    },
    /// One multi-million-row transaction: time vs pg_recvlogical, and peak memory.
    BigTransaction {
        /// Rows inserted by the transaction (a tenth of them updated again in it).
        #[arg(long, default_value_t = 5_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        walden: Option<PathBuf>,
    },
    /// Commit-to-visible lag under pgbench load vs pg_recvlogical receiving the same probes.
    Freshness {
        /// pgbench scale (100,000 accounts per unit).
        #[arg(long, default_value_t = 10)]
        scale: u32,
        /// pgbench's target rate (`-R`), transactions per second.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// pgbench clients (`-c`).
        #[arg(long, default_value_t = 8)]
        clients: u32,
        /// Seconds of measured load in each run.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seconds of load before the measured window (row-index build, first flushes);
        /// their probes are reported apart.
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        /// Milliseconds between probe transactions.
        #[arg(long, default_value_t = 100)]
        probe_interval_ms: u64,
        /// walden's `[lake] maintenance_interval_ms` during the run: compaction and snapshot
        /// expiration run under the load, so their pauses show in the lag.
        #[arg(long, default_value_t = 5000)]
        maintenance_interval_ms: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        walden: Option<PathBuf>,
    },
    /// Peak memory and row-index size of streaming into a big table.
    Memory {
        /// Rows in the table.
        #[arg(long, default_value_t = 5_000_000)]
        rows: u64,
        /// Changed rows in each run's backlog (90% updates, 10% deletes, spread over the
        /// whole key range, in transactions of 1000).
        #[arg(long, default_value_t = 100_000)]
        changes: u64,
        /// The table's primary key.
        #[arg(long, value_enum, default_value_t = OrderKey::Int8)]
        key: OrderKey,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        walden: Option<PathBuf>,
    },
    /// The 22 TPC-H queries: walden's engine over the replicated lake vs Postgres and DuckDB.
    Tpch {
        /// TPC-H scale factor (1 = 6M lineitems; 0.1 for a quick check).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Where the generated CSV (and DuckDB's Parquet) is cached between runs
        /// (default: <tmp>/walden-tpch/sf<scale>).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Timed runs per query and engine, after one warm-up; medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Postgres' statement_timeout per query, in seconds.
        #[arg(long, default_value_t = 300)]
        statement_timeout: u64,
        /// Only these queries (comma-separated numbers; default all 22).
        #[arg(long, value_delimiter = ',')]
        queries: Vec<usize>,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// The Python with duckdb==1.5.5 and tpchgen-cli (default: <repo>/.venv/bin/python).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Do not time the queries on Postgres (it is still loaded to replicate from);
        /// walden is then checked against DuckDB.
        #[arg(long)]
        skip_postgres: bool,
        /// Do not run DuckDB.
        #[arg(long)]
        skip_duckdb: bool,
        /// Keep the lake in this directory; when it already holds one, reuse it and skip
        /// Postgres altogether (walden is then checked against DuckDB).
        #[arg(long)]
        lake: Option<PathBuf>,
        /// Query walden in this process instead of over the Postgres wire protocol.
        #[arg(long)]
        in_process: bool,
        /// Concurrent pgwire clients of the load phase after the timed runs (0: skip it).
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long)]
        walden: Option<PathBuf>,
    },
}

/// The primary key of the benchmark table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OrderKey {
    /// `id int8`: the row index stores the key exactly.
    Int8,
    /// `(region text, id int8)`: the row index stores a 128-bit hash of the key.
    Composite,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The nearest-rank `p`-quantile (0 < p <= 1) of `v`; NaN when `v` is empty.
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// The value of `name=value` in a line of walden's log (tracing's default format).
fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
}

/// Peak resident set (VmHWM) of a running process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Bench::InitialCopy { rows, runs, walden } => {
            let walden = walden_binary(walden)?;
            rt.block_on(initial_copy(rows, runs.max(1), &walden))
        }
        Bench::Streaming {
            rows,
            changes,
            runs,
            walden,
        } => {
            let walden = walden_binary(walden)?;
            rt.block_on(streaming(rows, changes, runs.max(1), &walden))
        }
        Bench::BigTransaction { rows, runs, walden } => {
            let walden = walden_binary(walden)?;
            rt.block_on(bigtxn::run(rows, runs.max(1), &walden))
        }
        Bench::Freshness {
            scale,
            rate,
            clients,
            seconds,
            warmup,
            probe_interval_ms,
            maintenance_interval_ms,
            runs,
            walden,
        } => {
            let walden = walden_binary(walden)?;
            rt.block_on(freshness::run(
                &freshness::Options {
                    scale,
                    rate,
                    clients,
                    seconds,
                    warmup,
                    probe_interval: Duration::from_millis(probe_interval_ms.max(1)),
                    maintenance_interval_ms,
                    runs: runs.max(1),
                },
                &walden,
            ))
        }
        Bench::Memory {
            rows,
            changes,
            key,
            runs,
            walden,
        } => {
            let walden = walden_binary(walden)?;
            rt.block_on(memory::run(rows, changes, key, runs.max(1), &walden))
        }
        Bench::Mcp { rows, runs } => rt.block_on(mcp::run(&mcp::Options {
            rows,
            runs: runs.max(1),
        })),
        Bench::Models {
            rows,
            runs,
            quickstart_scale,
            walden,
        } => {
            let walden = walden_binary(walden)?;
            rt.block_on(models::run(
                &models::Options {
                    rows,
                    runs: runs.max(1),
                    quickstart_scale,
                },
                &walden,
            ))
        }
        Bench::Tpch {
            scale,
            data_dir,
            runs,
            statement_timeout,
            queries,
            json,
            python,
            skip_postgres,
            skip_duckdb,
            lake,
            in_process,
            clients,
            walden,
        } => {
            let walden = walden_binary(walden)?;
            rt.block_on(tpch::run(
                &tpch::Options {
                    scale,
                    data_dir,
                    runs: runs.max(1),
                    statement_timeout_secs: statement_timeout,
                    queries,
                    json,
                    python,
                    skip_postgres,
                    skip_duckdb,
                    lake,
                    in_process,
                    clients,
                },
                &walden,
            ))
        }
    }
}

fn walden_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    let walden = match given {
        Some(w) => w,
        None => std::env::current_exe()?
            .parent()
            .context("bench binary has no directory")?
            .join("walden"),
    };
    if !walden.exists() {
        bail!(
            "{} not found: cargo build --release -p walden",
            walden.display()
        );
    }
    Ok(walden)
}

/// Runs `walden` with `args`, sampling its peak RSS; returns (seconds, peak bytes).
fn run_measured(walden: &Path, args: &[&str]) -> Result<(f64, u64)> {
    run_measured_logged(walden, args, None)
}

/// Starts `walden` with `args`, its output discarded except stderr (the log), which goes
/// to `log` when given (uncolored).
fn spawn_walden(walden: &Path, args: &[&str], log: Option<&Path>) -> Result<std::process::Child> {
    let mut cmd = Command::new(walden);
    cmd.args(args).env("NO_COLOR", "1").stdout(Stdio::null());
    if let Some(log) = log {
        cmd.stderr(std::fs::File::create(log)?);
    }
    Ok(cmd.spawn()?)
}

/// [`run_measured`] with walden's stderr (its log) written to `log` when given.
fn run_measured_logged(walden: &Path, args: &[&str], log: Option<&Path>) -> Result<(f64, u64)> {
    let t = Instant::now();
    let mut child = spawn_walden(walden, args, log)?;
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(p) = peak_rss(pid) {
            peak = peak.max(p);
        }
        if let Some(s) = child.try_wait()? {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        bail!("walden {args:?} failed");
    }
    Ok((t.elapsed().as_secs_f64(), peak))
}

/// A throwaway Postgres sized for the benchmarks (1 GB shared buffers, room for WAL).
fn bench_postgres(max_wal_size: &str) -> Result<LocalPostgres> {
    Ok(LocalPostgres::start(LocalPgOptions {
        data_dir: None,
        settings: vec![
            ("shared_buffers".into(), "1GB".into()),
            ("max_wal_size".into(), max_wal_size.into()),
        ],
    })?)
}

/// `walden replicate --until-caught-up --quiet` with config `cfg_arg`: (seconds, peak RSS).
fn catch_up(walden: &Path, cfg_arg: &str) -> Result<(f64, u64)> {
    run_measured(
        walden,
        &[
            "--config",
            cfg_arg,
            "replicate",
            "--until-caught-up",
            "--quiet",
        ],
    )
}

/// A fresh pgoutput slot `bench_recv` for the baseline, at the current WAL position.
async fn fresh_recv_slot(client: &walden_testkit::tokio_postgres::Client) -> Result<()> {
    client
        .batch_execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
               WHERE slot_name = 'bench_recv';
             SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput');",
        )
        .await?;
    Ok(())
}

/// The baseline: `pg_recvlogical` decoding slot `bench_recv` up to `end` into /dev/null;
/// returns its seconds.
fn recvlogical_to(pg: &LocalPostgres, url: &str, end: &str) -> Result<f64> {
    let t = Instant::now();
    let status = Command::new(pg.bin_dir().join("pg_recvlogical"))
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
            "--endpos",
            end,
            "-f",
            "/dev/null",
        ])
        .status()?;
    if !status.success() {
        bail!("pg_recvlogical failed");
    }
    Ok(t.elapsed().as_secs_f64())
}

async fn streaming(rows: u64, changes: u64, runs: usize, walden: &Path) -> Result<()> {
    let pg = bench_postgres("8GB")?;
    let url = pg.create_database("bench").await?;
    let client = pg.connect("bench").await?;
    create_orders(&pg, "bench", rows).await?;
    let (dir, cfg) = bench_config(&url)?;
    let cfg_arg = cfg.to_str().unwrap_or_default().to_string();
    eprintln!("initial copy ...");
    catch_up(walden, &cfg_arg)?;

    let batches = changes.div_ceil(1000);
    let mut next_insert = rows + 1;
    let mut next_delete = rows;
    let mut baseline = Vec::new();
    let mut ours = Vec::new();
    let mut peaks = Vec::new();
    for run in 0..runs {
        // The baseline's own slot, at the same position as walden's.
        fresh_recv_slot(&client).await?;
        eprintln!(
            "run {}: writing a backlog of {} changes ...",
            run + 1,
            batches * 1000
        );
        // Each iteration is a transaction: 600 updates, 250 inserts, 150 deletes.
        client
            .batch_execute(&format!(
                "DO $$
                 DECLARE lo int8;
                 BEGIN
                   FOR i IN 0..{last} LOOP
                     lo := 1 + ((i::int8 * 7919 * 600) % ({rows} / 2));
                     UPDATE orders SET amount = amount + 1, status = 'paid', paid = true
                       WHERE id BETWEEN lo AND lo + 599;
                     INSERT INTO orders
                       SELECT g, g % 1000003, 'pending', 9.99, now(), NULL, false
                       FROM generate_series({ins}::int8 + i * 250, {ins}::int8 + i * 250 + 249) g;
                     DELETE FROM orders WHERE id BETWEEN {del}::int8 - i * 150 - 149 AND {del}::int8 - i * 150;
                     COMMIT;
                   END LOOP;
                 END $$;",
                last = batches - 1,
                ins = next_insert,
                del = next_delete,
            ))
            .await?;
        next_insert += batches * 250;
        next_delete -= batches * 150;
        let end: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?
            .get(0);

        let b = recvlogical_to(&pg, &url, &end)?;
        let (w, peak) = catch_up(walden, &cfg_arg)?;
        let n = (batches * 1000) as f64;
        eprintln!(
            "run {}: pg_recvlogical {b:.2}s ({:.0} changes/s), walden {w:.2}s ({:.0} changes/s), \
             peak RSS {:.0} MiB",
            run + 1,
            n / b,
            n / w,
            peak as f64 / 1048576.0
        );
        baseline.push(n / b);
        ours.push(n / w);
        peaks.push(peak as f64);
    }
    let live: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await?
        .get(0);
    let (b, w) = (median(baseline), median(ours));
    let peak = peaks.iter().cloned().fold(0.0, f64::max);
    println!(
        "streaming a backlog of {} changes into a {rows}-row table, {runs} runs, medians:",
        batches * 1000
    );
    println!("  pg_recvlogical (pgoutput v1) to /dev/null: {b:>12.0} changes/s");
    println!("  walden replicate --until-caught-up:        {w:>12.0} changes/s");
    println!(
        "  ratio walden / pg_recvlogical:             {:>12.2}",
        w / b
    );
    println!(
        "  walden peak RSS:                           {:>12.0} MiB ({live} live rows, {:.0} bytes/row)",
        peak / 1048576.0,
        peak / live.max(1) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn initial_copy(rows: u64, runs: usize, walden: &Path) -> Result<()> {
    let pg = LocalPostgres::start(LocalPgOptions {
        data_dir: None,
        settings: vec![("shared_buffers".into(), "1GB".into())],
    })?;
    let url = pg.create_database("bench").await?;
    let client = pg.connect("bench").await?;
    let t = Instant::now();
    create_orders(&pg, "bench", rows).await?;
    let size: i64 = client
        .query_one("SELECT pg_relation_size('orders')", &[])
        .await?
        .get(0);
    eprintln!(
        "generated in {:.1}s; table is {:.0} MiB",
        t.elapsed().as_secs_f64(),
        size as f64 / 1048576.0
    );
    // Warm the cache so neither side pays for the first read from disk.
    client.batch_execute("SELECT count(*) FROM orders").await?;

    let psql = pg.bin_dir().join("psql");
    let mut baseline = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let status = Command::new(&psql)
            .args([url.as_str(), "-c", "COPY orders TO STDOUT (FORMAT binary)"])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("psql COPY failed");
        }
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "baseline run {}: {:.2}s ({:.0} rows/s)",
            i + 1,
            s,
            rows as f64 / s
        );
        baseline.push(rows as f64 / s);
    }

    let mut ours = Vec::new();
    let mut peaks = Vec::new();
    for i in 0..runs {
        let (dir, cfg) = bench_config(&url)?;
        let cfg_arg = cfg.to_str().unwrap_or_default();
        let (s, peak) = run_measured(
            walden,
            &[
                "--config",
                cfg_arg,
                "replicate",
                "--until-caught-up",
                "--quiet",
            ],
        )?;
        eprintln!(
            "walden run {}: {:.2}s ({:.0} rows/s), peak RSS {:.0} MiB",
            i + 1,
            s,
            rows as f64 / s,
            peak as f64 / 1048576.0
        );
        ours.push(rows as f64 / s);
        peaks.push(peak as f64);
        let status = Command::new(walden)
            .args(["--config", cfg.to_str().unwrap_or_default(), "teardown"])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("walden teardown failed");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (b, w) = (median(baseline), median(ours));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "initial copy of {rows} rows ({:.0} MiB heap), {runs} runs, {cores} cores, medians:",
        size as f64 / 1048576.0
    );
    println!("  COPY (FORMAT binary) to /dev/null: {b:>12.0} rows/s");
    println!("  walden replicate:                  {w:>12.0} rows/s");
    println!("  ratio walden / COPY:               {:>12.2}", w / b);
    println!(
        "  walden peak RSS:                   {:>12.0} MiB (max {:.0} MiB)",
        median(peaks.clone()) / 1048576.0,
        peaks.iter().cloned().fold(0.0, f64::max) / 1048576.0
    );
    Ok(())
}

/// The benchmark table: `orders` with `rows` rows of typical OLTP shape, vacuumed and
/// analyzed.
async fn create_orders(pg: &LocalPostgres, db: &str, rows: u64) -> Result<()> {
    create_orders_keyed(pg, db, rows, OrderKey::Int8).await
}

/// The region of order `id` in the composite-key variant (a pure function of the id, so
/// changes can address rows by their full key).
const REGIONS: &str = "(ARRAY['eu-west','us-east','ap-south','sa-east'])";

/// [`create_orders`] with a choice of primary key: `id int8`, or `(region text, id int8)`
/// with `region` derived from `id`.
async fn create_orders_keyed(pg: &LocalPostgres, db: &str, rows: u64, key: OrderKey) -> Result<()> {
    eprintln!("generating {rows} rows ...");
    let client = pg.connect(db).await?;
    let (key_columns, key_values, primary_key) = match key {
        OrderKey::Int8 => ("id int8 PRIMARY KEY,", "g,".to_string(), ""),
        OrderKey::Composite => (
            "region text NOT NULL, id int8 NOT NULL,",
            format!("{REGIONS}[1 + g % 4], g,"),
            ", PRIMARY KEY (region, id)",
        ),
    };
    client
        .batch_execute(&format!(
            "CREATE TABLE orders (
                 {key_columns} customer_id int8 NOT NULL, status text NOT NULL,
                 amount numeric(12,2) NOT NULL, placed_at timestamptz NOT NULL,
                 note text, paid bool NOT NULL{primary_key});
             INSERT INTO orders
             SELECT {key_values} (g * 7919) % 1000003, (ARRAY['pending','paid','shipped','delivered','cancelled'])[1 + g % 5],
                    ((g * 104729) % 100000) / 100.0, '2024-01-01'::timestamptz + (g || ' seconds')::interval,
                    CASE WHEN g % 10 = 0 THEN 'gift wrap, leave at the door ' || g END, g % 3 = 0
             FROM generate_series(1::int8, {rows}::int8) g;"
        ))
        .await?;
    // Outside the batch: VACUUM cannot run in a transaction block.
    client.batch_execute("VACUUM ANALYZE orders").await?;
    Ok(())
}

/// A fresh directory with a `walden.toml` for `url` (slot and publication `bench`, the
/// lake inside the directory, metrics on a free port); returns (directory, config path).
fn bench_config(url: &str) -> Result<(PathBuf, PathBuf)> {
    bench_config_at(url, None)
}

/// [`bench_config`] with the lake at `lake` instead of inside the directory.
fn bench_config_at(url: &str, lake: Option<&Path>) -> Result<(PathBuf, PathBuf)> {
    let dir = tempfile_dir()?;
    let cfg = dir.join("walden.toml");
    let lake = lake
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join("lake"));
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"{url}\"\nslot = \"bench\"\npublication = \"bench\"\n\n\
             [lake]\nwarehouse = \"{}\"\n\n[serve]\nhttp_listen = \"127.0.0.1:{}\"\n",
            lake.display(),
            // Streaming runs serve metrics: a free port, not the default one another
            // walden on this machine may hold.
            walden_testkit::free_port()?
        ),
    )?;
    Ok((dir, cfg))
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "walden-bench-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
