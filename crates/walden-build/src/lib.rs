//! Builds a models project ([`walden_models::Project`]) into the lake.
//!
//! One [`Builder::run`] is one run:
//! - It reads the lake once (a [`CatalogSnapshot`]): every model of the run reads the
//!   replicated tables as of that one state, whose LSN and commit time become each
//!   model's "as of". A model built earlier in the run is read at its new version (the
//!   snapshot is advanced with it), everything else stays put.
//! - Models go in dependency order. Each is one atomic catalog commit: a `view` is a view
//!   entry, a `table` a new table version holding exactly the new rows (or a replacement
//!   table when its columns changed), an `incremental` model appends rows or merges them
//!   on its `unique_key` (position deletes of the rows with the same key plus the new
//!   rows, in one commit); `ephemeral` models are inlined by the project layer. A failed
//!   build commits nothing: readers keep the previous version.
//! - After a model, its data tests run against what was just committed; a test failing
//!   with severity `error` fails the model. Every model downstream of a failure is
//!   skipped (and says which upstream failed).
//! - Every model and test becomes a row of `walden.model_runs`.
//!
//! All SQL goes through the query service as the build principal, so a model that tries to
//! write, read files or reach outside the catalog is refused like any query, and every
//! statement is audited (protocol `models`).

mod materialize;
pub mod schedule;
mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use walden_lake::{Lake, ModelRun, TableName};
use walden_models::{
    Materialized, Model, NodeId, Project, Relation, RenderContext, Selection, TestOutcome,
};
use walden_query::catalog::CatalogSnapshot;
use walden_query::{Principal, Protocol, QueryError, QueryService, format_lsn};

/// Why a build step failed. Each message names the model or test and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The project's selection or a render failed (names file, line and column).
    #[error(transparent)]
    Project(#[from] walden_models::Error),
    /// A model's query or write failed.
    #[error("model {model} ({path}): {message}")]
    Model {
        model: String,
        path: String,
        message: String,
    },
    /// A data test could not run.
    #[error("test {test} ({path}): {message}")]
    Test {
        test: String,
        path: String,
        message: String,
    },
    /// Reading or committing the lake failed.
    #[error(transparent)]
    Lake(#[from] walden_lake::LakeError),
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl BuildError {
    pub(crate) fn model(model: &Model, message: impl Into<String>) -> Self {
        BuildError::Model {
            model: model.name.clone(),
            path: model.path.display().to_string(),
            message: message.into(),
        }
    }
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// dbt selection syntax (`model`, `+model`, `tag:x`, ...); empty: everything.
    pub select: Vec<String>,
    pub exclude: Vec<String>,
    /// Rebuild incremental models from scratch.
    pub full_refresh: bool,
    /// Build models (false: only run tests, `walden models test`).
    pub models: bool,
    /// Run data tests.
    pub tests: bool,
    /// What started the run (recorded in the run history).
    pub trigger: String,
    /// Give up on the whole run after this long (models not started are skipped).
    pub timeout: Option<Duration>,
}

/// How one model or test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Success,
    /// A test over its warn threshold (the run still succeeds).
    Warn,
    /// A test over its error threshold.
    Fail,
    Error,
    Skipped,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Error => "error",
            Status::Skipped => "skipped",
        }
    }
}

/// One model or test of a run.
#[derive(Debug, Clone)]
pub struct NodeResult {
    pub node: NodeId,
    pub status: Status,
    /// Materialization of a model, kind of a test.
    pub detail: String,
    /// Rows written (models) or failing rows (tests).
    pub rows: Option<u64>,
    pub duration: Duration,
    pub message: Option<String>,
}

impl NodeResult {
    pub fn name(&self) -> &str {
        match &self.node {
            NodeId::Model(m) | NodeId::Test(m) => m,
            NodeId::Source(_, t) => t,
        }
    }
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    /// The lake state every model read (LSN, commit time in ms).
    pub as_of: (Option<u64>, Option<i64>),
    pub results: Vec<NodeResult>,
    pub duration: Duration,
}

