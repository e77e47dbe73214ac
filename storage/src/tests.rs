//! End-to-end tests of the storage engine: commit, snapshot, checkpoint,
//! reopen (recovery), deletes across flushes, compaction, key uniqueness.

use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use roaring::RoaringBitmap;

use crate::storage::{Storage, StorageOptions, TableSnapshot};
use crate::table::{SourceId, TableDef, TableId};
use crate::{CommitInfo, StorageError, WalOp};

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]))
}

fn rows(ids: &[i64]) -> RecordBatch {
    let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(names)),
        ],
    )
    .unwrap()
}

fn opts(dir: &std::path::Path) -> StorageOptions {
    let mut o = StorageOptions::new(dir);
    o.background = false;
    o
}

/// Commit the rows `ids` into table `t` in one insert.
async fn insert(s: &Storage, t: TableId, ids: &[i64]) -> Result<CommitInfo, StorageError> {
    s.commit(vec![WalOp::Insert {
        table: t,
        batch: rows(ids),
    }])
    .await
}

async fn create(s: &Storage, name: &str, pk: bool) -> TableId {
    let (id, source) = s.allocate_table_ids();
    let def = TableDef {
        id,
        namespace: "public".into(),
        name: name.into(),
        schema: schema(),
        primary_key: if pk { vec![0] } else { vec![] },
        properties: serde_json::Value::Null,
    };
    s.commit(vec![WalOp::CreateTable { def, source }])
        .await
        .unwrap();
    id
}

/// Live ids of a snapshot, read from memory and segments.
async fn live_ids(s: &Storage, snap: &TableSnapshot) -> Vec<i64> {
    let mut out = Vec::new();
    for seg in &snap.segments {
        let batches = crate::segment::read_segment(&s.inner.store, &seg.file.meta, None)
            .await
            .unwrap();
        collect(&batches, &seg.dv, &mut out);
    }
    for m in &snap.memtables {
        collect(&m.batches, &m.dv, &mut out);
    }
    out.sort();
    out
}

fn collect(batches: &[RecordBatch], dv: &RoaringBitmap, out: &mut Vec<i64>) {
    let mut pos = 0u32;
    for b in batches {
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..ids.len() {
            if !dv.contains(pos) {
                out.push(ids.value(i));
            }
            pos += 1;
        }
    }
}

#[tokio::test]
async fn committed_rows_are_visible_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let t = create(&s, "t", false).await;
    insert(&s, t, &[1, 2, 3]).await.unwrap();
    assert_eq!(live_ids(&s, &s.snapshot(t).unwrap()).await, vec![1, 2, 3]);
    drop(s); // no clean close: recovery replays the WAL
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let t2 = s.table_by_name("public", "t").unwrap().id;
    assert_eq!(t2, t);
    assert_eq!(live_ids(&s, &s.snapshot(t).unwrap()).await, vec![1, 2, 3]);
}

#[tokio::test]
async fn checkpoint_writes_segments_and_truncates_wal() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let t = create(&s, "t", true).await;
    insert(&s, t, &[1, 2, 3]).await.unwrap();
    s.checkpoint().await.unwrap();
    let st = s.stats();
    assert_eq!(st.segments, 1);
    assert_eq!(
        st.wal_files, 1,
        "old WAL files are removed after the manifest is saved"
    );
    insert(&s, t, &[4]).await.unwrap();
    drop(s);
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let snap = s.snapshot(t).unwrap();
    assert_eq!(snap.segments.len(), 1);
    assert_eq!(live_ids(&s, &snap).await, vec![1, 2, 3, 4]);
    // The key index was rebuilt from the segment: a duplicate is refused.
    let err = insert(&s, t, &[2]).await.unwrap_err();
    assert!(matches!(err, StorageError::UniqueViolation { .. }), "{err}");
}

fn delete_op(t: TableId, source: SourceId, pos: &[u32], keys: Option<&[i64]>) -> WalOp {
    let keys = keys.map(|k| {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(k.to_vec()))]).unwrap()
    });
    WalOp::Delete {
        table: t,
        source,
        positions: pos.iter().copied().collect(),
        keys,
    }
}

