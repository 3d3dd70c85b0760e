//! Node selection with dbt's syntax, parsed by hand (the grammar is a few prefix/suffix
//! operators around `method:value`; a parser generator would be more code than the parser).
//!
//! - a space separates a union, a comma an intersection: `tag:a,path:marts stg_orders`;
//! - an atom is `[@][N]+<method:value|name>+[N]`: `+x` ancestors, `x+` descendants, a number
//!   bounds the depth, `@x` is x, its descendants and all their ancestors;
//! - methods: a bare name (models and tests, `*` globs; one containing `/` or ending in
//!   `.sql` is a path), `tag:`, `path:`, `namespace:` (alias `schema:`), `config.<key>:`,
//!   `source:<source>` / `source:<source>.<table>`, `test_name:`.

use std::collections::BTreeSet;

use crate::error::{Error, close_names};
use crate::graph::NodeId;
use crate::project::Project;

/// What to build and test.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// Selected models to build, ephemeral ones left out, in dependency order.
    pub models: Vec<String>,
    /// Tests to run, by name, sorted: every test attached to a selected model or source
    /// table, every test whose dependencies are all selected models/sources, and tests
    /// selected by name or tag; minus the excluded ones.
    pub tests: Vec<String>,
    /// Selected source tables (not built; freshness checks use them).
    pub sources: Vec<(String, String)>,
}

#[derive(Debug)]
struct Atom<'a> {
    at: bool,
    parents: Option<Option<usize>>,
    children: Option<Option<usize>>,
    method: &'a str,
    value: &'a str,
}

fn parse_atom(text: &str) -> Result<Atom<'_>, String> {
    let mut rest = text;
    let at = rest.starts_with('@');
    if at {
        rest = &rest[1..];
    }
    let mut parents = None;
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    if rest[digits..].starts_with('+') {
        parents = Some(if digits == 0 {
            None
        } else {
            Some(
                rest[..digits]
                    .parse()
                    .map_err(|_| "depth too large".to_string())?,
            )
        });
        rest = &rest[digits + 1..];
    } else if digits > 0 && rest[digits..].is_empty() {
        // a model named by digits only: leave it
    }
    let mut children = None;
    let tail = rest.len() - rest.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let before_digits = &rest[..rest.len() - tail];
    if let Some(body) = before_digits.strip_suffix('+') {
        let n = &rest[rest.len() - tail..];
        children = Some(if n.is_empty() {
            None
        } else {
            Some(n.parse().map_err(|_| "depth too large".to_string())?)
        });
        rest = body;
    }
    if at && (parents.is_some() || children.is_some()) {
        return Err("'@' cannot be combined with '+'".into());
    }
    if rest.is_empty() {
        return Err("empty selector".into());
    }
    if rest.contains('+') || rest.contains('@') {
        return Err("'+' and '@' go only before or after a selector".into());
    }
    let (method, value) = match rest.split_once(':') {
        Some((m, v)) => (m, v),
        None if rest.contains('/') || rest.ends_with(".sql") => ("path", rest),
        None => ("", rest),
    };
    if value.is_empty() {
        return Err(format!("'{method}:' needs a value"));
    }
    Ok(Atom {
        at,
        parents,
        children,
        method,
        value,
    })
}

/// `*` matches any run of characters; everything else literally.
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            if !tail.contains('*') {
                return rest.ends_with(tail) && rest.len() >= tail.len();
            }
            (0..=rest.len())
                .filter(|i| rest.is_char_boundary(*i))
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

const METHODS: &str = "a name, tag:, path:, namespace:, config.<key>:, source:, test_name:";

