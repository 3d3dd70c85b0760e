//! The documentation site: files, links, escaping, lineage SVG, manifest and catalog.

use std::path::{Path, PathBuf};

use walden_models::{DocsInfo, ModelDocsInfo, Project, SourceDocsInfo};

use crate::common::*;

fn example_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The values of every `attr="..."` in `html`.
fn attrs<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let pat = format!("{attr}=\"");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&pat) {
        let after = &rest[i + pat.len()..];
        let end = after.find('"').expect("closed attribute");
        out.push(&after[..end]);
        rest = &after[end..];
    }
    out
}

/// Checks that every link of every page resolves (files and `#fragment`s) and that no
/// page refers to anything outside the site. Returns the number of links checked.
fn check_links(out: &Path, files: &[PathBuf]) -> usize {
    let mut checked = 0;
    for rel in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "html"))
    {
        let path = out.join(rel);
        let html = read(&path);
        assert!(
            !html.contains("http://") && !html.contains("https://") && !html.contains("src=\""),
            "{} refers to something outside the site",
            rel.display()
        );
        for href in attrs(&html, "href") {
            checked += 1;
            let (file, fragment) = href.split_once('#').unwrap_or((href, ""));
            let target = if file.is_empty() {
                path.clone()
            } else {
                path.parent().unwrap().join(file)
            };
            assert!(
                target.is_file(),
                "{}: link '{href}' points to a missing file",
                rel.display()
            );
            if !fragment.is_empty() {
                let text = read(&target);
                assert!(
                    text.contains(&format!("id=\"{fragment}\"")),
                    "{}: link '{href}' points to a missing anchor",
                    rel.display()
                );
            }
        }
    }
    checked
}

/// The search index embedded in index.html.
fn search_index(index_html: &str) -> serde_json::Value {
    let start = index_html
        .find("<script type=\"application/json\" id=\"search-index\">")
        .unwrap();
    let body = &index_html[start..];
    let body = &body[body.find('>').unwrap() + 1..body.find("</script>").unwrap()];
    serde_json::from_str(body).unwrap()
}

fn svg_nodes(html: &str) -> Vec<String> {
    attrs(html, "data-id")
        .into_iter()
        .map(str::to_string)
        .collect()
}

fn check_site(p: &Project, info: &DocsInfo) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let report = p.docs_site(out.path(), info).unwrap();
    let mut expected: Vec<PathBuf> = [
        "catalog.json",
        "index.html",
        "lineage.html",
        "manifest.json",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for m in p.models() {
        expected.push(PathBuf::from(format!("models/{}.html", m.name)));
    }
    for s in p.sources() {
        expected.push(PathBuf::from(format!(
            "sources/{}.{}.html",
            s.source, s.name
        )));
    }
    expected.sort();
    assert_eq!(report.files, expected);
    for f in &report.files {
        assert!(out.path().join(f).is_file(), "{} missing", f.display());
    }
    let links = check_links(out.path(), &report.files);
    assert!(links > report.files.len(), "only {links} links");

    // the whole DAG: one SVG node per model and per source table, each once
    let lineage = read(&out.path().join("lineage.html"));
    let mut nodes = svg_nodes(&lineage);
    let n = nodes.len();
    nodes.sort();
    nodes.dedup();
    assert_eq!(n, nodes.len(), "a node drawn twice");
    let mut want: Vec<String> = p
        .models()
        .map(|m| format!("model.{}.{}", p.name, m.name))
        .chain(
            p.sources()
                .map(|s| format!("source.{}.{}.{}", p.name, s.source, s.name)),
        )
        .collect();
    want.sort();
    assert_eq!(nodes, want);
    assert_eq!(
        lineage.matches("class=\"node ").count(),
        p.models().count() + p.sources().count()
    );
    // sources are leftmost: every source's box is at the first column's x
    for s in p.sources() {
        let id = format!("data-id=\"source.{}.{}.{}\"", p.name, s.source, s.name);
        let at = lineage.find(&id).unwrap();
        assert!(lineage[at..].contains("<rect x=\"12\""), "{id}");
        let rect = &lineage[at..at + lineage[at..].find("/>").unwrap()];
        assert!(
            rect.contains("<rect x=\"12\" "),
            "{id} not leftmost: {rect}"
        );
    }
    // every edge is drawn left to right
    for d in attrs(&lineage, " d") {
        let nums: Vec<f64> = d
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(nums[0] < nums[nums.len() - 2], "edge goes backwards: {d}");
    }

    // the search index covers every model and source, with page links
    let index = read(&out.path().join("index.html"));
    let items = search_index(&index);
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), p.models().count() + p.sources().count());
    for item in items {
        let href = item["href"].as_str().unwrap();
        assert!(out.path().join(href).is_file(), "{href}");
    }

    // manifest and catalog parse with the expected keys
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&out.path().join("manifest.json"))).unwrap();
    for key in [
        "metadata",
        "nodes",
        "sources",
        "parent_map",
        "child_map",
        "disabled",
    ] {
        assert!(manifest.get(key).is_some(), "manifest has no {key}");
    }
    for m in p.models() {
        assert!(manifest["nodes"][format!("model.{}.{}", p.name, m.name)].is_object());
    }
    let catalog: serde_json::Value =
        serde_json::from_str(&read(&out.path().join("catalog.json"))).unwrap();
    for key in ["metadata", "nodes", "sources", "errors"] {
        assert!(catalog.get(key).is_some(), "catalog has no {key}");
    }
    for m in p.models().filter(|m| !m.is_ephemeral()) {
        let node = &catalog["nodes"][format!("model.{}.{}", p.name, m.name)];
        assert_eq!(node["metadata"]["schema"], m.namespace.as_str());
        assert_eq!(node["metadata"]["name"], m.identifier());
        assert!(node["columns"].is_object() && node["stats"]["has_stats"].is_object());
    }
    assert_eq!(
        catalog["sources"].as_object().unwrap().len(),
        p.sources().count()
    );
    out
}

