//! A DataFusion table over one Iceberg snapshot of a lake table.
//!
//! Files are planned once (from the snapshot's manifests) when the provider is built and
//! spread over the session's target partitions by size, so a scan reads files in parallel.
//! Position deletes become Parquet row selections through [`ParquetAccessPlan`]: deleted
//! rows are never decoded, and no join is needed.
//!
//! The provider reports statistics from the manifests (see [`table_statistics`]): live row
//! counts (exact: record counts minus resolved deletes), file sizes, and per-column bounds
//! and NULL counts where Iceberg keeps them exactly, so DataFusion can pick join sides and
//! estimate filters without reading a file.
//!
//! Columns are matched to a file's columns by Iceberg field id, not by name (see
//! [`FieldIdAdapter`]): a renamed column still reads its old files, a dropped and re-added
//! column of the same name reads NULL from files written before, and a promoted type is
//! cast.

use std::any::Any;
use std::cmp::Ordering;
use std::fs::File;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::common::stats::{ColumnStatistics, Precision, Statistics};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{ParquetAccessPlan, RowGroupAccess};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapterFactory, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use parquet::file::metadata::ParquetMetaDataReader;
use walden_lake::{Bound, Lake, LakeTable, PlannedFile};

use crate::Result;

/// One lake table at one snapshot.
#[derive(Debug)]
pub struct LakeTableProvider {
    schema: SchemaRef,
    files: Vec<PlannedFile>,
    /// Per live file (same order as the live ones in `files`): its statistics.
    file_stats: Vec<Arc<Statistics>>,
    /// The whole table's.
    stats: Statistics,
    adapter: Arc<FieldIdAdapter>,
}

impl LakeTableProvider {
    /// Plans the table's current snapshot.
    pub async fn new(lake: &Lake, table: LakeTable) -> Result<Self> {
        let files = table.plan_files(lake.file_io()).await?;
        // Field ids stay in the Parquet files; the SQL-facing schema drops the metadata.
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            table
                .arrow_schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_metadata(Default::default()))
                .collect::<Vec<_>>(),
        ));
        let field_ids = table.field_ids();
        let ids = table
            .arrow_schema()
            .fields()
            .iter()
            .zip(field_ids.iter().copied())
            .map(|(f, id)| (f.name().clone(), id))
            .collect();
        let file_stats: Vec<Arc<Statistics>> = files
            .iter()
            .filter(|f| is_live(f))
            .map(|f| Arc::new(file_statistics(&schema, &field_ids, f)))
            .collect();
        let stats = table_statistics(&schema, &file_stats);
        Ok(Self {
            schema,
            files,
            file_stats,
            stats,
            adapter: Arc::new(FieldIdAdapter { ids }),
        })
    }
}

fn is_live(f: &PlannedFile) -> bool {
    (f.deleted.len() as u64) < f.record_count
}

/// A manifest bound as a value of the column's Arrow type, where the two agree exactly.
fn bound_value(bound: Bound, data_type: &DataType) -> Option<ScalarValue> {
    Some(match (bound, data_type) {
        (Bound::Bool(v), DataType::Boolean) => ScalarValue::Boolean(Some(v)),
        (Bound::Int(v), DataType::Int32) => ScalarValue::Int32(Some(v)),
        (Bound::Int(v), DataType::Int64) => ScalarValue::Int64(Some(v.into())),
        (Bound::Int(v), DataType::Date32) => ScalarValue::Date32(Some(v)),
        (Bound::Long(v), DataType::Int64) => ScalarValue::Int64(Some(v)),
        (Bound::Long(v), DataType::Time64(TimeUnit::Microsecond)) => {
            ScalarValue::Time64Microsecond(Some(v))
        }
        (Bound::Long(v), DataType::Timestamp(TimeUnit::Microsecond, tz)) => {
            ScalarValue::TimestampMicrosecond(Some(v), tz.clone())
        }
        (Bound::Decimal(v), DataType::Decimal128(p, s)) => ScalarValue::Decimal128(Some(v), *p, *s),
        _ => return None,
    })
}

