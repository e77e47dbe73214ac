//! The accept loop: binds the listener, opens the database, spawns a task per
//! connection (capped by `max_connections`), and on shutdown stops accepting,
//! gives connections a grace period, then closes the database.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pgwire::api::{ConnectionManager, RandomPidSecretKeyGenerator};
use pgwire::tokio::TlsAcceptor;
use provdb_sql::Database;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::auth::AuthPolicy;
use crate::config::ServerConfig;
use crate::connection::{ConnectionSetup, serve_connection};
use crate::error::ServerError;
use crate::tls::load_tls;

/// Server-wide state shared by all connections.
pub(crate) struct ServerContext {
    pub db: Arc<Database>,
    pub policy: Arc<AuthPolicy>,
    pub cancel: Arc<ConnectionManager>,
    pub pids: Arc<RandomPidSecretKeyGenerator>,
}

/// Bind `config.listen` and serve until `shutdown` resolves.
pub async fn run_server(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::io(format!("cannot listen on {}", config.listen), e))?;
    run_server_with_listener(listener, config, shutdown).await
}

/// Serve on an already bound listener (tests bind port 0) until `shutdown`
/// resolves. `config.listen` is ignored.
pub async fn run_server_with_listener(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let tls = config.tls.as_ref().map(load_tls).transpose()?;
    let http_listener = match config.http_listen {
        Some(addr) => Some(crate::http::bind(addr).await?),
        None => None,
    };
    let db = Database::open(config.database_options()).await?;
    let ctx = Arc::new(ServerContext {
        db: db.clone(),
        policy: Arc::new(AuthPolicy::new(
            config.user.clone(),
            config.password.as_deref(),
        )),
        cancel: Arc::new(ConnectionManager::new()),
        pids: Arc::new(RandomPidSecretKeyGenerator::default()),
    });
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::io("listener address", e))?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), tls = tls.is_some(), "provdb is accepting connections");
    let (stop_tx, stop_rx) = watch::channel(false);
    let http = match http_listener {
        Some(l) => {
            let http_addr = l
                .local_addr()
                .map_err(|e| ServerError::io("HTTP listener address", e))?;
            tracing::info!(%http_addr, "HTTP API (DfAnalyzer ingest) is accepting requests");
            let db = db.clone();
            let stop = stop_rx.clone();
            let max = config.http_max_body_bytes;
            Some(tokio::spawn(async move {
                if let Err(e) = crate::http::serve(l, db, max, stop).await {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            }))
        }
        None => None,
    };
    let mut tasks = accept_loop(&listener, &config, &ctx, tls, stop_rx, shutdown).await;
    drop(listener);
    tracing::info!(
        open = tasks.len(),
        "shutting down: no longer accepting connections"
    );
    let _ = stop_tx.send(true);
    drain(&mut tasks, config.shutdown_grace).await;
    if let Some(h) = http
        && tokio::time::timeout(config.shutdown_grace, h)
            .await
            .is_err()
    {
        tracing::warn!("HTTP requests still running after the grace period");
    }
    drop(ctx);
    db.close().await?;
    tracing::info!("database closed; bye");
    Ok(())
}

async fn accept_loop(
    listener: &TcpListener,
    config: &ServerConfig,
    ctx: &Arc<ServerContext>,
    tls: Option<TlsAcceptor>,
    stop_rx: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) -> JoinSet<()> {
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let permit = limit.clone().try_acquire_owned().ok();
                    let refuse = permit.is_none().then(|| ("53300", "sorry, too many clients already".to_string()));
                    let setup = ConnectionSetup { tls: tls.clone(), refuse, shutdown: stop_rx.clone() };
                    let ctx = ctx.clone();
                    tasks.spawn(async move {
                        let _permit = permit;
                        tracing::debug!(%peer, "connection opened");
                        if let Err(e) = serve_connection(tcp, ctx, setup).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an I/O error");
                        }
                        tracing::debug!(%peer, "connection closed");
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => log_task_end(done),
        }
    }
    tasks
}

fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "a connection task panicked");
    }
}

/// Wait up to `grace` for connections to finish, then abort the rest.
async fn drain(tasks: &mut JoinSet<()>, grace: Duration) {
    let all_done = async {
        while let Some(done) = tasks.join_next().await {
            log_task_end(done);
        }
    };
    if tokio::time::timeout(grace, all_done).await.is_err() {
        tracing::warn!(
            open = tasks.len(),
            "grace period over; closing remaining connections"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
