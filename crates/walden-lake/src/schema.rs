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

    /// The column type of an Iceberg field type walden wrote (`None` for one it never
    /// writes).
    pub fn of_iceberg(ty: &Type) -> Option<ColumnType> {
        Some(match ty {
            Type::Primitive(p) => match p {
                PrimitiveType::Boolean => ColumnType::Boolean,
                PrimitiveType::Int => ColumnType::Int32,
                PrimitiveType::Long => ColumnType::Int64,
                PrimitiveType::Float => ColumnType::Float32,
                PrimitiveType::Double => ColumnType::Float64,
                PrimitiveType::Decimal { precision, scale } => ColumnType::Decimal {
                    precision: u8::try_from(*precision).ok()?,
                    scale: u8::try_from(*scale).ok()?,
                },
                PrimitiveType::String => ColumnType::String,
                PrimitiveType::Binary => ColumnType::Binary,
                PrimitiveType::Date => ColumnType::Date,
                PrimitiveType::Time => ColumnType::Time,
                PrimitiveType::Timestamp => ColumnType::Timestamp,
                PrimitiveType::Timestamptz => ColumnType::TimestampTz,
                PrimitiveType::Uuid => ColumnType::Uuid,
                _ => return None,
            },
            Type::Struct(s) if s.fields().len() == 3 => ColumnType::Interval,
            Type::List(l) => {
                ColumnType::List(Box::new(Self::of_iceberg(&l.element_field.field_type)?))
            }
            _ => return None,
        })
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

/// One column of an evolved table schema: an existing field kept by id (renamed, its type
/// promoted, its doc changed, relaxed to optional) or, with `field_id: None`, a new field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvolvedColumn {
    pub field_id: Option<i32>,
    pub column: Column,
}

/// Why an Iceberg field of type `old` cannot hold values of `new` under the same field id,
/// or `None` when it can: the same type, or a promotion the Iceberg spec allows
/// (int → long, float → double, decimal(P,S) → decimal(P',S) with P' ≥ P; for list
/// elements alike).
pub fn promotion_blocker(old: &Type, new: &ColumnType) -> Option<String> {
    let mut scratch = i32::MAX / 2;
    let wanted = iceberg_type(new, &mut scratch);
    match (old, &wanted) {
        (Type::Primitive(a), Type::Primitive(b)) => primitive_blocker(a, b),
        (Type::List(a), Type::List(b)) => {
            match (&*a.element_field.field_type, &*b.element_field.field_type) {
                (Type::Primitive(x), Type::Primitive(y)) => primitive_blocker(x, y),
                (x, y) if same_shape(x, y) => None,
                (x, y) => Some(format!("list<{x}> cannot become list<{y}>")),
            }
        }
        (a, b) if same_shape(a, b) => None,
        (a, b) => Some(format!("{a} cannot become {b}")),
    }
}

/// Equal types, ignoring nested field ids.
fn same_shape(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::Primitive(x), Type::Primitive(y)) => x == y,
        (Type::List(x), Type::List(y)) => {
            same_shape(&x.element_field.field_type, &y.element_field.field_type)
        }
        (Type::Struct(x), Type::Struct(y)) => {
            x.fields().len() == y.fields().len()
                && x.fields()
                    .iter()
                    .zip(y.fields())
                    .all(|(f, g)| f.name == g.name && same_shape(&f.field_type, &g.field_type))
        }
        _ => false,
    }
}

fn primitive_blocker(old: &PrimitiveType, new: &PrimitiveType) -> Option<String> {
    use PrimitiveType as P;
    let ok = match (old, new) {
        (a, b) if a == b => true,
        (P::Int, P::Long) | (P::Float, P::Double) => true,
        (
            P::Decimal {
                precision: p1,
                scale: s1,
            },
            P::Decimal {
                precision: p2,
                scale: s2,
            },
        ) => s1 == s2 && p2 >= p1,
        _ => false,
    };
    (!ok).then(|| {
        format!("Iceberg cannot promote {old} to {new} (it allows int → long, float → double and a wider decimal precision at the same scale)")
    })
}

/// Builds the evolved schema of a table whose current schema is `current` and whose
/// highest field id ever is `last_column_id`. New fields get ids above it, so no id is
/// ever reused. `Err` says why Iceberg cannot express the change.
pub(crate) fn evolve_schema(
    current: &Schema,
    last_column_id: i32,
    columns: &[EvolvedColumn],
    primary_key: &[String],
) -> std::result::Result<Schema, String> {
    let mut next_id = last_column_id.max(current.highest_field_id()) + 1;
    let mut fields = Vec::with_capacity(columns.len());
    for c in columns {
        let field = match c.field_id {
            Some(id) => {
                let old = current.field_by_id(id).ok_or_else(|| {
                    format!(
                        "field id {id} ({}) is not in the table's schema",
                        c.column.name
                    )
                })?;
                if let Some(why) = promotion_blocker(&old.field_type, &c.column.ty) {
                    return Err(format!("column {}: {why}", c.column.name));
                }
                let mut scratch = i32::MAX / 2;
                let field_type = match (&*old.field_type, iceberg_type(&c.column.ty, &mut scratch))
                {
                    // Keep nested ids; only a list's element primitive can be promoted.
                    (Type::List(l), Type::List(n)) => {
                        let mut element = (*l.element_field).clone();
                        element.field_type = n.element_field.field_type.clone();
                        Type::List(ListType::new(Arc::new(element)))
                    }
                    (Type::Primitive(_), p @ Type::Primitive(_)) => p,
                    (other, _) => other.clone(),
                };
                NestedField {
                    id,
                    name: c.column.name.clone(),
                    // A required field may become optional, never the other way round.
                    required: old.required && !c.column.nullable,
                    field_type: Box::new(field_type),
                    doc: c.column.doc.clone().or_else(|| old.doc.clone()),
                    initial_default: None,
                    write_default: None,
                }
            }
            None => {
                let id = next_id;
                next_id += 1;
                let ty = iceberg_type(&c.column.ty, &mut next_id);
                // Rows written before a field existed have no value for it: always optional.
                let field = NestedField::optional(id, &c.column.name, ty);
                match &c.column.doc {
                    Some(doc) => field.with_doc(doc),
                    None => field,
                }
            }
        };
        fields.push(Arc::new(field));
    }
    let identifier_ids: Vec<i32> = primary_key
        .iter()
        .map(|k| fields.iter().find(|f| &f.name == k))
        .collect::<Option<Vec<_>>>()
        .filter(|key| !key.is_empty() && key.iter().all(|f| f.required && matches!(&*f.field_type, Type::Primitive(p) if !matches!(p, PrimitiveType::Float | PrimitiveType::Double))))
        .map(|key| key.iter().map(|f| f.id).collect())
        .unwrap_or_default();
    Schema::builder()
        .with_fields(fields)
        .with_identifier_field_ids(identifier_ids)
        .build()
        .map_err(|e| format!("the evolved schema is not valid: {e}"))
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
