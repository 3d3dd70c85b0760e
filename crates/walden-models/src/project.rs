//! Loading a project: project file, folder defaults, model files, property files, tests,
//! and the graph. Every problem found is collected; loading fails with all of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value as Json;

use crate::config::{ModelConfig, PartialConfig, TestConfig};
use crate::data_tests::{self, DataTest, TestKind};
use crate::error::{Diagnostic, ProjectErrors, line_col, relative, suggest};
use crate::graph::{Graph, NodeId};
use crate::props::{
    self, ColumnProps, Locator, ModelProps, ProjectFile, PropertyFile, SourceProps,
};
use crate::scan::{CallSite, call_sites};
use crate::sql;
use crate::template::{self, ConfigKind, Globals, Pass};

/// The project file names, in the order they are looked for.
pub const PROJECT_FILES: [&str; 2] = ["walden_project.yml", "dbt_project.yml"];

/// Options of [`Project::load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Variables overriding the project file's `vars:` (the command line's `--vars`).
    pub vars: BTreeMap<String, Json>,
    /// The environment `env_var()` reads; `None` reads the process environment.
    pub env: Option<HashMap<String, String>>,
}

/// A column documented in YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    /// The column name.
    pub name: String,
    /// Its description (empty if none).
    pub description: String,
    /// The declared data type, as written.
    pub data_type: Option<String>,
    /// Whether tests quote the name as an identifier.
    pub quote: bool,
}

/// A model: one `models/**/<name>.sql` file.
#[derive(Debug, Clone)]
pub struct Model {
    /// The file stem; unique in the project.
    pub name: String,
    /// The SQL file, relative to the project root.
    pub path: PathBuf,
    /// The property file documenting it, if any, relative to the root.
    pub properties_path: Option<PathBuf>,
    /// The template text.
    pub raw_sql: String,
    /// The resolved configuration.
    pub config: ModelConfig,
    /// The lake namespace: `config.schema`, else the first folder under the model path,
    /// else `models`.
    pub namespace: String,
    /// The description from YAML (empty if none).
    pub description: String,
    /// Documented columns, in YAML order.
    pub columns: Vec<Column>,
    /// Models it refs, sorted, without repeats (both branches of `is_incremental()`).
    pub refs: Vec<String>,
    /// Source tables it reads, sorted, without repeats.
    pub sources: Vec<(String, String)>,
    /// `[project, folders..., name]`.
    pub fqn: Vec<String>,
    pub(crate) sites: Vec<CallSite>,
}

impl Model {
    /// The table name in the lake: the alias, else the model name.
    pub fn identifier(&self) -> &str {
        self.config.alias.as_deref().unwrap_or(&self.name)
    }

    /// Whether the model is inlined rather than built.
    pub fn is_ephemeral(&self) -> bool {
        self.config.materialized == crate::Materialized::Ephemeral
    }

    /// Its dependencies: models then source tables.
    pub fn depends_on(&self) -> Vec<NodeId> {
        self.refs
            .iter()
            .map(|m| NodeId::Model(m.clone()))
            .chain(
                self.sources
                    .iter()
                    .map(|(s, t)| NodeId::Source(s.clone(), t.clone())),
            )
            .collect()
    }
}

/// A freshness bound: `count` periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FreshnessBound {
    /// How many periods.
    pub count: u64,
    /// `minute`, `hour` or `day`.
    pub period: Period,
}

impl FreshnessBound {
    /// The bound in seconds.
    pub fn seconds(&self) -> u64 {
        self.count
            * match self.period {
                Period::Minute => 60,
                Period::Hour => 3600,
                Period::Day => 86400,
            }
    }
}

/// A freshness period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// 60 seconds.
    Minute,
    /// 3600 seconds.
    Hour,
    /// 86400 seconds.
    Day,
}

/// The freshness expectations of a source table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Freshness {
    /// Warn when the newest `loaded_at_field` is older than this.
    pub warn_after: Option<FreshnessBound>,
    /// Error when the newest `loaded_at_field` is older than this.
    pub error_after: Option<FreshnessBound>,
    /// An SQL condition restricting the rows looked at.
    pub filter: Option<String>,
}

/// A source table declared under `sources:`.
#[derive(Debug, Clone)]
pub struct SourceTable {
    /// The source's name (first argument of `source()`).
    pub source: String,
    /// The table's name (second argument).
    pub name: String,
    /// The lake namespace: the source's `schema`, else its name.
    pub namespace: String,
    /// The table in the lake: `identifier`, else `name`.
    pub identifier: String,
    /// The table's description.
    pub description: String,
    /// The source's description.
    pub source_description: String,
    /// Documented columns.
    pub columns: Vec<Column>,
    /// The timestamp column freshness looks at (the table's, else the source's).
    pub loaded_at_field: Option<String>,
    /// The table's freshness, else the source's; `freshness: null` on the table clears it.
    pub freshness: Option<Freshness>,
    /// The property file, relative to the root.
    pub path: PathBuf,
    /// The 1-based line of the table's entry.
    pub line: usize,
}

