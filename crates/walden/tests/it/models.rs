//! Models against a real replicated database: a multi-layer project with every
//! materialization and test kind, checked row by row against the same logic run on
//! Postgres; incremental builds after source changes equal full rebuilds; failures are
//! contained (dependents skipped, previous versions kept); hostile models are refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use walden::config::Config;
use walden_build::{BuildOptions, RunReport, Status};
use walden_models::NodeId;

use crate::streaming::catch_up;
use crate::{config, database, extend_config};

const SETUP: &str = "
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, tier text NOT NULL);
INSERT INTO customers SELECT i, 'customer ' || i, (ARRAY['gold','silver','bronze'])[1 + i % 3]
  FROM generate_series(1, 50) i;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
                     amount numeric(10,2) NOT NULL, status text NOT NULL,
                     updated_at timestamptz NOT NULL);
INSERT INTO orders SELECT i, 1 + i % 50, (i % 89) * 1.25, (ARRAY['new','paid','shipped'])[1 + i % 3],
                          '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 600) i;
CREATE TABLE order_lines (order_id bigint NOT NULL REFERENCES orders, line_no int NOT NULL,
                          qty int NOT NULL, price numeric(10,2) NOT NULL,
                          updated_at timestamptz NOT NULL, PRIMARY KEY (order_id, line_no));
INSERT INTO order_lines SELECT o, l, 1 + (o + l) % 4, (o % 13) + l * 0.5,
                               '2026-01-01 00:00:00+00'::timestamptz + o * interval '1 minute'
  FROM generate_series(1, 600) o, generate_series(1, 3) l;
CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, at timestamptz NOT NULL);
INSERT INTO events SELECT i, 'kind' || (i % 4), '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 second'
  FROM generate_series(1, 300) i;
CREATE SCHEMA expect;
";

/// The models project, file by file.
const PROJECT: &[(&str, &str)] = &[
    (
        "walden_project.yml",
        "name: shop\nmodels:\n  shop:\n    staging:\n      +materialized: view\n      +tags: [staging]\n    marts:\n      +materialized: table\n",
    ),
    (
        "models/staging/_sources.yml",
        "version: 2\nsources:\n  - name: app\n    schema: public\n    tables:\n      - name: customers\n        columns:\n          - name: id\n            tests: [unique, not_null]\n      - name: orders\n        freshness:\n          error_after: {count: 1, period: day}\n      - name: order_lines\n      - name: events\n        loaded_at_field: at\n        freshness:\n          warn_after: {count: 1, period: hour}\n",
    ),
    (
        "models/staging/stg_customers.sql",
        "select id as customer_id, name, tier from {{ source('app', 'customers') }}",
    ),
    (
        "models/staging/stg_orders.sql",
        "select id as order_id, customer_id, amount, status, updated_at from {{ source('app', 'orders') }}",
    ),
    (
        "models/staging/_staging.yml",
        "version: 2
models:
  - name: stg_orders
    description: One row per order.
    columns:
      - name: order_id
        description: The order's id in the shop.
        tests: [unique, not_null]
      - name: status
        tests:
          - accepted_values:
              values: ['new', 'paid', 'shipped']
      - name: customer_id
        data_tests:
          - relationships:
              arguments:
                to: ref('stg_customers')
                field: customer_id
  - name: stg_customers
    columns:
      - name: tier
        tests:
          - accepted_values:
              arguments:
                values: ['gold', 'silver']
              config:
                severity: warn
",
    ),
    (
        "models/intermediate/int_order_totals.sql",
        "{{ config(materialized='ephemeral') }}
select customer_id, count(*) as orders, sum(amount) as total
from {{ ref('stg_orders') }}
group by customer_id",
    ),
    (
        "models/marts/dim_customers.sql",
        "select c.customer_id, c.name, c.tier, coalesce(t.orders, 0) as orders, coalesce(t.total, 0) as total
from {{ ref('stg_customers') }} c
left join {{ ref('int_order_totals') }} t on t.customer_id = c.customer_id",
    ),
    (
        "models/marts/fct_lines.sql",
        "{{ config(materialized='incremental', unique_key=['order_id', 'line_no'], incremental_strategy='merge') }}
select l.order_id, l.line_no, l.qty, l.price, l.qty * l.price as line_amount, o.status, l.updated_at
from {{ source('app', 'order_lines') }} l
join {{ ref('stg_orders') }} o on o.order_id = l.order_id
{% if is_incremental() %}
where l.updated_at > (select max(updated_at) from {{ this }})
{% endif %}",
    ),
    (
        "models/marts/fct_events.sql",
        "{{ config(materialized='incremental') }}
select id, kind, at from {{ source('app', 'events') }}
{% if is_incremental() %}
where id > (select coalesce(max(id), 0) from {{ this }})
{% endif %}",
    ),
    (
        "models/marts/fct_orders.sql",
        "{{ config(materialized='incremental', unique_key='order_id') }}
select order_id, customer_id, amount, status, updated_at from {{ ref('stg_orders') }}
{% if is_incremental() %}
where updated_at > (select max(updated_at) from {{ this }})
{% endif %}",
    ),
    (
        "models/marts/customer_report.sql",
        "{{ config(materialized='view') }}
select tier, count(*) as customers, sum(total) as revenue
from {{ ref('dim_customers') }}
group by tier",
    ),
    (
        "models/marts/_marts.yml",
        "version: 2
models:
  - name: dim_customers
    description: Customers with their order totals.
    columns:
      - name: customer_id
        description: The customer's id.
        data_tests: [unique, not_null]
      - name: total
        description: Sum of the customer's order amounts.
  - name: fct_lines
    columns:
      - name: order_id
        tests:
          - relationships:
              to: ref('stg_orders')
              field: order_id
",
    ),
    (
        "tests/assert_totals_not_negative.sql",
        "select * from {{ ref('dim_customers') }} where total < 0",
    ),
];

