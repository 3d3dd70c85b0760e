//! Replication from a Postgres source into the lake.
//!
//! [`initial_sync`] copies every selected table from the slot's own exported snapshot and
//! commits them in parts, the last with the slot's consistent point as the replication
//! progress. Streaming from that point (the next stage) then delivers exactly the
//! transactions the snapshot did not see.
//!
//! Progress state machine, kept in the lake's catalog under the slot name:
//! - absent: nothing was ever started with this slot and lake;
//! - `initial-sync` (lsn 0): a copy started. Found at start, that copy was interrupted:
//!   with parts committed (the state lists their tables and the consistent point) and the
//!   slot alive, the run resumes with the other tables; otherwise the slot is dropped and
//!   the copy starts over;
//! - `streaming` (lsn = consistent point, later the last committed LSN): tables are in the
//!   lake and the slot is ours.

mod apply;
mod evolve;
mod index;
mod stream;
mod sync;
mod verify;

pub use apply::MaintenanceOptions;
pub use stream::{StreamOptions, StreamOutcome, stream};
pub use sync::{
    Quiet, SyncObserver, SyncOptions, SyncOutcome, initial_sync, prepare_resync, teardown,
};
pub use verify::{DifferenceKind, RowDifference, TableReport, VerifyOptions, VerifyReport, verify};

use walden_lake::{LakeError, TableName};
use walden_pg::PgError;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Source(#[from] PgError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("{0}")]
    Refused(String),
    #[error(
        "interrupted: the copy stopped before it committed; nothing of it is visible, the slot was dropped; run again to start over"
    )]
    Interrupted,
    /// A source table changed in a way the lake table cannot follow yet.
    #[error("schema change: {0}")]
    SchemaChange(String),
}

impl SyncError {
    /// Whether the error may pass by itself (the source restarting or unreachable, a
    /// dropped connection, a full or unavailable lake disk), so retrying after a pause is
    /// right. Everything else needs a person.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Source(e) => e.is_transient(),
            SyncError::Lake(e) => !matches!(
                e,
                LakeError::Conflict { .. } | LakeError::Invalid(_) | LakeError::NoSuchTable { .. }
            ),
            _ => false,
        }
    }
}

/// Crash-test hooks: when the environment variable `WALDEN_FAILPOINT` names this point,
/// the process aborts on the spot (no destructors, no flushing: like a power cut or
/// `kill -9`). Points: `copy-after-batch` (initial copy, after a batch was written),
/// `stream-after-data-files` (a flush wrote its data and delete files, before the catalog
/// commit), `stream-after-commit` (committed, not yet acknowledged), `stream-after-ack`
/// (acknowledged), `stream-after-spill` (a big transaction spilled to pending files),
/// `compact-before-commit` (a compaction step wrote its files, before its commit),
/// `copy-after-part` (the initial copy committed a part, not the last).
/// Tests use it to show the lake converges after a crash at each point.
pub(crate) fn failpoint(name: &str) {
    if failpoint_armed(name) {
        tracing::error!(failpoint = name, "failpoint reached: aborting");
        std::process::abort();
    }
}

pub(crate) fn failpoint_armed(name: &str) -> bool {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var("WALDEN_FAILPOINT").ok())
        .as_deref()
        == Some(name)
}

pub type Result<T, E = SyncError> = std::result::Result<T, E>;

/// The replication state kept with the progress (`walden_progress.state`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct StreamState {
    pub phase: Phase,
    #[serde(default)]
    pub system_id: Option<String>,
    #[serde(default)]
    pub timeline: Option<u32>,
    #[serde(default)]
    pub publication: Option<String>,
    #[serde(default)]
    pub consistent_point: Option<String>,
    /// Every replicated table with the source relation OID it was copied from.
    #[serde(default)]
    pub tables: Vec<TableState>,
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    InitialSync,
    Streaming,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TableState {
    pub source: String,
    pub oid: u32,
    pub lake: String,
    /// Rows at the initial copy.
    pub rows: u64,
    /// The primary-key columns (what identifies a row in the lake).
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// The LSN the table's copy is consistent at: changes of transactions committing
    /// before it are already in the copy.
    #[serde(default)]
    pub synced_lsn: u64,
    /// The source columns the lake table follows, in the lake's column order (which is
    /// the source's attribute order). Empty in states written before walden tracked it.
    #[serde(default)]
    pub columns: Vec<ColumnState>,
}

/// A source column as the lake last followed it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ColumnState {
    pub name: String,
    /// `pg_attribute.attnum`: stable for the life of the column, never reused.
    pub attnum: i16,
    pub type_oid: u32,
    pub typmod: i32,
}

impl TableState {
    pub fn lake_name(&self) -> TableName {
        let (ns, name) = self.lake.split_once('.').unwrap_or(("public", &self.lake));
        TableName::new(ns, name)
    }
}
