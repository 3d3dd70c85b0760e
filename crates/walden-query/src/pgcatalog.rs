//! `pg_catalog` as Postgres clients read it: `pg_namespace`, `pg_class`, `pg_attribute`
//! and `pg_description` over the session's own catalog, every other relation from
//! `datafusion-pg-catalog`.
//!
//! Why our own four relations: the library numbers relations with a counter that
//! starts afresh for every session provider and is advanced in a different order by
//! each of its tables, so `pg_class.oid` and `pg_attribute.attrelid` of one table
//! disagree between (and even within) queries, and `psql`'s `\d table` came back empty.
//! It also types every column it does not know as `text` (timestamptz, arrays,
//! intervals). Here an oid is a pure function of the relation's name — stable across
//! queries, sessions and restarts, which JDBC and BI tools rely on when they cache
//! metadata — and a column's type is the one the wire protocol sends for it.
//!
//! Contract:
//! - Only what the principal may see appears: the namespaces of the session's catalog
//!   (already filtered by principal), `walden`, and `pg_catalog` itself.
//! - `pg_catalog` has oid 11, `public` 2200 (as in Postgres); other namespaces and all
//!   relations get oids ≥ 16384 from a hash of their name; collisions are resolved by
//!   probing in name order, so a set of names always gets the same oids.
//! - Column numbers (`attnum`) are 1-based in schema order; `atttypmod` carries numeric
//!   precision and scale the way Postgres encodes it, so `format_type` prints
//!   `numeric(12,2)`.
//! - Descriptions (table comments and column docs of the lake's tables) are in
//!   `pg_description`, so `\d+` and `obj_description`/`col_description` joins show them.

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use tokio::sync::OnceCell;
use walden_lake::Lake;

use crate::catalog::CatalogSnapshot;
use crate::policy::Principal;

/// Oid of `pg_catalog` in every Postgres.
pub const PG_CATALOG_OID: i32 = 11;
/// Oid of `public` in every Postgres.
pub const PUBLIC_OID: i32 = 2200;
/// First oid Postgres hands to user objects.
const FIRST_USER_OID: u32 = 16384;
/// Oid of `pg_class` itself: `pg_description.classoid` of relations and columns.
const PG_CLASS_OID: i32 = 1259;

/// The relations `pg_catalog` lists, built once per session provider.
#[derive(Debug)]
struct Relation {
    namespace: String,
    name: String,
    kind: &'static str,
    schema: SchemaRef,
    comment: Option<String>,
    docs: Vec<Option<String>>,
}

#[derive(Debug)]
struct Relations {
    namespaces: BTreeMap<String, i32>,
    relations: Vec<(i32, Relation)>,
}

/// The `pg_catalog` schema of one session (see the module docs).
pub(crate) struct PgCatalog {
    inner: Arc<dyn SchemaProvider>,
    lake: Lake,
    snapshot: Arc<CatalogSnapshot>,
    principal: Arc<Principal>,
    /// Namespaces of the session catalog besides `pg_catalog` and `walden`.
    namespaces: Vec<String>,
    /// `walden`'s system tables and their schemas.
    system: Vec<(String, SchemaRef)>,
    built: OnceCell<Arc<Relations>>,
}

impl std::fmt::Debug for PgCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgCatalog")
    }
}

impl PgCatalog {
    /// `inner` is the library's provider; `namespaces` the session's lake namespaces
    /// (already filtered for `principal`); `system` the `walden` tables.
    pub(crate) fn new(
        inner: Arc<dyn SchemaProvider>,
        lake: Lake,
        snapshot: Arc<CatalogSnapshot>,
        principal: Arc<Principal>,
        namespaces: Vec<String>,
        system: Vec<(String, SchemaRef)>,
    ) -> Self {
        Self {
            inner,
            lake,
            snapshot,
            principal,
            namespaces,
            system,
            built: OnceCell::new(),
        }
    }

    async fn relations(&self) -> DfResult<Arc<Relations>> {
        self.built
            .get_or_try_init(|| async { self.build().await.map(Arc::new) })
            .await
            .cloned()
    }

