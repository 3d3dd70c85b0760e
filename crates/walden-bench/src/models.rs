//! `walden-bench models`: model builds with the real `walden` binary.
//!
//! 1. Incremental against full: incremental models (`merge` on `id`, and `append`) over a
//!    replicated table of `--rows` rows joined with a 10k-row customer dimension; each run adds 1% new rows (and updates 0.1%) at the source, catches the
//!    lake up, times `walden models build -s fct_events` (incremental) and then
//!    `--full-refresh` of the same model at the same lake state. The ratio of medians is the
//!    speedup (target ≥ 5×).
//! 2. The example project on the quickstart's shop (`walden quickstart --scale N`): a full
//!    build of every model and test (`--full-refresh`), timed (target: seconds).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use walden_testkit::{LocalPgOptions, LocalPostgres};

use crate::{catch_up, median, tempfile_dir};

pub(crate) struct Options {
    pub rows: u64,
    pub runs: usize,
    pub quickstart_scale: u32,
}

const PROJECT: &[(&str, &str)] = &[
    ("walden_project.yml", "name: bench\n"),
    (
        "models/marts/fct_events.sql",
        "{{ config(materialized='incremental', unique_key='id', incremental_strategy='merge') }}
select e.id, e.customer_id, c.segment, c.country, e.kind, e.amount, e.amount * 1.2 as gross,
       upper(e.kind) as kind_upper, e.updated_at
from {{ source('app', 'events') }} e
join {{ source('app', 'customers') }} c on c.id = e.customer_id
{% if is_incremental() %}
where e.updated_at > (select max(updated_at) from {{ this }})
{% endif %}",
    ),
    (
        "models/marts/fct_events_append.sql",
        "{{ config(materialized='incremental', incremental_strategy='append') }}
select e.id, e.customer_id, c.segment, c.country, e.kind, e.amount, e.amount * 1.2 as gross,
       upper(e.kind) as kind_upper, e.updated_at
from {{ source('app', 'events') }} e
join {{ source('app', 'customers') }} c on c.id = e.customer_id
{% if is_incremental() %}
where e.id > (select max(id) from {{ this }})
{% endif %}",
    ),
    (
        "models/marts/_sources.yml",
        "version: 2\nsources:\n  - name: app\n    schema: public\n    tables:\n      - name: events\n      - name: customers\n",
    ),
];

