//! Uncorrelated scalar subqueries run first and become constants (Postgres calls these
//! InitPlans).
//!
//! DataFusion plans `WHERE t.updated_at > (SELECT max(updated_at) FROM m)` as a join of
//! `t` with the one-row aggregate: the comparison is a join filter, so it cannot reach
//! the scan of `t`, and every row of `t` is read and compared. Run before the main plan
//! is optimized, the subquery becomes a literal, the predicate is an ordinary filter, and
//! the Parquet scan prunes files, row groups and pages by their statistics. That is the
//! shape of every incremental model (`{{ this }}`) and of TPC-H Q11, Q15 and Q22.
//!
//! A subquery is folded only when nothing in it, at any depth, refers to an outer query.
//! It runs in the query's own session — the same catalog snapshot, memory pool, deadline
//! and cancellation as the rest of the query — after the plan passed the guard. Its
//! answer must be at most one row, as in Postgres; no row is NULL.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, Subquery};

use crate::{QueryError, Result};

/// `plan` with each uncorrelated scalar subquery replaced by its value. Plans that do
/// not run (`EXPLAIN`, `DESCRIBE`) are returned as they are: explaining a query must not
/// execute any of it.
pub(crate) async fn fold(
    state: &SessionState,
    plan: LogicalPlan,
    memory_limit: usize,
) -> Result<LogicalPlan> {
    if matches!(
        plan,
        LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_)
    ) {
        return Ok(plan);
    }
    fold_inner(state, plan, memory_limit).await
}

fn fold_inner<'a>(
    state: &'a SessionState,
    plan: LogicalPlan,
    memory_limit: usize,
) -> futures::future::BoxFuture<'a, Result<LogicalPlan>> {
    Box::pin(async move {
        let found = uncorrelated_scalar_subqueries(&plan)?;
        if found.is_empty() {
            return Ok(plan);
        }
        let mut values = Vec::with_capacity(found.len());
        for subquery in found {
            let value = run(state, &subquery, memory_limit).await?;
            values.push((subquery, value));
        }
        let folded = plan
            .transform(|node| {
                node.map_expressions(|e| {
                    e.transform(|e| match &e {
                        Expr::ScalarSubquery(s) => {
                            match values.iter().find(|(found, _)| found == s) {
                                Some((_, v)) => {
                                    Ok(Transformed::yes(Expr::Literal(v.clone(), None)))
                                }
                                None => Ok(Transformed::no(e)),
                            }
                        }
                        _ => Ok(Transformed::no(e)),
                    })
                })
            })
            .map_err(QueryError::Sql)?;
        Ok(folded.data)
    })
}

/// The scalar subqueries in the expressions of `plan`'s own nodes (not inside other
/// subqueries: those are folded when their subquery runs) that refer to no outer query.
fn uncorrelated_scalar_subqueries(plan: &LogicalPlan) -> Result<Vec<Subquery>> {
    let mut found: Vec<Subquery> = Vec::new();
    plan.apply(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarSubquery(s) = e
                    && s.outer_ref_columns.is_empty()
                    && !refers_outside(&s.subquery)
                    && !found.contains(s)
                {
                    found.push(s.clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })
    .map_err(QueryError::Sql)?;
    Ok(found)
}

/// Whether any expression in `plan` or its subqueries, at any depth, is an outer
/// reference. Conservative: a reference a nested subquery makes to this subquery's own
/// columns counts too, and such a subquery is left to DataFusion's decorrelation.
fn refers_outside(plan: &LogicalPlan) -> bool {
    let mut outer = false;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if matches!(e, Expr::OuterReferenceColumn(..)) {
                    outer = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    outer
}

/// Runs one subquery to its single value.
async fn run(
    state: &SessionState,
    subquery: &Subquery,
    memory_limit: usize,
) -> Result<ScalarValue> {
    let plan = fold_inner(state, subquery.subquery.as_ref().clone(), memory_limit).await?;
    let data_type = plan
        .schema()
        .fields()
        .first()
        .map(|f| f.data_type().clone())
        .ok_or_else(|| QueryError::Parse("a scalar subquery returns no column".into()))?;
    let df = |e| QueryError::from_df(e, memory_limit);
    // Two rows tell one from too many: a subquery that would return millions stops there
    // instead of being collected whole (its rows pass no result cap).
    let plan = datafusion::logical_expr::LogicalPlanBuilder::from(plan)
        .limit(0, Some(2))
        .and_then(|b| b.build())
        .map_err(df)?;
    let optimized = state.optimize(&plan).map_err(df)?;
    let physical = state.create_physical_plan(&optimized).await.map_err(df)?;
    let batches = datafusion::physical_plan::collect(
        physical,
        Arc::new(datafusion::execution::TaskContext::from(state)),
    )
    .await
    .map_err(df)?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows > 1 {
        return Err(QueryError::Sql(
            datafusion::error::DataFusionError::Execution(
                "more than one row returned by a subquery used as an expression; make it \
                 return one row (an aggregate, a key filter or LIMIT 1)"
                    .into(),
            ),
        ));
    }
    match batches.iter().find(|b| b.num_rows() == 1) {
        Some(b) => ScalarValue::try_from_array(b.column(0), 0).map_err(QueryError::Sql),
        None => ScalarValue::try_from(&data_type).map_err(QueryError::Sql),
    }
}
