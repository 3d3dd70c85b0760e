//! A light SQL token scan: enough to find statement boundaries and the first keyword.
//! It knows strings (`'..'` with `''`, `E'..'` with backslash escapes), quoted
//! identifiers, dollar quotes and both comment forms; it is not a parser (the query
//! service's logical-plan guard is the real one).

/// One top-level statement: byte range of its text without surrounding blanks, comments
/// and the terminating semicolon, and its first word (upper-cased), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    /// Byte offset of the first token.
    pub start: usize,
    /// Byte offset just after the last token.
    pub end: usize,
    /// The first token upper-cased (`SELECT`, `WITH`, `(`, ...).
    pub first: String,
}

/// Byte ranges of the tokens of `sql` (blanks and comments skipped; `;` is a token).
pub(crate) fn tokens(sql: &str) -> Vec<(usize, usize)> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'-' && bytes.get(i + 1) == Some(&b'-') {
            i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
            continue;
        }
        if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            let mut depth = 0usize;
            while i < bytes.len() {
                if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            continue;
        }
        let end = token_end(sql, i);
        out.push((i, end));
        i = end;
    }
    out
}

/// The statements of `sql`; empty ones (`;;`, only comments) are left out.
pub(crate) fn statements(sql: &str) -> Vec<Statement> {
    let mut out = Vec::new();
    let mut current: Option<Statement> = None;
    for (start, end) in tokens(sql) {
        if &sql[start..end] == ";" {
            if let Some(s) = current.take() {
                out.push(s);
            }
            continue;
        }
        let stmt = current.get_or_insert_with(|| Statement {
            start,
            end,
            first: first_word(&sql[start..end]),
        });
        stmt.end = end;
    }
    if let Some(s) = current.take() {
        out.push(s);
    }
    out
}

fn first_word(token: &str) -> String {
    token.to_ascii_uppercase()
}

/// The byte offset just after the token starting at `i` (not a blank or comment).
fn token_end(sql: &str, i: usize) -> usize {
    let bytes = sql.as_bytes();
    let c = bytes[i];
    let quoted = |open: usize, quote: u8, backslash: bool| -> usize {
        let mut j = open + 1;
        while j < bytes.len() {
            if backslash && bytes[j] == b'\\' {
                j += 2;
                continue;
            }
            if bytes[j] == quote {
                if bytes.get(j + 1) == Some(&quote) {
                    j += 2;
                    continue;
                }
                return j + 1;
            }
            j += 1;
        }
        bytes.len()
    };
    match c {
        b'\'' => quoted(i, b'\'', false),
        b'"' => quoted(i, b'"', false),
        b'`' => quoted(i, b'`', false),
        b'E' | b'e' if bytes.get(i + 1) == Some(&b'\'') => quoted(i + 1, b'\'', true),
        b'$' => {
            // $tag$ ... $tag$ (tag may be empty); a lone $1 parameter is a word
            let tag_end = sql[i + 1..]
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                .map(|n| i + 1 + n);
            match tag_end {
                Some(t) if bytes[t] == b'$' && !bytes[i + 1].is_ascii_digit() => {
                    let tag = &sql[i..=t];
                    sql[t + 1..]
                        .find(tag)
                        .map_or(bytes.len(), |n| t + 1 + n + tag.len())
                }
                _ => word_end(sql, i + 1),
            }
        }
        c if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 => word_end(sql, i),
        _ => i + 1,
    }
}

fn word_end(sql: &str, i: usize) -> usize {
    sql[i..]
        .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '$'))
        .map_or(sql.len(), |n| i + n)
}

/// Checks that `sql` is exactly one query (`SELECT`, `WITH`, `VALUES` or a parenthesized
/// query), optionally followed by one semicolon; returns that statement.
pub(crate) fn single_query(sql: &str) -> Result<Statement, String> {
    let stmts = statements(sql);
    match stmts.as_slice() {
        [] => Err("renders to no SQL statement (a model is one SELECT)".into()),
        [one] => {
            if matches!(one.first.as_str(), "SELECT" | "WITH" | "(" | "VALUES") {
                Ok(one.clone())
            } else {
                Err(format!(
                    "renders to a {} statement; a model is one SELECT (or WITH ... SELECT) query",
                    one.first
                ))
            }
        }
        [_, second, ..] => Err(format!(
            "renders to {} statements (the second starts with {}); a model is exactly one SELECT",
            stmts.len(),
            second.first
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_select_with_comments_and_semicolon() {
        let sql = "-- a comment; with a semicolon\n/* block; /* nested; */ */ select ';' as x, \"a;b\", $$;$$ ;\n  \n";
        let s = single_query(sql).unwrap();
        assert_eq!(s.first, "SELECT");
        assert_eq!(&sql[s.start..s.end], "select ';' as x, \"a;b\", $$;$$");
    }

    #[test]
    fn two_statements_and_non_queries_are_refused() {
        let err = single_query("select 1; drop table x").unwrap_err();
        assert!(
            err.contains("2 statements") && err.contains("DROP"),
            "{err}"
        );
        let err = single_query("delete from x").unwrap_err();
        assert!(err.contains("DELETE"), "{err}");
        assert!(single_query(" -- nothing\n").is_err());
        assert_eq!(
            single_query("WITH a AS (select 1) select * from a")
                .unwrap()
                .first,
            "WITH"
        );
        assert_eq!(
            single_query("(select 1) union (select 2)").unwrap().first,
            "("
        );
    }

    #[test]
    fn tokens_skip_comments() {
        let sql = "WITH /* c */ RECURSIVE -- x\n a AS (select 1)";
        let t: Vec<&str> = tokens(sql).iter().map(|(s, e)| &sql[*s..*e]).collect();
        assert_eq!(
            t,
            vec!["WITH", "RECURSIVE", "a", "AS", "(", "select", "1", ")"]
        );
    }

    #[test]
    fn escapes_inside_strings() {
        assert_eq!(statements("select 'it''s; fine', E'a\\'; b'").len(), 1);
        assert_eq!(statements("select $tag$ ; $tag$, $1").len(), 1);
        assert_eq!(statements("select 1;; select 2").len(), 2);
    }
}