/// One file's statistics: live rows (exact), its size (the Parquet bytes, an inexact
/// stand-in for the Arrow bytes), and per column the manifest's bounds and NULL count —
/// exact when no row of the file is deleted, bounds otherwise.
fn file_statistics(schema: &Schema, field_ids: &[i32], f: &PlannedFile) -> Statistics {
    let exact = f.deleted.is_empty();
    let live = (f.record_count - f.deleted.len() as u64) as usize;
    let column_statistics = schema
        .fields()
        .iter()
        .zip(field_ids)
        .map(|(field, id)| {
            let mut c = ColumnStatistics::new_unknown();
            if let Some(s) = f.columns.get(id) {
                let value = |b: Option<Bound>| b.and_then(|b| bound_value(b, field.data_type()));
                if let Some(v) = value(s.lower) {
                    c.min_value = precision(exact, v);
                }
                if let Some(v) = value(s.upper) {
                    c.max_value = precision(exact, v);
                }
                if let Some(n) = s.nulls {
                    c.null_count = precision(exact, n as usize);
                }
            }
            c
        })
        .collect();
    Statistics {
        num_rows: Precision::Exact(live),
        total_byte_size: Precision::Inexact(f.file_size as usize),
        column_statistics,
    }
}

fn precision<T>(exact: bool, v: T) -> Precision<T>
where
    T: std::fmt::Debug + Clone + PartialEq + Eq + PartialOrd,
{
    if exact {
        Precision::Exact(v)
    } else {
        Precision::Inexact(v)
    }
}

/// The table's statistics: the files' summed (rows, bytes, NULLs) and their bounds
/// widened; a column some file knows nothing about is unknown.
fn table_statistics(schema: &Schema, files: &[Arc<Statistics>]) -> Statistics {
    let mut stats = Statistics {
        num_rows: Precision::Exact(0),
        total_byte_size: Precision::Inexact(0),
        column_statistics: Statistics::unknown_column(schema),
    };
    for (i, c) in stats.column_statistics.iter_mut().enumerate() {
        c.null_count = Precision::Exact(0);
        if !files.is_empty() {
            c.min_value = files[0].column_statistics[i].min_value.clone();
            c.max_value = files[0].column_statistics[i].max_value.clone();
        }
    }
    for f in files {
        stats.num_rows = stats.num_rows.add(&f.num_rows);
        stats.total_byte_size = stats.total_byte_size.add(&f.total_byte_size);
        for (c, fc) in stats.column_statistics.iter_mut().zip(&f.column_statistics) {
            c.null_count = c.null_count.add(&fc.null_count);
            c.min_value = wider_bound(&c.min_value, &fc.min_value, Ordering::Less);
            c.max_value = wider_bound(&c.max_value, &fc.max_value, Ordering::Greater);
        }
    }
    stats
}

/// The wider of two bounds (`toward` = `Less` for minimums, `Greater` for maximums),
/// exact when the winning bound is. An inexact bound (a file with deleted rows) still
/// holds every live value of its file, so when an exact bound beats it, no live value
/// of that file can be the table's extreme: the table's maximum of `updated_at` stays
/// exact after a merge deleted older rows, and `max()` is answered without a scan.
fn wider_bound(
    a: &Precision<ScalarValue>,
    b: &Precision<ScalarValue>,
    toward: Ordering,
) -> Precision<ScalarValue> {
    let (Some(x), Some(y)) = (a.get_value(), b.get_value()) else {
        return Precision::Absent;
    };
    match x.partial_cmp(y) {
        Some(o) if o == toward => a.clone(),
        Some(Ordering::Equal) if a.is_exact() == Some(true) => a.clone(),
        Some(_) => b.clone(),
        None => Precision::Absent,
    }
}

/// Presents each file's columns to DataFusion's default expression adapter under the
/// names the table's fields have now, found by field id (`PARQUET:field_id`). A file
/// column whose field is no longer in the table gets a name no table column can have,
/// so it is never read; a table column the file lacks becomes NULL, a narrower type is
/// cast. Column positions are unchanged, so the rewritten expressions index the real
/// file.
#[derive(Debug)]
struct FieldIdAdapter {
    /// Table column name → field id.
    ids: std::collections::HashMap<String, i32>,
}

impl PhysicalExprAdapterFactory for FieldIdAdapter {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> DfResult<Arc<dyn PhysicalExprAdapter>> {
        let names: std::collections::HashMap<i32, &String> =
            self.ids.iter().map(|(name, id)| (*id, name)).collect();
        let renamed: Vec<Field> = physical_file_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let id = f
                    .metadata()
                    .get(PARQUET_FIELD_ID_META_KEY)
                    .and_then(|v| v.parse::<i32>().ok());
                let name = match id.and_then(|id| names.get(&id)) {
                    Some(name) => (*name).clone(),
                    None => format!("\u{0}walden-unmatched-{i}"),
                };
                f.as_ref().clone().with_name(name)
            })
            .collect();
        let inner = DefaultPhysicalExprAdapterFactory.create(
            logical_file_schema,
            Arc::new(Schema::new_with_metadata(
                renamed,
                physical_file_schema.metadata().clone(),
            )),
        )?;
        Ok(Arc::new(RealNames {
            inner,
            physical: physical_file_schema,
        }))
    }
}

