//! Source schema changes while streaming: added, dropped, renamed and widened columns
//! evolve the lake table by Iceberg field id, inside a transaction with DML around them
//! and with several changes piled up while walden was away; a change Iceberg cannot
//! express copies the table again. Independent readers must agree after each step.

use walden_lake::{Lake, TableName};

use crate::streaming::catch_up;
use crate::{assert_same, check_with_python_readers, config, database};

async fn exec(client: &tokio_postgres::Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", walden_testkit::pg_error(&e)));
}

/// The lake table's current field ids by column name, and its last operation.
async fn lake_fields(warehouse: &std::path::Path, table: &str) -> (Vec<(String, i32)>, String) {
    let lake = Lake::open(warehouse).unwrap();
    let t = lake
        .load_table(&TableName::new("public", table))
        .await
        .unwrap()
        .expect("the table");
    let fields = t
        .arrow_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .zip(t.field_ids())
        .collect();
    let op = t
        .snapshot_property("walden.operation")
        .unwrap_or_default()
        .to_string();
    (fields, op)
}

fn id_of(fields: &[(String, i32)], name: &str) -> i32 {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no column {name} in {fields:?}"))
        .1
}

#[tokio::test(flavor = "multi_thread")]
async fn added_dropped_renamed_and_widened_columns_evolve_by_field_id() {
    let (_, url, client) = database(
        "schema",
        "CREATE TABLE items (id int PRIMARY KEY, name varchar(20), qty int, price numeric(10,2),
                             note text, gone text, big text);
         INSERT INTO items SELECT g, 'item ' || g, g, g * 1.5, 'note ' || g, 'x', repeat('t', 3000) || g
           FROM generate_series(1, 50) g;
         CREATE TABLE events (kind text, amount int);
         ALTER TABLE events REPLICA IDENTITY FULL;
         INSERT INTO events SELECT 'k' || (g % 3), g % 5 FROM generate_series(1, 30) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    let warehouse = cfg.lake.warehouse.clone();
    walden::run_initial_sync(&cfg, false).await.unwrap();
    let (before, _) = lake_fields(&warehouse, "items").await;

    // An added column in the middle of a transaction, with changes before and after it
    // (the old-shape rows are written first), on a keyed and a multiset table; an
    // unchanged TOASTed value after the change comes from the row's lake version.
    exec(
        &client,
        "BEGIN;
           UPDATE items SET qty = qty + 1 WHERE id <= 5;
           UPDATE events SET amount = amount + 10 WHERE kind = 'k1';
           ALTER TABLE items ADD COLUMN color text;
           ALTER TABLE events ADD COLUMN tag text;
           INSERT INTO items (id, name, qty, price, note, gone, big, color)
             VALUES (100, 'new', 1, 2.5, 'n', 'x', 'small', 'red');
           UPDATE items SET color = 'blue' WHERE id IN (1, 7);
           UPDATE events SET tag = 'tagged' WHERE kind = 'k2';
           DELETE FROM events WHERE kind = 'k0' AND amount = 0;
         COMMIT;",
    )
    .await;
    catch_up(&cfg).await;
    assert_same(&client, &cfg, "items").await;
    assert_same(&client, &cfg, "events").await;
    let (after_add, _) = lake_fields(&warehouse, "items").await;
    assert_eq!(id_of(&after_add, "note"), id_of(&before, "note"));
    assert!(id_of(&after_add, "color") > before.iter().map(|f| f.1).max().unwrap());

    // Several changes while walden is away: a rename, a drop, DML between them, and
    // widening type changes (int → bigint, varchar(n) → text, numeric precision up).
    exec(
        &client,
        "ALTER TABLE items RENAME COLUMN note TO remark;
         UPDATE items SET remark = 'r' || id WHERE id <= 3;
         ALTER TABLE items DROP COLUMN gone;
         INSERT INTO items (id, name, qty, price, remark, big, color)
           VALUES (101, 'after drop', 2, 3.5, 'rm', 'b', 'green');
         ALTER TABLE items ALTER COLUMN qty TYPE bigint, ALTER COLUMN name TYPE text,
           ALTER COLUMN price TYPE numeric(14,2);
         UPDATE items SET qty = 5000000000, name = repeat('long name ', 5), price = 123456789012.34
           WHERE id = 2;
         ALTER TABLE items ADD COLUMN gone int;
         UPDATE items SET gone = 7 WHERE id = 3;
         UPDATE items SET color = 'grey' WHERE id = 4;",
    )
    .await;
    catch_up(&cfg).await;
    assert_same(&client, &cfg, "items").await;
    let (evolved, op) = lake_fields(&warehouse, "items").await;
    assert_eq!(op, "stream", "followed without a copy");
    assert_eq!(id_of(&evolved, "remark"), id_of(&before, "note"), "renamed");
    assert_eq!(id_of(&evolved, "qty"), id_of(&before, "qty"), "promoted");
    assert_eq!(
        id_of(&evolved, "price"),
        id_of(&before, "price"),
        "promoted"
    );
    assert!(
        id_of(&evolved, "gone") > id_of(&evolved, "color"),
        "a dropped column's name added again is a new field: {evolved:?}"
    );
    check_with_python_readers(&warehouse, &url, &["public.items", "public.events"]);

    // Changes Iceberg cannot express: a type that cannot be promoted, and a column added
    // with a default (rows that existed before hold it; the stream does not carry it).
    exec(
        &client,
        "ALTER TABLE items ALTER COLUMN qty TYPE text;
         UPDATE items SET qty = 'many' WHERE id = 1;
         ALTER TABLE events ADD COLUMN seen bool DEFAULT true;
         INSERT INTO events VALUES ('k9', 9, 't', false);",
    )
    .await;
    catch_up(&cfg).await;
    assert_same(&client, &cfg, "items").await;
    assert_same(&client, &cfg, "events").await;
    let (copied, op) = lake_fields(&warehouse, "items").await;
    assert_eq!(op, "recopy");
    assert_ne!(id_of(&copied, "qty"), id_of(&before, "qty"), "a new field");
    assert_eq!(id_of(&copied, "remark"), id_of(&before, "note"), "kept");
    assert_eq!(lake_fields(&warehouse, "events").await.1, "recopy");

    // Streaming goes on after the copy: changes before its snapshot are not applied twice.
    exec(
        &client,
        "UPDATE items SET qty = 'few', color = 'black' WHERE id <= 10;
         DELETE FROM items WHERE id = 100;
         INSERT INTO events VALUES ('k9', 9, 't', false);",
    )
    .await;
    catch_up(&cfg).await;
    assert_same(&client, &cfg, "items").await;
    assert_same(&client, &cfg, "events").await;
    check_with_python_readers(&warehouse, &url, &["public.items", "public.events"]);
}

