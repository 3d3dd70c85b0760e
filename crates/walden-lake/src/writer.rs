//! Data and position-delete file writers. Both write Parquet with Iceberg field ids through
//! iceberg-rust's `ParquetWriter` (which also computes the per-column statistics manifests
//! carry) and roll to a new file at a target size.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef as ArrowSchemaRef;
use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, NestedField, PrimitiveType, Schema, SchemaRef, Type,
};
use iceberg::writer::file_writer::{FileWriter, FileWriterBuilder, ParquetWriterBuilder};
use parquet::basic::Compression;
use parquet::file::properties::{WriterProperties, WriterVersion};
use uuid::Uuid;

use crate::error::IcebergContext;
use crate::{LakeError, LakeTable, Result};

/// Sizing of written files.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Start a new file once the current one has this many bytes.
    pub target_file_size_bytes: u64,
    /// Bound on the size of one row group: a writer holds at most about this much before
    /// it flushes, whatever the row width.
    pub row_group_bytes: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            target_file_size_bytes: 128 * 1024 * 1024,
            row_group_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Parquet as the query engine reads it fastest (docs/benchmarks.md, "Lake file layout"):
/// - LZ4_RAW: decompression was a tenth of all query CPU with ZSTD, several times less with
///   LZ4; files are about a third larger. pyarrow, DuckDB, Spark and Trino read it.
/// - dictionary pages of at most 64 KiB: a column with more distinct values than that
///   (keys, prices, comments) falls back to plain encoding early instead of filling a
///   1 MiB dictionary whose lookups miss the cache on every value.
fn writer_properties(row_group_bytes: u64) -> WriterProperties {
    WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::LZ4_RAW)
        .set_dictionary_page_size_limit(64 * 1024)
        .set_max_row_group_row_count(Some(1024 * 1024))
        .set_max_row_group_bytes(Some(row_group_bytes as usize))
        .set_created_by("walden".to_string())
        .build()
}

/// Writes a table's rows into Parquet data files under `<table>/data/`.
pub struct DataFileWriter {
    file_io: FileIO,
    data_dir: String,
    arrow_schema: ArrowSchemaRef,
    spec_id: i32,
    options: WriterOptions,
    builder: ParquetWriterBuilder,
    current: Option<iceberg::writer::file_writer::ParquetWriter>,
    /// Path of the open file and rows written to it.
    current_path: Arc<str>,
    current_rows: u64,
    done: Vec<DataFile>,
    table: String,
}

impl DataFileWriter {
    pub fn new(file_io: &FileIO, table: &LakeTable, options: WriterOptions) -> Self {
        Self {
            file_io: file_io.clone(),
            data_dir: format!("{}/data", table.location()),
            arrow_schema: table.arrow_schema().clone(),
            spec_id: table.metadata().default_partition_spec_id(),
            builder: ParquetWriterBuilder::new(
                writer_properties(options.row_group_bytes),
                table.metadata().current_schema().clone(),
            ),
            options,
            current: None,
            current_path: Arc::from(""),
            current_rows: 0,
            done: Vec::new(),
            table: table.name().to_string(),
        }
    }

    /// The schema batches must have.
    pub fn arrow_schema(&self) -> &ArrowSchemaRef {
        &self.arrow_schema
    }

    /// Writes `batch`; all its rows go to one file. Returns that file's path and the
    /// position (row number within the file) of the batch's first row: with Iceberg
    /// position deletes, `(path, position)` names a row.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(Arc<str>, u64)> {
        if batch.num_rows() == 0 {
            return Ok((self.current_path.clone(), self.current_rows));
        }
        if batch.schema().fields() != self.arrow_schema.fields() {
            return Err(LakeError::Invalid(format!(
                "writing {}: batch schema {:?} does not match the table schema {:?}",
                self.table,
                batch.schema(),
                self.arrow_schema
            )));
        }
        if self.current.is_none() {
            let path = format!("{}/{}.parquet", self.data_dir, Uuid::new_v4());
            let output = self
                .file_io
                .new_output(&path)
                .ctx(|| format!("creating data file {path}"))?;
            self.current = Some(
                self.builder
                    .build(output)
                    .await
                    .ctx(|| format!("opening data file {path}"))?,
            );
            self.current_path = Arc::from(path.as_str());
            self.current_rows = 0;
        }
        let at = (self.current_path.clone(), self.current_rows);
        self.current_rows += batch.num_rows() as u64;
        let current = self.current.as_mut().expect("set above");
        current
            .write(batch)
            .await
            .ctx(|| format!("writing a data file of {}", self.table))?;
        use iceberg::writer::CurrentFileStatus;
        if current.current_written_size() as u64 >= self.options.target_file_size_bytes {
            self.roll().await?;
        }
        Ok(at)
    }

    async fn roll(&mut self) -> Result<()> {
        if let Some(writer) = self.current.take() {
            let builders = writer
                .close()
                .await
                .ctx(|| format!("finishing a data file of {}", self.table))?;
            for mut b in builders {
                let file = b
                    .content(DataContentType::Data)
                    .partition_spec_id(self.spec_id)
                    .build()
                    .map_err(|e| LakeError::Invalid(format!("describing a data file: {e}")))?;
                self.done.push(file);
            }
        }
        Ok(())
    }

    /// Finishes the open file; returns every file written, ready for a [`crate::Commit`].
    pub async fn close(mut self) -> Result<Vec<DataFile>> {
        self.roll().await?;
        Ok(self.done)
    }
}

