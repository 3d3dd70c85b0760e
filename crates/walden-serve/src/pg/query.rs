//! Queries: the simple and extended protocol over the query service, portals and cursors
//! that keep an answer open across `Execute`/`FETCH`, and the session commands answered
//! here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Arc;

use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use futures::{Sink, SinkExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{MemPortalStore, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, DEFAULT_NAME, METADATA_APPLICATION_NAME, METADATA_USER,
    PgWireConnectionState, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::{NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Describe, Execute, Parse, ParseComplete,
    PortalSuspended, Sync as PgSync, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::{
    CommandComplete, EmptyQueryResponse, NoticeResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::simplequery::Query;
use pgwire::messages::startup::ParameterStatus;
use walden_query::{Answer, Outcome, Principal, Protocol, QueryError, Summary};

use super::Conn;
use super::auth::{SERVER_VERSION, SERVER_VERSION_NUM};
use super::command::{Kind, Local, classify};

/// A parsed statement as stored for the extended protocol.
#[derive(Debug)]
pub(crate) struct Statement {
    sql: String,
    kind: Kind,
    /// Result columns (queries only).
    schema: Option<SchemaRef>,
    /// Parameter types the planner inferred.
    params: Vec<Option<DataType>>,
}

pub(crate) type Stmt = Arc<Statement>;

/// An answer kept open between `Execute`s or `FETCH`es.
struct Running {
    answer: Answer,
    /// A batch partly sent, and the next row to send.
    pending: Option<(RecordBatch, usize)>,
    /// `WITH HOLD` cursor: outlives the transaction.
    hold: bool,
    /// The truncation notice was sent (cursors).
    noticed: bool,
}

impl Running {
    fn new(answer: Answer, hold: bool) -> Self {
        Self {
            answer,
            pending: None,
            hold,
            noticed: false,
        }
    }
}

/// Per-connection state of the front end.
#[derive(Default)]
pub(crate) struct Session {
    /// `SET` values, by lower-case name.
    settings: BTreeMap<String, String>,
    /// Suspended protocol portals.
    portals: HashMap<String, Running>,
    /// Open cursors (`DECLARE`).
    cursors: HashMap<String, Running>,
    /// Named protocol statements (for `DEALLOCATE ALL` / `DISCARD ALL`).
    statements: BTreeSet<String>,
}

/// The pgwire query parser is not used: `Parse` is handled by [`Conn::on_parse`].
#[derive(Debug)]
pub(crate) struct NoParser;

#[async_trait]
impl QueryParser for NoParser {
    type Statement = Stmt;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        _sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Self::Statement>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        Err(internal("statements are parsed by the walden front end"))
    }

    fn get_parameter_types(&self, _stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(Vec::new())
    }

    fn get_result_schema(
        &self,
        _stmt: &Self::Statement,
        _column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(Vec::new())
    }
}

fn user_error(code: &str, message: impl Into<String>, hint: Option<&str>) -> PgWireError {
    let mut info = ErrorInfo::new("ERROR".into(), code.into(), message.into());
    info.hint = hint.map(str::to_string);
    PgWireError::UserError(Box::new(info))
}

fn internal(message: &str) -> PgWireError {
    user_error("XX000", message, None)
}

fn aborted() -> PgWireError {
    user_error(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block",
        Some("send ROLLBACK to end the failed transaction block"),
    )
}

/// The SQLSTATE of a service error.
fn sqlstate(e: &QueryError) -> &'static str {
    match e {
        QueryError::Parse(_) => "42601",
        QueryError::Refused(m) => {
            if m.contains("(max_query_bytes)")
                || m.contains("(max_concurrent_queries)")
                || m.contains("too deep to plan")
            {
                "54000"
            } else {
                "42501"
            }
        }
        QueryError::Timeout(_) | QueryError::Cancelled => "57014",
        QueryError::Resources(_) => "53200",
        QueryError::Lake(_) => "58030",
        QueryError::Sql(df) => match df.find_root() {
            DataFusionError::SQL(..) => "42601",
            DataFusionError::SchemaError(..) => "42703",
            DataFusionError::Plan(m) => {
                let m = m.to_lowercase();
                if m.contains("table") && m.contains("not found") {
                    "42P01"
                } else if m.contains("no field named") {
                    "42703"
                } else if m.contains("function") {
                    "42883"
                } else {
                    "42000"
                }
            }
            DataFusionError::NotImplemented(_) => "0A000",
            DataFusionError::ResourcesExhausted(_) => "53200",
            DataFusionError::ArrowError(..) => "22000",
            _ => "XX000",
        },
    }
}

fn query_error(e: &QueryError) -> PgWireError {
    let message = match e {
        QueryError::Cancelled => "canceling statement due to user request".to_string(),
        other => other.to_string(),
    };
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        sqlstate(e).into(),
        message,
    )))
}