#[test]
fn the_fixture_project_documents_unbuilt() {
    let p = shop();
    let out = check_site(&p, &DocsInfo::default());
    let index = read(&out.path().join("index.html"));
    assert!(index.contains("id=\"search\""));
    assert!(index.contains("not built yet"));
    assert!(index.contains("ephemeral (inlined, not built)"));
    assert!(
        index.contains("warn after 30 minutes, error after \u{2014}"),
        "orders' own freshness"
    );
    assert!(index.contains("Disabled: <code>old_orders</code>"));
    let fct = read(&out.path().join("models/fct_orders.html"));
    for want in [
        "<h1>fct_orders</h1>",
        "One row per order.",
        "<tr><th>materialized</th><td>table</td></tr>",
        "<code>0 * * * *</code>",
        "Not built yet.",
        // tests with severity, and the relationships target as a link
        "unique_fct_orders_order_id",
        "class=\"sev-error\">error</td>",
        "<a href=\"../models/dim_customers.html\">dim_customers</a>",
        // lineage: parents and children as links
        "<a href=\"../models/stg_orders.html\">stg_orders</a>",
        "class=\"node model current\"",
    ] {
        assert!(fct.contains(want), "fct_orders.html lacks {want}");
    }
    assert!(!fct.contains("<h3>Compiled</h3>"));
    let orders = read(&out.path().join("sources/shop.orders.html"));
    for want in [
        "<code>placed_at</code>",
        "<tr><th>warn after</th><td>30 minutes</td></tr>",
        "Downstream models",
        "<a href=\"../models/fct_orders.html\">fct_orders</a>",
    ] {
        assert!(orders.contains(want), "shop.orders.html lacks {want}");
    }
}

#[test]
fn build_information_shows_where_it_belongs() {
    let p = shop();
    let mut info = DocsInfo {
        generated_at: Some("2025-03-14T10:00:00Z".into()),
        ..DocsInfo::default()
    };
    info.models.insert(
        "fct_orders".into(),
        ModelDocsInfo {
            columns: vec![
                ("order_id".into(), "bigint".into()),
                ("customer_id".into(), "bigint".into()),
                ("total".into(), "numeric(12,2)".into()),
            ],
            as_of_lsn: Some("0/16B3748".into()),
            as_of_time: Some("2025-03-14 09:59:58+00".into()),
            built_at: Some("2025-03-14 10:00:01+00".into()),
            status: Some("success".into()),
            rows: Some(1234),
            duration_ms: Some(2500),
            compiled_sql: Some("select * from x where a < b".into()),
        },
    );
    info.sources.insert(
        ("shop".into(), "orders".into()),
        SourceDocsInfo {
            columns: vec![("placed_at".into(), "timestamptz".into())],
            as_of_lsn: Some("0/16B3800".into()),
            lag_ms: Some(450),
            ..SourceDocsInfo::default()
        },
    );
    let out = check_site(&p, &info);
    let index = read(&out.path().join("index.html"));
    assert!(
        index.contains(
            "as of LSN 0/16B3748 (2025-03-14 09:59:58+00), built at 2025-03-14 10:00:01+00"
        )
    );
    assert!(index.contains("as of LSN 0/16B3800, lag 450 ms"));
    assert!(index.contains("generated 2025-03-14T10:00:00Z"));
    // columns the build found are searchable
    let items = search_index(&index);
    let fct = items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "fct_orders")
        .unwrap();
    assert!(fct["columns"].as_array().unwrap().contains(&"total".into()));

    let page = read(&out.path().join("models/fct_orders.html"));
    for want in [
        "<tr><th>status</th><td>success</td></tr>",
        "<tr><th>duration</th><td>2.5 s</td></tr>",
        "<tr><th>rows</th><td>1234</td></tr>",
        "<td><code>total</code></td><td>numeric(12,2)</td>",
        "<h3>Compiled</h3><pre><code>select * from x where a &lt; b</code></pre>",
    ] {
        assert!(page.contains(want), "lacks {want}");
    }
    // the unique test shows on its column
    let row = &page[page.find("<td><code>order_id</code></td>").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("unique") && row.contains("not_null"), "{row}");

    let manifest: serde_json::Value =
        serde_json::from_str(&read(&out.path().join("manifest.json"))).unwrap();
    assert_eq!(
        manifest["nodes"]["model.shop.fct_orders"]["compiled_code"],
        "select * from x where a < b"
    );
    assert_eq!(manifest["metadata"]["generated_at"], "2025-03-14T10:00:00Z");
    let catalog: serde_json::Value =
        serde_json::from_str(&read(&out.path().join("catalog.json"))).unwrap();
    let node = &catalog["nodes"]["model.shop.fct_orders"];
    assert_eq!(
        node["columns"]["total"],
        serde_json::json!({"name": "total", "type": "numeric(12,2)", "index": 3, "comment": null})
    );
    assert_eq!(node["stats"]["num_rows"]["value"], 1234);
    assert_eq!(node["metadata"]["name"], "orders");
    assert_eq!(
        catalog["sources"]["source.shop.shop.orders"]["columns"]["placed_at"]["type"],
        "timestamptz"
    );
}

