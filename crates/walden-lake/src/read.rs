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

impl LakeTable {
    /// Reads columns `fields` (indices into [`LakeTable::arrow_schema`]) of the data file
    /// at `path`, matching the file's columns by field id; a column the file does not have
    /// comes back as NULLs, a narrower type is widened. `rows`: the row positions to read
    /// (sorted, unique), or every row. The result has the rows in file order.
    pub async fn read_data_file(
        &self,
        io: &iceberg::io::FileIO,
        path: &str,
        fields: &[usize],
        rows: Option<&[u64]>,
    ) -> Result<RecordBatch> {
        let name = self.name();
        let ctx = |what: &str| format!("{name}: reading data file {path}: {what}");
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
        let sources: Vec<Option<usize>> = wanted
            .iter()
            .map(|f| {
                let id = field_id(f);
                file_schema
                    .fields()
                    .iter()
                    .position(|ff| id.is_some() && field_id(ff) == id)
            })
            .collect();
        let mut roots: Vec<usize> = sources.iter().flatten().copied().collect();
        roots.sort_unstable();
        roots.dedup();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
        let mut builder = builder.with_projection(mask).with_batch_size(64 * 1024);
        let selected = match rows {
            Some(rows) => {
                if rows.iter().any(|&r| r as usize >= total_rows) {
                    return Err(LakeError::Invalid(ctx(&format!(
                        "a row position beyond its {total_rows} rows"
                    ))));
                }
                builder = builder.with_row_selection(RowSelection::from_consecutive_ranges(
                    rows.iter().map(|&r| r as usize..r as usize + 1),
                    total_rows,
                ));
                rows.len()
            }
            None => total_rows,
        };
        let reader = builder.build().map_err(parquet_err)?;
        let mut batches = Vec::new();
        for batch in reader {
            batches.push(batch.map_err(|source| LakeError::Arrow {
                context: ctx("decoding"),
                source,
            })?);
        }
        let projected_schema = batches
            .first()
            .map(|b| b.schema())
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let joined = if batches.is_empty() {
            None
        } else {
            Some(
                arrow::compute::concat_batches(&projected_schema, &batches).map_err(|source| {
                    LakeError::Arrow {
                        context: ctx("joining batches"),
                        source,
                    }
                })?,
            )
        };

        let mut columns: Vec<ArrayRef> = Vec::with_capacity(wanted.len());
        for (field, source) in wanted.iter().zip(&sources) {
            let column = match (source, &joined) {
                (Some(root), Some(batch)) => {
                    let file_field = &file_schema.fields()[*root];
                    let idx = batch
                        .schema()
                        .index_of(file_field.name())
                        .map_err(|source| LakeError::Arrow {
                            context: ctx("locating a projected column"),
                            source,
                        })?;
                    let col = batch.column(idx).clone();
                    if col.data_type() == field.data_type() {
                        col
                    } else {
                        arrow::compute::cast(&col, field.data_type()).map_err(|source| {
                            LakeError::Arrow {
                                context: ctx(&format!("widening column {}", field.name())),
                                source,
                            }
                        })?
                    }
                }
                _ => new_null_array(field.data_type(), selected),
            };
            columns.push(column);
        }
        let schema = Arc::new(Schema::new(wanted));
        RecordBatch::try_new_with_options(
            schema,
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(selected)),
        )
        .map_err(|source| LakeError::Arrow {
            context: ctx("assembling"),
            source,
        })
    }
}
