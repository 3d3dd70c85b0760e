//! The configuration file (`walden.toml`), environment overrides (`WALDEN__SECTION__KEY`)
//! and validation. `walden.example.toml` at the repository root is the reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use walden_pg::{DiscoverOptions, SourceConn, TableSelector, UnconstrainedNumeric};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub source: Option<SourceSection>,
    #[serde(default)]
    pub lake: LakeSection,
    #[serde(default)]
    pub serve: ServeSection,
    #[serde(default)]
    pub models: ModelsSection,
    #[serde(default)]
    pub principals: Vec<Principal>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// `postgres://user[:password]@host:port/database`.
    pub url: String,
    /// Name of an environment variable holding the password (instead of the URL).
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file whose first line is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_walden")]
    pub publication: String,
    #[serde(default = "default_walden")]
    pub slot: String,
    #[serde(default = "default_tables")]
    pub tables: Vec<String>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Copy connections working at once during the initial copy.
    #[serde(default = "default_copy_parallelism")]
    pub copy_parallelism: usize,
    /// Storage of `numeric` columns without precision: `"decimal(P,S)"` or `"string"`.
    #[serde(default = "default_unconstrained_numeric")]
    pub unconstrained_numeric: String,
    /// `"schema.table.column" = "string"`: store that column as its text form.
    #[serde(default)]
    pub column_types: BTreeMap<String, String>,
    /// Emit a heartbeat message (`pg_logical_emit_message`) this often so the slot
    /// advances when every write is outside the publication; 0 = off.
    #[serde(default)]
    pub heartbeat_interval_ms: u64,
    /// Warn when the slot retains more WAL on the source than this.
    #[serde(default = "default_retained_wal_warn_bytes")]
    pub retained_wal_warn_bytes: u64,
    /// The initial copy commits in parts of at least this much source table size; a
    /// crash resumes after the last committed part.
    #[serde(default = "default_copy_part_bytes")]
    pub copy_part_bytes: u64,
    /// While streaming, look this often for new tables matching `tables` (they are
    /// copied, then streamed).
    #[serde(default = "default_table_discovery_interval_ms")]
    pub table_discovery_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeSection {
    #[serde(default = "default_warehouse")]
    pub warehouse: PathBuf,
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    #[serde(default = "default_target_file_size_bytes")]
    pub target_file_size_bytes: u64,
    /// Buffered changes (bytes) above which they are written to pending files before
    /// the commit: the bound on replication memory besides the row index.
    #[serde(default = "default_max_buffer_bytes")]
    pub max_buffer_bytes: u64,
    /// While streaming, one maintenance step (compaction, snapshot expiration, removal of
    /// unreferenced files) for one table in turn this often; 0 = off.
    #[serde(default = "default_maintenance_interval_ms")]
    pub maintenance_interval_ms: u64,
    /// Snapshots (time travel) younger than this are kept.
    #[serde(default = "default_snapshot_retention_ms")]
    pub snapshot_retention_ms: u64,
    /// A compaction step reads at most this much Parquet whole to sort it; a larger file
    /// with many deleted rows is rewritten alone, batch by batch (memory bound).
    #[serde(default = "default_compaction_sort_bytes")]
    pub compaction_sort_bytes: u64,
}

