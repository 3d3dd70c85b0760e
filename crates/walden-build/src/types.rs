//! From a model query's Arrow result to a lake table and back: the table schema a result
//! gets, and result batches shaped to the table's Arrow schema (field ids included).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use walden_lake::{Column, ColumnType, TableSchema};
use walden_models::Model;

use crate::BuildError;

/// The lake column type of a result column, or why it has none.
pub(crate) fn column_type(data_type: &DataType) -> Result<ColumnType, String> {
    Ok(match data_type {
        DataType::Boolean => ColumnType::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            ColumnType::Int32
        }
        DataType::Int64 | DataType::UInt32 => ColumnType::Int64,
        DataType::UInt64 => ColumnType::Decimal {
            precision: 20,
            scale: 0,
        },
        DataType::Float16 | DataType::Float32 => ColumnType::Float32,
        DataType::Float64 => ColumnType::Float64,
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s)
            if *p <= 38 && *s >= 0 =>
        {
            ColumnType::Decimal {
                precision: *p,
                scale: *s as u8,
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            ColumnType::String
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => ColumnType::Binary,
        DataType::Date32 | DataType::Date64 => ColumnType::Date,
        DataType::Time32(_) | DataType::Time64(_) => ColumnType::Time,
        DataType::Timestamp(_, None) => ColumnType::Timestamp,
        DataType::Timestamp(_, Some(_)) => ColumnType::TimestampTz,
        DataType::Dictionary(_, value) => column_type(value)?,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            ColumnType::List(Box::new(column_type(f.data_type())?))
        }
        other => {
            return Err(format!(
                "a column of type {other} cannot be stored in a table; CAST it (to text, a \
                 number or a timestamp) in the model"
            ));
        }
    })
}

/// The table schema for a model's result: every column nullable (a model's query decides
/// its values; Iceberg's required fields would fail a later build that yields a NULL),
/// descriptions from the model's properties, no identifier fields (the unique key is a
/// table property: keys of merged models are checked at build time instead).
pub(crate) fn table_schema(model: &Model, result: &Schema) -> Result<TableSchema, BuildError> {
    let mut seen = std::collections::HashSet::new();
    let mut columns = Vec::with_capacity(result.fields().len());
    for field in result.fields() {
        if !seen.insert(field.name().to_ascii_lowercase()) {
            return Err(BuildError::model(
                model,
                format!(
                    "the query returns the column name {:?} twice; give the columns distinct \
                     names (AS ...)",
                    field.name()
                ),
            ));
        }
        let ty = column_type(field.data_type())
            .map_err(|why| BuildError::model(model, format!("column {:?}: {why}", field.name())))?;
        let doc = model
            .columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(field.name()))
            .map(|c| c.description.clone())
            .filter(|d| !d.is_empty());
        columns.push(Column {
            name: field.name().clone(),
            ty,
            nullable: true,
            doc,
        });
    }
    for key in &model.config.unique_key {
        if !columns.iter().any(|c| &c.name == key) {
            return Err(BuildError::model(
                model,
                format!(
                    "unique_key column {key:?} is not among the query's columns ({})",
                    columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    Ok(TableSchema {
        columns,
        primary_key: Vec::new(),
    })
}

/// Whether an existing table stores exactly `schema`'s columns (names, types, order), so
/// a build can write into it instead of replacing it.
pub(crate) fn same_columns(table: &walden_lake::LakeTable, schema: &TableSchema) -> bool {
    let current = table.metadata().current_schema();
    let fields = current.as_struct().fields();
    fields.len() == schema.columns.len()
        && fields.iter().zip(&schema.columns).all(|(f, c)| {
            f.name == c.name
                && ColumnType::of_iceberg(&f.field_type).as_ref() == Some(&c.ty)
                && !f.required
                && f.doc == c.doc
        })
}

/// `batch` with the table's Arrow schema: columns cast to the stored types (Utf8View to
/// Utf8, narrow integers widened, timestamps to microseconds).
pub(crate) fn conform(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch, String> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for (i, field) in target.fields().iter().enumerate() {
        let column = batch.column(i);
        let column = if column.data_type() == field.data_type() {
            column.clone()
        } else {
            arrow::compute::cast(column, field.data_type()).map_err(|e| {
                format!(
                    "column {:?} ({} to {}): {e}",
                    field.name(),
                    column.data_type(),
                    field.data_type()
                )
            })?
        };
        columns.push(column);
    }
    RecordBatch::try_new_with_options(
        Arc::clone(target),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(|e| e.to_string())
}
