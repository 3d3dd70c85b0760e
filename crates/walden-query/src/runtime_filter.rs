//! Runtime filters applied to rows, not only to row groups.
//!
//! DataFusion's hash joins (and `ORDER BY ... LIMIT`'s top-k) publish *dynamic filters*
//! once they know something about their input: after a join has built its hash table, a
//! probe-side row whose key is outside the table's key range or set cannot match. The
//! filter is pushed into the Parquet scan on the probe side, but with
//! `parquet.pushdown_filters` off (walden's setting: decoding with late materialization is
//! slower on the whole, docs/benchmarks.md) the scan only uses it to skip row groups and
//! pages by their statistics: every row of the surviving pages still flows up through
//! repartitions, partial aggregates and other joins before the join drops it.
//!
//! [`ApplyRuntimeFilters`] is a physical optimizer rule, run last, that puts a
//! [`RuntimeFilterExec`] right above each Parquet scan whose predicate holds dynamic
//! filters. It evaluates only the dynamic parts, on the scan's output, and passes
//! batches through untouched
//! - while no producer has published a filter yet (generation 1: the placeholder `true`);
//! - once a filter proves unselective: after [`SAMPLE_ROWS`] rows that kept more than
//!   [`KEEP_RATIO`] of them, it stops evaluating until the producer publishes a new
//!   filter (a top-k bound tightens as it goes).
//!
//! The filter is the one DataFusion itself would apply inside the scan with pushdown on,
//! so rows it drops are rows the join or top-k would drop: results do not change.

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{BatchCoalescer, prep_null_mask_filter};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Result as DfResult, Statistics};
use datafusion::datasource::physical_plan::ParquetSource;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::{Column, DynamicFilterPhysicalExpr};
use datafusion::physical_expr::utils::conjunction;
use datafusion::physical_expr::{PhysicalExpr, split_conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, RecordBatchStream,
};
use futures::{Stream, StreamExt};

/// Rows a filter is judged on before it may be switched off.
pub const SAMPLE_ROWS: usize = 64 * 1024;
/// A filter that keeps more than this share of its sample is not worth evaluating.
pub const KEEP_RATIO: f64 = 0.9;

/// The physical optimizer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct ApplyRuntimeFilters;

impl PhysicalOptimizerRule for ApplyRuntimeFilters {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            // A static filter over the scan is cheaper than most runtime filters and
            // often selective: evaluate it first.
            if let Some(filter) = node.as_any().downcast_ref::<FilterExec>()
                && let Some(runtime) = filter.input().as_any().downcast_ref::<RuntimeFilterExec>()
                && let Some(predicate) = on_output_columns(&runtime.predicate, &node.schema())
            {
                let filter =
                    Arc::clone(&node).with_new_children(vec![Arc::clone(&runtime.input)])?;
                let runtime = RuntimeFilterExec::new(filter, predicate);
                return Ok(Transformed::yes(Arc::new(runtime) as Arc<dyn ExecutionPlan>));
            }
            let Some(scan) = node.as_any().downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some((_, parquet)) = scan.downcast_to_file_source::<ParquetSource>() else {
                return Ok(Transformed::no(node));
            };
            let Some(predicate) =
                datafusion::datasource::physical_plan::FileSource::filter(parquet)
            else {
                return Ok(Transformed::no(node));
            };
            let schema = node.schema();
            let dynamic: Vec<Arc<dyn PhysicalExpr>> = split_conjunction(&predicate)
                .into_iter()
                .filter(|c| !dynamic_parts(c).is_empty())
                .filter_map(|c| on_output_columns(c, &schema))
                .collect();
            if dynamic.is_empty() {
                return Ok(Transformed::no(node));
            }
            let filter = RuntimeFilterExec::new(node, conjunction(dynamic));
            Ok(Transformed::yes(Arc::new(filter) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "walden_apply_runtime_filters"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The dynamic filters inside `expr`.
fn dynamic_parts(expr: &Arc<dyn PhysicalExpr>) -> Vec<Arc<dyn PhysicalExpr>> {
    let mut found = Vec::new();
    let _ = expr.apply(|e| {
        if e.as_any().is::<DynamicFilterPhysicalExpr>() {
            found.push(Arc::clone(e));
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Jump)
        } else {
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }
    });
    found
}

/// `expr`, whose columns index the table's schema, rewritten to index the scan's output
/// schema (the projection); `None` when it reads a column the scan does not output.
fn on_output_columns(
    expr: &Arc<dyn PhysicalExpr>,
    output: &SchemaRef,
) -> Option<Arc<dyn PhysicalExpr>> {
    Arc::clone(expr)
        .transform_up(|e| match e.as_any().downcast_ref::<Column>() {
            Some(col) => {
                let index = output.index_of(col.name()).map_err(|e| {
                    datafusion::error::DataFusionError::ArrowError(Box::new(e), None)
                })?;
                Ok(Transformed::yes(
                    Arc::new(Column::new(col.name(), index)) as Arc<dyn PhysicalExpr>
                ))
            }
            None => Ok(Transformed::no(e)),
        })
        .data()
        .ok()
}

/// Filters its input's rows by runtime (dynamic) filters; see the module documentation.
#[derive(Debug)]
pub struct RuntimeFilterExec {
    input: Arc<dyn ExecutionPlan>,
    predicate: Arc<dyn PhysicalExpr>,
    /// The dynamic filters in `predicate`, whose generations say whether a producer has
    /// published anything yet and whether it has changed since the filter was switched off.
    dynamic: Vec<Arc<dyn PhysicalExpr>>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl RuntimeFilterExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, predicate: Arc<dyn PhysicalExpr>) -> Self {
        let properties = Arc::clone(input.properties());
        Self {
            dynamic: dynamic_parts(&predicate),
            input,
            predicate,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for RuntimeFilterExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "RuntimeFilterExec: {}", self.predicate)
            }
            DisplayFormatType::TreeRender => write!(f, "predicate={}", self.predicate),
        }
    }
}

