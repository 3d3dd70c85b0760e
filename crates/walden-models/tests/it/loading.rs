use walden_models::{IncrementalStrategy, Materialized, NodeId, Period, Severity};

use crate::common::*;

#[test]
fn the_shop_fixture_loads_with_every_model_source_and_test() {
    let p = shop();
    assert_eq!(p.name, "shop");
    assert_eq!(
        p.project_file.as_deref(),
        Some(std::path::Path::new("walden_project.yml"))
    );
    let names: Vec<&str> = p.models().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "dim_customers",
            "fct_order_lines",
            "fct_orders",
            "int_order_totals",
            "int_paid_orders",
            "stg_customers",
            "stg_order_lines",
            "stg_orders"
        ]
    );
    let disabled: Vec<&str> = p.disabled_models().map(|m| m.name.as_str()).collect();
    assert_eq!(disabled, ["old_orders"]);
    assert_eq!(p.sources().count(), 4);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    // DAG order: dependencies first, ties by name
    assert_eq!(
        p.order(),
        [
            "stg_customers",
            "stg_order_lines",
            "int_order_totals",
            "stg_orders",
            "fct_order_lines",
            "fct_orders",
            "int_paid_orders",
            "dim_customers"
        ]
    );
}

#[test]
fn namespaces_come_from_schema_then_first_folder() {
    let p = shop();
    let ns = |m: &str| p.model(m).unwrap().namespace.clone();
    assert_eq!(ns("stg_orders"), "staging");
    assert_eq!(ns("fct_orders"), "marts"); // models/marts/core/: the first folder
    assert_eq!(ns("dim_customers"), "core"); // config: schema: core in YAML
    assert_eq!(ns("int_paid_orders"), "intermediate");
    assert_eq!(p.model("fct_orders").unwrap().identifier(), "orders");
    assert_eq!(
        p.model("fct_orders").unwrap().fqn,
        ["shop", "marts", "core", "fct_orders"]
    );
}

#[test]
fn configuration_precedence_folder_then_yaml_then_sql() {
    let p = shop();
    let stg = &p.model("stg_orders").unwrap().config;
    assert_eq!(stg.materialized, Materialized::View);
    assert_eq!(stg.tags, ["staging"]);
    assert_eq!(stg.schedule, None);

    let int = &p.model("int_order_totals").unwrap().config;
    assert_eq!(int.materialized, Materialized::Ephemeral);

    // folder: table, marts, core, hourly; YAML: table + daily; SQL: alias + finance
    let fct = &p.model("fct_orders").unwrap().config;
    assert_eq!(fct.materialized, Materialized::Table);
    assert_eq!(fct.tags, ["core", "daily", "finance", "marts"]);
    assert_eq!(fct.alias.as_deref(), Some("orders"));
    assert_eq!(fct.schedule.as_deref(), Some("0 * * * *"));

    // YAML says view, the SQL config() says incremental: SQL wins
    let lines = &p.model("fct_order_lines").unwrap().config;
    assert_eq!(lines.materialized, Materialized::Incremental);
    assert_eq!(lines.unique_key, ["order_id", "line_no"]);
    assert_eq!(lines.incremental_strategy, Some(IncrementalStrategy::Merge));
    assert_eq!(
        lines.schedule.as_deref(),
        Some("*/15 * * * *"),
        "SQL schedule overrides the folder's"
    );
    assert!(p.is_built("fct_order_lines") && !p.is_built("int_order_totals"));
}

#[test]
fn dependencies_include_both_incremental_branches_and_descriptions_load() {
    let p = shop();
    let m = p.model("fct_order_lines").unwrap();
    assert_eq!(m.refs, ["stg_order_lines", "stg_orders"]);
    assert_eq!(m.description, "Order lines, built incrementally.");
    let c = p.model("stg_customers").unwrap();
    assert_eq!(c.columns[0].name, "customer_id");
    assert_eq!(c.columns[0].description, "The customer's id.");
    assert_eq!(c.columns[0].data_type.as_deref(), Some("bigint"));
    assert_eq!(c.sources, [("shop".to_string(), "customers".to_string())]);
    assert_eq!(
        c.properties_path.as_deref(),
        Some(std::path::Path::new("models/staging/_staging.yml"))
    );
    assert_eq!(
        p.parents(&NodeId::Model("int_paid_orders".into())),
        [
            NodeId::Model("int_order_totals".into()),
            NodeId::Model("stg_orders".into())
        ]
    );
    // a test depends on the models it tests
    assert!(
        p.children(&NodeId::Model("fct_orders".into()))
            .contains(&NodeId::Test("assert_positive_totals".into()))
    );
}

#[test]
fn sources_have_schema_identifier_and_freshness_with_overrides() {
    let p = shop();
    let customers = p.source("shop", "customers").unwrap();
    assert_eq!(customers.namespace, "public");
    assert_eq!(customers.identifier, "customers");
    assert_eq!(customers.loaded_at_field.as_deref(), Some("updated_at"));
    let f = customers.freshness.as_ref().unwrap();
    assert_eq!(f.warn_after.unwrap().period, Period::Hour);
    assert_eq!(f.error_after.unwrap().seconds(), 86400);
    assert_eq!(
        customers.source_description,
        "The shop's OLTP tables, replicated."
    );

    let orders = p.source("shop", "orders").unwrap();
    assert_eq!(orders.loaded_at_field.as_deref(), Some("placed_at"));
    let f = orders.freshness.as_ref().unwrap();
    assert_eq!(f.warn_after.unwrap().seconds(), 30 * 60);
    assert_eq!(
        f.error_after, None,
        "the table's freshness replaces the source's whole"
    );

    assert_eq!(
        p.source("shop", "order_lines").unwrap().freshness,
        None,
        "freshness: null clears it"
    );
    assert_eq!(
        p.source("shop", "products").unwrap().identifier,
        "products_v2"
    );
}

