//! The operations a commit consists of, and their binary encoding in the WAL.
//!
//! A commit is a list of [`WalOp`]s applied atomically. Row data travels as
//! Arrow IPC; metadata as JSON. Layout of one encoded op:
//! `[tag u8][len u32 LE][body]`.

use std::io::Cursor;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};
use crate::segment::SegmentMeta;
use crate::table::{SourceId, TableDef, TableId};

/// One change, as logged in the WAL and applied to memory.
#[derive(Debug, Clone)]
pub enum WalOp {
    /// Create a table; `source` is the id of its first in-memory buffer.
    CreateTable {
        def: TableDef,
        source: SourceId,
    },
    DropTable {
        table: TableId,
    },
    /// Replace a table's definition (e.g. columns appended). Existing rows
    /// read NULL in new columns.
    AlterTable {
        def: TableDef,
    },
    Insert {
        table: TableId,
        batch: RecordBatch,
    },
    /// Delete rows by position. `keys` holds the deleted rows' primary-key
    /// columns (any order) when the table has a primary key.
    Delete {
        table: TableId,
        source: SourceId,
        positions: RoaringBitmap,
        keys: Option<RecordBatch>,
    },
    PutMeta {
        key: String,
        value: serde_json::Value,
    },
    DeleteMeta {
        key: String,
    },
    /// Freeze buffers: for each table, the active buffer becomes immutable and
    /// a new one with the given id starts. Replay reproduces the same ids.
    Checkpoint {
        freezes: Vec<Freeze>,
    },
    /// Add a Parquet segment written before the commit (a staged segment,
    /// see [`crate::staged`]) to a table without a primary key. Its rows
    /// are in the file, not in the log.
    AttachSegment {
        table: TableId,
        segment: SegmentMeta,
    },
}

/// One buffer freeze of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub table: TableId,
    pub frozen: SourceId,
    pub next: SourceId,
}

#[derive(Serialize, Deserialize)]
struct AttachBody {
    table: TableId,
    segment: SegmentMeta,
}

#[derive(Serialize, Deserialize)]
struct CreateBody {
    def: TableDef,
    source: SourceId,
}

const TAG_CREATE: u8 = 1;
const TAG_DROP: u8 = 2;
const TAG_ALTER: u8 = 3;
const TAG_INSERT: u8 = 4;
const TAG_DELETE: u8 = 5;
const TAG_PUT_META: u8 = 6;
const TAG_DEL_META: u8 = 7;
const TAG_CHECKPOINT: u8 = 8;
const TAG_ATTACH: u8 = 9;

impl WalOp {
    /// A rough upper estimate of this op's encoded size, cheap to compute:
    /// used to decide whether a commit is small enough to be written by its
    /// caller (see [`crate::writer`]), never to size a buffer.
    pub fn approx_len(&self) -> usize {
        const SMALL: usize = 1024;
        match self {
            WalOp::Insert { batch, .. } => SMALL + batch.get_array_memory_size(),
            WalOp::Delete {
                positions, keys, ..
            } => {
                SMALL
                    + positions.serialized_size()
                    + keys.as_ref().map_or(0, RecordBatch::get_array_memory_size)
            }
            WalOp::PutMeta { key, value } => SMALL + key.len() + json_len_bound(value),
            _ => SMALL,
        }
    }

