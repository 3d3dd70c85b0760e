//! Model and test configuration: the keys of `config()`, of `config:` in YAML and of the
//! `+key` folder defaults, and how the three levels combine.

use serde::Serialize;
use serde_json::Value as Json;

/// How a model is materialized in the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Materialized {
    /// A view: the query runs at read time.
    #[default]
    View,
    /// A table rebuilt whole on every build.
    Table,
    /// A table built whole once, then extended (or merged into) by each build with the
    /// rows the model selects when `is_incremental()` is true.
    Incremental,
    /// Not built: inlined as a common table expression into the models that use it.
    Ephemeral,
}

impl Materialized {
    /// The name as written in configuration (`view`, `table`, `incremental`, `ephemeral`).
    pub fn as_str(self) -> &'static str {
        match self {
            Materialized::View => "view",
            Materialized::Table => "table",
            Materialized::Incremental => "incremental",
            Materialized::Ephemeral => "ephemeral",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "view" => Ok(Materialized::View),
            "table" => Ok(Materialized::Table),
            "incremental" => Ok(Materialized::Incremental),
            "ephemeral" => Ok(Materialized::Ephemeral),
            other => Err(format!(
                "unknown materialization '{other}'; expected one of view, table, incremental, ephemeral"
            )),
        }
    }
}

/// How an incremental build adds its new rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IncrementalStrategy {
    /// Append the selected rows.
    Append,
    /// Replace the rows whose `unique_key` matches a selected row, insert the others.
    Merge,
}

impl IncrementalStrategy {
    /// The name as written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            IncrementalStrategy::Append => "append",
            IncrementalStrategy::Merge => "merge",
        }
    }
}

/// The resolved configuration of a model: folder defaults, then YAML `config:`, then the
/// model's own `config()` call, each level overriding the one before (tags add up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelConfig {
    /// The materialization (default `view`).
    pub materialized: Materialized,
    /// The columns identifying a row (`unique_key='id'` or `['a', 'b']`); empty if not set.
    pub unique_key: Vec<String>,
    /// For incremental models: the strategy; `merge` when a `unique_key` is set and no
    /// strategy is, else `append`. `None` for other materializations.
    pub incremental_strategy: Option<IncrementalStrategy>,
    /// Tags from every level, deduplicated, sorted.
    pub tags: Vec<String>,
    /// The namespace override (`+schema`), if set.
    pub schema: Option<String>,
    /// The table name in the lake if it differs from the model name.
    pub alias: Option<String>,
    /// Disabled models are not part of the graph; a `ref()` to one is an error.
    pub enabled: bool,
    /// A cron expression for scheduled builds (walden extension), as written.
    pub schedule: Option<String>,
}

/// Test severity: a failing `warn` test is reported but does not fail the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Failures are warnings.
    Warn,
    /// Failures are errors (default).
    #[default]
    Error,
}

/// A comparison on the number of failing rows, e.g. `>0`, `>=10`, `!=0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Threshold {
    /// The operator: one of `>`, `>=`, `<`, `<=`, `=`, `==`, `!=`, `<>`.
    pub op: &'static str,
    /// The number compared with.
    pub value: u64,
}

impl Threshold {
    /// `>0`, the default of both `error_if` and `warn_if`.
    pub const ANY: Threshold = Threshold { op: ">", value: 0 };

    /// Parses `>0`, `>= 10`, `!=0`, ...
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let ops = [">=", "<=", "!=", "<>", "==", ">", "<", "="];
        let op = ops
            .iter()
            .find(|op| s.starts_with(**op))
            .ok_or_else(|| format!("'{s}' is not a condition like '>0' or '>=10'"))?;
        let value = s[op.len()..]
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("'{s}' is not a condition like '>0' or '>=10'"))?;
        Ok(Threshold { op, value })
    }

    /// Whether `failures` meets the condition.
    pub fn holds(&self, failures: u64) -> bool {
        match self.op {
            ">" => failures > self.value,
            ">=" => failures >= self.value,
            "<" => failures < self.value,
            "<=" => failures <= self.value,
            "=" | "==" => failures == self.value,
            _ => failures != self.value,
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.op, self.value)
    }
}

/// The outcome of a data test given its number of failing rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestOutcome {
    /// No condition holds.
    Pass,
    /// `warn_if` holds (and, for severity `error`, `error_if` does not).
    Warn,
    /// Severity `error` and `error_if` holds.
    Fail,
}

