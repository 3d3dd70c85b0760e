//! MCP over streamable HTTP at `/mcp`, merged into the HTTP API's router.
//!
//! `rmcp`'s [`StreamableHttpService`] speaks the protocol (sessions for clients of the
//! handshake-era protocol versions, stateless requests for 2026-07-28). In front of it a
//! middleware, run on every request (POST, GET and DELETE), in this order:
//!
//! 1. **Origin**: a request with an `Origin` header (a browser) passes only if its host is
//!    `localhost`, `127.0.0.1` or `[::1]`, or the origin is listed in
//!    `[serve] mcp_allowed_origins`; otherwise 403. Requests without `Origin` (agents,
//!    CLIs) pass. This is the MCP security guidance against DNS rebinding; rmcp's own
//!    `Host` allowlist is turned off because walden listens on configured, possibly public
//!    addresses and every request is authenticated anyway.
//! 2. **Authentication**: `Authorization: Bearer <token>` of a configured principal
//!    ([`Principals::by_token`], constant time); 401 otherwise. The [`Credentials`] go into
//!    the request's extensions, where [`super::WaldenMcp`] finds them per request.
//! 3. **Sessions**: a session id is bound to the principal that created it. A request
//!    with a session id this server does not know (never issued, ended by DELETE, expired
//!    after 5 idle minutes) gets 404 with a message to start a new session; a session of
//!    another principal gets 403.
//!
//! Every refusal is audited (`protocol = mcp`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use walden_query::{Outcome, Protocol, QueryService};

use super::WaldenMcp;
use crate::{Credentials, Principals};

/// The largest MCP request body read (a tool call's JSON-RPC message).
pub const MAX_REQUEST_BYTES: usize = 2 << 20;
/// How long a session may be idle before it is forgotten (rmcp closes it after 5 minutes).
const SESSION_IDLE: Duration = Duration::from_secs(15 * 60);
const SESSION_HEADER: &str = "mcp-session-id";

/// What the `/mcp` route needs.
#[derive(Clone)]
pub struct McpHttpState {
    pub service: QueryService,
    pub principals: Arc<Principals>,
    /// Browser origins allowed besides localhost (`[serve] mcp_allowed_origins`), exactly
    /// as browsers send them: `scheme://host[:port]`.
    pub allowed_origins: Vec<String>,
}

#[derive(Clone)]
struct Guard {
    state: McpHttpState,
    /// Session id → (principal name, last use).
    sessions: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

/// The `/mcp` route (POST, GET, DELETE) with its middleware; merge it into the API router.
pub fn router(state: McpHttpState) -> Router {
    let service = state.service.clone();
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(MAX_REQUEST_BYTES);
    let mcp = StreamableHttpService::new(
        move || Ok(WaldenMcp::per_request(service.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let guard = Guard {
        state,
        sessions: Arc::new(Mutex::new(HashMap::new())),
    };
    Router::new()
        .route_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(guard, check))
}

/// A JSON-RPC error response (`id: null`) with an HTTP status.
fn refusal(status: StatusCode, code: i64, message: &str) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } })
            .to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"walden\""),
        );
    }
    r
}

/// Whether a browser `Origin` may call: localhost, or listed.
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let origin = origin.trim().trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return false;
    }
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        rest.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1" || host == "::1"
}

async fn check(State(g): State<Guard>, mut request: Request, next: Next) -> Response {
    let service = &g.state.service;
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not text)").to_string();
        if !origin_allowed(&origin, &g.state.allowed_origins) {
            let message = format!(
                "the browser origin {origin:?} may not call this MCP endpoint; add it to \
                 [serve] mcp_allowed_origins if it should"
            );
            audit(service, "?", &message).await;
            return refusal(StatusCode::FORBIDDEN, -32600, &message);
        }
    }
    let creds: Credentials = match request.headers().get(header::AUTHORIZATION) {
        None => {
            let message = "missing Authorization: Bearer <token> (a principal's token_env in \
                           walden's configuration)";
            audit(service, "?", message).await;
            return refusal(StatusCode::UNAUTHORIZED, -32001, message);
        }
        Some(v) => match crate::bearer_token(v).and_then(|t| g.state.principals.by_token(t)) {
            Some(c) => c.clone(),
            None => {
                audit(service, "?", "unknown or malformed bearer token").await;
                return refusal(
                    StatusCode::UNAUTHORIZED,
                    -32001,
                    "the bearer token does not belong to any principal",
                );
            }
        },
    };
    let name = creds.principal.name().to_string();
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .map(|v| v.to_str().unwrap_or("(not text)").to_string());
    if let Some(id) = &session {
        let owner = {
            let mut sessions = g.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.get_mut(id).map(|(owner, used)| {
                *used = Instant::now();
                owner.clone()
            })
        };
        match owner {
            None => return unknown_session(service, &name, id).await,
            Some(owner) if owner != name => {
                let message = format!(
                    "MCP session {} belongs to another principal; initialize your own session \
                     (send initialize without an Mcp-Session-Id header)",
                    super::format::one_line(id, 64).0
                );
                audit(service, &name, &message).await;
                return refusal(StatusCode::FORBIDDEN, -32600, &message);
            }
            Some(_) => {}
        }
    }
    let method = request.method().clone();
    request.extensions_mut().insert(creds);
    let response = next.run(request).await;
    let mut sessions = g.sessions.lock().unwrap_or_else(|p| p.into_inner());
    match &session {
        None => {
            if let Some(id) = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                let now = Instant::now();
                sessions.retain(|_, (_, used)| now.duration_since(*used) < SESSION_IDLE);
                sessions.insert(id.to_string(), (name, now));
            }
        }
        Some(id) => {
            if response.status() == StatusCode::NOT_FOUND {
                // rmcp ended it (idle, or closed): forget it and say what to do.
                sessions.remove(id);
                drop(sessions);
                return unknown_session_response(id);
            }
            if method == Method::DELETE && response.status().is_success() {
                sessions.remove(id);
            }
        }
    }
    response
}

async fn unknown_session(service: &QueryService, principal: &str, id: &str) -> Response {
    let message = format!("unknown MCP session {}", super::format::one_line(id, 64).0);
    audit(service, principal, &message).await;
    unknown_session_response(id)
}

fn unknown_session_response(id: &str) -> Response {
    refusal(
        StatusCode::NOT_FOUND,
        -32600,
        &format!(
            "unknown or ended MCP session {}: it was never issued here, was closed, or expired \
             after idling; start a new session (send initialize without an Mcp-Session-Id \
             header)",
            super::format::one_line(id, 64).0
        ),
    )
}

async fn audit(service: &QueryService, principal: &str, message: &str) {
    service
        .audit_command(
            principal,
            Protocol::Mcp,
            "(mcp authentication)",
            Outcome::Refused,
            Some(message.to_string()),
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let none: Vec<String> = vec![];
        assert!(origin_allowed("http://localhost:3000", &none));
        assert!(origin_allowed("http://127.0.0.1", &none));
        assert!(origin_allowed("http://[::1]:8080", &none));
        assert!(!origin_allowed("https://evil.example", &none));
        assert!(!origin_allowed("http://localhost.evil.example", &none));
        assert!(!origin_allowed("null", &none));
        let listed = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed("https://app.example.com", &listed));
        assert!(!origin_allowed("https://app.example.com:8443", &listed));
    }
}