#[test]
fn every_test_spelling_is_read() {
    let p = shop();
    let names: Vec<&str> = p.tests().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "accepted_values_stg_order_lines_quantity__false__1__2__3__4__5",
            "accepted_values_stg_orders_status__pending__paid__shipped__deli_8df885cd2ecfaf51",
            "assert_positive_totals",
            "not_null_fct_orders_order_id",
            "not_null_stg_customers_customer_id",
            "not_null_stg_customers_email",
            "not_null_stg_orders_order_id",
            "relationships_fct_orders_customer_id__customer_id__ref_dim_customers_",
            "relationships_stg_order_lines_product_id__id__source_shop_products_",
            "relationships_stg_orders_customer_id__customer_id__ref_stg_customers_",
            "source_not_null_shop_customers_id",
            "source_unique_shop_customers_id",
            "unique_dim_customers_customer_id",
            "unique_fct_orders_order_id",
            "unique_stg_customers_customer_id",
            "unique_stg_order_lines_order_id_line_no",
            "unique_stg_orders_order_id",
        ]
    );
    let warn = p.test("not_null_stg_customers_email").unwrap();
    assert_eq!(warn.config.severity, Severity::Warn);
    assert_eq!(
        warn.path,
        std::path::Path::new("models/staging/_staging.yml")
    );
    assert_eq!(warn.line, 15);
    let rel = p
        .test("relationships_stg_order_lines_product_id__id__source_shop_products_")
        .unwrap();
    assert_eq!(rel.config.severity, Severity::Warn);
    assert_eq!(rel.config.error_if.to_string(), ">10");
    assert_eq!(
        rel.depends_on,
        [
            NodeId::Model("stg_order_lines".into()),
            NodeId::Source("shop".into(), "products".into())
        ]
    );
    let singular = p.test("assert_positive_totals").unwrap();
    assert_eq!(singular.config.severity, Severity::Warn);
    assert_eq!(singular.attached_to, None);
    assert_eq!(singular.depends_on, [NodeId::Model("fct_orders".into())]);
}

#[test]
fn a_dbt_project_file_is_read_as_is() {
    let p = load(&fixture("dbt_variant"));
    assert_eq!(p.name, "jaffle");
    let stg = p.model("stg_payments").unwrap();
    assert_eq!(
        stg.path,
        std::path::Path::new("transform/staging/stg_payments.sql")
    );
    assert_eq!(stg.config.materialized, Materialized::View);
    assert_eq!(stg.namespace, "staging");
    assert_eq!(
        stg.identifier(),
        "payments",
        "a model-level entry under its folder"
    );
    let top = p.model("payments_summary").unwrap();
    assert_eq!(
        top.config.materialized,
        Materialized::Table,
        "models: without the project level"
    );
    assert_eq!(top.namespace, "models");
    assert_eq!(
        top.refs,
        ["stg_payments"],
        "ref('jaffle', 'stg_payments') names this project"
    );
    assert_eq!(
        p.vars["min_amount"], 10,
        "vars scoped under the project name"
    );
    assert_eq!(
        p.test("no_small_payments").unwrap().path,
        std::path::Path::new("checks/no_small_payments.sql")
    );
    // +persist_docs is dbt's, not walden's: a warning that names it
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    let w = p.warnings[0].to_string();
    assert!(
        w.starts_with("dbt_project.yml:16:3: config '+persist_docs'"),
        "{w}"
    );
}

#[test]
fn a_models_folder_alone_is_a_project_with_defaults() {
    let dir = write(&[
        ("models/a.sql", "select 1 as x"),
        ("models/sub/b.sql", "select * from {{ ref('a') }}"),
    ]);
    let p = load(dir.path());
    assert_eq!(p.project_file, None);
    assert_eq!(p.model("a").unwrap().namespace, "models");
    assert_eq!(p.model("b").unwrap().namespace, "sub");
    assert_eq!(
        p.model("b").unwrap().config.materialized,
        Materialized::View
    );
    assert_eq!(p.order(), ["a", "b"]);
}

#[test]
fn walden_project_yml_wins_over_dbt_project_yml() {
    let dir = write(&[
        ("walden_project.yml", "name: w\n"),
        ("dbt_project.yml", "name: d\n"),
        ("models/a.sql", "select 1"),
    ]);
    assert_eq!(load(dir.path()).name, "w");
}

#[test]
fn var_overrides_from_options_win() {
    let dir = write(&[
        ("walden_project.yml", "name: p\nvars:\n  x: 1\n"),
        ("models/a.sql", "select {{ var('x') }} as x"),
    ]);
    let opts = options(&[("x", serde_json::json!(5))], &[]);
    let p = walden_models::Project::load(dir.path(), &opts).unwrap();
    assert_eq!(p.vars["x"], 5);
    assert_eq!(p.render("a", &ctx(false)).unwrap(), "select 5 as x");
}
