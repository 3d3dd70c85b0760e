//! `walden-bench memory`: walden's peak memory streaming into a table of millions of rows,
//! and the size of its row-key index over every live row.
//!
//! Each run: a fresh lake (the initial copy, its peak RSS noted), then a backlog of
//! updates and deletes spread over the whole key range (row `1 + k·2654435761 mod rows`
//! for consecutive `k`, never the same row twice across runs), then `walden replicate
//! --until-caught-up`: the first update makes walden build the table's row index from the
//! lake's files (every live row), then it applies the backlog. Reported: the process' peak
//! RSS (VmHWM), and the index's rows and bytes from walden's "built the row index" log line
//! (the same figure as the `walden_index_memory_bytes` gauge). The reference measured on the
//! same table is the size of Postgres' own primary-key B-tree.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{
    OrderKey, REGIONS, bench_config, create_orders_keyed, log_field, median, run_measured,
    run_measured_logged,
};

/// Spreads consecutive `k` over the key range: a prime, so `k ↦ k·STRIDE mod rows` is a
/// bijection whenever `rows` is not a multiple of it.
const STRIDE: u64 = 2_654_435_761;

struct RunResult {
    /// Data files of the copy (the index is built by reading each one's key column).
    files: usize,
    copy_peak: u64,
    peak: u64,
    seconds: f64,
    index_rows: u64,
    index_bytes: u64,
    index_ms: u64,
    live: i64,
}