/// Gives the column references the default adapter produced the file's own column names
/// back (the Parquet reader later finds columns by those), keeping their positions.
#[derive(Debug)]
struct RealNames {
    inner: Arc<dyn PhysicalExprAdapter>,
    physical: SchemaRef,
}

impl PhysicalExprAdapter for RealNames {
    fn rewrite(&self, expr: Arc<dyn PhysicalExpr>) -> DfResult<Arc<dyn PhysicalExpr>> {
        self.inner
            .rewrite(expr)?
            .transform(|e| {
                if let Some(c) = e.as_any().downcast_ref::<Column>()
                    && let Some(field) = self.physical.fields().get(c.index())
                    && field.name() != c.name()
                {
                    return Ok(Transformed::yes(
                        Arc::new(Column::new(field.name(), c.index())) as Arc<dyn PhysicalExpr>,
                    ));
                }
                Ok(Transformed::no(e))
            })
            .map(|t| t.data)
    }
}

/// The access plan that skips `deleted` rows of a local Parquet file.
fn access_plan(path: &str, deleted: &[u64]) -> DfResult<Option<ParquetAccessPlan>> {
    if deleted.is_empty() {
        return Ok(None);
    }
    let file =
        File::open(path).map_err(|e| DataFusionError::Execution(format!("opening {path}: {e}")))?;
    let meta = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|e| DataFusionError::Execution(format!("reading the footer of {path}: {e}")))?;
    let mut plan = Vec::with_capacity(meta.num_row_groups());
    let mut start = 0u64;
    let mut d = 0usize;
    for rg in meta.row_groups() {
        let n = rg.num_rows() as u64;
        let end = start + n;
        let mut selectors = Vec::new();
        let mut cursor = start;
        let mut any = false;
        while d < deleted.len() && deleted[d] < end {
            let pos = deleted[d];
            if pos >= cursor {
                if pos > cursor {
                    selectors.push(RowSelector::select((pos - cursor) as usize));
                }
                selectors.push(RowSelector::skip(1));
                cursor = pos + 1;
                any = true;
            }
            d += 1;
        }
        if !any {
            plan.push(RowGroupAccess::Scan);
        } else {
            if cursor < end {
                selectors.push(RowSelector::select((end - cursor) as usize));
            }
            let selection = RowSelection::from(selectors);
            if selection.row_count() == 0 {
                plan.push(RowGroupAccess::Skip);
            } else {
                plan.push(RowGroupAccess::Selection(selection));
            }
        }
        start = end;
    }
    Ok(Some(ParquetAccessPlan::new(plan)))
}

#[async_trait]
impl TableProvider for LakeTableProvider {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn statistics(&self) -> Option<Statistics> {
        Some(self.stats.clone())
    }

    /// Filters go into the Parquet scan as a predicate (row groups and pages pruned by
    /// their statistics, rows filtered while decoding when the session's
    /// `parquet.pushdown_filters` is on), and DataFusion still applies them above the scan:
    /// the pushdown only ever saves work.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<datafusion::logical_expr::TableProviderFilterPushDown>> {
        Ok(vec![
            datafusion::logical_expr::TableProviderFilterPushDown::Inexact;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let live: Vec<(&PlannedFile, &Arc<Statistics>)> = self
            .files
            .iter()
            .filter(|f| is_live(f))
            .zip(&self.file_stats)
            .collect();
        if live.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        // Largest first onto the least-loaded partition.
        let partitions = state.config().target_partitions().max(1).min(live.len());
        let mut order = live;
        order.sort_by_key(|(f, _)| std::cmp::Reverse(f.file_size));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); partitions];
        for (f, stats) in order {
            let mut pf =
                PartitionedFile::new(f.path.clone(), f.file_size).with_statistics(stats.clone());
            if let Some(plan) = access_plan(&f.path, &f.deleted)? {
                pf = pf.with_extensions(Arc::new(plan));
            }
            let slot = groups
                .iter_mut()
                .min_by_key(|(size, _)| *size)
                .expect("at least one partition");
            slot.0 += f.file_size;
            slot.1.push(pf);
        }
        let mut source = ParquetSource::new(self.schema.clone())
            .with_table_parquet_options(state.table_options().parquet.clone());
        if let Some(predicate) = datafusion::logical_expr::utils::conjunction(filters.to_vec()) {
            let df_schema = datafusion::common::DFSchema::try_from(self.schema.as_ref().clone())?;
            source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
        }
        let source = Arc::new(source);
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
            .with_expr_adapter(Some(self.adapter.clone()))
            .with_file_groups(
                groups
                    .into_iter()
                    .map(|(_, files)| FileGroup::new(files))
                    .collect(),
            )
            .with_statistics(self.stats.clone())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use walden_lake::ColumnStats;

