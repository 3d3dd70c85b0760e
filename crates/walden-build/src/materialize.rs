//! The materializations: what one model's build writes and commits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use arrow::row::{RowConverter, SortField};
use walden_lake::{
    CatalogChanges, Commit, DataFileWriter, LakeTable, PositionDeleteWriter, TableChange,
    ViewColumn, ViewDef, WriterOptions,
};
use walden_models::{IncrementalStrategy, Materialized, Model, Project, RenderContext};
use walden_query::catalog::CatalogSnapshot;
use walden_query::service::Answer;

use crate::types::{conform, same_columns, table_schema};
use crate::{BuildError, Builder, as_of_properties, model_table, protocol};

type Built = (Arc<CatalogSnapshot>, Option<u64>);

/// Merge keys are looked up once per row of the model's table: a fast hasher (keys come
/// from the model's own rows, not from untrusted clients).
type KeyHashSet<T> = HashSet<T, foldhash::fast::RandomState>;

/// Builds `model` against `snapshot`; returns the snapshot with the model's new version
/// and the rows written (`None` for views).
pub(crate) async fn build(
    builder: &Builder,
    project: &Project,
    model: &Model,
    snapshot: &Arc<CatalogSnapshot>,
    as_of: (Option<u64>, Option<i64>),
    full_refresh: bool,
) -> Result<Built, BuildError> {
    let name = model_table(model);
    match model.config.materialized {
        Materialized::Ephemeral => Ok((snapshot.clone(), None)),
        Materialized::View => view(builder, project, model, snapshot, as_of).await,
        Materialized::Table => table(builder, project, model, snapshot, as_of).await,
        Materialized::Incremental => {
            if full_refresh || !snapshot.tables.contains_key(&name) {
                table(builder, project, model, snapshot, as_of).await
            } else {
                incremental(builder, project, model, snapshot, as_of).await
            }
        }
    }
}

fn render(project: &Project, model: &Model, incremental: bool) -> Result<String, BuildError> {
    let ctx = RenderContext {
        is_incremental: incremental,
        resolve: &Builder::resolve,
    };
    Ok(project.render_with_ephemerals(&model.name, &ctx)?)
}

fn query_error(model: &Model, e: walden_query::QueryError) -> BuildError {
    BuildError::model(model, format!("the query failed: {e}"))
}

/// Table properties of a model table: its description, what it is and what it is built
/// from (`walden.depends_on`: the lake relations it reads, ephemeral models resolved to
/// theirs).
fn properties(project: &Project, model: &Model) -> HashMap<String, String> {
    let mut p = HashMap::from([
        ("walden.model".to_string(), model.name.clone()),
        (
            "walden.materialized".to_string(),
            model.config.materialized.as_str().to_string(),
        ),
    ]);
    if !model.description.is_empty() {
        p.insert("comment".into(), model.description.clone());
    }
    if !model.config.unique_key.is_empty() {
        p.insert(
            "walden.unique_key".into(),
            model.config.unique_key.join(", "),
        );
    }
    let mut from = std::collections::BTreeSet::new();
    let mut stack = model.depends_on();
    while let Some(node) = stack.pop() {
        match node {
            walden_models::NodeId::Model(m) => {
                if let Ok(dep) = project.model(&m) {
                    if dep.is_ephemeral() {
                        stack.extend(dep.depends_on());
                    } else {
                        from.insert(format!("{}.{}", dep.namespace, dep.identifier()));
                    }
                }
            }
            walden_models::NodeId::Source(s, t) => {
                if let Some(src) = project.source(&s, &t) {
                    from.insert(format!("{}.{}", src.namespace, src.identifier));
                }
            }
            walden_models::NodeId::Test(_) => {}
        }
    }
    if !from.is_empty() {
        p.insert(
            "walden.depends_on".into(),
            from.into_iter().collect::<Vec<_>>().join(", "),
        );
    }
    p
}

