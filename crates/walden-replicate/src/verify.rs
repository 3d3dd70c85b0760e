//! `walden verify`: the source and the lake compared at one LSN, table by table.
//!
//! The source side is fixed first: a TEMPORARY logical slot created with an exported
//! snapshot. Its consistent point S is the LSN of the comparison; the snapshot shows
//! exactly the transactions that committed before S. A reading connection imports the
//! snapshot, then the temporary slot goes (it pins nothing afterwards).
//!
//! The lake is then brought to exactly S: [`stream`](crate::stream) on the replication slot
//! with `until_lsn = S` applies every transaction committing before S, none after, and
//! commits S as the lake's progress. That needs the replication slot, so verify refuses
//! while `walden replicate` holds it.
//!
//! Then, per table, the lake's live rows (at the commit just made) go into a map from key
//! hash to row hash (a count per row hash for tables without a primary key, which are
//! multisets), and the source is streamed under the snapshot through the initial copy's
//! own COPY-to-Arrow reader, so values are bit-identical to what the lake holds when
//! nothing was lost. Keys and rows are hashed like the applier's row index does
//! ([`KeyEncoder`]: exact for one integer column, XXH3-128 of arrow's row encoding
//! otherwise). Only when something differs is the lake read a second time, for the values
//! of the differing rows it lists.

use std::collections::HashSet;

use arrow::array::{Array, ArrayRef, FixedSizeBinaryArray, RecordBatch, UInt32Array};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::Serialize;
use tokio::sync::watch;
use tokio_postgres::Client;
use walden_lake::{FileIO, Lake, LakeTable};
use walden_pg::{
    CopyReader, Decode, DiscoverOptions, ExportedSnapshot, PgError, RowDecoder, SourceConn,
    SourceTable, TableSelector, copy_query, discover, format_lsn, quote_literal, slot_info,
};

use crate::index::{FastMap, KeyEncoder, live_positions};
use crate::{Phase, Result, StreamOptions, StreamState, SyncError, TableState};

/// What to verify and how.
#[derive(Clone)]
pub struct VerifyOptions {
    /// How to bring the lake to the snapshot's LSN: the replication slot, publication and
    /// flush settings (`until_lsn` and `until_caught_up` are set by [`verify`]).
    pub stream: StreamOptions,
    /// How the tables were discovered for the copy (type mappings), so the source is read
    /// exactly as the copy read it.
    pub discover: DiscoverOptions,
    /// Source tables (`schema.name`) to compare; empty: every replicated table.
    pub tables: Vec<String>,
    /// Differing rows listed per table at most (all are counted).
    pub max_keys: usize,
}

/// The outcome: one entry per compared table.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The LSN source and lake were compared at.
    #[serde(serialize_with = "lsn_text")]
    pub lsn: u64,
    /// The lake's LSN before verify brought it to `lsn`.
    #[serde(serialize_with = "lsn_text")]
    pub lake_lsn_before: u64,
    pub matches: bool,
    pub tables: Vec<TableReport>,
}

impl VerifyReport {
    /// Tables that differ.
    pub fn differing(&self) -> impl Iterator<Item = &TableReport> {
        self.tables.iter().filter(|t| !t.matches)
    }
}

/// One table's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// The source table (`schema.name`).
    pub table: String,
    /// The lake table (`namespace.name`).
    pub lake_table: String,
    /// The key columns; empty: rows are compared whole, as a multiset (no primary key).
    pub key: Vec<String>,
    pub source_rows: u64,
    pub lake_rows: u64,
    pub matches: bool,
    /// Rows (keys) the source has and the lake does not.
    pub missing_in_lake: u64,
    /// Rows (keys) the lake has and the source does not.
    pub extra_in_lake: u64,
    /// Keys both have, with different values.
    pub different_values: u64,
    /// Why the rows could not be compared (the columns differ, the table is gone), if so.
    pub not_comparable: Option<String>,
    /// Up to `max_keys` of the differing rows.
    pub differences: Vec<RowDifference>,
}

