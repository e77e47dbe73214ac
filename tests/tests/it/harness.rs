//! Starting and stopping the real `provdb` binary.
//!
//! [`provdb_bin`] builds the binary once per test process (through `$CARGO
//! build --message-format=json`, honouring `CARGO_TARGET_DIR`) unless
//! `PROVDB_BIN` names one. [`Server`] runs it on a free 127.0.0.1 port with a
//! temporary data directory, captures its stdout/stderr to a log file, and
//! kills it when dropped (printing the log tail if the test is failing).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

/// How long a server may take to accept its first connection.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of the `provdb` executable, built on first use.
pub fn provdb_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    BIN.get_or_init(build_provdb)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn build_provdb() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("PROVDB_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("PROVDB_BIN={} is not a file", p.display()))
        };
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    // Select the whole workspace (bins + tests) so features unify exactly as in
    // `cargo test --workspace`: nothing already compiled is built again, only
    // the `provdb` executable itself if it is missing.
    let out = Command::new(&cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--workspace",
            "--bins",
            "--tests",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !out.status.success() {
        return Err(format!("`cargo build` of provdb failed ({})", out.status));
    }
    let mut found = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "provdb"
            // `--tests` also builds the bin as a libtest harness: skip that one.
            && msg["profile"]["test"] == false
            && msg["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
            && let Some(exe) = msg["executable"].as_str()
        {
            found = Some(PathBuf::from(exe));
        }
    }
    found.ok_or_else(|| "cargo build did not report a `provdb` executable".to_string())
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Options for starting a server.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// `--user` and `--password`: SCRAM authentication.
    pub auth: Option<(String, String)>,
    /// `--tls-cert` and `--tls-key`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Anything else to pass after `serve`.
    pub extra_args: Vec<String>,
}

/// A running `provdb serve`. Killed (SIGKILL) on drop.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    /// Port of the HTTP API (DfAnalyzer ingest).
    pub http_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    opts: ServerOptions,
    // Owns the data directory and the log; removed after the server is dead.
    _tmp: Option<tempfile::TempDir>,
    starts: u32,
}

impl Server {
    /// Start a server on a fresh temporary data directory.
    pub fn start() -> Server {
        Self::start_with(ServerOptions::default())
    }

    pub fn start_with(opts: ServerOptions) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("provdb-it-")
            .tempdir()
            .expect("tempdir");
        let data_dir = tmp.path().join("data");
        let log_path = tmp.path().join("server.log");
        let mut s = Server {
            child: None,
            port: 0,
            http_port: 0,
            data_dir,
            log_path,
            opts,
            _tmp: Some(tmp),
            starts: 0,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let bin = provdb_bin();
        // A port can be taken between free_port() and the server's bind: retry.
        for attempt in 0..3 {
            self.port = free_port();
            self.http_port = free_port();
            self.starts += 1;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)
                .expect("open server log");
            let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
            let mut cmd = Command::new(&bin);
            cmd.arg("serve")
                .arg("--data-dir")
                .arg(&self.data_dir)
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", self.port))
                .arg("--http-listen")
                .arg(format!("127.0.0.1:{}", self.http_port));
            if let Some((user, password)) = &self.opts.auth {
                cmd.args(["--user", user, "--password", password]);
            }
            if let Some((cert, key)) = &self.opts.tls {
                cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
            }
            cmd.args(&self.opts.extra_args)
                .env("RUST_BACKTRACE", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log"))
                .stderr(log);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
            self.child = Some(child);
            match self.wait_ready() {
                Ok(()) => return,
                Err(exited) => {
                    let log = self.log_since(log_offset);
                    self.child = None;
                    if attempt < 2 && log.contains("in use") {
                        continue;
                    }
                    panic!(
                        "provdb did not start ({exited}); args: serve --data-dir {} --listen 127.0.0.1:{}\n--- server log ---\n{log}",
                        self.data_dir.display(),
                        self.port
                    );
                }
            }
        }
    }

    /// Wait until the port accepts TCP connections. Err if the process
    /// exited or the timeout passed (the process is then killed).
    fn wait_ready(&mut self) -> Result<(), String> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("child");
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Err(format!("exited with {status}"));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("not accepting after {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.seek(SeekFrom::Start(offset));
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let Ok(f) = File::open(&self.log_path) else {
            return String::new();
        };
        let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILL the server and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the server and wait up to `timeout` for it to exit.
    /// Returns its exit status, or None if it had to be killed.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start again on the same data directory (after `kill9`/`terminate`).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// libpq-style connection string for this server (trust or with the
    /// configured credentials).
    /// Base URL of the HTTP API, as DLProv's `DFA_URL` would be set.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.http_port)
    }

    pub fn conn_str(&self) -> String {
        match &self.opts.auth {
            Some((u, p)) => format!(
                "host=127.0.0.1 port={} user={u} password={p} dbname=provdb connect_timeout=10",
                self.port
            ),
            None => format!(
                "host=127.0.0.1 port={} user=provdb dbname=provdb connect_timeout=10",
                self.port
            ),
        }
    }

    /// A connected tokio-postgres client; the connection task is spawned on
    /// the current runtime.
    pub async fn client(&self) -> Client {
        connect(&self.conn_str())
            .await
            .unwrap_or_else(|e| panic!("connect to provdb failed: {e}\n{}", self.log_tail(40)))
    }
}

/// Connect with a libpq-style string and spawn the connection driver.
pub async fn connect(conn_str: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_postgres::connect(conn_str, NoTls),
    )
    .await
    .unwrap_or_else(|_| panic!("connect timed out: {conn_str}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "--- provdb server log (last 80 lines of {}, {} start(s)) ---\n{}\n--- end of server log ---",
                self.log_path.display(),
                self.starts,
                self.log_tail(80)
            );
        }
    }
}

/// SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_string())
}

/// Assert that `r` failed with SQLSTATE `code`.
#[track_caller]
pub fn assert_sqlstate<T: std::fmt::Debug>(r: Result<T, tokio_postgres::Error>, code: &str) {
    match r {
        Ok(v) => panic!("expected SQLSTATE {code}, got success: {v:?}"),
        Err(e) => assert_eq!(
            sqlstate(&e).as_deref(),
            Some(code),
            "expected SQLSTATE {code}, got error: {e:?}"
        ),
    }
}

/// Run a future with a timeout, panicking with `what` if it expires.
pub async fn within<F: std::future::Future>(secs: u64, what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s: {what}"))
}

/// Count rows of `table` over the wire.
pub async fn count(client: &Client, table: &str) -> i64 {
    let row = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e:?}"));
    row.get::<_, i64>(0)
}

/// The first column of every row of a simple query, as text.
pub async fn simple_col(client: &Client, sql: &str) -> Vec<Option<String>> {
    let msgs = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .collect()
}

/// A tiny deterministic PRNG (xorshift64*), seeded from the clock unless
/// `PROVDB_TEST_SEED` is set; the seed is printed so a failure can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(name: &str) -> Rng {
        let seed = std::env::var("PROVDB_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(42)
            });
        eprintln!("{name}: PROVDB_TEST_SEED={seed}");
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}
