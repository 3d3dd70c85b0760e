use std::time::Duration;

use walden_lake::{Commit, Lake, PositionDeleteWriter, TableChange, TableName};
use walden_query::QueryEngine;

use crate::{assert_same, check_with_python_readers, compare, config, database, pg, slot, walden};

pub(crate) const ALL_TYPES: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive_int AS int CHECK (VALUE > 0);
CREATE DOMAIN short_text AS varchar(20);
CREATE TABLE all_types (
    id int8 PRIMARY KEY,
    c_bool bool, c_int2 int2, c_int4 int4, c_int8 int8, c_oid oid,
    c_float4 float4, c_float8 float8,
    c_num numeric(12,3), c_num_wide numeric(38,10), c_num_free numeric, c_num_huge numeric(50,5),
    c_money money,
    c_text text, c_varchar varchar(10), c_char char(5), c_name name, c_json json, c_jsonb jsonb,
    c_bytea bytea, c_date date, c_time time, c_ts timestamp, c_tstz timestamptz,
    c_interval interval, c_uuid uuid, c_mood mood, c_domain positive_int, c_short short_text,
    c_inet inet, c_bits bit(4), c_timetz timetz,
    c_int_arr int4[], c_text_arr text[], c_num_arr numeric(6,2)[], c_ts_arr timestamptz[],
    c_mood_arr mood[], c_uuid_arr uuid[]
);
INSERT INTO all_types VALUES
(1, true, 32767, 2147483647, 9223372036854775807, 4294967295,
 3.4028235e38, 1.7976931348623157e308,
 123456789.123, 1234567890123456789012345678.0123456789, 12345.6789, 123456789012345678901234567890123456789012345.12345,
 '92233720368547758.07',
 'héllo wörld ✓ 漢字 🚀', 'abc', 'ab', 'name', '{"a": [1, 2.5, null]}', '{"b": {"c": "d"}, "a": 1}',
 '\x00ff10', '2024-02-29', '23:59:59.999999', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456+05:30',
 '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', 7, 'short',
 '192.168.0.1/24', B'1010', '12:00:00+02',
 '{1,NULL,3}', '{"a","b c",NULL,""}', '{1.50,-2.25}', '{"2024-01-01 00:00:00+00",NULL}',
 '{sad,happy}', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'),
(2, false, -32768, -2147483648, -9223372036854775808, 0,
 'NaN', '-Infinity',
 -0.001, -0.0000000001, -0.5, -1.00001,
 '-92233720368547758.08',
 '', '', '', '', '[]', '{}',
 '\x', '-infinity', '00:00:00', '-infinity', 'infinity',
 '-1 mons +2 days -00:00:01.5', '00000000-0000-0000-0000-000000000000', 'sad', 1, '',
 '::1', B'0000', '00:00:00-11',
 '{}', '{}', '{}', '{}', '{}', '{}'),
(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL),
(4, true, 0, 0, 0, 1, 'Infinity', 'NaN', 0, 0, 0, 0, 0,
 E'tab\tnewline\nquote''"backslash\\', 'x', 'x', 'x', 'null', 'null',
 '\xdeadbeef', 'infinity', '12:00:00', 'infinity', '-infinity',
 '0 seconds', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'ok', 2147483647, NULL,
 '10.0.0.0/8', B'1111', '23:59:59.999999+14',
 '{-2147483648,2147483647}', '{NULL}', '{NULL,0.01}', '{"1970-01-01 00:00:00+00"}',
 '{ok}', '{NULL}');
"#;

#[tokio::test(flavor = "multi_thread")]
async fn every_type_round_trips_exactly() {
    let pg = pg();
    let (db, url) = pg.fresh_database("types").await.unwrap();
    let client = pg.connect(&db).await.unwrap();
    client.batch_execute(ALL_TYPES).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    let outcome = walden::run_initial_sync(&cfg, false).await.unwrap();
    assert_eq!(outcome.tables.len(), 1);
    assert_eq!(outcome.tables[0].1, 4);

    let lake = Lake::open(&cfg.lake.warehouse).unwrap();
    let engine = QueryEngine::new(lake);
    // interval[] is not in this table; every other column compares here.
    let d = compare::diff(&client, "all_types", &engine, "public.all_types").await;
    assert!(
        d.is_empty(),
        "lake differs from Postgres:\n{}",
        d.join("\n")
    );
    check_with_python_readers(&cfg.lake.warehouse, &url, &["public.all_types"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn values_with_no_faithful_mapping_are_refused_by_name() {
    let (_, url, client) = database(
        "refuse",
        "CREATE TABLE n (id int PRIMARY KEY, v numeric(10,2));
             INSERT INTO n VALUES (1, 'NaN');",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    let err = walden::run_initial_sync(&cfg, false).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("public.n.v"), "{msg}");
    assert!(msg.contains("NaN") && msg.contains("column_types"), "{msg}");
    // Nothing visible, no slot left behind.
    let lake = Lake::open(&cfg.lake.warehouse).unwrap();
    assert!(lake.list_tables().unwrap().is_empty());
    assert!(
        walden_pg::slot_info(&client, slot(&cfg))
            .await
            .unwrap()
            .is_none()
    );

    // The documented escape hatch: the column as its text form.
    let cfg = config(
        dir.path(),
        &url,
        "column_types = { \"public.n.v\" = \"string\" }",
    );
    walden::run_initial_sync(&cfg, false).await.unwrap();
    let rows = QueryEngine::new(Lake::open(&cfg.lake.warehouse).unwrap())
        .sql("SELECT v FROM public.n")
        .await
        .unwrap();
    let v = arrow::util::pretty::pretty_format_batches(&rows)
        .unwrap()
        .to_string();
    assert!(v.contains("NaN"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_types_are_refused_with_options() {
    let (_, url, _) = database(
        "unsupported",
        "CREATE TABLE shapes (id int PRIMARY KEY, p point, r int4range)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    let report = walden::run_check(&cfg).await.unwrap();
    let errors: Vec<String> = report
        .errors()
        .map(|f| format!("{}: {} / {:?}", f.subject, f.message, f.fix))
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("public.shapes.p") && e.contains("column_types")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with("public.shapes.r")),
        "{errors:?}"
    );
    let err = walden::run_initial_sync(&cfg, false).await.unwrap_err();
    assert!(format!("{err:#}").contains("preflight"));
    let cfg = config(
        dir.path(),
        &url,
        "column_types = { \"public.shapes.p\" = \"string\", \"public.shapes.r\" = \"string\" }",
    );
    assert!(!walden::run_check(&cfg).await.unwrap().has_errors());
}

/// The shop demo (several related tables, every common type) equals the lake row by row,
/// and the recorded LSN is the slot's consistent point.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_equals_the_lake_row_by_row() {
    let pg = pg();
    let (db, url) = pg.fresh_database("shop").await.unwrap();
    let _ = db;
    walden::quickstart::load_shop(pg, &db, 3000).await.unwrap();
    let client = pg.connect(&db).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "copy_parallelism = 3");
    let outcome = walden::run_initial_sync(&cfg, false).await.unwrap();
    assert!(!outcome.already_synced);
    assert_eq!(outcome.tables.len(), 6);

    let slot_now = walden_pg::slot_info(&client, slot(&cfg))
        .await
        .unwrap()
        .expect("slot");
    assert_eq!(
        slot_now.confirmed_flush_lsn,
        Some(outcome.lsn),
        "recorded LSN is the slot's consistent point"
    );
    let lake = Lake::open(&cfg.lake.warehouse).unwrap();
    assert_eq!(lake.progress(slot(&cfg)).unwrap().unwrap().lsn, outcome.lsn);

    let engine = QueryEngine::new(lake.clone());
    let mut names = Vec::new();
    for (name, _) in &outcome.tables {
        let d = compare::diff(
            &client,
            &format!("{}.{}", name.namespace, name.name),
            &engine,
            &name.to_string(),
        )
        .await;
        assert!(d.is_empty(), "{name} differs:\n{}", d.join("\n"));
        names.push(name.to_string());
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    check_with_python_readers(&cfg.lake.warehouse, &url, &refs);

    // Re-running is idempotent: nothing copied, the same LSN.
    let again = walden::run_initial_sync(&cfg, false).await.unwrap();
    assert!(again.already_synced);
    assert_eq!(again.lsn, outcome.lsn);
}

/// Rows committed while the copy runs are not in the lake, and what is in it is one
/// consistent cut: every transaction of the writer touched two tables, and the lake shows
/// both effects or neither.
#[tokio::test(flavor = "multi_thread")]
async fn writes_during_the_copy_are_not_in_the_lake() {
    let pg = pg();
    let (db, url, client) = database("concurrent", "CREATE TABLE events (id int8 PRIMARY KEY, payload text);
             CREATE TABLE counter (k int PRIMARY KEY, v int8);
             INSERT INTO counter VALUES (1, 0);
             INSERT INTO events SELECT g, repeat(md5(g::text), 8) FROM generate_series(-400000, -1) g;").await;
    let writer_db = db.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = tokio::spawn(async move {
        let c = pg.connect(&writer_db).await.unwrap();
        let mut k = 0i64;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            k += 1;
            c.batch_execute(&format!(
                "BEGIN; INSERT INTO events VALUES ({k}, 'new'); UPDATE events SET payload = 'changed-{k}' WHERE id = -{k};
                 UPDATE counter SET v = {k} WHERE k = 1; COMMIT;"
            ))
            .await
            .unwrap();
        }
        k
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "copy_parallelism = 2");
    let outcome = walden::run_initial_sync(&cfg, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writer.await.unwrap();

    let engine = QueryEngine::new(Lake::open(&cfg.lake.warehouse).unwrap());
    let batches = engine
        .sql("SELECT (SELECT v FROM public.counter) AS v, (SELECT max(id) FROM public.events) AS max_id, \
              (SELECT count(*) FROM public.events WHERE id > 0) AS new_rows, \
              (SELECT count(*) FROM public.events WHERE payload LIKE 'changed-%') AS changed")
        .await
        .unwrap();
    let b = &batches[0];
    let v = b
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    let max_id = b
        .column(1)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    let new_rows = b
        .column(2)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    let changed = b
        .column(3)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert!(v > 0, "the writer ran before the snapshot");
    assert!(
        written > v,
        "the writer kept writing after the snapshot ({written} vs {v})"
    );
    assert_eq!(max_id, v, "events and counter are from one cut");
    assert_eq!(new_rows, v, "no gaps, nothing after the cut");
    assert_eq!(
        changed, v,
        "updates of the same transactions are in, later ones are not"
    );
    let slot_now = walden_pg::slot_info(&client, slot(&cfg))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(slot_now.confirmed_flush_lsn, Some(outcome.lsn));
}

/// A copy killed with SIGKILL leaves nothing visible; the next run drops the orphaned slot
/// and copies again. Ctrl-C (SIGINT) stops cleanly and drops the slot at once.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_copy_recovers() {
    let (_, url, client) = database("interrupt", "CREATE TABLE big (id int8 PRIMARY KEY, a text, b float8);
             INSERT INTO big SELECT g, md5(g::text) || md5((g*7)::text), g / 3.0 FROM generate_series(1, 1500000) g;
             CREATE TABLE small (id int PRIMARY KEY);
             INSERT INTO small SELECT generate_series(1, 10);").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("walden.toml");
    let cfg = config(dir.path(), &url, "copy_parallelism = 2");
    let lake_dir = cfg.lake.warehouse.clone();

    let data_dir = lake_dir.join("public/big/data");
    let files = |d: &std::path::Path| std::fs::read_dir(d).map(|d| d.count()).unwrap_or(0);
    for signal in ["-KILL", "-INT"] {
        let before = files(&data_dir);
        let mut child = std::process::Command::new(crate::walden_bin())
            .args([
                "--config",
                cfg_path.to_str().unwrap(),
                "replicate",
                "--until-caught-up",
                "--quiet",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until this run writes data files, i.e. it is mid-copy.
        let started =
            walden_testkit::wait_until(Duration::from_secs(60), || files(&data_dir) > before);
        assert!(started, "the copy never started writing");
        std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "{signal}: the interrupted copy must not report success"
        );
        let lake = Lake::open(&lake_dir).unwrap();
        assert!(
            lake.list_tables().unwrap().is_empty(),
            "{signal}: nothing may be visible"
        );
        let slot_now = walden_pg::slot_info(&client, slot(&cfg)).await.unwrap();
        if signal == "-INT" {
            assert!(slot_now.is_none(), "Ctrl-C drops the slot");
        } else {
            assert!(
                slot_now.is_some(),
                "SIGKILL cannot drop it; the next run must"
            );
        }
    }
    // SIGINT ran after SIGKILL: its run already dropped the orphan and was interrupted too.
    let outcome = walden::run_initial_sync(&cfg, false).await.unwrap();
    assert!(!outcome.already_synced);
    let slots: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 1, "no leaked slot");
    let engine = QueryEngine::new(Lake::open(&lake_dir).unwrap());
    for t in ["big", "small"] {
        let d = compare::diff(&client, t, &engine, &format!("public.{t}")).await;
        assert!(d.is_empty(), "{t} differs:\n{}", d.join("\n"));
    }
}

/// The row-level commit path: position deletes hide rows from every reader.
#[tokio::test(flavor = "multi_thread")]
async fn position_deletes_hide_rows_from_every_reader() {
    let (_, url, client) = database("deletes", "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g;").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    walden::run_initial_sync(&cfg, false).await.unwrap();
    let lake = Lake::open(&cfg.lake.warehouse).unwrap();
    let table = lake
        .load_table(&TableName::new("public", "t"))
        .await
        .unwrap()
        .unwrap();
    let files = table.plan_files(lake.file_io()).await.unwrap();
    assert_eq!(files.len(), 1);
    // Rows are in id order in the single file: position p holds id p+1.
    let doomed: Vec<u64> = vec![0, 1, 499, 998];
    let deletes: Vec<(String, u64)> = doomed.iter().map(|p| (files[0].path.clone(), *p)).collect();
    let file = PositionDeleteWriter::new(lake.file_io(), &table)
        .unwrap()
        .write(&deletes)
        .await
        .unwrap();
    let mut change = TableChange::new(table);
    change.delete_files.push(file);
    lake.commit(Commit {
        tables: vec![change],
        progress: None,
    })
    .await
    .unwrap();
    client
        .batch_execute("DELETE FROM t WHERE id IN (1, 2, 500, 999)")
        .await
        .unwrap();

    let engine = QueryEngine::new(lake);
    let d = compare::diff(&client, "t", &engine, "public.t").await;
    assert!(d.is_empty(), "{}", d.join("\n"));
    check_with_python_readers(&cfg.lake.warehouse, &url, &["public.t"]);
}

/// teardown removes slot and publication; replicating again re-syncs the same tables.
#[tokio::test(flavor = "multi_thread")]
async fn teardown_then_resync() {
    let (_, url, client) = database("teardown", "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, g FROM generate_series(1, 100) g;").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    walden::run_initial_sync(&cfg, false).await.unwrap();
    walden::run_teardown(&cfg, false).await.unwrap();
    assert!(
        walden_pg::slot_info(&client, slot(&cfg))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        walden_pg::publication_info(&client, "walden")
            .await
            .unwrap()
            .is_none()
    );
    client
        .batch_execute("DELETE FROM t WHERE id > 50")
        .await
        .unwrap();
    let outcome = walden::run_initial_sync(&cfg, false).await.unwrap();
    assert!(!outcome.already_synced);
    assert_same(&client, &cfg, "t").await;
}

/// `walden query` prints results in the three formats.
#[tokio::test(flavor = "multi_thread")]
async fn query_command_prints_table_csv_and_json() {
    let (_, url, _) = database("querycmd", "CREATE TABLE t (id int PRIMARY KEY, u uuid, v text); INSERT INTO t VALUES (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'x'), (2, NULL, 'y');").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("walden.toml");
    config(dir.path(), &url, "");
    let c = cfg_path.to_str().unwrap();
    let (ok, _, err) = walden(
        &["--config", c, "replicate", "--until-caught-up", "--quiet"],
        &[],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = walden(
        &["--config", c, "query", "SELECT * FROM public.t ORDER BY id"],
        &[],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11") && out.contains("(2 rows)"),
        "{out}"
    );
    let (ok, out, _) = walden(
        &[
            "--config",
            c,
            "query",
            "--format",
            "csv",
            "SELECT id, v FROM t ORDER BY id",
        ],
        &[],
    );
    assert!(ok);
    assert_eq!(out.trim(), "id,v\n1,x\n2,y");
    let (ok, out, _) = walden(
        &[
            "--config",
            c,
            "query",
            "--format",
            "json",
            "SELECT id FROM t ORDER BY id",
        ],
        &[],
    );
    assert!(ok);
    assert_eq!(out.trim(), r#"[{"id":1},{"id":2}]"#);
    let (ok, out, err) = walden(&["--config", c, "status"], &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("streaming") && out.contains("public.t") && out.contains(" 2 "),
        "{out}"
    );
    // Read-only by construction: DDL and DML are refused on the plan.
    for bad in [
        "CREATE TABLE x (a int)",
        "INSERT INTO t VALUES (3, NULL, 'z')",
        "DROP TABLE t",
        "COPY t TO '/tmp/x'",
    ] {
        let (ok, _, err) = walden(&["--config", c, "query", bad], &[]);
        assert!(!ok, "{bad} must be refused");
        assert!(err.contains("error:"), "{err}");
    }
}

/// A copy connection that dies mid-copy fails the sync cleanly: nothing visible, the slot
/// dropped (no WAL pinned), and the next run succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_copy_connection_leaves_nothing_behind() {
    let (_, url, client) = database(
        "lostconn",
        "CREATE TABLE big (id int8 PRIMARY KEY, a text);
             INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 1000000) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "copy_parallelism = 2");
    let data_dir = cfg.lake.warehouse.join("public/big/data");
    let sync_cfg = cfg.clone();
    let sync = tokio::spawn(async move { walden::run_initial_sync(&sync_cfg, false).await });
    let started = walden_testkit::wait_until(Duration::from_secs(60), || {
        std::fs::read_dir(&data_dir)
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    });
    assert!(started, "the copy never started writing");
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'COPY%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed > 0, "no copy connection to cut");
    let err = sync.await.unwrap().unwrap_err();
    assert!(format!("{err:#}").contains("copying public.big"), "{err:#}");
    let lake = Lake::open(&cfg.lake.warehouse).unwrap();
    assert!(lake.list_tables().unwrap().is_empty());
    assert!(
        walden_pg::slot_info(&client, slot(&cfg))
            .await
            .unwrap()
            .is_none()
    );
    walden::run_initial_sync(&cfg, false).await.unwrap();
    assert_same(&client, &cfg, "big").await;
}

/// A slot that disappeared after the sync is an error that says how to re-sync, never a
/// silent new slot (the changes in between would be lost).
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_slot_is_an_error_not_a_silent_restart() {
    let (_, url, client) = database(
        "slotgone",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    walden::run_initial_sync(&cfg, false).await.unwrap();
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot(&cfg)])
        .await
        .unwrap();
    let err = walden::run_initial_sync(&cfg, false).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("no such slot") && msg.contains("walden teardown"),
        "{msg}"
    );
    assert!(
        walden_pg::slot_info(&client, slot(&cfg))
            .await
            .unwrap()
            .is_none(),
        "no new slot"
    );
    // A slot this lake does not know is refused too.
    let other = tempfile::tempdir().unwrap();
    let cfg2 = config(other.path(), &url, "");
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot(&cfg2)],
        )
        .await
        .unwrap();
    let err = walden::run_initial_sync(&cfg2, false).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("has no record of it"),
        "{err:#}"
    );
}

/// A query reads only the tables it names: a table whose metadata is gone does not stop
/// queries on the others, and querying it names the missing file.
#[tokio::test(flavor = "multi_thread")]
async fn a_query_loads_only_the_tables_it_names() {
    let (_, url, _) = database(
        "lazy",
        "CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a VALUES (1), (2);
         CREATE TABLE b (id int PRIMARY KEY); INSERT INTO b VALUES (3);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    walden::run_initial_sync(&cfg, false).await.unwrap();
    let lake = Lake::open(&cfg.lake.warehouse).unwrap();
    let b = lake
        .load_table(&TableName::new("public", "b"))
        .await
        .unwrap()
        .unwrap();
    let b_metadata = b.metadata_location().unwrap().to_string();
    std::fs::remove_file(&b_metadata).unwrap();

    let engine = QueryEngine::new(lake);
    let rows = engine.sql("SELECT count(*) FROM public.a").await.unwrap();
    let n = rows[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n, 2);
    let err = engine.sql("SELECT * FROM public.b").await.unwrap_err();
    assert!(format!("{err}").contains(&b_metadata), "{err}");
}