    async fn build(&self) -> DfResult<Relations> {
        let mut relations = Vec::new();
        for namespace in &self.namespaces {
            for (name, entry) in &self.snapshot.tables {
                if &name.namespace != namespace || !self.principal.sees_namespace(namespace) {
                    continue;
                }
                let table = entry
                    .table(&self.lake)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                let iceberg = table.metadata().current_schema();
                let docs = iceberg
                    .as_struct()
                    .fields()
                    .iter()
                    .map(|f| f.doc.clone())
                    .collect();
                relations.push(Relation {
                    namespace: namespace.clone(),
                    name: name.name.clone(),
                    kind: "r",
                    schema: table.arrow_schema().clone(),
                    comment: table.metadata().properties().get("comment").cloned(),
                    docs,
                });
            }
        }
        for (name, def) in &self.snapshot.views {
            if !self.namespaces.contains(&name.namespace) {
                continue;
            }
            let fields: Vec<Field> = def
                .columns
                .iter()
                .map(|c| {
                    let ty = c.data_type.parse::<DataType>().unwrap_or(DataType::Utf8);
                    Field::new(&c.name, ty, c.nullable)
                })
                .collect();
            relations.push(Relation {
                namespace: name.namespace.clone(),
                name: name.name.clone(),
                kind: "v",
                schema: Arc::new(Schema::new(fields)),
                comment: def.properties.get("comment").cloned(),
                docs: def.columns.iter().map(|c| c.doc.clone()).collect(),
            });
        }
        for (name, schema) in &self.system {
            relations.push(Relation {
                namespace: "walden".into(),
                name: name.clone(),
                kind: "v",
                schema: schema.clone(),
                comment: None,
                docs: Vec::new(),
            });
        }
        let mut own = self.inner.table_names();
        own.sort();
        for name in own {
            let schema = match own_schema(&name) {
                Some(schema) => schema,
                None => match self.inner.table(&name).await? {
                    Some(table) => table.schema(),
                    None => continue,
                },
            };
            relations.push(Relation {
                namespace: "pg_catalog".into(),
                name,
                kind: "r",
                schema,
                comment: None,
                docs: Vec::new(),
            });
        }

        let mut names: Vec<&str> = self.namespaces.iter().map(String::as_str).collect();
        names.extend(["walden", "pg_catalog", "public"]);
        names.sort();
        names.dedup();
        let mut taken = HashSet::new();
        let mut namespaces = BTreeMap::new();
        for name in names {
            let oid = match name {
                "pg_catalog" => PG_CATALOG_OID,
                "public" => PUBLIC_OID,
                other => stable_oid(other, &mut taken),
            };
            namespaces.insert(name.to_string(), oid);
        }
        relations.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let relations = relations
            .into_iter()
            .map(|r| {
                let oid = stable_oid(&format!("{}.{}", r.namespace, r.name), &mut taken);
                (oid, r)
            })
            .collect();
        Ok(Relations {
            namespaces,
            relations,
        })
    }

    async fn pg_namespace(&self) -> DfResult<RecordBatch> {
        let rel = self.relations().await?;
        let mut rows = Vec::new();
        for (name, oid) in &rel.namespaces {
            rows.push(vec![
                int(*oid),
                text(name),
                int(10),
                ScalarValue::Utf8(None),
                ScalarValue::Utf8(None),
            ]);
        }
        batch(pg_namespace_schema(), rows)
    }

    async fn pg_class(&self) -> DfResult<RecordBatch> {
        let rel = self.relations().await?;
        let mut rows = Vec::new();
        for (oid, r) in &rel.relations {
            let namespace = rel.namespaces.get(&r.namespace).copied().unwrap_or(0);
            rows.push(vec![
                int(*oid),
                text(&r.name),
                int(namespace),
                int(0),
                int(0),
                int(10),
                int(0),
                int(*oid),
                int(0),
                int(1),
                ScalarValue::Float64(Some(-1.0)),
                int(0),
                int(0),
                boolean(false),
                boolean(false),
                text("p"),
                text(r.kind),
                ScalarValue::Int16(Some(r.schema.fields().len() as i16)),
                ScalarValue::Int16(Some(0)),
                boolean(false),
                boolean(false),
                boolean(false),
                boolean(false),
                boolean(false),
                boolean(true),
                text("n"),
                boolean(false),
                ScalarValue::Int32(None),
                int(0),
                int(0),
                ScalarValue::Utf8(None),
            ]);
        }
        batch(pg_class_schema(), rows)
    }

