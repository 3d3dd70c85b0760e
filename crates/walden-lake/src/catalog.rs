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
    /// Every view, by name.
    pub views: Vec<ViewDef>,
}

/// A view: a named query the query service plans when the view is read (walden's `view`
/// models). Kept in walden's own catalog table, not as Iceberg view metadata: its SQL is
/// DataFusion's dialect, which other Iceberg readers could not run anyway.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewDef {
    pub name: TableName,
    /// One `SELECT`, every relation fully qualified.
    pub sql: String,
    /// The columns the query had when the view was defined.
    pub columns: Vec<ViewColumn>,
    /// Free-form properties (`comment`, and what built it and as of when).
    pub properties: std::collections::BTreeMap<String, String>,
}

/// One column of a [`ViewDef`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ViewColumn {
    pub name: String,
    /// The Arrow type as `DataType`'s `Display` writes it (and `FromStr` reads it).
    pub data_type: String,
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
}

/// One node of a model run (a model build or a data test), as `walden.model_runs` lists
/// it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRun {
    /// The run this node belonged to (every node of one `walden models build` shares it).
    pub run_id: String,
    /// What started the run: `cli`, `schedule '<name>'`, `replication advanced`, ...
    pub trigger: String,
    /// The model or test name.
    pub node: String,
    /// `model` or `test`.
    pub kind: String,
    /// `success`, `error`, `skipped`, `warn` (a test over its warn threshold) or `fail`.
    pub status: String,
    /// How the model was materialized (`table`, `incremental`, `view`), or the test kind.
    pub detail: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// Rows written (models) or failing rows found (tests).
    pub rows: Option<u64>,
    /// The lake LSN the build read its inputs at.
    pub as_of_lsn: Option<u64>,
    /// The commit time of that lake state.
    pub as_of_ms: Option<i64>,
    /// The error, the skip reason or the test verdict.
    pub message: Option<String>,
}

