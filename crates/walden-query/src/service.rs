//! The query service every front end (pgwire, HTTP, MCP, the CLI) goes through.
//!
//! A query is: parse (one statement, bounded text) → plan against a catalog built for the
//! principal from a fresh [`CatalogSnapshot`] → check the plan ([`crate::guard`]) →
//! execute in a memory pool of its own under a deadline → stream batches through the row
//! and byte caps → audit. [`QueryService::prepare`] does the first three (for a protocol's
//! Parse/Describe); [`QueryService::execute`] does them all, again, against the lake as it
//! is when the query runs, so a statement prepared once and executed for hours keeps
//! seeing new commits.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hasher;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider,
};
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SessionState;
use datafusion::execution::disk_manager::{DiskManager, DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{LogicalPlan, ScalarUDF};
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion_pg_catalog::pg_catalog::context::{PgCatalogContextProvider, Role};
use datafusion_pg_catalog::pg_catalog::{
    self as pgc, PgCatalogSchemaProvider, PgCatalogStaticTables,
};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::StreamExt;
use tokio::sync::Notify;

use crate::audit::{AuditLog, AuditRecord, Outcome};
use crate::catalog::{CatalogSnapshot, LakeCatalog};
use crate::guard::{self, Allowed};
use crate::limits::{GlobalBudget, QueryPool, ResultCap};
use crate::policy::{Principal, Protocol};
use crate::runtime_filter::ApplyRuntimeFilters;
use crate::schema::NamespaceSchema;
use crate::system::SystemSchema;
use crate::{QueryError, Result, SQL_CATALOG, format_lsn};

/// Server-wide settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The replication stream (slot name) whose progress answers are "as of".
    pub stream: Option<String>,
    /// Memory all running queries share.
    pub global_memory_bytes: usize,
    /// Where operators spill (default: the system temp directory).
    pub spill_dir: Option<PathBuf>,
    /// Parallelism of one query (default: CPU count).
    pub target_partitions: usize,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            stream: None,
            global_memory_bytes: 2 << 30,
            spill_dir: None,
            target_partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        }
    }
}

/// What an answer is as of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsOf {
    /// The lake's replication LSN (`None` before the first commit).
    pub lsn: Option<u64>,
    /// When that commit happened (ms since the epoch).
    pub committed_at_ms: Option<i64>,
}

impl AsOf {
    pub fn lsn_text(&self) -> Option<String> {
        self.lsn.map(format_lsn)
    }
}

/// A cancellation handle for a running query (pgwire cancel requests, client gone).
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    inner: Arc<(AtomicBool, Notify)>,
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.inner.0.store(true, Ordering::SeqCst);
        self.inner.1.notify_waiters();
    }
    pub fn is_cancelled(&self) -> bool {
        self.inner.0.load(Ordering::SeqCst)
    }
    /// Clears a cancel that arrived between queries.
    pub fn reset(&self) {
        self.inner.0.store(false, Ordering::SeqCst);
    }
    async fn cancelled(&self) {
        loop {
            let notified = self.inner.1.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// A statement planned for Describe: its result columns and parameter types.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub sql: String,
    pub schema: SchemaRef,
    /// `$1..$n` in order; `None` where the planner could not infer a type.
    pub params: Vec<Option<DataType>>,
}

/// The shared service. Cheap to clone.
#[derive(Clone)]
pub struct QueryService {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: LakeCatalog,
    audit: Option<AuditLog>,
    options: ServiceOptions,
    base: SessionState,
    pg_static: Arc<PgCatalogStaticTables>,
    parser: PostgresCompatibilityParser,
    global: Arc<GlobalBudget>,
    disk: Arc<DiskManager>,
    running: Mutex<HashMap<String, usize>>,
    /// The function allowlist: every name the sessions' registries resolve (the bounded
    /// wrappers replace functions under the same names, so it is the same every query).
    functions: Arc<BTreeSet<String>>,
}

impl std::fmt::Debug for QueryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryService")
            .field("catalog", &self.inner.catalog)
            .finish()
    }
}

