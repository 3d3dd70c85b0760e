//! The tools: their descriptions and input schemas, argument checking, and what each does.
//!
//! Every tool runs SQL through [`QueryService::execute`] as the calling principal with
//! [`Protocol::Mcp`], so grants, masks, row filters, limits and the audit log apply exactly
//! as they do over pgwire and HTTP. Values that come from the caller and are not SQL (table
//! and namespace names, search words) are never spliced into SQL: they are bound as
//! parameters, and a table is only named in SQL after it was found in `walden.tables`,
//! then as quoted identifiers.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{ParamValues, ScalarValue};
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};
use walden_query::{AsOf, Cancel, Outcome, Principal, Protocol, QueryError, QueryService, Summary};

use super::format::{self, Fence};

/// Longest table, namespace or cursor argument accepted.
pub const MAX_NAME_CHARS: usize = 256;
/// Longest `search_catalog` query accepted.
pub const MAX_SEARCH_CHARS: usize = 200;
/// Most rows `query` shows (`max_rows`); the principal's `max_rows` may be lower.
pub const MAX_ROWS: u64 = 1000;
/// Default and largest `max_chars` of an answer.
pub const DEFAULT_CHARS: u64 = 8_000;
pub const MAX_CHARS: u64 = 100_000;
/// Rows a describe reads to find example values.
const EXAMPLE_SAMPLE_ROWS: usize = 200;

/// The tools' names, in the order they are listed.
pub const TOOL_NAMES: [&str; 6] = [
    "list_tables",
    "search_catalog",
    "describe_table",
    "sample_rows",
    "query",
    "explain",
];

fn schema(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(o) => Arc::new(o),
        _ => Arc::new(JsonObject::new()),
    }
}

fn read_only(title: &str) -> ToolAnnotations {
    let mut a = ToolAnnotations::with_title(title);
    a.read_only_hint = Some(true);
    a.destructive_hint = Some(false);
    a.idempotent_hint = Some(true);
    a.open_world_hint = Some(false);
    a
}

