//! `walden models docs`: a static documentation site of the project.
//!
//! [`Project::docs_site`] writes plain HTML files (inline CSS, a few lines of vanilla
//! JavaScript for the search box, lineage drawn as inline SVG; nothing loaded from the
//! network) plus dbt-shaped `manifest.json` and `catalog.json`. What only a build knows
//! (column types, the LSN a model was built at, compiled SQL, ...) comes in
//! [`DocsInfo`]; everything in it is optional, so an unbuilt project has docs too.
//!
//! Every piece of project text (names, descriptions, SQL, test arguments) is
//! HTML-escaped; the search index is JSON inside a `<script type="application/json">`
//! with `<`, `>` and `&` written as `\u` escapes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json, json};

use crate::config::Severity;
use crate::data_tests::{DataTest, TestKind};
use crate::error::Error;
use crate::graph::NodeId;
use crate::project::{Column, Freshness, FreshnessBound, Model, Project, SourceTable};

/// What the builder knows about one model's last build. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelDocsInfo {
    /// The built table's columns in table order: (name, SQL type as the query service
    /// shows it). Empty: unknown.
    pub columns: Vec<(String, String)>,
    /// The replication LSN the build read, as Postgres writes it (`0/16B3748`).
    pub as_of_lsn: Option<String>,
    /// The source commit time of that LSN (free-form text, shown as is).
    pub as_of_time: Option<String>,
    /// When the build finished (free-form text, shown as is).
    pub built_at: Option<String>,
    /// The outcome of the last build (`success`, `error: ...`, `skipped`), shown as is.
    pub status: Option<String>,
    /// Rows in the built table (or added, for incremental builds).
    pub rows: Option<u64>,
    /// How long the build took.
    pub duration_ms: Option<u64>,
    /// The SQL the build ran (rendered template).
    pub compiled_sql: Option<String>,
}

/// What the lake knows about one source table. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceDocsInfo {
    /// The replicated table's columns in table order: (name, SQL type). Empty: unknown.
    pub columns: Vec<(String, String)>,
    /// The replication LSN the table is at.
    pub as_of_lsn: Option<String>,
    /// The source commit time of that LSN (free-form text).
    pub as_of_time: Option<String>,
    /// Replication lag behind the source, in milliseconds.
    pub lag_ms: Option<u64>,
    /// Rows in the table.
    pub rows: Option<u64>,
}

/// Build and lake facts for the documentation; `DocsInfo::default()` documents an unbuilt
/// project.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocsInfo {
    /// When the site is generated (free-form text, shown as is and written to the
    /// manifest's and catalog's `metadata.generated_at`). `None`: not shown.
    pub generated_at: Option<String>,
    /// By model name; models without an entry are shown as not built yet.
    pub models: BTreeMap<String, ModelDocsInfo>,
    /// By (source name, table name).
    pub sources: BTreeMap<(String, String), SourceDocsInfo>,
}

/// The files [`Project::docs_site`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocsReport {
    /// Paths relative to the output folder, `/`-separated, sorted: `catalog.json`,
    /// `index.html`, `lineage.html`, `manifest.json`, `models/<model>.html`,
    /// `sources/<source>.<table>.html`.
    pub files: Vec<PathBuf>,
    /// Stale pages removed from `models/` and `sources/` (pages of nodes that no longer
    /// exist), relative to the output folder.
    pub removed: Vec<PathBuf>,
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON safe to embed in a `<script>` element: no `<`, `>`, `&`, U+2028, U+2029.
fn script_json(v: &Json) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// A file-name form of a node name: ASCII letters, digits, `_` and `-` kept, every other
/// byte written `~hh` (so distinct names give distinct files, and `.` can separate).
fn slug(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            let _ = write!(out, "~{b:02x}");
        }
    }
    out
}

/// The page of a node, relative to the site root; `None` for tests.
fn page(node: &NodeId) -> Option<String> {
    match node {
        NodeId::Model(m) => Some(format!("models/{}.html", slug(m))),
        NodeId::Source(s, t) => Some(format!("sources/{}.{}.html", slug(s), slug(t))),
        NodeId::Test(_) => None,
    }
}

