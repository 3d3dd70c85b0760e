//! Following a source table's column changes.
//!
//! pgoutput announces a table's shape in a Relation message before the first change after
//! the shape changed, describing the columns as they were at that point of the WAL
//! (names, type oids and modifiers, in attribute order; dropped columns left out). It does
//! not say *what* changed: a renamed column and a dropped-then-added one look alike. This
//! module works that out from the columns the lake last followed (with their stable
//! `attnum`s) and the source's catalog as it is now:
//!
//! - when the catalog's live columns are exactly the message's columns (the usual case:
//!   walden keeps up, so the catalog has not moved on), each message column has a known
//!   `attnum` and the change is exact: same attnum with a new name is a rename, a missing
//!   attnum a drop, a new attnum an addition;
//! - otherwise (more DDL happened since, e.g. while walden was down) columns are matched by
//!   name, and the gaps between matched columns are resolved with two facts of Postgres:
//!   new columns are only ever appended, and a column alive now was alive at every point
//!   in between. What those cannot decide is not guessed: the table is re-copied.

use tokio_postgres::Client;
use walden_pg::PgError;
use walden_pg::pgoutput::RelationColumn;

use crate::{ColumnState, Result};

/// A column of the source table as the catalog has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attr {
    pub attnum: i16,
    pub name: String,
    pub dropped: bool,
    /// Rows that existed before the column was added hold a value for it: a constant
    /// default (`atthasmissing`) or any default at all (a volatile one rewrote the table).
    pub has_default: bool,
}

/// Every user column of relation `oid` ever created (dropped ones too), by attnum.
pub(crate) async fn attributes(client: &Client, oid: u32) -> Result<Vec<Attr>> {
    let rows = client
        .query(
            "SELECT a.attnum, a.attname::text, a.attisdropped,
                    a.atthasmissing OR a.atthasdef
             FROM pg_attribute a
             WHERE a.attrelid = $1 AND a.attnum > 0 AND a.attgenerated = ''
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|source| PgError::Query {
            context: format!("reading the columns of relation {oid}"),
            source,
        })?;
    Ok(rows
        .into_iter()
        .map(|r| Attr {
            attnum: r.get(0),
            name: r.get(1),
            dropped: r.get(2),
            has_default: r.get(3),
        })
        .collect())
}

/// Where a column of a Relation message comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The known column at this index (possibly renamed, possibly a new type).
    Known(usize),
    /// A column added since, with its attnum.
    New(i16),
}

/// What a Relation message means for the lake table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// For each message column, where it comes from. Known columns not named are dropped.
    Columns(Vec<Source>),
    /// The change cannot be followed exactly; the reason.
    Recopy(String),
}

/// Whether the message describes exactly the known columns.
pub(crate) fn unchanged(known: &[ColumnState], rel: &[RelationColumn]) -> bool {
    known.len() == rel.len()
        && known.iter().zip(rel).all(|(k, r)| {
            k.name == r.name && k.type_oid == r.type_oid && k.typmod == r.type_modifier
        })
}