/// The tool definitions shown to the client.
pub fn definitions() -> Vec<Tool> {
    let table_args = json!({
        "table": { "type": "string", "maxLength": MAX_NAME_CHARS,
            "description": "The table, view or model: `namespace.name` (e.g. `public.orders`) or just `name` when it is unique. Names are exact, lower-case Postgres names as list_tables shows them." },
        "namespace": { "type": "string", "maxLength": MAX_NAME_CHARS,
            "description": "Optional namespace (schema) of `table`, when `table` is a bare name." }
    });
    let format_arg = json!({ "type": "string", "enum": ["text", "json"], "default": "text",
        "description": "`text`: a compact table (`a | b` rows, NULL for nulls, long values cut at 120 characters). `json`: {\"columns\": [{name, type}], \"rows\": [[...]]} with decimals as exact strings." });
    let mut describe_props = table_args.as_object().cloned().unwrap_or_default();
    describe_props.insert(
        "examples".into(),
        json!({ "type": "integer", "minimum": 0, "maximum": 5, "default": 3,
            "description": "Distinct example values to show per column (from a sample of the table's first rows); 0 for none." }),
    );
    let mut sample_props = table_args.as_object().cloned().unwrap_or_default();
    sample_props.insert(
        "rows".into(),
        json!({ "type": "integer", "minimum": 1, "maximum": 50, "default": 10,
            "description": "How many rows to return (at most 50, and at most your principal's row limit)." }),
    );
    sample_props.insert("format".into(), format_arg.clone());
    vec![
        Tool::new(
            "list_tables",
            "List the tables, views and models you may query, one line each: `namespace.name`, kind (table or view), row count, primary key, the model that builds it, and the start of its description. Sorted by namespace and name; paginated: pass the returned `next_cursor` to get the next page. Start here, or use search_catalog when you know what you are looking for.",
            schema(json!({
                "type": "object",
                "properties": {
                    "namespace": { "type": "string", "maxLength": MAX_NAME_CHARS,
                        "description": "Only this namespace (schema), e.g. `public` or `marts`." },
                    "cursor": { "type": "string", "maxLength": MAX_NAME_CHARS,
                        "description": "The `next_cursor` of the previous page; omit for the first page." },
                    "limit": { "type": "integer", "minimum": 1, "maximum": 500, "default": 100,
                        "description": "Tables per page." }
                },
                "additionalProperties": false
            })),
        )
        .with_annotations(read_only("List tables")),
        Tool::new(
            "search_catalog",
            "Find tables, views and models by keywords over their names, column names and descriptions. Results are ranked: a match in a table or model name ranks above a column-name match, which ranks above a match in a description; every word of the query counts. Each result names the matching columns. Use this to find the right table among many before describe_table.",
            schema(json!({
                "type": "object",
                "properties": {
                    "query": { "type": "string", "minLength": 1, "maxLength": MAX_SEARCH_CHARS,
                        "description": "Keywords, e.g. `customer revenue` or `order status`. Case does not matter." },
                    "limit": { "type": "integer", "minimum": 1, "maximum": 100, "default": 20,
                        "description": "Most results to return." }
                },
                "required": ["query"],
                "additionalProperties": false
            })),
        )
        .with_annotations(read_only("Search the catalog")),
        Tool::new(
            "describe_table",
            "Describe one table, view or model: its columns with SQL types, nullability, primary key, masked columns and descriptions, a few example values per column, the row count, freshness (the replication LSN and commit time it is as of), and for models what they are built from (lineage). Call it before writing SQL against a table.",
            schema(json!({
                "type": "object",
                "properties": describe_props,
                "required": ["table"],
                "additionalProperties": false
            })),
        )
        .with_annotations(read_only("Describe a table")),
        Tool::new(
            "sample_rows",
            "Return the first few rows of a table, view or model (`SELECT * ... LIMIT rows`), to see what its values look like. Masked columns come back as NULL.",
            schema(json!({
                "type": "object",
                "properties": sample_props,
                "required": ["table"],
                "additionalProperties": false
            })),
        )
        .with_annotations(read_only("Sample rows")),
        Tool::new(
            "query",
            "Run one read-only SQL query (DataFusion with PostgreSQL syntax: SELECT, WITH, joins, aggregates, window functions; name tables as `namespace.name`). The answer is a compact text table (or JSON) of at most `max_rows` rows and `max_chars` characters; when rows are left out it says so and gives the total row count when known. It says what lake state (replication LSN and commit time) the answer is as of. Writes, DDL, file access and settings are refused. On an error the message says what was wrong and, for unknown tables or columns, the names that do exist. Prefer aggregates and filters over reading many rows.",
            schema(json!({
                "type": "object",
                "properties": {
                    "sql": { "type": "string", "minLength": 1,
                        "description": "Exactly one SQL statement, e.g. `SELECT status, count(*) FROM public.orders GROUP BY status`." },
                    "max_rows": { "type": "integer", "minimum": 1, "maximum": MAX_ROWS, "default": 100,
                        "description": "Most rows to show; the rest are counted, not shown." },
                    "max_chars": { "type": "integer", "minimum": 200, "maximum": MAX_CHARS, "default": DEFAULT_CHARS,
                        "description": "Most characters of the table or JSON shown; whole rows past it are left out." },
                    "format": format_arg
                },
                "required": ["sql"],
                "additionalProperties": false
            })),
        )
        .with_annotations(read_only("Query")),
        Tool::new(
            "explain",
            "Show how a read-only SQL query would run, without running it: the logical and physical plan (DataFusion EXPLAIN) and the bytes of the Iceberg data and delete files of every table it reads, from the lake's metadata. That byte count is an upper bound: filters on primary keys and statistics, and reading only the selected columns, usually read less.",
            schema(json!({
                "type": "object",
                "properties": {
                    "sql": { "type": "string", "minLength": 1,
                        "description": "The query to explain (without the EXPLAIN keyword)." }
                },
                "required": ["sql"],
                "additionalProperties": false
            })),
        )
        .with_annotations(read_only("Explain a query")),
    ]
}

/// What a tool call returns: text for the model, or an error the model can act on.
pub type ToolResult = Result<String, String>;

/// A tool's arguments, checked against what it accepts.
struct Args<'a> {
    tool: &'a str,
    map: JsonObject,
}

impl<'a> Args<'a> {
    fn new(tool: &'a str, args: Option<JsonObject>, allowed: &[&str]) -> Result<Self, String> {
        let map = args.unwrap_or_default();
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "{tool} has no argument {unknown:?}; its arguments are: {}",
                allowed.join(", ")
            ));
        }
        Ok(Self { tool, map })
    }

    fn string(&self, key: &str, max_chars: usize) -> Result<Option<String>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.chars().count() > max_chars => Err(format!(
                "{}: argument {key} is {} characters long; at most {max_chars} are accepted",
                self.tool,
                s.chars().count()
            )),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "{}: argument {key} must be a string, not {other}",
                self.tool
            )),
        }
    }

    fn required(&self, key: &str, max_chars: usize) -> Result<String, String> {
        match self.string(key, max_chars)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(format!(
                "{}: argument {key} is required (a non-empty string)",
                self.tool
            )),
        }
    }

    fn int(&self, key: &str, min: u64, max: u64, default: u64) -> Result<u64, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => Ok(v),
                _ => Err(format!(
                    "{}: argument {key} must be an integer from {min} to {max}, not {n}",
                    self.tool
                )),
            },
            Some(other) => Err(format!(
                "{}: argument {key} must be an integer from {min} to {max}, not {other}",
                self.tool
            )),
        }
    }

    fn choice(&self, key: &str, allowed: &[&'static str]) -> Result<&'static str, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(allowed[0]),
            Some(Value::String(s)) => allowed.iter().find(|a| **a == s).copied().ok_or_else(|| {
                format!(
                    "{}: argument {key} must be one of {}, not {s:?}",
                    self.tool,
                    allowed.join(", ")
                )
            }),
            Some(other) => Err(format!(
                "{}: argument {key} must be one of {}, not {other}",
                self.tool,
                allowed.join(", ")
            )),
        }
    }
}

