//! Rendering model and test templates with minijinja: the dbt subset.
//!
//! One `Environment` per render (the functions capture that render's state; building one
//! is cheap next to a model build). No loader is set and the crate is built without
//! minijinja's `multi_template` feature, so `{% include %}`, `{% import %}` and
//! `{% extends %}` are syntax errors: a template cannot reach the file system. Undefined
//! values are errors (`UndefinedBehavior::Strict`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error as JinjaError, ErrorKind, UndefinedBehavior};
use serde_json::Value as Json;

use crate::config::{Applied, PartialConfig, TestConfig};
use crate::error::{Diagnostic, line_col, suggest};

/// Which `config()` keys a template may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConfigKind {
    Model,
    Test,
}

/// What a dependency resolves to in the build pass.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum DepKey {
    Model(String),
    Source(String, String),
}

/// The two passes.
pub(crate) enum Pass<'a> {
    /// Collect refs, sources and config; `ref` of a name not in `models` is an error.
    Parse {
        /// Every enabled-or-not model name of the project.
        all_models: &'a [String],
        /// Every `source.table` of the project.
        all_sources: &'a [String],
        config: ConfigKind,
    },
    /// Produce SQL: every dependency's text is given; any other is an error.
    Build {
        relations: HashMap<DepKey, String>,
        this: String,
        is_incremental: bool,
    },
}

/// What the template-wide values are: project name, vars, environment.
pub(crate) struct Globals<'a> {
    pub project: &'a str,
    pub vars: &'a BTreeMap<String, Json>,
    pub env: Option<&'a HashMap<String, String>>,
}

/// What the parse pass saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct Collected {
    /// Model names in call order (repeats kept).
    pub refs: Vec<String>,
    /// (source, table) in call order.
    pub sources: Vec<(String, String)>,
    /// Every `config()` key/value in call order.
    pub config: Vec<(String, Json)>,
    /// Keys walden ignores (a warning).
    pub ignored: Vec<String>,
}