#[test]
fn the_example_project_documents() {
    let p = load(&example_root());
    let out = check_site(&p, &DocsInfo::default());
    let lineage = read(&out.path().join("lineage.html"));
    assert_eq!(
        svg_nodes(&lineage).len(),
        p.models().count() + p.sources().count()
    );
    assert!(out.path().join("models/dim_date.html").is_file());
}

#[test]
fn user_text_is_escaped_everywhere() {
    let dir = write(&[
        ("walden_project.yml", "name: p\n"),
        (
            "models/a.sql",
            "-- <b>bold</b>\nselect 1 as x where 1 < 2 and '</script>' <> ''",
        ),
        ("models/b.sql", "select * from {{ ref('a') }}"),
        (
            "models/props.yml",
            r#"version: 2
models:
  - name: a
    description: "Hi <script>alert('a')</script> & \"friends\""
    columns:
      - name: x
        description: "<img onerror=alert(1)>"
        tests:
          - accepted_values:
              values: ["<i>", "2"]
sources:
  - name: src
    description: "<script>src</script>"
    tables:
      - name: t
        description: "</script><script>alert(2)</script>"
"#,
        ),
    ]);
    let p = load(dir.path());
    let out = check_site(&p, &DocsInfo::default());
    for rel in [
        "index.html",
        "lineage.html",
        "models/a.html",
        "models/b.html",
        "sources/src.t.html",
    ] {
        let html = read(&out.path().join(rel));
        // exactly the site's own two script elements on the index, none elsewhere
        let scripts = html.matches("<script").count();
        let expected = if rel == "index.html" { 2 } else { 0 };
        assert_eq!(scripts, expected, "{rel} has a script from user text");
        assert!(!html.contains("<img"), "{rel}");
        assert!(!html.contains("<b>bold"), "{rel}");
        assert!(!html.contains("<i>"), "{rel}");
    }
    let a = read(&out.path().join("models/a.html"));
    assert!(
        a.contains("Hi &lt;script&gt;alert(&#39;a&#39;)&lt;/script&gt; &amp; &quot;friends&quot;")
    );
    assert!(a.contains("&lt;img onerror=alert(1)&gt;"));
    assert!(a.contains("where 1 &lt; 2 and &#39;&lt;/script&gt;&#39; &lt;&gt; &#39;&#39;"));
    assert!(a.contains("accepted_values on <code>x</code>: &lt;i&gt;, 2"));
    let index = read(&out.path().join("index.html"));
    assert!(index.contains("Hi &lt;script&gt;"));
    // the search index keeps the text, JSON-escaped so it cannot close the script
    let items = search_index(&index);
    assert_eq!(
        items[0]["description"],
        "Hi <script>alert('a')</script> & \"friends\""
    );
    let src = read(&out.path().join("sources/src.t.html"));
    assert!(src.contains("&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;"));
}

#[test]
fn pages_of_removed_nodes_are_deleted_and_odd_names_get_safe_files() {
    let dir = write(&[
        ("walden_project.yml", "name: p\n"),
        ("models/a.sql", "select 1 as x"),
        ("models/b.sql", "select * from {{ ref('a') }}"),
    ]);
    let out = tempfile::tempdir().unwrap();
    let p = load(dir.path());
    p.docs_site(out.path(), &DocsInfo::default()).unwrap();
    std::fs::write(out.path().join("models/notes.txt"), "mine").unwrap();
    std::fs::remove_file(dir.path().join("models/b.sql")).unwrap();
    std::fs::write(
        dir.path().join("models/c d.sql"),
        "select * from {{ ref('a') }}",
    )
    .unwrap();
    let p = load(dir.path());
    let report = p.docs_site(out.path(), &DocsInfo::default()).unwrap();
    assert_eq!(report.removed, [PathBuf::from("models/b.html")]);
    assert!(out.path().join("models/c~20d.html").is_file());
    assert!(
        out.path().join("models/notes.txt").is_file(),
        "other files stay"
    );
    check_links(out.path(), &report.files);

    // an unwritable output folder is an error naming it
    let file = out.path().join("index.html");
    let err = p
        .docs_site(&file, &DocsInfo::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("cannot write {}", file.display())),
        "{err}"
    );
}
