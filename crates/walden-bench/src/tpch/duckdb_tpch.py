"""DuckDB side of `walden-bench tpch`: export the generated CSV tables to Parquet (once),
then time the queries over the Parquet files.

Usage: python duckdb_tpch.py <spec.json> <result.json>

spec.json: {"csv_dir", "parquet_dir", "threads", "runs",
            "tables": [[name, column DDL], ...], "queries": [[number, sql], ...]}
result.json: {"export_seconds": float | null,
              "queries": {"<number>": {"seconds": [...], "rows": [[...], ...]}}}
Times are taken here, around execute + fetchall, after one warm-up run per query.
"""

import json
import os
import sys
import time

import duckdb


def export(spec):
    """CSV -> Parquet with the same column types as the Postgres tables."""
    out = spec["parquet_dir"]
    done = os.path.join(out, ".complete")
    if os.path.exists(done):
        return None
    os.makedirs(out, exist_ok=True)
    t = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads = {int(spec['threads'])}")
    for name, columns in spec["tables"]:
        con.execute(f"CREATE TABLE {name} ({columns})")
        csv = os.path.join(spec["csv_dir"], f"{name}.csv")
        con.execute(f"COPY {name} FROM '{csv}' (FORMAT csv, HEADER true)")
        con.execute(
            f"COPY {name} TO '{os.path.join(out, name + '.parquet')}' (FORMAT parquet)"
        )
    con.close()
    open(done, "w").close()
    return time.perf_counter() - t


def cell(v):
    return None if v is None else str(v)


def main():
    spec_path, result_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    export_seconds = export(spec)

    con = duckdb.connect()
    con.execute(f"SET threads = {int(spec['threads'])}")
    for name, _ in spec["tables"]:
        path = os.path.join(spec["parquet_dir"], name + ".parquet")
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")

    results = {}
    for number, sql in spec["queries"]:
        con.execute(sql).fetchall()  # warm-up
        seconds = []
        rows = []
        for _ in range(int(spec["runs"])):
            t = time.perf_counter()
            rows = con.execute(sql).fetchall()
            seconds.append(time.perf_counter() - t)
        results[str(number)] = {
            "seconds": seconds,
            "rows": [[cell(v) for v in r] for r in rows],
        }
        print(
            f"duckdb q{number}: {sorted(seconds)[len(seconds) // 2]:.3f}s",
            file=sys.stderr,
            flush=True,
        )
    with open(result_path, "w") as f:
        json.dump({"export_seconds": export_seconds, "queries": results}, f)


if __name__ == "__main__":
    main()
