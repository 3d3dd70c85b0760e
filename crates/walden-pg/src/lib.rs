//! The Postgres side of walden: connecting, discovering and checking the selected tables,
//! managing the publication and the logical slot, and reading a consistent snapshot as
//! Arrow record batches through binary `COPY`.
//!
//! Nothing here writes to the lake; `walden-replicate` joins this crate to `walden-lake`.

mod check;
mod columns;
mod conn;
mod copy;
mod discover;
mod error;
pub mod pgoutput;
mod slot;
pub mod text;
pub mod types;

pub use check::{CheckInput, CheckReport, Finding, Severity, check};
pub use columns::ColumnBuilders;
pub use conn::SourceConn;
pub use copy::{CopyReader, RowDecoder};
pub use discover::{
    DiscoverOptions, SourceColumn, SourceTable, TableSelector, discover, quote_ident, quote_literal,
};
pub use error::{PgError, Result};
pub use slot::{
    ExportedSnapshot, PublicationInfo, SlotInfo, add_to_publication, drop_publication, drop_slot,
    ensure_publication, format_lsn, parse_lsn, publication_info, slot_info,
};
pub use types::{ColumnMapping, Decode, ReadAs, TypeCatalog, UnconstrainedNumeric};

/// The `SELECT` that reads `table` (optionally one ctid range of it) with the casts its
/// column mappings ask for.
pub fn copy_query(table: &SourceTable, pages: Option<(i64, Option<i64>)>) -> String {
    let cols = table
        .columns
        .iter()
        .map(|c| {
            let q = quote_ident(&c.name);
            match &c.mapping {
                Ok(m) => m.read_as.expr(&q),
                Err(_) => q,
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut sql = format!("SELECT {cols} FROM {}", table.quoted());
    if let Some((from, to)) = pages {
        sql.push_str(&format!(" WHERE ctid >= '({from},0)'::tid"));
        if let Some(to) = to {
            sql.push_str(&format!(" AND ctid < '({to},0)'::tid"));
        }
    }
    sql
}

/// Splits a table into page ranges for parallel copying: about `parts` ranges, none under
/// `min_pages`; the last range is open so rows on pages added since sizing are included.
pub fn page_ranges(
    table: &SourceTable,
    parts: usize,
    min_pages: i64,
) -> Vec<Option<(i64, Option<i64>)>> {
    if table.kind != b'r' || table.pages <= min_pages || parts <= 1 {
        return vec![None];
    }
    let step = (table.pages / parts as i64).max(min_pages);
    let mut ranges = Vec::new();
    let mut start = 0;
    while start + step < table.pages {
        ranges.push(Some((start, Some(start + step))));
        start += step;
    }
    ranges.push(Some((start, None)));
    ranges
}
