"""A cancel request from psycopg stops a running query; another client is served meanwhile."""

import json
import sys
import threading
import time

import psycopg

PORT = int(sys.argv[1])


def connect():
    return psycopg.connect(
        host="127.0.0.1", port=PORT, dbname="walden", user="alice",
        password="alice-secret", sslmode="disable", autocommit=True, connect_timeout=10,
    )


res = {}
busy = connect()
other = connect()


def run():
    try:
        busy.execute("SELECT count(*) FROM generate_series(1, 10000000000)")
        res["long"] = "finished"
    except psycopg.Error as e:
        res["long"] = e.sqlstate
        res["message"] = str(e)


t = threading.Thread(target=run)
t.start()
time.sleep(0.5)
res["other"] = other.execute("SELECT count(*) FROM public.orders").fetchone()[0]
# Cancel until the query has stopped: a cancel that lands before the query starts is void.
while t.is_alive():
    busy.cancel()
    t.join(0.5)
res["after"] = busy.execute("SELECT 42").fetchone()[0]
print(json.dumps(res))
