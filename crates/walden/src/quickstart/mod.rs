//! `walden quickstart`: a throwaway Postgres with a deterministic demo shop database,
//! replicated into a lake under the chosen directory, then a query over it.
//!
//! Layout of the directory: `postgres/` (the cluster; stopped when the command exits),
//! `lake/` (the warehouse, which stays), `walden.toml` (the config used, which stays).

use std::path::{Path, PathBuf};

use std::time::Duration;

use anyhow::{Context, Result, bail};
use walden_testkit::{LocalPgOptions, LocalPostgres};

use crate::config::Config;
mod project;

const SCHEMA_SQL: &str = include_str!("shop_schema.sql");
const DATA_SQL: &str = include_str!("shop_data.sql");
/// One tick of live shop activity (orders placed, paid, shipped, cancelled; prices
/// changed; now and then a customer deleted), one transaction.
const WORKLOAD_SQL: &str = include_str!("shop_workload.sql");
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

/// Runs the quickstart; the live phase lasts `duration` (until Ctrl-C when `None`).
pub async fn run(dir: &Path, scale: u32, duration: Option<Duration>) -> Result<()> {
    let dir = prepare_dir(dir)?;
    println!("walden quickstart in {}", dir.display());
    println!("1/6 starting a throwaway PostgreSQL ...");
    let pg = LocalPostgres::start(LocalPgOptions {
        data_dir: Some(dir.join("postgres")),
        settings: Vec::new(),
    })?;
    println!("    listening on 127.0.0.1:{}", pg.port());
    println!("2/6 generating the demo shop ({scale} orders) ...");
    let started = std::time::Instant::now();
    load_shop(&pg, "shop", scale).await?;
    println!("    done in {:.1}s", started.elapsed().as_secs_f64());

    let config_path = dir.join("walden.toml");
    let (password, token) = write_secrets(&dir)?;
    std::fs::write(
        &config_path,
        format!(
            "# Written by walden quickstart. The reference is walden.example.toml.\n\
             [source]\nurl = \"{}\"\ntables = [\"public.*\"]\n\n[lake]\nwarehouse = \"lake\"\n\n\
             [serve]\npg_listen = \"{}\"\nhttp_listen = \"{}\"\n\n\
             [models]\npath = \"project\"\n\n\
             # The marts rebuild when replication has moved on, at most every 10 s (their\n\
             # folder's cron schedule in walden_project.yml runs too).\n\
             [[models.schedules]]\nname = \"marts-live\"\nselect = \"tag:marts\"\n\
             on_replication_advance = true\nmin_interval_ms = 10000\n\n\
             [[principals]]\nname = \"{QUICKSTART_PRINCIPAL}\"\npassword_file = \"secrets/password\"\n\
             token_file = \"secrets/token\"\nmax_rows = 10000\n",
            pg.url("shop"),
            free_or_any("127.0.0.1:7432"),
            free_or_any("127.0.0.1:7480"),
        ),
    )?;
    project::write(&dir.join("project")).context("writing the example models project")?;
    let secrets = Secrets {
        password,
        token,
        config_path: std::fs::canonicalize(&config_path).unwrap_or_else(|_| config_path.clone()),
    };
    let loaded = crate::config::load(Some(&config_path))?;
    let config = &loaded.config;

    println!("3/6 checking the source ...");
    let report = crate::run_check(config).await?;
    if report.has_errors() {
        crate::print_check(&report);
        bail!("the demo database failed the preflight");
    }
    println!("4/6 copying into the lake ...");
    let outcome = crate::run_initial_sync(config, true).await?;
    crate::print_sync(&outcome, &config.lake.warehouse);

    let sql = "SELECT status, count(*) AS orders, sum(total) AS revenue \
               FROM public.orders GROUP BY status ORDER BY orders DESC";
    println!("\n$ walden query \"{sql}\"");
    crate::run_query(config, sql, crate::output::Format::Table).await?;

    println!("\n5/6 building the example models (project/, walden models build) ...");
    build_models(config).await?;
    let sql = "SELECT c.full_name, c.country, c.order_count, c.lifetime_value FROM marts.dim_customers c \
               ORDER BY c.lifetime_value DESC NULLS LAST LIMIT 5";
    println!("\n$ walden query \"{sql}\"");
    crate::run_query(config, sql, crate::output::Format::Table).await?;

    live(&pg, config, duration, &secrets).await?;

    let orders = walden_lake::Lake::open(&config.lake.warehouse)?
        .load_table(&walden_lake::TableName::new("public", "orders"))
        .await?
        .and_then(|t| t.metadata_location().map(str::to_string))
        .unwrap_or_default();
    let cfg = config_path.display();
    let dir = dir.display();
    let wh = config.lake.warehouse.display();
    println!(
        "\nThe lake stays in {wh}; the demo PostgreSQL stops now. Next:\n\
         \n  walden --config {cfg} query \"SELECT * FROM public.customers LIMIT 5\"\
         \n  walden --config {cfg} status\
         \n  walden --config {cfg} models build     (the models in {dir}/project; models ls|test|docs)\
         \n  walden --config {cfg} serve     (the endpoints again, same credentials in secrets/)\
         \n\nOther engines read the same tables:\
         \n  pyiceberg: SqlCatalog(\"walden\", uri=\"sqlite:///{wh}/catalog.db\", warehouse=\"file://{wh}\").load_table(\"public.orders\")\
         \n  DuckDB:    SELECT count(*) FROM iceberg_scan('{orders}')\n"
    );
    Ok(())
}

