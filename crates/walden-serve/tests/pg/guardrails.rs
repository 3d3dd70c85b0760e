//! The guardrail list over the Postgres wire protocol, with `tokio-postgres` as the client:
//! every hostile or careless query through both the simple and the extended protocol,
//! wrong passwords, never-closed portals, clients that stop reading, and TLS.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::{ALICE_PASSWORD, DAVE_PASSWORD, ERIN_PASSWORD, Server};

fn config(port: u16, user: &str, password: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname("walden")
        .connect_timeout(Duration::from_secs(10));
    c
}

async fn connect(port: u16, user: &str, password: &str) -> Client {
    let (client, conn) = config(port, user, password)
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"));
    tokio::spawn(conn);
    client
}

/// The error text of a failed query, SQLSTATE first.
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

async fn one(client: &Client) -> String {
    let rows = client
        .simple_query("SELECT 1 AS one")
        .await
        .expect("the connection is still usable");
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_guardrail_over_both_protocols_and_the_server_stays_up() {
    let server = Server::start().await;
    let port = server.port;
    let dave = connect(port, "dave", DAVE_PASSWORD).await;
    let alice = connect(port, "alice", ALICE_PASSWORD).await;

    let huge = format!("SELECT {}", "1 + ".repeat(5000) + "1");
    let deep = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    let big_text = format!("SELECT '{}'", "x".repeat(10 << 20));
    let cases: Vec<(&str, String, &str)> = vec![
        ("ddl", "CREATE TABLE public.x (a int)".into(), "42501"),
        ("drop", "DROP TABLE public.orders".into(), "42501"),
        ("dml", "DELETE FROM public.orders".into(), "42501"),
        (
            "insert",
            "INSERT INTO public.orders (id) VALUES (100)".into(),
            "42501",
        ),
        ("copy", "COPY public.orders TO '/tmp/walden-x.csv'".into(), ""),
        ("multi", "SELECT 1; SELECT 2".into(), "statement"),
        (
            "settings",
            "SET datafusion.execution.batch_size = 1".into(),
            "refused",
        ),
        ("file", "SELECT * FROM '/etc/passwd'".into(), ""),
        ("url", "SELECT * FROM 'http://example.com/x.csv'".into(), ""),
        (
            "external",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'".into(),
            "",
        ),
        (
            "repeat bomb",
            "SELECT repeat('x', 2000000000)".into(),
            "memory limit",
        ),
        (
            "pad bomb",
            "SELECT lpad('x', 2000000000)".into(),
            "memory limit",
        ),
        (
            "range bomb",
            "SELECT range(1, 10000000000)".into(),
            "memory limit",
        ),
        ("operator chain", huge, "chains more than"),
        ("nesting", deep, ""),
        ("10 MB text", big_text, "max_query_bytes"),
        (
            "recursive CTE",
            "WITH RECURSIVE t AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM t) \
             SELECT count(*) FROM t"
                .into(),
            "57014",
        ),
        (
            "generate_series",
            "SELECT count(*) FROM generate_series(1, 100000000000)".into(),
            "57014",
        ),
        (
            "regex bomb",
            "SELECT regexp_like(customer, '(a{1000}){1000}') FROM public.orders".into(),
            "",
        ),
        (
            "cartesian aggregate",
            "SELECT sum(a.value * b.value) FROM generate_series(1, 100000) a, generate_series(1, 100000) b"
                .into(),
            "57014",
        ),
    ];
    for (what, sql, says) in &cases {
        // The simple protocol.
        let e = dave
            .simple_query(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: simple query succeeded"));
        let why = error_text(&e);
        assert!(
            why.contains(says),
            "{what} (simple): {says:?} not in {why:?}"
        );
        assert_eq!(one(&dave).await, "1", "after {what}");
        // The extended protocol (Parse/Bind/Execute).
        let e = dave
            .query(sql.as_str(), &[])
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: extended query succeeded"));
        let why = error_text(&e);
        assert!(
            why.contains(says),
            "{what} (extended): {says:?} not in {why:?}"
        );
        assert_eq!(one(&dave).await, "1", "after {what}");
        // Other clients are unaffected.
        assert_eq!(one(&alice).await, "1", "alice after {what}");
    }
    assert!(!std::path::Path::new("/tmp/walden-x.csv").exists());

    // Bounded, not refused: a cartesian join and an infinite recursive CTE stop at the
    // row cap (and say so in a notice, checked with psql elsewhere).
    for sql in [
        "SELECT * FROM public.orders a, public.orders b",
        "WITH RECURSIVE t AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM t) SELECT n FROM t",
    ] {
        let rows = dave.query(sql, &[]).await.expect(sql);
        assert_eq!(rows.len(), 5, "{sql}");
        let rows = dave.simple_query(sql).await.expect(sql);
        let n = rows
            .iter()
            .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
            .count();
        assert_eq!(n, 5, "{sql}");
    }

    // Wrong passwords and unknown users: refused with 28P01, audited, nothing else.
    for (user, password) in [("dave", "wrong"), ("nobody", "x"), ("carol", "")] {
        let e = config(port, user, password)
            .connect(NoTls)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} logged in with a wrong password"));
        assert!(error_text(&e).contains("28P01"), "{user}: {e}");
    }
    assert_eq!(one(&dave).await, "1");

    // Every refusal of the list is on record for dave, each with both protocols.
    let audit = server.audit_rows();
    let refused = audit
        .iter()
        .filter(|(p, _, o)| p == "dave" && o != "ok")
        .count();
    assert!(
        refused >= 2 * cases.len(),
        "{refused} of {}",
        2 * cases.len()
    );
    let logins = audit
        .iter()
        .filter(|(_, q, o)| q == "(login)" && o == "refused")
        .count();
    assert_eq!(logins, 3, "{audit:?}");
    server.stop().await;
}

/// A portal left suspended holds a query slot only until the principal's time limit:
/// then its plan and slot are freed, and executing it again says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_closed_portals_are_freed_at_the_time_limit() {
    let server = Server::start().await;
    let port = server.port;
    let mut holder = connect(port, "dave", DAVE_PASSWORD).await;
    let other = connect(port, "dave", DAVE_PASSWORD).await;
    let tx = holder.transaction().await.expect("begin");
    let sql = "SELECT * FROM generate_series(1, 100000000000)";
    let first = tx.bind(sql, &[]).await.expect("bind");
    let second = tx.bind(sql, &[]).await.expect("bind");
    assert_eq!(tx.query_portal(&first, 1).await.expect("execute").len(), 1);
    assert_eq!(tx.query_portal(&second, 1).await.expect("execute").len(), 1);
    // Both of dave's slots are held by suspended portals.
    let e = other
        .simple_query("SELECT 1")
        .await
        .expect_err("a third query");
    assert!(
        error_text(&e).contains("max_concurrent_queries"),
        "{}",
        error_text(&e)
    );
    // Past the time limit the slots come back while the portals are still open.
    let started = Instant::now();
    loop {
        match other.simple_query("SELECT 1").await {
            Ok(_) => break,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                assert!(error_text(&e).contains("max_concurrent_queries"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the slots never came back: {}", error_text(&e)),
        }
    }
    let e = tx
        .query_portal(&first, 1)
        .await
        .expect_err("the expired portal");
    let why = error_text(&e);
    assert!(why.contains("57014") && why.contains("time limit"), "{why}");
    drop(tx);
    assert_eq!(one(&other).await, "1");
    server.stop().await;
}

/// A socket that stops reading once `stalled` is set: a client that asked for a large
/// answer and never reads it.
struct Stalling {
    inner: tokio::net::TcpStream,
    stalled: Arc<AtomicBool>,
}

impl AsyncRead for Stalling {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.stalled.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stalling {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Clients that stop reading a large answer hold their query slots only until the time
/// limit, and never slow anyone else down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_are_bounded_by_the_time_limit() {
    let server = Server::start().await;
    let port = server.port;
    // 160,000 rows of 28 columns: far more than the socket buffers hold.
    let sql = "SELECT * FROM public.orders a, public.orders b, public.orders c, public.orders d";
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let flag = Arc::new(AtomicBool::new(false));
        let stream = Stalling {
            inner: socket,
            stalled: flag.clone(),
        };
        let (client, conn) = config(port, "erin", ERIN_PASSWORD)
            .connect_raw(stream, NoTls)
            .await
            .expect("erin connects");
        let conn = tokio::spawn(conn);
        assert_eq!(one(&client).await, "1");
        flag.store(true, Ordering::SeqCst);
        let query = tokio::spawn(async move {
            let _ = client.simple_query(sql).await;
        });
        stalled.push((query, conn));
    }
    let erin = connect(port, "erin", ERIN_PASSWORD).await;
    let alice = connect(port, "alice", ALICE_PASSWORD).await;
    // Both slots end up held by the stalled answers...
    let started = Instant::now();
    loop {
        match erin.simple_query("SELECT 1").await {
            Err(e) if error_text(&e).contains("max_concurrent_queries") => break,
            _ if started.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("the stalled clients never held both slots: {other:?}"),
        }
    }
    // ...while everyone else is served.
    assert_eq!(one(&alice).await, "1");
    // After the time limit the slots are free again, though the clients still do not read.
    let started = Instant::now();
    loop {
        match erin.simple_query("SELECT 1").await {
            Ok(_) => break,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                assert!(error_text(&e).contains("max_concurrent_queries"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the slots never came back: {}", error_text(&e)),
        }
    }
    assert!(stalled.iter().all(|(q, _)| !q.is_finished()));
    for (query, conn) in stalled {
        query.abort();
        conn.abort();
    }
    assert_eq!(one(&alice).await, "1");
    // Each stalled answer is audited once its connection ends (the server's write fails
    // when the client goes away); that record is written in the background.
    let started = Instant::now();
    loop {
        let audit = server.audit_rows();
        let errors = audit
            .iter()
            .filter(|(p, q, o)| p == "erin" && q == sql && o == "error")
            .count();
        if errors == 2 {
            break;
        }
        assert!(
            errors < 2 && started.elapsed() < Duration::from_secs(30),
            "the stalled answers were not audited once each: {audit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

/// TLS from the configured certificate: psql with `sslmode=require` gets an encrypted
/// session and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr)]
async fn tls_sessions_with_the_configured_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let made = tokio::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .await;
    match made {
        Ok(out) if out.status.success() => {}
        other => {
            eprintln!(
                "\n!!!!! SKIPPED: openssl could not make a test certificate: {other:?} !!!!!\n"
            );
            return;
        }
    }
    let server = Server::start_with(Some((&cert, &key))).await;
    let mut env = crate::pg_env(server.port, "alice", ALICE_PASSWORD);
    env.insert("PGSSLMODE".into(), "require".into());
    let out = tokio::process::Command::new("/usr/bin/psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            r"\conninfo",
            "-c",
            "SELECT count(*) FROM public.orders",
        ])
        .envs(env)
        .output()
        .await
        .expect("psql runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SSL connection"), "{stdout}");
    assert!(stdout.trim_end().ends_with("20"), "{stdout}");
    server.stop().await;
}
