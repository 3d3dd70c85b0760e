//! The lake: Iceberg v2 tables under one warehouse directory, registered in an Iceberg
//! SQL catalog (SQLite, `<warehouse>/catalog.db`, catalog name `walden`).
//!
//! The one write operation is [`Lake::commit`]: any number of tables (new ones included)
//! get new snapshots — data files, position-delete files, or a full replacement — and the
//! replication [`Progress`] that covers them is recorded, all in one catalog transaction.
//! Readers (walden's query engine, pyiceberg, DuckDB, ...) either see all of a commit or
//! none of it.
//!
//! Files are written before the catalog transaction; a crash before it leaves only
//! unreferenced files, never a visible partial state.

mod catalog;
mod commit;
mod error;
mod maintain;
mod read;
mod scan;
pub mod schema;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef as ArrowSchemaRef;
use iceberg::spec::{
    FormatVersion, SortOrder, TableMetadata, TableMetadataBuilder, UnboundPartitionSpec,
};

pub use catalog::{CatalogChanges, CatalogState, ModelRun, Progress, ViewColumn, ViewDef};
pub use commit::{Commit, CommitOutcome, TableChange};
pub use error::{LakeError, Result};
pub use iceberg::io::FileIO;
pub use iceberg::spec::DataFile;
pub use maintain::ExpireOutcome;
pub use read::DataFileBatches;
pub use scan::{Bound, ColumnStats, PlannedFile};
pub use schema::{Column, ColumnType, EvolvedColumn, TableSchema, promotion_blocker};
pub use writer::{DataFileWriter, PositionDeleteWriter, WriterOptions};

use crate::catalog::CatalogStore;
use crate::error::IcebergContext;

/// The catalog name walden registers its tables under (pyiceberg:
/// `SqlCatalog("walden", uri="sqlite:///<warehouse>/catalog.db")`).
pub const CATALOG_NAME: &str = "walden";

/// A table's name in the lake: one namespace level (the Postgres schema for replicated
/// tables) and the table name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub namespace: String,
    pub name: String,
}

impl TableName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// A handle on the warehouse. Cheap to clone.
#[derive(Clone)]
pub struct Lake {
    warehouse: PathBuf,
    file_io: FileIO,
    store: CatalogStore,
}

