//! Connection startup: who may connect ([`AuthPolicy`]), SCRAM-SHA-256 when a
//! password is configured, the server parameters announced to the client, and
//! copying the startup parameters into the connection's `Session`.
//!
//! Policy: with a password every connection authenticates with SCRAM-SHA-256;
//! without one, loopback peers are trusted and every other peer is rejected
//! with SQLSTATE 28000.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{
    SCRAM_ITERATIONS, ScramAuth, gen_salted_password, random_nonce,
};
use pgwire::api::auth::{
    AuthSource, LoginInfo, Password, ServerParameterProvider, StartupHandler,
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, ConnectionGuard, ConnectionHandle, ConnectionManager, METADATA_USER,
    PgWireConnectionState, PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Startup;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::handler::ConnShared;
use crate::types::fatal_error;

/// The version string announced as `server_version`.
pub fn server_version() -> String {
    format!("16.0 (provdb {})", env!("CARGO_PKG_VERSION"))
}

/// How connections are authenticated; shared by all connections.
#[derive(Debug)]
pub struct AuthPolicy {
    user: Option<String>,
    secret: Option<ScramSecret>,
}

/// A salted SCRAM password, computed once at startup.
#[derive(Clone)]
struct ScramSecret {
    salt: Vec<u8>,
    salted_password: Vec<u8>,
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramSecret(<redacted>)")
    }
}

/// What to do with a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthDecision {
    /// Accept without a password.
    Trust,
    /// Run SCRAM-SHA-256.
    Scram,
    /// Refuse with this SQLSTATE and message.
    Reject { code: &'static str, message: String },
}

impl AuthPolicy {
    /// Policy for an optional required user name and optional password.
    pub fn new(user: Option<String>, password: Option<&str>) -> Self {
        let secret = password.map(|pw| {
            let salt = random_nonce().into_bytes();
            let salted_password = gen_salted_password(pw, &salt, SCRAM_ITERATIONS);
            ScramSecret {
                salt,
                salted_password,
            }
        });
        AuthPolicy { user, secret }
    }

    /// Decide for a peer address and the startup packet's user name.
    pub fn decide(&self, peer: IpAddr, user: Option<&str>) -> AuthDecision {
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return reject(
                "28000",
                "no PostgreSQL user name specified in startup packet".into(),
            );
        };
        if let Some(expected) = &self.user
            && expected != user
        {
            return reject(
                "28000",
                format!("role \"{user}\" is not allowed to connect to this server"),
            );
        }
        if self.secret.is_some() {
            AuthDecision::Scram
        } else if peer.is_loopback() || is_mapped_loopback(peer) {
            AuthDecision::Trust
        } else {
            reject(
                "28000",
                format!(
                    "connections from {peer} are not allowed without a password; start the server with \
                     --password (or set PROVDB_PASSWORD) to accept authenticated remote connections"
                ),
            )
        }
    }
}

fn reject(code: &'static str, message: String) -> AuthDecision {
    AuthDecision::Reject { code, message }
}

fn is_mapped_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        IpAddr::V4(_) => false,
    }
}

#[async_trait]
impl AuthSource for AuthPolicy {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default().to_string();
        match &self.secret {
            Some(s) => Ok(Password::new(
                Some(s.salt.clone()),
                s.salted_password.clone(),
            )),
            None => Err(PgWireError::InvalidPassword(user)),
        }
    }
}

/// The ParameterStatus values sent after authentication.
#[derive(Debug, Default)]
pub struct ServerParams;

impl ServerParameterProvider for ServerParams {
    fn server_parameters<C: ClientInfo>(&self, client: &C) -> Option<HashMap<String, String>> {
        let md = client.metadata();
        let mut p = HashMap::new();
        let mut set = |k: &str, v: &str| p.insert(k.to_string(), v.to_string());
        set("server_version", &server_version());
        set("server_encoding", "UTF8");
        set("client_encoding", "UTF8");
        set("DateStyle", "ISO, MDY");
        set("IntervalStyle", "postgres");
        set("TimeZone", "UTC");
        set("integer_datetimes", "on");
        set("standard_conforming_strings", "on");
        set("is_superuser", "on");
        set("in_hot_standby", "off");
        set("default_transaction_read_only", "off");
        set(
            "application_name",
            md.get("application_name").map_or("", |s| s.as_str()),
        );
        set(
            "session_authorization",
            md.get(METADATA_USER).map_or("", |s| s.as_str()),
        );
        Some(p)
    }
}

