use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use walden_lake::{
    Commit, DataFile, DataFileWriter, Lake, LakeTable, Progress, TableChange, TableName,
    WriterOptions,
};
use walden_pg::{
    CopyReader, Decode, ExportedSnapshot, RowDecoder, SourceConn, SourceTable, copy_query,
    drop_slot, ensure_publication, format_lsn, page_ranges, quote_literal, slot_info,
};

use crate::{Phase, Result, StreamState, SyncError, TableState};

/// Told about the copy's progress (the CLI draws progress bars with it).
pub trait SyncObserver: Send + Sync {
    /// A table is about to be copied; `estimated_rows` from the planner's statistics.
    fn table_started(&self, _table: &str, _estimated_rows: u64) {}
    /// `rows` more rows of `table` were written.
    fn rows_copied(&self, _table: &str, _rows: u64) {}
    /// Every range of `table` is copied.
    fn table_copied(&self, _table: &str, _rows: u64) {}
    /// The lake commit is under way / done.
    fn committing(&self) {}
}

/// No-op observer.
pub struct Quiet;
impl SyncObserver for Quiet {}

/// How to run the copy.
#[derive(Clone)]
pub struct SyncOptions {
    pub slot: String,
    pub publication: String,
    /// Copy connections working at once.
    pub parallelism: usize,
    /// Smallest ctid range worth its own COPY, in pages.
    pub min_chunk_pages: i64,
    /// The copy commits in parts of at least this much source table size (largest tables
    /// first, small ones together); a crash resumes after the last committed part.
    pub part_bytes: u64,
    pub writer: WriterOptions,
    pub observer: Arc<dyn SyncObserver>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            slot: "walden".into(),
            publication: "walden".into(),
            parallelism: 4,
            min_chunk_pages: 4096,
            part_bytes: 1 << 30,
            writer: WriterOptions::default(),
            observer: Arc::new(Quiet),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncOutcome {
    /// The slot's consistent point: the lake holds the source exactly as of it.
    pub lsn: u64,
    /// Rows per table.
    pub tables: Vec<(TableName, u64)>,
    /// The lake already held a completed sync for this slot; nothing was copied.
    pub already_synced: bool,
}

/// The source columns a table's lake copy follows.
pub(crate) fn column_states(t: &SourceTable) -> Vec<crate::ColumnState> {
    t.columns
        .iter()
        .map(|c| crate::ColumnState {
            name: c.name.clone(),
            attnum: c.attnum,
            type_oid: c.type_oid,
            typmod: c.typmod,
        })
        .collect()
}

fn lake_name(t: &SourceTable) -> TableName {
    TableName::new(&t.schema, &t.name)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Copies `tables` from a new slot's exported snapshot into the lake and commits them
/// together with the slot's consistent point. See the crate docs for the state machine.
///
/// `cancel` turning `true` stops the copy: the slot is dropped, nothing becomes visible,
/// and [`SyncError::Interrupted`] is returned.
pub async fn initial_sync(
    conn: &SourceConn,
    lake: &Lake,
    tables: Vec<SourceTable>,
    options: &SyncOptions,
    cancel: watch::Receiver<bool>,
) -> Result<SyncOutcome> {
    let control = conn.connect().await?;
    let slot = options.slot.as_str();

    match lake.progress(slot)? {
        Some(p) => {
            let state: Option<StreamState> = serde_json::from_value(p.state.clone()).ok();
            match state.as_ref().map(|s| s.phase) {
                Some(Phase::Streaming) => {
                    let Some(info) = slot_info(&control, slot).await? else {
                        return Err(SyncError::Refused(format!(
                            "the lake was synced through replication slot {slot}, but the source \
                             has no such slot any more: changes since {} cannot be recovered. \
                             Run `walden teardown` and replicate again to re-sync",
                            format_lsn(p.lsn)
                        )));
                    };
                    if info.wal_status.as_deref() == Some("lost") {
                        return Err(SyncError::Refused(format!(
                            "replication slot {slot} was invalidated (wal_status = lost; \
                             max_slot_wal_keep_size exceeded?): the WAL since {} is gone. \
                             Run `walden teardown` and replicate again to re-sync",
                            format_lsn(p.lsn)
                        )));
                    }
                    let tables = state
                        .map(|s| s.tables.iter().map(|t| (t.lake_name(), t.rows)).collect())
                        .unwrap_or_default();
                    return Ok(SyncOutcome {
                        lsn: p.lsn,
                        tables,
                        already_synced: true,
                    });
                }
                _ => {
                    if let Some(outcome) = resume(
                        conn,
                        lake,
                        &control,
                        &tables,
                        options,
                        state,
                        cancel.clone(),
                    )
                    .await?
                    {
                        return Ok(outcome);
                    }
                    // An earlier copy was interrupted before any part of it committed:
                    // nothing of it is visible; its slot (if it got that far) pins WAL and
                    // must go.
                    if drop_slot(&control, slot).await? {
                        tracing::warn!(slot, "dropped the slot of an interrupted initial copy");
                    }
                }
            }
        }
        None => {
            if slot_info(&control, slot).await?.is_some() {
                return Err(SyncError::Refused(format!(
                    "replication slot {slot} already exists on the source, but this lake ({}) \
                     has no record of it (another walden's slot, or a different lake?). Choose \
                     another [source] slot, or drop it: SELECT pg_drop_replication_slot('{slot}')",
                    lake.warehouse().display()
                )));
            }
        }
    }

    ensure_publication(&control, &options.publication, &tables).await?;
    let marker = |state: StreamState| Commit {
        tables: Vec::new(),
        progress: Some(Progress {
            stream: slot.to_string(),
            lsn: 0,
            committed_at_ms: now_ms(),
            state: serde_json::to_value(state).unwrap_or_default(),
        }),
    };
    lake.commit(marker(StreamState {
        phase: Phase::InitialSync,
        system_id: None,
        timeline: None,
        publication: Some(options.publication.clone()),
        consistent_point: None,
        tables: Vec::new(),
    }))
    .await?;

    let snapshot = ExportedSnapshot::create(conn, slot, &options.publication).await?;
    tracing::info!(
        slot,
        consistent_point = %format_lsn(snapshot.consistent_point),
        snapshot = %snapshot.snapshot_name,
        "created replication slot"
    );

    let result = copy_and_commit(conn, lake, &tables, options, &snapshot, cancel).await;
    let consistent_point = snapshot.consistent_point;
    snapshot.release().await;
    match result {
        Ok(rows) => Ok(SyncOutcome {
            lsn: consistent_point,
            tables: rows,
            already_synced: false,
        }),
        Err(e) => {
            // Nothing was committed: do not leave a slot pinning WAL behind.
            match drop_slot(&control, slot).await {
                Ok(_) => {
                    let _ = lake.forget(&[], Some(slot));
                }
                Err(drop_err) => tracing::error!(
                    slot,
                    error = %drop_err,
                    "could not drop the slot of the failed copy; the next run drops it"
                ),
            }
            Err(e)
        }
    }
}

/// Resumes an initial copy interrupted (a crash, kill -9) after some of its parts
/// committed: those tables are kept as copied at the slot's consistent point, the
/// progress moves to streaming from that point, and the tables not copied yet are copied
/// from a temporary slot's snapshot (as new tables are while streaming; their changes
/// before that snapshot are skipped). `None`: nothing to resume from (no part committed,
/// or the slot is gone).
async fn resume(
    conn: &SourceConn,
    lake: &Lake,
    control: &tokio_postgres::Client,
    tables: &[SourceTable],
    options: &SyncOptions,
    state: Option<StreamState>,
    cancel: watch::Receiver<bool>,
) -> Result<Option<SyncOutcome>> {
    let slot = options.slot.as_str();
    let Some(mut state) = state.filter(|s| !s.tables.is_empty()) else {
        return Ok(None);
    };
    let Some(point) = state
        .consistent_point
        .as_deref()
        .and_then(walden_pg::parse_lsn)
    else {
        return Ok(None);
    };
    match slot_info(control, slot).await? {
        Some(info) if info.wal_status.as_deref() != Some("lost") => {}
        _ => return Ok(None),
    }
    ensure_publication(control, &options.publication, tables).await?;
    let remaining: Vec<SourceTable> = tables
        .iter()
        .filter(|t| !state.tables.iter().any(|s| s.oid == t.oid))
        .cloned()
        .collect();
    tracing::warn!(
        slot,
        kept = state.tables.len(),
        remaining = remaining.len(),
        "resuming an interrupted initial copy: the tables it committed are kept"
    );
    state.phase = Phase::Streaming;
    lake.commit(Commit {
        tables: Vec::new(),
        progress: Some(Progress {
            stream: slot.to_string(),
            lsn: point,
            committed_at_ms: now_ms(),
            state: serde_json::to_value(&state).unwrap_or_default(),
        }),
    })
    .await?;
    if !remaining.is_empty() {
        let stream_options = crate::StreamOptions {
            slot: slot.to_string(),
            publication: options.publication.clone(),
            writer: options.writer.clone(),
            copy_parallelism: options.parallelism,
            ..Default::default()
        };
        recopy_tables(conn, lake, &stream_options, &[], &remaining, cancel).await?;
    }
    let state: StreamState = lake
        .progress(slot)?
        .and_then(|p| serde_json::from_value(p.state).ok())
        .unwrap_or(state);
    Ok(Some(SyncOutcome {
        lsn: point,
        tables: state
            .tables
            .iter()
            .map(|t| (t.lake_name(), t.rows))
            .collect(),
        already_synced: false,
    }))
}

struct Chunk {
    table: usize,
    range: Option<(i64, Option<i64>)>,
}

struct Shared {
    queue: Mutex<VecDeque<Chunk>>,
    files: Mutex<HashMap<usize, Vec<DataFile>>>,
    rows: Mutex<HashMap<usize, u64>>,
    remaining_chunks: Mutex<HashMap<usize, usize>>,
}

/// Every table's data files and row count.
type Copied = (HashMap<usize, Vec<DataFile>>, HashMap<usize, u64>);

/// Copies `tables` into data files of `targets` (same order) under the exported snapshot
/// `snapshot_name`, with `options.parallelism` connections. Nothing is committed.
async fn copy_tables(
    conn: &SourceConn,
    lake: &Lake,
    tables: &[SourceTable],
    targets: &[LakeTable],
    options: &SyncOptions,
    snapshot_name: &str,
    cancel: watch::Receiver<bool>,
) -> Result<Copied> {
    let decodes = tables.iter().map(decodes_of).collect::<Result<Vec<_>>>()?;
    let mut queue = VecDeque::new();
    let mut remaining = HashMap::new();
    for (i, t) in tables.iter().enumerate() {
        let ranges = page_ranges(t, options.parallelism * 2, options.min_chunk_pages);
        remaining.insert(i, ranges.len());
        for range in ranges {
            queue.push_back(Chunk { table: i, range });
        }
    }
    let shared = Arc::new(Shared {
        queue: Mutex::new(queue),
        files: Mutex::new(HashMap::new()),
        rows: Mutex::new(HashMap::new()),
        remaining_chunks: Mutex::new(remaining),
    });
    for t in tables {
        options
            .observer
            .table_started(&t.display_name(), t.estimated_rows as u64);
    }

    let workers = options.parallelism.max(1);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let conn = conn.clone();
        let shared = shared.clone();
        let tables = tables.to_vec();
        let targets = targets.to_vec();
        let decodes = decodes.clone();
        let snapshot_name = snapshot_name.to_string();
        let file_io = lake.file_io().clone();
        let options = options.clone();
        set.spawn(async move {
            worker(
                &conn,
                &snapshot_name,
                &tables,
                &targets,
                &decodes,
                &file_io,
                &options,
                &shared,
            )
            .await
        });
    }
    let mut cancel = cancel;
    loop {
        tokio::select! {
            joined = set.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => { set.abort_all(); return Err(e); }
                Some(Err(e)) => {
                    set.abort_all();
                    return Err(SyncError::Refused(format!("a copy worker failed: {e}")));
                }
            },
            changed = cancel.changed() => {
                if changed.is_err() || *cancel.borrow() {
                    set.abort_all();
                    while set.join_next().await.is_some() {}
                    return Err(SyncError::Interrupted);
                }
            }
        }
    }