fn notice(severity: &str, code: &str, message: String, hint: Option<String>) -> NoticeResponse {
    let mut info = ErrorInfo::new(severity.into(), code.into(), message);
    info.hint = hint;
    info.into()
}

fn truncation_notice(s: &Summary) -> NoticeResponse {
    let cap = if s.rows >= s.max_rows {
        format!("{} rows (max_rows)", s.max_rows)
    } else {
        format!("{} bytes (max_result_bytes)", s.max_bytes)
    };
    notice(
        "NOTICE",
        "01000",
        format!(
            "the answer was truncated at this principal's cap of {cap}: {} rows were sent \
             and the rest left out",
            s.rows
        ),
        Some(
            "to see the rest, narrow the query (WHERE, fewer columns, an aggregate) or page \
             through it with ORDER BY ... LIMIT ... OFFSET ...; the caps are set per \
             principal by the operator"
                .into(),
        ),
    )
}

/// Result columns in the client's formats.
fn fields(schema: &Schema, format: &Format) -> PgWireResult<Arc<Vec<FieldInfo>>> {
    if let Format::Individual(codes) = format
        && codes.len() != schema.fields().len()
    {
        return Err(user_error(
            "08P01",
            format!(
                "the Bind message gives {} result format codes but the statement returns {} \
                 columns",
                codes.len(),
                schema.fields().len()
            ),
            Some("send no code, one code for all columns, or one per column"),
        ));
    }
    Ok(Arc::new(arrow_schema_to_pg_fields(schema, format, None)?))
}

fn row_description(fields: &[FieldInfo]) -> RowDescription {
    RowDescription::new(fields.iter().map(Into::into).collect())
}

fn tag(command: &str, rows: Option<usize>) -> PgWireBackendMessage {
    let t = match rows {
        Some(n) => Tag::new(command).with_rows(n),
        None => Tag::new(command),
    };
    PgWireBackendMessage::CommandComplete(CommandComplete::from(t))
}

/// Sends up to `max` rows (all with `None`) of an open answer. Returns the rows sent and
/// whether the answer is exhausted.
async fn send_rows<C>(
    client: &mut C,
    running: &mut Running,
    fields: &Arc<Vec<FieldInfo>>,
    max: Option<usize>,
) -> PgWireResult<(usize, bool)>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let mut sent = 0usize;
    loop {
        if max == Some(sent) {
            return Ok((sent, false));
        }
        if let Err(e) = running.answer.check_deadline() {
            running.pending = None;
            return Err(query_error(&e));
        }
        if let Some((batch, offset)) = running.pending.take() {
            let available = batch.num_rows() - offset;
            let take = match max {
                Some(m) => (m - sent).min(available),
                None => available,
            };
            for row in encode_recordbatch(fields.clone(), batch.slice(offset, take)) {
                client.feed(PgWireBackendMessage::DataRow(row?)).await?;
            }
            sent += take;
            if offset + take < batch.num_rows() {
                running.pending = Some((batch, offset + take));
            }
            continue;
        }
        match running.answer.next_batch().await {
            None => return Ok((sent, true)),
            Some(Err(e)) => return Err(query_error(&e)),
            Some(Ok(batch)) => {
                if batch.num_rows() > 0 {
                    running.pending = Some((batch, 0));
                }
            }
        }
    }
}

/// Ends an answer: audit, the truncation notice, `CommandComplete`.
async fn complete<C>(client: &mut C, answer: Answer, command: &str, rows: usize) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let summary = answer.finish().await;
    if summary.truncated {
        client
            .feed(PgWireBackendMessage::NoticeResponse(truncation_notice(
                &summary,
            )))
            .await?;
    }
    client.send(tag(command, Some(rows))).await?;
    Ok(())
}

/// What a session command answers.
#[derive(Default)]
struct LocalAnswer {
    tag: String,
    rows: Option<RecordBatch>,
    notices: Vec<NoticeResponse>,
    status: Option<TransactionStatus>,
    parameter: Option<(String, String)>,
    end_transaction: bool,
}

impl LocalAnswer {
    fn tag(tag: &str) -> Self {
        Self {
            tag: tag.to_string(),
            ..Default::default()
        }
    }
}

