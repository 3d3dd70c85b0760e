//! Row-by-row comparison of a Postgres table with its lake table as walden's own query
//! engine reads it. Postgres values come from their text output (an independent path from
//! the binary COPY the copy uses); lake values from Arrow arrays; both become [`Value`]s.

use std::collections::BTreeMap;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int32Array, Int64Array, LargeBinaryArray, ListArray, StringArray,
    StructArray, Time64MicrosecondArray, TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use tokio_postgres::{Client, SimpleQueryMessage};

#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// Bits of the f64 (NaN normalized), so equality is exact.
    Float(u64),
    /// Unscaled value and scale, normalized (no trailing zeros).
    Decimal(i128, u32),
    Text(String),
    Bytes(Vec<u8>),
    Date(i32),
    Time(i64),
    Ts(i64),
    Uuid(Vec<u8>),
    Interval(i64, i64, i64),
    List(Vec<Value>),
}

fn float(f: f64) -> Value {
    Value::Float(if f.is_nan() {
        f64::NAN.to_bits()
    } else {
        f.to_bits()
    })
}

fn decimal(mut v: i128, mut scale: u32) -> Value {
    while scale > 0 && v % 10 == 0 {
        v /= 10;
        scale -= 1;
    }
    Value::Decimal(v, scale)
}

/// What a lake column is, decided from its Arrow type.
#[derive(Debug, Clone)]
enum Kind {
    Bool,
    Int,
    Float32,
    Float64,
    Decimal,
    Text,
    Bytes,
    Date,
    Time,
    Ts,
    Uuid,
    Interval,
    List(Box<Kind>),
}

fn kind_of(dt: &DataType) -> Kind {
    match dt {
        DataType::Boolean => Kind::Bool,
        DataType::Int32 | DataType::Int64 => Kind::Int,
        DataType::Float32 => Kind::Float32,
        DataType::Float64 => Kind::Float64,
        DataType::Decimal128(..) => Kind::Decimal,
        DataType::Utf8 => Kind::Text,
        DataType::LargeBinary => Kind::Bytes,
        DataType::Date32 => Kind::Date,
        DataType::Time64(_) => Kind::Time,
        DataType::Timestamp(..) => Kind::Ts,
        DataType::FixedSizeBinary(16) => Kind::Uuid,
        DataType::Struct(_) => Kind::Interval,
        DataType::List(f) => Kind::List(Box::new(kind_of(f.data_type()))),
        other => panic!("no comparison for {other}"),
    }
}

const EPOCH: NaiveDate = match NaiveDate::from_ymd_opt(1970, 1, 1) {
    Some(d) => d,
    None => panic!(),
};

