//! Streaming: decoded transactions from the slot, applied to the lake in flushes.
//!
//! One session: check the slot and the tables are still the ones the lake was built from,
//! start replication at the lake's committed LSN, and loop over the stream. A flush is a
//! lake commit of every complete transaction buffered so far, with the last commit's end
//! LSN as the progress; only after it succeeds is that LSN acknowledged to the server.
//! Transactions that committed before the lake's LSN (a replay after a crash) are
//! skipped. When nothing is buffered, the keepalive's WAL position is recorded and
//! acknowledged, so an idle slot never holds WAL back.
//!
//! Errors that pass by themselves (the source restarting or away, a cut connection, a
//! full lake disk) end the session; [`stream`] then starts a new one after a pause that
//! doubles up to 30 s, from whatever the lake has committed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use tokio::sync::watch;
use walden_lake::{Lake, WriterOptions};
use walden_pg::pgoutput::{self, LogicalMessage};
use walden_pg::{
    Decode, DiscoverOptions, PgError, SourceConn, SourceTable, TableSelector, format_lsn,
    quote_literal, slot_info,
};

use crate::apply::{Applier, MaintenanceOptions, SourceContext, TableApply};
use crate::{Phase, Result, StreamState, SyncError};

/// How to stream.
#[derive(Clone)]
pub struct StreamOptions {
    pub slot: String,
    pub publication: String,
    /// Commit buffered transactions this long after the first of them arrived.
    pub flush_interval: Duration,
    /// Buffered bytes above which buffers go to pending files (the memory bound).
    pub spill_bytes: usize,
    pub writer: WriterOptions,
    /// Emit a logical message this often, so the slot advances even when every write
    /// on the source is outside the publication.
    pub heartbeat_interval: Option<Duration>,
    /// Warn when the slot retains more WAL than this.
    pub retained_wal_warn_bytes: u64,
    /// Stop once the lake reaches the source's WAL position at the start.
    pub until_caught_up: bool,
    /// How columns added or changed while streaming map to lake types (as for the
    /// initial copy).
    pub discover: DiscoverOptions,
    /// Connections used when a table is copied again.
    pub copy_parallelism: usize,
    /// `[source] tables`: new tables matching them are copied and then streamed (empty:
    /// only the tables the lake has).
    pub tables: Vec<String>,
    /// How often to look for new tables.
    pub discovery_interval: Duration,
    /// Compaction and snapshot expiration between flushes.
    pub maintenance: MaintenanceOptions,
    /// Stop with the lake at exactly this LSN (`walden verify`): every transaction
    /// committing before it applied, none committing at or after it. Reached on a Begin
    /// whose commit LSN is at or past it, or on a server position at or past it between
    /// transactions; the lake's progress is then committed (and acknowledged) as this
    /// LSN. Takes precedence over `until_caught_up`.
    pub until_lsn: Option<u64>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            slot: "walden".into(),
            publication: "walden".into(),
            flush_interval: Duration::from_millis(1000),
            spill_bytes: 64 * 1024 * 1024,
            writer: WriterOptions::default(),
            heartbeat_interval: None,
            retained_wal_warn_bytes: 1 << 30,
            until_caught_up: false,
            discover: DiscoverOptions::default(),
            copy_parallelism: 2,
            tables: Vec::new(),
            discovery_interval: Duration::from_secs(30),
            maintenance: MaintenanceOptions::default(),
            until_lsn: None,
        }
    }
}

/// How a session ended.
enum SessionEnd {
    Done(StreamOutcome),
    /// Everything up to a transaction boundary is committed; tables must be copied
    /// before streaming resumes: replicated ones again (with the reason), and new ones
    /// matching `[source] tables`.
    Copy {
        recopy: Vec<(u32, String)>,
        add: Vec<SourceTable>,
    },
}