/// A row of `walden.tables`.
#[derive(Debug, Clone)]
pub struct TableRow {
    pub namespace: String,
    pub name: String,
    pub kind: String,
    pub rows: Option<String>,
    pub data_files: Option<String>,
    pub size_bytes: Option<i64>,
    pub last_commit: Option<String>,
    pub lsn: Option<String>,
    pub primary_key: Option<String>,
    pub description: Option<String>,
    pub model: Option<String>,
    pub built_from: Option<String>,
}

impl TableRow {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// `"namespace"."name"`: the table named in SQL, whatever its characters.
    pub fn sql_name(&self) -> String {
        format!("{}.{}", ident(&self.namespace), ident(&self.name))
    }
}

/// A row of `walden.columns`.
#[derive(Debug, Clone)]
pub struct ColumnRow {
    pub namespace: String,
    pub table: String,
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
    pub primary_key: bool,
    pub masked: bool,
    pub description: Option<String>,
}

/// A quoted SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// An answer read to the end within the caps, with its summary.
pub struct Collected {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub summary: Summary,
}

/// `as of LSN 0/16B3748 (lake commit 2024-01-01T00:00:00.000Z)`.
pub fn as_of_text(a: &AsOf) -> String {
    match (a.lsn_text(), crate::http::as_of_time(a)) {
        (Some(l), Some(t)) => format!("as of LSN {l} (lake commit {t})"),
        (Some(l), None) => format!("as of LSN {l}"),
        _ => "as of the lake's current state (no replication progress is recorded)".into(),
    }
}

/// The tools of one principal.
pub struct Toolbox<'a> {
    pub service: &'a QueryService,
    pub principal: &'a Arc<Principal>,
}