async fn view(
    builder: &Builder,
    project: &Project,
    model: &Model,
    snapshot: &Arc<CatalogSnapshot>,
    as_of: (Option<u64>, Option<i64>),
) -> Result<Built, BuildError> {
    let name = model_table(model);
    let sql = render(project, model, false)?;
    // Planned (and guarded) now, as the readers will plan it.
    let prepared = builder
        .service
        .prepare_at(&builder.principal, protocol(), &sql, Some(snapshot.clone()))
        .await
        .map_err(|e| query_error(model, e))?;
    let columns = prepared
        .schema
        .fields()
        .iter()
        .map(|f| ViewColumn {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
            doc: model
                .columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(f.name()))
                .map(|c| c.description.clone())
                .filter(|d| !d.is_empty()),
        })
        .collect();
    let mut props: BTreeMap<String, String> = properties(project, model).into_iter().collect();
    props.extend(as_of_properties(as_of));
    let def = ViewDef {
        name: name.clone(),
        sql,
        columns,
        properties: props,
    };
    let changes = CatalogChanges {
        put_views: vec![def.clone()],
        drop_tables: if snapshot.tables.contains_key(&name) {
            vec![name]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    builder.lake.commit_with(Commit::default(), changes).await?;
    Ok((snapshot.with_view(def), None))
}

async fn table(
    builder: &Builder,
    project: &Project,
    model: &Model,
    snapshot: &Arc<CatalogSnapshot>,
    as_of: (Option<u64>, Option<i64>),
) -> Result<Built, BuildError> {
    let name = model_table(model);
    let sql = render(project, model, false)?;
    let answer = run(builder, &sql, snapshot)
        .await
        .map_err(|e| query_error(model, e))?;
    let schema = table_schema(model, &answer.schema())?;
    let existing = match snapshot.tables.get(&name) {
        Some(entry) => Some(
            entry
                .table(&builder.lake)
                .await
                .map_err(|e| query_error(model, e))?
                .clone(),
        ),
        None => None,
    };
    let props = properties(project, model);
    let target = match &existing {
        // Same columns and properties: a new version of the same table; otherwise fresh
        // metadata (Iceberg properties change only with a metadata rewrite).
        Some(t)
            if same_columns(t, &schema)
                && props
                    .iter()
                    .all(|(k, v)| t.metadata().properties().get(k) == Some(v))
                && t.metadata()
                    .properties()
                    .keys()
                    .filter(|k| k.starts_with("walden.") || *k == "comment")
                    .all(|k| props.contains_key(k)) =>
        {
            t.clone()
        }
        Some(t) => builder.lake.replacement_table(t, &schema, props)?,
        None => builder.lake.new_table(&name, &schema, props)?,
    };
    let (files, rows) = write_all(builder, model, &target, answer, None).await?;
    let mut change = TableChange::new(target);
    change.data_files = files;
    change.replace = true;
    change.summary = as_of_properties(as_of).into_iter().collect();
    commit(builder, model, snapshot, change)
        .await
        .map(|s| (s, Some(rows)))
}

async fn incremental(
    builder: &Builder,
    project: &Project,
    model: &Model,
    snapshot: &Arc<CatalogSnapshot>,
    as_of: (Option<u64>, Option<i64>),
) -> Result<Built, BuildError> {
    let name = model_table(model);
    let existing = snapshot
        .tables
        .get(&name)
        .ok_or_else(|| BuildError::model(model, "its table is gone"))?
        .table(&builder.lake)
        .await
        .map_err(|e| query_error(model, e))?
        .clone();
    let keys = &model.config.unique_key;
    let strategy = match model.config.incremental_strategy {
        Some(s) => s,
        None if keys.is_empty() => IncrementalStrategy::Append,
        None => IncrementalStrategy::Merge,
    };
    if strategy == IncrementalStrategy::Merge && keys.is_empty() {
        return Err(BuildError::model(
            model,
            "incremental_strategy 'merge' needs a unique_key (one column or a list) to match \
             new rows with existing ones",
        ));
    }
    let sql = render(project, model, true)?;
    let answer = run(builder, &sql, snapshot)
        .await
        .map_err(|e| query_error(model, e))?;
    let schema = table_schema(model, &answer.schema())?;
    let stored: Vec<String> = existing
        .metadata()
        .current_schema()
        .as_struct()
        .fields()
        .iter()
        .map(|f| f.name.clone())
        .collect();
    let now: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
    let comparable = {
        // Docs may change without a rebuild; names and types may not.
        let mut undocumented = schema.clone();
        for (c, f) in undocumented.columns.iter_mut().zip(
            existing
                .metadata()
                .current_schema()
                .as_struct()
                .fields()
                .iter(),
        ) {
            c.doc = f.doc.clone();
        }
        same_columns(&existing, &undocumented)
    };
    if !comparable {
        return Err(BuildError::model(
            model,
            format!(
                "the query's columns ({}) differ from its table's ({}) in names or types; \
                 rebuild it with --full-refresh",
                now.join(", "),
                stored.join(", ")
            ),
        ));
    }
    let key_indices: Vec<usize> = keys
        .iter()
        .map(|k| {
            stored
                .iter()
                .position(|s| s == k)
                .expect("checked by table_schema")
        })
        .collect();
    let mut merge =
        (strategy == IncrementalStrategy::Merge).then(|| KeySet::new(&existing, &key_indices));
    let (files, rows) = write_all(builder, model, &existing, answer, merge.as_mut()).await?;
    let mut change = TableChange::new(existing.clone());
    change.data_files = files;
    if let Some(keys) = merge.filter(|k| !k.is_empty()) {
        let deletes = replaced_rows(builder, model, &existing, &key_indices, keys).await?;
        if !deletes.is_empty() {
            let writer = PositionDeleteWriter::new(builder.lake.file_io(), &existing)?;
            change.delete_files = vec![writer.write(&deletes).await?];
        }
    }
    change.summary = as_of_properties(as_of).into_iter().collect();
    commit(builder, model, snapshot, change)
        .await
        .map(|s| (s, Some(rows)))
}

/// The live rows of `existing` whose key is in `keys` (sorted `(file, position)`): the
/// rows a merge replaces. Only the key columns are decoded, files in parallel on blocking
/// threads; a file whose manifest bounds of a single integer key hold none of the keys
/// is not read at all (new rows with fresh keys read nothing).
async fn replaced_rows(
    builder: &Builder,
    model: &Model,
    existing: &LakeTable,
    key_indices: &[usize],
    keys: KeySet,
) -> Result<Vec<(String, u64)>, BuildError> {
    use futures::StreamExt;
    let io = builder.lake.file_io();
    let key_field = existing
        .metadata()
        .current_schema()
        .field_by_name(&model.config.unique_key[0])
        .map(|f| f.id);
    let sorted = keys.sorted_ints();
    let keys = Arc::new(keys);
    let mut reads = Vec::new();
    for file in existing.plan_files(io).await? {
        if let (Some(sorted), Some(id)) = (&sorted, key_field)
            && let Some(stats) = file.columns.get(&id)
            && let (Some(lo), Some(hi)) = (int_bound(stats.lower), int_bound(stats.upper))
        {
            let first = sorted.partition_point(|k| *k < lo);
            if first == sorted.len() || sorted[first] > hi {
                continue;
            }
        }
        let keys = keys.clone();
        reads.push(async move {
            let batches = existing
                .data_file_batches(io, &file.path, key_indices, None)
                .await?;
            let found = tokio::task::spawn_blocking(move || {
                let mut hits = Vec::new();
                let mut out = Vec::new();
                let mut position = 0u64;
                for batch in batches {
                    let batch = batch.map_err(|e| e.to_string())?;
                    hits.clear();
                    keys.matches(&batch, position, &mut hits)?;
                    out.extend(
                        hits.iter()
                            .filter(|pos| file.deleted.binary_search(pos).is_err())
                            .map(|&pos| (file.path.clone(), pos)),
                    );
                    position += batch.num_rows() as u64;
                }
                Ok::<_, String>(out)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            found.map_err(|e| BuildError::model(model, format!("reading keys: {e}")))
        });
    }
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut results = futures::stream::iter(reads).buffer_unordered(parallel);
    let mut deletes = Vec::new();
    while let Some(found) = results.next().await {
        deletes.extend(found?);
    }
    deletes.sort();
    Ok(deletes)
}

/// The unique keys of the rows a merge writes, to find the rows they replace. One integer
/// key column (the common case) is kept as integers; other keys as `arrow::row` bytes.
struct KeySet {
    converter: RowConverter,
    seen: KeyHashSet<Box<[u8]>>,
    ints: Option<KeyHashSet<i64>>,
    indices: Vec<usize>,
}

impl KeySet {
    fn new(table: &LakeTable, indices: &[usize]) -> Self {
        let types: Vec<_> = indices
            .iter()
            .map(|&i| table.arrow_schema().field(i).data_type().clone())
            .collect();
        let integer = matches!(
            types.as_slice(),
            [arrow::datatypes::DataType::Int64 | arrow::datatypes::DataType::Int32]
        );
        Self {
            converter: RowConverter::new(types.into_iter().map(SortField::new).collect())
                .expect("key types are plain columns"),
            seen: KeyHashSet::default(),
            ints: integer.then(KeyHashSet::default),
            indices: indices.to_vec(),
        }
    }

    /// The keys in ascending order, for one integer key column.
    fn sorted_ints(&self) -> Option<Vec<i64>> {
        let mut v: Vec<i64> = self.ints.as_ref()?.iter().copied().collect();
        v.sort_unstable();
        Some(v)
    }

    fn is_empty(&self) -> bool {
        match &self.ints {
            Some(ints) => ints.is_empty(),
            None => self.seen.is_empty(),
        }
    }

    fn as_ints(column: &arrow::array::ArrayRef) -> Option<arrow::array::Int64Array> {
        arrow::compute::cast(column, &arrow::datatypes::DataType::Int64)
            .ok()
            .and_then(|a| a.as_primitive_opt::<Int64Type>().cloned())
    }

    /// Adds the keys of `batch` (the table's schema); a key twice is an error.
    fn add(&mut self, model: &Model, batch: &arrow::array::RecordBatch) -> Result<(), BuildError> {
        let columns: Vec<_> = self
            .indices
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        for (c, name) in columns.iter().zip(&model.config.unique_key) {
            if c.null_count() > 0 {
                return Err(BuildError::model(
                    model,
                    format!("the new rows have NULL in unique_key column {name:?}"),
                ));
            }
        }
        let duplicate = |i: usize| {
            let key: Vec<String> = columns
                .iter()
                .map(|c| {
                    arrow::util::display::array_value_to_string(c, i).unwrap_or_else(|_| "?".into())
                })
                .collect();
            BuildError::model(
                model,
                format!(
                    "the new rows hold the unique_key ({}) = ({}) more than once; a merge needs \
                     one row per key",
                    model.config.unique_key.join(", "),
                    key.join(", ")
                ),
            )
        };
        if let Some(ints) = self.ints.as_mut() {
            let values = Self::as_ints(&columns[0])
                .ok_or_else(|| BuildError::model(model, "reading an integer key"))?;
            for (i, v) in values.values().iter().enumerate() {
                if !ints.insert(*v) {
                    return Err(duplicate(i));
                }
            }
            return Ok(());
        }
        let rows = self
            .converter
            .convert_columns(&columns)
            .map_err(|e| BuildError::model(model, format!("reading keys: {e}")))?;
        for i in 0..batch.num_rows() {
            if !self.seen.insert(rows.row(i).as_ref().into()) {
                return Err(duplicate(i));
            }
        }
        Ok(())
    }

    /// Positions (offset by `first`) of the rows of `batch` (key columns only) whose key is
    /// in the set.
    fn matches(
        &self,
        batch: &arrow::array::RecordBatch,
        first: u64,
        out: &mut Vec<u64>,
    ) -> Result<(), String> {
        if let Some(ints) = &self.ints {
            let values = Self::as_ints(batch.column(0)).ok_or("reading an integer key")?;
            for (i, v) in values.values().iter().enumerate() {
                if ints.contains(v) {
                    out.push(first + i as u64);
                }
            }
            return Ok(());
        }
        let rows = self
            .converter
            .convert_columns(batch.columns())
            .map_err(|e| e.to_string())?;
        for i in 0..batch.num_rows() {
            if self.seen.contains(rows.row(i).as_ref()) {
                out.push(first + i as u64);
            }
        }
        Ok(())
    }
}

/// An integer manifest bound.
fn int_bound(b: Option<walden_lake::Bound>) -> Option<i64> {
    match b? {
        walden_lake::Bound::Int(v) => Some(i64::from(v)),
        walden_lake::Bound::Long(v) => Some(v),
        _ => None,
    }
}

/// Streams the answer into data files of `target`; returns them and the row count.
async fn write_all(
    builder: &Builder,
    model: &Model,
    target: &LakeTable,
    mut answer: Answer,
    mut keys: Option<&mut KeySet>,
) -> Result<(Vec<iceberg::spec::DataFile>, u64), BuildError> {
    let mut writer = DataFileWriter::new(builder.lake.file_io(), target, WriterOptions::default());
    let schema = target.arrow_schema().clone();
    let mut rows = 0u64;
    while let Some(batch) = answer.next_batch().await {
        let batch = batch.map_err(|e| query_error(model, e))?;
        let batch = conform(&batch, &schema).map_err(|e| BuildError::model(model, e))?;
        if let Some(keys) = keys.as_deref_mut() {
            keys.add(model, &batch)?;
        }
        rows += batch.num_rows() as u64;
        writer.write(&batch).await?;
    }
    let summary = answer.finish().await;
    if summary.truncated {
        return Err(BuildError::model(
            model,
            format!(
                "the result was cut at the build principal's caps ({} rows, {} bytes); raise \
                 them for model builds",
                summary.max_rows, summary.max_bytes
            ),
        ));
    }
    Ok((writer.close().await?, rows))
}

async fn commit(
    builder: &Builder,
    model: &Model,
    snapshot: &Arc<CatalogSnapshot>,
    change: TableChange,
) -> Result<Arc<CatalogSnapshot>, BuildError> {
    let name = model_table(model);
    let changes = CatalogChanges {
        drop_views: if snapshot.views.contains_key(&name) {
            vec![name.clone()]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let outcome = builder
        .lake
        .commit_with(
            Commit {
                tables: vec![change],
                progress: None,
            },
            changes,
        )
        .await?;
    let committed = outcome
        .tables
        .first()
        .ok_or_else(|| BuildError::model(model, "the commit returned no table"))?;
    let mut location = committed
        .metadata_location()
        .ok_or_else(|| BuildError::model(model, "the commit returned no metadata location"))?
        .to_string();
    // Earlier versions past the retention go, with the files only they used.
    let keep_since = chrono::Utc::now().timestamp_millis() - builder.retention.as_millis() as i64;
    match builder.lake.expire_snapshots(committed, keep_since).await {
        Ok((table, expired)) => {
            if let Some(l) = table.metadata_location() {
                location = l.to_string();
            }
            metrics::counter!("walden_model_expired_snapshots_total")
                .increment(expired.snapshots_removed as u64);
        }
        // The build itself is committed; the next one expires what this could not.
        Err(e) => {
            tracing::warn!(model = %model.name, error = %e, "expiring old model versions failed")
        }
    }
    Ok(snapshot.with_table(name, location))
}

/// Runs `sql` at `snapshot` as the build principal (guarded, limited, audited).
async fn run(
    builder: &Builder,
    sql: &str,
    snapshot: &Arc<CatalogSnapshot>,
) -> Result<Answer, walden_query::QueryError> {
    builder
        .service
        .execute_at(
            &builder.principal,
            protocol(),
            sql,
            None,
            None,
            Some(snapshot.clone()),
        )
        .await
}

/// The first column of the first row of `sql` at `snapshot`, as a count.
pub(crate) async fn scalar_u64(
    builder: &Builder,
    sql: &str,
    snapshot: &Arc<CatalogSnapshot>,
) -> Result<u64, walden_query::QueryError> {
    let mut answer = run(builder, sql, snapshot).await?;
    let batches = answer.collect().await?;
    answer.finish().await;
    let value = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| {
            b.column(0)
                .as_primitive_opt::<Int64Type>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0);
    Ok(value.max(0) as u64)
}

/// The first column of the first row of `sql` at `snapshot` (NULL: `None`).
pub(crate) async fn scalar_opt_i64(
    builder: &Builder,
    sql: &str,
    snapshot: &Arc<CatalogSnapshot>,
) -> Result<Option<i64>, walden_query::QueryError> {
    let mut answer = run(builder, sql, snapshot).await?;
    let batches = answer.collect().await?;
    answer.finish().await;
    Ok(batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| b.column(0).as_primitive_opt::<Int64Type>())
        .and_then(|a| (!a.is_null(0)).then(|| a.value(0))))
}