/// Builds every model and test of the example project once, with a one-line summary per
/// layer.
async fn build_models(config: &Config) -> Result<()> {
    let project = crate::models::load_project(config, None)?;
    let builder = crate::models::builder(config)?;
    let options = walden_build::BuildOptions {
        models: true,
        tests: true,
        trigger: "quickstart".into(),
        ..Default::default()
    };
    let report = builder.run(&project, &options, &|_| {}).await?;
    let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &report.results {
        if matches!(r.node, walden_models::NodeId::Model(_)) {
            *kinds.entry(r.detail.as_str()).or_default() += 1;
        }
    }
    let tests = report
        .results
        .iter()
        .filter(|r| matches!(r.node, walden_models::NodeId::Test(_)))
        .count();
    println!(
        "    {} in {:.1}s as of lake LSN {}; {tests} data tests: {} passed, {} warned, {} failed",
        kinds
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        report.duration.as_secs_f64(),
        report
            .as_of
            .0
            .map(walden_query::format_lsn)
            .unwrap_or_else(|| "-".into()),
        report
            .results
            .iter()
            .filter(|r| matches!(r.node, walden_models::NodeId::Test(_))
                && r.status == walden_build::Status::Success)
            .count(),
        report.count(walden_build::Status::Warn),
        report.count(walden_build::Status::Fail),
    );
    for r in &report.results {
        let source = matches!(r.node, walden_models::NodeId::Source(..));
        if source && r.status != walden_build::Status::Success {
            // The demo data is dated in the past until the live workload adds orders.
            println!(
                "    source freshness {}: {}",
                r.name(),
                r.message.as_deref().unwrap_or("")
            );
        } else if matches!(
            r.status,
            walden_build::Status::Error | walden_build::Status::Fail
        ) {
            println!("    {}: {}", r.name(), r.message.as_deref().unwrap_or(""));
        }
    }
    if report.failed() {
        bail!("the example models did not build; see above");
    }
    Ok(())
}

