//! The `provdb` command line: `serve` (the Postgres wire server), `sql`
//! (run SQL against a data directory in-process, no server), `export` and
//! `import` (PROV documents, [`crate::prov_cli`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{ServerConfig, TlsFiles};
use crate::error::ServerError;

/// provdb: a columnar provenance database for ML/DL workflows, speaking the
/// PostgreSQL wire protocol.
#[derive(Debug, Parser)]
#[command(name = "provdb", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log level: error, warn, info, debug or trace. RUST_LOG, when set,
    /// overrides it (and accepts per-module filters such as `provdb_server=debug`).
    #[arg(
        long = "log",
        global = true,
        default_value = "info",
        value_name = "LEVEL"
    )]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: open the data directory and serve the PostgreSQL wire
    /// protocol until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Open a data directory in-process (no server) and run SQL, printing
    /// results as tables. Do not point it at a directory a running server uses.
    Sql(SqlArgs),
    /// Write a W3C PROV document (PROV-N, PROV-JSON, DOT or SVG) of an
    /// execution, a dataflow, a node's lineage, or everything.
    Export(crate::prov_cli::ExportArgs),
    /// Import PROV-JSON documents (yProv4ML runs included: their params,
    /// metrics and artifacts land in schema `ml`).
    Import(crate::prov_cli::ImportArgs),
}

/// Options shared by every subcommand that opens a database.
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Directory holding the write-ahead log and (by default) the Parquet
    /// segments. Created if missing.
    #[arg(
        long,
        env = "PROVDB_DATA_DIR",
        default_value = "./provdb-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// Keep segments in object storage instead of the segments/ folder of
    /// --data-dir. This build accepts `file:///path` and `memory://` (cloud
    /// stores need object_store's cloud features, not enabled yet). The WAL
    /// stays in --data-dir.
    #[arg(long, value_name = "URL")]
    pub object_store_url: Option<String>,

    /// Do not fsync the WAL before acknowledging commits. Faster bulk loads,
    /// but acknowledged commits may be lost if the machine crashes or loses
    /// power (a crash of the provdb process alone loses nothing).
    #[arg(long)]
    pub no_fsync: bool,

    /// Flush a table's in-memory buffer to a Parquet segment once it reaches
    /// this many MiB.
    #[arg(long, default_value_t = 64, value_name = "MB")]
    pub flush_threshold_mb: usize,

    /// Disable background compaction of small segments.
    #[arg(long)]
    pub no_compaction: bool,

    /// Memory for decoded Parquet segments, in MiB: queries over flushed
    /// data read them from memory instead of decoding Parquet again (least
    /// recently used segments are dropped first). 0 turns the cache off.
    #[arg(long, default_value_t = 1024, value_name = "MB")]
    pub segment_cache_mb: usize,
}

/// `provdb serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub storage: StorageArgs,

    /// Address for the PostgreSQL wire protocol listener.
    #[arg(
        long,
        env = "PROVDB_LISTEN",
        default_value = "127.0.0.1:5433",
        value_name = "ADDR:PORT"
    )]
    pub listen: SocketAddr,

    /// Accept only this user name. Without it any user name is accepted.
    #[arg(long, env = "PROVDB_USER", value_name = "NAME")]
    pub user: Option<String>,

    /// Require every connection to authenticate with SCRAM-SHA-256 using this
    /// password. Without a password, loopback clients are trusted and all
    /// other clients are rejected.
    #[arg(
        long,
        env = "PROVDB_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub password: Option<String>,

    /// TLS certificate chain (PEM). Requires --tls-key. Clients may then
    /// connect with sslmode=require.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM). Requires --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Maximum number of concurrent client connections; more are refused with
    /// SQLSTATE 53300.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_connections: usize,

    /// Seconds open connections may keep working after SIGINT/SIGTERM before
    /// they are closed.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub shutdown_grace: u64,

    /// Address for the HTTP API: DfAnalyzer-compatible ingest
    /// (POST /pde/dataflow/json, /pde/task/json, /pde/task/batch) and
    /// GET /health. Point DLProv scripts at it with
    /// DFA_URL=http://ADDR:PORT/. It has no authentication: keep it on
    /// loopback or behind a proxy.
    #[arg(
        long,
        env = "PROVDB_HTTP_LISTEN",
        default_value = "127.0.0.1:22000",
        value_name = "ADDR:PORT"
    )]
    pub http_listen: SocketAddr,

    /// Do not start the HTTP API.
    #[arg(long, conflicts_with = "http_listen")]
    pub no_http: bool,

    /// Largest HTTP request body accepted (a batch of task messages), in
    /// MiB. POST /prov/import is not limited by it: its body is streamed
    /// into the parser.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub http_max_body_mb: usize,
}

/// `provdb sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub storage: StorageArgs,

    /// The SQL to run (one or more statements separated by `;`).
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    pub command: String,
}