/// Renders `source` (the template of `file`); returns the SQL and what it called.
pub(crate) fn render(
    file: &Path,
    source: &str,
    pass: Pass<'_>,
    globals: &Globals<'_>,
) -> Result<(String, Collected), Diagnostic> {
    let collected = Arc::new(Mutex::new(Collected::default()));
    let mut env = Environment::new();
    env.set_debug(true);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);

    let project = globals.project.to_string();
    let vars = Arc::new(globals.vars.clone());
    let environ = globals.env.cloned().map(Arc::new);

    // var(name, default)
    env.add_function("var", move |name: String, default: Option<Value>| -> Result<Value, JinjaError> {
        match vars.get(&name) {
            Some(v) => Ok(json_to_value(v)),
            None => default.ok_or_else(|| {
                fail(format!(
                    "var('{name}') is not set and has no default; set it under `vars:` in the project file or pass it with --vars"
                ))
            }),
        }
    });
    // env_var(name, default)
    env.add_function("env_var", move |name: String, default: Option<Value>| -> Result<Value, JinjaError> {
        let found = match &environ {
            Some(map) => map.get(&name).cloned(),
            None => std::env::var(&name).ok(),
        };
        match found {
            Some(v) => Ok(Value::from(v)),
            None => default.ok_or_else(|| fail(format!("env_var('{name}'): the environment variable is not set and no default is given"))),
        }
    });

    let (this, is_incremental) = match &pass {
        Pass::Parse { .. } => (quote_ident(&file_stem(file)), false),
        Pass::Build {
            this,
            is_incremental,
            ..
        } => (this.clone(), *is_incremental),
    };
    env.add_global("this", Value::from(this));
    env.add_function("is_incremental", move || is_incremental);

    match pass {
        Pass::Parse {
            all_models,
            all_sources,
            config,
        } => {
            // The closures must be 'static: the names are captured as owned sets.
            let model_set: Arc<std::collections::BTreeSet<String>> =
                Arc::new(all_models.iter().cloned().collect());
            let source_set: Arc<std::collections::BTreeSet<String>> =
                Arc::new(all_sources.iter().cloned().collect());
            let c = collected.clone();
            let p = project.clone();
            let ms = model_set.clone();
            env.add_function(
                "ref",
                move |args: Rest<Value>| -> Result<Value, JinjaError> {
                    let name = ref_target(&p, &args)?;
                    if !ms.contains(&name) {
                        let help = suggest(&name, ms.iter().map(String::as_str));
                        return Err(fail(format!(
                            "unknown model '{name}' in ref(){}",
                            help.map(|h| format!("; {h}")).unwrap_or_default()
                        )));
                    }
                    let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
                    c.refs.push(name.clone());
                    Ok(Value::from(quote_ident(&name)))
                },
            );
            let c = collected.clone();
            let ss = source_set.clone();
            env.add_function(
                "source",
                move |source: String, table: String| -> Result<Value, JinjaError> {
                    let key = format!("{source}.{table}");
                    if !ss.contains(&key) {
                        let help = suggest(&key, ss.iter().map(String::as_str));
                        return Err(fail(format!(
                            "unknown source table '{key}' in source(){}",
                            help.map(|h| format!("; {h}")).unwrap_or_else(|| {
                                "; declare it under `sources:` in a YAML file".into()
                            })
                        )));
                    }
                    let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
                    c.sources.push((source.clone(), table.clone()));
                    Ok(Value::from(format!(
                        "{}.{}",
                        quote_ident(&source),
                        quote_ident(&table)
                    )))
                },
            );
            let c = collected.clone();
            env.add_function(
                "config",
                move |kwargs: Kwargs| -> Result<Value, JinjaError> {
                    let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
                    let keys: Vec<String> = kwargs.args().map(str::to_string).collect();
                    let mut check = PartialConfig::default();
                    let mut test_check = TestConfig::default();
                    for key in keys {
                        let value: Value = kwargs.get(&key)?;
                        let json = value_to_json(&value);
                        let applied = match config {
                            ConfigKind::Model => check.set(&key, &json),
                            ConfigKind::Test => test_check.set(&key, &json),
                        }
                        .map_err(fail)?;
                        match applied {
                            Applied::Set => c.config.push((key, json)),
                            Applied::Ignored => c.ignored.push(key),
                        }
                    }
                    Ok(Value::from(""))
                },
            );
        }
        Pass::Build { relations, .. } => {
            let relations = Arc::new(relations);
            let r = relations.clone();
            let p = project.clone();
            env.add_function("ref", move |args: Rest<Value>| -> Result<Value, JinjaError> {
                let name = ref_target(&p, &args)?;
                r.get(&DepKey::Model(name.clone())).map(|s| Value::from(s.as_str())).ok_or_else(|| {
                    fail(format!(
                        "ref('{name}') was not seen when the project was loaded (computed in a branch the parse pass skipped); \
                         declare it with a comment `-- depends_on: {{{{ ref('{name}') }}}}`"
                    ))
                })
            });
            let r = relations;
            env.add_function("source", move |source: String, table: String| -> Result<Value, JinjaError> {
                r.get(&DepKey::Source(source.clone(), table.clone())).map(|s| Value::from(s.as_str())).ok_or_else(|| {
                    fail(format!(
                        "source('{source}', '{table}') was not seen when the project was loaded; \
                         declare it with a comment `-- depends_on: {{{{ source('{source}', '{table}') }}}}`"
                    ))
                })
            });
            env.add_function("config", |_kwargs: Kwargs| Value::from(""));
        }
    }

    let name = file.to_string_lossy().replace('\\', "/");
    let rendered = env
        .template_from_named_str(&name, source)
        .and_then(|t| t.render(()))
        .map_err(|e| to_diagnostic(file, source, &e))?;
    let collected = collected.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok((rendered, collected))
}

fn fail(message: impl Into<String>) -> JinjaError {
    JinjaError::new(ErrorKind::InvalidOperation, message.into())
}

/// The model named by `ref('m')` or `ref('<this project>', 'm')`.
fn ref_target(project: &str, args: &[Value]) -> Result<String, JinjaError> {
    let strings: Option<Vec<&str>> = args.iter().map(Value::as_str).collect();
    match strings.as_deref() {
        Some([name]) => Ok((*name).to_string()),
        Some([package, name]) if *package == project => Ok((*name).to_string()),
        Some([package, _]) => Err(fail(format!(
            "ref('{package}', ...) names another package; walden has no packages, only this project ('{project}')"
        ))),
        _ if args.iter().any(Value::is_kwargs) => Err(fail(
            "ref() takes no keyword arguments (versions are not supported)",
        )),
        _ => Err(fail(
            "ref() takes a model name, or the project name and a model name, as strings",
        )),
    }
}