fn parse_pg(kind: &Kind, s: &str) -> Value {
    match kind {
        Kind::Bool => Value::Bool(s == "t"),
        Kind::Int => Value::Int(s.parse().unwrap_or_else(|_| panic!("int {s}"))),
        Kind::Float32 => float(f64::from(
            s.parse::<f32>().unwrap_or_else(|_| panic!("float {s}")),
        )),
        Kind::Float64 => float(s.parse::<f64>().unwrap_or_else(|_| panic!("float {s}"))),
        Kind::Decimal => {
            let neg = s.starts_with('-');
            let t = s.trim_start_matches('-');
            let (i, f) = t.split_once('.').unwrap_or((t, ""));
            let digits = format!("{i}{f}");
            let v: i128 = digits.parse().unwrap_or_else(|_| panic!("decimal {s}"));
            decimal(if neg { -v } else { v }, f.len() as u32)
        }
        Kind::Text => Value::Text(s.to_string()),
        Kind::Bytes => Value::Bytes(hex(s.trim_start_matches("\\x"))),
        Kind::Date => Value::Date(match s {
            "infinity" => 2_932_896,
            "-infinity" => -719_162,
            _ => (NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_else(|_| panic!("date {s}"))
                - EPOCH)
                .num_days() as i32,
        }),
        Kind::Time => {
            let t =
                NaiveTime::parse_from_str(s, "%H:%M:%S%.f").unwrap_or_else(|_| panic!("time {s}"));
            Value::Time((t - NaiveTime::MIN).num_microseconds().unwrap_or(0))
        }
        Kind::Ts => Value::Ts(match s {
            "infinity" => 253_402_300_799_999_999,
            "-infinity" => -62_135_596_800_000_000,
            _ => {
                let body = s.strip_suffix("+00").unwrap_or(s);
                NaiveDateTime::parse_from_str(body, "%Y-%m-%d %H:%M:%S%.f")
                    .unwrap_or_else(|_| panic!("timestamp {s}"))
                    .and_utc()
                    .timestamp_micros()
            }
        }),
        Kind::Uuid => Value::Uuid(hex(&s.replace('-', ""))),
        Kind::Interval => {
            let p: Vec<i64> = s
                .split(',')
                .map(|x| x.parse::<f64>().unwrap_or_else(|_| panic!("interval {s}")) as i64)
                .collect();
            Value::Interval(p[0], p[1], p[2])
        }
        Kind::List(inner) => {
            let (n, body) = s
                .split_once('\u{1d}')
                .unwrap_or_else(|| panic!("list {s:?}"));
            let n: usize = n.parse().unwrap_or(0);
            if n == 0 {
                return Value::List(Vec::new());
            }
            Value::List(
                body.split('\u{1f}')
                    .map(|e| {
                        if e == "\u{1e}" {
                            Value::Null
                        } else {
                            parse_pg(inner, e)
                        }
                    })
                    .collect(),
            )
        }
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

fn lake_value(a: &ArrayRef, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Boolean => Value::Bool(
            a.as_any()
                .downcast_ref::<BooleanArray>()
                .map(|x| x.value(i))
                .unwrap_or_default(),
        ),
        DataType::Int32 => Value::Int(i64::from(
            a.as_any()
                .downcast_ref::<Int32Array>()
                .map(|x| x.value(i))
                .unwrap_or_default(),
        )),
        DataType::Int64 => Value::Int(
            a.as_any()
                .downcast_ref::<Int64Array>()
                .map(|x| x.value(i))
                .unwrap_or_default(),
        ),
        DataType::Float32 => float(f64::from(
            a.as_any()
                .downcast_ref::<Float32Array>()
                .map(|x| x.value(i))
                .unwrap_or_default(),
        )),
        DataType::Float64 => float(
            a.as_any()
                .downcast_ref::<Float64Array>()
                .map(|x| x.value(i))
                .unwrap_or_default(),
        ),
        DataType::Decimal128(_, s) => decimal(
            a.as_any()
                .downcast_ref::<Decimal128Array>()
                .map(|x| x.value(i))
                .unwrap_or_default(),
            *s as u32,
        ),
        DataType::Utf8 => Value::Text(
            a.as_any()
                .downcast_ref::<StringArray>()
                .map(|x| x.value(i).to_string())
                .unwrap_or_default(),
        ),
        DataType::LargeBinary => Value::Bytes(
            a.as_any()
                .downcast_ref::<LargeBinaryArray>()
                .map(|x| x.value(i).to_vec())
                .unwrap_or_default(),
        ),
        DataType::Date32 => Value::Date(
            a.as_any()
                .downcast_ref::<Date32Array>()
                .map(|x| x.value(i))
                .unwrap_or_default(),
        ),
        DataType::Time64(_) => Value::Time(
            a.as_any()
                .downcast_ref::<Time64MicrosecondArray>()
                .map(|x| x.value(i))
                .unwrap_or_default(),
        ),
        DataType::Timestamp(..) => Value::Ts(
            a.as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .map(|x| x.value(i))
                .unwrap_or_default(),
        ),
        DataType::FixedSizeBinary(_) => Value::Uuid(
            a.as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .map(|x| x.value(i).to_vec())
                .unwrap_or_default(),
        ),
        DataType::Struct(_) => {
            let s = a.as_any().downcast_ref::<StructArray>().expect("struct");
            let get = |n: usize| -> i64 {
                let c = s.column(n);
                match c.data_type() {
                    DataType::Int32 => {
                        i64::from(c.as_primitive::<arrow::datatypes::Int32Type>().value(i))
                    }
                    _ => c.as_primitive::<arrow::datatypes::Int64Type>().value(i),
                }
            };
            Value::Interval(get(0), get(1), get(2))
        }
        DataType::List(_) => {
            let l = a.as_any().downcast_ref::<ListArray>().expect("list");
            let v = l.value(i);
            Value::List((0..v.len()).map(|j| lake_value(&v, j)).collect())
        }
        other => panic!("no comparison for {other}"),
    }
}

/// The SQL expression that renders column `c` of kind `k` for [`parse_pg`].
fn pg_expr(c: &str, k: &Kind) -> String {
    let q = format!("\"{}\"", c.replace('"', "\"\""));
    match k {
        Kind::Interval => format!(
            "((extract(year from {q})*12 + extract(month from {q}))::text || ',' || extract(day from {q})::text || ',' || (extract(hour from {q})*3600000000 + extract(minute from {q})*60000000 + extract(microseconds from {q}))::text)"
        ),
        Kind::List(inner) if matches!(**inner, Kind::Interval) => {
            panic!("interval[] is compared by the Python readers")
        }
        Kind::List(_) => {
            format!("(cardinality({q})::text || chr(29) || array_to_string({q}, chr(31), chr(30)))")
        }
        Kind::Decimal => format!("{q}::numeric::text"),
        _ => q,
    }
}

/// Reads every row of `pg_table` and of the lake table `lake_table` (through walden's
/// engine) and returns the differences (empty when equal as multisets).
pub async fn diff(
    pg: &Client,
    pg_table: &str,
    engine: &walden_query::QueryEngine,
    lake_table: &str,
) -> Vec<String> {
    let batches = engine
        .sql(&format!("SELECT * FROM {lake_table}"))
        .await
        .unwrap_or_else(|e| panic!("reading {lake_table}: {e}"));
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => engine
            .schema_of(&format!("SELECT * FROM {lake_table}"))
            .await
            .expect("schema"),
    };
    let kinds: Vec<(String, Kind)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), kind_of(f.data_type())))
        .collect();
    let mut lake: BTreeMap<String, (usize, Vec<Value>)> = BTreeMap::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            let row: Vec<Value> = b.columns().iter().map(|c| lake_value(c, i)).collect();
            lake.entry(format!("{row:?}")).or_insert((0, row)).0 += 1;
        }
    }
    let select = kinds
        .iter()
        .map(|(c, k)| pg_expr(c, k))
        .collect::<Vec<_>>()
        .join(", ");
    pg.batch_execute(
        "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 3; SET bytea_output = 'hex'",
    )
    .await
    .expect("session settings");
    let msgs = pg
        .simple_query(&format!("SELECT {select} FROM {pg_table}"))
        .await
        .unwrap_or_else(|e| panic!("reading {pg_table}: {e}"));
    let mut source: BTreeMap<String, (usize, Vec<Value>)> = BTreeMap::new();
    for m in msgs {
        if let SimpleQueryMessage::Row(r) = m {
            let row: Vec<Value> = kinds
                .iter()
                .enumerate()
                .map(|(i, (_, k))| match r.get(i) {
                    None => Value::Null,
                    Some(s) => parse_pg(k, s),
                })
                .collect();
            source.entry(format!("{row:?}")).or_insert((0, row)).0 += 1;
        }
    }
    let mut out = Vec::new();
    for (k, (n, _)) in &source {
        let m = lake.get(k).map_or(0, |x| x.0);
        if m != *n {
            out.push(format!("postgres has {n}, lake has {m}: {k}"));
        }
    }
    for (k, (n, _)) in &lake {
        if !source.contains_key(k) {
            out.push(format!("lake has {n}, postgres has 0: {k}"));
        }
    }
    out.truncate(20);
    out
}
