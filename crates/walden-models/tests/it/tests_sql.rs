use walden_models::{Severity, TestOutcome};

use crate::common::*;

#[test]
fn generic_tests_compile_to_failing_row_queries() {
    let p = shop();
    let sql = |name: &str| {
        p.compile_test(name, &ctx(false))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(
        sql("not_null_stg_orders_order_id"),
        "SELECT *\nFROM \"staging\".\"stg_orders\"\nWHERE order_id IS NULL"
    );
    assert_eq!(
        sql("unique_stg_order_lines_order_id_line_no"),
        "SELECT order_id || '-' || line_no AS unique_field, count(*) AS n_records\nFROM \"staging\".\"stg_order_lines\"\nWHERE order_id || '-' || line_no IS NOT NULL\nGROUP BY order_id || '-' || line_no\nHAVING count(*) > 1"
    );
    assert_eq!(
        sql("accepted_values_stg_order_lines_quantity__false__1__2__3__4__5"),
        "SELECT quantity AS value_field, count(*) AS n_records\nFROM (SELECT * FROM \"staging\".\"stg_order_lines\" WHERE product_id > 0) AS __walden_tested\nWHERE quantity IS NOT NULL AND quantity NOT IN (1, 2, 3, 4, 5)\nGROUP BY quantity"
    );
    let status =
        sql("accepted_values_stg_orders_status__pending__paid__shipped__deli_8df885cd2ecfaf51");
    assert!(
        status.contains(
            "status NOT IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded')"
        ),
        "{status}"
    );
    assert_eq!(
        sql("relationships_stg_order_lines_product_id__id__source_shop_products_"),
        "SELECT child.from_field\nFROM (SELECT product_id AS from_field FROM \"staging\".\"stg_order_lines\" WHERE product_id IS NOT NULL) AS child\nLEFT JOIN (SELECT id AS to_field FROM \"public\".\"products_v2\") AS parent ON child.from_field = parent.to_field\nWHERE parent.to_field IS NULL"
    );
    // where applies to the tested model only; an aliased model resolves to its table
    let rel = sql("relationships_fct_orders_customer_id__customer_id__ref_dim_customers_");
    assert!(rel.contains("FROM (SELECT * FROM \"marts\".\"orders\" WHERE placed_at > '2024-01-01') AS __walden_tested"), "{rel}");
    assert!(
        rel.contains("FROM \"core\".\"dim_customers\") AS parent"),
        "{rel}"
    );
    assert_eq!(
        sql("source_unique_shop_customers_id").lines().nth(1),
        Some("FROM \"public\".\"customers\"")
    );
    assert_eq!(
        sql("assert_positive_totals"),
        "select order_id, total\nfrom \"marts\".\"orders\"\nwhere total < 0"
    );
}

#[test]
fn quoted_columns_and_outcomes() {
    let p = load(write(&[
        ("models/a.sql", "select 1 as \"Order Id\""),
        ("models/a.yml", "models:\n  - name: a\n    columns:\n      - name: Order Id\n        quote: true\n        tests:\n          - not_null:\n              config: {severity: warn, warn_if: \">= 3\"}\n"),
    ])
    .path());
    let t = p.test("not_null_a_Order_Id").unwrap();
    assert_eq!(
        p.compile_test(&t.name, &ctx(false)).unwrap(),
        "SELECT *\nFROM \"models\".\"a\"\nWHERE \"Order Id\" IS NULL"
    );
    assert_eq!(t.config.severity, Severity::Warn);
    assert_eq!(t.config.outcome(2), TestOutcome::Pass);
    assert_eq!(t.config.outcome(3), TestOutcome::Warn);
}

#[test]
fn disabled_tests_and_tests_of_disabled_models_are_left_out() {
    let p = load(write(&[
        ("models/a.sql", "select 1 as id"),
        ("models/b.sql", "{{ config(enabled=false) }} select 1 as id"),
        ("models/p.yml", "models:\n  - name: a\n    columns:\n      - name: id\n        tests:\n          - unique:\n              enabled: false\n          - not_null\n  - name: b\n    columns:\n      - name: id\n        tests: [unique]\n"),
        ("tests/off.sql", "{{ config(enabled=false) }} select * from {{ ref('a') }}"),
    ])
    .path());
    let names: Vec<&str> = p.tests().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["not_null_a_id"]);
}
