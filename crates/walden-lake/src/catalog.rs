//! The catalog database: the Iceberg SQL-catalog tables (`iceberg_tables`,
//! `iceberg_namespace_properties`, the schema pyiceberg's `SqlCatalog` and the Java
//! `JdbcCatalog` use) plus walden's replication progress, in one SQLite file, so a commit
//! can move several tables' metadata pointers and the progress that covers them in one
//! transaction.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::{LakeError, Result, TableName};

/// Replication progress committed with the data it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The replication stream this belongs to (walden uses the slot name).
    pub stream: String,
    /// The source position everything up to which is in the lake.
    pub lsn: u64,
    /// Milliseconds since the epoch of the commit that wrote this.
    pub committed_at_ms: i64,
    /// Whatever else the stream needs to resume and to check it is talking to the same
    /// source (JSON).
    pub state: serde_json::Value,
}

/// The catalog as of one read: table pointers and the progress that covers them.
#[derive(Debug, Clone, Default)]
pub struct CatalogState {
    /// Every table with the location of its current metadata file, by name.
    pub tables: Vec<(TableName, String)>,
    /// Every stream's progress, by stream name.
    pub progress: Vec<Progress>,
}

/// One pointer swap in a catalog transaction.
#[derive(Debug, Clone)]
pub(crate) struct PointerSwap {
    pub table: TableName,
    /// `None`: the table is created by this transaction.
    pub expected: Option<String>,
    pub new_location: String,
}

#[derive(Clone)]
pub(crate) struct CatalogStore {
    path: PathBuf,
    catalog_name: String,
    conn: Arc<Mutex<Connection>>,
}

