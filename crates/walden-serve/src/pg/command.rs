//! What a statement is, as far as the front end cares: the session commands it answers
//! itself, the cursor commands it runs over the service's answers, and everything else
//! (handed to the service untouched). Decided from the sqlparser AST (PostgreSQL dialect),
//! never from the text; a statement that does not parse goes to the service, which
//! reports the syntax error.

use datafusion::sql::sqlparser::ast::{
    CloseCursor, DeclareType, DiscardObject, Expr, FetchDirection, ObjectName, Reset, Set,
    Statement, TransactionAccessMode, TransactionMode, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// A statement as the front end sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Nothing but whitespace, comments and semicolons.
    Empty,
    /// Goes to the query service as is.
    Query,
    /// Answered by the front end.
    Local(Local),
    /// `DECLARE name CURSOR [WITH HOLD] FOR query`: `query` goes to the service.
    Declare {
        name: String,
        query: String,
        hold: bool,
    },
    /// `FETCH [FORWARD] [n | ALL | NEXT] FROM name`; `count` `None` is ALL.
    Fetch { name: String, count: Option<u64> },
    /// `CLOSE name` / `CLOSE ALL` (`None`).
    Close(Option<String>),
}

/// A session command the front end answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Local {
    /// `SET [SESSION | LOCAL] name = value`; `value` `None` is `DEFAULT`.
    Set { name: String, value: Option<String> },
    /// `RESET name` / `RESET ALL` (`None`).
    Reset(Option<String>),
    /// `SHOW name` (lower case; `all` for `SHOW ALL`).
    Show(String),
    /// `BEGIN` / `START TRANSACTION` with its command tag.
    Begin { tag: &'static str, read_write: bool },
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// `SET TRANSACTION ...` / `SET SESSION CHARACTERISTICS AS TRANSACTION ...`.
    SetTransaction { read_write: bool },
    /// `DISCARD ALL | PLANS | SEQUENCES | TEMP`.
    Discard(&'static str),
    /// `DEALLOCATE [PREPARE] name | ALL` (`None`).
    Deallocate(Option<String>),
}

impl Kind {
    /// Whether the statement may run in a failed transaction block (it ends it).
    pub(crate) fn ends_transaction(&self) -> bool {
        matches!(self, Kind::Local(Local::Commit | Local::Rollback))
    }
}

/// Classifies one query string.
pub(crate) fn classify(sql: &str) -> Kind {
    let statements = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(s) => s,
        Err(_) => return Kind::Query,
    };
    match statements.as_slice() {
        [] => Kind::Empty,
        [one] => classify_statement(one),
        _ => Kind::Query,
    }
}

fn classify_statement(statement: &Statement) -> Kind {
    match statement {
        Statement::Set(set) => classify_set(set),
        Statement::Reset(r) => Kind::Local(Local::Reset(match &r.reset {
            Reset::ALL => None,
            Reset::ConfigurationParameter(name) => Some(object_name(name)),
        })),
        Statement::ShowVariable { variable } => {
            let words: Vec<String> = variable.iter().map(|i| i.value.to_lowercase()).collect();
            let name = match words.join(" ").as_str() {
                "transaction isolation level" => "transaction_isolation".to_string(),
                "time zone" => "timezone".to_string(),
                "session authorization" => "session_authorization".to_string(),
                _ => words.join("."),
            };
            Kind::Local(Local::Show(name))
        }
        Statement::StartTransaction {
            modes,
            begin,
            statements,
            exception,
            has_end_keyword,
            ..
        } if statements.is_empty() && exception.is_none() && !has_end_keyword => {
            Kind::Local(Local::Begin {
                tag: if *begin { "BEGIN" } else { "START TRANSACTION" },
                read_write: read_write(modes),
            })
        }
        Statement::Commit { chain: false, .. } => Kind::Local(Local::Commit),
        Statement::Rollback {
            chain: false,
            savepoint: None,
        } => Kind::Local(Local::Rollback),
        Statement::Discard { object_type } => Kind::Local(Local::Discard(match object_type {
            DiscardObject::ALL => "DISCARD ALL",
            DiscardObject::PLANS => "DISCARD PLANS",
            DiscardObject::SEQUENCES => "DISCARD SEQUENCES",
            DiscardObject::TEMP => "DISCARD TEMP",
        })),
        Statement::Deallocate { name, .. } => {
            let n = name.value.clone();
            Kind::Local(Local::Deallocate(
                (!(name.quote_style.is_none() && n.eq_ignore_ascii_case("all"))).then_some(n),
            ))
        }
        Statement::Declare { stmts } => match stmts.as_slice() {
            [d] if matches!(d.declare_type, Some(DeclareType::Cursor))
                && d.names.len() == 1
                && d.for_query.is_some() =>
            {
                Kind::Declare {
                    name: d.names[0].value.clone(),
                    query: d
                        .for_query
                        .as_ref()
                        .map(|q| q.to_string())
                        .unwrap_or_default(),
                    hold: d.hold == Some(true),
                }
            }
            _ => Kind::Query,
        },
        Statement::Fetch {
            name,
            direction,
            into: None,
            ..
        } => {
            let count = match direction {
                FetchDirection::Next => Some(Some(1)),
                FetchDirection::All | FetchDirection::ForwardAll => Some(None),
                FetchDirection::Forward { limit: None } => Some(Some(1)),
                FetchDirection::Count { limit }
                | FetchDirection::Forward { limit: Some(limit) } => count_of(limit).map(Some),
                _ => None,
            };
            match count {
                Some(count) => Kind::Fetch {
                    name: name.value.clone(),
                    count,
                },
                // Backward, absolute, relative: the service refuses the statement.
                None => Kind::Query,
            }
        }
        Statement::Close { cursor } => Kind::Close(match cursor {
            CloseCursor::All => None,
            CloseCursor::Specific { name } => Some(name.value.clone()),
        }),
        _ => Kind::Query,
    }
}

