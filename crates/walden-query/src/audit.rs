//! The audit log: every query and every refusal, durably, queryable as `walden.audit_log`.
//!
//! Records go to a SQLite database (WAL, `synchronous=FULL`) through one writer thread
//! that commits whatever is queued in one transaction (group commit), so a burst of
//! queries costs one fsync per batch, not one each. [`AuditLog::record`] returns once the
//! record is on disk; the answer to the query goes out after that.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

/// What happened to a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered in full.
    Ok,
    /// Answered, cut at a row or byte cap.
    Truncated,
    /// Refused before running: a guardrail, a limit or the principal's grants.
    Refused,
    /// Failed while planning or running (bad SQL, timeout, memory, cancel).
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Truncated => "truncated",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }
}

/// One audit record.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub at_ms: i64,
    pub principal: String,
    pub protocol: String,
    pub sql: String,
    /// A hash of the optimized logical plan (same plan, same digest), when one was built.
    pub plan_digest: Option<String>,
    pub rows: u64,
    pub bytes: u64,
    pub duration_ms: f64,
    pub outcome: Outcome,
    /// The error or refusal, as the client saw it.
    pub message: Option<String>,
    /// The lake LSN the answer was as of.
    pub lake_lsn: Option<u64>,
}

/// SQL text kept per record; longer text is cut and says so.
const MAX_SQL_CHARS: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {context}: {source}")]
pub struct AuditError {
    path: PathBuf,
    context: String,
    #[source]
    source: rusqlite::Error,
}

type Job = (AuditRecord, oneshot::Sender<Result<(), String>>);