    async fn pg_attribute(&self) -> DfResult<RecordBatch> {
        let rel = self.relations().await?;
        let mut rows = Vec::new();
        for (oid, r) in &rel.relations {
            for (i, field) in r.schema.fields().iter().enumerate() {
                let ty = pg_type(field.data_type());
                rows.push(vec![
                    int(*oid),
                    text(field.name()),
                    int(ty.oid),
                    int(-1),
                    ScalarValue::Int16(Some(ty.len)),
                    ScalarValue::Int16(Some(i as i16 + 1)),
                    int(i32::from(ty.array)),
                    int(-1),
                    int(ty.typmod),
                    boolean(ty.by_value),
                    text(ty.align),
                    text(ty.storage),
                    ScalarValue::Utf8(None),
                    boolean(!field.is_nullable()),
                    boolean(false),
                    boolean(false),
                    text(""),
                    text(""),
                    boolean(false),
                    boolean(true),
                    int(0),
                    int(if ty.collatable { 100 } else { 0 }),
                    ScalarValue::Utf8(None),
                    ScalarValue::Utf8(None),
                    ScalarValue::Utf8(None),
                    ScalarValue::Utf8(None),
                ]);
            }
        }
        batch(pg_attribute_schema(), rows)
    }

    async fn pg_description(&self, schema: SchemaRef) -> DfResult<RecordBatch> {
        let rel = self.relations().await?;
        let mut rows = Vec::new();
        for (oid, r) in &rel.relations {
            if let Some(comment) = &r.comment {
                rows.push((*oid, 0, comment.clone()));
            }
            for (i, doc) in r.docs.iter().enumerate() {
                if let Some(doc) = doc {
                    rows.push((*oid, i as i32 + 1, doc.clone()));
                }
            }
        }
        // The library's pg_description decides the column types; fill by name.
        let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::new(); schema.fields().len()];
        for (oid, sub, description) in rows {
            for (c, field) in schema.fields().iter().enumerate() {
                let value = match field.name().as_str() {
                    "objoid" => ScalarValue::Int32(Some(oid)),
                    "classoid" => ScalarValue::Int32(Some(PG_CLASS_OID)),
                    "objsubid" => ScalarValue::Int32(Some(sub)),
                    "description" => ScalarValue::Utf8(Some(description.clone())),
                    _ => ScalarValue::Null,
                };
                columns[c].push(value.cast_to(field.data_type())?);
            }
        }
        let arrays = columns_to_arrays(&schema, columns)?;
        Ok(RecordBatch::try_new(schema, arrays)?)
    }
}

