//! walden's integration tests: a real Postgres (one throwaway cluster per test binary,
//! a fresh database per test), the real `walden` binary where the process matters, and
//! independent readers (pyiceberg, DuckDB) through `tests/interop/check_lake.py`.

mod compare;
mod faults;
mod initial_sync;
mod maintenance;
mod mcp;
mod models;
mod preflight;
mod schema;
mod serve;
mod streaming;
mod verify;

use std::path::{Path, PathBuf};
use std::process::Command;

use walden::config::{Config, load};
use walden_testkit::LocalPostgres;

pub fn slot(config: &Config) -> &str {
    &config.source.as_ref().expect("a [source]").slot
}

/// The shared cluster. Also turns on logs for the in-process code when `WALDEN_TEST_LOG`
/// holds a filter (e.g. `walden_replicate=debug`).
pub fn pg() -> &'static LocalPostgres {
    static LOGS: std::sync::Once = std::sync::Once::new();
    LOGS.call_once(|| {
        if let Ok(filter) = std::env::var("WALDEN_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
    walden_testkit::shared()
}

/// A fresh database on the shared cluster with `sql` run in it: (name, URL, client).
pub async fn database(prefix: &str, sql: &str) -> (String, String, tokio_postgres::Client) {
    let (db, url) = pg().fresh_database(prefix).await.expect("a fresh database");
    let client = pg().connect(&db).await.expect("connecting");
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("setting up {db}: {}", walden_testkit::pg_error(&e)));
    (db, url, client)
}

/// The lake table `public.<table>` (as walden's engine reads it) equals Postgres' table
/// row by row.
pub async fn assert_same(client: &tokio_postgres::Client, cfg: &Config, table: &str) {
    let engine = walden_query::QueryEngine::new(
        walden_lake::Lake::open(&cfg.lake.warehouse).expect("the lake"),
    );
    let d = compare::diff(client, table, &engine, &format!("public.{table}")).await;
    assert!(
        d.is_empty(),
        "{table} differs from Postgres:\n{}",
        d.join("\n")
    );
}

/// A config for `url` with its lake in `dir`, plus extra TOML lines for `[source]`.
/// Replication slots are cluster-wide, so each lake directory gets its own slot name
/// (tests share one cluster and run in parallel).
pub fn config(dir: &Path, url: &str, source_extra: &str) -> Config {
    let path = dir.join("walden.toml");
    let slot: String = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("x")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_lowercase();
    std::fs::write(
        &path,
        format!(
            "[source]\nurl = \"{url}\"\nslot = \"walden_{slot}\"\n{source_extra}\n\n[lake]\nwarehouse = \"{}\"\n",
            dir.join("lake").display()
        ),
    )
    .expect("writing the config");
    load(Some(&path)).expect("loading the config").config
}

/// Appends `text` (keys of the last section, or whole new sections) to the config file
/// `config` wrote in `dir`, and loads it again.
pub fn extend_config(dir: &Path, text: &str) -> Config {
    let path = dir.join("walden.toml");
    let mut toml = std::fs::read_to_string(&path).expect("reading the config");
    toml.push('\n');
    toml.push_str(text);
    std::fs::write(&path, toml).expect("writing the config");
    load(Some(&path)).expect("loading the config").config
}

pub fn walden_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_walden"))
}

/// Runs the real binary with `args`; returns (success, stdout, stderr).
pub fn walden(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(walden_bin());
    cmd.args(args).env_remove("WALDEN_CONFIG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running walden");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// pyiceberg and DuckDB read `tables` of the lake and must see exactly Postgres' rows.
pub fn check_with_python_readers(lake: &Path, url: &str, tables: &[&str]) {
    let python = walden_testkit::python().expect("the test venv (scripts/python-env.sh)");
    let script = walden_testkit::repo_root().join("tests/interop/check_lake.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg("--catalog-db")
        .arg(lake.join("catalog.db"))
        .arg("--warehouse")
        .arg(lake)
        .arg("--pg")
        .arg(url.replace("postgres://", "postgresql://"))
        .arg("--readers")
        .arg("pyiceberg,duckdb");
    for t in tables {
        cmd.arg("--table").arg(t);
    }
    let out = cmd.output().expect("running check_lake.py");
    assert!(
        out.status.success(),
        "independent readers disagree with Postgres:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `walden replicate` running in the background on the config `config` wrote in `dir`,
/// its log in `dir/replicate.log`. Dropped without [`Replicator::stop`] (a failed
/// assertion), it is killed, so a failing test leaves nothing running.
pub struct Replicator {
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl Replicator {
    /// Starts it with `envs` (e.g. `WALDEN_LOG`).
    pub fn start(dir: &Path, envs: &[(&str, &str)]) -> Self {
        let log = dir.join("replicate.log");
        let mut cmd = Command::new(walden_bin());
        cmd.args(["replicate", "--quiet", "-c"])
            .arg(dir.join("walden.toml"))
            .env_remove("WALDEN_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("creating the replicator's log"));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Self {
            child: Some(cmd.spawn().expect("starting walden replicate")),
            log,
        }
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGTERM, then waits for it: its exit status and its whole log.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().expect("waiting for walden replicate");
        (status, self.log())
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