/// The audit log of one server.
#[derive(Clone)]
pub struct AuditLog {
    path: PathBuf,
    tx: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

impl AuditLog {
    /// Opens (creating) the log at `path` and drops records older than `retention`.
    pub fn open(path: &Path, retention: Duration) -> Result<Self, AuditError> {
        let err = |context: &str| {
            let path = path.to_path_buf();
            let context = context.to_string();
            move |source| AuditError {
                path,
                context,
                source,
            }
        };
        let conn = Connection::open(path).map_err(err("opening"))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(err("setting the busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err("switching to WAL mode"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err("setting synchronous=FULL"))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS audit_log (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at_ms INTEGER NOT NULL,
                principal TEXT NOT NULL,
                protocol TEXT NOT NULL,
                sql TEXT NOT NULL,
                plan_digest TEXT,
                rows INTEGER NOT NULL,
                bytes INTEGER NOT NULL,
                duration_ms REAL NOT NULL,
                outcome TEXT NOT NULL,
                message TEXT,
                lake_lsn INTEGER
            );
            CREATE INDEX IF NOT EXISTS audit_log_principal ON audit_log (principal, id);",
        )
        .map_err(err("creating the audit table"))?;
        let cutoff = chrono::Utc::now().timestamp_millis() - retention.as_millis() as i64;
        conn.execute("DELETE FROM audit_log WHERE at_ms < ?1", params![cutoff])
            .map_err(err("dropping expired records"))?;
        let reader = Connection::open(path).map_err(err("opening a reader"))?;
        reader
            .busy_timeout(Duration::from_secs(30))
            .map_err(err("setting the busy timeout"))?;
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("walden-audit".into())
            .spawn(move || write_loop(conn, rx, writer_path))
            .map_err(|e| AuditError {
                path: path.to_path_buf(),
                context: format!("starting the writer thread: {e}"),
                source: rusqlite::Error::InvalidQuery,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            tx,
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `record` and returns once it is durable. A failure is logged and counted
    /// (`walden_audit_failures_total`); the query's answer is not held back by it.
    pub async fn record(&self, mut record: AuditRecord) {
        if record.sql.len() > MAX_SQL_CHARS {
            let total = record.sql.len();
            let mut cut = MAX_SQL_CHARS;
            while !record.sql.is_char_boundary(cut) {
                cut -= 1;
            }
            record.sql.truncate(cut);
            record
                .sql
                .push_str(&format!(" /* … cut, {total} bytes in all */"));
        }
        let (done, wait) = oneshot::channel();
        let outcome = record.outcome;
        metrics::counter!("walden_queries_total", "outcome" => outcome.as_str(),
            "protocol" => record.protocol.clone())
        .increment(1);
        if self.tx.send((record, done)).is_err() {
            tracing::error!(path = %self.path.display(), "the audit writer stopped; record lost");
            metrics::counter!("walden_audit_failures_total").increment(1);
            return;
        }
        match wait.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(path = %self.path.display(), error = %e, "audit record not written");
                metrics::counter!("walden_audit_failures_total").increment(1);
            }
            Err(_) => {
                tracing::error!(path = %self.path.display(), "the audit writer stopped; record lost");
                metrics::counter!("walden_audit_failures_total").increment(1);
            }
        }
    }

    /// The newest `limit` records, of `principal` only unless `None`.
    pub fn read(&self, principal: Option<&str>, limit: usize) -> Result<RecordBatch, AuditError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let err = |source| AuditError {
            path: self.path.clone(),
            context: "reading records".into(),
            source,
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT at_ms, principal, protocol, sql, plan_digest, rows, bytes, duration_ms,
                        outcome, message, lake_lsn
                 FROM audit_log WHERE (?1 IS NULL OR principal = ?1)
                 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(err)?;
        let mut at = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut who = StringBuilder::new();
        let mut proto = StringBuilder::new();
        let mut sql = StringBuilder::new();
        let mut digest = StringBuilder::new();
        let mut rows = UInt64Builder::new();
        let mut bytes = UInt64Builder::new();
        let mut duration = Float64Builder::new();
        let mut outcome = StringBuilder::new();
        let mut truncated = BooleanBuilder::new();
        let mut message = StringBuilder::new();
        let mut lsn = StringBuilder::new();
        let mut q = stmt.query(params![principal, limit as i64]).map_err(err)?;
        while let Some(r) = q.next().map_err(err)? {
            at.append_value(r.get(0).map_err(err)?);
            who.append_value(r.get::<_, String>(1).map_err(err)?);
            proto.append_value(r.get::<_, String>(2).map_err(err)?);
            sql.append_value(r.get::<_, String>(3).map_err(err)?);
            digest.append_option(r.get::<_, Option<String>>(4).map_err(err)?);
            rows.append_value(r.get::<_, i64>(5).map_err(err)? as u64);
            bytes.append_value(r.get::<_, i64>(6).map_err(err)? as u64);
            duration.append_value(r.get(7).map_err(err)?);
            let o: String = r.get(8).map_err(err)?;
            truncated.append_value(o == "truncated");
            outcome.append_value(o);
            message.append_option(r.get::<_, Option<String>>(9).map_err(err)?);
            lsn.append_option(
                r.get::<_, Option<i64>>(10)
                    .map_err(err)?
                    .map(|l| crate::format_lsn(l as u64)),
            );
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(at.finish()),
            Arc::new(who.finish()),
            Arc::new(proto.finish()),
            Arc::new(sql.finish()),
            Arc::new(digest.finish()),
            Arc::new(rows.finish()),
            Arc::new(bytes.finish()),
            Arc::new(duration.finish()),
            Arc::new(outcome.finish()),
            Arc::new(truncated.finish()),
            Arc::new(message.finish()),
            Arc::new(lsn.finish()),
        ];
        Ok(RecordBatch::try_new(audit_schema(), columns).expect("audit columns match the schema"))
    }
}

/// The columns of `walden.audit_log`.
pub fn audit_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("principal", DataType::Utf8, false),
        Field::new("protocol", DataType::Utf8, false),
        Field::new("sql", DataType::Utf8, false),
        Field::new("plan_digest", DataType::Utf8, true),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("duration_ms", DataType::Float64, false),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("truncated", DataType::Boolean, false),
        Field::new("message", DataType::Utf8, true),
        Field::new("lake_lsn", DataType::Utf8, true),
    ]))
}

fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Job>, path: PathBuf) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < 1024 {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO audit_log (at_ms, principal, protocol, sql, plan_digest, rows,
                        bytes, duration_ms, outcome, message, lake_lsn)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?;
                for (r, _) in &jobs {
                    stmt.execute(params![
                        r.at_ms,
                        r.principal,
                        r.protocol,
                        r.sql,
                        r.plan_digest,
                        r.rows as i64,
                        r.bytes as i64,
                        r.duration_ms,
                        r.outcome.as_str(),
                        r.message,
                        r.lake_lsn.map(|l| l as i64),
                    ])?;
                }
            }
            tx.commit()
        })();
        let reply = result.map_err(|e| format!("{}: {e}", path.display()));
        for (_, done) in jobs {
            let _ = done.send(reply.clone());
        }
    }
}
