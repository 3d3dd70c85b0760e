//! Which tables the configuration selects, and everything walden needs to know of each.

use tokio_postgres::Client;
use walden_lake::{Column, TableSchema};

use crate::Result;
use crate::error::QueryContext;
use crate::types::{ColumnMapping, TypeCatalog, UnconstrainedNumeric};

/// `schema.table` glob patterns (`*`, `?`); a pattern starting with `!` excludes.
#[derive(Debug, Clone, Default)]
pub struct TableSelector {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl TableSelector {
    pub fn new(patterns: &[String]) -> std::result::Result<Self, String> {
        let mut s = Self::default();
        for p in patterns {
            let p = p.trim();
            let (list, pat) = match p.strip_prefix('!') {
                Some(rest) => (&mut s.exclude, rest.trim()),
                None => (&mut s.include, p),
            };
            if pat.split('.').count() != 2 || pat.split('.').any(str::is_empty) {
                return Err(format!(
                    "table pattern {p:?} must have the form schema.table (globs allowed: \
                     \"public.*\", \"!public.tmp_*\")"
                ));
            }
            list.push(pat.to_string());
        }
        if s.include.is_empty() {
            return Err("no table pattern includes anything (e.g. tables = [\"public.*\"])".into());
        }
        Ok(s)
    }

    pub fn matches(&self, schema: &str, table: &str) -> bool {
        let name = format!("{schema}.{table}");
        self.include.iter().any(|p| glob(p, &name)) && !self.exclude.iter().any(|p| glob(p, &name))
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// A column of a source table.
#[derive(Debug, Clone)]
pub struct SourceColumn {
    pub name: String,
    /// `pg_attribute.attnum`.
    pub attnum: i16,
    pub type_oid: u32,
    pub typmod: i32,
    /// `format_type()` of the column, e.g. `numeric(12,2)`.
    pub type_name: String,
    pub not_null: bool,
    pub comment: Option<String>,
    /// The mapping, or why there is none.
    pub mapping: std::result::Result<ColumnMapping, String>,
}

/// A selected source table.
#[derive(Debug, Clone)]
pub struct SourceTable {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `r` (table) or `p` (partitioned table).
    pub kind: u8,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub primary_key: Vec<String>,
    pub pages: i64,
    pub estimated_rows: f64,
    pub can_select: bool,
    pub owned_by_me: bool,
    pub comment: Option<String>,
    pub columns: Vec<SourceColumn>,
}

impl SourceTable {
    /// `"schema"."table"`, quoted for SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Whether UPDATE and DELETE would keep working on the primary once this table is in a
    /// publication: it needs a primary key, a replica identity index, or REPLICA IDENTITY
    /// FULL.
    pub fn replication_safe(&self) -> bool {
        match self.replica_identity {
            b'f' | b'i' => true,
            b'd' => !self.primary_key.is_empty(),
            _ => false,
        }
    }

    /// Columns without a mapping, with the reason.
    pub fn unsupported_columns(&self) -> Vec<(&SourceColumn, &str)> {
        self.columns
            .iter()
            .filter_map(|c| c.mapping.as_ref().err().map(|why| (c, why.as_str())))
            .collect()
    }

    /// The lake schema of this table (every column must have a mapping).
    pub fn lake_schema(&self) -> std::result::Result<TableSchema, String> {
        let mut columns = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let mapping = c.mapping.as_ref().map_err(|why| {
                format!(
                    "{}.{} ({}): {why}",
                    self.display_name(),
                    c.name,
                    c.type_name
                )
            })?;
            columns.push(Column {
                name: c.name.clone(),
                ty: mapping.lake.clone(),
                nullable: !c.not_null,
                doc: c.comment.clone(),
            });
        }
        Ok(TableSchema {
            columns,
            primary_key: self.primary_key.clone(),
        })
    }
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Options for discovery.
#[derive(Debug, Clone, Default)]
pub struct DiscoverOptions {
    pub unconstrained_numeric: UnconstrainedNumeric,
    /// `schema.table.column` names mapped to their text form.
    pub string_columns: Vec<String>,
}

/// Every ordinary or partitioned table the selector matches (partitions are reached
/// through their root), with columns and keys.
pub async fn discover(
    client: &Client,
    selector: &TableSelector,
    options: &DiscoverOptions,
) -> Result<Vec<SourceTable>> {
    let types = TypeCatalog::load(client).await?;
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text,
                    c.relreplident::text,
                    pg_relation_size(c.oid) / current_setting('block_size')::int8,
                    c.reltuples::float8,
                    has_table_privilege(c.oid, 'SELECT'),
                    pg_has_role(c.relowner, 'USAGE'),
                    obj_description(c.oid, 'pg_class'),
                    coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                              FROM pg_index i
                              CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                              WHERE i.indrelid = c.oid AND i.indisprimary), '{}')
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
             ORDER BY 2, 3",
            &[],
        )
        .await
        .ctx(|| "listing the source's tables".into())?;
    let mut tables = Vec::new();
    for r in rows {
        let schema: String = r.get(1);
        let name: String = r.get(2);
        if !selector.matches(&schema, &name) {
            continue;
        }
        let first = |s: String| s.bytes().next().unwrap_or(b' ');
        tables.push(SourceTable {
            oid: r.get(0),
            schema,
            name,
            kind: first(r.get(3)),
            replica_identity: first(r.get(4)),
            pages: r.get(5),
            estimated_rows: r.get::<_, f64>(6).max(0.0),
            can_select: r.get(7),
            owned_by_me: r.get(8),
            comment: r.get(9),
            primary_key: r.get(10),
            columns: Vec::new(),
        });
    }
    for t in &mut tables {
        let rows = client
            .query(
                "SELECT a.attname::text, a.atttypid, a.atttypmod, a.attnotnull,
                        format_type(a.atttypid, a.atttypmod), col_description(a.attrelid, a.attnum),
                        a.attnum
                 FROM pg_attribute a
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attgenerated = ''
                 ORDER BY a.attnum",
                &[&t.oid],
            )
            .await
            .ctx(|| format!("reading the columns of {}", t.display_name()))?;
        for c in rows {
            let name: String = c.get(0);
            let oid: u32 = c.get(1);
            let typmod: i32 = c.get(2);
            let qualified = format!("{}.{}.{}", t.schema, t.name, name);
            let mapping = if options.string_columns.iter().any(|s| s == &qualified) {
                Ok(types.map_as_string(oid, typmod))
            } else {
                types.map(oid, typmod, options.unconstrained_numeric)
            };
            t.columns.push(SourceColumn {
                name,
                attnum: c.get(6),
                type_oid: oid,
                typmod,
                type_name: c.get(4),
                not_null: c.get(3),
                comment: c.get(5),
                mapping,
            });
        }
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("public.*", "public.orders"));
        assert!(glob("p*.ord?rs", "public.orders"));
        assert!(!glob("public.*", "sales.orders"));
        assert!(glob("*.*", "a.b"));
        assert!(!glob("public.order", "public.orders"));
    }

    #[test]
    fn selector_excludes() {
        let s = TableSelector::new(&["public.*".into(), "!public.tmp_*".into()]).unwrap();
        assert!(s.matches("public", "orders"));
        assert!(!s.matches("public", "tmp_x"));
        assert!(TableSelector::new(&["orders".into()]).is_err());
        assert!(TableSelector::new(&["!public.x".into()]).is_err());
    }
}