impl RunReport {
    /// Any model or test errored or failed. Warnings do not count, nor do source
    /// freshness results: a stale source is reported (and recorded in
    /// `walden.model_runs`) but the models built from it are as fresh as it allows.
    pub fn failed(&self) -> bool {
        self.results.iter().any(|r| {
            matches!(r.status, Status::Error | Status::Fail)
                && !matches!(r.node, NodeId::Source(..))
        })
    }

    pub fn count(&self, status: Status) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }
}

/// Runs builds against one lake through one query service.
#[derive(Clone)]
pub struct Builder {
    service: QueryService,
    lake: Lake,
    principal: Arc<Principal>,
    /// Snapshots of model tables older than this are expired after each build (their
    /// files deleted once nothing references them), so scheduled rebuilds do not grow the
    /// lake without bound.
    retention: Duration,
}

/// Properties recorded on every model table snapshot and view.
pub const AS_OF_LSN: &str = "walden.as_of_lsn";
pub const AS_OF_MS: &str = "walden.as_of_ms";
pub const BUILT_AT_MS: &str = "walden.built_at_ms";

impl Builder {
    /// `principal` runs every statement (its limits bound each query; the operator's are
    /// generous).
    pub fn new(service: QueryService, lake: Lake, principal: Arc<Principal>) -> Self {
        Self {
            service,
            lake,
            principal,
            retention: Duration::from_secs(15 * 60),
        }
    }

    /// How long replaced versions of model tables stay readable (time travel, readers
    /// that started before a build); default 15 minutes, like `[lake]
    /// snapshot_retention_ms`.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Runs the selection: models in dependency order with their tests, then the tests
    /// that span several models. `on_node` sees each result as it happens (progress).
    pub async fn run(
        &self,
        project: &Project,
        options: &BuildOptions,
        on_node: &(dyn Fn(&NodeResult) + Sync),
    ) -> Result<RunReport, BuildError> {
        let started = Instant::now();
        let run_id = uuid::Uuid::new_v4().to_string();
        let select: Vec<&str> = options.select.iter().map(String::as_str).collect();
        let exclude: Vec<&str> = options.exclude.iter().map(String::as_str).collect();
        let selection = project.select(&select, &exclude)?;
        let mut snapshot = self.service.snapshot()?;
        let as_of = snapshot
            .progress
            .iter()
            .max_by_key(|p| p.committed_at_ms)
            .map(|p| (Some(p.lsn), Some(p.committed_at_ms)))
            .unwrap_or((None, None));
        let mut run = Run {
            builder: self,
            project,
            options,
            run_id: run_id.clone(),
            as_of,
            results: Vec::new(),
            history: Vec::new(),
            failed: BTreeMap::new(),
            on_node,
            deadline: options.timeout.map(|t| started + t),
        };
        run.execute(&selection, &mut snapshot).await?;
        self.lake.record_model_runs(&run.history)?;
        metrics::counter!("walden_model_runs_total").increment(1);
        Ok(RunReport {
            run_id,
            as_of,
            results: run.results,
            duration: started.elapsed(),
        })
    }

    /// How a relation is named in SQL: every model and source fully qualified.
    fn resolve(relation: &Relation) -> String {
        relation.quoted()
    }
}

/// The state of one run.
struct Run<'a> {
    builder: &'a Builder,
    project: &'a Project,
    options: &'a BuildOptions,
    run_id: String,
    as_of: (Option<u64>, Option<i64>),
    results: Vec<NodeResult>,
    history: Vec<ModelRun>,
    /// Failed or skipped models → why (the first failure upstream).
    failed: BTreeMap<String, String>,
    on_node: &'a (dyn Fn(&NodeResult) + Sync),
    deadline: Option<Instant>,
}

