"""psycopg 3 against walden's pgwire front end; prints one JSON line of results."""

import json
import sys

import psycopg

PORT = int(sys.argv[1])


def connect(user="alice", password="alice-secret", **kw):
    return psycopg.connect(
        host="127.0.0.1",
        port=PORT,
        dbname="walden",
        user=user,
        password=password,
        sslmode="disable",
        connect_timeout=10,
        **kw,
    )


out = {}
with connect(autocommit=True) as c:
    cur = c.cursor()
    rows = []
    for i in (3, 7):
        cur.execute(
            "SELECT id, customer, amount, placed_at, day, paid FROM public.orders WHERE id = %s",
            (i,),
            prepare=True,
        )
        rows.append([str(v) for v in cur.fetchone()])
    out["prepared"] = rows

    bcur = c.cursor(binary=True)
    bcur.execute(
        "SELECT id, amount, placed_at, day, paid, customer FROM public.orders "
        "WHERE id <= %s ORDER BY id",
        (2,),
    )
    brows = bcur.fetchall()
    out["binary"] = [
        [r[0], str(r[1]), r[2].isoformat(), r[3].isoformat(), r[4], r[5]] for r in brows
    ]
    out["binary_types"] = [type(v).__name__ for v in brows[0]]

    cur.execute("SET application_name = 'psy'")
    cur.execute("SHOW application_name")
    out["show_app"] = cur.fetchone()[0]
    out["server_version"] = c.info.server_version

    errors = []
    for bad in ("SELECT * FROM public.nope", "SELECT nope FROM public.orders", "SELEC 1"):
        try:
            cur.execute(bad)
            errors.append("no error")
        except psycopg.Error as e:
            errors.append(e.sqlstate)
    out["errors"] = errors
    cur.execute("SELECT 1")
    out["after_errors"] = cur.fetchone()[0]

with connect() as c:
    with c.cursor(name="big") as cur:
        cur.execute("SELECT id FROM public.orders WHERE id > %s ORDER BY id", (2,))
        chunks = []
        while True:
            got = cur.fetchmany(7)
            if not got:
                break
            chunks.append([r[0] for r in got])
        out["named_chunks"] = chunks
    c.commit()
    with c.cursor(name="bin", binary=True) as cur:
        cur.execute("SELECT id, amount FROM public.orders ORDER BY id LIMIT 3")
        out["named_binary"] = [[r[0], str(r[1])] for r in cur.fetchall()]
    c.rollback()
    out["status_after"] = c.info.transaction_status.name

with connect("bob", "bob-secret", autocommit=True) as c:
    notices = []
    c.add_notice_handler(lambda d: notices.append([d.severity_nonlocalized or d.severity, d.sqlstate]))
    cur = c.cursor()
    cur.execute("SELECT id FROM public.orders ORDER BY id")
    out["bob_rows"] = [r[0] for r in cur.fetchall()]
    out["bob_notices"] = notices
    cur.execute("SELECT email FROM public.orders WHERE id = 1")
    out["bob_email"] = cur.fetchone()[0]
    cur.execute("SELECT name FROM public.customers ORDER BY id")
    out["bob_customers"] = [r[0] for r in cur.fetchall()]

print(json.dumps(out))
