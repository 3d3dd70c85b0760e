//! Data tests: the generic tests declared in YAML (`unique`, `not_null`,
//! `accepted_values`, `relationships`) and singular tests (`tests/**/*.sql`).
//!
//! Each compiles to a query returning the failing rows; the builder runs
//! `SELECT count(*) FROM (<query>)` and asks [`TestConfig::outcome`] what the count means.

use std::path::PathBuf;

use serde_json::{Map, Value as Json};

use crate::config::{Applied, TestConfig};
use crate::graph::NodeId;
use crate::scan::call_sites;
use crate::template::quote_ident;

/// A data test of the project.
#[derive(Debug, Clone, PartialEq)]
pub struct DataTest {
    /// The test's unique name (`not_null_orders_id`, or a singular test's file stem).
    pub name: String,
    /// What it checks.
    pub kind: TestKind,
    /// The model or source table whose properties declare it (`None` for singular tests).
    pub attached_to: Option<NodeId>,
    /// Every model and source table it reads, sorted.
    pub depends_on: Vec<NodeId>,
    /// Severity, `where`, thresholds.
    pub config: TestConfig,
    /// The file that declares it, relative to the project root.
    pub path: PathBuf,
    /// The 1-based line of the declaration (1 for singular tests).
    pub line: usize,
}

impl DataTest {
    /// `unique`, `not_null`, `accepted_values`, `relationships` or `singular`.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            TestKind::Generic(g) => g.test_name(),
            TestKind::Singular { .. } => "singular",
        }
    }
}

/// What a test checks.
#[derive(Debug, Clone, PartialEq)]
pub enum TestKind {
    /// One of the four generic tests.
    Generic(GenericTest),
    /// A SQL file returning failing rows; `raw_sql` is the template text.
    Singular {
        /// The template text of `tests/**/<name>.sql`.
        raw_sql: String,
    },
}

/// A generic test on one column (`column` is an SQL expression: the column name as
/// written, or quoted when the column has `quote: true`).
#[derive(Debug, Clone, PartialEq)]
pub enum GenericTest {
    /// No two rows share a non-NULL value of `column`.
    Unique {
        /// The tested column (SQL text).
        column: String,
    },
    /// No row has `column` NULL.
    NotNull {
        /// The tested column (SQL text).
        column: String,
    },
    /// Every non-NULL value of `column` is one of `values`.
    AcceptedValues {
        /// The tested column (SQL text).
        column: String,
        /// The allowed values as written in YAML.
        values: Vec<Json>,
        /// Compare as strings (`'v'`, the default) or as raw SQL literals.
        quote: bool,
    },
    /// Every non-NULL value of `column` appears in `field` of `to`.
    Relationships {
        /// The tested column (SQL text).
        column: String,
        /// The referenced model or source table.
        to: NodeId,
        /// The referenced column (SQL text).
        field: String,
    },
}

impl GenericTest {
    /// The generic test's name: `unique`, `not_null`, `accepted_values`, `relationships`.
    pub fn test_name(&self) -> &'static str {
        match self {
            GenericTest::Unique { .. } => "unique",
            GenericTest::NotNull { .. } => "not_null",
            GenericTest::AcceptedValues { .. } => "accepted_values",
            GenericTest::Relationships { .. } => "relationships",
        }
    }

    /// The tested column (SQL text).
    pub fn column(&self) -> &str {
        match self {
            GenericTest::Unique { column }
            | GenericTest::NotNull { column }
            | GenericTest::AcceptedValues { column, .. }
            | GenericTest::Relationships { column, .. } => column,
        }
    }

    /// The query returning failing rows, given the tested relation's SQL text, the
    /// referenced relation's (relationships only) and an optional `where` filter on the
    /// tested relation.
    pub fn sql(
        &self,
        relation: &str,
        to_relation: Option<&str>,
        where_clause: Option<&str>,
    ) -> String {
        let rel = match where_clause {
            Some(w) => format!("(SELECT * FROM {relation} WHERE {w}) AS __walden_tested"),
            None => relation.to_string(),
        };
        match self {
            GenericTest::NotNull { column } => {
                format!("SELECT *\nFROM {rel}\nWHERE {column} IS NULL")
            }
            GenericTest::Unique { column } => format!(
                "SELECT {column} AS unique_field, count(*) AS n_records\nFROM {rel}\nWHERE {column} IS NOT NULL\nGROUP BY {column}\nHAVING count(*) > 1"
            ),
            GenericTest::AcceptedValues {
                column,
                values,
                quote,
            } => {
                let list: Vec<String> = values.iter().map(|v| literal(v, *quote)).collect();
                format!(
                    "SELECT {column} AS value_field, count(*) AS n_records\nFROM {rel}\nWHERE {column} IS NOT NULL AND {column} NOT IN ({})\nGROUP BY {column}",
                    list.join(", ")
                )
            }
            GenericTest::Relationships { column, field, .. } => format!(
                "SELECT child.from_field\nFROM (SELECT {column} AS from_field FROM {rel} WHERE {column} IS NOT NULL) AS child\n\
                 LEFT JOIN (SELECT {field} AS to_field FROM {}) AS parent ON child.from_field = parent.to_field\n\
                 WHERE parent.to_field IS NULL",
                to_relation.unwrap_or("NULL")
            ),
        }
    }
}

