//! YAML files: the project file and property files (`models:`, `sources:`), as read
//! with serde_norway, plus a locator for positions of entries that parsed fine.
//!
//! serde_norway reports a position only for errors; the position of a well-formed entry
//! (a property for an unknown model, a bad test) is found by [`Locator`], a line scan for
//! `name: <name>` and `key:` lines below a given line.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value as Json;

use crate::error::Diagnostic;

/// Deserializes `text` (the contents of `file`) or returns a diagnostic at the error.
pub(crate) fn parse_yaml<T: for<'de> Deserialize<'de>>(
    file: &Path,
    text: &str,
) -> Result<T, Diagnostic> {
    serde_norway::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let mut message = e.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        Diagnostic::new(file, line, column, format!("invalid YAML: {message}"))
    })
}

/// Deserializes an optional field keeping `key: null` apart from an absent key:
/// absent → `None`, `null` → `Some(Json::Null)`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Json>, D::Error> {
    Json::deserialize(d).map(Some)
}

/// `walden_project.yml` / `dbt_project.yml`: the keys walden reads (others are ignored).
#[derive(Debug, Deserialize, Default)]
pub(crate) struct ProjectFile {
    pub name: Option<String>,
    #[serde(rename = "model-paths", alias = "source-paths")]
    pub model_paths: Option<Vec<String>>,
    #[serde(rename = "test-paths")]
    pub test_paths: Option<Vec<String>>,
    pub vars: Option<Json>,
    pub models: Option<Json>,
}

/// One property file.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct PropertyFile {
    #[serde(default)]
    pub models: Option<Vec<ModelProps>>,
    #[serde(default)]
    pub sources: Option<Vec<SourceProps>>,
}

/// A `models:` entry.
#[derive(Debug, Deserialize)]
pub(crate) struct ModelProps {
    pub name: String,
    pub description: Option<String>,
    pub config: Option<serde_json::Map<String, Json>>,
    #[serde(default)]
    pub columns: Vec<ColumnProps>,
    pub tests: Option<Vec<Json>>,
    pub data_tests: Option<Vec<Json>>,
}

/// A `columns:` entry.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ColumnProps {
    pub name: String,
    pub description: Option<String>,
    pub data_type: Option<String>,
    pub quote: Option<bool>,
    pub tests: Option<Vec<Json>>,
    pub data_tests: Option<Vec<Json>>,
}

/// A `sources:` entry.
#[derive(Debug, Deserialize)]
pub(crate) struct SourceProps {
    pub name: String,
    pub schema: Option<String>,
    pub description: Option<String>,
    pub loaded_at_field: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub freshness: Option<Json>,
    #[serde(default)]
    pub tables: Vec<TableProps>,
}

/// A `tables:` entry of a source.
#[derive(Debug, Deserialize)]
pub(crate) struct TableProps {
    pub name: String,
    pub identifier: Option<String>,
    pub description: Option<String>,
    pub loaded_at_field: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub freshness: Option<Json>,
    #[serde(default)]
    pub columns: Vec<ColumnProps>,
    pub tests: Option<Vec<Json>>,
    pub data_tests: Option<Vec<Json>>,
}

/// Both spellings of a test list, concatenated (`tests:` first).
pub(crate) fn test_list(tests: &Option<Vec<Json>>, data_tests: &Option<Vec<Json>>) -> Vec<Json> {
    tests
        .iter()
        .chain(data_tests.iter())
        .flatten()
        .cloned()
        .collect()
}

/// Finds lines in a YAML text.
pub(crate) struct Locator<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        Locator {
            lines: text.lines().collect(),
        }
    }

    /// The line and column of the first top-level `key:` (no indentation).
    pub fn top_key(&self, key: &str) -> Option<(usize, usize)> {
        self.lines
            .iter()
            .position(|l| {
                l.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
            })
            .map(|i| (i + 1, 1))
    }

    /// The first `name: <name>` entry (optionally as a list item, quoted or not) at or
    /// after 1-based line `from`; position of `name`.
    pub fn entry(&self, from: usize, name: &str) -> Option<(usize, usize)> {
        self.find(from, |body| {
            let value = body.strip_prefix("name")?.trim_start().strip_prefix(':')?;
            (unquote(strip_comment(value)) == name).then_some(())
        })
    }

    /// The first `key:` or `- key` line (a mapping key or a bare list item) at or after
    /// line `from`; position of the key.
    pub fn key(&self, from: usize, key: &str) -> Option<(usize, usize)> {
        self.find(from, |body| {
            let rest = body.strip_prefix(key).or_else(|| {
                body.strip_prefix('"')
                    .or_else(|| body.strip_prefix('\''))?
                    .strip_prefix(key)?
                    .get(1..)
            })?;
            let rest = rest.trim_start();
            (rest.is_empty() || rest.starts_with(':') || rest.starts_with('#')).then_some(())
        })
    }

    /// The first line at or after `from` whose content (after indentation and one `- `)
    /// satisfies `f`; its 1-based line and the column where that content starts.
    fn find(&self, from: usize, f: impl Fn(&str) -> Option<()>) -> Option<(usize, usize)> {
        for (i, line) in self.lines.iter().enumerate().skip(from.saturating_sub(1)) {
            let indent = line.len() - line.trim_start().len();
            let mut body = &line[indent..];
            let mut col = indent;
            if let Some(rest) = body.strip_prefix('-') {
                let trimmed = rest.trim_start();
                col += 1 + (rest.len() - trimmed.len());
                body = trimmed;
            }
            if f(body).is_some() {
                return Some((i + 1, line[..col].chars().count() + 1));
            }
        }
        None
    }
}

fn strip_comment(value: &str) -> &str {
    match value.find(" #") {
        Some(i) => &value[..i],
        None => value,
    }
}

fn unquote(value: &str) -> &str {
    let v = value.trim();
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locator_finds_entries_and_keys() {
        let text = "version: 2\nmodels:\n  - name: a\n    columns:\n      - name: \"id\"  # key\n        tests:\n          - unique\n          - accepted_values:\n";
        let l = Locator::new(text);
        assert_eq!(l.top_key("models"), Some((2, 1)));
        assert_eq!(l.entry(1, "a"), Some((3, 5)));
        assert_eq!(l.entry(4, "id"), Some((5, 9)));
        assert_eq!(l.key(5, "unique"), Some((7, 13)));
        assert_eq!(l.key(5, "accepted_values"), Some((8, 13)));
        assert_eq!(l.entry(4, "a"), None);
    }

    #[test]
    fn yaml_errors_have_positions() {
        let err = parse_yaml::<PropertyFile>(
            Path::new("m.yml"),
            "models:\n  - name: a\n    columns: 3\n",
        )
        .unwrap_err();
        assert_eq!((err.line, err.column), (3, 14), "{err}");
        assert!(
            err.message
                .starts_with("invalid YAML: models[0].columns: invalid type")
                || err.message.contains("invalid type"),
            "{err}"
        );
        let err =
            parse_yaml::<PropertyFile>(Path::new("m.yml"), "models:\n  - name: [\n").unwrap_err();
        assert!(err.line >= 2, "{err}");
    }

    #[test]
    fn null_freshness_is_kept_apart_from_absent() {
        let f: PropertyFile = parse_yaml(Path::new("s.yml"), "sources:\n  - name: s\n    tables:\n      - name: a\n        freshness: null\n      - name: b\n").unwrap();
        let tables = &f.sources.unwrap()[0].tables;
        assert_eq!(tables[0].freshness, Some(Json::Null));
        assert_eq!(tables[1].freshness, None);
    }
}
