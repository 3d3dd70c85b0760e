//! A static scan of a template's `ref(...)` and `source(...)` calls.
//!
//! minijinja's `State` does not expose the current position to a function, and the parse
//! pass does not take both branches of `{% if is_incremental() %}`. The scan finds every
//! call with literal arguments in the template text (skipping `{# #}` comments and
//! `{% raw %}` blocks): it adds the dependencies of branches the parse pass did not take
//! and gives each dependency the position of its call for later errors (unknown or
//! disabled models, cycles).

use crate::error::line_col;

/// One `ref(...)`/`source(...)`/`config(...)` call in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallSite {
    /// `ref`, `source` or `config`.
    pub function: &'static str,
    /// The arguments when all are string literals (positional only), else `None`.
    pub args: Option<Vec<String>>,
    /// 1-based line of the function name.
    pub line: usize,
    /// 1-based column of the function name.
    pub column: usize,
}

/// Every `ref`/`source`/`config` call inside `{{ }}` and `{% %}` blocks of `template`, in text order.
pub(crate) fn call_sites(template: &str) -> Vec<CallSite> {
    let mut out = Vec::new();
    let bytes = template.as_bytes();
    let mut i = 0;
    while let Some(n) = template[i..].find('{') {
        let open = i + n;
        match bytes.get(open + 1) {
            Some(b'#') => {
                i = template[open + 2..]
                    .find("#}")
                    .map_or(bytes.len(), |m| open + 2 + m + 2);
            }
            Some(b'{') | Some(b'%') => {
                let is_stmt = bytes[open + 1] == b'%';
                let end = scan_block(template, open + 2, is_stmt, &mut out);
                if is_stmt && is_raw(&template[open + 2..end]) {
                    i = find_endraw(template, end).unwrap_or(bytes.len());
                } else {
                    i = end;
                }
            }
            _ => i = open + 1,
        }
        if i >= bytes.len() {
            break;
        }
    }
    out
}

/// The calls of one function, in text order.
pub(crate) fn call_sites_of(template: &str, function: &str) -> Vec<CallSite> {
    call_sites(template)
        .into_iter()
        .filter(|s| s.function == function)
        .collect()
}

fn is_raw(block: &str) -> bool {
    block.trim_matches(|c: char| c.is_whitespace() || c == '-' || c == '+' || c == '%' || c == '}')
        == "raw"
}

fn find_endraw(template: &str, from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(n) = template[i..].find("{%") {
        let start = i + n + 2;
        let close = template[start..].find("%}")? + start;
        let inner = template[start..close]
            .trim_matches(|c: char| c.is_whitespace() || c == '-' || c == '+');
        if inner == "endraw" {
            return Some(close + 2);
        }
        i = close + 2;
    }
    None
}

/// Scans a block from `start` (after the opener) to just after its closer; returns that end.
fn scan_block(t: &str, start: usize, is_stmt: bool, out: &mut Vec<CallSite>) -> usize {
    let bytes = t.as_bytes();
    let closer = if is_stmt { b'%' } else { b'}' };
    let mut i = start;
    let mut prev_dot = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c == closer && bytes.get(i + 1) == Some(&b'}') {
            return i + 2;
        }
        if c == b'\'' || c == b'"' {
            i = string_end(t, i).1;
            prev_dot = false;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let end = t[i..]
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .map_or(bytes.len(), |n| i + n);
            let word = &t[i..end];
            let function = match word {
                "ref" => Some("ref"),
                "source" => Some("source"),
                "config" => Some("config"),
                _ => None,
            };
            if let Some(function) = function
                && !prev_dot
            {
                let after = skip_ws(t, end);
                if bytes.get(after) == Some(&b'(') {
                    let (line, column) = line_col(t, i);
                    out.push(CallSite {
                        function,
                        args: literal_args(t, after + 1),
                        line,
                        column,
                    });
                }
            }
            prev_dot = false;
            i = end;
            continue;
        }
        prev_dot = c == b'.';
        i += 1;
    }
    bytes.len()
}

fn skip_ws(t: &str, mut i: usize) -> usize {
    while i < t.len() && t.as_bytes()[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The end of the string literal opening at `i` and its value (backslash escapes kept simple).
fn string_end(t: &str, i: usize) -> (String, usize) {
    let bytes = t.as_bytes();
    let quote = bytes[i];
    let mut value = String::new();
    let mut j = i + 1;
    while j < bytes.len() {
        let c = bytes[j];
        if c == b'\\' && j + 1 < bytes.len() {
            let next = t[j + 1..].chars().next().unwrap_or('\\');
            value.push(next);
            j += 1 + next.len_utf8();
            continue;
        }
        if c == quote {
            return (value, j + 1);
        }
        let ch = t[j..].chars().next().unwrap_or('\u{fffd}');
        value.push(ch);
        j += ch.len_utf8();
    }
    (value, bytes.len())
}

/// Positional string-literal arguments from `i` (after `(`) to `)`; `None` if any is not one.
fn literal_args(t: &str, mut i: usize) -> Option<Vec<String>> {
    let bytes = t.as_bytes();
    let mut args = Vec::new();
    loop {
        i = skip_ws(t, i);
        match bytes.get(i)? {
            b')' if args.is_empty() => return Some(args),
            b'\'' | b'"' => {
                let (value, end) = string_end(t, i);
                args.push(value);
                i = skip_ws(t, end);
                match bytes.get(i)? {
                    b',' => i += 1,
                    b')' => return Some(args),
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_calls_with_positions_and_literal_args() {
        let t = "select *\nfrom {{ ref('a') }} join {{ source(\"s\", 't') }}\n{% if x %}{{ ref( 'b' ) }}{% endif %}\n{{ ref(name) }} {{ x.ref('no') }}";
        let sites = call_sites(t);
        assert_eq!(sites.len(), 4, "{sites:?}");
        assert_eq!(
            sites[0],
            CallSite {
                function: "ref",
                args: Some(vec!["a".into()]),
                line: 2,
                column: 9
            }
        );
        assert_eq!(sites[1].function, "source");
        assert_eq!(sites[1].args, Some(vec!["s".into(), "t".into()]));
        assert_eq!((sites[2].line, sites[2].column), (3, 14));
        assert_eq!(sites[3].args, None);
    }

    #[test]
    fn skips_comments_raw_blocks_and_strings() {
        let t = "{# {{ ref('c') }} #}{% raw %}{{ ref('r') }}{% endraw %}{{ \"ref('s')\" }} ref('plain') {{- ref('d') -}}";
        let sites = call_sites(t);
        assert_eq!(sites.len(), 1, "{sites:?}");
        assert_eq!(sites[0].args, Some(vec!["d".into()]));
    }
}
