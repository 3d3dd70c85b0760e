//! Parsers for the text forms pgoutput sends (each type's output function), under the
//! session settings the replication connection pins ([`SESSION_OPTIONS`]): ISO dates,
//! ISO 8601 intervals, UTC, exact floats, hex bytea, C monetary locale.
//!
//! Every parser is exact: it either yields the value the binary form would have given or
//! an error saying what it could not read. Nothing is rounded.

/// Startup `options` for a replication connection, so text values have one fixed form
/// whatever the server's or role's defaults.
pub const SESSION_OPTIONS: &str = "-c datestyle=ISO,MDY -c intervalstyle=iso_8601 -c timezone=UTC \
     -c extra_float_digits=3 -c bytea_output=hex -c lc_monetary=C";

type R<T> = std::result::Result<T, String>;

fn bad(kind: &str, s: &str) -> String {
    let shown: String = s.chars().take(60).collect();
    format!("cannot read {shown:?} as {kind}")
}

pub(crate) fn parse_bool(s: &str) -> R<bool> {
    match s {
        "t" => Ok(true),
        "f" => Ok(false),
        _ => Err(bad("boolean", s)),
    }
}

pub(crate) fn parse_int<T: std::str::FromStr>(s: &str) -> R<T> {
    s.parse().map_err(|_| bad("integer", s))
}

pub(crate) fn parse_f64(s: &str) -> R<f64> {
    match s {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| bad("float", s)),
    }
}

pub(crate) fn parse_f32(s: &str) -> R<f32> {
    match s {
        "NaN" => Ok(f32::NAN),
        "Infinity" => Ok(f32::INFINITY),
        "-Infinity" => Ok(f32::NEG_INFINITY),
        _ => s.parse().map_err(|_| bad("real", s)),
    }
}

/// A numeric's text (or money's, in the C monetary locale: `-$1,234.56`) as an unscaled
/// integer at `scale`, refusing NaN, infinities, lost digits and values wider than
/// `precision`.
pub(crate) fn parse_decimal(s: &str, precision: u8, scale: u8) -> R<i128> {
    let target = format!("decimal({precision},{scale})");
    if matches!(s, "NaN" | "Infinity" | "-Infinity") {
        return Err(format!(
            "{s} cannot be stored as {target}; map the column to \"string\" in [source] \
             column_types (or unconstrained_numeric = \"string\")"
        ));
    }
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let body = body.strip_prefix('$').unwrap_or(body);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let mut acc: i128 = 0;
    let overflow = || format!("{s} does not fit {target}");
    for c in int.chars() {
        match c {
            '0'..='9' => {
                acc = acc
                    .checked_mul(10)
                    .and_then(|a| a.checked_add(i128::from(c as u8 - b'0')))
                    .ok_or_else(overflow)?;
            }
            ',' => {}
            _ => return Err(bad("numeric", s)),
        }
    }
    if int.is_empty() && frac.is_empty() {
        return Err(bad("numeric", s));
    }
    for (i, c) in frac.chars().enumerate() {
        let d = match c {
            '0'..='9' => i128::from(c as u8 - b'0'),
            _ => return Err(bad("numeric", s)),
        };
        if i < usize::from(scale) {
            acc = acc
                .checked_mul(10)
                .and_then(|a| a.checked_add(d))
                .ok_or_else(overflow)?;
        } else if d != 0 {
            return Err(format!(
                "{s} has more than {scale} fractional digits and cannot be stored as {target} \
                 without rounding; set unconstrained_numeric to a wider decimal or \"string\""
            ));
        }
    }
    let given = frac.len().min(usize::from(scale));
    for _ in given..usize::from(scale) {
        acc = acc.checked_mul(10).ok_or_else(overflow)?;
    }
    if acc >= 10i128.pow(u32::from(precision)) {
        return Err(overflow());
    }
    Ok(if negative { -acc } else { acc })
}

