//! Errors: one [`Diagnostic`] per problem, located in a file of the project.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one file of a project, with its position.
///
/// `file` is relative to the project root (as the user would type it), `line` and
/// `column` are 1-based; `column` counts characters, not bytes. Problems that belong to
/// a whole file (a duplicate model name, an unreadable file) point at `1:1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The file, relative to the project root.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// What is wrong, in one sentence, without a trailing period.
    pub message: String,
    /// How to fix it, when there is something useful to say (a close name, the allowed values).
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at `file:line:column`.
    pub fn new(
        file: impl Into<PathBuf>,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.into(),
            line: line.max(1),
            column: column.max(1),
            message: message.into(),
            help: None,
        }
    }

    /// A diagnostic about a whole file (`file:1:1`).
    pub fn file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Diagnostic::new(file, 1, 1, message)
    }

    /// The same diagnostic with a help text.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The same diagnostic with a help text, if there is one.
    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }
}

impl fmt::Display for Diagnostic {
    /// `file:line:column: message` and, with a help text, `; help`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "; {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Every problem found while loading a project, sorted by file, line and column.
///
/// Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectErrors {
    /// The problems, sorted by file, line and column.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ProjectErrors {
    /// One diagnostic per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProjectErrors {}

/// The errors of the operations on a loaded project.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading found problems (every one of them).
    #[error("{0}")]
    Project(#[from] ProjectErrors),
    /// A template failed in the build pass (a `var`, an `env_var`, a `ref` the parse pass
    /// did not see, a statement check on the incremental branch).
    #[error("{0}")]
    Render(#[from] Diagnostic),
    /// A name given by the caller is not a node of the project.
    #[error("unknown {kind} '{name}'{}", did_you_mean(.suggestions))]
    Unknown {
        /// `model`, `test`, ...
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// Close names, best first (may be empty).
        suggestions: Vec<String>,
    },
    /// A `--select`/`--exclude` expression is malformed or selects nothing.
    #[error("selector '{selector}': {message}")]
    Selection {
        /// The selector as given.
        selector: String,
        /// What is wrong, with close names where there are some.
        message: String,
    },
    /// A schedule entry is invalid (see [`crate::Schedules::new`]).
    #[error("{entry}: {message}")]
    Schedule {
        /// The entry: `schedules[<index>] '<name>'`, `schedules[<index>] (select '...')`,
        /// or `model '<name>' (<file>)` for a model's own `schedule`.
        entry: String,
        /// What is wrong.
        message: String,
    },
    /// Writing the documentation site failed.
    #[error("cannot write {}: {source}", .path.display())]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

pub(crate) fn did_you_mean(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        [one] => format!("; did you mean '{one}'?"),
        many => format!(
            "; did you mean one of {}?",
            many.iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Names among `candidates` close to `name`, best first (at most 3).
pub(crate) fn close_names<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let mut scored: Vec<(f64, &str)> = candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, c)| {
            *score >= 0.85 || strsim::levenshtein(name, c) <= 1.max(name.len() / 3)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(3)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// The help text "did you mean 'x'?" for `name` among `candidates`, if any is close.
pub(crate) fn suggest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let close = close_names(name, candidates);
    let text = did_you_mean(&close);
    text.strip_prefix("; ").map(str::to_string)
}

/// 1-based line and character column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `path` relative to `root` when it is under it, else as given.
pub(crate) fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_file_line_column_and_help() {
        let d = Diagnostic::new(
            "models/marts/x.sql",
            3,
            14,
            "unknown model 'fct_ordrs' in ref()",
        )
        .with_help("did you mean 'fct_orders'?");
        assert_eq!(
            d.to_string(),
            "models/marts/x.sql:3:14: unknown model 'fct_ordrs' in ref(); did you mean 'fct_orders'?"
        );
    }

    #[test]
    fn line_col_counts_characters() {
        let text = "ab\ncdé f\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 1));
        // 'f' is after a two-byte character
        assert_eq!(line_col(text, text.find('f').unwrap()), (2, 5));
    }

    #[test]
    fn close_names_finds_typos_only() {
        let names = ["fct_orders", "dim_customers", "stg_orders"];
        assert_eq!(close_names("fct_ordrs", names)[0], "fct_orders");
        assert!(close_names("zzzzzz", names).is_empty());
    }
}
