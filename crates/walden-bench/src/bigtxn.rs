//! `walden-bench big-transaction`: one source transaction of millions of rows, applied in
//! bounded memory (buffers spill to pending files past `[lake] max_buffer_bytes`) and made
//! visible in one commit. Each run empties the table (TRUNCATE), then one transaction
//! inserts `rows` rows and updates every tenth of them again, then times `pg_recvlogical` decoding it from its own
//! pgoutput slot to /dev/null (the baseline) and `walden replicate --until-caught-up`
//! applying it, with walden's peak RSS.

use std::path::Path;

use anyhow::Result;

use crate::{
    bench_config, bench_postgres, catch_up, create_orders, fresh_recv_slot, median, recvlogical_to,
};

pub(crate) async fn run(rows: u64, runs: usize, walden: &Path) -> Result<()> {
    let pg = bench_postgres("16GB")?;
    let url = pg.create_database("bench").await?;
    let client = pg.connect("bench").await?;
    create_orders(&pg, "bench", 1000).await?;
    let (dir, cfg) = bench_config(&url)?;
    let cfg_arg = cfg.to_str().unwrap_or_default().to_string();
    catch_up(walden, &cfg_arg)?;
    let (mut base, mut ours, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = 1_000_000_000i64;
    for run in 0..runs {
        fresh_recv_slot(&client).await?;
        eprintln!(
            "run {}: one transaction of {rows} inserts + {} updates ...",
            run + 1,
            rows / 10
        );
        // An empty table first (the TRUNCATE streams too): every run applies the same
        // transaction to the same state, and the row index holds only its rows.
        client.batch_execute("TRUNCATE orders").await?;
        client
            .batch_execute(&format!(
                "BEGIN;
                 INSERT INTO orders SELECT g, g % 1000003, 'pending', 9.99, now(), NULL, false
                   FROM generate_series({next}::int8, {next}::int8 + {rows} - 1) g;
                 UPDATE orders SET status = 'paid', paid = true
                   WHERE id BETWEEN {next} AND {next} + {rows} - 1 AND id % 10 = 0;
                 COMMIT;"
            ))
            .await?;
        next += rows as i64;
        let end: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?
            .get(0);
        let b = recvlogical_to(&pg, &url, &end)?;
        let (w, peak) = catch_up(walden, &cfg_arg)?;
        let changes = (rows + rows / 10) as f64;
        eprintln!(
            "run {}: pg_recvlogical {b:.2}s, walden {w:.2}s ({:.0} changes/s), peak RSS {:.0} MiB",
            run + 1,
            changes / w,
            peak as f64 / 1048576.0
        );
        base.push(b);
        ours.push(w);
        peaks.push(peak as f64);
    }
    let (b, w) = (median(base), median(ours));
    println!(
        "one transaction of {rows} inserts + {} updates of them, {runs} runs, medians:",
        rows / 10
    );
    println!("  pg_recvlogical (pgoutput v1) to /dev/null: {b:>8.2} s");
    println!("  walden replicate --until-caught-up:        {w:>8.2} s");
    println!(
        "  ratio pg_recvlogical time / walden time:   {:>8.2}",
        b / w
    );
    println!(
        "  walden peak RSS:                           {:>8.0} MiB (max over runs; [lake] max_buffer_bytes = 64 MiB)",
        peaks.iter().cloned().fold(0.0, f64::max) / 1048576.0
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
