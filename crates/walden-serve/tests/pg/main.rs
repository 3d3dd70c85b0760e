#![allow(clippy::print_stderr)] // loud skip messages when a client is missing
//! The Postgres wire protocol front end driven by real clients: psql, psycopg 3, asyncpg
//! and the JDBC driver, against a small lake built in a temporary directory.
//!
//! Python clients run with `WALDEN_TEST_PYTHON` (an interpreter with psycopg and asyncpg);
//! JDBC with `/usr/share/java/postgresql.jar` (`apt-get install libpostgresql-jdbc-java`)
//! and `javac`/`java`. A test whose client is missing says so loudly and passes.
//! `mcp` drives the MCP endpoint with the `mcp` Python SDK (same interpreter).

mod clients;
mod guardrails;
mod lake;
mod mcp;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use walden_query::{AuditLog, LakeCatalog, Limits, Principal, QueryService, ServiceOptions};
use walden_serve::pg::PgServer;
use walden_serve::{Credentials, Principals};

pub const ALICE_PASSWORD: &str = "alice-secret";
pub const BOB_PASSWORD: &str = "bob-secret";
/// `dave`: a 2-second time limit, 5 rows, 2 concurrent queries (the guardrail list).
pub const DAVE_PASSWORD: &str = "dave-secret";
/// `erin`: a 2-second time limit, 2 concurrent queries, answers of any size.
pub const ERIN_PASSWORD: &str = "erin-secret";

/// A running server over a fresh lake.
pub struct Server {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub audit: AuditLog,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// The server with TLS from a PEM certificate and key.
    pub async fn start_with(tls: Option<(&Path, &Path)>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let lake = lake::build(&dir.path().join("warehouse")).await;
        let audit = AuditLog::open(&dir.path().join("audit.db"), Duration::from_secs(3600))
            .expect("audit log");
        let service = QueryService::new(
            LakeCatalog::new(lake),
            Some(audit.clone()),
            ServiceOptions {
                target_partitions: 2,
                ..Default::default()
            },
        )
        .expect("service");
        let alice = Principal::new("alice").with_limits(Limits {
            max_rows: 100_000,
            ..Default::default()
        });
        let bob = Principal::new("bob")
            .with_masked_column("public", "orders", "email")
            .with_row_filter("public", "customers", "region = 'eu'")
            .with_limits(Limits {
                max_rows: 5,
                ..Default::default()
            });
        let carol = Principal::new("carol");
        let dave = Principal::new("dave").with_limits(Limits {
            max_rows: 5,
            timeout: Duration::from_secs(2),
            max_concurrent_queries: 2,
            ..Default::default()
        });
        let erin = Principal::new("erin").with_limits(Limits {
            max_rows: u64::MAX,
            max_result_bytes: u64::MAX,
            timeout: Duration::from_secs(2),
            max_concurrent_queries: 2,
            ..Default::default()
        });
        let principals = Principals::new([
            Credentials {
                principal: Arc::new(alice),
                password: Some(ALICE_PASSWORD.into()),
                token: None,
            },
            Credentials {
                principal: Arc::new(bob),
                password: Some(BOB_PASSWORD.into()),
                token: None,
            },
            Credentials {
                principal: Arc::new(dave),
                password: Some(DAVE_PASSWORD.into()),
                token: None,
            },
            Credentials {
                principal: Arc::new(erin),
                password: Some(ERIN_PASSWORD.into()),
                token: None,
            },
            Credentials {
                principal: Arc::new(carol),
                password: None,
                token: Some("carol-token".into()),
            },
        ]);
        let server = PgServer::new(service, Arc::new(principals), tls).expect("server");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            port,
            dir,
            audit,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Audit records as (principal, sql, outcome).
    pub fn audit_rows(&self) -> Vec<(String, String, String)> {
        use datafusion::arrow::array::{Array, AsArray};
        let batch = self.audit.read(None, 10_000).expect("audit read");
        let col = |name: &str| {
            let c = batch.column_by_name(name).expect("column");
            let c =
                datafusion::arrow::compute::cast(c, &datafusion::arrow::datatypes::DataType::Utf8)
                    .expect("cast");
            let s = c.as_string::<i32>();
            (0..s.len())
                .map(|i| s.value(i).to_string())
                .collect::<Vec<_>>()
        };
        let p = col("principal");
        let q = col("sql");
        let o = col("outcome");
        p.into_iter()
            .zip(q)
            .zip(o)
            .map(|((p, q), o)| (p, q, o))
            .collect()
    }
}

/// Environment of a client process connecting as `user`.
pub fn pg_env(port: u16, user: &str, password: &str) -> HashMap<String, String> {
    HashMap::from([
        ("PGHOST".into(), "127.0.0.1".into()),
        ("PGPORT".into(), port.to_string()),
        ("PGUSER".into(), user.into()),
        ("PGPASSWORD".into(), password.into()),
        ("PGDATABASE".into(), "walden".into()),
        ("PGSSLMODE".into(), "disable".into()),
        ("PGCONNECT_TIMEOUT".into(), "10".into()),
    ])
}

pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}
