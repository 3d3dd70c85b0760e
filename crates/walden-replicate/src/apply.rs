//! Applying decoded changes to the lake.
//!
//! Changes are buffered per table as Arrow rows (new tuples, old tuples) plus a log of
//! operations. Processing a buffer folds the log by row key in commit order, resolves
//! unchanged TOAST values, writes the surviving new row versions to data files, and notes
//! position deletes for the old versions through the [`KeyIndex`]. A [`commit`] processes
//! every buffer and makes all touched tables and the replication progress visible in one
//! catalog transaction.
//!
//! A buffer is processed early (into pending files of the coming commit) when the
//! buffered bytes pass a cap, so a transaction of any size runs in bounded memory and
//! still becomes visible at once. After any error the applier is in an unknown state and
//! must be dropped: the caller rebuilds it from the lake and resumes from the committed
//! LSN.
//!
//! [`commit`]: Applier::commit

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, new_empty_array};
use arrow::datatypes::DataType;
use walden_lake::{Column, ColumnType, EvolvedColumn};
use walden_lake::{
    Commit, DataFile, DataFileWriter, FileIO, Lake, LakeTable, PositionDeleteWriter, Progress,
    TableChange, TableName, WriterOptions,
};
use walden_pg::pgoutput::{OldTuple, Relation, Tuple, Value};
use walden_pg::{ColumnBuilders, Decode, DiscoverOptions, TypeCatalog, format_lsn};

use crate::evolve;
use crate::index::{FastMap, KeyEncoder, KeyIndex, Loc, live_positions};
use crate::{ColumnState, Result, StreamState, SyncError};

/// A row version of a buffer: where each cell of an output row comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    /// The new-tuple row of the buffer.
    New(u32),
    /// The old-tuple row (REPLICA IDENTITY FULL).
    Old(u32),
    /// The row's committed version in the lake, by key.
    Lake(u128),
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Insert(u32),
    Update {
        /// Old-tuple row and whether it is the whole row (`O`) rather than the key (`K`).
        old: Option<(u32, bool)>,
        new: u32,
    },
    Delete {
        old: u32,
    },
}

struct Buffer {
    new: ColumnBuilders,
    old: ColumnBuilders,
    /// `(row, column)` cells of `new` / `old` that were unchanged TOAST values.
    new_unchanged: Vec<(u32, u32)>,
    old_unchanged: HashSet<(u32, u32)>,
    ops: Vec<Op>,
}

/// How the stream's columns line up with the lake table's.
struct RelationMap {
    /// For each lake column, its position in the stream's tuples.
    lake_to_rel: Vec<usize>,
    /// Lake columns that identify a row; empty: the whole row (a multiset table).
    key: Vec<usize>,
    /// What the row keys are made of (field ids and types of the key columns, or of every
    /// column of a multiset table): while it stays the same, the index stays valid.
    key_shape: Vec<(i32, DataType)>,
}

/// What the applier needs of the source to follow schema changes.
pub(crate) struct SourceContext {
    pub client: Arc<tokio_postgres::Client>,
    pub discover: DiscoverOptions,
}

/// Everything the applier keeps for one replicated table.
pub(crate) struct TableApply {
    pub name: TableName,
    pub oid: u32,
    /// The table as last committed.
    pub lake: LakeTable,
    decodes: Vec<Decode>,
    primary_key: Vec<String>,
    /// The source columns the lake table follows, parallel to its fields.
    pub columns: Vec<ColumnState>,
    /// The last Relation message, looked at when the next wanted change arrives (changes
    /// of already-applied transactions are skipped, and so are their old shapes).
    pending_relation: Option<Relation>,
    /// Why the table must be copied again; its changes are ignored until then.
    pub recopy: Option<String>,
    /// Changes in transactions that committed before this LSN are already in the lake
    /// (the table's own copy point).
    pub synced_lsn: u64,
    relation: Option<RelationMap>,
    encoder: Option<KeyEncoder>,
    index: Option<KeyIndex>,
    buf: Option<Buffer>,
    // What the coming commit holds for this table.
    truncated: bool,
    /// The coming commit changes the table's schema.
    schema_changed: bool,
    files: Vec<DataFile>,
    deletes: Vec<Loc>,
    /// Deletes noted under an index that was since dropped, by path.
    deletes_by_path: Vec<(String, u64)>,
    changes: u64,
}

impl TableApply {
    pub fn new(
        name: TableName,
        oid: u32,
        lake: LakeTable,
        decodes: Vec<Decode>,
        primary_key: Vec<String>,
        columns: Vec<ColumnState>,
        synced_lsn: u64,
    ) -> Self {
        Self {
            name,
            oid,
            lake,
            decodes,
            primary_key,
            columns,
            pending_relation: None,
            recopy: None,
            synced_lsn,
            relation: None,
            encoder: None,
            index: None,
            buf: None,
            truncated: false,
            schema_changed: false,
            files: Vec::new(),
            deletes: Vec::new(),
            deletes_by_path: Vec::new(),
            changes: 0,
        }
    }

    fn touched(&self) -> bool {
        self.truncated
            || self.schema_changed
            || !self.files.is_empty()
            || !self.deletes.is_empty()
            || !self.deletes_by_path.is_empty()
            || self.buf.as_ref().is_some_and(|b| !b.ops.is_empty())
    }

    fn buffered_bytes(&self) -> usize {
        self.buf
            .as_ref()
            .map_or(0, |b| b.new.bytes() + b.old.bytes() + b.ops.len() * 16)
    }

    fn inconsistent(&self, what: impl std::fmt::Display) -> SyncError {
        SyncError::Refused(format!(
            "{}: {what}. The lake no longer matches the source for this table; re-sync it \
             with `walden replicate --resync`",
            self.name
        ))
    }