impl Project {
    /// The nodes an atom's method picks, before graph operators.
    fn atom_base(&self, a: &Atom<'_>) -> Result<BTreeSet<NodeId>, String> {
        let v = a.value;
        let mut out = BTreeSet::new();
        let models = self.models.values();
        match a.method {
            "" => {
                out.extend(
                    self.models
                        .keys()
                        .filter(|n| glob(v, n))
                        .map(|n| NodeId::Model(n.clone())),
                );
                out.extend(
                    self.tests
                        .keys()
                        .filter(|n| glob(v, n))
                        .map(|n| NodeId::Test(n.clone())),
                );
            }
            "test_name" => {
                out.extend(
                    self.tests
                        .values()
                        .filter(|t| glob(v, t.kind_name()))
                        .map(|t| NodeId::Test(t.name.clone())),
                );
            }
            "tag" => {
                out.extend(
                    models
                        .filter(|m| m.config.tags.iter().any(|t| glob(v, t)))
                        .map(|m| NodeId::Model(m.name.clone())),
                );
                out.extend(
                    self.tests
                        .values()
                        .filter(|t| t.config.tags.iter().any(|x| glob(v, x)))
                        .map(|t| NodeId::Test(t.name.clone())),
                );
            }
            "namespace" | "schema" => out.extend(
                models
                    .filter(|m| glob(v, &m.namespace))
                    .map(|m| NodeId::Model(m.name.clone())),
            ),
            "path" => {
                let v = v.trim_end_matches('/');
                let under =
                    |p: &str| glob(v, p) || p.strip_prefix(v).is_some_and(|r| r.starts_with('/'));
                for m in models {
                    let full = m.path.to_string_lossy().replace('\\', "/");
                    let inner = format!("{}.sql", m.fqn[1..].join("/"));
                    if under(&full) || under(&inner) {
                        out.insert(NodeId::Model(m.name.clone()));
                    }
                }
                for t in self.tests.values().filter(|t| t.attached_to.is_none()) {
                    if under(&t.path.to_string_lossy().replace('\\', "/")) {
                        out.insert(NodeId::Test(t.name.clone()));
                    }
                }
            }
            "source" => {
                let (s, t) = v.split_once('.').unwrap_or((v, "*"));
                out.extend(
                    self.sources
                        .keys()
                        .filter(|(a, b)| glob(s, a) && glob(t, b))
                        .map(|(a, b)| NodeId::Source(a.clone(), b.clone())),
                );
            }
            m if m.starts_with("config.") => {
                let key = &m["config.".len()..];
                for model in models {
                    let c = &model.config;
                    let values: Vec<String> = match key {
                        "materialized" => vec![c.materialized.as_str().into()],
                        "schema" => c.schema.iter().cloned().collect(),
                        "alias" => c.alias.iter().cloned().collect(),
                        "tags" => c.tags.clone(),
                        "unique_key" => c.unique_key.clone(),
                        "incremental_strategy" => c
                            .incremental_strategy
                            .iter()
                            .map(|s| s.as_str().to_string())
                            .collect(),
                        "enabled" => vec![c.enabled.to_string()],
                        "schedule" => c.schedule.iter().cloned().collect(),
                        other => {
                            return Err(format!(
                                "unknown config key '{other}'; expected one of {}",
                                crate::config::MODEL_KEYS.join(", ")
                            ));
                        }
                    };
                    if values.iter().any(|x| glob(v, x)) {
                        out.insert(NodeId::Model(model.name.clone()));
                    }
                }
            }
            other => {
                return Err(format!(
                    "unknown selector method '{other}:'; expected {METHODS}"
                ));
            }
        }
        Ok(out)
    }

    fn no_match(&self, a: &Atom<'_>) -> String {
        let candidates: Vec<String> = match a.method {
            "" => self
                .models
                .keys()
                .chain(self.tests.keys())
                .cloned()
                .collect(),
            "tag" => self
                .models
                .values()
                .flat_map(|m| m.config.tags.clone())
                .chain(self.tests.values().flat_map(|t| t.config.tags.clone()))
                .collect(),
            "namespace" | "schema" => self.models.values().map(|m| m.namespace.clone()).collect(),
            "source" => self
                .sources
                .keys()
                .flat_map(|(s, t)| [s.clone(), format!("{s}.{t}")])
                .collect(),
            "path" => self
                .models
                .values()
                .map(|m| m.path.to_string_lossy().into_owned())
                .collect(),
            _ => Vec::new(),
        };
        let unique: BTreeSet<&str> = candidates.iter().map(String::as_str).collect();
        let what = if a.method.is_empty() {
            "no model or test is named".to_string()
        } else {
            format!("nothing matches {}:", a.method)
        };
        let close = close_names(a.value, unique.iter().copied());
        if close.is_empty() {
            format!("{what} '{}'", a.value)
        } else {
            format!("{what} '{}'{}", a.value, crate::error::did_you_mean(&close))
        }
    }

    /// One atom with its graph operators; tests reached through the graph are left out.
    /// With `strict`, an atom matching nothing is an error.
    fn eval_atom(&self, a: &Atom<'_>, strict: bool) -> Result<BTreeSet<NodeId>, String> {
        let base = self.atom_base(a)?;
        if base.is_empty() && strict {
            return Err(self.no_match(a));
        }
        let mut out = base.clone();
        for n in &base {
            if let Some(depth) = a.parents {
                out.extend(self.graph.ancestors(n, depth));
            }
            if let Some(depth) = a.children {
                out.extend(
                    self.graph
                        .descendants(n, depth)
                        .into_iter()
                        .filter(|d| !matches!(d, NodeId::Test(_))),
                );
            }
            if a.at {
                let down: BTreeSet<NodeId> = self
                    .graph
                    .descendants(n, None)
                    .into_iter()
                    .filter(|d| !matches!(d, NodeId::Test(_)))
                    .collect();
                for d in down.iter().chain(std::iter::once(n)) {
                    out.extend(self.graph.ancestors(d, None));
                }
                out.extend(down);
            }
        }
        Ok(out)
    }

