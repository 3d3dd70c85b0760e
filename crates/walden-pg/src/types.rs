//! Postgres types → lake types, and how each is read from a binary COPY.
//!
//! The full table is in `docs/types.md`. In short: exact where a lossless mapping exists;
//! types whose text form is their canonical, lossless form (inet, bit, timetz, ...) become
//! strings; types with no faithful mapping (composites, ranges, geometry, ...) are refused
//! by name unless the user maps the column to `string` in `[source] column_types`.

use std::collections::HashMap;

use tokio_postgres::Client;
use walden_lake::ColumnType;

use crate::Result;
use crate::error::QueryContext;

/// How an unconstrained `numeric` (no precision) is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnconstrainedNumeric {
    /// `decimal(precision, scale)`; a value that does not fit exactly is an error.
    Decimal { precision: u8, scale: u8 },
    /// The exact text form, NaN and Infinity included.
    String,
}

impl Default for UnconstrainedNumeric {
    fn default() -> Self {
        UnconstrainedNumeric::Decimal {
            precision: 38,
            scale: 10,
        }
    }
}

impl std::str::FromStr for UnconstrainedNumeric {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        if t == "string" {
            return Ok(UnconstrainedNumeric::String);
        }
        let inner = t
            .strip_prefix("decimal(")
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| format!("expected \"string\" or \"decimal(P,S)\", got {s:?}"))?;
        let (p, sc) = inner
            .split_once(',')
            .ok_or_else(|| format!("expected decimal(P,S), got {s:?}"))?;
        let p: u8 = p
            .trim()
            .parse()
            .map_err(|_| format!("bad precision in {s:?}"))?;
        let sc: u8 = sc
            .trim()
            .parse()
            .map_err(|_| format!("bad scale in {s:?}"))?;
        if !(1..=38).contains(&p) || sc > p {
            return Err(format!(
                "{s:?}: precision must be 1..=38 and scale at most the precision"
            ));
        }
        Ok(UnconstrainedNumeric::Decimal {
            precision: p,
            scale: sc,
        })
    }
}

/// How one binary COPY field is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decode {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    /// Binary numeric into `decimal(precision, scale)`; any loss is an error.
    Numeric {
        precision: u8,
        scale: u8,
    },
    /// UTF-8 text (text, varchar, enums, json, and every column selected as `::text`).
    Text,
    /// jsonb: a version byte, then text.
    Jsonb,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    /// A one-dimensional array with lower bound 1.
    Array(Box<Decode>),
}

impl Decode {
    /// The decoder that reads a value in its text form (what pgoutput sends) into a column
    /// of Arrow type `dt`, the type a [`ColumnMapping`] produced. Text needs no more than
    /// the target type: an `int2`, `int4` or `oid` all arrive as decimal digits.
    pub fn for_text(dt: &arrow::datatypes::DataType) -> Option<Decode> {
        use arrow::datatypes::DataType as D;
        Some(match dt {
            D::Boolean => Decode::Bool,
            D::Int32 => Decode::Int4,
            D::Int64 => Decode::Int8,
            D::Float32 => Decode::Float4,
            D::Float64 => Decode::Float8,
            D::Decimal128(p, s) => Decode::Numeric {
                precision: *p,
                scale: u8::try_from(*s).ok()?,
            },
            D::Utf8 => Decode::Text,
            D::LargeBinary => Decode::Bytea,
            D::Date32 => Decode::Date,
            D::Time64(_) => Decode::Time,
            D::Timestamp(_, None) => Decode::Timestamp,
            D::Timestamp(_, Some(_)) => Decode::TimestampTz,
            D::Struct(f) if f.len() == 3 => Decode::Interval,
            D::FixedSizeBinary(16) => Decode::Uuid,
            D::List(f) => Decode::Array(Box::new(Decode::for_text(f.data_type())?)),
            _ => return None,
        })
    }
}

/// How the copy query selects a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAs {
    /// The column itself, in its binary form.
    Value,
    /// Its output function's text: exactly what logical decoding sends (a cast can differ:
    /// `inet::text` adds the netmask).
    OutputText,
    /// An array's elements as their output functions' text.
    OutputTextArray,
    /// Cast to `numeric` (money: its text form depends on the locale).
    Numeric,
    /// An array cast to `numeric[]`.
    NumericArray,
}

