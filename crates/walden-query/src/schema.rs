//! A lake namespace as one principal sees it, as a DataFusion schema.

use std::any::Any;
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, Session};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use walden_lake::{Lake, TableName, ViewDef};

use crate::catalog::CatalogSnapshot;
use crate::policy::Principal;
use crate::secure::PolicyTableProvider;

/// The tables of one namespace in one catalog snapshot. A table's files are planned the
/// first time any session names it at that snapshot (see [`crate::catalog`]); a principal
/// with masked columns or a row filter on it gets it wrapped in a [`PolicyTableProvider`].
pub(crate) struct NamespaceSchema {
    lake: Lake,
    snapshot: Arc<CatalogSnapshot>,
    namespace: String,
    tables: Vec<String>,
    principal: Arc<Principal>,
    views: Arc<ViewPlanner>,
}

/// How a session plans the views its queries name: with the session itself (set once it
/// is built), so a view's query sees exactly what the reader may see — the reader's
/// namespaces, masks and row filters — and the plan guard checks the view's scans and
/// functions as part of the reader's plan (DataFusion inlines a view's logical plan).
#[derive(Default)]
pub(crate) struct ViewPlanner {
    session: OnceLock<Weak<SessionState>>,
    /// Views being planned right now, nested: bounds a cycle in stored view SQL.
    depth: AtomicUsize,
}

/// How deep views may nest (a view over a view over ...).
const MAX_VIEW_DEPTH: usize = 32;

impl ViewPlanner {
    /// Called once the session exists; the planner holds it weakly (the session owns the
    /// catalog that owns this planner).
    pub(crate) fn set_session(&self, session: &Arc<SessionState>) {
        let _ = self.session.set(Arc::downgrade(session));
    }

    async fn plan(&self, def: &ViewDef) -> DfResult<LogicalPlan> {
        let session =
            self.session.get().and_then(Weak::upgrade).ok_or_else(|| {
                DataFusionError::Internal("view planned outside its session".into())
            })?;
        let depth = self.depth.fetch_add(1, Ordering::SeqCst);
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&self.depth);
        if depth >= MAX_VIEW_DEPTH {
            return Err(DataFusionError::Plan(format!(
                "views nest more than {MAX_VIEW_DEPTH} deep at {} (do views refer to each \
                 other in a cycle?)",
                def.name
            )));
        }
        let plan = session.create_logical_plan(&def.sql).await.map_err(|e| {
            DataFusionError::Plan(format!(
                "view {} cannot be planned: {e}. Rebuild it (walden models build --select {}) \
                 or fix the tables it reads",
                def.name, def.name.name
            ))
        })?;
        Ok(plan)
    }
}

/// A planned view: its logical plan, inlined into the reader's plan by DataFusion.
#[derive(Debug)]
struct ViewProvider {
    plan: LogicalPlan,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for ViewProvider {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_logical_plan(&'_ self) -> Option<Cow<'_, LogicalPlan>> {
        Some(Cow::Borrowed(&self.plan))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Only reached if DataFusion did not inline the plan; it is already checked.
        state.create_physical_plan(&self.plan).await
    }
}

impl NamespaceSchema {
    pub(crate) fn new(
        lake: Lake,
        snapshot: Arc<CatalogSnapshot>,
        namespace: String,
        tables: Vec<String>,
        principal: Arc<Principal>,
        views: Arc<ViewPlanner>,
    ) -> Self {
        Self {
            lake,
            snapshot,
            namespace,
            tables,
            principal,
            views,
        }
    }
}

impl std::fmt::Debug for NamespaceSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceSchema")
            .field("namespace", &self.namespace)
            .field("tables", &self.tables)
            .finish()
    }
}

#[async_trait]
impl SchemaProvider for NamespaceSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        self.tables.clone()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if !self.table_exist(name) {
            return Ok(None);
        }
        let key = TableName::new(&self.namespace, name);
        if let Some(def) = self.snapshot.views.get(&key) {
            let plan = self.views.plan(def).await?;
            let schema = Arc::new(plan.schema().as_arrow().clone());
            return Ok(Some(Arc::new(ViewProvider { plan, schema })));
        }
        let Some(entry) = self.snapshot.tables.get(&key) else {
            return Ok(None);
        };
        let provider = entry
            .provider(&self.lake)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let masked: Vec<&str> = self
            .principal
            .masked(&self.namespace, name)
            .map(|m| m.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let filter = self.principal.row_filter(&self.namespace, name);
        if masked.is_empty() && filter.is_none() {
            return Ok(Some(provider));
        }
        Ok(Some(Arc::new(PolicyTableProvider::new(
            key.to_string(),
            provider,
            &masked,
            filter.map(str::to_string),
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.iter().any(|t| t == name)
    }
}
