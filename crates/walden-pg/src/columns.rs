//! Arrow column builders fed with Postgres values, in binary form (COPY, binary
//! replication) or text form (pgoutput's default: each type's output function).
//!
//! One builder per column, typed by the column's [`Decode`]; values are parsed once,
//! straight into the builder, with no per-row boxing.

use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder,
    FixedSizeBinaryBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    LargeBinaryBuilder, ListArray, RecordBatch, StringBuilder, StructArray,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, FieldRef, Fields, SchemaRef};

use crate::text;
use crate::types::Decode;
use crate::{PgError, Result};

/// Days from 1970-01-01 to 2000-01-01, the Postgres epoch.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// 9999-12-31 and 0001-01-01 in days since 1970: where ±infinity dates are stored.
const DATE_PLUS_INFINITY: i32 = 2_932_896;
const DATE_MINUS_INFINITY: i32 = -719_162;
/// 9999-12-31 23:59:59.999999 and 0001-01-01 00:00:00 in microseconds since 1970.
const TS_PLUS_INFINITY: i64 = 253_402_300_799_999_999;
const TS_MINUS_INFINITY: i64 = -62_135_596_800_000_000;

// One per column, not per value: variant size does not matter.
#[allow(clippy::large_enum_variant)]
enum Col {
    Bool(BooleanBuilder),
    Int2(Int32Builder),
    Int4(Int32Builder),
    Int8(Int64Builder),
    Oid(Int64Builder),
    Float4(Float32Builder),
    Float8(Float64Builder),
    Numeric {
        b: Decimal128Builder,
        precision: u8,
        scale: u8,
    },
    Text(StringBuilder),
    Jsonb(StringBuilder),
    Bytea(LargeBinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder, Option<Arc<str>>),
    Interval {
        months: Int32Builder,
        days: Int32Builder,
        micros: Int64Builder,
        valid: NullBufferBuilder,
        fields: Fields,
    },
    Uuid(FixedSizeBinaryBuilder),
    Array {
        offsets: Vec<i32>,
        valid: NullBufferBuilder,
        child: Box<Col>,
        field: FieldRef,
    },
}

fn mismatch(decode: &Decode, dt: &DataType) -> String {
    format!("cannot decode {decode:?} into Arrow {dt}")
}