/// A loaded, checked project: every model renders in the parse pass, every ref and source
/// exists and is enabled, the graph has no cycle, every test is well-formed.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project name (`name:` of the project file, else the root folder's name).
    pub name: String,
    /// The project root (as given).
    pub root: PathBuf,
    /// The project file read, relative to the root (`None`: defaults).
    pub project_file: Option<PathBuf>,
    /// `vars:` of the project file with the options' overrides on top.
    pub vars: BTreeMap<String, Json>,
    /// Things that work but deserve a look (dbt keys walden ignores).
    pub warnings: Vec<Diagnostic>,
    pub(crate) models: BTreeMap<String, Model>,
    pub(crate) disabled: BTreeMap<String, Model>,
    pub(crate) sources: BTreeMap<(String, String), SourceTable>,
    pub(crate) tests: BTreeMap<String, DataTest>,
    pub(crate) graph: Graph,
    pub(crate) order: Vec<String>,
    pub(crate) env: Option<HashMap<String, String>>,
}

/// The generic tests of one model, source table or column, before they are checked: the
/// tested node, the property file and its text, the line of the node's entry, the column
/// (`None` at model or table level) and the list entries.
type TestSet = (
    NodeId,
    PathBuf,
    String,
    usize,
    Option<ColumnProps>,
    Vec<Json>,
);

/// Folder defaults: one level of `models:` in the project file.
#[derive(Debug, Default, Clone)]
struct Folder {
    config: PartialConfig,
    children: BTreeMap<String, Folder>,
}

struct Loader {
    root: PathBuf,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Loader {
    fn error(&mut self, d: Diagnostic) {
        self.errors.push(d);
    }

    fn read(&mut self, path: &Path) -> Option<String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) => {
                let rel = relative(&self.root, path);
                self.error(Diagnostic::file(rel, format!("cannot read the file: {e}")));
                None
            }
        }
    }

    /// Files under `dir` (recursively, sorted, hidden entries skipped) whose extension is one of `exts`.
    /// Folders in `skip` (the test paths, when nested in a model path) are not entered.
    fn walk(&mut self, dir: &Path, exts: &[&str], skip: &[PathBuf], out: &mut Vec<PathBuf>) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                let rel = relative(&self.root, dir);
                self.error(Diagnostic::file(
                    rel,
                    format!("cannot read the folder: {e}"),
                ));
                return;
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                if !skip.contains(&p) {
                    self.walk(&p, exts, skip, out);
                }
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
            {
                out.push(p);
            }
        }
    }
}

/// Parses one level of folder defaults.
fn parse_folder(
    map: &serde_json::Map<String, Json>,
    loader: &mut Loader,
    file: &Path,
    locator: &Locator<'_>,
    trail: &str,
) -> Folder {
    let mut folder = Folder::default();
    for (key, value) in map {
        let is_config = key.starts_with('+')
            || (crate::config::MODEL_KEYS.contains(&key.as_str()) && !value.is_object());
        if is_config {
            match folder.config.set(key, value) {
                Ok(crate::config::Applied::Set) => {}
                Ok(crate::config::Applied::Ignored) => {
                    let (line, col) = locator.key(1, key).unwrap_or((1, 1));
                    loader.warnings.push(Diagnostic::new(
                        file,
                        line,
                        col,
                        format!(
                            "config '{key}' (under models:{trail}) is a dbt setting walden ignores"
                        ),
                    ));
                }
                Err(msg) => {
                    let (line, col) = locator.key(1, key).unwrap_or((1, 1));
                    loader.error(Diagnostic::new(
                        file,
                        line,
                        col,
                        format!("{msg} (under models:{trail})"),
                    ));
                }
            }
        } else if let Json::Object(child) = value {
            let child = parse_folder(child, loader, file, locator, &format!("{trail}.{key}"));
            folder.children.insert(key.clone(), child);
        } else if !value.is_null() {
            let (line, col) = locator.key(1, key).unwrap_or((1, 1));
            loader.error(
                Diagnostic::new(file, line, col, format!("'{key}' under models:{trail} is neither a folder (a mapping) nor a config ('+key')"))
                    .with_help(format!("walden's configs are {}", crate::config::MODEL_KEYS.iter().map(|k| format!("+{k}")).collect::<Vec<_>>().join(", "))),
            );
        }
    }
    folder
}

fn column(c: &ColumnProps) -> Column {
    Column {
        name: c.name.clone(),
        description: c.description.clone().unwrap_or_default(),
        data_type: c.data_type.clone(),
        quote: c.quote.unwrap_or(false),
    }
}

fn parse_freshness(v: &Json) -> Result<Option<Freshness>, String> {
    let Json::Object(map) = v else {
        return if v.is_null() {
            Ok(None)
        } else {
            Err("freshness must be a mapping with warn_after/error_after".into())
        };
    };
    let bound = |key: &str| -> Result<Option<FreshnessBound>, String> {
        let Some(b) = map.get(key) else {
            return Ok(None);
        };
        if b.is_null() {
            return Ok(None);
        }
        let count = b
            .get("count")
            .and_then(Json::as_u64)
            .ok_or_else(|| format!("freshness {key} needs a whole `count:`"))?;
        let period = match b.get("period").and_then(Json::as_str) {
            Some("minute") => Period::Minute,
            Some("hour") => Period::Hour,
            Some("day") => Period::Day,
            other => {
                return Err(format!(
                    "freshness {key} period must be minute, hour or day, not {other:?}"
                ));
            }
        };
        Ok(Some(FreshnessBound { count, period }))
    };
    for key in map.keys() {
        if !matches!(key.as_str(), "warn_after" | "error_after" | "filter") {
            return Err(format!(
                "freshness has no key '{key}' (expected warn_after, error_after, filter)"
            ));
        }
    }
    Ok(Some(Freshness {
        warn_after: bound("warn_after")?,
        error_after: bound("error_after")?,
        filter: map.get("filter").and_then(Json::as_str).map(str::to_string),
    }))
}