    /// Takes a Relation message for this table.
    fn set_relation(&mut self, rel: &Relation) -> Result<()> {
        let schema = self.lake.arrow_schema().clone();
        let mut lake_to_rel = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            match rel.columns.iter().position(|c| &c.name == f.name()) {
                Some(i) => lake_to_rel.push(i),
                None => {
                    return Err(SyncError::SchemaChange(format!(
                        "{}: column {} is no longer in the source table {}.{}",
                        self.name,
                        f.name(),
                        rel.namespace,
                        rel.name
                    )));
                }
            }
        }
        if let Some(extra) = rel
            .columns
            .iter()
            .find(|c| schema.field_with_name(&c.name).is_err())
        {
            return Err(SyncError::SchemaChange(format!(
                "{}: the source table {}.{} has a new column {}",
                self.name, rel.namespace, rel.name, extra.name
            )));
        }
        let lake_index = |name: &str| schema.index_of(name).ok();
        let key: Vec<usize> = if rel.replica_identity == b'i' {
            rel.columns
                .iter()
                .filter(|c| c.key)
                .filter_map(|c| lake_index(&c.name))
                .collect()
        } else {
            self.primary_key
                .iter()
                .filter_map(|k| lake_index(k))
                .collect()
        };
        if key.is_empty() && rel.replica_identity != b'f' {
            return Err(SyncError::Refused(format!(
                "{}: the table has no primary key and REPLICA IDENTITY is not FULL, so its \
                 updates and deletes cannot be matched to rows; set REPLICA IDENTITY FULL on \
                 {}.{} or give it a primary key",
                self.name, rel.namespace, rel.name
            )));
        }
        let ids = self.lake.field_ids();
        let shape_cols: Vec<usize> = if key.is_empty() {
            (0..ids.len()).collect()
        } else {
            key.clone()
        };
        let key_shape: Vec<(i32, DataType)> = shape_cols
            .iter()
            .map(|&i| (ids[i], schema.field(i).data_type().clone()))
            .collect();
        if let Some(old) = &self.relation {
            if old.key != key {
                // Key columns moved (a column before them was dropped): same keys.
                self.encoder = None;
            }
            if old.key_shape != key_shape {
                // Rows are identified differently from now on.
                self.reset_index();
            }
        }
        self.relation = Some(RelationMap {
            lake_to_rel,
            key,
            key_shape,
        });
        Ok(())
    }

    /// Drops the index (it is rebuilt from the files when needed), keeping the deletes
    /// noted through it.
    fn reset_index(&mut self) {
        self.encoder = None;
        if let Some(index) = self.index.take() {
            self.deletes_by_path.extend(
                self.deletes
                    .drain(..)
                    .map(|l| (index.path(l.file).to_string(), u64::from(l.pos))),
            );
        }
    }

    /// Whether changes may be applied now: looks at a pending Relation message first.
    /// `false` while the table waits to be copied again.
    async fn ready(
        &mut self,
        source: &SourceContext,
        io: &FileIO,
        writer: &WriterOptions,
    ) -> Result<bool> {
        if self.recopy.is_some() {
            return Ok(false);
        }
        if let Some(rel) = self.pending_relation.take() {
            self.take_relation(rel, source, io, writer).await?;
        }
        Ok(self.recopy.is_none())
    }

    /// Follows a Relation message: the same columns, or a schema change (see
    /// [`crate::evolve`]): old-shape rows go to files first, then the lake table's schema
    /// evolves by field id, or the table is marked to be copied again.
    async fn take_relation(
        &mut self,
        rel: Relation,
        source: &SourceContext,
        io: &FileIO,
        writer: &WriterOptions,
    ) -> Result<()> {
        if self.columns.is_empty() {
            // A state from before columns were tracked: adopt the message if it matches.
            let lake_names: Vec<&String> = self
                .lake
                .arrow_schema()
                .fields()
                .iter()
                .map(|f| f.name())
                .collect();
            if lake_names.len() != rel.columns.len()
                || lake_names
                    .iter()
                    .zip(&rel.columns)
                    .any(|(l, c)| **l != c.name)
            {
                self.start_recopy(
                    "its columns changed, and the lake's replication state predates column                      tracking"
                        .into(),
                );
                return Ok(());
            }
            let attrs = evolve::attributes(&source.client, self.oid).await?;
            self.columns = rel
                .columns
                .iter()
                .map(|c| ColumnState {
                    name: c.name.clone(),
                    attnum: attrs
                        .iter()
                        .find(|a| !a.dropped && a.name == c.name)
                        .map_or(0, |a| a.attnum),
                    type_oid: c.type_oid,
                    typmod: c.type_modifier,
                })
                .collect();
        }
        if evolve::unchanged(&self.columns, &rel.columns) {
            return self.set_relation(&rel);
        }

        // Rows of the old shape are written under the old schema first.
        self.process(io, writer).await?;
        let attrs = evolve::attributes(&source.client, self.oid).await?;
        let sources = match evolve::plan(&self.columns, &rel.columns, &attrs) {
            evolve::Plan::Columns(s) => s,
            evolve::Plan::Recopy(why) => {
                self.start_recopy(why);
                return Ok(());
            }
        };
        let types = TypeCatalog::load(&source.client).await?;
        let current = self.lake.metadata().current_schema().clone();
        let fields = current.as_struct().fields();
        let mut evolved = Vec::with_capacity(rel.columns.len());
        let mut columns = Vec::with_capacity(rel.columns.len());
        let mut changes: Vec<String> = Vec::new();
        for (src, rc) in sources.iter().zip(&rel.columns) {
            let mapped = || -> Result<ColumnType> {
                let qualified = format!("{}.{}.{}", rel.namespace, rel.name, rc.name);
                let mapping = if source.discover.string_columns.contains(&qualified) {
                    Ok(types.map_as_string(rc.type_oid, rc.type_modifier))
                } else {
                    types.map(
                        rc.type_oid,
                        rc.type_modifier,
                        source.discover.unconstrained_numeric,
                    )
                };
                mapping.map(|m| m.lake).map_err(|why| {
                    SyncError::Refused(format!(
                        "{}: column {} now has a type walden cannot map ({why}). Map it to \
                         \"string\" in [source] column_types and re-sync with `walden \
                         replicate --resync`, or exclude the table",
                        self.name, rc.name
                    ))
                })
            };
            let (field_id, ty, nullable, attnum) = match *src {
                evolve::Source::Known(k) => {
                    let known = &self.columns[k];
                    let field = &fields[k];
                    let ty = if known.type_oid == rc.type_oid && known.typmod == rc.type_modifier {
                        ColumnType::of_iceberg(&field.field_type).ok_or_else(|| {
                            self.inconsistent(format!(
                                "column {} has a lake type walden does not write",
                                field.name
                            ))
                        })?
                    } else {
                        let ty = mapped()?;
                        changes.push(format!("{} retyped to {}", rc.name, ty.describe()));
                        ty
                    };
                    if known.name != rc.name {
                        changes.push(format!("{} renamed to {}", known.name, rc.name));
                    }
                    (Some(field.id), ty, !field.required, known.attnum)
                }
                evolve::Source::New(attnum) => {
                    if attrs.iter().any(|a| a.attnum == attnum && a.has_default) {
                        self.start_recopy(format!(
                            "column {} was added with a default: rows that existed before \
                             hold its value, which the change stream does not carry",
                            rc.name
                        ));
                        return Ok(());
                    }
                    let ty = mapped()?;
                    changes.push(format!("{} added ({})", rc.name, ty.describe()));
                    (None, ty, true, attnum)
                }
            };
            evolved.push(EvolvedColumn {
                field_id,
                column: Column {
                    name: rc.name.clone(),
                    ty,
                    nullable,
                    doc: None,
                },
            });
            columns.push(ColumnState {
                name: rc.name.clone(),
                attnum,
                type_oid: rc.type_oid,
                typmod: rc.type_modifier,
            });
        }
        for (k, known) in self.columns.iter().enumerate() {
            if !sources.contains(&evolve::Source::Known(k)) {
                changes.push(format!("{} dropped", known.name));
            }
        }
        // The primary key follows renames; a dropped key column leaves the key.
        let primary_key: Vec<String> = self
            .primary_key
            .iter()
            .filter_map(|pk| {
                let k = self.columns.iter().position(|c| &c.name == pk)?;
                let i = sources
                    .iter()
                    .position(|s| *s == evolve::Source::Known(k))?;
                Some(rel.columns[i].name.clone())
            })
            .collect();
        let lake = match self.lake.evolve(&evolved, &primary_key) {
            Ok(lake) => lake,
            Err(walden_lake::LakeError::Invalid(why)) => {
                self.start_recopy(why);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let decodes = lake
            .arrow_schema()
            .fields()
            .iter()
            .map(|f| {
                Decode::for_text(f.data_type()).ok_or_else(|| {
                    self.inconsistent(format!(
                        "column {} has a lake type ({}) values cannot be streamed into",
                        f.name(),
                        f.data_type()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        tracing::info!(
            table = %self.name,
            changes = %changes.join(", "),
            "the source table's columns changed; the lake table's schema follows"
        );
        self.lake = lake;
        self.decodes = decodes;
        self.columns = columns;
        self.primary_key = primary_key;
        self.encoder = None;
        self.schema_changed = true;
        self.set_relation(&rel)
    }

    /// Makes the lake columns at `columns` optional (the source sent NULLs for them).
    fn relax(&mut self, columns: &[usize]) -> Result<()> {
        let current = self.lake.metadata().current_schema().clone();
        let evolved = current
            .as_struct()
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let ty = ColumnType::of_iceberg(&f.field_type).ok_or_else(|| {
                    self.inconsistent(format!(
                        "column {} has a lake type walden does not write",
                        f.name
                    ))
                })?;
                Ok(EvolvedColumn {
                    field_id: Some(f.id),
                    column: Column {
                        name: f.name.clone(),
                        ty,
                        nullable: !f.required || columns.contains(&i),
                        doc: f.doc.clone(),
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.lake = self.lake.evolve(&evolved, &self.primary_key)?;
        self.schema_changed = true;
        tracing::info!(
            table = %self.name,
            columns = %columns
                .iter()
                .map(|&i| current.as_struct().fields()[i].name.clone())
                .collect::<Vec<_>>()
                .join(", "),
            "the source sent NULLs for columns the lake had as required; they are optional now"
        );
        Ok(())
    }

    /// Gives up following the table: it is copied again once the current transaction is
    /// committed. Nothing of it is in the coming commit.
    fn start_recopy(&mut self, why: String) {
        tracing::warn!(table = %self.name, reason = %why,
            "the lake cannot follow this change of the source table; copying the table again");
        self.recopy = Some(why);
        self.buf = None;
        self.truncated = false;
        self.schema_changed = false;
        self.files.clear();
        self.deletes.clear();
        self.deletes_by_path.clear();
        self.changes = 0;
    }

    fn buffer(&mut self) -> Result<&mut Buffer> {
        if self.relation.is_none() {
            return Err(SyncError::Refused(format!(
                "{}: a change arrived before the table's Relation message (protocol error)",
                self.name
            )));
        }
        if self.buf.is_none() {
            // Buffered tuples may lack values the table requires: old keys carry only the
            // key columns, unchanged TOAST values arrive empty. The rows written are whole.
            let schema = Arc::new(arrow::datatypes::Schema::new(
                self.lake
                    .arrow_schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            ));
            let table = self.name.to_string();
            self.buf = Some(Buffer {
                new: ColumnBuilders::new(&table, schema.clone(), &self.decodes)?,
                old: ColumnBuilders::new(&table, schema, &self.decodes)?,
                new_unchanged: Vec::new(),
                old_unchanged: HashSet::new(),
                ops: Vec::new(),
            });
        }
        Ok(self.buf.as_mut().expect("created above"))
    }

    /// Appends a tuple to the new (`old == false`) or old builders; returns its row.
    fn append(&mut self, tuple: &Tuple, old: bool) -> Result<u32> {
        let map = self.relation.as_ref().expect("checked in buffer()");
        let lake_to_rel = map.lake_to_rel.clone();
        let buf = self.buffer()?;
        let (builders, row) = if old {
            let row = buf.old.rows() as u32;
            (&mut buf.old, row)
        } else {
            let row = buf.new.rows() as u32;
            (&mut buf.new, row)
        };
        let mut unchanged = Vec::new();
        for (col, &rel_col) in lake_to_rel.iter().enumerate() {
            match tuple.get(rel_col) {
                None | Some(Value::Null) => builders.append_null(col),
                Some(Value::Text(v)) => builders.append_text(col, v)?,
                Some(Value::Binary(v)) => builders.append_binary(col, v)?,
                Some(Value::Unchanged) => {
                    builders.append_null(col);
                    unchanged.push((row, col as u32));
                }
            }
        }
        if old {
            buf.old_unchanged.extend(unchanged);
        } else {
            buf.new_unchanged.extend(unchanged);
        }
        Ok(row)
    }

    fn insert(&mut self, new: &Tuple) -> Result<()> {
        let r = self.append(new, false)?;
        self.buffer()?.ops.push(Op::Insert(r));
        self.changes += 1;
        Ok(())
    }

    fn update(&mut self, old: Option<&OldTuple>, new: &Tuple) -> Result<()> {
        let old = match old {
            Some(o) => Some((
                self.append(o.tuple(), true)?,
                matches!(o, OldTuple::Full(_)),
            )),
            None => None,
        };
        let r = self.append(new, false)?;
        self.buffer()?.ops.push(Op::Update { old, new: r });
        self.changes += 1;
        Ok(())
    }

    fn delete(&mut self, old: &OldTuple) -> Result<()> {
        let j = self.append(old.tuple(), true)?;
        self.buffer()?.ops.push(Op::Delete { old: j });
        self.changes += 1;
        Ok(())
    }

    fn truncate(&mut self) {
        self.buf = None;
        self.files.clear();
        self.deletes.clear();
        self.deletes_by_path.clear();
        self.truncated = true;
        // The table is empty as of now: an empty index is exact.
        self.index = Some(KeyIndex::new(self.multiset()));
        self.changes += 1;
    }

    fn multiset(&self) -> bool {
        self.relation.as_ref().is_some_and(|r| r.key.is_empty())
    }

    fn encoder(&mut self) -> Result<&KeyEncoder> {
        if self.encoder.is_none() {
            let types: Vec<DataType> = self
                .lake
                .arrow_schema()
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect();
            let key = match &self.relation {
                Some(r) if !r.key.is_empty() => r.key.clone(),
                _ => (0..types.len()).collect(),
            };
            self.encoder = Some(KeyEncoder::new(key, &types)?);
        }
        Ok(self.encoder.as_ref().expect("set above"))
    }

    /// Builds the index from the committed files and this commit's pending files.
    async fn ensure_index(&mut self, io: &FileIO) -> Result<()> {
        if self.index.is_some() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let multiset = self.multiset();
        let key_cols = self.encoder()?.columns().to_vec();
        let mut index = KeyIndex::new(multiset);
        let mut files: Vec<(String, u64, Vec<u64>)> = self
            .lake
            .plan_files(io)
            .await?
            .into_iter()
            .map(|f| (f.path, f.record_count, f.deleted))
            .collect();
        files.extend(
            self.files
                .iter()
                .map(|f| (f.file_path().to_string(), f.record_count(), Vec::new())),
        );
        for (path, rows, deleted) in files {
            let live = live_positions(rows, &deleted);
            if live.is_empty() {
                continue;
            }
            let batch = self
                .lake
                .read_data_file(io, &path, &key_cols, Some(&live))
                .await?;
            let keys = self
                .encoder
                .as_ref()
                .expect("built above")
                .keys_of(batch.columns())?;
            index.add_file(&Arc::from(path.as_str()), &keys, &live);
        }
        tracing::info!(
            table = %self.name,
            rows = index.len(),
            memory_bytes = index.memory_bytes(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built the row index"
        );
        self.index = Some(index);
        Ok(())
    }

    /// Folds the buffer into pending data files and deletes.
    async fn process(&mut self, io: &FileIO, writer: &WriterOptions) -> Result<()> {
        let Some(mut buf) = self.buf.take() else {
            return Ok(());
        };
        if buf.ops.is_empty() {
            return Ok(());
        }
        let new = buf.new.finish()?;
        let old = buf.old.finish()?;
        let needs_index =
            self.index.is_some() || buf.ops.iter().any(|op| !matches!(op, Op::Insert(_)));
        self.encoder()?;
        if needs_index {
            self.ensure_index(io).await?;
        }
        let encoder = self.encoder.as_ref().expect("built above");
        let knew = encoder.keys(&new)?;
        let kold = encoder.keys(&old)?;
        let mut unchanged: HashMap<u32, Vec<u32>> = HashMap::new();
        for &(r, c) in &buf.new_unchanged {
            unchanged.entry(r).or_default().push(c);
        }
        let mut patches: HashMap<u32, Vec<(u32, Cell)>> = HashMap::new();

        // Fold the operations in commit order into the rows to write and the keys whose
        // lake versions go.
        let mut output: Vec<u32> = Vec::new();
        let mut index_changes: Vec<(u128, Option<usize>)> = Vec::new();
        if self.multiset() {
            let mut pending: FastMap<u128, Vec<usize>> = FastMap::default();
            let mut cancelled: HashSet<usize> = HashSet::new();
            let mut lake_deletes: Vec<u128> = Vec::new();
            for op in &buf.ops {
                let (old_row, new_row) = match *op {
                    Op::Insert(r) => (None, Some(r)),
                    Op::Update { old, new } => {
                        let Some((j, true)) = old else {
                            return Err(self.inconsistent(
                                "an update without the whole old row on a table without a \
                                 primary key (is REPLICA IDENTITY still FULL?)",
                            ));
                        };
                        if let Some(cols) = unchanged.get(&new) {
                            let mut p = Vec::with_capacity(cols.len());
                            for &c in cols {
                                if buf.old_unchanged.contains(&(j, c)) {
                                    return Err(self.inconsistent(
                                        "an unchanged TOAST value with no old value to take",
                                    ));
                                }
                                p.push((c, Cell::Old(j)));
                            }
                            patches.insert(new, p);
                        }
                        (Some(j), Some(new))
                    }
                    Op::Delete { old } => (Some(old), None),
                };
                if let Some(j) = old_row {
                    let k = kold[j as usize];
                    match pending.get_mut(&k).and_then(Vec::pop) {
                        Some(out_pos) => {
                            cancelled.insert(out_pos);
                        }
                        None => lake_deletes.push(k),
                    }
                }
                if let Some(r) = new_row {
                    pending
                        .entry(knew[r as usize])
                        .or_default()
                        .push(output.len());
                    output.push(r);
                }
            }
            let index = self.index.as_mut();
            if !lake_deletes.is_empty() {
                let index = index.ok_or_else(|| SyncError::Refused("index missing".into()))?;
                for k in lake_deletes {
                    let loc = index.remove(k).ok_or_else(|| {
                        SyncError::Refused(format!(
                            "{}: a deleted or updated row is not in the lake. The lake no \
                             longer matches the source for this table; re-sync it with \
                             `walden replicate --resync`",
                            self.name
                        ))
                    })?;
                    self.deletes.push(loc);
                }
            }
            let kept: Vec<u32> = output
                .iter()
                .enumerate()
                .filter(|(i, _)| !cancelled.contains(i))
                .map(|(_, &r)| r)
                .collect();
            output = kept;
            for (i, &r) in output.iter().enumerate() {
                index_changes.push((knew[r as usize], Some(i)));
            }
        } else {
            #[derive(Clone, Copy)]
            enum Slot {
                Live(u32),
                Deleted,
            }
            let mut state: FastMap<u128, Slot> = FastMap::default();
            let mut order: Vec<u128> = Vec::new();
            let mut set = |state: &mut FastMap<u128, Slot>, k: u128, s: Slot| {
                if state.insert(k, s).is_none() {
                    order.push(k);
                }
            };
            for op in &buf.ops {
                match *op {
                    Op::Insert(r) => set(&mut state, knew[r as usize], Slot::Live(r)),
                    Op::Update { old, new: r } => {
                        let k_new = knew[r as usize];
                        let k_old = old.map_or(k_new, |(j, _)| kold[j as usize]);
                        if let Some(cols) = unchanged.get(&r) {
                            let mut p = Vec::with_capacity(cols.len());
                            for &c in cols {
                                let from_old = old.filter(|&(j, full)| {
                                    full && !buf.old_unchanged.contains(&(j, c))
                                });
                                let cell = match (from_old, state.get(&k_old)) {
                                    (Some((j, _)), _) => Cell::Old(j),
                                    (None, Some(Slot::Live(prev))) => patches
                                        .get(prev)
                                        .and_then(|p| p.iter().find(|(pc, _)| *pc == c))
                                        .map_or(Cell::New(*prev), |(_, cell)| *cell),
                                    (None, Some(Slot::Deleted)) => {
                                        return Err(self.inconsistent(
                                            "an update of a row deleted earlier in the same \
                                             transaction batch",
                                        ));
                                    }
                                    (None, None) => Cell::Lake(k_old),
                                };
                                p.push((c, cell));
                            }
                            patches.insert(r, p);
                        }
                        if k_old != k_new {
                            set(&mut state, k_old, Slot::Deleted);
                        }
                        set(&mut state, k_new, Slot::Live(r));
                    }
                    Op::Delete { old: j } => set(&mut state, kold[j as usize], Slot::Deleted),
                }
            }
            if let Some(index) = &self.index {
                for k in &order {
                    if let Some(loc) = index.get(*k) {
                        self.deletes.push(loc);
                    }
                }
            }
            for k in order {
                match state[&k] {
                    Slot::Live(r) => {
                        index_changes.push((k, Some(output.len())));
                        output.push(r);
                    }
                    Slot::Deleted => index_changes.push((k, None)),
                }
            }
        }

        // Unchanged TOAST values still missing come from the rows' lake versions.
        let lake_rows = self.fetch_lake_rows(io, &output, &patches).await?;
        let columns = self.lake.arrow_schema().fields().len();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns);
        for c in 0..columns {
            let lake_col = match &lake_rows {
                Some((batch, _)) => batch.column(c).clone(),
                None => new_empty_array(new.column(c).data_type()),
            };
            let sources: [&dyn Array; 3] = [new.column(c), old.column(c), &lake_col];
            let indices: Vec<(usize, usize)> = output
                .iter()
                .map(|r| {
                    let cell = patches
                        .get(r)
                        .and_then(|p| p.iter().find(|(pc, _)| *pc as usize == c))
                        .map_or(Cell::New(*r), |(_, cell)| *cell);
                    match cell {
                        Cell::New(x) => (0, x as usize),
                        Cell::Old(x) => (1, x as usize),
                        Cell::Lake(k) => (2, lake_rows.as_ref().map_or(0, |(_, at)| at[&k])),
                    }
                })
                .collect();
            arrays.push(
                arrow::compute::interleave(&sources, &indices).map_err(|e| {
                    SyncError::Refused(format!("{}: assembling rows: {e}", self.name))
                })?,
            );
        }
        // A NOT NULL dropped on the source does not show in Relation messages: the first
        // NULL in a column the lake has as required makes it optional (always allowed).
        let relax: Vec<usize> = self
            .lake
            .arrow_schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, f)| !f.is_nullable() && arrays[*i].null_count() > 0)
            .map(|(i, _)| i)
            .collect();
        if !relax.is_empty() {
            self.relax(&relax)?;
        }
        let batch = RecordBatch::try_new(self.lake.arrow_schema().clone(), arrays)
            .map_err(|e| SyncError::Refused(format!("{}: assembling rows: {e}", self.name)))?;

        let (path, first) = if batch.num_rows() > 0 {
            let mut w = DataFileWriter::new(io, &self.lake, writer.clone());
            let at = w.write(&batch).await?;
            self.files.extend(w.close().await?);
            at
        } else {
            (Arc::from(""), 0)
        };
        if let Some(index) = self.index.as_mut() {
            let file = if batch.num_rows() > 0 {
                index.file_id(&path)
            } else {
                0
            };
            for (k, at) in index_changes {
                match at {
                    Some(i) => index.insert(
                        k,
                        Loc {
                            file,
                            pos: (first + i as u64) as u32,
                        },
                    ),
                    None => {
                        index.remove(k);
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads the lake versions of the rows some output cells come from; returns them as
    /// a batch and each key's row in it.
    async fn fetch_lake_rows(
        &self,
        io: &FileIO,
        output: &[u32],
        patches: &HashMap<u32, Vec<(u32, Cell)>>,
    ) -> Result<Option<(RecordBatch, HashMap<u128, usize>)>> {
        let mut keys: Vec<u128> = output
            .iter()
            .filter_map(|r| patches.get(r))
            .flatten()
            .filter_map(|(_, cell)| match cell {
                Cell::Lake(k) => Some(*k),
                _ => None,
            })
            .collect();
        if keys.is_empty() {
            return Ok(None);
        }
        keys.sort_unstable();
        keys.dedup();
        let index = self
            .index
            .as_ref()
            .ok_or_else(|| SyncError::Refused("index missing".into()))?;
        let mut by_file: HashMap<u32, Vec<(u32, u128)>> = HashMap::new();
        for k in keys {
            let loc = index.get(k).ok_or_else(|| {
                self.inconsistent(
                    "an update left a TOASTed value unchanged, but the row's current version \
                     is not in the lake",
                )
            })?;
            by_file.entry(loc.file).or_default().push((loc.pos, k));
        }
        let all: Vec<usize> = (0..self.lake.arrow_schema().fields().len()).collect();
        let mut batches = Vec::new();
        let mut at = HashMap::new();
        let mut offset = 0;
        for (file, mut rows) in by_file {
            rows.sort_unstable();
            let positions: Vec<u64> = rows.iter().map(|(p, _)| u64::from(*p)).collect();
            let batch = self
                .lake
                .read_data_file(io, index.path(file), &all, Some(&positions))
                .await?;
            for (i, (_, k)) in rows.iter().enumerate() {
                at.insert(*k, offset + i);
            }
            offset += batch.num_rows();
            batches.push(batch);
        }
        let batch = arrow::compute::concat_batches(self.lake.arrow_schema(), &batches)
            .map_err(|e| SyncError::Refused(format!("{}: reading lake rows: {e}", self.name)))?;
        Ok(Some((batch, at)))
    }

    /// The position-delete file of this commit, if any.
    async fn delete_file(&mut self, io: &FileIO) -> Result<Option<DataFile>> {
        if self.deletes.is_empty() && self.deletes_by_path.is_empty() {
            return Ok(None);
        }
        let mut pairs: Vec<(String, u64)> = std::mem::take(&mut self.deletes_by_path);
        if !self.deletes.is_empty() {
            let index = self
                .index
                .as_ref()
                .ok_or_else(|| SyncError::Refused("index missing".into()))?;
            pairs.extend(
                self.deletes
                    .iter()
                    .map(|l| (index.path(l.file).to_string(), u64::from(l.pos))),
            );
        }
        pairs.sort_unstable();
        pairs.dedup();
        let writer = PositionDeleteWriter::new(io, &self.lake)?;
        Ok(Some(writer.write(&pairs).await?))
    }
}

/// How maintenance runs while streaming.
#[derive(Debug, Clone)]
pub struct MaintenanceOptions {
    /// How often one maintenance step runs (one table per step, round robin); `None`: never.
    pub interval: Option<std::time::Duration>,
    /// Snapshots younger than this are kept (time travel); older ones expire, and files
    /// only they referenced are deleted. Unreferenced files younger than this are kept too.
    pub snapshot_retention: std::time::Duration,
    /// Files smaller than this are compacted together.
    pub small_file_bytes: u64,
    /// Files with at least this share of deleted rows are rewritten.
    pub deleted_share: f64,
    /// Small files are compacted once there are at least this many.
    pub min_small_files: usize,
    /// Delete files are merged into one once there are at least this many.
    pub max_delete_files: u64,
    /// Input a step reads whole to sort (Parquet bytes); a larger file with many deleted
    /// rows is rewritten alone, batch by batch.
    pub sort_budget_bytes: u64,
}

impl Default for MaintenanceOptions {
    fn default() -> Self {
        Self {
            interval: Some(std::time::Duration::from_secs(60)),
            snapshot_retention: std::time::Duration::from_secs(900),
            small_file_bytes: 32 * 1024 * 1024,
            deleted_share: 0.2,
            min_small_files: 8,
            max_delete_files: 8,
            sort_budget_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Rows compacted per written slice (each slice's rows get consecutive positions).
const COMPACT_SLICE_ROWS: usize = 64 * 1024;

impl TableApply {
    /// One compaction step: the live rows of the table's small files and files with many
    /// deleted rows (up to about one target file's worth) are sorted by primary key and
    /// written to new files, which replace them in one commit; the index follows the rows.
    /// Only runs with nothing buffered or pending (right after a flush).
    async fn compact(
        &mut self,
        lake: &Lake,
        writer: &WriterOptions,
        options: &MaintenanceOptions,
    ) -> Result<usize> {
        if self.touched() || self.recopy.is_some() || self.lake.metadata_location().is_none() {
            return Ok(0);
        }
        let io = lake.file_io();
        let files = self.lake.plan_files(io).await?;
        let delete_files: u64 = self
            .lake
            .snapshot_property("total-delete-files")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let live = |f: &walden_lake::PlannedFile| f.record_count - f.deleted.len() as u64;
        let share =
            |f: &walden_lake::PlannedFile| f.deleted.len() as f64 / f.record_count.max(1) as f64;
        // Files with many deleted rows are rewritten; small files only once there are
        // enough of them to be worth a step (so a table's one modest file is not rewritten
        // over and over), smallest first; up to about one target file per step.
        let heavy = |f: &walden_lake::PlannedFile| share(f) >= options.deleted_share;
        let small: Vec<&walden_lake::PlannedFile> = files
            .iter()
            .filter(|f| !heavy(f) && f.file_size < options.small_file_bytes)
            .collect();
        let mut candidates: Vec<&walden_lake::PlannedFile> =
            files.iter().filter(|f| heavy(f)).collect();
        candidates.sort_by(|a, b| share(b).total_cmp(&share(a)));
        if small.len() >= options.min_small_files {
            let mut small = small;
            small.sort_by_key(|f| f.file_size);
            candidates.extend(small);
        }
        // Memory stays bounded: files are merged and sorted only up to `sort_budget_bytes`
        // of input; a file with many deleted rows that is larger than that is rewritten
        // alone, batch by batch, in its own order.
        let mut chosen = Vec::new();
        let mut streamed = false;
        if let Some(big) = candidates
            .iter()
            .copied()
            .find(|f| heavy(f) && f.file_size > options.sort_budget_bytes)
        {
            chosen.push(big);
            streamed = true;
        } else {
            let mut bytes = 0u64;
            for f in candidates {
                if bytes + f.file_size > options.sort_budget_bytes && !chosen.is_empty() {
                    break;
                }
                bytes += f.file_size;
                chosen.push(f);
            }
        }
        // Many delete files pointing at files that stay: merge them into one.
        let merge_deletes = delete_files >= options.max_delete_files;
        if chosen.is_empty() && !merge_deletes {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        let all: Vec<usize> = (0..self.lake.arrow_schema().fields().len()).collect();
        let schema = self.lake.arrow_schema().clone();
        // Keys are needed when the index follows the rows (keyed tables only).
        let track = self.index.is_some() && !self.multiset() && self.relation.is_some();
        if track {
            self.encoder()?;
        }
        let table_name = self.name.clone();
        let arrow_err = |e: arrow::error::ArrowError| {
            SyncError::Refused(format!("{table_name}: compacting: {e}"))
        };
        let mut w = DataFileWriter::new(io, &self.lake, writer.clone());
        // Where each written batch went, with its rows' keys.
        let mut placed: Vec<(Arc<str>, u64, Vec<u128>)> = Vec::new();
        let mut rows_written = 0usize;
        if streamed {
            let f = chosen[0];
            let live_rows = live_positions(f.record_count, &f.deleted);
            let batches = self
                .lake
                .data_file_batches(io, &f.path, &all, Some(&live_rows))
                .await?;
            for batch in batches {
                let batch = batch?;
                let keys = if track {
                    self.encoder.as_ref().expect("built above").keys(&batch)?
                } else {
                    Vec::new()
                };
                let (path, first) = w.write(&batch).await?;
                rows_written += batch.num_rows();
                placed.push((path, first, keys));
            }
        } else {
            let mut batches = Vec::new();
            for f in &chosen {
                if live(f) == 0 {
                    continue;
                }
                let rows =
                    (!f.deleted.is_empty()).then(|| live_positions(f.record_count, &f.deleted));
                batches.push(
                    self.lake
                        .read_data_file(io, &f.path, &all, rows.as_deref())
                        .await?,
                );
            }
            let batch = arrow::compute::concat_batches(&schema, &batches).map_err(arrow_err)?;
            drop(batches);
            // Sorted by primary key: readers prune by key ranges, and files stay ordered.
            let key_cols: Vec<usize> = self
                .primary_key
                .iter()
                .filter_map(|k| schema.index_of(k).ok())
                .collect();
            let batch = if !key_cols.is_empty() && batch.num_rows() > 1 {
                let sort: Vec<arrow::compute::SortColumn> = key_cols
                    .iter()
                    .map(|&c| arrow::compute::SortColumn {
                        values: batch.column(c).clone(),
                        options: None,
                    })
                    .collect();
                let order = arrow::compute::lexsort_to_indices(&sort, None).map_err(arrow_err)?;
                arrow::compute::take_record_batch(&batch, &order).map_err(arrow_err)?
            } else {
                batch
            };
            let mut offset = 0;
            while offset < batch.num_rows() {
                let len = COMPACT_SLICE_ROWS.min(batch.num_rows() - offset);
                let slice = batch.slice(offset, len);
                let keys = if track {
                    self.encoder.as_ref().expect("built above").keys(&slice)?
                } else {
                    Vec::new()
                };
                let (path, first) = w.write(&slice).await?;
                placed.push((path, first, keys));
                offset += len;
            }
            rows_written = batch.num_rows();
        }
        let added = w.close().await?;
        let removed: Vec<String> = chosen.iter().map(|f| f.path.clone()).collect();
        let merged = if merge_deletes {
            let mut pairs: Vec<(String, u64)> = files
                .iter()
                .filter(|f| !removed.contains(&f.path))
                .flat_map(|f| f.deleted.iter().map(|&p| (f.path.clone(), p)))
                .collect();
            pairs.sort_unstable();
            Some(if pairs.is_empty() {
                Vec::new()
            } else {
                vec![
                    PositionDeleteWriter::new(io, &self.lake)?
                        .write(&pairs)
                        .await?,
                ]
            })
        } else {
            None
        };
        crate::failpoint("compact-before-commit");
        self.lake = lake
            .rewrite_files(&self.lake, &removed, added, merged)
            .await?;
        // The index follows the rows to their new places.
        if track {
            let index = self.index.as_mut().expect("checked");
            for (path, first, keys) in placed {
                let file = index.file_id(&path);
                for (i, key) in keys.into_iter().enumerate() {
                    index.insert(
                        key,
                        Loc {
                            file,
                            pos: (first + i as u64) as u32,
                        },
                    );
                }
            }
        } else if self.index.is_some() {
            self.index = None;
            self.encoder = None;
        }
        tracing::info!(
            table = %self.name,
            files = removed.len(),
            merged_delete_files = if merge_deletes { delete_files } else { 0 },
            rows = rows_written,
            streamed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compacted"
        );
        metrics::counter!("walden_compacted_files_total", "table" => self.name.to_string())
            .increment(removed.len() as u64);
        Ok(removed.len())
    }
}

/// Statistics of one commit.
#[derive(Debug, Clone, Default)]
pub(crate) struct FlushStats {
    pub tables: usize,
    pub changes: u64,
    pub data_files: usize,
    pub delete_files: usize,
}

/// Buffers and commits changes for every replicated table.
pub(crate) struct Applier {
    lake: Lake,
    io: FileIO,
    source: SourceContext,
    pub tables: HashMap<u32, TableApply>,
    /// A table waits to be copied again.
    recopy_pending: bool,
    /// The table (by sorted position) the last maintenance step took.
    maintain_turn: usize,
    writer: WriterOptions,
    /// Buffered bytes above which buffers are written to pending files.
    spill_bytes: usize,
    /// Changes since the buffers were last measured.
    since_check: usize,
}

fn unknown_relation(oid: u32) -> SyncError {
    SyncError::Refused(format!(
        "the stream carries changes of relation {oid}, which walden does not replicate (was the \
         publication changed by hand?). Check it with `walden check`"
    ))
}

/// How many changes pass between two measurements of the buffers (the cap may be
/// exceeded by at most this many rows).
const SPILL_CHECK_EVERY: usize = 64;

impl Applier {
    pub fn new(
        lake: Lake,
        source: SourceContext,
        tables: Vec<TableApply>,
        writer: WriterOptions,
        spill_bytes: usize,
    ) -> Self {
        Self {
            io: lake.file_io().clone(),
            lake,
            source,
            tables: tables.into_iter().map(|t| (t.oid, t)).collect(),
            recopy_pending: false,
            maintain_turn: 0,
            writer,
            spill_bytes,
            since_check: 0,
        }
    }

    fn table(&mut self, oid: u32) -> Result<&mut TableApply> {
        self.tables
            .get_mut(&oid)
            .ok_or_else(|| unknown_relation(oid))
    }

    /// Takes a Relation message; it is followed when the table's next wanted change
    /// arrives.
    pub fn relation(&mut self, rel: Relation) -> Result<()> {
        let oid = rel.oid;
        self.table(oid)?.pending_relation = Some(rel);
        Ok(())
    }

    /// The table, if its changes may be applied now (see [`TableApply::ready`]).
    async fn ready(&mut self, oid: u32) -> Result<Option<&mut TableApply>> {
        let t = self
            .tables
            .get_mut(&oid)
            .ok_or_else(|| unknown_relation(oid))?;
        if t.ready(&self.source, &self.io, &self.writer).await? {
            Ok(self.tables.get_mut(&oid))
        } else {
            self.recopy_pending = true;
            Ok(None)
        }
    }

    /// Whether a table waits to be copied again (cheap: the session ends at the next
    /// transaction boundary).
    pub fn wants_recopy(&self) -> bool {
        self.recopy_pending
    }

    /// Tables waiting to be copied again, with the reason.
    pub fn recopies(&self) -> Vec<(u32, String)> {
        self.tables
            .values()
            .filter_map(|t| t.recopy.clone().map(|why| (t.oid, why)))
            .collect()
    }

    /// Whether changes of `oid` in a transaction committing at `final_lsn` are new.
    pub fn wants(&self, oid: u32, final_lsn: u64) -> bool {
        self.tables
            .get(&oid)
            .is_none_or(|t| final_lsn >= t.synced_lsn)
    }

    pub async fn insert(&mut self, oid: u32, new: &Tuple) -> Result<()> {
        match self.ready(oid).await? {
            Some(t) => t.insert(new),
            None => Ok(()),
        }
    }

    pub async fn update(&mut self, oid: u32, old: Option<&OldTuple>, new: &Tuple) -> Result<()> {
        match self.ready(oid).await? {
            Some(t) => t.update(old, new),
            None => Ok(()),
        }
    }

    pub async fn delete(&mut self, oid: u32, old: &OldTuple) -> Result<()> {
        match self.ready(oid).await? {
            Some(t) => t.delete(old),
            None => Ok(()),
        }
    }

    pub async fn truncate(&mut self, oid: u32) -> Result<()> {
        if let Some(t) = self.ready(oid).await? {
            t.truncate();
        }
        Ok(())
    }

    pub fn buffered_bytes(&self) -> usize {
        self.tables.values().map(TableApply::buffered_bytes).sum()
    }

    pub fn has_changes(&self) -> bool {
        self.tables.values().any(TableApply::touched)
    }

    /// Writes buffers to pending files when they hold more than the cap. Called after
    /// every change; sums the buffers only every [`SPILL_CHECK_EVERY`] changes, so the
    /// cost per change does not grow with the number of tables.
    pub async fn spill_if_full(&mut self) -> Result<()> {
        self.since_check += 1;
        if self.since_check < SPILL_CHECK_EVERY {
            return Ok(());
        }
        self.since_check = 0;
        if self.buffered_bytes() < self.spill_bytes {
            return Ok(());
        }
        for t in self.tables.values_mut() {
            t.process(&self.io, &self.writer).await?;
        }
        crate::failpoint("stream-after-spill");
        Ok(())
    }

    /// One maintenance step for the next table in turn: compaction, then snapshot
    /// expiration and removal of unreferenced files. Runs between flushes, so it holds
    /// replication up for one step at most; a failure is logged, never fatal (the lake is
    /// unchanged by a failed step, and the next step tries again).
    pub async fn maintain(&mut self, options: &MaintenanceOptions) {
        let mut oids: Vec<u32> = self.tables.keys().copied().collect();
        if oids.is_empty() {
            return;
        }
        oids.sort_unstable();
        self.maintain_turn = (self.maintain_turn + 1) % oids.len();
        let oid = oids[self.maintain_turn];
        let started = std::time::Instant::now();
        let lake = self.lake.clone();
        let writer = self.writer.clone();
        let Some(t) = self.tables.get_mut(&oid) else {
            return;
        };
        if let Err(e) = t.compact(&lake, &writer, options).await {
            tracing::warn!(table = %t.name, error = %e, "compaction failed; it is tried again later");
            // The index may point at files of the failed step: rebuild it when needed.
            t.index = None;
            t.encoder = None;
            if let Ok(Some(fresh)) = lake.load_table(&t.name).await {
                t.lake = fresh;
            }
            return;
        }
        let keep_since =
            chrono::Utc::now().timestamp_millis() - options.snapshot_retention.as_millis() as i64;
        match lake.expire_snapshots(&t.lake, keep_since).await {
            Ok((table, outcome)) => {
                t.lake = table;
                if outcome.snapshots_removed + outcome.files_deleted > 0 {
                    tracing::debug!(table = %t.name, snapshots = outcome.snapshots_removed,
                        files = outcome.files_deleted, "expired snapshots and removed unreferenced files");
                }
                metrics::counter!("walden_expired_snapshots_total", "table" => t.name.to_string())
                    .increment(outcome.snapshots_removed as u64);
                metrics::counter!("walden_deleted_files_total", "table" => t.name.to_string())
                    .increment(outcome.files_deleted as u64);
            }
            Err(e) => {
                tracing::warn!(table = %t.name, error = %e, "snapshot expiration failed; it is tried again later");
                if let Ok(Some(fresh)) = lake.load_table(&t.name).await {
                    t.lake = fresh;
                }
            }
        }
        metrics::histogram!("walden_maintenance_duration_seconds")
            .record(started.elapsed().as_secs_f64());
    }

    /// Index memory across tables.
    pub fn index_bytes(&self) -> usize {
        self.tables
            .values()
            .filter_map(|t| t.index.as_ref())
            .map(KeyIndex::memory_bytes)
            .sum()
    }

    /// Makes every buffered change visible, with `lsn` as the replication progress, in one
    /// catalog transaction. With nothing buffered it records only the progress.
    pub async fn commit(
        &mut self,
        stream: &str,
        lsn: u64,
        state: &StreamState,
    ) -> Result<FlushStats> {
        let mut stats = FlushStats::default();
        let mut changes = Vec::new();
        let mut oids = Vec::new();
        for t in self.tables.values_mut() {
            if !t.touched() {
                continue;
            }
            t.process(&self.io, &self.writer).await?;
            let delete = t.delete_file(&self.io).await?;
            let mut change = TableChange::new(t.lake.clone());
            change.data_files = std::mem::take(&mut t.files);
            change.delete_files = delete.into_iter().collect();
            change.replace = t.truncated;
            change.summary.insert("walden.lsn".into(), format_lsn(lsn));
            change.summary.insert(
                "walden.operation".into(),
                if t.truncated { "truncate" } else { "stream" }.into(),
            );
            stats.tables += 1;
            stats.changes += t.changes;
            stats.data_files += change.data_files.len();
            stats.delete_files += change.delete_files.len();
            changes.push(change);
            oids.push(t.oid);
        }
        crate::failpoint("stream-after-data-files");
        // The state records the columns each table follows now.
        let mut state = state.clone();
        for ts in &mut state.tables {
            if let Some(t) = self.tables.get(&ts.oid) {
                ts.columns = t.columns.clone();
                ts.primary_key = t.primary_key.clone();
            }
        }
        let state = &state;
        let outcome = self
            .lake
            .commit(Commit {
                tables: changes,
                progress: Some(Progress {
                    stream: stream.to_string(),
                    lsn,
                    committed_at_ms: chrono::Utc::now().timestamp_millis(),
                    state: serde_json::to_value(state).unwrap_or_default(),
                }),
            })
            .await?;
        for (oid, table) in oids.into_iter().zip(outcome.tables) {
            if let Some(t) = self.tables.get_mut(&oid) {
                metrics::counter!("walden_changes_total", "table" => t.name.to_string())
                    .increment(t.changes);
                t.lake = table;
                t.truncated = false;
                t.schema_changed = false;
                t.deletes.clear();
                t.changes = 0;
            }
        }
        Ok(stats)
    }
}