/// Canonical spelling of a setting's name (as `SHOW` and `ParameterStatus` give it).
fn canonical(name: &str) -> &str {
    match name {
        "datestyle" => "DateStyle",
        "timezone" => "TimeZone",
        "intervalstyle" => "IntervalStyle",
        other => other,
    }
}

/// Settings `SHOW ALL` lists besides the ones set.
const KNOWN: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "integer_datetimes",
    "intervalstyle",
    "is_superuser",
    "max_identifier_length",
    "search_path",
    "server_encoding",
    "server_version",
    "server_version_num",
    "standard_conforming_strings",
    "statement_timeout",
    "timezone",
    "transaction_isolation",
    "transaction_read_only",
];

fn show_schema(names: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

fn show_columns(name: &str) -> Vec<String> {
    if name == "all" {
        vec!["name".into(), "setting".into(), "description".into()]
    } else {
        vec![canonical(name).to_string()]
    }
}

impl Conn {
    fn principal(&self) -> PgWireResult<Arc<Principal>> {
        self.principal
            .get()
            .cloned()
            .ok_or_else(|| user_error("08P01", "the connection is not authenticated", None))
    }

    async fn execute(
        &self,
        principal: &Arc<Principal>,
        sql: &str,
        params: Option<ParamValues>,
    ) -> PgWireResult<Answer> {
        self.shared
            .service
            .execute(
                principal,
                Protocol::Pgwire,
                sql,
                params,
                Some(self.cancel.clone()),
            )
            .await
            .map_err(|e| query_error(&e))
    }

    /// A setting's value as `SHOW` gives it.
    fn setting<C: ClientInfo>(
        &self,
        client: &C,
        settings: &BTreeMap<String, String>,
        principal: &Principal,
        name: &str,
    ) -> Option<String> {
        if let Some(v) = settings.get(name) {
            return Some(v.clone());
        }
        let v = match name {
            "server_version" => SERVER_VERSION,
            "server_version_num" => SERVER_VERSION_NUM,
            "server_encoding" | "client_encoding" => "UTF8",
            "datestyle" => "ISO, MDY",
            "timezone" => "UTC",
            "intervalstyle" => "postgres",
            "transaction_isolation" | "default_transaction_isolation" => "read committed",
            "transaction_read_only"
            | "default_transaction_read_only"
            | "standard_conforming_strings"
            | "integer_datetimes" => "on",
            "is_superuser" => "off",
            "search_path" => "public",
            "max_identifier_length" => "63",
            "application_name" => {
                return Some(
                    client
                        .metadata()
                        .get(METADATA_APPLICATION_NAME)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            "session_authorization" => {
                return client.metadata().get(METADATA_USER).cloned();
            }
            "statement_timeout" => {
                return Some(format!("{}ms", principal.limits().timeout.as_millis()));
            }
            _ => return None,
        };
        Some(v.to_string())
    }

    /// Checks a `SET` value; returns the value to remember.
    fn check_setting(&self, name: &str, value: &str) -> PgWireResult<String> {
        let upper = value.trim().to_uppercase();
        match name {
            "client_encoding" => {
                if matches!(upper.as_str(), "UTF8" | "UTF-8" | "UNICODE") {
                    Ok("UTF8".into())
                } else {
                    Err(user_error(
                        "22023",
                        format!(
                            "client_encoding {value} is not supported: walden speaks UTF8 only"
                        ),
                        Some("set client_encoding to UTF8 and convert in the client"),
                    ))
                }
            }
            "timezone" => {
                if matches!(
                    upper.as_str(),
                    "UTC"
                        | "ETC/UTC"
                        | "GMT"
                        | "ETC/GMT"
                        | "UCT"
                        | "Z"
                        | "ZULU"
                        | "0"
                        | "+00:00"
                        | "00:00"
                        | "+00"
                        | "UTC0"
                ) {
                    Ok(value.to_string())
                } else {
                    Err(user_error(
                        "22023",
                        format!(
                            "TimeZone {value} is not supported: walden sends timestamps in UTC"
                        ),
                        Some("keep TimeZone UTC and convert to local time in the client"),
                    ))
                }
            }
            "datestyle" => {
                if upper.contains("ISO") {
                    Ok(value.to_string())
                } else {
                    Err(user_error(
                        "22023",
                        format!(
                            "DateStyle {value} is not supported: walden sends dates in ISO format"
                        ),
                        Some("keep DateStyle ISO"),
                    ))
                }
            }
            "transaction_read_only" | "default_transaction_read_only"
                if matches!(upper.as_str(), "OFF" | "FALSE" | "0" | "NO") =>
            {
                Err(read_only())
            }
            _ => Ok(value.to_string()),
        }
    }

    /// Finishes every portal and every cursor not `WITH HOLD` (end of a transaction).
    async fn end_transaction<C>(&self, client: &mut C)
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore,
    {
        if let Some(store) = store(client) {
            store.clear_portals();
        }
        let (portals, cursors) = {
            let mut s = self.session.lock().await;
            let portals: Vec<Running> = s.portals.drain().map(|(_, r)| r).collect();
            let names: Vec<String> = s
                .cursors
                .iter()
                .filter(|(_, r)| !r.hold)
                .map(|(n, _)| n.clone())
                .collect();
            let cursors: Vec<Running> = names.iter().filter_map(|n| s.cursors.remove(n)).collect();
            (portals, cursors)
        };
        for r in portals.into_iter().chain(cursors) {
            r.answer.finish().await;
        }
    }

    async fn run_local<C>(&self, client: &mut C, cmd: &Local) -> PgWireResult<LocalAnswer>
    where
        C: ClientInfo + ClientPortalStore + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
    {
        let principal = self.principal()?;
        let status = client.transaction_status();
        let in_block = !matches!(status, TransactionStatus::Idle);
        match cmd {
            Local::Set { name, value } => {
                if name.starts_with("datafusion.") {
                    return Err(user_error(
                        "42501",
                        format!(
                            "SET {name} refused: the query engine's settings are fixed by the \
                             server, and the principal's limits apply to every query; nothing \
                             was changed"
                        ),
                        Some("remove the SET; ask the operator if a limit needs changing"),
                    ));
                }
                let mut answer = LocalAnswer::tag("SET");
                let mut session = self.session.lock().await;
                match value {
                    None => {
                        session.settings.remove(name);
                    }
                    Some(v) => {
                        let v = self.check_setting(name, v)?;
                        if matches!(
                            name.as_str(),
                            "application_name" | "datestyle" | "timezone" | "client_encoding"
                        ) {
                            answer.parameter = Some((canonical(name).to_string(), v.clone()));
                        }
                        session.settings.insert(name.clone(), v);
                    }
                }
                Ok(answer)
            }
            Local::Reset(name) => {
                let mut session = self.session.lock().await;
                match name {
                    None => session.settings.clear(),
                    Some(n) => {
                        session.settings.remove(n);
                    }
                }
                Ok(LocalAnswer::tag("RESET"))
            }
            Local::Show(name) => {
                let session = self.session.lock().await;
                let columns = show_columns(name);
                let names: Vec<&str> = columns.iter().map(String::as_str).collect();
                let arrays: Vec<ArrayRef> = if name == "all" {
                    let mut all: BTreeSet<String> = KNOWN.iter().map(|s| s.to_string()).collect();
                    all.extend(session.settings.keys().cloned());
                    let mut n = Vec::new();
                    let mut v = Vec::new();
                    for name in all {
                        let value = self
                            .setting(client, &session.settings, &principal, &name)
                            .unwrap_or_default();
                        n.push(canonical(&name).to_string());
                        v.push(value);
                    }
                    let d: Vec<Option<String>> = vec![None; n.len()];
                    vec![
                        Arc::new(StringArray::from(n)),
                        Arc::new(StringArray::from(v)),
                        Arc::new(StringArray::from(d)),
                    ]
                } else {
                    let value = self
                        .setting(client, &session.settings, &principal, name)
                        .ok_or_else(|| {
                            user_error(
                                "42704",
                                format!("unrecognized configuration parameter \"{name}\""),
                                Some("SHOW ALL lists the parameters this server knows"),
                            )
                        })?;
                    vec![Arc::new(StringArray::from(vec![value]))]
                };
                let batch = RecordBatch::try_new(show_schema(&names), arrays)
                    .map_err(|e| internal(&e.to_string()))?;
                Ok(LocalAnswer {
                    rows: Some(batch),
                    ..LocalAnswer::tag("SHOW")
                })
            }
            Local::Begin { tag, read_write } => {
                if *read_write {
                    return Err(read_only());
                }
                let mut answer = LocalAnswer::tag(tag);
                if in_block {
                    answer.notices.push(notice(
                        "WARNING",
                        "25001",
                        "there is already a transaction in progress".into(),
                        None,
                    ));
                }
                answer.status = Some(status.to_in_transaction_state());
                Ok(answer)
            }
            Local::Commit | Local::Rollback => {
                let mut answer = LocalAnswer::tag(
                    if matches!(cmd, Local::Commit) && status != TransactionStatus::Error {
                        "COMMIT"
                    } else {
                        "ROLLBACK"
                    },
                );
                if !in_block {
                    answer.notices.push(notice(
                        "WARNING",
                        "25P01",
                        "there is no transaction in progress".into(),
                        None,
                    ));
                }
                answer.status = Some(TransactionStatus::Idle);
                answer.end_transaction = true;
                Ok(answer)
            }
            Local::SetTransaction { read_write } => {
                if *read_write {
                    return Err(read_only());
                }
                Ok(LocalAnswer::tag("SET"))
            }
            Local::Discard(what) => {
                if *what == "DISCARD ALL" {
                    if in_block {
                        return Err(user_error(
                            "25001",
                            "DISCARD ALL cannot run inside a transaction block",
                            Some("COMMIT or ROLLBACK first"),
                        ));
                    }
                    let (portals, cursors, statements) = {
                        let mut s = self.session.lock().await;
                        s.settings.clear();
                        (
                            s.portals.drain().map(|(_, r)| r).collect::<Vec<_>>(),
                            s.cursors.drain().map(|(_, r)| r).collect::<Vec<_>>(),
                            std::mem::take(&mut s.statements),
                        )
                    };
                    if let Some(store) = store(client) {
                        for name in statements {
                            store.rm_statement(&name);
                        }
                        store.clear_portals();
                    }
                    for r in portals.into_iter().chain(cursors) {
                        r.answer.finish().await;
                    }
                }
                Ok(LocalAnswer::tag(what))
            }
            Local::Deallocate(name) => {
                let mut s = self.session.lock().await;
                match name {
                    None => {
                        let names = std::mem::take(&mut s.statements);
                        if let Some(store) = store(client) {
                            for n in names {
                                store.rm_statement(&n);
                            }
                        }
                        Ok(LocalAnswer::tag("DEALLOCATE ALL"))
                    }
                    Some(n) => {
                        if !s.statements.remove(n) {
                            return Err(user_error(
                                "26000",
                                format!("prepared statement \"{n}\" does not exist"),
                                None,
                            ));
                        }
                        if let Some(store) = store(client) {
                            store.rm_statement(n);
                        }
                        Ok(LocalAnswer::tag("DEALLOCATE"))
                    }
                }
            }
        }
    }

    /// Runs a session command: audit, then the answer.
    async fn local<C>(
        &self,
        client: &mut C,
        cmd: &Local,
        sql: &str,
        format: &Format,
        describe: bool,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let principal = self.principal()?;
        let result = self.run_local(client, cmd).await;
        let (outcome, message) = match &result {
            Ok(_) => (Outcome::Ok, None),
            Err(PgWireError::UserError(info)) if info.code == "42501" || info.code == "25006" => {
                (Outcome::Refused, Some(info.message.clone()))
            }
            Err(e) => (Outcome::Error, Some(e.to_string())),
        };
        self.shared
            .service
            .audit_command(principal.name(), Protocol::Pgwire, sql, outcome, message)
            .await;
        let answer = result?;
        for n in answer.notices {
            client.feed(PgWireBackendMessage::NoticeResponse(n)).await?;
        }
        if let Some((name, value)) = answer.parameter {
            client
                .feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                    name, value,
                )))
                .await?;
        }
        if let Some(batch) = answer.rows {
            let fields = fields(&batch.schema(), format)?;
            if describe {
                client
                    .feed(PgWireBackendMessage::RowDescription(row_description(
                        &fields,
                    )))
                    .await?;
            }
            for row in encode_recordbatch(fields, batch) {
                client.feed(PgWireBackendMessage::DataRow(row?)).await?;
            }
        }
        if let Some(status) = answer.status {
            client.set_transaction_status(status);
        }
        if answer.end_transaction {
            self.end_transaction(client).await;
        }
        client.send(tag(&answer.tag, None)).await?;
        Ok(())
    }

    async fn declare<C>(
        &self,
        client: &mut C,
        name: &str,
        query: &str,
        hold: bool,
        params: Option<ParamValues>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let principal = self.principal()?;
        if !hold && client.transaction_status() == TransactionStatus::Idle {
            return Err(user_error(
                "25P01",
                "DECLARE CURSOR can only be used in transaction blocks",
                Some("run BEGIN first (or declare the cursor WITH HOLD)"),
            ));
        }
        if self.session.lock().await.cursors.contains_key(name) {
            return Err(user_error(
                "42P03",
                format!("cursor \"{name}\" already exists"),
                Some("CLOSE it first or use another name"),
            ));
        }
        let answer = self.execute(&principal, query, params).await?;
        self.session
            .lock()
            .await
            .cursors
            .insert(name.to_string(), Running::new(answer, hold));
        client.send(tag("DECLARE CURSOR", None)).await?;
        Ok(())
    }

    async fn fetch<C>(
        &self,
        client: &mut C,
        name: &str,
        count: Option<u64>,
        format: &Format,
        describe: bool,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(mut running) = self.session.lock().await.cursors.remove(name) else {
            return Err(user_error(
                "34000",
                format!("cursor \"{name}\" does not exist"),
                Some("DECLARE it first, inside the same transaction block"),
            ));
        };
        let result = async {
            let fields = fields(&running.answer.schema(), format)?;
            if describe {
                client
                    .feed(PgWireBackendMessage::RowDescription(row_description(
                        &fields,
                    )))
                    .await?;
            }
            let max = count.map(|c| usize::try_from(c).unwrap_or(usize::MAX));
            send_rows(client, &mut running, &fields, max).await
        }
        .await;
        match result {
            Ok((n, exhausted)) => {
                if exhausted && !running.noticed {
                    let summary = running.answer.summary();
                    if summary.truncated {
                        running.noticed = true;
                        client
                            .feed(PgWireBackendMessage::NoticeResponse(truncation_notice(
                                &summary,
                            )))
                            .await?;
                    }
                }
                self.session
                    .lock()
                    .await
                    .cursors
                    .insert(name.to_string(), running);
                client.send(tag("FETCH", Some(n))).await?;
                Ok(())
            }
            Err(e) => {
                running.answer.finish().await;
                Err(e)
            }
        }
    }

    async fn close_cursor<C>(&self, client: &mut C, name: Option<&str>) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let closed: Vec<Running> = {
            let mut s = self.session.lock().await;
            match name {
                None => s.cursors.drain().map(|(_, r)| r).collect(),
                Some(n) => match s.cursors.remove(n) {
                    Some(r) => vec![r],
                    None => {
                        return Err(user_error(
                            "34000",
                            format!("cursor \"{n}\" does not exist"),
                            None,
                        ));
                    }
                },
            }
        };
        for r in closed {
            r.answer.finish().await;
        }
        client
            .send(tag(
                if name.is_some() {
                    "CLOSE CURSOR"
                } else {
                    "CLOSE CURSOR ALL"
                },
                None,
            ))
            .await?;
        Ok(())
    }

    /// One statement of the simple protocol.
    async fn simple<C>(&self, client: &mut C, sql: &str) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let kind = classify(sql);
        if kind == Kind::Empty {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
            return Ok(());
        }
        if client.transaction_status() == TransactionStatus::Error && !kind.ends_transaction() {
            return Err(aborted());
        }
        self.cancel.reset();
        match kind {
            Kind::Empty => Ok(()),
            Kind::Query => {
                let principal = self.principal()?;
                let answer = self.execute(&principal, sql, None).await?;
                let mut running = Running::new(answer, false);
                let result = async {
                    let fields = fields(&running.answer.schema(), &Format::UnifiedText)?;
                    client
                        .feed(PgWireBackendMessage::RowDescription(row_description(
                            &fields,
                        )))
                        .await?;
                    send_rows(client, &mut running, &fields, None).await
                }
                .await;
                match result {
                    Ok((n, _)) => complete(client, running.answer, "SELECT", n).await,
                    Err(e) => {
                        running.answer.finish().await;
                        Err(e)
                    }
                }
            }
            Kind::Local(cmd) => {
                self.local(client, &cmd, sql, &Format::UnifiedText, true)
                    .await
            }
            Kind::Declare { name, query, hold } => {
                self.declare(client, &name, &query, hold, None).await
            }
            Kind::Fetch { name, count } => {
                self.fetch(client, &name, count, &Format::UnifiedText, true)
                    .await
            }
            Kind::Close(name) => self.close_cursor(client, name.as_deref()).await,
        }
    }

    /// Result columns of a statement in `format`, if it returns rows.
    async fn result_fields(
        &self,
        stmt: &Statement,
        format: &Format,
    ) -> PgWireResult<Option<Arc<Vec<FieldInfo>>>> {
        Ok(match &stmt.kind {
            Kind::Query => match &stmt.schema {
                Some(s) => Some(fields(s, format)?),
                None => None,
            },
            Kind::Local(Local::Show(name)) => {
                let columns = show_columns(name);
                let names: Vec<&str> = columns.iter().map(String::as_str).collect();
                Some(fields(&show_schema(&names), format)?)
            }
            Kind::Fetch { name, .. } => {
                let schema = self
                    .session
                    .lock()
                    .await
                    .cursors
                    .get(name)
                    .map(|r| r.answer.schema());
                match schema {
                    Some(s) => Some(fields(&s, format)?),
                    None => None,
                }
            }
            _ => None,
        })
    }

    async fn continue_portal<C>(
        &self,
        client: &mut C,
        name: &str,
        mut running: Running,
        format: &Format,
        max: Option<usize>,
    ) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let result = async {
            let fields = fields(&running.answer.schema(), format)?;
            send_rows(client, &mut running, &fields, max).await
        }
        .await;
        match result {
            Ok((n, true)) => complete(client, running.answer, "SELECT", n).await,
            Ok((_, false)) => {
                client
                    .send(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                    .await?;
                self.session
                    .lock()
                    .await
                    .portals
                    .insert(name.to_string(), running);
                Ok(())
            }
            Err(e) => {
                running.answer.finish().await;
                Err(e)
            }
        }
    }

    fn params(portal: &Portal<Stmt>) -> PgWireResult<Option<ParamValues>> {
        if portal.parameter_len() == 0 {
            return Ok(None);
        }
        let stmt = &portal.statement.statement;
        let inferred: Vec<Option<&DataType>> = stmt.params.iter().map(|t| t.as_ref()).collect();
        Ok(Some(deserialize_parameters(portal, &inferred)?))
    }
}

