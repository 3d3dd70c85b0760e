//! `walden-bench mcp`: what the MCP front end adds over the query it runs.
//!
//! A lake written in a temporary directory holds `bench.small` (`--rows` rows, 5 columns)
//! and `bench.wide` (100 columns). The MCP server ([`walden_serve::mcp::WaldenMcp`]) serves
//! one session over an in-memory pipe, driven by newline-delimited JSON-RPC as a stdio
//! client would send it, so the timings include the protocol framing, argument checks,
//! formatting and fencing:
//!
//! 1. tool-call overhead: `tools/call query` of a small aggregate against
//!    [`QueryService::execute`] (then collect and finish) of the same SQL as the same
//!    principal, alternating, `--runs` times each; the difference of the medians is the
//!    overhead (target ≤ 10 ms);
//! 2. `tools/call describe_table` of the 100-column table (target ≤ 200 ms), next to the
//!    bare `SELECT * ... LIMIT 200` its example values come from.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use walden_lake::{
    Column, ColumnType, Commit, DataFileWriter, Lake, TableChange, TableName, TableSchema,
    WriterOptions,
};
use walden_query::{LakeCatalog, Principal, Protocol, QueryService, ServiceOptions};
use walden_serve::mcp::WaldenMcp;

use crate::median;

pub(crate) struct Options {
    pub rows: u64,
    pub runs: usize,
}

async fn write_table(lake: &Lake, name: &str, columns: usize, rows: u64) -> Result<TableChange> {
    let schema = TableSchema {
        columns: (0..columns)
            .map(|i| Column {
                name: if i == 0 { "id".into() } else { format!("c{i}") },
                ty: if i == 0 || i % 2 == 1 {
                    ColumnType::Int64
                } else {
                    ColumnType::String
                },
                nullable: i != 0,
                doc: Some(format!("column {i} of {name}")),
            })
            .collect(),
        primary_key: vec!["id".into()],
    };
    let table = lake.new_table(&TableName::new("bench", name), &schema, HashMap::new())?;
    let target = table.arrow_schema().clone();
    let arrays: Vec<ArrayRef> = (0..columns)
        .map(|i| -> ArrayRef {
            if i == 0 {
                Arc::new(Int64Array::from_iter_values(0..rows as i64))
            } else if i % 2 == 1 {
                Arc::new(Int64Array::from_iter_values(
                    (0..rows as i64).map(|r| r % (i as i64 + 7)),
                ))
            } else {
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|r| format!("v{}-{}", i, r % 13)),
                ))
            }
        })
        .collect();
    let batch = RecordBatch::try_new(target, arrays)?;
    let mut writer = DataFileWriter::new(lake.file_io(), &table, WriterOptions::default());
    writer.write(&batch).await?;
    let mut change = TableChange::new(table);
    change.data_files = writer.close().await?;
    Ok(change)
}

/// A JSON-RPC client over the pipe.
struct Client {
    write: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    read: BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
    next_id: u64,
}

impl Client {
    async fn send(&mut self, message: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(message)?;
        line.push(b'\n');
        self.write.write_all(&line).await?;
        self.write.flush().await?;
        Ok(())
    }

    async fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await?;
        loop {
            let mut line = String::new();
            if self.read.read_line(&mut line).await? == 0 {
                bail!("the MCP server closed the pipe");
            }
            let v: Value = serde_json::from_str(&line)?;
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    bail!("{method} failed: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
    }

    async fn tool(&mut self, name: &str, arguments: Value) -> Result<String> {
        let r = self
            .request(
                "tools/call",
                json!({ "name": name, "arguments": arguments }),
            )
            .await?;
        let text = r["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if r["isError"] == json!(true) {
            bail!("{name} failed: {text}");
        }
        Ok(text)
    }
}

pub(crate) async fn run(o: &Options) -> Result<()> {
    let dir = crate::tempfile_dir()?;
    let result = run_in(&dir, o).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &Path, o: &Options) -> Result<()> {
    let lake = Lake::open(dir.join("warehouse"))?;
    let small = write_table(&lake, "small", 5, o.rows).await?;
    let wide = write_table(&lake, "wide", 100, 1000).await?;
    lake.commit(Commit {
        tables: vec![small, wide],
        progress: None,
    })
    .await?;
    let service = QueryService::new(LakeCatalog::new(lake), None, ServiceOptions::default())?;
    let principal = Arc::new(Principal::new("bench"));
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let server = WaldenMcp::for_principal(service.clone(), principal.clone());
    let (sr, sw) = tokio::io::split(ours);
    let task = tokio::spawn(server.serve_on((sr, sw)));
    let (cr, cw) = tokio::io::split(theirs);
    let mut client = Client {
        write: cw,
        read: BufReader::new(cr),
        next_id: 0,
    };
    client
        .request(
            "initialize",
            json!({ "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": { "name": "walden-bench", "version": "0" } }),
        )
        .await
        .context("initialize")?;
    client
        .send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
        .await?;

    let sql = "SELECT c2, count(*) AS n, sum(c1) AS s FROM bench.small GROUP BY c2 ORDER BY c2";
    // Warm both paths (metadata and file plans are cached per table).
    client.tool("query", json!({ "sql": sql })).await?;
    bare(&service, &principal, sql).await?;
    let (mut mcp, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..o.runs {
        let t = Instant::now();
        client.tool("query", json!({ "sql": sql })).await?;
        mcp.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        bare(&service, &principal, sql).await?;
        direct.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (m, d) = (median(mcp), median(direct));
    println!(
        "query tool on a small result ({} rows in bench.small): MCP {m:.2} ms, bare \
         QueryService::execute {d:.2} ms; overhead {:.2} ms (target <= 10 ms), ratio {:.2}x \
         (medians of {} runs)",
        o.rows,
        m - d,
        m / d.max(1e-9),
        o.runs
    );

    let wide_sql = "SELECT * FROM bench.wide LIMIT 200";
    client
        .tool("describe_table", json!({ "table": "bench.wide" }))
        .await?;
    let (mut describe, mut sample) = (Vec::new(), Vec::new());
    for _ in 0..o.runs {
        let t = Instant::now();
        client
            .tool("describe_table", json!({ "table": "bench.wide" }))
            .await?;
        describe.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        bare(&service, &principal, wide_sql).await?;
        sample.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "describe_table of a 100-column table: {:.2} ms (target <= 200 ms); its example \
         sample alone (bare {wide_sql:?}) {:.2} ms (medians of {} runs)",
        median(describe),
        median(sample),
        o.runs
    );
    drop(client);
    let _ = task.await;
    Ok(())
}

async fn bare(service: &QueryService, principal: &Arc<Principal>, sql: &str) -> Result<usize> {
    let mut a = service
        .execute(principal, Protocol::Mcp, sql, None, None)
        .await?;
    let batches = a.collect().await;
    a.finish().await;
    Ok(batches?.iter().map(|b| b.num_rows()).sum())
}