/// A YAML value as an SQL literal: quoted as a string, or raw.
fn literal(v: &Json, quote: bool) -> String {
    let text = match v {
        Json::String(s) => s.clone(),
        Json::Null => return "NULL".into(),
        Json::Bool(b) if !quote => return if *b { "TRUE".into() } else { "FALSE".into() },
        other => other.to_string(),
    };
    if quote {
        format!("'{}'", text.replace('\'', "''"))
    } else {
        text
    }
}

/// The generic test names walden knows.
pub(crate) const GENERIC_TESTS: &[&str] =
    &["unique", "not_null", "accepted_values", "relationships"];

/// The test configuration keys that may stand directly in a test's arguments.
const DIRECT_CONFIG: &[&str] = &[
    "severity",
    "where",
    "error_if",
    "warn_if",
    "enabled",
    "tags",
    "store_failures",
    "store_failures_as",
    "limit",
    "fail_calc",
    "meta",
];

/// One entry of a `tests:`/`data_tests:` list, taken apart.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The generic test's name as written (`unique`, `dbt_utils.x`, ...).
    pub test: String,
    /// Its arguments (from `arguments:` or the entry's own keys).
    pub args: Map<String, Json>,
    /// The test configuration.
    pub config: TestConfig,
    /// A custom name (`name:`).
    pub custom_name: Option<String>,
    /// Configuration keys walden ignores.
    pub ignored: Vec<String>,
}