    let files = std::mem::take(&mut *shared.files.lock().unwrap_or_else(|p| p.into_inner()));
    let rows = shared
        .rows
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok((files, rows))
}

/// The lake schema of a source table, or why it has none.
fn lake_schema(t: &SourceTable) -> Result<walden_lake::TableSchema> {
    t.lake_schema().map_err(|why| {
        SyncError::Refused(format!(
            "{why}. Map the column to \"string\" in [source] column_types, or exclude the table"
        ))
    })
}

fn table_properties(t: &SourceTable) -> HashMap<String, String> {
    HashMap::from([
        ("walden.source".to_string(), t.display_name()),
        ("walden.source-oid".to_string(), t.oid.to_string()),
        (
            "write.parquet.compression-codec".to_string(),
            "lz4_raw".to_string(),
        ),
    ])
}

fn decodes_of(t: &SourceTable) -> Result<Vec<Decode>> {
    t.columns
        .iter()
        .map(|c| c.mapping.as_ref().map(|m| m.decode.clone()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|why| SyncError::Refused(why.clone()))
}

async fn copy_and_commit(
    conn: &SourceConn,
    lake: &Lake,
    tables: &[SourceTable],
    options: &SyncOptions,
    snapshot: &ExportedSnapshot,
    cancel: watch::Receiver<bool>,
) -> Result<Vec<(TableName, u64)>> {
    // Lake tables: new ones, or existing ones to replace when the schema is unchanged.
    let mut targets: Vec<(LakeTable, bool)> = Vec::with_capacity(tables.len());
    for t in tables {
        let schema = lake_schema(t)?;
        let name = lake_name(t);
        let fresh = lake.new_table(&name, &schema, table_properties(t))?;
        let target = match lake.load_table(&name).await? {
            None => (fresh, false),
            Some(existing) => {
                if existing.arrow_schema().fields() != fresh.arrow_schema().fields() {
                    return Err(SyncError::Refused(format!(
                        "table {name} already exists in the lake with a different schema; \
                         remove it first with `walden teardown --lake-tables`"
                    )));
                }
                (existing, true)
            }
        };
        targets.push(target);
    }
    // The copy commits in parts (largest tables first, small ones together), each
    // consistent at the slot's point: after a crash, a run resumes with the parts not
    // committed yet (see `initial_sync`).
    let mut order: Vec<usize> = (0..tables.len()).collect();
    order.sort_by(|&x, &y| tables[y].pages.cmp(&tables[x].pages));
    let mut parts: Vec<Vec<usize>> = Vec::new();
    let mut part_bytes = 0u64;
    for i in order {
        if parts.is_empty() || part_bytes >= options.part_bytes {
            parts.push(Vec::new());
            part_bytes = 0;
        }
        parts.last_mut().expect("pushed").push(i);
        part_bytes += tables[i].pages.max(0) as u64 * 8192;
    }
    let lsn = format_lsn(snapshot.consistent_point);
    let mut table_states = Vec::with_capacity(tables.len());
    let mut outcome = Vec::with_capacity(tables.len());
    for (p, part) in parts.iter().enumerate() {
        let last = p + 1 == parts.len();
        let part_tables: Vec<SourceTable> = part.iter().map(|&i| tables[i].clone()).collect();
        let part_targets: Vec<LakeTable> = part.iter().map(|&i| targets[i].0.clone()).collect();
        let (mut files, rows) = copy_tables(
            conn,
            lake,
            &part_tables,
            &part_targets,
            options,
            &snapshot.snapshot_name,
            cancel.clone(),
        )
        .await?;
        if last {
            options.observer.committing();
        }
        let mut changes = Vec::with_capacity(part.len());
        for (k, &i) in part.iter().enumerate() {
            let n = rows.get(&k).copied().unwrap_or(0);
            let (target, replace) = &targets[i];
            let name = target.name().clone();
            let mut change = TableChange::new(target.clone());
            change.data_files = files.remove(&k).unwrap_or_default();
            change.replace = *replace;
            change.summary.insert("walden.lsn".into(), lsn.clone());
            change
                .summary
                .insert("walden.operation".into(), "initial-sync".into());
            changes.push(change);
            table_states.push(TableState {
                source: tables[i].display_name(),
                oid: tables[i].oid,
                lake: name.to_string(),
                rows: n,
                primary_key: tables[i].primary_key.clone(),
                synced_lsn: snapshot.consistent_point,
                columns: column_states(&tables[i]),
            });
            outcome.push((name, n));
        }
        // Until the last part, the progress stays `initial-sync` (LSN 0) and lists the
        // tables copied so far with the slot's point.
        let state = StreamState {
            phase: if last {
                Phase::Streaming
            } else {
                Phase::InitialSync
            },
            system_id: Some(snapshot.system_id.clone()),
            timeline: Some(snapshot.timeline),
            publication: Some(options.publication.clone()),
            consistent_point: Some(lsn.clone()),
            tables: table_states.clone(),
        };
        lake.commit(Commit {
            tables: changes,
            progress: Some(Progress {
                stream: options.slot.clone(),
                lsn: if last { snapshot.consistent_point } else { 0 },
                committed_at_ms: now_ms(),
                state: serde_json::to_value(state).unwrap_or_default(),
            }),
        })
        .await?;
        if !last {
            crate::failpoint("copy-after-part");
        }
    }
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    conn: &SourceConn,
    snapshot_name: &str,
    tables: &[SourceTable],
    targets: &[LakeTable],
    decodes: &[Vec<Decode>],
    file_io: &walden_lake::FileIO,
    options: &SyncOptions,
    shared: &Shared,
) -> Result<()> {
    let client = conn.connect().await?;
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(snapshot_name)
        ))
        .await
        .map_err(|source| walden_pg::PgError::Query {
            context: "importing the slot's exported snapshot into a copy connection".into(),
            source,
        })?;
    let mut current: Option<(usize, DataFileWriter)> = None;
    loop {
        let chunk = shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let Some(chunk) = chunk else { break };
        if current.as_ref().is_some_and(|(t, _)| *t != chunk.table) {
            let (t, w) = current.take().expect("checked");
            finish_writer(t, w, shared).await?;
        }
        let (_, writer) = current.get_or_insert_with(|| {
            (
                chunk.table,
                DataFileWriter::new(file_io, &targets[chunk.table], options.writer.clone()),
            )
        });
        let table = &tables[chunk.table];
        let name = table.display_name();
        let decoder = RowDecoder::new(
            &name,
            targets[chunk.table].arrow_schema().clone(),
            &decodes[chunk.table],
        )?;
        let mut reader =
            CopyReader::start(&client, &copy_query(table, chunk.range), decoder).await?;
        let mut copied = 0u64;
        while let Some(batch) = reader.next_batch().await? {
            writer.write(&batch).await?;
            crate::failpoint("copy-after-batch");
            copied += batch.num_rows() as u64;
            options.observer.rows_copied(&name, batch.num_rows() as u64);
        }
        *shared
            .rows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(chunk.table)
            .or_default() += copied;
        let left = {
            let mut remaining = shared
                .remaining_chunks
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let left = remaining.entry(chunk.table).or_insert(1);
            *left -= 1;
            *left
        };
        if left == 0 {
            // This worker copied the table's last range; other workers may still hold open
            // writers for it, which they close when they move on or finish.
            let total = shared
                .rows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&chunk.table)
                .copied()
                .unwrap_or(0);
            options.observer.table_copied(&name, total);
        }
    }
    if let Some((t, w)) = current.take() {
        finish_writer(t, w, shared).await?;
    }
    let _ = client.batch_execute("COMMIT").await;
    Ok(())
}