impl QueryService {
    pub fn new(
        catalog: LakeCatalog,
        audit: Option<AuditLog>,
        options: ServiceOptions,
    ) -> Result<Self> {
        // `DATAFUSION_*` environment variables tune the engine (e.g.
        // DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS=true); walden's own settings win.
        let config = SessionConfig::from_env()
            .map_err(QueryError::Sql)?
            .with_default_catalog_and_schema(SQL_CATALOG, "public")
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true)
            .with_target_partitions(options.target_partitions.max(1))
            // Joins publish their runtime filters as a lookup into their hash table rather
            // than as an IN list: walden applies them to rows (runtime_filter.rs), where a
            // long IN list under a per-partition CASE cost ten times the lookup.
            .set_usize("datafusion.optimizer.hash_join_inlist_pushdown_max_size", 0)
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL");
        let mut base = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(ApplyRuntimeFilters))
            .build();
        for udf in pg_functions() {
            datafusion::execution::FunctionRegistry::register_udf(&mut base, Arc::new(udf))?;
        }
        let mut functions = BTreeSet::new();
        for (name, f) in base.scalar_functions() {
            functions.insert(name.clone());
            functions.insert(f.name().to_string());
        }
        for (name, f) in base.aggregate_functions() {
            functions.insert(name.clone());
            functions.insert(f.name().to_string());
        }
        for (name, f) in base.window_functions() {
            functions.insert(name.clone());
            functions.insert(f.name().to_string());
        }
        let pg_static = Arc::new(PgCatalogStaticTables::try_new()?);
        let mut disk = DiskManagerBuilder::default();
        if let Some(dir) = &options.spill_dir {
            disk = disk.with_mode(DiskManagerMode::Directories(vec![dir.clone()]));
        }
        let disk = Arc::new(disk.build()?);
        Ok(Self {
            inner: Arc::new(Inner {
                catalog,
                audit,
                global: GlobalBudget::new(options.global_memory_bytes),
                options,
                base,
                pg_static,
                parser: PostgresCompatibilityParser::new(),
                disk,
                running: Mutex::new(HashMap::new()),
                functions: Arc::new(functions),
            }),
        })
    }

    pub fn catalog(&self) -> &LakeCatalog {
        &self.inner.catalog
    }

    pub fn audit_log(&self) -> Option<&AuditLog> {
        self.inner.audit.as_ref()
    }

    /// What the lake is as of right now.
    pub fn as_of(&self) -> Result<AsOf> {
        let snapshot = self.inner.catalog.snapshot()?;
        Ok(self.as_of_snapshot(&snapshot))
    }

    fn as_of_snapshot(&self, snapshot: &CatalogSnapshot) -> AsOf {
        let p = snapshot.progress_of(self.inner.options.stream.as_deref());
        AsOf {
            lsn: p.map(|p| p.lsn),
            committed_at_ms: p.map(|p| p.committed_at_ms),
        }
    }

    /// Records a protocol command the front end answered itself (`SET`, `BEGIN`, ...), or
    /// a refusal that happened before the service saw the query (authentication).
    pub async fn audit_command(
        &self,
        principal: &str,
        protocol: Protocol,
        sql: &str,
        outcome: Outcome,
        message: Option<String>,
    ) {
        if let Some(audit) = &self.inner.audit {
            audit
                .record(AuditRecord {
                    at_ms: chrono::Utc::now().timestamp_millis(),
                    principal: principal.to_string(),
                    protocol: protocol.as_str().to_string(),
                    sql: sql.to_string(),
                    plan_digest: None,
                    rows: 0,
                    bytes: 0,
                    duration_ms: 0.0,
                    outcome,
                    message,
                    lake_lsn: None,
                })
                .await;
        }
    }

    /// Plans `sql` for `principal` without running it: result columns and parameter
    /// types. Refusals are audited.
    pub async fn prepare(
        &self,
        principal: &Arc<Principal>,
        protocol: Protocol,
        sql: &str,
    ) -> Result<Prepared> {
        self.prepare_at(principal, protocol, sql, None).await
    }

    /// [`QueryService::prepare`] against `snapshot` (a fresh one when `None`).
    pub async fn prepare_at(
        &self,
        principal: &Arc<Principal>,
        protocol: Protocol,
        sql: &str,
        snapshot: Option<Arc<CatalogSnapshot>>,
    ) -> Result<Prepared> {
        let started = Instant::now();
        match self.plan(principal, sql, snapshot).await {
            Ok(planned) => {
                let mut params: Vec<(usize, Option<DataType>)> = planned
                    .plan
                    .get_parameter_types()
                    .map_err(QueryError::Sql)?
                    .into_iter()
                    .filter_map(|(k, v)| {
                        k.trim_start_matches('$')
                            .parse::<usize>()
                            .ok()
                            .map(|i| (i, v))
                    })
                    .collect();
                params.sort_by_key(|(i, _)| *i);
                let n = params.last().map(|(i, _)| *i).unwrap_or(0);
                let mut types = vec![None; n];
                for (i, t) in params {
                    types[i - 1] = t;
                }
                cast_parameter_types(&planned.plan, &mut types);
                Ok(Prepared {
                    sql: sql.to_string(),
                    schema: Arc::new(planned.plan.schema().as_arrow().clone()),
                    params: types,
                })
            }
            Err(e) => {
                self.record_failure(principal, protocol, sql, &e, started)
                    .await;
                Err(e)
            }
        }
    }

    /// Runs `sql` for `principal`. The answer streams batches within the principal's
    /// caps; call [`Answer::finish`] at the end (it audits the query).
    pub async fn execute(
        &self,
        principal: &Arc<Principal>,
        protocol: Protocol,
        sql: &str,
        params: Option<ParamValues>,
        cancel: Option<Cancel>,
    ) -> Result<Answer> {
        self.execute_at(principal, protocol, sql, params, cancel, None)
            .await
    }

    /// The lake as of now: every table pointer, view and the replication progress from
    /// one catalog read. Pass it to [`QueryService::execute_at`] to run several queries at
    /// exactly the same lake state (model builds do).
    pub fn snapshot(&self) -> Result<Arc<CatalogSnapshot>> {
        self.inner.catalog.snapshot()
    }

    /// [`QueryService::execute`] against `snapshot` (a fresh one when `None`): the same
    /// guard, limits and audit.
    pub async fn execute_at(
        &self,
        principal: &Arc<Principal>,
        protocol: Protocol,
        sql: &str,
        params: Option<ParamValues>,
        cancel: Option<Cancel>,
        snapshot: Option<Arc<CatalogSnapshot>>,
    ) -> Result<Answer> {
        let started = Instant::now();
        let limits = principal.limits().clone();
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let permit = match self.acquire(principal) {
            Ok(p) => p,
            Err(e) => {
                self.record_failure(principal, protocol, sql, &e, started)
                    .await;
                return Err(e);
            }
        };
        let planned = async {
            let planned = self.plan(principal, sql, snapshot).await?;
            let plan = match params {
                Some(p) => planned.plan.clone().with_param_values(p)?,
                None => planned.plan.clone(),
            };
            let plan =
                crate::initplan::fold(&planned.state, plan, limits.memory_limit_bytes).await?;
            let plan = planned.state.optimize(&plan)?;
            let digest = digest(&plan);
            let physical = planned.state.create_physical_plan(&plan).await?;
            let stream = datafusion::physical_plan::execute_stream(
                physical,
                Arc::new(datafusion::execution::TaskContext::from(
                    planned.state.as_ref(),
                )),
            )?;
            Ok::<_, QueryError>((planned, stream, digest))
        };
        let timed = tokio::time::timeout_at(deadline, planned);
        let result = match &cancel {
            Some(c) => tokio::select! {
                r = timed => r,
                _ = c.cancelled() => Ok(Err(QueryError::Cancelled)),
            },
            None => timed.await,
        };
        let (planned, stream, digest) = match result {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                self.record_failure(principal, protocol, sql, &e, started)
                    .await;
                return Err(e);
            }
            Err(_) => {
                let e = QueryError::Timeout(limits.timeout);
                self.record_failure(principal, protocol, sql, &e, started)
                    .await;
                return Err(e);
            }
        };
        let schema = stream.schema();
        let held = Arc::new(std::sync::Mutex::new(Held {
            stream: Some(stream),
            permit: Some(permit),
            expired: false,
        }));
        let watchdog = {
            let held = held.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline).await;
                // Taken out under the lock, dropped after it: the plan's memory, spill
                // files and the concurrency slot go back even if nobody polls again.
                let (stream, permit) = {
                    let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
                    h.expired = true;
                    (h.stream.take(), h.permit.take())
                };
                drop(stream);
                drop(permit);
            })
            .abort_handle()
        };
        Ok(Answer {
            service: self.clone(),
            principal: principal.clone(),
            protocol,
            sql: sql.to_string(),
            schema,
            held,
            watchdog,
            cap: ResultCap::new(limits.max_rows, limits.max_result_bytes),
            deadline,
            timeout: limits.timeout,
            cancel,
            as_of: self.as_of_snapshot(&planned.snapshot),
            digest: Some(digest),
            started,
            failed: None,
            finished: false,
        })
    }

    /// Parses, plans and checks `sql` against a fresh snapshot.
    async fn plan(
        &self,
        principal: &Arc<Principal>,
        sql: &str,
        snapshot: Option<Arc<CatalogSnapshot>>,
    ) -> Result<Planned> {
        let limits = principal.limits();
        if sql.len() > limits.max_query_bytes {
            return Err(QueryError::Refused(format!(
                "the query text is {} bytes, over the limit of {} bytes (max_query_bytes)",
                sql.len(),
                limits.max_query_bytes
            )));
        }
        let statement = self.parse_one(sql)?;
        let snapshot = match snapshot {
            Some(s) => s,
            None => self.inner.catalog.snapshot()?,
        };
        let (state, allowed) = self.state_for(principal, snapshot.clone())?;
        let plan = state
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await
            .map_err(QueryError::Sql)?;
        guard::check(&plan, &allowed).map_err(QueryError::Refused)?;
        Ok(Planned {
            state,
            plan,
            snapshot,
        })
    }

    fn parse_one(&self, sql: &str) -> Result<datafusion::sql::sqlparser::ast::Statement> {
        guard_expression_depth(sql)?;
        let mut statements = self
            .inner
            .parser
            .parse(sql)
            .map_err(|e| QueryError::Parse(e.to_string()))?;
        match statements.len() {
            1 => Ok(statements.remove(0)),
            0 => Err(QueryError::Parse("the query is empty".into())),
            n => Err(QueryError::Refused(format!(
                "{n} statements in one query; send exactly one statement per query"
            ))),
        }
    }

    fn state_for(
        &self,
        principal: &Arc<Principal>,
        snapshot: Arc<CatalogSnapshot>,
    ) -> Result<(Arc<SessionState>, Allowed)> {
        let lake = self.inner.catalog.lake().clone();
        let catalog = Arc::new(MemoryCatalogProvider::new());
        let views = Arc::new(crate::schema::ViewPlanner::default());
        let mut schemas = BTreeSet::new();
        for (namespace, tables) in snapshot.namespaces() {
            if !principal.sees_namespace(namespace) || namespace == "walden" {
                continue;
            }
            catalog.register_schema(
                namespace,
                Arc::new(NamespaceSchema::new(
                    lake.clone(),
                    snapshot.clone(),
                    namespace.to_string(),
                    tables.iter().map(|t| t.to_string()).collect(),
                    principal.clone(),
                    views.clone(),
                )),
            )?;
            schemas.insert(namespace.to_string());
        }
        if !schemas.contains("public") {
            catalog.register_schema("public", Arc::new(MemorySchemaProvider::new()))?;
            schemas.insert("public".into());
        }
        catalog.register_schema(
            "walden",
            Arc::new(SystemSchema::new(
                lake,
                snapshot.clone(),
                principal.clone(),
                self.inner.audit.clone(),
                self.inner.options.stream.clone(),
            )),
        )?;
        schemas.insert("walden".into());
        let list: Arc<dyn CatalogProviderList> = Arc::new(MemoryCatalogProviderList::new());
        list.register_catalog(SQL_CATALOG.to_string(), catalog.clone());
        let pg = PgCatalogSchemaProvider::try_new(
            list.clone(),
            self.inner.pg_static.clone(),
            Roles(principal.name().to_string()),
        )?;
        let pg = crate::pgcatalog::PgCatalog::new(
            Arc::new(pg),
            self.inner.catalog.lake().clone(),
            snapshot.clone(),
            principal.clone(),
            schemas.iter().filter(|s| *s != "walden").cloned().collect(),
            crate::system::system_schemas(),
        );
        catalog.register_schema("pg_catalog", Arc::new(pg))?;
        schemas.insert("pg_catalog".into());
        schemas.insert("information_schema".into());

        let limits = principal.limits();
        let base_runtime = self.inner.base.runtime_env();
        let runtime = Arc::new(RuntimeEnv {
            memory_pool: Arc::new(QueryPool::new(
                limits.memory_limit_bytes,
                self.inner.global.clone(),
            )),
            disk_manager: self.inner.disk.clone(),
            cache_manager: base_runtime.cache_manager.clone(),
            object_store_registry: base_runtime.object_store_registry.clone(),
        });
        let mut state = SessionStateBuilder::new_from_existing(self.inner.base.clone())
            .with_catalog_list(list)
            .with_runtime_env(runtime)
            .build();
        let bound = limits.memory_limit_bytes.min(1 << 30);
        let functions: Vec<Arc<ScalarUDF>> = state.scalar_functions().values().cloned().collect();
        for udf in crate::functions::bounded(&functions, bound) {
            datafusion::execution::FunctionRegistry::register_udf(&mut state, Arc::new(udf))?;
        }
        let state = Arc::new(state);
        views.set_session(&state);
        Ok((
            state,
            Allowed {
                schemas,
                functions: self.inner.functions.clone(),
                default_schema: "public".into(),
            },
        ))
    }

    fn acquire(&self, principal: &Arc<Principal>) -> Result<Permit> {
        let max = principal.limits().max_concurrent_queries;
        let mut running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        let n = running.entry(principal.name().to_string()).or_default();
        if *n >= max {
            return Err(QueryError::Refused(format!(
                "{} queries of principal {} are running, its limit \
                 (max_concurrent_queries); retry when one finishes",
                n,
                principal.name()
            )));
        }
        *n += 1;
        metrics::gauge!("walden_running_queries").increment(1.0);
        Ok(Permit {
            service: self.inner.clone(),
            principal: principal.name().to_string(),
        })
    }

    async fn record_failure(
        &self,
        principal: &Principal,
        protocol: Protocol,
        sql: &str,
        error: &QueryError,
        started: Instant,
    ) {
        let outcome = if error.is_refusal() {
            Outcome::Refused
        } else {
            Outcome::Error
        };
        if let Some(audit) = &self.inner.audit {
            audit
                .record(AuditRecord {
                    at_ms: chrono::Utc::now().timestamp_millis(),
                    principal: principal.name().to_string(),
                    protocol: protocol.as_str().to_string(),
                    sql: sql.to_string(),
                    plan_digest: None,
                    rows: 0,
                    bytes: 0,
                    duration_ms: started.elapsed().as_secs_f64() * 1e3,
                    outcome,
                    message: Some(error.to_string()),
                    lake_lsn: None,
                })
                .await;
        }
    }
}

