//! Startup: the database check, SCRAM-SHA-256 against the principal's password, the
//! parameter statuses and the cancel key.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::sasl::scram::{
    ScramServerAuth, ScramServerAuthWaitingForClientFinal, gen_salted_password,
};
use pgwire::api::auth::{
    Password, ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, METADATA_APPLICATION_NAME, METADATA_DATABASE, METADATA_USER, PgWireConnectionState,
    PidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use walden_query::{Outcome, Protocol};

use super::Conn;
use crate::Principals;

/// The one database name.
pub const DATABASE: &str = "walden";
/// What `server_version` says (clients parse the leading number).
pub const SERVER_VERSION: &str = "15.8";
pub const SERVER_VERSION_NUM: &str = "150008";

const SCRAM_METHOD: &str = "SCRAM-SHA-256";
const ITERATIONS: usize = 4096;

/// Salted passwords of the principals that have one, computed once, and the key that
/// makes the fake salts of everyone else stable (so a probe cannot tell unknown users by
/// a salt that changes).
pub(crate) struct Secrets {
    salted: HashMap<String, Password>,
    mock_key: std::collections::hash_map::RandomState,
}

impl Secrets {
    pub(crate) fn new(principals: &Principals) -> Self {
        let mock_key = std::collections::hash_map::RandomState::new();
        let mut salted = HashMap::new();
        for (name, c) in principals.iter() {
            if let Some(pw) = &c.password {
                let salt: [u8; 16] = rand::random();
                let hash = gen_salted_password(pw, &salt, ITERATIONS);
                salted.insert(name.to_string(), Password::new(Some(salt.to_vec()), hash));
            }
        }
        Self { salted, mock_key }
    }

    /// The salted password to check against, and whether a login can succeed at all.
    fn lookup(&self, user: &str) -> (Password, bool) {
        match self.salted.get(user) {
            Some(p) => (p.clone(), true),
            None => {
                let mut salt = Vec::with_capacity(16);
                for i in 0..2u8 {
                    let mut h = self.mock_key.build_hasher();
                    h.write_u8(i);
                    h.write(user.as_bytes());
                    salt.extend_from_slice(&h.finish().to_le_bytes());
                }
                let hash: [u8; 32] = rand::random();
                (Password::new(Some(salt), hash.to_vec()), false)
            }
        }
    }
}

/// Where the SCRAM exchange of a connection is.
#[derive(Default)]
pub(crate) enum AuthState {
    #[default]
    Initial,
    WaitingFinal {
        waiting: Box<ScramServerAuthWaitingForClientFinal>,
        can_succeed: bool,
    },
    Done,
}

fn fatal(code: &str, message: String, hint: Option<&str>) -> PgWireError {
    let mut info = ErrorInfo::new("FATAL".into(), code.into(), message);
    info.hint = hint.map(str::to_string);
    PgWireError::UserError(Box::new(info))
}

/// The parameter statuses sent after authentication.
struct Parameters;

impl ServerParameterProvider for Parameters {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let mut p = HashMap::new();
        for (k, v) in [
            ("server_version", SERVER_VERSION),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("TimeZone", "UTC"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("is_superuser", "off"),
            ("default_transaction_read_only", "on"),
            ("in_hot_standby", "off"),
        ] {
            p.insert(k.to_string(), v.to_string());
        }
        p.insert(
            "application_name".into(),
            client
                .metadata()
                .get(METADATA_APPLICATION_NAME)
                .cloned()
                .unwrap_or_default(),
        );
        if let Some(user) = client.metadata().get(METADATA_USER) {
            p.insert("session_authorization".into(), user.clone());
        }
        Some(p)
    }
}

#[async_trait]
impl StartupHandler for Conn {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                let Some(user) = client.metadata().get(METADATA_USER).cloned() else {
                    return Err(fatal(
                        "28000",
                        "no user name in the startup message".into(),
                        Some("connect with user=<principal name>"),
                    ));
                };
                let database = client
                    .metadata()
                    .get(METADATA_DATABASE)
                    .cloned()
                    .unwrap_or_else(|| user.clone());
                if database != DATABASE {
                    return Err(fatal(
                        "3D000",
                        format!(
                            "database \"{database}\" does not exist: this server has one \
                             database, \"{DATABASE}\""
                        ),
                        Some("connect with dbname=walden"),
                    ));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                        vec![SCRAM_METHOD.to_string()],
                    )))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                let mut state = self.auth.lock().await;
                match std::mem::take(&mut *state) {
                    AuthState::Initial => {
                        let initial = msg.into_sasl_initial_response()?;
                        if initial.auth_method != SCRAM_METHOD {
                            return Err(PgWireError::UnsupportedSASLAuthMethod(
                                initial.auth_method,
                            ));
                        }
                        let data = initial.data.ok_or_else(|| {
                            PgWireError::InvalidScramMessage("empty client-first message".into())
                        })?;
                        let (password, can_succeed) = self.shared.secrets.lookup(&user);
                        let mut scram = ScramServerAuth::new();
                        scram.set_iterations(ITERATIONS);
                        let (server_first, waiting) =
                            scram.on_client_first_message(&data, password)?;
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(server_first.into()),
                            ))
                            .await?;
                        *state = AuthState::WaitingFinal {
                            waiting: Box::new(waiting),
                            can_succeed,
                        };
                    }
                    AuthState::WaitingFinal {
                        waiting,
                        can_succeed,
                    } => {
                        let response = msg.into_sasl_response()?;
                        let verified = waiting.on_client_final_message(&response.data);
                        let principal = self
                            .shared
                            .principals
                            .get(&user)
                            .map(|c| c.principal.clone());
                        match (verified, can_succeed, principal) {
                            (Ok(server_final), true, Some(principal)) => {
                                client
                                    .send(PgWireBackendMessage::Authentication(
                                        Authentication::SASLFinal(server_final.into()),
                                    ))
                                    .await?;
                                let (pid, key) = self.shared.keys.generate(&*client);
                                client.set_pid_and_secret_key(pid, key.clone());
                                self.register(pid, key.to_bytes());
                                let _ = self.principal.set(principal);
                                *state = AuthState::Done;
                                tracing::debug!(user = %user, peer = %client.socket_addr(), "pgwire login");
                                finish_authentication(client, &Parameters).await?;
                            }
                            _ => {
                                tracing::info!(user = %user, peer = %client.socket_addr(), "pgwire login refused");
                                self.shared
                                    .service
                                    .audit_command(
                                        &user,
                                        Protocol::Pgwire,
                                        "(login)",
                                        Outcome::Refused,
                                        Some(
                                            "password authentication failed (wrong password, \
                                             unknown user, or a principal without a password)"
                                                .into(),
                                        ),
                                    )
                                    .await;
                                return Err(fatal(
                                    "28P01",
                                    format!("password authentication failed for user \"{user}\""),
                                    Some(
                                        "check the user name (a principal) and its password; \
                                         principals without a password cannot log in over \
                                         the Postgres protocol",
                                    ),
                                ));
                            }
                        }
                    }
                    AuthState::Done => return Err(PgWireError::InvalidSASLState),
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Generates process ids and cancel keys for all connections of a server.
pub(crate) struct Keys(pub(crate) Arc<pgwire::api::RandomPidSecretKeyGenerator>);

impl Keys {
    fn generate(&self, client: &dyn ClientInfo) -> (i32, pgwire::messages::startup::SecretKey) {
        self.0.generate(client)
    }
}
