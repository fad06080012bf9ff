//! The bounded, in-order buffer between the checks and the database.
//!
//! Checks push rows at the back; the writer copies a batch from the front,
//! inserts it, and only then acknowledges it. When the database is down the
//! rows wait here; when the buffer is full the oldest row is dropped and
//! counted. Rows carry sequence numbers so that an acknowledgement after
//! drops removes exactly the rows that were written.

use std::collections::VecDeque;
use std::sync::Mutex;

use apimon_core::db::metrics::MetricRow;

#[derive(Debug)]
struct Inner {
    rows: VecDeque<MetricRow>,
    /// Sequence number of `rows[0]`.
    first_seq: u64,
    capacity: usize,
    /// Rows dropped since the last [`Buffer::take_dropped`].
    dropped: u64,
}

/// A FIFO of rows waiting for the database, shared by the checks and the
/// writer.
#[derive(Debug)]
pub struct Buffer {
    inner: Mutex<Inner>,
    /// Wakes the writer when a full batch is waiting.
    pub wake: tokio::sync::Notify,
    batch_size: usize,
}

/// A copy of the oldest rows, to be acknowledged once written.
#[derive(Debug)]
pub struct Batch {
    pub first_seq: u64,
    pub rows: Vec<MetricRow>,
}

impl Buffer {
    pub fn new(capacity: usize, batch_size: usize) -> Buffer {
        Buffer {
            inner: Mutex::new(Inner {
                rows: VecDeque::new(),
                first_seq: 0,
                capacity: capacity.max(1),
                dropped: 0,
            }),
            wake: tokio::sync::Notify::new(),
            batch_size: batch_size.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the deque invalid.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a row, dropping the oldest when full.
    pub fn push(&self, row: MetricRow) {
        let len = {
            let mut g = self.lock();
            if g.rows.len() >= g.capacity {
                g.rows.pop_front();
                g.first_seq += 1;
                g.dropped += 1;
            }
            g.rows.push_back(row);
            g.rows.len()
        };
        if len >= self.batch_size {
            self.wake.notify_one();
        }
    }

    /// A copy of up to `batch_size` of the oldest rows, or `None` when empty.
    pub fn peek_batch(&self) -> Option<Batch> {
        let g = self.lock();
        if g.rows.is_empty() {
            return None;
        }
        let n = g.rows.len().min(self.batch_size);
        Some(Batch {
            first_seq: g.first_seq,
            rows: g.rows.iter().take(n).cloned().collect(),
        })
    }

    /// Removes the rows of `batch` that are still here (some may have been
    /// dropped meanwhile).
    pub fn ack(&self, batch: &Batch) {
        let end = batch.first_seq + batch.rows.len() as u64;
        let mut g = self.lock();
        while g.first_seq < end && !g.rows.is_empty() {
            g.rows.pop_front();
            g.first_seq += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.lock().rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        std::mem::take(&mut self.lock().dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn row(i: i64) -> MetricRow {
        MetricRow {
            timestamp: Utc.timestamp_opt(i, 0).unwrap(),
            api_name: "a".into(),
            url: "http://a.test".into(),
            response_time_ms: Some(i as f64),
            status_code: Some(200),
            success: true,
            response_size_bytes: Some(1),
            error_kind: None,
            error_message: None,
            tls_expires_at: None,
        }
    }

    fn secs(rows: &[MetricRow]) -> Vec<i64> {
        rows.iter().map(|r| r.timestamp.timestamp()).collect()
    }

    #[test]
    fn batches_come_out_in_order_and_leave_only_when_acknowledged() {
        let b = Buffer::new(100, 3);
        for i in 0..5 {
            b.push(row(i));
        }
        let first = b.peek_batch().unwrap();
        assert_eq!(secs(&first.rows), [0, 1, 2]);
        // Not acknowledged (the insert failed): the same rows again.
        assert_eq!(secs(&b.peek_batch().unwrap().rows), [0, 1, 2]);
        b.ack(&first);
        assert_eq!(secs(&b.peek_batch().unwrap().rows), [3, 4]);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_them() {
        let b = Buffer::new(3, 10);
        for i in 0..5 {
            b.push(row(i));
        }
        assert_eq!(b.take_dropped(), 2);
        assert_eq!(b.take_dropped(), 0);
        assert_eq!(secs(&b.peek_batch().unwrap().rows), [2, 3, 4]);
    }

    #[test]
    fn ack_after_drops_removes_only_written_rows() {
        let b = Buffer::new(3, 2);
        for i in 0..3 {
            b.push(row(i));
        }
        let batch = b.peek_batch().unwrap(); // rows 0, 1
        b.push(row(3)); // drops 0
        b.push(row(4)); // drops 1
        b.ack(&batch); // 0 and 1 are gone already: nothing more to remove
        assert_eq!(secs(&b.peek_batch().unwrap().rows), [2, 3]);
        assert_eq!(b.len(), 3);
    }
}