fn build(walden: &Path, cfg: &str, models: &[&str], extra: &[&str]) -> Result<f64> {
    let t = Instant::now();
    let mut args = vec!["--config", cfg, "models", "build", "-s"];
    args.extend_from_slice(models);
    args.extend_from_slice(extra);
    let out = Command::new(walden).args(&args).output()?;
    if !out.status.success() {
        bail!(
            "walden models build failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(t.elapsed().as_secs_f64())
}

pub(crate) async fn run(opts: &Options, walden: &Path) -> Result<()> {
    // 1. Incremental against full.
    let pg = LocalPostgres::start(LocalPgOptions::default())?;
    let url = pg.create_database("models").await?;
    let client = pg.connect("models").await?;
    eprintln!("loading {} rows ...", opts.rows);
    client
        .batch_execute(&format!(
            "CREATE TABLE customers (id int PRIMARY KEY, segment text NOT NULL, country text NOT NULL);
             INSERT INTO customers SELECT i, 'segment ' || (i % 13), 'country ' || (i % 41)
               FROM generate_series(0, 10006) i;
             CREATE TABLE events (id bigint PRIMARY KEY, customer_id int NOT NULL, kind text NOT NULL,
                                  amount numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL);
             INSERT INTO events SELECT i, i % 10007, 'kind' || (i % 7), (i % 1000) * 0.37,
                    '2026-01-01'::timestamptz + i * interval '1 millisecond'
               FROM generate_series(1, {}) i;",
            opts.rows
        ))
        .await?;
    client.batch_execute("VACUUM ANALYZE events").await?;
    let dir = tempfile_dir()?;
    for (path, text) in PROJECT {
        let p = dir.join("project").join(path);
        std::fs::create_dir_all(p.parent().context("a parent")?)?;
        std::fs::write(p, text)?;
    }
    let cfg = dir.join("walden.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"{url}\"\nslot = \"bench_models\"\npublication = \"bench_models\"\n\n\
             [lake]\nwarehouse = \"{}\"\n\n[serve]\nhttp_listen = \"127.0.0.1:{}\"\n\n\
             [models]\npath = \"{}\"\n",
            dir.join("lake").display(),
            walden_testkit::free_port()?,
            dir.join("project").display()
        ),
    )?;
    let cfg_arg = cfg.to_str().context("utf-8 path")?;
    catch_up(walden, cfg_arg)?;
    let first = build(walden, cfg_arg, &["fct_events", "fct_events_append"], &[])?;
    eprintln!(
        "first build of both models ({} rows): {first:.2}s",
        opts.rows
    );
    let step = (opts.rows / 100).max(1);
    let mut next_id = opts.rows + 1;
    let (mut incremental, mut full) = (Vec::new(), Vec::new());
    let (mut appended, mut full_append) = (Vec::new(), Vec::new());
    for run in 0..opts.runs {
        client
            .batch_execute(&format!(
                "INSERT INTO events SELECT i, i % 10007, 'kind' || (i % 7), (i % 1000) * 0.41, now()
                   FROM generate_series({next_id}, {}) i;
                 UPDATE events SET amount = amount + 1, updated_at = now()
                   WHERE id % 1000 = {run};",
                next_id + step - 1
            ))
            .await?;
        next_id += step;
        catch_up(walden, cfg_arg)?;
        let i = build(walden, cfg_arg, &["fct_events"], &[])?;
        let f = build(walden, cfg_arg, &["fct_events"], &["--full-refresh"])?;
        let a = build(walden, cfg_arg, &["fct_events_append"], &[])?;
        let fa = build(walden, cfg_arg, &["fct_events_append"], &["--full-refresh"])?;
        eprintln!(
            "run {run}: merge: incremental {i:.2}s, full rebuild {f:.2}s; append: incremental \
             {a:.2}s, full rebuild {fa:.2}s"
        );
        incremental.push(i);
        full.push(f);
        appended.push(a);
        full_append.push(fa);
    }
    let (mi, mf) = (median(incremental.clone()), median(full.clone()));
    let (ma, mfa) = (median(appended.clone()), median(full_append.clone()));
    // Both ways end with the same rows.
    let rows_after: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .get(0);
    drop(pg);

    // 2. The example project on the quickstart's shop.
    let qs = tempfile_dir()?.join("quickstart");
    eprintln!(
        "walden quickstart --scale {} (builds the example models once) ...",
        opts.quickstart_scale
    );
    let out = Command::new(walden)
        .args(["quickstart", "--duration", "1", "--scale"])
        .arg(opts.quickstart_scale.to_string())
        .arg("--dir")
        .arg(&qs)
        .output()?;
    if !out.status.success() {
        bail!(
            "walden quickstart failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let qs_cfg = qs.join("walden.toml");
    let qs_arg = qs_cfg.to_str().context("utf-8 path")?;
    let mut example = Vec::new();
    for _ in 0..opts.runs {
        let t = Instant::now();
        let out = Command::new(walden)
            .args(["--config", qs_arg, "models", "build", "--full-refresh"])
            .output()?;
        if !out.status.success() {
            bail!(
                "walden models build (example) failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        example.push(t.elapsed().as_secs_f64());
    }
    let me = median(example.clone());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(qs.parent().unwrap_or(&qs));

    println!(
        "\nModels, {} runs (medians):\n\
         | measurement | median s | runs |\n|---|---|---|\n\
         | incremental build of fct_events after +1% rows (+0.1% updated) | {mi:.2} | {} |\n\
         | full rebuild of fct_events at the same state ({rows_after} rows) | {mf:.2} | {} |\n\
         | **full / incremental (merge)** | **{:.1}×** | target ≥ 5× ({}) |\n\
         | incremental build of fct_events_append (append, +1% rows) | {ma:.2} | {} |\n\
         | full rebuild of fct_events_append | {mfa:.2} | {} |\n\
         | **full / incremental (append)** | **{:.1}×** | target ≥ 5× ({}) |\n\
         | full build of the example project (11 models, 38 tests) on the quickstart shop, {} orders | {me:.2} | {} |",
        opts.runs,
        fmt(&incremental),
        fmt(&full),
        mf / mi,
        if mf / mi >= 5.0 { "met" } else { "not met" },
        fmt(&appended),
        fmt(&full_append),
        mfa / ma,
        if mfa / ma >= 5.0 { "met" } else { "not met" },
        opts.quickstart_scale,
        fmt(&example),
    );
    Ok(())
}

fn fmt(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}