/// Rejects left-deep operator chains too deep to plan safely (`1+1+...+1` parses without
/// recursion but becomes a tree as deep as it is long; every later pass recurses on it).
fn guard_expression_depth(sql: &str) -> Result<()> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    const MAX_CHAIN: usize = 1000;
    fn bump(chain: &mut [usize]) -> Result<()> {
        let c = chain.last_mut().expect("never empty");
        *c += 1;
        if *c > MAX_CHAIN {
            return Err(QueryError::Refused(format!(
                "an expression chains more than {MAX_CHAIN} operators (or AND/OR) at one \
                 level, too deep to plan; split it up (IN (...) or a join with VALUES is \
                 usually what is wanted)"
            )));
        }
        Ok(())
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| QueryError::Parse(e.to_string()))?;
    // Operators since the last token that ends an operand chain, per parenthesis level.
    let mut chain = vec![0usize];
    for t in tokens {
        match t {
            Token::LParen | Token::LBracket => chain.push(0),
            Token::RParen | Token::RBracket if chain.len() > 1 => {
                chain.pop();
            }
            Token::Comma | Token::SemiColon => {
                if let Some(c) = chain.last_mut() {
                    *c = 0;
                }
            }
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Caret
            | Token::Ampersand
            | Token::Pipe
            | Token::DoubleColon => bump(&mut chain)?,
            Token::Word(w) if matches!(w.keyword, Keyword::AND | Keyword::OR) => bump(&mut chain)?,
            _ => {}
        }
    }
    Ok(())
}