/// One differing row (key).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RowDifference {
    pub kind: DifferenceKind,
    /// The key values (`id=42`), or the whole row for a table without a primary key.
    pub key: String,
    /// Identical rows this entry stands for (tables without a primary key).
    pub count: u64,
    /// For different values: which columns differ, with both values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum DifferenceKind {
    MissingInLake,
    ExtraInLake,
    DifferentValues,
}

impl DifferenceKind {
    pub fn describe(self) -> &'static str {
        match self {
            DifferenceKind::MissingInLake => "missing in lake",
            DifferenceKind::ExtraInLake => "extra in lake",
            DifferenceKind::DifferentValues => "different values",
        }
    }
}

fn lsn_text<S: serde::Serializer>(lsn: &u64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format_lsn(*lsn))
}

fn refused(message: String) -> SyncError {
    SyncError::Refused(message)
}

/// Compares the source and the lake at one LSN (see the module docs). `cancel` turning
/// true stops it; what the lake committed on the way stays committed and acknowledged.
pub async fn verify(
    conn: &SourceConn,
    lake: &Lake,
    options: &VerifyOptions,
    cancel: watch::Receiver<bool>,
) -> Result<VerifyReport> {
    let slot = options.stream.slot.as_str();
    let progress = lake.progress(slot)?.ok_or_else(|| {
        refused(format!(
            "the lake at {} has no replication state for slot {slot}: nothing to verify. Run \
             `walden replicate` first",
            lake.warehouse().display()
        ))
    })?;
    let state: StreamState = serde_json::from_value(progress.state.clone())
        .map_err(|e| refused(format!("the lake's replication state is unreadable: {e}")))?;
    if state.phase != Phase::Streaming {
        return Err(refused(format!(
            "the initial copy for slot {slot} did not complete, so there is nothing to \
             verify yet; run `walden replicate` to copy the tables"
        )));
    }
    let selected = select_tables(&state.tables, &options.tables)?;

    // Verify moves the lake itself, through the replication slot: nobody else may hold it.
    ensure_slot_free(conn, slot).await?;

    // The source side: a temporary slot's exported snapshot, imported by the reader.
    let temp_slot = format!(
        "walden_verify_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros() % 1_000_000_000
    );
    let snapshot =
        ExportedSnapshot::create_temporary(conn, &temp_slot, &options.stream.publication).await?;
    let lsn = snapshot.consistent_point;
    let reader = conn.connect().await;
    let imported = match &reader {
        Ok(reader) => reader
            .batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = 0; SET statement_timeout = 0;
                 BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
                 SET TRANSACTION SNAPSHOT {}",
                quote_literal(&snapshot.snapshot_name)
            ))
            .await
            .map_err(|source| PgError::Query {
                context: format!(
                    "importing the snapshot of temporary slot {temp_slot} (LSN {}) into the \
                     reading connection",
                    format_lsn(lsn)
                ),
                source,
            }),
        Err(_) => Ok(()),
    };
    // The importing transaction keeps the snapshot; the temporary slot goes now.
    snapshot.release().await;
    let reader = reader?;
    imported?;
    tracing::info!(lsn = %format_lsn(lsn), "verify: source snapshot taken");

    // The source's tables as of the snapshot (found by relation OID), discovered as the
    // copy discovered them.
    let mut patterns = Vec::with_capacity(selected.len());
    for t in &selected {
        let row = reader
            .query_opt(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
                &[&t.oid],
            )
            .await
            .map_err(|source| PgError::Query {
                context: format!("looking up table {} (relation oid {})", t.source, t.oid),
                source,
            })?;
        if let Some(row) = row {
            patterns.push(format!(
                "{}.{}",
                as_pattern(row.get(0)),
                as_pattern(row.get(1))
            ));
        }
    }
    let sources = if patterns.is_empty() {
        Vec::new()
    } else {
        let selector = TableSelector::new(&patterns).map_err(|why| {
            refused(format!(
                "cannot select the replicated tables on the source: {why}"
            ))
        })?;
        discover(&reader, &selector, &options.discover).await?
    };

    // The lake side: exactly S. (Checked again: creating the slot may have waited for
    // running transactions.)
    ensure_slot_free(conn, slot).await?;
    let mut stream_options = options.stream.clone();
    stream_options.until_lsn = Some(lsn);
    stream_options.until_caught_up = false;
    let outcome = crate::stream(conn, lake, &stream_options, cancel.clone()).await?;
    if !outcome.caught_up || outcome.lsn != lsn {
        return Err(refused(format!(
            "verify was stopped before the lake reached the source's LSN {} (the lake is \
             committed and acknowledged at {}); run it again",
            format_lsn(lsn),
            format_lsn(outcome.lsn)
        )));
    }
    let mut lake_tables = Vec::with_capacity(selected.len());
    for t in &selected {
        lake_tables.push(lake.load_table(&t.lake_name()).await?);
    }
    let now = lake.progress(slot)?.map(|p| p.lsn);
    if now != Some(lsn) {
        return Err(refused(format!(
            "the lake moved from LSN {} to {} while verify was reading it (did `walden \
             replicate` start?): stop `walden replicate` and run verify again",
            format_lsn(lsn),
            now.map(format_lsn).unwrap_or_else(|| "none".into())
        )));
    }

    let mut tables = Vec::with_capacity(selected.len());
    for (t, lake_table) in selected.iter().zip(lake_tables) {
        let source = sources.iter().find(|s| s.oid == t.oid);
        let report = compare_table(
            &reader,
            lake,
            t,
            source,
            lake_table.as_ref(),
            options.max_keys,
            &cancel,
        )
        .await?;
        tracing::info!(
            table = %t.source,
            source_rows = report.source_rows,
            lake_rows = report.lake_rows,
            matches = report.matches,
            "verify: compared"
        );
        tables.push(report);
    }
    let _ = reader.batch_execute("COMMIT").await;
    Ok(VerifyReport {
        lsn,
        lake_lsn_before: progress.lsn,
        matches: tables.iter().all(|t| t.matches),
        tables,
    })
}

