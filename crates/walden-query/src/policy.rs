//! Who may query, what they see and how much they may spend.
//!
//! A [`Principal`] is an agent or a person declared in configuration. Everything it is
//! allowed is decided here and enforced below SQL: the namespaces its sessions' catalogs
//! contain ([`Principal::sees_namespace`]), the columns whose values its scans replace with
//! NULL ([`Principal::masked`]), the predicates applied under every scan of a table
//! ([`Principal::row_filter`]) and its [`Limits`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Resource limits of one principal's queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Rows returned per query; more are cut off with a truncation signal, not an error.
    pub max_rows: u64,
    /// Result bytes (Arrow value bytes) per query; cut off like `max_rows`.
    pub max_result_bytes: u64,
    /// Planning plus execution time per query; a query over it fails.
    pub timeout: Duration,
    /// Memory of one query's operators (sorts, joins, aggregates); operators that can spill
    /// to disk do so, the others fail with an error that names the limit.
    pub memory_limit_bytes: usize,
    /// Queries of this principal running at once; more are refused.
    pub max_concurrent_queries: usize,
    /// Length of the SQL text.
    pub max_query_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rows: 10_000,
            max_result_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            memory_limit_bytes: 512 << 20,
            max_concurrent_queries: 4,
            max_query_bytes: 1 << 20,
        }
    }
}

/// A principal's grants and limits. Build with [`Principal::new`] and the `with_` methods;
/// names of namespaces, tables and columns are matched exactly (they are the lake's
/// lower-case Postgres names).
#[derive(Debug, Clone)]
pub struct Principal {
    name: String,
    /// `None`: every namespace.
    namespaces: Option<BTreeSet<String>>,
    /// `schema.table` → masked column names.
    masked: BTreeMap<String, BTreeSet<String>>,
    /// `schema.table` → SQL predicate over that table's columns.
    row_filters: BTreeMap<String, String>,
    limits: Limits,
    /// Sees every principal's rows of `walden.audit_log`, not only its own.
    audit_reader: bool,
}

impl Principal {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespaces: None,
            masked: BTreeMap::new(),
            row_filters: BTreeMap::new(),
            limits: Limits::default(),
            audit_reader: false,
        }
    }

    /// The local operator (`walden query`): every namespace, no masks or filters, and
    /// limits only against accidents.
    pub fn operator() -> Self {
        Self::new("operator")
            .with_limits(Limits {
                max_rows: u64::MAX,
                max_result_bytes: u64::MAX,
                timeout: Duration::from_secs(24 * 3600),
                memory_limit_bytes: usize::MAX / 2,
                max_concurrent_queries: usize::MAX,
                max_query_bytes: 64 << 20,
            })
            .with_audit_reader(true)
    }

    /// Restricts the principal to these namespaces (`walden` and the Postgres catalogs
    /// are always visible; they show only what the principal may see).
    pub fn with_namespaces(mut self, namespaces: impl IntoIterator<Item = String>) -> Self {
        self.namespaces = Some(namespaces.into_iter().collect());
        self
    }

    /// Masks `schema.table.column`.
    pub fn with_masked_column(mut self, schema: &str, table: &str, column: &str) -> Self {
        self.masked
            .entry(format!("{schema}.{table}"))
            .or_default()
            .insert(column.to_string());
        self
    }

    /// Applies `predicate` (SQL over the table's columns) below every scan of
    /// `schema.table`.
    pub fn with_row_filter(mut self, schema: &str, table: &str, predicate: &str) -> Self {
        self.row_filters
            .insert(format!("{schema}.{table}"), predicate.to_string());
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_audit_reader(mut self, yes: bool) -> Self {
        self.audit_reader = yes;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn audit_reader(&self) -> bool {
        self.audit_reader
    }

    /// Whether the principal's catalogs contain this lake namespace.
    pub fn sees_namespace(&self, namespace: &str) -> bool {
        match &self.namespaces {
            None => true,
            Some(set) => set.contains(namespace),
        }
    }

    /// The namespaces the principal was restricted to, if any.
    pub fn namespaces(&self) -> Option<&BTreeSet<String>> {
        self.namespaces.as_ref()
    }

    /// The masked columns of `schema.table`.
    pub fn masked(&self, schema: &str, table: &str) -> Option<&BTreeSet<String>> {
        self.masked
            .get(&format!("{schema}.{table}"))
            .filter(|s| !s.is_empty())
    }

    /// Every masked column as `schema.table.column`.
    pub fn masked_columns(&self) -> impl Iterator<Item = String> + '_ {
        self.masked
            .iter()
            .flat_map(|(t, cols)| cols.iter().map(move |c| format!("{t}.{c}")))
    }

    /// The row filter of `schema.table`.
    pub fn row_filter(&self, schema: &str, table: &str) -> Option<&str> {
        self.row_filters
            .get(&format!("{schema}.{table}"))
            .map(String::as_str)
    }

    /// Every row filter, keyed by `schema.table`.
    pub fn row_filters(&self) -> &BTreeMap<String, String> {
        &self.row_filters
    }
}

/// How a query reached the service (recorded in the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Pgwire,
    Http,
    Mcp,
    Cli,
    /// A model build or data test (`walden models`, the scheduler).
    Models,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Pgwire => "pgwire",
            Protocol::Models => "models",
            Protocol::Http => "http",
            Protocol::Mcp => "mcp",
            Protocol::Cli => "cli",
        }
    }
}
