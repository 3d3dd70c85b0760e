//! The `walden` schema: what the lake holds and how fresh it is, as tables.
//!
//! - `walden.tables`: one row per table the principal may see (rows, files, bytes, the
//!   snapshot, its commit time and LSN, primary key, description);
//! - `walden.columns`: one row per column (SQL type, nullability, key, masked, description
//!   from the source's `COMMENT ON COLUMN`);
//! - `walden.replication_status`: per replication stream, the lake LSN and commit time the
//!   lake is as of, and the seconds since;
//! - `walden.audit_log`: the principal's own queries (everyone's for audit readers).
//!
//! Each is built from the session's catalog snapshot when a query names it, so it agrees
//! with the data tables of the same query.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemTable, SchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result as DfResult};
use walden_lake::Lake;

use crate::audit::{AuditLog, audit_schema};
use crate::catalog::CatalogSnapshot;
use crate::format_lsn;
use crate::policy::Principal;

/// The system tables' names.
pub const SYSTEM_TABLES: &[&str] = &[
    "tables",
    "columns",
    "replication_status",
    "audit_log",
    "model_runs",
];

/// The newest model-run history rows `walden.model_runs` shows.
const MODEL_RUN_ROWS: usize = 10_000;

/// Rows of `walden.audit_log` a query can read.
const AUDIT_ROWS: usize = 100_000;

pub(crate) struct SystemSchema {
    lake: Lake,
    snapshot: Arc<CatalogSnapshot>,
    principal: Arc<Principal>,
    audit: Option<AuditLog>,
    stream: Option<String>,
}

impl SystemSchema {
    pub(crate) fn new(
        lake: Lake,
        snapshot: Arc<CatalogSnapshot>,
        principal: Arc<Principal>,
        audit: Option<AuditLog>,
        stream: Option<String>,
    ) -> Self {
        Self {
            lake,
            snapshot,
            principal,
            audit,
            stream,
        }
    }

    fn visible(&self) -> impl Iterator<Item = &Arc<crate::catalog::TableEntry>> {
        self.snapshot
            .tables
            .iter()
            .filter(|(name, _)| self.principal.sees_namespace(&name.namespace))
            .map(|(_, e)| e)
    }

    fn visible_views(&self) -> impl Iterator<Item = &Arc<walden_lake::ViewDef>> {
        self.snapshot
            .views
            .iter()
            .filter(|(name, _)| self.principal.sees_namespace(&name.namespace))
            .map(|(_, v)| v)
    }