/// The configuration of a data test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestConfig {
    /// `error` (default) or `warn`.
    pub severity: Severity,
    /// A SQL condition restricting the tested rows (`where:`), applied to the tested
    /// model or source before the test's query.
    #[serde(rename = "where")]
    pub where_clause: Option<String>,
    /// When the failures are an error (default `>0`).
    pub error_if: Threshold,
    /// When the failures are a warning (default `>0`).
    pub warn_if: Threshold,
    /// Tags (the tested model's are not inherited).
    pub tags: Vec<String>,
    /// Disabled tests are left out of the project.
    pub enabled: bool,
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            severity: Severity::Error,
            where_clause: None,
            error_if: Threshold::ANY,
            warn_if: Threshold::ANY,
            tags: Vec::new(),
            enabled: true,
        }
    }
}

impl TestConfig {
    /// The outcome for `failures` failing rows: with severity `error`, `error_if` decides a
    /// failure, else `warn_if` a warning; with severity `warn`, only `warn_if` counts.
    pub fn outcome(&self, failures: u64) -> TestOutcome {
        if self.severity == Severity::Error && self.error_if.holds(failures) {
            TestOutcome::Fail
        } else if self.warn_if.holds(failures) {
            TestOutcome::Warn
        } else {
            TestOutcome::Pass
        }
    }

    /// Sets one key; see [`set_model_key`] for the return contract.
    pub(crate) fn set(&mut self, key: &str, value: &Json) -> Result<Applied, String> {
        let key = key.strip_prefix('+').unwrap_or(key);
        match key {
            "severity" => {
                self.severity = match as_string(key, value)?.to_ascii_lowercase().as_str() {
                    "warn" => Severity::Warn,
                    "error" => Severity::Error,
                    other => {
                        return Err(format!("severity must be 'warn' or 'error', not '{other}'"));
                    }
                }
            }
            "where" => self.where_clause = as_opt_string(key, value)?,
            "error_if" => self.error_if = Threshold::parse(&as_string(key, value)?)?,
            "warn_if" => self.warn_if = Threshold::parse(&as_string(key, value)?)?,
            "tags" => add_tags(&mut self.tags, as_string_list(key, value)?),
            "enabled" => self.enabled = as_bool(key, value)?,
            k if IGNORED_TEST_KEYS.contains(&k) => return Ok(Applied::Ignored),
            other => {
                return Err(format!(
                    "unknown test config '{other}'; expected one of severity, where, error_if, warn_if, tags, enabled"
                ));
            }
        }
        Ok(Applied::Set)
    }
}

/// Whether a configuration key took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The key is walden's and was set.
    Set,
    /// A dbt key walden does not use (`persist_docs`, `post_hook`, ...): a warning.
    Ignored,
}

/// dbt model configuration keys walden accepts and ignores (a warning names them).
const IGNORED_MODEL_KEYS: &[&str] = &[
    "persist_docs",
    "post_hook",
    "pre_hook",
    "post-hook",
    "pre-hook",
    "meta",
    "docs",
    "grants",
    "on_schema_change",
    "contract",
    "database",
    "full_refresh",
    "sql_header",
    "quoting",
    "column_types",
    "access",
    "group",
    "labels",
    "packages",
    "event_time",
    "batch_size",
    "lookback",
    "begin",
    "concurrent_batches",
    "transient",
    "file_format",
    "partition_by",
    "cluster_by",
    "bind",
    "indexes",
    "incremental_predicates",
    "merge_update_columns",
    "merge_exclude_columns",
    "on_configuration_change",
    "snowflake_warehouse",
    "copy_grants",
    "query_tag",
    "dist",
    "sort",
    "location_root",
    "docs_url",
];

const IGNORED_TEST_KEYS: &[&str] = &[
    "store_failures",
    "store_failures_as",
    "limit",
    "fail_calc",
    "meta",
    "database",
    "schema",
    "alias",
    "group",
];

/// Model configuration with every key optional: one level of the precedence chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PartialConfig {
    pub materialized: Option<Materialized>,
    pub unique_key: Option<Vec<String>>,
    pub incremental_strategy: Option<IncrementalStrategy>,
    pub tags: Vec<String>,
    pub schema: Option<String>,
    pub alias: Option<String>,
    pub enabled: Option<bool>,
    pub schedule: Option<String>,
}