/// How streaming ended.
#[derive(Debug, Clone)]
pub struct StreamOutcome {
    /// The lake's committed LSN at the end.
    pub lsn: u64,
    /// Why it ended: caught up (`--until-caught-up`, or `until_lsn` reached) or asked to
    /// stop.
    pub caught_up: bool,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Microseconds from 1970-01-01 to 2000-01-01 (Postgres timestamps count from 2000).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
/// How often acknowledgements go to the server at most.
const STATUS_INTERVAL: Duration = Duration::from_millis(500);

/// Streams changes into the lake until `cancel` turns true (then finishes the open
/// transaction, flushes, acknowledges and returns) or, with `until_caught_up`, until the
/// lake has reached the source's WAL position at the start. The lake must hold a
/// completed initial sync for the slot.
pub async fn stream(
    conn: &SourceConn,
    lake: &Lake,
    options: &StreamOptions,
    mut cancel: watch::Receiver<bool>,
) -> Result<StreamOutcome> {
    let mut backoff = Duration::from_secs(1);
    let mut target: Option<u64> = None;
    loop {
        let mut session = Session {
            conn,
            lake,
            options,
            made_progress: false,
        };
        let ended = match session.run(&mut cancel, &mut target).await {
            Ok(SessionEnd::Done(outcome)) => return Ok(outcome),
            Ok(SessionEnd::Copy { recopy, add }) => {
                // A failure here leaves the lake as it was: the next session meets the same
                // change (or finds the same new tables) and asks for the copy again.
                crate::sync::recopy_tables(conn, lake, options, &recopy, &add, cancel.clone()).await
            }
            Err(e) => Err(e),
        };
        match ended {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) if e.is_transient() => {
                if session.made_progress {
                    backoff = Duration::from_secs(1);
                }
                tracing::warn!(error = %error_chain(&e), retry_in_ms = backoff.as_millis() as u64,
                    "replication interrupted; resuming from the lake's committed LSN");
                metrics::counter!("walden_reconnects_total").increment(1);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.changed() => {}
                }
                if *cancel.borrow() {
                    let lsn = lake.progress(&options.slot)?.map_or(0, |p| p.lsn);
                    return Ok(StreamOutcome {
                        lsn,
                        caught_up: false,
                    });
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The position `--until-caught-up` waits for: a transactional logical message committed
/// (synchronously, so everything before it is flushed and decodable) now. Every
/// transaction that committed before it reaches the stream before it does. Falls back to
/// the WAL write position when the role may not emit messages.
async fn caught_up_target(control: &tokio_postgres::Client) -> Result<u64> {
    let marker = control
        .simple_query(
            "SET synchronous_commit = on; \
             SELECT pg_logical_emit_message(true, 'walden.caught-up', '')::text",
        )
        .await;
    let lsn = match marker {
        Ok(messages) => messages.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(walden_pg::parse_lsn),
            _ => None,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot emit a catch-up marker; waiting for the WAL write position instead");
            None
        }
    };
    if let Some(lsn) = lsn {
        return Ok(lsn);
    }
    let row = control
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(|source| PgError::Query {
            context: "reading the source's WAL position".into(),
            source,
        })?;
    walden_pg::parse_lsn(&row.get::<_, String>(0))
        .ok_or_else(|| SyncError::Refused("the source reported an unreadable WAL position".into()))
}

/// Replication lag after a flush: WAL bytes the lake is behind the server's last reported
/// position, and seconds since the newest committed transaction was committed on the
/// source (0 when the flush carried none: the lake is as fresh as the source).
fn lag_metrics(server_wal_end: u64, committed: u64, commit_time_unix_micros: Option<i64>) {
    metrics::gauge!("walden_replication_lag_bytes")
        .set(server_wal_end.saturating_sub(committed) as f64);
    let seconds = commit_time_unix_micros.map_or(0.0, |t| {
        (chrono::Utc::now().timestamp_micros() - t).max(0) as f64 / 1e6
    });
    metrics::gauge!("walden_replication_lag_seconds").set(seconds);
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

struct Session<'a> {
    conn: &'a SourceConn,
    lake: &'a Lake,
    options: &'a StreamOptions,
    made_progress: bool,
}

fn refused(message: String) -> SyncError {
    SyncError::Refused(message)
}

impl Session<'_> {
    async fn run(
        &mut self,
        cancel: &mut watch::Receiver<bool>,
        target: &mut Option<u64>,
    ) -> Result<SessionEnd> {
        let slot = self.options.slot.as_str();
        let control = Arc::new(self.conn.connect().await?);
        let progress = self.lake.progress(slot)?.ok_or_else(|| {
            refused(format!(
                "the lake has no replication state for slot {slot}: run `walden replicate` to \
                 copy the tables first"
            ))
        })?;
        let state: StreamState = serde_json::from_value(progress.state.clone())
            .map_err(|e| refused(format!("the lake's replication state is unreadable: {e}")))?;
        if state.phase != Phase::Streaming {
            return Err(refused(format!(
                "the initial copy for slot {slot} did not complete; run `walden replicate` to \
                 start it over"
            )));
        }
        let mut committed = progress.lsn;
        let resync = "Run `walden replicate --resync` to copy the tables again (or `walden \
                      teardown` to start from nothing)";

        // The slot must be the one the lake was built from, and not behind or ahead of it.
        let info = slot_info(&control, slot).await?.ok_or_else(|| {
            refused(format!(
                "replication slot {slot} no longer exists on the source: the changes since {} \
                 are lost to walden. {resync}",
                format_lsn(committed)
            ))
        })?;
        if info.wal_status.as_deref() == Some("lost") {
            return Err(refused(format!(
                "replication slot {slot} was invalidated (wal_status = lost; \
                 max_slot_wal_keep_size exceeded?): the WAL since {} is gone. {resync}",
                format_lsn(committed)
            )));
        }
        if info.plugin.as_deref() != Some("pgoutput") {
            return Err(refused(format!(
                "replication slot {slot} uses plugin {:?}, not pgoutput: it is not walden's. \
                 {resync}",
                info.plugin.unwrap_or_default()
            )));
        }
        if let Some(confirmed) = info.confirmed_flush_lsn
            && confirmed > committed
        {
            return Err(refused(format!(
                "replication slot {slot} was advanced to {} by someone else, past the \
                 lake's {}: the changes in between were consumed elsewhere. {resync}",
                format_lsn(confirmed),
                format_lsn(committed)
            )));
        }
        for t in &state.tables {
            let row = control
                .query_opt(
                    "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname || '.' || c.relname = $1",
                    &[&t.source],
                )
                .await
                .map_err(|source| PgError::Query {
                    context: format!("looking up table {}", t.source),
                    source,
                })?;
            match row.map(|r| r.get::<_, u32>(0)) {
                None => {
                    return Err(refused(format!(
                        "table {} was dropped on the source. Remove it from [source] tables, \
                         or {resync}",
                        t.source
                    )));
                }
                Some(oid) if oid != t.oid => {
                    return Err(refused(format!(
                        "table {} was dropped and created again on the source (relation oid \
                         {} is now {oid}): the lake's copy is of a table that no longer \
                         exists. {resync}",
                        t.source, t.oid
                    )));
                }
                Some(_) => {}
            }
        }
        if let Some(until) = self.options.until_lsn {
            if committed > until {
                return Err(refused(format!(
                    "the lake is at LSN {}, already past the requested {}: it cannot be \
                     brought back to an earlier position",
                    format_lsn(committed),
                    format_lsn(until)
                )));
            }
            *target = Some(until);
        }
        if target.is_none() && self.options.until_caught_up {
            *target = Some(caught_up_target(&control).await?);
        }

        let mut tables = Vec::with_capacity(state.tables.len());
        for t in &state.tables {
            let name = t.lake_name();
            let lake_table = self.lake.load_table(&name).await?.ok_or_else(|| {
                refused(format!(
                    "table {name} is no longer in the lake's catalog. {resync}"
                ))
            })?;
            let decodes = lake_table
                .arrow_schema()
                .fields()
                .iter()
                .map(|f| {
                    Decode::for_text(f.data_type()).ok_or_else(|| {
                        refused(format!(
                            "{name}.{}: walden cannot stream values into its lake type {}",
                            f.name(),
                            f.data_type()
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let primary_key = if t.primary_key.is_empty() {
                let schema = lake_table.metadata().current_schema();
                schema
                    .identifier_field_ids()
                    .filter_map(|id| schema.name_by_field_id(id).map(str::to_string))
                    .collect()
            } else {
                t.primary_key.clone()
            };
            tables.push(TableApply::new(
                name,
                t.oid,
                lake_table,
                decodes,
                primary_key,
                t.columns.clone(),
                t.synced_lsn,
            ));
        }
        let mut applier = Applier::new(
            self.lake.clone(),
            SourceContext {
                client: control.clone(),
                discover: self.options.discover.clone(),
            },
            tables,
            self.options.writer.clone(),
            self.options.spill_bytes,
        );

        // The stream itself.
        let cfg = self
            .conn
            .replication_config(slot, &self.options.publication)?
            .with_start_lsn(Lsn::from_u64(committed))
            .with_ack_lsn(Lsn::from_u64(committed))
            .with_options(walden_pg::text::SESSION_OPTIONS)
            .with_status_interval(STATUS_INTERVAL)
            .with_wakeup_interval(Duration::from_secs(5));
        let repl_err = |context: String| move |source| PgError::Replication { context, source };
        let mut client = ReplicationClient::connect_gated(cfg)
            .await
            .map_err(repl_err(format!(
                "opening a replication session to {}",
                self.conn.display()
            )))?;
        let system = client
            .identify_system()
            .await
            .map_err(repl_err("identifying the source (IDENTIFY_SYSTEM)".into()))?;
        if let Some(expected) = &state.system_id
            && &system.system_id != expected
        {
            client.abort();
            return Err(refused(format!(
                "the source {} is a different Postgres cluster (system identifier {}) from the \
                 one this lake was copied from ({expected}). Point [source] url at the original \
                 server, or {resync}",
                self.conn.display(),
                system.system_id
            )));
        }
        client
            .start()
            .await
            .map_err(repl_err(format!("starting replication from slot {slot}")))?;
        client
            .wait_started()
            .await
            .map_err(repl_err(format!("starting replication from slot {slot}")))?;
        tracing::info!(slot, lsn = %format_lsn(committed), "streaming");

        let flush_interval = self.options.flush_interval;
        // When nothing is buffered, record the keepalive position at most this often.
        let idle_progress_every = flush_interval.max(Duration::from_secs(1));
        let mut ticker = tokio::time::interval(flush_interval.min(Duration::from_millis(250)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wal_check = tokio::time::interval(Duration::from_secs(15));
        wal_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = self.options.heartbeat_interval.map(|d| {
            let mut i = tokio::time::interval(d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });

        // Transaction state.
        let mut in_txn = false;
        let mut txn_final = 0u64;
        let mut skip_txn = false;
        // The end of the last complete transaction (or keepalive position) not committed yet.
        let mut pending_lsn = committed;
        let mut first_pending: Option<Instant> = None;
        let mut last_commit = Instant::now();
        let mut stopping = *cancel.borrow();
        // The server's WAL position as last reported, and the source commit time (Unix
        // microseconds) of the newest transaction not yet committed to the lake.
        let mut server_wal_end = committed;
        let mut pending_commit_time: Option<i64> = None;
        metrics::gauge!("walden_lake_lsn").set(committed as f64);
        // `until_lsn`: every transaction committing before it has been applied, and
        // nothing after it.
        let mut until_reached = false;
        // Tables matching `[source] tables` the lake does not have yet.
        let mut new_tables = self.new_tables(&control, &state).await?;
        let mut discovery = tokio::time::interval(self.options.discovery_interval);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        discovery.reset();
        let mut maintenance_due = false;
        let mut maintenance = self.options.maintenance.interval.map(|d| {
            let mut i = tokio::time::interval(d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i.reset();
            i
        });

        loop {
            // Maintenance runs between flushes only: nothing buffered, no transaction open
            // (under steady load, right after the next flush).
            if maintenance_due && !in_txn && !applier.has_changes() {
                maintenance_due = false;
                applier.maintain(&self.options.maintenance).await;
            }
            if let Some(until) = self.options.until_lsn.filter(|_| until_reached) {
                // Reached between transactions: flush at exactly `until` and stop.
                pending_lsn = until;
                stopping = true;
            }
            let caught_up = target.is_some_and(|t| committed >= t);
            let copy_due = applier.wants_recopy() || !new_tables.is_empty();
            if (stopping || caught_up || copy_due) && !in_txn {
                if pending_lsn > committed {
                    committed = self
                        .flush(&mut applier, &client, &state, pending_lsn)
                        .await?;
                    lag_metrics(server_wal_end, committed, pending_commit_time.take());
                }
                let caught_up = target.is_some_and(|t| committed >= t);
                if stopping || caught_up || copy_due {
                    // The transport sends a raised acknowledgement once its status interval
                    // has passed since the last one; give it that long before closing.
                    tokio::time::sleep(STATUS_INTERVAL + Duration::from_millis(100)).await;
                    let _ = client.shutdown().await;
                    if copy_due && !stopping {
                        return Ok(SessionEnd::Copy {
                            recopy: applier.recopies(),
                            add: new_tables,
                        });
                    }
                    return Ok(SessionEnd::Done(StreamOutcome {
                        lsn: committed,
                        caught_up,
                    }));
                }
            }
            tokio::select! {
                event = client.recv() => {
                    let event = event.map_err(repl_err(format!("reading the replication stream of slot {slot}")))?;
                    let Some(event) = event else {
                        return Err(SyncError::Source(PgError::Replication {
                            context: format!("the replication stream of slot {slot} ended"),
                            source: pgwire_replication::PgWireError::Io(Arc::new(
                                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "stream closed"),
                            )),
                        }));
                    };
                    tracing::trace!(?event, "event");
                    match event {
                        ReplicationEvent::Begin { final_lsn, .. } => {
                            if self.options.until_lsn.is_some_and(|u| final_lsn.as_u64() >= u) {
                                until_reached = true;
                                continue;
                            }
                            in_txn = true;
                            txn_final = final_lsn.as_u64();
                            skip_txn = txn_final < committed;
                        }
                        ReplicationEvent::Commit { end_lsn, commit_time_micros, .. } => {
                            in_txn = false;
                            server_wal_end = server_wal_end.max(end_lsn.as_u64());
                            if !skip_txn {
                                pending_lsn = pending_lsn.max(end_lsn.as_u64());
                                pending_commit_time = Some(commit_time_micros + PG_EPOCH_UNIX_MICROS);
                                if applier.has_changes() {
                                    first_pending.get_or_insert_with(Instant::now);
                                }
                            }
                            let due = first_pending.is_some_and(|t| t.elapsed() >= flush_interval)
                                || applier.buffered_bytes() >= self.options.spill_bytes;
                            if due {
                                committed = self.flush(&mut applier, &client, &state, pending_lsn).await?;
                                lag_metrics(server_wal_end, committed, pending_commit_time.take());
                                first_pending = None;
                                last_commit = Instant::now();
                            }
                        }
                        ReplicationEvent::XLogData { data, wal_end, .. } => {
                            if !in_txn && self.options.until_lsn.is_some_and(|u| wal_end.as_u64() >= u) {
                                until_reached = true;
                                continue;
                            }
                            let message = pgoutput::decode(&data)?;
                            self.apply(&mut applier, message, skip_txn, txn_final).await?;
                        }
                        ReplicationEvent::KeepAlive { wal_end, .. } => {
                            let wal_end = wal_end.as_u64();
                            server_wal_end = server_wal_end.max(wal_end);
                            metrics::gauge!("walden_replication_lag_bytes")
                                .set(server_wal_end.saturating_sub(committed) as f64);
                            if !in_txn && self.options.until_lsn.is_some_and(|u| wal_end >= u) {
                                until_reached = true;
                                continue;
                            }
                            if !in_txn && !applier.has_changes() && wal_end > pending_lsn {
                                pending_lsn = wal_end;
                            }
                        }
                        ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
                    }
                }
                _ = ticker.tick() => {
                    if in_txn || pending_lsn <= committed {
                        continue;
                    }
                    let due = if applier.has_changes() {
                        first_pending.is_none_or(|t| t.elapsed() >= flush_interval)
                    } else {
                        last_commit.elapsed() >= idle_progress_every || target.is_some()
                    };
                    if due {
                        committed = self.flush(&mut applier, &client, &state, pending_lsn).await?;
                        lag_metrics(server_wal_end, committed, pending_commit_time.take());
                        first_pending = None;
                        last_commit = Instant::now();
                    }
                }
                _ = discovery.tick(), if new_tables.is_empty() && !self.options.tables.is_empty() => {
                    match self.new_tables(&control, &state).await {
                        Ok(found) => new_tables = found,
                        Err(e) => tracing::warn!(error = %error_chain(&e), "could not look for new tables"),
                    }
                }
                _ = async { maintenance.as_mut().expect("guarded").tick().await }, if maintenance.is_some() && self.options.until_lsn.is_none() => {
                    maintenance_due = true;
                }
                _ = wal_check.tick() => {
                    self.check_retained_wal(&control).await;
                }
                _ = async { heartbeat.as_mut().expect("guarded").tick().await }, if heartbeat.is_some() => {
                    if let Err(e) = control
                        .batch_execute("SELECT pg_logical_emit_message(false, 'walden.heartbeat', '')")
                        .await
                    {
                        tracing::warn!(error = %e, "could not emit a heartbeat message");
                    }
                }
                changed = cancel.changed() => {
                    if changed.is_err() || *cancel.borrow() {
                        stopping = true;
                    }
                }
            }
        }
    }

    async fn apply(
        &mut self,
        applier: &mut Applier,
        message: LogicalMessage,
        skip_txn: bool,
        txn_final: u64,
    ) -> Result<()> {
        match message {
            LogicalMessage::Relation(rel) => applier.relation(rel)?,
            LogicalMessage::Insert { relation, new } => {
                if !skip_txn && applier.wants(relation, txn_final) {
                    applier.insert(relation, &new).await?;
                }
            }
            LogicalMessage::Update { relation, old, new } => {
                if !skip_txn && applier.wants(relation, txn_final) {
                    applier.update(relation, old.as_ref(), &new).await?;
                }
            }
            LogicalMessage::Delete { relation, old } => {
                if !skip_txn && applier.wants(relation, txn_final) {
                    applier.delete(relation, &old).await?;
                }
            }
            LogicalMessage::Truncate { relations, .. } => {
                if !skip_txn {
                    for oid in relations {
                        if applier.wants(oid, txn_final) {
                            applier.truncate(oid).await?;
                        }
                    }
                }
            }
            LogicalMessage::Type { .. }
            | LogicalMessage::Origin { .. }
            | LogicalMessage::Message { .. }
            | LogicalMessage::Begin { .. }
            | LogicalMessage::Commit { .. } => {}
        }
        applier.spill_if_full().await
    }

    /// Commits everything buffered with progress `lsn`, then acknowledges it.
    async fn flush(
        &mut self,
        applier: &mut Applier,
        client: &ReplicationClient,
        state: &StreamState,
        lsn: u64,
    ) -> Result<u64> {
        let started = Instant::now();
        let stats = applier.commit(&self.options.slot, lsn, state).await?;
        if stats.tables > 0 {
            crate::failpoint("stream-after-commit");
        }
        // Only now is `lsn` durable in the lake: tell the server.
        client.update_applied_lsn(Lsn::from_u64(lsn));
        if stats.tables > 0 && crate::failpoint_armed("stream-after-ack") {
            // Let the acknowledgement reach the server first.
            tokio::time::sleep(STATUS_INTERVAL * 2).await;
            crate::failpoint("stream-after-ack");
        }
        self.made_progress = true;
        if stats.tables > 0 {
            tracing::debug!(
                lsn = %format_lsn(lsn),
                tables = stats.tables,
                changes = stats.changes,
                data_files = stats.data_files,
                delete_files = stats.delete_files,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "committed"
            );
        }
        metrics::gauge!("walden_lake_lsn").set(lsn as f64);
        if stats.tables > 0 {
            metrics::counter!("walden_commits_total").increment(1);
            metrics::histogram!("walden_flush_duration_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        metrics::gauge!("walden_buffered_bytes").set(applier.buffered_bytes() as f64);
        metrics::gauge!("walden_index_memory_bytes").set(applier.index_bytes() as f64);
        Ok(lsn)
    }

    /// Tables matching `[source] tables` that the lake does not replicate yet and that
    /// pass the preflight rules (a table that does not is named in a warning, once).
    async fn new_tables(
        &self,
        control: &tokio_postgres::Client,
        state: &StreamState,
    ) -> Result<Vec<SourceTable>> {
        if self.options.tables.is_empty() || self.options.until_lsn.is_some() {
            return Ok(Vec::new());
        }
        let selector = TableSelector::new(&self.options.tables).map_err(refused)?;
        let found = walden_pg::discover(control, &selector, &self.options.discover).await?;
        let mut new = Vec::new();
        for t in found {
            if state.tables.iter().any(|s| s.oid == t.oid) {
                continue;
            }
            let problem = if !t.can_select {
                Some("walden's role may not SELECT from it".to_string())
            } else if !t.replication_safe() {
                Some(
                    "it has no primary key and REPLICA IDENTITY is not FULL: publishing it \
                     would make its UPDATE and DELETE fail on the primary"
                        .to_string(),
                )
            } else {
                t.unsupported_columns().first().map(|(c, why)| {
                    format!(
                        "column {} ({}) has no lake type: {why}; map it to \"string\" in \
                         [source] column_types",
                        c.name, c.type_name
                    )
                })
            };
            match problem {
                Some(why) => {
                    static WARNED: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
                    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
                    if !warned.contains(&t.oid) {
                        warned.push(t.oid);
                        tracing::warn!(table = %t.display_name(), reason = %why,
                            "a new table matches [source] tables but cannot be replicated");
                    }
                }
                None => new.push(t),
            }
        }
        Ok(new)
    }

    async fn check_retained_wal(&self, control: &tokio_postgres::Client) {
        let slot = &self.options.slot;
        let sql = format!(
            "SELECT (pg_current_wal_lsn() - restart_lsn)::int8 FROM pg_replication_slots \
             WHERE slot_name = {}",
            quote_literal(slot)
        );
        match control.query_opt(&sql, &[]).await {
            Ok(Some(row)) => {
                let bytes = row.get::<_, Option<i64>>(0).unwrap_or(0).max(0) as u64;
                metrics::gauge!("walden_retained_wal_bytes").set(bytes as f64);
                if bytes > self.options.retained_wal_warn_bytes {
                    tracing::warn!(
                        slot = %slot,
                        retained_bytes = bytes,
                        threshold = self.options.retained_wal_warn_bytes,
                        "the replication slot retains more WAL on the source than the warning \
                         threshold: is the lake keeping up?"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "could not read retained WAL"),
        }
    }
}