/// What each model must equal, as Postgres views over the source tables.
const EXPECTED: &str = "
CREATE VIEW expect.dim_customers AS
  SELECT c.id AS customer_id, c.name, c.tier, coalesce(t.orders, 0) AS orders, coalesce(t.total, 0) AS total
  FROM customers c LEFT JOIN (SELECT customer_id, count(*) AS orders, sum(amount) AS total
                              FROM orders GROUP BY customer_id) t ON t.customer_id = c.id;
CREATE VIEW expect.fct_lines AS
  SELECT l.order_id, l.line_no, l.qty, l.price, l.qty * l.price AS line_amount, o.status, l.updated_at
  FROM order_lines l JOIN orders o ON o.id = l.order_id;
CREATE VIEW expect.fct_events AS SELECT id, kind, at FROM events;
CREATE VIEW expect.fct_orders AS
  SELECT id AS order_id, customer_id, amount, status, updated_at FROM orders;
CREATE VIEW expect.stg_orders AS
  SELECT id AS order_id, customer_id, amount, status, updated_at FROM orders;
CREATE VIEW expect.customer_report AS
  SELECT tier, count(*) AS customers, sum(total) AS revenue FROM expect.dim_customers GROUP BY tier;
";

fn write_project(root: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
}

async fn build(cfg: &Config, options: BuildOptions) -> RunReport {
    let project = walden::models::load_project(cfg, None).expect("the project loads");
    let builder = walden::models::builder(cfg).expect("a builder");
    builder
        .run(&project, &options, &|_| {})
        .await
        .expect("the run completes")
}

fn all() -> BuildOptions {
    BuildOptions {
        models: true,
        tests: true,
        trigger: "test".into(),
        ..Default::default()
    }
}

fn statuses(report: &RunReport) -> BTreeMap<String, (Status, Option<String>)> {
    report
        .results
        .iter()
        .map(|r| {
            let name = match &r.node {
                NodeId::Model(m) => m.clone(),
                NodeId::Test(t) => format!("test:{t}"),
                NodeId::Source(s, t) => format!("{s}.{t}"),
            };
            (name, (r.status.clone(), r.message.clone()))
        })
        .collect()
}

async fn assert_model(client: &tokio_postgres::Client, cfg: &Config, model: &str, relation: &str) {
    let engine = walden_query::QueryEngine::new(
        walden_lake::Lake::open(&cfg.lake.warehouse).expect("the lake"),
    );
    let d = crate::compare::diff(client, &format!("expect.{model}"), &engine, relation).await;
    assert!(
        d.is_empty(),
        "{relation} differs from Postgres:\n{}",
        d.join("\n")
    );
}

/// `sql` through the configured query service (audit log included), as the operator.
async fn rows(cfg: &Config, sql: &str) -> Vec<String> {
    let lake = walden_lake::Lake::open(&cfg.lake.warehouse).expect("the lake");
    let service = walden::serve::query_service(cfg, lake).expect("the service");
    let operator = Arc::new(walden_query::Principal::operator());
    let mut answer = service
        .execute(&operator, walden_query::Protocol::Cli, sql, None, None)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let batches = answer
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    answer.finish().await;
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    text.lines().map(str::to_string).collect()
}

