//! A dbt-shaped `manifest.json`: enough of dbt's manifest (v12 layout) for tools that
//! read nodes, sources, dependencies and docs.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value as Json, json};

use crate::config::Severity;
use crate::data_tests::{DataTest, GenericTest, TestKind};
use crate::graph::NodeId;
use crate::project::{Column, Freshness, Model, Project, SourceTable};

fn columns(cols: &[Column]) -> Json {
    let mut map = Map::new();
    for c in cols {
        map.insert(
            c.name.clone(),
            json!({"name": c.name, "description": c.description, "data_type": c.data_type, "quote": c.quote, "meta": {}, "tags": []}),
        );
    }
    Json::Object(map)
}

fn checksum(text: &str) -> Json {
    json!({"name": "xxh3_128", "checksum": format!("{:032x}", twox_hash::XxHash3_128::oneshot(text.as_bytes()))})
}

fn freshness(f: &Option<Freshness>) -> Json {
    match f {
        None => Json::Null,
        Some(f) => {
            json!({"warn_after": f.warn_after, "error_after": f.error_after, "filter": f.filter})
        }
    }
}

impl Project {
    fn lookup<'a>(
        &self,
        compiled: &'a HashMap<String, String>,
        node: &NodeId,
    ) -> Option<&'a String> {
        compiled
            .get(&node.unique_id(&self.name))
            .or_else(|| match node {
                NodeId::Model(n) | NodeId::Test(n) => compiled.get(n),
                NodeId::Source(..) => None,
            })
    }

    fn ids(&self, nodes: impl IntoIterator<Item = NodeId>) -> Vec<String> {
        nodes.into_iter().map(|n| n.unique_id(&self.name)).collect()
    }

    fn model_node(&self, m: &Model, compiled: &HashMap<String, String>) -> Json {
        let id = NodeId::Model(m.name.clone());
        let code = self.lookup(compiled, &id);
        let c = &m.config;
        json!({
            "unique_id": id.unique_id(&self.name),
            "name": m.name,
            "resource_type": "model",
            "package_name": self.name,
            "path": format!("{}.sql", m.fqn[1..].join("/")),
            "original_file_path": m.path.to_string_lossy().replace('\\', "/"),
            "patch_path": m.properties_path.as_ref().map(|p| format!("{}://{}", self.name, p.to_string_lossy().replace('\\', "/"))),
            "language": "sql",
            "raw_code": m.raw_sql,
            "compiled": code.is_some(),
            "compiled_code": code,
            "checksum": checksum(&m.raw_sql),
            "config": {
                "enabled": c.enabled,
                "materialized": c.materialized.as_str(),
                "unique_key": match c.unique_key.as_slice() { [] => Json::Null, [one] => json!(one), many => json!(many) },
                "incremental_strategy": c.incremental_strategy.map(|s| s.as_str()),
                "tags": c.tags,
                "schema": c.schema,
                "alias": c.alias,
                "schedule": c.schedule,
            },
            "depends_on": {"nodes": self.ids(m.depends_on()), "macros": []},
            "refs": m.refs.iter().map(|r| json!({"name": r, "package": null, "version": null})).collect::<Vec<_>>(),
            "sources": m.sources.iter().map(|(s, t)| json!([s, t])).collect::<Vec<_>>(),
            "description": m.description,
            "columns": columns(&m.columns),
            "tags": c.tags,
            "database": null,
            "schema": m.namespace,
            "alias": m.identifier(),
            "relation_name": if m.is_ephemeral() { Json::Null } else { json!(self.model_relation(m).quoted()) },
            "fqn": m.fqn,
            "meta": {},
        })
    }

    fn test_node(&self, t: &DataTest, compiled: &HashMap<String, String>) -> Json {
        let id = NodeId::Test(t.name.clone());
        let code = self.lookup(compiled, &id);
        let (raw, metadata, column) = match &t.kind {
            TestKind::Singular { raw_sql } => (raw_sql.clone(), Json::Null, Json::Null),
            TestKind::Generic(g) => {
                let mut kwargs = Map::new();
                kwargs.insert("column_name".into(), json!(g.column()));
                match g {
                    GenericTest::AcceptedValues { values, quote, .. } => {
                        kwargs.insert("values".into(), json!(values));
                        kwargs.insert("quote".into(), json!(quote));
                    }
                    GenericTest::Relationships { to, field, .. } => {
                        let to = match to {
                            NodeId::Source(s, tb) => format!("source('{s}', '{tb}')"),
                            other => format!("ref('{other}')"),
                        };
                        kwargs.insert("to".into(), json!(to));
                        kwargs.insert("field".into(), json!(field));
                    }
                    _ => {}
                }
                let raw = format!(
                    "{{{{ test_{}(**_dbt_generic_test_kwargs) }}}}",
                    g.test_name()
                );
                (
                    raw,
                    json!({"name": g.test_name(), "kwargs": kwargs, "namespace": null}),
                    json!(g.column()),
                )
            }
        };
        let mut fqn = vec![self.name.clone()];
        if let Some(NodeId::Model(m)) = &t.attached_to
            && let Some(model) = self.models.get(m)
        {
            fqn.extend(model.fqn[1..model.fqn.len() - 1].iter().cloned());
        }
        fqn.push(t.name.clone());
        json!({
            "unique_id": id.unique_id(&self.name),
            "name": t.name,
            "resource_type": "test",
            "package_name": self.name,
            "original_file_path": t.path.to_string_lossy().replace('\\', "/"),
            "language": "sql",
            "raw_code": raw,
            "compiled": code.is_some(),
            "compiled_code": code,
            "checksum": checksum(&raw),
            "test_metadata": metadata,
            "column_name": column,
            "attached_node": t.attached_to.as_ref().map(|n| n.unique_id(&self.name)),
            "config": {
                "enabled": t.config.enabled,
                "severity": match t.config.severity { Severity::Error => "ERROR", Severity::Warn => "WARN" },
                "where": t.config.where_clause,
                "error_if": t.config.error_if.to_string(),
                "warn_if": t.config.warn_if.to_string(),
                "tags": t.config.tags,
            },
            "depends_on": {"nodes": self.ids(t.depends_on.iter().cloned()), "macros": []},
            "description": "",
            "columns": {},
            "tags": t.config.tags,
            "schema": null,
            "fqn": fqn,
            "meta": {},
        })
    }

    fn source_node(&self, s: &SourceTable) -> Json {
        json!({
            "unique_id": NodeId::Source(s.source.clone(), s.name.clone()).unique_id(&self.name),
            "name": s.name,
            "source_name": s.source,
            "resource_type": "source",
            "package_name": self.name,
            "original_file_path": s.path.to_string_lossy().replace('\\', "/"),
            "database": null,
            "schema": s.namespace,
            "identifier": s.identifier,
            "relation_name": self.source_relation(s).quoted(),
            "description": s.description,
            "source_description": s.source_description,
            "columns": columns(&s.columns),
            "loaded_at_field": s.loaded_at_field,
            "freshness": freshness(&s.freshness),
            "fqn": [self.name, s.source, s.name],
            "config": {"enabled": true},
            "tags": [],
            "meta": {},
        })
    }

    /// A dbt-shaped manifest of the project.
    ///
    /// `compiled` holds compiled SQL by unique id (`model.<project>.<name>`,
    /// `test.<project>.<name>`) or by plain name; nodes found there get `compiled_code`
    /// and `compiled: true`, others `compiled_code: null`. `extra`, if it is an object, is
    /// merged into `metadata` (e.g. `generated_at`, `invocation_id`; its keys win).
    ///
    /// Keys: `metadata`, `nodes` (models and tests), `sources`, `disabled`, `parent_map`,
    /// `child_map`, and dbt's other top-level maps empty. `parent_map`/`child_map` have an
    /// entry (possibly empty) for every node and source, with sorted unique ids.
    pub fn manifest(&self, compiled: &HashMap<String, String>, extra: Json) -> Json {
        let mut metadata = json!({
            "dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v12.json",
            "generator": "walden",
            "walden_version": env!("CARGO_PKG_VERSION"),
            "project_name": self.name,
            "adapter_type": "walden",
        });
        if let (Json::Object(meta), Json::Object(extra)) = (&mut metadata, extra) {
            meta.extend(extra);
        }
        let mut nodes = Map::new();
        for m in self.models.values() {
            nodes.insert(
                NodeId::Model(m.name.clone()).unique_id(&self.name),
                self.model_node(m, compiled),
            );
        }
        for t in self.tests.values() {
            nodes.insert(
                NodeId::Test(t.name.clone()).unique_id(&self.name),
                self.test_node(t, compiled),
            );
        }
        let mut sources = Map::new();
        for s in self.sources.values() {
            sources.insert(
                NodeId::Source(s.source.clone(), s.name.clone()).unique_id(&self.name),
                self.source_node(s),
            );
        }
        let mut disabled = Map::new();
        for m in self.disabled.values() {
            disabled.insert(
                NodeId::Model(m.name.clone()).unique_id(&self.name),
                json!([self.model_node(m, compiled)]),
            );
        }
        let map = |edges: &BTreeMap<NodeId, std::collections::BTreeSet<NodeId>>| -> Json {
            let mut out = Map::new();
            for (n, others) in edges {
                let mut ids = self.ids(others.iter().cloned());
                ids.sort();
                out.insert(n.unique_id(&self.name), json!(ids));
            }
            Json::Object(out)
        };
        json!({
            "metadata": metadata,
            "nodes": nodes,
            "sources": sources,
            "macros": {},
            "docs": {},
            "exposures": {},
            "metrics": {},
            "groups": {},
            "selectors": {},
            "disabled": disabled,
            "semantic_models": {},
            "saved_queries": {},
            "unit_tests": {},
            "parent_map": map(&self.graph.parents),
            "child_map": map(&self.graph.children),
            "group_map": {},
        })
    }
}