/// Iceberg's reserved field ids of position-delete files.
const DELETE_FILE_PATH_ID: i32 = 2147483546;
const DELETE_POS_ID: i32 = 2147483545;

/// Writes position-delete files: `(file_path, pos)` pairs marking rows of existing data
/// files as deleted. Pairs must be given sorted by path then position (the spec asks for
/// it; readers rely on it).
pub struct PositionDeleteWriter {
    file_io: FileIO,
    data_dir: String,
    spec_id: i32,
    schema: SchemaRef,
    arrow_schema: ArrowSchemaRef,
    table: String,
}

impl PositionDeleteWriter {
    pub fn new(file_io: &FileIO, table: &LakeTable) -> Result<Self> {
        let schema = Schema::builder()
            .with_fields(vec![
                Arc::new(NestedField::required(
                    DELETE_FILE_PATH_ID,
                    "file_path",
                    Type::Primitive(PrimitiveType::String),
                )),
                Arc::new(NestedField::required(
                    DELETE_POS_ID,
                    "pos",
                    Type::Primitive(PrimitiveType::Long),
                )),
            ])
            .build()
            .ctx(|| "building the position-delete schema".into())?;
        let arrow_schema = iceberg::arrow::schema_to_arrow_schema(&schema)
            .ctx(|| "converting the position-delete schema".into())?;
        Ok(Self {
            file_io: file_io.clone(),
            data_dir: format!("{}/data", table.location()),
            spec_id: table.metadata().default_partition_spec_id(),
            schema: Arc::new(schema),
            arrow_schema: Arc::new(arrow_schema),
            table: table.name().to_string(),
        })
    }

    /// Writes one delete file holding all `deletes` (sorted by path, then position).
    pub async fn write(&self, deletes: &[(String, u64)]) -> Result<DataFile> {
        if deletes.windows(2).any(|w| w[0] >= w[1]) {
            return Err(LakeError::Invalid(format!(
                "position deletes for {} are not sorted and unique",
                self.table
            )));
        }
        let paths = StringArray::from_iter_values(deletes.iter().map(|(p, _)| p.as_str()));
        let positions = Int64Array::from_iter_values(deletes.iter().map(|(_, pos)| *pos as i64));
        let batch = RecordBatch::try_new(
            self.arrow_schema.clone(),
            vec![Arc::new(paths), Arc::new(positions)],
        )
        .map_err(|source| LakeError::Arrow {
            context: "building a position-delete batch".into(),
            source,
        })?;
        let path = format!("{}/{}-deletes.parquet", self.data_dir, Uuid::new_v4());
        let output = self
            .file_io
            .new_output(&path)
            .ctx(|| format!("creating delete file {path}"))?;
        let mut writer =
            ParquetWriterBuilder::new(writer_properties(64 * 1024 * 1024), self.schema.clone())
                .build(output)
                .await
                .ctx(|| format!("opening delete file {path}"))?;
        writer
            .write(&batch)
            .await
            .ctx(|| format!("writing delete file {path}"))?;
        let mut builders = writer
            .close()
            .await
            .ctx(|| format!("finishing delete file {path}"))?;
        let mut builder = builders
            .pop()
            .ok_or_else(|| LakeError::Invalid("an empty position-delete file".into()))?;
        builder
            .content(DataContentType::PositionDeletes)
            .partition_spec_id(self.spec_id)
            .build()
            .map_err(|e| LakeError::Invalid(format!("describing a delete file: {e}")))
    }
}