struct Planned {
    state: Arc<SessionState>,
    plan: LogicalPlan,
    snapshot: Arc<CatalogSnapshot>,
}

fn digest(plan: &LogicalPlan) -> String {
    let mut h = twox_hash::XxHash3_64::with_seed(0);
    h.write(plan.display_indent().to_string().as_bytes());
    format!("{:016x}", h.finish())
}

/// One running query of a principal.
struct Permit {
    service: Arc<Inner>,
    principal: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut running = self
            .service
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.principal) {
            *n = n.saturating_sub(1);
        }
        metrics::gauge!("walden_running_queries").decrement(1.0);
    }
}

/// A running query's answer.
pub struct Answer {
    service: QueryService,
    principal: Arc<Principal>,
    protocol: Protocol,
    sql: String,
    schema: SchemaRef,
    /// The running plan and its concurrency slot, shared with the watchdog that frees
    /// both at the deadline even when the client stops asking for rows (a suspended
    /// portal never executed again, a client that stopped reading).
    held: Arc<std::sync::Mutex<Held>>,
    watchdog: tokio::task::AbortHandle,
    cap: ResultCap,
    deadline: tokio::time::Instant,
    timeout: Duration,
    cancel: Option<Cancel>,
    as_of: AsOf,
    digest: Option<String>,
    started: Instant,
    failed: Option<String>,
    finished: bool,
}

