//! The query endpoints: thin adapters from a protocol to [`walden_query::QueryService`].
//!
//! - [`pg`]: the Postgres wire protocol (SCRAM-SHA-256, optional TLS, simple and extended
//!   protocol, cancel requests);
//! - [`http`]: `POST /v1/query`, the catalog endpoints, health, metrics and OpenAPI;
//! - [`mcp`]: the Model Context Protocol for agents (tools over the catalog and SQL,
//!   table documentation as resources), over streamable HTTP at `/mcp` and over stdio.
//!
//! None decides anything about access or limits: both authenticate a principal from
//! [`Principals`] and hand the query to the service, which plans, checks, runs, caps and
//! audits it.

pub mod http;
pub mod mcp;
pub mod pg;

use std::collections::HashMap;
use std::sync::Arc;

use walden_query::Principal;

/// A principal with its credentials.
#[derive(Clone)]
pub struct Credentials {
    pub principal: Arc<Principal>,
    /// For pgwire (SCRAM-SHA-256).
    pub password: Option<String>,
    /// For HTTP and MCP (`Authorization: Bearer`).
    pub token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("principal", &self.principal.name())
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

/// The configured principals. With none, nothing remote gets in.
#[derive(Debug, Clone, Default)]
pub struct Principals {
    by_name: HashMap<String, Credentials>,
}

impl Principals {
    pub fn new(all: impl IntoIterator<Item = Credentials>) -> Self {
        Self {
            by_name: all
                .into_iter()
                .map(|c| (c.principal.name().to_string(), c))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every principal with its credentials.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Credentials)> {
        self.by_name.iter().map(|(n, c)| (n.as_str(), c))
    }

    pub fn get(&self, name: &str) -> Option<&Credentials> {
        self.by_name.get(name)
    }

    /// The principal whose token this is (compared in constant time per candidate).
    pub fn by_token(&self, token: &str) -> Option<&Credentials> {
        let mut found = None;
        for c in self.by_name.values() {
            if let Some(t) = &c.token
                && constant_time_eq(t.as_bytes(), token.as_bytes())
            {
                found = Some(c);
            }
        }
        found
    }
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer <token>` header value (scheme matched without
/// regard to case, surrounding spaces trimmed); `None` for any other form.
pub fn bearer_token(value: &axum::http::HeaderValue) -> Option<&str> {
    let v = value.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
