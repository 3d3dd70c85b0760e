//! `walden models build|test|ls|docs`: the models project ([models] path) built into the
//! lake through the query service.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use walden_build::{BuildOptions, Builder, NodeResult, RunReport, Status};
use walden_lake::Lake;
use walden_models::{DocsInfo, LoadOptions, ModelDocsInfo, NodeId, Project};
use walden_query::Principal;

use crate::config::Config;

/// Selection flags shared by the subcommands.
#[derive(Debug, Clone, Default)]
pub struct SelectArgs {
    pub select: Vec<String>,
    pub exclude: Vec<String>,
    /// `--vars '{"key": "value"}'` (JSON or YAML-ish `key: value` pairs as JSON).
    pub vars: Option<String>,
}

/// The project directory for `[models] path`: the directory holding
/// `walden_project.yml` / `dbt_project.yml` — `path` itself or its parent (so both
/// `path = "."` and `path = "models"` work) — else the parent of a bare `models/` folder.
pub fn project_root(path: &Path) -> PathBuf {
    let has_project = |dir: &Path| {
        walden_models::PROJECT_FILES
            .iter()
            .any(|f| dir.join(f).is_file())
    };
    if has_project(path) {
        return path.to_path_buf();
    }
    match path.parent() {
        Some(parent) if has_project(parent) => parent.to_path_buf(),
        Some(parent) if path.file_name().is_some_and(|n| n == "models") => {
            if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent.to_path_buf()
            }
        }
        _ => path.to_path_buf(),
    }
}

/// Loads the project, every problem listed with file, line and column.
pub fn load_project(config: &Config, vars: Option<&str>) -> Result<Project> {
    let root = project_root(&config.models.path);
    let mut options = LoadOptions::default();
    for (k, v) in &config.models.vars {
        options.vars.insert(k.clone(), v.clone());
    }
    if let Some(vars) = vars {
        let parsed: serde_json::Value = serde_json::from_str(vars)
            .with_context(|| format!("--vars is not a JSON object: {vars}"))?;
        let serde_json::Value::Object(map) = parsed else {
            return Err(anyhow!(
                "--vars must be a JSON object, e.g. '{{\"start\": \"2024-01-01\"}}'"
            ));
        };
        options.vars.extend(map);
    }
    let project = Project::load(&root, &options).map_err(|e| {
        anyhow!(
            "the models project in {} has {} problem(s):\n{e}",
            root.display(),
            e.diagnostics.len()
        )
    })?;
    for w in &project.warnings {
        eprintln!("warning: {w}");
    }
    Ok(project)
}

/// A builder over the configured lake: the query service (with the audit log) and the
/// operator as build principal.
pub fn builder(config: &Config) -> Result<Builder> {
    let lake = crate::open_existing_lake(config)?;
    let service = crate::serve::query_service(config, lake.clone())?;
    Ok(
        Builder::new(service, lake, Arc::new(Principal::operator())).with_retention(
            std::time::Duration::from_millis(config.lake.snapshot_retention_ms),
        ),
    )
}

/// `walden models build` (models and tests) or `walden models test` (tests only).
pub async fn run_build(
    config: &Config,
    args: &SelectArgs,
    full_refresh: bool,
    models: bool,
) -> Result<ExitCode> {
    let project = load_project(config, args.vars.as_deref())?;
    let builder = builder(config)?;
    let options = BuildOptions {
        select: args.select.clone(),
        exclude: args.exclude.clone(),
        full_refresh,
        models,
        tests: true,
        trigger: "cli".into(),
        timeout: None,
    };
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let print = |r: &NodeResult| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        println!("{}", node_line(n, &project, r));
    };
    let report = builder.run(&project, &options, &print).await?;
    print_summary(&report);
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn node_line(n: usize, project: &Project, r: &NodeResult) -> String {
    let what = match &r.node {
        NodeId::Model(m) => match project.model(m) {
            Ok(model) => format!("{} {}.{}", r.detail, model.namespace, model.identifier()),
            Err(_) => m.clone(),
        },
        NodeId::Test(t) => format!("test {t}"),
        NodeId::Source(s, t) => format!("source {s}.{t}"),
    };
    let status = match r.status {
        Status::Success => "OK",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
        Status::Error => "ERROR",
        Status::Skipped => "SKIP",
    };
    let rows = match (&r.node, r.rows) {
        (NodeId::Test(_), Some(n)) if n > 0 => format!(", {n} failing rows"),
        (NodeId::Model(_), Some(n)) => format!(", {n} rows"),
        _ => String::new(),
    };
    let mut line = format!(
        "{n:>3} {status:<5} {what} [{:.2}s{rows}]",
        r.duration.as_secs_f64()
    );
    if let Some(m) = &r.message
        && r.status != Status::Success
    {
        line.push_str(&format!("\n      {m}"));
    }
    line
}

fn print_summary(report: &RunReport) {
    let lsn = report
        .as_of
        .0
        .map(walden_query::format_lsn)
        .unwrap_or_else(|| "-".into());
    println!(
        "\nDone in {:.1}s as of lake LSN {lsn}: {} ok, {} warn, {} failed tests, {} errors, {} skipped.",
        report.duration.as_secs_f64(),
        report.count(Status::Success),
        report.count(Status::Warn),
        report.count(Status::Fail),
        report.count(Status::Error),
        report.count(Status::Skipped),
    );
}