/// The dependencies of a template: what the parse pass called plus the literal calls of
/// the static scan (other branches). Unknown names found only by the scan are errors.
fn dependencies(
    collected: &template::Collected,
    sites: &[CallSite],
    project: &str,
    model_names: &BTreeSet<String>,
    source_names: &BTreeSet<(String, String)>,
    file: &Path,
    loader: &mut Loader,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut refs: BTreeSet<String> = collected.refs.iter().cloned().collect();
    let mut srcs: BTreeSet<(String, String)> = collected.sources.iter().cloned().collect();
    for site in sites {
        match (site.function, site.args.as_deref()) {
            ("ref", Some([m])) | ("ref", Some([_, m])) => {
                if let Some([p, _]) = site.args.as_deref()
                    && p != project
                {
                    continue; // the parse pass reports it if the branch runs
                }
                if !model_names.contains(m) {
                    loader.error(
                        Diagnostic::new(
                            file,
                            site.line,
                            site.column,
                            format!("unknown model '{m}' in ref()"),
                        )
                        .with_help_opt(suggest(m, model_names.iter().map(String::as_str))),
                    );
                } else {
                    refs.insert(m.clone());
                }
            }
            ("source", Some([s, t])) => {
                if !source_names.contains(&(s.clone(), t.clone())) {
                    let names: Vec<String> = source_names
                        .iter()
                        .map(|(s, t)| format!("{s}.{t}"))
                        .collect();
                    loader.error(
                        Diagnostic::new(
                            file,
                            site.line,
                            site.column,
                            format!("unknown source table '{s}.{t}' in source()"),
                        )
                        .with_help_opt(suggest(
                            &format!("{s}.{t}"),
                            names.iter().map(String::as_str),
                        )),
                    );
                } else {
                    srcs.insert((s.clone(), t.clone()));
                }
            }
            _ => {}
        }
    }
    (refs.into_iter().collect(), srcs.into_iter().collect())
}

/// The call site of `function` whose literal arguments end with `target` (else the first
/// non-literal one, else `1:1`).
pub(crate) fn site_of(sites: &[CallSite], function: &str, target: &[&str]) -> (usize, usize) {
    let exact = sites.iter().find(|s| {
        s.function == function
            && s.args.as_ref().is_some_and(|a| {
                a.len() >= target.len()
                    && a[a.len() - target.len()..]
                        .iter()
                        .zip(target)
                        .all(|(x, y)| x == y)
            })
    });
    let any = || {
        sites
            .iter()
            .find(|s| s.function == function && s.args.is_none())
    };
    exact.or_else(any).map_or((1, 1), |s| (s.line, s.column))
}

/// The position in `template` of a statement problem found in `rendered` at byte `offset`:
/// the first template line equal to the rendered line, else `1:1`.
fn template_position(template: &str, rendered: &str, offset: usize) -> (usize, usize) {
    let (line, col) = line_col(rendered, offset);
    let text = rendered.lines().nth(line - 1).unwrap_or("").trim();
    if text.is_empty() {
        return (1, 1);
    }
    template
        .lines()
        .position(|l| l.trim() == text)
        .map_or((1, 1), |i| {
            let l = template.lines().nth(i).unwrap_or("");
            (i + 1, col.min(l.chars().count()).max(1))
        })
}

/// Checks that a parse-pass rendering is one query; a diagnostic otherwise.
pub(crate) fn check_statement(
    file: &Path,
    template: &str,
    rendered: &str,
) -> Result<sql::Statement, Diagnostic> {
    sql::single_query(rendered).map_err(|msg| {
        let stmts = sql::statements(rendered);
        let at = if stmts.len() > 1 {
            stmts[1].start
        } else {
            stmts.first().map_or(0, |s| s.start)
        };
        let (line, column) = template_position(template, rendered, at);
        Diagnostic::new(file, line, column, format!("the model {msg}"))
    })
}

