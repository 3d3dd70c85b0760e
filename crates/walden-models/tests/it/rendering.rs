use std::cell::RefCell;

use walden_models::{Relation, RenderContext};

use crate::common::*;

#[test]
fn build_pass_resolves_refs_sources_vars_and_loops() {
    let p = shop();
    let sql = p.render("stg_orders", &ctx(false)).unwrap();
    assert_eq!(
        sql,
        "select\n    id as order_id,\n    customer_id,\n    status,\n    placed_at,\n    total\nfrom \"public\".\"orders\"\nwhere placed_at >= DATE '2020-01-01'\n  and currency in ('USD', 'EUR')"
    );
    // set, and double-quoted source() arguments
    let sql = p.render("stg_order_lines", &ctx(false)).unwrap();
    assert!(
        sql.contains("unit_price * quantity * (1 - discount) as amount"),
        "{sql}"
    );
    assert!(sql.ends_with("from \"public\".\"order_lines\""), "{sql}");
    // a leading SQL comment is dropped with the blanks around the statement
    assert!(
        p.render("stg_customers", &ctx(false))
            .unwrap()
            .starts_with("select")
    );
}

#[test]
fn is_incremental_and_this_follow_the_context() {
    let p = shop();
    let full = p.render("fct_order_lines", &ctx(false)).unwrap();
    assert!(!full.contains("max(placed_at)"), "{full}");
    assert!(
        full.contains("from \"staging\".\"stg_order_lines\" l"),
        "{full}"
    );
    let inc = p.render("fct_order_lines", &ctx(true)).unwrap();
    assert!(
        inc.contains(
            "where o.placed_at > (select max(placed_at) from \"marts\".\"fct_order_lines\")"
        ),
        "{inc}"
    );
}

#[test]
fn the_resolver_sees_each_relation_kind() {
    let p = shop();
    let seen = RefCell::new(Vec::new());
    let resolve = |r: &Relation| {
        seen.borrow_mut().push(r.clone());
        format!("lake.{}_{}", r.namespace(), r.identifier())
    };
    let sql = p
        .render(
            "fct_order_lines",
            &RenderContext {
                is_incremental: true,
                resolve: &resolve,
            },
        )
        .unwrap();
    assert!(sql.contains("from lake.marts_fct_order_lines)"), "{sql}");
    let seen = seen.into_inner();
    assert!(seen.contains(&Relation::This {
        model: "fct_order_lines".into(),
        namespace: "marts".into(),
        identifier: "fct_order_lines".into()
    }));
    assert!(seen.contains(&Relation::Model {
        model: "stg_orders".into(),
        namespace: "staging".into(),
        identifier: "stg_orders".into(),
        ephemeral: false
    }));

    // an aliased model resolves to its alias; a source to its identifier
    let alias = p.model_relation(p.model("fct_orders").unwrap());
    assert_eq!(alias.quoted(), "\"marts\".\"orders\"");
    let products = p.source_relation(p.source("shop", "products").unwrap());
    assert_eq!(products.quoted(), "\"public\".\"products_v2\"");
}

#[test]
fn plain_render_hands_ephemeral_models_to_the_resolver() {
    let p = shop();
    let seen = RefCell::new(Vec::new());
    let resolve = |r: &Relation| {
        seen.borrow_mut().push(r.clone());
        r.quoted()
    };
    p.render(
        "fct_orders",
        &RenderContext {
            is_incremental: false,
            resolve: &resolve,
        },
    )
    .unwrap();
    assert!(seen.into_inner().iter().any(|r| matches!(r, Relation::Model { model, ephemeral: true, .. } if model == "int_order_totals")));
}

#[test]
fn ephemerals_become_ctes_nested_and_deduplicated() {
    let p = shop();
    let resolve = |r: &Relation| {
        assert!(
            !matches!(
                r,
                Relation::Model {
                    ephemeral: true,
                    ..
                }
            ),
            "the resolver got an ephemeral model: {r:?}"
        );
        r.quoted()
    };
    let ctx = RenderContext {
        is_incremental: false,
        resolve: &resolve,
    };
    // dim_customers refs int_paid_orders (which refs int_order_totals) and int_order_totals
    // directly, and has its own WITH: one list, dependencies first, each CTE once
    let sql = p.render_with_ephemerals("dim_customers", &ctx).unwrap();
    assert!(
        sql.starts_with("with \"__walden_ephemeral_int_order_totals\" AS (\nselect order_id"),
        "{sql}"
    );
    assert_eq!(
        sql.matches("\"__walden_ephemeral_int_order_totals\" AS (")
            .count(),
        1,
        "{sql}"
    );
    let totals = sql
        .find("\"__walden_ephemeral_int_order_totals\" AS (")
        .unwrap();
    let paid = sql
        .find("\"__walden_ephemeral_int_paid_orders\" AS (")
        .unwrap();
    assert!(totals < paid, "dependencies first: {sql}");
    assert!(
        sql.contains("join \"__walden_ephemeral_int_order_totals\" t on t.order_id"),
        "{sql}"
    );
    assert!(
        sql.contains("),\npaid as ("),
        "the model's own CTEs follow: {sql}"
    );
    assert!(
        sql.contains("from \"__walden_ephemeral_int_paid_orders\"\n"),
        "{sql}"
    );
    assert!(
        sql.contains(
            "select max(lines_total) as biggest_order from \"__walden_ephemeral_int_order_totals\""
        ),
        "{sql}"
    );

    // a model without WITH gets one
    let sql = p.render_with_ephemerals("fct_orders", &ctx).unwrap();
    assert!(
        sql.starts_with("WITH \"__walden_ephemeral_int_order_totals\" AS (\nselect"),
        "{sql}"
    );
    assert!(
        sql.contains("\n)\nselect\n    o.order_id,"),
        "config() renders to nothing: {sql}"
    );
    assert!(
        sql.contains("left join \"__walden_ephemeral_int_order_totals\" t using (order_id)"),
        "{sql}"
    );

    // a model without ephemeral dependencies is unchanged
    assert_eq!(
        p.render_with_ephemerals("stg_orders", &ctx).unwrap(),
        p.render("stg_orders", &ctx).unwrap()
    );
}