/// `walden models ls`: the selection in build order.
pub fn run_ls(config: &Config, args: &SelectArgs, json: bool) -> Result<()> {
    let project = load_project(config, args.vars.as_deref())?;
    let select: Vec<&str> = args.select.iter().map(String::as_str).collect();
    let exclude: Vec<&str> = args.exclude.iter().map(String::as_str).collect();
    let selection = project.select(&select, &exclude)?;
    if json {
        let models: Vec<serde_json::Value> = selection
            .models
            .iter()
            .filter_map(|m| project.model(m).ok())
            .map(|m| {
                serde_json::json!({
                    "name": m.name,
                    "relation": format!("{}.{}", m.namespace, m.identifier()),
                    "materialized": m.config.materialized.as_str(),
                    "tags": m.config.tags,
                    "path": m.path,
                    "depends_on": m.depends_on().iter().map(|d| d.unique_id(&project.name)).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "models": models,
                "tests": selection.tests,
            }))?
        );
        return Ok(());
    }
    for name in &selection.models {
        let m = project.model(name)?;
        println!(
            "{:<12} {}.{}  ({})",
            m.config.materialized.as_str(),
            m.namespace,
            m.identifier(),
            m.path.display()
        );
    }
    for t in &selection.tests {
        println!("{:<12} {t}", "test");
    }
    Ok(())
}

/// `walden models docs`: the static site, manifest.json and catalog.json, with what the
/// lake knows of each model (columns, as-of, last run).
pub async fn run_docs(config: &Config, out: &Path, vars: Option<&str>) -> Result<()> {
    let project = load_project(config, vars)?;
    let lake = crate::open_existing_lake(config)?;
    let info = docs_info(&project, &lake).await?;
    let report = project.docs_site(out, &info)?;
    println!(
        "wrote {} files to {} (open {})",
        report.files.len(),
        out.display(),
        out.join("index.html").display()
    );
    Ok(())
}

async fn docs_info(project: &Project, lake: &Lake) -> Result<DocsInfo> {
    let engine = walden_query::QueryEngine::new(lake.clone());
    let snapshot = engine.service().snapshot()?;
    let runs = lake.model_runs(10_000, None)?;
    let mut info = DocsInfo {
        generated_at: Some(chrono::Utc::now().to_rfc3339()),
        ..Default::default()
    };
    for model in project.models() {
        let name = walden_build::model_table(model);
        let mut m = ModelDocsInfo::default();
        let mut props: BTreeMap<String, String> = BTreeMap::new();
        if let Some(entry) = snapshot.tables.get(&name) {
            let table = entry.table(lake).await?;
            for f in table.arrow_schema().fields() {
                m.columns.push((
                    f.name().clone(),
                    walden_query::system::sql_type_name(f.data_type()),
                ));
            }
            if let Some(s) = table.metadata().current_snapshot() {
                props.extend(s.summary().additional_properties.clone());
            }
        } else if let Some(view) = snapshot.views.get(&name) {
            for c in &view.columns {
                let ty = c
                    .data_type
                    .parse::<arrow::datatypes::DataType>()
                    .map(|t| walden_query::system::sql_type_name(&t))
                    .unwrap_or_else(|_| c.data_type.clone());
                m.columns.push((c.name.clone(), ty));
            }
            props.extend(view.properties.clone());
        }
        m.as_of_lsn = props.get(walden_build::AS_OF_LSN).cloned();
        m.as_of_time = props
            .get(walden_build::AS_OF_MS)
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339());
        m.built_at = props
            .get(walden_build::BUILT_AT_MS)
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339());
        if let Some(run) = runs
            .iter()
            .find(|r| r.kind == "model" && r.node == model.name)
        {
            m.status = Some(run.status.clone());
            m.rows = run.rows;
            m.duration_ms = Some((run.finished_at_ms - run.started_at_ms).max(0) as u64);
        }
        info.models.insert(model.name.clone(), m);
    }
    Ok(info)
}

/// Starts the scheduler (inside `walden run` / `walden serve`) when there is a models
/// project and `[models] scheduler` is on; it stops with `stop`.
pub fn start_scheduler(
    config: &Config,
    lake: Lake,
    service: walden_query::QueryService,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !config.models.scheduler {
        return None;
    }
    let root = project_root(&config.models.path);
    let has_project = walden_models::PROJECT_FILES
        .iter()
        .any(|f| root.join(f).is_file())
        || root.join("models").is_dir();
    if !has_project {
        return None;
    }
    let mut load = LoadOptions::default();
    load.vars.extend(config.models.vars.clone());
    let builder = Builder::new(service, lake, Arc::new(Principal::operator())).with_retention(
        std::time::Duration::from_millis(config.lake.snapshot_retention_ms),
    );
    let scheduler = walden_build::schedule::SchedulerConfig {
        root,
        load,
        specs: config.models.schedules.clone(),
        poll: std::time::Duration::from_millis(config.models.scheduler_poll_ms.max(100)),
    };
    Some(tokio::spawn(walden_build::schedule::run_scheduler(
        builder, scheduler, stop,
    )))
}
