//! The build pass: a model's or test's SQL with every dependency resolved by the caller.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::config::Materialized;
use crate::data_tests::{DataTest, TestKind};
use crate::error::{Diagnostic, Error, close_names};
use crate::graph::NodeId;
use crate::project::{Model, Project, SourceTable, check_statement};
use crate::sql;
use crate::template::{self, DepKey, Globals, Pass, quote_ident};

/// A relation a template names, handed to [`RenderContext::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Relation {
    /// `ref('<model>')`: another model.
    Model {
        /// The model's name.
        model: String,
        /// Its namespace.
        namespace: String,
        /// Its table name (alias or name).
        identifier: String,
        /// Whether it is ephemeral (not built). [`Project::render_with_ephemerals`] never
        /// passes an ephemeral model to the resolver.
        ephemeral: bool,
    },
    /// `{{ this }}`: the model being rendered (for incremental models: its existing table).
    This {
        /// The model's name.
        model: String,
        /// Its namespace.
        namespace: String,
        /// Its table name.
        identifier: String,
    },
    /// `source('<source>', '<table>')`.
    Source {
        /// The source name.
        source: String,
        /// The table name in the source.
        table: String,
        /// The lake namespace (the source's `schema`).
        namespace: String,
        /// The lake table (`identifier`, else the table name).
        identifier: String,
    },
}

impl Relation {
    /// The lake namespace.
    pub fn namespace(&self) -> &str {
        match self {
            Relation::Model { namespace, .. }
            | Relation::This { namespace, .. }
            | Relation::Source { namespace, .. } => namespace,
        }
    }

    /// The lake table name.
    pub fn identifier(&self) -> &str {
        match self {
            Relation::Model { identifier, .. }
            | Relation::This { identifier, .. }
            | Relation::Source { identifier, .. } => identifier,
        }
    }

    /// `"namespace"."identifier"`, quotes inside names doubled: the default resolution.
    pub fn quoted(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(self.namespace()),
            quote_ident(self.identifier())
        )
    }
}

/// What the build pass needs from the builder.
pub struct RenderContext<'a> {
    /// What `is_incremental()` returns: true when the model is incremental, its table
    /// exists and the build is not a full refresh.
    pub is_incremental: bool,
    /// The SQL text of a relation (`ref`, `source`, `this`), e.g. [`Relation::quoted`].
    /// Called once per distinct dependency of the rendered node.
    pub resolve: &'a dyn Fn(&Relation) -> String,
}

/// The common-table-expression name an ephemeral model gets in
/// [`Project::render_with_ephemerals`].
pub fn ephemeral_cte_name(model: &str) -> String {
    format!("__walden_ephemeral_{model}")
}