/// The live phase: a workload on the demo database, walden streaming it into the lake,
/// and a line every two seconds showing the lake move.
async fn live(
    pg: &LocalPostgres,
    config: &Config,
    duration: Option<Duration>,
    secrets: &Secrets,
) -> Result<()> {
    println!(
        "\n6/6 live: a workload places, pays, ships and cancels orders; walden streams it into \
         the lake ({}).",
        match duration {
            Some(d) => format!("for {} s", d.as_secs()),
            None => "Ctrl-C to stop".into(),
        }
    );
    let (tx, stop) = tokio::sync::watch::channel(false);
    crate::forward_signals(tx.clone());
    if let Some(d) = duration {
        let tx = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            let _ = tx.send(true);
        });
    }
    let replicator = {
        let config = config.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::replicate_until(
                &config,
                crate::ReplicateArgs {
                    until_caught_up: false,
                    resync: false,
                    show_progress: false,
                },
                stop,
            )
            .await
        })
    };
    let workload = {
        let client = pg.connect("shop").await?;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut ticks = 0u64;
            while !*stop.borrow() {
                if let Err(e) = client.batch_execute(WORKLOAD_SQL).await {
                    tracing::warn!(error = %e, "the demo workload failed a tick");
                }
                ticks += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            ticks
        })
    };

    let service =
        crate::serve::query_service(config, walden_lake::Lake::open(&config.lake.warehouse)?)?;
    let scheduler = crate::models::start_scheduler(
        config,
        walden_lake::Lake::open(&config.lake.warehouse)?,
        service.clone(),
        stop.clone(),
    );
    let endpoints = crate::serve::start_endpoints(
        config,
        service,
        crate::serve::principals(config)?,
        stop.clone(),
    )
    .await?;
    print_endpoints(&endpoints, secrets);

    let source = pg.connect("shop").await?;
    let lake = walden_lake::Lake::open(&config.lake.warehouse)?;
    let engine = walden_query::QueryEngine::new(lake.clone());
    let slot = config.source()?.slot.clone();
    let started = std::time::Instant::now();
    let mut stop_wait = stop.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop_wait.changed() => {}
        }
        if *stop.borrow() || replicator.is_finished() {
            break;
        }
        let Some(progress) = lake.progress(&slot)? else {
            continue;
        };
        let source_lsn: String = source
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?
            .get(0);
        let behind = walden_pg::parse_lsn(&source_lsn)
            .unwrap_or(0)
            .saturating_sub(progress.lsn);
        let age = chrono::Utc::now().timestamp_millis() - progress.committed_at_ms;
        let counts = engine
            .sql("SELECT status, count(*) AS n FROM public.orders GROUP BY 1 ORDER BY 2 DESC")
            .await
            .map(|batches| order_counts(&batches))
            .unwrap_or_default();
        let marts = engine
            .sql("SELECT max(lsn) AS lsn FROM walden.tables WHERE namespace = 'marts'")
            .await
            .ok()
            .and_then(|b| {
                let b = b.first()?;
                arrow::util::display::array_value_to_string(b.column(0), 0).ok()
            })
            .unwrap_or_default();
        println!(
            "  [{:>4}s] lake at {} ({} bytes of WAL behind, committed {:.1} s ago), marts as of \
             {marts} · orders: {counts}",
            started.elapsed().as_secs(),
            walden_pg::format_lsn(progress.lsn),
            behind,
            age.max(0) as f64 / 1000.0
        );
    }
    let ticks = workload.await.unwrap_or(0);
    let _ = tx.send(true);
    endpoints.wait().await?;
    if let Some(s) = scheduler {
        let _ = s.await;
    }
    replicator.await.context("the replicator task failed")??;
    println!("  {ticks} workload transactions ran; the lake holds every one that was acknowledged");
    Ok(())
}

/// The principal the quickstart creates.
const QUICKSTART_PRINCIPAL: &str = "quickstart";

/// What a client needs to connect: the credentials, and the config file (for the stdio
/// MCP command).
struct Secrets {
    password: String,
    token: String,
    config_path: std::path::PathBuf,
}

