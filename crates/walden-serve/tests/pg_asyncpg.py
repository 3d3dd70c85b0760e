"""asyncpg against walden's pgwire front end; prints one JSON line of results."""

import asyncio
import datetime
import decimal
import json
import sys

import asyncpg

PORT = int(sys.argv[1])


async def main():
    c = await asyncpg.connect(
        host="127.0.0.1", port=PORT, user="alice", password="alice-secret",
        database="walden", ssl=False, timeout=10,
    )
    out = {}
    rows = await c.fetch(
        "SELECT id, customer, amount, placed_at, day, paid FROM public.orders "
        "WHERE id <= $1 ORDER BY id",
        2,
    )
    out["fetch"] = [
        [r["id"], r["customer"], str(r["amount"]), r["placed_at"].isoformat(),
         r["day"].isoformat(), r["paid"]]
        for r in rows
    ]
    stmt = await c.prepare("SELECT count(*) AS n FROM public.orders WHERE amount > $1")
    out["prepared"] = [
        await stmt.fetchval(decimal.Decimal("100.00")),
        await stmt.fetchval(decimal.Decimal("150.25")),
    ]
    out["param_types"] = [t.name for t in stmt.get_parameters()]
    out["result_types"] = [a.type.name for a in stmt.get_attributes()]
    # Parameters typed only by a cast bind as that type.
    out["cast_params"] = [
        await c.fetchval("SELECT $1::bigint + 1", 5),
        await c.fetchval("SELECT CAST($1 AS integer) * 2", 4),
        str(await c.fetchval("SELECT $1::numeric(10,2)", decimal.Decimal("1.50"))),
    ]
    # Typed parameters of every column type, binary both ways.
    rows = await c.fetch(
        "SELECT id, customer, amount, placed_at, day, paid FROM public.orders "
        "WHERE id = $1 AND customer = $2 AND amount = $3 AND placed_at = $4 AND day = $5 "
        "AND paid = $6",
        3, "customer-3", decimal.Decimal("30.25"),
        datetime.datetime(2024, 1, 1, 3, 0, 0, tzinfo=datetime.timezone.utc),
        datetime.date(2024, 1, 4), False,
    )
    out["roundtrip"] = [
        [r["id"], r["customer"], str(r["amount"]), r["placed_at"].isoformat(),
         r["day"].isoformat(), r["paid"]]
        for r in rows
    ]
    async with c.transaction(readonly=True):
        out["cursor"] = [
            rec["id"]
            async for rec in c.cursor("SELECT id FROM public.orders ORDER BY id", prefetch=6)
        ]
    await c.close()
    print(json.dumps(out))


asyncio.run(main())
