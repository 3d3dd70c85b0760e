//! The row-identity index: for every live row of a table, where it is in the lake (data
//! file, row position), so an update or delete can write a position delete for the old
//! version.
//!
//! Keys are 128-bit: a single integer key column is stored exactly; any other key (text,
//! uuid, composite, or the whole row of a table without a primary key) is the XXH3-128
//! hash of arrow's canonical row encoding of the key columns. Two different keys collide
//! with probability about n²/2¹²⁹ (for a billion rows, below 10⁻²⁰).
//!
//! Memory (target: at most 32 bytes per live row, as allocated). Keys below 2⁶⁴ (every
//! integer key) are stored as `u64` in 16-byte slots, the others (hashed keys, a NULL
//! integer) as two `u64` in 24-byte slots, each slot with one control byte, in the sharded
//! table of [`table`]: any capacity, shards resized one at a time to a set load. That is
//! 19.4–22.7 bytes per integer key and 26.9–30.5 per hashed key as the table grows (at
//! most 31 and 38.5 after mass removals, before a shard shrinks), and a resize holds one
//! shard twice, never the whole table. Tables without a primary key (REPLICA IDENTITY
//! FULL) are multisets: a row hash maps to one location, further identical rows to a side
//! list.

mod table;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use arrow::row::{RowConverter, SortField};

use crate::{Result, SyncError};
use table::Table;

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
    /// Keys below 2⁶⁴: every integer key (and a rare hashed one).
    narrow: Table<u64>,
    /// Keys from 2⁶⁴ up, as (low, high) words: hashed keys, a NULL integer.
    wide: Table<[u64; 2]>,
    /// Multisets only: further rows with a key already in `narrow` or `wide`.
    more: FastMap<u128, Vec<Loc>>,
    /// Rows in `more`.
    more_len: usize,
    multiset: bool,
}

/// A key as the table that holds it sees it.
enum Stored {
    Narrow(u64),
    Wide([u64; 2]),
}

#[inline]
fn stored(key: u128) -> Stored {
    match u64::try_from(key) {
        Ok(k) => Stored::Narrow(k),
        Err(_) => Stored::Wide([key as u64, (key >> 64) as u64]),
    }
}

impl KeyIndex {
    pub fn new(multiset: bool) -> Self {
        use std::hash::BuildHasher;
        // A secret seed: nobody can choose keys that crowd one part of the table.
        let seed = foldhash::fast::RandomState::default().hash_one(0x5eed_u64);
        Self {
            files: Vec::new(),
            file_ids: FastMap::default(),
            narrow: Table::new(seed),
            wide: Table::new(seed),
            more: FastMap::default(),
            more_len: 0,
            multiset,
        }
    }

    pub fn file_id(&mut self, path: &Arc<str>) -> u32 {
        if let Some(&id) = self.file_ids.get(path) {
            return id;
        }
        let id = u32::try_from(self.files.len()).expect("fewer than 2³² data files per table");
        self.files.push(path.clone());
        self.file_ids.insert(path.clone(), id);
        id
    }

    pub fn path(&self, file: u32) -> &Arc<str> {
        &self.files[file as usize]
    }

    #[inline]
    pub fn get(&self, key: u128) -> Option<Loc> {
        match stored(key) {
            Stored::Narrow(k) => self.narrow.get(k),
            Stored::Wide(k) => self.wide.get(k),
        }
    }

    /// Records a row; for a keyed table it replaces the key's previous location.
    pub fn insert(&mut self, key: u128, loc: Loc) {
        if self.multiset && self.get(key).is_some() {
            self.more.entry(key).or_default().push(loc);
            self.more_len += 1;
            return;
        }
        match stored(key) {
            Stored::Narrow(k) => self.narrow.insert(k, loc),
            Stored::Wide(k) => self.wide.insert(k, loc),
        };
    }

    /// Removes (one row with) `key`; returns where it was.
    pub fn remove(&mut self, key: u128) -> Option<Loc> {
        if self.multiset
            && let Some(list) = self.more.get_mut(&key)
        {
            let loc = list.pop();
            self.more_len -= 1;
            if list.is_empty() {
                self.more.remove(&key);
            }
            return loc;
        }
        match stored(key) {
            Stored::Narrow(k) => self.narrow.remove(k),
            Stored::Wide(k) => self.wide.remove(k),
        }
    }

    pub fn len(&self) -> usize {
        self.narrow.len() + self.wide.len() + self.more_len
    }

