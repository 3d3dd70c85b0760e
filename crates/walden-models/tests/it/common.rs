use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use walden_models::{LoadOptions, Project, ProjectErrors, Relation, RenderContext};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn load(root: &Path) -> Project {
    Project::load(root, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading {} failed:\n{e}", root.display()))
}

pub fn shop() -> Project {
    load(&fixture("shop"))
}

/// Writes `files` (path, contents) under a new temporary folder.
pub fn write(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

/// Loads a project made of `files`.
pub fn try_load(files: &[(&str, &str)]) -> Result<Project, ProjectErrors> {
    try_load_with(files, LoadOptions::default())
}

pub fn try_load_with(
    files: &[(&str, &str)],
    options: LoadOptions,
) -> Result<Project, ProjectErrors> {
    let dir = write(files);
    Project::load(dir.path(), &options)
}

/// The errors of a project that must fail, one `Display` line each.
pub fn errors(files: &[(&str, &str)]) -> Vec<String> {
    match try_load(files) {
        Ok(_) => panic!("the project loaded but should not have"),
        Err(e) => e.diagnostics.iter().map(ToString::to_string).collect(),
    }
}

/// Options with an empty environment and the given vars.
pub fn options(vars: &[(&str, serde_json::Value)], env: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        env: Some(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    }
}

pub fn quoted(r: &Relation) -> String {
    r.quoted()
}

pub fn ctx(is_incremental: bool) -> RenderContext<'static> {
    RenderContext {
        is_incremental,
        resolve: &quoted,
    }
}
