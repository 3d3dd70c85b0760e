use walden_models::Error;

use crate::common::*;

fn models(select: &[&str], exclude: &[&str]) -> Vec<String> {
    shop()
        .select(select, exclude)
        .unwrap_or_else(|e| panic!("{e}"))
        .models
}

#[test]
fn names_and_graph_operators() {
    assert_eq!(models(&["stg_orders"], &[]), ["stg_orders"]);
    // ancestors: ephemeral ones are selected but never built
    assert_eq!(
        models(&["+fct_orders"], &[]),
        ["stg_order_lines", "stg_orders", "fct_orders"]
    );
    assert_eq!(
        models(&["stg_orders+"], &[]),
        [
            "stg_orders",
            "fct_order_lines",
            "fct_orders",
            "dim_customers"
        ]
    );
    assert_eq!(
        models(&["stg_orders+1"], &[]),
        ["stg_orders", "fct_order_lines", "fct_orders"]
    );
    assert_eq!(
        models(&["1+dim_customers"], &[]),
        ["stg_customers", "dim_customers"]
    );
    // two steps up: through the ephemeral models to the staging ones
    assert_eq!(
        models(&["2+dim_customers"], &[]),
        [
            "stg_customers",
            "stg_order_lines",
            "stg_orders",
            "dim_customers"
        ]
    );
    assert_eq!(models(&["@stg_order_lines"], &[]).len(), 6);
    assert_eq!(
        models(&["stg_*"], &[]),
        ["stg_customers", "stg_order_lines", "stg_orders"]
    );
    assert_eq!(
        models(&[], &[]).len(),
        6,
        "everything but the two ephemeral models"
    );
}

#[test]
fn methods() {
    assert_eq!(
        models(&["tag:staging"], &[]),
        ["stg_customers", "stg_order_lines", "stg_orders"]
    );
    assert_eq!(models(&["tag:finance"], &[]), ["fct_orders"]);
    assert_eq!(
        models(&["path:models/marts"], &[]),
        ["fct_order_lines", "fct_orders", "dim_customers"]
    );
    assert_eq!(
        models(&["models/marts/core"], &[]),
        ["fct_orders", "dim_customers"]
    );
    assert_eq!(
        models(&["path:marts/core/fct_orders.sql"], &[]),
        ["fct_orders"]
    );
    assert_eq!(models(&["namespace:core"], &[]), ["dim_customers"]);
    assert_eq!(models(&["schema:staging"], &[]).len(), 3);
    assert_eq!(
        models(&["config.materialized:incremental"], &[]),
        ["fct_order_lines"]
    );
    assert_eq!(models(&["config.schedule:*/15*"], &[]), ["fct_order_lines"]);
    assert_eq!(
        models(&["config.unique_key:line_no"], &[]),
        ["fct_order_lines"]
    );
    assert_eq!(
        models(&["source:shop.orders+"], &[]),
        [
            "stg_orders",
            "fct_order_lines",
            "fct_orders",
            "dim_customers"
        ]
    );
    assert_eq!(
        models(&["source:shop+1"], &[]),
        ["stg_customers", "stg_order_lines", "stg_orders"]
    );
}

#[test]
fn union_intersection_and_exclusion() {
    assert_eq!(
        models(&["stg_orders stg_customers"], &[]),
        ["stg_customers", "stg_orders"]
    );
    assert_eq!(
        models(&["stg_orders", "stg_customers"], &[]),
        ["stg_customers", "stg_orders"]
    );
    assert_eq!(
        models(&["tag:marts,path:models/marts/core"], &[]),
        ["fct_orders", "dim_customers"]
    );
    assert_eq!(
        models(&["tag:marts,config.materialized:table"], &[]),
        ["fct_orders", "dim_customers"]
    );
    assert_eq!(
        models(&["tag:marts"], &["dim_customers"]),
        ["fct_order_lines", "fct_orders"]
    );
    assert_eq!(
        models(&["stg_orders+"], &["tag:core"]),
        ["stg_orders", "fct_order_lines"]
    );
    assert_eq!(
        models(&["tag:staging"], &["tag:not_a_tag"]).len(),
        3,
        "an exclusion matching nothing excludes nothing"
    );
}

#[test]
fn tests_follow_their_models() {
    let p = shop();
    let s = p.select(&["stg_orders"], &[]).unwrap();
    assert_eq!(
        s.tests,
        [
            "accepted_values_stg_orders_status__pending__paid__shipped__deli_8df885cd2ecfaf51",
            "not_null_stg_orders_order_id",
            "relationships_stg_orders_customer_id__customer_id__ref_stg_customers_",
            "unique_stg_orders_order_id",
        ],
        "attached tests run even when the referenced model is not selected"
    );
    let s = p.select(&["fct_orders"], &[]).unwrap();
    assert!(
        s.tests.contains(&"assert_positive_totals".to_string()),
        "a singular test whose models are all selected"
    );
    let s = p.select(&["fct_orders"], &["dim_customers"]).unwrap();
    assert!(
        !s.tests
            .iter()
            .any(|t| t.starts_with("relationships_fct_orders")),
        "a test reading an excluded model is dropped: {:?}",
        s.tests
    );
    let s = p.select(&["source:shop.customers"], &[]).unwrap();
    assert_eq!(s.models, Vec::<String>::new());
    assert_eq!(s.sources, [("shop".to_string(), "customers".to_string())]);
    assert_eq!(
        s.tests,
        [
            "source_not_null_shop_customers_id",
            "source_unique_shop_customers_id"
        ]
    );
    // a test selected by name, and tests excluded by name
    let s = p.select(&["unique_stg_orders_order_id"], &[]).unwrap();
    assert_eq!(
        (s.models.len(), s.tests.as_slice()),
        (0, ["unique_stg_orders_order_id".to_string()].as_slice())
    );
    let s = p
        .select(&["stg_orders"], &["not_null_*", "unique_*"])
        .unwrap();
    assert_eq!(s.tests.len(), 2);
    let s = p.select(&["test_name:relationships"], &[]).unwrap();
    assert_eq!(s.tests.len(), 3);
}

#[test]
fn selection_errors_name_close_candidates() {
    let p = shop();
    let err = |sel: &str| match p.select(&[sel], &[]) {
        Err(e @ Error::Selection { .. }) => e.to_string(),
        other => panic!("{sel}: {other:?}"),
    };
    assert_eq!(
        err("fct_ordrs"),
        "selector 'fct_ordrs': no model or test is named 'fct_ordrs'; did you mean one of 'fct_orders', 'fct_order_lines'?"
    );
    assert_eq!(
        err("tag:mart"),
        "selector 'tag:mart': nothing matches tag: 'mart'; did you mean 'marts'?"
    );
    assert_eq!(
        err("namespace:stagin"),
        "selector 'namespace:stagin': nothing matches namespace: 'stagin'; did you mean 'staging'?"
    );
    assert_eq!(
        err("source:shopp"),
        "selector 'source:shopp': nothing matches source: 'shopp'; did you mean one of 'shop', 'shop.products'?"
    );
    assert!(err("colour:red").contains("unknown selector method 'colour:'"));
    assert!(err("config.color:red").contains("unknown config key 'color'"));
    assert!(err("a+b").contains("'+' and '@' go only before or after a selector"));
    assert!(err("tag:").contains("needs a value"));
    assert!(err("stg_orders,").contains("empty selector"));
    // malformed exclusions are errors too
    assert!(p.select(&["stg_orders"], &["colour:red"]).is_err());
}