impl Project {
    /// Loads the project at `root`.
    ///
    /// Reads `walden_project.yml`, else `dbt_project.yml`, else uses defaults if `root`
    /// has a `models/` folder. Renders every model and singular test once (the parse
    /// pass), reads every property file, builds and checks the graph. Every problem in
    /// every file is collected; the error lists them all, sorted by file and position.
    pub fn load(root: &Path, options: &LoadOptions) -> Result<Project, ProjectErrors> {
        let mut loader = Loader {
            root: root.to_path_buf(),
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let project = load_inner(root, options, &mut loader);
        if loader.errors.is_empty()
            && let Some(mut p) = project
        {
            loader.warnings.sort();
            p.warnings = loader.warnings;
            return Ok(p);
        }
        let mut diagnostics = loader.errors;
        diagnostics.sort();
        diagnostics.dedup();
        Err(ProjectErrors { diagnostics })
    }
}

fn load_inner(root: &Path, options: &LoadOptions, loader: &mut Loader) -> Option<Project> {
    // 1. the project file
    let project_file = PROJECT_FILES
        .iter()
        .map(PathBuf::from)
        .find(|f| root.join(f).is_file());
    let (pf, pf_text) = match &project_file {
        Some(f) => {
            let text = loader.read(&root.join(f))?;
            match props::parse_yaml::<Option<ProjectFile>>(f, &text) {
                Ok(pf) => (pf.unwrap_or_default(), text),
                Err(d) => {
                    loader.error(d);
                    return None;
                }
            }
        }
        None if root.join("models").is_dir() => (ProjectFile::default(), String::new()),
        None => {
            loader.error(
                Diagnostic::file(
                    PathBuf::from(PROJECT_FILES[0]),
                    format!(
                        "no walden_project.yml, dbt_project.yml or models/ folder in {}",
                        root.display()
                    ),
                )
                .with_help("create models/ with one SELECT per .sql file, or a walden_project.yml"),
            );
            return None;
        }
    };
    let pf_path = project_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(PROJECT_FILES[0]));
    let locator = Locator::new(&pf_text);
    let name = pf.name.clone().unwrap_or_else(|| {
        let dir = std::fs::canonicalize(root)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let dir = dir.unwrap_or_else(|| "project".into());
        dir.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect()
    });

    // vars: top level, plus a mapping under the project's own name (dbt's scoping)
    let mut vars = BTreeMap::new();
    match &pf.vars {
        None | Some(Json::Null) => {}
        Some(Json::Object(map)) => {
            for (k, v) in map {
                if k == &name
                    && let Json::Object(scoped) = v
                {
                    continue_scoped(&mut vars, scoped);
                    continue;
                }
                vars.insert(k.clone(), v.clone());
            }
        }
        Some(_) => {
            let (line, col) = locator.top_key("vars").unwrap_or((1, 1));
            loader.error(Diagnostic::new(
                &pf_path,
                line,
                col,
                "vars: must be a mapping of names to values",
            ));
        }
    }
    vars.extend(options.vars.clone());

    // folder defaults
    let folders = match &pf.models {
        None | Some(Json::Null) => Folder::default(),
        Some(Json::Object(map)) => match map.get(&name) {
            Some(Json::Object(own)) => {
                for k in map.keys().filter(|k| *k != &name && !k.starts_with('+')) {
                    let (line, col) = locator.key(1, k).unwrap_or((1, 1));
                    let message = format!(
                        "models: '{k}' is not this project ('{name}'); its settings are ignored"
                    );
                    loader
                        .warnings
                        .push(Diagnostic::new(&pf_path, line, col, message));
                }
                let mut root_level = parse_folder(
                    &map.iter()
                        .filter(|(k, _)| k.starts_with('+'))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    loader,
                    &pf_path,
                    &locator,
                    "",
                );
                let own = parse_folder(own, loader, &pf_path, &locator, &format!(".{name}"));
                root_level.config = root_level.config.overlay(&own.config);
                root_level.children = own.children;
                root_level
            }
            _ => parse_folder(map, loader, &pf_path, &locator, ""),
        },
        Some(_) => {
            let (line, col) = locator.top_key("models").unwrap_or((1, 1));
            loader.error(Diagnostic::new(
                &pf_path,
                line,
                col,
                "models: must be a mapping of folders and +configs",
            ));
            Folder::default()
        }
    };

    let model_paths = pf
        .model_paths
        .clone()
        .unwrap_or_else(|| vec!["models".into()]);
    let test_paths = pf
        .test_paths
        .clone()
        .unwrap_or_else(|| vec!["tests".into()]);

    // 2. files (a test path inside a model path holds tests, not models)
    let test_dirs: Vec<PathBuf> = test_paths.iter().map(|t| root.join(t)).collect();
    let mut sql_files: Vec<(PathBuf, PathBuf)> = Vec::new(); // (model path dir, file)
    let mut yaml_files: Vec<PathBuf> = Vec::new();
    for mp in &model_paths {
        let dir = root.join(mp);
        if !dir.is_dir() {
            if pf.model_paths.is_some() {
                let (line, col) = locator
                    .key(1, mp)
                    .or_else(|| locator.top_key("model-paths"))
                    .unwrap_or((1, 1));
                loader.error(Diagnostic::new(
                    &pf_path,
                    line,
                    col,
                    format!("model path '{mp}' is not a folder"),
                ));
            }
            continue;
        }
        let mut files = Vec::new();
        loader.walk(&dir, &["sql"], &test_dirs, &mut files);
        sql_files.extend(files.into_iter().map(|f| (PathBuf::from(mp), f)));
        loader.walk(&dir, &["yml", "yaml"], &test_dirs, &mut yaml_files);
    }
    let mut test_files = Vec::new();
    for tp in &test_paths {
        let dir = root.join(tp);
        if dir.is_dir() {
            loader.walk(&dir, &["sql"], &[], &mut test_files);
        }
    }