    use super::*;

    fn file(rows: u64, deleted: Vec<u64>, lo: i32, hi: i32, nulls: u64) -> PlannedFile {
        PlannedFile {
            path: "f.parquet".into(),
            file_size: 1000,
            record_count: rows,
            deleted,
            columns: HashMap::from([(
                1,
                ColumnStats {
                    lower: Some(Bound::Int(lo)),
                    upper: Some(Bound::Int(hi)),
                    nulls: Some(nulls),
                },
            )]),
        }
    }

    #[test]
    fn statistics_come_from_the_manifests_and_are_exact_only_without_deletes() {
        let schema = Schema::new(vec![
            Field::new("d", DataType::Date32, true),
            Field::new("s", DataType::Utf8, true),
        ]);
        let ids = [1, 2];
        let a = Arc::new(file_statistics(&schema, &ids, &file(10, vec![], 5, 9, 1)));
        let b = Arc::new(file_statistics(
            &schema,
            &ids,
            &file(10, vec![0, 3], 1, 7, 0),
        ));
        assert_eq!(
            a.column_statistics[0].min_value,
            Precision::Exact(ScalarValue::Date32(Some(5)))
        );
        assert_eq!(
            b.column_statistics[0].max_value,
            Precision::Inexact(ScalarValue::Date32(Some(7)))
        );
        let t = table_statistics(&schema, std::slice::from_ref(&a));
        assert_eq!(t.num_rows, Precision::Exact(10));
        assert_eq!(t.column_statistics[0].null_count, Precision::Exact(1));
        assert_eq!(t.column_statistics[1].min_value, Precision::Absent);
        let t = table_statistics(&schema, &[a, b]);
        assert_eq!(t.num_rows, Precision::Exact(18));
        assert_eq!(t.total_byte_size, Precision::Inexact(2000));
        assert_eq!(
            t.column_statistics[0].min_value,
            Precision::Inexact(ScalarValue::Date32(Some(1)))
        );
        // `a`'s exact maximum is past `b`'s bound: no live row of `b` can be larger.
        assert_eq!(
            t.column_statistics[0].max_value,
            Precision::Exact(ScalarValue::Date32(Some(9)))
        );
        assert_eq!(t.column_statistics[0].null_count, Precision::Inexact(1));
    }

    #[test]
    fn an_exact_bound_beyond_every_inexact_one_stays_exact() {
        let schema = Schema::new(vec![Field::new("d", DataType::Date32, true)]);
        let ids = [1];
        // A merged model: old rows (some deleted, bounds inexact) and a new file whose
        // exact maximum is past everything older.
        let old = Arc::new(file_statistics(&schema, &ids, &file(10, vec![2], 1, 7, 0)));
        let new = Arc::new(file_statistics(&schema, &ids, &file(3, vec![], 5, 9, 0)));
        let t = table_statistics(&schema, &[old.clone(), new.clone()]);
        let date = |v| ScalarValue::Date32(Some(v));
        assert_eq!(t.column_statistics[0].max_value, Precision::Exact(date(9)));
        // The minimum is the deleted-from file's bound: the row holding it may be gone.
        assert_eq!(
            t.column_statistics[0].min_value,
            Precision::Inexact(date(1))
        );
        // A tie with an exact bound is exact whichever file comes first.
        let tie = Arc::new(file_statistics(&schema, &ids, &file(10, vec![2], 1, 9, 0)));
        for files in [[tie.clone(), new.clone()], [new.clone(), tie.clone()]] {
            let t = table_statistics(&schema, &files);
            assert_eq!(t.column_statistics[0].max_value, Precision::Exact(date(9)));
        }
        // An inexact bound beyond the exact one: the true maximum is somewhere between.
        let beyond = Arc::new(file_statistics(&schema, &ids, &file(10, vec![2], 1, 12, 0)));
        let t = table_statistics(&schema, &[beyond, new]);
        assert_eq!(
            t.column_statistics[0].max_value,
            Precision::Inexact(date(12))
        );
    }
}
