//! A lake namespace as a DataFusion schema whose tables are loaded on first use.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::SchemaProvider;
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result as DfResult};
use tokio::sync::Mutex;
use walden_lake::{Lake, TableName};

use crate::LakeTableProvider;

/// The tables of one namespace as the catalog listed them when the session was built. A
/// table's metadata is read and its files planned the first time a query names it; later
/// references in the same session get the same snapshot.
pub(crate) struct LakeSchema {
    lake: Lake,
    namespace: String,
    tables: Vec<String>,
    loaded: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
}

impl LakeSchema {
    pub(crate) fn new(lake: Lake, namespace: String, tables: Vec<String>) -> Self {
        Self {
            lake,
            namespace,
            tables,
            loaded: Mutex::new(HashMap::new()),
        }
    }
}

impl std::fmt::Debug for LakeSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeSchema")
            .field("namespace", &self.namespace)
            .field("tables", &self.tables)
            .finish()
    }
}

#[async_trait]
impl SchemaProvider for LakeSchema {
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
        let mut loaded = self.loaded.lock().await;
        if let Some(provider) = loaded.get(name) {
            return Ok(Some(provider.clone()));
        }
        let lake_name = TableName::new(&self.namespace, name);
        let external = |e: walden_lake::LakeError| DataFusionError::External(Box::new(e));
        let Some(table) = self.lake.load_table(&lake_name).await.map_err(external)? else {
            return Ok(None);
        };
        let provider: Arc<dyn TableProvider> = Arc::new(
            LakeTableProvider::new(&self.lake, table)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?,
        );
        loaded.insert(name.to_string(), provider.clone());
        Ok(Some(provider))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.iter().any(|t| t == name)
    }
}
