use std::collections::HashMap;

use serde_json::json;

use crate::common::*;

#[test]
fn manifest_has_dbt_shape() {
    let p = shop();
    let mut compiled = HashMap::new();
    compiled.insert("model.shop.stg_orders".to_string(), "select 1".to_string());
    compiled.insert(
        "not_null_stg_orders_order_id".to_string(),
        "select 2".to_string(),
    );
    let m = p.manifest(
        &compiled,
        json!({"generated_at": "2026-01-01T00:00:00Z", "project_name": "overridden"}),
    );

    let meta = &m["metadata"];
    assert_eq!(
        meta["dbt_schema_version"],
        "https://schemas.getdbt.com/dbt/manifest/v12.json"
    );
    assert_eq!(meta["generated_at"], "2026-01-01T00:00:00Z");
    assert_eq!(meta["project_name"], "overridden", "extra keys win");

    let nodes = m["nodes"].as_object().unwrap();
    assert_eq!(
        nodes
            .keys()
            .filter(|k| k.starts_with("model.shop."))
            .count(),
        8
    );
    assert_eq!(
        nodes.keys().filter(|k| k.starts_with("test.shop.")).count(),
        17
    );

    let stg = &nodes["model.shop.stg_orders"];
    assert_eq!(stg["name"], "stg_orders");
    assert_eq!(stg["resource_type"], "model");
    assert_eq!(stg["original_file_path"], "models/staging/stg_orders.sql");
    assert_eq!(stg["path"], "staging/stg_orders.sql");
    assert_eq!(stg["compiled_code"], "select 1");
    assert_eq!(stg["compiled"], true);
    assert!(
        stg["raw_code"]
            .as_str()
            .unwrap()
            .contains("{{ source('shop', 'orders') }}")
    );
    assert_eq!(
        stg["depends_on"]["nodes"],
        json!(["source.shop.shop.orders"])
    );
    assert_eq!(stg["schema"], "staging");
    assert_eq!(stg["fqn"], json!(["shop", "staging", "stg_orders"]));
    assert_eq!(stg["description"], "Orders since the start date.");
    assert_eq!(stg["columns"]["order_id"]["name"], "order_id");
    assert_eq!(stg["config"]["materialized"], "view");
    assert_eq!(stg["patch_path"], "shop://models/staging/_staging.yml");

    let fct = &nodes["model.shop.fct_order_lines"];
    assert_eq!(fct["compiled_code"], serde_json::Value::Null);
    assert_eq!(fct["config"]["unique_key"], json!(["order_id", "line_no"]));
    assert_eq!(fct["config"]["incremental_strategy"], "merge");
    assert_eq!(
        fct["depends_on"]["nodes"],
        json!(["model.shop.stg_order_lines", "model.shop.stg_orders"])
    );
    assert_eq!(nodes["model.shop.fct_orders"]["alias"], "orders");
    assert_eq!(
        nodes["model.shop.fct_orders"]["relation_name"],
        "\"marts\".\"orders\""
    );
    assert_eq!(
        nodes["model.shop.int_order_totals"]["relation_name"],
        serde_json::Value::Null
    );
    assert_eq!(
        nodes["model.shop.fct_orders"]["tags"],
        json!(["core", "daily", "finance", "marts"])
    );

    let t = &nodes["test.shop.not_null_stg_orders_order_id"];
    assert_eq!(t["resource_type"], "test");
    assert_eq!(
        t["compiled_code"], "select 2",
        "compiled looked up by plain name too"
    );
    assert_eq!(t["test_metadata"]["name"], "not_null");
    assert_eq!(t["test_metadata"]["kwargs"]["column_name"], "order_id");
    assert_eq!(t["attached_node"], "model.shop.stg_orders");
    assert_eq!(t["config"]["severity"], "ERROR");
    assert_eq!(t["depends_on"]["nodes"], json!(["model.shop.stg_orders"]));
    let rel =
        &nodes["test.shop.relationships_stg_order_lines_product_id__id__source_shop_products_"];
    assert_eq!(
        rel["test_metadata"]["kwargs"]["to"],
        "source('shop', 'products')"
    );
    assert_eq!(rel["config"]["severity"], "WARN");
    assert_eq!(rel["config"]["error_if"], ">10");
    let singular = &nodes["test.shop.assert_positive_totals"];
    assert_eq!(singular["test_metadata"], serde_json::Value::Null);
    assert_eq!(
        singular["original_file_path"],
        "tests/assert_positive_totals.sql"
    );

    let src = &m["sources"]["source.shop.shop.orders"];
    assert_eq!(src["source_name"], "shop");
    assert_eq!(src["schema"], "public");
    assert_eq!(src["loaded_at_field"], "placed_at");
    assert_eq!(
        src["freshness"]["warn_after"],
        json!({"count": 30, "period": "minute"})
    );
    assert_eq!(src["freshness"]["error_after"], serde_json::Value::Null);
    assert_eq!(
        m["sources"]["source.shop.shop.products"]["relation_name"],
        "\"public\".\"products_v2\""
    );

    assert_eq!(
        m["disabled"]["model.shop.old_orders"][0]["config"]["enabled"],
        false
    );

    // the maps cover every node and source and agree with each other
    let parents = m["parent_map"].as_object().unwrap();
    let children = m["child_map"].as_object().unwrap();
    assert_eq!(parents.len(), 8 + 17 + 4);
    assert_eq!(parents.len(), children.len());
    assert_eq!(
        parents["model.shop.dim_customers"],
        json!([
            "model.shop.int_order_totals",
            "model.shop.int_paid_orders",
            "model.shop.stg_customers"
        ])
    );
    for (child, ps) in parents {
        for parent in ps.as_array().unwrap() {
            let back = children[parent.as_str().unwrap()].as_array().unwrap();
            assert!(
                back.contains(&json!(child)),
                "{parent} -> {child} missing from child_map"
            );
        }
    }
    assert_eq!(parents["source.shop.shop.customers"], json!([]));
    // it serializes
    assert!(serde_json::to_string(&m).unwrap().len() > 1000);
}
