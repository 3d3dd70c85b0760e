//! Guardrails on the logical plan.
//!
//! The SQL text is never inspected for keywords: it is parsed (one statement, bounded
//! length, the parser's nesting limit), planned against the principal's own catalog, and
//! the plan is checked here. A plan passes when it is a query (or `EXPLAIN` / `DESCRIBE`
//! of one), every table it scans is a table of the session's catalog or an allowed table
//! function, and every function it calls is one the session registered (the registry is
//! the allowlist: DataFusion's built-ins with the amplifying ones bounded, see
//! [`crate::functions`], and the Postgres catalog functions).

use std::collections::BTreeSet;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction};
use datafusion::logical_expr::{Expr, LogicalPlan, WindowFunctionDefinition};
use datafusion::sql::TableReference;

use crate::SQL_CATALOG;
use crate::secure::PolicyTableProvider;

/// Table functions a query may call.
pub const TABLE_FUNCTIONS: &[&str] = &["generate_series", "range", "pg_get_keywords"];

/// What a session offers; everything else is refused.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub schemas: BTreeSet<String>,
    pub functions: std::sync::Arc<BTreeSet<String>>,
    pub default_schema: String,
}

/// Why a plan was refused (shown to the client and audited).
pub type Refusal = String;

pub fn check(plan: &LogicalPlan, allowed: &Allowed) -> Result<(), Refusal> {
    match plan {
        LogicalPlan::Ddl(_) => {
            return Err(
                "walden is read-only: CREATE, DROP and ALTER are not allowed (the lake is \
                 written only by replication and model builds)"
                    .into(),
            );
        }
        LogicalPlan::Dml(_) | LogicalPlan::Copy(_) => {
            return Err(
                "walden is read-only: INSERT, UPDATE, DELETE and COPY are not allowed".into(),
            );
        }
        LogicalPlan::Statement(_) => {
            return Err(
                "this statement is not allowed: only queries (SELECT, WITH, VALUES, EXPLAIN, \
                 SHOW, DESCRIBE) run here; engine settings cannot be changed"
                    .into(),
            );
        }
        LogicalPlan::Analyze(a) if scans_filtered_rows(&a.input) => {
            return Err(
                "EXPLAIN ANALYZE is not available on tables with a row filter for you (its \
                 counts would describe rows you cannot see); use EXPLAIN"
                    .into(),
            );
        }
        _ => {}
    }
    let mut refusal = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Err(why) = check_table(&scan.table_name, allowed)
        {
            refusal = Some(why);
            return Ok(TreeNodeRecursion::Stop);
        }
        if let LogicalPlan::Extension(e) = node {
            refusal = Some(format!("plan node {} is not allowed", e.node.name()));
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Some(name) = function_name(e)
                    && !allowed.functions.contains(&name)
                {
                    refusal = Some(format!("function {name}() is not allowed here"));
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(if refusal.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })
    .map_err(|e| format!("checking the plan failed: {e}"))?;
    match refusal {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

fn function_name(e: &Expr) -> Option<String> {
    match e {
        Expr::ScalarFunction(f) => Some(f.func.name().to_string()),
        Expr::AggregateFunction(AggregateFunction { func, .. }) => Some(func.name().to_string()),
        Expr::WindowFunction(w) => {
            let WindowFunction { fun, .. } = w.as_ref();
            Some(match fun {
                WindowFunctionDefinition::AggregateUDF(f) => f.name().to_string(),
                WindowFunctionDefinition::WindowUDF(f) => f.name().to_string(),
            })
        }
        _ => None,
    }
}

fn check_table(name: &TableReference, allowed: &Allowed) -> Result<(), Refusal> {
    let ok = match name {
        TableReference::Bare { table } => match table.strip_suffix("()") {
            Some(function) => TABLE_FUNCTIONS.contains(&function),
            None => allowed.schemas.contains(&allowed.default_schema),
        },
        TableReference::Partial { schema, .. } => allowed.schemas.contains(schema.as_ref()),
        TableReference::Full {
            catalog, schema, ..
        } => catalog.as_ref() == SQL_CATALOG && allowed.schemas.contains(schema.as_ref()),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name} is not a table of this lake; only catalog tables can be read (no files, \
             URLs or external tables)"
        ))
    }
}

/// Whether any scan below `plan` filters rows for the principal.
fn scans_filtered_rows(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
            && provider
                .as_any()
                .downcast_ref::<PolicyTableProvider>()
                .is_some_and(PolicyTableProvider::has_row_filter)
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}
