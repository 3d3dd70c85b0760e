/// Errors of the Postgres source. Messages say what failed and where; where there is a
/// fix the user can apply, the message says it.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid source URL: {0}")]
    Url(String),

    #[error("cannot connect to the source {target}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error(
        "cannot connect to the source {target}: no answer within {timeout_ms} ms \
         (is the host reachable and the port right?)"
    )]
    ConnectTimeout { target: String, timeout_ms: u64 },

    #[error("{context}")]
    Query {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("{context}")]
    Replication {
        context: String,
        #[source]
        source: pgwire_replication::PgWireError,
    },

    #[error("{0}")]
    Unsupported(String),

    #[error("{0}")]
    Refused(String),

    #[error("{context}: {message}")]
    Decode { context: String, message: String },
}

impl PgError {
    /// Whether the error may pass by itself: the server unreachable, restarting or shutting
    /// down, a dropped connection, too many connections, a slot still held by a session
    /// that is going away.
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Connect { .. } | PgError::ConnectTimeout { .. } => true,
            PgError::Query { source, .. } => match source.as_db_error() {
                None => true,
                Some(db) => {
                    let code = db.code().code();
                    code.starts_with("08")
                        || code.starts_with("57")
                        || code.starts_with("53")
                        || code == "55006"
                }
            },
            PgError::Replication { source, .. } => match source {
                pgwire_replication::PgWireError::Io(_)
                | pgwire_replication::PgWireError::Task(_) => true,
                pgwire_replication::PgWireError::Server(m) => {
                    let m = m.to_ascii_lowercase();
                    [
                        "57p0",
                        "08006",
                        "55006",
                        "53300",
                        "shutting down",
                        "starting up",
                        "terminating connection",
                        "is active for pid",
                        "too many clients",
                        "recovery",
                    ]
                    .iter()
                    .any(|needle| m.contains(needle))
                }
                _ => false,
            },
            _ => false,
        }
    }
}

pub type Result<T, E = PgError> = std::result::Result<T, E>;

pub(crate) trait QueryContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> QueryContext<T> for std::result::Result<T, tokio_postgres::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| PgError::Query {
            context: context(),
            source,
        })
    }
}