impl Project {
    /// Enabled models by name.
    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
    }

    /// The enabled model `name`.
    pub fn model(&self, name: &str) -> Result<&Model, Error> {
        self.models
            .get(name)
            .ok_or_else(|| self.unknown("model", name, self.models.keys()))
    }

    /// Disabled models by name (not in the graph).
    pub fn disabled_models(&self) -> impl Iterator<Item = &Model> {
        self.disabled.values()
    }

    /// Declared source tables by (source, table).
    pub fn sources(&self) -> impl Iterator<Item = &SourceTable> {
        self.sources.values()
    }

    /// The source table `source.table`.
    pub fn source(&self, source: &str, table: &str) -> Option<&SourceTable> {
        self.sources.get(&(source.to_string(), table.to_string()))
    }

    /// Enabled data tests by name.
    pub fn tests(&self) -> impl Iterator<Item = &DataTest> {
        self.tests.values()
    }

    /// The test `name`.
    pub fn test(&self, name: &str) -> Result<&DataTest, Error> {
        self.tests
            .get(name)
            .ok_or_else(|| self.unknown("test", name, self.tests.keys()))
    }

    /// Every enabled model (ephemeral ones included) in dependency order, ties by name.
    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// The direct dependencies of a node (models, sources), sorted.
    pub fn parents(&self, node: &NodeId) -> Vec<NodeId> {
        self.graph
            .parents
            .get(node)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The nodes depending directly on `node` (models, tests), sorted.
    pub fn children(&self, node: &NodeId) -> Vec<NodeId> {
        self.graph
            .children
            .get(node)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every node `node` depends on, transitively (sorted).
    pub fn ancestors(&self, node: &NodeId) -> Vec<NodeId> {
        self.graph.ancestors(node, None).into_iter().collect()
    }

    /// Every node depending on `node`, transitively (sorted). A builder skips these when
    /// `node` fails.
    pub fn descendants(&self, node: &NodeId) -> Vec<NodeId> {
        self.graph.descendants(node, None).into_iter().collect()
    }

    fn unknown<'a>(
        &self,
        kind: &'static str,
        name: &str,
        names: impl Iterator<Item = &'a String>,
    ) -> Error {
        Error::Unknown {
            kind,
            name: name.to_string(),
            suggestions: close_names(name, names.map(String::as_str)),
        }
    }

    /// The relation `ref(model)` names.
    pub fn model_relation(&self, model: &Model) -> Relation {
        Relation::Model {
            model: model.name.clone(),
            namespace: model.namespace.clone(),
            identifier: model.identifier().to_string(),
            ephemeral: model.is_ephemeral(),
        }
    }

    /// The relation `source(s, t)` names.
    pub fn source_relation(&self, s: &SourceTable) -> Relation {
        Relation::Source {
            source: s.source.clone(),
            table: s.name.clone(),
            namespace: s.namespace.clone(),
            identifier: s.identifier.clone(),
        }
    }

    fn relation_of(&self, node: &NodeId) -> Option<Relation> {
        match node {
            NodeId::Model(m) => self.models.get(m).map(|m| self.model_relation(m)),
            NodeId::Source(s, t) => self.source(s, t).map(|s| self.source_relation(s)),
            NodeId::Test(_) => None,
        }
    }

    /// Renders a template in the build pass with `resolve` for its dependencies.
    fn build(
        &self,
        file: &Path,
        raw: &str,
        deps: &[NodeId],
        this: Option<Relation>,
        is_incremental: bool,
        resolve: &dyn Fn(&Relation) -> String,
    ) -> Result<String, Error> {
        let mut relations = HashMap::new();
        for d in deps {
            let Some(rel) = self.relation_of(d) else {
                continue;
            };
            let key = match d {
                NodeId::Model(m) => DepKey::Model(m.clone()),
                NodeId::Source(s, t) => DepKey::Source(s.clone(), t.clone()),
                NodeId::Test(_) => continue,
            };
            relations.insert(key, resolve(&rel));
        }
        let this = this
            .map(|t| resolve(&t))
            .unwrap_or_else(|| "__walden_no_this".to_string());
        let globals = Globals {
            project: &self.name,
            vars: &self.vars,
            env: self.env.as_ref(),
        };
        let (sql, _) = template::render(
            file,
            raw,
            Pass::Build {
                relations,
                this,
                is_incremental,
            },
            &globals,
        )?;
        let stmt = check_statement(file, raw, &sql)?;
        Ok(sql[stmt.start..stmt.end].to_string())
    }

    /// The model's SQL (one query, without a trailing semicolon or leading comments) with
    /// `ref`, `source` and `this` resolved by `ctx.resolve`; ephemeral models are passed
    /// to the resolver as `Relation::Model { ephemeral: true, .. }`.
    ///
    /// Errors: an unknown model; a template error of the build pass (a `ref` only
    /// computed in the incremental branch, an `env_var` gone since loading, a second
    /// statement in the incremental branch).
    pub fn render(&self, model: &str, ctx: &RenderContext<'_>) -> Result<String, Error> {
        let m = self.model(model)?;
        let this = Relation::This {
            model: m.name.clone(),
            namespace: m.namespace.clone(),
            identifier: m.identifier().to_string(),
        };
        self.build(
            &m.path,
            &m.raw_sql,
            &m.depends_on(),
            Some(this),
            ctx.is_incremental,
            ctx.resolve,
        )
    }

    /// The model's SQL with its ephemeral dependencies inlined: every ephemeral model
    /// reached through ephemeral refs (transitively) becomes one common table expression
    /// `"__walden_ephemeral_<name>" AS (<its SQL>)`, dependencies first, each once however
    /// often it is referenced, and every `ref` to it renders as that CTE name. The CTEs are
    /// merged into the model's own `WITH [RECURSIVE]` list or put in a new `WITH` before
    /// it. Ephemeral models render with `is_incremental()` false; the resolver is never
    /// called for an ephemeral model. Rendering an ephemeral model itself inlines its own
    /// ephemeral dependencies the same way.
    pub fn render_with_ephemerals(
        &self,
        model: &str,
        ctx: &RenderContext<'_>,
    ) -> Result<String, Error> {
        let m = self.model(model)?;
        let this = Relation::This {
            model: m.name.clone(),
            namespace: m.namespace.clone(),
            identifier: m.identifier().to_string(),
        };
        self.with_ephemerals(&m.depends_on(), ctx, |resolve| {
            self.build(
                &m.path,
                &m.raw_sql,
                &m.depends_on(),
                Some(this.clone()),
                ctx.is_incremental,
                resolve,
            )
        })
    }

    /// Runs `body` with a resolver mapping ephemeral models to CTE names, then prefixes the
    /// CTEs of every ephemeral model reached from `deps`.
    fn with_ephemerals(
        &self,
        deps: &[NodeId],
        ctx: &RenderContext<'_>,
        body: impl FnOnce(&dyn Fn(&Relation) -> String) -> Result<String, Error>,
    ) -> Result<String, Error> {
        let resolve = |r: &Relation| match r {
            Relation::Model {
                model,
                ephemeral: true,
                ..
            } => quote_ident(&ephemeral_cte_name(model)),
            other => (ctx.resolve)(other),
        };
        // ephemeral models reached through ephemeral models, dependencies first
        let mut ordered: Vec<&Model> = Vec::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        fn visit<'p>(
            p: &'p Project,
            deps: &[NodeId],
            seen: &mut BTreeSet<&'p str>,
            out: &mut Vec<&'p Model>,
        ) {
            for d in deps {
                if let NodeId::Model(name) = d
                    && let Some(m) = p.models.get(name)
                    && m.is_ephemeral()
                    && seen.insert(m.name.as_str())
                {
                    visit(p, &m.depends_on(), seen, out);
                    out.push(m);
                }
            }
        }
        visit(self, deps, &mut seen, &mut ordered);
        let main = body(&resolve)?;
        if ordered.is_empty() {
            return Ok(main);
        }
        let mut ctes = Vec::new();
        for e in ordered {
            let this = Relation::Model {
                model: e.name.clone(),
                namespace: e.namespace.clone(),
                identifier: e.identifier().to_string(),
                ephemeral: true,
            };
            let sql = self.build(
                &e.path,
                &e.raw_sql,
                &e.depends_on(),
                Some(this),
                false,
                &resolve,
            )?;
            ctes.push(format!(
                "{} AS (\n{sql}\n)",
                quote_ident(&ephemeral_cte_name(&e.name))
            ));
        }
        let ctes = ctes.join(",\n");
        let toks = sql::tokens(&main);
        let word = |i: usize| toks.get(i).map(|(s, e)| main[*s..*e].to_ascii_uppercase());
        Ok(if word(0).as_deref() == Some("WITH") {
            let after = if word(1).as_deref() == Some("RECURSIVE") {
                toks[1].1
            } else {
                toks[0].1
            };
            format!("{} {ctes},\n{}", &main[..after], main[after..].trim_start())
        } else {
            format!("WITH {ctes}\n{main}")
        })
    }

    /// The test's query returning failing rows, dependencies resolved by `ctx.resolve`
    /// (ephemeral models inlined as in [`Project::render_with_ephemerals`];
    /// `is_incremental()` is false in singular tests whatever `ctx` says).
    pub fn compile_test(&self, test: &str, ctx: &RenderContext<'_>) -> Result<String, Error> {
        let t = self.test(test)?;
        match &t.kind {
            TestKind::Singular { raw_sql } => self.with_ephemerals(&t.depends_on, ctx, |resolve| {
                self.build(&t.path, raw_sql, &t.depends_on, None, false, resolve)
            }),
            TestKind::Generic(g) => self.with_ephemerals(&t.depends_on, ctx, |resolve| {
                let attached = t
                    .attached_to
                    .as_ref()
                    .and_then(|n| self.relation_of(n))
                    .ok_or_else(|| {
                        Diagnostic::new(&t.path, t.line, 1, "the tested node is gone")
                    })?;
                let to = match g {
                    crate::GenericTest::Relationships { to, .. } => {
                        self.relation_of(to).map(|r| resolve(&r))
                    }
                    _ => None,
                };
                Ok(g.sql(
                    &resolve(&attached),
                    to.as_deref(),
                    t.config.where_clause.as_deref(),
                ))
            }),
        }
    }

    /// Whether `model` is built (not ephemeral): a convenience for builders.
    pub fn is_built(&self, model: &str) -> bool {
        self.models
            .get(model)
            .is_some_and(|m| m.config.materialized != Materialized::Ephemeral)
    }
}
