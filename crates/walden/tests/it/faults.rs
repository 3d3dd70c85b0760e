//! Crashes and restarts: the replicator aborted at named failpoints and killed with
//! SIGKILL at seeded random moments under a random workload, Postgres restarted fast and
//! immediate under it, and a transaction bigger than the memory cap. Every scenario ends
//! with the lake equal to the source row by row.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use walden_lake::Lake;
use walden_testkit::{LocalPgOptions, LocalPostgres};

use crate::streaming::catch_up;
use crate::{assert_same, check_with_python_readers, config, database, walden_bin};

const SCHEMA: &str = "
    CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text, big text);
    CREATE TABLE log (k text, v int);
    ALTER TABLE log REPLICA IDENTITY FULL;
    INSERT INTO items SELECT g, g % 7, 'n' || g, CASE WHEN g % 10 = 0 THEN repeat(md5(g::text), 300) END
      FROM generate_series(1, 2000) g;
    INSERT INTO log SELECT 'k' || (g % 13), g % 4 FROM generate_series(1, 500) g;";

/// One random transaction of the workload.
fn random_transaction(rng: &mut StdRng, next_id: &mut i32) -> String {
    let mut sql = String::from("BEGIN;");
    for _ in 0..rng.random_range(1..6) {
        let id = rng.random_range(1..*next_id);
        let stmt = match rng.random_range(0..9) {
            0 | 1 => {
                *next_id += 1;
                format!(
                    "INSERT INTO items VALUES ({}, {}, 'new', NULL);",
                    *next_id,
                    rng.random_range(0..100)
                )
            }
            2 | 3 => format!("UPDATE items SET qty = qty + 1 WHERE id = {id};"),
            4 => {
                format!("UPDATE items SET note = note || '+' WHERE id BETWEEN {id} AND {id} + 20;")
            }
            5 => format!("DELETE FROM items WHERE id = {id};"),
            6 => format!("UPDATE items SET id = id + 100000 WHERE id = {id};"),
            7 => format!(
                "INSERT INTO log VALUES ('k{}', {});",
                rng.random_range(0..13),
                rng.random_range(0..4)
            ),
            _ => format!(
                "DELETE FROM log WHERE ctid = (SELECT ctid FROM log WHERE k = 'k{}' LIMIT 1);",
                rng.random_range(0..13)
            ),
        };
        sql.push_str(&stmt);
    }
    sql.push_str(if rng.random_range(0..10) == 0 {
        "ROLLBACK;"
    } else {
        "COMMIT;"
    });
    sql
}

/// Runs random transactions until `stop`, reconnecting when the server goes away.
fn spawn_workload(url: String, seed: u64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut next_id = 2000;
        let mut done = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            tokio::spawn(conn);
            while !stop.load(Ordering::SeqCst) {
                let sql = random_transaction(&mut rng, &mut next_id);
                match client.batch_execute(&sql).await {
                    Ok(()) => done += 1,
                    Err(e) if e.is_closed() || e.as_db_error().is_none() => break,
                    // Conflicts of the random keys (a moved id taken): roll back, go on.
                    Err(_) => {
                        let _ = client.batch_execute("ROLLBACK").await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..15))).await;
            }
        }
        done
    })
}

fn spawn_replicator(cfg_path: &Path, failpoint: Option<&str>) -> Child {
    let mut cmd = Command::new(walden_bin());
    cmd.args(["replicate", "--quiet", "-c", cfg_path.to_str().unwrap()])
        .env_remove("WALDEN_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(f) = failpoint {
        cmd.env("WALDEN_FAILPOINT", f);
    }
    cmd.spawn().expect("starting walden replicate")
}

