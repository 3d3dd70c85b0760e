#!/usr/bin/env python3
"""Prove that independent Iceberg readers see exactly the rows Postgres has.

Usage:
  python check_lake.py --catalog-db /path/lake/catalog.db --warehouse /path/lake \\
      --pg "postgresql://user@127.0.0.1:5432/db" --table public.orders [--table ...] \\
      [--readers pyiceberg,duckdb] [--pg-snapshot-sql "SET TRANSACTION SNAPSHOT '...'"] \\
      [--catalog-name walden] [--dump]

For every table, rows are read from
  * Postgres (psycopg, raw text output of every column, parsed here),
  * pyiceberg (SqlCatalog over the sqlite catalog, scan().to_arrow()),
  * DuckDB 1.5.5 (avro + iceberg extensions loaded from the pip packages
    duckdb-extension-avro / duckdb-extension-iceberg, no autoload, no network;
    iceberg_scan(<metadata_location from the sqlite catalog>)),
every value is normalized to a canonical JSON-able form chosen from the
*Postgres* column type, rows are sorted and each lake reader is compared to
Postgres row by row (as multisets).

Exit status: 0 all match, 1 some mismatch, 2 any error (exception).

Canonical forms (same for both sides):
  int2/int4/int8/oid      -> int
  float4/float8           -> float (float4 rounded to float32 on both sides),
                             "NaN" / "Infinity" / "-Infinity" for non-finite
  numeric(p<=38,s), money -> decimal string with exactly s (money: 2) places
  numeric (unbounded)     -> decimal string with 10 places (lake: decimal(38,10));
                             Postgres side rounded half away from zero
  numeric(p>38,s)         -> Postgres text form (lake: string)
  text-like & unknown     -> Postgres text output form (lake: string)
  json/jsonb              -> compact, key-sorted re-serialization of the parsed
                             JSON (numbers compared numerically)
  bool                    -> bool
  bytea                   -> "\\x<hex>"
  uuid                    -> canonical lowercase uuid string
  date                    -> "YYYY-MM-DD" (proleptic Gregorian, astronomical year)
  time                    -> "HH:MM:SS.ffffff"
  timestamp               -> "YYYY-MM-DDTHH:MM:SS.ffffff"
  timestamptz             -> "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC instant)
  interval                -> {"months": m, "days": d, "microseconds": us}
  1-D arrays              -> list of the element's canonical form (None kept)
  NULL                    -> None
Postgres +-infinity: date -> 9999-12-31 / 0001-01-01, timestamp(tz) ->
9999-12-31 23:59:59.999999 / 0001-01-01 00:00:00.
"""
from __future__ import annotations

import argparse
import collections
import decimal
import importlib
import json
import math
import os
import re
import sqlite3
import struct
import sys
import traceback
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Optional

# High precision context: numeric values can have far more than 28 digits.
DEC_CTX = decimal.Context(prec=2000, rounding=decimal.ROUND_HALF_UP,
                          Emin=-999999, Emax=999999, traps=[decimal.InvalidOperation])

DEFAULT_READERS = ("pyiceberg", "duckdb")
ALL_READERS = ("pyiceberg", "duckdb")
MAX_DIFF_ROWS = 10
UNBOUNDED_NUMERIC_SCALE = 10  # numeric without precision -> decimal(38,10)


class CheckError(Exception):
    """A problem that is not a data mismatch (bad arguments, missing table...)."""


# ---------------------------------------------------------------------------
# Column type model, resolved from the Postgres catalog
# ---------------------------------------------------------------------------

@dataclass
class Kind:
    """How to normalize a column (or an array element)."""
    name: str                      # int float4 float8 decimal numeric_unbounded numeric_text
                                   # string json bool bytea uuid date time timestamp
                                   # timestamptz interval array
    precision: Optional[int] = None
    scale: Optional[int] = None
    element: Optional["Kind"] = None
    pg_base: str = ""              # resolved base type name (for messages)
    money: bool = False            # value must be selected as ::numeric

    def describe(self) -> str:
        if self.name == "array":
            return f"{self.element.describe()}[]"
        if self.name == "decimal":
            return f"decimal({self.precision},{self.scale})<-{self.pg_base}"
        return f"{self.name}<-{self.pg_base}"


@dataclass
class Column:
    name: str
    pg_type: str        # format_type() of the declared type
    kind: Kind


