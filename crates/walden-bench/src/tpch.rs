//! `walden-bench tpch`: the 22 TPC-H queries on Postgres, on walden's query engine over
//! the lake replicated from it, and on DuckDB over Parquet files of the same data.
//!
//! Data comes from `tpchgen-cli` (CSV, cached in `--data-dir`), is loaded into a fresh
//! Postgres 15 with `\copy`, primary keys, foreign keys and their indexes, then `VACUUM
//! ANALYZE`; `walden replicate --until-caught-up` copies it into a fresh lake. DuckDB reads
//! Parquet files it wrote itself from the same CSV, through `duckdb_tpch.py`. walden is
//! queried as clients query it: over the Postgres wire protocol (a `walden serve` front end
//! in this process, text results, the product's default memory caps), or in process with
//! `--in-process`. Every walden result is checked against Postgres' (against DuckDB's when
//! Postgres timed out). Then `--clients` clients run all the queries at once through pgwire,
//! to show the server stays within its memory cap.

mod queries;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use datafusion::arrow::util::display::array_value_to_string;
use walden_lake::Lake;
use walden_query::QueryEngine;
use walden_testkit::tokio_postgres::error::SqlState;
use walden_testkit::{LocalPgOptions, LocalPostgres};

use crate::{bench_config_at, catch_up, median};
use queries::{CONSTRAINTS, Query, TABLES};

const DUCKDB_SCRIPT: &str = include_str!("tpch/duckdb_tpch.py");

pub(crate) struct Options {
    pub scale: f64,
    pub data_dir: Option<PathBuf>,
    pub runs: usize,
    pub statement_timeout_secs: u64,
    /// Query numbers to run (all 22 when empty).
    pub queries: Vec<usize>,
    pub json: Option<PathBuf>,
    pub python: Option<PathBuf>,
    /// Skip Postgres' query runs (it is still loaded, to replicate from): walden is then
    /// checked against DuckDB.
    pub skip_postgres: bool,
    pub skip_duckdb: bool,
    /// Where to keep the lake; reused (no Postgres at all) when it already holds one.
    pub lake: Option<PathBuf>,
    /// Query walden in this process instead of over pgwire.
    pub in_process: bool,
    /// Concurrent pgwire clients of the load phase (0: none).
    pub clients: usize,
}

/// A result set in text form, NULL as `None`.
pub(crate) type Rows = Vec<Vec<Option<String>>>;

pub(crate) enum Outcome {
    Rows(Rows),
    /// The engine gave up at the statement timeout.
    TimedOut,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that runs one SQL query to completion and returns its rows: Postgres, walden
/// in process, and later walden over pgwire.
pub(crate) trait SqlExecutor: Sync {
    fn name(&self) -> &'static str;
    fn execute<'a>(&'a self, sql: &'a str) -> BoxFuture<'a, Result<Outcome>>;
}

/// Postgres over one connection, with the statement timeout set.
struct Postgres {
    client: walden_testkit::tokio_postgres::Client,
}

impl SqlExecutor for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn execute<'a>(&'a self, sql: &'a str) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move { simple_rows(&self.client, sql).await })
    }
}

/// walden's query engine in this process: a new session per query (table metadata read
/// and files planned), planned and collected, as `walden query` does.
struct WaldenInProcess {
    engine: QueryEngine,
}

impl SqlExecutor for WaldenInProcess {
    fn name(&self) -> &'static str {
        "walden"
    }

    fn execute<'a>(&'a self, sql: &'a str) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move {
            let batches = self.engine.sql(sql).await?;
            let mut rows = Vec::new();
            for batch in &batches {
                for r in 0..batch.num_rows() {
                    let mut row = Vec::with_capacity(batch.num_columns());
                    for column in batch.columns() {
                        row.push(if column.is_null(r) {
                            None
                        } else {
                            Some(array_value_to_string(column, r)?)
                        });
                    }
                    rows.push(row);
                }
            }
            Ok(Outcome::Rows(rows))
        })
    }
}

/// walden over the Postgres wire protocol, as clients see it: simple queries, text rows.
struct WaldenPgwire {
    client: walden_testkit::tokio_postgres::Client,
}

impl SqlExecutor for WaldenPgwire {
    fn name(&self) -> &'static str {
        "walden"
    }

    fn execute<'a>(&'a self, sql: &'a str) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move { simple_rows(&self.client, sql).await })
    }
}