/// The connection's statement and portal store (pgwire's in-memory one).
fn store<C>(client: &C) -> Option<&MemPortalStore<Stmt>>
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    client.portal_store().as_any().downcast_ref()
}

fn read_only() -> PgWireError {
    user_error(
        "25006",
        "walden is read-only: transactions cannot be READ WRITE",
        Some("use READ ONLY transactions (the default)"),
    )
}

#[async_trait]
impl SimpleQueryHandler for Conn {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let result = self.simple(client, &query.query).await;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        result?;
        // Outside a transaction block the query was its own transaction.
        if client.transaction_status() == TransactionStatus::Idle {
            self.end_transaction(client).await;
        }
        let status = client.transaction_status();
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        Ok(())
    }

    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(internal("not used"))
    }
}

#[async_trait]
impl ExtendedQueryHandler for Conn {
    type Statement = Stmt;
    type QueryParser = NoParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(NoParser)
    }

    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let principal = self.principal()?;
        let kind = classify(&message.query);
        let service = &self.shared.service;
        let (schema, params) = match &kind {
            Kind::Query => {
                let p = service
                    .prepare(&principal, Protocol::Pgwire, &message.query)
                    .await
                    .map_err(|e| query_error(&e))?;
                (Some(p.schema), p.params)
            }
            Kind::Declare { query, .. } => {
                let p = service
                    .prepare(&principal, Protocol::Pgwire, query)
                    .await
                    .map_err(|e| query_error(&e))?;
                (None, p.params)
            }
            _ => (None, Vec::new()),
        };
        let types = message
            .type_oids
            .iter()
            .map(|oid| Type::from_oid(*oid))
            .collect();
        let id = message
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_NAME.to_string());
        if message.name.is_some() {
            self.session.lock().await.statements.insert(id.clone());
        }
        let statement = Arc::new(Statement {
            sql: message.query,
            kind,
            schema,
            params,
        });
        client
            .portal_store()
            .put_statement(Arc::new(StoredStatement::new(id, statement, types)));
        client
            .send(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let portal_name = message
            .portal_name
            .clone()
            .unwrap_or_else(|| DEFAULT_NAME.to_string());
        // A Bind replaces a portal of the same name: its answer ends.
        let old = self.session.lock().await.portals.remove(&portal_name);
        if let Some(r) = old {
            r.answer.finish().await;
        }
        let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let Some(statement) = client.portal_store().get_statement(statement_name) else {
            return Err(PgWireError::StatementNotFound(statement_name.to_string()));
        };
        let portal = Portal::try_new(&message, statement)?;
        client.portal_store().put_portal(Arc::new(portal));
        client
            .send(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let fields = match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                let Some(stored) = client.portal_store().get_statement(name) else {
                    return Err(PgWireError::StatementNotFound(name.to_string()));
                };
                let stmt = &stored.statement;
                let n = stored.parameter_types.len().max(stmt.params.len());
                let mut oids = Vec::with_capacity(n);
                for i in 0..n {
                    let t = match stored.parameter_types.get(i).cloned().flatten() {
                        Some(t) => t,
                        None => match stmt.params.get(i).cloned().flatten() {
                            Some(dt) => into_pg_type(&dt).unwrap_or(Type::UNKNOWN),
                            None => Type::UNKNOWN,
                        },
                    };
                    oids.push(t.oid());
                }
                client
                    .send(PgWireBackendMessage::ParameterDescription(
                        ParameterDescription::new(oids),
                    ))
                    .await?;
                self.result_fields(stmt, &Format::UnifiedText).await?
            }
            TARGET_TYPE_BYTE_PORTAL => match client.portal_store().get_portal(name) {
                Some(portal) => {
                    self.result_fields(&portal.statement.statement, &portal.result_column_format)
                        .await?
                }
                None => {
                    let schema = self
                        .session
                        .lock()
                        .await
                        .cursors
                        .get(name)
                        .map(|r| r.answer.schema());
                    match schema {
                        Some(s) => Some(fields(&s, &Format::UnifiedText)?),
                        None => return Err(PgWireError::PortalNotFound(name.to_string())),
                    }
                }
            },
            other => return Err(PgWireError::InvalidTargetType(other)),
        };
        match fields {
            Some(f) => {
                client
                    .send(PgWireBackendMessage::RowDescription(row_description(&f)))
                    .await?
            }
            None => {
                client
                    .send(PgWireBackendMessage::NoData(NoData::new()))
                    .await?
            }
        }
        Ok(())
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME).to_string();
        let Some(portal) = client.portal_store().get_portal(&name) else {
            return Err(PgWireError::PortalNotFound(name));
        };
        let stmt = portal.statement.statement.clone();
        if client.transaction_status() == TransactionStatus::Error && !stmt.kind.ends_transaction()
        {
            return Err(aborted());
        }
        let max = (message.max_rows > 0).then_some(message.max_rows as usize);
        client.set_state(PgWireConnectionState::QueryInProgress);
        let result = async {
            self.cancel.reset();
            let suspended = self.session.lock().await.portals.remove(&name);
            if let Some(running) = suspended {
                return self
                    .continue_portal(client, &name, running, &portal.result_column_format, max)
                    .await;
            }
            match &stmt.kind {
                Kind::Empty => {
                    client
                        .send(PgWireBackendMessage::EmptyQueryResponse(
                            EmptyQueryResponse::new(),
                        ))
                        .await?;
                    Ok(())
                }
                Kind::Query => {
                    let principal = self.principal()?;
                    let params = Self::params(&portal)?;
                    let answer = self.execute(&principal, &stmt.sql, params).await?;
                    self.continue_portal(
                        client,
                        &name,
                        Running::new(answer, false),
                        &portal.result_column_format,
                        max,
                    )
                    .await
                }
                Kind::Local(cmd) => {
                    self.local(client, cmd, &stmt.sql, &portal.result_column_format, false)
                        .await
                }
                Kind::Declare {
                    name: cursor,
                    query,
                    hold,
                } => {
                    let params = Self::params(&portal)?;
                    self.declare(client, cursor, query, *hold, params).await
                }
                Kind::Fetch {
                    name: cursor,
                    count,
                } => {
                    self.fetch(client, cursor, *count, &portal.result_column_format, false)
                        .await
                }
                Kind::Close(cursor) => self.close_cursor(client, cursor.as_deref()).await,
            }
        }
        .await;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        result
    }

    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Outside a transaction block, Sync ends the implicit transaction and its portals.
        if client.transaction_status() == TransactionStatus::Idle {
            self.end_transaction(client).await;
        }
        let status = client.transaction_status();
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        client.flush().await?;
        Ok(())
    }

    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                client.portal_store().rm_statement(name);
                self.session.lock().await.statements.remove(name);
            }
            TARGET_TYPE_BYTE_PORTAL => {
                client.portal_store().rm_portal(name);
                let closed = {
                    let mut s = self.session.lock().await;
                    match s.portals.remove(name) {
                        Some(r) => Some(r),
                        None => s.cursors.remove(name),
                    }
                };
                if let Some(r) = closed {
                    r.answer.finish().await;
                }
            }
            _ => {}
        }
        client
            .send(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
            .await?;
        Ok(())
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        _portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(internal("not used"))
    }
}