impl Default for LakeSection {
    fn default() -> Self {
        Self {
            warehouse: default_warehouse(),
            flush_interval_ms: default_flush_interval_ms(),
            target_file_size_bytes: default_target_file_size_bytes(),
            max_buffer_bytes: default_max_buffer_bytes(),
            maintenance_interval_ms: default_maintenance_interval_ms(),
            snapshot_retention_ms: default_snapshot_retention_ms(),
            compaction_sort_bytes: default_compaction_sort_bytes(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    #[serde(default = "default_pg_listen")]
    pub pg_listen: String,
    #[serde(default = "default_http_listen")]
    pub http_listen: String,
    /// PEM certificate chain and key for TLS on the pgwire endpoint (both or neither).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The audit log database (default: `<warehouse>/audit.db`).
    #[serde(default)]
    pub audit_path: Option<PathBuf>,
    #[serde(default = "default_audit_retention_days")]
    pub audit_retention_days: u64,
    /// Memory all running queries share (each also has its principal's limit).
    #[serde(default = "default_query_memory_bytes")]
    pub query_memory_bytes: u64,
    /// Where query operators spill (default: the system temp directory).
    #[serde(default)]
    pub spill_dir: Option<PathBuf>,
    /// Browser origins (`scheme://host[:port]`) allowed to call `/mcp` besides localhost;
    /// requests without an `Origin` header (agents, CLIs) are not affected.
    #[serde(default)]
    pub mcp_allowed_origins: Vec<String>,
}

impl Default for ServeSection {
    fn default() -> Self {
        Self {
            pg_listen: default_pg_listen(),
            http_listen: default_http_listen(),
            tls_cert: None,
            tls_key: None,
            audit_path: None,
            audit_retention_days: default_audit_retention_days(),
            query_memory_bytes: default_query_memory_bytes(),
            spill_dir: None,
            mcp_allowed_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsSection {
    /// The models project: the directory with `walden_project.yml` / `dbt_project.yml`,
    /// or its `models/` folder (relative to the config file).
    #[serde(default = "default_models_path")]
    pub path: PathBuf,
    /// Variables for `var()`, overriding the project file's `vars:`.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, serde_json::Value>,
    /// Scheduled builds (see walden.example.toml).
    #[serde(default)]
    pub schedules: Vec<walden_models::ScheduleSpec>,
    /// Run the schedules inside `walden run` and `walden serve`.
    #[serde(default = "default_true")]
    pub scheduler: bool,
    /// How often the scheduler looks at the replication LSN and the project files.
    #[serde(default = "default_scheduler_poll_ms")]
    pub scheduler_poll_ms: u64,
}

impl Default for ModelsSection {
    fn default() -> Self {
        Self {
            path: default_models_path(),
            vars: Default::default(),
            schedules: Vec::new(),
            scheduler: true,
            scheduler_poll_ms: default_scheduler_poll_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub name: String,
    /// Environment variable holding the pgwire password (SCRAM-SHA-256).
    #[serde(default)]
    pub password_env: Option<String>,
    /// Environment variable holding the bearer token (HTTP, MCP).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Instead of `password_env`: a file holding the password (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Instead of `token_env`: a file holding the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Namespaces it may see (default: all).
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub max_rows: Option<u64>,
    #[serde(default)]
    pub max_result_bytes: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    #[serde(default)]
    pub max_concurrent_queries: Option<usize>,
    #[serde(default)]
    pub max_query_bytes: Option<usize>,
    /// `schema.table.column` whose values this principal sees as NULL.
    #[serde(default)]
    pub masked_columns: Vec<String>,
    /// `schema.table` → SQL predicate applied below every scan of the table.
    #[serde(default)]
    pub row_filters: BTreeMap<String, String>,
    /// Sees every principal's rows of `walden.audit_log` (default: only its own).
    #[serde(default)]
    pub audit_reader: bool,
}

impl Principal {
    /// The query service's view of this principal (grants and limits; no secrets).
    pub fn to_query_principal(&self) -> walden_query::Principal {
        let d = walden_query::Limits::default();
        let mut p = walden_query::Principal::new(&self.name)
            .with_limits(walden_query::Limits {
                max_rows: self.max_rows.unwrap_or(d.max_rows),
                max_result_bytes: self.max_result_bytes.unwrap_or(d.max_result_bytes),
                timeout: self
                    .timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(d.timeout),
                memory_limit_bytes: self
                    .memory_limit_bytes
                    .map(|b| b as usize)
                    .unwrap_or(d.memory_limit_bytes),
                max_concurrent_queries: self
                    .max_concurrent_queries
                    .unwrap_or(d.max_concurrent_queries),
                max_query_bytes: self.max_query_bytes.unwrap_or(d.max_query_bytes),
            })
            .with_audit_reader(self.audit_reader);
        if let Some(ns) = &self.namespaces {
            p = p.with_namespaces(ns.iter().cloned());
        }
        for c in &self.masked_columns {
            let parts: Vec<&str> = c.split('.').collect();
            if let [schema, table, column] = parts[..] {
                p = p.with_masked_column(schema, table, column);
            }
        }
        for (t, predicate) in &self.row_filters {
            if let Some((schema, table)) = t.split_once('.') {
                p = p.with_row_filter(schema, table, predicate);
            }
        }
        p
    }

    /// Reads the password and token from their environment variables or files; one that
    /// is named but unset, empty or unreadable is an error naming it.
    pub fn secrets(&self) -> Result<(Option<String>, Option<String>)> {
        let read = |env_key: &str,
                    var: &Option<String>,
                    file_key: &str,
                    file: &Option<PathBuf>|
         -> Result<Option<String>> {
            if let Some(v) = var {
                return match std::env::var(v) {
                    Ok(s) if !s.is_empty() => Ok(Some(s)),
                    _ => bail!(
                        "principal {:?}: `{env_key}` names environment variable {v}, which is \
                         not set (or empty); export it before starting walden",
                        self.name
                    ),
                };
            }
            if let Some(f) = file {
                let text = std::fs::read_to_string(f).with_context(|| {
                    format!(
                        "principal {:?}: cannot read `{file_key}` {}",
                        self.name,
                        f.display()
                    )
                })?;
                let text = text.trim_end_matches(['\n', '\r']).to_string();
                if text.is_empty() {
                    bail!(
                        "principal {:?}: `{file_key}` {} is empty",
                        self.name,
                        f.display()
                    );
                }
                return Ok(Some(text));
            }
            Ok(None)
        };
        Ok((
            read(
                "password_env",
                &self.password_env,
                "password_file",
                &self.password_file,
            )?,
            read("token_env", &self.token_env, "token_file", &self.token_file)?,
        ))
    }
}

fn default_walden() -> String {
    "walden".into()
}
fn default_copy_part_bytes() -> u64 {
    1 << 30
}
fn default_table_discovery_interval_ms() -> u64 {
    30_000
}
fn default_tables() -> Vec<String> {
    vec!["public.*".into()]
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_copy_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}
fn default_unconstrained_numeric() -> String {
    "decimal(38,10)".into()
}
fn default_warehouse() -> PathBuf {
    PathBuf::from("./lake")
}
fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_target_file_size_bytes() -> u64 {
    128 * 1024 * 1024
}
fn default_maintenance_interval_ms() -> u64 {
    60_000
}
fn default_compaction_sort_bytes() -> u64 {
    32 * 1024 * 1024
}
fn default_snapshot_retention_ms() -> u64 {
    900_000
}
fn default_max_buffer_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_retained_wal_warn_bytes() -> u64 {
    1 << 30
}
fn default_pg_listen() -> String {
    "127.0.0.1:7432".into()
}
fn default_http_listen() -> String {
    "127.0.0.1:7480".into()
}
fn default_audit_retention_days() -> u64 {
    90
}
fn default_query_memory_bytes() -> u64 {
    2 << 30
}
fn default_true() -> bool {
    true
}
fn default_scheduler_poll_ms() -> u64 {
    1000
}
fn default_models_path() -> PathBuf {
    PathBuf::from("models")
}

/// Where the configuration came from, for messages.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file read, if any.
    pub file: Option<PathBuf>,
}

/// Reads `path` (or `./walden.toml` when it exists and no path is given), then applies
/// `WALDEN__SECTION__KEY` variables, then validates.
pub fn load(path: Option<&Path>) -> Result<Loaded> {
    let file = match path {
        Some(p) => {
            if !p.exists() {
                bail!(
                    "config file {} does not exist (see walden.example.toml for a template)",
                    p.display()
                );
            }
            Some(p.to_path_buf())
        }
        None => Some(PathBuf::from("walden.toml")).filter(|p| p.exists()),
    };
    let mut figment = Figment::new();
    if let Some(f) = &file {
        figment = figment.merge(Toml::file_exact(f));
    }
    figment = figment.merge(Env::prefixed("WALDEN__").split("__"));
    let config: Config = figment.extract().map_err(|e| {
        let origin = file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "the environment".into());
        let all: Vec<String> = e.into_iter().map(|e| describe_figment_error(&e)).collect();
        anyhow!("invalid configuration ({origin}):\n  {}", all.join("\n  "))
    })?;
    let base = file
        .as_ref()
        .and_then(|f| f.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut config = config;
    validate(&mut config, &base, file.as_deref())?;
    Ok(Loaded { config, file })
}

fn describe_figment_error(e: &figment::Error) -> String {
    let key = if e.path.is_empty() {
        String::new()
    } else {
        format!("key `{}`: ", e.path.join("."))
    };
    let source = match &e.metadata {
        Some(m) => match &m.source {
            Some(s) => format!(" (in {s})"),
            None => format!(" (from {})", m.name),
        },
        None => String::new(),
    };
    format!("{key}{}{source}", e.kind)
}

fn validate(config: &mut Config, base: &Path, file: Option<&Path>) -> Result<()> {
    let origin = file
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "environment".into());
    if config.lake.warehouse.is_relative() && !base.as_os_str().is_empty() {
        config.lake.warehouse = base.join(&config.lake.warehouse);
    }
    if config.models.path.is_relative() && !base.as_os_str().is_empty() {
        config.models.path = base.join(&config.models.path);
    }
    if config.lake.flush_interval_ms == 0 {
        bail!("invalid configuration ({origin}): key `lake.flush_interval_ms` must be positive");
    }
    if config.lake.max_buffer_bytes < 1024 * 1024 {
        bail!(
            "invalid configuration ({origin}): key `lake.max_buffer_bytes` must be at least 1 MiB"
        );
    }
    if let Some(s) = &config.source {
        let at = |key: &str, msg: String| {
            anyhow!("invalid configuration ({origin}): key `source.{key}`: {msg}")
        };
        TableSelector::new(&s.tables).map_err(|m| at("tables", m))?;
        s.unconstrained_numeric
            .parse::<UnconstrainedNumeric>()
            .map_err(|m| at("unconstrained_numeric", m))?;
        for (col, ty) in &s.column_types {
            if col.split('.').count() != 3 {
                return Err(at(
                    "column_types",
                    format!("{col:?} must name schema.table.column"),
                ));
            }
            if ty != "string" {
                return Err(at(
                    "column_types",
                    format!("{col:?} = {ty:?}: the only override is \"string\""),
                ));
            }
        }
        if !(1..=64).contains(&s.copy_parallelism) {
            return Err(at("copy_parallelism", "must be between 1 and 64".into()));
        }
        if s.connect_timeout_ms == 0 {
            return Err(at("connect_timeout_ms", "must be positive".into()));
        }
        if s.slot.is_empty()
            || !s
                .slot
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(at(
                "slot",
                "slot names may contain only lower-case letters, digits and underscores".into(),
            ));
        }
        s.connection().map_err(|e| at("url", format!("{e:#}")))?;
    }
    if config.serve.tls_cert.is_some() != config.serve.tls_key.is_some() {
        bail!(
            "invalid configuration ({origin}): keys `serve.tls_cert` and `serve.tls_key` go \
             together (both PEM files, or neither for no TLS)"
        );
    }
    for path in [
        &mut config.serve.audit_path,
        &mut config.serve.tls_cert,
        &mut config.serve.tls_key,
        &mut config.serve.spill_dir,
    ] {
        if let Some(p) = path.as_mut()
            && p.is_relative()
            && !base.as_os_str().is_empty()
        {
            *p = base.join(&*p);
        }
    }
    for p in config.principals.iter_mut() {
        for f in [&mut p.password_file, &mut p.token_file]
            .into_iter()
            .flatten()
        {
            if f.is_relative() && !base.as_os_str().is_empty() {
                *f = base.join(&*f);
            }
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in config.principals.iter().enumerate() {
        let at = |key: &str, msg: String| {
            anyhow!(
                "invalid configuration ({origin}): principals[{i}] ({:?}) key `{key}`: {msg}",
                p.name
            )
        };
        if p.name.is_empty() || p.name.contains(char::is_whitespace) {
            return Err(at("name", "must be a non-empty name without spaces".into()));
        }
        if !names.insert(p.name.clone()) {
            return Err(at("name", "another principal has the same name".into()));
        }
        if p.password_env.is_some() && p.password_file.is_some() {
            return Err(at(
                "password_file",
                "set password_env or password_file, not both".into(),
            ));
        }
        if p.token_env.is_some() && p.token_file.is_some() {
            return Err(at(
                "token_file",
                "set token_env or token_file, not both".into(),
            ));
        }
        if p.password_env.is_none()
            && p.password_file.is_none()
            && p.token_env.is_none()
            && p.token_file.is_none()
        {
            return Err(at(
                "password_env",
                "a principal needs a password (password_env or password_file, for pgwire) \
                 and/or a token (token_env or token_file, for HTTP and MCP)"
                    .into(),
            ));
        }
        for c in &p.masked_columns {
            if c.split('.').count() != 3 || c.split('.').any(str::is_empty) {
                return Err(at(
                    "masked_columns",
                    format!("{c:?} must name schema.table.column"),
                ));
            }
        }
        for (t, predicate) in &p.row_filters {
            if t.split('.').count() != 2 || t.split('.').any(str::is_empty) {
                return Err(at("row_filters", format!("{t:?} must name schema.table")));
            }
            use datafusion::sql::sqlparser::{dialect::PostgreSqlDialect, parser::Parser};
            Parser::new(&PostgreSqlDialect {})
                .try_with_sql(predicate)
                .and_then(|mut parser| parser.parse_expr())
                .map_err(|e| {
                    at(
                        "row_filters",
                        format!("{t}: {predicate:?} is not a SQL predicate: {e}"),
                    )
                })?;
        }
        for (key, v) in [
            ("max_rows", p.max_rows.map(|v| v as u128)),
            ("max_result_bytes", p.max_result_bytes.map(|v| v as u128)),
            ("timeout_ms", p.timeout_ms.map(|v| v as u128)),
            (
                "memory_limit_bytes",
                p.memory_limit_bytes.map(|v| v as u128),
            ),
            (
                "max_concurrent_queries",
                p.max_concurrent_queries.map(|v| v as u128),
            ),
            ("max_query_bytes", p.max_query_bytes.map(|v| v as u128)),
        ] {
            if v == Some(0) {
                return Err(at(key, "must be positive".into()));
            }
        }
    }
    Ok(())
}

impl Config {
    pub fn source(&self) -> Result<&SourceSection> {
        self.source.as_ref().ok_or_else(|| {
            anyhow!(
                "no [source] configured: set [source] url in walden.toml or WALDEN__SOURCE__URL"
            )
        })
    }
}

impl SourceSection {
    pub fn connection(&self) -> Result<SourceConn> {
        let mut url = self.url.clone();
        let password =
            match (&self.password_env, &self.password_file) {
                (Some(var), _) => Some(std::env::var(var).with_context(|| {
                    format!("[source] password_env names {var}, which is not set")
                })?),
                (None, Some(file)) => Some(
                    std::fs::read_to_string(file)
                        .with_context(|| {
                            format!("[source] password_file {} cannot be read", file.display())
                        })?
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                ),
                (None, None) => None,
            };
        if let Some(pw) = password {
            // Key=value form: append; URL form: pass as a query parameter.
            let sep = if url.contains('?') { '&' } else { '?' };
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                url = format!("{url}{sep}password={}", percent_encode(&pw));
            } else {
                url = format!("{url} password='{}'", pw.replace('\'', "\\'"));
            }
        }
        Ok(SourceConn::new(
            &url,
            Duration::from_millis(self.connect_timeout_ms),
        )?)
    }

    pub fn selector(&self) -> Result<TableSelector> {
        TableSelector::new(&self.tables).map_err(|m| anyhow!("[source] tables: {m}"))
    }

    pub fn discover_options(&self) -> Result<DiscoverOptions> {
        Ok(DiscoverOptions {
            unconstrained_numeric: self
                .unconstrained_numeric
                .parse()
                .map_err(|m| anyhow!("[source] unconstrained_numeric: {m}"))?,
            string_columns: self.column_types.keys().cloned().collect(),
        })
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
