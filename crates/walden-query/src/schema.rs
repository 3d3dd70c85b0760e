//! A lake namespace as one principal sees it, as a DataFusion schema.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::SchemaProvider;
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result as DfResult};
use walden_lake::{Lake, TableName};

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
}

impl NamespaceSchema {
    pub(crate) fn new(
        lake: Lake,
        snapshot: Arc<CatalogSnapshot>,
        namespace: String,
        tables: Vec<String>,
        principal: Arc<Principal>,
    ) -> Self {
        Self {
            lake,
            snapshot,
            namespace,
            tables,
            principal,
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
