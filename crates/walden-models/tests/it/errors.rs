use crate::common::*;

/// Asserts that loading `files` fails with exactly `expected` (Display lines, sorted).
fn assert_errors(files: &[(&str, &str)], expected: &[&str]) {
    let got = errors(files);
    assert_eq!(got, expected, "\nfull errors:\n{}", got.join("\n"));
}

#[test]
fn unknown_ref_names_the_call_and_a_close_model() {
    assert_errors(
        &[
            ("models/marts/fct_orders.sql", "select 1 as id"),
            (
                "models/marts/x.sql",
                "select *\nfrom a\njoin   {{ ref('fct_ordrs') }} o",
            ),
        ],
        &[
            "models/marts/x.sql:3:11: unknown model 'fct_ordrs' in ref(); did you mean 'fct_orders'?",
        ],
    );
}

#[test]
fn unknown_ref_in_a_branch_the_parse_pass_skips_is_found_by_the_scan() {
    assert_errors(
        &[
            ("models/a.sql", "select 1 as x"),
            (
                "models/b.sql",
                "select 1 as x\n{% if is_incremental() %}\n  union all select * from {{ ref('aa') }} {{ ref('zzz') }}\n{% endif %}",
            ),
        ],
        &[
            "models/b.sql:3:30: unknown model 'aa' in ref(); did you mean 'a'?",
            "models/b.sql:3:46: unknown model 'zzz' in ref()",
        ],
    );
}

#[test]
fn unknown_source_names_the_call() {
    assert_errors(
        &[
            (
                "models/sources.yml",
                "sources:\n  - name: shop\n    tables:\n      - name: orders\n",
            ),
            (
                "models/a.sql",
                "select * from {{ source('shop', 'ordres') }}",
            ),
        ],
        &[
            "models/a.sql:1:18: unknown source table 'shop.ordres' in source(); did you mean 'shop.orders'?",
        ],
    );
}

#[test]
fn every_broken_file_is_reported_at_once() {
    let got = errors(&[
        ("models/a.sql", "select {{ nope }}"),
        ("models/b.sql", "select {{ 1 | frobnicate }}"),
        ("models/c.sql", "select {{ reff('a') }}"),
        ("models/d.sql", "{% include 'x.sql' %}"),
        ("models/e.sql", "select {% if x %}"),
        ("models/f.sql", "select 1; select 2"),
        ("models/g.sql", "delete from t"),
        ("models/h.sql", "{{ config(materialized='seed') }} select 1"),
        ("models/i.sql", "select {{ var('missing') }}"),
        (
            "models/j.sql",
            "select '{{ env_var('NOT_SET_ANYWHERE_W4LD3N') }}'",
        ),
        ("models/k.sql", "select * from {{ ref('other_pkg', 'a') }}"),
        ("models/l.sql", "{% import 'm.sql' as m %} select 1"),
        ("models/m.sql", "{{ config(frobnicate=1) }} select 1"),
        (
            "models/n.sql",
            "{{ config(materialized='incremental', incremental_strategy='merge') }}\nselect 1",
        ),
        (
            "models/o.sql",
            "{{ config(schedule='sometimes') }} select 1",
        ),
        ("models/p.sql", "select 1 from {{ ref('a', 'b', 'c') }}"),
        ("models/q.sql", "\n-- nothing here\n"),
    ]);
    let expected = [
        "models/a.sql:1:11: undefined value: `nope` is undefined; variables come from {% set %}, {% for %} or var('name')",
        "models/b.sql:1:15: unknown filter 'frobnicate'; templates have minijinja's built-in filters",
        "models/c.sql:1:11: unknown function 'reff'; did you mean 'ref'?",
        "models/d.sql:1:4: {% include %} is not supported; a model cannot read other files; make the shared SQL a model (ephemeral if it should not be built) and ref() it",
        "models/e.sql:1:16: syntax error: unexpected end of input, expected end of block",
        "models/f.sql:1:11: the model renders to 2 statements (the second starts with SELECT); a model is exactly one SELECT",
        "models/g.sql:1:1: the model renders to a DELETE statement; a model is one SELECT (or WITH ... SELECT) query",
        "models/h.sql:1:4: unknown materialization 'seed'; expected one of view, table, incremental, ephemeral",
        "models/i.sql:1:11: var('missing') is not set and has no default; set it under `vars:` in the project file or pass it with --vars",
        "models/j.sql:1:12: env_var('NOT_SET_ANYWHERE_W4LD3N'): the environment variable is not set and no default is given",
        "models/k.sql:1:18: ref('other_pkg', ...) names another package; walden has no packages, only this project ('PROJECT')",
        "models/l.sql:1:4: {% import %} is not supported; a model cannot read other files; make the shared SQL a model (ephemeral if it should not be built) and ref() it",
        "models/m.sql:1:4: unknown config 'frobnicate'; expected one of materialized, unique_key, incremental_strategy, tags, schema, alias, enabled, schedule",
        "models/n.sql:1:4: incremental_strategy 'merge' needs a unique_key",
        "models/o.sql:1:4: schedule 'sometimes' is not a cron expression (1 field); expected 5 fields like '*/10 * * * *', 6 with seconds first, or @hourly/@daily/@weekly/@monthly/@yearly",
        "models/p.sql:1:18: ref() takes a model name, or the project name and a model name, as strings",
        "models/q.sql:1:1: the model renders to no SQL statement (a model is one SELECT)",
    ];
    assert_eq!(got.len(), expected.len(), "{}", got.join("\n"));
    for (g, e) in got.iter().zip(expected) {
        // the project name is the temporary folder's
        if e.contains("PROJECT") {
            let (head, _) = e.split_once("PROJECT").unwrap();
            assert!(g.starts_with(head), "\n got: {g}\nwant: {e}");
        } else {
            assert_eq!(g, e);
        }
    }
}

