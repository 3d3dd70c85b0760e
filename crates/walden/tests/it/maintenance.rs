//! Maintenance while streaming: compaction of small files and files with deleted rows,
//! snapshot expiration and removal of unreferenced files, running between flushes of a
//! live workload, must neither lose nor resurrect a row, and other readers must agree.

use walden_lake::{Lake, TableName};

use crate::{assert_same, check_with_python_readers, config, database};

async fn exec(client: &tokio_postgres::Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", walden_testkit::pg_error(&e)));
}

/// (data files, delete files, snapshots) of the table's current metadata.
async fn shape(warehouse: &std::path::Path, table: &str) -> (u64, u64, usize) {
    let lake = Lake::open(warehouse).unwrap();
    let t = lake
        .load_table(&TableName::new("public", table))
        .await
        .unwrap()
        .expect("the table");
    let get = |k: &str| -> u64 {
        t.snapshot_property(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        get("total-data-files"),
        get("total-delete-files"),
        t.metadata().snapshots().count(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_and_expiration_while_streaming_lose_and_resurrect_nothing() {
    let (_, url, client) = database(
        "maint",
        "CREATE TABLE accounts (id int PRIMARY KEY, balance int, note text);
         INSERT INTO accounts SELECT g, g, 'n' || g FROM generate_series(1, 500) g;
         CREATE TABLE log (kind text, n int);
         ALTER TABLE log REPLICA IDENTITY FULL;
         INSERT INTO log SELECT 'k' || (g % 4), g % 7 FROM generate_series(1, 100) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // A warning threshold of one byte: the retained-WAL check must say so.
    config(dir.path(), &url, "retained_wal_warn_bytes = 1");
    let cfg = crate::extend_config(
        dir.path(),
        "flush_interval_ms = 100\nmaintenance_interval_ms = 150\nsnapshot_retention_ms = 0\n",
    );
    let warehouse = cfg.lake.warehouse.clone();
    let replicator =
        crate::Replicator::start(dir.path(), &[("WALDEN_LOG", "warn,walden_replicate=info")]);

    // A workload of many small transactions, so flushes make many small files and delete
    // files while maintenance rewrites them underneath (fixed pattern, no randomness).
    for round in 0..40 {
        let lo = (round * 37) % 480 + 1;
        exec(
            &client,
            &format!(
                "UPDATE accounts SET balance = balance + {round} WHERE id BETWEEN {lo} AND {hi};
                 DELETE FROM accounts WHERE id = {del};
                 INSERT INTO accounts VALUES ({ins}, {round}, 'r{round}')
                   ON CONFLICT (id) DO UPDATE SET note = 'again';
                 UPDATE log SET n = n + 1 WHERE kind = 'k{k}' AND n = {n};
                 INSERT INTO log VALUES ('round', {round});",
                hi = lo + 15,
                del = (round * 53) % 500 + 1,
                ins = 1000 + round % 25,
                k = round % 4,
                n = round % 7,
            ),
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    }
    // Let the replicator catch up and run a few more maintenance steps on a quiet source.
    let mut settled = false;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (data, deletes, snapshots) = shape(&warehouse, "accounts").await;
        let (ldata, ldeletes, _) = shape(&warehouse, "log").await;
        // Without maintenance each table would have a data file and a delete file per
        // flush (dozens); with it, small files are compacted once there are 8 and delete
        // files merged once there are 8, and one snapshot is kept.
        if data <= 9 && deletes <= 8 && snapshots == 1 && ldata <= 9 && ldeletes <= 8 {
            settled = true;
            break;
        }
    }
    let (status, log) = replicator.stop();
    assert!(status.success(), "exit status {status:?}:\n{log}");
    assert!(
        settled,
        "maintenance did not bound the files and snapshots: accounts {:?}, log {:?}\n{log}",
        shape(&warehouse, "accounts").await,
        shape(&warehouse, "log").await
    );
    assert!(log.contains("compacted"), "{log}");
    assert!(
        log.contains("retains more WAL on the source than the warning threshold"),
        "the retained-WAL warning: {log}"
    );

    crate::streaming::catch_up(&cfg).await;
    assert_same(&client, &cfg, "accounts").await;
    assert_same(&client, &cfg, "log").await;
    check_with_python_readers(&warehouse, &url, &["public.accounts", "public.log"]);

    // Nothing unreferenced is left in the data directories.
    for table in ["accounts", "log"] {
        let files = std::fs::read_dir(warehouse.join("public").join(table).join("data"))
            .unwrap()
            .count();
        let (data, deletes, _) = shape(&warehouse, table).await;
        assert_eq!(
            files as u64,
            data + deletes,
            "{table}: files on disk vs referenced"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_file_with_many_deletes_is_rewritten_batch_by_batch_and_the_index_follows() {
    let (_, url, client) = database(
        "maintbig",
        "CREATE TABLE wide (id int PRIMARY KEY, v text);
         INSERT INTO wide SELECT g, repeat('w', 100) || g FROM generate_series(1, 150000) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &url, "");
    // A sort budget of one byte: every file with many deletes is streamed alone.
    let cfg = crate::extend_config(
        dir.path(),
        "maintenance_interval_ms = 100\nsnapshot_retention_ms = 0\ncompaction_sort_bytes = 1\n",
    );
    let warehouse = cfg.lake.warehouse.clone();
    crate::streaming::catch_up(&cfg).await;
    let replicator =
        crate::Replicator::start(dir.path(), &[("WALDEN_LOG", "warn,walden_replicate=info")]);
    // A third of the copied rows go: the copy's file becomes a file with many deletes.
    exec(&client, "DELETE FROM wide WHERE id % 3 = 0").await;
    let mut streamed = false;
    for _ in 0..300 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let log = replicator.log();
        // (The log may carry colour codes between a field's name and value.)
        if log
            .lines()
            .any(|l| l.contains("compacted") && l.contains("streamed") && l.contains("true"))
        {
            streamed = true;
            break;
        }
    }
    // Changes to rows that moved: the index must point at their new places.
    exec(
        &client,
        "UPDATE wide SET v = 'moved' WHERE id % 7 = 1;
         DELETE FROM wide WHERE id % 11 = 2;",
    )
    .await;
    let (status, log) = replicator.stop();
    assert!(status.success(), "exit status {status:?}:\n{log}");
    assert!(streamed, "no streamed rewrite:\n{log}");
    crate::streaming::catch_up(&cfg).await;
    assert_same(&client, &cfg, "wide").await;
    check_with_python_readers(&warehouse, &url, &["public.wide"]);
}
