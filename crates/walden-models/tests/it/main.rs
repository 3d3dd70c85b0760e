//! Integration tests of walden-models: fixture projects under `tests/fixtures`, broken
//! projects written to temporary folders, and the repository's example project.

mod common;
mod docs;
mod errors;
mod example;
mod loading;
mod manifest;
mod rendering;
mod schedule;
mod selection;
mod tests_sql;