    /// Append this op's encoding to `out`: a tag byte, the body's length
    /// (u32, little-endian) and the body, written in place (a batch's IPC
    /// bytes are not staged in a second buffer: inserts can be large). On
    /// an error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let header = out.len();
        out.push(self.tag());
        out.extend_from_slice(&[0; 4]);
        let body = out.len();
        if let Err(e) = self.encode_body(out) {
            out.truncate(header);
            return Err(e);
        }
        let n = out.len() - body;
        let len = u32::try_from(n).map_err(|_| {
            out.truncate(header);
            StorageError::Invalid(format!(
                "a single WAL op cannot exceed 4 GiB (this one is {n} bytes)"
            ))
        })?;
        out[header + 1..body].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }

    fn tag(&self) -> u8 {
        match self {
            WalOp::CreateTable { .. } => TAG_CREATE,
            WalOp::DropTable { .. } => TAG_DROP,
            WalOp::AlterTable { .. } => TAG_ALTER,
            WalOp::Insert { .. } => TAG_INSERT,
            WalOp::Delete { .. } => TAG_DELETE,
            WalOp::PutMeta { .. } => TAG_PUT_META,
            WalOp::DeleteMeta { .. } => TAG_DEL_META,
            WalOp::Checkpoint { .. } => TAG_CHECKPOINT,
            WalOp::AttachSegment { .. } => TAG_ATTACH,
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            WalOp::CreateTable { def, source } => json_into(
                &CreateBody {
                    def: def.clone(),
                    source: *source,
                },
                out,
            ),
            WalOp::DropTable { table } => {
                out.extend_from_slice(&table.0.to_le_bytes());
                Ok(())
            }
            WalOp::AlterTable { def } => json_into(def, out),
            WalOp::Insert { table, batch } => {
                out.extend_from_slice(&table.0.to_le_bytes());
                write_ipc(batch, out)
            }
            WalOp::Delete {
                table,
                source,
                positions,
                keys,
            } => {
                out.extend_from_slice(&table.0.to_le_bytes());
                out.extend_from_slice(&source.0.to_le_bytes());
                let dv = crate::dv::encode(positions);
                out.extend_from_slice(&(dv.len() as u32).to_le_bytes());
                out.extend_from_slice(&dv);
                match keys {
                    Some(keys) => write_ipc(keys, out),
                    None => Ok(()),
                }
            }
            WalOp::PutMeta { key, value } => json_into(&(key, value), out),
            WalOp::DeleteMeta { key } => {
                out.extend_from_slice(key.as_bytes());
                Ok(())
            }
            WalOp::Checkpoint { freezes } => json_into(freezes, out),
            WalOp::AttachSegment { table, segment } => json_into(
                &AttachBody {
                    table: *table,
                    segment: segment.clone(),
                },
                out,
            ),
        }
    }

    /// Decode every op of a commit payload.
    pub fn decode_all(mut buf: &[u8]) -> Result<Vec<WalOp>> {
        let mut ops = Vec::new();
        while !buf.is_empty() {
            if buf.len() < 5 {
                return Err(corrupt("truncated op header"));
            }
            let tag = buf[0];
            let len = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            let body = buf
                .get(5..5 + len)
                .ok_or_else(|| corrupt("truncated op body"))?;
            ops.push(Self::decode_one(tag, body)?);
            buf = &buf[5 + len..];
        }
        Ok(ops)
    }

    fn decode_one(tag: u8, body: &[u8]) -> Result<WalOp> {
        Ok(match tag {
            TAG_CREATE => {
                let b: CreateBody = unjson(body)?;
                WalOp::CreateTable {
                    def: b.def,
                    source: b.source,
                }
            }
            TAG_DROP => WalOp::DropTable {
                table: TableId(read_u64(body, 0)?),
            },
            TAG_ALTER => WalOp::AlterTable { def: unjson(body)? },
            TAG_INSERT => WalOp::Insert {
                table: TableId(read_u64(body, 0)?),
                batch: read_ipc(&body[8..])?.ok_or_else(|| corrupt("insert without rows"))?,
            },
            TAG_DELETE => {
                let table = TableId(read_u64(body, 0)?);
                let source = SourceId(read_u64(body, 8)?);
                let dv_len = read_u32(body, 16)? as usize;
                let dv_bytes = body
                    .get(20..20 + dv_len)
                    .ok_or_else(|| corrupt("truncated delete"))?;
                let positions = crate::dv::decode(dv_bytes)?;
                let rest = &body[20 + dv_len..];
                let keys = if rest.is_empty() {
                    None
                } else {
                    read_ipc(rest)?
                };
                WalOp::Delete {
                    table,
                    source,
                    positions,
                    keys,
                }
            }
            TAG_PUT_META => {
                let (key, value): (String, serde_json::Value) = unjson(body)?;
                WalOp::PutMeta { key, value }
            }
            TAG_DEL_META => WalOp::DeleteMeta {
                key: String::from_utf8(body.to_vec()).map_err(|e| corrupt(e.to_string()))?,
            },
            TAG_CHECKPOINT => WalOp::Checkpoint {
                freezes: unjson(body)?,
            },
            TAG_ATTACH => {
                let b: AttachBody = unjson(body)?;
                WalOp::AttachSegment {
                    table: b.table,
                    segment: b.segment,
                }
            }
            other => return Err(corrupt(format!("unknown op tag {other}"))),
        })
    }
}

fn corrupt(detail: impl Into<String>) -> StorageError {
    StorageError::corrupt("WAL record", detail)
}

fn json_into<T: Serialize>(v: &T, out: &mut Vec<u8>) -> Result<()> {
    serde_json::to_writer(out, v)
        .map_err(|e| StorageError::Invalid(format!("cannot encode WAL op: {e}")))
}

fn unjson<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| corrupt(e.to_string()))
}

fn read_u64(b: &[u8], at: usize) -> Result<u64> {
    let s = b
        .get(at..at + 8)
        .ok_or_else(|| corrupt("truncated integer"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

fn read_u32(b: &[u8], at: usize) -> Result<u32> {
    let s = b
        .get(at..at + 4)
        .ok_or_else(|| corrupt("truncated integer"))?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Ok(u32::from_le_bytes(a))
}

/// Write one batch as an Arrow IPC stream.
pub(crate) fn write_ipc(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    let mut w = StreamWriter::try_new(out, batch.schema_ref())?;
    w.write(batch)?;
    w.finish()?;
    Ok(())
}

/// Read the single batch of an Arrow IPC stream (`None` if it has none).
pub(crate) fn read_ipc(bytes: &[u8]) -> Result<Option<RecordBatch>> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b?);
    }
    match batches.len() {
        0 => Ok(None),
        1 => Ok(batches.pop()),
        _ => Ok(Some(arrow::compute::concat_batches(&schema, &batches)?)),
    }
}

/// Roughly how many bytes `v` takes as JSON, counting no further than
/// [`JSON_LEN_CAP`] (an estimate for [`WalOp::approx_len`]).
fn json_len_bound(v: &serde_json::Value) -> usize {
    fn walk(v: &serde_json::Value, acc: &mut usize) {
        if *acc >= JSON_LEN_CAP {
            return;
        }
        match v {
            serde_json::Value::String(s) => *acc += s.len() + 2,
            serde_json::Value::Array(items) => {
                for item in items {
                    *acc += 1;
                    walk(item, acc);
                }
            }
            serde_json::Value::Object(map) => {
                for (k, item) in map {
                    *acc += k.len() + 4;
                    walk(item, acc);
                }
            }
            _ => *acc += 24,
        }
    }
    let mut acc = 2;
    walk(v, &mut acc);
    acc
}

const JSON_LEN_CAP: usize = 1 << 20;