async fn simple_rows(
    client: &walden_testkit::tokio_postgres::Client,
    sql: &str,
) -> Result<Outcome> {
    use walden_testkit::tokio_postgres::SimpleQueryMessage;
    match client.simple_query(sql).await {
        Ok(messages) => Ok(Outcome::Rows(
            messages
                .iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect(),
        )),
        Err(e) if e.code() == Some(&SqlState::QUERY_CANCELED) => Ok(Outcome::TimedOut),
        Err(e) => Err(anyhow::anyhow!(walden_testkit::pg_error(&e))),
    }
}

const BENCH_PASSWORD: &str = "bench";

/// A pgwire front end over the lake in this process, with the product's default memory
/// caps (per query and server-wide) and room for long answers and slow queries.
async fn start_pgwire(
    lake_dir: &Path,
    cores: usize,
) -> Result<(u16, tokio::sync::oneshot::Sender<()>)> {
    use std::sync::Arc;
    use walden_query::{LakeCatalog, Limits, Principal, QueryService, ServiceOptions};
    let service = QueryService::new(
        LakeCatalog::new(Lake::open(lake_dir)?),
        None,
        ServiceOptions {
            target_partitions: cores,
            ..Default::default()
        },
    )?;
    let principal = Principal::new("bench").with_limits(Limits {
        max_rows: u64::MAX,
        max_result_bytes: u64::MAX,
        timeout: std::time::Duration::from_secs(3600),
        max_concurrent_queries: 64,
        ..Limits::default()
    });
    let principals = walden_serve::Principals::new([walden_serve::Credentials {
        principal: Arc::new(principal),
        password: Some(BENCH_PASSWORD.into()),
        token: None,
    }]);
    let server = walden_serve::pg::PgServer::new(service, Arc::new(principals), None)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    Ok((port, stop))
}

async fn pgwire_client(port: u16) -> Result<walden_testkit::tokio_postgres::Client> {
    let mut config = walden_testkit::tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("bench")
        .password(BENCH_PASSWORD)
        .dbname("walden");
    let (client, conn) = config
        .connect(walden_testkit::tokio_postgres::NoTls)
        .await
        .context("connecting to walden's pgwire front end")?;
    tokio::spawn(conn);
    Ok(client)
}

/// This process' peak resident memory (VmHWM), after [`reset_peak_rss`].
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Restarts the peak-RSS count from the current RSS (Linux `clear_refs` 5).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// What the concurrent-clients phase saw.
struct Load {
    clients: usize,
    queries: usize,
    failed: Vec<String>,
    wall_secs: f64,
    peak_rss: Option<u64>,
    memory_cap: u64,
    per_query_cap: u64,
}

/// `clients` pgwire clients at once, each running every selected query once, each
/// starting at a different query.
async fn load_phase(port: u16, clients: usize, selected: &[&Query]) -> Result<Load> {
    let reset = reset_peak_rss();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = pgwire_client(port).await?;
        let mut order: Vec<(usize, String)> =
            selected.iter().map(|q| (q.number, q.sql.clone())).collect();
        let shift = (c * 3) % order.len().max(1);
        order.rotate_left(shift);
        tasks.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            for (number, sql) in &order {
                if let Err(e) = simple_rows(&client, sql).await {
                    failed.push(format!("client {c} q{number}: {e:#}"));
                }
            }
            (order.len(), failed)
        }));
    }
    let mut queries = 0;
    let mut failed = Vec::new();
    for t in tasks {
        let (n, f) = t.await?;
        queries += n;
        failed.extend(f);
    }
    let defaults = walden_query::ServiceOptions::default();
    Ok(Load {
        clients,
        queries,
        failed,
        wall_secs: started.elapsed().as_secs_f64(),
        peak_rss: if reset { peak_rss() } else { None },
        memory_cap: defaults.global_memory_bytes as u64,
        per_query_cap: walden_query::Limits::default().memory_limit_bytes as u64,
    })
}

/// Times of one query on one engine: `runs` runs after a warm-up.
struct Measured {
    seconds: Vec<f64>,
    rows: Option<Rows>,
    timed_out: bool,
    error: Option<String>,
}

impl Measured {
    fn median(&self) -> Option<f64> {
        (!self.seconds.is_empty()).then(|| median(self.seconds.clone()))
    }
}