/// Catalog entries a commit changes besides table pointers: all in the same transaction.
#[derive(Debug, Clone, Default)]
pub struct CatalogChanges {
    /// Views created or replaced.
    pub put_views: Vec<ViewDef>,
    /// Views removed (a model that became a table).
    pub drop_views: Vec<TableName>,
    /// Tables removed from the catalog (a model that became a view); their files stay
    /// until expiration removes them.
    pub drop_tables: Vec<TableName>,
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
             CREATE TABLE IF NOT EXISTS walden_views (
                 catalog_name VARCHAR(255) NOT NULL,
                 namespace VARCHAR(255) NOT NULL,
                 name VARCHAR(255) NOT NULL,
                 sql TEXT NOT NULL,
                 columns TEXT NOT NULL,
                 properties TEXT NOT NULL,
                 PRIMARY KEY (catalog_name, namespace, name));
             CREATE TABLE IF NOT EXISTS walden_model_runs (
                 catalog_name VARCHAR(255) NOT NULL,
                 run_id TEXT NOT NULL,
                 trigger TEXT NOT NULL,
                 node TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 status TEXT NOT NULL,
                 detail TEXT NOT NULL,
                 started_at_ms INTEGER NOT NULL,
                 finished_at_ms INTEGER NOT NULL,
                 rows INTEGER,
                 as_of_lsn INTEGER,
                 as_of_ms INTEGER,
                 message TEXT);
             CREATE INDEX IF NOT EXISTS walden_model_runs_by_time
                 ON walden_model_runs (catalog_name, started_at_ms);
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
            let views = {
                let mut stmt = tx.prepare_cached(
                    "SELECT namespace, name, sql, columns, properties FROM walden_views
                     WHERE catalog_name = ?1 ORDER BY namespace, name",
                )?;
                let rows = stmt.query_map(params![self.catalog_name], |row| {
                    let name = TableName::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?);
                    let bad = |what: &str, e: serde_json::Error| {
                        rusqlite::Error::FromSqlConversionFailure(
                            0,
                            rusqlite::types::Type::Text,
                            format!("the {what} of view {name} are not valid JSON: {e}").into(),
                        )
                    };
                    let columns: String = row.get(3)?;
                    let properties: String = row.get(4)?;
                    Ok(ViewDef {
                        sql: row.get(2)?,
                        columns: serde_json::from_str(&columns).map_err(|e| bad("columns", e))?,
                        properties: serde_json::from_str(&properties)
                            .map_err(|e| bad("properties", e))?,
                        name,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            tx.finish()?;
            Ok(CatalogState {
                tables,
                progress,
                views,
            })
        })
    }

    /// Swaps every pointer and writes the progress in one transaction. Any pointer that
    /// moved since it was read aborts the whole transaction with [`LakeError::Conflict`].
    pub fn commit(
        &self,
        swaps: &[PointerSwap],
        progress: Option<&Progress>,
        changes: &CatalogChanges,
    ) -> Result<()> {
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
        for name in &changes.drop_tables {
            tx.execute(
                "DELETE FROM iceberg_tables
                 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3",
                params![self.catalog_name, name.namespace, name.name],
            )
            .map_err(|e| catalog_err("removing a table", e))?;
        }
        for name in &changes.drop_views {
            tx.execute(
                "DELETE FROM walden_views
                 WHERE catalog_name = ?1 AND namespace = ?2 AND name = ?3",
                params![self.catalog_name, name.namespace, name.name],
            )
            .map_err(|e| catalog_err("removing a view", e))?;
        }
        for view in &changes.put_views {
            let json = |v: serde_json::Result<String>| {
                v.map_err(|e| LakeError::Invalid(format!("view {}: {e}", view.name)))
            };
            tx.execute(
                "INSERT OR IGNORE INTO iceberg_namespace_properties
                 (catalog_name, namespace, property_key, property_value)
                 VALUES (?1, ?2, 'exists', 'true')",
                params![self.catalog_name, view.name.namespace],
            )
            .map_err(|e| catalog_err("registering a namespace", e))?;
            tx.execute(
                "INSERT INTO walden_views (catalog_name, namespace, name, sql, columns, properties)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (catalog_name, namespace, name) DO UPDATE
                 SET sql = excluded.sql, columns = excluded.columns,
                     properties = excluded.properties",
                params![
                    self.catalog_name,
                    view.name.namespace,
                    view.name.name,
                    view.sql,
                    json(serde_json::to_string(&view.columns))?,
                    json(serde_json::to_string(&view.properties))?
                ],
            )
            .map_err(|e| catalog_err("writing a view", e))?;
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

    /// Appends run history rows (one transaction).
    pub fn record_runs(&self, runs: &[ModelRun]) -> Result<()> {
        self.with_conn("recording model runs", |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO walden_model_runs (catalog_name, run_id, trigger, node, kind,
                         status, detail, started_at_ms, finished_at_ms, rows, as_of_lsn,
                         as_of_ms, message)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )?;
                for r in runs {
                    stmt.execute(params![
                        self.catalog_name,
                        r.run_id,
                        r.trigger,
                        r.node,
                        r.kind,
                        r.status,
                        r.detail,
                        r.started_at_ms,
                        r.finished_at_ms,
                        r.rows.map(|v| v as i64),
                        r.as_of_lsn.map(|v| v as i64),
                        r.as_of_ms,
                        r.message
                    ])?;
                }
            }
            tx.commit()
        })
    }

    /// The newest `limit` history rows, newest first; rows older than `keep_since_ms`
    /// are deleted first when given.
    pub fn model_runs(&self, limit: usize, keep_since_ms: Option<i64>) -> Result<Vec<ModelRun>> {
        self.with_conn("reading model runs", |c| {
            if let Some(since) = keep_since_ms {
                c.execute(
                    "DELETE FROM walden_model_runs WHERE catalog_name = ?1 AND started_at_ms < ?2",
                    params![self.catalog_name, since],
                )?;
            }
            let mut stmt = c.prepare_cached(
                "SELECT run_id, trigger, node, kind, status, detail, started_at_ms,
                        finished_at_ms, rows, as_of_lsn, as_of_ms, message
                 FROM walden_model_runs WHERE catalog_name = ?1
                 ORDER BY started_at_ms DESC, rowid DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![self.catalog_name, limit as i64], |row| {
                Ok(ModelRun {
                    run_id: row.get(0)?,
                    trigger: row.get(1)?,
                    node: row.get(2)?,
                    kind: row.get(3)?,
                    status: row.get(4)?,
                    detail: row.get(5)?,
                    started_at_ms: row.get(6)?,
                    finished_at_ms: row.get(7)?,
                    rows: row.get::<_, Option<i64>>(8)?.map(|v| v as u64),
                    as_of_lsn: row.get::<_, Option<i64>>(9)?.map(|v| v as u64),
                    as_of_ms: row.get(10)?,
                    message: row.get(11)?,
                })
            })?;
            rows.collect()
        })
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
