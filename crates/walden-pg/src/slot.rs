//! The publication (an explicit table list, never `FOR ALL TABLES`) and the logical slot.

use pgwire_replication::{Lsn, ReplicationClient};
use tokio_postgres::Client;

use crate::discover::{SourceTable, quote_ident};
use crate::error::QueryContext;
use crate::{PgError, Result, SourceConn};

/// Formats an LSN the way Postgres does (`16/B374D848`).
pub fn format_lsn(lsn: u64) -> String {
    Lsn(lsn).to_string()
}

pub fn parse_lsn(s: &str) -> Option<u64> {
    Lsn::parse(s).ok().map(|l| l.0)
}

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub active_pid: Option<i32>,
    pub confirmed_flush_lsn: Option<u64>,
    pub restart_lsn: Option<u64>,
    pub wal_status: Option<String>,
    pub temporary: bool,
}

pub async fn slot_info(client: &Client, slot: &str) -> Result<Option<SlotInfo>> {
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text, active_pid, confirmed_flush_lsn::text,
                    restart_lsn::text, wal_status, temporary
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .ctx(|| format!("reading replication slot {slot}"))?;
    Ok(row.map(|r| SlotInfo {
        plugin: r.get(0),
        database: r.get(1),
        active_pid: r.get(2),
        confirmed_flush_lsn: r.get::<_, Option<String>>(3).as_deref().and_then(parse_lsn),
        restart_lsn: r.get::<_, Option<String>>(4).as_deref().and_then(parse_lsn),
        wal_status: r.get(5),
        temporary: r.get(6),
    }))
}

/// Drops the slot if it exists. A slot in use by another session is an error naming it.
pub async fn drop_slot(client: &Client, slot: &str) -> Result<bool> {
    let Some(info) = slot_info(client, slot).await? else {
        return Ok(false);
    };
    if let Some(pid) = info.active_pid {
        return Err(PgError::Refused(format!(
            "replication slot {slot} is in use by server process {pid}; stop that consumer \
             (another walden?) first"
        )));
    }
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .ctx(|| format!("dropping replication slot {slot}"))?;
    Ok(true)
}

/// What a publication currently covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationInfo {
    pub all_tables: bool,
    pub tables: Vec<String>,
}

pub async fn publication_info(client: &Client, name: &str) -> Result<Option<PublicationInfo>> {
    let row = client
        .query_opt(
            "SELECT puballtables FROM pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
        .ctx(|| format!("reading publication {name}"))?;
    let Some(row) = row else { return Ok(None) };
    let tables = client
        .query(
            "SELECT schemaname::text || '.' || tablename::text FROM pg_publication_tables
             WHERE pubname = $1 ORDER BY 1",
            &[&name],
        )
        .await
        .ctx(|| format!("reading the tables of publication {name}"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some(PublicationInfo {
        all_tables: row.get(0),
        tables,
    }))
}

/// Makes the publication cover exactly `tables`: creates it, or sets its table list.
/// Refuses tables whose UPDATE/DELETE would start failing on the primary, and refuses to
/// touch a `FOR ALL TABLES` publication (walden never creates one).
pub async fn ensure_publication(client: &Client, name: &str, tables: &[SourceTable]) -> Result<()> {
    if let Some(unsafe_table) = tables.iter().find(|t| !t.replication_safe()) {
        return Err(PgError::Refused(format!(
            "table {} has no primary key and REPLICA IDENTITY {}: publishing it would make \
             UPDATE and DELETE on it fail on the primary. Add a primary key, or run \
             ALTER TABLE {} REPLICA IDENTITY FULL, or exclude it with \"!{}\" in [source] tables",
            t_name(unsafe_table),
            identity_name(unsafe_table.replica_identity),
            unsafe_table.quoted(),
            t_name(unsafe_table),
        )));
    }
    if tables.is_empty() {
        return Err(PgError::Refused(
            "no tables selected: [source] tables matches no table the source has".into(),
        ));
    }
    let list = tables
        .iter()
        .map(SourceTable::quoted)
        .collect::<Vec<_>>()
        .join(", ");
    match publication_info(client, name).await? {
        None => {
            let sql = format!(
                "CREATE PUBLICATION {} FOR TABLE {list} WITH (publish_via_partition_root = true)",
                quote_ident(name)
            );
            client
                .batch_execute(&sql)
                .await
                .ctx(|| format!("creating publication {name} (needs CREATE on the database and ownership of the tables)"))?;
        }
        Some(info) if info.all_tables => {
            return Err(PgError::Refused(format!(
                "publication {name} is FOR ALL TABLES; walden only uses publications with an \
                 explicit table list. Choose another [source] publication name"
            )));
        }
        Some(info) => {
            let mut want: Vec<String> = tables.iter().map(t_name).collect();
            want.sort();
            if info.tables != want {
                let sql = format!("ALTER PUBLICATION {} SET TABLE {list}", quote_ident(name));
                client
                    .batch_execute(&sql)
                    .await
                    .ctx(|| format!("setting the tables of publication {name}"))?;
            }
        }
    }
    Ok(())
}

/// Adds `tables` to walden's publication (which must exist with an explicit table list),
/// leaving the tables it has in place.
pub async fn add_to_publication(client: &Client, name: &str, tables: &[SourceTable]) -> Result<()> {
    let info = publication_info(client, name).await?.ok_or_else(|| {
        PgError::Refused(format!(
            "publication {name} no longer exists on the source; run `walden replicate \
             --resync` to create it and copy the tables again"
        ))
    })?;
    let missing: Vec<String> = tables
        .iter()
        .filter(|t| !info.tables.contains(&t_name(t)))
        .map(SourceTable::quoted)
        .collect();
    if info.all_tables || missing.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "ALTER PUBLICATION {} ADD TABLE {}",
        quote_ident(name),
        missing.join(", ")
    );
    client
        .batch_execute(&sql)
        .await
        .ctx(|| format!("adding tables to publication {name} (needs ownership of the tables)"))
}

pub async fn drop_publication(client: &Client, name: &str) -> Result<bool> {
    if publication_info(client, name).await?.is_none() {
        return Ok(false);
    }
    client
        .batch_execute(&format!("DROP PUBLICATION {}", quote_ident(name)))
        .await
        .ctx(|| format!("dropping publication {name}"))?;
    Ok(true)
}

fn t_name(t: &SourceTable) -> String {
    t.display_name()
}

fn identity_name(c: u8) -> &'static str {
    match c {
        b'd' => "DEFAULT",
        b'n' => "NOTHING",
        b'f' => "FULL",
        _ => "INDEX",
    }
}