async fn measure(exec: &dyn SqlExecutor, query: &Query, runs: usize) -> Measured {
    let mut m = Measured {
        seconds: Vec::new(),
        rows: None,
        timed_out: false,
        error: None,
    };
    for run in 0..=runs {
        let t = Instant::now();
        let outcome = exec.execute(&query.sql).await;
        let s = t.elapsed().as_secs_f64();
        match outcome {
            Ok(Outcome::Rows(rows)) => {
                if run > 0 {
                    m.seconds.push(s);
                }
                m.rows = Some(rows);
            }
            Ok(Outcome::TimedOut) => {
                m.timed_out = true;
                return m;
            }
            Err(e) => {
                eprintln!("  {} failed q{}: {e:#}", exec.name(), query.number);
                m.error = Some(format!("{e:#}"));
                return m;
            }
        }
    }
    m
}

/// A cell as compared: numbers without trailing fractional zeros (so `1.50` = `1.5000`
/// = `1.5`, `3` = `3.00`), anything else as it is.
fn normalize(cell: &Option<String>) -> String {
    let Some(s) = cell else {
        return "\u{0}NULL".to_string();
    };
    let t = s.trim_end();
    let digits = t.strip_prefix('-').unwrap_or(t);
    let numeric = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|c| *c == '.').count() <= 1
        && digits.chars().next().is_some_and(|c| c.is_ascii_digit());
    if !numeric {
        return t.to_string();
    }
    let mut n = t.to_string();
    if n.contains('.') {
        while n.ends_with('0') {
            n.pop();
        }
        if n.ends_with('.') {
            n.pop();
        }
    }
    if n == "-0" { "0".to_string() } else { n }
}

fn close(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

/// Compares two result sets as multisets of rows (both sorted); `approximate` columns
/// within a relative 1e-6, the rest exactly after [`normalize`].
fn compare(expected: &Rows, actual: &Rows, approximate: &[usize]) -> Result<(), String> {
    if expected.len() != actual.len() {
        return Err(format!(
            "{} rows expected, {} returned",
            expected.len(),
            actual.len()
        ));
    }
    let sorted = |rows: &Rows| {
        let mut v: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(normalize).collect())
            .collect();
        v.sort();
        v
    };
    let (e, a) = (sorted(expected), sorted(actual));
    for (i, (er, ar)) in e.iter().zip(&a).enumerate() {
        if er.len() != ar.len() {
            return Err(format!(
                "row {i}: {} columns expected, {} returned",
                er.len(),
                ar.len()
            ));
        }
        for (c, (ev, av)) in er.iter().zip(ar).enumerate() {
            let same = ev == av || (approximate.contains(&c) && close(ev, av));
            if !same {
                return Err(format!(
                    "row {i} (sorted), column {c}: expected {ev:?}, got {av:?}\n  expected row {er:?}\n  got row      {ar:?}"
                ));
            }
        }
    }
    Ok(())
}

