//! Functions whose output can dwarf their input, bounded before they run.
//!
//! DataFusion's memory pool accounts for operators (sorts, joins, aggregates), not for
//! the values a scalar function allocates. A handful of functions turn a few bytes of SQL
//! into gigabytes: `repeat('x', 1e10)`, `lpad('', 1e10)`, `range(1, 1e12)`,
//! `array_repeat(1, 1e10)`, or `replace`/`regexp_replace` with a long replacement. Each of
//! them is registered in every session as a [`Bounded`] wrapper that computes an upper
//! bound of the batch's output from the arguments and refuses the call when the bound
//! exceeds the principal's memory limit, before anything is allocated. Everything else
//! the wrapper forwards to the real function, so types, coercion, simplification and
//! documentation are unchanged.

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// How a function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: |s| * n.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad`: n characters of up to 4 bytes.
    Pad,
    /// `array_repeat(x, n)`: n elements.
    ArrayRepeat,
    /// `array_resize(a, n [, fill])`: n elements.
    ArrayResize,
    /// `range(start, stop [, step])`, `generate_series`: (stop - start) / step elements.
    Range,
    /// `replace(s, from, to)`: at most |s| matches, each adding |to|.
    Replace,
    /// `regexp_replace(s, pattern, replacement [, flags])`: at most |s| + 1 matches, each
    /// adding the replacement and, per group reference, at most its match.
    RegexpReplace,
}

/// The functions bounded, by name.
const BOUNDED: &[(&str, Growth)] = &[
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("array_repeat", Growth::ArrayRepeat),
    ("array_resize", Growth::ArrayResize),
    ("range", Growth::Range),
    ("generate_series", Growth::Range),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexpReplace),
];

/// A bounded copy of every function in `functions` that can amplify its input, each
/// allowed at most `limit` bytes of output per batch.
pub fn bounded(functions: &[Arc<ScalarUDF>], limit: usize) -> Vec<ScalarUDF> {
    functions
        .iter()
        .filter_map(|f| {
            let growth = BOUNDED.iter().find(|(n, _)| *n == f.name())?.1;
            Some(ScalarUDF::new_from_impl(Bounded {
                inner: f.clone(),
                growth,
                limit,
            }))
        })
        .collect()
}

#[derive(Debug)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    limit: usize,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && self.growth == other.growth && self.limit == other.limit
    }
}
impl Eq for Bounded {}
impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.growth.hash(state);
        self.limit.hash(state);
    }
}