/// The keys walden's model configuration has.
pub(crate) const MODEL_KEYS: &[&str] = &[
    "materialized",
    "unique_key",
    "incremental_strategy",
    "tags",
    "schema",
    "alias",
    "enabled",
    "schedule",
];

impl PartialConfig {
    /// Sets `key` (with or without a leading `+`) from `value`.
    ///
    /// `Ok(Applied::Set)` when the key is walden's, `Ok(Applied::Ignored)` for a dbt key
    /// walden does not use, `Err` with a message for an unknown key or a bad value.
    pub fn set(&mut self, key: &str, value: &Json) -> Result<Applied, String> {
        let key = key.strip_prefix('+').unwrap_or(key);
        match key {
            "materialized" => {
                self.materialized = Some(Materialized::parse(&as_string(key, value)?)?)
            }
            "unique_key" => {
                let keys = as_string_list(key, value)?;
                // `unique_key='a, b'` is also accepted by dbt adapters as a list
                let keys: Vec<String> = keys
                    .iter()
                    .flat_map(|k| k.split(','))
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .collect();
                self.unique_key = Some(keys);
            }
            "incremental_strategy" => {
                self.incremental_strategy = match as_string(key, value)?.as_str() {
                    "append" => Some(IncrementalStrategy::Append),
                    "merge" => Some(IncrementalStrategy::Merge),
                    other => {
                        return Err(format!(
                            "unknown incremental_strategy '{other}'; expected 'append' or 'merge'"
                        ));
                    }
                }
            }
            "tags" => add_tags(&mut self.tags, as_string_list(key, value)?),
            "schema" => self.schema = as_opt_string(key, value)?,
            "alias" => self.alias = as_opt_string(key, value)?,
            "enabled" => self.enabled = Some(as_bool(key, value)?),
            "schedule" => {
                let schedule = as_opt_string(key, value)?;
                if let Some(s) = &schedule {
                    check_cron(s)?;
                }
                self.schedule = schedule;
            }
            k if IGNORED_MODEL_KEYS.contains(&k) => return Ok(Applied::Ignored),
            other => {
                return Err(format!(
                    "unknown config '{other}'; expected one of {}",
                    MODEL_KEYS.join(", ")
                ));
            }
        }
        Ok(Applied::Set)
    }

    /// `self` with `higher`'s set keys on top (tags add up).
    pub fn overlay(&self, higher: &PartialConfig) -> PartialConfig {
        let mut tags = self.tags.clone();
        add_tags(&mut tags, higher.tags.clone());
        PartialConfig {
            materialized: higher.materialized.or(self.materialized),
            unique_key: higher
                .unique_key
                .clone()
                .or_else(|| self.unique_key.clone()),
            incremental_strategy: higher.incremental_strategy.or(self.incremental_strategy),
            tags,
            schema: higher.schema.clone().or_else(|| self.schema.clone()),
            alias: higher.alias.clone().or_else(|| self.alias.clone()),
            enabled: higher.enabled.or(self.enabled),
            schedule: higher.schedule.clone().or_else(|| self.schedule.clone()),
        }
    }

    /// The final configuration, checked: `merge` needs a `unique_key`.
    pub fn resolve(&self) -> Result<ModelConfig, String> {
        let materialized = self.materialized.unwrap_or_default();
        let unique_key = self.unique_key.clone().unwrap_or_default();
        let incremental_strategy = match materialized {
            Materialized::Incremental => Some(self.incremental_strategy.unwrap_or(
                if unique_key.is_empty() {
                    IncrementalStrategy::Append
                } else {
                    IncrementalStrategy::Merge
                },
            )),
            _ => None,
        };
        if incremental_strategy == Some(IncrementalStrategy::Merge) && unique_key.is_empty() {
            return Err("incremental_strategy 'merge' needs a unique_key".into());
        }
        let mut tags = self.tags.clone();
        tags.sort();
        tags.dedup();
        Ok(ModelConfig {
            materialized,
            unique_key,
            incremental_strategy,
            tags,
            schema: self.schema.clone(),
            alias: self.alias.clone(),
            enabled: self.enabled.unwrap_or(true),
            schedule: self.schedule.clone(),
        })
    }
}