/// What an [`Answer`] holds until it ends or its deadline passes.
struct Held {
    stream: Option<SendableRecordBatchStream>,
    permit: Option<Permit>,
    /// The watchdog fired: the deadline passed while the answer was open.
    expired: bool,
}

/// How an answer ended.
#[derive(Debug, Clone)]
pub struct Summary {
    pub rows: u64,
    pub bytes: u64,
    /// Rows were left out at the principal's caps.
    pub truncated: bool,
    pub max_rows: u64,
    pub max_bytes: u64,
    pub duration: Duration,
    pub as_of: AsOf,
}

impl Answer {
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn as_of(&self) -> &AsOf {
        &self.as_of
    }

    /// The next batch within the caps; `None` at the end (or once a cap is reached).
    pub async fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        let taken = {
            let mut held = self.held();
            match held.stream.take() {
                Some(s) => Ok(s),
                None => Err(held.expired),
            }
        };
        let mut stream = match taken {
            Ok(stream) => stream,
            Err(true) if self.failed.is_none() => {
                let e = QueryError::Timeout(self.timeout);
                self.failed = Some(e.to_string());
                return Some(Err(e));
            }
            Err(_) => return None,
        };
        let next = tokio::time::timeout_at(self.deadline, stream.next());
        let result = match &self.cancel {
            Some(c) => tokio::select! {
                r = next => r,
                _ = c.cancelled() => Ok(Some(Err(DataFusionError::External(Box::new(QueryError::Cancelled))))),
            },
            None => next.await,
        };
        let (item, keep) = match result {
            Err(_) => {
                let e = QueryError::Timeout(self.timeout);
                self.failed = Some(e.to_string());
                (Some(Err(e)), false)
            }
            Ok(None) => (None, false),
            Ok(Some(Err(e))) => {
                let e = QueryError::from_df(e, self.principal.limits().memory_limit_bytes);
                self.failed = Some(e.to_string());
                (Some(Err(e)), false)
            }
            // At a cap: stop reading, which cancels the rest of the query.
            Ok(Some(Ok(batch))) => match self.cap.admit(batch) {
                Some(b) => (Some(Ok(b)), true),
                None => (None, false),
            },
        };
        if keep {
            let mut held = self.held();
            if !held.expired {
                held.stream = Some(stream);
            }
        }
        item
    }

    /// `Err(Timeout)` once the deadline has passed: for front ends that hold rows of
    /// this answer outside it (a batch partly sent by a suspended portal), so those
    /// stop at the deadline too.
    pub fn check_deadline(&mut self) -> Result<()> {
        if tokio::time::Instant::now() < self.deadline {
            return Ok(());
        }
        let e = QueryError::Timeout(self.timeout);
        self.failed.get_or_insert_with(|| e.to_string());
        self.release();
        Err(e)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the plan and the concurrency slot now (not when the watchdog fires).
    fn release(&self) {
        self.watchdog.abort();
        let (stream, permit) = {
            let mut held = self.held();
            (held.stream.take(), held.permit.take())
        };
        drop(stream);
        drop(permit);
    }

    /// Every remaining batch (within the caps).
    pub async fn collect(&mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        while let Some(b) = self.next_batch().await {
            out.push(b?);
        }
        Ok(out)
    }

    /// Ends the query and audits it; returns what was sent.
    pub async fn finish(mut self) -> Summary {
        self.release();
        self.finished = true;
        let summary = self.summary();
        let outcome = match (&self.failed, summary.truncated) {
            (Some(_), _) => Outcome::Error,
            (None, true) => Outcome::Truncated,
            (None, false) => Outcome::Ok,
        };
        let record = self.record(outcome, self.failed.clone());
        if let Some(audit) = &self.service.inner.audit {
            audit.record(record).await;
        }
        metrics::histogram!("walden_query_duration_seconds").record(summary.duration.as_secs_f64());
        summary
    }

    pub fn summary(&self) -> Summary {
        Summary {
            rows: self.cap.rows(),
            bytes: self.cap.bytes(),
            truncated: self.cap.truncated(),
            max_rows: self.cap.max_rows(),
            max_bytes: self.cap.max_bytes(),
            duration: self.started.elapsed(),
            as_of: self.as_of.clone(),
        }
    }

    fn record(&self, outcome: Outcome, message: Option<String>) -> AuditRecord {
        AuditRecord {
            at_ms: chrono::Utc::now().timestamp_millis(),
            principal: self.principal.name().to_string(),
            protocol: self.protocol.as_str().to_string(),
            sql: self.sql.clone(),
            plan_digest: self.digest.clone(),
            rows: self.cap.rows(),
            bytes: self.cap.bytes(),
            duration_ms: self.started.elapsed().as_secs_f64() * 1e3,
            outcome,
            message,
            lake_lsn: self.as_of.lsn,
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.release();
        if self.finished {
            return;
        }
        // Dropped unfinished: the client went away or closed the portal early, or left
        // it open past the deadline (the watchdog already freed the plan then).
        let message = match (&self.failed, self.held().expired) {
            (Some(failed), _) => failed.clone(),
            (None, true) => format!(
                "{}; the client held the answer open without reading it to the end",
                QueryError::Timeout(self.timeout)
            ),
            (None, false) => "the client stopped reading the answer".into(),
        };
        let record = self.record(Outcome::Error, Some(message));
        if let Some(audit) = self.service.inner.audit.clone()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move { audit.record(record).await });
        }
    }
}

