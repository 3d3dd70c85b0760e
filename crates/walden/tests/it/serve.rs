//! The query endpoints over a replicated lake: HTTP answers checked against Postgres,
//! principals' grants (namespaces, masked columns, row filters) in every form a query can
//! take, the guardrail list of hostile and careless queries (each refused or bounded, each
//! audited, the server unaffected), and the audit log's visibility rules.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use walden_query::{Limits, Principal};
use walden_serve::{Credentials, Principals};

use crate::streaming::catch_up;
use crate::{config, database, extend_config};

/// A minimal HTTP/1.1 client: (status, headers, body).
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").expect("chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16)
            .expect("hex size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + size]);
        b = &b[line_end + 2 + size + 2..];
    }
}

async fn query(addr: std::net::SocketAddr, token: &str, sql: &str) -> (u16, Value) {
    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/query",
        Some(token),
        Some(&json!({ "sql": sql })),
    )
    .await;
    let v: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{sql}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, v)
}

/// Rows of a successful query (panics with the error otherwise).
async fn rows(addr: std::net::SocketAddr, token: &str, sql: &str) -> Vec<Value> {
    let (status, v) = query(addr, token, sql).await;
    assert_eq!(status, 200, "{sql}: {v}");
    v["rows"].as_array().expect("rows").clone()
}