/// Takes one list entry apart: `unique`, `{unique: {...}}`, `{accepted_values: {values: [...]}}`,
/// `{accepted_values: {arguments: {values: [...]}, config: {...}}}`, `{name: x, test_name: y, ...}`.
pub(crate) fn parse_entry(entry: &Json) -> Result<Entry, String> {
    let (test, body) = match entry {
        Json::String(s) => (s.clone(), Map::new()),
        Json::Object(map) if map.contains_key("test_name") => {
            let test = map.get("test_name").and_then(Json::as_str).ok_or("test_name must be a string")?;
            let mut body = map.clone();
            body.remove("test_name");
            (test.to_string(), body)
        }
        Json::Object(map) if map.len() == 1 => {
            let (test, body) = map.iter().next().ok_or("empty test entry")?;
            let body = match body {
                Json::Object(b) => b.clone(),
                Json::Null => Map::new(),
                _ => return Err(format!("the arguments of test '{test}' must be a mapping")),
            };
            (test.clone(), body)
        }
        _ => return Err("a test is a name (`- unique`) or a mapping with one test name (`- accepted_values: {...}`)".into()),
    };
    let mut config = TestConfig::default();
    let mut ignored = Vec::new();
    let mut args = Map::new();
    let mut custom_name = None;
    let mut set = |config: &mut TestConfig, key: &str, value: &Json| -> Result<(), String> {
        if config.set(key, value)? == Applied::Ignored {
            ignored.push(key.to_string());
        }
        Ok(())
    };
    for (key, value) in &body {
        match key.as_str() {
            "config" => {
                let Json::Object(c) = value else {
                    return Err(format!("config of test '{test}' must be a mapping"));
                };
                for (k, v) in c {
                    set(&mut config, k, v)?;
                }
            }
            "arguments" => {
                let Json::Object(a) = value else {
                    return Err(format!("arguments of test '{test}' must be a mapping"));
                };
                args.extend(a.clone());
            }
            "name" => {
                custom_name = Some(
                    value
                        .as_str()
                        .ok_or("a test's name must be a string")?
                        .to_string(),
                )
            }
            "description" => {}
            k if DIRECT_CONFIG.contains(&k) => set(&mut config, k, value)?,
            _ => {
                args.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(Entry {
        test,
        args,
        config,
        custom_name,
        ignored,
    })
}

/// Builds the generic test of `entry` on `column` (`None` at model level, where the
/// arguments must name `column_name`). `column_sql` turns a column name into SQL text.
pub(crate) fn build_generic(
    entry: &Entry,
    column: Option<&str>,
    project: &str,
    column_sql: &dyn Fn(&str) -> String,
) -> Result<GenericTest, String> {
    let test = entry.test.as_str();
    let mut args = entry.args.clone();
    let column = match (column, args.remove("column_name")) {
        (Some(c), None) => c.to_string(),
        (_, Some(Json::String(c))) => c,
        (_, Some(_)) => return Err(format!("column_name of test '{test}' must be a string")),
        (None, None) => return Err(format!("test '{test}' at model level needs `column_name:`")),
    };
    let column = column_sql(&column);
    let take_string = |args: &mut Map<String, Json>, key: &str| -> Result<String, String> {
        match args.remove(key) {
            Some(Json::String(s)) => Ok(s),
            Some(_) => Err(format!(
                "argument '{key}' of test '{test}' must be a string"
            )),
            None => Err(format!("test '{test}' needs the argument '{key}'")),
        }
    };
    let generic = match test {
        "unique" => GenericTest::Unique { column },
        "not_null" => GenericTest::NotNull { column },
        "accepted_values" => {
            let values = match args.remove("values") {
                Some(Json::Array(v)) if !v.is_empty() => v,
                Some(_) => {
                    return Err(
                        "argument 'values' of test 'accepted_values' must be a non-empty list"
                            .into(),
                    );
                }
                None => return Err("test 'accepted_values' needs the argument 'values'".into()),
            };
            let quote = match args.remove("quote") {
                None => true,
                Some(Json::Bool(b)) => b,
                Some(_) => {
                    return Err(
                        "argument 'quote' of test 'accepted_values' must be true or false".into(),
                    );
                }
            };
            GenericTest::AcceptedValues {
                column,
                values,
                quote,
            }
        }
        "relationships" => {
            let to = take_string(&mut args, "to")?;
            let to = parse_target(&to, project)?;
            let field = take_string(&mut args, "field")?;
            GenericTest::Relationships {
                column,
                to,
                field: column_sql(&field),
            }
        }
        other => return Err(format!("unknown generic test '{other}'")),
    };
    if let Some(extra) = args.keys().next() {
        return Err(format!("test '{test}' has no argument '{extra}'"));
    }
    Ok(generic)
}

/// `ref('m')`, `ref('<project>', 'm')` or `source('s', 't')` (with or without `{{ }}`).
pub(crate) fn parse_target(text: &str, project: &str) -> Result<NodeId, String> {
    let inner = text
        .trim()
        .trim_start_matches("{{")
        .trim_end_matches("}}")
        .trim();
    let sites = call_sites(&format!("{{{{ {inner} }}}}"));
    let bad = || format!("'to: {text}' must be ref('model') or source('source', 'table')");
    match sites.as_slice() {
        [site] => match (site.function, site.args.as_deref()) {
            ("ref", Some([m])) => Ok(NodeId::Model(m.clone())),
            ("ref", Some([p, m])) if p == project => Ok(NodeId::Model(m.clone())),
            ("source", Some([s, t])) => Ok(NodeId::Source(s.clone(), t.clone())),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// The dbt-style name of a generic test: `[source_]<test>_<model or source_table>_<column>`
/// then `__<argument>` per argument (sorted by key), each run of other characters than
/// ASCII letters, digits and `_` as one `_`; over 80 characters, cut to 63 and followed by
/// `_` and 16 hex digits of a hash of the full name (80 in all).
pub(crate) fn generic_name(entry: &Entry, node: &NodeId, column: Option<&str>) -> String {
    if let Some(name) = &entry.custom_name {
        return name.clone();
    }
    let mut name = match node {
        NodeId::Source(s, t) => format!("source_{}_{}_{}", clean(&entry.test), clean(s), clean(t)),
        NodeId::Model(m) | NodeId::Test(m) => format!("{}_{}", clean(&entry.test), clean(m)),
    };
    let column = column.map(str::to_string).or_else(|| {
        entry
            .args
            .get("column_name")
            .and_then(Json::as_str)
            .map(str::to_string)
    });
    if let Some(c) = column {
        name.push('_');
        name.push_str(&clean(&c));
    }
    let mut keys: Vec<&String> = entry.args.keys().filter(|k| *k != "column_name").collect();
    keys.sort();
    for k in keys {
        name.push_str("__");
        name.push_str(&flatten(&entry.args[k]));
    }
    if name.len() > 80 {
        let hash = twox_hash::XxHash3_128::oneshot(name.as_bytes()) as u64;
        format!("{}_{hash:016x}", &name[..63])
    } else {
        name
    }
}

/// An argument value as a name part: list items (and mapping values) joined by `__`.
fn flatten(v: &Json) -> String {
    match v {
        Json::String(s) => clean(s),
        Json::Array(items) => items.iter().map(flatten).collect::<Vec<_>>().join("__"),
        Json::Object(map) => map.values().map(flatten).collect::<Vec<_>>().join("__"),
        other => clean(&other.to_string()),
    }
}

/// Each run of characters other than ASCII letters, digits and `_` becomes one `_`.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_run = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    out
}

/// A column name as SQL text: quoted when the column says `quote: true`.
pub(crate) fn column_text(name: &str, quote: bool) -> String {
    if quote {
        quote_ident(name)
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Severity;
    use serde_json::json;

    #[test]
    fn entry_spellings() {
        let e = parse_entry(&json!("unique")).unwrap();
        assert_eq!(e.test, "unique");
        let e =
            parse_entry(&json!({"accepted_values": {"values": ["a", "b"], "severity": "warn"}}))
                .unwrap();
        assert_eq!(e.args["values"], json!(["a", "b"]));
        assert_eq!(e.config.severity, Severity::Warn);
        let e = parse_entry(&json!({"accepted_values": {"arguments": {"values": [1]}, "config": {"severity": "warn", "where": "x > 1"}}})).unwrap();
        assert_eq!(e.args["values"], json!([1]));
        assert_eq!(e.config.where_clause.as_deref(), Some("x > 1"));
        assert_eq!(e.config.severity, Severity::Warn);
        let e =
            parse_entry(&json!({"name": "my_test", "test_name": "not_null", "column_name": "a"}))
                .unwrap();
        assert_eq!(
            (e.test.as_str(), e.custom_name.as_deref()),
            ("not_null", Some("my_test"))
        );
        assert!(
            parse_entry(&json!({"unique": {"config": {"severity": "fatal"}}}))
                .unwrap_err()
                .contains("severity")
        );
        assert!(parse_entry(&json!(3)).is_err());
    }

    #[test]
    fn names_follow_dbt() {
        let node = NodeId::Model("orders".into());
        let e = parse_entry(&json!("not_null")).unwrap();
        assert_eq!(generic_name(&e, &node, Some("id")), "not_null_orders_id");
        let e = parse_entry(&json!({"accepted_values": {"values": ["a", "b"]}})).unwrap();
        assert_eq!(
            generic_name(&e, &node, Some("status")),
            "accepted_values_orders_status__a__b"
        );
        let e = parse_entry(&json!({"relationships": {"to": "ref('customers')", "field": "id"}}))
            .unwrap();
        assert_eq!(
            generic_name(&e, &node, Some("customer_id")),
            "relationships_orders_customer_id__id__ref_customers_"
        );
        let e = parse_entry(&json!("unique")).unwrap();
        assert_eq!(
            generic_name(
                &e,
                &NodeId::Source("shop".into(), "orders".into()),
                Some("id")
            ),
            "source_unique_shop_orders_id"
        );
        let many: Vec<String> = (0..30).map(|i| format!("value_{i}")).collect();
        let e = parse_entry(&json!({"accepted_values": {"values": many}})).unwrap();
        let long = generic_name(&e, &node, Some("status"));
        assert_eq!(long.len(), 80);
        assert!(long.starts_with("accepted_values_orders_status__value_0__value_1__value_2__"));
        let e2 = parse_entry(&json!({"accepted_values": {"values": ["value_0", "x"]}})).unwrap();
        assert_ne!(generic_name(&e2, &node, Some("status")), long);
    }

    #[test]
    fn generic_arguments_are_checked() {
        let id = |s: &str| s.to_string();
        let e = parse_entry(
            &json!({"relationships": {"to": "source('shop', 'customers')", "field": "id"}}),
        )
        .unwrap();
        let t = build_generic(&e, Some("customer_id"), "p", &id).unwrap();
        assert_eq!(
            t,
            GenericTest::Relationships {
                column: "customer_id".into(),
                to: NodeId::Source("shop".into(), "customers".into()),
                field: "id".into()
            }
        );
        let e = parse_entry(&json!({"relationships": {"to": "customers", "field": "id"}})).unwrap();
        assert!(
            build_generic(&e, Some("c"), "p", &id)
                .unwrap_err()
                .contains("must be ref('model')")
        );
        let e = parse_entry(&json!({"accepted_values": {"value": ["a"]}})).unwrap();
        assert!(
            build_generic(&e, Some("c"), "p", &id)
                .unwrap_err()
                .contains("needs the argument 'values'")
        );
        let e = parse_entry(&json!({"unique": {"colum_name": "a"}})).unwrap();
        assert!(
            build_generic(&e, Some("c"), "p", &id)
                .unwrap_err()
                .contains("has no argument 'colum_name'")
        );
        let e = parse_entry(&json!("unique")).unwrap();
        assert!(
            build_generic(&e, None, "p", &id)
                .unwrap_err()
                .contains("column_name")
        );
        let e = parse_entry(&json!("dbt_utils.at_least_one")).unwrap();
        assert!(
            build_generic(&e, Some("c"), "p", &id)
                .unwrap_err()
                .contains("unknown generic test 'dbt_utils.at_least_one'")
        );
        assert_eq!(
            parse_target("{{ ref('p', 'm') }}", "p").unwrap(),
            NodeId::Model("m".into())
        );
        assert!(parse_target("ref('other', 'm')", "p").is_err());
    }

    #[test]
    fn sql_of_each_test() {
        let rel = "\"marts\".\"orders\"";
        let t = GenericTest::NotNull {
            column: "id".into(),
        };
        assert_eq!(
            t.sql(rel, None, None),
            "SELECT *\nFROM \"marts\".\"orders\"\nWHERE id IS NULL"
        );
        assert_eq!(
            t.sql(rel, None, Some("placed_at > '2024-01-01'")),
            "SELECT *\nFROM (SELECT * FROM \"marts\".\"orders\" WHERE placed_at > '2024-01-01') AS __walden_tested\nWHERE id IS NULL"
        );
        let t = GenericTest::Unique {
            column: "id".into(),
        };
        assert!(
            t.sql(rel, None, None)
                .contains("GROUP BY id\nHAVING count(*) > 1")
        );
        let t = GenericTest::AcceptedValues {
            column: "status".into(),
            values: vec![json!("it's"), json!(2)],
            quote: true,
        };
        assert!(
            t.sql(rel, None, None)
                .contains("status NOT IN ('it''s', '2')"),
            "{}",
            t.sql(rel, None, None)
        );
        let t = GenericTest::AcceptedValues {
            column: "n".into(),
            values: vec![json!(1), json!(true)],
            quote: false,
        };
        assert!(t.sql(rel, None, None).contains("n NOT IN (1, TRUE)"));
        let t = GenericTest::Relationships {
            column: "customer_id".into(),
            to: NodeId::Model("c".into()),
            field: "id".into(),
        };
        let sql = t.sql(rel, Some("\"marts\".\"c\""), None);
        assert!(
            sql.contains("LEFT JOIN (SELECT id AS to_field FROM \"marts\".\"c\") AS parent"),
            "{sql}"
        );
        assert!(sql.contains("WHERE parent.to_field IS NULL"));
    }
}