impl Run<'_> {
    async fn execute(
        &mut self,
        selection: &Selection,
        snapshot: &mut Arc<CatalogSnapshot>,
    ) -> Result<(), BuildError> {
        let selected_tests: BTreeSet<&str> = selection.tests.iter().map(String::as_str).collect();
        // Tests attached to one model run right after it; the others once all their
        // models are done.
        let mut by_model: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut later = Vec::new();
        for name in &selection.tests {
            let test = self.project.test(name)?;
            let models: Vec<&str> = test
                .depends_on
                .iter()
                .filter_map(|n| match n {
                    NodeId::Model(m) if selection.models.contains(m) => Some(m.as_str()),
                    _ => None,
                })
                .collect();
            match (&test.attached_to, models.as_slice()) {
                (Some(NodeId::Model(m)), [only]) if m == only => {
                    by_model.entry(only).or_default().push(name)
                }
                _ => later.push(name.as_str()),
            }
        }
        if self.options.tests {
            // The selected sources and those the selected models read.
            let mut sources: BTreeSet<(String, String)> =
                selection.sources.iter().cloned().collect();
            for name in &selection.models {
                if let Ok(model) = self.project.model(name) {
                    sources.extend(model.sources.iter().cloned());
                }
            }
            for (source, table) in &sources {
                self.freshness(source, table, snapshot).await;
            }
        }
        if self.options.models {
            for name in &selection.models {
                let model = self.project.model(name)?;
                self.model(model, snapshot).await;
                if self.options.tests {
                    for test in by_model.remove(name.as_str()).unwrap_or_default() {
                        self.test(test, snapshot, Some(name)).await;
                    }
                }
            }
        }
        if self.options.tests {
            let rest: Vec<&str> = if self.options.models {
                later
            } else {
                selected_tests.iter().copied().collect()
            };
            for test in rest {
                self.test(test, snapshot, None).await;
            }
        }
        Ok(())
    }

    /// The first failed or skipped model upstream of `node`.
    fn blocked_by(&self, depends_on: &[NodeId]) -> Option<String> {
        let mut stack: Vec<NodeId> = depends_on.to_vec();
        let mut seen = BTreeSet::new();
        while let Some(node) = stack.pop() {
            if let NodeId::Model(m) = &node {
                if !seen.insert(m.clone()) {
                    continue;
                }
                if self.failed.contains_key(m) {
                    return Some(m.clone());
                }
                if let Ok(model) = self.project.model(m)
                    && model.is_ephemeral()
                {
                    stack.extend(model.depends_on());
                }
            }
        }
        None
    }

    fn record(&mut self, result: NodeResult, started_at_ms: i64) {
        (self.on_node)(&result);
        let kind = match result.node {
            NodeId::Test(_) => "test",
            NodeId::Source(..) => "source",
            NodeId::Model(_) => "model",
        };
        metrics::counter!("walden_model_nodes_total", "kind" => kind, "status" => result.status.as_str())
            .increment(1);
        self.history.push(ModelRun {
            run_id: self.run_id.clone(),
            trigger: self.options.trigger.clone(),
            node: result.name().to_string(),
            kind: kind.to_string(),
            status: result.status.as_str().to_string(),
            detail: result.detail.clone(),
            started_at_ms,
            finished_at_ms: started_at_ms + result.duration.as_millis() as i64,
            rows: result.rows,
            as_of_lsn: self.as_of.0,
            as_of_ms: self.as_of.1,
            message: result.message.clone(),
        });
        self.results.push(result);
    }

    async fn model(&mut self, model: &Model, snapshot: &mut Arc<CatalogSnapshot>) {
        let started = Instant::now();
        let started_at_ms = chrono::Utc::now().timestamp_millis();
        let detail = model.config.materialized.as_str().to_string();
        let node = NodeId::Model(model.name.clone());
        let skip = |why: String| NodeResult {
            node: node.clone(),
            status: Status::Skipped,
            detail: detail.clone(),
            rows: None,
            duration: Duration::ZERO,
            message: Some(why),
        };
        if let Some(upstream) = self.blocked_by(&model.depends_on()) {
            let why = format!("skipped: upstream model {upstream} did not build");
            self.failed.insert(model.name.clone(), why.clone());
            self.record(skip(why), started_at_ms);
            return;
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            let why = "skipped: the run's timeout passed before it started".to_string();
            self.failed.insert(model.name.clone(), why.clone());
            self.record(skip(why), started_at_ms);
            return;
        }
        let outcome = materialize::build(
            self.builder,
            self.project,
            model,
            snapshot,
            self.as_of,
            self.options.full_refresh,
        )
        .await;
        let result = match outcome {
            Ok((next, rows)) => {
                *snapshot = next;
                tracing::info!(model = %model.name, rows = ?rows, "model built");
                NodeResult {
                    node,
                    status: Status::Success,
                    detail,
                    rows,
                    duration: started.elapsed(),
                    message: None,
                }
            }
            Err(e) => {
                tracing::warn!(model = %model.name, error = %e, "model failed");
                self.failed.insert(model.name.clone(), e.to_string());
                NodeResult {
                    node,
                    status: Status::Error,
                    detail,
                    rows: None,
                    duration: started.elapsed(),
                    message: Some(e.to_string()),
                }
            }
        };
        self.record(result, started_at_ms);
    }

    /// A source table's freshness: the age of its newest `loaded_at_field` value, or
    /// without one the age of the lake state the run reads (how far replication is
    /// behind), against `warn_after` / `error_after`. Models are not blocked by it.
    async fn freshness(&mut self, source: &str, table: &str, snapshot: &Arc<CatalogSnapshot>) {
        let Some(t) = self.project.source(source, table) else {
            return;
        };
        let Some(freshness) = t.freshness.clone() else {
            return;
        };
        if freshness.warn_after.is_none() && freshness.error_after.is_none() {
            return;
        }
        let started = Instant::now();
        let started_at_ms = chrono::Utc::now().timestamp_millis();
        let now_s = started_at_ms / 1000;
        let relation = walden_models::Relation::Source {
            source: source.to_string(),
            table: table.to_string(),
            namespace: t.namespace.clone(),
            identifier: t.identifier.clone(),
        };
        let age: Result<Option<i64>, String> = match &t.loaded_at_field {
            Some(field) => {
                let filter = freshness
                    .filter
                    .as_ref()
                    .map(|f| format!(" WHERE {f}"))
                    .unwrap_or_default();
                let sql = format!(
                    "SELECT CAST(to_unixtime(max({field})) AS BIGINT) AS newest FROM {}{filter}",
                    relation.quoted()
                );
                materialize::scalar_opt_i64(self.builder, &sql, snapshot)
                    .await
                    .map(|v| v.map(|newest| now_s - newest))
                    .map_err(|e| e.to_string())
            }
            None => Ok(self.as_of.1.map(|ms| now_s - ms / 1000)),
        };
        let bound = |b: &Option<walden_models::FreshnessBound>| b.map(|b| b.seconds() as i64);
        let basis = match &t.loaded_at_field {
            Some(f) => format!("newest {f}"),
            None => "the lake's last replication commit".to_string(),
        };
        let (status, message) = match age {
            Err(e) => (
                Status::Error,
                Some(format!("freshness of {source}.{table}: {e}")),
            ),
            Ok(None) => (
                Status::Warn,
                Some(format!(
                    "{source}.{table} has no rows to judge freshness by ({basis})"
                )),
            ),
            Ok(Some(age)) => {
                let said = format!("{basis} is {} old", span(age));
                match (bound(&freshness.error_after), bound(&freshness.warn_after)) {
                    (Some(e), _) if age > e => (
                        Status::Error,
                        Some(format!("{said}, over error_after ({})", span(e))),
                    ),
                    (_, Some(w)) if age > w => (
                        Status::Warn,
                        Some(format!("{said}, over warn_after ({})", span(w))),
                    ),
                    _ => (Status::Success, Some(said)),
                }
            }
        };
        self.record(
            NodeResult {
                node: NodeId::Source(source.to_string(), table.to_string()),
                status,
                detail: "freshness".into(),
                rows: None,
                duration: started.elapsed(),
                message,
            },
            started_at_ms,
        );
    }

    async fn test(&mut self, name: &str, snapshot: &Arc<CatalogSnapshot>, model: Option<&str>) {
        let started = Instant::now();
        let started_at_ms = chrono::Utc::now().timestamp_millis();
        let node = NodeId::Test(name.to_string());
        let Ok(test) = self.project.test(name) else {
            return;
        };
        let detail = test.kind_name().to_string();
        if let Some(upstream) = self.blocked_by(&test.depends_on) {
            self.record(
                NodeResult {
                    node,
                    status: Status::Skipped,
                    detail,
                    rows: None,
                    duration: Duration::ZERO,
                    message: Some(format!("skipped: model {upstream} did not build")),
                },
                started_at_ms,
            );
            return;
        }
        let compiled = {
            let ctx = RenderContext {
                is_incremental: false,
                resolve: &Builder::resolve,
            };
            self.project.compile_test(name, &ctx)
        };
        let counted = async {
            let sql = compiled?;
            let count = format!("SELECT count(*) AS failures FROM ({sql}) AS walden_test");
            let rows = materialize::scalar_u64(self.builder, &count, snapshot)
                .await
                .map_err(|e| BuildError::Test {
                    test: name.to_string(),
                    path: format!("{}:{}", test.path.display(), test.line),
                    message: e.to_string(),
                })?;
            Ok::<u64, BuildError>(rows)
        }
        .await;
        let (status, rows, message) = match counted {
            Ok(failures) => match test.config.outcome(failures) {
                TestOutcome::Pass => (Status::Success, Some(failures), None),
                TestOutcome::Warn => (
                    Status::Warn,
                    Some(failures),
                    Some(format!("{failures} failing rows (severity warn)")),
                ),
                TestOutcome::Fail => (
                    Status::Fail,
                    Some(failures),
                    Some(format!(
                        "{failures} failing rows ({}:{})",
                        test.path.display(),
                        test.line
                    )),
                ),
            },
            Err(e) => (Status::Error, None, Some(e.to_string())),
        };
        if matches!(status, Status::Fail | Status::Error)
            && let Some(model) = model
        {
            // dbt's `build`: a model whose test fails blocks its dependents.
            self.failed
                .entry(model.to_string())
                .or_insert_with(|| format!("test {name} failed"));
        }
        self.record(
            NodeResult {
                node,
                status,
                detail,
                rows,
                duration: started.elapsed(),
                message,
            },
            started_at_ms,
        );
    }
}

