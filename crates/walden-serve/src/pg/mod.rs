//! The Postgres wire protocol front end: psql, psycopg, asyncpg, JDBC and BI tools talk to
//! the lake as if it were a read-only Postgres 15 database named `walden`.
//!
//! # What is supported
//!
//! - **Startup**: protocol 3.0 (and 3.2 where the client asks), database `walden` only
//!   (any other name is a FATAL `3D000` naming `walden`), user = principal name,
//!   SCRAM-SHA-256 against the principal's password. A wrong password, an unknown user and
//!   a principal without a password all get the same FATAL `28P01`, and the refusal is
//!   audited. Unknown users go through a full exchange with a stable fake salt, so user
//!   names cannot be probed. TLS (rustls with ring) when a certificate and key are
//!   configured: `SSLRequest` is accepted then, refused otherwise.
//! - **Simple and extended protocol**: Parse/Bind/Describe (statement and portal)/
//!   Execute/Sync/Close/Flush, typed parameters (the client's declared OIDs, else the
//!   types the planner inferred, decoded by arrow-pg), text or binary results per column as
//!   the client asks, result columns with their Postgres type OIDs (arrow-pg), empty
//!   queries, and `Execute` with a row count: the portal keeps its running answer and the
//!   next `Execute` continues it (JDBC `setFetchSize`). Portals live until `Close`, the next
//!   `Bind` of the same name, the `Sync` that ends an implicit transaction, the end of an
//!   explicit one (`COMMIT`/`ROLLBACK`), or the connection.
//! - **Cursors**: `DECLARE name [WITH HOLD] CURSOR FOR query` (with parameters through
//!   the extended protocol), `FETCH [FORWARD] n | ALL | NEXT FROM name`, `CLOSE name | ALL`,
//!   and `Describe` of the cursor as a portal: psycopg's named (server-side) cursors.
//!   Cursors go forward only. Without `WITH HOLD` a cursor needs a transaction block, as in
//!   Postgres, and ends with it.
//! - **Errors** carry a SQLSTATE: `42601` syntax, `42P01`/`42703`/`42883` unknown table,
//!   column, function, `42501` refusals, `57014` cancel or timeout, `53200` memory,
//!   `54000` limits, `25P02` in a failed transaction block, and the service's message.
//!
//! # Answered by the front end
//!
//! Recognised from the parsed statement (sqlparser, PostgreSQL dialect), audited as `ok`
//! (or `refused`), and never sent to the engine:
//! `SET [SESSION | LOCAL] name = value`, `SET TIME ZONE`, `RESET name | ALL`,
//! `SHOW name | ALL`, `BEGIN`/`START TRANSACTION`/`COMMIT`/`END`/`ROLLBACK`, `SET
//! TRANSACTION ...`, `DISCARD ...`, `DEALLOCATE`. Values are remembered for `SHOW` only:
//! the engine's settings and the principal's limits never change. `SET datafusion.*` is
//! refused; `client_encoding` must stay UTF8, `TimeZone` UTC and `DateStyle` ISO (the only
//! forms results are sent in); `statement_timeout` is accepted and shown but never raises
//! the principal's timeout. Transactions are read-only snapshots per query: `BEGIN` and
//! friends give the right command tags and `ReadyForQuery` status, `READ WRITE` is refused.
//!
//! # Truncation
//!
//! When an answer is cut at the principal's `max_rows` or `max_result_bytes`, a NOTICE
//! (SQLSTATE `01000`) saying so and how to see the rest precedes `CommandComplete`.
//!
//! # Cancel
//!
//! Each connection gets a process id and secret key (`BackendKeyData`) and one
//! [`Cancel`] handle that every query of the connection runs under. A `CancelRequest` on a
//! new connection with that pair calls [`Cancel::cancel`]: the running query (or the next
//! batch of a suspended portal) stops with `57014`. The handle is reset when the next query
//! starts, so a cancel that arrives between queries does nothing.
//!
//! # Isolation
//!
//! Every connection is its own task; a slow reader only waits on its own socket, holding
//! its own answer (already capped by the service); a vanished client or a malformed message
//! ends that connection only, dropping its open answers (which audits them).

mod auth;
mod command;
mod query;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{ClientInfo, ErrorHandler, PgWireServerHandlers};
use pgwire::error::PgWireError;
use pgwire::messages::cancel::CancelRequest;
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::tokio_rustls::rustls;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use walden_query::{Cancel, Principal, QueryService};