    async fn tables(&self) -> DfResult<RecordBatch> {
        let schema = tables_schema();
        let mut ns = StringBuilder::new();
        let mut name = StringBuilder::new();
        let mut kind = StringBuilder::new();
        let mut rows = Int64Builder::new();
        let mut files = Int64Builder::new();
        let mut bytes = Int64Builder::new();
        let mut snapshot_id = Int64Builder::new();
        let mut committed = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut lsn = StringBuilder::new();
        let mut pk = StringBuilder::new();
        let mut description = StringBuilder::new();
        let mut model = StringBuilder::new();
        let mut built_from = StringBuilder::new();
        for entry in self.visible() {
            let table = entry.table(&self.lake).await.map_err(external)?;
            let meta = table.metadata();
            model.append_option(meta.properties().get("walden.model"));
            built_from.append_option(meta.properties().get("walden.depends_on"));
            ns.append_value(&entry.name().namespace);
            name.append_value(&entry.name().name);
            kind.append_value("table");
            let snap = meta.current_snapshot();
            let total = |key: &str| {
                snap.and_then(|s| s.summary().additional_properties.get(key))
                    .and_then(|v| v.parse::<i64>().ok())
            };
            match (total("total-records"), total("total-position-deletes")) {
                (Some(r), d) => rows.append_value(r - d.unwrap_or(0)),
                (None, _) if snap.is_none() => rows.append_value(0),
                (None, _) => rows.append_null(),
            }
            files.append_option(total("total-data-files").or(snap.map(|_| 0)));
            bytes.append_option(total("total-files-size").or(snap.map(|_| 0)));
            snapshot_id.append_option(snap.map(|s| s.snapshot_id()));
            committed.append_option(snap.map(|s| s.timestamp_ms()));
            // Replicated tables record the LSN they are at; model tables the lake LSN
            // their build read ("as of").
            lsn.append_option(
                table
                    .snapshot_property("walden.lsn")
                    .and_then(|l| l.parse::<u64>().ok())
                    .map(format_lsn)
                    .or_else(|| {
                        table
                            .snapshot_property("walden.as_of_lsn")
                            .map(str::to_string)
                    }),
            );
            let schema = meta.current_schema();
            let keys: Vec<String> = schema
                .identifier_field_ids()
                .filter_map(|id| schema.name_by_field_id(id).map(str::to_string))
                .collect();
            pk.append_option((!keys.is_empty()).then(|| keys.join(", ")));
            description.append_option(meta.properties().get("comment"));
        }
        for def in self.visible_views() {
            ns.append_value(&def.name.namespace);
            name.append_value(&def.name.name);
            kind.append_value("view");
            rows.append_null();
            files.append_null();
            bytes.append_null();
            snapshot_id.append_null();
            committed.append_option(
                def.properties
                    .get("walden.built_at_ms")
                    .and_then(|v| v.parse::<i64>().ok()),
            );
            lsn.append_option(def.properties.get("walden.as_of_lsn"));
            pk.append_option(def.properties.get("walden.unique_key"));
            description.append_option(def.properties.get("comment"));
            model.append_option(def.properties.get("walden.model"));
            built_from.append_option(def.properties.get("walden.depends_on"));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ns.finish()),
            Arc::new(name.finish()),
            Arc::new(kind.finish()),
            Arc::new(rows.finish()),
            Arc::new(files.finish()),
            Arc::new(bytes.finish()),
            Arc::new(snapshot_id.finish()),
            Arc::new(committed.finish()),
            Arc::new(lsn.finish()),
            Arc::new(pk.finish()),
            Arc::new(description.finish()),
            Arc::new(model.finish()),
            Arc::new(built_from.finish()),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    async fn columns(&self) -> DfResult<RecordBatch> {
        let mut ns = StringBuilder::new();
        let mut table_name = StringBuilder::new();
        let mut column = StringBuilder::new();
        let mut ordinal = Int32Builder::new();
        let mut data_type = StringBuilder::new();
        let mut nullable = BooleanBuilder::new();
        let mut key = BooleanBuilder::new();
        let mut masked = BooleanBuilder::new();
        let mut description = StringBuilder::new();
        for entry in self.visible() {
            let table = entry.table(&self.lake).await.map_err(external)?;
            let schema = table.metadata().current_schema();
            let keys: Vec<i32> = schema.identifier_field_ids().collect();
            let arrow = table.arrow_schema();
            let hidden = self
                .principal
                .masked(&entry.name().namespace, &entry.name().name);
            for (i, (field, arrow_field)) in schema
                .as_struct()
                .fields()
                .iter()
                .zip(arrow.fields())
                .enumerate()
            {
                ns.append_value(&entry.name().namespace);
                table_name.append_value(&entry.name().name);
                column.append_value(&field.name);
                ordinal.append_value(i as i32 + 1);
                data_type.append_value(sql_type_name(arrow_field.data_type()));
                let is_masked = hidden.is_some_and(|m| m.contains(&field.name));
                nullable.append_value(!field.required || is_masked);
                key.append_value(keys.contains(&field.id));
                masked.append_value(is_masked);
                description.append_option(field.doc.as_deref());
            }
        }
        for def in self.visible_views() {
            for (i, c) in def.columns.iter().enumerate() {
                ns.append_value(&def.name.namespace);
                table_name.append_value(&def.name.name);
                column.append_value(&c.name);
                ordinal.append_value(i as i32 + 1);
                data_type.append_value(
                    c.data_type
                        .parse::<DataType>()
                        .map(|t| sql_type_name(&t))
                        .unwrap_or_else(|_| c.data_type.clone()),
                );
                nullable.append_value(c.nullable);
                key.append_value(false);
                masked.append_value(false);
                description.append_option(c.doc.as_deref());
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ns.finish()),
            Arc::new(table_name.finish()),
            Arc::new(column.finish()),
            Arc::new(ordinal.finish()),
            Arc::new(data_type.finish()),
            Arc::new(nullable.finish()),
            Arc::new(key.finish()),
            Arc::new(masked.finish()),
            Arc::new(description.finish()),
        ];
        Ok(RecordBatch::try_new(columns_schema(), columns)?)
    }

    fn replication_status(&self) -> DfResult<RecordBatch> {
        let mut stream = StringBuilder::new();
        let mut lsn = StringBuilder::new();
        let mut committed = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut since = Float64Builder::new();
        let mut current = BooleanBuilder::new();
        for p in &self.snapshot.progress {
            stream.append_value(&p.stream);
            lsn.append_value(format_lsn(p.lsn));
            committed.append_value(p.committed_at_ms);
            since.append_value((self.snapshot.read_at_ms - p.committed_at_ms).max(0) as f64 / 1e3);
            current.append_value(match &self.stream {
                Some(s) => *s == p.stream,
                None => self.snapshot.progress.len() == 1,
            });
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(stream.finish()),
            Arc::new(lsn.finish()),
            Arc::new(committed.finish()),
            Arc::new(since.finish()),
            Arc::new(current.finish()),
        ];
        Ok(RecordBatch::try_new(status_schema(), columns)?)
    }

    /// Model builds and tests, newest first. Messages (which can quote data, e.g. a
    /// duplicate key) only for principals that may read the audit log.
    fn model_runs(&self) -> DfResult<RecordBatch> {
        let runs = self
            .lake
            .model_runs(MODEL_RUN_ROWS, None)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let reader = self.principal.audit_reader();
        let mut run_id = StringBuilder::new();
        let mut trigger = StringBuilder::new();
        let mut node = StringBuilder::new();
        let mut kind = StringBuilder::new();
        let mut status = StringBuilder::new();
        let mut detail = StringBuilder::new();
        let mut started = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut finished = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut duration = Float64Builder::new();
        let mut rows = Int64Builder::new();
        let mut lsn = StringBuilder::new();
        let mut as_of = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut message = StringBuilder::new();
        for r in &runs {
            run_id.append_value(&r.run_id);
            trigger.append_value(&r.trigger);
            node.append_value(&r.node);
            kind.append_value(&r.kind);
            status.append_value(&r.status);
            detail.append_value(&r.detail);
            started.append_value(r.started_at_ms);
            finished.append_value(r.finished_at_ms);
            duration.append_value((r.finished_at_ms - r.started_at_ms) as f64 / 1e3);
            rows.append_option(r.rows.map(|v| v as i64));
            lsn.append_option(r.as_of_lsn.map(format_lsn));
            as_of.append_option(r.as_of_ms);
            message.append_option(r.message.as_deref().filter(|_| reader));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(run_id.finish()),
            Arc::new(trigger.finish()),
            Arc::new(node.finish()),
            Arc::new(kind.finish()),
            Arc::new(status.finish()),
            Arc::new(detail.finish()),
            Arc::new(started.finish()),
            Arc::new(finished.finish()),
            Arc::new(duration.finish()),
            Arc::new(rows.finish()),
            Arc::new(lsn.finish()),
            Arc::new(as_of.finish()),
            Arc::new(message.finish()),
        ];
        Ok(RecordBatch::try_new(model_runs_schema(), columns)?)
    }

    fn audit_log(&self) -> DfResult<RecordBatch> {
        match &self.audit {
            None => Ok(RecordBatch::new_empty(audit_schema())),
            Some(log) => {
                let who = (!self.principal.audit_reader()).then(|| self.principal.name());
                log.read(who, AUDIT_ROWS)
                    .map_err(|e| DataFusionError::External(Box::new(e)))
            }
        }
    }
}

fn external(e: crate::QueryError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl std::fmt::Debug for SystemSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemSchema")
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        SYSTEM_TABLES.iter().map(|s| s.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let batch = match name {
            "tables" => self.tables().await?,
            "columns" => self.columns().await?,
            "replication_status" => self.replication_status()?,
            "audit_log" => self.audit_log()?,
            "model_runs" => self.model_runs()?,
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        SYSTEM_TABLES.contains(&name)
    }
}

/// The `walden` tables and their schemas, without reading their rows.
pub(crate) fn system_schemas() -> Vec<(String, SchemaRef)> {
    vec![
        ("tables".into(), tables_schema()),
        ("columns".into(), columns_schema()),
        ("replication_status".into(), status_schema()),
        ("audit_log".into(), crate::audit::audit_schema()),
        ("model_runs".into(), model_runs_schema()),
    ]
}

fn model_runs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("trigger", DataType::Utf8, false),
        Field::new("node", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("started_at", utc_ms(), false),
        Field::new("finished_at", utc_ms(), false),
        Field::new("seconds", DataType::Float64, false),
        Field::new("rows", DataType::Int64, true),
        Field::new("as_of_lsn", DataType::Utf8, true),
        Field::new("as_of_time", utc_ms(), true),
        Field::new("message", DataType::Utf8, true),
    ]))
}