/// Per-connection startup handler.
pub struct ProvdbStartup {
    policy: Arc<AuthPolicy>,
    conn: Arc<ConnShared>,
    cancel: Arc<ConnectionManager>,
    pids: Arc<RandomPidSecretKeyGenerator>,
    sasl: SASLAuthStartupHandler<ServerParams>,
    refuse: Option<(&'static str, String)>,
    scram: std::sync::atomic::AtomicBool,
}

impl ProvdbStartup {
    /// A handler for one connection. `refuse` rejects it after the startup
    /// packet (e.g. too many connections).
    pub fn new(
        policy: Arc<AuthPolicy>,
        conn: Arc<ConnShared>,
        cancel: Arc<ConnectionManager>,
        pids: Arc<RandomPidSecretKeyGenerator>,
        refuse: Option<(&'static str, String)>,
    ) -> Self {
        let sasl = SASLAuthStartupHandler::new(Arc::new(ServerParams))
            .with_scram(ScramAuth::new(policy.clone()))
            .with_pid_secret_key_generator(pids.clone())
            .with_connection_manager(cancel.clone());
        ProvdbStartup {
            policy,
            conn,
            cancel,
            pids,
            sasl,
            refuse,
            scram: false.into(),
        }
    }

    async fn on_startup_packet<C>(&self, client: &mut C, startup: &Startup) -> PgWireResult<bool>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        if let Some((code, msg)) = &self.refuse {
            return Err(PgWireError::UserError(Box::new(fatal_error(
                code,
                msg.clone(),
            ))));
        }
        let user = client.metadata().get(METADATA_USER).cloned();
        match self
            .policy
            .decide(client.socket_addr().ip(), user.as_deref())
        {
            AuthDecision::Reject { code, message } => {
                tracing::info!(peer = %client.socket_addr(), %message, "connection rejected");
                Err(PgWireError::UserError(Box::new(fatal_error(code, message))))
            }
            decision => {
                self.conn
                    .apply_startup_parameters(&startup.parameters)
                    .await?;
                Ok(decision == AuthDecision::Scram)
            }
        }
    }

    async fn trust<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, key.clone());
        let (handle, guard) = self.cancel.register(pid, key);
        client
            .session_extensions()
            .insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert::<ConnectionGuard>(guard);
        finish_authentication(client, &ServerParams).await?;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        Ok(())
    }
}

#[async_trait]
impl StartupHandler for ProvdbStartup {
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
        use std::sync::atomic::Ordering;
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                if self.on_startup_packet(client, startup).await? {
                    self.scram.store(true, Ordering::SeqCst);
                    // Replays the startup to the SASL handler: it answers with
                    // the SASL mechanism list.
                    self.sasl.on_startup(client, message).await?;
                } else {
                    self.trust(client).await?;
                }
                Ok(())
            }
            PgWireFrontendMessage::PasswordMessageFamily(_) if self.scram.load(Ordering::SeqCst) => {
                self.sasl.on_startup(client, message).await.inspect_err(|e| {
                    tracing::info!(peer = %client.socket_addr(), error = %e, "authentication failed");
                })
            }
            _ => Err(PgWireError::UserError(Box::new(fatal_error(
                "08P01",
                "unexpected message during startup",
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }
    fn remote() -> IpAddr {
        "10.1.2.3".parse().unwrap()
    }

    #[test]
    fn loopback_is_trusted_without_password() {
        let p = AuthPolicy::new(None, None);
        assert_eq!(p.decide(lo(), Some("bob")), AuthDecision::Trust);
        assert_eq!(
            p.decide("::1".parse().unwrap(), Some("bob")),
            AuthDecision::Trust
        );
        assert_eq!(
            p.decide("::ffff:127.0.0.1".parse().unwrap(), Some("bob")),
            AuthDecision::Trust
        );
    }

    #[test]
    fn remote_without_password_is_rejected_with_hint() {
        let p = AuthPolicy::new(None, None);
        match p.decide(remote(), Some("bob")) {
            AuthDecision::Reject { code, message } => {
                assert_eq!(code, "28000");
                assert!(message.contains("--password"), "{message}");
                assert!(message.contains("PROVDB_PASSWORD"), "{message}");
            }
            d => panic!("unexpected {d:?}"),
        }
    }

    #[test]
    fn password_means_scram_everywhere() {
        let p = AuthPolicy::new(None, Some("pw"));
        assert_eq!(p.decide(lo(), Some("bob")), AuthDecision::Scram);
        assert_eq!(p.decide(remote(), Some("bob")), AuthDecision::Scram);
    }

    #[test]
    fn configured_user_is_enforced() {
        let p = AuthPolicy::new(Some("alice".into()), None);
        assert_eq!(p.decide(lo(), Some("alice")), AuthDecision::Trust);
        assert!(matches!(
            p.decide(lo(), Some("bob")),
            AuthDecision::Reject { code: "28000", .. }
        ));
        assert!(matches!(
            p.decide(lo(), None),
            AuthDecision::Reject { code: "28000", .. }
        ));
    }

    #[tokio::test]
    async fn auth_source_returns_salted_password() {
        let p = AuthPolicy::new(None, Some("pw"));
        let login = LoginInfo::new(Some("bob"), None, "127.0.0.1".into());
        let pw = p.get_password(&login).await.unwrap();
        let salt = pw.salt().unwrap().to_vec();
        assert_eq!(
            pw.password(),
            gen_salted_password("pw", &salt, SCRAM_ITERATIONS).as_slice()
        );
    }
}