pub(crate) async fn run(
    rows: u64,
    changes: u64,
    key: OrderKey,
    runs: usize,
    walden: &Path,
) -> Result<()> {
    let batches = changes.div_ceil(1000);
    if batches * 1000 * runs as u64 > rows {
        bail!("--changes × --runs must not exceed --rows (each run changes rows no run touched)");
    }
    if rows.is_multiple_of(STRIDE) {
        bail!("--rows must not be a multiple of {STRIDE}");
    }
    let pg = crate::bench_postgres("8GB")?;
    let url = pg.create_database("bench").await?;
    let client = pg.connect("bench").await?;
    create_orders_keyed(&pg, "bench", rows, key).await?;
    let row = client
        .query_one(
            "SELECT pg_relation_size('orders'), pg_relation_size('orders_pkey')",
            &[],
        )
        .await?;
    let (heap, pkey): (i64, i64) = (row.get(0), row.get(1));
    eprintln!(
        "table {:.0} MiB, primary key {:.0} MiB",
        heap as f64 / 1048576.0,
        pkey as f64 / 1048576.0
    );

    // Rows addressed by their whole key; `k` picks the row, `cond` filters the `k`s.
    let target = match key {
        OrderKey::Int8 => "id",
        OrderKey::Composite => "(region, id)",
    };
    let pick = |cond: &str| {
        let ids = format!(
            "SELECT 1 + (k * {STRIDE}) % {rows} AS x FROM generate_series(lo, lo + 999) k \
             WHERE {cond}"
        );
        match key {
            OrderKey::Int8 => ids,
            OrderKey::Composite => format!("SELECT {REGIONS}[1 + x % 4], x FROM ({ids}) s"),
        }
    };

    let mut results = Vec::new();
    for run in 0..runs {
        let (dir, cfg) = bench_config(&url)?;
        let cfg_arg = cfg.to_str().unwrap_or_default().to_string();
        eprintln!("run {}: initial copy ...", run + 1);
        let (_, copy_peak) = run_measured(
            walden,
            &[
                "--config",
                &cfg_arg,
                "replicate",
                "--until-caught-up",
                "--quiet",
            ],
        )?;
        let lake = walden_lake::Lake::open(dir.join("lake"))?;
        let files = lake
            .load_table(&walden_lake::TableName::new("public", "orders"))
            .await?
            .context("orders is not in the lake after the copy")?
            .plan_files(lake.file_io())
            .await?
            .len();
        eprintln!(
            "run {}: a backlog of {} changes ...",
            run + 1,
            batches * 1000
        );
        // 900 updates and 100 deletes per transaction.
        client
            .batch_execute(&format!(
                "DO $$
                 DECLARE lo int8;
                 BEGIN
                   FOR b IN 0..{last} LOOP
                     lo := {k0}::int8 + b * 1000;
                     UPDATE orders SET amount = amount + 1, status = 'paid', paid = true
                       WHERE {target} IN ({updated});
                     DELETE FROM orders WHERE {target} IN ({deleted});
                     COMMIT;
                   END LOOP;
                 END $$;",
                last = batches - 1,
                k0 = run as u64 * batches * 1000,
                updated = pick("k % 10 <> 9"),
                deleted = pick("k % 10 = 9"),
            ))
            .await?;
        let log = dir.join("walden.log");
        let (seconds, peak) = run_measured_logged(
            walden,
            &[
                "--config",
                &cfg_arg,
                "--log",
                "warn,walden_replicate=info",
                "replicate",
                "--until-caught-up",
                "--quiet",
            ],
            Some(&log),
        )?;
        let text = std::fs::read_to_string(&log)?;
        let line = text
            .lines()
            .find(|l| l.contains("built the row index"))
            .with_context(|| format!("no row-index build in {}", log.display()))?;
        let field = |name: &str| -> Result<u64> {
            log_field(line, name)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {name} in {line:?}"))
        };
        let live: i64 = client
            .query_one("SELECT count(*) FROM orders", &[])
            .await?
            .get(0);
        let r = RunResult {
            files,
            copy_peak,
            peak,
            seconds,
            index_rows: field("rows")?,
            index_bytes: field("memory_bytes")?,
            index_ms: field("elapsed_ms")?,
            live,
        };
        eprintln!(
            "run {}: copy peak {:.0} MiB, {} data files; streaming {:.1}s, peak {:.0} MiB ({:.0} bytes/live row); \
             index {} rows, {:.0} MiB ({:.1} bytes/row), built in {} ms",
            run + 1,
            mib(r.copy_peak),
            r.files,
            r.seconds,
            mib(r.peak),
            r.peak as f64 / r.live as f64,
            r.index_rows,
            mib(r.index_bytes),
            r.index_bytes as f64 / r.index_rows as f64,
            r.index_ms
        );
        results.push(r);
        let status = Command::new(walden)
            .args(["--config", &cfg_arg, "teardown"])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("walden teardown failed");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    let m = |f: fn(&RunResult) -> f64| median(results.iter().map(f).collect());
    let by_run = |f: fn(&RunResult) -> f64| {
        results
            .iter()
            .map(|r| format!("{:.0}", f(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let key_name = match key {
        OrderKey::Int8 => "id int8",
        OrderKey::Composite => "(region text, id int8)",
    };
    println!(
        "memory streaming {} changes into {rows} rows, primary key {key_name}, {runs} runs, medians:",
        batches * 1000
    );
    println!(
        "  walden peak RSS, streaming:     {:>8.0} MiB (runs: {} MiB), {:.0} bytes per live row",
        m(|r| mib(r.peak)),
        by_run(|r| mib(r.peak)),
        m(|r| r.peak as f64 / r.live as f64)
    );
    println!(
        "  row index:                      {:>8.0} MiB for {:.0} rows, {:.1} bytes per row (runs: {} MiB)",
        m(|r| mib(r.index_bytes)),
        m(|r| r.index_rows as f64),
        m(|r| r.index_bytes as f64 / r.index_rows as f64),
        by_run(|r| mib(r.index_bytes))
    );
    println!(
        "  index build:                    {:>8.0} ms from {:.0} data files; whole catch-up {:.1} s",
        m(|r| r.index_ms as f64),
        m(|r| r.files as f64),
        m(|r| r.seconds)
    );
    println!(
        "  walden peak RSS, initial copy:  {:>8.0} MiB (runs: {} MiB)",
        m(|r| mib(r.copy_peak)),
        by_run(|r| mib(r.copy_peak))
    );
    println!(
        "  reference: Postgres primary key {:>7.0} MiB, {:.1} bytes per row (heap {:.0} MiB)",
        pkey as f64 / 1048576.0,
        pkey as f64 / rows as f64,
        heap as f64 / 1048576.0
    );
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}