/// The error of a refused or failed query, with its status.
async fn refused(addr: std::net::SocketAddr, token: &str, sql: &str) -> (u16, String) {
    let (status, v) = query(addr, token, sql).await;
    assert_ne!(status, 200, "{sql} should have failed: {v}");
    (
        status,
        v["error"].as_str().expect("an error message").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn http_answers_match_postgres_and_grants_hold_in_every_form() {
    let (_db, url, client) = database(
        "serve",
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, tenant int NOT NULL,
                                 ssn text, score numeric(6,2));
         COMMENT ON COLUMN customers.name IS 'Full name as given at sign-up';
         INSERT INTO customers
           SELECT i, 'name ' || i, i % 3, 'ssn-' || i, (i * 1.25)::numeric(6,2)
           FROM generate_series(1, 60) i;
         CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL,
                              amount numeric(10,2) NOT NULL, placed timestamptz NOT NULL);
         INSERT INTO orders
           SELECT i, 1 + i % 60, (i % 97) * 1.5, '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 hour'
           FROM generate_series(1, 2000) i;
         CREATE SCHEMA hr;
         CREATE TABLE hr.salaries (id int PRIMARY KEY, amount int);
         INSERT INTO hr.salaries VALUES (1, 100), (2, 200);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &url, "tables = [\"public.*\", \"hr.*\"]");
    let cfg = extend_config(
        dir.path(),
        "[serve]\npg_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n",
    );
    catch_up(&cfg).await;

    let analyst = Principal::new("analyst")
        .with_namespaces(["public".to_string()])
        .with_masked_column("public", "customers", "ssn")
        .with_row_filter("public", "customers", "tenant = 1")
        .with_limits(Limits {
            max_rows: 5,
            timeout: std::time::Duration::from_secs(3),
            max_query_bytes: 1 << 20,
            ..Limits::default()
        });
    let admin = Principal::new("admin").with_audit_reader(true);
    let principals = Principals::new([
        Credentials {
            principal: Arc::new(analyst),
            password: None,
            token: Some("analyst-token".into()),
        },
        Credentials {
            principal: Arc::new(admin),
            password: None,
            token: Some("admin-token".into()),
        },
    ]);
    let lake = walden_lake::Lake::open(&cfg.lake.warehouse).unwrap();
    let service = walden::serve::query_service(&cfg, lake).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let endpoints = walden::serve::start_endpoints(&cfg, service, principals, stopped)
        .await
        .expect("endpoints");
    let at = endpoints.http_addr;

    // Authentication.
    let (status, _, _) = http(
        at,
        "POST",
        "/v1/query",
        None,
        Some(&json!({"sql": "SELECT 1"})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = http(
        at,
        "POST",
        "/v1/query",
        Some("nope"),
        Some(&json!({"sql": "SELECT 1"})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = http(at, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let (status, _, body) = http(at, "GET", "/readyz", None, None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = http(at, "GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert!(doc["paths"]["/v1/query"]["post"].is_object());

    // An aggregate over a join, against Postgres row by row.
    let sql = "SELECT c.id, c.name, count(*) AS n, sum(o.amount) AS total \
               FROM customers c JOIN orders o ON o.customer_id = c.id \
               GROUP BY c.id, c.name ORDER BY c.id";
    let (status, answer) = query(at, "admin-token", sql).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["truncated"], json!(false));
    assert!(
        answer["as_of"]["lsn"]
            .as_str()
            .is_some_and(|l| l.contains('/')),
        "{answer}"
    );
    assert_eq!(answer["columns"][3]["type"], json!("numeric(20,2)"));
    let expected = client
        .query(
            &sql.replace("sum(o.amount) AS total", "sum(o.amount)::text AS total"),
            &[],
        )
        .await
        .unwrap();
    let got = answer["rows"].as_array().unwrap();
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g[0], json!(e.get::<_, i32>(0)));
        assert_eq!(g[1], json!(e.get::<_, String>(1)));
        assert_eq!(g[2], json!(e.get::<_, i64>(2)));
        assert_eq!(
            g[3].to_string().trim_matches('"'),
            e.get::<_, String>(3),
            "{g}"
        );
    }

    // Row filter, mask and row cap: tenant 1 has 20 customers, the analyst gets 5.
    let (status, v) = query(
        at,
        "analyst-token",
        "SELECT id, ssn, name FROM customers ORDER BY id",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["truncated"], json!(true));
    assert!(v["truncation"].as_str().unwrap().contains("5 rows"));
    let got = v["rows"].as_array().unwrap();
    assert_eq!(got.len(), 5);
    for r in got {
        assert_eq!(r[0].as_i64().unwrap() % 3, 1, "row filter: {r}");
        assert_eq!(r[1], Value::Null, "masked: {r}");
    }
    // The mask holds through aliases, CTEs, subqueries, aggregates and casts.
    for sql in [
        "SELECT max(ssn) FROM customers",
        "SELECT max(x) FROM (SELECT ssn AS x FROM customers) s",
        "WITH c AS (SELECT ssn || '' AS x FROM customers) SELECT max(x) FROM c",
        "SELECT max(length(ssn)) FROM customers",
        "SELECT count(*) FILTER (WHERE ssn IS NOT NULL) FROM customers",
        "SELECT max(c2.ssn) FROM customers c1 JOIN customers c2 ON c1.id = c2.id",
    ] {
        let r = rows(at, "analyst-token", sql).await;
        assert!(
            r[0][0] == Value::Null || r[0][0] == json!(0),
            "{sql}: {r:?}"
        );
    }
    // A filter on the masked column sees NULLs, never the real values.
    let r = rows(
        at,
        "analyst-token",
        "SELECT count(*) FROM customers WHERE ssn = 'ssn-1'",
    )
    .await;
    assert_eq!(r[0][0], json!(0));
    // Hidden rows do not exist for counts, joins or statistics.
    let r = rows(
        at,
        "analyst-token",
        "SELECT count(*), min(id), max(id) FROM customers",
    )
    .await;
    assert_eq!(r[0], json!([20, 1, 58]));
    let r = rows(
        at,
        "analyst-token",
        "SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id",
    )
    .await;
    let pg_n: i64 = client
        .query_one("SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.tenant = 1", &[])
        .await.unwrap().get(0);
    assert_eq!(r[0][0], json!(pg_n));
    // EXPLAIN names the mask but not the filter's predicate; EXPLAIN ANALYZE is refused.
    let r = rows(
        at,
        "analyst-token",
        "EXPLAIN SELECT ssn FROM customers WHERE id > 3",
    )
    .await;
    let plan = serde_json::to_string(&r).unwrap();
    assert!(plan.contains("WaldenPolicyExec"), "{plan}");
    assert!(
        !plan.contains("tenant = 1") && !plan.contains("tenant@"),
        "{plan}"
    );
    let (status, why) = refused(
        at,
        "analyst-token",
        "EXPLAIN ANALYZE SELECT * FROM customers",
    )
    .await;
    assert_eq!(status, 403, "{why}");

    // Hidden namespaces do not exist for the analyst, in any catalog.
    let (_, why) = refused(at, "analyst-token", "SELECT * FROM hr.salaries").await;
    assert!(why.contains("salaries") || why.contains("hr"), "{why}");
    for sql in [
        "SELECT count(*) FROM walden.tables WHERE namespace = 'hr'",
        "SELECT count(*) FROM walden.columns WHERE namespace = 'hr'",
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'hr'",
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'hr'",
        "SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = 'hr'",
        "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'salaries'",
    ] {
        let r = rows(at, "analyst-token", sql).await;
        assert_eq!(r[0][0], json!(0), "{sql}");
    }
    let r = rows(
        at,
        "admin-token",
        "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'salaries'",
    )
    .await;
    assert_eq!(r[0][0], json!(1));
    let r = rows(at, "analyst-token",
        "SELECT masked, description FROM walden.columns WHERE table_name = 'customers' AND column_name IN ('ssn', 'name') ORDER BY column_name").await;
    assert_eq!(
        r,
        vec![
            json!([false, "Full name as given at sign-up"]),
            json!([true, null])
        ]
    );

    // The catalog endpoints.
    let (status, _, body) = http(at, "GET", "/v1/catalog", Some("analyst-token"), None).await;
    assert_eq!(status, 200);
    let cat: Value = serde_json::from_slice(&body).unwrap();
    let names: Vec<&str> = cat["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["customers", "orders"]);
    let (status, _, body) = http(
        at,
        "GET",
        "/v1/tables/public/orders",
        Some("admin-token"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let t: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(t["rows"], json!(2000));
    assert_eq!(t["primary_key"], json!("id"));
    assert_eq!(t["columns"].as_array().unwrap().len(), 4);
    let (status, _, _) = http(
        at,
        "GET",
        "/v1/tables/hr/salaries",
        Some("analyst-token"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // CSV and Arrow answers carry the caps and freshness in headers.
    let (status, head, body) = http(
        at,
        "POST",
        "/v1/query",
        Some("analyst-token"),
        Some(&json!({"sql": "SELECT id FROM orders ORDER BY id", "format": "csv"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), "id\n1\n2\n3\n4\n5\n");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("x-walden-truncated: true") && head.contains("x-walden-as-of-lsn"),
        "{head}"
    );
    let (status, _, body) = http(
        at,
        "POST",
        "/v1/query",
        Some("admin-token"),
        Some(&json!({"sql": "SELECT id, amount FROM orders WHERE id <= 3", "format": "arrow"})),
    )
    .await;
    assert_eq!(status, 200);
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None).unwrap();
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, 3);

    // The guardrail list: each refused or bounded, with a clear message.
    let huge = format!("SELECT {}", "1 + ".repeat(5000) + "1");
    let deep = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    let big_text = format!("SELECT '{}'", "x".repeat(10 << 20));
    let cases: Vec<(&str, String, &str)> = vec![
        ("ddl", "CREATE TABLE x (a int)".into(), "read-only"),
        ("drop", "DROP TABLE customers".into(), "read-only"),
        ("dml", "DELETE FROM customers".into(), "read-only"),
        (
            "insert",
            "INSERT INTO customers VALUES (1000, 'x', 1, 'y', 1)".into(),
            "read-only",
        ),
        ("copy", "COPY customers TO '/tmp/x.csv'".into(), ""),
        (
            "multi",
            "SELECT 1; SELECT 2".into(),
            "exactly one statement",
        ),
        (
            "settings",
            "SET datafusion.execution.batch_size = 1".into(),
            "not allowed",
        ),
        ("file", "SELECT * FROM '/etc/passwd'".into(), ""),
        (
            "external",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'".into(),
            "",
        ),
        (
            "repeat bomb",
            "SELECT repeat('x', 2000000000)".into(),
            "memory limit",
        ),
        (
            "pad bomb",
            "SELECT lpad('x', 2000000000)".into(),
            "memory limit",
        ),
        (
            "range bomb",
            "SELECT range(1, 10000000000)".into(),
            "memory limit",
        ),
        ("operator chain", huge, "chains more than"),
        ("nesting", deep, ""),
        ("10 MB text", big_text, "max_query_bytes"),
        (
            "recursive CTE",
            "WITH RECURSIVE t AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM t) \
            SELECT count(*) FROM t"
                .into(),
            "time limit",
        ),
        (
            "generate_series",
            "SELECT count(*) FROM generate_series(1, 100000000000)".into(),
            "time limit",
        ),
        (
            "regex bomb",
            "SELECT regexp_like(name, '(a{1000}){1000}') FROM customers".into(),
            "",
        ),
    ];
    for (what, sql, says) in &cases {
        let (status, why) = refused(at, "analyst-token", sql).await;
        assert!((400..600).contains(&status), "{what}: {status}");
        assert!(why.contains(says), "{what}: expected {says:?} in {why:?}");
        // The server is unaffected.
        let r = rows(at, "analyst-token", "SELECT 1").await;
        assert_eq!(r[0][0], json!(1), "after {what}");
    }
    // Bounded, not refused: a cartesian join and an infinite recursive CTE stream into
    // the row cap.
    for sql in [
        "SELECT * FROM orders a, orders b",
        "WITH RECURSIVE t AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM t) SELECT n FROM t",
    ] {
        let (status, v) = query(at, "analyst-token", sql).await;
        assert_eq!(status, 200, "{sql}: {v}");
        assert_eq!(v["truncated"], json!(true), "{sql}");
        assert_eq!(v["rows"].as_array().unwrap().len(), 5);
    }

    // The audit log: the analyst sees only its own queries, refusals included; the admin
    // sees everyone's.
    let r = rows(
        at,
        "analyst-token",
        "SELECT DISTINCT principal FROM walden.audit_log",
    )
    .await;
    assert_eq!(r, vec![json!(["analyst"])]);
    let r = rows(
        at,
        "admin-token",
        "SELECT count(*) FILTER (WHERE outcome = 'refused'), \
                count(*) FILTER (WHERE outcome IN ('refused', 'error')) \
         FROM walden.audit_log WHERE principal = 'analyst'",
    )
    .await;
    // Every case of the guardrail list (and the earlier refusals) is on record.
    assert!(r[0][0].as_i64().unwrap() >= 9, "{r:?}");
    assert!(r[0][1].as_i64().unwrap() >= cases.len() as i64 + 2, "{r:?}");
    let r = rows(at, "admin-token",
        "SELECT count(*) FROM walden.audit_log WHERE principal = 'analyst' AND outcome = 'truncated' AND plan_digest IS NOT NULL AND lake_lsn IS NOT NULL").await;
    assert!(r[0][0].as_i64().unwrap() >= 3, "{r:?}");
    let (status, _, body) = http(at, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("walden_queries_total"));

    // New commits appear without a restart.
    client
        .batch_execute("INSERT INTO orders VALUES (5000, 1, 1.00, now())")
        .await
        .unwrap();
    catch_up(&cfg).await;
    let r = rows(at, "admin-token", "SELECT count(*) FROM orders").await;
    assert_eq!(r[0][0], json!(2001));

    stop.send(true).unwrap();
    endpoints.wait().await.unwrap();
}

/// Uncorrelated scalar subqueries run before the main query and become constants (so
/// their comparisons reach the Parquet scan): answers equal Postgres' wherever the
/// subquery stands, an empty subquery is NULL, nested and correlated ones still work,
/// and more than one row is Postgres' error.
/// Each query's answer over the lake equals Postgres' over the source, row by row.
async fn answers_as_postgres(
    client: &tokio_postgres::Client,
    engine: &walden_query::QueryEngine,
    queries: &[&str],
) {
    client.batch_execute("CREATE SCHEMA expect").await.unwrap();
    for (i, sql) in queries.iter().enumerate() {
        client
            .batch_execute(&format!("CREATE VIEW expect.q{i} AS {sql}"))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", walden_testkit::pg_error(&e)));
        let d = crate::compare::diff(
            client,
            &format!("expect.q{i}"),
            engine,
            &format!("({sql}) q"),
        )
        .await;
        assert!(
            d.is_empty(),
            "{sql} differs from Postgres:\n{}",
            d.join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scalar_subqueries_run_first_and_answer_as_postgres() {
    let (_db, url, client) = database(
        "initplan",
        "CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, amount numeric(10,2),
                             at timestamptz NOT NULL);
         INSERT INTO events
           SELECT i, 'k' || (i % 5), (i % 89) * 0.75,
                  '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 minute'
           FROM generate_series(1, 3000) i;
         CREATE TABLE seen (id bigint PRIMARY KEY, at timestamptz);
         INSERT INTO seen SELECT i, '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 minute'
           FROM generate_series(1, 2500) i;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    catch_up(&cfg).await;
    let queries = [
        // The incremental-model shape.
        "SELECT id, kind, amount FROM public.events WHERE at > (SELECT max(at) FROM public.seen)",
        // In the select list, in HAVING, twice, and nested.
        "SELECT kind, count(*) AS n, (SELECT count(*) FROM public.seen) AS seen FROM public.events \
         GROUP BY kind HAVING sum(amount) > (SELECT avg(amount) FROM public.events) * 100",
        "SELECT id FROM public.events WHERE id BETWEEN (SELECT min(id) FROM public.seen) + 10 \
         AND (SELECT min(id) FROM public.seen WHERE id > (SELECT avg(id) FROM public.seen))",
        // Empty: NULL, so no row compares true.
        "SELECT count(*) AS n FROM public.events WHERE at > (SELECT at FROM public.seen WHERE id < 0)",
        "SELECT (SELECT kind FROM public.events WHERE id = -1) AS missing, 1 AS one",
        // Correlated: left to the engine's decorrelation.
        "SELECT e.id FROM public.events e WHERE e.amount > \
         (SELECT avg(x.amount) FROM public.events x WHERE x.kind = e.kind) AND e.id < 200",
    ];
    let engine = walden_query::QueryEngine::new(
        walden_lake::Lake::open(&cfg.lake.warehouse).expect("the lake"),
    );
    answers_as_postgres(&client, &engine, &queries).await;
    let many = engine
        .sql("SELECT id FROM public.events WHERE id = (SELECT id FROM public.seen)")
        .await
        .expect_err("more than one row is an error");
    assert!(
        many.to_string()
            .contains("more than one row returned by a subquery used as an expression"),
        "{many}"
    );
    // EXPLAIN does not run the subquery: it is still in the plan.
    let explained = engine
        .sql("EXPLAIN SELECT id FROM public.events WHERE at > (SELECT max(at) FROM public.seen)")
        .await
        .expect("explain");
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&explained)
        .unwrap()
        .to_string();
    assert!(
        text.contains("max(public.seen.at)") || text.contains("max(seen.at)"),
        "{text}"
    );
}

/// Join runtime filters are applied to the probe side's rows (runtime_filter.rs): a
/// selective one drops rows right above the scan, an unselective one switches itself off,
/// and answers stay Postgres' either way.
#[tokio::test(flavor = "multi_thread")]
async fn runtime_filters_drop_rows_at_the_scan_and_keep_answers() {
    let (_db, url, client) = database(
        "runtimefilter",
        "CREATE TABLE parts (id int PRIMARY KEY, brand text NOT NULL, size int NOT NULL);
         INSERT INTO parts SELECT i, 'Brand#' || (i % 25), i % 50 FROM generate_series(1, 4000) i;
         CREATE TABLE items (id bigint PRIMARY KEY, part_id int NOT NULL,
                             qty numeric(12,2) NOT NULL, note text);
         INSERT INTO items SELECT i, 1 + (i * 7919) % 4000, (i % 50) + 1,
                                  CASE WHEN i % 3 = 0 THEN NULL ELSE 'n' || (i % 11) END
           FROM generate_series(1, 150000) i;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url, "");
    catch_up(&cfg).await;
    let selective = "SELECT sum(i.qty) AS total, count(*) AS n FROM public.items i, public.parts p \
         WHERE p.id = i.part_id AND p.brand = 'Brand#7' AND p.size = 7 \
         AND i.qty < (SELECT 0.5 * avg(x.qty) FROM public.items x WHERE x.part_id = p.id)";
    let unselective = "SELECT p.brand, count(*) AS n, sum(i.qty) AS q FROM public.items i \
         JOIN public.parts p ON p.id = i.part_id GROUP BY p.brand";
    let queries = [
        selective,
        unselective,
        // A semi join, a static filter under the runtime one, NULLs on the probe side.
        "SELECT i.note, count(*) AS n FROM public.items i WHERE i.qty > 10 \
         AND i.part_id IN (SELECT id FROM public.parts WHERE size < 3) GROUP BY i.note",
        // Top-k publishes a filter too.
        "SELECT id, qty FROM public.items ORDER BY qty DESC, id LIMIT 7",
    ];
    let engine = walden_query::QueryEngine::new(
        walden_lake::Lake::open(&cfg.lake.warehouse).expect("the lake"),
    );
    answers_as_postgres(&client, &engine, &queries).await;
    // What the filters did, from EXPLAIN ANALYZE's metrics.
    let filters = |text: String| -> Vec<(u64, u64)> {
        let count = |line: &str, name: &str| -> u64 {
            let at = line
                .find(&format!("{name}="))
                .unwrap_or_else(|| panic!("{name} in {line}"));
            let v = line[at + name.len() + 1..]
                .split([',', ']'])
                .next()
                .unwrap()
                .trim();
            let (n, unit) = v.split_once(' ').unwrap_or((v, ""));
            let n: f64 = n.parse().unwrap_or_else(|_| panic!("{v}"));
            let scale = match unit {
                "K" => 1e3,
                "M" => 1e6,
                _ => 1.0,
            };
            (n * scale) as u64
        };
        text.lines()
            .filter(|l| l.contains("RuntimeFilterExec"))
            .map(|l| (count(l, "rows_pruned"), count(l, "rows_bypassed")))
            .collect()
    };
    let analyze = |sql: &str| {
        let engine = &engine;
        let sql = format!("EXPLAIN ANALYZE {sql}");
        async move {
            let out = engine.sql(&sql).await.expect("explain analyze");
            datafusion::arrow::util::pretty::pretty_format_batches(&out)
                .unwrap()
                .to_string()
        }
    };
    let text = analyze(selective).await;
    let found = filters(text.clone());
    assert!(!found.is_empty(), "no runtime filter:\n{text}");
    // Brand#7 and size 7: 160 parts of 4000; most of the 150,000 items go at the scan.
    let pruned: u64 = found.iter().map(|f| f.0).sum();
    assert!(pruned > 100_000, "{found:?}\n{text}");
    let text = analyze(unselective).await;
    let found = filters(text.clone());
    assert!(!found.is_empty(), "no runtime filter:\n{text}");
    // Every item has its part: after its sample the filter stops evaluating.
    assert!(found.iter().all(|f| f.0 == 0), "{found:?}\n{text}");
    let bypassed: u64 = found.iter().map(|f| f.1).sum();
    assert!(bypassed > 0, "{found:?}\n{text}");
}
