//! `walden quickstart`: a throwaway Postgres with a deterministic demo shop database,
//! replicated into a lake under the chosen directory, then a query over it.
//!
//! Layout of the directory: `postgres/` (the cluster; stopped when the command exits),
//! `lake/` (the warehouse, which stays), `walden.toml` (the config used, which stays).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use walden_testkit::{LocalPgOptions, LocalPostgres};

const SCHEMA_SQL: &str = include_str!("shop_schema.sql");
const DATA_SQL: &str = include_str!("shop_data.sql");
const MARKER: &str = ".walden-quickstart";

/// Loads the demo shop into `database` of `pg` with `scale` orders.
pub async fn load_shop(pg: &LocalPostgres, database: &str, scale: u32) -> Result<()> {
    pg.create_database(database).await?;
    let client = pg.connect(database).await?;
    client
        .batch_execute(SCHEMA_SQL)
        .await
        .context("creating the demo schema")?;
    client
        .batch_execute(&format!("SET walden.scale = '{scale}'"))
        .await?;
    client
        .batch_execute(DATA_SQL)
        .await
        .context("generating the demo data")?;
    Ok(())
}

fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        let is_ours = dir.join(MARKER).exists();
        let empty = std::fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !is_ours && !empty {
            bail!(
                "{} exists and was not made by walden quickstart; choose another --dir",
                dir.display()
            );
        }
        if is_ours {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("removing the previous demo in {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "made by walden quickstart; safe to delete\n",
    )?;
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

pub async fn run(dir: &Path, scale: u32) -> Result<()> {
    let dir = prepare_dir(dir)?;
    println!("walden quickstart in {}", dir.display());
    println!("1/4 starting a throwaway PostgreSQL ...");
    let pg = LocalPostgres::start(LocalPgOptions {
        data_dir: Some(dir.join("postgres")),
        settings: Vec::new(),
    })?;
    println!("    listening on 127.0.0.1:{}", pg.port());
    println!("2/4 generating the demo shop ({scale} orders) ...");
    let started = std::time::Instant::now();
    load_shop(&pg, "shop", scale).await?;
    println!("    done in {:.1}s", started.elapsed().as_secs_f64());

    let config_path = dir.join("walden.toml");
    std::fs::write(
        &config_path,
        format!(
            "# Written by walden quickstart. The reference is walden.example.toml.\n\
             [source]\nurl = \"{}\"\ntables = [\"public.*\"]\n\n[lake]\nwarehouse = \"lake\"\n",
            pg.url("shop")
        ),
    )?;
    let loaded = crate::config::load(Some(&config_path))?;
    let config = &loaded.config;

    println!("3/4 checking the source ...");
    let report = crate::run_check(config).await?;
    if report.has_errors() {
        crate::print_check(&report);
        bail!("the demo database failed the preflight");
    }
    println!("4/4 copying into the lake ...");
    let outcome = crate::run_initial_sync(config, true).await?;
    crate::print_sync(&outcome, &config.lake.warehouse);

    let sql = "SELECT status, count(*) AS orders, sum(total) AS revenue \
               FROM public.orders GROUP BY status ORDER BY orders DESC";
    println!("\n$ walden query \"{sql}\"");
    crate::run_query(config, sql, crate::output::Format::Table).await?;

    let orders = walden_lake::Lake::open(&config.lake.warehouse)?
        .load_table(&walden_lake::TableName::new("public", "orders"))
        .await?
        .and_then(|t| t.metadata_location().map(str::to_string))
        .unwrap_or_default();
    let cfg = config_path.display();
    let wh = config.lake.warehouse.display();
    println!(
        "\nThe lake stays in {wh}; the demo PostgreSQL stops now. Next:\n\
         \n  walden --config {cfg} query \"SELECT * FROM public.customers LIMIT 5\"\
         \n  walden --config {cfg} status\
         \n\nOther engines read the same tables:\
         \n  pyiceberg: SqlCatalog(\"walden\", uri=\"sqlite:///{wh}/catalog.db\", warehouse=\"file://{wh}\").load_table(\"public.orders\")\
         \n  DuckDB:    SELECT count(*) FROM iceberg_scan('{orders}')\n"
    );
    Ok(())
}