/// Counts rows of a lake table through walden's engine (`None`: not in the lake).
async fn lake_count(warehouse: &std::path::Path, table: &str) -> Option<String> {
    let engine = walden_query::QueryEngine::new(Lake::open(warehouse).unwrap());
    let rows = engine
        .sql(&format!("SELECT count(*) AS n FROM {table}"))
        .await
        .ok()?;
    let text = arrow::util::pretty::pretty_format_batches(&rows)
        .ok()?
        .to_string();
    text.lines()
        .nth(3)
        .map(|l| l.trim_matches(|c| c == '|' || c == ' ').to_string())
}

async fn wait_for_count(
    warehouse: &std::path::Path,
    table: &str,
    want: &str,
    replicator: &crate::Replicator,
) {
    for _ in 0..600 {
        if lake_count(warehouse, table).await.as_deref() == Some(want) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "{table} did not reach {want} rows in the lake (has {:?}); the replicator said:\n{}",
        lake_count(warehouse, table).await,
        replicator.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_replicator_adds_new_tables_and_follows_ddl() {
    let (_, url, client) = database(
        "newtables",
        "CREATE TABLE first (id int PRIMARY KEY, v text NOT NULL);
         INSERT INTO first VALUES (1, 'a'), (2, 'b');",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &url, "table_discovery_interval_ms = 300");
    let cfg = crate::extend_config(dir.path(), "");
    let warehouse = cfg.lake.warehouse.clone();
    let replicator = crate::Replicator::start(dir.path(), &[]);
    let log = &replicator;
    wait_for_count(&warehouse, "public.first", "2", log).await;

    // While it streams: a new table with rows and changes right after its creation, a
    // table that fails the preflight rules, and a column added to a streamed table.
    exec(
        &client,
        "CREATE TABLE second (id bigint PRIMARY KEY, label text);
         INSERT INTO second SELECT g, 'l' || g FROM generate_series(1, 100) g;
         CREATE TABLE no_key (v text);
         INSERT INTO no_key VALUES ('x');
         ALTER TABLE first ADD COLUMN extra int;
         INSERT INTO first VALUES (3, 'c', 30);",
    )
    .await;
    wait_for_count(&warehouse, "public.second", "100", log).await;
    exec(
        &client,
        "UPDATE second SET label = 'changed' WHERE id <= 10;
         DELETE FROM second WHERE id > 90;
         INSERT INTO second VALUES (1000, 'late');
         UPDATE first SET extra = 1 WHERE id = 1;
         ALTER TABLE first ALTER COLUMN v DROP NOT NULL;
         UPDATE first SET v = NULL WHERE id = 2;
         INSERT INTO first VALUES (4, NULL, 40);",
    )
    .await;
    wait_for_count(&warehouse, "public.first", "4", log).await;
    wait_for_count(&warehouse, "public.second", "91", log).await;
    let (status, stderr) = replicator.stop();
    assert!(status.success(), "exit status {status:?}:\n{stderr}");
    assert!(
        stderr.contains("no_key") && stderr.contains("cannot be replicated"),
        "the table without a key is named in a warning:\n{stderr}"
    );
    assert_eq!(lake_count(&warehouse, "public.no_key").await, None);
    catch_up(&cfg).await;
    assert_same(&client, &cfg, "first").await;
    assert_same(&client, &cfg, "second").await;
}
