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