@dataclass
class TableInfo:
    qualified: str
    schema: str
    name: str
    columns: list[Column]
    pkey: list[str] = field(default_factory=list)


_INT_TYPES = {"int2", "int4", "int8", "oid"}
_SIMPLE_KINDS = {
    "float4": "float4", "float8": "float8",
    "bool": "bool", "bytea": "bytea", "uuid": "uuid",
    "json": "json", "jsonb": "json",
    "date": "date", "time": "time", "timestamp": "timestamp",
    "timestamptz": "timestamptz", "interval": "interval",
}


def _numeric_kind(typmod: int) -> Kind:
    if typmod < 4:  # -1: unconstrained
        return Kind("numeric_unbounded", precision=38, scale=UNBOUNDED_NUMERIC_SCALE,
                    pg_base="numeric")
    t = typmod - 4
    precision = (t >> 16) & 0xFFFF
    scale = ((t & 0x7FF) ^ 1024) - 1024  # PG15 allows negative scales (11-bit signed)
    if precision > 38:
        return Kind("numeric_text", precision=precision, scale=scale, pg_base="numeric")
    return Kind("decimal", precision=precision, scale=max(scale, 0), pg_base="numeric")


class TypeResolver:
    def __init__(self, cur):
        self.cur = cur
        self.cache: dict[int, tuple] = {}

    def _pg_type(self, oid: int) -> tuple:
        if oid not in self.cache:
            self.cur.execute(
                "SELECT t.typname, n.nspname, t.typtype, t.typcategory, t.typbasetype, "
                "t.typtypmod, t.typelem, t.typlen "
                "FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = %s",
                (oid,))
            row = self.cur.fetchone()
            if row is None:
                raise CheckError(f"unknown type oid {oid}")
            self.cache[oid] = row
        return self.cache[oid]

    def resolve(self, oid: int, typmod: int, depth: int = 0) -> Kind:
        if depth > 20:
            raise CheckError(f"type oid {oid}: domain/array nesting too deep")
        typname, nsp, typtype, typcategory, basetype, typtypmod, typelem, typlen = self._pg_type(oid)
        if typtype == "d":  # domain: use the base type (and the domain's typmod)
            return self.resolve(basetype, typtypmod if typtypmod != -1 else typmod, depth + 1)
        if typcategory == "A" and typelem != 0 and typlen == -1:
            elem = self.resolve(typelem, typmod, depth + 1)
            if elem.name == "array":
                raise CheckError("nested array types are not supported")
            return Kind("array", element=elem, pg_base=f"{elem.pg_base}[]", money=elem.money)
        if nsp == "pg_catalog":
            if typname in _INT_TYPES:
                return Kind("int", pg_base=typname)
            if typname == "numeric":
                return _numeric_kind(typmod)
            if typname == "money":
                return Kind("decimal", precision=19, scale=2, pg_base="money", money=True)
            if typname in _SIMPLE_KINDS:
                return Kind(_SIMPLE_KINDS[typname], pg_base=typname)
        # text, varchar, bpchar, name, citext, enums, xml, inet, cidr, macaddr,
        # bit, varbit, timetz, and anything else: Postgres text output form.
        return Kind("string", pg_base=f"{nsp}.{typname}" if nsp != "pg_catalog" else typname)


def split_table(qualified: str) -> tuple[str, str]:
    if "." not in qualified:
        raise CheckError(f"--table {qualified!r}: expected schema.name")
    schema, name = qualified.split(".", 1)
    return schema, name


def load_table_info(cur, qualified: str) -> TableInfo:
    schema, name = split_table(qualified)
    cur.execute("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s", (schema, name))
    row = cur.fetchone()
    if row is None:
        raise CheckError(f"table {qualified} not found in Postgres")
    reloid = row[0]
    cur.execute(
        "SELECT a.attname, a.atttypid, a.atttypmod, format_type(a.atttypid, a.atttypmod) "
        "FROM pg_attribute a WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum", (reloid,))
    attrs = cur.fetchall()
    cur.execute(
        "SELECT a.attname FROM pg_index i "
        "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord", (reloid,))
    pkey = [r[0] for r in cur.fetchall()]
    resolver = TypeResolver(cur)
    cols = [Column(n, fmt, resolver.resolve(oid, typmod)) for n, oid, typmod, fmt in attrs]
    if not cols:
        raise CheckError(f"table {qualified} has no columns")
    return TableInfo(qualified, schema, name, cols, pkey)