    /// Evaluates selector arguments: each argument's space-separated parts are a union,
    /// each part's comma-separated atoms an intersection. With `strict`, an atom matching
    /// nothing is an error.
    fn eval(&self, args: &[&str], strict: bool) -> Result<BTreeSet<NodeId>, Error> {
        let mut out = BTreeSet::new();
        for arg in args {
            for part in arg.split_whitespace() {
                let mut acc: Option<BTreeSet<NodeId>> = None;
                for atom_text in part.split(',') {
                    let sel_err = |message: String| Error::Selection {
                        selector: atom_text.to_string(),
                        message,
                    };
                    let atom = parse_atom(atom_text).map_err(sel_err)?;
                    let set = self.eval_atom(&atom, strict).map_err(sel_err)?;
                    acc = Some(match acc {
                        None => set,
                        Some(prev) => prev.intersection(&set).cloned().collect(),
                    });
                }
                out.extend(acc.unwrap_or_default());
            }
        }
        Ok(out)
    }

    /// Selects models, tests and sources with dbt's syntax (see the module docs).
    ///
    /// `select` empty means every model. Each atom of `select` must match something
    /// (else the error names close names); atoms of `exclude` that match nothing exclude
    /// nothing, but malformed ones are errors. Excluding a model also drops the tests
    /// attached to it.
    pub fn select(&self, select: &[&str], exclude: &[&str]) -> Result<Selection, Error> {
        let mut chosen: BTreeSet<NodeId> = if select.iter().all(|s| s.trim().is_empty()) {
            self.models
                .keys()
                .map(|m| NodeId::Model(m.clone()))
                .chain(
                    self.sources
                        .keys()
                        .map(|(s, t)| NodeId::Source(s.clone(), t.clone())),
                )
                .collect()
        } else {
            self.eval(select, true)?
        };
        let excluded = self.eval(exclude, false)?;
        chosen.retain(|n| !excluded.contains(n));
        let mut tests: BTreeSet<String> = chosen
            .iter()
            .filter_map(|n| {
                if let NodeId::Test(t) = n {
                    Some(t.clone())
                } else {
                    None
                }
            })
            .collect();
        for t in self.tests.values() {
            let attached = t.attached_to.as_ref().is_some_and(|a| chosen.contains(a));
            let all_deps =
                !t.depends_on.is_empty() && t.depends_on.iter().all(|d| chosen.contains(d));
            if attached || all_deps {
                tests.insert(t.name.clone());
            }
        }
        tests.retain(|t| !excluded.contains(&NodeId::Test(t.clone())));
        // a test reading an excluded model does not run
        tests.retain(|t| {
            self.tests[t]
                .depends_on
                .iter()
                .all(|d| !excluded.contains(d))
        });
        Ok(Selection {
            models: self
                .order
                .iter()
                .filter(|m| chosen.contains(&NodeId::Model((*m).clone())) && self.is_built(m))
                .cloned()
                .collect(),
            tests: tests.into_iter().collect(),
            sources: chosen
                .iter()
                .filter_map(|n| {
                    if let NodeId::Source(s, t) = n {
                        Some((s.clone(), t.clone()))
                    } else {
                        None
                    }
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoms_parse() {
        let a = parse_atom("2+stg_orders+1").unwrap();
        assert_eq!(
            (a.parents, a.children, a.method, a.value),
            (Some(Some(2)), Some(Some(1)), "", "stg_orders")
        );
        let a = parse_atom("+tag:nightly").unwrap();
        assert_eq!(
            (a.parents, a.children, a.method, a.value),
            (Some(None), None, "tag", "nightly")
        );
        let a = parse_atom("@config.materialized:incremental").unwrap();
        assert!(a.at);
        assert_eq!(a.method, "config.materialized");
        let a = parse_atom("models/staging").unwrap();
        assert_eq!((a.method, a.value), ("path", "models/staging"));
        let a = parse_atom("source:shop.orders+").unwrap();
        assert_eq!(
            (a.method, a.value, a.children),
            ("source", "shop.orders", Some(None))
        );
        assert!(parse_atom("@a+").is_err());
        assert!(parse_atom("a+b").is_err());
        assert!(parse_atom("tag:").is_err());
        assert!(parse_atom("+").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob("stg_*", "stg_orders"));
        assert!(glob("*_orders", "stg_orders"));
        assert!(glob("s*o*s", "stg_orders"));
        assert!(!glob("stg_*", "fct_orders"));
        assert!(glob("x", "x") && !glob("x", "xy"));
    }
}