#[tokio::test]
async fn deletes_survive_flush_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let t = create(&s, "t", true).await;
    insert(&s, t, &[10, 11, 12, 13]).await.unwrap();
    let src = s.snapshot(t).unwrap().memtables[0].id;
    s.commit(vec![delete_op(t, src, &[1], Some(&[11]))])
        .await
        .unwrap();
    s.checkpoint().await.unwrap();
    // Delete on the segment (same id and positions as the buffer it came from).
    s.commit(vec![delete_op(t, src, &[3], Some(&[13]))])
        .await
        .unwrap();
    assert_eq!(live_ids(&s, &s.snapshot(t).unwrap()).await, vec![10, 12]);
    drop(s);
    let s = Storage::open(opts(dir.path())).await.unwrap();
    assert_eq!(live_ids(&s, &s.snapshot(t).unwrap()).await, vec![10, 12]);
    s.checkpoint().await.unwrap(); // persists the second DV version
    drop(s);
    let s = Storage::open(opts(dir.path())).await.unwrap();
    assert_eq!(live_ids(&s, &s.snapshot(t).unwrap()).await, vec![10, 12]);
    // Deleted keys can be inserted again.
    insert(&s, t, &[11]).await.unwrap();
}

#[tokio::test]
async fn compaction_merges_segments_and_drops_deleted_rows() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let t = create(&s, "t", true).await;
    let mut first_src = None;
    for i in 0..5 {
        insert(&s, t, &[i * 10, i * 10 + 1]).await.unwrap();
        if first_src.is_none() {
            first_src = Some(s.snapshot(t).unwrap().memtables[0].id);
        }
        s.checkpoint().await.unwrap();
    }
    s.commit(vec![delete_op(t, first_src.unwrap(), &[0], Some(&[0]))])
        .await
        .unwrap();
    assert_eq!(s.snapshot(t).unwrap().segments.len(), 5);
    let old = s.snapshot(t).unwrap(); // a reader holding the old segments
    assert_eq!(s.compact().await.unwrap(), 1);
    let snap = s.snapshot(t).unwrap();
    assert_eq!(snap.segments.len(), 1);
    let expect = vec![1, 10, 11, 20, 21, 30, 31, 40, 41];
    assert_eq!(live_ids(&s, &snap).await, expect);
    // Garbage collection must not delete files an old snapshot still reads.
    crate::maintenance::collect_garbage(&s).await.unwrap();
    assert_eq!(live_ids(&s, &old).await, expect);
    drop(old);
    crate::maintenance::collect_garbage(&s).await.unwrap();
    drop(s);
    let s = Storage::open(opts(dir.path())).await.unwrap();
    assert_eq!(live_ids(&s, &s.snapshot(t).unwrap()).await, expect);
    // The key index points into the compacted segment.
    let err = insert(&s, t, &[41]).await.unwrap_err();
    assert!(matches!(err, StorageError::UniqueViolation { .. }));
    insert(&s, t, &[0]).await.unwrap();
}

#[tokio::test]
async fn concurrent_duplicate_keys_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let t = create(&s, "t", true).await;
    let mut handles = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        handles.push(tokio::spawn(async move { insert(&s, t, &[7]).await }));
    }
    let mut ok = 0;
    for h in handles {
        if h.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(live_ids(&s, &s.snapshot(t).unwrap()).await, vec![7]);
}

/// Small commits finding the writer idle are written by their callers,
/// the others grouped by the writer thread; a key is still inserted once,
/// whichever way the competing commits went.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inline_and_grouped_commits_check_keys_against_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let t = create(&s, "t", true).await;
    let before = s.stats();
    let mut handles = Vec::new();
    for i in 0..408i64 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            // Keys 0..100, each tried by four tasks, and among them eight
            // commits too large to be written inline (20,000 rows of keys
            // past 1,000,000 that nobody else tries).
            let ids: Vec<i64> = if i % 51 == 50 {
                (0..20_000).map(|k| 1_000_000 + i * 100_000 + k).collect()
            } else {
                vec![(i - i / 51) % 100]
            };
            insert(&s, t, &ids).await.is_ok()
        }));
    }
    let mut ok = 0;
    for h in handles {
        ok += usize::from(h.await.unwrap());
    }
    assert_eq!(ok, 100 + 8, "each small key once, every large commit");
    let ids = live_ids(&s, &s.snapshot(t).unwrap()).await;
    assert_eq!(ids.len(), 100 + 8 * 20_000);
    let small: Vec<i64> = ids.iter().copied().filter(|&k| k < 100).collect();
    assert_eq!(small, (0..100).collect::<Vec<_>>());
    let after = s.stats();
    let inline = after.inline_commits - before.inline_commits;
    let grouped = after.grouped_commits - before.grouped_commits;
    assert_eq!(inline + grouped, 408);
    assert!(inline > 0, "no commit was written inline");
    assert!(grouped >= 8, "large commits must go to the writer thread");
    s.close().await.unwrap();
    let s = Storage::open(opts(dir.path())).await.unwrap();
    assert_eq!(live_ids(&s, &s.snapshot(t).unwrap()).await.len(), ids.len());
}