const CSS: &str = r#"
:root { --fg:#1d2430; --muted:#5b6575; --line:#d9dee7; --bg:#fff; --accent:#2458b3; --soft:#f3f5f9; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif; color:var(--fg); background:var(--bg); }
header { padding:12px 24px; border-bottom:1px solid var(--line); display:flex; gap:18px; align-items:baseline; flex-wrap:wrap; }
header .brand { font-weight:600; }
main { padding:16px 24px 48px; max-width:1200px; }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
h1 { font-size:24px; margin:8px 0 4px; } h2 { font-size:18px; margin:28px 0 8px; border-bottom:1px solid var(--line); padding-bottom:4px; }
h3 { font-size:15px; margin:18px 0 6px; }
table { border-collapse:collapse; width:100%; margin:6px 0; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-weight:600; color:var(--muted); font-size:13px; }
code, pre { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:13px; }
pre { background:var(--soft); padding:10px 12px; overflow:auto; border-radius:4px; }
.muted { color:var(--muted); }
.tag { display:inline-block; background:var(--soft); border:1px solid var(--line); border-radius:10px; padding:0 7px; font-size:12px; margin-right:3px; }
.desc p { margin:4px 0; white-space:pre-wrap; }
.kv th { width:200px; }
#search { width:100%; max-width:520px; padding:7px 10px; font-size:15px; border:1px solid var(--line); border-radius:4px; }
#results { list-style:none; padding:0; margin:6px 0 0; } #results li { padding:3px 0; }
.lineage { overflow:auto; border:1px solid var(--line); border-radius:4px; background:var(--soft); }
.lineage svg { display:block; }
.node rect { fill:#fff; stroke:#8a94a6; stroke-width:1; }
.node.source rect { fill:#eef7ee; stroke:#5c9a5c; }
.node.ephemeral rect { stroke-dasharray:4 3; }
.node.current rect { stroke:var(--accent); stroke-width:2.5; }
.node text { font:12px system-ui,sans-serif; fill:var(--fg); }
.edge { fill:none; stroke:#9aa3b2; stroke-width:1.2; }
.sev-error { color:#a3261b; } .sev-warn { color:#8a6200; }
"#;

const SEARCH_JS: &str = r#"
(function () {
  var data = JSON.parse(document.getElementById('search-index').textContent);
  var box = document.getElementById('search');
  var out = document.getElementById('results');
  function show() {
    var q = box.value.trim().toLowerCase();
    out.textContent = '';
    if (!q) { out.hidden = true; return; }
    var terms = q.split(/\s+/);
    var shown = 0;
    data.forEach(function (e) {
      var text = [e.name, e.namespace, e.kind, e.description, e.tags.join(' '), e.columns.join(' ')]
        .join(' ').toLowerCase();
      if (!terms.every(function (t) { return text.indexOf(t) >= 0; })) { return; }
      var cols = e.columns.filter(function (c) {
        return terms.some(function (t) { return c.toLowerCase().indexOf(t) >= 0; });
      });
      var li = document.createElement('li');
      var a = document.createElement('a');
      a.href = e.href;
      a.textContent = e.name;
      li.appendChild(a);
      var note = document.createElement('span');
      note.className = 'muted';
      note.textContent = ' ' + e.kind + ' in ' + e.namespace +
        (cols.length ? ' \u00b7 columns: ' + cols.join(', ') : '') +
        (e.description ? ' \u2014 ' + e.description : '');
      li.appendChild(note);
      out.appendChild(li);
      shown += 1;
    });
    if (!shown) {
      var none = document.createElement('li');
      none.className = 'muted';
      none.textContent = 'nothing matches';
      out.appendChild(none);
    }
    out.hidden = false;
  }
  box.addEventListener('input', show);
  show();
})();
"#;

/// A whole page: `root` is the way back to the site root (`""` or `"../"`).
fn html_page(title: &str, project: &str, root: &str, body: &str, script: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} \u{2014} {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
         <header><a class=\"brand\" href=\"{root}index.html\">{}</a>\
         <a href=\"{root}index.html\">Overview</a>\
         <a href=\"{root}lineage.html\">Lineage</a></header>\n<main>\n{body}\n</main>\n{script}</body>\n</html>\n",
        esc(title),
        esc(project),
        esc(project),
    );
    s
}

/// Description text as paragraphs (blank lines separate them); empty gives a muted note.
fn description(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "<p class=\"muted\">No description.</p>".into();
    }
    let mut out = String::from("<div class=\"desc\">");
    for para in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        let _ = write!(out, "<p>{}</p>", esc(para.trim()));
    }
    out.push_str("</div>");
    out
}

fn first_line(text: &str) -> &str {
    text.trim().lines().next().unwrap_or("")
}

fn tags(tags: &[String]) -> String {
    tags.iter()
        .map(|t| format!("<span class=\"tag\">{}</span>", esc(t)))
        .collect()
}

fn bound(b: &Option<FreshnessBound>) -> String {
    match b {
        None => "\u{2014}".into(),
        Some(b) => {
            let period = match b.period {
                crate::project::Period::Minute => "minute",
                crate::project::Period::Hour => "hour",
                crate::project::Period::Day => "day",
            };
            format!(
                "{} {}{}",
                b.count,
                period,
                if b.count == 1 { "" } else { "s" }
            )
        }
    }
}

fn freshness_summary(f: &Option<Freshness>) -> String {
    match f {
        None => "not checked".into(),
        Some(f) => format!(
            "warn after {}, error after {}",
            bound(&f.warn_after),
            bound(&f.error_after)
        ),
    }
}

/// "as of LSN x, built at t" (each part when known), or "not built yet".
fn model_freshness(m: &Model, info: Option<&ModelDocsInfo>) -> String {
    if m.is_ephemeral() {
        return "ephemeral (inlined, not built)".into();
    }
    let Some(i) = info else {
        return "not built yet".into();
    };
    let mut parts = Vec::new();
    if let Some(lsn) = &i.as_of_lsn {
        let mut p = format!("as of LSN {lsn}");
        if let Some(t) = &i.as_of_time {
            let _ = write!(p, " ({t})");
        }
        parts.push(p);
    } else if let Some(t) = &i.as_of_time {
        parts.push(format!("as of {t}"));
    }
    if let Some(b) = &i.built_at {
        parts.push(format!("built at {b}"));
    }
    if parts.is_empty() {
        "not built yet".into()
    } else {
        parts.join(", ")
    }
}

fn ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// Where the node sits in the lineage picture.
struct Placed {
    node: NodeId,
    layer: usize,
    row: usize,
}

const NODE_W: usize = 190;
const NODE_H: usize = 30;
const GAP_X: usize = 70;
const GAP_Y: usize = 14;
const MARGIN: usize = 12;

impl Project {
    /// Models and sources of `nodes` in layers by depth: sources in layer 0; a model one
    /// layer right of its deepest parent in `nodes` (layer 1 at least when `nodes` has a
    /// source, 0 otherwise). Within a layer, nodes are ordered by the mean row of their
    /// parents (barycenter), then by name.
    fn layers(&self, nodes: &BTreeSet<NodeId>) -> Vec<Placed> {
        let order = self.graph.topo_order().unwrap_or_default();
        let any_source = nodes.iter().any(|n| matches!(n, NodeId::Source(..)));
        let mut depth: BTreeMap<&NodeId, usize> = BTreeMap::new();
        for n in order.iter().filter(|n| nodes.contains(*n)) {
            let d = match n {
                NodeId::Source(..) => 0,
                NodeId::Model(_) => {
                    let base = usize::from(any_source);
                    self.graph.parents[n]
                        .iter()
                        .filter_map(|p| depth.get(p))
                        .map(|d| d + 1)
                        .max()
                        .unwrap_or(base)
                        .max(base)
                }
                NodeId::Test(_) => continue,
            };
            depth.insert(n, d);
        }
        let layer_count = depth.values().max().map_or(0, |d| d + 1);
        let mut layers: Vec<Vec<&NodeId>> = vec![Vec::new(); layer_count];
        for (n, d) in &depth {
            layers[*d].push(n);
        }
        let mut row_of: HashMap<&NodeId, usize> = HashMap::new();
        let mut out = Vec::new();
        for (li, layer) in layers.iter_mut().enumerate() {
            let key = |n: &NodeId| -> f64 {
                let rows: Vec<usize> = self.graph.parents[n]
                    .iter()
                    .filter_map(|p| row_of.get(p).copied())
                    .collect();
                if rows.is_empty() {
                    f64::MAX
                } else {
                    rows.iter().sum::<usize>() as f64 / rows.len() as f64
                }
            };
            let mut keyed: Vec<(f64, &NodeId)> = layer.iter().map(|n| (key(n), *n)).collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
            *layer = keyed.into_iter().map(|(_, n)| n).collect();
            for (row, n) in layer.iter().enumerate() {
                row_of.insert(*n, row);
                out.push(Placed {
                    node: (*n).clone(),
                    layer: li,
                    row,
                });
            }
        }
        out
    }

    /// The lineage of `nodes` as an inline SVG: one `<g class="node ...">` per model and
    /// source (each a link to its page, `root` leading to the site root), one path per
    /// edge between two of them. `current` is highlighted.
    fn lineage_svg(
        &self,
        nodes: &BTreeSet<NodeId>,
        current: Option<&NodeId>,
        root: &str,
    ) -> String {
        let placed = self.layers(nodes);
        if placed.is_empty() {
            return "<p class=\"muted\">Nothing to draw.</p>".into();
        }
        let pos: HashMap<&NodeId, (usize, usize)> = placed
            .iter()
            .map(|p| {
                (
                    &p.node,
                    (
                        MARGIN + p.layer * (NODE_W + GAP_X),
                        MARGIN + p.row * (NODE_H + GAP_Y),
                    ),
                )
            })
            .collect();
        let width = pos.values().map(|p| p.0).max().unwrap_or(0) + NODE_W + MARGIN;
        let height = pos.values().map(|p| p.1).max().unwrap_or(0) + NODE_H + MARGIN;
        let mut s = String::new();
        let _ = write!(
            s,
            "<div class=\"lineage\"><svg role=\"img\" aria-label=\"lineage\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">"
        );
        for p in &placed {
            let (x2, y2) = pos[&p.node];
            for parent in &self.graph.parents[&p.node] {
                let Some(&(x1, y1)) = pos.get(parent) else {
                    continue;
                };
                let (sx, sy) = (x1 + NODE_W, y1 + NODE_H / 2);
                let (ex, ey) = (x2, y2 + NODE_H / 2);
                let mid = (sx + ex) / 2;
                let _ = write!(
                    s,
                    "<path class=\"edge\" d=\"M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}\"/>"
                );
            }
        }
        for p in &placed {
            let (x, y) = pos[&p.node];
            let label = p.node.to_string();
            let shown: String = if label.chars().count() > 26 {
                label.chars().take(25).chain(['\u{2026}']).collect()
            } else {
                label.clone()
            };
            let mut class = match &p.node {
                NodeId::Source(..) => "node source".to_string(),
                _ => "node model".to_string(),
            };
            if let NodeId::Model(m) = &p.node
                && self.models.get(m).is_some_and(Model::is_ephemeral)
            {
                class.push_str(" ephemeral");
            }
            if current == Some(&p.node) {
                class.push_str(" current");
            }
            let href = page(&p.node).unwrap_or_default();
            let _ = write!(
                s,
                "<a href=\"{root}{href}\"><g class=\"{class}\" data-id=\"{}\"><title>{}</title>\
                 <rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"5\"/>\
                 <text x=\"{}\" y=\"{}\">{}</text></g></a>",
                esc(&p.node.unique_id(&self.name)),
                esc(&label),
                x + 9,
                y + NODE_H / 2 + 4,
                esc(&shown),
            );
        }
        s.push_str("</svg></div>");
        s
    }

    fn node_link(&self, node: &NodeId, root: &str) -> String {
        match page(node) {
            Some(p) => format!("<a href=\"{root}{p}\">{}</a>", esc(&node.to_string())),
            None => format!("<code>{}</code>", esc(&node.to_string())),
        }
    }

    fn link_list(&self, nodes: &[NodeId], root: &str) -> String {
        if nodes.is_empty() {
            return "<span class=\"muted\">none</span>".into();
        }
        nodes
            .iter()
            .map(|n| self.node_link(n, root))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Tests attached to `node` or reading it.
    fn tests_of(&self, node: &NodeId) -> Vec<&DataTest> {
        self.tests
            .values()
            .filter(|t| t.attached_to.as_ref() == Some(node) || t.depends_on.contains(node))
            .collect()
    }

    fn test_row(&self, t: &DataTest, root: &str) -> String {
        let (sev_class, sev) = match t.config.severity {
            Severity::Error => ("sev-error", "error"),
            Severity::Warn => ("sev-warn", "warn"),
        };
        let detail = match &t.kind {
            TestKind::Generic(g) => {
                let mut d = format!("{} on <code>{}</code>", g.test_name(), esc(g.column()));
                match g {
                    crate::data_tests::GenericTest::AcceptedValues { values, .. } => {
                        let vals: Vec<String> = values
                            .iter()
                            .map(|v| match v {
                                Json::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect();
                        let _ = write!(d, ": {}", esc(&vals.join(", ")));
                    }
                    crate::data_tests::GenericTest::Relationships { to, field, .. } => {
                        let _ = write!(
                            d,
                            " \u{2192} {}.<code>{}</code>",
                            self.node_link(to, root),
                            esc(field)
                        );
                    }
                    _ => {}
                }
                d
            }
            TestKind::Singular { .. } => format!(
                "singular test <code>{}</code>",
                esc(&t.path.to_string_lossy())
            ),
        };
        let mut cond = String::new();
        if let Some(w) = &t.config.where_clause {
            let _ = write!(cond, "where <code>{}</code>", esc(w));
        }
        format!(
            "<tr><td><code>{}</code></td><td>{detail}</td><td class=\"{sev_class}\">{sev}</td><td>{cond}</td></tr>",
            esc(&t.name)
        )
    }

    fn tests_table(&self, tests: &[&DataTest], root: &str) -> String {
        if tests.is_empty() {
            return "<p class=\"muted\">No tests.</p>".into();
        }
        let mut s = String::from(
            "<table><tr><th>test</th><th>checks</th><th>severity</th><th>condition</th></tr>",
        );
        for t in tests {
            s.push_str(&self.test_row(t, root));
        }
        s.push_str("</table>");
        s
    }

    /// Columns: the table's (with types) when known, described from YAML; then YAML-only
    /// columns. Each row lists the generic tests on that column.
    fn columns_table(
        &self,
        yaml: &[Column],
        actual: &[(String, String)],
        tests: &[&DataTest],
    ) -> String {
        let tests_on = |name: &str| -> String {
            let quoted = crate::template::quote_ident(name);
            tests
                .iter()
                .filter_map(|t| match &t.kind {
                    TestKind::Generic(g)
                        if g.column() == name
                            || g.column() == quoted
                            || g.column().eq_ignore_ascii_case(name) =>
                    {
                        Some(format!("<span class=\"tag\">{}</span>", esc(g.test_name())))
                    }
                    _ => None,
                })
                .collect()
        };
        let mut rows: Vec<(String, String, String)> = Vec::new();
        let mut documented: BTreeSet<String> = BTreeSet::new();
        for (name, ty) in actual {
            let y = yaml.iter().find(|c| c.name.eq_ignore_ascii_case(name));
            if let Some(y) = y {
                documented.insert(y.name.clone());
            }
            rows.push((
                name.clone(),
                esc(ty),
                y.map(|c| esc(&c.description)).unwrap_or_default(),
            ));
        }
        for c in yaml.iter().filter(|c| !documented.contains(&c.name)) {
            let ty = match (&c.data_type, actual.is_empty()) {
                (Some(t), true) => format!("{} <span class=\"muted\">(declared)</span>", esc(t)),
                (_, false) => "<span class=\"muted\">not in the table</span>".into(),
                (None, true) => "<span class=\"muted\">unknown</span>".into(),
            };
            rows.push((c.name.clone(), ty, esc(&c.description)));
        }
        if rows.is_empty() {
            return "<p class=\"muted\">No documented columns (types appear once it is built).</p>"
                .into();
        }
        let mut s = String::from(
            "<table><tr><th>column</th><th>type</th><th>description</th><th>tests</th></tr>",
        );
        for (name, ty, desc) in rows {
            let _ = write!(
                s,
                "<tr><td><code>{}</code></td><td>{ty}</td><td>{desc}</td><td>{}</td></tr>",
                esc(&name),
                tests_on(&name)
            );
        }
        s.push_str("</table>");
        s
    }

    /// The nodes around `n` for its page's picture: ancestors and descendants within two
    /// steps, models and sources only.
    fn neighbourhood(&self, n: &NodeId) -> BTreeSet<NodeId> {
        let mut set: BTreeSet<NodeId> = self.graph.ancestors(n, Some(2));
        set.extend(self.graph.descendants(n, Some(2)));
        set.insert(n.clone());
        set.retain(|x| !matches!(x, NodeId::Test(_)));
        set
    }

    fn model_page(&self, m: &Model, info: Option<&ModelDocsInfo>) -> String {
        let root = "../";
        let id = NodeId::Model(m.name.clone());
        let c = &m.config;
        let mut b = String::new();
        let _ = write!(
            b,
            "<p class=\"muted\">model \u{b7} {}</p><h1>{}</h1>",
            esc(&m.namespace),
            esc(&m.name)
        );
        let relation = if m.is_ephemeral() {
            "ephemeral: inlined into the models that use it".to_string()
        } else {
            format!("<code>{}</code>", esc(&self.model_relation(m).quoted()))
        };
        let _ = write!(
            b,
            "<p>{relation} \u{b7} <code>{}</code>{}</p>",
            esc(&m.path.to_string_lossy()),
            m.properties_path
                .as_ref()
                .map(|p| format!(
                    " \u{b7} documented in <code>{}</code>",
                    esc(&p.to_string_lossy())
                ))
                .unwrap_or_default()
        );
        b.push_str(&description(&m.description));

        b.push_str("<h2>Configuration</h2><table class=\"kv\">");
        let none = "<span class=\"muted\">\u{2014}</span>".to_string();
        let mut kv = |k: &str, v: String| {
            let _ = write!(b, "<tr><th>{k}</th><td>{v}</td></tr>");
        };
        kv("materialized", esc(c.materialized.as_str()));
        kv(
            "unique_key",
            if c.unique_key.is_empty() {
                none.clone()
            } else {
                format!("<code>{}</code>", esc(&c.unique_key.join(", ")))
            },
        );
        kv(
            "incremental strategy",
            c.incremental_strategy
                .map_or(none.clone(), |s| esc(s.as_str())),
        );
        kv(
            "schedule",
            c.schedule
                .as_ref()
                .map_or(none.clone(), |s| format!("<code>{}</code>", esc(s))),
        );
        kv(
            "tags",
            if c.tags.is_empty() {
                none.clone()
            } else {
                tags(&c.tags)
            },
        );
        b.push_str("</table>");

        b.push_str("<h2>Last build</h2>");
        match info {
            None if m.is_ephemeral() => {
                b.push_str("<p class=\"muted\">Ephemeral models are not built.</p>");
            }
            None => b.push_str("<p class=\"muted\">Not built yet.</p>"),
            Some(i) => {
                b.push_str("<table class=\"kv\">");
                let mut kv = |k: &str, v: Option<String>| {
                    if let Some(v) = v {
                        let _ = write!(b, "<tr><th>{k}</th><td>{}</td></tr>", esc(&v));
                    }
                };
                kv("status", i.status.clone());
                kv("as of LSN", i.as_of_lsn.clone());
                kv("as of", i.as_of_time.clone());
                kv("built at", i.built_at.clone());
                kv("duration", i.duration_ms.map(ms));
                kv("rows", i.rows.map(|r| r.to_string()));
                b.push_str("</table>");
            }
        }

        let tests = self.tests_of(&id);
        b.push_str("<h2>Columns</h2>");
        let actual = info.map(|i| i.columns.as_slice()).unwrap_or_default();
        b.push_str(&self.columns_table(&m.columns, actual, &tests));

        b.push_str("<h2>Tests</h2>");
        b.push_str(&self.tests_table(&tests, root));

        b.push_str("<h2>Lineage</h2><table class=\"kv\">");
        let parents: Vec<NodeId> = self
            .parents(&id)
            .into_iter()
            .filter(|n| !matches!(n, NodeId::Test(_)))
            .collect();
        let children: Vec<NodeId> = self
            .children(&id)
            .into_iter()
            .filter(|n| !matches!(n, NodeId::Test(_)))
            .collect();
        let _ = write!(
            b,
            "<tr><th>depends on</th><td>{}</td></tr><tr><th>used by</th><td>{}</td></tr></table>",
            self.link_list(&parents, root),
            self.link_list(&children, root)
        );
        b.push_str(&self.lineage_svg(&self.neighbourhood(&id), Some(&id), root));

        b.push_str("<h2>SQL</h2><h3>Template</h3>");
        let _ = write!(b, "<pre><code>{}</code></pre>", esc(&m.raw_sql));
        if let Some(sql) = info.and_then(|i| i.compiled_sql.as_ref()) {
            let _ = write!(b, "<h3>Compiled</h3><pre><code>{}</code></pre>", esc(sql));
        }
        html_page(&m.name, &self.name, root, &b, "")
    }

    fn source_page(&self, s: &SourceTable, info: Option<&SourceDocsInfo>) -> String {
        let root = "../";
        let id = NodeId::Source(s.source.clone(), s.name.clone());
        let mut b = String::new();
        let _ = write!(
            b,
            "<p class=\"muted\">source \u{b7} {}</p><h1>{}.{}</h1>",
            esc(&s.source),
            esc(&s.source),
            esc(&s.name)
        );
        let _ = write!(
            b,
            "<p><code>{}</code> \u{b7} declared in <code>{}</code>:{}</p>",
            esc(&self.source_relation(s).quoted()),
            esc(&s.path.to_string_lossy()),
            s.line
        );
        b.push_str(&description(&s.description));
        if !s.source_description.trim().is_empty() {
            let _ = write!(
                b,
                "<h3>Source {}</h3>{}",
                esc(&s.source),
                description(&s.source_description)
            );
        }
        b.push_str("<h2>Freshness</h2><table class=\"kv\">");
        let none = "<span class=\"muted\">\u{2014}</span>".to_string();
        let _ = write!(
            b,
            "<tr><th>loaded_at_field</th><td>{}</td></tr>",
            s.loaded_at_field
                .as_ref()
                .map_or(none.clone(), |f| format!("<code>{}</code>", esc(f)))
        );
        match &s.freshness {
            None => b.push_str("<tr><th>thresholds</th><td>not checked</td></tr>"),
            Some(f) => {
                let _ = write!(
                    b,
                    "<tr><th>warn after</th><td>{}</td></tr><tr><th>error after</th><td>{}</td></tr>",
                    bound(&f.warn_after),
                    bound(&f.error_after)
                );
                if let Some(filter) = &f.filter {
                    let _ = write!(
                        b,
                        "<tr><th>filter</th><td><code>{}</code></td></tr>",
                        esc(filter)
                    );
                }
            }
        }
        if let Some(i) = info {
            let mut kv = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    let _ = write!(b, "<tr><th>{k}</th><td>{}</td></tr>", esc(&v));
                }
            };
            kv("replicated as of LSN", i.as_of_lsn.clone());
            kv("as of", i.as_of_time.clone());
            kv("replication lag", i.lag_ms.map(ms));
            kv("rows", i.rows.map(|r| r.to_string()));
        }
        b.push_str("</table>");

        let tests = self.tests_of(&id);
        b.push_str("<h2>Columns</h2>");
        let actual = info.map(|i| i.columns.as_slice()).unwrap_or_default();
        b.push_str(&self.columns_table(&s.columns, actual, &tests));
        b.push_str("<h2>Tests</h2>");
        b.push_str(&self.tests_table(&tests, root));

        b.push_str("<h2>Downstream models</h2>");
        let downstream: Vec<NodeId> = self
            .descendants(&id)
            .into_iter()
            .filter(|n| matches!(n, NodeId::Model(_)))
            .collect();
        let _ = write!(b, "<p>{}</p>", self.link_list(&downstream, root));
        b.push_str(&self.lineage_svg(&self.neighbourhood(&id), Some(&id), root));
        html_page(
            &format!("{}.{}", s.source, s.name),
            &self.name,
            root,
            &b,
            "",
        )
    }

    fn search_index(&self) -> Json {
        let mut items = Vec::new();
        for m in self.models.values() {
            items.push(json!({
                "kind": "model",
                "name": m.name,
                "namespace": m.namespace,
                "description": first_line(&m.description),
                "tags": m.config.tags,
                "columns": m.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                "href": page(&NodeId::Model(m.name.clone())),
            }));
        }
        for s in self.sources.values() {
            items.push(json!({
                "kind": "source",
                "name": format!("{}.{}", s.source, s.name),
                "namespace": s.namespace,
                "description": first_line(&s.description),
                "tags": [],
                "columns": s.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                "href": page(&NodeId::Source(s.source.clone(), s.name.clone())),
            }));
        }
        Json::Array(items)
    }

    /// The search index with the columns the builder found added to the YAML ones.
    fn search_index_with(&self, info: &DocsInfo) -> Json {
        let mut index = self.search_index();
        if let Json::Array(items) = &mut index {
            for item in items {
                let (kind, name) = (item["kind"].clone(), item["name"].clone());
                let extra: Vec<String> = match (kind.as_str(), name.as_str()) {
                    (Some("model"), Some(n)) => info
                        .models
                        .get(n)
                        .map(|i| i.columns.iter().map(|c| c.0.clone()).collect())
                        .unwrap_or_default(),
                    (Some("source"), Some(n)) => n
                        .split_once('.')
                        .and_then(|(s, t)| info.sources.get(&(s.to_string(), t.to_string())))
                        .map(|i| i.columns.iter().map(|c| c.0.clone()).collect())
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                if let Some(Json::Array(cols)) = item.get_mut("columns") {
                    for c in extra {
                        if !cols
                            .iter()
                            .any(|x| x.as_str().is_some_and(|x| x.eq_ignore_ascii_case(&c)))
                        {
                            cols.push(Json::String(c));
                        }
                    }
                }
            }
        }
        index
    }

    fn index_page(&self, info: &DocsInfo) -> String {
        let root = "";
        let mut b = String::new();
        let _ = write!(b, "<h1>{}</h1>", esc(&self.name));
        let built = info.models.len();
        let _ = write!(
            b,
            "<p class=\"muted\">{} models, {} source tables, {} tests{}{}</p>",
            self.models.len(),
            self.sources.len(),
            self.tests.len(),
            if built > 0 {
                format!(", {built} with build information")
            } else {
                String::new()
            },
            info.generated_at
                .as_ref()
                .map(|g| format!(" \u{b7} generated {}", esc(g)))
                .unwrap_or_default()
        );
        b.push_str(
            "<input id=\"search\" type=\"search\" placeholder=\"Search models, sources and columns\" \
             aria-label=\"search\" autocomplete=\"off\"><ul id=\"results\" hidden></ul>",
        );

        // namespaces
        let mut namespaces: BTreeMap<&str, (Vec<&Model>, usize)> = BTreeMap::new();
        for m in self.models.values() {
            namespaces.entry(&m.namespace).or_default().0.push(m);
        }
        for s in self.sources.values() {
            namespaces.entry(&s.namespace).or_default().1 += 1;
        }
        b.push_str("<h2>Namespaces</h2><table><tr><th>namespace</th><th>models</th><th>source tables</th></tr>");
        for (ns, (models, sources)) in &namespaces {
            let link = if models.is_empty() {
                format!("<a href=\"#sources\">{}</a>", esc(ns))
            } else {
                format!("<a href=\"#ns-{}\">{}</a>", slug(ns), esc(ns))
            };
            let _ = write!(
                b,
                "<tr><td>{link}</td><td>{}</td><td>{sources}</td></tr>",
                models.len()
            );
        }
        b.push_str("</table>");

        b.push_str("<h2>Models</h2>");
        for (ns, (models, _)) in namespaces.iter().filter(|(_, (m, _))| !m.is_empty()) {
            let _ = write!(
                b,
                "<h3 id=\"ns-{}\">{}</h3><table><tr><th>model</th><th>materialized</th><th>tags</th><th>description</th><th>freshness</th></tr>",
                slug(ns),
                esc(ns)
            );
            for m in models {
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    self.node_link(&NodeId::Model(m.name.clone()), root),
                    esc(m.config.materialized.as_str()),
                    tags(&m.config.tags),
                    esc(first_line(&m.description)),
                    esc(&model_freshness(m, info.models.get(&m.name)))
                );
            }
            b.push_str("</table>");
        }
        if self.models.is_empty() {
            b.push_str("<p class=\"muted\">No models.</p>");
        }
        if !self.disabled.is_empty() {
            let names: Vec<String> = self
                .disabled
                .keys()
                .map(|n| format!("<code>{}</code>", esc(n)))
                .collect();
            let _ = write!(b, "<p class=\"muted\">Disabled: {}</p>", names.join(", "));
        }

        b.push_str("<h2 id=\"sources\">Sources</h2>");
        if self.sources.is_empty() {
            b.push_str("<p class=\"muted\">No sources declared.</p>");
        } else {
            b.push_str("<table><tr><th>source table</th><th>lake table</th><th>description</th><th>loaded_at_field</th><th>freshness</th><th>replication</th></tr>");
            for s in self.sources.values() {
                let key = (s.source.clone(), s.name.clone());
                let repl = info
                    .sources
                    .get(&key)
                    .map(|i| {
                        let mut parts = Vec::new();
                        if let Some(l) = &i.as_of_lsn {
                            parts.push(format!("as of LSN {l}"));
                        }
                        if let Some(l) = i.lag_ms {
                            parts.push(format!("lag {}", ms(l)));
                        }
                        parts.join(", ")
                    })
                    .unwrap_or_default();
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    self.node_link(&NodeId::Source(key.0.clone(), key.1.clone()), root),
                    esc(&format!("{}.{}", s.namespace, s.identifier)),
                    esc(first_line(&s.description)),
                    s.loaded_at_field
                        .as_ref()
                        .map(|f| format!("<code>{}</code>", esc(f)))
                        .unwrap_or_default(),
                    esc(&freshness_summary(&s.freshness)),
                    esc(&repl)
                );
            }
            b.push_str("</table>");
        }
        let script = format!(
            "<script type=\"application/json\" id=\"search-index\">{}</script>\n<script>{SEARCH_JS}</script>\n",
            script_json(&self.search_index_with(info))
        );
        html_page("Overview", &self.name, root, &b, &script)
    }

    fn lineage_page(&self) -> String {
        let all: BTreeSet<NodeId> = self
            .graph
            .parents
            .keys()
            .filter(|n| !matches!(n, NodeId::Test(_)))
            .cloned()
            .collect();
        let mut b = String::from(
            "<h1>Lineage</h1><p class=\"muted\">Sources on the left; each model one column right of its deepest dependency. Dashed: ephemeral.</p>",
        );
        b.push_str(&self.lineage_svg(&all, None, ""));
        html_page("Lineage", &self.name, "", &b, "")
    }

    /// A dbt-shaped `catalog.json`: `metadata`, `nodes` (built models) and `sources`, each
    /// with `metadata` (type, schema, name, comment), `columns` ({name, type, index,
    /// comment}, index 1-based) and `stats`; `errors: null`. Columns are the built
    /// table's when `info` has them, else the documented ones with their declared type.
    pub fn catalog(&self, info: &DocsInfo) -> Json {
        fn cols(yaml: &[Column], actual: &[(String, String)]) -> Json {
            let mut out = Map::new();
            if actual.is_empty() {
                for (i, c) in yaml.iter().enumerate() {
                    out.insert(
                        c.name.clone(),
                        json!({"name": c.name, "type": c.data_type, "index": i + 1, "comment": (!c.description.is_empty()).then_some(&c.description)}),
                    );
                }
            } else {
                for (i, (name, ty)) in actual.iter().enumerate() {
                    let comment = yaml
                        .iter()
                        .find(|c| c.name.eq_ignore_ascii_case(name))
                        .filter(|c| !c.description.is_empty())
                        .map(|c| c.description.clone());
                    out.insert(
                        name.clone(),
                        json!({"name": name, "type": ty, "index": i + 1, "comment": comment}),
                    );
                }
            }
            Json::Object(out)
        }
        fn stat(id: &str, label: &str, value: Json, description: &str) -> (String, Json) {
            (
                id.to_string(),
                json!({"id": id, "label": label, "value": value, "include": true, "description": description}),
            )
        }
        fn stats(rows: Option<u64>, lsn: Option<&String>) -> Json {
            let mut out = Map::new();
            let has = rows.is_some() || lsn.is_some();
            out.insert(
                "has_stats".into(),
                json!({"id": "has_stats", "label": "Has Stats?", "value": has, "include": false, "description": "Whether statistics are known"}),
            );
            if let Some(r) = rows {
                let (k, v) = stat("num_rows", "# Rows", json!(r), "Rows in the table");
                out.insert(k, v);
            }
            if let Some(l) = lsn {
                let (k, v) = stat(
                    "as_of_lsn",
                    "As of LSN",
                    json!(l),
                    "The replication LSN the data is at",
                );
                out.insert(k, v);
            }
            Json::Object(out)
        }
        let mut nodes = Map::new();
        for m in self.models.values().filter(|m| !m.is_ephemeral()) {
            let i = info.models.get(&m.name);
            let id = NodeId::Model(m.name.clone()).unique_id(&self.name);
            let ty = match m.config.materialized {
                crate::Materialized::View => "VIEW",
                _ => "BASE TABLE",
            };
            nodes.insert(
                id.clone(),
                json!({
                    "unique_id": id,
                    "metadata": {"type": ty, "schema": m.namespace, "name": m.identifier(), "database": null, "comment": (!m.description.is_empty()).then_some(&m.description), "owner": null},
                    "columns": cols(&m.columns, i.map(|i| i.columns.as_slice()).unwrap_or_default()),
                    "stats": stats(i.and_then(|i| i.rows), i.and_then(|i| i.as_of_lsn.as_ref())),
                }),
            );
        }
        let mut sources = Map::new();
        for s in self.sources.values() {
            let i = info.sources.get(&(s.source.clone(), s.name.clone()));
            let id = NodeId::Source(s.source.clone(), s.name.clone()).unique_id(&self.name);
            sources.insert(
                id.clone(),
                json!({
                    "unique_id": id,
                    "metadata": {"type": "BASE TABLE", "schema": s.namespace, "name": s.identifier, "database": null, "comment": (!s.description.is_empty()).then_some(&s.description), "owner": null},
                    "columns": cols(&s.columns, i.map(|i| i.columns.as_slice()).unwrap_or_default()),
                    "stats": stats(i.and_then(|i| i.rows), i.and_then(|i| i.as_of_lsn.as_ref())),
                }),
            );
        }
        json!({
            "metadata": {
                "dbt_schema_version": "https://schemas.getdbt.com/dbt/catalog/v1.json",
                "generator": "walden",
                "walden_version": env!("CARGO_PKG_VERSION"),
                "generated_at": info.generated_at,
                "project_name": self.name,
            },
            "nodes": nodes,
            "sources": sources,
            "errors": null,
        })
    }

    /// Writes the documentation site into `out_dir` (created if missing).
    ///
    /// Files: `index.html` (namespaces, models by namespace with materialization, tags,
    /// first description line and freshness, sources with their freshness settings, a
    /// search box over models, sources and columns), `lineage.html` (the whole DAG as
    /// SVG, sources leftmost), `models/<model>.html` per enabled model (ephemeral ones
    /// included), `sources/<source>.<table>.html` per source table, `manifest.json`
    /// ([`Project::manifest`] with `info`'s compiled SQL and `generated_at`) and
    /// `catalog.json` ([`Project::catalog`]). Names in file names keep ASCII letters,
    /// digits, `_` and `-`; other bytes are written `~hh`. Every link between pages is
    /// relative, so the folder can be opened from disk or served anywhere.
    ///
    /// Other `.html` files in `models/` and `sources/` (pages of removed nodes) are
    /// deleted; nothing else in `out_dir` is touched. Errors name the file that could not
    /// be written.
    pub fn docs_site(&self, out_dir: &Path, info: &DocsInfo) -> Result<DocsReport, Error> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let mut files: Vec<(String, String)> = Vec::new();
        files.push(("index.html".into(), self.index_page(info)));
        files.push(("lineage.html".into(), self.lineage_page()));
        for m in self.models.values() {
            let p = page(&NodeId::Model(m.name.clone())).unwrap_or_default();
            files.push((p, self.model_page(m, info.models.get(&m.name))));
        }
        for s in self.sources.values() {
            let key = (s.source.clone(), s.name.clone());
            let p = page(&NodeId::Source(key.0.clone(), key.1.clone())).unwrap_or_default();
            files.push((p, self.source_page(s, info.sources.get(&key))));
        }
        let compiled: HashMap<String, String> = info
            .models
            .iter()
            .filter_map(|(n, i)| i.compiled_sql.clone().map(|sql| (n.clone(), sql)))
            .collect();
        let extra = match &info.generated_at {
            Some(g) => json!({"generated_at": g}),
            None => json!({}),
        };
        let pretty = |v: &Json| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
        files.push((
            "manifest.json".into(),
            pretty(&self.manifest(&compiled, extra)),
        ));
        files.push(("catalog.json".into(), pretty(&self.catalog(info))));

        for dir in [
            out_dir.to_path_buf(),
            out_dir.join("models"),
            out_dir.join("sources"),
        ] {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        let written: BTreeSet<PathBuf> = files.iter().map(|(p, _)| PathBuf::from(p)).collect();
        let mut removed = Vec::new();
        for sub in ["models", "sources"] {
            let dir = out_dir.join(sub);
            let entries = std::fs::read_dir(&dir).map_err(io(&dir))?;
            for entry in entries {
                let path = entry.map_err(io(&dir))?.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let rel = PathBuf::from(format!("{sub}/{name}"));
                if name.ends_with(".html") && path.is_file() && !written.contains(&rel) {
                    std::fs::remove_file(&path).map_err(io(&path))?;
                    removed.push(rel);
                }
            }
        }
        for (rel, text) in &files {
            let path = out_dir.join(rel);
            std::fs::write(&path, text).map_err(io(&path))?;
        }
        removed.sort();
        Ok(DocsReport {
            files: written.into_iter().collect(),
            removed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_slugs() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(
            script_json(&json!({"d": "</script><b>&"})),
            r#"{"d":"\u003c/script\u003e\u003cb\u003e\u0026"}"#
        );
        assert_eq!(slug("stg_orders-2"), "stg_orders-2");
        assert_eq!(slug("a.b c"), "a~2eb~20c");
        assert_ne!(slug("a~2e"), slug("a."));
    }
}
