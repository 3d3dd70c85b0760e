//! SQL over the lake with DataFusion.
//!
//! [`QueryEngine::session`] builds a read-only session whose catalog `walden` has one
//! schema per lake namespace and one table per lake table, each pinned to the snapshot
//! current when the session was built. [`QueryEngine::sql`] plans with DDL, DML and
//! statements forbidden on the logical plan (DataFusion's `SQLOptions`), never by looking
//! at SQL text.

mod provider;
mod schema;

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext};
use walden_lake::{Lake, LakeError};

pub use provider::LakeTableProvider;
use schema::LakeSchema;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("{0}")]
    Sql(#[from] DataFusionError),
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// The catalog name SQL sees (`walden.public.orders`, or just `public.orders`).
pub const SQL_CATALOG: &str = "walden";

/// Builds sessions over a lake.
#[derive(Clone)]
pub struct QueryEngine {
    lake: Lake,
}

impl QueryEngine {
    pub fn new(lake: Lake) -> Self {
        Self { lake }
    }

    /// A session over the current snapshot of every table.
    pub async fn session(&self) -> Result<SessionContext> {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(SQL_CATALOG, "public")
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let catalog = ctx
            .catalog(SQL_CATALOG)
            .ok_or_else(|| DataFusionError::Internal("default catalog missing".into()))?;
        catalog.register_schema("public", Arc::new(MemorySchemaProvider::new()))?;
        // One schema per namespace; tables are loaded and planned when a query names them,
        // not up front.
        let mut namespaces: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for name in self.lake.list_tables()? {
            namespaces
                .entry(name.namespace)
                .or_default()
                .push(name.name);
        }
        for (namespace, tables) in namespaces {
            catalog.register_schema(
                &namespace.clone(),
                Arc::new(LakeSchema::new(self.lake.clone(), namespace, tables)),
            )?;
        }
        Ok(ctx)
    }

    /// The options every query is planned with: no DDL, no DML, no statements.
    pub fn read_only() -> SQLOptions {
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
    }

    /// Runs one read-only query.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let ctx = self.session().await?;
        let df = ctx.sql_with_options(sql, Self::read_only()).await?;
        Ok(df.collect().await?)
    }
}
