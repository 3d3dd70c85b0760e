"""Drives walden's MCP server with the official `mcp` Python SDK.

argv[1] is a JSON object:
  transport: "http" or "stdio"
  mode: the SDK's connect mode ("auto": 2026-07-28 without sessions; "legacy": the
        initialize handshake with a session)
  http: url, token, other_token (another principal's)
  stdio: command (list), env (object)
  table: a table to describe and sample; search: keywords; sql: a query
  queries: {name: sql} run with the query tool, texts returned for the caller to check

Prints one JSON line at the end: every tool's text (or error), the tool names, and for
HTTP the raw status codes of refused requests (no token, bad token, bad Origin, unknown,
foreign and replayed session ids).
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def text_of(result):
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def call(client, name, args):
    try:
        r = await client.call_tool(name, args)
        return {"is_error": bool(r.is_error), "text": text_of(r)}
    except Exception as e:  # a protocol error (unknown tool) or a client-side refusal
        return {"exception": f"{type(e).__name__}: {e}"}


async def battery(client, cfg):
    out = {"protocol": client.protocol_version}
    tools = await client.list_tools()
    out["tools"] = sorted(t.name for t in tools.tools)
    out["schemas"] = {t.name: t.input_schema for t in tools.tools}
    t = {}
    t["list_tables"] = await call(client, "list_tables", {})
    t["list_tables_page1"] = await call(client, "list_tables", {"limit": 1})
    t["list_tables_page2"] = await call(client, "list_tables", {"limit": 1, "cursor": "offset:1"})
    t["search_catalog"] = await call(client, "search_catalog", {"query": cfg["search"]})
    t["describe_table"] = await call(client, "describe_table", {"table": cfg["table"]})
    t["sample_rows"] = await call(client, "sample_rows", {"table": cfg["table"], "rows": 3})
    t["sample_rows_json"] = await call(
        client, "sample_rows", {"table": cfg["table"], "rows": 2, "format": "json"}
    )
    t["query"] = await call(client, "query", {"sql": cfg["sql"]})
    t["query_json"] = await call(client, "query", {"sql": cfg["sql"], "format": "json"})
    t["query_truncated"] = await call(
        client, "query", {"sql": f"SELECT * FROM {cfg['table']}", "max_rows": 2}
    )
    t["explain"] = await call(client, "explain", {"sql": cfg["sql"]})
    for name, sql in cfg.get("queries", {}).items():
        t["q_" + name] = await call(client, "query", {"sql": sql, "max_rows": 1000, "max_chars": 100000})
    # Hostile and bad input.
    t["drop"] = await call(client, "query", {"sql": f"DROP TABLE {cfg['table']}"})
    t["insert"] = await call(client, "query", {"sql": f"INSERT INTO {cfg['table']} (id) VALUES (1)"})
    t["two_statements"] = await call(client, "query", {"sql": "SELECT 1; SELECT 2"})
    t["read_file"] = await call(client, "query", {"sql": "SELECT * FROM '/etc/passwd'"})
    t["unknown_table"] = await call(client, "query", {"sql": "SELECT * FROM public.ordrs"})
    t["unknown_column"] = await call(
        client, "query", {"sql": f"SELECT amout FROM {cfg['table']}"}
    )
    t["injected_name"] = await call(client, "describe_table", {"table": "x; DROP TABLE y"})
    t["injected_sample"] = await call(
        client, "sample_rows", {"table": f"{cfg['table']}; DROP TABLE y --"}
    )
    t["unknown_argument"] = await call(client, "describe_table", {"table": cfg["table"], "bogus": 1})
    t["oversized_name"] = await call(client, "describe_table", {"table": "x" * 100_000})
    t["bad_limit"] = await call(client, "list_tables", {"limit": 100000})
    t["bad_cursor"] = await call(client, "list_tables", {"cursor": "'; DROP TABLE y"})
    t["unknown_tool"] = await call(client, "drop_everything", {})
    out["tools_out"] = t
    # Resources.
    r = {}
    resources = await client.list_resources()
    r["uris"] = sorted(x.uri for x in resources.resources)
    guide = await client.read_resource("walden://guide")
    r["guide"] = guide.contents[0].text
    ns, name = cfg["table"].split(".")
    doc = await client.read_resource(f"walden://table/{ns}/{name}")
    r["table"] = doc.contents[0].text
    try:
        await client.read_resource("walden://table/nope/nope")
        r["missing"] = "no error"
    except Exception as e:
        r["missing"] = f"{type(e).__name__}: {e}"
    out["resources"] = r
    return out


async def http_refusals(cfg):
    url = cfg["url"]
    base = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    auth = {"Authorization": f"Bearer {cfg['token']}"}
    out = {}
    async with httpx2.AsyncClient(timeout=30) as c:
        r = await c.post(url, json=init, headers=base)
        out["no_token"] = [r.status_code, r.text]
        r = await c.post(url, json=init, headers={**base, "Authorization": "Bearer nope"})
        out["bad_token"] = [r.status_code, r.text]
        r = await c.post(url, json=init, headers={**base, **auth, "Origin": "https://evil.example"})
        out["bad_origin"] = [r.status_code, r.text]
        r = await c.post(url, json=init, headers={**base, **auth, "Origin": "http://localhost:5173"})
        out["local_origin"] = [r.status_code]
        r = await c.post(
            url, json=listing, headers={**base, **auth, "Mcp-Session-Id": "not-a-session"}
        )
        out["unknown_session"] = [r.status_code, r.text]
        # A session of our own, used by another principal, then ended and replayed.
        r = await c.post(url, json=init, headers={**base, **auth})
        sid = r.headers.get("mcp-session-id")
        out["session_issued"] = sid is not None
        session = {**base, **auth, "Mcp-Session-Id": sid or "", "Mcp-Protocol-Version": "2025-06-18"}
        await c.post(
            url,
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
            headers=session,
        )
        r = await c.post(url, json=listing, headers=session)
        out["session_works"] = [r.status_code, "list_tables" in r.text]
        other = {**session, "Authorization": f"Bearer {cfg['other_token']}"}
        r = await c.post(url, json=listing, headers=other)
        out["foreign_session"] = [r.status_code, r.text]
        r = await c.delete(url, headers=session)
        out["deleted"] = [r.status_code]
        r = await c.post(url, json=listing, headers=session)
        out["replayed_session"] = [r.status_code, r.text]
    return out


async def main():
    cfg = json.loads(sys.argv[1])
    result = {}
    if cfg["transport"] == "http":
        headers = {"Authorization": f"Bearer {cfg['token']}"}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            target = streamable_http_client(cfg["url"], http_client=http)
            async with Client(target, mode=cfg.get("mode", "auto")) as client:
                result = await battery(client, cfg)
        result["http"] = await http_refusals(cfg)
    else:
        params = StdioServerParameters(
            command=cfg["command"][0], args=cfg["command"][1:], env=cfg.get("env")
        )
        async with Client(params, mode=cfg.get("mode", "auto")) as client:
            result = await battery(client, cfg)
    print(json.dumps(result))


asyncio.run(main())
