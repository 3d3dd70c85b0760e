//! The shared, self-refreshing view of the lake that sessions are built from.
//!
//! [`LakeCatalog::snapshot`] reads every table pointer and the replication progress in one
//! catalog transaction (sub-millisecond), so a session sees all tables at one commit and
//! knows the LSN they are as of. Table metadata and planned files are cached by metadata
//! location: a metadata file never changes, so a table that did not move since the last
//! query costs nothing to plan again, and one that moved is planned once for all sessions.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use walden_lake::{Lake, LakeTable, Progress, TableName, ViewDef};

use crate::{LakeTableProvider, Result};

/// One table at one metadata file, loaded and planned on first use.
#[derive(Debug)]
pub struct TableEntry {
    name: TableName,
    location: String,
    table: OnceCell<LakeTable>,
    provider: OnceCell<Arc<LakeTableProvider>>,
}

impl TableEntry {
    pub fn name(&self) -> &TableName {
        &self.name
    }

    /// The table's metadata.
    pub async fn table(&self, lake: &Lake) -> Result<&LakeTable> {
        self.table
            .get_or_try_init(|| async {
                Ok::<_, crate::QueryError>(lake.load_table_at(&self.name, &self.location).await?)
            })
            .await
    }

    /// The table's scan, files planned.
    pub async fn provider(&self, lake: &Lake) -> Result<Arc<LakeTableProvider>> {
        self.provider
            .get_or_try_init(|| async {
                let table = self.table(lake).await?.clone();
                Ok::<_, crate::QueryError>(Arc::new(LakeTableProvider::new(lake, table).await?))
            })
            .await
            .cloned()
    }
}

/// The lake as of one catalog read.
#[derive(Debug, Clone)]
pub struct CatalogSnapshot {
    pub tables: BTreeMap<TableName, Arc<TableEntry>>,
    /// Views (`view` models), planned when a query names them.
    pub views: BTreeMap<TableName, Arc<ViewDef>>,
    pub progress: Vec<Progress>,
    /// When the catalog was read (ms since the epoch).
    pub read_at_ms: i64,
}

impl CatalogSnapshot {
    /// The progress of `stream`, or the only stream's when `None` names none.
    pub fn progress_of(&self, stream: Option<&str>) -> Option<&Progress> {
        match stream {
            Some(s) => self.progress.iter().find(|p| p.stream == s),
            None if self.progress.len() == 1 => self.progress.first(),
            None => None,
        }
    }

    /// This snapshot with `name` at the metadata file `location` (a table a model build
    /// just committed), replacing a view of that name: later builds of the same run read
    /// it while everything else stays as of this snapshot.
    pub fn with_table(&self, name: TableName, location: String) -> Arc<CatalogSnapshot> {
        let mut next = self.clone();
        next.views.remove(&name);
        next.tables.insert(
            name.clone(),
            Arc::new(TableEntry {
                name,
                location,
                table: OnceCell::new(),
                provider: OnceCell::new(),
            }),
        );
        Arc::new(next)
    }

    /// This snapshot with the view `def`, replacing a table of that name.
    pub fn with_view(&self, def: ViewDef) -> Arc<CatalogSnapshot> {
        let mut next = self.clone();
        next.tables.remove(&def.name);
        next.views.insert(def.name.clone(), Arc::new(def));
        Arc::new(next)
    }

    /// Namespace → table and view names.
    pub fn namespaces(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for name in self.tables.keys().chain(self.views.keys()) {
            out.entry(name.namespace.as_str())
                .or_default()
                .push(name.name.as_str());
        }
        out
    }
}

/// The shared view; cheap to clone.
#[derive(Clone)]
pub struct LakeCatalog {
    lake: Lake,
    cache: Arc<Mutex<HashMap<String, Arc<TableEntry>>>>,
}

impl std::fmt::Debug for LakeCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeCatalog")
            .field("warehouse", &self.lake.warehouse())
            .finish()
    }
}

impl LakeCatalog {
    pub fn new(lake: Lake) -> Self {
        Self {
            lake,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The lake now. Entries of tables that moved are dropped from the cache (sessions
    /// that hold them keep them).
    pub fn snapshot(&self) -> Result<Arc<CatalogSnapshot>> {
        let state = self.lake.catalog_state()?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut tables = BTreeMap::new();
        let mut live = HashMap::with_capacity(state.tables.len());
        for (name, location) in state.tables {
            let entry = cache
                .get(&location)
                .filter(|e| e.name == name)
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(TableEntry {
                        name: name.clone(),
                        location: location.clone(),
                        table: OnceCell::new(),
                        provider: OnceCell::new(),
                    })
                });
            live.insert(location, entry.clone());
            tables.insert(name, entry);
        }
        *cache = live;
        Ok(Arc::new(CatalogSnapshot {
            tables,
            views: state
                .views
                .into_iter()
                .map(|v| (v.name.clone(), Arc::new(v)))
                .collect(),
            progress: state.progress,
            read_at_ms: chrono::Utc::now().timestamp_millis(),
        }))
    }
}
