use walden_pg::Severity;
use walden_testkit::{LocalPgOptions, LocalPostgres};

use crate::{config, pg, walden};

fn has_error(report: &walden_pg::CheckReport, subject: &str, needle: &str) -> bool {
    report.findings.iter().any(|f| {
        f.severity == Severity::Error
            && f.subject == subject
            && (f.message.contains(needle) || f.fix.as_deref().unwrap_or("").contains(needle))
    })
}

/// `walden check` names every unsafe condition with its fix, and replicate refuses them
/// without touching the primary.
#[tokio::test(flavor = "multi_thread")]
async fn check_reports_each_unsafe_condition() {
    let pg = pg();
    let (db, _) = pg.fresh_database("check").await.unwrap();
    let admin = pg.connect(&db).await.unwrap();
    admin
        .batch_execute(
            "CREATE TABLE good (id int PRIMARY KEY);
             CREATE TABLE no_key (a int);
             CREATE TABLE no_key_full (a int); ALTER TABLE no_key_full REPLICA IDENTITY FULL;
             CREATE TABLE nothing (id int PRIMARY KEY); ALTER TABLE nothing REPLICA IDENTITY NOTHING;
             CREATE TABLE secret (id int PRIMARY KEY);
             CREATE TABLE odd (id int PRIMARY KEY, shape polygon);
             DROP ROLE IF EXISTS plain_check; CREATE ROLE plain_check LOGIN;
             GRANT SELECT ON good, no_key, no_key_full, nothing, odd TO plain_check;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://plain_check@127.0.0.1:{}/{db}", pg.port());
    let cfg = config(dir.path(), &url, "");
    let report = walden::run_check(&cfg).await.unwrap();
    assert!(
        has_error(&report, "role", "WITH REPLICATION"),
        "{report:#?}"
    );
    assert!(
        has_error(&report, "public.no_key", "REPLICA IDENTITY FULL"),
        "{report:#?}"
    );
    assert!(
        has_error(&report, "public.nothing", "REPLICA IDENTITY NOTHING"),
        "{report:#?}"
    );
    assert!(
        has_error(&report, "public.secret", "GRANT SELECT"),
        "{report:#?}"
    );
    assert!(
        has_error(&report, "public.odd.shape", "column_types"),
        "{report:#?}"
    );
    assert!(
        has_error(&report, "publication", "GRANT CREATE"),
        "{report:#?}"
    );
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.subject == "public.no_key_full" && f.message.contains("REPLICA IDENTITY")),
        "REPLICA IDENTITY FULL without a key is safe"
    );
    assert!(
        has_error(&report, "public.good", "does not own"),
        "{report:#?}"
    );

    // As a superuser only the table-level problems remain, and replicate refuses them
    // without creating a publication that would break UPDATE/DELETE on the primary.
    let cfg = config(
        dir.path(),
        &pg.url(&db),
        "tables = [\"public.*\", \"!public.odd\", \"!public.secret\"]",
    );
    let err = walden::run_initial_sync(&cfg, false).await.unwrap_err();
    assert!(format!("{err:#}").contains("preflight"));
    assert!(
        walden_pg::publication_info(&admin, "walden")
            .await
            .unwrap()
            .is_none()
    );
    // Excluding the unsafe tables makes it pass.
    let cfg = config(
        dir.path(),
        &pg.url(&db),
        "tables = [\"public.*\", \"!public.odd\", \"!public.no_key\", \"!public.nothing\"]",
    );
    let outcome = walden::run_initial_sync(&cfg, false).await.unwrap();
    let mut names: Vec<String> = outcome.tables.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        ["public.good", "public.no_key_full", "public.secret"]
    );
    let publ = walden_pg::publication_info(&admin, "walden")
        .await
        .unwrap()
        .unwrap();
    assert!(!publ.all_tables);
    assert_eq!(
        publ.tables,
        ["public.good", "public.no_key_full", "public.secret"]
    );
}