#[test]
fn duplicate_model_names_name_both_files() {
    assert_errors(
        &[
            ("models/a/x.sql", "select 1"),
            ("models/b/x.sql", "select 2"),
        ],
        &[
            "models/a/x.sql:1:1: duplicate model name 'x': also defined in models/b/x.sql",
            "models/b/x.sql:1:1: duplicate model name 'x': also defined in models/a/x.sql; model names are file stems and must be unique across folders; rename one file",
        ],
    );
}

#[test]
fn cycles_are_named_with_their_path() {
    assert_errors(
        &[
            ("models/a.sql", "select * from {{ ref('b') }}"),
            ("models/b.sql", "select * from\n  {{ ref('c') }}"),
            ("models/c.sql", "select * from {{ ref('a') }}"),
            ("models/d.sql", "select * from {{ ref('d') }}"),
            ("models/e.sql", "select * from {{ ref('a') }}"),
        ],
        &[
            "models/a.sql:1:18: dependency cycle: a -> b -> c -> a; a model cannot depend on itself, even through others; use {{ this }} to read a model's own table",
            "models/d.sql:1:18: dependency cycle: d -> d; a model cannot depend on itself, even through others; use {{ this }} to read a model's own table",
        ],
    );
}

#[test]
fn refs_to_disabled_models_are_errors() {
    assert_errors(
        &[
            ("models/a.sql", "{{ config(enabled=false) }} select 1"),
            ("models/b.sql", "select *\nfrom {{ ref('a') }}"),
        ],
        &["models/b.sql:2:9: ref('a') names a disabled model; enable 'a' or remove the ref"],
    );
}

#[test]
fn yaml_problems_carry_file_line_and_column() {
    assert_errors(
        &[
            ("models/a.sql", "select 1 as id"),
            ("models/b.sql", "select 1 as id"),
            (
                "models/props.yml",
                "version: 2\nmodels:\n  - name: a\n    columns:\n      - name: id\n        tests:\n          - uniq\n          - accepted_values:\n              vals: [1]\n  - name: orders_typo\n    description: x\n  - name: b\n    config:\n      materialized: tabel\n",
            ),
            ("models/bad.yml", "models:\n  - name: a\n    columns: 3\n"),
            ("models/broken.yaml", "models: [\n"),
        ],
        &[
            "models/bad.yml:3:14: invalid YAML: models[0].columns: invalid type: integer `3`, expected a sequence",
            "models/broken.yaml:2:1: invalid YAML: did not find expected node content",
            "models/props.yml:7:13: unknown generic test 'uniq'; did you mean 'unique'?",
            "models/props.yml:8:13: test 'accepted_values' needs the argument 'values'",
            "models/props.yml:10:5: properties for unknown model 'orders_typo'; there is no models/**/<name>.sql for it",
            "models/props.yml:14:7: unknown materialization 'tabel'; expected one of view, table, incremental, ephemeral",
        ],
    );
}

