//! `walden check`: a preflight of the source. Every problem comes with the exact fix.

use tokio_postgres::Client;

use crate::Result;
use crate::discover::{DiscoverOptions, SourceTable, TableSelector, discover, quote_ident};
use crate::error::QueryContext;
use crate::slot::{publication_info, slot_info};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Ok,
    Warning,
    Error,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    /// What was checked (`wal_level`, `public.orders`, `public.orders.shape`, ...).
    pub subject: String,
    pub message: String,
    /// What to run or change, when something is wrong.
    pub fix: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CheckReport {
    pub server_version: String,
    pub findings: Vec<Finding>,
    /// The selected tables, as discovered.
    pub tables: Vec<SourceTable>,
}

impl CheckReport {
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

/// What the check needs to know of the configuration.
pub struct CheckInput<'a> {
    pub selector: &'a TableSelector,
    pub discover: &'a DiscoverOptions,
    pub slot: &'a str,
    pub publication: &'a str,
}

pub async fn check(client: &Client, input: &CheckInput<'_>) -> Result<CheckReport> {
    let mut f = Vec::new();
    let mut push = |severity, subject: &str, message: String, fix: Option<String>| {
        f.push(Finding {
            severity,
            subject: subject.to_string(),
            message,
            fix,
        })
    };
    let setting = |name: &'static str| async move {
        client
            .query_one("SELECT current_setting($1)", &[&name])
            .await
            .map(|r| r.get::<_, String>(0))
            .ctx(|| format!("reading the setting {name}"))
    };

    let version = setting("server_version").await?;
    let version_num: i32 = setting("server_version_num").await?.parse().unwrap_or(0);
    if version_num < 140_000 {
        push(
            Severity::Warning,
            "server_version",
            format!(
                "PostgreSQL {version}: 14 or later is tested; the parallel copy's TID range scans need 14"
            ),
            None,
        );
    } else {
        push(
            Severity::Ok,
            "server_version",
            format!("PostgreSQL {version}"),
            None,
        );
    }

    let wal_level = setting("wal_level").await?;
    if wal_level == "logical" {
        push(Severity::Ok, "wal_level", "logical".into(), None);
    } else {
        push(
            Severity::Error,
            "wal_level",
            format!("is {wal_level}; logical replication needs wal_level = logical"),
            Some(
                "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (a reload is not enough)"
                    .into(),
            ),
        );
    }

    let role = client
        .query_one(
            "SELECT current_user::text, rolsuper, rolreplication, current_database()::text,
                    has_database_privilege(current_database(), 'CREATE')
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .ctx(|| "reading the role's attributes".into())?;
    let (user, superuser, replication, database, can_create): (String, bool, bool, String, bool) = (
        role.get(0),
        role.get(1),
        role.get(2),
        role.get(3),
        role.get(4),
    );
    if superuser || replication {
        push(
            Severity::Ok,
            "role",
            format!("{user} may open replication connections"),
            None,
        );
    } else {
        push(
            Severity::Error,
            "role",
            format!("{user} has neither REPLICATION nor SUPERUSER"),
            Some(format!(
                "ALTER ROLE {} WITH REPLICATION;",
                quote_ident(&user)
            )),
        );
    }

    let slot = slot_info(client, input.slot).await?;
    let slots = client
        .query_one(
            "SELECT current_setting('max_replication_slots')::int,
                    (SELECT count(*)::int FROM pg_replication_slots),
                    current_setting('max_wal_senders')::int,
                    (SELECT count(*)::int FROM pg_stat_replication),
                    current_setting('max_slot_wal_keep_size')",
            &[],
        )
        .await
        .ctx(|| "reading slot and WAL sender limits".into())?;
    let (max_slots, used_slots, max_senders, used_senders, keep): (i32, i32, i32, i32, String) = (
        slots.get(0),
        slots.get(1),
        slots.get(2),
        slots.get(3),
        slots.get(4),
    );
    match &slot {
        Some(info) => {
            let status = info.wal_status.clone().unwrap_or_else(|| "unknown".into());
            if info.database.as_deref() != Some(database.as_str()) {
                push(
                    Severity::Error,
                    "replication slot",
                    format!(
                        "{} exists but belongs to database {} (slot names are cluster-wide)",
                        input.slot,
                        info.database.clone().unwrap_or_else(|| "(physical)".into())
                    ),
                    Some("choose another [source] slot name".into()),
                );
            } else if status == "lost" {
                push(
                    Severity::Error,
                    "replication slot",
                    format!(
                        "{} exists but is invalidated (wal_status = lost): the WAL it needed is gone",
                        input.slot
                    ),
                    Some("run `walden teardown` and replicate again to re-sync".into()),
                );
            } else if info.plugin.as_deref() != Some("pgoutput") {
                push(
                    Severity::Error,
                    "replication slot",
                    format!(
                        "{} exists but uses plugin {:?}, not pgoutput",
                        input.slot, info.plugin
                    ),
                    Some("choose another [source] slot name, or drop that slot".into()),
                );
            } else {
                push(
                    Severity::Ok,
                    "replication slot",
                    format!("{} exists (wal_status = {status})", input.slot),
                    None,
                );
            }
        }
        None if used_slots >= max_slots => push(
            Severity::Error,
            "replication slots",
            format!("all {max_slots} replication slots are in use"),
            Some(format!(
                "ALTER SYSTEM SET max_replication_slots = {}; then restart PostgreSQL, or drop an unused slot",
                max_slots + 1
            )),
        ),
        None => push(
            Severity::Ok,
            "replication slots",
            format!(
                "{used_slots} of {max_slots} in use; walden will create {}",
                input.slot
            ),
            None,
        ),
    }
    if used_senders >= max_senders {
        push(
            Severity::Error,
            "wal senders",
            format!("all {max_senders} WAL senders are in use"),
            Some(format!(
                "ALTER SYSTEM SET max_wal_senders = {}; then restart PostgreSQL",
                max_senders + 1
            )),
        );
    } else {
        push(
            Severity::Ok,
            "wal senders",
            format!("{used_senders} of {max_senders} in use"),
            None,
        );
    }
    if keep == "-1" {
        push(
            Severity::Warning,
            "max_slot_wal_keep_size",
            "unlimited: while walden is stopped its slot retains WAL until the disk fills".into(),
            Some("consider ALTER SYSTEM SET max_slot_wal_keep_size = '50GB' (a slot past it is invalidated and needs a re-sync)".into()),
        );
    }

    let tables = discover(client, input.selector, input.discover).await?;
    if tables.is_empty() {
        push(
            Severity::Error,
            "tables",
            "[source] tables matches no table in this database".into(),
            Some("check the patterns, e.g. tables = [\"public.*\"]".into()),
        );
    }

    let publication = publication_info(client, input.publication).await?;
    match &publication {
        Some(p) if p.all_tables => push(
            Severity::Error,
            "publication",
            format!(
                "{} is FOR ALL TABLES; walden uses explicit table lists only",
                input.publication
            ),
            Some("choose another [source] publication name".into()),
        ),
        Some(_) => push(
            Severity::Ok,
            "publication",
            format!(
                "{} exists; walden will set its table list",
                input.publication
            ),
            None,
        ),
        None if !(superuser || can_create) => push(
            Severity::Error,
            "publication",
            format!(
                "{user} cannot create publication {} (no CREATE on database {database})",
                input.publication
            ),
            Some(format!(
                "GRANT CREATE ON DATABASE {} TO {};",
                quote_ident(&database),
                quote_ident(&user)
            )),
        ),
        None => push(
            Severity::Ok,
            "publication",
            format!("walden will create {}", input.publication),
            None,
        ),
    }

    for t in &tables {
        let name = t.display_name();
        let mut ok = true;
        if !t.can_select {
            ok = false;
            push(
                Severity::Error,
                &name,
                format!("{user} cannot SELECT from it"),
                Some(format!(
                    "GRANT SELECT ON {} TO {};",
                    t.quoted(),
                    quote_ident(&user)
                )),
            );
        }
        if !t.replication_safe() {
            ok = false;
            let identity = if t.replica_identity == b'n' {
                "NOTHING"
            } else {
                "DEFAULT"
            };
            push(
                Severity::Error,
                &name,
                format!(
                    "no primary key and REPLICA IDENTITY {identity}: publishing it would make \
                     UPDATE and DELETE on it fail on the primary, so walden will not"
                ),
                Some(format!(
                    "add a primary key, or ALTER TABLE {} REPLICA IDENTITY FULL; or exclude it with \"!{name}\" in [source] tables",
                    t.quoted()
                )),
            );
        }
        if !(superuser || t.owned_by_me) && publication.is_none() {
            ok = false;
            push(
                Severity::Error,
                &name,
                format!("{user} does not own it, so cannot add it to a publication"),
                Some(format!(
                    "have its owner run: CREATE PUBLICATION {} FOR TABLE ...; (walden then only reads it)",
                    quote_ident(input.publication)
                )),
            );
        }
        for (c, why) in t.unsupported_columns() {
            ok = false;
            push(
                Severity::Error,
                &format!("{name}.{}", c.name),
                format!("type {}: {why}", c.type_name),
                Some(format!(
                    "map it to its text form with column_types = {{ \"{name}.{}\" = \"string\" }} in [source], or exclude the table with \"!{name}\"",
                    c.name
                )),
            );
        }
        if ok {
            push(
                Severity::Ok,
                &name,
                format!(
                    "{} columns, key ({}), ~{} rows",
                    t.columns.len(),
                    if t.primary_key.is_empty() {
                        "REPLICA IDENTITY FULL".to_string()
                    } else {
                        t.primary_key.join(", ")
                    },
                    t.estimated_rows as i64
                ),
                None,
            );
        }
    }

    Ok(CheckReport {
        server_version: version,
        findings: f,
        tables,
    })
}