use crate::Principals;

/// Why the server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PgServerError {
    #[error(
        "cannot read the TLS certificate {path}: {message}; point the certificate setting \
         at a PEM file with the server certificate (and its chain)"
    )]
    Certificate { path: PathBuf, message: String },
    #[error(
        "cannot read the TLS private key {path}: {message}; point the key setting at a PEM \
         file with the certificate's private key (PKCS#8, PKCS#1 or SEC1)"
    )]
    Key { path: PathBuf, message: String },
    #[error(
        "the TLS certificate and key do not make a server configuration: {0}; check that \
         the key belongs to the certificate"
    )]
    Tls(String),
}

/// The Postgres wire protocol server.
pub struct PgServer {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    service: QueryService,
    principals: Arc<Principals>,
    secrets: auth::Secrets,
    keys: auth::Keys,
    tls: Option<TlsAcceptor>,
    /// Running connections by (process id, secret key), for cancel requests.
    cancels: Mutex<HashMap<(i32, Bytes), Cancel>>,
}

impl PgServer {
    /// A server over `service` for `principals`; with `tls` (certificate and key PEM
    /// files) it accepts `SSLRequest`.
    pub fn new(
        service: QueryService,
        principals: Arc<Principals>,
        tls: Option<(&Path, &Path)>,
    ) -> Result<Self, PgServerError> {
        let tls = tls.map(|(cert, key)| tls_acceptor(cert, key)).transpose()?;
        Ok(Self {
            shared: Arc::new(Shared {
                service,
                secrets: auth::Secrets::new(&principals),
                principals,
                keys: auth::Keys(Arc::new(Default::default())),
                tls,
                cancels: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Accepts connections until `shutdown` resolves, then closes the open ones.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let shared = self.shared.clone();
                        tasks.spawn(async move {
                            let tls = shared.tls.clone();
                            let handlers = Handlers(Arc::new(Conn::new(shared, peer)));
                            if let Err(e) =
                                pgwire::tokio::process_socket(socket, tls, handlers).await
                            {
                                tracing::debug!(%peer, error = %e, "pgwire connection ended with an error");
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: pause, keep serving.
                        tracing::warn!(error = %e, "pgwire: accepting a connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.shutdown().await;
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, PgServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| PgServerError::Certificate {
            path: cert.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PgServerError::Certificate {
            path: cert.to_path_buf(),
            message: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| PgServerError::Key {
        path: key.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PgServerError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| PgServerError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// One connection's state; every pgwire handler of the connection is this.
pub(crate) struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    auth: tokio::sync::Mutex<auth::AuthState>,
    principal: OnceLock<Arc<Principal>>,
    cancel: Cancel,
    key: Mutex<Option<(i32, Bytes)>>,
    session: tokio::sync::Mutex<query::Session>,
}

impl Conn {
    fn new(shared: Arc<Shared>, peer: SocketAddr) -> Self {
        Self {
            shared,
            peer,
            auth: Default::default(),
            principal: OnceLock::new(),
            cancel: Cancel::new(),
            key: Mutex::new(None),
            session: Default::default(),
        }
    }

    fn register(&self, pid: i32, key: Bytes) {
        self.shared
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((pid, key.clone()), self.cancel.clone());
        *self.key.lock().unwrap_or_else(|p| p.into_inner()) = Some((pid, key));
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let key = self.key.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(key) = key {
            self.shared
                .cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
        tracing::debug!(peer = %self.peer, "pgwire connection closed");
    }
}

#[async_trait]
impl CancelHandler for Conn {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let cancel = self
            .shared
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(request.pid, request.secret_key.to_bytes()))
            .cloned();
        match cancel {
            Some(c) => {
                tracing::debug!(pid = request.pid, "pgwire cancel request");
                c.cancel();
            }
            None => tracing::debug!(pid = request.pid, "pgwire cancel request for no connection"),
        }
    }
}

impl ErrorHandler for Conn {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        match error {
            PgWireError::UserError(_) => {}
            other => {
                tracing::debug!(peer = %client.socket_addr(), error = %other, "pgwire protocol error")
            }
        }
    }
}

struct Handlers(Arc<Conn>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.0.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.0.clone()
    }
    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.0.clone()
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        self.0.clone()
    }
    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.0.clone()
    }
}
