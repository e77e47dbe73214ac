//! provdb's server crate: the PostgreSQL wire protocol front end (pgwire) over
//! the `provdb-sql` [`Database`](provdb_sql::Database), plus the CLI.
//!
//! Embed or test the server with [`run_server`] (or
//! [`run_server_with_listener`]) and a [`ServerConfig`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), provdb_server::ServerError> {
//! let config = provdb_server::ServerConfig::default();
//! provdb_server::run_server(config, provdb_server::shutdown_signal()).await
//! # }
//! ```
//!
//! Module map:
//! - [`config`] — [`ServerConfig`].
//! - [`cli`] — the `provdb` command line (clap).
//! - [`server`] — accept loop, connection cap, graceful shutdown.
//! - `connection` — one connection's message loop.
//! - [`auth`] — trust/SCRAM policy, startup, server parameters.
//! - [`handler`] — simple/extended query and COPY handlers over a `Session`.
//! - [`params`] — Bind parameter decoding; [`results`]: row encoding;
//!   [`types`]: type, status and error mappings.
//! - [`tls`] — PEM loading; [`embedded`]: `provdb sql`; [`logging`].

pub mod auth;
pub mod cli;
pub mod config;
mod connection;
pub mod embedded;
pub mod error;
pub mod handler;
pub mod http;
pub mod logging;
pub mod params;
pub mod pg_text;
pub mod prov_api;
pub mod prov_cli;
pub mod results;
pub mod server;
mod text_rows;
pub mod tls;
pub mod types;

pub use config::{ServerConfig, TlsFiles};
pub use error::ServerError;
pub use server::{run_server, run_server_with_listener, shutdown_signal};
