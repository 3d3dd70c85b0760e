//! Streaming change capture against a real Postgres: every kind of change, unchanged
//! TOAST values, tables without a primary key, TRUNCATE, slot safety, idle slots and a
//! graceful stop. Crashes and restarts are in `faults.rs`.

use walden::ReplicateArgs;
use walden::config::Config;
use walden_lake::Lake;

use crate::{assert_same, check_with_python_readers, config, database, slot, walden};

/// Streams until the lake holds the source as of now.
pub async fn catch_up(cfg: &Config) {
    walden::run_replicate(
        cfg,
        ReplicateArgs {
            until_caught_up: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("catching up: {e:#}"));
}

async fn exec(client: &tokio_postgres::Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", walden_testkit::pg_error(&e)));
}

fn lake_lsn(cfg: &Config) -> u64 {
    Lake::open(&cfg.lake.warehouse)
        .unwrap()
        .progress(slot(cfg))
        .unwrap()
        .expect("progress")
        .lsn
}

#[tokio::test(flavor = "multi_thread")]
async fn inserts_updates_deletes_and_every_type_stream_exactly() {
    let (_, url, client) = database("stream", crate::initial_sync::ALL_TYPES).await;
    exec(
        &client,
        "CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2));
         CREATE TABLE ledger (account int, entry_no int, amount numeric(12,2), PRIMARY KEY (account, entry_no));
         INSERT INTO accounts SELECT g, 'owner ' || g, g * 10 FROM generate_series(1, 100) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    walden::run_initial_sync(&cfg, false).await.unwrap();
    let copied_at = lake_lsn(&cfg);

    // Every type through the stream's text form: copies of the copied rows.
    exec(
        &client,
        "INSERT INTO all_types SELECT id + 100, c_bool, c_int2, c_int4, c_int8, c_oid, c_float4,
            c_float8, c_num, c_num_wide, c_num_free, c_num_huge, c_money, c_text, c_varchar,
            c_char, c_name, c_json, c_jsonb, c_bytea, c_date, c_time, c_ts, c_tstz, c_interval,
            c_uuid, c_mood, c_domain, c_short, c_inet, c_bits, c_timetz, c_int_arr, c_text_arr,
            c_num_arr, c_ts_arr, c_mood_arr, c_uuid_arr FROM all_types;
         UPDATE all_types SET c_text = c_text || '!' WHERE id = 1;
         DELETE FROM all_types WHERE id = 2;",
    )
    .await;
    // Plain changes, several to one key in one transaction, a primary-key change, a
    // transaction across two tables, and a rolled-back one.
    exec(
        &client,
        "UPDATE accounts SET balance = balance + 1 WHERE id <= 10;
         DELETE FROM accounts WHERE id BETWEEN 90 AND 95;
         BEGIN;
           UPDATE accounts SET balance = 0 WHERE id = 20;
           UPDATE accounts SET balance = balance + 5 WHERE id = 20;
           UPDATE accounts SET owner = 'renamed' WHERE id = 20;
           INSERT INTO accounts VALUES (1000, 'new', 1);
           UPDATE accounts SET balance = 2 WHERE id = 1000;
           DELETE FROM accounts WHERE id = 1000;
           INSERT INTO accounts VALUES (1000, 'again', 3);
         COMMIT;
         UPDATE accounts SET id = id + 10000 WHERE id BETWEEN 30 AND 39;
         UPDATE accounts SET id = 5000, owner = 'moved' WHERE id = 10030;
         BEGIN;
           UPDATE accounts SET balance = balance - 7 WHERE id = 50;
           INSERT INTO ledger VALUES (50, 1, -7), (60, 1, 7);
           UPDATE accounts SET balance = balance + 7 WHERE id = 60;
         COMMIT;
         BEGIN;
           DELETE FROM accounts;
           INSERT INTO ledger VALUES (1, 1, 1);
         ROLLBACK;",
    )
    .await;
    catch_up(&cfg).await;
    assert!(lake_lsn(&cfg) > copied_at);
    for t in ["all_types", "accounts", "ledger"] {
        assert_same(&client, &cfg, t).await;
    }

    // A second round on top of rows that now live in streamed files.
    exec(
        &client,
        "UPDATE accounts SET balance = balance * 2;
         DELETE FROM accounts WHERE id % 3 = 0;
         UPDATE ledger SET amount = -amount;
         UPDATE all_types SET c_int4 = 42 WHERE id > 100;",
    )
    .await;
    catch_up(&cfg).await;
    for t in ["accounts", "ledger", "all_types"] {
        assert_same(&client, &cfg, t).await;
    }
    check_with_python_readers(
        &cfg.lake.warehouse,
        &url,
        &["public.accounts", "public.ledger", "public.all_types"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_toast_values_are_kept() {
    // Values large and random enough to be stored out of line (TOAST), under both replica
    // identities.
    let (_, url, client) = database(
        "toast",
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text, tags text[]);
         CREATE TABLE docs_full (id int PRIMARY KEY, title text, body text);
         ALTER TABLE docs_full REPLICA IDENTITY FULL;
         CREATE FUNCTION big(seed int) RETURNS text LANGUAGE sql AS
           $$ SELECT string_agg(md5((seed * 1000 + g)::text), '') FROM generate_series(1, 400) g $$;
         INSERT INTO docs SELECT g, 'doc ' || g, big(g), ARRAY[big(g + 7)] FROM generate_series(1, 20) g;
         INSERT INTO docs_full SELECT g, 'doc ' || g, big(g) FROM generate_series(1, 20) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    walden::run_initial_sync(&cfg, false).await.unwrap();

    let round = |n: i32| {
        format!(
            "UPDATE docs SET title = title || ' v{n}' WHERE id <= 10;
             UPDATE docs_full SET title = title || ' v{n}' WHERE id <= 10;
             UPDATE docs SET body = NULL WHERE id = 11;
             UPDATE docs_full SET body = NULL WHERE id = 11;
             UPDATE docs SET body = big(1000 + {n}) WHERE id = 12;
             UPDATE docs_full SET body = big(1000 + {n}) WHERE id = 12;
             UPDATE docs SET id = id + 100 WHERE id = 13;
             UPDATE docs_full SET id = id + 100 WHERE id = 13;
             BEGIN;
               UPDATE docs SET title = 'a' WHERE id = 14;
               UPDATE docs SET title = 'b' WHERE id = 14;
               UPDATE docs SET id = 1014 WHERE id = 14;
               UPDATE docs SET title = 'c' WHERE id = 1014;
               UPDATE docs_full SET title = 'a' WHERE id = 14;
               UPDATE docs_full SET id = 1014 WHERE id = 14;
             COMMIT;
             INSERT INTO docs VALUES (2000 + {n}, 'fresh', big(2000 + {n}), NULL);
             UPDATE docs SET title = 'touched' WHERE id = 2000 + {n};"
        )
    };
    // Round 1: the old versions are in the initial copy's files (read from the lake).
    exec(&client, &round(1)).await;
    catch_up(&cfg).await;
    for t in ["docs", "docs_full"] {
        assert_same(&client, &cfg, t).await;
    }
    // Round 2: the old versions are in streamed files and position-deleted neighbours.
    exec(&client, &round(2)).await;
    catch_up(&cfg).await;
    for t in ["docs", "docs_full"] {
        assert_same(&client, &cfg, t).await;
    }
    // No body became NULL except the one set to NULL.
    let nulls = walden_query::QueryEngine::new(Lake::open(&cfg.lake.warehouse).unwrap())
        .sql("SELECT count(*) AS n FROM public.docs WHERE body IS NULL")
        .await
        .unwrap();
    let n = arrow::util::pretty::pretty_format_batches(&nulls)
        .unwrap()
        .to_string();
    assert!(n.contains("| 1 "), "{n}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_without_primary_key_keep_exact_duplicates_and_truncate_empties() {
    let (_, url, client) = database(
        "multiset",
        "CREATE TABLE events (kind text, n int, payload jsonb);
         ALTER TABLE events REPLICA IDENTITY FULL;
         INSERT INTO events SELECT 'k' || (g % 3), g % 5, '{\"x\": 1}' FROM generate_series(1, 60) g;
         CREATE TABLE parent (id int PRIMARY KEY, name text);
         CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES parent(id), v text);
         INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 10) g;
         INSERT INTO child SELECT g, 1 + g % 10, 'c' || g FROM generate_series(1, 50) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    walden::run_initial_sync(&cfg, false).await.unwrap();
    exec(
        &client,
        "DELETE FROM events WHERE ctid = (SELECT ctid FROM events WHERE kind = 'k1' AND n = 1 LIMIT 1);
         UPDATE events SET n = 100 WHERE ctid = (SELECT ctid FROM events WHERE kind = 'k2' AND n = 2 LIMIT 1);
         INSERT INTO events VALUES ('k0', 0, NULL), ('k0', 0, NULL), ('k0', 0, NULL);
         BEGIN;
           INSERT INTO events VALUES ('dup', 1, NULL), ('dup', 1, NULL);
           DELETE FROM events WHERE ctid = (SELECT ctid FROM events WHERE kind = 'dup' LIMIT 1);
         COMMIT;
         DELETE FROM events WHERE kind = 'k0' AND payload IS NULL;
         TRUNCATE parent, child;
         INSERT INTO parent VALUES (1, 'after');",
    )
    .await;
    catch_up(&cfg).await;
    for t in ["events", "parent", "child"] {
        assert_same(&client, &cfg, t).await;
    }
    exec(
        &client,
        "INSERT INTO child VALUES (1, 1, 'x');
         BEGIN;
           INSERT INTO child VALUES (2, 1, 'y');
           TRUNCATE parent CASCADE;
           INSERT INTO parent VALUES (5, 'five');
           INSERT INTO child VALUES (3, 5, 'z');
         COMMIT;
         UPDATE events SET n = n + 1 WHERE kind = 'k1';",
    )
    .await;
    catch_up(&cfg).await;
    for t in ["events", "parent", "child"] {
        assert_same(&client, &cfg, t).await;
    }
    check_with_python_readers(
        &cfg.lake.warehouse,
        &url,
        &["public.events", "public.parent", "public.child"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_tampered_or_foreign_slot_or_a_recreated_table_stops_with_the_way_out() {
    let (_, url, client) = database(
        "safety",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    let cfg_path = dir.path().join("walden.toml");
    let cfg_arg = cfg_path.to_str().unwrap();
    walden::run_initial_sync(&cfg, false).await.unwrap();
    let slot = slot(&cfg).to_string();

    // Someone else consumed changes from our slot. (The test cluster commits
    // asynchronously; this session flushes, so the slot can be advanced past the insert.)
    exec(
        &client,
        "SET synchronous_commit = on; INSERT INTO t VALUES (11, 'eleven')",
    )
    .await;
    client
        .batch_execute(&format!(
            "SELECT pg_replication_slot_advance('{slot}', pg_current_wal_lsn())"
        ))
        .await
        .unwrap();
    let (ok, out, err) = walden(&["replicate", "--until-caught-up", "-c", cfg_arg], &[]);
    assert!(!ok, "{out}\n{err}");
    assert!(
        err.contains("advanced") && err.contains("--resync"),
        "{err}"
    );
    // --resync copies again and streaming goes on from there.
    let (ok, out, err) = walden(
        &[
            "replicate",
            "--resync",
            "--until-caught-up",
            "--quiet",
            "-c",
            cfg_arg,
        ],
        &[],
    );
    assert!(ok, "{out}\n{err}");
    assert_same(&client, &cfg, "t").await;

    // The table dropped and created again under the same name.
    exec(
        &client,
        "DROP TABLE t; CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'new');",
    )
    .await;
    let (ok, _, err) = walden(&["replicate", "--until-caught-up", "-c", cfg_arg], &[]);
    assert!(!ok);
    assert!(
        err.contains("dropped and created again") && err.contains("--resync"),
        "{err}"
    );

    // The slot dropped.
    client
        .batch_execute(&format!("SELECT pg_drop_replication_slot('{slot}')"))
        .await
        .unwrap();
    let (ok, _, err) = walden(&["replicate", "--until-caught-up", "-c", cfg_arg], &[]);
    assert!(!ok);
    assert!(
        err.contains("no longer exists") && err.contains("--resync"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_slot_is_acknowledged_and_a_stop_flushes_and_acknowledges() {
    let (_, url, client) = database(
        "idle",
        "CREATE TABLE published (id int PRIMARY KEY, v text);
         INSERT INTO published VALUES (1, 'one');",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Only `published` is replicated; `other` is written but outside the publication.
    let cfg = config(dir.path(), &url, "tables = [\"public.published\"]");
    walden::run_initial_sync(&cfg, false).await.unwrap();
    exec(
        &client,
        "CREATE TABLE other (id int, pad text);
         INSERT INTO other SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g;",
    )
    .await;
    let after: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let after = walden_pg::parse_lsn(&after).unwrap();
    catch_up(&cfg).await;
    let info = walden_pg::slot_info(&client, slot(&cfg))
        .await
        .unwrap()
        .unwrap();
    assert!(
        info.confirmed_flush_lsn.unwrap() >= after,
        "the slot was not advanced past unpublished writes: {:?} < {after}",
        info.confirmed_flush_lsn
    );
    assert_eq!(info.confirmed_flush_lsn, Some(lake_lsn(&cfg)));

    // A running `walden replicate` stopped with SIGTERM commits what it has, acknowledges
    // it and exits 0.
    let cfg_path = dir.path().join("walden.toml");
    let mut child = std::process::Command::new(crate::walden_bin())
        .args(["replicate", "--quiet", "-c", cfg_path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    exec(
        &client,
        "INSERT INTO published VALUES (2, 'two'), (3, 'three')",
    )
    .await;
    // Wait until the running replicator has committed them (it is streaming, its signal
    // handling in place).
    let engine = walden_query::QueryEngine::new(Lake::open(&cfg.lake.warehouse).unwrap());
    let mut seen = false;
    for _ in 0..300 {
        let rows = engine
            .sql("SELECT count(*) AS n FROM public.published")
            .await
            .unwrap();
        let n = arrow::util::pretty::pretty_format_batches(&rows)
            .unwrap()
            .to_string();
        if n.contains("| 3 ") {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "the running replicator did not commit the inserts");
    exec(&client, "INSERT INTO published VALUES (4, 'four')").await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    // What it committed, it acknowledged: the slot and the lake agree.
    let info = walden_pg::slot_info(&client, slot(&cfg))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.confirmed_flush_lsn, Some(lake_lsn(&cfg)));
    // And whatever it had not received yet comes with the next run.
    catch_up(&cfg).await;
    assert_same(&client, &cfg, "published").await;
}

/// The README's first command: `walden quickstart` copies the demo shop, then streams a
/// live workload into the lake and shows it move.
#[test]
fn quickstart_streams_a_live_workload() {
    let dir = tempfile::tempdir().unwrap();
    let qs = dir.path().join("qs");
    let (ok, out, err) = walden(
        &[
            "quickstart",
            "--dir",
            qs.to_str().unwrap(),
            "--scale",
            "2000",
            "--duration",
            "8",
        ],
        &[],
    );
    assert!(ok, "{out}\n{err}");
    let lsns: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split("lake at ").nth(1))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(lsns.len() >= 2, "no live progress lines:\n{out}");
    assert_ne!(lsns.first(), lsns.last(), "the lake did not move:\n{out}");
    assert!(out.contains("workload transactions ran"), "{out}");
    assert!(
        out.contains("orders: delivered"),
        "no order counts from the lake:\n{out}"
    );
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The metric `name` (with labels as written) from a Prometheus text page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_replicator_serves_its_metrics() {
    let (_, url, client) = database(
        "metrics",
        "CREATE TABLE m (id int PRIMARY KEY, v int); INSERT INTO m VALUES (1, 1);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    walden::run_initial_sync(&cfg, false).await.unwrap();
    let port = walden_testkit::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    crate::extend_config(dir.path(), &format!("[serve]\nhttp_listen = \"{addr}\""));
    let toml = dir.path().join("walden.toml");
    let mut child = std::process::Command::new(crate::walden_bin())
        .args(["replicate", "--quiet", "-c", toml.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    exec(
        &client,
        "INSERT INTO m SELECT g, g FROM generate_series(2, 101) g; UPDATE m SET v = 0 WHERE id <= 10;",
    )
    .await;
    let mut page = String::new();
    let mut changes = None;
    for _ in 0..300 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        page = http_get(&addr, "/metrics").unwrap_or_default();
        changes = metric(&page, "walden_changes_total{table=\"public.m\"}");
        // Counters move after the commit, gauges after the acknowledgement.
        if changes.is_some_and(|c| c >= 110.0)
            && metric(&page, "walden_replication_lag_seconds").is_some()
            && metric(&page, "walden_commits_total").is_some()
            && metric(&page, "walden_index_memory_bytes").is_some()
        {
            break;
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    assert_eq!(changes, Some(110.0), "{page}");
    for name in [
        "walden_commits_total",
        "walden_lake_lsn",
        "walden_replication_lag_bytes",
        "walden_replication_lag_seconds",
        "walden_index_memory_bytes",
        "walden_buffered_bytes",
    ] {
        assert!(metric(&page, name).is_some(), "{name} missing:\n{page}");
    }
    assert!(page.contains("walden_flush_duration_seconds"), "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_value_that_does_not_fit_stops_with_its_column_and_commits_nothing() {
    let (_, url, client) = database(
        "nofit",
        "CREATE TABLE n (id int PRIMARY KEY, v numeric); INSERT INTO n VALUES (1, 1.5);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    walden::run_initial_sync(&cfg, false).await.unwrap();
    let before = lake_lsn(&cfg);
    // Eleven fractional digits do not fit the default decimal(38,10).
    exec(
        &client,
        "INSERT INTO n VALUES (2, 2); INSERT INTO n VALUES (3, 0.12345678901);",
    )
    .await;
    let err = walden::run_replicate(
        &cfg,
        ReplicateArgs {
            until_caught_up: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("public.n.v"), "{msg}");
    assert!(
        msg.contains("0.12345678901") && msg.contains("without rounding"),
        "{msg}"
    );
    // The transaction before it may be committed; the failing one is not, nor acknowledged.
    let after = lake_lsn(&cfg);
    let info = walden_pg::slot_info(&client, slot(&cfg))
        .await
        .unwrap()
        .unwrap();
    assert!(info.confirmed_flush_lsn.unwrap() <= after && after >= before);
    let rows = walden_query::QueryEngine::new(Lake::open(&cfg.lake.warehouse).unwrap())
        .sql("SELECT count(*) AS n FROM public.n WHERE id = 3")
        .await
        .unwrap();
    let n = arrow::util::pretty::pretty_format_batches(&rows)
        .unwrap()
        .to_string();
    assert!(n.contains("| 0 "), "{n}");

    // The documented way out: store the column as text and copy again.
    let cfg_path = dir.path().join("walden.toml");
    let (ok, _, err) = walden(
        &[
            "teardown",
            "--lake-tables",
            "-c",
            cfg_path.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    let cfg = config(
        dir.path(),
        &url,
        "column_types = { \"public.n.v\" = \"string\" }",
    );
    catch_up(&cfg).await;
    assert_same(&client, &cfg, "n").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_heartbeat_emits_logical_messages_while_streaming() {
    let (db, url, client) = database(
        "heartbeat",
        "CREATE TABLE quiet (id int PRIMARY KEY); INSERT INTO quiet VALUES (1);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "heartbeat_interval_ms = 200");
    catch_up(&cfg).await;
    // A second slot on this database shows every logical message emitted in it.
    let watcher: String = format!("hb_{db}")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<String>()
        .to_lowercase();
    exec(
        &client,
        &format!("SELECT pg_create_logical_replication_slot('{watcher}', 'test_decoding')"),
    )
    .await;
    let replicator = crate::Replicator::start(dir.path(), &[]);
    let mut beats = 0i64;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        beats = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM pg_logical_slot_peek_changes('{watcher}', NULL, NULL)
                     WHERE data LIKE '%prefix: walden.heartbeat%'"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if beats >= 3 {
            break;
        }
    }
    let (status, _) = replicator.stop();
    exec(
        &client,
        &format!("SELECT pg_drop_replication_slot('{watcher}')"),
    )
    .await;
    assert!(beats >= 3, "only {beats} heartbeat messages");
    assert!(status.success());
    // Messages are not rows: the lake is unchanged.
    assert_same(&client, &cfg, "quiet").await;
}