    /// Heap bytes held, as allocated: every slot of the tables (free ones included), the
    /// side lists of duplicate rows, and the file table.
    pub fn memory_bytes(&self) -> usize {
        self.narrow.memory_bytes()
            + self.wide.memory_bytes()
            + hash_map_bytes::<u128, Vec<Loc>>(self.more.capacity())
            + self
                .more
                .values()
                .map(|v| v.capacity() * std::mem::size_of::<Loc>())
                .sum::<usize>()
            + self.files.capacity() * std::mem::size_of::<Arc<str>>()
            // An `Arc<str>`'s allocation: two counters, then the bytes.
            + self
                .files
                .iter()
                .map(|f| (16 + f.len()).next_multiple_of(8))
                .sum::<usize>()
            + hash_map_bytes::<Arc<str>, u32>(self.file_ids.capacity())
    }

    /// Adds the rows of one data file: `keys[i]` is the key of the row at position
    /// `positions[i]`.
    pub fn add_file(&mut self, path: &Arc<str>, keys: &[u128], positions: &[u64]) {
        let file = self.file_id(path);
        let wide = keys.iter().filter(|&&k| k > u128::from(u64::MAX)).count();
        self.narrow.reserve(keys.len() - wide);
        self.wide.reserve(wide);
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

/// The allocation of a `std` `HashMap` (hashbrown) of `capacity`: a power-of-two number of
/// buckets at most 7/8 full (all full below 8), each an entry and a control byte, plus one
/// SIMD group of control bytes.
fn hash_map_bytes<K, V>(capacity: usize) -> usize {
    let buckets = match capacity {
        0 => return 0,
        1..8 => capacity + 1,
        _ => capacity / 7 * 8,
    };
    (buckets * std::mem::size_of::<(K, V)>()).next_multiple_of(16) + buckets + 16
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
        let wide = u128::MAX - 5;
        index.add_file(&path, &[7, 7, 8, wide, wide], &[0, 1, 2, 3, 4]);
        assert_eq!(index.len(), 5);
        assert!(index.remove(7).is_some());
        assert!(index.remove(7).is_some());
        assert!(index.remove(7).is_none());
        assert_eq!(index.remove(wide).map(|l| l.pos), Some(4));
        assert_eq!(index.remove(wide).map(|l| l.pos), Some(3));
        assert!(index.remove(wide).is_none());
        assert_eq!(index.len(), 1);
        assert_eq!(live_positions(5, &[1, 3]), vec![0, 2, 4]);
    }

    /// A small deterministic generator (splitmix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    /// Keys of every kind, several alike in one half: integers (negative ones too), the
    /// same integers plus 2⁶⁴ (equal low words), hashes sharing a high word, NULL.
    fn some_key(rng: &mut Rng, space: u64) -> u128 {
        let i = rng.next() % space;
        match rng.next() % 5 {
            0 => u128::from(i),
            1 => u128::from((i as i64).wrapping_neg() as u64),
            2 => u128::from(i) | 1 << 64,
            3 => u128::from(i.wrapping_mul(0x2545_F491_4F6C_DD1D)) | (7 << 100),
            _ => {
                if i == 0 {
                    u128::MAX
                } else {
                    u128::from(i) << 64 | u128::from(i.wrapping_mul(31))
                }
            }
        }
    }

    /// Inserts, replacements, removals and lookups against a `HashMap` doing the same:
    /// through shard growth, splits (past 2¹⁶ keys) and shrinking after mass removals.
    #[test]
    fn the_index_is_exact_through_growth_splits_and_shrinking() {
        let mut rng = Rng(1);
        let mut index = KeyIndex::new(false);
        let mut model: HashMap<u128, Loc> = HashMap::new();
        let space = 100_000;
        let check = |index: &KeyIndex, model: &HashMap<u128, Loc>, rng: &mut Rng| {
            assert_eq!(index.len(), model.len());
            for (k, loc) in model {
                assert_eq!(index.get(*k), Some(*loc), "key {k:#x}");
            }
            for _ in 0..1000 {
                let k = some_key(rng, space * 2);
                assert_eq!(index.get(k), model.get(&k).copied(), "key {k:#x}");
            }
        };
        // Grow: mostly inserts.
        for i in 0..500_000u32 {
            let k = some_key(&mut rng, space);
            let loc = Loc {
                file: i % 3,
                pos: i,
            };
            if rng.next() % 10 < 8 {
                index.insert(k, loc);
                model.insert(k, loc);
            } else {
                assert_eq!(index.remove(k), model.remove(&k));
            }
        }
        assert!(model.len() > 100_000);
        assert!(index.narrow.len() > table::SHARD_LEN && index.wide.len() > table::SHARD_LEN);
        check(&index, &model, &mut rng);
        let full = index.memory_bytes();
        // Shrink: mostly removals.
        for i in 0..1_000_000u32 {
            let k = some_key(&mut rng, space);
            if rng.next() % 10 < 1 {
                let loc = Loc { file: 9, pos: i };
                index.insert(k, loc);
                model.insert(k, loc);
            } else {
                assert_eq!(index.remove(k), model.remove(&k));
            }
        }
        assert!(model.len() < 100_000);
        check(&index, &model, &mut rng);
        assert!(index.memory_bytes() < full / 2);
        for k in model.keys().copied().collect::<Vec<_>>() {
            assert_eq!(index.remove(k), model.remove(&k));
        }
        assert_eq!(index.len(), 0);
    }

    /// Multisets against a model counting each key's rows.
    #[test]
    fn a_multiset_index_counts_rows_exactly() {
        let mut rng = Rng(2);
        let mut index = KeyIndex::new(true);
        let mut model: HashMap<u128, Vec<Loc>> = HashMap::new();
        for i in 0..200_000u32 {
            let k = some_key(&mut rng, 5_000);
            if rng.next() % 3 < 2 {
                let loc = Loc { file: 0, pos: i };
                index.insert(k, loc);
                model.entry(k).or_default().push(loc);
            } else {
                let rows = model.get_mut(&k);
                let removed = index.remove(k);
                match rows {
                    Some(rows) => {
                        let loc = removed.expect("a row of a present key");
                        let at = rows.iter().position(|l| *l == loc).expect("a row of it");
                        rows.swap_remove(at);
                        if rows.is_empty() {
                            model.remove(&k);
                        }
                    }
                    None => assert_eq!(removed, None),
                }
            }
        }
        assert_eq!(index.len(), model.values().map(Vec::len).sum::<usize>());
        for (k, rows) in &model {
            let mut got = Vec::new();
            while let Some(loc) = index.remove(*k) {
                got.push(loc);
            }
            let mut want = rows.clone();
            got.sort_by_key(|l| l.pos);
            want.sort_by_key(|l| l.pos);
            assert_eq!(got, want);
        }
        assert_eq!(index.len(), 0);
    }

    /// The slots the tables allocate (a control byte each), counted apart from
    /// `memory_bytes`.
    fn slot_bytes(index: &KeyIndex) -> usize {
        index.narrow.slot_count() * 17 + index.wide.slot_count() * 25
    }

    /// The DESIGN target: at most 32 bytes of RAM per live row, for 1M integer keys
    /// built from two files (as `ensure_index` does) and grown one row at a time, and for
    /// hashed keys built from files.
    #[test]
    fn an_index_takes_at_most_32_bytes_per_row() {
        let n = 1_000_000u64;
        let path_a: Arc<str> = Arc::from("a.parquet");
        let path_b: Arc<str> = Arc::from("b.parquet");
        let positions: Vec<u64> = (0..n / 2).collect();
        let per_row = |index: &KeyIndex| index.memory_bytes() as f64 / index.len() as f64;

        let ints: Vec<u128> = (1..=n).map(u128::from).collect();
        let mut index = KeyIndex::new(false);
        let (a, b) = ints.split_at(n as usize / 2);
        index.add_file(&path_a, a, &positions);
        index.add_file(&path_b, b, &positions);
        assert_eq!(index.len(), n as usize);
        assert!(per_row(&index) <= 32.0, "{} bytes/row", per_row(&index));
        // memory_bytes counts what is allocated: every slot, plus small change.
        let slots = slot_bytes(&index);
        assert!(index.memory_bytes() >= slots && index.memory_bytes() < slots + 64 * 1024);

        let mut index = KeyIndex::new(false);
        let mut worst: f64 = 0.0;
        for (i, &k) in ints.iter().enumerate() {
            index.insert(
                k,
                Loc {
                    file: 0,
                    pos: i as u32,
                },
            );
            if i > 10_000 && i % 1000 == 0 {
                worst = worst.max(per_row(&index));
            }
        }
        assert!(worst <= 32.0, "{worst} bytes/row at worst");

        let mut rng = Rng(3);
        let hashed: Vec<u128> = (0..n)
            .map(|_| u128::from(rng.next()) << 64 | u128::from(rng.next()))
            .collect();
        let mut index = KeyIndex::new(false);
        let (a, b) = hashed.split_at(n as usize / 2);
        index.add_file(&path_a, a, &positions);
        index.add_file(&path_b, b, &positions);
        assert_eq!(index.len(), n as usize);
        assert!(per_row(&index) <= 32.0, "{} bytes/row", per_row(&index));
    }
}
