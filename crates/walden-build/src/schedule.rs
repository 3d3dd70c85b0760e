//! The scheduler inside `walden run` / `walden serve`: builds what the project's schedules
//! say when they say it.
//!
//! Contract:
//! - One task; due runs go one after another, so two runs of one model never overlap
//!   (a run that outlasts its period makes the next tick coalesce into one later run).
//! - The project is loaded at start and again whenever a file under its root changes; a
//!   project that does not load is logged with every problem, and the last good one keeps
//!   running (the models it built stay served).
//! - Cron ticks are evaluated in UTC; "replication advanced" triggers compare the lake's
//!   replication LSN with the one the entry last built at.
//! - A run that fails (an error or a failed test) is retried `retries` times, waiting
//!   `retry_backoff_ms`, doubling each time; each attempt is its own run in
//!   `walden.model_runs`. `timeout_ms` bounds each attempt: models not started by then are
//!   skipped.
//! - The task ends when `stop` turns true (between runs, or while waiting).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use tokio::sync::watch;
use walden_models::{LoadOptions, Project, ScheduleSpec, ScheduleState, Schedules, Trigger};

use crate::{BuildOptions, Builder};

/// What the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The project directory (with `walden_project.yml` or `dbt_project.yml`).
    pub root: PathBuf,
    pub load: LoadOptions,
    /// Schedules from the walden config, besides the models' own `schedule` settings.
    pub specs: Vec<ScheduleSpec>,
    /// How often to look at the replication LSN and the project files.
    pub poll: Duration,
}

/// Runs until `stop` is true.
pub async fn run_scheduler(
    builder: Builder,
    config: SchedulerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut loaded: Option<(Project, Schedules, u128)> = None;
    let mut state = ScheduleState::new(Utc::now());
    let mut reported: Option<String> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        // (Re)load when files changed.
        let stamp = newest_mtime(&config.root, &watched(loaded.as_ref().map(|l| &l.0)));
        if loaded.as_ref().is_none_or(|(_, _, s)| *s != stamp) {
            match load(&config) {
                Ok((project, schedules)) => {
                    tracing::info!(
                        root = %config.root.display(),
                        schedules = schedules.entries().len(),
                        "models project loaded for scheduling"
                    );
                    reported = None;
                    loaded = Some((project, schedules, stamp));
                }
                Err(e) => {
                    if reported.as_deref() != Some(e.as_str()) {
                        tracing::error!(
                            "the models project does not load; scheduled builds keep the last \
                             good version: {e}"
                        );
                        reported = Some(e);
                    }
                    if let Some(l) = loaded.as_mut() {
                        // Do not retry the same broken files every poll.
                        l.2 = stamp;
                    }
                }
            }
        }
        let Some((project, schedules, _)) = loaded.as_ref() else {
            if wait(&mut stop, config.poll).await {
                return;
            }
            continue;
        };
        state.replication_lsn = builder
            .lake
            .catalog_state()
            .ok()
            .and_then(|s| s.progress.iter().map(|p| p.lsn).max());
        let now = Utc::now();
        for due in schedules.due(now, &state) {
            state.record(&due);
            let trigger = match &due.trigger {
                Trigger::Cron { .. } => format!("schedule {}", due.schedule),
                Trigger::ReplicationAdvanced { .. } => {
                    format!("schedule {} (replication advanced)", due.schedule)
                }
            };
            let options = BuildOptions {
                select: due.models.clone(),
                exclude: Vec::new(),
                full_refresh: false,
                models: true,
                tests: true,
                trigger: trigger.clone(),
                timeout: due.timeout_ms.map(Duration::from_millis),
            };
            for attempt in 0..=due.retries {
                let outcome = builder.run(project, &options, &|_| {}).await;
                let failed = match &outcome {
                    Ok(report) => {
                        tracing::info!(
                            trigger = %trigger,
                            attempt,
                            models = due.models.len(),
                            failed = report.failed(),
                            seconds = report.duration.as_secs_f64(),
                            "scheduled build finished"
                        );
                        report.failed()
                    }
                    Err(e) => {
                        tracing::error!(trigger = %trigger, attempt, error = %e, "scheduled build failed");
                        true
                    }
                };
                metrics::counter!(
                    "walden_scheduled_builds_total",
                    "outcome" => if failed { "failed" } else { "ok" }
                )
                .increment(1);
                if !failed || attempt == due.retries {
                    break;
                }
                let backoff = Duration::from_millis(
                    due.retry_backoff_ms.saturating_mul(1u64 << attempt.min(16)),
                );
                if wait(&mut stop, backoff).await {
                    return;
                }
            }
            if *stop.borrow() {
                return;
            }
        }
        let next = schedules
            .next_fire(Utc::now(), &state)
            .and_then(|t| (t - Utc::now()).to_std().ok())
            .unwrap_or(config.poll);
        if wait(&mut stop, next.min(config.poll)).await {
            return;
        }
    }
}

fn load(config: &SchedulerConfig) -> Result<(Project, Schedules), String> {
    let project = Project::load(&config.root, &config.load).map_err(|e| e.to_string())?;
    let schedules = Schedules::new(&project, &config.specs).map_err(|e| e.to_string())?;
    Ok((project, schedules))
}

/// Sleeps `d` or until stop; true when stopping.
async fn wait(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
    }
}

/// What to watch under the root: the project files and the top-level folders holding
/// the project's files (`models`, `tests` before the first load).
fn watched(project: Option<&Project>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walden_models::PROJECT_FILES
        .iter()
        .map(PathBuf::from)
        .collect();
    match project {
        None => out.extend([PathBuf::from("models"), PathBuf::from("tests")]),
        Some(p) => {
            let files = p
                .models()
                .flat_map(|m| [Some(m.path.clone()), m.properties_path.clone()])
                .chain(p.tests().map(|t| Some(t.path.clone())))
                .flatten();
            for f in files {
                if let Some(first) = f.components().next() {
                    out.push(PathBuf::from(first.as_os_str()));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The newest modification time (ms since the epoch) of `paths` under `root`, folders
/// walked, hidden entries skipped: a change of any project file changes it.
fn newest_mtime(root: &Path, paths: &[PathBuf]) -> u128 {
    fn walk(dir: &Path, newest: &mut u128, depth: usize) {
        if depth > 16 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if let Ok(modified) = meta.modified() {
                let ms = modified
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                *newest = (*newest).max(ms);
            }
            if meta.is_dir() {
                walk(&entry.path(), newest, depth + 1);
            }
        }
    }
    let mut newest = 0;
    for p in paths {
        let path = root.join(p);
        if let Ok(meta) = std::fs::metadata(&path) {
            if let Ok(modified) = meta.modified() {
                let ms = modified
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                newest = newest.max(ms);
            }
            if meta.is_dir() {
                walk(&path, &mut newest, 0);
            }
        }
    }
    newest
}
