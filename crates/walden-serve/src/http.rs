//! The HTTP API.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/query` | `{"sql": "...", "format": "json" \| "csv" \| "arrow"}`; JSON answers carry column names and types, rows, `truncated` and `as_of` |
//! | `GET /v1/catalog` | every table the principal may see, with row counts and freshness |
//! | `GET /v1/tables/{namespace}/{table}` | one table: columns, types, descriptions, key, rows, freshness |
//! | `GET /healthz` | the process is up |
//! | `GET /readyz` | the lake's catalog can be read |
//! | `GET /metrics` | Prometheus metrics |
//! | `GET /openapi.json` | this API as OpenAPI 3.1 |
//!
//! Every `/v1` route needs `Authorization: Bearer <token>` of a configured principal and
//! goes through the query service: the same guardrails, limits, masks, filters and audit
//! as pgwire. CSV and Arrow answers carry `truncated` and `as_of` in `X-Walden-*` headers.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;
use serde_json::{Value, json};
use walden_query::system::sql_type_name;
use walden_query::{AsOf, Outcome, Protocol, QueryError, QueryService, Summary};

use crate::{Credentials, Principals};

/// The largest request body read.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Renders the Prometheus metrics page.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub service: QueryService,
    pub principals: Arc<Principals>,
    pub metrics: Option<MetricsRender>,
}

/// The API's routes. `extra` routes (e.g. `/mcp`) can be merged by the caller.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/query", post(query))
        .route("/v1/catalog", get(catalog))
        .route("/v1/tables/{namespace}/{table}", get(table))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics_page))
        .route("/openapi.json", get(openapi))
        // Bodies up to 16 MiB reach the service, which refuses SQL over the principal's
        // max_query_bytes with a clear, audited message; larger ones get 413 here.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// An API error: a status and a JSON body `{"error": "..."}`.
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"walden\""),
            );
        }
        r
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match &e {
            QueryError::Refused(m) if m.contains("max_concurrent_queries") => {
                StatusCode::TOO_MANY_REQUESTS
            }
            QueryError::Refused(_) => StatusCode::FORBIDDEN,
            QueryError::Parse(_) | QueryError::Sql(_) => StatusCode::BAD_REQUEST,
            QueryError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            QueryError::Resources(_) => StatusCode::INSUFFICIENT_STORAGE,
            QueryError::Cancelled => StatusCode::BAD_REQUEST,
            QueryError::Lake(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

async fn authenticate(state: &HttpState, headers: &HeaderMap) -> Result<Credentials, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <token> (a principal's token_env in the \
             configuration)"
                .into(),
        ));
    };
    let token = crate::bearer_token(value);
    match token.and_then(|t| state.principals.by_token(t)) {
        Some(c) => Ok(c.clone()),
        None => {
            state
                .service
                .audit_command(
                    "?",
                    Protocol::Http,
                    "(authentication)",
                    Outcome::Refused,
                    Some("unknown or malformed bearer token".into()),
                )
                .await;
            Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "the bearer token does not belong to any principal".into(),
            ))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
    #[serde(default)]
    format: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Json,
    Csv,
    Arrow,
}

