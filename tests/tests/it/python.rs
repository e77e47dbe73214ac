//! Runs tests/python/test_psycopg.py (psycopg 3, pandas) against a server.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::Server;

#[test]
fn psycopg_and_pandas_client() {
    let server = Server::start();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/test_psycopg.py");
    let out_path = server.log_path.with_file_name("python.out");
    let out_file = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .env("PROVDB_DSN", server.conn_str())
        // in CI the install script provides pandas: insist on it there
        .env(
            "PROVDB_REQUIRE_PANDAS",
            if std::env::var_os("CI").is_some() {
                "1"
            } else {
                "0"
            },
        )
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file)
        .spawn()
        .expect("run python3 (install with scripts/install-test-deps.sh)");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "python script timed out:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        status.success(),
        "{} failed ({status}):\n{output}",
        script.display()
    );
    assert!(output.contains("all checks passed"), "{output}");
}
