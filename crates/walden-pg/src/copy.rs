//! `COPY ... TO STDOUT (FORMAT binary)` decoded straight into Arrow arrays.
//!
//! Written by hand rather than through `tokio_postgres::binary_copy`, which builds a
//! `Vec` of boxed values per row: here each field is parsed once into its column builder,
//! and batches are cut by rows and bytes so memory stays bounded whatever the table size.

use std::pin::Pin;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio_postgres::{Client, CopyOutStream};

use crate::columns::ColumnBuilders;
use crate::error::QueryContext;
use crate::types::Decode;
use crate::{PgError, Result};

/// Rows per batch at most.
const BATCH_ROWS: usize = 32 * 1024;
/// Bytes of COPY data per batch at most.
const BATCH_BYTES: usize = 32 * 1024 * 1024;

/// Decodes binary COPY rows into record batches of one schema.
pub struct RowDecoder {
    cols: ColumnBuilders,
}

impl RowDecoder {
    /// `decodes[i]` says how to read field i into `schema.field(i)`.
    pub fn new(table: &str, schema: SchemaRef, decodes: &[Decode]) -> Result<Self> {
        Ok(Self {
            cols: ColumnBuilders::new(table, schema, decodes)?,
        })
    }

    pub fn rows(&self) -> usize {
        self.cols.rows()
    }

    /// Decodes one tuple (after its field count); returns the bytes consumed, or `None` if
    /// `buf` does not hold the whole tuple yet.
    fn decode_tuple(&mut self, buf: &[u8]) -> Result<Option<usize>> {
        // Check the whole tuple is present before appending anything.
        let mut pos = 0;
        for _ in 0..self.cols.width() {
            if buf.len() < pos + 4 {
                return Ok(None);
            }
            let len = i32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]);
            pos += 4;
            if len > 0 {
                pos += len as usize;
            }
        }
        if buf.len() < pos {
            return Ok(None);
        }
        let mut pos = 0;
        for i in 0..self.cols.width() {
            let len = i32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]);
            pos += 4;
            if len < 0 {
                self.cols.append_null(i);
            } else {
                let end = pos + len as usize;
                self.cols.append_binary(i, &buf[pos..end])?;
                pos = end;
            }
        }
        Ok(Some(pos))
    }

    /// Whether the batch is due.
    pub fn full(&self) -> bool {
        self.rows() >= BATCH_ROWS || self.cols.bytes() >= BATCH_BYTES
    }

    /// The rows decoded so far as a batch (and a fresh start).
    pub fn finish(&mut self) -> Result<RecordBatch> {
        self.cols.finish()
    }
}

/// Streams one `COPY (...) TO STDOUT (FORMAT binary)` as record batches.
pub struct CopyReader {
    stream: Pin<Box<CopyOutStream>>,
    decoder: RowDecoder,
    buf: BytesMut,
    header_done: bool,
    finished: bool,
    /// The stream ended; it must not be polled again (tokio-postgres would read the
    /// following CommandComplete as an unexpected message).
    eof: bool,
    context: String,
}

impl CopyReader {
    /// Starts `COPY (<query>) TO STDOUT (FORMAT binary)` on `client`.
    pub async fn start(client: &Client, query: &str, decoder: RowDecoder) -> Result<Self> {
        let context = format!("copying {}", decoder.cols.table());
        let sql = format!("COPY ({query}) TO STDOUT (FORMAT binary)");
        let stream = client
            .copy_out(&sql)
            .await
            .ctx(|| format!("{context}: starting {sql}"))?;
        Ok(Self {
            stream: Box::pin(stream),
            decoder,
            buf: BytesMut::new(),
            header_done: false,
            finished: false,
            eof: false,
            context,
        })
    }

    fn malformed(&self, what: &str) -> PgError {
        PgError::Decode {
            context: self.context.clone(),
            message: format!("malformed COPY data: {what}"),
        }
    }

    /// Parses as many whole tuples from `data` (after any held-back bytes) as it can and
    /// holds back the incomplete rest.
    fn consume(&mut self, data: Bytes) -> Result<()> {
        if self.buf.is_empty() {
            let used = self.parse(&data)?;
            if used < data.len() {
                self.buf.extend_from_slice(&data[used..]);
            }
        } else {
            self.buf.extend_from_slice(&data);
            let held = std::mem::take(&mut self.buf);
            let used = self.parse(&held)?;
            if used < held.len() {
                self.buf = BytesMut::from(&held[used..]);
            }
        }
        Ok(())
    }

    /// Parses the header (once) and whole tuples; returns the bytes consumed.
    fn parse(&mut self, input: &[u8]) -> Result<usize> {
        let mut pos = 0;
        if !self.header_done {
            if input.len() < 19 {
                return Ok(0);
            }
            if &input[..11] != b"PGCOPY\n\xff\r\n\0" {
                return Err(self.malformed("bad signature"));
            }
            let ext = u32::from_be_bytes([input[15], input[16], input[17], input[18]]) as usize;
            if input.len() < 19 + ext {
                return Ok(0);
            }
            pos = 19 + ext;
            self.header_done = true;
        }
        while input.len() >= pos + 2 && !self.finished {
            let count = i16::from_be_bytes([input[pos], input[pos + 1]]);
            if count == -1 {
                self.finished = true;
                pos += 2;
                break;
            }
            if count as usize != self.decoder.cols.width() {
                return Err(self.malformed(&format!(
                    "tuple has {count} fields, expected {}",
                    self.decoder.cols.width()
                )));
            }
            match self.decoder.decode_tuple(&input[pos + 2..])? {
                Some(n) => pos += 2 + n,
                None => break,
            }
        }
        Ok(pos)
    }

    /// The next batch, or `None` when the copy is complete.
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if self.decoder.full() {
                return self.decoder.finish().map(Some);
            }
            if self.eof {
                return Ok(None);
            }
            match self.stream.next().await {
                Some(chunk) => {
                    let chunk = chunk.ctx(|| self.context.clone())?;
                    self.consume(chunk)?;
                }
                None => {
                    self.eof = true;
                    if !self.finished && (self.header_done || !self.buf.is_empty()) {
                        return Err(self.malformed("stream ended without the trailer"));
                    }
                    if !self.buf.is_empty() {
                        return Err(self.malformed("trailing bytes"));
                    }
                    if self.decoder.rows() > 0 {
                        return self.decoder.finish().map(Some);
                    }
                    return Ok(None);
                }
            }
        }
    }
}