/// Parameters DataFusion could not type from their context but that are cast right
/// away (`$1::bigint`, `CAST($1 AS int)`) take the cast's type, as in Postgres; clients
/// that bind by declared type (asyncpg, JDBC) need it.
fn cast_parameter_types(plan: &LogicalPlan, types: &mut [Option<DataType>]) {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Cast, Expr, TryCast};
    if types.iter().all(Option::is_some) {
        return;
    }
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                let (inner, to) = match e {
                    Expr::Cast(Cast { expr, data_type }) => (expr, data_type),
                    Expr::TryCast(TryCast { expr, data_type }) => (expr, data_type),
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                if let Expr::Placeholder(p) = inner.as_ref()
                    && let Some(i) = p.id.trim_start_matches('$').parse::<usize>().ok()
                    && let Some(slot) = i.checked_sub(1).and_then(|i| types.get_mut(i))
                    && slot.is_none()
                {
                    *slot = Some(to.clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
}

/// The principal as the only role `pg_roles` shows.
#[derive(Debug, Clone)]
struct Roles(String);

#[async_trait]
impl PgCatalogContextProvider for Roles {
    async fn roles(&self) -> Vec<String> {
        vec![self.0.clone()]
    }

    async fn role(&self, name: &str) -> Option<Role> {
        (name == self.0).then(|| Role {
            name: self.0.clone(),
            is_superuser: false,
            can_login: true,
            can_create_db: false,
            can_create_role: false,
            can_create_user: false,
            can_replication: false,
            grants: Vec::new(),
            inherited_roles: Vec::new(),
        })
    }
}

/// The Postgres catalog functions clients call (psql, JDBC, BI tools).
fn pg_functions() -> Vec<ScalarUDF> {
    use datafusion_pg_catalog::pg_catalog::{
        format_type, has_privilege_udf, pg_get_expr_udf, quote_ident_udf,
    };
    vec![
        pgc::create_current_database_udf(),
        pgc::create_current_schema_udf(),
        pgc::create_current_schemas_udf(),
        pgc::create_pg_get_userbyid_udf(),
        has_privilege_udf::create_has_privilege_udf("has_table_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_schema_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_database_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_any_column_privilege"),
        pgc::create_pg_table_is_visible(),
        format_type::create_format_type_udf(),
        pgc::create_session_user_udf(),
        pg_get_expr_udf::create_pg_get_expr_udf(),
        pgc::create_pg_get_partkeydef_udf(),
        pgc::create_pg_relation_is_publishable_udf(),
        pgc::create_pg_get_statisticsobjdef_columns_udf(),
        pgc::create_pg_encoding_to_char_udf(),
        pgc::create_pg_backend_pid_udf(),
        pgc::create_pg_relation_size_udf(),
        pgc::create_pg_total_relation_size_udf(),
        pgc::create_pg_stat_get_numscans(),
        pgc::create_pg_get_constraintdef(),
        pgc::create_pg_get_partition_ancestors_udf(),
        quote_ident_udf::create_quote_ident_udf(),
        quote_ident_udf::create_parse_ident_udf(),
    ]
}
