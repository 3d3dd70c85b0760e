//! Printing query results: an aligned table, CSV or JSON.

use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{Array, ArrayRef, FixedSizeBinaryArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Makes values readable: 16-byte UUIDs as their canonical text.
pub fn present(batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    batches
        .iter()
        .map(|b| {
            let mut fields = Vec::with_capacity(b.num_columns());
            let mut cols: Vec<ArrayRef> = Vec::with_capacity(b.num_columns());
            for (f, c) in b.schema().fields().iter().zip(b.columns()) {
                if f.data_type() == &DataType::FixedSizeBinary(16) {
                    let a = c
                        .as_any()
                        .downcast_ref::<FixedSizeBinaryArray>()
                        .context("uuid column")?;
                    let s: StringArray = (0..a.len())
                        .map(|i| (!a.is_null(i)).then(|| format_uuid(a.value(i))))
                        .collect();
                    fields.push(Field::new(f.name(), DataType::Utf8, f.is_nullable()));
                    cols.push(Arc::new(s));
                } else {
                    fields.push(f.as_ref().clone());
                    cols.push(c.clone());
                }
            }
            Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
        })
        .collect()
}

pub fn format_uuid(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    if h.len() != 32 {
        return h;
    }
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn print(batches: &[RecordBatch], format: Format) -> Result<()> {
    let batches = present(batches)?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    match format {
        Format::Table => {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            writeln!(
                out,
                "{}",
                arrow::util::pretty::pretty_format_batches(&batches)?
            )?;
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in &batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            writeln!(out)?;
        }
    }
    Ok(())
}