impl CatalogStore {
    pub fn open(path: &Path, catalog_name: &str) -> Result<Self> {
        let err = |context: &str| {
            let path = path.to_path_buf();
            let context = context.to_string();
            move |source| LakeError::Catalog {
                path,
                context,
                source,
            }
        };
        let conn = Connection::open(path).map_err(err("opening"))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(err("setting the busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err("switching to WAL mode"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err("setting synchronous=FULL"))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS iceberg_tables (
                 catalog_name VARCHAR(255) NOT NULL,
                 table_namespace VARCHAR(255) NOT NULL,
                 table_name VARCHAR(255) NOT NULL,
                 metadata_location VARCHAR(1000),
                 previous_metadata_location VARCHAR(1000),
                 iceberg_type VARCHAR(5),
                 PRIMARY KEY (catalog_name, table_namespace, table_name));
             CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
                 catalog_name VARCHAR(255) NOT NULL,
                 namespace VARCHAR(255) NOT NULL,
                 property_key VARCHAR(255) NOT NULL,
                 property_value VARCHAR(1000),
                 PRIMARY KEY (catalog_name, namespace, property_key));
             CREATE TABLE IF NOT EXISTS walden_progress (
                 catalog_name VARCHAR(255) NOT NULL,
                 stream VARCHAR(255) NOT NULL,
                 lsn INTEGER NOT NULL,
                 committed_at_ms INTEGER NOT NULL,
                 state TEXT NOT NULL,
                 PRIMARY KEY (catalog_name, stream));",
        )
        .map_err(err("creating the catalog tables"))?;
        Ok(Self {
            path: path.to_path_buf(),
            catalog_name: catalog_name.to_string(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with_conn<T>(
        &self,
        context: &str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|source| LakeError::Catalog {
            path: self.path.clone(),
            context: context.to_string(),
            source,
        })
    }

    pub fn metadata_location(&self, table: &TableName) -> Result<Option<String>> {
        self.with_conn("reading a table pointer", |c| {
            c.query_row(
                "SELECT metadata_location FROM iceberg_tables
                 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3",
                params![self.catalog_name, table.namespace, table.name],
                |row| row.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
        })
    }

    pub fn progress(&self, stream: &str) -> Result<Option<Progress>> {
        self.with_conn("reading replication progress", |c| {
            c.query_row(
                "SELECT lsn, committed_at_ms, state FROM walden_progress
                 WHERE catalog_name = ?1 AND stream = ?2",
                params![self.catalog_name, stream],
                |row| {
                    let state: String = row.get(2)?;
                    Ok(Progress {
                        stream: stream.to_string(),
                        lsn: row.get::<_, i64>(0)? as u64,
                        committed_at_ms: row.get(1)?,
                        state: serde_json::from_str(&state).unwrap_or(serde_json::Value::Null),
                    })
                },
            )
            .optional()
        })
    }

    /// Every table pointer and every stream's progress, read in one transaction: the
    /// progress covers exactly the table versions listed.
    pub fn state(&self) -> Result<CatalogState> {
        self.with_conn("reading the catalog", |c| {
            let tx = c.transaction()?;
            let tables = {
                let mut stmt = tx.prepare_cached(
                    "SELECT table_namespace, table_name, metadata_location FROM iceberg_tables
                     WHERE catalog_name = ?1 AND metadata_location IS NOT NULL
                       AND (iceberg_type IS NULL OR iceberg_type = 'TABLE')
                     ORDER BY table_namespace, table_name",
                )?;
                let rows = stmt.query_map(params![self.catalog_name], |row| {
                    Ok((
                        TableName::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?),
                        row.get::<_, String>(2)?,
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            let progress = {
                let mut stmt = tx.prepare_cached(
                    "SELECT stream, lsn, committed_at_ms, state FROM walden_progress
                     WHERE catalog_name = ?1 ORDER BY stream",
                )?;
                let rows = stmt.query_map(params![self.catalog_name], |row| {
                    let state: String = row.get(3)?;
                    Ok(Progress {
                        stream: row.get(0)?,
                        lsn: row.get::<_, i64>(1)? as u64,
                        committed_at_ms: row.get(2)?,
                        state: serde_json::from_str(&state).unwrap_or(serde_json::Value::Null),
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            tx.finish()?;
            Ok(CatalogState { tables, progress })
        })
    }

    /// Swaps every pointer and writes the progress in one transaction. Any pointer that
    /// moved since it was read aborts the whole transaction with [`LakeError::Conflict`].
    pub fn commit(&self, swaps: &[PointerSwap], progress: Option<&Progress>) -> Result<()> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let catalog_err = |context: &str, source| LakeError::Catalog {
            path: self.path.clone(),
            context: context.to_string(),
            source,
        };
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| catalog_err("starting a commit", e))?;
        for swap in swaps {
            let TableName { namespace, name } = &swap.table;
            tx.execute(
                "INSERT OR IGNORE INTO iceberg_namespace_properties
                 (catalog_name, namespace, property_key, property_value)
                 VALUES (?1, ?2, 'exists', 'true')",
                params![self.catalog_name, namespace],
            )
            .map_err(|e| catalog_err("registering a namespace", e))?;
            let changed = match &swap.expected {
                Some(expected) => tx.execute(
                    "UPDATE iceberg_tables
                     SET metadata_location = ?1, previous_metadata_location = ?2
                     WHERE catalog_name = ?3 AND table_namespace = ?4 AND table_name = ?5
                       AND metadata_location = ?2",
                    params![
                        swap.new_location,
                        expected,
                        self.catalog_name,
                        namespace,
                        name
                    ],
                ),
                None => tx.execute(
                    "INSERT OR IGNORE INTO iceberg_tables
                     (catalog_name, table_namespace, table_name, metadata_location,
                      previous_metadata_location, iceberg_type)
                     VALUES (?1, ?2, ?3, ?4, NULL, 'TABLE')",
                    params![self.catalog_name, namespace, name, swap.new_location],
                ),
            }
            .map_err(|e| catalog_err("swapping a table pointer", e))?;
            if changed != 1 {
                return Err(LakeError::Conflict {
                    table: swap.table.to_string(),
                });
            }
        }
        if let Some(p) = progress {
            tx.execute(
                "INSERT INTO walden_progress (catalog_name, stream, lsn, committed_at_ms, state)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (catalog_name, stream) DO UPDATE
                 SET lsn = excluded.lsn, committed_at_ms = excluded.committed_at_ms,
                     state = excluded.state",
                params![
                    self.catalog_name,
                    p.stream,
                    p.lsn as i64,
                    p.committed_at_ms,
                    p.state.to_string()
                ],
            )
            .map_err(|e| catalog_err("writing replication progress", e))?;
        }
        tx.commit()
            .map_err(|e| catalog_err("committing the transaction", e))
    }

    /// Removes tables and a progress row in one transaction (teardown of a stream).
    pub fn forget(&self, tables: &[TableName], stream: Option<&str>) -> Result<()> {
        self.with_conn("removing tables from the catalog", |c| {
            let tx = c.transaction()?;
            for t in tables {
                tx.execute(
                    "DELETE FROM iceberg_tables
                     WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3",
                    params![self.catalog_name, t.namespace, t.name],
                )?;
            }
            if let Some(stream) = stream {
                tx.execute(
                    "DELETE FROM walden_progress WHERE catalog_name = ?1 AND stream = ?2",
                    params![self.catalog_name, stream],
                )?;
            }
            tx.commit()
        })
    }
}