impl Lake {
    /// Opens (creating if needed) the warehouse directory and its catalog database.
    /// Fails with the path if the directory cannot be created or written.
    pub fn open(warehouse: impl AsRef<Path>) -> Result<Self> {
        let given = warehouse.as_ref();
        let warehouse_err = |message: String| LakeError::Warehouse {
            path: given.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(given)
            .map_err(|e| warehouse_err(format!("cannot create the directory: {e}")))?;
        let warehouse = given
            .canonicalize()
            .map_err(|e| warehouse_err(format!("cannot resolve the path: {e}")))?;
        // Prove we can write here before anything else touches it.
        let probe = warehouse.join(format!(".walden-write-test-{}", std::process::id()));
        std::fs::write(&probe, b"ok")
            .map_err(|e| warehouse_err(format!("the directory is not writable: {e}")))?;
        let _ = std::fs::remove_file(&probe);
        let store = CatalogStore::open(&warehouse.join("catalog.db"), CATALOG_NAME)?;
        Ok(Self {
            warehouse,
            file_io: FileIO::new_with_fs(),
            store,
        })
    }

    pub fn warehouse(&self) -> &Path {
        &self.warehouse
    }

    pub fn catalog_path(&self) -> &Path {
        self.store.path()
    }

    pub fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    /// Where a table's files live: `<warehouse>/<namespace>/<table>`.
    pub fn table_location(&self, name: &TableName) -> String {
        self.warehouse
            .join(&name.namespace)
            .join(&name.name)
            .to_string_lossy()
            .into_owned()
    }

    /// Every table in the catalog.
    pub fn list_tables(&self) -> Result<Vec<TableName>> {
        Ok(self
            .store
            .state()?
            .tables
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// The table's current metadata, or `None` if the catalog does not have it.
    pub async fn load_table(&self, name: &TableName) -> Result<Option<LakeTable>> {
        let Some(location) = self.store.metadata_location(name)? else {
            return Ok(None);
        };
        self.load_table_at(name, &location).await.map(Some)
    }

    /// Every table pointer and every stream's progress from one catalog transaction, so
    /// the progress describes exactly these table versions (see [`Lake::load_table_at`]).
    pub fn catalog_state(&self) -> Result<CatalogState> {
        self.store.state()
    }

    /// The table as of one metadata file (a location from [`Lake::catalog_state`]).
    /// Metadata files never change once written, so the result can be cached by location.
    pub async fn load_table_at(&self, name: &TableName, location: &str) -> Result<LakeTable> {
        let bytes = self
            .file_io
            .new_input(location)
            .ctx(|| format!("opening metadata of {name} at {location}"))?
            .read()
            .await
            .ctx(|| format!("reading metadata of {name} at {location}"))?;
        let metadata: TableMetadata = serde_json::from_slice(&bytes).map_err(|e| {
            LakeError::Invalid(format!(
                "metadata of {name} at {location} is not valid: {e}"
            ))
        })?;
        LakeTable::new(name.clone(), Arc::new(metadata), Some(location.to_string()))
    }

    /// A table that does not exist yet: it becomes visible when a [`Commit`] that contains
    /// it succeeds. `properties` become Iceberg table properties.
    pub fn new_table(
        &self,
        name: &TableName,
        schema: &TableSchema,
        properties: HashMap<String, String>,
    ) -> Result<LakeTable> {
        let iceberg_schema = schema.to_iceberg()?;
        let metadata = TableMetadataBuilder::new(
            iceberg_schema,
            UnboundPartitionSpec::builder().build(),
            SortOrder::unsorted_order(),
            self.table_location(name),
            FormatVersion::V2,
            properties,
        )
        .and_then(|b| b.build())
        .ctx(|| format!("creating metadata for {name}"))?
        .metadata;
        LakeTable::new(name.clone(), Arc::new(metadata), None)
    }

    /// A new table (fresh metadata: new uuid, schema, no snapshots) that takes the place
    /// of `existing` when a [`Commit`] containing it succeeds: the catalog pointer moves
    /// from `existing`'s metadata to the new one, or the commit fails with
    /// [`LakeError::Conflict`] if `existing` is no longer current. For contents whose
    /// schema cannot evolve from the old one (a model whose columns changed type); the old
    /// files stay for readers that hold the old metadata until expiration removes them.
    pub fn replacement_table(
        &self,
        existing: &LakeTable,
        schema: &TableSchema,
        properties: HashMap<String, String>,
    ) -> Result<LakeTable> {
        let fresh = self.new_table(existing.name(), schema, properties)?;
        LakeTable::new(
            existing.name().clone(),
            fresh.metadata.clone(),
            existing.metadata_location().map(str::to_string),
        )
    }

    /// Appends model run history (`walden.model_runs`).
    pub fn record_model_runs(&self, runs: &[ModelRun]) -> Result<()> {
        self.store.record_runs(runs)
    }

    /// The newest `limit` model runs, newest first; with `keep_since_ms`, older history is
    /// deleted first.
    pub fn model_runs(&self, limit: usize, keep_since_ms: Option<i64>) -> Result<Vec<ModelRun>> {
        self.store.model_runs(limit, keep_since_ms)
    }

    /// Replication progress of a stream, as last committed.
    pub fn progress(&self, stream: &str) -> Result<Option<Progress>> {
        self.store.progress(stream)
    }

    /// Removes tables (and optionally a stream's progress) from the catalog. Their files
    /// stay on disk; other engines stop seeing the tables at once.
    pub fn forget(&self, tables: &[TableName], stream: Option<&str>) -> Result<()> {
        self.store.forget(tables, stream)
    }
}

/// A table's metadata as of one catalog read (or a table about to be created).
#[derive(Debug, Clone)]
pub struct LakeTable {
    name: TableName,
    metadata: Arc<TableMetadata>,
    /// `None` for a table that is not in the catalog yet.
    metadata_location: Option<String>,
    arrow_schema: ArrowSchemaRef,
}

impl LakeTable {
    pub(crate) fn new(
        name: TableName,
        metadata: Arc<TableMetadata>,
        metadata_location: Option<String>,
    ) -> Result<Self> {
        let arrow_schema = iceberg::arrow::schema_to_arrow_schema(metadata.current_schema())
            .ctx(|| format!("converting the schema of {name} to Arrow"))?;
        Ok(Self {
            name,
            metadata,
            metadata_location,
            arrow_schema: Arc::new(arrow_schema),
        })
    }

    pub fn name(&self) -> &TableName {
        &self.name
    }

    pub fn metadata(&self) -> &TableMetadata {
        &self.metadata
    }

    pub fn metadata_location(&self) -> Option<&str> {
        self.metadata_location.as_deref()
    }

    pub fn location(&self) -> &str {
        self.metadata.location()
    }

    /// The Arrow schema data files must have (Iceberg field ids in the field metadata).
    pub fn arrow_schema(&self) -> &ArrowSchemaRef {
        &self.arrow_schema
    }

    /// This table with its schema evolved to `columns` (see [`EvolvedColumn`]): existing
    /// fields keep their ids, new ones get ids never used before in this table. The schema
    /// becomes visible with the next [`Commit`] of the returned table (which still
    /// conflicts if the catalog moved on since this table was read). Data files written
    /// earlier stay valid: readers match columns by field id. `Err(LakeError::Invalid)`
    /// says why Iceberg cannot express the change (see [`promotion_blocker`]).
    pub fn evolve(&self, columns: &[EvolvedColumn], primary_key: &[String]) -> Result<LakeTable> {
        let current = self.metadata.current_schema();
        let schema = schema::evolve_schema(
            current,
            self.metadata.last_column_id(),
            columns,
            primary_key,
        )
        .map_err(|why| LakeError::Invalid(format!("{}: {why}", self.name)))?;
        if schema.as_struct() == current.as_struct()
            && schema
                .identifier_field_ids()
                .eq(current.identifier_field_ids())
        {
            return Ok(self.clone());
        }
        let metadata = TableMetadataBuilder::new_from_metadata((*self.metadata).clone(), None)
            .add_current_schema(schema)
            .and_then(|b| b.build())
            .ctx(|| format!("evolving the schema of {}", self.name))?
            .metadata;
        LakeTable::new(
            self.name.clone(),
            Arc::new(metadata),
            self.metadata_location.clone(),
        )
    }

    /// The current schema's fields with their Iceberg ids, in order.
    pub fn field_ids(&self) -> Vec<i32> {
        self.metadata
            .current_schema()
            .as_struct()
            .fields()
            .iter()
            .map(|f| f.id)
            .collect()
    }

    /// A snapshot summary property of the current snapshot (e.g. `walden.lsn`).
    pub fn snapshot_property(&self, key: &str) -> Option<&str> {
        self.metadata
            .current_snapshot()
            .and_then(|s| s.summary().additional_properties.get(key))
            .map(String::as_str)
    }
}