# ---------------------------------------------------------------------------
# Calendar helpers (work for any year, including BC and > 9999)
# ---------------------------------------------------------------------------

US_PER_DAY = 86_400_000_000


def days_from_civil(y: int, m: int, d: int) -> int:
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


def fmt_days(days: int) -> str:
    y, m, d = civil_from_days(days)
    ys = f"{y:04d}" if y >= 0 else f"-{-y:04d}"
    return f"{ys}-{m:02d}-{d:02d}"


def fmt_time_us(us: int) -> str:
    s, frac = divmod(us, 1_000_000)
    h, rem = divmod(s, 3600)
    mi, sec = divmod(rem, 60)
    return f"{h:02d}:{mi:02d}:{sec:02d}.{frac:06d}"


def fmt_ts_us(us: int) -> str:
    days, rem = divmod(us, US_PER_DAY)
    return f"{fmt_days(days)}T{fmt_time_us(rem)}"


DATE_POS_INF = days_from_civil(9999, 12, 31)
DATE_NEG_INF = days_from_civil(1, 1, 1)
TS_POS_INF = DATE_POS_INF * US_PER_DAY + US_PER_DAY - 1   # 9999-12-31 23:59:59.999999
TS_NEG_INF = DATE_NEG_INF * US_PER_DAY                    # 0001-01-01 00:00:00


# ---------------------------------------------------------------------------
# Postgres text-output parsers (session: DateStyle ISO, TimeZone UTC,
# IntervalStyle postgres, bytea_output hex, extra_float_digits 3)
# ---------------------------------------------------------------------------

_DATE_RE = re.compile(r"^(\d{4,})-(\d\d)-(\d\d)( BC)?$")
_TIME_RE = re.compile(r"^(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?$")
_TS_RE = re.compile(r"^(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
                    r"(?:([+-])(\d\d)(?::(\d\d)(?::(\d\d))?)?)?( BC)?$")
_IV_UNIT_RE = re.compile(r"([+-]?\d+) (years?|mons?|days?)")
_IV_TIME_RE = re.compile(r"([+-]?)(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?")


def _year(s: str, bc: Optional[str]) -> int:
    y = int(s)
    return 1 - y if bc else y


def _frac_us(s: Optional[str]) -> int:
    return int((s or "").ljust(6, "0")) if s else 0


def pg_date_days(s: str) -> int:
    if s == "infinity":
        return DATE_POS_INF
    if s == "-infinity":
        return DATE_NEG_INF
    m = _DATE_RE.match(s)
    if not m:
        raise CheckError(f"cannot parse Postgres date {s!r}")
    return days_from_civil(_year(m.group(1), m.group(4)), int(m.group(2)), int(m.group(3)))


def pg_time_us(s: str) -> int:
    m = _TIME_RE.match(s)
    if not m:
        raise CheckError(f"cannot parse Postgres time {s!r}")
    h, mi, sec = int(m.group(1)), int(m.group(2)), int(m.group(3))
    return ((h * 60 + mi) * 60 + sec) * 1_000_000 + _frac_us(m.group(4))


def pg_timestamp_us(s: str, with_tz: bool) -> int:
    if s == "infinity":
        return TS_POS_INF
    if s == "-infinity":
        return TS_NEG_INF
    m = _TS_RE.match(s)
    if not m:
        raise CheckError(f"cannot parse Postgres timestamp {s!r}")
    (y, mo, d, h, mi, sec, frac, sign, oh, om, osec, bc) = m.groups()
    days = days_from_civil(_year(y, bc), int(mo), int(d))
    us = days * US_PER_DAY + ((int(h) * 60 + int(mi)) * 60 + int(sec)) * 1_000_000 + _frac_us(frac)
    if sign:
        if not with_tz:
            raise CheckError(f"unexpected zone in timestamp {s!r}")
        off = (int(oh) * 3600 + int(om or 0) * 60 + int(osec or 0)) * 1_000_000
        us -= off if sign == "+" else -off
    elif with_tz:
        raise CheckError(f"missing zone in timestamptz {s!r}")
    return us