/// Works out where each column of a Relation message comes from (see the module docs).
pub(crate) fn plan(known: &[ColumnState], rel: &[RelationColumn], attrs: &[Attr]) -> Plan {
    let by_attnum = |attnum: i16| known.iter().position(|k| k.attnum == attnum);
    let live: Vec<&Attr> = attrs.iter().filter(|a| !a.dropped).collect();
    if live.len() == rel.len() && live.iter().zip(rel).all(|(a, r)| a.name == r.name) {
        return Plan::Columns(
            live.iter()
                .map(|a| by_attnum(a.attnum).map_or(Source::New(a.attnum), Source::Known))
                .collect(),
        );
    }

    // The catalog moved on since this message: match by name, then resolve the gaps.
    let attr = |attnum: i16| attrs.iter().find(|a| a.attnum == attnum);
    let alive_now = |k: &ColumnState| attr(k.attnum).is_some_and(|a| !a.dropped);
    let mut sources: Vec<Option<Source>> = vec![None; rel.len()];
    let mut used = vec![false; known.len()];
    for (i, r) in rel.iter().enumerate() {
        if let Some(k) = known.iter().position(|k| k.name == r.name) {
            sources[i] = Some(Source::Known(k));
            used[k] = true;
        }
    }
    // Matched known columns must keep their order.
    let anchors: Vec<(usize, usize)> = sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Some(Source::Known(k)) => Some((i, *k)),
            _ => None,
        })
        .collect();
    if anchors.windows(2).any(|w| w[0].1 >= w[1].1) {
        return Plan::Recopy(
            "its columns were reordered or their names reused while walden was behind".into(),
        );
    }
    // Gaps between anchors: (message columns, known columns) not matched by name.
    let mut bounds: Vec<(usize, usize)> = vec![(0, 0)];
    bounds.extend(anchors.iter().map(|&(i, k)| (i + 1, k + 1)));
    let mut ends: Vec<(usize, usize)> = anchors.clone();
    ends.push((rel.len(), known.len()));
    let last = ends.len() - 1;
    for (g, (&(r0, k0), &(r1, k1))) in bounds.iter().zip(&ends).enumerate() {
        let rel_gap: Vec<usize> = (r0..r1).collect();
        let known_gap: Vec<usize> = (k0..k1).filter(|&k| !used[k]).collect();
        let alive: Vec<usize> = known_gap
            .iter()
            .copied()
            .filter(|&k| alive_now(&known[k]))
            .collect();
        if g < last {
            // Columns are only appended: every message column here is a known one,
            // renamed. Known columns alive now must all be among them.
            if rel_gap.len() == known_gap.len() {
                for (&i, &k) in rel_gap.iter().zip(&known_gap) {
                    sources[i] = Some(Source::Known(k));
                }
            } else if rel_gap.len() == alive.len() {
                for (&i, &k) in rel_gap.iter().zip(&alive) {
                    sources[i] = Some(Source::Known(k));
                }
            } else {
                return Plan::Recopy(
                    "columns were renamed and dropped while walden was behind, in a way the \
                     change stream does not disambiguate"
                        .into(),
                );
            }
        } else {
            // The tail: renamed known columns first (all alive now must be there; dropped
            // ones are taken as dropped), then additions.
            if alive.len() != known_gap.len() && !alive.is_empty() {
                return Plan::Recopy(
                    "trailing columns were renamed and dropped while walden was behind, in a \
                     way the change stream does not disambiguate"
                        .into(),
                );
            }
            if rel_gap.len() < alive.len() {
                return Plan::Recopy(format!(
                    "column {} is on the source but not in the change stream",
                    known[alive[rel_gap.len()]].name
                ));
            }
            for (&i, &k) in rel_gap.iter().zip(&alive) {
                sources[i] = Some(Source::Known(k));
            }
            let max_known = known.iter().map(|k| k.attnum).max().unwrap_or(0);
            let mut added = attrs.iter().filter(|a| a.attnum > max_known);
            for &i in &rel_gap[alive.len()..] {
                // Added columns appear in attnum order; one with this name now, or dropped
                // since (then its name is gone and the next unnamed added attnum is it).
                let Some(a) = added.find(|a| a.name == rel[i].name || a.dropped) else {
                    return Plan::Recopy(format!(
                        "column {} was added and renamed while walden was behind",
                        rel[i].name
                    ));
                };
                sources[i] = Some(Source::New(a.attnum));
            }
        }
    }
    Plan::Columns(
        sources
            .into_iter()
            .map(|s| s.expect("every gap assigns its columns"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(cols: &[(&str, i16)]) -> Vec<ColumnState> {
        cols.iter()
            .map(|(n, a)| ColumnState {
                name: n.to_string(),
                attnum: *a,
                type_oid: 23,
                typmod: -1,
            })
            .collect()
    }

    fn rel(names: &[&str]) -> Vec<RelationColumn> {
        names
            .iter()
            .map(|n| RelationColumn {
                key: false,
                name: n.to_string(),
                type_oid: 23,
                type_modifier: -1,
            })
            .collect()
    }

    fn attrs(cols: &[(i16, &str, bool)]) -> Vec<Attr> {
        cols.iter()
            .map(|(a, n, d)| Attr {
                attnum: *a,
                name: n.to_string(),
                dropped: *d,
                has_default: false,
            })
            .collect()
    }

    use Source::{Known, New};

    #[test]
    fn exact_when_the_catalog_matches_the_message() {
        let k = known(&[("id", 1), ("a", 2), ("b", 3)]);
        // a renamed to x, b dropped, c added.
        let p = plan(
            &k,
            &rel(&["id", "x", "c"]),
            &attrs(&[
                (1, "id", false),
                (2, "x", false),
                (3, "", true),
                (4, "c", false),
            ]),
        );
        assert_eq!(p, Plan::Columns(vec![Known(0), Known(1), New(4)]));
    }

    #[test]
    fn drop_then_add_of_the_same_name_is_a_new_column() {
        let k = known(&[("id", 1), ("a", 2)]);
        let p = plan(
            &k,
            &rel(&["id", "a"]),
            &attrs(&[(1, "id", false), (2, "", true), (3, "a", false)]),
        );
        assert_eq!(p, Plan::Columns(vec![Known(0), New(3)]));
    }

    #[test]
    fn renames_in_the_middle_are_resolved_by_position_when_behind() {
        // Message: a renamed to x; since then x was renamed again to y and z was added.
        let k = known(&[("id", 1), ("a", 2), ("b", 3)]);
        let p = plan(
            &k,
            &rel(&["id", "x", "b"]),
            &attrs(&[
                (1, "id", false),
                (2, "y", false),
                (3, "b", false),
                (4, "z", false),
            ]),
        );
        assert_eq!(p, Plan::Columns(vec![Known(0), Known(1), Known(2)]));
    }

    #[test]
    fn an_addition_later_dropped_is_found_when_behind() {
        // Message: c added; since then c was dropped.
        let k = known(&[("id", 1)]);
        let p = plan(
            &k,
            &rel(&["id", "c"]),
            &attrs(&[(1, "id", false), (2, "", true)]),
        );
        assert_eq!(p, Plan::Columns(vec![Known(0), New(2)]));
    }

    #[test]
    fn a_renamed_then_dropped_trailing_column_is_recopied_when_ambiguous() {
        // Message: b renamed to x (alive then); since then x dropped, a renamed.
        let k = known(&[("id", 1), ("a", 2), ("b", 3)]);
        let p = plan(
            &k,
            &rel(&["id", "q", "x"]),
            &attrs(&[(1, "id", false), (2, "r", false), (3, "", true)]),
        );
        assert!(matches!(p, Plan::Recopy(_)), "{p:?}");
    }

    #[test]
    fn unchanged_compares_names_and_types() {
        let k = known(&[("id", 1), ("a", 2)]);
        assert!(unchanged(&k, &rel(&["id", "a"])));
        assert!(!unchanged(&k, &rel(&["id", "b"])));
        let mut r = rel(&["id", "a"]);
        r[1].type_oid = 20;
        assert!(!unchanged(&k, &r));
    }
}
