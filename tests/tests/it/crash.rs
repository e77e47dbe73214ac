//! Crash safety: kill -9 during continuous acknowledged inserts, restart on
//! the same directory, and check that every acknowledged row is there, that
//! nothing never sent appears, and that multi-row INSERTs are all-or-nothing.
//! Plus a torn/corrupt WAL tail.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{Rng, Server, count, within};

const CLIENTS: i64 = 4;
const BATCH: i64 = 5;

#[derive(Default)]
struct Ledger {
    /// Keys of single-row INSERTs the server acknowledged.
    acked: HashSet<i64>,
    /// Keys sent whose outcome is unknown (the server died under them).
    in_doubt: HashSet<i64>,
    /// Multi-row batches acknowledged / in doubt.
    batches_acked: HashSet<i64>,
    batches_in_doubt: HashSet<i64>,
}

/// One writer: alternating single-row and multi-row INSERTs until an error.
async fn writer(conn_str: String, client_no: i64, round: i64, ledger: Arc<Mutex<Ledger>>) {
    let Ok(c) = crate::harness::connect(&conn_str).await else {
        return;
    };
    let base = (round * 100 + client_no) * 10_000_000;
    for seq in 0..10_000_000i64 {
        let key = base + seq;
        if seq % 10 == 9 {
            // a multi-row INSERT of BATCH rows sharing a batch id
            let values: Vec<String> = (0..BATCH).map(|i| format!("({key}, {i})")).collect();
            let sql = format!(
                "INSERT INTO batches (batch, i) VALUES {}",
                values.join(", ")
            );
            ledger.lock().unwrap().batches_in_doubt.insert(key);
            let r =
                tokio::time::timeout(Duration::from_secs(20), c.execute(sql.as_str(), &[])).await;
            let mut l = ledger.lock().unwrap();
            match r {
                Ok(Ok(n)) => {
                    assert_eq!(n, BATCH as u64, "multi-row INSERT count");
                    l.batches_in_doubt.remove(&key);
                    l.batches_acked.insert(key);
                }
                _ => return,
            }
        } else {
            ledger.lock().unwrap().in_doubt.insert(key);
            let r = tokio::time::timeout(
                Duration::from_secs(20),
                c.execute(
                    "INSERT INTO acked (k, client, payload) VALUES ($1, $2, $3)",
                    &[&key, &(client_no as i32), &format!("payload-{key}")],
                ),
            )
            .await;
            let mut l = ledger.lock().unwrap();
            match r {
                Ok(Ok(1)) => {
                    l.in_doubt.remove(&key);
                    l.acked.insert(key);
                }
                Ok(Ok(n)) => panic!("INSERT of one row reported {n} rows"),
                _ => return,
            }
        }
    }
}