#[test]
fn test_problems() {
    assert_errors(
        &[
            ("models/a.sql", "select 1 as id"),
            (
                "models/props.yml",
                "models:\n  - name: a\n    tests:\n      - unique\n      - not_null:\n          column_name: id\n    columns:\n      - name: id\n        tests:\n          - relationships:\n              to: ref('nope')\n              field: id\n          - not_null:\n              severity: fatal\n          - dbt_utils.expression_is_true:\n              expression: id > 0\n",
            ),
            ("tests/t.sql", "select * from {{ ref('a') }};\nselect 1"),
        ],
        &[
            "models/props.yml:4:9: test 'unique' at model level needs `column_name:`",
            "models/props.yml:10:13: relationships test: unknown model 'nope' in to:",
            "models/props.yml:13:13: severity must be 'warn' or 'error', not 'fatal'",
            "models/props.yml:15:13: unknown generic test 'dbt_utils.expression_is_true'; walden's generic tests are unique, not_null, accepted_values, relationships",
            "tests/t.sql:2:1: the test renders to 2 statements (the second starts with SELECT); a model is exactly one SELECT",
        ],
    );
}

#[test]
fn project_file_problems() {
    assert_errors(
        &[
            (
                "walden_project.yml",
                "name: p\nmodel-paths: [\"transform\"]\nmodels:\n  p:\n    +materialized: tables\n    staging:\n      materialized: 3\n",
            ),
            ("models/a.sql", "select 1"),
        ],
        &[
            "walden_project.yml:2:1: model path 'transform' is not a folder",
            "walden_project.yml:5:5: unknown materialization 'tables'; expected one of view, table, incremental, ephemeral (under models:.p)",
            "walden_project.yml:7:7: materialized must be a string, not a number (under models:.p.staging)",
        ],
    );
    assert_errors(
        &[("walden_project.yml", "name: [1]\n")],
        &["walden_project.yml:1:7: invalid YAML: name: invalid type: sequence, expected a string"],
    );
    assert_errors(
        &[("walden_project.yml", "name: p\nvars: {a: 1\n")],
        &["walden_project.yml:3:1: invalid YAML: did not find expected ',' or '}'"],
    );
    let got = errors(&[("README.md", "nothing")]);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with(
            "walden_project.yml:1:1: no walden_project.yml, dbt_project.yml or models/ folder in "
        ),
        "{got:?}"
    );
}

#[test]
fn a_model_built_over_a_source_table_is_refused() {
    assert_errors(
        &[
            (
                "models/sources.yml",
                "sources:\n  - name: shop\n    schema: public\n    tables:\n      - name: orders\n",
            ),
            (
                "models/public/orders.sql",
                "select * from {{ source('shop', 'orders') }}",
            ),
        ],
        &[
            "models/public/orders.sql:1:1: model 'orders' would be built as public.orders, which is already source shop.orders (models/sources.yml); set a different alias or schema",
        ],
    );
}

#[test]
fn freshness_and_source_problems() {
    assert_errors(
        &[
            ("models/a.sql", "select 1"),
            (
                "models/s.yml",
                "sources:\n  - name: s\n    freshness:\n      warn_after: {count: 1, period: fortnight}\n    tables:\n      - name: t\n        freshness:\n          warn_afte: {count: 1, period: hour}\n  - name: s\n    tables: []\n",
            ),
        ],
        &[
            "models/s.yml:3:5: freshness warn_after period must be minute, hour or day, not Some(\"fortnight\")",
            "models/s.yml:7:9: freshness has no key 'warn_afte' (expected warn_after, error_after, filter)",
            "models/s.yml:9:1: source 's' is declared twice: also in models/s.yml",
        ],
    );
}
