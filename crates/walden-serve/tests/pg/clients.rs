use std::path::{Path, PathBuf};
use std::process::Output;

use tokio::process::Command;

use crate::{ALICE_PASSWORD, BOB_PASSWORD, Server, pg_env, tests_dir};

const PSQL: &str = "/usr/bin/psql";
const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// psql with `args`, unaligned, tuples only, no psqlrc.
async fn psql(port: u16, user: &str, password: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(PSQL);
    cmd.args(["-X", "-q", "-A", "-t", "-v", "VERBOSITY=verbose"])
        .args(args)
        .envs(pg_env(port, user, password))
        .kill_on_drop(true);
    if let Some(input) = stdin {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("script.sql");
        std::fs::write(&file, input).expect("script");
        cmd.arg("-f").arg(&file);
        let out = cmd.output().await.expect("psql runs");
        drop(dir);
        return out;
    }
    cmd.output().await.expect("psql runs")
}

pub fn python() -> Option<PathBuf> {
    match std::env::var_os("WALDEN_TEST_PYTHON") {
        Some(p) if Path::new(&p).exists() => Some(PathBuf::from(p)),
        _ => {
            eprintln!(
                "\n!!!!! SKIPPED: WALDEN_TEST_PYTHON is not set to a Python with psycopg and \
                 asyncpg (e.g. /work/main/.venv/bin/python); this client test did not run !!!!!\n"
            );
            None
        }
    }
}

/// Runs a Python script of `tests/` with the port; returns its JSON output.
async fn run_python(script: &str, port: u16) -> Option<serde_json::Value> {
    let python = python()?;
    let out = Command::new(python)
        .arg(tests_dir().join(script))
        .arg(port.to_string())
        .kill_on_drop(true)
        .output()
        .await
        .expect("python runs");
    assert!(out.status.success(), "{script} failed:\n{}", show(&out));
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    Some(serde_json::from_str(last).unwrap_or_else(|e| panic!("{script}: {e}\n{}", show(&out))))
}