impl Toolbox<'_> {
    /// Runs `sql` as the principal (audited) and reads the whole answer within the caps.
    pub async fn run(
        &self,
        sql: &str,
        params: Option<ParamValues>,
        cancel: Option<Cancel>,
    ) -> Result<Collected, QueryError> {
        let mut answer = self
            .service
            .execute(self.principal, Protocol::Mcp, sql, params, cancel)
            .await?;
        let schema = answer.schema();
        let batches = answer.collect().await;
        let summary = answer.finish().await;
        Ok(Collected {
            schema,
            batches: batches?,
            summary,
        })
    }

    /// Records a refused tool call (bad arguments, unknown tool) in the audit log.
    pub async fn audit_refusal(&self, what: &str, message: &str) {
        self.service
            .audit_command(
                self.principal.name(),
                Protocol::Mcp,
                what,
                Outcome::Refused,
                Some(message.to_string()),
            )
            .await;
    }

    /// Every table the principal sees, with the answer's "as of".
    pub async fn tables(&self) -> Result<(Vec<TableRow>, AsOf), QueryError> {
        let c = self
            .run(
                "SELECT namespace, name, kind, rows, data_files, size_bytes, last_commit, lsn, \
                 primary_key, description, model, built_from FROM walden.tables \
                 ORDER BY namespace, name",
                None,
                None,
            )
            .await?;
        let rows = format::rows(&c.batches).map_err(QueryError::Resources)?;
        let out = rows
            .into_iter()
            .map(|mut r| {
                let mut take = |i: usize| r.get_mut(i).and_then(Option::take);
                TableRow {
                    namespace: take(0).unwrap_or_default(),
                    name: take(1).unwrap_or_default(),
                    kind: take(2).unwrap_or_default(),
                    rows: take(3),
                    data_files: take(4),
                    size_bytes: take(5).and_then(|s| s.parse().ok()),
                    last_commit: take(6),
                    lsn: take(7),
                    primary_key: take(8),
                    description: take(9),
                    model: take(10),
                    built_from: take(11),
                }
            })
            .collect();
        Ok((out, c.summary.as_of))
    }

    /// The columns of one table (`Some((namespace, name))`, bound as parameters) or of all.
    pub async fn columns(&self, of: Option<(&str, &str)>) -> Result<Vec<ColumnRow>, QueryError> {
        let base = "SELECT namespace, table_name, column_name, data_type, nullable, primary_key, \
                    masked, description FROM walden.columns";
        let c = match of {
            Some((ns, t)) => {
                self.run(
                    &format!("{base} WHERE namespace = $1 AND table_name = $2 ORDER BY ordinal"),
                    Some(ParamValues::from(vec![
                        ScalarValue::Utf8(Some(ns.to_string())),
                        ScalarValue::Utf8(Some(t.to_string())),
                    ])),
                    None,
                )
                .await?
            }
            None => {
                self.run(
                    &format!("{base} ORDER BY namespace, table_name, ordinal"),
                    None,
                    None,
                )
                .await?
            }
        };
        let rows = format::rows(&c.batches).map_err(QueryError::Resources)?;
        Ok(rows
            .into_iter()
            .map(|mut r| {
                let mut take = |i: usize| r.get_mut(i).and_then(Option::take);
                ColumnRow {
                    namespace: take(0).unwrap_or_default(),
                    table: take(1).unwrap_or_default(),
                    name: take(2).unwrap_or_default(),
                    data_type: take(3).unwrap_or_default(),
                    nullable: take(4).as_deref() == Some("true"),
                    primary_key: take(5).as_deref() == Some("true"),
                    masked: take(6).as_deref() == Some("true"),
                    description: take(7),
                }
            })
            .collect())
    }

    /// Finds the table an argument names, or says which names exist.
    pub async fn resolve(&self, table: &str, namespace: Option<&str>) -> Result<TableRow, String> {
        let (tables, _) = self.tables().await.map_err(|e| e.to_string())?;
        let unquote = |s: &str| {
            let s = s.trim();
            s.strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .map(|s| s.replace("\"\"", "\""))
                .unwrap_or_else(|| s.to_string())
        };
        let wanted = unquote(table);
        let found: Vec<&TableRow> = match namespace {
            Some(ns) => {
                let ns = unquote(ns);
                tables
                    .iter()
                    .filter(|t| t.namespace == ns && t.name == wanted)
                    .collect()
            }
            None => {
                let exact: Vec<&TableRow> = tables
                    .iter()
                    .filter(|t| t.qualified() == wanted || t.name == wanted)
                    .collect();
                if exact.is_empty()
                    && let Some((ns, name)) = table.split_once('.')
                {
                    let (ns, name) = (unquote(ns), unquote(name));
                    tables
                        .iter()
                        .filter(|t| t.namespace == ns && t.name == name)
                        .collect()
                } else {
                    exact
                }
            }
        };
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => {
                let shown = match namespace {
                    Some(ns) => format!("{ns}.{table}"),
                    None => table.to_string(),
                };
                Err(format!(
                    "no table, view or model named {shown:?} is visible to you. {}",
                    closest_tables(&tables, &shown)
                ))
            }
            many => Err(format!(
                "{table:?} is ambiguous: {}; pass it as namespace.name",
                many.iter()
                    .map(|t| t.qualified())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Runs one tool. `Err` texts are for the model (shown with `isError`).
    pub async fn call(&self, name: &str, args: Option<JsonObject>, cancel: Cancel) -> ToolResult {
        match name {
            "list_tables" => {
                let a = Args::new(name, args, &["namespace", "cursor", "limit"])?;
                self.list_tables(
                    a.string("namespace", MAX_NAME_CHARS)?,
                    a.string("cursor", MAX_NAME_CHARS)?,
                    a.int("limit", 1, 500, 100)? as usize,
                )
                .await
            }
            "search_catalog" => {
                let a = Args::new(name, args, &["query", "limit"])?;
                self.search(
                    &a.required("query", MAX_SEARCH_CHARS)?,
                    a.int("limit", 1, 100, 20)? as usize,
                )
                .await
            }
            "describe_table" => {
                let a = Args::new(name, args, &["table", "namespace", "examples"])?;
                let t = self
                    .resolve(
                        &a.required("table", MAX_NAME_CHARS)?,
                        a.string("namespace", MAX_NAME_CHARS)?.as_deref(),
                    )
                    .await?;
                self.describe(&t, a.int("examples", 0, 5, 3)? as usize)
                    .await
                    .map(|d| d.text)
            }
            "sample_rows" => {
                let a = Args::new(name, args, &["table", "namespace", "rows", "format"])?;
                let t = self
                    .resolve(
                        &a.required("table", MAX_NAME_CHARS)?,
                        a.string("namespace", MAX_NAME_CHARS)?.as_deref(),
                    )
                    .await?;
                let rows = a.int("rows", 1, 50, 10)?;
                let json = a.choice("format", &["text", "json"])? == "json";
                self.query(
                    &format!("SELECT * FROM {} LIMIT {rows}", t.sql_name()),
                    rows,
                    DEFAULT_CHARS as usize,
                    json,
                    cancel,
                )
                .await
            }
            "query" => {
                let a = Args::new(name, args, &["sql", "max_rows", "max_chars", "format"])?;
                let sql = a.required("sql", usize::MAX)?;
                let max_rows = a.int("max_rows", 1, MAX_ROWS, 100)?;
                let max_chars = a.int("max_chars", 200, MAX_CHARS, DEFAULT_CHARS)? as usize;
                let json = a.choice("format", &["text", "json"])? == "json";
                self.query(&sql, max_rows, max_chars, json, cancel).await
            }
            "explain" => {
                let a = Args::new(name, args, &["sql"])?;
                self.explain(&a.required("sql", usize::MAX)?).await
            }
            other => Err(format!(
                "unknown tool {other:?}; the tools are {}",
                TOOL_NAMES.join(", ")
            )),
        }
    }

    async fn list_tables(
        &self,
        namespace: Option<String>,
        cursor: Option<String>,
        limit: usize,
    ) -> ToolResult {
        let offset = match cursor.as_deref() {
            None => 0,
            Some(c) => c
                .strip_prefix("offset:")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    format!(
                        "list_tables: cursor {c:?} is not one this server returned; pass the \
                         next_cursor of the previous page, or omit it for the first page"
                    )
                })?,
        };
        let (tables, as_of) = self.tables().await.map_err(|e| e.to_string())?;
        let tables: Vec<&TableRow> = tables
            .iter()
            .filter(|t| namespace.as_ref().is_none_or(|ns| &t.namespace == ns))
            .collect();
        let total = tables.len();
        let page: Vec<&&TableRow> = tables.iter().skip(offset).take(limit).collect();
        let mut body = String::new();
        for t in &page {
            body.push_str(&table_line(t));
            body.push('\n');
        }
        if page.is_empty() {
            body.push_str("(no tables)\n");
        }
        let mut out = format!(
            "{} of {total} tables{} (from {}), {}.\n",
            page.len(),
            namespace
                .as_deref()
                .map(|n| format!(" in namespace {n:?}"))
                .unwrap_or_default(),
            offset + 1,
            as_of_text(&as_of)
        );
        out.push_str(&Fence::wrap(&body, "a list of tables"));
        if offset + page.len() < total {
            out.push_str(&format!(
                "\nnext_cursor: offset:{} (pass it as cursor for the next page)",
                offset + page.len()
            ));
        }
        Ok(out)
    }

    async fn search(&self, query: &str, limit: usize) -> ToolResult {
        let words: Vec<String> = query
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .take(20)
            .collect();
        if words.is_empty() {
            return Err(
                "search_catalog: the query has no words; pass keywords such as `orders status`"
                    .into(),
            );
        }
        let (tables, as_of) = self.tables().await.map_err(|e| e.to_string())?;
        let columns = self.columns(None).await.map_err(|e| e.to_string())?;
        let mut by_table: BTreeMap<(String, String), Vec<&ColumnRow>> = BTreeMap::new();
        for c in &columns {
            by_table
                .entry((c.namespace.clone(), c.table.clone()))
                .or_default()
                .push(c);
        }
        let mut hits = Vec::new();
        for t in &tables {
            let cols = by_table
                .get(&(t.namespace.clone(), t.name.clone()))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let (score, matched) = score(t, cols, &words);
            if score > 0 {
                hits.push((score, t, matched));
            }
        }
        hits.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| a.1.qualified().cmp(&b.1.qualified()))
        });
        let total = hits.len();
        let mut body = String::new();
        for (score, t, matched) in hits.iter().take(limit) {
            body.push_str(&format!("{} (score {score})", table_line(t)));
            if !matched.is_empty() {
                body.push_str(&format!("\n    matching columns: {}", matched.join(", ")));
            }
            body.push('\n');
        }
        if total == 0 {
            body.push_str("(nothing matched)\n");
        }
        let mut out = format!(
            "{} of {total} matching tables for {:?}, best first, {}.\n",
            total.min(limit),
            words.join(" "),
            as_of_text(&as_of)
        );
        out.push_str(&Fence::wrap(&body, "catalog search results"));
        if total == 0 {
            out.push_str(
                "\nNo table, column or description contains these words; try other words or \
                 list_tables.",
            );
        }
        Ok(out)
    }

    /// The description of one table (describe_table and the table resources).
    pub async fn describe(&self, t: &TableRow, examples: usize) -> Result<Described, String> {
        let columns = self
            .columns(Some((&t.namespace, &t.name)))
            .await
            .map_err(|e| e.to_string())?;
        let mut values: Vec<Vec<String>> = vec![Vec::new(); columns.len()];
        let mut note = None;
        if examples > 0 && !columns.is_empty() {
            let list = columns
                .iter()
                .map(|c| ident(&c.name))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT {list} FROM {} LIMIT {EXAMPLE_SAMPLE_ROWS}",
                t.sql_name()
            );
            match self.run(&sql, None, None).await {
                Ok(c) => {
                    for b in &c.batches {
                        let cells = format::cells(b)?;
                        for (i, col) in cells.into_iter().enumerate() {
                            let Some(seen) = values.get_mut(i) else {
                                continue;
                            };
                            for v in col.into_iter().flatten() {
                                if seen.len() >= examples {
                                    break;
                                }
                                let (v, _) = format::one_line(&v, 40);
                                if !seen.contains(&v) {
                                    seen.push(v);
                                }
                            }
                        }
                    }
                }
                Err(e) => note = Some(format!("example values are unavailable: {e}")),
            }
        }
        let mut body = format!("# {} ({})\n", t.qualified(), t.kind);
        if let Some(d) = &t.description {
            body.push_str(&format!("{d}\n"));
        }
        body.push('\n');
        let mut facts = Vec::new();
        if let Some(r) = &t.rows {
            facts.push(format!("rows: {r}"));
        }
        facts.push(format!(
            "primary key: {}",
            t.primary_key.as_deref().unwrap_or("none")
        ));
        if let Some(f) = &t.data_files {
            facts.push(format!("data files: {f}"));
        }
        if let Some(b) = t.size_bytes {
            facts.push(format!("size: {}", human_bytes(b)));
        }
        body.push_str(&format!("- {}\n", facts.join(" · ")));
        let lake = self
            .service
            .as_of()
            .map(|a| as_of_text(&a))
            .unwrap_or_else(|e| format!("of unknown freshness ({e})"));
        body.push_str(&format!(
            "- freshness: the lake is {lake}; this table was last written{}{}\n",
            t.last_commit
                .as_deref()
                .map(|c| format!(" at {c}"))
                .unwrap_or_else(|| " (never)".into()),
            t.lsn
                .as_deref()
                .map(|l| format!(", as of source LSN {l}"))
                .unwrap_or_default()
        ));
        if let Some(m) = &t.model {
            body.push_str(&format!("- built by model: {m}\n"));
        }
        if let Some(b) = &t.built_from {
            body.push_str(&format!("- built from (lineage): {b}\n"));
        }
        body.push_str(&format!("- in SQL: {}\n\n## columns\n", t.qualified()));
        for (c, ex) in columns.iter().zip(&values) {
            let mut flags = Vec::new();
            if c.primary_key {
                flags.push("primary key");
            }
            if !c.nullable {
                flags.push("not null");
            }
            if c.masked {
                flags.push("masked: always NULL for you");
            }
            body.push_str(&format!("- {} {}", c.name, c.data_type));
            if !flags.is_empty() {
                body.push_str(&format!(" ({})", flags.join(", ")));
            }
            if let Some(d) = &c.description {
                body.push_str(&format!(" — {d}"));
            }
            if !ex.is_empty() {
                body.push_str(&format!("; e.g. {}", ex.join(", ")));
            }
            body.push('\n');
        }
        let mut text = format!("Table {} with {} columns.\n", t.qualified(), columns.len());
        text.push_str(&Fence::wrap(&body, "a table description"));
        if let Some(n) = note {
            text.push_str(&format!("\n{n}"));
        }
        Ok(Described {
            text,
            markdown: body,
        })
    }

    /// Runs `sql` and renders at most `max_rows` rows in `max_chars` characters.
    pub async fn query(
        &self,
        sql: &str,
        max_rows: u64,
        max_chars: usize,
        json: bool,
        cancel: Cancel,
    ) -> ToolResult {
        let mut answer = match self
            .service
            .execute(self.principal, Protocol::Mcp, sql, None, Some(cancel))
            .await
        {
            Ok(a) => a,
            Err(e) => return Err(self.explain_error(&e).await),
        };
        let schema = answer.schema();
        let mut kept = Vec::new();
        let mut kept_rows = 0u64;
        let mut seen = 0u64;
        let mut failure = None;
        while let Some(b) = answer.next_batch().await {
            match b {
                Ok(b) => {
                    let n = b.num_rows() as u64;
                    seen += n;
                    if kept_rows < max_rows {
                        let take = n.min(max_rows - kept_rows);
                        kept.push(b.slice(0, take as usize));
                        kept_rows += take;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let summary = answer.finish().await;
        if let Some(e) = failure {
            return Err(self.explain_error(&e).await);
        }
        let rendered = if json {
            let rows = crate::http::json_rows(&schema, &kept).map_err(|e| e.1)?;
            format::json_table(&schema, &rows, max_chars)
        } else {
            let rows = format::rows(&kept)?;
            format::text_table(&schema, &rows, max_chars)
        };
        let shown = rendered.rows_shown as u64;
        let total = if summary.truncated {
            format!("at least {seen}")
        } else {
            seen.to_string()
        };
        let mut out = if shown == seen && !summary.truncated {
            format!("{seen} rows, {}.\n", as_of_text(&summary.as_of))
        } else {
            format!(
                "TRUNCATED: showing {shown} of {total} rows, {}.\n",
                as_of_text(&summary.as_of)
            )
        };
        out.push_str(&Fence::wrap(&rendered.body, "query results"));
        let mut notes = Vec::new();
        if shown < kept_rows {
            notes.push(format!(
                "rows after the first {shown} were left out to stay within max_chars={max_chars}"
            ));
        }
        if kept_rows < seen {
            notes.push(format!(
                "rows after the first {kept_rows} were left out at max_rows={max_rows}"
            ));
        }
        if summary.truncated {
            notes.push(format!(
                "the query stopped at your principal's limit ({} rows / {} bytes), so the total \
                 is unknown",
                summary.max_rows, summary.max_bytes
            ));
        }
        if rendered.cells_cut {
            notes.push(format!(
                "values longer than {} characters were cut (…); select them alone or with \
                 substr() to read them whole",
                format::MAX_CELL_CHARS
            ));
        }
        if !notes.is_empty() {
            out.push_str(&format!(
                "\nTruncated: {}. Use aggregates, WHERE, LIMIT/OFFSET or a larger max_rows / \
                 max_chars to see more.",
                notes.join("; ")
            ));
        }
        Ok(out)
    }

    async fn explain(&self, sql: &str) -> ToolResult {
        let trimmed = sql.trim_start();
        if trimmed
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("explain"))
        {
            return Err("explain: pass the query itself, without the EXPLAIN keyword".to_string());
        }
        let c = match self.run(&format!("EXPLAIN {sql}"), None, None).await {
            Ok(c) => c,
            Err(e) => return Err(self.explain_error(&e).await),
        };
        let rows = format::rows(&c.batches)?;
        let mut plan = String::new();
        let mut scanned: Vec<(String, String)> = Vec::new();
        for r in &rows {
            let kind = r.first().cloned().flatten().unwrap_or_default();
            let text = r.get(1).cloned().flatten().unwrap_or_default();
            plan.push_str(&format!("## {kind}\n{text}\n"));
            if kind == "logical_plan" {
                for line in text.lines() {
                    if let Some(rest) = line.trim_start().strip_prefix("TableScan: ") {
                        let name = rest.split_whitespace().next().unwrap_or_default();
                        let parts: Vec<String> = name
                            .split('.')
                            .map(|p| p.trim_matches('"').to_string())
                            .collect();
                        let (ns, t) = match parts.as_slice() {
                            [t] => ("public".to_string(), t.clone()),
                            [.., ns, t] => (ns.clone(), t.clone()),
                            [] => continue,
                        };
                        if !scanned.contains(&(ns.clone(), t.clone())) {
                            scanned.push((ns, t));
                        }
                    }
                }
            }
        }
        let (tables, as_of) = self.tables().await.map_err(|e| e.to_string())?;
        let mut total = 0i64;
        let mut lines = Vec::new();
        for (ns, t) in &scanned {
            match tables.iter().find(|x| &x.namespace == ns && &x.name == t) {
                Some(x) => {
                    let b = x.size_bytes.unwrap_or(0);
                    total += b;
                    lines.push(format!(
                        "{ns}.{t}: {} in {} files",
                        human_bytes(b),
                        x.data_files.as_deref().unwrap_or("0")
                    ));
                }
                None => lines.push(format!("{ns}.{t}: a system table (no files)")),
            }
        }
        let mut out = format!(
            "Would read at most {} ({total} bytes) of Iceberg files from {} tables, {}:\n{}\n",
            human_bytes(total),
            scanned.len(),
            as_of_text(&as_of),
            lines
                .iter()
                .map(|l| format!("- {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        out.push_str(
            "This is the sum of the current snapshot's data and delete file sizes of each \
             table read; Parquet column projection and row-group statistics usually read less.\n",
        );
        out.push_str(&Fence::wrap(
            &plan,
            "a query plan, which quotes names and literals",
        ));
        Ok(out)
    }

    /// A query error as a message the model can act on.
    async fn explain_error(&self, e: &QueryError) -> String {
        let message = e.to_string();
        let mut out = format!("The query failed: {message}");
        let lower = message.to_lowercase();
        match e {
            QueryError::Refused(_) => out.push_str(
                "\nwalden serves read-only SQL: one SELECT / WITH / VALUES / EXPLAIN statement \
                 over the tables list_tables shows; writes, DDL, settings and file access are \
                 refused.",
            ),
            QueryError::Parse(_) => out.push_str(
                "\nThe dialect is DataFusion SQL with PostgreSQL syntax (see the walden://guide \
                 resource); send exactly one statement.",
            ),
            _ => {}
        }
        if lower.contains("not found") && lower.contains("table") {
            let name = quoted_after(&message, "table '").unwrap_or_default();
            if let Ok((tables, _)) = self.tables().await {
                out.push_str(&format!("\n{}", closest_tables(&tables, &name)));
            }
        } else if let Some(field) = field_name(&message)
            && let Ok(columns) = self.columns(None).await
        {
            let mut scored: Vec<(f64, String)> = columns
                .iter()
                .map(|c| {
                    (
                        strsim::jaro_winkler(&field.to_lowercase(), &c.name.to_lowercase()),
                        format!("{}.{}.{}", c.namespace, c.table, c.name),
                    )
                })
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            scored.dedup_by(|a, b| a.1 == b.1);
            out.push_str(&format!(
                "\nColumns you can see with the closest names: {}. describe_table lists a \
                 table's columns.",
                scored
                    .iter()
                    .take(10)
                    .map(|(_, n)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out
    }
}

/// What [`Toolbox::describe`] returns: the tool's text and the resource's markdown.
pub struct Described {
    pub text: String,
    pub markdown: String,
}

fn table_line(t: &TableRow) -> String {
    let mut s = format!("{} · {}", t.qualified(), t.kind);
    if let Some(r) = &t.rows {
        s.push_str(&format!(" · {r} rows"));
    }
    if let Some(k) = &t.primary_key {
        s.push_str(&format!(" · key {k}"));
    }
    if let Some(m) = &t.model {
        s.push_str(&format!(" · model {m}"));
    }
    if let Some(d) = &t.description {
        s.push_str(&format!(" — {}", format::one_line(d, 100).0));
    }
    s
}

/// A table's rank for `words` and the columns that matched: per word, an exact table or
/// model name 100, a table or model name containing it 40, an exact column name 25, a
/// column name containing it 15, the table's description 10, a column's description 5.
fn score(t: &TableRow, columns: &[&ColumnRow], words: &[String]) -> (u32, Vec<String>) {
    let mut total = 0;
    let mut matched = Vec::new();
    let name = t.name.to_lowercase();
    let model = t.model.as_deref().unwrap_or_default().to_lowercase();
    let description = t.description.as_deref().unwrap_or_default().to_lowercase();
    for w in words {
        let mut s = 0;
        if name == *w || model == *w || t.qualified().to_lowercase() == *w {
            s += 100;
        } else if name.contains(w.as_str()) || (!model.is_empty() && model.contains(w.as_str())) {
            s += 40;
        }
        if description.contains(w.as_str()) {
            s += 10;
        }
        let mut best_column = 0;
        for c in columns {
            let cn = c.name.to_lowercase();
            let cs = if cn == *w {
                25
            } else if cn.contains(w.as_str()) {
                15
            } else if c
                .description
                .as_deref()
                .is_some_and(|d| d.to_lowercase().contains(w.as_str()))
            {
                5
            } else {
                0
            };
            if cs > 0 && !matched.contains(&c.name) {
                matched.push(c.name.clone());
            }
            best_column = best_column.max(cs);
        }
        s += best_column;
        total += s;
    }
    (total, matched)
}

fn closest_tables(tables: &[TableRow], wanted: &str) -> String {
    if tables.is_empty() {
        return "You can see no tables at all; ask the operator for a grant.".into();
    }
    let w = wanted.to_lowercase();
    let short = w.rsplit('.').next().unwrap_or(&w).to_string();
    let mut scored: Vec<(f64, String)> = tables
        .iter()
        .map(|t| {
            let s = strsim::jaro_winkler(&short, &t.name.to_lowercase())
                .max(strsim::jaro_winkler(&w, &t.qualified().to_lowercase()));
            (s, t.qualified())
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    format!(
        "Tables you can see with the closest names: {}{}. list_tables and search_catalog show \
         the others.",
        scored
            .iter()
            .take(10)
            .map(|(_, n)| n.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if tables.len() > 10 {
            format!(" (of {})", tables.len())
        } else {
            String::new()
        }
    )
}

/// The text between `prefix` and the next `'`.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let start = message.find(prefix)? + prefix.len();
    let rest = &message[start..];
    Some(rest[..rest.find('\'')?].to_string())
}

/// The unknown column of a DataFusion "No field named x" error.
fn field_name(message: &str) -> Option<String> {
    let start = message.find("No field named ")? + "No field named ".len();
    let rest = &message[start..];
    let name: String = rest
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
        .collect();
    let name = name.trim_end_matches('.');
    let name = name.rsplit('.').next().unwrap_or(name);
    (!name.is_empty()).then(|| name.to_string())
}

fn human_bytes(b: i64) -> String {
    let b = b.max(0) as f64;
    if b < 1024.0 {
        format!("{b} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

/// A tool's text as a call result (`is_error` for failures the model should read).
pub fn to_result(r: ToolResult) -> CallToolResult {
    match r {
        Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
        Err(text) => CallToolResult::error(vec![ContentBlock::text(text)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_come_out_of_datafusion_messages() {
        assert_eq!(
            field_name("Schema error: No field named amout. Valid fields are orders.id."),
            Some("amout".into())
        );
        assert_eq!(
            field_name("Schema error: No field named o.amout. Valid fields are"),
            Some("amout".into())
        );
        assert_eq!(
            quoted_after(
                "Error during planning: table 'walden.public.nope' not found",
                "table '"
            ),
            Some("walden.public.nope".into())
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("x; DROP TABLE y"), "\"x; DROP TABLE y\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
