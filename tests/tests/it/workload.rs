//! The DLProv workload's differential test (issue 6): the benchmark's query
//! set (Q1–Q12 and the monitoring queries, `benches/workload_queries.py`)
//! gives identical answers on provdb, PostgreSQL and DuckDB over the same
//! small sweep. `benches/differential.py` starts all three itself; this test
//! runs it against the provdb binary under test.

use std::path::Path;
use std::process::Command;

use crate::harness::provdb_bin;

#[test]
fn query_set_agrees_with_postgres_and_duckdb() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent");
    let script = root.join("benches/differential.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--provdb")
        .arg(provdb_bin())
        .args(["--executions", "60"])
        .output()
        .expect("run python3 (scripts/install-test-deps.sh installs PostgreSQL, psycopg, duckdb)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{} failed:\n{text}", script.display());
    assert!(text.contains("queries agree"), "{text}");
}