pub(crate) async fn run(opts: &Options, walden: &Path) -> Result<()> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let data_dir = opts.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir()
            .join("walden-tpch")
            .join(format!("sf{}", opts.scale))
    });
    let csv_dir = data_dir.join("csv");
    let python = match &opts.python {
        Some(p) => p.clone(),
        None => walden_testkit::repo_root().join(".venv/bin/python"),
    };
    let all = queries::queries(opts.scale);
    let selected: Vec<&Query> = all
        .iter()
        .filter(|q| opts.queries.is_empty() || opts.queries.contains(&q.number))
        .collect();

    // 1. Data.
    if !csv_dir.join(".complete").exists() {
        let tpchgen = python.with_file_name("tpchgen-cli");
        eprintln!(
            "generating TPC-H SF{} into {} ...",
            opts.scale,
            csv_dir.display()
        );
        std::fs::create_dir_all(&csv_dir)?;
        let t = Instant::now();
        let status = Command::new(&tpchgen)
            .arg("csv")
            .arg("-s")
            .arg(opts.scale.to_string())
            .arg("-o")
            .arg(&csv_dir)
            .args(["--overwrite", "--quiet"])
            .status()
            .with_context(|| {
                format!(
                    "running {} (pip install tpchgen-cli into the venv)",
                    tpchgen.display()
                )
            })?;
        if !status.success() {
            bail!("tpchgen-cli failed");
        }
        std::fs::write(csv_dir.join(".complete"), b"")?;
        eprintln!("generated in {:.1}s", t.elapsed().as_secs_f64());
    }

    // 2. DuckDB over Parquet, waiting for queries (run interleaved with the others').
    let mut duck = if opts.skip_duckdb {
        None
    } else {
        Some(DuckDb::start(&python, &data_dir, &csv_dir, cores)?)
    };

    // 3. Postgres, and walden's copy of it (or a lake kept from an earlier run).
    let reuse = opts
        .lake
        .as_ref()
        .is_some_and(|l| l.join("catalog.db").exists());
    let mut setup = Setup::default();
    let mut postgres = None;
    let mut _pg = None;
    let mut temp_dir = None;
    let lake_dir = if reuse {
        let lake = opts.lake.clone().expect("checked");
        eprintln!("reusing the lake in {} (no Postgres)", lake.display());
        lake
    } else {
        let pg = LocalPostgres::start(LocalPgOptions {
            data_dir: None,
            settings: [
                ("shared_buffers", "2GB"),
                ("max_wal_size", "8GB"),
                ("work_mem", "64MB"),
                ("maintenance_work_mem", "1GB"),
                ("effective_cache_size", "16GB"),
                ("random_page_cost", "1.1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        })?;
        let url = pg.create_database("tpch").await?;
        let client = pg.connect("tpch").await?;
        let t = Instant::now();
        load_postgres(&pg, &client, &url, &csv_dir).await?;
        setup.load_secs = t.elapsed().as_secs_f64();
        let size: i64 = client
            .query_one("SELECT pg_database_size('tpch')", &[])
            .await?
            .get(0);
        setup.pg_bytes = size as u64;
        eprintln!(
            "loaded Postgres in {:.1}s ({:.0} MiB with indexes)",
            setup.load_secs,
            size as f64 / 1048576.0
        );

        // 4. Replicate.
        let (dir, cfg) = bench_config_at(&url, opts.lake.as_deref())?;
        let (secs, peak) = catch_up(walden, cfg.to_str().unwrap_or_default())?;
        setup.replicate_secs = secs;
        setup.replicate_peak = peak;
        let lake_dir = opts.lake.clone().unwrap_or_else(|| dir.join("lake"));
        temp_dir = Some(dir);
        client
            .batch_execute(&format!(
                "SET statement_timeout = '{}s'",
                opts.statement_timeout_secs
            ))
            .await?;
        if !opts.skip_postgres {
            postgres = Some(Postgres { client });
        }
        _pg = Some(pg);
        lake_dir
    };
    setup.lake_bytes = dir_size(&lake_dir);
    eprintln!(
        "walden replicated in {:.1}s (peak RSS {:.0} MiB, lake {:.0} MiB)",
        setup.replicate_secs,
        setup.replicate_peak as f64 / 1048576.0,
        setup.lake_bytes as f64 / 1048576.0
    );

    // 5. Queries.
    let (port, stop_pgwire) = start_pgwire(&lake_dir, cores).await?;
    let walden_exec: Box<dyn SqlExecutor> = if opts.in_process {
        Box::new(WaldenInProcess {
            engine: QueryEngine::new(Lake::open(&lake_dir)?),
        })
    } else {
        Box::new(WaldenPgwire {
            client: pgwire_client(port).await?,
        })
    };
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for q in &selected {
        let p = match &postgres {
            Some(pg) => Some(measure(pg, q, opts.runs).await),
            None => None,
        };
        let w = measure(walden_exec.as_ref(), q, opts.runs).await;
        let d = match duck.as_mut().map(|duck| duck.run(q, opts.runs)) {
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                eprintln!("  {e:#}");
                None
            }
            None => None,
        };
        let d = d.as_ref();
        let (reference, against) = match (&p, d) {
            (Some(p), _) if p.rows.is_some() => (p.rows.as_ref(), "postgres"),
            (_, Some(d)) => (Some(&d.rows), "duckdb"),
            _ => (None, "-"),
        };
        let check = match (&w.error, &w.rows, reference) {
            (Some(e), _, _) => Err(format!("walden failed: {e}")),
            (None, Some(rows), Some(reference)) => compare(reference, rows, q.approximate),
            (None, _, _) => Ok(()),
        };
        let check_label = match &check {
            Ok(()) if reference.is_some() && w.rows.is_some() => format!("ok ({against})"),
            Ok(()) => "unchecked".to_string(),
            Err(_) => "MISMATCH".to_string(),
        };
        if let Err(e) = &check {
            failures.push(format!("q{}: {e}", q.number));
        }
        if let Some(p) = &p
            && let Some(e) = &p.error
        {
            failures.push(format!("q{}: postgres failed: {e}", q.number));
        }
        // DuckDB against Postgres: reported, a baseline's own answer.
        let duck_check = match (&p, d) {
            (Some(p), Some(d)) if p.rows.is_some() => {
                Some(compare(p.rows.as_ref().expect("checked"), &d.rows, q.approximate).is_ok())
            }
            _ => None,
        };
        eprintln!(
            "q{:<2} postgres {:>9} walden {:>8} duckdb {:>8}  {check_label}",
            q.number,
            p.as_ref().map(fmt_pg).unwrap_or_else(|| "-".into()),
            fmt_secs(w.median()),
            fmt_secs(d.map(|d| median(d.seconds.clone()))),
        );
        results.push(QueryResult {
            number: q.number,
            rows: w.rows.as_ref().map(|r| r.len()),
            postgres: p,
            walden: w,
            duckdb: d.map(|d| median(d.seconds.clone())),
            check: check_label,
            duck_check,
        });
    }

    // 6. Many clients at once, within the memory cap.
    let load = if opts.clients > 0 {
        eprintln!(
            "{} concurrent pgwire clients, every query each ...",
            opts.clients
        );
        let load = load_phase(port, opts.clients, &selected).await?;
        failures.extend(load.failed.iter().cloned());
        Some(load)
    } else {
        None
    };
    let _ = stop_pgwire.send(());

    report(opts, cores, &results, &setup, load.as_ref())?;
    if let Some(dir) = temp_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if !failures.is_empty() {
        eprintln!("\nCORRECTNESS FAILURES:");
        for f in &failures {
            eprintln!("  {f}");
        }
        bail!(
            "{} of {} queries failed or differ from the reference",
            failures.len(),
            selected.len()
        );
    }
    Ok(())
}

struct QueryResult {
    number: usize,
    rows: Option<usize>,
    postgres: Option<Measured>,
    walden: Measured,
    duckdb: Option<f64>,
    check: String,
    /// DuckDB's rows equal Postgres' (when both ran).
    duck_check: Option<bool>,
}

#[derive(Default)]
struct Setup {
    load_secs: f64,
    pg_bytes: u64,
    replicate_secs: f64,
    replicate_peak: u64,
    lake_bytes: u64,
}

fn fmt_secs(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.3}")).unwrap_or_else(|| "-".into())
}

fn fmt_pg(p: &Measured) -> String {
    if p.timed_out {
        "timeout".into()
    } else if p.error.is_some() {
        "error".into()
    } else {
        fmt_secs(p.median())
    }
}

fn geomean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

fn report(
    opts: &Options,
    cores: usize,
    results: &[QueryResult],
    setup: &Setup,
    load: Option<&Load>,
) -> Result<()> {
    let timeout = opts.statement_timeout_secs as f64;
    println!(
        "\nTPC-H SF{}: {cores} cores; walden {}; DataFusion target partitions {cores}, DuckDB \
         threads {cores}; medians of {} runs after one warm-up; Postgres statement_timeout {}s",
        opts.scale,
        if opts.in_process {
            "in process"
        } else {
            "over pgwire (text results)"
        },
        opts.runs,
        opts.statement_timeout_secs
    );
    println!(
        "setup: Postgres load {:.1}s ({:.0} MiB), walden replicate {:.1}s (peak RSS {:.0} MiB, \
         lake {:.0} MiB)\n",
        setup.load_secs,
        setup.pg_bytes as f64 / 1048576.0,
        setup.replicate_secs,
        setup.replicate_peak as f64 / 1048576.0,
        setup.lake_bytes as f64 / 1048576.0
    );
    println!(
        "| query | rows | postgres s | walden s | duckdb s | postgres/walden | walden/duckdb | check |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut speedups = Vec::new();
    let mut ratios = Vec::new();
    let mut timeouts = Vec::new();
    for r in results {
        let w = r.walden.median();
        let (pg_secs, pg_label) = match &r.postgres {
            Some(p) if p.timed_out => {
                timeouts.push(r.number);
                (Some(timeout), format!("> {timeout:.0} (timeout)"))
            }
            Some(p) => (p.median(), fmt_pg(p)),
            None => (None, "-".into()),
        };
        let speedup = pg_secs.zip(w).map(|(p, w)| p / w);
        let ratio = w.zip(r.duckdb).map(|(w, d)| w / d);
        if let Some(s) = speedup {
            speedups.push(s);
        }
        if let Some(x) = ratio {
            ratios.push(x);
        }
        let duck_note = match r.duck_check {
            Some(false) => " (duckdb ≠ postgres)",
            _ => "",
        };
        println!(
            "| q{} | {} | {pg_label} | {} | {} | {} | {} | {}{duck_note} |",
            r.number,
            r.rows.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            fmt_secs(w),
            fmt_secs(r.duckdb),
            speedup
                .map(|s| format!(
                    "{s:.1}×{}",
                    if r.postgres.as_ref().is_some_and(|p| p.timed_out) {
                        " (≥)"
                    } else {
                        ""
                    }
                ))
                .unwrap_or_else(|| "-".into()),
            ratio
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "-".into()),
            r.check
        );
    }
    let gs = geomean(&speedups);
    let gr = geomean(&ratios);
    println!(
        "| **geomean** | | | | | **{}** | **{}** | |",
        gs.map(|s| format!("{s:.1}×")).unwrap_or_else(|| "-".into()),
        gr.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
    );
    let sum = |f: &dyn Fn(&QueryResult) -> Option<f64>| results.iter().filter_map(f).sum::<f64>();
    println!(
        "\ntotals: walden {:.2}s, duckdb {:.2}s, postgres {:.2}s",
        sum(&|r| r.walden.median()),
        sum(&|r| r.duckdb),
        sum(&|r| r.postgres.as_ref().and_then(|p| if p.timed_out {
            Some(timeout)
        } else {
            p.median()
        }))
    );
    if !timeouts.is_empty() {
        println!(
            "Postgres hit its statement_timeout ({timeout:.0}s) on {}: counted as {timeout:.0}s, \
             so those speedups (and the geomean) are lower bounds.",
            timeouts
                .iter()
                .map(|n| format!("q{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "targets: walden vs Postgres geomean ≥ 10× ({}), walden/DuckDB geomean ≤ 1.5 ({})",
        gs.map(|s| if s >= 10.0 { "met" } else { "not met" })
            .unwrap_or("n/a"),
        gr.map(|x| if x <= 1.5 { "met" } else { "not met" })
            .unwrap_or("n/a")
    );
    if let Some(load) = load {
        let mib = |b: u64| b as f64 / 1048576.0;
        println!(
            "\n{} concurrent pgwire clients ran {} queries in {:.1}s ({} failed); peak RSS of the \
             process {} with the query memory cap at {:.0} MiB server-wide, {:.0} MiB per query",
            load.clients,
            load.queries,
            load.wall_secs,
            load.failed.len(),
            load.peak_rss
                .map(|b| format!("{:.0} MiB", mib(b)))
                .unwrap_or_else(|| "unknown".into()),
            mib(load.memory_cap),
            mib(load.per_query_cap),
        );
        for f in &load.failed {
            println!("  {f}");
        }
    }
    if let Some(path) = &opts.json {
        let json = serde_json::json!({
            "scale": opts.scale,
            "cores": cores,
            "runs": opts.runs,
            "statement_timeout_secs": opts.statement_timeout_secs,
            "setup": {
                "postgres_load_secs": setup.load_secs,
                "postgres_bytes": setup.pg_bytes,
                "replicate_secs": setup.replicate_secs,
                "replicate_peak_rss": setup.replicate_peak,
                "lake_bytes": setup.lake_bytes,
            },
            "queries": results.iter().map(|r| serde_json::json!({
                "query": r.number,
                "rows": r.rows,
                "postgres_secs": r.postgres.as_ref().map(|p| p.seconds.clone()),
                "postgres_timed_out": r.postgres.as_ref().map(|p| p.timed_out),
                "walden_secs": r.walden.seconds,
                "duckdb_median_secs": r.duckdb,
                "check": r.check,
            })).collect::<Vec<_>>(),
            "geomean_speedup_vs_postgres": gs,
            "geomean_walden_over_duckdb": gr,
            "walden_over": if opts.in_process { "in process" } else { "pgwire" },
            "load": load.map(|l| serde_json::json!({
                "clients": l.clients,
                "queries": l.queries,
                "failed": l.failed,
                "wall_secs": l.wall_secs,
                "peak_rss": l.peak_rss,
                "memory_cap": l.memory_cap,
                "per_query_cap": l.per_query_cap,
            })),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

async fn load_postgres(
    pg: &LocalPostgres,
    client: &walden_testkit::tokio_postgres::Client,
    url: &str,
    csv_dir: &Path,
) -> Result<()> {
    for (name, columns) in TABLES {
        client
            .batch_execute(&format!("CREATE TABLE {name} ({columns})"))
            .await?;
    }
    let psql = pg.bin_dir().join("psql");
    for (name, _) in TABLES {
        let t = Instant::now();
        let csv = csv_dir.join(format!("{name}.csv"));
        let status = Command::new(&psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c"])
            .arg(format!(
                "\\copy {name} FROM '{}' WITH (FORMAT csv, HEADER true)",
                csv.display()
            ))
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("loading {name} failed");
        }
        eprintln!("  {name}: {:.1}s", t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    client.batch_execute(CONSTRAINTS).await?;
    eprintln!("  keys and indexes: {:.1}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    client.batch_execute("VACUUM ANALYZE").await?;
    eprintln!("  VACUUM ANALYZE: {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}

/// DuckDB's timings and rows for one query.
struct DuckResult {
    seconds: Vec<f64>,
    rows: Rows,
}

/// `duckdb_tpch.py` running beside the bench, answering one query at a time.
struct DuckDb {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl DuckDb {
    fn start(python: &Path, data_dir: &Path, csv_dir: &Path, threads: usize) -> Result<Self> {
        let script = data_dir.join("duckdb_tpch.py");
        std::fs::write(&script, DUCKDB_SCRIPT)?;
        let spec = serde_json::json!({
            "csv_dir": csv_dir,
            "parquet_dir": data_dir.join("parquet"),
            "threads": threads,
            "tables": TABLES,
        });
        let spec_path = data_dir.join("duckdb-spec.json");
        std::fs::write(&spec_path, serde_json::to_vec(&spec)?)?;
        eprintln!("DuckDB over Parquet ({threads} threads) ...");
        let mut child = Command::new(python)
            .arg(&script)
            .arg(&spec_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {} (a venv with duckdb==1.5.5)", python.display()))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = std::io::BufReader::new(child.stdout.take().context("no stdout")?);
        let mut duck = Self {
            child,
            stdin,
            stdout,
        };
        let ready = duck.read()?;
        if let Some(s) = ready["export_seconds"].as_f64() {
            eprintln!("DuckDB exported the CSV tables to Parquet in {s:.1}s");
        }
        Ok(duck)
    }

    fn read(&mut self) -> Result<serde_json::Value> {
        use std::io::BufRead;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the DuckDB script ended");
        }
        Ok(serde_json::from_str(&line)?)
    }

    fn run(&mut self, query: &Query, runs: usize) -> Result<DuckResult> {
        use std::io::Write;
        let request = serde_json::json!({"number": query.number, "sql": query.sql, "runs": runs});
        writeln!(self.stdin, "{request}")?;
        self.stdin.flush()?;
        let v = self.read()?;
        if let Some(e) = v["error"].as_str() {
            bail!("DuckDB failed q{}: {e}", query.number);
        }
        let seconds = v["seconds"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default();
        let rows = v["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        r.as_array()
                            .map(|cells| {
                                cells
                                    .iter()
                                    .map(|c| c.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(DuckResult { seconds, rows })
    }
}

impl Drop for DuckDb {
    fn drop(&mut self) {
        // Closing stdin ends the script's loop.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[&[&str]]) -> Rows {
        v.iter()
            .map(|r| r.iter().map(|c| Some(c.to_string())).collect())
            .collect()
    }

    #[test]
    fn numbers_compare_across_scales_and_order() {
        let pg = rows(&[&["A", "1.50", "25.5000000000000000"], &["B", "3", "0.04"]]);
        let df = rows(&[&["B", "3.00", "0.040000"], &["A", "1.5", "25.500000"]]);
        assert!(compare(&pg, &df, &[2]).is_ok());
        let off = rows(&[&["B", "3.01", "0.04"], &["A", "1.5", "25.5"]]);
        assert!(compare(&pg, &off, &[2]).is_err());
        // Only approximate columns get a tolerance.
        let near = rows(&[&["B", "3", "0.0400001"], &["A", "1.5000001", "25.5"]]);
        assert!(compare(&pg, &near, &[2]).is_err());
        assert!(compare(&pg, &near, &[1, 2]).is_ok());
        assert!(compare(&pg, &rows(&[&["A", "1.5", "25.5"]]), &[]).is_err());
    }
}