async fn query(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let creds = authenticate(&state, &headers).await?;
    let request: QueryRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "the body must be JSON {{\"sql\": \"...\", \"format\": \"json|csv|arrow\"}}: {e}"
            ),
        )
    })?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = match request.format.as_deref() {
        Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some("arrow") => Format::Arrow,
        Some(other) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("unknown format {other:?}: use json, csv or arrow"),
            ));
        }
        None if accept.contains("text/csv") => Format::Csv,
        None if accept.contains("application/vnd.apache.arrow.stream") => Format::Arrow,
        None => Format::Json,
    };
    let mut answer = state
        .service
        .execute(&creds.principal, Protocol::Http, &request.sql, None, None)
        .await?;
    let schema = answer.schema();
    let batches = answer.collect().await;
    let summary = answer.finish().await;
    let batches = batches?;
    match format {
        Format::Json => Ok(Json(json_answer(&schema, &batches, &summary)?).into_response()),
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                if batches.is_empty() {
                    w.write(&RecordBatch::new_empty(schema.clone()))
                        .map_err(internal)?;
                }
                for b in &batches {
                    w.write(b).map_err(internal)?;
                }
            }
            Ok(with_meta_headers(
                ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response(),
                &summary,
            ))
        }
        Format::Arrow => {
            let mut out = Vec::new();
            {
                let mut w =
                    datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema)
                        .map_err(internal)?;
                for b in &batches {
                    w.write(b).map_err(internal)?;
                }
                w.finish().map_err(internal)?;
            }
            Ok(with_meta_headers(
                (
                    [(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
                    out,
                )
                    .into_response(),
                &summary,
            ))
        }
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn with_meta_headers(mut r: Response, s: &Summary) -> Response {
    let h = r.headers_mut();
    h.insert("x-walden-rows", HeaderValue::from(s.rows));
    h.insert(
        "x-walden-truncated",
        HeaderValue::from_static(if s.truncated { "true" } else { "false" }),
    );
    if let Some(lsn) = s.as_of.lsn_text()
        && let Ok(v) = HeaderValue::from_str(&lsn)
    {
        h.insert("x-walden-as-of-lsn", v);
    }
    if let Some(t) = as_of_time(&s.as_of)
        && let Ok(v) = HeaderValue::from_str(&t)
    {
        h.insert("x-walden-as-of-time", v);
    }
    r
}

pub(crate) fn as_of_time(a: &AsOf) -> Option<String> {
    a.committed_at_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn as_of_json(a: &AsOf) -> Value {
    json!({ "lsn": a.lsn_text(), "committed_at": as_of_time(a) })
}

/// `{"columns": [{"name", "type"}], "rows": [[...]], ...}`: rows as arrays, so duplicate
/// column names survive.
fn json_answer(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    summary: &Summary,
) -> Result<Value, ApiError> {
    let columns: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": sql_type_name(f.data_type()) }))
        .collect();
    let rows = json_rows(schema, batches)?;
    let mut out = json!({
        "columns": columns,
        "rows": rows,
        "row_count": summary.rows,
        "truncated": summary.truncated,
        "as_of": as_of_json(&summary.as_of),
        "duration_ms": (summary.duration.as_secs_f64() * 1e3 * 1000.0).round() / 1000.0,
    });
    if summary.truncated {
        out["truncation"] = json!(format!(
            "the answer was cut at this principal's limit ({} rows / {} bytes); add a \
             LIMIT, filters or aggregates to see the rest",
            summary.max_rows, summary.max_bytes
        ));
    }
    Ok(out)
}

pub(crate) fn json_rows(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<Value>, ApiError> {
    // Unique positional names, so objects map back to positions.
    let renamed = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let n = schema.fields().len();
    let mut rows = Vec::new();
    for b in batches {
        if b.num_rows() == 0 {
            continue;
        }
        // Decimals as exact strings ("2475.00"), not JSON numbers that readers turn into
        // floats.
        let columns = b
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Decimal128(..) | DataType::Decimal256(..) => {
                    datafusion::arrow::compute::cast(c, &DataType::Utf8).map_err(internal)
                }
                _ => Ok(c.clone()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let renamed = Arc::new(Schema::new(
            columns
                .iter()
                .zip(renamed.fields())
                .map(|(c, f)| Field::new(f.name(), c.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let b = RecordBatch::try_new(renamed, columns).map_err(internal)?;
        let mut buf = Vec::new();
        {
            let mut w = datafusion::arrow::json::writer::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut buf);
            w.write(&b).map_err(internal)?;
            w.finish().map_err(internal)?;
        }
        let objects: Vec<serde_json::Map<String, Value>> =
            serde_json::from_slice(&buf).map_err(internal)?;
        for mut o in objects {
            rows.push(Value::Array(
                (0..n)
                    .map(|i| o.remove(&format!("c{i}")).unwrap_or(Value::Null))
                    .collect(),
            ));
        }
    }
    Ok(rows)
}

/// Runs an internal catalog query as the principal and returns rows as objects.
async fn objects(
    state: &HttpState,
    creds: &Credentials,
    sql: &str,
) -> Result<(Vec<serde_json::Map<String, Value>>, AsOf), ApiError> {
    let mut answer = state
        .service
        .execute(&creds.principal, Protocol::Http, sql, None, None)
        .await?;
    let schema = answer.schema();
    let batches = answer.collect().await;
    let summary = answer.finish().await;
    let rows = json_rows(&schema, &batches?)?;
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let out = rows
        .into_iter()
        .map(|r| match r {
            Value::Array(values) => names.iter().cloned().zip(values).collect(),
            _ => serde_json::Map::new(),
        })
        .collect();
    Ok((out, summary.as_of))
}

async fn catalog(
    State(state): State<HttpState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let creds = authenticate(&state, &headers).await?;
    let (tables, as_of) = objects(
        &state,
        &creds,
        "SELECT namespace, name, kind, rows, size_bytes, last_commit, lsn, primary_key, \
         description FROM walden.tables ORDER BY namespace, name",
    )
    .await?;
    Ok(Json(
        json!({ "tables": tables, "as_of": as_of_json(&as_of) }),
    ))
}

async fn table(
    State(state): State<HttpState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let creds = authenticate(&state, &headers).await?;
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let (mut tables, as_of) = objects(
        &state,
        &creds,
        &format!(
            "SELECT namespace, name, kind, rows, data_files, size_bytes, last_commit, lsn, \
             primary_key, description FROM walden.tables WHERE namespace = {} AND name = {}",
            quote(&namespace),
            quote(&name)
        ),
    )
    .await?;
    let Some(mut t) = tables.pop() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no table {namespace}.{name} is visible to you; GET /v1/catalog lists the \
                 ones that are"
            ),
        ));
    };
    let (columns, _) = objects(
        &state,
        &creds,
        &format!(
            "SELECT column_name AS name, data_type AS type, nullable, primary_key, masked, \
             description FROM walden.columns WHERE namespace = {} AND table_name = {} \
             ORDER BY ordinal",
            quote(&namespace),
            quote(&name)
        ),
    )
    .await?;
    t.insert(
        "columns".into(),
        Value::Array(columns.into_iter().map(Value::Object).collect()),
    );
    t.insert("as_of".into(), as_of_json(&as_of));
    Ok(Json(Value::Object(t)))
}

async fn ready(State(state): State<HttpState>) -> Response {
    match state.service.as_of() {
        Ok(a) => (
            StatusCode::OK,
            Json(json!({ "ready": true, "as_of": as_of_json(&a) })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn metrics_page(State(state): State<HttpState>) -> Response {
    match &state.metrics {
        Some(render) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}

async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

/// The OpenAPI 3.1 description of this API.
pub fn openapi_document() -> Value {
    let error = json!({ "$ref": "#/components/schemas/Error" });
    let as_of = json!({ "$ref": "#/components/schemas/AsOf" });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "walden",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Read-only SQL over a lake replicated from PostgreSQL. Every query is \
                planned against the calling principal's catalog, checked, bounded and audited."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"],
                    "properties": { "error": { "type": "string" } } },
                "AsOf": { "type": "object", "description": "What the answer is as of: the lake's replication LSN and that commit's time.",
                    "properties": {
                        "lsn": { "type": ["string", "null"], "examples": ["0/16B3748"] },
                        "committed_at": { "type": ["string", "null"], "format": "date-time" } } },
                "QueryRequest": { "type": "object", "required": ["sql"], "additionalProperties": false,
                    "properties": {
                        "sql": { "type": "string", "description": "One read-only statement (PostgreSQL dialect)." },
                        "format": { "enum": ["json", "csv", "arrow"], "default": "json" } } },
                "QueryAnswer": { "type": "object",
                    "required": ["columns", "rows", "row_count", "truncated", "as_of"],
                    "properties": {
                        "columns": { "type": "array", "items": { "type": "object",
                            "properties": { "name": { "type": "string" }, "type": { "type": "string" } } } },
                        "rows": { "type": "array", "items": { "type": "array" } },
                        "row_count": { "type": "integer" },
                        "truncated": { "type": "boolean", "description": "Rows were left out at the principal's row or byte cap." },
                        "truncation": { "type": "string" },
                        "as_of": as_of,
                        "duration_ms": { "type": "number" } } }
            }
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/v1/query": { "post": {
                "summary": "Run one read-only SQL query",
                "requestBody": { "required": true, "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/QueryRequest" } } } },
                "responses": {
                    "200": { "description": "The answer. CSV and Arrow answers carry X-Walden-Rows, X-Walden-Truncated, X-Walden-As-Of-Lsn and X-Walden-As-Of-Time headers.",
                        "content": {
                            "application/json": { "schema": { "$ref": "#/components/schemas/QueryAnswer" } },
                            "text/csv": {},
                            "application/vnd.apache.arrow.stream": {} } },
                    "400": { "description": "Bad SQL or request", "content": { "application/json": { "schema": error } } },
                    "401": { "description": "Missing or unknown token", "content": { "application/json": { "schema": error } } },
                    "403": { "description": "Refused by a guardrail or grant", "content": { "application/json": { "schema": error } } },
                    "408": { "description": "Over the time limit", "content": { "application/json": { "schema": error } } },
                    "429": { "description": "Too many concurrent queries", "content": { "application/json": { "schema": error } } },
                    "507": { "description": "Over the memory limit", "content": { "application/json": { "schema": error } } } } } },
            "/v1/catalog": { "get": {
                "summary": "Tables visible to the caller, with row counts and freshness",
                "responses": { "200": { "description": "The catalog" },
                    "401": { "description": "Missing or unknown token" } } } },
            "/v1/tables/{namespace}/{table}": { "get": {
                "summary": "One table: columns, types, descriptions, primary key, rows, freshness",
                "parameters": [
                    { "name": "namespace", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "table", "in": "path", "required": true, "schema": { "type": "string" } } ],
                "responses": { "200": { "description": "The table" },
                    "404": { "description": "Not visible to the caller" } } } },
            "/healthz": { "get": { "summary": "Liveness", "security": [],
                "responses": { "200": { "description": "Up" } } } },
            "/readyz": { "get": { "summary": "Readiness: the lake catalog is readable", "security": [],
                "responses": { "200": { "description": "Ready" }, "503": { "description": "Not ready" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "security": [],
                "responses": { "200": { "description": "Metrics" } } } },
            "/openapi.json": { "get": { "summary": "This document", "security": [],
                "responses": { "200": { "description": "OpenAPI 3.1" } } } }
        }
    })
}
