//! The row-identity index: for every live row of a table, where it is in the lake (data
//! file, row position), so an update or delete can write a position delete for the old
//! version.
//!
//! Keys are 128-bit: a single integer key column is stored exactly; any other key (text,
//! uuid, composite, or the whole row of a table without a primary key) is the XXH3-128
//! hash of arrow's canonical row encoding of the key columns. Two different keys collide
//! with probability about n²/2¹²⁹ (for a billion rows, below 10⁻²⁰).
//!
//! Memory: a key (16 bytes) and a location (8 bytes) per live row, in a hash table at
//! most 7/8 full. Tables without a primary key (REPLICA IDENTITY FULL) are multisets: a
//! row hash maps to one location, further identical rows to a side list.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use arrow::row::{RowConverter, SortField};

use crate::{Result, SyncError};

/// A hash map with a fast non-cryptographic hasher (keys are ours, not an attacker's).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Where a row is: a file id of the index's file table, and the row's position in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub file: u32,
    pub pos: u32,
}

/// Computes row keys from key columns.
pub(crate) struct KeyEncoder {
    columns: Vec<usize>,
    /// `None` when the key is one integer column (stored exactly).
    converter: Option<RowConverter>,
}

impl KeyEncoder {
    /// `columns`: key column indices of the batches given to [`keys`](Self::keys).
    pub fn new(columns: Vec<usize>, types: &[DataType]) -> Result<Self> {
        let exact =
            columns.len() == 1 && matches!(types[columns[0]], DataType::Int32 | DataType::Int64);
        let converter = if exact {
            None
        } else {
            Some(
                RowConverter::new(
                    columns
                        .iter()
                        .map(|&c| SortField::new(types[c].clone()))
                        .collect(),
                )
                .map_err(|e| SyncError::Refused(format!("cannot key rows of this table: {e}")))?,
            )
        };
        Ok(Self { columns, converter })
    }

    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// One key per row of `batch`.
    pub fn keys(&self, batch: &RecordBatch) -> Result<Vec<u128>> {
        let cols: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|&c| batch.column(c).clone())
            .collect();
        self.keys_of(&cols)
    }

    /// One key per row of the key columns `cols` (in key order).
    pub fn keys_of(&self, cols: &[ArrayRef]) -> Result<Vec<u128>> {
        match &self.converter {
            None => {
                let col = &cols[0];
                Ok(match col.data_type() {
                    DataType::Int32 => col
                        .as_primitive::<Int32Type>()
                        .iter()
                        .map(|v| v.map_or(u128::MAX, |v| v as i64 as u64 as u128))
                        .collect(),
                    _ => col
                        .as_primitive::<Int64Type>()
                        .iter()
                        .map(|v| v.map_or(u128::MAX, |v| v as u64 as u128))
                        .collect(),
                })
            }
            Some(converter) => {
                let rows = converter
                    .convert_columns(cols)
                    .map_err(|e| SyncError::Refused(format!("cannot key rows: {e}")))?;
                Ok(rows
                    .iter()
                    .map(|r| twox_hash::XxHash3_128::oneshot(r.as_ref()))
                    .collect())
            }
        }
    }
}

/// Live rows of one table by key.
pub(crate) struct KeyIndex {
    files: Vec<Arc<str>>,
    file_ids: FastMap<Arc<str>, u32>,
    rows: FastMap<u128, Loc>,
    /// Multisets only: further rows with a key already in `rows`.
    more: FastMap<u128, Vec<Loc>>,
    multiset: bool,
}

impl KeyIndex {
    pub fn new(multiset: bool) -> Self {
        Self {
            files: Vec::new(),
            file_ids: FastMap::default(),
            rows: FastMap::default(),
            more: FastMap::default(),
            multiset,
        }
    }

    pub fn file_id(&mut self, path: &Arc<str>) -> u32 {
        if let Some(&id) = self.file_ids.get(path) {
            return id;
        }
        let id = self.files.len() as u32;
        self.files.push(path.clone());
        self.file_ids.insert(path.clone(), id);
        id
    }

    pub fn path(&self, file: u32) -> &Arc<str> {
        &self.files[file as usize]
    }

    pub fn get(&self, key: u128) -> Option<Loc> {
        self.rows.get(&key).copied()
    }

    /// Records a row; for a keyed table it replaces the key's previous location.
    pub fn insert(&mut self, key: u128, loc: Loc) {
        if self.multiset && self.rows.contains_key(&key) {
            self.more.entry(key).or_default().push(loc);
            return;
        }
        self.rows.insert(key, loc);
    }

    /// Removes (one row with) `key`; returns where it was.
    pub fn remove(&mut self, key: u128) -> Option<Loc> {
        if self.multiset
            && let Some(list) = self.more.get_mut(&key)
        {
            let loc = list.pop();
            if list.is_empty() {
                self.more.remove(&key);
            }
            return loc;
        }
        self.rows.remove(&key)
    }

    pub fn len(&self) -> usize {
        self.rows.len() + self.more.values().map(Vec::len).sum::<usize>()
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u128, Loc)>() + 1;
        self.rows.capacity() * entry
            + self.more.capacity() * (std::mem::size_of::<(u128, Vec<Loc>)>() + 1)
            + self.more.values().map(|v| v.capacity() * 8).sum::<usize>()
            + self.files.iter().map(|f| f.len() + 48).sum::<usize>()
    }

    /// Adds the rows of one data file: `keys[i]` is the key of the row at position
    /// `positions[i]`.
    pub fn add_file(&mut self, path: &Arc<str>, keys: &[u128], positions: &[u64]) {
        let file = self.file_id(path);
        self.rows.reserve(keys.len());
        for (k, &p) in keys.iter().zip(positions) {
            self.insert(
                *k,
                Loc {
                    file,
                    pos: p as u32,
                },
            );
        }
    }
}

/// The live positions of a file of `rows` rows with `deleted` (sorted) removed.
pub(crate) fn live_positions(rows: u64, deleted: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity((rows as usize).saturating_sub(deleted.len()));
    let mut d = deleted.iter().peekable();
    for p in 0..rows {
        if d.peek() == Some(&&p) {
            d.next();
            continue;
        }
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn keys_are_exact_for_integers_and_hashed_otherwise() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, -1, 1])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("a")])),
            ],
        )
        .unwrap();
        let types: Vec<DataType> = vec![DataType::Int64, DataType::Utf8];
        let by_id = KeyEncoder::new(vec![0], &types)
            .unwrap()
            .keys(&batch)
            .unwrap();
        assert_eq!(by_id[0], 1);
        assert_ne!(by_id[1], by_id[0]);
        let by_row = KeyEncoder::new(vec![0, 1], &types)
            .unwrap()
            .keys(&batch)
            .unwrap();
        assert_eq!(by_row[0], by_row[2]);
        assert_ne!(by_row[0], by_row[1]);
    }

    #[test]
    fn multiset_keeps_duplicates() {
        let mut index = KeyIndex::new(true);
        let path: Arc<str> = Arc::from("f");
        index.add_file(&path, &[7, 7, 8], &[0, 1, 2]);
        assert_eq!(index.len(), 3);
        assert!(index.remove(7).is_some());
        assert!(index.remove(7).is_some());
        assert!(index.remove(7).is_none());
        assert_eq!(index.len(), 1);
        assert_eq!(live_positions(5, &[1, 3]), vec![0, 2, 4]);
    }
}