#[async_trait]
impl SchemaProvider for PgCatalog {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let batch = match name.to_ascii_lowercase().as_str() {
            "pg_namespace" => self.pg_namespace().await?,
            "pg_class" => self.pg_class().await?,
            "pg_attribute" => self.pg_attribute().await?,
            "pg_description" => {
                let Some(library) = self.inner.table(name).await? else {
                    return Ok(None);
                };
                self.pg_description(library.schema()).await?
            }
            _ => return self.inner.table(name).await,
        };
        Ok(Some(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// Schemas of the relations this module builds itself.
fn own_schema(name: &str) -> Option<SchemaRef> {
    match name {
        "pg_namespace" => Some(pg_namespace_schema()),
        "pg_class" => Some(pg_class_schema()),
        "pg_attribute" => Some(pg_attribute_schema()),
        _ => None,
    }
}

/// An oid ≥ 16384 derived from `key`, not yet in `taken`.
fn stable_oid(key: &str, taken: &mut HashSet<i32>) -> i32 {
    let hash = twox_hash::XxHash3_64::oneshot(key.as_bytes());
    let span = (i32::MAX as u32 - FIRST_USER_OID) as u64;
    let mut oid = (FIRST_USER_OID as u64 + hash % span) as i32;
    while !taken.insert(oid) {
        oid = if oid == i32::MAX {
            FIRST_USER_OID as i32
        } else {
            oid + 1
        };
    }
    oid
}

/// How Postgres describes a column of `data_type`, as the wire protocol sends it.
#[derive(Debug, PartialEq)]
pub(crate) struct PgType {
    pub oid: i32,
    pub len: i16,
    pub by_value: bool,
    pub align: &'static str,
    pub storage: &'static str,
    pub typmod: i32,
    pub array: bool,
    pub collatable: bool,
}

/// The Postgres type of an Arrow column: the type oid the wire protocol reports for it
/// (arrow-pg's mapping) with that type's storage facts and, for decimals, the typmod
/// `numeric(p,s)` has in Postgres.
pub(crate) fn pg_type(data_type: &DataType) -> PgType {
    let scalar = |oid: i32, len: i16, by_value: bool, align: &'static str| PgType {
        oid,
        len,
        by_value,
        align,
        storage: if len < 0 { "x" } else { "p" },
        typmod: -1,
        array: false,
        collatable: false,
    };
    match data_type {
        DataType::Boolean => scalar(16, 1, true, "c"),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => scalar(21, 2, true, "s"),
        DataType::Int32 | DataType::UInt16 => scalar(23, 4, true, "i"),
        DataType::Int64 | DataType::UInt32 => scalar(20, 8, true, "d"),
        DataType::UInt64 => PgType {
            storage: "m",
            ..scalar(1700, -1, false, "i")
        },
        DataType::Float16 | DataType::Float32 => scalar(700, 4, true, "i"),
        DataType::Float64 => scalar(701, 8, true, "d"),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => PgType {
            storage: "m",
            typmod: ((i32::from(*p) << 16) | (i32::from(*s) & 0xffff)) + 4,
            ..scalar(1700, -1, false, "i")
        },
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => PgType {
            collatable: true,
            ..scalar(25, -1, false, "i")
        },
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => scalar(17, -1, false, "i"),
        DataType::Date32 | DataType::Date64 => scalar(1082, 4, true, "i"),
        DataType::Time32(_) | DataType::Time64(_) => scalar(1083, 8, true, "d"),
        DataType::Timestamp(_, None) => scalar(1114, 8, true, "d"),
        DataType::Timestamp(_, Some(_)) => scalar(1184, 8, true, "d"),
        DataType::Interval(_) | DataType::Duration(_) => scalar(1186, 16, false, "d"),
        DataType::Dictionary(_, value) => pg_type(value),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            let element = pg_type(f.data_type());
            let oid = match element.oid {
                16 => 1000,
                21 => 1005,
                23 => 1007,
                20 => 1016,
                700 => 1021,
                701 => 1022,
                1700 => 1231,
                25 => 1009,
                17 => 1001,
                1082 => 1182,
                1083 => 1183,
                1114 => 1115,
                1184 => 1185,
                1186 => 1187,
                _ => 1009,
            };
            PgType {
                array: true,
                collatable: element.collatable,
                ..scalar(oid, -1, false, element.align)
            }
        }
        _ => PgType {
            collatable: true,
            ..scalar(25, -1, false, "i")
        },
    }
}

fn int(v: i32) -> ScalarValue {
    ScalarValue::Int32(Some(v))
}

fn text(v: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(v.to_string()))
}

fn boolean(v: bool) -> ScalarValue {
    ScalarValue::Boolean(Some(v))
}

fn batch(schema: SchemaRef, rows: Vec<Vec<ScalarValue>>) -> DfResult<RecordBatch> {
    let mut columns: Vec<Vec<ScalarValue>> =
        vec![Vec::with_capacity(rows.len()); schema.fields().len()];
    for row in rows {
        for (c, value) in row.into_iter().enumerate() {
            columns[c].push(value);
        }
    }
    let arrays = columns_to_arrays(&schema, columns)?;
    Ok(RecordBatch::try_new(schema, arrays)?)
}

fn columns_to_arrays(
    schema: &SchemaRef,
    columns: Vec<Vec<ScalarValue>>,
) -> DfResult<Vec<ArrayRef>> {
    columns
        .into_iter()
        .zip(schema.fields())
        .map(|(values, field)| {
            if values.is_empty() {
                Ok(datafusion::arrow::array::new_empty_array(field.data_type()))
            } else {
                ScalarValue::iter_to_array(values)
            }
        })
        .collect()
}