fn kill9(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn random_sigkills_and_postgres_restarts_converge_exactly() {
    // A cluster of its own: this test restarts it.
    let mut pg = LocalPostgres::start(LocalPgOptions::default()).unwrap();
    let url = pg.create_database("faults").await.unwrap();
    let client = pg.connect("faults").await.unwrap();
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    let cfg_path = dir.path().join("walden.toml");
    walden::run_initial_sync(&cfg, false).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let workload = spawn_workload(url.clone(), 7, stop.clone());
    let mut rng = StdRng::seed_from_u64(42);
    let mut child = spawn_replicator(&cfg_path, None);
    for round in 0..8 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        match round {
            3 => pg.restart("fast").unwrap(),
            6 => pg.restart("immediate").unwrap(),
            _ => {
                kill9(&mut child);
                child = spawn_replicator(&cfg_path, None);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let transactions = workload.await.unwrap();
    assert!(
        transactions > 20,
        "the workload barely ran ({transactions})"
    );
    kill9(&mut child);

    let client = pg.connect("faults").await.unwrap();
    catch_up(&cfg).await;
    for t in ["items", "log"] {
        assert_same(&client, &cfg, t).await;
    }
    check_with_python_readers(&cfg.lake.warehouse, &url, &["public.items", "public.log"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_every_failpoint_loses_and_duplicates_nothing() {
    let (_, url, client) = database("failpoints", SCHEMA).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &url, "");
    // Maintenance often, so a crash inside a compaction step is reached too.
    let cfg = crate::extend_config(dir.path(), "maintenance_interval_ms = 200");
    let cfg_path = dir.path().join("walden.toml");

    // During the initial copy: nothing visible, the slot gone, the next run copies.
    let (ok, _, _) = crate::walden(
        &[
            "replicate",
            "--until-caught-up",
            "--quiet",
            "-c",
            cfg_path.to_str().unwrap(),
        ],
        &[("WALDEN_FAILPOINT", "copy-after-batch")],
    );
    assert!(!ok, "the failpoint did not fire");
    catch_up(&cfg).await;
    assert_same(&client, &cfg, "items").await;

    let mut rng = StdRng::seed_from_u64(3);
    let mut next_id = 2000;
    for point in [
        "stream-after-data-files",
        "stream-after-commit",
        "stream-after-ack",
        "compact-before-commit",
    ] {
        let mut child = spawn_replicator(&cfg_path, Some(point));
        // Changes until the replicator reaches the point and aborts.
        let mut fired = false;
        for _ in 0..200 {
            let sql = random_transaction(&mut rng, &mut next_id);
            if client.batch_execute(&sql).await.is_err() {
                client.batch_execute("ROLLBACK").await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Ok(Some(status)) = child.try_wait() {
                assert!(
                    !status.success(),
                    "{point}: exited cleanly instead of aborting"
                );
                fired = true;
                break;
            }
        }
        if !fired {
            kill9(&mut child);
            panic!("failpoint {point} never fired");
        }
        // More changes while it is down, then recovery.
        for _ in 0..20 {
            let sql = random_transaction(&mut rng, &mut next_id);
            if client.batch_execute(&sql).await.is_err() {
                client.batch_execute("ROLLBACK").await.unwrap();
            }
        }
        catch_up(&cfg).await;
        for t in ["items", "log"] {
            assert_same(&client, &cfg, t).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_larger_than_the_buffer_cap_streams_through_pending_files() {
    let (_, url, client) = database(
        "bigtx",
        "CREATE TABLE wide (id int PRIMARY KEY, v int, pad text);
         INSERT INTO wide SELECT g, 0, 'start' FROM generate_series(1, 1000) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // The smallest cap (1 MiB): the transaction below spills many times.
    config(dir.path(), &url, "");
    // Appended to the last section, [lake].
    let cfg = crate::extend_config(dir.path(), "max_buffer_bytes = 1048576");
    assert_eq!(cfg.lake.max_buffer_bytes, 1 << 20);
    walden::run_initial_sync(&cfg, false).await.unwrap();
    // One transaction: inserts, then updates and deletes of rows written by earlier
    // spills of the same transaction and of the copy.
    client
        .batch_execute(
            "BEGIN;
             INSERT INTO wide SELECT g, 1, repeat('x', 100) FROM generate_series(1001, 60000) g;
             UPDATE wide SET v = v + 1, pad = 'updated' WHERE id % 3 = 0;
             DELETE FROM wide WHERE id % 5 = 0;
             UPDATE wide SET id = id + 1000000 WHERE id % 7 = 0;
             COMMIT;",
        )
        .await
        .unwrap();
    catch_up(&cfg).await;
    assert_same(&client, &cfg, "wide").await;
    check_with_python_readers(&cfg.lake.warehouse, &url, &["public.wide"]);
}

/// Mounts a tmpfs of `size` at `dir` (root only); `false` if this machine does not allow it.
fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::print_stderr)] // the skip notice where a tmpfs cannot be mounted
async fn a_full_lake_disk_commits_and_acknowledges_nothing_then_recovers() {
    let (_, url, client) = database(
        "diskfull",
        "CREATE TABLE blobs (id int PRIMARY KEY, body text);
         INSERT INTO blobs VALUES (1, 'small');",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    if !mount_tmpfs(&lake_dir, "6m") {
        // Mounting needs root (CI and the README's test command run as root); say so
        // loudly rather than pass silently.
        eprintln!(
            "SKIPPED a_full_lake_disk_commits_and_acknowledges_nothing_then_recovers: cannot mount a tmpfs here"
        );
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(lake_dir.clone());
    let cfg = config(dir.path(), &url, "");
    catch_up(&cfg).await;
    let before = Lake::open(&cfg.lake.warehouse)
        .unwrap()
        .progress(crate::slot(&cfg))
        .unwrap()
        .unwrap()
        .lsn;

    let lake = Lake::open(&cfg.lake.warehouse).unwrap();
    // More than the disk holds: incompressible text, about 12 MB.
    client
        .batch_execute(
            "INSERT INTO blobs SELECT g, string_agg(md5(random()::text || g || i), '')
               FROM generate_series(2, 400) g, generate_series(1, 1000) i GROUP BY g;",
        )
        .await
        .unwrap();
    let mut replicator = crate::Replicator::start(dir.path(), &[]);
    // It fails to write, says why, and retries; nothing is committed or acknowledged.
    let mut said = false;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if replicator.log().contains("No space left on device") {
            said = true;
            break;
        }
    }
    let log = replicator.log();
    assert!(said, "no disk-full error reported:\n{log}");
    assert!(replicator.running(), "it gave up:\n{log}");
    assert_eq!(
        lake.progress(crate::slot(&cfg)).unwrap().unwrap().lsn,
        before
    );
    let slot = walden_pg::slot_info(&client, crate::slot(&cfg))
        .await
        .unwrap()
        .unwrap();
    assert!(
        slot.confirmed_flush_lsn.is_some_and(|c| c <= before),
        "acknowledged past the lake: {:?} > {before}",
        slot.confirmed_flush_lsn
    );

    // Space returns: it recovers by itself.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&lake_dir)
        .status()
        .unwrap();
    assert!(grown.success());
    let mut recovered = false;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if lake.progress(crate::slot(&cfg)).unwrap().unwrap().lsn > before {
            recovered = true;
            break;
        }
    }
    let (status, log) = replicator.stop();
    assert!(recovered, "it did not recover when space returned:\n{log}");
    assert!(status.success(), "exit status {status:?}:\n{log}");
    catch_up(&cfg).await;
    assert_same(&client, &cfg, "blobs").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_part_of_the_copy_resumes_with_the_rest() {
    let (_, url, client) = database(
        "resume",
        "CREATE TABLE first (id int PRIMARY KEY, v text);
         INSERT INTO first SELECT g, repeat('f', 200) FROM generate_series(1, 20000) g;
         CREATE TABLE second (id int PRIMARY KEY, v text);
         INSERT INTO second SELECT g, 's' || g FROM generate_series(1, 500) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Parts of one byte: every table is its own part, largest first.
    let cfg = config(dir.path(), &url, "copy_part_bytes = 1");
    let cfg_path = dir.path().join("walden.toml");
    let (ok, _, _) = crate::walden(
        &[
            "replicate",
            "--until-caught-up",
            "--quiet",
            "-c",
            cfg_path.to_str().unwrap(),
        ],
        &[("WALDEN_FAILPOINT", "copy-after-part")],
    );
    assert!(!ok, "the failpoint did not fire");
    // The first part (the larger table) is in the lake; the slot is still there.
    let lake = Lake::open(&cfg.lake.warehouse).unwrap();
    let names: Vec<String> = lake
        .list_tables()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(names, vec!["public.first".to_string()]);
    assert!(
        walden_pg::slot_info(&client, crate::slot(&cfg))
            .await
            .unwrap()
            .is_some(),
        "the slot must survive a crash after a committed part"
    );
    let first_files: Vec<std::path::PathBuf> =
        std::fs::read_dir(cfg.lake.warehouse.join("public/first/data"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();

    // Changes while it is down, to both tables.
    client
        .batch_execute(
            "UPDATE first SET v = 'changed' WHERE id <= 100;
             DELETE FROM first WHERE id > 19900;
             INSERT INTO second SELECT g, 'late' FROM generate_series(501, 600) g;
             UPDATE second SET v = 'changed' WHERE id <= 10;",
        )
        .await
        .unwrap();
    // The next run keeps the first table's copy and copies only the second.
    catch_up(&cfg).await;
    let lake = Lake::open(&cfg.lake.warehouse).unwrap();
    let first = lake
        .load_table(&walden_lake::TableName::new("public", "first"))
        .await
        .unwrap()
        .unwrap();
    let live: Vec<String> = first
        .plan_files(lake.file_io())
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    for f in &first_files {
        let f = f.to_str().unwrap();
        assert!(
            live.iter()
                .any(|l| l.ends_with(f) || f.ends_with(l.as_str())),
            "the committed part was copied again: {f} is no longer in the table ({live:?})"
        );
    }
    assert_same(&client, &cfg, "first").await;
    assert_same(&client, &cfg, "second").await;
    check_with_python_readers(
        &cfg.lake.warehouse,
        &url,
        &["public.first", "public.second"],
    );
}