impl ExecutionPlan for RuntimeFilterExec {
    fn name(&self) -> &str {
        "RuntimeFilterExec"
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

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children.swap_remove(0);
        Ok(Arc::new(Self::new(input, Arc::clone(&self.predicate))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let batch_size = context.session_config().batch_size();
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        Ok(Box::pin(RuntimeFilterStream {
            output: BatchCoalescer::new(Arc::clone(&schema), batch_size)
                .with_biggest_coalesce_batch_size(Some(batch_size / 2)),
            done: false,
            schema,
            input,
            predicate: Arc::clone(&self.predicate),
            dynamic: self.dynamic.clone(),
            state: Judgement::Waiting,
            seen: 0,
            kept: 0,
            baseline: BaselineMetrics::new(&self.metrics, partition),
            pruned: MetricBuilder::new(&self.metrics).counter("rows_pruned", partition),
            bypassed: MetricBuilder::new(&self.metrics).counter("rows_bypassed", partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn partition_statistics(&self, partition: Option<usize>) -> DfResult<Statistics> {
        Ok(self.input.partition_statistics(partition)?.to_inexact())
    }
}

/// Where a stream stands with its filter.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Judgement {
    /// No published filter seen yet; the first one starts a sample.
    Waiting,
    /// Sampling the filter of this generation.
    Sampling(u64),
    /// The filter of this generation proved selective: keep evaluating.
    Selective(u64),
    /// The filter of this generation kept almost everything: pass batches through.
    Off(u64),
}

struct RuntimeFilterStream {
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    /// Gathers the rows that pass into batches of the session's batch size, so that a
    /// selective filter does not send a stream of tiny batches up the plan.
    output: BatchCoalescer,
    done: bool,
    predicate: Arc<dyn PhysicalExpr>,
    dynamic: Vec<Arc<dyn PhysicalExpr>>,
    state: Judgement,
    seen: usize,
    kept: usize,
    baseline: BaselineMetrics,
    pruned: Count,
    bypassed: Count,
}

impl RuntimeFilterStream {
    /// The sum of the filters' generations; 1 each means nothing was published yet.
    fn generation(&self) -> u64 {
        self.dynamic.iter().map(|d| d.snapshot_generation()).sum()
    }

    /// Filters `batch` into the output buffer.
    fn push(&mut self, batch: RecordBatch) -> DfResult<()> {
        let generation = self.generation();
        if generation <= self.dynamic.len() as u64 {
            // Nothing published: the filter is the placeholder `true`.
            self.output.push_batch(batch)?;
            return Ok(());
        }
        match self.state {
            Judgement::Off(g) if g == generation => {
                self.bypassed.add(batch.num_rows());
                self.output.push_batch(batch)?;
                return Ok(());
            }
            Judgement::Selective(g) | Judgement::Sampling(g) if g == generation => {}
            _ => {
                self.state = Judgement::Sampling(generation);
                self.seen = 0;
                self.kept = 0;
            }
        }
        let _timer = self.baseline.elapsed_compute().timer();
        let rows = batch.num_rows();
        let mask = self.predicate.evaluate(&batch)?.into_array(rows)?;
        let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() else {
            return Err(datafusion::error::DataFusionError::Internal(format!(
                "runtime filter {} is not boolean",
                self.predicate
            )));
        };
        // NULL drops the row, as in WHERE.
        let mask = if mask.null_count() == 0 {
            mask.clone()
        } else {
            prep_null_mask_filter(mask)
        };
        let kept = mask.true_count();
        if kept == rows {
            self.output.push_batch(batch)?;
        } else {
            self.output.push_batch_with_filter(batch, &mask)?;
        }
        self.pruned.add(rows - kept);
        if let Judgement::Sampling(g) = self.state {
            self.seen += rows;
            self.kept += kept;
            if self.seen >= SAMPLE_ROWS {
                self.state = if self.kept as f64 > KEEP_RATIO * self.seen as f64 {
                    Judgement::Off(g)
                } else {
                    Judgement::Selective(g)
                };
            }
        }
        Ok(())
    }
}

impl Stream for RuntimeFilterStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(batch) = self.output.next_completed_batch() {
                return self.baseline.record_poll(Poll::Ready(Some(Ok(batch))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match self.input.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(batch))) => {
                    if let Err(e) = self.push(batch) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Ready(None) => {
                    self.done = true;
                    if let Err(e) = self.output.finish_buffered_batch() {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl RecordBatchStream for RuntimeFilterStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}