    // model names: duplicates are errors naming both files
    let mut model_files: BTreeMap<String, (PathBuf, PathBuf)> = BTreeMap::new();
    for (mp, file) in sql_files {
        let rel = relative(root, &file);
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some((_, first)) = model_files.get(&stem) {
            let first = first.clone();
            loader.error(
                Diagnostic::file(
                    &rel,
                    format!(
                        "duplicate model name '{stem}': also defined in {}",
                        first.display()
                    ),
                )
                .with_help(
                    "model names are file stems and must be unique across folders; rename one file",
                ),
            );
            loader.error(Diagnostic::file(
                &first,
                format!(
                    "duplicate model name '{stem}': also defined in {}",
                    rel.display()
                ),
            ));
            continue;
        }
        model_files.insert(stem, (mp, rel));
    }
    let model_names: BTreeSet<String> = model_files.keys().cloned().collect();

    // 3. property files
    struct Props {
        file: PathBuf,
        line: usize,
        text: String,
        props: ModelProps,
    }
    let mut model_props: BTreeMap<String, Props> = BTreeMap::new();
    let mut source_props: Vec<(PathBuf, String, SourceProps)> = Vec::new();
    let mut unknown_props: Vec<Props> = Vec::new();
    for file in &yaml_files {
        let rel = relative(root, file);
        let Some(text) = loader.read(file) else {
            continue;
        };
        let parsed: Option<PropertyFile> = match props::parse_yaml(&rel, &text) {
            Ok(p) => p,
            Err(d) => {
                loader.error(d);
                continue;
            }
        };
        let Some(parsed) = parsed else { continue };
        let locator = Locator::new(&text);
        let models_line = locator.top_key("models").map_or(1, |p| p.0);
        let mut cursor = models_line;
        for mprops in parsed.models.unwrap_or_default() {
            let line = locator
                .entry(cursor, &mprops.name)
                .map_or(models_line, |p| p.0);
            cursor = line + 1;
            let name = mprops.name.clone();
            let entry = Props {
                file: rel.clone(),
                line,
                text: text.clone(),
                props: mprops,
            };
            if !model_names.contains(&name) {
                unknown_props.push(entry);
            } else if let Some(first) = model_props.get(&name) {
                loader.error(Diagnostic::new(
                    &rel,
                    line,
                    1,
                    format!(
                        "model '{name}' is documented twice: also in {}:{}",
                        first.file.display(),
                        first.line
                    ),
                ));
            } else {
                model_props.insert(name, entry);
            }
        }
        for s in parsed.sources.unwrap_or_default() {
            source_props.push((rel.clone(), text.clone(), s));
        }
    }
    for p in unknown_props {
        let (line, col) = Locator::new(&p.text)
            .entry(p.line, &p.props.name)
            .unwrap_or((p.line, 1));
        loader.error(
            Diagnostic::new(
                &p.file,
                line,
                col,
                format!("properties for unknown model '{}'", p.props.name),
            )
            .with_help_opt(
                suggest(&p.props.name, model_names.iter().map(String::as_str))
                    .or_else(|| Some("there is no models/**/<name>.sql for it".into())),
            ),
        );
    }

    // sources
    let mut sources: BTreeMap<(String, String), SourceTable> = BTreeMap::new();
    let mut source_tests: Vec<TestSet> = Vec::new();
    let mut seen_sources: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut source_cursor: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for (rel, text, s) in &source_props {
        let locator = Locator::new(text);
        let sources_line = locator.top_key("sources").map_or(1, |p| p.0);
        // entries are found in file order: each search starts after the previous source
        let cursor = source_cursor.entry(rel.clone()).or_insert(sources_line);
        let sline = locator
            .entry(*cursor, &s.name)
            .map_or(sources_line, |p| p.0);
        *cursor = sline + 1 + s.tables.len();
        if let Some(first) = seen_sources.get(&s.name) {
            loader.error(Diagnostic::new(
                rel,
                sline,
                1,
                format!(
                    "source '{}' is declared twice: also in {}",
                    s.name,
                    first.display()
                ),
            ));
            continue;
        }
        seen_sources.insert(s.name.clone(), rel.clone());
        let source_freshness = match s.freshness.as_ref().map(parse_freshness).transpose() {
            Ok(f) => f.flatten(),
            Err(msg) => {
                let (line, col) = locator.key(sline, "freshness").unwrap_or((sline, 1));
                loader.error(Diagnostic::new(rel, line, col, msg));
                None
            }
        };
        let mut tcursor = sline;
        for t in &s.tables {
            let tline = locator.entry(tcursor, &t.name).map_or(sline, |p| p.0);
            tcursor = tline + 1;
            let freshness = match &t.freshness {
                None => source_freshness.clone(),
                Some(v) => match parse_freshness(v) {
                    Ok(f) => f,
                    Err(msg) => {
                        let (line, col) = locator.key(tline, "freshness").unwrap_or((tline, 1));
                        loader.error(Diagnostic::new(rel, line, col, msg));
                        None
                    }
                },
            };
            let key = (s.name.clone(), t.name.clone());
            if sources.contains_key(&key) {
                loader.error(Diagnostic::new(
                    rel,
                    tline,
                    1,
                    format!(
                        "table '{}' is declared twice in source '{}'",
                        t.name, s.name
                    ),
                ));
                continue;
            }
            let node = NodeId::Source(s.name.clone(), t.name.clone());
            source_tests.push((
                node.clone(),
                rel.clone(),
                text.clone(),
                tline,
                None,
                props::test_list(&t.tests, &t.data_tests),
            ));
            for c in &t.columns {
                source_tests.push((
                    node.clone(),
                    rel.clone(),
                    text.clone(),
                    tline,
                    Some(c.clone()),
                    props::test_list(&c.tests, &c.data_tests),
                ));
            }
            sources.insert(
                key,
                SourceTable {
                    source: s.name.clone(),
                    name: t.name.clone(),
                    namespace: s.schema.clone().unwrap_or_else(|| s.name.clone()),
                    identifier: t.identifier.clone().unwrap_or_else(|| t.name.clone()),
                    description: t.description.clone().unwrap_or_default(),
                    source_description: s.description.clone().unwrap_or_default(),
                    columns: t.columns.iter().map(column).collect(),
                    loaded_at_field: t
                        .loaded_at_field
                        .clone()
                        .or_else(|| s.loaded_at_field.clone()),
                    freshness,
                    path: rel.clone(),
                    line: tline,
                },
            );
        }
    }
    let source_names: BTreeSet<(String, String)> = sources.keys().cloned().collect();
    let all_models: Vec<String> = model_names.iter().cloned().collect();
    let all_sources: Vec<String> = source_names
        .iter()
        .map(|(s, t)| format!("{s}.{t}"))
        .collect();
    let globals = Globals {
        project: &name,
        vars: &vars,
        env: options.env.as_ref(),
    };