/// A random password and token in `<dir>/secrets/` (owner-only), for the config's
/// `password_file` / `token_file`.
fn write_secrets(dir: &Path) -> Result<(String, String)> {
    use rand::Rng;
    use std::os::unix::fs::PermissionsExt;
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets)?;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700))?;
    let random = |n: usize| -> String {
        let mut rng = rand::rng();
        (0..n)
            .map(|_| {
                let i = rng.random_range(0..62u8);
                (match i {
                    0..=9 => b'0' + i,
                    10..=35 => b'a' + i - 10,
                    _ => b'A' + i - 36,
                }) as char
            })
            .collect()
    };
    let password = random(20);
    let token = format!("wld_{}", random(32));
    for (name, value) in [("password", &password), ("token", &token)] {
        let path = secrets.join(name);
        std::fs::write(&path, format!("{value}\n"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok((password, token))
}

/// `addr` if it can be bound now, else the same host on a free port.
fn free_or_any(addr: &str) -> String {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => addr.to_string(),
        Err(_) => addr
            .rsplit_once(':')
            .map(|(host, _)| format!("{host}:0"))
            .unwrap_or_else(|| "127.0.0.1:0".into()),
    }
}

fn print_endpoints(endpoints: &crate::serve::Endpoints, secrets: &Secrets) {
    let user = QUICKSTART_PRINCIPAL;
    println!(
        "\n    The lake is served while this runs (credentials are in secrets/):\
         \n      psql \"postgres://{user}:{pw}@{pg}/walden\"\
         \n      curl -s http://{http}/v1/query -H 'Authorization: Bearer {token}' \\\
         \n           -d '{{\"sql\": \"SELECT status, count(*) FROM public.orders GROUP BY 1\"}}'\n",
        pw = secrets.password,
        pg = endpoints.pg_addr,
        http = endpoints.http_addr,
        token = secrets.token,
    );
    println!("{}", mcp_client_config(endpoints.http_addr, secrets));
}

/// Ready-to-paste MCP client configuration: the HTTP endpoint with its bearer token, and
/// the stdio command (the `mcpServers` JSON most agent clients read).
fn mcp_client_config(http: std::net::SocketAddr, secrets: &Secrets) -> String {
    let walden = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "walden".into());
    let config = serde_json::json!({
        "mcpServers": {
            "walden": {
                "type": "http",
                "url": format!("http://{http}/mcp"),
                "headers": { "Authorization": format!("Bearer {}", secrets.token) }
            },
            "walden-stdio": {
                "type": "stdio",
                "command": walden,
                "args": ["--config", secrets.config_path.display().to_string(),
                         "mcp", "--principal", QUICKSTART_PRINCIPAL]
            }
        }
    });
    let json = serde_json::to_string_pretty(&config).unwrap_or_default();
    format!(
        "    Agents connect over MCP: paste into your MCP client's configuration (HTTP works \
         while this runs;\n    stdio starts `walden mcp`, which opens the lake itself):\n{}\n",
        json.lines()
            .map(|l| format!("      {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

fn order_counts(batches: &[arrow::array::RecordBatch]) -> String {
    use arrow::array::{Array, AsArray};
    let mut parts = Vec::new();
    for b in batches {
        let Ok(status) = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)
        else {
            continue;
        };
        let (Some(s), Some(n)) = (
            status.as_string_opt::<i32>(),
            b.column(1)
                .as_primitive_opt::<arrow::datatypes::Int64Type>(),
        ) else {
            continue;
        };
        for i in 0..b.num_rows() {
            if !s.is_null(i) {
                parts.push(format!("{} {}", s.value(i), n.value(i)));
            }
        }
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mcp_client_config_is_pasteable_json_for_both_transports() {
        let secrets = Secrets {
            password: "pw".into(),
            token: "wld_abc".into(),
            config_path: "/tmp/q/walden.toml".into(),
        };
        let text = mcp_client_config("127.0.0.1:7480".parse().expect("addr"), &secrets);
        let json: String = text.lines().skip(2).collect::<Vec<_>>().join("\n");
        let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        let http = &v["mcpServers"]["walden"];
        assert_eq!(http["url"], "http://127.0.0.1:7480/mcp");
        assert_eq!(http["headers"]["Authorization"], "Bearer wld_abc");
        let args = v["mcpServers"]["walden-stdio"]["args"].to_string();
        assert_eq!(
            args,
            r#"["--config","/tmp/q/walden.toml","mcp","--principal","quickstart"]"#
        );
    }
}
