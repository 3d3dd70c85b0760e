//! Reading rows of one data file by Iceberg field id: the replication applier uses it to
//! build its primary-key index and to fetch the current version of a row (unchanged TOAST
//! values), whatever columns were added, dropped or renamed since the file was written.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::datatypes::{Field, Schema};
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReaderBuilder, RowSelection};

use crate::error::IcebergContext;
use crate::{LakeError, LakeTable, Result};

fn field_id(f: &Field) -> Option<i32> {
    f.metadata()
        .get(PARQUET_FIELD_ID_META_KEY)
        .and_then(|v| v.parse().ok())
}

/// The rows of one data file as batches of the table's columns (see
/// [`LakeTable::data_file_batches`]). Holds the file's bytes and one decoded batch at a
/// time.
pub struct DataFileBatches {
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    /// For each wanted field: the file column it comes from (`None`: NULLs).
    sources: Vec<Option<String>>,
    schema: Arc<Schema>,
    context: String,
}

impl Iterator for DataFileBatches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.reader.next()? {
            Ok(b) => b,
            Err(source) => {
                return Some(Err(LakeError::Arrow {
                    context: format!("{}: decoding", self.context),
                    source,
                }));
            }
        };
        Some(self.conform(&batch))
    }
}

impl DataFileBatches {
    /// The table's columns from a batch of the file's.
    fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (field, source) in self.schema.fields().iter().zip(&self.sources) {
            let column = match source.as_deref().and_then(|n| batch.column_by_name(n)) {
                Some(col) if col.data_type() == field.data_type() => col.clone(),
                Some(col) => arrow::compute::cast(col, field.data_type()).map_err(|source| {
                    LakeError::Arrow {
                        context: format!("{}: widening column {}", self.context, field.name()),
                        source,
                    }
                })?,
                None => new_null_array(field.data_type(), rows),
            };
            columns.push(column);
        }
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|source| LakeError::Arrow {
            context: format!("{}: assembling", self.context),
            source,
        })
    }
}

impl LakeTable {
    /// Reads columns `fields` (indices into [`LakeTable::arrow_schema`]) of the data file
    /// at `path` as batches of up to 64K rows, matching the file's columns by field id; a
    /// column the file does not have comes back as NULLs, a narrower type is widened.
    /// `rows`: the row positions to read (sorted, unique), or every row. Rows come in file
    /// order.
    pub async fn data_file_batches(
        &self,
        io: &iceberg::io::FileIO,
        path: &str,
        fields: &[usize],
        rows: Option<&[u64]>,
    ) -> Result<DataFileBatches> {
        let name = self.name();
        let context = format!("{name}: reading data file {path}");
        let ctx = |what: &str| format!("{context}: {what}");
        let bytes = io
            .new_input(path)
            .ctx(|| ctx("opening"))?
            .read()
            .await
            .ctx(|| ctx("reading"))?;
        let parquet_err = |source| LakeError::Parquet {
            context: ctx("decoding"),
            source,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(parquet_err)?;
        let total_rows = builder.metadata().file_metadata().num_rows() as usize;
        let file_schema = builder.schema().clone();
        let wanted: Vec<Arc<Field>> = fields
            .iter()
            .map(|&i| self.arrow_schema().fields()[i].clone())
            .collect();
        // Root column of the file for each wanted field, by field id.
        let roots_of: Vec<Option<usize>> = wanted
            .iter()
            .map(|f| {
                let id = field_id(f);
                file_schema
                    .fields()
                    .iter()
                    .position(|ff| id.is_some() && field_id(ff) == id)
            })
            .collect();
        let mut roots: Vec<usize> = roots_of.iter().flatten().copied().collect();
        roots.sort_unstable();
        roots.dedup();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
        let mut builder = builder.with_projection(mask).with_batch_size(64 * 1024);
        if let Some(rows) = rows {
            if rows.iter().any(|&r| r as usize >= total_rows) {
                return Err(LakeError::Invalid(ctx(&format!(
                    "a row position beyond its {total_rows} rows"
                ))));
            }
            builder = builder.with_row_selection(RowSelection::from_consecutive_ranges(
                rows.iter().map(|&r| r as usize..r as usize + 1),
                total_rows,
            ));
        }
        let reader = builder.build().map_err(parquet_err)?;
        Ok(DataFileBatches {
            reader,
            sources: roots_of
                .iter()
                .map(|r| r.map(|r| file_schema.fields()[r].name().clone()))
                .collect(),
            schema: Arc::new(Schema::new(wanted)),
            context,
        })
    }

    /// [`LakeTable::data_file_batches`] joined into one batch.
    pub async fn read_data_file(
        &self,
        io: &iceberg::io::FileIO,
        path: &str,
        fields: &[usize],
        rows: Option<&[u64]>,
    ) -> Result<RecordBatch> {
        let batches = self.data_file_batches(io, path, fields, rows).await?;
        let schema = batches.schema.clone();
        let context = batches.context.clone();
        let parts = batches.collect::<Result<Vec<_>>>()?;
        arrow::compute::concat_batches(&schema, &parts).map_err(|source| LakeError::Arrow {
            context: format!("{context}: joining batches"),
            source,
        })
    }
}
