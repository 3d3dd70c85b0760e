//! Scan planning: which data files make up a table's current snapshot, and which of their
//! rows position deletes remove.

use std::collections::HashMap;

use arrow::array::{Array, Int64Array, StringArray};
use iceberg::spec::{
    DataContentType, DataFile, Datum, FormatVersion, ManifestList, PrimitiveLiteral, Snapshot,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::IcebergContext;
use crate::{LakeError, LakeTable, Result, TableName};

/// The manifest list of `snapshot` (of table `name`, for messages).
pub(crate) async fn read_manifest_list(
    io: &iceberg::io::FileIO,
    snapshot: &Snapshot,
    name: &TableName,
) -> Result<ManifestList> {
    let path = snapshot.manifest_list();
    let bytes = io
        .new_input(path)
        .ctx(|| format!("{name}: opening manifest list {path}"))?
        .read()
        .await
        .ctx(|| format!("{name}: reading manifest list {path}"))?;
    ManifestList::parse_with_version(&bytes, FormatVersion::V2)
        .ctx(|| format!("{name}: parsing manifest list {path}"))
}

/// A data file to read and the rows of it that are deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    pub path: String,
    pub file_size: u64,
    pub record_count: u64,
    /// Deleted row positions, sorted and unique.
    pub deleted: Vec<u64>,
    /// Per-column statistics the manifest entry carries, by field id (only columns with
    /// something known).
    pub columns: HashMap<i32, ColumnStats>,
}

/// What a manifest entry says about one column of its data file: bounds of the values
/// written (deleted rows included) and the count of NULLs written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnStats {
    pub lower: Option<Bound>,
    pub upper: Option<Bound>,
    pub nulls: Option<u64>,
}

/// A column bound in its Iceberg representation, for the types whose bounds are exact
/// (integers, dates, times and timestamps as their integer count, decimals unscaled).
/// Strings (which writers may truncate), binary and floating point (NaN) are left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Bool(bool),
    Int(i32),
    Long(i64),
    Decimal(i128),
}

impl Bound {
    fn from_datum(d: &Datum) -> Option<Self> {
        match d.literal() {
            PrimitiveLiteral::Boolean(b) => Some(Self::Bool(*b)),
            PrimitiveLiteral::Int(v) => Some(Self::Int(*v)),
            PrimitiveLiteral::Long(v) => Some(Self::Long(*v)),
            PrimitiveLiteral::Int128(v) => Some(Self::Decimal(*v)),
            _ => None,
        }
    }
}

fn column_stats(file: &DataFile) -> HashMap<i32, ColumnStats> {
    let mut out: HashMap<i32, ColumnStats> = HashMap::new();
    for (id, d) in file.lower_bounds() {
        if let Some(b) = Bound::from_datum(d) {
            out.entry(*id).or_default().lower = Some(b);
        }
    }
    for (id, d) in file.upper_bounds() {
        if let Some(b) = Bound::from_datum(d) {
            out.entry(*id).or_default().upper = Some(b);
        }
    }
    for (id, n) in file.null_value_counts() {
        out.entry(*id).or_default().nulls = Some(*n);
    }
    out
}

impl LakeTable {
    /// The live files of the current snapshot, with their position deletes resolved by
    /// sequence number (a delete applies to data files with a smaller or equal sequence
    /// number).
    pub async fn plan_files(&self, io: &iceberg::io::FileIO) -> Result<Vec<PlannedFile>> {
        let name = self.name();
        let Some(snapshot) = self.metadata().current_snapshot() else {
            return Ok(Vec::new());
        };
        let ctx = |what: &str| format!("planning a scan of {name}: {what}");
        let list = read_manifest_list(io, snapshot, name).await?;
        let mut data = Vec::new();
        let mut deletes = Vec::new();
        for manifest_file in list.entries() {
            let manifest = manifest_file
                .load_manifest(io)
                .await
                .ctx(|| ctx("reading a manifest"))?;
            for entry in manifest.entries() {
                if !entry.is_alive() {
                    continue;
                }
                let seq = entry.sequence_number().unwrap_or(0);
                let file = entry.data_file();
                match file.content_type() {
                    DataContentType::Data => data.push((seq, file.clone())),
                    DataContentType::PositionDeletes => deletes.push((seq, file.clone())),
                    DataContentType::EqualityDeletes => {
                        return Err(LakeError::Invalid(ctx(&format!(
                            "equality-delete file {} is not supported; walden writes only \
                             position deletes",
                            file.file_path()
                        ))));
                    }
                }
            }
        }

        let data_seq: HashMap<&str, i64> = data.iter().map(|(s, f)| (f.file_path(), *s)).collect();
        let mut deleted: HashMap<String, Vec<u64>> = HashMap::new();
        for (delete_seq, file) in &deletes {
            let bytes = io
                .new_input(file.file_path())
                .ctx(|| ctx("opening a delete file"))?
                .read()
                .await
                .ctx(|| ctx("reading a delete file"))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .and_then(|b| b.build())
                .map_err(|source| LakeError::Parquet {
                    context: ctx(&format!("reading delete file {}", file.file_path())),
                    source,
                })?;
            for batch in reader {
                let batch = batch.map_err(|source| LakeError::Arrow {
                    context: ctx("decoding a delete file"),
                    source,
                })?;
                let paths = batch
                    .column_by_name("file_path")
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>());
                let positions = batch
                    .column_by_name("pos")
                    .and_then(|c| c.as_any().downcast_ref::<Int64Array>());
                let (Some(paths), Some(positions)) = (paths, positions) else {
                    return Err(LakeError::Invalid(ctx(&format!(
                        "delete file {} lacks file_path/pos columns",
                        file.file_path()
                    ))));
                };
                for i in 0..batch.num_rows() {
                    if paths.is_null(i) || positions.is_null(i) {
                        continue;
                    }
                    let path = paths.value(i);
                    match data_seq.get(path) {
                        Some(seq) if seq <= delete_seq => deleted
                            .entry(path.to_string())
                            .or_default()
                            .push(positions.value(i) as u64),
                        _ => {}
                    }
                }
            }
        }

        Ok(data
            .into_iter()
            .map(|(_, f)| {
                let mut gone = deleted.remove(f.file_path()).unwrap_or_default();
                gone.sort_unstable();
                gone.dedup();
                PlannedFile {
                    path: f.file_path().to_string(),
                    file_size: f.file_size_in_bytes(),
                    record_count: f.record_count(),
                    deleted: gone,
                    columns: column_stats(&f),
                }
            })
            .collect())
    }
}