/// `"name"` with embedded quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn file_stem(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A minijinja error as a diagnostic at its position in `source`.
fn to_diagnostic(file: &Path, source: &str, e: &JinjaError) -> Diagnostic {
    let (line, column) = match (e.range(), e.line()) {
        (Some(range), _) if range.start <= source.len() => line_col(source, range.start),
        (_, Some(line)) => (line, 1),
        _ => (1, 1),
    };
    let detail = e.detail().unwrap_or("").to_string();
    let (message, help) = match e.kind() {
        ErrorKind::UnknownFunction => {
            let name = detail
                .strip_suffix(" is unknown")
                .unwrap_or(&detail)
                .to_string();
            let known = [
                "ref",
                "source",
                "config",
                "var",
                "env_var",
                "is_incremental",
                "range",
                "dict",
                "namespace",
            ];
            let help = suggest(&name, known).unwrap_or_else(|| {
                "templates have ref, source, config, var, env_var, is_incremental and minijinja's built-ins".to_string()
            });
            (format!("unknown function '{name}'"), Some(help))
        }
        ErrorKind::UnknownFilter => {
            let name = detail
                .trim_start_matches("filter ")
                .strip_suffix(" is unknown")
                .unwrap_or(&detail)
                .to_string();
            (
                format!("unknown filter '{name}'"),
                Some("templates have minijinja's built-in filters".to_string()),
            )
        }
        ErrorKind::UnknownTest => (format!("unknown test: {detail}"), None),
        ErrorKind::UndefinedError => (
            format!("undefined value: {detail}"),
            Some("variables come from {% set %}, {% for %} or var('name')".to_string()),
        ),
        ErrorKind::SyntaxError => {
            let stmt = detail.strip_prefix("unknown statement ").unwrap_or("");
            if matches!(stmt, "include" | "import" | "from" | "extends" | "block") {
                (
                    format!("{{% {stmt} %}} is not supported"),
                    Some("a model cannot read other files; make the shared SQL a model (ephemeral if it should not be built) and ref() it".into()),
                )
            } else {
                (format!("syntax error: {detail}"), None)
            }
        }
        ErrorKind::InvalidOperation if !detail.is_empty() => (detail.clone(), None),
        kind => {
            if detail.is_empty() {
                (kind.to_string(), None)
            } else {
                (format!("{kind}: {detail}"), None)
            }
        }
    };
    // our own messages carry "; did you mean" inline: split it into the help
    let (message, help) = match (message.split_once("; "), help) {
        (Some((m, h)), None) => (m.to_string(), Some(h.to_string())),
        (_, help) => (message, help),
    };
    Diagnostic::new(file, line, column, message).with_help_opt(help)
}

/// A JSON value as a template value.
pub(crate) fn json_to_value(v: &Json) -> Value {
    match v {
        Json::Null => Value::from(()),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => Value::from(items.iter().map(json_to_value).collect::<Vec<_>>()),
        Json::Object(map) => Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect::<BTreeMap<String, Value>>(),
        ),
    }
}

/// A template value as JSON (undefined and none become null; other objects their string form).
pub(crate) fn value_to_json(v: &Value) -> Json {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => Json::Null,
        ValueKind::Bool => Json::Bool(v.is_true()),
        ValueKind::Number => {
            if let Some(i) = v.as_i64() {
                Json::from(i)
            } else {
                f64::try_from(v.clone())
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Json::Null, Json::Number)
            }
        }
        ValueKind::String => Json::String(v.as_str().unwrap_or_default().to_string()),
        ValueKind::Seq | ValueKind::Iterable => Json::Array(
            v.try_iter()
                .map(|it| it.map(|x| value_to_json(&x)).collect())
                .unwrap_or_default(),
        ),
        ValueKind::Map => {
            let mut map = serde_json::Map::new();
            if let Ok(keys) = v.try_iter() {
                for k in keys {
                    let item = v.get_item(&k).unwrap_or_default();
                    map.insert(k.to_string(), value_to_json(&item));
                }
            }
            Json::Object(map)
        }
        _ => Json::String(v.to_string()),
    }
}
