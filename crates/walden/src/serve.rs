//! `walden serve` (the endpoints) and `walden run` (replication and the endpoints in one
//! process).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use walden_query::{AuditLog, LakeCatalog, QueryService, ServiceOptions};
use walden_serve::{Credentials, Principals};

use crate::config::Config;

/// The configured principals with their secrets read from the environment.
pub fn principals(config: &Config) -> Result<Principals> {
    let mut all = Vec::new();
    for p in &config.principals {
        let (password, token) = p.secrets()?;
        all.push(Credentials {
            principal: Arc::new(p.to_query_principal()),
            password,
            token,
        });
    }
    Ok(Principals::new(all))
}

/// The query service over the configured lake, with the audit log.
pub fn query_service(config: &Config, lake: walden_lake::Lake) -> Result<QueryService> {
    let audit_path = config
        .serve
        .audit_path
        .clone()
        .unwrap_or_else(|| config.lake.warehouse.join("audit.db"));
    let audit = AuditLog::open(
        &audit_path,
        Duration::from_secs(config.serve.audit_retention_days * 86_400),
    )
    .with_context(|| {
        format!(
            "cannot open the audit log at {} (set [serve] audit_path to a writable file)",
            audit_path.display()
        )
    })?;
    let options = ServiceOptions {
        stream: config.source.as_ref().map(|s| s.slot.clone()),
        global_memory_bytes: config.serve.query_memory_bytes as usize,
        spill_dir: config.serve.spill_dir.clone(),
        ..Default::default()
    };
    Ok(QueryService::new(
        LakeCatalog::new(lake),
        Some(audit),
        options,
    )?)
}

/// Installs the Prometheus recorder (once per process) and returns its renderer.
fn metrics_render() -> Option<walden_serve::http::MetricsRender> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    let handle =
        HANDLE.get_or_init(|| {
            match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!("metrics disabled: {e}");
                    None
                }
            }
        });
    handle.clone().map(|h| {
        let render: walden_serve::http::MetricsRender = Arc::new(move || h.render());
        render
    })
}

/// The running endpoints.
pub struct Endpoints {
    pub http_addr: std::net::SocketAddr,
    pub pg_addr: std::net::SocketAddr,
    tasks: tokio::task::JoinSet<Result<()>>,
}

impl Endpoints {
    /// Waits until an endpoint fails (an error) or all stop after `stop`.
    pub async fn wait(mut self) -> Result<()> {
        while let Some(r) = self.tasks.join_next().await {
            r.context("an endpoint task panicked")??;
        }
        Ok(())
    }
}

/// Binds and starts the HTTP and pgwire endpoints; they stop when `stop` turns true.
pub async fn start_endpoints(
    config: &Config,
    service: QueryService,
    principals: Principals,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Endpoints> {
    let principals = Arc::new(principals);
    if principals.is_empty() {
        tracing::warn!(
            "no [[principals]] configured: the endpoints accept no one (add one with a \
             password_env or token_env)"
        );
    }
    let http = tokio::net::TcpListener::bind(&config.serve.http_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on [serve] http_listen = {:?}",
                config.serve.http_listen
            )
        })?;
    let pg = tokio::net::TcpListener::bind(&config.serve.pg_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on [serve] pg_listen = {:?}",
                config.serve.pg_listen
            )
        })?;
    let http_addr = http.local_addr()?;
    let pg_addr = pg.local_addr()?;
    let mut tasks = tokio::task::JoinSet::new();
    let router = walden_serve::http::router(walden_serve::http::HttpState {
        service: service.clone(),
        principals: principals.clone(),
        metrics: metrics_render(),
    })
    .merge(walden_serve::mcp::http::router(
        walden_serve::mcp::http::McpHttpState {
            service: service.clone(),
            principals: principals.clone(),
            allowed_origins: config.serve.mcp_allowed_origins.clone(),
        },
    ));
    let mut http_stop = stop.clone();
    tasks.spawn(async move {
        walden_serve::http::serve(http, router, async move {
            let _ = http_stop.wait_for(|s| *s).await;
        })
        .await
        .context("the HTTP endpoint failed")
    });
    let tls = match (&config.serve.tls_cert, &config.serve.tls_key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        _ => None,
    };
    let server = walden_serve::pg::PgServer::new(service, principals, tls)
        .context("cannot set up the pgwire endpoint ([serve] tls_cert / tls_key)")?;
    let mut pg_stop = stop;
    tasks.spawn(async move {
        server
            .serve(pg, async move {
                let _ = pg_stop.wait_for(|s| *s).await;
            })
            .await;
        Ok(())
    });
    tracing::info!(%http_addr, %pg_addr, "serving");
    Ok(Endpoints {
        http_addr,
        pg_addr,
        tasks,
    })
}

/// `walden serve`: the endpoints over an existing lake until Ctrl-C / SIGTERM.
pub async fn run_serve(config: &Config) -> Result<()> {
    let lake = crate::open_existing_lake(config)?;
    let service = query_service(config, lake.clone())?;
    let principals = principals(config)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    crate::forward_signals(tx);
    let scheduler = crate::models::start_scheduler(config, lake, service.clone(), rx.clone());
    let endpoints = start_endpoints(config, service, principals, rx).await?;
    println!(
        "serving the lake at {}: postgres://<principal>@{}/walden and http://{}",
        config.lake.warehouse.display(),
        endpoints.pg_addr,
        endpoints.http_addr
    );
    let served = endpoints.wait().await;
    if let Some(s) = scheduler {
        let _ = s.await;
    }
    served
}

/// `walden run`: replication and the endpoints in one process. Either failing stops both.
pub async fn run_all(config: &Config) -> Result<()> {
    if config.source.is_none() {
        bail!("`walden run` replicates: add a [source] section (or use `walden serve`)");
    }
    let lake = walden_lake::Lake::open(&config.lake.warehouse)?;
    let service = query_service(config, lake.clone())?;
    let principals = principals(config)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    crate::forward_signals(tx.clone());
    let scheduler = crate::models::start_scheduler(config, lake, service.clone(), rx.clone());
    let endpoints = start_endpoints(config, service, principals, rx.clone()).await?;
    println!(
        "serving at postgres://<principal>@{}/walden and http://{}",
        endpoints.pg_addr, endpoints.http_addr
    );
    let replication = crate::replicate_until(
        config,
        crate::ReplicateArgs {
            until_caught_up: false,
            resync: false,
            show_progress: true,
        },
        rx,
    )
    .await;
    // Replication ended (stopped or failed): stop the endpoints too.
    let _ = tx.send(true);
    let served = endpoints.wait().await;
    if let Some(s) = scheduler {
        let _ = s.await;
    }
    replication?;
    served
}

/// `walden mcp --principal NAME`: one MCP session over stdin/stdout as the principal
/// `NAME` of `[[principals]]` (its grants and limits; no secret is needed, the local user
/// who can run walden with this configuration already has the lake). Logs go to stderr.
pub async fn run_mcp(config: &Config, principal: &str) -> Result<()> {
    let Some(p) = config.principals.iter().find(|p| p.name == principal) else {
        let names: Vec<&str> = config.principals.iter().map(|p| p.name.as_str()).collect();
        bail!(
            "no principal {principal:?} in [[principals]] of the configuration; the configured \
             ones are: {}",
            if names.is_empty() {
                "(none: add a [[principals]] entry)".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    let lake = crate::open_existing_lake(config)?;
    let service = query_service(config, lake)?;
    walden_serve::mcp::WaldenMcp::for_principal(service, Arc::new(p.to_query_principal()))
        .serve_stdio()
        .await?;
    Ok(())
}