#[test]
fn ephemerals_merge_into_with_recursive() {
    let dir = write(&[
        (
            "models/e.sql",
            "{{ config(materialized='ephemeral') }} select 1 as n",
        ),
        (
            "models/r.sql",
            "-- counts\nWITH RECURSIVE t(n) AS (select n from {{ ref('e') }} union all select n + 1 from t where n < 3) select * from t;",
        ),
    ]);
    let p = load(dir.path());
    let sql = p.render_with_ephemerals("r", &ctx(false)).unwrap();
    assert_eq!(
        sql,
        "WITH RECURSIVE \"__walden_ephemeral_e\" AS (\nselect 1 as n\n),\nt(n) AS (select n from \"__walden_ephemeral_e\" union all select n + 1 from t where n < 3) select * from t"
    );
}

#[test]
fn env_var_reads_the_given_environment() {
    let files = [(
        "models/a.sql",
        "select '{{ env_var('REGION') }}' as r, '{{ env_var('MISSING', 'dflt') }}' as d",
    )];
    let dir = write(&files);
    let p = walden_models::Project::load(dir.path(), &options(&[], &[("REGION", "eu")])).unwrap();
    assert_eq!(
        p.render("a", &ctx(false)).unwrap(),
        "select 'eu' as r, 'dflt' as d"
    );
}

#[test]
fn jinja_features_comments_whitespace_control_macros_and_filters() {
    let p = load(write(&[(
        "models/a.sql",
        "{# a comment with {{ ref('nothing') }} #}\n{%- macro col(name) -%}{{ name | upper }}{%- endmacro %}\nselect {{ col('x') }} as x,\n  {{ var('n', 3) + 1 }} as n,\n  '{{ ['A', 'b'] | join(',') | lower }}' as j",
    )])
    .path());
    assert_eq!(
        p.model("a").unwrap().refs,
        Vec::<String>::new(),
        "refs in comments are not dependencies"
    );
    assert_eq!(
        p.render("a", &ctx(false)).unwrap(),
        "select X as x,\n  4 as n,\n  'a,b' as j"
    );
}

#[test]
fn two_argument_ref_with_the_project_name_and_ref_in_set() {
    let p = load(
        write(&[
            ("walden_project.yml", "name: proj\n"),
            ("models/a.sql", "select 1 as x"),
            (
                "models/b.sql",
                "{% set src = ref('proj', 'a') %}select * from {{ src }}",
            ),
        ])
        .path(),
    );
    assert_eq!(p.model("b").unwrap().refs, ["a"]);
    assert_eq!(
        p.render("b", &ctx(false)).unwrap(),
        "select * from \"models\".\"a\""
    );
}

#[test]
fn a_ref_only_computed_in_the_incremental_branch_fails_in_the_build_pass() {
    let p = load(write(&[
        ("models/a.sql", "select 1 as x"),
        ("models/b.sql", "{{ config(materialized='incremental') }}\n{% set n = 'a' %}\nselect 1 as x\n{% if is_incremental() %}\nunion all select x from {{ ref(n) }}\n{% endif %}"),
    ])
    .path());
    assert_eq!(p.model("b").unwrap().refs, Vec::<String>::new());
    p.render("b", &ctx(false)).unwrap();
    let err = p.render("b", &ctx(true)).unwrap_err().to_string();
    assert!(
        err.starts_with("models/b.sql:5:28: ref('a') was not seen when the project was loaded"),
        "{err}"
    );
    assert!(err.contains("-- depends_on: {{ ref('a') }}"), "{err}");
}

#[test]
fn singular_and_generic_tests_on_ephemeral_models_inline_them() {
    let p = load(
        write(&[
            (
                "models/e.sql",
                "{{ config(materialized='ephemeral') }} select 1 as id",
            ),
            (
                "models/props.yml",
                "models:\n  - name: e\n    columns:\n      - name: id\n        tests: [not_null]\n",
            ),
            ("tests/t.sql", "select * from {{ ref('e') }} where id < 0"),
        ])
        .path(),
    );
    let sql = p.compile_test("not_null_e_id", &ctx(false)).unwrap();
    assert_eq!(
        sql,
        "WITH \"__walden_ephemeral_e\" AS (\nselect 1 as id\n)\nSELECT *\nFROM \"__walden_ephemeral_e\"\nWHERE id IS NULL"
    );
    let sql = p.compile_test("t", &ctx(false)).unwrap();
    assert_eq!(
        sql,
        "WITH \"__walden_ephemeral_e\" AS (\nselect 1 as id\n)\nselect * from \"__walden_ephemeral_e\" where id < 0"
    );
}

#[test]
fn unknown_names_given_to_the_api_suggest_close_ones() {
    let p = shop();
    let err = p.render("fct_ordrs", &ctx(false)).unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown model 'fct_ordrs'; did you mean one of 'fct_orders', 'fct_order_lines'?"
    );
    assert!(p.compile_test("nope", &ctx(false)).is_err());
}