def pg_interval(s: str) -> dict:
    """Parse IntervalStyle 'postgres' output, e.g. '-1 mons +2 days -00:00:01.5'."""
    months = days = us = 0
    for num, unit in _IV_UNIT_RE.findall(s):
        n = int(num)
        if unit.startswith("year"):
            months += 12 * n
        elif unit.startswith("mon"):
            months += n
        else:
            days += n
    rest = _IV_UNIT_RE.sub("", s).strip()
    if rest:
        m = _IV_TIME_RE.fullmatch(rest)
        if not m:
            raise CheckError(f"cannot parse Postgres interval {s!r}")
        sign, h, mi, sec, frac = m.groups()
        us = ((int(h) * 60 + int(mi)) * 60 + int(sec)) * 1_000_000 + _frac_us(frac)
        if sign == "-":
            us = -us
    return {"months": months, "days": days, "microseconds": us}


def parse_pg_array(s: str) -> list[Optional[str]]:
    """Parse a 1-D Postgres array literal into element texts (None for NULL)."""
    if s.startswith("["):  # non-default bounds: '[0:2]={...}'
        s = s[s.index("=") + 1:]
    if not (s.startswith("{") and s.endswith("}")):
        raise CheckError(f"cannot parse Postgres array {s!r}")
    body = s[1:-1]
    out: list[Optional[str]] = []
    if body == "":
        return out
    i, n = 0, len(body)
    while i <= n:
        if i < n and body[i] == "{":
            raise CheckError("multi-dimensional arrays are not supported")
        if i < n and body[i] == '"':
            i += 1
            buf = []
            while True:
                c = body[i]
                if c == "\\":
                    buf.append(body[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    buf.append(c)
                    i += 1
            out.append("".join(buf))
        else:
            j = i
            while j < n and body[j] != ",":
                j += 1
            tok = body[i:j]
            out.append(None if tok == "NULL" else tok)
            i = j
        if i < n and body[i] != ",":
            raise CheckError(f"cannot parse Postgres array {s!r} at {i}")
        i += 1
        if i > n:
            break
    return out


# ---------------------------------------------------------------------------
# Canonical forms
# ---------------------------------------------------------------------------

def canon_float(x: float, f32: bool) -> Any:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if f32:
        x = struct.unpack("<f", struct.pack("<f", x))[0]
    return x


def canon_decimal(d: Decimal, scale: int) -> str:
    if d.is_nan():
        return "NaN"
    if d.is_infinite():
        return "Infinity" if d > 0 else "-Infinity"
    q = d.quantize(Decimal(1).scaleb(-scale), context=DEC_CTX)
    if q.is_zero():
        q = q.copy_abs()
    return format(q, "f")


def _canon_json_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _canon_json_value(v[k])
                              for k in sorted(v)) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_canon_json_value(x) for x in v) + "]"
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (int, Decimal)):
        d = Decimal(v)
        if d.is_zero():
            return "0"
        d = d.normalize(context=DEC_CTX)
        return format(d, "f") if abs(d.adjusted()) < 40 else str(d)
    raise CheckError(f"unexpected JSON value {v!r}")


def canon_json_text(s: str) -> str:
    try:
        v = json.loads(s, parse_float=Decimal, parse_int=int,
                       parse_constant=lambda c: Decimal(c.replace("Infinity", "Inf")))
    except json.JSONDecodeError as e:
        return f"<invalid json {e.msg}: {s!r}>"
    return _canon_json_value(v)


def canon_uuid(v: Any) -> str:
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return str(uuid.UUID(bytes=bytes(v)))
    return str(uuid.UUID(str(v)))


def canon_bytes(v: Any) -> str:
    return "\\x" + bytes(v).hex()


# ---- Postgres side: text -> canonical --------------------------------------

def pg_scalar(kind: Kind, s: str) -> Any:
    k = kind.name
    if k == "int":
        return int(s)
    if k in ("float4", "float8"):
        return canon_float(float(s), k == "float4")
    if k == "decimal":
        return canon_decimal(Decimal(s), kind.scale)
    if k == "numeric_unbounded":
        return canon_decimal(Decimal(s), UNBOUNDED_NUMERIC_SCALE)
    if k in ("numeric_text", "string"):
        return s
    if k == "json":
        return canon_json_text(s)
    if k == "bool":
        return s == "t"
    if k == "bytea":
        if not s.startswith("\\x"):
            raise CheckError(f"bytea not in hex form: {s[:20]!r}")
        return "\\x" + s[2:].lower()
    if k == "uuid":
        return canon_uuid(s)
    if k == "date":
        return fmt_days(pg_date_days(s))
    if k == "time":
        return fmt_time_us(pg_time_us(s))
    if k == "timestamp":
        return fmt_ts_us(pg_timestamp_us(s, False))
    if k == "timestamptz":
        return fmt_ts_us(pg_timestamp_us(s, True)) + "Z"
    if k == "interval":
        return pg_interval(s)
    raise CheckError(f"no Postgres parser for kind {k}")