fn classify_set(set: &Set) -> Kind {
    match set {
        Set::SingleAssignment {
            variable, values, ..
        } => Kind::Local(Local::Set {
            name: object_name(variable),
            value: set_value(values),
        }),
        Set::SetTimeZone { value, .. } => Kind::Local(Local::Set {
            name: "timezone".into(),
            value: set_value(std::slice::from_ref(value)),
        }),
        Set::SetNames { charset_name, .. } => Kind::Local(Local::Set {
            name: "client_encoding".into(),
            value: Some(charset_name.value.clone()),
        }),
        Set::SetTransaction { modes, .. } => Kind::Local(Local::SetTransaction {
            read_write: read_write(modes),
        }),
        _ => Kind::Query,
    }
}

fn read_write(modes: &[TransactionMode]) -> bool {
    modes.iter().any(|m| {
        matches!(
            m,
            TransactionMode::AccessMode(TransactionAccessMode::ReadWrite)
        )
    })
}

fn object_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| match p.as_ident() {
            Some(i) => i.value.to_lowercase(),
            None => p.to_string().to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The value of a `SET`: strings unquoted, lists joined with `, `; `None` for `DEFAULT`.
fn set_value(values: &[Expr]) -> Option<String> {
    let parts: Vec<String> = values
        .iter()
        .map(|v| match v {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                Value::Boolean(b) => if *b { "on" } else { "off" }.to_string(),
                other => other.to_string(),
            },
            Expr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect();
    if parts.len() == 1 && parts[0].eq_ignore_ascii_case("default") {
        return None;
    }
    Some(parts.join(", "))
}

fn count_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n, _) => n.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_commands_are_recognised_from_the_ast() {
        assert_eq!(classify("  ; "), Kind::Empty);
        assert_eq!(classify("-- nothing\n"), Kind::Empty);
        assert_eq!(classify("select 1"), Kind::Query);
        assert_eq!(classify("select 1; select 2"), Kind::Query);
        assert_eq!(classify("selec 1"), Kind::Query);
        assert_eq!(
            classify("SET extra_float_digits = 3"),
            Kind::Local(Local::Set {
                name: "extra_float_digits".into(),
                value: Some("3".into())
            })
        );
        assert_eq!(
            classify("set session DateStyle to 'ISO'"),
            Kind::Local(Local::Set {
                name: "datestyle".into(),
                value: Some("ISO".into())
            })
        );
        assert_eq!(
            classify("SET LOCAL statement_timeout = DEFAULT"),
            Kind::Local(Local::Set {
                name: "statement_timeout".into(),
                value: None
            })
        );
        assert_eq!(
            classify("SET datafusion.execution.batch_size = 1"),
            Kind::Local(Local::Set {
                name: "datafusion.execution.batch_size".into(),
                value: Some("1".into())
            })
        );
        assert_eq!(
            classify("SET TIME ZONE 'UTC'"),
            Kind::Local(Local::Set {
                name: "timezone".into(),
                value: Some("UTC".into())
            })
        );
        assert_eq!(
            classify("SHOW DateStyle"),
            Kind::Local(Local::Show("datestyle".into()))
        );
        assert_eq!(
            classify("SHOW TRANSACTION ISOLATION LEVEL"),
            Kind::Local(Local::Show("transaction_isolation".into()))
        );
        assert_eq!(classify("SHOW ALL"), Kind::Local(Local::Show("all".into())));
        assert_eq!(classify("RESET ALL"), Kind::Local(Local::Reset(None)));
        assert_eq!(
            classify("BEGIN"),
            Kind::Local(Local::Begin {
                tag: "BEGIN",
                read_write: false
            })
        );
        assert_eq!(
            classify("START TRANSACTION READ WRITE"),
            Kind::Local(Local::Begin {
                tag: "START TRANSACTION",
                read_write: true
            })
        );
        assert_eq!(classify("COMMIT"), Kind::Local(Local::Commit));
        assert_eq!(classify("END"), Kind::Local(Local::Commit));
        assert_eq!(classify("ROLLBACK"), Kind::Local(Local::Rollback));
        assert_eq!(
            classify("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
            Kind::Local(Local::SetTransaction { read_write: false })
        );
        assert_eq!(
            classify("DISCARD ALL"),
            Kind::Local(Local::Discard("DISCARD ALL"))
        );
        assert_eq!(
            classify("DEALLOCATE ALL"),
            Kind::Local(Local::Deallocate(None))
        );
        assert_eq!(
            classify("DEALLOCATE PREPARE s1"),
            Kind::Local(Local::Deallocate(Some("s1".into())))
        );
        assert_eq!(
            classify(r#"DECLARE "c" CURSOR WITH HOLD FOR SELECT a FROM t WHERE a > $1"#),
            Kind::Declare {
                name: "c".into(),
                query: "SELECT a FROM t WHERE a > $1".into(),
                hold: true
            }
        );
        assert_eq!(
            classify(r#"FETCH FORWARD 10 FROM "c""#),
            Kind::Fetch {
                name: "c".into(),
                count: Some(10)
            }
        );
        assert_eq!(
            classify("FETCH ALL FROM c"),
            Kind::Fetch {
                name: "c".into(),
                count: None
            }
        );
        assert_eq!(classify(r#"CLOSE "c""#), Kind::Close(Some("c".into())));
        assert_eq!(classify("CLOSE ALL"), Kind::Close(None));
        assert_eq!(classify("INSERT INTO t VALUES (1)"), Kind::Query);
    }
}
