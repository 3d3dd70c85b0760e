"""DuckDB side of `walden-bench tpch`: export the generated CSV tables to Parquet (once),
then time queries over the Parquet files as the bench asks for them.

Usage: python duckdb_tpch.py <spec.json>

spec.json: {"csv_dir", "parquet_dir", "threads", "tables": [[name, column DDL], ...]}
Then one request per line on stdin: {"number": n, "sql": "...", "runs": r}; one answer per
line on stdout: {"seconds": [...], "rows": [[...], ...]} or {"error": "..."}. The first line
written is {"ready": true, "export_seconds": float | null}. Times are taken here, around
execute + fetchall, after one warm-up run. The bench interleaves these requests with the
other engines' runs of the same query, so a busy machine affects them alike.
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
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    export_seconds = export(spec)

    con = duckdb.connect()
    con.execute(f"SET threads = {int(spec['threads'])}")
    for name, _ in spec["tables"]:
        path = os.path.join(spec["parquet_dir"], name + ".parquet")
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")
    print(json.dumps({"ready": True, "export_seconds": export_seconds}), flush=True)

    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        sql = req["sql"]
        try:
            con.execute(sql).fetchall()  # warm-up
            seconds = []
            rows = []
            for _ in range(int(req["runs"])):
                t = time.perf_counter()
                rows = con.execute(sql).fetchall()
                seconds.append(time.perf_counter() - t)
            answer = {"seconds": seconds, "rows": [[cell(v) for v in r] for r in rows]}
        except Exception as e:  # reported by the bench, which goes on
            answer = {"error": str(e)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
