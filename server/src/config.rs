//! [`ServerConfig`]: everything `run_server` needs, built from the CLI (or by
//! hand in tests and embedding programs).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use provdb_sql::DatabaseOptions;

/// PEM files for TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM, PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Configuration of a provdb server.
#[derive(Clone)]
pub struct ServerConfig {
    /// Directory holding the WAL and (by default) the segments.
    pub data_dir: PathBuf,
    /// Address of the Postgres wire protocol listener.
    pub listen: SocketAddr,
    /// Where segments live (object_store URL); `None` = under `data_dir`.
    pub object_store_url: Option<String>,
    /// fsync the WAL before acknowledging a commit.
    pub fsync: bool,
    /// Flush an in-memory table buffer to a segment at this many bytes.
    pub flush_threshold_bytes: usize,
    /// Run background compaction.
    pub compaction: bool,
    /// Memory for decoded segments (0 = off).
    pub segment_cache_bytes: usize,
    /// The only user name accepted, if set.
    pub user: Option<String>,
    /// When set, every connection must authenticate with SCRAM-SHA-256.
    pub password: Option<String>,
    /// Serve TLS with these files.
    pub tls: Option<TlsFiles>,
    /// Connections beyond this are refused with SQLSTATE 53300.
    pub max_connections: usize,
    /// How long open connections may keep running after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Address of the HTTP API (DfAnalyzer-compatible ingest, health);
    /// `None` = no HTTP server.
    pub http_listen: Option<SocketAddr>,
    /// Largest HTTP request body accepted, in bytes.
    pub http_max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("provdb-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 5433)),
            object_store_url: None,
            fsync: true,
            flush_threshold_bytes: 64 << 20,
            compaction: true,
            segment_cache_bytes: 1 << 30,
            user: None,
            password: None,
            tls: None,
            max_connections: 256,
            shutdown_grace: Duration::from_secs(5),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 22000))),
            http_max_body_bytes: 64 << 20,
        }
    }
}

impl ServerConfig {
    /// The options to open the database with.
    pub fn database_options(&self) -> DatabaseOptions {
        DatabaseOptions {
            data_dir: self.data_dir.clone(),
            object_store_url: self.object_store_url.clone(),
            fsync: self.fsync,
            flush_threshold_bytes: self.flush_threshold_bytes,
            compaction: self.compaction,
            segment_cache_bytes: self.segment_cache_bytes,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("object_store_url", &self.object_store_url)
            .field("fsync", &self.fsync)
            .field("flush_threshold_bytes", &self.flush_threshold_bytes)
            .field("compaction", &self.compaction)
            .field("segment_cache_bytes", &self.segment_cache_bytes)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("max_connections", &self.max_connections)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("http_listen", &self.http_listen)
            .field("http_max_body_bytes", &self.http_max_body_bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_password() {
        let c = ServerConfig {
            password: Some("s3cret".into()),
            ..Default::default()
        };
        let s = format!("{c:?}");
        assert!(!s.contains("s3cret"));
        assert!(s.contains("redacted"));
    }

    #[test]
    fn database_options_follow_config() {
        let c = ServerConfig {
            fsync: false,
            compaction: false,
            ..Default::default()
        };
        let o = c.database_options();
        assert!(!o.fsync);
        assert!(!o.compaction);
        assert_eq!(o.flush_threshold_bytes, 64 << 20);
    }
}
