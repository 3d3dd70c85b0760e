//! SQL over the lake with DataFusion: the query service every front end uses.
//!
//! - [`catalog`]: the shared view of the lake, one consistent catalog read per query, with
//!   table metadata and file plans cached by metadata location;
//! - [`service`]: [`QueryService`], which parses, plans, checks, runs, caps and audits
//!   each query for a [`Principal`];
//! - [`policy`]: principals, their grants and [`Limits`];
//! - [`secure`]: masked columns and row filters inside the scan;
//! - [`guard`]: the checks on the logical plan;
//! - [`initplan`]: uncorrelated scalar subqueries run first and become constants;
//! - [`runtime_filter`]: join and top-k runtime filters applied to the scans' rows;
//! - [`limits`]: per-query memory pools under a global budget, result caps;
//! - [`functions`]: functions whose output can dwarf their input, bounded;
//! - [`audit`]: the durable audit log;
//! - [`system`]: the `walden.*` tables.
//!
//! [`QueryEngine`] is the local operator's shortcut (`walden query`, tests): the same
//! service with the operator principal and no audit.

pub mod audit;
pub mod catalog;
pub mod functions;
pub mod guard;
mod initplan;
pub mod limits;
mod pgcatalog;
pub mod policy;
mod provider;
mod runtime_filter;
mod schema;
pub mod secure;
pub mod service;
pub mod system;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use walden_lake::{Lake, LakeError};

pub use audit::{AuditLog, AuditRecord, Outcome};
pub use catalog::LakeCatalog;
pub use policy::{Limits, Principal, Protocol};
pub use provider::LakeTableProvider;
pub use service::{Answer, AsOf, Cancel, Prepared, QueryService, ServiceOptions, Summary};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// Planning or execution failed (bad SQL, unknown names, a failed operator).
    #[error("{0}")]
    Sql(#[from] DataFusionError),
    #[error("syntax error: {0}")]
    Parse(String),
    /// A guardrail or grant refused the query before it ran.
    #[error("refused: {0}")]
    Refused(String),
    #[error(
        "the query ran longer than its time limit of {} ms (timeout_ms) and was stopped; \
         narrow it with filters or a LIMIT",
        .0.as_millis()
    )]
    Timeout(Duration),
    #[error("the query was cancelled")]
    Cancelled,
    /// Memory (the query's limit, the server's budget, or a bounded function).
    #[error("{0}")]
    Resources(String),
}

impl QueryError {
    /// Whether the query was refused by policy rather than failing.
    pub fn is_refusal(&self) -> bool {
        matches!(self, QueryError::Refused(_))
    }

    /// A DataFusion error as the client should see it.
    pub(crate) fn from_df(e: DataFusionError, memory_limit: usize) -> Self {
        if let DataFusionError::External(inner) = e.find_root()
            && let Some(q) = inner.downcast_ref::<QueryError>()
        {
            match q {
                QueryError::Cancelled => return QueryError::Cancelled,
                QueryError::Timeout(t) => return QueryError::Timeout(*t),
                _ => {}
            }
        }
        match e.find_root() {
            DataFusionError::ResourcesExhausted(m) if m.contains("memory_limit_bytes") => {
                QueryError::Resources(m.clone())
            }
            DataFusionError::ResourcesExhausted(m) => QueryError::Resources(format!(
                "{m} (this principal's memory limit is {memory_limit} bytes)"
            )),
            _ => QueryError::Sql(e),
        }
    }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// The catalog name SQL sees (`walden.public.orders`, or just `public.orders`).
pub const SQL_CATALOG: &str = "walden";

/// An LSN as Postgres writes it (`16/B374D848`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// The local operator's engine: every table, no caps, no audit.
#[derive(Clone)]
pub struct QueryEngine {
    service: QueryService,
    operator: Arc<Principal>,
}

impl QueryEngine {
    pub fn new(lake: Lake) -> Self {
        let service = QueryService::new(LakeCatalog::new(lake), None, ServiceOptions::default())
            .expect("the built-in session setup is valid");
        Self {
            service,
            operator: Arc::new(Principal::operator()),
        }
    }

    pub fn service(&self) -> &QueryService {
        &self.service
    }

    /// The result columns `sql` would have, without running it.
    pub async fn schema_of(&self, sql: &str) -> Result<datafusion::arrow::datatypes::SchemaRef> {
        Ok(self
            .service
            .prepare(&self.operator, Protocol::Cli, sql)
            .await?
            .schema)
    }

    /// Runs one read-only query.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let mut answer = self
            .service
            .execute(&self.operator, Protocol::Cli, sql, None, None)
            .await?;
        let batches = answer.collect().await;
        answer.finish().await;
        batches
    }
}
