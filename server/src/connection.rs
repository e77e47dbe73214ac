//! One client connection: TLS negotiation, then the message loop that hands
//! each frontend message to pgwire's dispatcher with this connection's
//! handlers. Unlike pgwire's stock loop it answers undecodable or oversized
//! messages with a FATAL ErrorResponse and ends idle connections on shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::{ClientInfo, PgWireConnectionState};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::auth::ProvdbStartup;
use crate::handler::{ConnShared, ConnectionHandler};
use crate::server::ServerContext;
use crate::types::fatal_error;

/// Clients must finish startup and authentication within this time.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Per-connection parameters decided by the accept loop.
pub(crate) struct ConnectionSetup {
    pub tls: Option<TlsAcceptor>,
    /// Refuse after the startup packet with (SQLSTATE, message).
    pub refuse: Option<(&'static str, String)>,
    pub shutdown: watch::Receiver<bool>,
}

fn in_startup(state: PgWireConnectionState) -> bool {
    matches!(
        state,
        PgWireConnectionState::AwaitingSslRequest
            | PgWireConnectionState::AwaitingStartup
            | PgWireConnectionState::AuthenticationInProgress
    )
}

/// Serve one TCP connection until the client leaves, a fatal error, or
/// shutdown.
pub(crate) async fn serve_connection(
    tcp: TcpStream,
    ctx: Arc<ServerContext>,
    mut setup: ConnectionSetup,
) -> std::io::Result<()> {
    let deadline = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(deadline);
    let socket = tokio::select! {
        _ = &mut deadline => return Ok(()),
        s = negotiate_tls(tcp, setup.tls.take()) => s?,
    };
    let Some(mut socket) = socket else {
        return Ok(());
    };
    let conn = Arc::new(ConnShared::new(ctx.db.session()));
    let handler = Arc::new(ConnectionHandler::new(conn.clone()));
    let startup = Arc::new(ProvdbStartup::new(
        ctx.policy.clone(),
        conn,
        ctx.cancel.clone(),
        ctx.pids.clone(),
        setup.refuse.take(),
    ));
    let cancel = Arc::new(DefaultCancelHandler::new(ctx.cancel.clone()));
    loop {
        let starting = in_startup(socket.state());
        enum Event {
            Stop,
            Timeout,
            Message(Option<Result<PgWireFrontendMessage, pgwire::error::PgWireError>>),
        }
        let event = tokio::select! {
            biased;
            stop = setup.shutdown.wait_for(|stop| *stop) => if stop.is_ok() { Event::Stop } else { Event::Timeout },
            _ = &mut deadline, if starting => Event::Timeout,
            msg = socket.next() => Event::Message(msg),
        };
        let msg = match event {
            Event::Stop => {
                let info = fatal_error(
                    "57P01",
                    "terminating connection due to administrator command",
                );
                let _ = socket
                    .send(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await;
                break;
            }
            Event::Timeout => break,
            Event::Message(msg) => msg,
        };
        let msg = match msg {
            None | Some(Ok(PgWireFrontendMessage::Terminate(_))) => break,
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                tracing::info!(peer = %socket.socket_addr(), error = %e, "invalid message; closing connection");
                let info = fatal_error("08P01", format!("invalid frontend message: {e}"));
                let _ = socket
                    .send(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await;
                break;
            }
        };
        let extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => msg.is_extended_query(),
        };
        let result = process_message(
            msg,
            &mut socket,
            startup.clone(),
            handler.clone(),
            handler.clone(),
            handler.clone(),
            cancel.clone(),
        )
        .await;
        if let Err(e) = result {
            let fatal = starting || matches!(&e, pgwire::error::PgWireError::IoError(_));
            tracing::debug!(peer = %socket.socket_addr(), error = %e, "request failed");
            let e = postgres_wording(
                e,
                socket
                    .metadata()
                    .get(pgwire::api::METADATA_USER)
                    .map(String::as_str),
            );
            process_error(&mut socket, e, extended).await?;
            if fatal {
                break;
            }
        }
    }
    let _ = socket.close().await;
    Ok(())
}

/// PostgreSQL's wording for authentication failures (pgwire's differs, and
/// does not know the user name during SCRAM).
fn postgres_wording(
    e: pgwire::error::PgWireError,
    user: Option<&str>,
) -> pgwire::error::PgWireError {
    use pgwire::error::{ErrorInfo, PgWireError};
    match e {
        PgWireError::InvalidPassword(_) => {
            let user = user.unwrap_or_default();
            let msg = format!("password authentication failed for user \"{user}\"");
            PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28P01".into(),
                msg,
            )))
        }
        other => other,
    }
}