/// How long a slot in use may take to be released (the server process of a consumer that
/// just stopped exits a moment after its client).
const SLOT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses when another session (a running `walden replicate`) holds the slot.
async fn ensure_slot_free(conn: &SourceConn, slot: &str) -> Result<()> {
    let control = conn.connect().await?;
    let started = std::time::Instant::now();
    loop {
        let Some(pid) = slot_info(&control, slot).await?.and_then(|i| i.active_pid) else {
            return Ok(());
        };
        if started.elapsed() >= SLOT_RELEASE_WAIT {
            return Err(refused(format!(
                "replication slot {slot} is in use by server process {pid} (a running \
                 `walden replicate`?): stop `walden replicate` first; verify brings the lake \
                 to the source's LSN itself"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The replicated tables `wanted` names (all when empty), in the lake state's order.
fn select_tables(all: &[TableState], wanted: &[String]) -> Result<Vec<TableState>> {
    for w in wanted {
        if !all.iter().any(|t| &t.source == w) {
            return Err(refused(format!(
                "table {w} is not replicated into this lake (replicated: {}); name tables as \
                 schema.name",
                all.iter()
                    .map(|t| t.source.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(all
        .iter()
        .filter(|t| wanted.is_empty() || wanted.contains(&t.source))
        .cloned()
        .collect())
}

/// A name as a table-selector pattern: the selector's special characters (and the dot
/// that separates schema from table) match themselves through `?`; the relation OID
/// decides afterwards.
fn as_pattern(name: &str) -> String {
    name.chars()
        .map(|c| {
            if matches!(c, '*' | '?' | '.' | '!') {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// A table whose rows cannot be compared, and why.
fn not_comparable(t: &TableState, why: String) -> TableReport {
    TableReport {
        table: t.source.clone(),
        lake_table: t.lake.clone(),
        key: Vec::new(),
        source_rows: 0,
        lake_rows: 0,
        matches: false,
        missing_in_lake: 0,
        extra_in_lake: 0,
        different_values: 0,
        not_comparable: Some(why),
        differences: Vec::new(),
    }
}

/// A differing row noted while scanning, before it is described.
struct Noted {
    kind: DifferenceKind,
    /// Key hash (keyed tables) or row hash (multisets).
    key: u128,
    count: u64,
    /// The source's version of the row (missing or different), one row.
    source: Option<RecordBatch>,
    /// The lake's version of the row (extra or different), one row.
    lake: Option<RecordBatch>,
}

/// Compares one table: the lake's live rows into a map, the source streamed against it.
async fn compare_table(
    reader: &Client,
    lake: &Lake,
    t: &TableState,
    source: Option<&SourceTable>,
    lake_table: Option<&LakeTable>,
    max_keys: usize,
    cancel: &watch::Receiver<bool>,
) -> Result<TableReport> {
    let Some(lake_table) = lake_table else {
        return Ok(not_comparable(
            t,
            format!("table {} is no longer in the lake's catalog", t.lake_name()),
        ));
    };
    let Some(source) = source else {
        return Ok(not_comparable(
            t,
            format!(
                "the source has no table {} with relation oid {} (dropped or recreated)",
                t.source, t.oid
            ),
        ));
    };
    let schema = lake_table.arrow_schema().clone();
    // The source's columns must be the lake's, in order and type.
    let source_schema = match source.lake_schema() {
        Ok(s) => s,
        Err(why) => return Ok(not_comparable(t, why)),
    };
    let source_arrow = lake
        .new_table(lake_table.name(), &source_schema, Default::default())?
        .arrow_schema()
        .clone();
    let describe = |s: &arrow::datatypes::Schema| {
        s.fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let same_columns = source_arrow.fields().len() == schema.fields().len()
        && source_arrow
            .fields()
            .iter()
            .zip(schema.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type().equals_datatype(b.data_type()));
    if !same_columns {
        return Ok(not_comparable(
            t,
            format!(
                "the columns differ: source ({}), lake ({})",
                describe(&source_arrow),
                describe(&schema)
            ),
        ));
    }
    let decodes: Vec<Decode> = source
        .columns
        .iter()
        .map(|c| c.mapping.as_ref().map(|m| m.decode.clone()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|why| refused(why.clone()))?;

    // The key: what identifies a row in the lake.
    let key_names: Vec<String> = if t.primary_key.is_empty() {
        let s = lake_table.metadata().current_schema();
        s.identifier_field_ids()
            .filter_map(|id| s.name_by_field_id(id).map(str::to_string))
            .collect()
    } else {
        t.primary_key.clone()
    };
    let key_cols = key_names
        .iter()
        .map(|k| {
            schema.index_of(k).map_err(|_| {
                refused(format!(
                    "{}: key column {k} is not in the lake table {}",
                    t.source,
                    lake_table.name()
                ))
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    let multiset = key_cols.is_empty();
    let types: Vec<DataType> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let all: Vec<usize> = (0..types.len()).collect();
    let row_hasher = KeyEncoder::new(all.clone(), &types)?;
    let key_hasher = if multiset {
        None
    } else {
        Some(KeyEncoder::new(key_cols.clone(), &types)?)
    };
    let io = lake.file_io();
    let stopped = || {
        refused(format!(
            "verify was stopped while comparing {}; run it again",
            t.source
        ))
    };

    // The lake's live rows: key hash -> row hash (a count per row hash for multisets).
    let mut keyed: FastMap<u128, u128> = FastMap::default();
    let mut counts: FastMap<u128, u64> = FastMap::default();
    // Further live rows of a key already seen (a key must be unique).
    let mut duplicates: Vec<u128> = Vec::new();
    let mut lake_rows = 0u64;
    let files = lake_table.plan_files(io).await?;
    for f in &files {
        if *cancel.borrow() {
            return Err(stopped());
        }
        let live = live_positions(f.record_count, &f.deleted);
        if live.is_empty() {
            continue;
        }
        let rows = (!f.deleted.is_empty()).then_some(live.as_slice());
        let batch = lake_table.read_data_file(io, &f.path, &all, rows).await?;
        lake_rows += batch.num_rows() as u64;
        let hashes = row_hasher.keys(&batch)?;
        match &key_hasher {
            None => {
                for h in hashes {
                    *counts.entry(h).or_default() += 1;
                }
            }
            Some(k) => {
                keyed.reserve(hashes.len());
                for (key, h) in k.keys(&batch)?.into_iter().zip(hashes) {
                    if keyed.insert(key, h).is_some() {
                        duplicates.push(key);
                    }
                }
            }
        }
    }

    // The source, streamed under the snapshot.
    let mut noted: Vec<Noted> = Vec::new();
    let mut noted_missing: FastMap<u128, usize> = FastMap::default();
    let (mut missing, mut different, mut source_rows) = (0u64, 0u64, 0u64);
    let decoder = RowDecoder::new(&t.source, schema.clone(), &decodes)?;
    let mut copy = CopyReader::start(reader, &copy_query(source, None), decoder).await?;
    while let Some(batch) = copy.next_batch().await? {
        if *cancel.borrow() {
            return Err(stopped());
        }
        source_rows += batch.num_rows() as u64;
        let hashes = row_hasher.keys(&batch)?;
        match &key_hasher {
            None => {
                for (i, h) in hashes.into_iter().enumerate() {
                    match counts.get_mut(&h) {
                        Some(c) if *c > 1 => *c -= 1,
                        Some(_) => {
                            counts.remove(&h);
                        }
                        None => {
                            missing += 1;
                            if let Some(&n) = noted_missing.get(&h) {
                                noted[n].count += 1;
                            } else if noted.len() < max_keys {
                                noted_missing.insert(h, noted.len());
                                noted.push(Noted {
                                    kind: DifferenceKind::MissingInLake,
                                    key: h,
                                    count: 1,
                                    source: Some(one_row(&batch, i)?),
                                    lake: None,
                                });
                            }
                        }
                    }
                }
            }
            Some(k) => {
                for (i, (key, h)) in k.keys(&batch)?.into_iter().zip(hashes).enumerate() {
                    let kind = match keyed.remove(&key) {
                        None => DifferenceKind::MissingInLake,
                        Some(l) if l != h => DifferenceKind::DifferentValues,
                        Some(_) => continue,
                    };
                    match kind {
                        DifferenceKind::MissingInLake => missing += 1,
                        _ => different += 1,
                    }
                    if noted.len() < max_keys {
                        noted.push(Noted {
                            kind,
                            key,
                            count: 1,
                            source: Some(one_row(&batch, i)?),
                            lake: None,
                        });
                    }
                }
            }
        }
    }

    // What the lake has beyond the source: the smallest hashes first, so the listing is
    // stable (for an integer key: the smallest keys).
    let mut extras: Vec<(u128, u64)> = if multiset {
        counts.into_iter().collect()
    } else {
        let mut keys: Vec<u128> = keyed.into_keys().chain(duplicates).collect();
        keys.sort_unstable();
        let mut out: Vec<(u128, u64)> = Vec::new();
        for k in keys {
            match out.last_mut() {
                Some((last, n)) if *last == k => *n += 1,
                _ => out.push((k, 1)),
            }
        }
        out
    };
    let extra: u64 = extras.iter().map(|(_, n)| n).sum();
    extras.sort_unstable();
    for (key, count) in extras
        .into_iter()
        .take(max_keys.saturating_sub(noted.len()))
    {
        noted.push(Noted {
            kind: DifferenceKind::ExtraInLake,
            key,
            count,
            source: None,
            lake: None,
        });
    }

    // The lake's versions of the listed extra and different rows.
    let wanted: HashSet<u128> = noted
        .iter()
        .filter(|n| n.kind != DifferenceKind::MissingInLake)
        .map(|n| n.key)
        .collect();
    if !wanted.is_empty() {
        let found = lake_rows_by_key(
            lake_table,
            io,
            &files,
            &all,
            key_hasher.as_ref().map_or(&all[..], |k| k.columns()),
            key_hasher.as_ref().unwrap_or(&row_hasher),
            &wanted,
        )
        .await?;
        for n in &mut noted {
            if n.kind != DifferenceKind::MissingInLake {
                n.lake = found.get(&n.key).cloned();
            }
        }
    }

    let key_cols_shown = if multiset { all.clone() } else { key_cols };
    let mut differences = Vec::with_capacity(noted.len());
    for n in &noted {
        let row = n.source.as_ref().or(n.lake.as_ref());
        let key = match row {
            Some(row) => format_values(row, &key_cols_shown)?,
            None => format!("(row no longer found in the lake; key hash {:032x})", n.key),
        };
        let detail = match (n.kind, &n.source, &n.lake) {
            (DifferenceKind::DifferentValues, Some(s), Some(l)) => Some(describe_change(s, l)?),
            (DifferenceKind::ExtraInLake, _, _) if !multiset && n.count > 1 => Some(format!(
                "the lake has {} rows with this key that the source does not",
                n.count
            )),
            _ => None,
        };
        differences.push(RowDifference {
            kind: n.kind,
            key,
            count: n.count,
            detail,
        });
    }
    differences.sort_by_key(|d| d.kind);

    let matches = missing == 0 && extra == 0 && different == 0;
    Ok(TableReport {
        table: t.source.clone(),
        lake_table: t.lake.clone(),
        key: key_names,
        source_rows,
        lake_rows,
        matches,
        missing_in_lake: missing,
        extra_in_lake: extra,
        different_values: different,
        not_comparable: None,
        differences,
    })
}

/// Row `i` of `batch` as a batch of its own (copied, so it holds no large buffers).
fn one_row(batch: &RecordBatch, i: usize) -> Result<RecordBatch> {
    arrow::compute::take_record_batch(batch, &UInt32Array::from(vec![i as u32]))
        .map_err(|e| refused(format!("copying a differing row: {e}")))
}

/// The lake's live rows whose key (by `hasher` over `key_cols`) is in `wanted`, one row
/// each (the first found).
async fn lake_rows_by_key(
    table: &LakeTable,
    io: &FileIO,
    files: &[walden_lake::PlannedFile],
    all: &[usize],
    key_cols: &[usize],
    hasher: &KeyEncoder,
    wanted: &HashSet<u128>,
) -> Result<FastMap<u128, RecordBatch>> {
    let mut found: FastMap<u128, RecordBatch> = FastMap::default();
    for f in files {
        if found.len() == wanted.len() {
            break;
        }
        let live = live_positions(f.record_count, &f.deleted);
        if live.is_empty() {
            continue;
        }
        let keys_batch = table
            .read_data_file(io, &f.path, key_cols, Some(&live))
            .await?;
        let keys = hasher.keys_of(keys_batch.columns())?;
        let mut positions = Vec::new();
        let mut seen = HashSet::new();
        for (k, &pos) in keys.iter().zip(&live) {
            if wanted.contains(k) && !found.contains_key(k) && seen.insert(*k) {
                positions.push(pos);
            }
        }
        if positions.is_empty() {
            continue;
        }
        let rows = table
            .read_data_file(io, &f.path, all, Some(&positions))
            .await?;
        let keys = hasher.keys(&rows)?;
        for (i, k) in keys.into_iter().enumerate() {
            found.insert(k, one_row(&rows, i)?);
        }
    }
    Ok(found)
}

const MAX_VALUE_CHARS: usize = 80;

/// `name=value, ...` of columns `cols` of a one-row batch.
fn format_values(row: &RecordBatch, cols: &[usize]) -> Result<String> {
    let mut parts = Vec::with_capacity(cols.len());
    for &c in cols {
        parts.push(format!(
            "{}={}",
            row.schema().field(c).name(),
            format_value(row.column(c))?
        ));
    }
    Ok(parts.join(", "))
}

/// The value of a one-row column, readable: strings quoted, UUIDs in their canonical
/// form, NULL as NULL, long values cut.
fn format_value(col: &ArrayRef) -> Result<String> {
    if col.is_null(0) {
        return Ok("NULL".into());
    }
    let text = match col.data_type() {
        DataType::FixedSizeBinary(16) => {
            let a = col
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .ok_or_else(|| refused("a uuid column is not fixed-size binary".into()))?;
            let h: String = a.value(0).iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        }
        _ => {
            let options = FormatOptions::new().with_null("NULL");
            let f = ArrayFormatter::try_new(col.as_ref(), &options)
                .map_err(|e| refused(format!("formatting a value: {e}")))?;
            f.value(0).to_string()
        }
    };
    let text = if text.chars().count() > MAX_VALUE_CHARS {
        let cut: String = text.chars().take(MAX_VALUE_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    };
    Ok(match col.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            format!("'{}'", text.replace('\'', "''"))
        }
        _ => text,
    })
}

/// Which columns of two one-row batches (same schema) differ, with both values.
fn describe_change(source: &RecordBatch, lake: &RecordBatch) -> Result<String> {
    let mut parts = Vec::new();
    for (c, field) in source.schema().fields().iter().enumerate() {
        let encode = |col: &ArrayRef| -> Result<Vec<u8>> {
            let conv = RowConverter::new(vec![SortField::new(field.data_type().clone())])
                .map_err(|e| refused(format!("comparing column {}: {e}", field.name())))?;
            let rows = conv
                .convert_columns(std::slice::from_ref(col))
                .map_err(|e| refused(format!("comparing column {}: {e}", field.name())))?;
            Ok(rows.row(0).as_ref().to_vec())
        };
        if encode(source.column(c))? != encode(lake.column(c))? {
            parts.push(format!(
                "{}: {} in the source, {} in the lake",
                field.name(),
                format_value(source.column(c))?,
                format_value(lake.column(c))?
            ));
        }
    }
    Ok(if parts.is_empty() {
        "the row hashes differ but no column does (a hash collision?)".into()
    } else {
        parts.join("; ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    fn row(id: i64, v: Option<&str>) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("v", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![id])),
                Arc::new(StringArray::from(vec![v])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn values_are_readable_and_changes_name_their_columns() {
        assert_eq!(
            format_values(&row(42, Some("it's")), &[0, 1]).unwrap(),
            "id=42, v='it''s'"
        );
        assert_eq!(format_values(&row(1, None), &[1]).unwrap(), "v=NULL");
        assert_eq!(
            describe_change(&row(7, Some("a")), &row(7, None)).unwrap(),
            "v: 'a' in the source, NULL in the lake"
        );
        let long = "x".repeat(200);
        let shown = format_values(&row(1, Some(&long)), &[1]).unwrap();
        assert!(shown.ends_with("…'") && shown.len() < 100, "{shown}");
    }

    #[test]
    fn table_names_select_themselves() {
        assert_eq!(as_pattern("a.b*c"), "a?b?c");
        let state = |s: &str| -> TableState {
            serde_json::from_value(serde_json::json!({
                "source": s, "oid": 1, "lake": s, "rows": 0
            }))
            .unwrap()
        };
        let all = vec![state("public.a"), state("public.b")];
        assert_eq!(select_tables(&all, &[]).unwrap().len(), 2);
        assert_eq!(
            select_tables(&all, &["public.b".into()]).unwrap()[0].source,
            "public.b"
        );
        let err = select_tables(&all, &["public.c".into()]).unwrap_err();
        assert!(err.to_string().contains("public.a, public.b"), "{err}");
    }
}