/// A new slot whose exported snapshot copy connections can import. The snapshot stays
/// valid while this value lives and no further command runs on its session.
pub struct ExportedSnapshot {
    session: ReplicationClient,
    pub slot: String,
    pub snapshot_name: String,
    /// The slot's consistent point: the snapshot shows exactly the transactions that
    /// committed before it; streaming from it delivers exactly the rest.
    pub consistent_point: u64,
    /// The cluster's system identifier (to detect a URL that now points elsewhere).
    pub system_id: String,
    pub timeline: u32,
}

impl ExportedSnapshot {
    /// Creates the slot (`CREATE_REPLICATION_SLOT ... LOGICAL pgoutput EXPORT_SNAPSHOT`) on
    /// a replication session.
    pub async fn create(conn: &SourceConn, slot: &str, publication: &str) -> Result<Self> {
        Self::create_slot(conn, slot, publication, false).await
    }

    /// Like [`create`](Self::create), but the slot is `TEMPORARY`: the server drops it when
    /// the session ends ([`release`](Self::release), a lost connection, a crash), so it
    /// never pins WAL beyond its use. For a snapshot at a fresh consistent point without
    /// touching the replication slot (`walden verify`).
    pub async fn create_temporary(
        conn: &SourceConn,
        slot: &str,
        publication: &str,
    ) -> Result<Self> {
        Self::create_slot(conn, slot, publication, true).await
    }

    async fn create_slot(
        conn: &SourceConn,
        slot: &str,
        publication: &str,
        temporary: bool,
    ) -> Result<Self> {
        let cfg = conn.replication_config(slot, publication)?;
        let repl_err = |context: String| move |source| PgError::Replication { context, source };
        let mut session = ReplicationClient::connect_gated(cfg)
            .await
            .map_err(repl_err(format!(
                "opening a replication session to {}",
                conn.display()
            )))?;
        let system = session.identify_system().await.map_err(repl_err(format!(
            "identifying the server {} (does the role have REPLICATION?)",
            conn.display()
        )))?;
        let rows = session
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {}{} LOGICAL pgoutput EXPORT_SNAPSHOT",
                quote_ident(slot),
                if temporary { " TEMPORARY" } else { "" }
            ))
            .await
            .map_err(repl_err(format!("creating replication slot {slot}")))?;
        let row = rows.into_iter().next().ok_or_else(|| PgError::Decode {
            context: format!("creating replication slot {slot}"),
            message: "the server returned no row".into(),
        })?;
        let text = |i: usize| -> String {
            row.get(i)
                .and_then(|v| v.as_ref())
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let consistent_point = parse_lsn(&text(1)).ok_or_else(|| PgError::Decode {
            context: format!("creating replication slot {slot}"),
            message: format!("bad consistent point {:?}", text(1)),
        })?;
        Ok(Self {
            slot: slot.to_string(),
            snapshot_name: text(2),
            consistent_point,
            system_id: system.system_id,
            timeline: system.timeline,
            session,
        })
    }

    /// Ends the session; the snapshot is gone, the slot stays (a temporary one goes with
    /// the session).
    pub async fn release(mut self) {
        self.session.abort();
    }
}