#[tokio::test]
async fn repeated_keys_inside_one_commit_are_refused_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let t = create(&s, "t", true).await;
    let op = |ids: &[i64]| WalOp::Insert {
        table: t,
        batch: rows(ids),
    };
    for ops in [
        vec![op(&[5, 3, 9, 3])],
        vec![op(&[1, 2, 3]), op(&[4, 5]), op(&[3])],
        vec![op(&[1, 2]), op(&[3, 3])],
    ] {
        let err = s.commit(ops).await.unwrap_err();
        match err {
            StorageError::UniqueViolation { key, columns, .. } => {
                assert_eq!((key.as_str(), columns.as_str()), ("3", "id"));
            }
            other => panic!("{other}"),
        }
    }
    let ordered: Vec<i64> = (0..10_000).collect();
    s.commit(vec![op(&ordered[..5000]), op(&ordered[5000..])])
        .await
        .unwrap();
    let unordered: Vec<i64> = (0..1000).map(|i| 20_000 + (i * 7919) % 1000).collect();
    s.commit(vec![op(&unordered)]).await.unwrap();
    assert_eq!(live_ids(&s, &s.snapshot(t).unwrap()).await.len(), 11_000);
}

#[tokio::test]
async fn failed_commit_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let t = create(&s, "t", true).await;
    // Second op violates the key: the first op must not be applied either.
    let err = s
        .commit(vec![
            WalOp::Insert {
                table: t,
                batch: rows(&[1]),
            },
            WalOp::Insert {
                table: t,
                batch: rows(&[1]),
            },
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::UniqueViolation { .. }));
    assert!(live_ids(&s, &s.snapshot(t).unwrap()).await.is_empty());
    // NOT NULL.
    let bad = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(vec![Some(1), None])),
            Arc::new(StringArray::from(vec!["a", "b"])),
        ],
    );
    assert!(
        bad.is_err(),
        "arrow itself refuses nulls in a non-nullable field"
    );
    drop(s);
    let s = Storage::open(opts(dir.path())).await.unwrap();
    assert!(live_ids(&s, &s.snapshot(t).unwrap()).await.is_empty());
}

#[tokio::test]
async fn second_open_of_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _s = Storage::open(opts(dir.path())).await.unwrap();
    let err = Storage::open(opts(dir.path())).await.unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
}

#[tokio::test]
async fn drop_and_meta_replay() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let t = create(&s, "t", false).await;
    s.commit(vec![WalOp::PutMeta {
        key: "view/public/v".into(),
        value: serde_json::json!("select 1"),
    }])
    .await
    .unwrap();
    s.checkpoint().await.unwrap();
    s.commit(vec![WalOp::DropTable { table: t }]).await.unwrap();
    s.commit(vec![WalOp::DeleteMeta {
        key: "view/public/v".into(),
    }])
    .await
    .unwrap();
    drop(s);
    let s = Storage::open(opts(dir.path())).await.unwrap();
    assert!(s.table_by_name("public", "t").is_none());
    assert!(s.meta_get("view/public/v").is_none());
    // The name is free again.
    create(&s, "t", false).await;
}

