//! Masked columns and row filters, enforced inside the scan.
//!
//! A [`PolicyTableProvider`] wraps a table for a principal with masked columns or a row
//! filter on it. Its scan reads the inner table, keeps only the rows the filter accepts,
//! and replaces every masked column with NULL, all in one [`PolicyExec`] node directly
//! above the inner scan. Everything the query does happens above that node, so:
//!
//! - no alias, CTE, subquery, aggregate or join can reach a masked value or a filtered
//!   row: they do not exist above the scan;
//! - a predicate of the query never runs on a filtered row (the node accepts no filter
//!   pushdown, so the physical optimizer cannot move one below it), which closes the side
//!   channel of errors raised by hidden rows;
//! - the node reports unknown statistics, so no optimizer answers `max(col)` or `count(*)`
//!   from file metadata;
//! - its `EXPLAIN` line names the masked columns and says that a row filter applies,
//!   without the predicate's text.
//!
//! Query filters are not pushed into the inner scan either (a filter on a masked column
//! would otherwise prune files by the real values). Tables a principal reads without
//! masks or filters are not wrapped and keep every optimization.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, new_null_array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::DFSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::StreamExt;

/// A table as one principal may see it.
#[derive(Debug)]
pub struct PolicyTableProvider {
    inner: Arc<dyn TableProvider>,
    /// The inner schema with masked columns made nullable.
    schema: SchemaRef,
    /// Indexes of masked columns.
    masked: Vec<usize>,
    /// SQL predicate over the table's columns.
    row_filter: Option<String>,
    /// `schema.table`, for messages.
    name: String,
}

impl PolicyTableProvider {
    /// Wraps `inner`; `masked` names columns (unknown names are ignored: a masked column
    /// dropped at the source is simply gone).
    pub fn new(
        name: String,
        inner: Arc<dyn TableProvider>,
        masked: &[&str],
        row_filter: Option<String>,
    ) -> Self {
        let inner_schema = inner.schema();
        let mut indexes = Vec::new();
        let fields: Vec<Field> = inner_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if masked.contains(&f.name().as_str()) {
                    indexes.push(i);
                    f.as_ref().clone().with_nullable(true)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        Self {
            inner,
            schema: Arc::new(Schema::new_with_metadata(
                fields,
                inner_schema.metadata().clone(),
            )),
            masked: indexes,
            row_filter,
            name,
        }
    }

    pub fn has_row_filter(&self) -> bool {
        self.row_filter.is_some()
    }
}

#[async_trait]
impl TableProvider for PolicyTableProvider {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let wanted = projection.cloned().unwrap_or(all);
        let inner_schema = self.inner.schema();
        // The filter's columns are read too, and dropped after filtering.
        let predicate = match &self.row_filter {
            None => None,
            Some(sql) => {
                let session = state
                    .as_any()
                    .downcast_ref::<SessionState>()
                    .ok_or_else(|| DataFusionError::Internal("unexpected session type".into()))?;
                let df_schema = DFSchema::try_from(inner_schema.as_ref().clone())?;
                let expr = session.create_logical_expr(sql, &df_schema).map_err(|e| {
                    DataFusionError::Plan(format!(
                        "the row filter configured for {} is not valid ({e}); no rows of it \
                         can be served until the configuration is fixed",
                        self.name
                    ))
                })?;
                Some(expr)
            }
        };
        // Masked columns are never read at all.
        let mut read: Vec<usize> = wanted
            .iter()
            .copied()
            .filter(|i| !self.masked.contains(i))
            .collect();
        if let Some(expr) = &predicate {
            for column in expr.column_refs() {
                let i = inner_schema.index_of(&column.name)?;
                if !read.contains(&i) {
                    read.push(i);
                }
            }
        }
        read.sort_unstable();
        read.dedup();
        let input = self
            .inner
            .scan(
                state,
                Some(&read),
                &[],
                if predicate.is_some() { None } else { limit },
            )
            .await?;
        let input_schema = input.schema();
        let predicate = match predicate {
            None => None,
            Some(expr) => {
                let df_schema = DFSchema::try_from(input_schema.as_ref().clone())?;
                Some(state.create_physical_expr(expr, &df_schema)?)
            }
        };
        let output: Vec<Output> = wanted
            .iter()
            .map(|i| {
                let field = self.schema.field(*i);
                if self.masked.contains(i) {
                    Output::Null(field.data_type().clone())
                } else {
                    let at = read.binary_search(i).expect("read covers wanted");
                    Output::Column(at)
                }
            })
            .collect();
        let schema = Arc::new(Schema::new(
            wanted
                .iter()
                .map(|i| self.schema.field(*i).clone())
                .collect::<Vec<_>>(),
        ));
        let masked_names = self
            .masked
            .iter()
            .filter(|i| wanted.contains(i))
            .map(|i| self.schema.field(*i).name().clone())
            .collect();
        Ok(Arc::new(PolicyExec::new(
            input,
            predicate,
            output,
            schema,
            masked_names,
        )))
    }
}

#[derive(Debug, Clone)]
enum Output {
    Column(usize),
    Null(DataType),
}

/// Filters rows and masks columns of its input; see the module docs.
#[derive(Debug)]
pub struct PolicyExec {
    input: Arc<dyn ExecutionPlan>,
    predicate: Option<Arc<dyn PhysicalExpr>>,
    output: Vec<Output>,
    schema: SchemaRef,
    masked_names: Vec<String>,
    properties: Arc<PlanProperties>,
}

impl PolicyExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        predicate: Option<Arc<dyn PhysicalExpr>>,
        output: Vec<Output>,
        schema: SchemaRef,
        masked_names: Vec<String>,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        Self {
            input,
            predicate,
            output,
            schema,
            masked_names,
            properties,
        }
    }
}

impl DisplayAs for PolicyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WaldenPolicyExec: ")?;
        if !self.masked_names.is_empty() {
            write!(f, "masked=[{}]", self.masked_names.join(", "))?;
            if self.predicate.is_some() {
                write!(f, ", ")?;
            }
        }
        if self.predicate.is_some() {
            write!(f, "row_filter=applied")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for PolicyExec {
    fn name(&self) -> &str {
        "WaldenPolicyExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("PolicyExec needs its input".into()))?;
        Ok(Arc::new(PolicyExec::new(
            input,
            self.predicate.clone(),
            self.output.clone(),
            self.schema.clone(),
            self.masked_names.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let predicate = self.predicate.clone();
        let output = self.output.clone();
        let schema = self.schema.clone();
        let out_schema = schema.clone();
        let stream = input.map(move |batch| {
            let batch = batch?;
            let batch = match &predicate {
                None => batch,
                Some(p) => {
                    let keep = p.evaluate(&batch)?.into_array(batch.num_rows())?;
                    let keep = keep.as_boolean_opt().ok_or_else(|| {
                        DataFusionError::Plan("a row filter must be a boolean predicate".into())
                    })?;
                    filter_record_batch(&batch, keep)?
                }
            };
            let n = batch.num_rows();
            let columns: Vec<ArrayRef> = output
                .iter()
                .map(|o| match o {
                    Output::Column(i) => batch.column(*i).clone(),
                    Output::Null(t) => new_null_array(t, n),
                })
                .collect();
            Ok(RecordBatch::try_new_with_options(
                out_schema.clone(),
                columns,
                &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
