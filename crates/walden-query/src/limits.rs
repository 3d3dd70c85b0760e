//! Memory budgets and result caps.
//!
//! Every query gets its own DataFusion memory pool of the principal's
//! `memory_limit_bytes` (a [`FairSpillPool`], so sorts, aggregates and sort-merge joins
//! spill to disk before they fail) that also draws from one [`GlobalBudget`] shared by all
//! queries of the server: one query cannot exceed its own limit, and all of them together
//! cannot exceed the server's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// The server-wide memory all running queries share.
#[derive(Debug)]
pub struct GlobalBudget {
    limit: usize,
    used: AtomicUsize,
}

impl GlobalBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved by running queries now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn take(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    fn give_back(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }
}

/// One query's pool: its own limit, drawn from the global budget.
#[derive(Debug)]
pub struct QueryPool {
    local: FairSpillPool,
    limit: usize,
    global: Arc<GlobalBudget>,
}

impl QueryPool {
    pub fn new(limit: usize, global: Arc<GlobalBudget>) -> Self {
        Self {
            local: FairSpillPool::new(limit),
            limit,
            global,
        }
    }
}

impl MemoryPool for QueryPool {
    fn register(&self, consumer: &MemoryConsumer) {
        self.local.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.local.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.local.grow(reservation, additional);
        self.global.take(additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.local.shrink(reservation, shrink);
        self.global.give_back(shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        if !self.global.try_take(additional) {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the server's query memory ({} bytes, shared by all running queries) is in \
                 use; retry shortly or ask for less (fewer columns, a LIMIT, more selective \
                 filters)",
                self.global.limit
            )));
        }
        if let Err(e) = self.local.try_grow(reservation, additional) {
            self.global.give_back(additional);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the query needs more than its memory limit of {} bytes (memory_limit_bytes) \
                 in an operator that cannot spill to disk: {e}",
                self.limit
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.local.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// Counts what a query returns and cuts it at the row and byte caps.
#[derive(Debug, Clone)]
pub struct ResultCap {
    max_rows: u64,
    max_bytes: u64,
    rows: u64,
    bytes: u64,
    truncated: bool,
}

impl ResultCap {
    pub fn new(max_rows: u64, max_bytes: u64) -> Self {
        Self {
            max_rows,
            max_bytes,
            rows: 0,
            bytes: 0,
            truncated: false,
        }
    }

    /// The part of `batch` that still fits; `None` once the caps are reached (the caller
    /// then stops reading the query, which cancels it).
    pub fn admit(&mut self, batch: RecordBatch) -> Option<RecordBatch> {
        if self.truncated {
            return None;
        }
        let n = batch.num_rows() as u64;
        let size = batch_bytes(&batch);
        let rows_left = self.max_rows - self.rows;
        let bytes_left = self.max_bytes - self.bytes;
        if n <= rows_left && size <= bytes_left {
            self.rows += n;
            self.bytes += size;
            return Some(batch);
        }
        self.truncated = true;
        // Rows that fit by count, then by bytes (proportionally: rows are about equal).
        let mut keep = n.min(rows_left);
        if size > bytes_left && n > 0 {
            let per_row = size.div_ceil(n).max(1);
            keep = keep.min(bytes_left / per_row);
        }
        if keep == 0 {
            return None;
        }
        let part = batch.slice(0, keep as usize);
        self.rows += keep;
        self.bytes += batch_bytes(&part);
        Some(part)
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether rows were left out.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    pub fn max_rows(&self) -> u64 {
        self.max_rows
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
}

/// The bytes of the values in `batch` (the visible slice only).
pub fn batch_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(n: i64) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from_iter_values(0..n))],
        )
        .unwrap()
    }

    #[test]
    fn caps_cut_rows_and_bytes_and_say_so() {
        let mut cap = ResultCap::new(15, u64::MAX);
        assert_eq!(cap.admit(batch(10)).unwrap().num_rows(), 10);
        assert!(!cap.truncated());
        assert_eq!(cap.admit(batch(10)).unwrap().num_rows(), 5);
        assert!(cap.truncated());
        assert!(cap.admit(batch(10)).is_none());
        assert_eq!(cap.rows(), 15);

        let mut cap = ResultCap::new(u64::MAX, 80);
        assert_eq!(cap.admit(batch(100)).unwrap().num_rows(), 10);
        assert!(cap.truncated());

        let mut cap = ResultCap::new(10, u64::MAX);
        assert_eq!(cap.admit(batch(10)).unwrap().num_rows(), 10);
        assert!(!cap.truncated(), "exactly the cap is not a truncation");
    }

    #[test]
    fn the_global_budget_bounds_all_queries_together() {
        let global = GlobalBudget::new(1000);
        let a: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(800, global.clone()));
        let b: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(800, global.clone()));
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        ra.try_grow(700).unwrap();
        assert!(ra.try_grow(200).is_err(), "over the query's own limit");
        assert!(rb.try_grow(400).is_err(), "over the global budget");
        assert_eq!(global.used(), 700);
        rb.try_grow(300).unwrap();
        drop(ra);
        assert_eq!(global.used(), 300);
        drop(rb);
        assert_eq!(global.used(), 0);
    }
}
