//! A DataFusion table over one Iceberg snapshot of a lake table.
//!
//! Files are planned once (from the snapshot's manifests) when the provider is built and
//! spread over the session's target partitions by size, so a scan reads files in parallel.
//! Position deletes become Parquet row selections through [`ParquetAccessPlan`]: deleted
//! rows are never decoded, and no join is needed.
//!
//! Columns are matched to a file's columns by Iceberg field id, not by name (see
//! [`FieldIdAdapter`]): a renamed column still reads its old files, a dropped and re-added
//! column of the same name reads NULL from files written before, and a promoted type is
//! cast.

use std::any::Any;
use std::fs::File;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::Session;
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
use walden_lake::{Lake, LakeTable, PlannedFile};

use crate::Result;

/// One lake table at one snapshot.
#[derive(Debug)]
pub struct LakeTableProvider {
    schema: SchemaRef,
    files: Vec<PlannedFile>,
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
        let ids = table
            .arrow_schema()
            .fields()
            .iter()
            .zip(table.field_ids())
            .map(|(f, id)| (f.name().clone(), id))
            .collect();
        Ok(Self {
            schema,
            files,
            adapter: Arc::new(FieldIdAdapter { ids }),
        })
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

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let live: Vec<&PlannedFile> = self
            .files
            .iter()
            .filter(|f| (f.deleted.len() as u64) < f.record_count)
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
        let mut order: Vec<&PlannedFile> = live;
        order.sort_by_key(|f| std::cmp::Reverse(f.file_size));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); partitions];
        for f in order {
            let mut pf = PartitionedFile::new(f.path.clone(), f.file_size);
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
        let source = Arc::new(ParquetSource::new(self.schema.clone()));
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
            .with_expr_adapter(Some(self.adapter.clone()))
            .with_file_groups(
                groups
                    .into_iter()
                    .map(|(_, files)| FileGroup::new(files))
                    .collect(),
            )
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}