impl ReadAs {
    /// The select-list expression for the quoted column `q`.
    pub fn expr(self, q: &str) -> String {
        match self {
            ReadAs::Value => q.to_string(),
            ReadAs::OutputText => {
                format!("CASE WHEN {q} IS NULL THEN NULL ELSE format('%s', {q}) END")
            }
            // array_out (element output functions), read back as text[].
            ReadAs::OutputTextArray => format!("{q}::text::text[]"),
            ReadAs::Numeric => format!("{q}::numeric"),
            ReadAs::NumericArray => format!("{q}::numeric[]"),
        }
    }

    /// The same reading for an array of this element.
    fn of_array(self) -> std::result::Result<Self, String> {
        match self {
            ReadAs::Value => Ok(ReadAs::Value),
            ReadAs::OutputText => Ok(ReadAs::OutputTextArray),
            ReadAs::Numeric => Ok(ReadAs::NumericArray),
            ReadAs::OutputTextArray | ReadAs::NumericArray => {
                Err("nested arrays are not supported".into())
            }
        }
    }
}

/// A column's mapping: the lake type, the decoder, and how the copy query selects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    pub lake: ColumnType,
    pub decode: Decode,
    pub read_as: ReadAs,
}

#[derive(Debug, Clone)]
struct PgType {
    name: String,
    namespace: String,
    typtype: u8,
    basetype: u32,
    domain_typmod: i32,
    elem: u32,
    category: u8,
}

/// The server's `pg_type`, loaded once.
#[derive(Debug, Clone, Default)]
pub struct TypeCatalog {
    types: HashMap<u32, PgType>,
}

impl TypeCatalog {
    pub async fn load(client: &Client) -> Result<Self> {
        let rows = client
            .query(
                "SELECT t.oid, t.typname::text, n.nspname::text, t.typtype::text, t.typbasetype,
                        t.typtypmod, t.typelem, t.typcategory::text
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace",
                &[],
            )
            .await
            .ctx(|| "reading pg_type".into())?;
        let mut types = HashMap::with_capacity(rows.len());
        for r in rows {
            let first = |s: String| s.bytes().next().unwrap_or(b' ');
            types.insert(
                r.get::<_, u32>(0),
                PgType {
                    name: r.get(1),
                    namespace: r.get(2),
                    typtype: first(r.get(3)),
                    basetype: r.get(4),
                    domain_typmod: r.get(5),
                    elem: r.get(6),
                    category: first(r.get(7)),
                },
            );
        }
        Ok(Self { types })
    }