fn utc_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn tables_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("namespace", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, true),
        Field::new("data_files", DataType::Int64, true),
        Field::new("size_bytes", DataType::Int64, true),
        Field::new("snapshot_id", DataType::Int64, true),
        Field::new("last_commit", utc_ms(), true),
        Field::new("lsn", DataType::Utf8, true),
        Field::new("primary_key", DataType::Utf8, true),
        Field::new("description", DataType::Utf8, true),
        Field::new("model", DataType::Utf8, true),
        Field::new("built_from", DataType::Utf8, true),
    ]))
}

fn columns_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("namespace", DataType::Utf8, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("ordinal", DataType::Int32, false),
        Field::new("data_type", DataType::Utf8, false),
        Field::new("nullable", DataType::Boolean, false),
        Field::new("primary_key", DataType::Boolean, false),
        Field::new("masked", DataType::Boolean, false),
        Field::new("description", DataType::Utf8, true),
    ]))
}

fn status_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("stream", DataType::Utf8, false),
        Field::new("lake_lsn", DataType::Utf8, false),
        Field::new("committed_at", utc_ms(), false),
        Field::new("seconds_since_commit", DataType::Float64, false),
        Field::new("current", DataType::Boolean, false),
    ]))
}

/// How a column's type is written in SQL (Postgres spelling).
pub fn sql_type_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20,0)".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::FixedSizeBinary(16) => "uuid".into(),
        DataType::FixedSizeBinary(_) => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Interval(_) | DataType::Duration(_) => "interval".into(),
        DataType::Struct(fields)
            if fields.len() == 3
                && fields[0].name() == "months"
                && fields[1].name() == "days"
                && fields[2].name() == "microseconds" =>
        {
            "interval (struct of months, days, microseconds)".into()
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("{}[]", sql_type_name(f.data_type()))
        }
        DataType::Dictionary(_, v) => sql_type_name(v),
        other => other.to_string(),
    }
}