pub(crate) fn parse_bytea(s: &str) -> R<Vec<u8>> {
    let hex = s
        .strip_prefix("\\x")
        .ok_or_else(|| bad("bytea (hex format)", s))?;
    if hex.len() % 2 != 0 {
        return Err(bad("bytea (hex format)", s));
    }
    let nibble = |c: u8| -> R<u8> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(bad("bytea (hex format)", s)),
        }
    };
    hex.as_bytes()
        .chunks(2)
        .map(|p| Ok(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

pub(crate) fn parse_uuid(s: &str) -> R<[u8; 16]> {
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut hi: Option<u8> = None;
    for c in s.bytes() {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            b'-' => continue,
            _ => return Err(bad("uuid", s)),
        };
        match hi.take() {
            None => hi = Some(v),
            Some(h) => {
                if n == 16 {
                    return Err(bad("uuid", s));
                }
                out[n] = h << 4 | v;
                n += 1;
            }
        }
    }
    if n != 16 || hi.is_some() {
        return Err(bad("uuid", s));
    }
    Ok(out)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical year numbering).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD[ BC]` (any number of year digits) → days since 1970.
fn civil_days(s: &str, whole: &str) -> R<i64> {
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let mut it = s.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (it.next(), it.next(), it.next()) else {
        return Err(bad("date", whole));
    };
    let y: i64 = y.parse().map_err(|_| bad("date", whole))?;
    let m: i64 = m.parse().map_err(|_| bad("date", whole))?;
    let d: i64 = d.parse().map_err(|_| bad("date", whole))?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad("date", whole));
    }
    // Year N BC is astronomical year 1 - N.
    let y = if bc { 1 - y } else { y };
    Ok(days_from_civil(y, m, d))
}

/// A date → days since 1970; ±infinity clamp to `(plus, minus)`.
pub(crate) fn parse_date(s: &str, plus: i32, minus: i32) -> R<i32> {
    match s {
        "infinity" => return Ok(plus),
        "-infinity" => return Ok(minus),
        _ => {}
    }
    let days = civil_days(s, s)?;
    i32::try_from(days).map_err(|_| bad("date", s))
}

/// `HH:MM:SS[.ffffff]` → microseconds.
fn time_of_day(s: &str, whole: &str) -> R<i64> {
    let mut it = s.splitn(3, ':');
    let (Some(h), Some(m), Some(sec)) = (it.next(), it.next(), it.next()) else {
        return Err(bad("time", whole));
    };
    let h: i64 = h.parse().map_err(|_| bad("time", whole))?;
    let m: i64 = m.parse().map_err(|_| bad("time", whole))?;
    let micros = seconds_micros(sec).ok_or_else(|| bad("time", whole))?;
    Ok(h * 3_600_000_000 + m * 60_000_000 + micros)
}

/// `SS[.ffffff]` (optionally signed) → microseconds; `None` if malformed or more than six
/// fractional digits.
fn seconds_micros(s: &str) -> Option<i64> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || frac.len() > 6 || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: i64 = int.parse().ok()?;
    let mut f: i64 = 0;
    for (i, c) in frac.bytes().enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        f += i64::from(c - b'0') * 10i64.pow(5 - i as u32);
    }
    let v = int.checked_mul(1_000_000)?.checked_add(f)?;
    Some(if neg { -v } else { v })
}

pub(crate) fn parse_time(s: &str) -> R<i64> {
    time_of_day(s, s)
}

/// A timestamp (with or without a `+HH[:MM[:SS]]` offset, optionally ` BC`) → microseconds
/// since 1970 UTC; ±infinity clamp to `(plus, minus)`.
pub(crate) fn parse_timestamp(s: &str, plus: i64, minus: i64) -> R<i64> {
    match s {
        "infinity" => return Ok(plus),
        "-infinity" => return Ok(minus),
        _ => {}
    }
    let (body, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let (date, time) = body.split_once(' ').ok_or_else(|| bad("timestamp", s))?;
    // The offset starts at the first sign after the time's digits.
    let (time, offset) = match time.find(['+', '-']) {
        Some(i) => (&time[..i], Some(&time[i..])),
        None => (time, None),
    };
    let date = if bc {
        format!("{date} BC")
    } else {
        date.to_string()
    };
    let days = civil_days(&date, s)?;
    let mut micros = days
        .checked_mul(86_400_000_000)
        .and_then(|d| d.checked_add(time_of_day(time, s).ok()?))
        .ok_or_else(|| bad("timestamp", s))?;
    if let Some(off) = offset {
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let mut parts = off[1..].split(':');
        let mut secs = 0i64;
        for (unit, part) in [3600i64, 60, 1].iter().zip(&mut parts) {
            secs += unit * part.parse::<i64>().map_err(|_| bad("timestamp", s))?;
        }
        micros -= sign * secs * 1_000_000;
    }
    Ok(micros)
}

/// An ISO 8601 interval as PostgreSQL writes it (`P1Y2M3DT4H5M6.5S`, each field signed,
/// `PT0S` for zero) → (months, days, microseconds).
pub(crate) fn parse_interval(s: &str) -> R<(i32, i32, i64)> {
    let rest = s.strip_prefix('P').ok_or_else(|| bad("interval", s))?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut months: i64 = 0;
    let mut days: i64 = 0;
    let mut micros: i64 = 0;
    let mut fields = |part: &str, in_time: bool| -> R<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '-' || c == '.' || c == '+' {
                num.push(c);
                continue;
            }
            let err = || bad("interval", s);
            match (in_time, c) {
                (false, 'Y') => months += 12 * num.parse::<i64>().map_err(|_| err())?,
                (false, 'M') => months += num.parse::<i64>().map_err(|_| err())?,
                (false, 'W') => days += 7 * num.parse::<i64>().map_err(|_| err())?,
                (false, 'D') => days += num.parse::<i64>().map_err(|_| err())?,
                (true, 'H') => micros += 3_600_000_000 * num.parse::<i64>().map_err(|_| err())?,
                (true, 'M') => micros += 60_000_000 * num.parse::<i64>().map_err(|_| err())?,
                (true, 'S') => micros += seconds_micros(&num).ok_or_else(err)?,
                _ => return Err(err()),
            }
            num.clear();
        }
        if num.is_empty() {
            Ok(())
        } else {
            Err(bad("interval", s))
        }
    };
    fields(date, false)?;
    fields(time, true)?;
    Ok((
        i32::try_from(months).map_err(|_| bad("interval", s))?,
        i32::try_from(days).map_err(|_| bad("interval", s))?,
        micros,
    ))
}

/// One element of an array literal: `None` for NULL.
pub(crate) type Element = Option<String>;

/// A one-dimensional array literal (`{a,"b c",NULL}`) → its elements' texts. Arrays with
/// non-default bounds (`[0:1]={...}`) or more dimensions are refused, as in binary form.
pub(crate) fn parse_array(s: &str) -> R<Vec<Element>> {
    if s.starts_with('[') {
        return Err(format!(
            "an array with non-default bounds ({}): lists cannot keep them; map the column to \
             \"string\" in [source] column_types to keep its text form",
            s.split('=').next().unwrap_or(s)
        ));
    }
    let inner = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| bad("array", s))?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Ok(out);
    }
    let b = inner.as_bytes();
    let mut i = 0;
    loop {
        if b.get(i) == Some(&b'{') {
            return Err(
                "a multi-dimensional array: walden stores one-dimensional arrays as lists; map \
                 the column to \"string\" in [source] column_types to keep its text form"
                    .into(),
            );
        }
        if b.get(i) == Some(&b'"') {
            let mut v = Vec::new();
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(bad("array", s)),
                    Some(b'\\') => {
                        let c = *b.get(i + 1).ok_or_else(|| bad("array", s))?;
                        v.push(c);
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        v.push(c);
                        i += 1;
                    }
                }
            }
            out.push(Some(String::from_utf8(v).map_err(|_| bad("array", s))?));
        } else {
            let start = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            let raw = &inner[start..i];
            out.push(if raw.eq_ignore_ascii_case("NULL") {
                None
            } else {
                Some(raw.to_string())
            });
        }
        match b.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return Err(bad("array", s)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(parse_decimal("12345.6789", 10, 4).unwrap(), 123_456_789);
        assert_eq!(parse_decimal("12345.6789", 12, 6).unwrap(), 12_345_678_900);
        assert_eq!(parse_decimal("-0.50", 5, 2).unwrap(), -50);
        assert_eq!(parse_decimal("7", 5, 2).unwrap(), 700);
        assert_eq!(parse_decimal("-$1,234.56", 19, 2).unwrap(), -123_456);
        assert!(parse_decimal("12345.6789", 10, 2).is_err(), "would round");
        assert_eq!(
            parse_decimal("1.2300", 10, 2).unwrap(),
            123,
            "trailing zeros"
        );
        assert!(parse_decimal("12345.6789", 6, 4).is_err(), "too wide");
        assert!(parse_decimal("NaN", 5, 2).is_err());
        assert!(parse_decimal("-Infinity", 5, 2).is_err());
        assert!(parse_decimal("1e5", 5, 2).is_err());
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(parse_date("1970-01-01", 1, -1).unwrap(), 0);
        assert_eq!(parse_date("2000-01-01", 1, -1).unwrap(), 10_957);
        assert_eq!(parse_date("infinity", 7, -7).unwrap(), 7);
        // 1 BC is astronomical year 0: 0000-01-01 is 719528 days before 1970.
        assert_eq!(parse_date("0001-01-01 BC", 1, -1).unwrap(), -719_528);
        assert_eq!(parse_date("10000-01-01", 1, -1).unwrap(), 2_932_897);
        assert_eq!(
            parse_timestamp("2000-01-01 00:00:00", 1, -1).unwrap(),
            946_684_800_000_000
        );
        assert_eq!(
            parse_timestamp("2000-01-01 01:00:00.5+01", 1, -1).unwrap(),
            946_684_800_500_000
        );
        assert_eq!(
            parse_timestamp("2000-01-01 00:00:00-05:30", 1, -1).unwrap(),
            946_684_800_000_000 + 5 * 3_600_000_000 + 30 * 60_000_000
        );
        assert_eq!(
            parse_timestamp("0044-03-15 12:00:00+00 BC", 1, -1).unwrap(),
            (days_from_civil(-43, 3, 15) * 86_400 + 12 * 3600) * 1_000_000
        );
        assert_eq!(parse_timestamp("-infinity", 1, -1).unwrap(), -1);
        assert_eq!(parse_time("24:00:00").unwrap(), 86_400_000_000);
        assert_eq!(parse_time("12:34:56.000789").unwrap(), 45_296_000_789);
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("PT0S").unwrap(), (0, 0, 0));
        assert_eq!(
            parse_interval("P1Y2M3DT4H5M6.5S").unwrap(),
            (14, 3, 4 * 3_600_000_000 + 5 * 60_000_000 + 6_500_000)
        );
        assert_eq!(
            parse_interval("P-1Y-2M3DT-4H-5M-6.000001S").unwrap(),
            (-14, 3, -(4 * 3_600_000_000 + 5 * 60_000_000 + 6_000_001))
        );
        assert_eq!(parse_interval("PT-0.5S").unwrap(), (0, 0, -500_000));
        assert!(parse_interval("1 day").is_err());
    }

    #[test]
    fn arrays() {
        assert_eq!(parse_array("{}").unwrap(), Vec::<Element>::new());
        assert_eq!(
            parse_array(r#"{a,"b,c",NULL,"NULL","q\"x\\y"}"#).unwrap(),
            vec![
                Some("a".into()),
                Some("b,c".into()),
                None,
                Some("NULL".into()),
                Some(r#"q"x\y"#.into())
            ]
        );
        assert!(parse_array("[0:1]={1,2}").is_err());
        assert!(parse_array("{{1,2},{3,4}}").is_err());
    }

    #[test]
    fn scalars() {
        assert_eq!(
            parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap()[..2],
            [0xa0, 0xee]
        );
        assert!(parse_uuid("a0eebc99").is_err());
        assert_eq!(
            parse_bytea("\\xdeadBEEF").unwrap(),
            vec![0xde, 0xad, 0xbe, 0xef]
        );
        assert!(parse_bytea("abc").is_err());
        assert!(parse_f64("NaN").unwrap().is_nan());
        assert_eq!(parse_f64("-Infinity").unwrap(), f64::NEG_INFINITY);
        assert_eq!(
            parse_f64("1.2345678901234567e+300").unwrap(),
            1.2345678901234567e300
        );
        assert!(parse_bool("true").is_err());
    }
}
