//! `walden verify`: source and lake compared at one LSN. A lake that holds the source
//! matches (also while the source keeps writing); a lake corrupted on purpose through the
//! lake's own APIs differs in exactly the rows that were tampered with; a running
//! replicator (the slot in use) is refused with the way out.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::Int32Type;
use walden::config::Config;
use walden_lake::{
    Commit, DataFileWriter, Lake, LakeTable, PositionDeleteWriter, TableChange, TableName,
    WriterOptions,
};

use crate::{assert_same, config, database, slot, walden_bin};

/// Runs `walden verify` with `extra` arguments: (exit code, stdout, stderr).
fn verify(cfg_path: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(walden_bin())
        .arg("verify")
        .args(extra)
        .arg("-c")
        .arg(cfg_path)
        .env_remove("WALDEN_CONFIG")
        .output()
        .expect("running walden verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The LSN of the "compared source and lake at LSN X" line.
fn compared_at(out: &str) -> u64 {
    let text = out
        .lines()
        .find_map(|l| l.strip_prefix("compared source and lake at LSN "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no LSN line in:\n{out}"));
    walden_pg::parse_lsn(text).unwrap_or_else(|| panic!("bad LSN {text}"))
}

/// The output line of `table`.
fn table_line<'a>(out: &'a str, table: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{table} ")))
        .unwrap_or_else(|| panic!("no line for {table} in:\n{out}"))
}

/// Lines under the table lines that list differences (indented).
fn listed(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("    "))
        .map(|l| l.trim().to_string())
        .collect();
    v.sort();
    v
}

async fn exec(client: &tokio_postgres::Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", walden_testkit::pg_error(&e)));
}

async fn load(lake: &Lake, table: &str) -> LakeTable {
    lake.load_table(&TableName::new("public", table))
        .await
        .unwrap()
        .expect("the lake table")
}

/// The live row of `table` whose first `key.len()` int columns equal `key`: its data file,
/// position and values.
async fn find_row(lake: &Lake, table: &LakeTable, key: &[i32]) -> (String, u64, RecordBatch) {
    let io = lake.file_io();
    let all: Vec<usize> = (0..table.arrow_schema().fields().len()).collect();
    for f in table.plan_files(io).await.unwrap() {
        let live: Vec<u64> = (0..f.record_count)
            .filter(|p| f.deleted.binary_search(p).is_err())
            .collect();
        let batch = table
            .read_data_file(io, &f.path, &all, Some(&live))
            .await
            .unwrap();
        for (i, pos) in live.iter().enumerate() {
            let hit = key.iter().enumerate().all(|(c, k)| {
                let col = batch.column(c).as_primitive::<Int32Type>();
                !col.is_null(i) && col.value(i) == *k
            });
            if hit {
                return (f.path.clone(), *pos, batch.slice(i, 1));
            }
        }
    }
    panic!("no row {key:?} in {}", table.name());
}

/// `row` with column `c` replaced.
fn with_column(row: &RecordBatch, c: usize, value: ArrayRef) -> RecordBatch {
    let mut cols = row.columns().to_vec();
    cols[c] = value;
    RecordBatch::try_new(row.schema(), cols).unwrap()
}

/// Commits to `table`, outside replication (progress untouched): `rows` added and the
/// rows at `deletes` removed.
async fn tamper(lake: &Lake, table: LakeTable, rows: &[RecordBatch], deletes: &[(String, u64)]) {
    let io = lake.file_io();
    let mut change = TableChange::new(table.clone());
    if !rows.is_empty() {
        let mut writer = DataFileWriter::new(io, &table, WriterOptions::default());
        for r in rows {
            writer.write(r).await.unwrap();
        }
        change.data_files = writer.close().await.unwrap();
    }
    if !deletes.is_empty() {
        let writer = PositionDeleteWriter::new(io, &table).unwrap();
        change.delete_files = vec![writer.write(deletes).await.unwrap()];
    }
    lake.commit(Commit {
        tables: vec![change],
        progress: None,
    })
    .await
    .unwrap();
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
async fn verify_matches_at_one_lsn_and_names_exactly_the_differing_keys() {
    let (_, url, client) = database(
        "verify",
        "CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2));
         CREATE TABLE ledger (account int, entry_no int, amount numeric(12,2),
                              PRIMARY KEY (account, entry_no));
         CREATE TABLE events (kind text, n int, payload jsonb);
         ALTER TABLE events REPLICA IDENTITY FULL;
         INSERT INTO accounts SELECT g, 'owner ' || g, g * 10 FROM generate_series(1, 200) g;
         INSERT INTO ledger SELECT g % 10, g, g FROM generate_series(1, 100) g;
         INSERT INTO events SELECT 'k' || (g % 3), g % 5, '{\"x\": 1}' FROM generate_series(1, 60) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    let cfg_path = dir.path().join("walden.toml");
    walden::run_initial_sync(&cfg, false).await.unwrap();

    // Changes the lake has not seen: verify streams them in itself.
    exec(
        &client,
        "UPDATE accounts SET balance = balance + 1 WHERE id <= 20;
         DELETE FROM accounts WHERE id BETWEEN 150 AND 160;
         INSERT INTO accounts VALUES (1000, 'new', 1);
         UPDATE ledger SET amount = -amount WHERE account = 4;
         DELETE FROM ledger WHERE account = 5 AND entry_no > 50;
         INSERT INTO events VALUES ('dup', 7, NULL), ('dup', 7, NULL), ('dup', 7, NULL);
         DELETE FROM events WHERE ctid = (SELECT ctid FROM events WHERE kind = 'k1' LIMIT 1);",
    )
    .await;
    let before = lake_lsn(&cfg);
    let (code, out, err) = verify(&cfg_path, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let at = compared_at(&out);
    assert!(at > before, "{out}");
    for t in ["public.accounts", "public.ledger", "public.events"] {
        assert!(table_line(&out, t).ends_with(" OK"), "{out}");
    }
    assert!(
        table_line(&out, "public.accounts").contains(" 190 "),
        "{out}"
    );
    assert!(out.contains("all 3 tables match"), "{out}");
    // The lake is exactly at the compared LSN, and the slot acknowledged it.
    assert_eq!(lake_lsn(&cfg), at);
    let info = walden_pg::slot_info(&client, slot(&cfg))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.confirmed_flush_lsn, Some(at));
    for t in ["accounts", "ledger", "events"] {
        assert_same(&client, &cfg, t).await;
    }
    // No temporary slot is left behind.
    let temp: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'walden_verify_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(temp, 0);

    // While the source keeps writing, source and lake are still compared at one LSN.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            // Flushed commits: transactions past the compared LSN reach the stream at once.
            c.batch_execute("SET synchronous_commit = on")
                .await
                .unwrap();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                c.batch_execute(&format!(
                    "BEGIN;
                     INSERT INTO accounts VALUES ({}, 'busy', {n});
                     UPDATE ledger SET amount = amount + 1 WHERE account = {} ;
                     INSERT INTO events VALUES ('busy', {n}, NULL);
                     COMMIT;",
                    100_000 + n,
                    n % 10
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = cfg_path.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || verify(&path, &[]))
        .await
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let written = writer.await.unwrap();
    assert!(
        written > 10,
        "the writer hardly ran ({written} transactions)"
    );
    assert_eq!(code, 0, "under concurrent writes:\n{out}\n{err}");
    assert!(compared_at(&out) > at);

    // Now corrupt the lake through its own APIs: in accounts one row's value changed and
    // a bogus row added, in ledger one row deleted, in events one more copy of a row.
    let (code, out, err) = verify(&cfg_path, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let lake = Lake::open(&cfg.lake.warehouse).unwrap();
    let accounts = load(&lake, "accounts").await;
    let (path7, pos7, row7) = find_row(&lake, &accounts, &[7]).await;
    let (_, _, row8) = find_row(&lake, &accounts, &[8]).await;
    let changed = with_column(&row7, 1, Arc::new(StringArray::from(vec!["tampered"])));
    let bogus = with_column(&row8, 0, Arc::new(Int32Array::from(vec![999_999])));
    tamper(&lake, accounts, &[changed, bogus], &[(path7, pos7)]).await;
    let ledger = load(&lake, "ledger").await;
    let (path, pos, _) = find_row(&lake, &ledger, &[3, 13]).await;
    tamper(&lake, ledger, &[], &[(path, pos)]).await;
    let events = load(&lake, "events").await;
    let dup = {
        let io = lake.file_io();
        let all: Vec<usize> = (0..events.arrow_schema().fields().len()).collect();
        let mut found = None;
        for f in events.plan_files(io).await.unwrap() {
            let b = events
                .read_data_file(io, &f.path, &all, None)
                .await
                .unwrap();
            let kinds = b.column(0).as_string::<i32>();
            if let Some(i) = (0..b.num_rows()).find(|&i| kinds.value(i) == "dup") {
                found = Some(b.slice(i, 1));
                break;
            }
        }
        found.expect("a 'dup' row in the lake")
    };
    tamper(&lake, events, &[dup], &[]).await;

    let (code, out, err) = verify(&cfg_path, &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        table_line(&out, "public.accounts").contains("DIFFERS"),
        "{out}"
    );
    assert!(
        table_line(&out, "public.ledger").contains("DIFFERS"),
        "{out}"
    );
    assert!(
        table_line(&out, "public.events").contains("DIFFERS"),
        "{out}"
    );
    assert_eq!(
        listed(&out),
        vec![
            "different values: id=7: owner: 'owner 7' in the source, 'tampered' in the lake",
            "extra in lake: id=999999",
            "extra in lake: kind='dup', n=7, payload=NULL",
            "missing in lake: account=3, entry_no=13",
        ],
        "{out}"
    );
    assert!(out.contains("3 of 3 tables differ"), "{out}");
    assert!(out.contains("walden replicate --resync"), "{out}");

    // One table, as JSON; and a cap on the listed keys.
    let (code, out, err) = verify(&cfg_path, &["--table", "public.accounts", "--json"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("--resync"), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tables = json["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 1, "{out}");
    let t = &tables[0];
    assert_eq!(t["table"], "public.accounts");
    assert_eq!(t["matches"], false);
    assert_eq!(t["missing_in_lake"], 0);
    assert_eq!(t["extra_in_lake"], 1);
    assert_eq!(t["different_values"], 1);
    assert_eq!(
        t["lake_rows"].as_u64(),
        t["source_rows"].as_u64().map(|n| n + 1)
    );
    let kinds: Vec<(&str, &str)> = t["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["kind"].as_str().unwrap(), d["key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        vec![("extra-in-lake", "id=999999"), ("different-values", "id=7")]
    );
    assert_eq!(
        walden_pg::parse_lsn(json["lsn"].as_str().unwrap()),
        Some(lake_lsn(&cfg))
    );
    let (code, out, _) = verify(
        &cfg_path,
        &["--table", "public.accounts", "--max-keys", "1"],
    );
    assert_eq!(code, 1);
    assert_eq!(listed(&out).len(), 2, "{out}");
    assert!(out.contains("... and 1 more"), "{out}");
    assert!(!out.contains("public.ledger"), "{out}");

    // The documented way out.
    let (ok, out, err) = crate::walden(
        &[
            "replicate",
            "--resync",
            "--until-caught-up",
            "--quiet",
            "-c",
            cfg_path.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{out}\n{err}");
    let (code, out, err) = verify(&cfg_path, &[]);
    assert_eq!(code, 0, "after --resync:\n{out}\n{err}");
    walden::run_teardown(&cfg, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_refuses_while_replicate_runs_and_explains_bad_requests() {
    let (_, url, client) = database(
        "verify_busy",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one');",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("walden.toml");

    // Nothing replicated yet.
    let cfg = config(dir.path(), &url, "");
    let (code, out, err) = verify(&cfg_path, &[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("walden replicate"), "{err}");

    walden::run_initial_sync(&cfg, false).await.unwrap();
    let (code, _, err) = verify(&cfg_path, &["--table", "public.nope"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("public.nope is not replicated") && err.contains("public.t"),
        "{err}"
    );
    let (code, _, err) = verify(&cfg_path, &["--table", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("schema.name"), "{err}");

    // A running replicator holds the slot: verify says to stop it first.
    let mut child = Command::new(walden_bin())
        .args(["replicate", "--quiet", "-c", cfg_path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut active = false;
    for _ in 0..300 {
        let info = walden_pg::slot_info(&client, slot(&cfg)).await.unwrap();
        if info.and_then(|i| i.active_pid).is_some() {
            active = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(active, "the replicator never took the slot");
    let (code, out, err) = verify(&cfg_path, &[]);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("stop `walden replicate` first")
            && err.contains("verify brings the lake to the source's LSN itself"),
        "{err}"
    );
    // Stopped, verify runs.
    let (code, out, err) = verify(&cfg_path, &[]);
    assert_eq!(code, 0, "{out}\n{err}");

    // A column added on the source (no row changed since, so the stream did not see it):
    // the rows cannot be compared, and verify says why.
    exec(&client, "ALTER TABLE t ADD COLUMN extra int").await;
    let (code, out, err) = verify(&cfg_path, &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    let line = table_line(&out, "public.t");
    assert!(
        line.contains("DIFFERS: the columns differ") && line.contains("extra"),
        "{out}"
    );
    walden::run_teardown(&cfg, false).await.unwrap();
}