async fn finish_writer(table: usize, writer: DataFileWriter, shared: &Shared) -> Result<()> {
    let files = writer.close().await?;
    shared
        .files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(table)
        .or_default()
        .extend(files);
    Ok(())
}

/// Prepares a full re-sync: drops the slot (if it exists) and the lake's replication state
/// for it. The lake's tables stay readable; the next initial sync replaces them in one
/// commit. Returns whether a slot was dropped.
pub async fn prepare_resync(conn: &SourceConn, lake: &Lake, slot: &str) -> Result<bool> {
    let client = conn.connect().await?;
    let dropped = drop_slot(&client, slot).await?;
    lake.forget(&[], Some(slot))?;
    Ok(dropped)
}

/// Drops the slot and the publication (and with `forget_tables`, removes the replicated
/// tables from the lake's catalog along with the progress).
pub async fn teardown(
    conn: &SourceConn,
    lake: &Lake,
    slot: &str,
    publication: &str,
    forget_tables: bool,
) -> Result<(bool, bool, usize)> {
    let client = conn.connect().await?;
    let dropped_slot = drop_slot(&client, slot).await?;
    let dropped_pub = walden_pg::drop_publication(&client, publication).await?;
    let mut forgotten = 0;
    let tables: Vec<TableName> = match lake.progress(slot)? {
        Some(p) if forget_tables => serde_json::from_value::<StreamState>(p.state)
            .map(|s| {
                s.tables
                    .iter()
                    .filter_map(|t| t.lake.split_once('.'))
                    .map(|(ns, n)| TableName::new(ns, n))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    if forget_tables {
        forgotten = tables.len();
    }
    lake.forget(&tables, Some(slot))?;
    Ok((dropped_slot, dropped_pub, forgotten))
}

/// Copies tables of a streaming lake again — tables whose change the lake could not
/// follow (see [`crate::evolve`]) — while the slot keeps its place. A temporary slot's
/// exported snapshot gives a consistent point `S`; the tables' data is replaced by the
/// copy and their schemas evolve by column name (a column whose type cannot be promoted
/// gets a new field id). The table states record `S` as their synced LSN, so the stream,
/// resuming from the lake's unchanged LSN, skips their changes of transactions that
/// committed before `S` (the copy has them) and applies the rest.
pub(crate) async fn recopy_tables(
    conn: &SourceConn,
    lake: &Lake,
    options: &crate::StreamOptions,
    recopy: &[(u32, String)],
    add: &[SourceTable],
    cancel: watch::Receiver<bool>,
) -> Result<()> {
    let slot = options.slot.as_str();
    let control = conn.connect().await?;
    let progress = lake.progress(slot)?.ok_or_else(|| {
        SyncError::Refused(format!("the lake has no replication state for slot {slot}"))
    })?;
    let mut state: StreamState = serde_json::from_value(progress.state.clone()).map_err(|e| {
        SyncError::Refused(format!("the lake's replication state is unreadable: {e}"))
    })?;
    let wanted: Vec<&TableState> = state
        .tables
        .iter()
        .filter(|t| recopy.iter().any(|(oid, _)| *oid == t.oid))
        .collect();
    let patterns: Vec<String> = wanted.iter().map(|t| t.source.clone()).collect();
    let found = if patterns.is_empty() {
        Vec::new()
    } else {
        let selector = walden_pg::TableSelector::new(&patterns).map_err(SyncError::Refused)?;
        walden_pg::discover(&control, &selector, &options.discover).await?
    };
    let mut tables = Vec::with_capacity(wanted.len());
    for t in &wanted {
        let source = found.iter().find(|s| s.oid == t.oid).ok_or_else(|| {
            SyncError::Refused(format!(
                "table {} must be copied again, but it is no longer on the source under that \
                 name and relation oid. Remove it from [source] tables, or run `walden \
                 replicate --resync`",
                t.source
            ))
        })?;
        tables.push(source.clone());
    }
    let added_from = tables.len();
    if !add.is_empty() {
        walden_pg::add_to_publication(&control, &options.publication, add).await?;
        tables.extend(add.iter().cloned());
    }

    let mut targets = Vec::with_capacity(tables.len());
    for t in &tables {
        let schema = lake_schema(t)?;
        let name = lake_name(t);
        let target = match lake.load_table(&name).await? {
            None => lake.new_table(&name, &schema, table_properties(t))?,
            Some(existing) => {
                let current = existing.metadata().current_schema().clone();
                let columns: Vec<walden_lake::EvolvedColumn> = schema
                    .columns
                    .iter()
                    .map(|c| walden_lake::EvolvedColumn {
                        field_id: current
                            .as_struct()
                            .fields()
                            .iter()
                            .find(|f| {
                                f.name == c.name
                                    && walden_lake::promotion_blocker(&f.field_type, &c.ty)
                                        .is_none()
                            })
                            .map(|f| f.id),
                        column: c.clone(),
                    })
                    .collect();
                existing.evolve(&columns, &schema.primary_key)?
            }
        };
        targets.push(target);
    }

    let temp_slot = format!("{slot}_recopy_{}", std::process::id());
    let snapshot =
        ExportedSnapshot::create_temporary(conn, &temp_slot, &options.publication).await?;
    let at = snapshot.consistent_point;
    tracing::info!(
        tables = %tables.iter().map(SourceTable::display_name).collect::<Vec<_>>().join(", "),
        lsn = %format_lsn(at),
        "copying tables"
    );
    let copy_options = SyncOptions {
        slot: temp_slot.clone(),
        publication: options.publication.clone(),
        parallelism: options.copy_parallelism.max(1),
        writer: options.writer.clone(),
        ..SyncOptions::default()
    };
    let copied = copy_tables(
        conn,
        lake,
        &tables,
        &targets,
        &copy_options,
        &snapshot.snapshot_name,
        cancel,
    )
    .await;
    snapshot.release().await;
    let (mut files, rows) = copied?;

    let mut changes = Vec::with_capacity(tables.len());
    for (i, (t, target)) in tables.iter().zip(targets).enumerate() {
        let mut change = TableChange::new(target);
        change.data_files = files.remove(&i).unwrap_or_default();
        change.replace = true;
        change.summary.insert("walden.lsn".into(), format_lsn(at));
        change.summary.insert(
            "walden.operation".into(),
            if i >= added_from {
                "initial-sync"
            } else {
                "recopy"
            }
            .into(),
        );
        changes.push(change);
        let reason = recopy
            .iter()
            .find(|(oid, _)| *oid == t.oid)
            .map(|(_, why)| why.as_str())
            .unwrap_or_default();
        let copied = rows.get(&i).copied().unwrap_or(0);
        if i >= added_from {
            state.tables.push(TableState {
                source: t.display_name(),
                oid: t.oid,
                lake: lake_name(t).to_string(),
                rows: copied,
                primary_key: t.primary_key.clone(),
                synced_lsn: at,
                columns: column_states(t),
            });
            tracing::info!(table = %t.display_name(), rows = copied, lsn = %format_lsn(at),
                "new table copied; streaming it from here");
            continue;
        }
        if let Some(ts) = state.tables.iter_mut().find(|s| s.oid == t.oid) {
            ts.rows = copied;
            ts.primary_key = t.primary_key.clone();
            ts.synced_lsn = at;
            ts.columns = column_states(t);
        }
        tracing::warn!(
            table = %t.display_name(),
            rows = copied,
            lsn = %format_lsn(at),
            reason,
            "table copied again"
        );
    }
    lake.commit(Commit {
        tables: changes,
        progress: Some(Progress {
            stream: slot.to_string(),
            lsn: progress.lsn,
            committed_at_ms: now_ms(),
            state: serde_json::to_value(&state).unwrap_or_default(),
        }),
    })
    .await?;
    Ok(())
}