/// A duration in seconds as people say it: `42 s`, `17 min`, `5 h`, `691 days`.
fn span(seconds: i64) -> String {
    match seconds.abs() {
        s if s < 120 => format!("{seconds} s"),
        s if s < 7200 => format!("{} min", seconds / 60),
        s if s < 172_800 => format!("{} h", seconds / 3600),
        _ => format!("{} days", seconds / 86_400),
    }
}

/// The table name a model is stored under.
pub fn model_table(model: &Model) -> TableName {
    TableName::new(&model.namespace, model.identifier())
}

/// The "as of" properties of a build.
pub(crate) fn as_of_properties(as_of: (Option<u64>, Option<i64>)) -> Vec<(String, String)> {
    let mut props = vec![(
        BUILT_AT_MS.to_string(),
        chrono::Utc::now().timestamp_millis().to_string(),
    )];
    if let Some(lsn) = as_of.0 {
        props.push((AS_OF_LSN.to_string(), format_lsn(lsn)));
    }
    if let Some(ms) = as_of.1 {
        props.push((AS_OF_MS.to_string(), ms.to_string()));
    }
    props
}

/// Whether a model is materialized as a table in the lake (table or incremental).
pub fn is_table(model: &Model) -> bool {
    matches!(
        model.config.materialized,
        Materialized::Table | Materialized::Incremental
    )
}

pub(crate) fn protocol() -> Protocol {
    Protocol::Models
}