fn add_tags(tags: &mut Vec<String>, new: Vec<String>) {
    for t in new {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

fn as_string(key: &str, value: &Json) -> Result<String, String> {
    match value {
        Json::String(s) => Ok(s.clone()),
        other => Err(format!("{key} must be a string, not {}", kind(other))),
    }
}

fn as_opt_string(key: &str, value: &Json) -> Result<Option<String>, String> {
    match value {
        Json::Null => Ok(None),
        other => as_string(key, other).map(Some),
    }
}

fn as_bool(key: &str, value: &Json) -> Result<bool, String> {
    match value {
        Json::Bool(b) => Ok(*b),
        other => Err(format!("{key} must be true or false, not {}", kind(other))),
    }
}

fn as_string_list(key: &str, value: &Json) -> Result<Vec<String>, String> {
    match value {
        Json::Null => Ok(Vec::new()),
        Json::String(s) => Ok(vec![s.clone()]),
        Json::Array(items) => items
            .iter()
            .map(|v| match v {
                Json::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "{key} must be a string or a list of strings, not a list with {}",
                    kind(other)
                )),
            })
            .collect(),
        other => Err(format!(
            "{key} must be a string or a list of strings, not {}",
            kind(other)
        )),
    }
}

/// A light check of a cron expression: 5 to 7 fields of cron characters, or a `@` macro.
fn check_cron(s: &str) -> Result<(), String> {
    crate::schedule::parse_cron(s)
        .map(|_| ())
        .map_err(|m| format!("schedule {m}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn levels_override_and_tags_add_up() {
        let mut folder = PartialConfig::default();
        folder.set("+materialized", &json!("table")).unwrap();
        folder.set("+tags", &json!(["a", "b"])).unwrap();
        folder.set("+schema", &json!("marts")).unwrap();
        let mut yaml = PartialConfig::default();
        yaml.set("materialized", &json!("incremental")).unwrap();
        yaml.set("tags", &json!("c")).unwrap();
        let mut sql = PartialConfig::default();
        sql.set("unique_key", &json!(["id", "line"])).unwrap();
        sql.set("tags", &json!(["a"])).unwrap();
        let c = folder.overlay(&yaml).overlay(&sql).resolve().unwrap();
        assert_eq!(c.materialized, Materialized::Incremental);
        assert_eq!(c.unique_key, vec!["id", "line"]);
        assert_eq!(c.incremental_strategy, Some(IncrementalStrategy::Merge));
        assert_eq!(c.tags, vec!["a", "b", "c"]);
        assert_eq!(c.schema.as_deref(), Some("marts"));
        assert!(c.enabled);
    }

    #[test]
    fn bad_values_and_keys() {
        let mut c = PartialConfig::default();
        assert!(
            c.set("materialized", &json!("seed"))
                .unwrap_err()
                .contains("unknown materialization 'seed'")
        );
        assert!(
            c.set("enabled", &json!("yes"))
                .unwrap_err()
                .contains("true or false")
        );
        assert!(
            c.set("frobnicate", &json!(1))
                .unwrap_err()
                .contains("unknown config 'frobnicate'")
        );
        assert_eq!(
            c.set("+persist_docs", &json!({})).unwrap(),
            Applied::Ignored
        );
        assert!(c.set("schedule", &json!("every hour")).is_err());
        c.set("schedule", &json!("*/15 * * * *")).unwrap();
        c.set("materialized", &json!("incremental")).unwrap();
        c.set("incremental_strategy", &json!("merge")).unwrap();
        assert!(c.resolve().unwrap_err().contains("needs a unique_key"));
    }

    #[test]
    fn thresholds_and_outcomes() {
        let t = Threshold::parse(">= 10").unwrap();
        assert!(t.holds(10) && !t.holds(9));
        assert!(Threshold::parse("ten").is_err());
        let mut c = TestConfig::default();
        assert_eq!(c.outcome(0), TestOutcome::Pass);
        assert_eq!(c.outcome(1), TestOutcome::Fail);
        c.set("error_if", &json!(">5")).unwrap();
        assert_eq!(c.outcome(3), TestOutcome::Warn);
        assert_eq!(c.outcome(6), TestOutcome::Fail);
        c.set("severity", &json!("warn")).unwrap();
        assert_eq!(c.outcome(6), TestOutcome::Warn);
    }
}