    /// Maps a column of type `oid` with modifier `typmod`. `Err` carries the reason the
    /// type has no faithful mapping.
    pub fn map(
        &self,
        oid: u32,
        typmod: i32,
        unconstrained: UnconstrainedNumeric,
    ) -> std::result::Result<ColumnMapping, String> {
        let (oid, typmod) = self.resolve_domain(oid, typmod);
        let Some(t) = self.types.get(&oid) else {
            return Err(format!("type oid {oid} is unknown"));
        };
        if t.category == b'A' && t.elem != 0 {
            let elem = self.map(t.elem, typmod, unconstrained)?;
            if let ColumnType::List(_) = elem.lake {
                return Err("nested arrays are not supported".into());
            }
            return Ok(ColumnMapping {
                lake: ColumnType::List(Box::new(elem.lake)),
                decode: Decode::Array(Box::new(elem.decode)),
                read_as: elem.read_as.of_array()?,
            });
        }
        let direct = |lake, decode| {
            Ok(ColumnMapping {
                lake,
                decode,
                read_as: ReadAs::Value,
            })
        };
        let as_text = || {
            Ok(ColumnMapping {
                lake: ColumnType::String,
                decode: Decode::Text,
                read_as: ReadAs::OutputText,
            })
        };
        if t.typtype == b'e' {
            return direct(ColumnType::String, Decode::Text);
        }
        match t.typtype {
            b'c' => return Err("composite types have no faithful column mapping".into()),
            b'r' | b'm' => return Err("range types have no faithful column mapping".into()),
            b'p' => return Err("pseudo-types cannot be stored".into()),
            _ => {}
        }
        if t.namespace != "pg_catalog" {
            return match t.name.as_str() {
                "citext" => as_text(),
                other => Err(format!("extension type {other} has no known mapping")),
            };
        }
        match t.name.as_str() {
            "bool" => direct(ColumnType::Boolean, Decode::Bool),
            "int2" => direct(ColumnType::Int32, Decode::Int2),
            "int4" => direct(ColumnType::Int32, Decode::Int4),
            "int8" => direct(ColumnType::Int64, Decode::Int8),
            "oid" => direct(ColumnType::Int64, Decode::Oid),
            "float4" => direct(ColumnType::Float32, Decode::Float4),
            "float8" => direct(ColumnType::Float64, Decode::Float8),
            "numeric" => {
                if typmod < 4 {
                    return match unconstrained {
                        UnconstrainedNumeric::Decimal { precision, scale } => direct(
                            ColumnType::Decimal { precision, scale },
                            Decode::Numeric { precision, scale },
                        ),
                        UnconstrainedNumeric::String => as_text(),
                    };
                }
                let p = ((typmod - 4) >> 16) & 0xffff;
                // The scale is an 11-bit signed field (negative scales since PG 15).
                let raw = (typmod - 4) & 0x7ff;
                let s = if raw & 0x400 != 0 { raw - 0x800 } else { raw };
                let (precision, scale) = if s < 0 { (p - s, 0) } else { (p.max(s), s) };
                if precision > 38 {
                    return as_text();
                }
                direct(
                    ColumnType::Decimal {
                        precision: precision as u8,
                        scale: scale as u8,
                    },
                    Decode::Numeric {
                        precision: precision as u8,
                        scale: scale as u8,
                    },
                )
            }
            "money" => Ok(ColumnMapping {
                lake: ColumnType::Decimal {
                    precision: 19,
                    scale: 2,
                },
                decode: Decode::Numeric {
                    precision: 19,
                    scale: 2,
                },
                read_as: ReadAs::Numeric,
            }),
            "text" | "varchar" | "bpchar" | "name" | "char" | "json" | "xml" => {
                direct(ColumnType::String, Decode::Text)
            }
            "jsonb" => direct(ColumnType::String, Decode::Jsonb),
            "bytea" => direct(ColumnType::Binary, Decode::Bytea),
            "date" => direct(ColumnType::Date, Decode::Date),
            "time" => direct(ColumnType::Time, Decode::Time),
            "timestamp" => direct(ColumnType::Timestamp, Decode::Timestamp),
            "timestamptz" => direct(ColumnType::TimestampTz, Decode::TimestampTz),
            "interval" => direct(ColumnType::Interval, Decode::Interval),
            "uuid" => direct(ColumnType::Uuid, Decode::Uuid),
            "inet" | "cidr" | "macaddr" | "macaddr8" | "bit" | "varbit" | "timetz" | "pg_lsn"
            | "xid8" | "xid" | "cid" | "tid" | "regclass" | "regtype" | "regproc" => as_text(),
            other => Err(format!("{other} has no faithful column mapping")),
        }
    }

    /// The column mapped to its text form, whatever its type (the `string` override).
    pub fn map_as_string(&self, oid: u32, typmod: i32) -> ColumnMapping {
        let (oid, _) = self.resolve_domain(oid, typmod);
        let is_array = self
            .types
            .get(&oid)
            .is_some_and(|t| t.category == b'A' && t.elem != 0);
        if is_array {
            ColumnMapping {
                lake: ColumnType::List(Box::new(ColumnType::String)),
                decode: Decode::Array(Box::new(Decode::Text)),
                read_as: ReadAs::OutputTextArray,
            }
        } else {
            ColumnMapping {
                lake: ColumnType::String,
                decode: Decode::Text,
                read_as: ReadAs::OutputText,
            }
        }
    }

    fn resolve_domain(&self, mut oid: u32, mut typmod: i32) -> (u32, i32) {
        for _ in 0..32 {
            match self.types.get(&oid) {
                Some(t) if t.typtype == b'd' => {
                    if typmod < 0 {
                        typmod = t.domain_typmod;
                    }
                    oid = t.basetype;
                }
                _ => break,
            }
        }
        (oid, typmod)
    }
}
