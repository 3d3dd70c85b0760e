//! The repository's example project (`walden_project.yml` and `models/` at the root).

use std::path::PathBuf;

use walden_models::{IncrementalStrategy, Materialized, NodeId};

use crate::common::*;

fn example_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_example_project_loads() {
    let p = load(&example_root());
    assert_eq!(p.name, "shop");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(
        p.order(),
        [
            "dim_date",
            "stg_addresses",
            "stg_customers",
            "stg_order_lines",
            "stg_orders",
            "dim_customers",
            "fct_order_lines",
            "stg_payments",
            "fct_orders",
            "stg_products",
            "dim_products",
        ]
    );
    for m in p.models() {
        let expected = if m.name.starts_with("stg_") {
            "staging"
        } else {
            "marts"
        };
        assert_eq!(m.namespace, expected, "{}", m.name);
        assert!(!m.description.is_empty(), "{} has no description", m.name);
        let mat = m.config.materialized;
        match m.name.as_str() {
            n if n.starts_with("stg_") => assert_eq!(mat, Materialized::View),
            "fct_order_lines" => {
                assert_eq!(mat, Materialized::Incremental);
                assert_eq!(m.config.unique_key, ["order_id", "line_no"]);
                assert_eq!(
                    m.config.incremental_strategy,
                    Some(IncrementalStrategy::Merge)
                );
            }
            _ => assert_eq!(mat, Materialized::Table),
        }
    }
    let deps = |m: &str| p.parents(&NodeId::Model(m.into()));
    assert_eq!(deps("dim_date"), Vec::<NodeId>::new());
    assert_eq!(
        deps("fct_orders"),
        ["stg_order_lines", "stg_orders", "stg_payments"].map(|m| NodeId::Model(m.into()))
    );
    assert_eq!(
        deps("stg_orders"),
        [NodeId::Source("shop".into(), "orders".into())]
    );
    assert_eq!(p.sources().count(), 6);
    assert!(p.tests().count() >= 25, "{}", p.tests().count());
    assert_eq!(
        p.test("assert_order_totals_not_negative")
            .unwrap()
            .depends_on,
        [NodeId::Model("fct_orders".into())]
    );
    // every model and test compiles in both passes
    for m in p.models() {
        p.render_with_ephemerals(&m.name, &ctx(false)).unwrap();
        p.render_with_ephemerals(&m.name, &ctx(true)).unwrap();
    }
    for t in p.tests() {
        p.compile_test(&t.name, &ctx(false)).unwrap();
    }
    let sql = p.render("dim_date", &ctx(false)).unwrap();
    assert!(
        sql.contains("DATE '2020-01-01',\n        DATE '2030-12-31',"),
        "{sql}"
    );
    let inc = p.render("fct_order_lines", &ctx(true)).unwrap();
    assert!(inc.contains("from \"marts\".\"fct_order_lines\")"), "{inc}");
    // the marts for the quickstart
    let marts = p.select(&["path:models/marts"], &[]).unwrap();
    assert_eq!(
        marts.models,
        [
            "dim_date",
            "dim_customers",
            "fct_order_lines",
            "fct_orders",
            "dim_products"
        ]
    );
}
