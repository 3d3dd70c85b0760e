//! The project layer of walden's models: dbt-style `models/**/*.sql` files with
//! `ref()`/`source()`/`config()` templates, YAML properties, data tests and a manifest.
//!
//! This crate reads and checks; it does not execute. The builder (another crate) calls:
//!
//! 1. [`Project::load`] — every file parsed, every problem collected ([`ProjectErrors`]);
//! 2. [`Project::select`] — the models to build (dependency order) and the tests to run;
//! 3. [`Project::render_with_ephemerals`] (or [`Project::render`]) per model with a
//!    [`RenderContext`] that resolves relations to lake tables, and
//!    [`Project::compile_test`] per test;
//! 4. [`Project::manifest`] — a dbt-shaped `manifest.json`;
//! 5. [`Project::docs_site`] — a static documentation site (`walden models docs`);
//! 6. [`Schedules::new`] / [`Schedules::due`] — which models to build when (the runner
//!    executes).
//!
//! It depends on no other walden crate, no query engine and no runtime.

#![warn(missing_docs)]

mod config;
mod data_tests;
mod docs;
mod error;
mod graph;
mod manifest;
mod project;
mod props;
mod render;
mod scan;
mod schedule;
mod select;
mod sql;
mod template;

pub use config::{
    IncrementalStrategy, Materialized, ModelConfig, Severity, TestConfig, TestOutcome, Threshold,
};
pub use data_tests::{DataTest, GenericTest, TestKind};
pub use docs::{DocsInfo, DocsReport, ModelDocsInfo, SourceDocsInfo};
pub use error::{Diagnostic, Error, ProjectErrors};
pub use graph::NodeId;
pub use project::{
    Column, Freshness, FreshnessBound, LoadOptions, Model, PROJECT_FILES, Period, Project,
    SourceTable,
};
pub use render::{Relation, RenderContext, ephemeral_cte_name};
pub use schedule::{
    DueRun, EntryState, Schedule, ScheduleOrigin, ScheduleSpec, ScheduleState, Schedules, Trigger,
};
pub use select::Selection;