impl Col {
    fn new(decode: &Decode, dt: &DataType) -> std::result::Result<Self, String> {
        let cap = 1024;
        Ok(match (decode, dt) {
            (Decode::Bool, DataType::Boolean) => Col::Bool(BooleanBuilder::with_capacity(cap)),
            (Decode::Int2, DataType::Int32) => Col::Int2(Int32Builder::with_capacity(cap)),
            (Decode::Int4, DataType::Int32) => Col::Int4(Int32Builder::with_capacity(cap)),
            (Decode::Int8, DataType::Int64) => Col::Int8(Int64Builder::with_capacity(cap)),
            (Decode::Oid, DataType::Int64) => Col::Oid(Int64Builder::with_capacity(cap)),
            (Decode::Float4, DataType::Float32) => Col::Float4(Float32Builder::with_capacity(cap)),
            (Decode::Float8, DataType::Float64) => Col::Float8(Float64Builder::with_capacity(cap)),
            (Decode::Numeric { precision, scale }, DataType::Decimal128(p, s))
                if p == precision && i16::from(*s) == i16::from(*scale) =>
            {
                Col::Numeric {
                    b: Decimal128Builder::with_capacity(cap)
                        .with_precision_and_scale(*p, *s)
                        .map_err(|e| e.to_string())?,
                    precision: *precision,
                    scale: *scale,
                }
            }
            (Decode::Text, DataType::Utf8) => Col::Text(StringBuilder::new()),
            (Decode::Jsonb, DataType::Utf8) => Col::Jsonb(StringBuilder::new()),
            (Decode::Bytea, DataType::LargeBinary) => Col::Bytea(LargeBinaryBuilder::new()),
            (Decode::Date, DataType::Date32) => Col::Date(Date32Builder::with_capacity(cap)),
            (Decode::Time, DataType::Time64(_)) => {
                Col::Time(Time64MicrosecondBuilder::with_capacity(cap))
            }
            (Decode::Timestamp, DataType::Timestamp(_, None)) => {
                Col::Timestamp(TimestampMicrosecondBuilder::with_capacity(cap), None)
            }
            (Decode::TimestampTz, DataType::Timestamp(_, Some(tz))) => Col::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(cap),
                Some(tz.clone()),
            ),
            (Decode::Interval, DataType::Struct(fields)) if fields.len() == 3 => Col::Interval {
                months: Int32Builder::with_capacity(cap),
                days: Int32Builder::with_capacity(cap),
                micros: Int64Builder::with_capacity(cap),
                valid: NullBufferBuilder::new(cap),
                fields: fields.clone(),
            },
            (Decode::Uuid, DataType::FixedSizeBinary(16)) => {
                Col::Uuid(FixedSizeBinaryBuilder::with_capacity(cap, 16))
            }
            (Decode::Array(inner), DataType::List(field)) => Col::Array {
                offsets: vec![0],
                valid: NullBufferBuilder::new(cap),
                child: Box::new(Col::new(inner, field.data_type())?),
                field: field.clone(),
            },
            (d, t) => return Err(mismatch(d, t)),
        })
    }

    fn append_null(&mut self) {
        match self {
            Col::Bool(b) => b.append_null(),
            Col::Int2(b) | Col::Int4(b) => b.append_null(),
            Col::Int8(b) | Col::Oid(b) => b.append_null(),
            Col::Float4(b) => b.append_null(),
            Col::Float8(b) => b.append_null(),
            Col::Numeric { b, .. } => b.append_null(),
            Col::Text(b) | Col::Jsonb(b) => b.append_null(),
            Col::Bytea(b) => b.append_null(),
            Col::Date(b) => b.append_null(),
            Col::Time(b) => b.append_null(),
            Col::Timestamp(b, _) => b.append_null(),
            Col::Interval {
                months,
                days,
                micros,
                valid,
                ..
            } => {
                months.append_value(0);
                days.append_value(0);
                micros.append_value(0);
                valid.append_null();
            }
            Col::Uuid(b) => b.append_null(),
            Col::Array { offsets, valid, .. } => {
                offsets.push(*offsets.last().unwrap_or(&0));
                valid.append_null();
            }
        }
    }

    fn append(&mut self, v: &[u8]) -> std::result::Result<(), String> {
        match self {
            Col::Bool(b) => b.append_value(fixed::<1>(v)?[0] != 0),
            Col::Int2(b) => b.append_value(i32::from(i16::from_be_bytes(fixed(v)?))),
            Col::Int4(b) => b.append_value(i32::from_be_bytes(fixed(v)?)),
            Col::Int8(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Col::Oid(b) => b.append_value(i64::from(u32::from_be_bytes(fixed(v)?))),
            Col::Float4(b) => b.append_value(f32::from_be_bytes(fixed(v)?)),
            Col::Float8(b) => b.append_value(f64::from_be_bytes(fixed(v)?)),
            Col::Numeric {
                b,
                precision,
                scale,
            } => b.append_value(numeric_to_i128(v, *precision, *scale)?),
            Col::Text(b) => b.append_value(utf8(v)?),
            Col::Jsonb(b) => match v.split_first() {
                Some((1, rest)) => b.append_value(utf8(rest)?),
                _ => return Err("unknown jsonb binary version".into()),
            },
            Col::Bytea(b) => b.append_value(v),
            Col::Date(b) => b.append_value(match i32::from_be_bytes(fixed(v)?) {
                i32::MAX => DATE_PLUS_INFINITY,
                i32::MIN => DATE_MINUS_INFINITY,
                d => d
                    .checked_add(PG_EPOCH_DAYS)
                    .ok_or_else(|| format!("date {d} days after 2000-01-01 is out of range"))?,
            }),
            Col::Time(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Col::Timestamp(b, _) => b.append_value(timestamp(v)?),
            Col::Interval {
                months,
                days,
                micros,
                valid,
                ..
            } => {
                let raw: [u8; 16] = fixed(v)?;
                micros.append_value(i64::from_be_bytes(raw[0..8].try_into().unwrap_or_default()));
                days.append_value(i32::from_be_bytes(
                    raw[8..12].try_into().unwrap_or_default(),
                ));
                months.append_value(i32::from_be_bytes(
                    raw[12..16].try_into().unwrap_or_default(),
                ));
                valid.append_non_null();
            }
            Col::Uuid(b) => b.append_value(fixed::<16>(v)?).map_err(|e| e.to_string())?,
            Col::Array {
                offsets,
                valid,
                child,
                ..
            } => {
                let n = append_array(child, v)?;
                let last = *offsets.last().unwrap_or(&0);
                offsets.push(
                    last.checked_add(n as i32)
                        .ok_or("more than 2^31 array elements in one batch")?,
                );
                valid.append_non_null();
            }
        }
        Ok(())
    }

    /// Appends a value given in its text form (see [`crate::text`]).
    fn append_text(&mut self, v: &[u8]) -> std::result::Result<(), String> {
        let s = utf8(v)?;
        match self {
            Col::Bool(b) => b.append_value(text::parse_bool(s)?),
            Col::Int2(b) => b.append_value(i32::from(text::parse_int::<i16>(s)?)),
            Col::Int4(b) => b.append_value(text::parse_int::<i32>(s)?),
            Col::Int8(b) => b.append_value(text::parse_int::<i64>(s)?),
            Col::Oid(b) => b.append_value(i64::from(text::parse_int::<u32>(s)?)),
            Col::Float4(b) => b.append_value(text::parse_f32(s)?),
            Col::Float8(b) => b.append_value(text::parse_f64(s)?),
            Col::Numeric {
                b,
                precision,
                scale,
            } => b.append_value(text::parse_decimal(s, *precision, *scale)?),
            Col::Text(b) | Col::Jsonb(b) => b.append_value(s),
            Col::Bytea(b) => b.append_value(text::parse_bytea(s)?),
            Col::Date(b) => b.append_value(text::parse_date(
                s,
                DATE_PLUS_INFINITY,
                DATE_MINUS_INFINITY,
            )?),
            Col::Time(b) => b.append_value(text::parse_time(s)?),
            Col::Timestamp(b, _) => b.append_value(text::parse_timestamp(
                s,
                TS_PLUS_INFINITY,
                TS_MINUS_INFINITY,
            )?),
            Col::Interval {
                months,
                days,
                micros,
                valid,
                ..
            } => {
                let (m, d, us) = text::parse_interval(s)?;
                months.append_value(m);
                days.append_value(d);
                micros.append_value(us);
                valid.append_non_null();
            }
            Col::Uuid(b) => b
                .append_value(text::parse_uuid(s)?)
                .map_err(|e| e.to_string())?,
            Col::Array {
                offsets,
                valid,
                child,
                ..
            } => {
                let elements = text::parse_array(s)?;
                for e in &elements {
                    match e {
                        None => child.append_null(),
                        Some(e) => child.append_text(e.as_bytes())?,
                    }
                }
                let last = *offsets.last().unwrap_or(&0);
                offsets.push(
                    last.checked_add(elements.len() as i32)
                        .ok_or("more than 2^31 array elements in one batch")?,
                );
                valid.append_non_null();
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Int2(b) | Col::Int4(b) => Arc::new(b.finish()),
            Col::Int8(b) | Col::Oid(b) => Arc::new(b.finish()),
            Col::Float4(b) => Arc::new(b.finish()),
            Col::Float8(b) => Arc::new(b.finish()),
            Col::Numeric { b, .. } => Arc::new(b.finish()),
            Col::Text(b) | Col::Jsonb(b) => Arc::new(b.finish()),
            Col::Bytea(b) => Arc::new(b.finish()),
            Col::Date(b) => Arc::new(b.finish()),
            Col::Time(b) => Arc::new(b.finish()),
            Col::Timestamp(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
            Col::Interval {
                months,
                days,
                micros,
                valid,
                fields,
            } => Arc::new(StructArray::new(
                fields.clone(),
                vec![
                    Arc::new(months.finish()),
                    Arc::new(days.finish()),
                    Arc::new(micros.finish()),
                ],
                valid.finish(),
            )),
            Col::Uuid(b) => Arc::new(b.finish()),
            Col::Array {
                offsets,
                valid,
                child,
                field,
            } => {
                let offs = std::mem::replace(offsets, vec![0]);
                Arc::new(ListArray::new(
                    field.clone(),
                    OffsetBuffer::new(offs.into()),
                    child.finish(),
                    valid.finish(),
                ))
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Col::Bool(b) => b.len(),
            Col::Int2(b) | Col::Int4(b) => b.len(),
            Col::Int8(b) | Col::Oid(b) => b.len(),
            Col::Float4(b) => b.len(),
            Col::Float8(b) => b.len(),
            Col::Numeric { b, .. } => b.len(),
            Col::Text(b) | Col::Jsonb(b) => b.len(),
            Col::Bytea(b) => b.len(),
            Col::Date(b) => b.len(),
            Col::Time(b) => b.len(),
            Col::Timestamp(b, _) => b.len(),
            Col::Interval { months, .. } => months.len(),
            Col::Uuid(b) => b.len(),
            Col::Array { offsets, .. } => offsets.len() - 1,
        }
    }
}

fn fixed<const N: usize>(v: &[u8]) -> std::result::Result<[u8; N], String> {
    v.try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", v.len()))
}

fn utf8(v: &[u8]) -> std::result::Result<&str, String> {
    std::str::from_utf8(v).map_err(|e| format!("text is not valid UTF-8: {e}"))
}

fn timestamp(v: &[u8]) -> std::result::Result<i64, String> {
    Ok(match i64::from_be_bytes(fixed(v)?) {
        i64::MAX => TS_PLUS_INFINITY,
        i64::MIN => TS_MINUS_INFINITY,
        t => t.checked_add(PG_EPOCH_MICROS).ok_or_else(|| {
            "timestamp beyond year 294246 cannot be stored in microseconds since 1970".to_string()
        })?,
    })
}

/// Decodes one binary array value into `child`; returns the element count.
fn append_array(child: &mut Col, v: &[u8]) -> std::result::Result<usize, String> {
    let mut b = v;
    let take_i32 = |b: &mut &[u8]| -> std::result::Result<i32, String> {
        if b.len() < 4 {
            return Err("truncated array".into());
        }
        let x = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        *b = &b[4..];
        Ok(x)
    };
    let ndim = take_i32(&mut b)?;
    let _flags = take_i32(&mut b)?;
    let _elem_oid = take_i32(&mut b)?;
    if ndim == 0 {
        return Ok(0);
    }
    if ndim != 1 {
        return Err(format!(
            "a {ndim}-dimensional array: walden stores one-dimensional arrays as lists; map the \
             column to \"string\" in [source] column_types to keep its text form"
        ));
    }
    let n = take_i32(&mut b)?;
    let lower = take_i32(&mut b)?;
    if lower != 1 {
        return Err(format!(
            "an array with lower bound {lower}: lists cannot keep non-default bounds; map the \
             column to \"string\" in [source] column_types to keep its text form"
        ));
    }
    for _ in 0..n {
        let len = take_i32(&mut b)?;
        if len < 0 {
            child.append_null();
        } else {
            let len = len as usize;
            if b.len() < len {
                return Err("truncated array element".into());
            }
            child.append(&b[..len])?;
            b = &b[len..];
        }
    }
    Ok(n as usize)
}

/// Binary numeric → unscaled i128 at `scale`, refusing NaN, infinities, lost digits and
/// values wider than `precision`.
fn numeric_to_i128(v: &[u8], precision: u8, scale: u8) -> std::result::Result<i128, String> {
    if v.len() < 8 {
        return Err("truncated numeric".into());
    }
    let ndigits = i16::from_be_bytes([v[0], v[1]]);
    let weight = i16::from_be_bytes([v[2], v[3]]);
    let sign = u16::from_be_bytes([v[4], v[5]]);
    let target = format!("decimal({precision},{scale})");
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => {
            return Err(format!(
                "NaN cannot be stored as {target}; map the column to \"string\" in [source] column_types (or unconstrained_numeric = \"string\")"
            ));
        }
        0xD000 | 0xF000 => {
            return Err(format!(
                "Infinity cannot be stored as {target}; map the column to \"string\" in [source] column_types (or unconstrained_numeric = \"string\")"
            ));
        }
        other => return Err(format!("unknown numeric sign {other:#x}")),
    }
    if v.len() < 8 + 2 * ndigits.max(0) as usize {
        return Err("truncated numeric digits".into());
    }
    let overflow = || format!("value does not fit {target}");
    let mut acc: i128 = 0;
    for i in 0..ndigits as usize {
        let d = i128::from(i16::from_be_bytes([v[8 + 2 * i], v[9 + 2 * i]]));
        // This base-10000 digit is worth d * 10^(4 * (weight - i)); scaled by 10^scale.
        let exp = 4 * (i32::from(weight) - i as i32) + i32::from(scale);
        if exp >= 0 {
            let term = 10i128
                .checked_pow(exp as u32)
                .and_then(|p| p.checked_mul(d))
                .ok_or_else(overflow)?;
            acc = acc.checked_add(term).ok_or_else(overflow)?;
        } else {
            let div = 10i128.checked_pow((-exp) as u32).unwrap_or(i128::MAX);
            if d % div != 0 {
                return Err(format!(
                    "value has more than {scale} fractional digits and cannot be stored as \
                     {target} without rounding; set unconstrained_numeric to a wider decimal \
                     or \"string\""
                ));
            }
            acc = acc.checked_add(d / div).ok_or_else(overflow)?;
        }
    }
    if acc >= 10i128.pow(u32::from(precision)) {
        return Err(overflow());
    }
    Ok(if sign == 0x4000 { -acc } else { acc })
}

/// Arrow builders for every column of one table: values are appended column by column,
/// row by row (binary or text form, or NULL), and [`finish`](Self::finish) hands out the
/// rows as a batch. After an append fails the builders are ragged: discard them.
pub struct ColumnBuilders {
    schema: SchemaRef,
    cols: Vec<Col>,
    names: Vec<String>,
    table: String,
    bytes: usize,
}

impl ColumnBuilders {
    /// `decodes[i]` says how to read field i into `schema.field(i)`; `table` names the
    /// table in errors.
    pub fn new(table: &str, schema: SchemaRef, decodes: &[Decode]) -> Result<Self> {
        if decodes.len() != schema.fields().len() {
            return Err(PgError::Decode {
                context: table.to_string(),
                message: format!(
                    "{} decoders for {} columns",
                    decodes.len(),
                    schema.fields().len()
                ),
            });
        }
        let mut cols = Vec::with_capacity(decodes.len());
        for (d, f) in decodes.iter().zip(schema.fields()) {
            cols.push(
                Col::new(d, f.data_type()).map_err(|message| PgError::Decode {
                    context: format!("{table}.{}", f.name()),
                    message,
                })?,
            );
        }
        Ok(Self {
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            schema,
            cols,
            table: table.to_string(),
            bytes: 0,
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Number of columns.
    pub fn width(&self) -> usize {
        self.cols.len()
    }

    /// Rows in the first column (all columns, between whole rows).
    pub fn rows(&self) -> usize {
        self.cols.first().map_or(0, Col::len)
    }

    /// Bytes of values appended since the last [`finish`](Self::finish).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn append_null(&mut self, col: usize) {
        self.cols[col].append_null();
    }

    /// Appends a value in its binary (send function) form.
    pub fn append_binary(&mut self, col: usize, v: &[u8]) -> Result<()> {
        self.bytes += v.len() + 4;
        let r = self.cols[col].append(v);
        r.map_err(|message| self.error(col, message))
    }

    /// Appends a value in its text (output function) form.
    pub fn append_text(&mut self, col: usize, v: &[u8]) -> Result<()> {
        self.bytes += v.len() + 4;
        let r = self.cols[col].append_text(v);
        r.map_err(|message| self.error(col, message))
    }

    fn error(&self, col: usize, message: String) -> PgError {
        PgError::Decode {
            context: format!("{}.{}", self.table, self.names[col]),
            message,
        }
    }

    /// The rows appended so far as a batch (and a fresh start).
    pub fn finish(&mut self) -> Result<RecordBatch> {
        self.bytes = 0;
        let arrays: Vec<ArrayRef> = self.cols.iter_mut().map(Col::finish).collect();
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| PgError::Decode {
            context: self.table.clone(),
            message: format!("assembling a batch: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(ndigits.to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(sign.to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_exact() {
        // 12345.6789 = digits [1, 2345, 6789], weight 1
        let v = numeric(3, 1, 0, 4, &[1, 2345, 6789]);
        assert_eq!(numeric_to_i128(&v, 10, 4).unwrap(), 123_456_789);
        assert_eq!(numeric_to_i128(&v, 12, 6).unwrap(), 12_345_678_900);
        assert!(numeric_to_i128(&v, 10, 2).is_err(), "would round");
        assert!(numeric_to_i128(&v, 6, 4).is_err(), "too wide");
        let neg = numeric(1, -1, 0x4000, 2, &[5000]); // -0.5
        assert_eq!(numeric_to_i128(&neg, 5, 2).unwrap(), -50);
        let zero = numeric(0, 0, 0, 0, &[]);
        assert_eq!(numeric_to_i128(&zero, 5, 2).unwrap(), 0);
        assert!(numeric_to_i128(&numeric(0, 0, 0xC000, 0, &[]), 5, 2).is_err());
        assert!(numeric_to_i128(&numeric(0, 0, 0xD000, 0, &[]), 5, 2).is_err());
        // 10^37 * 9.99..: the widest decimal(38,0)
        let big = numeric(1, 9, 0, 0, &[99]); // 99 * 10000^9 = 9.9e37
        assert_eq!(numeric_to_i128(&big, 38, 0).unwrap(), 99 * 10i128.pow(36));
    }

    #[test]
    fn timestamps_clamp_infinity() {
        assert_eq!(
            timestamp(&i64::MAX.to_be_bytes()).unwrap(),
            TS_PLUS_INFINITY
        );
        assert_eq!(
            timestamp(&i64::MIN.to_be_bytes()).unwrap(),
            TS_MINUS_INFINITY
        );
        assert_eq!(timestamp(&0i64.to_be_bytes()).unwrap(), PG_EPOCH_MICROS);
    }
}
