//! walden's logical column types and their Iceberg / Arrow forms.
//!
//! Sources describe tables in these terms; the lake turns them into Iceberg schemas with
//! field ids. The Arrow schema a writer must produce is always derived from the table's
//! Iceberg schema (see [`crate::LakeTable::arrow_schema`]), so field ids in Parquet match
//! the metadata exactly.

use std::sync::Arc;

use iceberg::spec::{ListType, NestedField, PrimitiveType, Schema, StructType, Type};

use crate::{LakeError, Result};

/// A column type in the lake. Every variant has one Iceberg type; see `docs/types.md` for
/// how Postgres types map onto these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Boolean,
    Int32,
    Int64,
    Float32,
    Float64,
    /// Iceberg `decimal(precision, scale)`, precision 1..=38.
    Decimal {
        precision: u8,
        scale: u8,
    },
    String,
    Binary,
    Date,
    /// Time of day, microseconds.
    Time,
    /// Timestamp without zone, microseconds.
    Timestamp,
    /// Instant, microseconds, UTC.
    TimestampTz,
    Uuid,
    /// A Postgres interval: `struct<months: int, days: int, microseconds: long>`, the three
    /// parts kept apart exactly as Postgres keeps them.
    Interval,
    /// A one-dimensional list.
    List(Box<ColumnType>),
}

impl ColumnType {
    /// Whether Iceberg allows this type in a table's identifier fields (primary key).
    fn is_identifier_capable(&self) -> bool {
        !matches!(
            self,
            ColumnType::Float32 | ColumnType::Float64 | ColumnType::Interval | ColumnType::List(_)
        )
    }

    /// How the type is written in docs and error messages.
    pub fn describe(&self) -> String {
        match self {
            ColumnType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            ColumnType::List(inner) => format!("list<{}>", inner.describe()),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

/// One column of a lake table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
    pub doc: Option<String>,
}

/// The shape of a lake table as a source describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableSchema {
    pub columns: Vec<Column>,
    /// Names of the primary-key columns, in key order (empty: no key).
    pub primary_key: Vec<String>,
}

impl TableSchema {
    /// The Iceberg schema for a new table: top-level fields get ids 1..=n in column order,
    /// nested fields (list elements, interval parts) the ids after that.
    pub fn to_iceberg(&self) -> Result<Schema> {
        let mut next_id = self.columns.len() as i32 + 1;
        let mut fields = Vec::with_capacity(self.columns.len());
        for (i, column) in self.columns.iter().enumerate() {
            let ty = iceberg_type(&column.ty, &mut next_id);
            let field = if column.nullable {
                NestedField::optional(i as i32 + 1, &column.name, ty)
            } else {
                NestedField::required(i as i32 + 1, &column.name, ty)
            };
            let field = match &column.doc {
                Some(doc) => field.with_doc(doc),
                None => field,
            };
            fields.push(Arc::new(field));
        }
        let mut identifier_ids = Vec::new();
        let key_usable = !self.primary_key.is_empty()
            && self.primary_key.iter().all(|k| {
                self.columns
                    .iter()
                    .any(|c| &c.name == k && !c.nullable && c.ty.is_identifier_capable())
            });
        if key_usable {
            for key in &self.primary_key {
                let pos = self.columns.iter().position(|c| &c.name == key);
                if let Some(pos) = pos {
                    identifier_ids.push(pos as i32 + 1);
                }
            }
        }
        Schema::builder()
            .with_fields(fields)
            .with_identifier_field_ids(identifier_ids)
            .build()
            .map_err(|source| LakeError::Iceberg {
                context: "building the table schema".into(),
                source: Box::new(source),
            })
    }
}

fn iceberg_type(ty: &ColumnType, next_id: &mut i32) -> Type {
    let mut take_id = || {
        let id = *next_id;
        *next_id += 1;
        id
    };
    match ty {
        ColumnType::Boolean => Type::Primitive(PrimitiveType::Boolean),
        ColumnType::Int32 => Type::Primitive(PrimitiveType::Int),
        ColumnType::Int64 => Type::Primitive(PrimitiveType::Long),
        ColumnType::Float32 => Type::Primitive(PrimitiveType::Float),
        ColumnType::Float64 => Type::Primitive(PrimitiveType::Double),
        ColumnType::Decimal { precision, scale } => Type::Primitive(PrimitiveType::Decimal {
            precision: u32::from(*precision),
            scale: u32::from(*scale),
        }),
        ColumnType::String => Type::Primitive(PrimitiveType::String),
        ColumnType::Binary => Type::Primitive(PrimitiveType::Binary),
        ColumnType::Date => Type::Primitive(PrimitiveType::Date),
        ColumnType::Time => Type::Primitive(PrimitiveType::Time),
        ColumnType::Timestamp => Type::Primitive(PrimitiveType::Timestamp),
        ColumnType::TimestampTz => Type::Primitive(PrimitiveType::Timestamptz),
        ColumnType::Uuid => Type::Primitive(PrimitiveType::Uuid),
        ColumnType::Interval => {
            let months = take_id();
            let days = take_id();
            let micros = take_id();
            Type::Struct(StructType::new(vec![
                Arc::new(NestedField::optional(
                    months,
                    "months",
                    Type::Primitive(PrimitiveType::Int),
                )),
                Arc::new(NestedField::optional(
                    days,
                    "days",
                    Type::Primitive(PrimitiveType::Int),
                )),
                Arc::new(NestedField::optional(
                    micros,
                    "microseconds",
                    Type::Primitive(PrimitiveType::Long),
                )),
            ]))
        }
        ColumnType::List(inner) => {
            let element_id = take_id();
            let element = iceberg_type(inner, next_id);
            Type::List(ListType::new(Arc::new(NestedField::list_element(
                element_id, element, false,
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_ids_are_positional_then_nested() {
        let schema = TableSchema {
            columns: vec![
                Column {
                    name: "id".into(),
                    ty: ColumnType::Int64,
                    nullable: false,
                    doc: None,
                },
                Column {
                    name: "tags".into(),
                    ty: ColumnType::List(Box::new(ColumnType::String)),
                    nullable: true,
                    doc: None,
                },
                Column {
                    name: "every".into(),
                    ty: ColumnType::Interval,
                    nullable: true,
                    doc: Some("how often".into()),
                },
            ],
            primary_key: vec!["id".into()],
        };
        let iceberg = schema.to_iceberg().unwrap();
        assert_eq!(iceberg.field_by_name("id").unwrap().id, 1);
        assert_eq!(iceberg.field_by_name("tags").unwrap().id, 2);
        assert_eq!(iceberg.field_by_name("every").unwrap().id, 3);
        assert_eq!(iceberg.highest_field_id(), 7);
        assert_eq!(iceberg.identifier_field_ids().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn float_keys_are_not_identifier_fields() {
        let schema = TableSchema {
            columns: vec![Column {
                name: "f".into(),
                ty: ColumnType::Float64,
                nullable: false,
                doc: None,
            }],
            primary_key: vec!["f".into()],
        };
        let iceberg = schema.to_iceberg().unwrap();
        assert_eq!(iceberg.identifier_field_ids().count(), 0);
    }
}