/// wal_level is checked with the exact setting and the need for a restart.
#[tokio::test(flavor = "multi_thread")]
async fn check_reports_wal_level() {
    let replica = LocalPostgres::start(LocalPgOptions {
        data_dir: None,
        settings: vec![("wal_level".into(), "replica".into())],
    })
    .unwrap();
    replica.create_database("w").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &replica.url("w"), "");
    let report = walden::run_check(&cfg).await.unwrap();
    assert!(has_error(&report, "wal_level", "restart"), "{report:#?}");
    assert!(
        has_error(&report, "wal_level", "wal_level = logical"),
        "{report:#?}"
    );
    // The binary exits non-zero and says so.
    let (ok, out, _) = walden(
        &[
            "--config",
            dir.path().join("walden.toml").to_str().unwrap(),
            "check",
        ],
        &[],
    );
    assert!(!ok);
    assert!(out.contains("FAIL wal_level"), "{out}");
}

/// Bad input: each gets a clear message naming what is wrong.
#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A config typo names the key.
    let cfg = dir.path().join("typo.toml");
    std::fs::write(
        &cfg,
        "[source]\nurl = \"postgres://a@127.0.0.1/b\"\npublicaton = \"x\"\n",
    )
    .unwrap();
    let (ok, _, err) = walden(&["--config", cfg.to_str().unwrap(), "check"], &[]);
    assert!(!ok);
    assert!(
        err.contains("publicaton") && err.contains("typo.toml"),
        "{err}"
    );
    // A wrong type names the key.
    std::fs::write(&cfg, "[lake]\nflush_interval_ms = \"soon\"\n").unwrap();
    let (ok, _, err) = walden(
        &["--config", cfg.to_str().unwrap(), "query", "SELECT 1"],
        &[],
    );
    assert!(!ok && err.contains("lake.flush_interval_ms"), "{err}");
    // Environment overrides apply (and are validated) per key.
    let (ok, _, err) = walden(
        &["check"],
        &[
            ("WALDEN__SOURCE__URL", "postgres://a@127.0.0.1:1/b"),
            ("WALDEN__SOURCE__TABLES", "[\"nodot\"]"),
        ],
    );
    assert!(!ok && err.contains("source.tables"), "{err}");
    // A missing config file names the path.
    let (ok, _, err) = walden(&["--config", "/nonexistent/walden.toml", "check"], &[]);
    assert!(!ok && err.contains("/nonexistent/walden.toml"), "{err}");
    // An unreachable source fails within the connect timeout with the target.
    let port = walden_testkit::free_port().unwrap();
    let started = std::time::Instant::now();
    let (ok, _, err) = walden(
        &["check"],
        &[
            (
                "WALDEN__SOURCE__URL",
                &format!("postgres://walden@127.0.0.1:{port}/db"),
            ),
            ("WALDEN__SOURCE__CONNECT_TIMEOUT_MS", "2000"),
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("cannot connect") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    // A server that accepts the connection but never answers times out within the
    // connect timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let (ok, _, err) = walden(
        &["check"],
        &[
            (
                "WALDEN__SOURCE__URL",
                &format!("postgres://walden@127.0.0.1:{silent_port}/db"),
            ),
            ("WALDEN__SOURCE__CONNECT_TIMEOUT_MS", "1000"),
        ],
    );
    assert!(!ok && err.contains("no answer within 1000 ms"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    drop(silent);
    // A lake path that cannot be written names the path.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let pg = pg();
    let (ok, _, err) = walden(
        &["replicate", "--quiet"],
        &[
            ("WALDEN__SOURCE__URL", &pg.url("postgres")),
            (
                "WALDEN__LAKE__WAREHOUSE",
                file.join("lake").to_str().unwrap(),
            ),
        ],
    );
    assert!(!ok && err.contains("not-a-dir"), "{err}");
    // Querying a lake that does not exist says what to do.
    let (ok, _, err) = walden(
        &["query", "SELECT 1"],
        &[(
            "WALDEN__LAKE__WAREHOUSE",
            dir.path().join("nolake").to_str().unwrap(),
        )],
    );
    assert!(!ok && err.contains("walden replicate"), "{err}");
}