/// The single number `sql` returns.
async fn number(cfg: &Config, sql: &str) -> i64 {
    let lines = rows(cfg, sql).await;
    lines
        .get(3)
        .and_then(|l| l.trim_matches(|c| c == '|' || c == ' ').parse().ok())
        .unwrap_or_else(|| panic!("{sql}: {lines:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_layer_project_builds_tests_and_matches_postgres() {
    let (_db, url, client) = database("models", SETUP).await;
    client.batch_execute(EXPECTED).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &url, "tables = [\"public.*\"]");
    let project_dir = dir.path().join("project");
    write_project(&project_dir, PROJECT);
    let cfg = extend_config(
        dir.path(),
        &format!("[models]\npath = \"{}\"\n", project_dir.display()),
    );
    catch_up(&cfg).await;

    // 1. Everything, from scratch.
    let report = build(&cfg, all()).await;
    let s = statuses(&report);
    for (name, (status, message)) in &s {
        // The tier test is `warn`; events' newest `at` is months old (warn_after 1 hour).
        let expected = if name.starts_with("test:accepted_values_stg_customers_tier")
            || name == "app.events"
        {
            Status::Warn
        } else {
            Status::Success
        };
        assert_eq!(status, &expected, "{name}: {message:?}");
    }
    assert!(!report.failed());
    assert!(
        !s.contains_key("int_order_totals"),
        "ephemeral models are not built"
    );
    assert!(s.contains_key("test:assert_totals_not_negative"));
    assert!(s.contains_key("test:source_unique_app_customers_id"));
    // orders: judged by the lake's replication commit (just now): fresh.
    assert_eq!(s["app.orders"].0, Status::Success, "{:?}", s["app.orders"]);
    assert!(
        s["app.events"]
            .1
            .as_deref()
            .unwrap()
            .contains("over warn_after")
    );
    for (model, relation) in [
        ("stg_orders", "staging.stg_orders"),
        ("dim_customers", "marts.dim_customers"),
        ("fct_lines", "marts.fct_lines"),
        ("fct_events", "marts.fct_events"),
        ("fct_orders", "marts.fct_orders"),
        ("customer_report", "marts.customer_report"),
    ] {
        assert_model(&client, &cfg, model, relation).await;
    }
    // Kinds, descriptions and freshness in the catalog.
    let kinds = rows(
        &cfg,
        "SELECT namespace, name, kind, lsn IS NOT NULL AS has_as_of FROM walden.tables \
         WHERE namespace IN ('staging', 'marts') ORDER BY 1, 2",
    )
    .await
    .join("\n");
    for expected in [
        "| marts     | customer_report | view  | true      |",
        "| marts     | dim_customers   | table | true      |",
        "| marts     | fct_events      | table | true      |",
        "| marts     | fct_lines       | table | true      |",
        "| staging   | stg_customers   | view  | true      |",
        "| staging   | stg_orders      | view  | true      |",
    ] {
        assert!(kinds.contains(expected), "{expected}\n{kinds}");
    }
    let docs = rows(
        &cfg,
        "SELECT table_name, column_name, description FROM walden.columns \
         WHERE column_name IN ('order_id', 'total') AND table_name IN ('stg_orders', 'dim_customers') ORDER BY 1",
    )
    .await
    .join("\n");
    assert!(
        docs.contains("Sum of the customer's order amounts."),
        "{docs}"
    );
    assert!(docs.contains("The order's id in the shop."), "{docs}");

    // 2. Source changes: updates, inserts; then incremental builds.
    client
        .batch_execute(
            "UPDATE order_lines SET qty = qty + 10, updated_at = '2026-06-01 00:00:00+00'
               WHERE order_id % 7 = 0;
             INSERT INTO orders VALUES (601, 3, 99.99, 'paid', '2026-06-01 00:00:00+00');
             INSERT INTO order_lines VALUES (601, 1, 2, 5.00, '2026-06-01 00:00:00+00'),
                                            (601, 2, 1, 7.50, '2026-06-01 00:00:00+00');
             UPDATE orders SET status = 'shipped' WHERE id = 601;
             UPDATE orders SET status = 'paid', updated_at = '2026-06-02 00:00:00+00'
               WHERE id % 14 = 0;
             INSERT INTO events SELECT i, 'late', now() FROM generate_series(301, 320) i;",
        )
        .await
        .unwrap();
    catch_up(&cfg).await;
    let report = build(&cfg, all()).await;
    assert!(!report.failed(), "{:?}", statuses(&report));
    let lines = report
        .results
        .iter()
        .find(|r| r.node == NodeId::Model("fct_lines".into()))
        .unwrap();
    // Only the changed lines went through the incremental query.
    assert_eq!(lines.rows, Some(85 * 3 + 2), "{lines:?}");
    let orders = report
        .results
        .iter()
        .find(|r| r.node == NodeId::Model("fct_orders".into()))
        .unwrap();
    // Merged on one integer key: the 42 updated orders (their lines changed too, so
    // fct_lines picks up their new status) and the new one.
    assert_eq!(orders.rows, Some(43), "{orders:?}");
    for (model, relation) in [
        ("fct_lines", "marts.fct_lines"),
        ("fct_events", "marts.fct_events"),
        ("fct_orders", "marts.fct_orders"),
        ("dim_customers", "marts.dim_customers"),
        ("customer_report", "marts.customer_report"),
    ] {
        assert_model(&client, &cfg, model, relation).await;
    }
    let incremental = rows(
        &cfg,
        "SELECT * FROM marts.fct_lines ORDER BY order_id, line_no",
    )
    .await;
    let events = rows(&cfg, "SELECT * FROM marts.fct_events ORDER BY id").await;
    // The same as a full rebuild.
    let report = build(
        &cfg,
        BuildOptions {
            full_refresh: true,
            select: vec!["fct_lines".into(), "fct_events".into()],
            ..all()
        },
    )
    .await;
    assert!(!report.failed(), "{:?}", statuses(&report));
    assert_eq!(
        rows(
            &cfg,
            "SELECT * FROM marts.fct_lines ORDER BY order_id, line_no"
        )
        .await,
        incremental
    );
    assert_eq!(
        rows(&cfg, "SELECT * FROM marts.fct_events ORDER BY id").await,
        events
    );

    // 3. A failing test fails the build and spares its dependents; a broken model keeps
    //    its previous version; other branches still build.
    let before = rows(
        &cfg,
        "SELECT * FROM marts.dim_customers ORDER BY customer_id",
    )
    .await;
    write_project(
        &project_dir,
        &[
            (
                "models/marts/dim_customers.sql",
                "select c.customer_id, c.name, c.tier, coalesce(t.orders, 0) as orders, nope as total
from {{ ref('stg_customers') }} c
left join {{ ref('int_order_totals') }} t on t.customer_id = c.customer_id",
            ),
            (
                "models/marts/paid_orders.sql",
                "select order_id, case when status = 'paid' then amount end as paid_amount from {{ ref('stg_orders') }}",
            ),
            (
                "models/marts/paid_report.sql",
                "select count(*) as n from {{ ref('paid_orders') }}",
            ),
            (
                "models/marts/_more.yml",
                "version: 2\nmodels:\n  - name: paid_orders\n    columns:\n      - name: paid_amount\n        tests: [not_null]\n",
            ),
        ],
    );
    let report = build(&cfg, all()).await;
    assert!(report.failed());
    let s = statuses(&report);
    assert_eq!(s["dim_customers"].0, Status::Error);
    assert!(
        s["dim_customers"]
            .1
            .as_deref()
            .unwrap_or("")
            .contains("nope"),
        "{:?}",
        s["dim_customers"]
    );
    assert_eq!(s["customer_report"].0, Status::Skipped);
    assert!(
        s["customer_report"]
            .1
            .as_deref()
            .unwrap()
            .contains("dim_customers")
    );
    assert_eq!(s["test:assert_totals_not_negative"].0, Status::Skipped);
    assert_eq!(s["paid_orders"].0, Status::Success);
    assert_eq!(s["test:not_null_paid_orders_paid_amount"].0, Status::Fail);
    assert_eq!(s["paid_report"].0, Status::Skipped);
    assert_eq!(s["fct_lines"].0, Status::Success);
    assert_eq!(
        rows(
            &cfg,
            "SELECT * FROM marts.dim_customers ORDER BY customer_id"
        )
        .await,
        before,
        "the previous version is still served"
    );
    let history = rows(
        &cfg,
        "SELECT status, count(*) FROM walden.model_runs WHERE run_id = (SELECT run_id FROM \
         walden.model_runs ORDER BY started_at DESC LIMIT 1) GROUP BY status ORDER BY status",
    )
    .await
    .join("\n");
    assert!(history.contains("| error"), "{history}");
    assert!(history.contains("| skipped"), "{history}");

    // 4. Models are queries like any other: no files, no writes.
    write_project(
        &project_dir,
        &[
            ("models/marts/dim_customers.sql", PROJECT[6].1),
            (
                "models/marts/paid_orders.sql",
                "select * from '/etc/passwd'",
            ),
            (
                "models/marts/paid_report.sql",
                "select count(*) as n from {{ ref('stg_orders') }}",
            ),
        ],
    );
    let report = build(
        &cfg,
        BuildOptions {
            select: vec!["paid_orders".into()],
            ..all()
        },
    )
    .await;
    let s = statuses(&report);
    assert_eq!(s["paid_orders"].0, Status::Error, "{s:?}");
    let message = s["paid_orders"].1.clone().unwrap_or_default();
    assert!(message.contains("/etc/passwd"), "{message}");
    let refused = number(
        &cfg,
        "SELECT count(*) FROM walden.audit_log WHERE protocol = 'models' \
         AND outcome IN ('refused', 'error') AND sql LIKE '%/etc/passwd%'",
    )
    .await;
    assert!(
        refused >= 1,
        "the refusal is audited: {message}\n{:?}",
        rows(
            &cfg,
            "SELECT protocol, outcome, sql FROM walden.audit_log ORDER BY at DESC LIMIT 5"
        )
        .await
    );
}

/// Schedules inside the server: a 2-second cron entry and a "replication advanced" entry
/// rebuild their models on time while replication goes on.
#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_rebuilds_on_cron_ticks_and_when_replication_advances() {
    let (_db, url, client) = database("schedule", SETUP).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &url, "tables = [\"public.*\"]");
    let project_dir = dir.path().join("project");
    write_project(&project_dir, PROJECT);
    let cfg = extend_config(
        dir.path(),
        &format!(
            "snapshot_retention_ms = 0\n\n[models]\npath = \"{}\"\nscheduler_poll_ms = 200\n\n\
             [[models.schedules]]\nname = \"every-2s\"\nselect = \"dim_customers\"\ncron = \"*/2 * * * * *\"\n\n\
             [[models.schedules]]\nname = \"on-advance\"\nselect = \"fct_events\"\non_replication_advance = true\n",
            project_dir.display()
        ),
    );
    catch_up(&cfg).await;
    let report = build(&cfg, all()).await;
    assert!(!report.failed(), "{:?}", statuses(&report));

    let lake = walden_lake::Lake::open(&cfg.lake.warehouse).unwrap();
    let service = walden::serve::query_service(&cfg, lake.clone()).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scheduler = walden::models::start_scheduler(&cfg, lake, service, stopped)
        .expect("the scheduler starts");

    client
        .batch_execute("INSERT INTO customers VALUES (51, 'customer 51', 'gold')")
        .await
        .unwrap();
    catch_up(&cfg).await;
    let started = std::time::Instant::now();
    while number(&cfg, "SELECT count(*) FROM marts.dim_customers").await != 51 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "dim_customers was not rebuilt by its 2-second schedule"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    client
        .batch_execute(
            "INSERT INTO events SELECT i, 'late', now() FROM generate_series(301, 320) i",
        )
        .await
        .unwrap();
    catch_up(&cfg).await;
    let started = std::time::Instant::now();
    while number(&cfg, "SELECT count(*) FROM marts.fct_events").await != 320 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "fct_events was not rebuilt when replication advanced"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    stop.send(true).unwrap();
    scheduler.await.unwrap();
    // Rebuilt every 2 s, yet one version is kept (retention 0 here) and no file of an
    // earlier one is left on disk.
    let lake = walden_lake::Lake::open(&cfg.lake.warehouse).unwrap();
    let table = lake
        .load_table(&walden_lake::TableName::new("marts", "dim_customers"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(table.metadata().snapshots().count(), 1);
    let live = table.plan_files(lake.file_io()).await.unwrap().len();
    let on_disk = std::fs::read_dir(cfg.lake.warehouse.join("marts/dim_customers/data"))
        .unwrap()
        .count();
    assert_eq!(on_disk, live, "files of expired versions are deleted");
    let triggers = rows(
        &cfg,
        "SELECT DISTINCT node, trigger FROM walden.model_runs WHERE kind = 'model' \
         AND trigger LIKE 'schedule%' ORDER BY 1, 2",
    )
    .await
    .join("\n");
    assert!(triggers.contains("dim_customers"), "{triggers}");
    assert!(triggers.contains("(replication advanced)"), "{triggers}");
    // Only the scheduled models were rebuilt by the schedules.
    assert!(!triggers.contains("stg_orders"), "{triggers}");
}

/// A broken project never touches the lake: `walden models build` exits non-zero naming
/// every broken file with its line, and the models built before stay served.
#[tokio::test(flavor = "multi_thread")]
async fn broken_projects_are_named_by_file_and_line_and_change_nothing() {
    let (_db, url, _client) = database("badmodels", SETUP).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &url, "tables = [\"public.*\"]");
    let project_dir = dir.path().join("project");
    write_project(&project_dir, PROJECT);
    let cfg = extend_config(
        dir.path(),
        &format!("[models]\npath = \"{}\"\n", project_dir.display()),
    );
    catch_up(&cfg).await;
    let cfg_path = dir.path().join("walden.toml");
    let cfg_arg = cfg_path.to_str().unwrap();
    let (ok, out, err) = crate::walden(&["--config", cfg_arg, "models", "build"], &[]);
    assert!(ok, "{out}\n{err}");
    let before = rows(
        &cfg,
        "SELECT * FROM marts.dim_customers ORDER BY customer_id",
    )
    .await;
    // The docs site knows what the lake holds: types, as-of, last run.
    let docs = dir.path().join("docs");
    let (ok, out, err) = crate::walden(
        &[
            "--config",
            cfg_arg,
            "models",
            "docs",
            "--out",
            docs.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{out}\n{err}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(docs.join("manifest.json")).unwrap())
            .unwrap();
    assert!(manifest["nodes"]["model.shop.dim_customers"].is_object());
    let page = std::fs::read_to_string(docs.join("models/dim_customers.html")).unwrap();
    assert!(
        page.contains("Customers with their order totals."),
        "{page}"
    );
    assert!(page.contains("success"), "the last run's status is shown");
    let lsn = rows(
        &cfg,
        "SELECT lsn FROM walden.tables WHERE name = 'dim_customers'",
    )
    .await;
    let lsn = lsn[3].trim_matches(|c| c == '|' || c == ' ').to_string();
    assert!(page.contains(&lsn), "as of {lsn}");

    let cases: &[(&str, &str, &str)] = &[
        (
            "models/marts/dim_customers.sql",
            "select *\nfrom {{ ref('stg_customers' }}",
            "models/marts/dim_customers.sql:2:",
        ),
        (
            "models/marts/dim_customers.sql",
            "select *\n from {{ ref('stg_customer') }}",
            "models/marts/dim_customers.sql:2:",
        ),
        (
            "models/marts/_marts.yml",
            "version: 2\nmodels:\n  - name: dim_customers\n    columns: [\n",
            "models/marts/_marts.yml:",
        ),
        (
            "models/staging/stg_customers.sql",
            "select * from {{ ref('customer_report') }}",
            "->",
        ),
    ];
    for (file, text, says) in cases {
        let original = std::fs::read_to_string(project_dir.join(file)).unwrap();
        std::fs::write(project_dir.join(file), text).unwrap();
        let (ok, out, err) = crate::walden(&["--config", cfg_arg, "models", "build"], &[]);
        assert!(!ok, "{file}: the build succeeded\n{out}");
        assert!(err.contains(says), "{file}: {says:?} not in\n{err}");
        let (ok, _, err) = crate::walden(&["--config", cfg_arg, "models", "ls"], &[]);
        assert!(!ok && err.contains(says), "ls: {err}");
        std::fs::write(project_dir.join(file), original).unwrap();
        assert_eq!(
            rows(
                &cfg,
                "SELECT * FROM marts.dim_customers ORDER BY customer_id"
            )
            .await,
            before,
            "{file}: the previous version is still served"
        );
    }
    // A failing test: exit code 1, the run recorded.
    write_project(
        &project_dir,
        &[(
            "tests/no_customers.sql",
            "select * from {{ ref('dim_customers') }} where customer_id > 0",
        )],
    );
    let (ok, out, _) = crate::walden(&["--config", cfg_arg, "models", "test"], &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  test no_customers"), "{out}");
}
