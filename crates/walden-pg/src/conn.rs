//! Connections to the source.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

use crate::{PgError, Result};

/// Where the source is and how to reach it.
#[derive(Clone)]
pub struct SourceConn {
    config: Config,
    url_redacted: String,
    connect_timeout: Duration,
}

impl std::fmt::Debug for SourceConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url_redacted)
    }
}

impl SourceConn {
    /// Parses a `postgres://` URL (or a libpq key=value string). A password in the URL is
    /// kept but never shown.
    pub fn new(url: &str, connect_timeout: Duration) -> Result<Self> {
        let mut config = Config::from_str(url).map_err(|e| PgError::Url(format!("{e}")))?;
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        if config.get_ports().is_empty() {
            config.port(5432);
        }
        if config.get_user().is_none() {
            return Err(PgError::Url(
                "the URL names no user (postgres://USER@host:port/db)".into(),
            ));
        }
        if config.get_dbname().is_none() {
            return Err(PgError::Url(
                "the URL names no database (postgres://user@host:port/DATABASE)".into(),
            ));
        }
        config.connect_timeout(connect_timeout);
        config.application_name("walden");
        let url_redacted = format!(
            "postgres://{}@{}:{}/{}",
            config.get_user().unwrap_or(""),
            host_string(&config),
            config.get_ports().first().copied().unwrap_or(5432),
            config.get_dbname().unwrap_or("")
        );
        Ok(Self {
            config,
            url_redacted,
            connect_timeout,
        })
    }

    /// The URL without the password, for messages.
    pub fn display(&self) -> &str {
        &self.url_redacted
    }

    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or("")
    }

    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("")
    }

    /// A regular connection; its driver task is spawned on the current runtime.
    pub async fn connect(&self) -> Result<Client> {
        let target = self.url_redacted.clone();
        let fut = self.config.connect(NoTls);
        let (client, connection) = tokio::time::timeout(self.connect_timeout, fut)
            .await
            .map_err(|_| PgError::ConnectTimeout {
                target: target.clone(),
                timeout_ms: self.connect_timeout.as_millis() as u64,
            })?
            .map_err(|source| PgError::Connect { target, source })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "source connection closed");
            }
        });
        Ok(client)
    }

    /// Settings for a replication-protocol session on the same server.
    pub fn replication_config(
        &self,
        slot: &str,
        publication: &str,
    ) -> Result<pgwire_replication::ReplicationConfig> {
        let host = host_string(&self.config);
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let password = self
            .config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let cfg = pgwire_replication::ReplicationConfig::new(
            host,
            self.user(),
            password,
            self.dbname(),
            slot,
            publication,
        )
        .with_port(port)
        .with_application_name("walden");
        Ok(cfg)
    }
}

fn host_string(config: &Config) -> String {
    match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.to_string_lossy().into_owned(),
        None => "localhost".into(),
    }
}