/// pgcli (interactive client, prompt_toolkit) with its completion metadata queries on a
/// second connection; input is piped, so it runs the commands and exits at end of input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr)]
async fn pgcli_browses_and_queries() {
    let Some(python) = python() else { return };
    let pgcli = python.with_file_name("pgcli");
    if !pgcli.exists() {
        eprintln!(
            "\n!!!!! SKIPPED: no pgcli next to {} (scripts/python-env.sh installs it) !!!!!\n",
            python.display()
        );
        return;
    }
    let server = Server::start().await;
    let home = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "postgres://alice:{ALICE_PASSWORD}@127.0.0.1:{}/walden",
        server.port
    );
    let mut child = Command::new(&pgcli)
        .args(["--less-chatty", "-t", &url])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .env("TERM", "dumb")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("pgcli runs");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(
                b"SELECT 'total=' || CAST(sum(amount) AS VARCHAR) AS t FROM public.orders;\n\\d public.orders\n\\dt\n",
            )
            .await
            .expect("write");
    }
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .expect("pgcli exits at end of input")
    .expect("pgcli output");
    let stdout = text(&out.stdout);
    // sum(amount) over ids 1..=20 of (id * 1000 + 25) cents.
    assert!(stdout.contains("total=2105.00"), "{}", show(&out));
    assert!(
        stdout.contains("placed_at") && stdout.contains("timestamp with time zone"),
        "{}",
        show(&out)
    );
    assert!(stdout.contains("customers"), "{}", show(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_queries_and_refusals() {
    let server = Server::start().await;
    let port = server.port;

    let out = psql(port, "alice", ALICE_PASSWORD, &["-c", r"\dt"], None).await;
    assert!(out.status.success(), "{}", show(&out));
    let listed = text(&out.stdout);
    assert!(listed.contains("public|customers|table|"), "{}", show(&out));
    assert!(listed.contains("public|orders|table|"), "{}", show(&out));

    let out = psql(
        port,
        "alice",
        ALICE_PASSWORD,
        &["-c", r"\d public.orders"],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
    // Every column with its Postgres type, in order: pg_class and pg_attribute agree on
    // the table's oid, and types are the ones the protocol sends.
    let described = text(&out.stdout);
    let columns: Vec<(&str, &str)> = described
        .lines()
        .filter_map(|l| {
            let mut parts = l.split('|');
            Some((parts.next()?, parts.next()?))
        })
        .filter(|(name, _)| !name.contains(' '))
        .collect();
    assert_eq!(
        columns,
        [
            ("id", "bigint"),
            ("customer", "text"),
            ("amount", "numeric(10,2)"),
            ("placed_at", "timestamp with time zone"),
            ("day", "date"),
            ("paid", "boolean"),
            ("email", "text"),
        ],
        "{}",
        show(&out)
    );
    // The same twice: oids are stable between queries.
    let again = psql(
        port,
        "alice",
        ALICE_PASSWORD,
        &["-c", r"\d public.orders"],
        None,
    )
    .await;
    assert_eq!(text(&again.stdout), described);

    let out = psql(port, "alice", ALICE_PASSWORD, &["-c", r"\dn"], None).await;
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stdout).lines().any(|l| l.starts_with("public|")),
        "{}",
        show(&out)
    );

    let out = psql(
        port,
        "alice",
        ALICE_PASSWORD,
        &[
            "-c",
            "SELECT id, customer, amount, placed_at, day, paid FROM public.orders WHERE id = 3",
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        text(&out.stdout).trim(),
        // arrow-pg writes timestamptz text with microseconds (clients parse it).
        "3|customer-3|30.25|2024-01-01 03:00:00.000000+00|2024-01-04|f",
        "{}",
        show(&out)
    );

    // Two statements in one query (psql -c sends the string as one query).
    let out = psql(
        port,
        "alice",
        ALICE_PASSWORD,
        &["-c", "SELECT 1; SELECT 2"],
        None,
    )
    .await;
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("42501: refused: 2 statements in one query"),
        "{}",
        show(&out)
    );

    // Wrong password, unknown user and a principal without a password: the same answer.
    for (user, password) in [
        ("alice", "wrong"),
        ("mallory", "x"),
        ("carol", "carol-token"),
    ] {
        let out = psql(port, user, password, &["-c", "SELECT 1"], None).await;
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(
            text(&out.stderr).contains(&format!(
                "FATAL:  password authentication failed for user \"{user}\""
            )),
            "{}",
            show(&out)
        );
    }
    let out = psql(
        port,
        "alice",
        ALICE_PASSWORD,
        &["-d", "postgres", "-c", "SELECT 1"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("FATAL:  database \"postgres\" does not exist")
            && text(&out.stderr).contains("\"walden\""),
        "{}",
        show(&out)
    );

    let audit = server.audit_rows();
    for user in ["alice", "mallory", "carol"] {
        assert!(
            audit
                .iter()
                .any(|(p, q, o)| p == user && q == "(login)" && o == "refused"),
            "no refused login of {user} in {audit:?}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_statements_are_refused_and_the_connection_stays_usable() {
    let server = Server::start().await;
    let script = r"
CREATE TABLE public.x (a int);
INSERT INTO public.orders (id) VALUES (100);
DELETE FROM public.orders;
COPY public.orders TO STDOUT;
COPY (SELECT 1) TO '/tmp/walden-pg-test-copy.csv';
SELECT 1 \; SELECT 2;
SET datafusion.execution.batch_size = 1;
SET client_encoding = 'LATIN1';
BEGIN READ WRITE;
SHOW client_encoding;
SET application_name = 'hostile';
SHOW application_name;
BEGIN;
SELECT count(*) FROM public.orders;
SELECT * FROM public.nope;
SELECT 1;
ROLLBACK;
SELECT count(*) FROM public.orders;
";
    let out = psql(server.port, "alice", ALICE_PASSWORD, &[], Some(script)).await;
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR:")).collect();
    assert_eq!(errors.len(), 11, "{}", show(&out));
    for (i, expected) in [
        "42501: refused",
        "42501: refused",
        "42501: refused",
        "ERROR:",
        "ERROR:",
        "42501: refused: 2 statements in one query",
        "42501: SET datafusion.execution.batch_size refused",
        "22023: client_encoding LATIN1 is not supported",
        "25006: walden is read-only",
        "42P01: Error during planning: table 'walden.public.nope' not found",
        "25P02: current transaction is aborted",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            errors[i].contains(expected),
            "error {i}: {}\n{}",
            errors[i],
            show(&out)
        );
    }
    assert!(!std::path::Path::new("/tmp/walden-pg-test-copy.csv").exists());
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        vec!["UTF8", "hostile", "20", "20"],
        "{}",
        show(&out)
    );
    let audit = server.audit_rows();
    assert!(
        audit.iter().any(|(p, q, o)| p == "alice"
            && q.starts_with("SET datafusion.execution.batch_size")
            && o == "refused"),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|(p, q, o)| p == "alice" && q.starts_with("SET application_name") && o == "ok"),
        "{audit:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_principal_gets_a_truncation_notice_masks_and_row_filters() {
    let server = Server::start().await;
    let script = "SELECT id FROM public.orders ORDER BY id;
SELECT coalesce(email, '<masked>') FROM public.orders WHERE id = 1;
SELECT name FROM public.customers ORDER BY id;
";
    let out = psql(server.port, "bob", BOB_PASSWORD, &[], Some(script)).await;
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        vec!["1", "2", "3", "4", "5", "<masked>", "Ada", "Chiara"],
        "{}",
        show(&out)
    );
    let notices: Vec<String> = text(&out.stderr)
        .lines()
        .filter(|l| l.contains("NOTICE:"))
        .map(str::to_string)
        .collect();
    assert_eq!(notices.len(), 1, "{}", show(&out));
    assert!(
        notices[0].contains(
            "NOTICE:  01000: the answer was truncated at this principal's cap of 5 rows \
             (max_rows): 5 rows were sent"
        ),
        "{}",
        show(&out)
    );
    assert!(
        text(&out.stderr).contains("HINT:  to see the rest"),
        "{}",
        show(&out)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_prepared_statements_named_cursors_binary_results() {
    let server = Server::start().await;
    let Some(out) = run_python("pg_psycopg.py", server.port).await else {
        return;
    };
    let expected = serde_json::json!({
        "prepared": [
            ["3", "customer-3", "30.25", "2024-01-01 03:00:00+00:00", "2024-01-04", "False"],
            ["7", "customer-3", "70.25", "2024-01-01 07:00:00+00:00", "2024-01-08", "False"]
        ],
        "binary": [
            [1, "10.25", "2024-01-01T01:00:00+00:00", "2024-01-02", false, "customer-1"],
            [2, "20.25", "2024-01-01T02:00:00+00:00", "2024-01-03", true, "customer-2"]
        ],
        "binary_types": ["int", "Decimal", "datetime", "date", "bool", "str"],
        "show_app": "psy",
        "server_version": 150008,
        "errors": ["42P01", "42703", "42601"],
        "after_errors": 1,
        "named_chunks": [[3, 4, 5, 6, 7, 8, 9], [10, 11, 12, 13, 14, 15, 16], [17, 18, 19, 20]],
        "named_binary": [[1, "10.25"], [2, "20.25"], [3, "30.25"]],
        "status_after": "IDLE",
        "bob_rows": [1, 2, 3, 4, 5],
        "bob_notices": [["NOTICE", "01000"]],
        "bob_email": null,
        "bob_customers": ["Ada", "Chiara"]
    });
    assert_eq!(out, expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_cancel_stops_the_running_query_while_others_are_served() {
    let server = Server::start().await;
    let Some(out) = run_python("pg_cancel.py", server.port).await else {
        return;
    };
    assert_eq!(out["long"], "57014", "{out}");
    assert_eq!(out["other"], 20, "{out}");
    assert_eq!(out["after"], 42, "{out}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_binary_results_prepared_statements_type_round_trip() {
    let server = Server::start().await;
    let Some(out) = run_python("pg_asyncpg.py", server.port).await else {
        return;
    };
    let expected = serde_json::json!({
        "fetch": [
            [1, "customer-1", "10.25", "2024-01-01T01:00:00+00:00", "2024-01-02", false],
            [2, "customer-2", "20.25", "2024-01-01T02:00:00+00:00", "2024-01-03", true]
        ],
        "prepared": [11, 5],
        "param_types": ["numeric"],
        "result_types": ["int8"],
        "cast_params": [6, 8, "1.50"],
        "roundtrip": [[3, "customer-3", "30.25", "2024-01-01T03:00:00+00:00", "2024-01-04", false]],
        "cursor": (1..=20).collect::<Vec<i64>>()
    });
    assert_eq!(out, expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_metadata_prepared_statements_and_fetch_size() {
    let server = Server::start().await;
    if !Path::new(JDBC_JAR).exists() || which("javac").is_none() || which("java").is_none() {
        eprintln!(
            "\n!!!!! SKIPPED: the JDBC test needs {JDBC_JAR} (apt-get install \
             libpostgresql-jdbc-java) and javac/java; it did not run !!!!!\n"
        );
        return;
    }
    let build = tempfile::tempdir().expect("temp dir");
    let out = Command::new("javac")
        .arg("-d")
        .arg(build.path())
        .arg(tests_dir().join("PgJdbc.java"))
        .output()
        .await
        .expect("javac runs");
    assert!(out.status.success(), "javac: {}", show(&out));
    let classpath = format!("{}:{JDBC_JAR}", build.path().display());
    let out = Command::new("java")
        .args(["-cp", &classpath, "PgJdbc", &server.port.to_string()])
        .kill_on_drop(true)
        .output()
        .await
        .expect("java runs");
    assert!(out.status.success(), "java: {}", show(&out));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    let expected: Vec<String> = [
        "table public.customers",
        "table public.orders",
        "column id int8 -5",
        "column customer text 12",
        "column amount numeric 2",
        "column placed_at timestamptz 93",
        "column day date 91",
        "column paid bool -7",
        "column email text 12",
        "prepared 4 customer-4 40.25",
        "prepared 5 customer-1 50.25",
        "prepared 6 customer-2 60.25",
        "prepared 7 customer-3 70.25",
        "prepared 8 customer-4 80.25",
        "prepared 9 customer-1 90.25",
        "fetched 20 210",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(lines, expected, "{}", show(&out));
    server.stop().await;
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.exists())
    })
}