fn fields(columns: &[(&str, DataType, bool)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, ty, nullable)| Field::new(*name, ty.clone(), *nullable))
            .collect::<Vec<_>>(),
    ))
}

fn pg_namespace_schema() -> SchemaRef {
    use DataType::{Int32, Utf8};
    fields(&[
        ("oid", Int32, false),
        ("nspname", Utf8, false),
        ("nspowner", Int32, false),
        ("nspacl", Utf8, true),
        ("options", Utf8, true),
    ])
}

fn pg_class_schema() -> SchemaRef {
    use DataType::{Boolean, Float64, Int16, Int32, Utf8};
    fields(&[
        ("oid", Int32, false),
        ("relname", Utf8, false),
        ("relnamespace", Int32, false),
        ("reltype", Int32, false),
        ("reloftype", Int32, true),
        ("relowner", Int32, false),
        ("relam", Int32, false),
        ("relfilenode", Int32, false),
        ("reltablespace", Int32, false),
        ("relpages", Int32, false),
        ("reltuples", Float64, false),
        ("relallvisible", Int32, false),
        ("reltoastrelid", Int32, false),
        ("relhasindex", Boolean, false),
        ("relisshared", Boolean, false),
        ("relpersistence", Utf8, false),
        ("relkind", Utf8, false),
        ("relnatts", Int16, false),
        ("relchecks", Int16, false),
        ("relhasrules", Boolean, false),
        ("relhastriggers", Boolean, false),
        ("relhassubclass", Boolean, false),
        ("relrowsecurity", Boolean, false),
        ("relforcerowsecurity", Boolean, false),
        ("relispopulated", Boolean, false),
        ("relreplident", Utf8, false),
        ("relispartition", Boolean, false),
        ("relrewrite", Int32, true),
        ("relfrozenxid", Int32, false),
        ("relminmxid", Int32, false),
        ("relpartbound", Utf8, true),
    ])
}

fn pg_attribute_schema() -> SchemaRef {
    use DataType::{Boolean, Int16, Int32, Utf8};
    fields(&[
        ("attrelid", Int32, false),
        ("attname", Utf8, false),
        ("atttypid", Int32, false),
        ("attstattarget", Int32, false),
        ("attlen", Int16, false),
        ("attnum", Int16, false),
        ("attndims", Int32, false),
        ("attcacheoff", Int32, false),
        ("atttypmod", Int32, false),
        ("attbyval", Boolean, false),
        ("attalign", Utf8, false),
        ("attstorage", Utf8, false),
        ("attcompression", Utf8, true),
        ("attnotnull", Boolean, false),
        ("atthasdef", Boolean, false),
        ("atthasmissing", Boolean, false),
        ("attidentity", Utf8, false),
        ("attgenerated", Utf8, false),
        ("attisdropped", Boolean, false),
        ("attislocal", Boolean, false),
        ("attinhcount", Int32, false),
        ("attcollation", Int32, false),
        ("attacl", Utf8, true),
        ("attoptions", Utf8, true),
        ("attfdwoptions", Utf8, true),
        ("attmissingval", Utf8, true),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_are_stable_distinct_and_in_the_user_range() {
        let mut a = HashSet::new();
        let mut b = HashSet::new();
        let x = stable_oid("public.orders", &mut a);
        assert_eq!(x, stable_oid("public.orders", &mut b));
        assert!(x >= FIRST_USER_OID as i32);
        // The same key again in one set probes to the next free oid.
        let y = stable_oid("public.orders", &mut a);
        assert_ne!(x, y);
    }

    #[test]
    fn types_match_the_wire_and_carry_numeric_typmods() {
        use datafusion::arrow::datatypes::TimeUnit;
        assert_eq!(
            pg_type(&DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            ))
            .oid,
            1184
        );
        let numeric = pg_type(&DataType::Decimal128(12, 2));
        assert_eq!((numeric.oid, numeric.typmod), (1700, (12 << 16 | 2) + 4));
        let list = pg_type(&DataType::List(Arc::new(Field::new(
            "item",
            DataType::Int64,
            true,
        ))));
        assert_eq!((list.oid, list.array), (1016, true));
    }
}