impl StorageArgs {
    fn apply(&self, config: &mut ServerConfig) -> Result<(), ServerError> {
        config.data_dir = self.data_dir.clone();
        config.object_store_url = self.object_store_url.clone();
        config.fsync = !self.no_fsync;
        config.compaction = !self.no_compaction;
        config.segment_cache_bytes = self
            .segment_cache_mb
            .checked_mul(1 << 20)
            .ok_or_else(|| ServerError::Config("--segment-cache-mb is too large".into()))?;
        config.flush_threshold_bytes = self
            .flush_threshold_mb
            .checked_mul(1 << 20)
            .filter(|b| *b > 0)
            .ok_or_else(|| {
                ServerError::Config("--flush-threshold-mb must be between 1 and 2^44".into())
            })?;
        Ok(())
    }

    /// Database options for in-process use.
    pub fn database_options(&self) -> Result<provdb_sql::DatabaseOptions, ServerError> {
        let mut config = ServerConfig::default();
        self.apply(&mut config)?;
        Ok(config.database_options())
    }
}

impl ServeArgs {
    /// The server configuration these options describe.
    pub fn to_config(&self) -> Result<ServerConfig, ServerError> {
        let mut config = ServerConfig {
            listen: self.listen,
            user: self.user.clone(),
            password: self.password.clone().filter(|p| !p.is_empty()),
            max_connections: self.max_connections,
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            http_listen: (!self.no_http).then_some(self.http_listen),
            http_max_body_bytes: self.http_max_body_mb.saturating_mul(1 << 20).max(1 << 16),
            ..ServerConfig::default()
        };
        self.storage.apply(&mut config)?;
        if config.max_connections == 0 {
            return Err(ServerError::Config(
                "--max-connections must be at least 1".into(),
            ));
        }
        config.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn serve(args: &[&str]) -> ServerConfig {
        let mut argv = vec!["provdb", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(s) => s.to_config().unwrap(),
            _ => panic!("expected serve"),
        }
    }

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults() {
        let c = serve(&[]);
        assert_eq!(c.listen, "127.0.0.1:5433".parse().unwrap());
        assert!(c.fsync);
        assert!(c.compaction);
        assert_eq!(c.flush_threshold_bytes, 64 << 20);
        assert_eq!(c.max_connections, 256);
        assert!(c.password.is_none());
        assert!(c.tls.is_none());
    }

    #[test]
    fn serve_options() {
        let c = serve(&[
            "--data-dir",
            "/tmp/x",
            "--listen",
            "0.0.0.0:6000",
            "--no-fsync",
            "--no-compaction",
            "--flush-threshold-mb",
            "8",
            "--user",
            "alice",
            "--password",
            "pw",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--max-connections",
            "3",
        ]);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.listen.port(), 6000);
        assert!(!c.fsync && !c.compaction);
        assert_eq!(c.flush_threshold_bytes, 8 << 20);
        assert_eq!(c.user.as_deref(), Some("alice"));
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert_eq!(c.tls.unwrap().key, PathBuf::from("k.pem"));
        assert_eq!(c.max_connections, 3);
    }

    #[test]
    fn tls_cert_requires_key() {
        assert!(Cli::try_parse_from(["provdb", "serve", "--tls-cert", "c.pem"]).is_err());
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(Cli::try_parse_from(["provdb", "serve", "--listen", "nope"]).is_err());
        let cli = Cli::try_parse_from(["provdb", "serve", "--max-connections", "0"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("expected serve")
        };
        assert!(s.to_config().is_err());
    }

    #[test]
    fn sql_subcommand() {
        let cli = Cli::try_parse_from([
            "provdb",
            "--log",
            "warn",
            "sql",
            "--data-dir",
            "d",
            "-c",
            "SELECT 1",
        ])
        .unwrap();
        assert_eq!(cli.log, "warn");
        let Command::Sql(s) = cli.command else {
            panic!("expected sql")
        };
        assert_eq!(s.command, "SELECT 1");
        assert_eq!(
            s.storage.database_options().unwrap().data_dir,
            PathBuf::from("d")
        );
    }

    #[test]
    fn export_needs_one_scope() {
        assert!(Cli::try_parse_from(["provdb", "export"]).is_err());
        assert!(Cli::try_parse_from(["provdb", "export", "--all", "--execution", "x"]).is_err());
        let cli = Cli::try_parse_from([
            "provdb", "export", "--node", "a", "--node", "b", "-o", "x.json",
        ])
        .unwrap();
        let Command::Export(e) = cli.command else {
            panic!("expected export")
        };
        assert_eq!(e.node, vec!["a", "b"]);
        assert!(Cli::try_parse_from(["provdb", "import"]).is_err());
    }

    #[test]
    fn sql_requires_command() {
        assert!(Cli::try_parse_from(["provdb", "sql"]).is_err());
    }
}