def pg_value(kind: Kind, raw: Optional[bytes]) -> Any:
    if raw is None:
        return None
    s = bytes(raw).decode("utf-8")
    if kind.name == "array":
        return [None if e is None else pg_scalar(kind.element, e) for e in parse_pg_array(s)]
    return pg_scalar(kind, s)


# ---- lake side: python values (from Arrow, temporal types as ints) -> canonical

def lake_scalar(kind: Kind, v: Any, unit_us: int) -> Any:
    k = kind.name
    if k == "int":
        return int(v)
    if k in ("float4", "float8"):
        return canon_float(float(v), k == "float4")
    if k in ("decimal", "numeric_unbounded"):
        d = v if isinstance(v, Decimal) else Decimal(str(v))
        return canon_decimal(d, kind.scale)
    if k in ("numeric_text", "string"):
        if isinstance(v, (bytes, bytearray)):
            return bytes(v).decode("utf-8")
        return v if isinstance(v, str) else str(v)
    if k == "json":
        return canon_json_text(v if isinstance(v, str) else bytes(v).decode("utf-8"))
    if k == "bool":
        return bool(v)
    if k == "bytea":
        return canon_bytes(v)
    if k == "uuid":
        return canon_uuid(v)
    if k == "date":
        return fmt_days(int(v))
    if k == "time":
        return fmt_time_us(int(v) * unit_us if unit_us > 0 else int(v) // -unit_us)
    if k in ("timestamp", "timestamptz"):
        us = int(v) * unit_us if unit_us > 0 else int(v) // -unit_us
        return fmt_ts_us(us) + ("Z" if k == "timestamptz" else "")
    if k == "interval":
        if isinstance(v, dict):
            return {"months": int(v["months"]), "days": int(v["days"]),
                    "microseconds": int(v["microseconds"])}
        # Arrow month_day_nano interval (if a reader ever returns a native interval)
        months, days, nanos = v.months, v.days, v.nanoseconds
        return {"months": months, "days": days, "microseconds": nanos // 1000}
    raise CheckError(f"no lake normalizer for kind {k}")


def lake_value(kind: Kind, v: Any, unit_us: int) -> Any:
    if v is None:
        return None
    if kind.name == "array":
        return [None if e is None else lake_scalar(kind.element, e, unit_us) for e in v]
    return lake_scalar(kind, v, unit_us)


def _integerize(arr):
    """Cast Arrow temporal types to integers so values outside Python's datetime
    range survive to_pylist(). Returns (array, unit) where unit > 0 means
    'multiply by unit to get microseconds' and unit < 0 'divide by -unit'."""
    import pyarrow as pa
    import pyarrow.types as pt

    unit_us = {"s": 1_000_000, "ms": 1000, "us": 1, "ns": -1000}

    def map_type(t):
        if pt.is_date32(t):
            return pa.int32(), 1
        if pt.is_date64(t):
            raise CheckError("date64 columns are not supported")
        if pt.is_timestamp(t) or pt.is_time64(t) or pt.is_time32(t):
            return (pa.int64() if not pt.is_time32(t) else pa.int32()), unit_us[t.unit]
        if pt.is_list(t) or pt.is_large_list(t) or pt.is_fixed_size_list(t):
            inner, u = map_type(t.value_type)
            if inner == t.value_type:
                return t, u
            return pa.list_(inner), u
        return t, 1

    t = arr.type
    target, unit = map_type(t)
    if target != t:
        arr = arr.cast(target)
    return arr, unit


# ---------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------

PG_SESSION_SETTINGS = (
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET TimeZone = 'UTC'",
    "SET bytea_output = 'hex'",
    "SET extra_float_digits = 3",
    "SET client_encoding = 'UTF8'",
)


def pg_select_sql(info: TableInfo):
    from psycopg import sql
    exprs = []
    for c in info.columns:
        ident = sql.Identifier(c.name)
        if c.kind.money:  # money output is locale dependent: fetch as numeric
            cast = sql.SQL("numeric[]" if c.kind.name == "array" else "numeric")
            exprs.append(sql.SQL("({})::{}").format(ident, cast))
        else:
            exprs.append(ident)
    return sql.SQL("SELECT {} FROM {}.{}").format(
        sql.SQL(", ").join(exprs), sql.Identifier(info.schema), sql.Identifier(info.name))


def read_postgres(conn, info: TableInfo) -> list[list[Any]]:
    with conn.cursor(binary=False) as cur:
        cur.execute(pg_select_sql(info))
        res = cur.pgresult  # raw text-format values; no psycopg loaders involved
        kinds = [c.kind for c in info.columns]
        rows = []
        for r in range(res.ntuples):
            rows.append([pg_value(kinds[i], res.get_value(r, i)) for i in range(res.nfields)])
        return rows


def normalize_arrow(info: TableInfo, table, reader: str) -> tuple[list[list[Any]], list[str]]:
    """Normalize an Arrow table against the Postgres columns. Returns (rows, problems)."""
    problems = []
    names = table.column_names
    cols = []
    for c in info.columns:
        if c.name not in names:
            problems.append(f"column {c.name!r} ({c.pg_type}) missing in lake (reader {reader})")
            cols.append(None)
            continue
        arr, unit = _integerize(table.column(c.name))
        vals = arr.to_pylist()
        cols.append([lake_value(c.kind, v, unit) for v in vals])
    if problems:
        return [], problems
    extra = [n for n in names if n not in {c.name for c in info.columns}]
    if extra:
        print(f"note: {info.qualified} {reader}: lake has extra columns {extra} (ignored)",
              file=sys.stderr)
    return [list(r) for r in zip(*cols)] if cols else [], problems


class PyIcebergReader:
    name = "pyiceberg"

    def __init__(self, args):
        from pyiceberg.catalog.sql import SqlCatalog
        self.catalog = SqlCatalog(
            args.catalog_name,
            uri=f"sqlite:///{args.catalog_db}",
            warehouse=f"file://{args.warehouse}",
            init_catalog_tables="false",
        )

    def read(self, info: TableInfo):
        import pyarrow as pa
        table = self.catalog.load_table((info.schema, info.name))
        try:
            return table.scan().to_arrow()
        except pa.ArrowNotImplementedError:
            # An empty scan makes pyiceberg build schema.empty_table(), which
            # pyarrow cannot do for list<extension> (e.g. list<uuid>). Only
            # accept that case: the scan really yields no rows.
            batches = list(table.scan().to_arrow_batch_reader())
            if sum(b.num_rows for b in batches):
                raise
            return pa.table({f.name: pa.nulls(0) for f in table.schema().fields})


def duckdb_extension_path(name: str) -> str:
    import duckdb
    try:
        pkg = importlib.import_module(f"duckdb_extension_{name}")
    except ImportError as e:
        raise CheckError(f"pip package duckdb-extension-{name} is not installed "
                         f"(run scripts/python-env.sh): {e}")
    base = os.path.join(os.path.dirname(pkg.__file__), "extensions")
    path = os.path.join(base, "v" + duckdb.__version__, f"{name}.duckdb_extension")
    if os.path.isfile(path):
        return path
    found = []
    for root, _dirs, files in os.walk(base):
        found += [os.path.join(root, f) for f in files if f == f"{name}.duckdb_extension"]
    raise CheckError(f"no {name}.duckdb_extension for duckdb {duckdb.__version__} "
                     f"(found: {found or 'none'})")


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class DuckDBReader:
    name = "duckdb"

    def __init__(self, args):
        import duckdb
        self.args = args
        self.con = duckdb.connect(":memory:", config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        })
        for ext in ("avro", "iceberg"):
            self.con.execute(f"LOAD {sql_str(duckdb_extension_path(ext))}")
        self.con.execute("SET TimeZone = 'UTC'")

    def metadata_location(self, info: TableInfo) -> str:
        db = sqlite3.connect(f"file:{self.args.catalog_db}?mode=ro", uri=True)
        try:
            row = db.execute(
                "SELECT metadata_location FROM iceberg_tables "
                "WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?",
                (self.args.catalog_name, info.schema, info.name)).fetchone()
        finally:
            db.close()
        if row is None or not row[0]:
            raise CheckError(f"{info.qualified} not in sqlite catalog {self.args.catalog_db}")
        return row[0]

    def read(self, info: TableInfo):
        loc = self.metadata_location(info)  # iceberg_scan accepts file:// URIs and plain paths
        rel = self.con.execute(f"SELECT * FROM iceberg_scan({sql_str(loc)})")
        fetch = getattr(rel, "to_arrow_table", None) or rel.fetch_arrow_table
        return fetch()


READER_CLASSES = {"pyiceberg": PyIcebergReader, "duckdb": DuckDBReader}


# ---------------------------------------------------------------------------
# Comparison and reporting
# ---------------------------------------------------------------------------

def row_key(row: list[Any]) -> str:
    return json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def row_dict(info: TableInfo, row: list[Any]) -> dict:
    return {c.name: v for c, v in zip(info.columns, row)}


def compare(info: TableInfo, reader: str, pg_rows, lake_rows) -> list[str]:
    """Return report lines describing differences (empty list: identical multisets)."""
    pg_sorted = sorted(row_key(r) for r in pg_rows)
    lake_sorted = sorted(row_key(r) for r in lake_rows)
    if pg_sorted == lake_sorted:
        return []
    pg_c = collections.Counter(pg_sorted)
    lake_c = collections.Counter(lake_sorted)
    only_pg = sorted((pg_c - lake_c).elements())
    only_lake = sorted((lake_c - pg_c).elements())
    n_pg, n_lake = len(pg_rows), len(lake_rows)
    out = [f"{info.qualified} {reader}: MISMATCH postgres={n_pg} rows lake={n_lake} rows "
           f"(lake {n_lake - n_pg:+d}); {len(only_pg)} rows only in postgres, "
           f"{len(only_lake)} rows only in lake"]

    # Pair differing rows by primary key, if there is one, to show column diffs.
    if info.pkey:
        idx = [i for i, c in enumerate(info.columns) if c.name in info.pkey]

        def by_key(keys):
            d = {}
            for k in keys:
                row = json.loads(k)
                d.setdefault(row_key([row[i] for i in idx]), []).append(row)
            return d

        pg_by, lake_by = by_key(only_pg), by_key(only_lake)
        common = sorted(set(pg_by) & set(lake_by))
        if common:
            out.append(f"  {len(common)} keys present on both sides with different values:")
            for k in common[:MAX_DIFF_ROWS]:
                a, b = pg_by[k][0], lake_by[k][0]
                diffs = [f"{c.name}: postgres={json.dumps(x, ensure_ascii=False)} "
                         f"lake={json.dumps(y, ensure_ascii=False)}"
                         for c, x, y in zip(info.columns, a, b) if row_key([x]) != row_key([y])]
                out.append(f"    key {dict(zip(info.pkey, json.loads(k)))}: " + "; ".join(diffs))
    for label, rows in (("only in postgres", only_pg), ("only in lake", only_lake)):
        if rows:
            out.append(f"  {label} ({len(rows)} rows, showing up to {MAX_DIFF_ROWS}):")
            for k in rows[:MAX_DIFF_ROWS]:
                out.append("    " + json.dumps(row_dict(info, json.loads(k)), ensure_ascii=False))
    return out


def pyiceberg_null_list_struct_workaround(info: TableInfo, pg_rows, lake_rows):
    """pyiceberg (<= 0.12, apache/iceberg-python#3833) reads a NULL list<struct>
    as an empty list. interval[] is the only list<struct> in the mapping, so for
    the pyiceberg reader only, NULL and [] are treated alike in those columns
    (DuckDB still checks them strictly)."""
    idx = [i for i, c in enumerate(info.columns)
           if c.kind.name == "array" and c.kind.element.name == "interval"]
    if not idx:
        return pg_rows, lake_rows
    print(f"note: {info.qualified} pyiceberg: NULL and empty arrays are not distinguished in "
          f"{[info.columns[i].name for i in idx]} (pyiceberg bug apache/iceberg-python#3833)",
          file=sys.stderr)

    def fix(rows):
        out = []
        for r in rows:
            r = list(r)
            for i in idx:
                if r[i] is None:
                    r[i] = []
            out.append(r)
        return out
    return fix(pg_rows), fix(lake_rows)


def dump_rows(info: TableInfo, reader: str, rows) -> None:
    for k in sorted(row_key(r) for r in rows):
        print(json.dumps({"table": info.qualified, "reader": reader,
                          "row": row_dict(info, json.loads(k))}, ensure_ascii=False))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--catalog-db", required=True, help="sqlite file of the SqlCatalog")
    p.add_argument("--warehouse", required=True, help="warehouse directory")
    p.add_argument("--pg", required=True, help="Postgres connection string")
    p.add_argument("--table", action="append", required=True, dest="tables",
                   help="schema.name (repeatable)")
    p.add_argument("--readers", default=",".join(DEFAULT_READERS),
                   help=f"comma separated subset of {','.join(ALL_READERS)}")
    p.add_argument("--pg-snapshot-sql", default=None,
                   help="SQL run first inside the REPEATABLE READ read transaction, "
                        "e.g. SET TRANSACTION SNAPSHOT '...'")
    p.add_argument("--catalog-name", default="walden")
    p.add_argument("--dump", action="store_true",
                   help="print normalized rows of every reader as JSON lines")
    p.add_argument("--verbose", action="store_true", help="print tracebacks on errors")
    args = p.parse_args(argv)
    args.catalog_db = os.path.abspath(args.catalog_db)
    args.warehouse = os.path.abspath(args.warehouse)
    args.readers = [r.strip() for r in args.readers.split(",") if r.strip()]
    bad = [r for r in args.readers if r not in ALL_READERS]
    if bad or not args.readers:
        p.error(f"unknown reader(s) {bad}; choose from {','.join(ALL_READERS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except Exception as e:  # noqa: BLE001 - any exception is exit 2
        if args.verbose:
            traceback.print_exc()
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    import psycopg

    if not os.path.isfile(args.catalog_db):
        raise CheckError(f"catalog db {args.catalog_db} does not exist")

    # 1. Postgres: every table inside one REPEATABLE READ transaction.
    pg_data: dict[str, tuple[TableInfo, list]] = {}
    with psycopg.connect(args.pg, autocommit=True) as conn:
        for stmt in PG_SESSION_SETTINGS:
            conn.execute(stmt)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if args.pg_snapshot_sql:
            conn.execute(args.pg_snapshot_sql)
        with conn.cursor() as cur:
            infos = [load_table_info(cur, t) for t in args.tables]
        for info in infos:
            pg_data[info.qualified] = (info, read_postgres(conn, info))
        conn.execute("COMMIT")

    # 2. lake readers.
    mismatch = False
    errors = False
    readers = {}
    for rname in args.readers:
        try:
            readers[rname] = READER_CLASSES[rname](args)
        except Exception as e:  # noqa: BLE001
            if args.verbose:
                traceback.print_exc()
            print(f"error: reader {rname} failed to start: {type(e).__name__}: {e}")
            errors = True

    for qualified in args.tables:
        info, pg_rows = pg_data[qualified]
        if args.dump:
            print(json.dumps({"table": info.qualified, "primary_key": info.pkey, "columns": [
                {"name": c.name, "pg_type": c.pg_type, "kind": c.kind.describe()}
                for c in info.columns]}, ensure_ascii=False))
            dump_rows(info, "postgres", pg_rows)
        for rname, reader in readers.items():
            try:
                lake_rows, problems = normalize_arrow(info, reader.read(info), rname)
            except Exception as e:  # noqa: BLE001
                if args.verbose:
                    traceback.print_exc()
                print(f"{qualified} {rname}: ERROR {type(e).__name__}: {e}")
                errors = True
                continue
            if problems:
                print(f"{qualified} {rname}: MISMATCH schema")
                for p in problems:
                    print(f"  {p}")
                mismatch = True
                continue
            expected = pg_rows
            if rname == "pyiceberg":
                expected, lake_rows = pyiceberg_null_list_struct_workaround(info, pg_rows, lake_rows)
            if args.dump:
                dump_rows(info, rname, lake_rows)
            report = compare(info, rname, expected, lake_rows)
            if report:
                mismatch = True
                print("\n".join(report))
            else:
                print(f"{qualified} {rname}: {len(pg_rows)} rows match")
    sys.stdout.flush()
    if errors:
        return 2
    return 1 if mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