impl ScalarUDFImpl for Bounded {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let bound = output_bound(self.growth, &args.args, args.number_rows);
        if bound > self.limit as f64 {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would produce up to {} bytes for these arguments, more than this \
                 principal's memory limit of {} bytes; use smaller counts or lengths",
                self.inner.name(),
                bound as u128,
                self.limit
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

/// An upper bound of the bytes a call produces for `rows` rows (f64: products overflow).
fn output_bound(growth: Growth, args: &[ColumnarValue], rows: usize) -> f64 {
    let rows = rows.max(1);
    let per_row = |i: usize| -> Vec<f64> { values(args.get(i), rows, Measure::Number) };
    let lens = |i: usize| -> Vec<f64> { values(args.get(i), rows, Measure::Length) };
    let zip_sum = |a: Vec<f64>, b: Vec<f64>, f: &dyn Fn(f64, f64) -> f64| -> f64 {
        a.into_iter().zip(b).map(|(x, y)| f(x, y)).sum()
    };
    match growth {
        Growth::Repeat => zip_sum(lens(0), per_row(1), &|len, n| len * n.max(0.0)),
        Growth::Pad => per_row(1).into_iter().map(|n| n.max(0.0) * 4.0).sum(),
        Growth::ArrayRepeat => {
            let size = element_size(args.first(), rows);
            per_row(1).into_iter().map(|n| n.max(0.0) * size).sum()
        }
        Growth::ArrayResize => {
            let size = element_size(args.get(2), rows).max(8.0);
            per_row(1).into_iter().map(|n| n.max(0.0) * size).sum()
        }
        Growth::Range => {
            if args.len() == 1 {
                // range(stop): from 0.
                return per_row(0).into_iter().map(|n| n.abs() * 8.0 + 8.0).sum();
            }
            // Dates count days, but an interval step counts nanoseconds.
            let scale = match (
                args.first().map(ColumnarValue::data_type),
                args.get(2).map(ColumnarValue::data_type),
            ) {
                (Some(DataType::Date32 | DataType::Date64), Some(DataType::Interval(_))) => {
                    86_400e9
                }
                _ => 1.0,
            };
            let step = if args.len() > 2 {
                per_row(2)
            } else {
                vec![1.0; rows]
            };
            per_row(0)
                .into_iter()
                .zip(per_row(1))
                .zip(step)
                .map(|((a, b), s)| ((b - a).abs() * scale / s.abs().max(1.0) + 1.0) * 8.0)
                .sum()
        }
        Growth::Replace => zip_sum(lens(0), lens(2), &|s, to| s + s * to),
        Growth::RegexpReplace => {
            let refs: Vec<f64> = match args.get(2) {
                Some(ColumnarValue::Scalar(v)) => {
                    let text = v.to_string();
                    let n = text.matches(['$', '\\']).count() as f64;
                    vec![n; rows]
                }
                _ => lens(2),
            };
            lens(0)
                .into_iter()
                .zip(lens(2))
                .zip(refs)
                .map(|((s, rep), k)| (s + 1.0) * (rep + 1.0) + k * s)
                .sum()
        }
    }
}

#[derive(Clone, Copy)]
enum Measure {
    /// The value as a number (counts, range bounds; dates in days, timestamps in
    /// nanoseconds, intervals in the unit of the bound they step over).
    Number,
    /// The value's length in bytes.
    Length,
}

/// One f64 per row for an argument (a scalar repeats).
fn values(arg: Option<&ColumnarValue>, rows: usize, measure: Measure) -> Vec<f64> {
    match arg {
        None => vec![0.0; rows],
        Some(ColumnarValue::Scalar(v)) => vec![scalar_measure(v, measure); rows],
        Some(ColumnarValue::Array(a)) => (0..a.len())
            .map(|i| match ScalarValue::try_from_array(a, i) {
                Ok(v) => scalar_measure(&v, measure),
                Err(_) => f64::INFINITY,
            })
            .collect(),
    }
}

fn scalar_measure(v: &ScalarValue, measure: Measure) -> f64 {
    if v.is_null() {
        return 0.0;
    }
    match measure {
        Measure::Length => match v {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => s.len() as f64,
            ScalarValue::Binary(Some(b))
            | ScalarValue::LargeBinary(Some(b))
            | ScalarValue::BinaryView(Some(b)) => b.len() as f64,
            other => other.size() as f64,
        },
        Measure::Number => match v {
            ScalarValue::Date32(Some(d)) => *d as f64,
            ScalarValue::Date64(Some(ms)) => *ms as f64 / 86_400_000.0,
            ScalarValue::TimestampSecond(Some(t), _) => *t as f64 * 1e9,
            ScalarValue::TimestampMillisecond(Some(t), _) => *t as f64 * 1e6,
            ScalarValue::TimestampMicrosecond(Some(t), _) => *t as f64 * 1e3,
            ScalarValue::TimestampNanosecond(Some(t), _) => *t as f64,
            ScalarValue::IntervalYearMonth(Some(m)) => *m as f64 * 28.0 * 86_400e9,
            ScalarValue::IntervalDayTime(Some(v)) => {
                v.days as f64 * 86_400e9 + v.milliseconds as f64 * 1e6
            }
            ScalarValue::IntervalMonthDayNano(Some(v)) => {
                v.months as f64 * 28.0 * 86_400e9 + v.days as f64 * 86_400e9 + v.nanoseconds as f64
            }
            other => other
                .cast_to(&DataType::Float64)
                .ok()
                .and_then(|f| match f {
                    ScalarValue::Float64(Some(x)) => Some(x),
                    _ => None,
                })
                .unwrap_or(f64::INFINITY),
        },
    }
}

/// Bytes per element of an array built from `arg`.
fn element_size(arg: Option<&ColumnarValue>, rows: usize) -> f64 {
    match arg {
        None => 8.0,
        Some(ColumnarValue::Scalar(v)) => v.size() as f64,
        Some(ColumnarValue::Array(a)) => {
            let bytes = a.get_array_memory_size() as f64;
            (bytes / rows.max(1) as f64).max(1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(v: ScalarValue) -> ColumnarValue {
        ColumnarValue::Scalar(v)
    }

    #[test]
    fn bounds_follow_the_arguments() {
        let repeat = [
            scalar(ScalarValue::Utf8(Some("ab".into()))),
            scalar(ScalarValue::Int64(Some(1_000_000_000))),
        ];
        assert_eq!(output_bound(Growth::Repeat, &repeat, 1), 2e9);
        let range = [
            scalar(ScalarValue::Int64(Some(1))),
            scalar(ScalarValue::Int64(Some(1_000_001))),
        ];
        assert_eq!(output_bound(Growth::Range, &range, 1), 8_000_008.0);
        let pad = [
            scalar(ScalarValue::Utf8(Some("x".into()))),
            scalar(ScalarValue::Int64(Some(10))),
        ];
        assert_eq!(output_bound(Growth::Pad, &pad, 3), 120.0);
    }
}