/// Names of the files under the local segment store's `tables/` directory.
fn table_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let root = dir.join("segments").join("tables");
    for table in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(table.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(f.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn staged_segments_attach_with_their_commit_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let t = create(&s, "t", false).await;
    insert(&s, t, &[1]).await.unwrap();
    let mut staged = s.stage_segment(t).unwrap();
    staged.write(&rows(&[10, 11])).await.unwrap();
    staged.write(&rows(&[12])).await.unwrap();
    assert_eq!(staged.rows(), 3);
    let op = staged.finish().await.unwrap();
    assert_eq!(
        live_ids(&s, &s.snapshot(t).unwrap()).await,
        vec![1],
        "staged rows are invisible before their commit"
    );
    s.commit(vec![
        op,
        WalOp::Insert {
            table: t,
            batch: rows(&[2]),
        },
    ])
    .await
    .unwrap();
    staged.keep();
    let snap = s.snapshot(t).unwrap();
    assert_eq!(live_ids(&s, &snap).await, vec![1, 2, 10, 11, 12]);
    assert_eq!(s.live_rows(t).unwrap(), 5);
    // Deletes reach the attached segment like any other.
    let attached = snap.segments[0].file.meta.id;
    s.commit(vec![delete_op(t, attached, &[1], None)])
        .await
        .unwrap();
    drop(snap);
    drop(s); // no clean close: the attach is replayed from the log
    let s = Storage::open(opts(dir.path())).await.unwrap();
    assert_eq!(
        live_ids(&s, &s.snapshot(t).unwrap()).await,
        vec![1, 2, 10, 12]
    );
    assert_eq!(table_files(dir.path()).len(), 1, "the open kept the file");
    // A checkpoint moves the attached segment into the manifest.
    s.checkpoint().await.unwrap();
    drop(s);
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let snap = s.snapshot(t).unwrap();
    assert_eq!(live_ids(&s, &snap).await, vec![1, 2, 10, 12]);
    assert!(snap.segments.iter().any(|g| g.file.meta.id == attached));
    // Compaction rewrites it without its deleted row.
    insert(&s, t, &[3]).await.unwrap();
    s.checkpoint().await.unwrap();
    assert_eq!(s.compact().await.unwrap(), 1);
    drop(snap);
    crate::maintenance::collect_garbage(&s).await.unwrap();
    drop(s);
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let snap = s.snapshot(t).unwrap();
    assert!(snap.segments.iter().all(|g| g.file.meta.id != attached));
    assert_eq!(live_ids(&s, &snap).await, vec![1, 2, 3, 10, 12]);
    assert_eq!(table_files(dir.path()).len(), snap.segments.len());
}

#[tokio::test]
async fn staged_segments_never_committed_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let t = create(&s, "t", false).await;
    // Finished, then dropped before a commit: the file goes.
    let mut staged = s.stage_segment(t).unwrap();
    staged.write(&rows(&[5, 6])).await.unwrap();
    let _never_committed = staged.finish().await.unwrap();
    assert_eq!(table_files(dir.path()).len(), 1);
    drop(staged);
    crate::maintenance::collect_garbage(&s).await.unwrap();
    assert!(table_files(dir.path()).is_empty());
    // Kept but never committed (as if the server crashed before the
    // commit): the next open deletes it.
    let mut staged = s.stage_segment(t).unwrap();
    staged.write(&rows(&[7, 8])).await.unwrap();
    let _never_committed = staged.finish().await.unwrap();
    staged.keep();
    // Dropped unfinished.
    let mut staged = s.stage_segment(t).unwrap();
    staged.write(&rows(&[9])).await.unwrap();
    drop(staged);
    crate::maintenance::collect_garbage(&s).await.unwrap();
    assert_eq!(table_files(dir.path()).len(), 1);
    // A batch that does not fit the table is refused.
    let mut staged = s.stage_segment(t).unwrap();
    let wrong = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .unwrap();
    let err = staged.write(&wrong).await.unwrap_err();
    assert!(matches!(err, StorageError::SchemaMismatch { .. }), "{err}");
    drop(staged);
    drop(s);
    let s = Storage::open(opts(dir.path())).await.unwrap();
    assert!(live_ids(&s, &s.snapshot(t).unwrap()).await.is_empty());
    assert!(
        table_files(dir.path()).is_empty(),
        "the open deleted the orphan"
    );
    // Tables with a primary key take no staged segments.
    let keyed = create(&s, "k", true).await;
    let err = s.stage_segment(keyed).err().unwrap();
    assert!(err.to_string().contains("primary key"), "{err}");
}

