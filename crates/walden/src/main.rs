// The entry point renders the one error of a failed command on stderr.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use walden::output::Format;

/// walden: an always-fresh, read-only analytics copy of PostgreSQL as Apache Iceberg tables.
#[derive(Parser)]
#[command(name = "walden", version, about, long_about = None)]
struct Cli {
    /// Configuration file (default: ./walden.toml when present). Every key can be set by
    /// environment as WALDEN__SECTION__KEY.
    #[arg(long, short, global = true, env = "WALDEN_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter (tracing syntax, e.g. `debug` or `walden_pg=debug`).
    #[arg(long, global = true, env = "WALDEN_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Preflight of the source: settings, privileges, tables and types, with fixes.
    Check,
    /// Copy the selected tables into the lake from a consistent snapshot, then stream
    /// their changes until stopped (Ctrl-C / SIGTERM finish the current flush first).
    Replicate {
        /// Return once the lake holds the source's state as of the start.
        #[arg(long)]
        until_caught_up: bool,
        /// Drop the slot and copy every table again (after a lost or tampered slot, a
        /// recreated table, or a schema change the lake cannot follow).
        #[arg(long)]
        resync: bool,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// Serve the lake over the Postgres wire protocol and HTTP ([serve] pg_listen and
    /// http_listen) to the configured principals, until Ctrl-C / SIGTERM.
    Serve,
    /// The main job: replicate and serve in one process (`replicate` + `serve`).
    Run,
    /// Serve MCP (Model Context Protocol) over stdin/stdout for an agent client that
    /// launches walden as a local command. The same tools are served over HTTP at /mcp by
    /// `serve` and `run`.
    Mcp {
        /// The [[principals]] entry whose grants and limits apply.
        #[arg(long)]
        principal: String,
    },
    /// Run one read-only SQL query over the lake.
    Query {
        sql: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Replication progress and the lake's tables.
    Status,
    /// The models project ([models] path): build, test, list, document.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Compare source and lake at one LSN, table by table: row counts and row hashes,
    /// naming the differing keys. Brings the lake to the source's current LSN through the
    /// replication slot first, so `walden replicate` must be stopped. Exit code 0: all
    /// tables match; 1: some differ; 2: verify failed.
    Verify {
        /// Compare only this table (schema.name); repeatable. Default: every replicated
        /// table.
        #[arg(long = "table", value_name = "SCHEMA.NAME")]
        tables: Vec<String>,
        /// Differing rows to list per table (all are counted).
        #[arg(long, default_value_t = 10)]
        max_keys: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drop the replication slot and the publication.
    Teardown {
        /// Also remove the replicated tables from the lake's catalog.
        #[arg(long)]
        lake_tables: bool,
    },
    /// A throwaway Postgres with a demo shop database and a live workload, replicated into
    /// a local lake while you watch.
    Quickstart {
        /// Where to put the demo (Postgres data, lake, config).
        #[arg(long, default_value = "walden-quickstart")]
        dir: PathBuf,
        /// Number of orders in the demo database.
        #[arg(long, default_value_t = 100_000)]
        scale: u32,
        /// Seconds of the live phase (workload + streaming); 0 runs until Ctrl-C.
        #[arg(long, default_value_t = 0)]
        duration: u64,
    },
}

#[derive(Debug, clap::Args)]
struct Selection {
    /// Models to include (dbt syntax: `name`, `+name`, `name+`, `tag:x`, `path:dir`,
    /// `a,b` for intersection); several values are a union. Default: all.
    #[arg(short = 's', long = "select", num_args = 1..)]
    select: Vec<String>,
    /// Models to leave out (same syntax).
    #[arg(long, num_args = 1..)]
    exclude: Vec<String>,
    /// Variables for `var()` as a JSON object, over the project's and the config's.
    #[arg(long)]
    vars: Option<String>,
}

impl Selection {
    fn args(self) -> walden::models::SelectArgs {
        walden::models::SelectArgs {
            select: self.select,
            exclude: self.exclude,
            vars: self.vars,
        }
    }
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Build the selected models in dependency order from one lake snapshot, each with its
    /// tests; dependents of a failure are skipped. Exit code 1 on any error or failed test.
    Build {
        #[command(flatten)]
        selection: Selection,
        /// Rebuild incremental models from scratch.
        #[arg(long)]
        full_refresh: bool,
    },
    /// Run the data tests of the selected models against what is built.
    Test {
        #[command(flatten)]
        selection: Selection,
    },
    /// List the selected models (build order) and tests.
    Ls {
        #[command(flatten)]
        selection: Selection,
        #[arg(long)]
        json: bool,
    },
    /// Write the documentation site, manifest.json and catalog.json.
    Docs {
        /// Output directory.
        #[arg(long, default_value = "target/walden-docs")]
        out: PathBuf,
        #[arg(long)]
        vars: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `verify` keeps exit code 1 for "the lake differs"; its own failures are 2.
    let failure = if matches!(cli.command, Command::Verify { .. }) {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            failure
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Quickstart {
        dir,
        scale,
        duration,
    } = &cli.command
    {
        let duration = (*duration > 0).then(|| std::time::Duration::from_secs(*duration));
        walden::quickstart::run(dir, *scale, duration).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let loaded = walden::config::load(cli.config.as_deref())?;
    let config = &loaded.config;
    match cli.command {
        Command::Check => {
            let report = walden::run_check(config).await?;
            if !walden::print_check(&report) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Replicate {
            until_caught_up,
            resync,
            quiet,
        } => {
            if !until_caught_up {
                walden::serve_metrics(config);
            }
            walden::run_replicate(
                config,
                walden::ReplicateArgs {
                    until_caught_up,
                    resync,
                    show_progress: !quiet,
                },
            )
            .await?
        }
        Command::Serve => walden::serve::run_serve(config).await?,
        Command::Run => walden::serve::run_all(config).await?,
        Command::Mcp { principal } => walden::serve::run_mcp(config, &principal).await?,
        Command::Query { sql, format } => walden::run_query(config, &sql, format).await?,
        Command::Status => walden::run_status(config).await?,
        Command::Models { command } => match command {
            ModelsCommand::Build {
                selection,
                full_refresh,
            } => {
                return walden::models::run_build(config, &selection.args(), full_refresh, true)
                    .await;
            }
            ModelsCommand::Test { selection } => {
                return walden::models::run_build(config, &selection.args(), false, false).await;
            }
            ModelsCommand::Ls { selection, json } => {
                walden::models::run_ls(config, &selection.args(), json)?
            }
            ModelsCommand::Docs { out, vars } => {
                walden::models::run_docs(config, &out, vars.as_deref()).await?
            }
        },
        Command::Verify {
            tables,
            max_keys,
            json,
        } => {
            let args = walden::verify::VerifyArgs { tables, max_keys };
            let report = walden::verify::run_verify(config, &args).await?;
            if json {
                walden::verify::print_verify_json(&report)?;
                if !report.matches {
                    eprintln!("{}", walden::verify::differs_hint(&report));
                }
            } else {
                walden::verify::print_verify(&report);
            }
            if !report.matches {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Teardown { lake_tables } => walden::run_teardown(config, lake_tables).await?,
        Command::Quickstart { .. } => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}