    // 4. models: parse pass, configuration
    let mut models: BTreeMap<String, Model> = BTreeMap::new();
    let mut disabled: BTreeMap<String, Model> = BTreeMap::new();
    for (mname, (mp, rel)) in &model_files {
        let Some(raw_sql) = loader.read(&root.join(rel)) else {
            continue;
        };
        let sites = call_sites(&raw_sql);
        let pass = Pass::Parse {
            all_models: &all_models,
            all_sources: &all_sources,
            config: ConfigKind::Model,
        };
        let (rendered, collected) = match template::render(rel, &raw_sql, pass, &globals) {
            Ok(r) => r,
            Err(d) => {
                loader.error(d);
                continue;
            }
        };
        if let Err(d) = check_statement(rel, &raw_sql, &rendered) {
            loader.error(d);
        }
        let (config_line, config_col) = {
            let c = crate::scan::call_sites_of(&raw_sql, "config");
            c.first().map_or((1, 1), |s| (s.line, s.column))
        };
        for key in &collected.ignored {
            loader.warnings.push(Diagnostic::new(
                rel,
                config_line,
                config_col,
                format!("config '{key}' is a dbt setting walden ignores"),
            ));
        }
        let (refs, srcs) = dependencies(
            &collected,
            &sites,
            &name,
            &model_names,
            &source_names,
            rel,
            loader,
        );

        // folders under the model path
        let inner = rel.strip_prefix(mp).unwrap_or(rel);
        let folders_of: Vec<String> = inner
            .parent()
            .map(|p| {
                p.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mut level = &folders;
        let mut folder_config = folders.config.clone();
        for f in folders_of.iter().chain(std::iter::once(mname)) {
            match level.children.get(f) {
                Some(next) => {
                    folder_config = folder_config.overlay(&next.config);
                    level = next;
                }
                None => break,
            }
        }
        // YAML config
        let mut yaml_config = PartialConfig::default();
        let yprops = model_props.get(mname);
        if let Some(p) = yprops {
            let loc = Locator::new(&p.text);
            for (k, v) in p.props.config.iter().flatten() {
                match yaml_config.set(k, v) {
                    Ok(crate::config::Applied::Set) => {}
                    Ok(crate::config::Applied::Ignored) => {
                        let (line, col) = loc.key(p.line, k).unwrap_or((p.line, 1));
                        loader.warnings.push(Diagnostic::new(
                            &p.file,
                            line,
                            col,
                            format!("config '{k}' is a dbt setting walden ignores"),
                        ));
                    }
                    Err(msg) => {
                        let (line, col) = loc.key(p.line, k).unwrap_or((p.line, 1));
                        loader.error(Diagnostic::new(&p.file, line, col, msg));
                    }
                }
            }
        }
        let mut sql_config = PartialConfig::default();
        for (k, v) in &collected.config {
            // checked when config() ran
            let _ = sql_config.set(k, v);
        }
        let config = match folder_config
            .overlay(&yaml_config)
            .overlay(&sql_config)
            .resolve()
        {
            Ok(c) => c,
            Err(msg) => {
                loader.error(Diagnostic::new(rel, config_line, config_col, msg));
                continue;
            }
        };
        let namespace = config
            .schema
            .clone()
            .or_else(|| folders_of.first().cloned())
            .unwrap_or_else(|| "models".into());
        let mut fqn = vec![name.clone()];
        fqn.extend(folders_of.iter().cloned());
        fqn.push(mname.clone());
        let model = Model {
            name: mname.clone(),
            path: rel.clone(),
            properties_path: yprops.map(|p| p.file.clone()),
            raw_sql,
            config,
            namespace,
            description: yprops
                .and_then(|p| p.props.description.clone())
                .unwrap_or_default(),
            columns: yprops
                .map(|p| p.props.columns.iter().map(column).collect())
                .unwrap_or_default(),
            refs,
            sources: srcs,
            fqn,
            sites,
        };
        if model.config.enabled {
            models.insert(mname.clone(), model);
        } else {
            disabled.insert(mname.clone(), model);
        }
    }

    // refs to disabled models
    for m in models.values() {
        for r in &m.refs {
            if disabled.contains_key(r) {
                let (line, col) = site_of(&m.sites, "ref", &[r]);
                loader.error(
                    Diagnostic::new(
                        &m.path,
                        line,
                        col,
                        format!("ref('{r}') names a disabled model"),
                    )
                    .with_help(format!("enable '{r}' or remove the ref")),
                );
            }
        }
    }

    // one relation per lake table
    let mut relations: BTreeMap<(String, String), String> = BTreeMap::new();
    for s in sources.values() {
        relations.insert(
            (s.namespace.clone(), s.identifier.clone()),
            format!("source {}.{} ({})", s.source, s.name, s.path.display()),
        );
    }
    for m in models.values().filter(|m| !m.is_ephemeral()) {
        let key = (m.namespace.clone(), m.identifier().to_string());
        if let Some(other) = relations.get(&key) {
            loader.error(
                Diagnostic::file(
                    &m.path,
                    format!(
                        "model '{}' would be built as {}.{}, which is already {other}",
                        m.name, key.0, key.1
                    ),
                )
                .with_help("set a different alias or schema"),
            );
        } else {
            relations.insert(key, format!("model {} ({})", m.name, m.path.display()));
        }
    }

    // 5. tests
    let mut tests: BTreeMap<String, DataTest> = BTreeMap::new();
    let mut add_test = |loader: &mut Loader, t: DataTest| {
        if let Some(first) = tests.get(&t.name) {
            loader.error(
                Diagnostic::new(
                    &t.path,
                    t.line,
                    1,
                    format!(
                        "duplicate test name '{}': also declared at {}:{}",
                        t.name,
                        first.path.display(),
                        first.line
                    ),
                )
                .with_help("give one of them a `name:`"),
            );
        } else {
            tests.insert(t.name.clone(), t);
        }
    };
    // generic tests of models
    let mut generic_sets: Vec<TestSet> = Vec::new();
    for (mname, p) in &model_props {
        let node = NodeId::Model(mname.clone());
        generic_sets.push((
            node.clone(),
            p.file.clone(),
            p.text.clone(),
            p.line,
            None,
            props::test_list(&p.props.tests, &p.props.data_tests),
        ));
        for c in &p.props.columns {
            generic_sets.push((
                node.clone(),
                p.file.clone(),
                p.text.clone(),
                p.line,
                Some(c.clone()),
                props::test_list(&c.tests, &c.data_tests),
            ));
        }
    }
    generic_sets.extend(source_tests);
    for (node, file, text, entry_line, col, entries) in generic_sets {
        let loc = Locator::new(&text);
        let col_line = match &col {
            Some(c) => loc.entry(entry_line, &c.name).map_or(entry_line, |p| p.0),
            None => entry_line,
        };
        let mut cursor = col_line;
        for entry in entries {
            let parsed = data_tests::parse_entry(&entry);
            let test_key = match (&parsed, &entry) {
                (Ok(e), _) => e.test.clone(),
                (Err(_), Json::String(s)) => s.clone(),
                (Err(_), Json::Object(m)) => m.keys().next().cloned().unwrap_or_default(),
                _ => String::new(),
            };
            let (line, column_no) = loc.key(cursor, &test_key).unwrap_or((col_line, 1));
            cursor = line + 1;
            let e = match parsed {
                Ok(e) => e,
                Err(msg) => {
                    loader.error(Diagnostic::new(&file, line, column_no, msg));
                    continue;
                }
            };
            for key in &e.ignored {
                loader.warnings.push(Diagnostic::new(
                    &file,
                    line,
                    column_no,
                    format!("test config '{key}' is a dbt setting walden ignores"),
                ));
            }
            let quote = col.as_ref().and_then(|c| c.quote).unwrap_or(false);
            let column_sql = move |c: &str| data_tests::column_text(c, quote);
            let generic = match data_tests::build_generic(
                &e,
                col.as_ref().map(|c| c.name.as_str()),
                &name,
                &column_sql,
            ) {
                Ok(g) => g,
                Err(msg) => {
                    let help = if msg.starts_with("unknown generic test") {
                        Some(
                            suggest(&e.test, data_tests::GENERIC_TESTS.iter().copied())
                                .unwrap_or_else(|| {
                                    format!(
                                        "walden's generic tests are {}",
                                        data_tests::GENERIC_TESTS.join(", ")
                                    )
                                }),
                        )
                    } else {
                        None
                    };
                    loader.error(Diagnostic::new(&file, line, column_no, msg).with_help_opt(help));
                    continue;
                }
            };
            if !e.config.enabled {
                continue;
            }
            // the tested node and the referenced one must exist and be enabled
            let mut depends: BTreeSet<NodeId> = BTreeSet::from([node.clone()]);
            if let data_tests::GenericTest::Relationships { to, .. } = &generic {
                match to {
                    NodeId::Model(m) if disabled.contains_key(m) => continue,
                    NodeId::Model(m) if !models.contains_key(m) => {
                        loader.error(
                            Diagnostic::new(
                                &file,
                                line,
                                column_no,
                                format!("relationships test: unknown model '{m}' in to:"),
                            )
                            .with_help_opt(suggest(m, model_names.iter().map(String::as_str))),
                        );
                        continue;
                    }
                    NodeId::Source(s, t) if !sources.contains_key(&(s.clone(), t.clone())) => {
                        loader.error(Diagnostic::new(
                            &file,
                            line,
                            column_no,
                            format!("relationships test: unknown source table '{s}.{t}' in to:"),
                        ));
                        continue;
                    }
                    _ => {}
                }
                depends.insert(to.clone());
            }
            if let NodeId::Model(m) = &node
                && !models.contains_key(m)
            {
                continue; // disabled model: its tests go with it
            }
            let test_name =
                data_tests::generic_name(&e, &node, col.as_ref().map(|c| c.name.as_str()));
            add_test(
                loader,
                DataTest {
                    name: test_name,
                    kind: TestKind::Generic(generic),
                    attached_to: Some(node.clone()),
                    depends_on: depends.into_iter().collect(),
                    config: e.config.clone(),
                    path: file.clone(),
                    line,
                },
            );
        }
    }
    // singular tests
    for file in &test_files {
        let rel = relative(root, file);
        let Some(raw_sql) = loader.read(file) else {
            continue;
        };
        let tname = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sites = call_sites(&raw_sql);
        let pass = Pass::Parse {
            all_models: &all_models,
            all_sources: &all_sources,
            config: ConfigKind::Test,
        };
        let (rendered, collected) = match template::render(&rel, &raw_sql, pass, &globals) {
            Ok(r) => r,
            Err(d) => {
                loader.error(d);
                continue;
            }
        };
        if let Err(d) = check_statement(&rel, &raw_sql, &rendered) {
            loader.error(Diagnostic {
                message: d.message.replacen("the model", "the test", 1),
                ..d
            });
        }
        let (refs, srcs) = dependencies(
            &collected,
            &sites,
            &name,
            &model_names,
            &source_names,
            &rel,
            loader,
        );
        let mut config = TestConfig::default();
        for (k, v) in &collected.config {
            let _ = config.set(k, v);
        }
        if !config.enabled {
            continue;
        }
        if let Some(r) = refs.iter().find(|r| disabled.contains_key(*r)) {
            let (line, col) = site_of(&sites, "ref", &[r]);
            loader.error(Diagnostic::new(
                &rel,
                line,
                col,
                format!("ref('{r}') names a disabled model"),
            ));
            continue;
        }
        let depends: Vec<NodeId> = refs
            .iter()
            .map(|m| NodeId::Model(m.clone()))
            .chain(
                srcs.iter()
                    .map(|(s, t)| NodeId::Source(s.clone(), t.clone())),
            )
            .collect();
        add_test(
            loader,
            DataTest {
                name: tname,
                kind: TestKind::Singular { raw_sql },
                attached_to: None,
                depends_on: depends,
                config,
                path: rel,
                line: 1,
            },
        );
    }
    for t in tests.values() {
        if models.contains_key(&t.name) {
            loader.error(
                Diagnostic::new(
                    &t.path,
                    t.line,
                    1,
                    format!("test '{}' has the name of a model", t.name),
                )
                .with_help("rename the test"),
            );
        }
    }

    // 6. the graph
    let mut graph = Graph::default();
    for m in models.values() {
        graph.add_node(NodeId::Model(m.name.clone()));
        for d in m.depends_on() {
            graph.add_edge(d, NodeId::Model(m.name.clone()));
        }
    }
    for s in sources.keys() {
        graph.add_node(NodeId::Source(s.0.clone(), s.1.clone()));
    }
    for t in tests.values() {
        graph.add_node(NodeId::Test(t.name.clone()));
        for d in &t.depends_on {
            graph.add_edge(d.clone(), NodeId::Test(t.name.clone()));
        }
    }
    let cycles = graph.cycles();
    for cycle in &cycles {
        let names: Vec<String> = cycle.iter().map(ToString::to_string).collect();
        let first = cycle[0].as_model().and_then(|m| models.get(m));
        let next = cycle.get(1).unwrap_or(&cycle[0]).to_string();
        if let Some(m) = first {
            let (line, col) = site_of(&m.sites, "ref", &[&next]);
            loader.error(
                Diagnostic::new(&m.path, line, col, format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]))
                    .with_help("a model cannot depend on itself, even through others; use {{ this }} to read a model's own table"),
            );
        }
    }
    // the build order: models only, so ties break by model name alone
    let order = if cycles.is_empty() {
        let mut model_graph = Graph::default();
        for m in models.values() {
            model_graph.add_node(NodeId::Model(m.name.clone()));
            for r in &m.refs {
                model_graph.add_edge(NodeId::Model(r.clone()), NodeId::Model(m.name.clone()));
            }
        }
        model_graph
            .topo_order()
            .map(|o| {
                o.into_iter()
                    .filter_map(|n| n.as_model().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };

    Some(Project {
        name,
        root: root.to_path_buf(),
        project_file,
        vars,
        warnings: Vec::new(),
        models,
        disabled,
        sources,
        tests,
        graph,
        order,
        env: options.env.clone(),
    })
}

fn continue_scoped(vars: &mut BTreeMap<String, Json>, scoped: &serde_json::Map<String, Json>) {
    for (k, v) in scoped {
        vars.insert(k.clone(), v.clone());
    }
}