/// `(id, v)` rows for a table of an id and a float.
fn float_rows(start: i64, values: &[f64]) -> RecordBatch {
    let ids: Vec<i64> = (start..start + values.len() as i64).collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Float64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(arrow::array::Float64Array::from(values.to_vec())),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn staged_rows_start_a_segment_when_full_or_when_a_float_needs_more_decimals() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let (t, source) = s.allocate_table_ids();
    let def = TableDef {
        id: t,
        namespace: "public".into(),
        name: "m".into(),
        schema: float_rows(0, &[]).schema(),
        primary_key: vec![],
        properties: serde_json::Value::Null,
    };
    s.commit(vec![WalOp::CreateTable { def, source }])
        .await
        .unwrap();
    let batches = [
        float_rows(0, &[0.5, 0.25, 1.125]),
        // Fits the three decimals chosen; the segment is then full (4).
        float_rows(3, &[0.75, 1.5]),
        float_rows(5, &[0.1, 0.2]),
        // Nine decimals do not fit the one chosen: a third segment.
        float_rows(7, &[0.123456789, 3.0]),
    ];
    let mut staged = crate::StagedRows::new(&s, t, 4).unwrap();
    for b in &batches {
        staged.write(b).await.unwrap();
    }
    assert_eq!(staged.rows(), 9);
    let ops = staged.finish().await.unwrap();
    assert_eq!(ops.len(), 3);
    assert!(
        s.snapshot(t).unwrap().segments.is_empty(),
        "nothing before the commit"
    );
    s.commit(ops).await.unwrap();
    staged.keep();
    let snap = s.snapshot(t).unwrap();
    let mut got = Vec::new();
    let mut scales = Vec::new();
    for seg in &snap.segments {
        let file = std::fs::read(dir.path().join("segments").join(&seg.file.meta.path)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(file),
        )
        .unwrap();
        scales.push(crate::scaled::field_scale(reader.schema().field(1)));
        for b in crate::segment::read_segment(&s.inner.store, &seg.file.meta, None)
            .await
            .unwrap()
        {
            let v = b
                .column(1)
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>();
            got.extend(v.unwrap().values().iter().map(|x| x.to_bits()));
        }
    }
    let rows: Vec<u64> = snap.segments.iter().map(|g| g.file.meta.rows).collect();
    assert_eq!(rows, [5, 2, 2]);
    assert_eq!(scales, [Some(3), Some(1), Some(9)]);
    let want: Vec<u64> = batches
        .iter()
        .flat_map(|b| {
            let v = b
                .column(1)
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>();
            v.unwrap()
                .values()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(got, want, "the doubles read back are the doubles written");
    // Dropped before a commit, every file of the staged rows goes.
    let mut dropped = crate::StagedRows::new(&s, t, 2).unwrap();
    for b in &batches {
        dropped.write(b).await.unwrap();
    }
    drop(dropped);
    crate::maintenance::collect_garbage(&s).await.unwrap();
    assert_eq!(table_files(dir.path()).len(), 3);
    // A keyed table is refused up front.
    let keyed = create(&s, "k", true).await;
    let err = crate::StagedRows::new(&s, keyed, 4).err().unwrap();
    assert!(err.to_string().contains("primary key"), "{err}");
}

#[tokio::test]
async fn an_attach_is_refused_once_its_table_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(opts(dir.path())).await.unwrap();
    let t = create(&s, "t", false).await;
    let mut staged = s.stage_segment(t).unwrap();
    staged.write(&rows(&[1])).await.unwrap();
    let op = staged.finish().await.unwrap();
    s.commit(vec![WalOp::DropTable { table: t }]).await.unwrap();
    let err = s.commit(vec![op.clone()]).await.unwrap_err();
    assert!(matches!(err, StorageError::NoSuchTable(_)), "{err}");
}

#[tokio::test]
async fn segments_in_a_file_url_store_are_written_synced_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let segs = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.object_store_url = Some(format!("file://{}", segs.path().display()));
    let s = Storage::open(o.clone()).await.unwrap();
    let t = create(&s, "t", true).await;
    insert(&s, t, &[1, 2, 3]).await.unwrap();
    // The checkpoint fsyncs the new segment where the store put it.
    s.checkpoint().await.unwrap();
    assert_eq!(s.stats().segments, 1);
    drop(s);
    let parquet = std::fs::read_dir(segs.path().join("tables"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .filter(|f| f.path().extension().is_some_and(|x| x == "parquet"))
        .count();
    assert_eq!(parquet, 1);
    let s = Storage::open(o).await.unwrap();
    assert_eq!(live_ids(&s, &s.snapshot(t).unwrap()).await, vec![1, 2, 3]);
}