/// Check the database against the ledger after a restart.
async fn verify(server: &Server, ledger: &Ledger, round: usize) {
    let c = server.client().await;
    let rows = within(
        120,
        "read acked",
        c.query("SELECT k, payload FROM acked", &[]),
    )
    .await
    .unwrap_or_else(|e| panic!("round {round}: reading after restart failed: {e:?}"));
    let mut present = HashSet::new();
    for r in &rows {
        let k: i64 = r.get(0);
        let p: String = r.get(1);
        assert_eq!(
            p,
            format!("payload-{k}"),
            "round {round}: row {k} has a damaged payload"
        );
        assert!(present.insert(k), "round {round}: key {k} present twice");
    }
    let missing: Vec<_> = ledger.acked.difference(&present).take(10).collect();
    assert!(
        missing.is_empty(),
        "round {round}: {} acknowledged rows lost, e.g. {missing:?}",
        ledger.acked.difference(&present).count()
    );
    let phantom: Vec<_> = present
        .iter()
        .filter(|k| !ledger.acked.contains(k) && !ledger.in_doubt.contains(k))
        .take(10)
        .collect();
    assert!(
        phantom.is_empty(),
        "round {round}: rows never sent appeared: {phantom:?}"
    );

    let rows = c
        .query(
            "SELECT batch, count(*), count(DISTINCT i) FROM batches GROUP BY batch",
            &[],
        )
        .await
        .expect("read batches");
    let mut batches = BTreeMap::new();
    for r in &rows {
        let b: i64 = r.get(0);
        let n: i64 = r.get(1);
        let d: i64 = r.get(2);
        assert_eq!(
            (n, d),
            (BATCH, BATCH),
            "round {round}: batch {b} is partial: {n} rows"
        );
        batches.insert(b, n);
    }
    for b in &ledger.batches_acked {
        assert!(
            batches.contains_key(b),
            "round {round}: acknowledged batch {b} lost"
        );
    }
    for b in batches.keys() {
        assert!(
            ledger.batches_acked.contains(b) || ledger.batches_in_doubt.contains(b),
            "round {round}: batch {b} never sent"
        );
    }
    assert_eq!(count(&c, "acked").await as usize, present.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_concurrent_inserts_loses_no_acknowledged_row() {
    let mut rng = Rng::new("crash");
    let mut server = Server::start();
    {
        let c = server.client().await;
        c.batch_execute(
            "CREATE TABLE acked (k BIGINT PRIMARY KEY, client INT NOT NULL, payload TEXT NOT NULL);
             CREATE TABLE batches (batch BIGINT NOT NULL, i INT NOT NULL)",
        )
        .await
        .expect("schema");
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let mut round = 0usize;
    while round < 6 && (round < 2 || started.elapsed() < Duration::from_secs(45)) {
        let mut tasks = Vec::new();
        for client_no in 0..CLIENTS {
            tasks.push(tokio::spawn(writer(
                server.conn_str(),
                client_no,
                round as i64,
                ledger.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(rng.range(300, 2500))).await;
        server.kill9();
        for t in tasks {
            within(60, "writer after kill", t)
                .await
                .expect("writer panicked");
        }
        let acked_now = ledger.lock().unwrap().acked.len();
        eprintln!("round {round}: killed; {acked_now} rows acknowledged so far");
        server.restart();
        let snapshot = {
            let l = ledger.lock().unwrap();
            Ledger {
                acked: l.acked.clone(),
                in_doubt: l.in_doubt.clone(),
                batches_acked: l.batches_acked.clone(),
                batches_in_doubt: l.batches_in_doubt.clone(),
            }
        };
        verify(&server, &snapshot, round).await;
        // rows in doubt are now settled one way or the other: record the truth
        {
            let c = server.client().await;
            let present: HashSet<i64> = c
                .query("SELECT k FROM acked", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let present_b: HashSet<i64> = c
                .query("SELECT DISTINCT batch FROM batches", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut l = ledger.lock().unwrap();
            let doubt: Vec<i64> = l.in_doubt.drain().collect();
            for k in doubt {
                if present.contains(&k) {
                    l.acked.insert(k);
                }
            }
            let doubt: Vec<i64> = l.batches_in_doubt.drain().collect();
            for b in doubt {
                if present_b.contains(&b) {
                    l.batches_acked.insert(b);
                }
            }
        }
        round += 1;
    }
    let total = ledger.lock().unwrap().acked.len();
    assert!(total > 0, "no insert was ever acknowledged");
    // a clean shutdown after all that, and one more open
    assert!(
        server
            .terminate(Duration::from_secs(30))
            .is_some_and(|s| s.success())
    );
    server.restart();
    let c = server.client().await;
    assert!(count(&c, "acked").await as usize >= total);
}

/// All regular files under `dir`, recursively (bounded depth).
fn files_under(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 6 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, depth + 1, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

/// Where the commits of a WAL file end: the log keeps zeros preallocated
/// past them, and a killed server leaves those behind. Walks the frames
/// (`[len u32][crc u32][lsn u64][flags u8][payload]`, storage/src/wal.rs)
/// up to the first all-zero header.
fn wal_commits_end(bytes: &[u8]) -> usize {
    const HEADER: usize = 17;
    let mut at = 0;
    while at + HEADER <= bytes.len() && bytes[at..at + HEADER].iter().any(|&b| b != 0) {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        at += HEADER + len as usize;
    }
    at
}

/// The WAL segment written last (newest mtime, then largest name).
fn newest_wal_file(data_dir: &Path) -> PathBuf {
    let wal = data_dir.join("wal");
    let mut files = Vec::new();
    files_under(&wal, 0, &mut files);
    files.retain(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false));
    files.sort_by_key(|p| {
        (
            std::fs::metadata(p).and_then(|m| m.modified()).ok(),
            p.file_name().map(|n| n.to_owned()),
        )
    });
    files.pop().unwrap_or_else(|| {
        let mut all = Vec::new();
        files_under(data_dir, 0, &mut all);
        panic!(
            "no non-empty WAL file under {}; data dir holds {all:?}",
            wal.display()
        )
    })
}

async fn setup_and_kill(n: i64) -> Server {
    let mut server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE w (k BIGINT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    for k in 0..n {
        c.execute(
            "INSERT INTO w VALUES ($1, $2)",
            &[&k, &format!("value {k}")],
        )
        .await
        .expect("insert");
    }
    drop(c);
    server.kill9();
    server
}

async fn keys(server: &Server) -> Vec<i64> {
    let c = server.client().await;
    c.query("SELECT k, v FROM w ORDER BY k", &[])
        .await
        .expect("read after restart")
        .iter()
        .map(|r| {
            let k: i64 = r.get(0);
            assert_eq!(
                r.get::<_, String>(1),
                format!("value {k}"),
                "damaged row {k}"
            );
            k
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_wal_tail_is_ignored() {
    let mut server = setup_and_kill(50).await;
    let wal = newest_wal_file(&server.data_dir);
    {
        use std::os::unix::fs::FileExt;
        let end = wal_commits_end(&std::fs::read(&wal).unwrap()) as u64;
        let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
        // a torn record right after the last commit: plausible length
        // prefix, then junk
        f.write_all_at(
            &[
                0x00, 0x00, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x42, 0x13, 0x37,
            ],
            end,
        )
        .unwrap();
        f.write_all_at(&[0xa5; 300], end + 11).unwrap();
    }
    server.restart();
    assert_eq!(keys(&server).await, (0..50).collect::<Vec<_>>());
    // and the database accepts writes after recovery, which survive another crash
    let c = server.client().await;
    c.execute("INSERT INTO w VALUES (50, 'value 50')", &[])
        .await
        .expect("write after recovery");
    drop(c);
    server.kill9();
    server.restart();
    assert_eq!(keys(&server).await, (0..51).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_last_wal_record_is_dropped_not_applied() {
    let mut server = setup_and_kill(50).await;
    let wal = newest_wal_file(&server.data_dir);
    let len = wal_commits_end(&std::fs::read(&wal).unwrap()) as u64;
    // cut the last record in half (a few bytes off its end)
    let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    server.restart();
    let got = keys(&server).await;
    // every commit before the torn one is there; the torn one is either
    // dropped entirely or (if the cut hit only padding) fully present
    assert!(
        got == (0..49).collect::<Vec<_>>() || got == (0..50).collect::<Vec<_>>(),
        "after a torn tail: {} rows, first missing {:?}",
        got.len(),
        (0..50).find(|k| !got.contains(k))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_byte_in_last_wal_record_is_detected() {
    let mut server = setup_and_kill(50).await;
    let wal = newest_wal_file(&server.data_dir);
    let mut bytes = std::fs::read(&wal).unwrap();
    let n = wal_commits_end(&bytes);
    // flip a byte inside the last record's payload (not its very end)
    bytes[n - 6] ^= 0xff;
    std::fs::write(&wal, &bytes).unwrap();
    server.restart();
    let got = keys(&server).await;
    assert!(
        got == (0..49).collect::<Vec<_>>() || got == (0..50).collect::<Vec<_>>(),
        "after a corrupt tail: {} rows",
        got.len()
    );
}
