//! Sequences: durable counters with PostgreSQL's semantics (not
//! transactional; values may be skipped after a crash, never reused).
//!
//! Each durable reservation covers the next [`RESERVE`] values, so only one
//! `next` in [`RESERVE`] writes the WAL. Callers that build their own commit
//! (the DLProv ingest) use [`Sequences::next_in`], which puts the reservation
//! into that commit instead of writing it separately.

use std::collections::HashMap;

use parking_lot::Mutex;
use provdb_storage::{Storage, WalOp};
use serde::{Deserialize, Serialize};

use crate::catalog::SEQUENCE_PREFIX;
use crate::error::{EngineError, Result};

/// Values reserved per durable write.
pub const RESERVE: i64 = 32;

/// A sequence's durable definition and reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceDef {
    pub start: i64,
    pub increment: i64,
    /// Highest value that may have been handed out (None = none yet).
    pub reserved: Option<i64>,
}

impl SequenceDef {
    /// `START WITH 1 INCREMENT BY 1`.
    pub fn ascending() -> Self {
        SequenceDef {
            start: 1,
            increment: 1,
            reserved: None,
        }
    }
}

#[derive(Debug)]
struct SeqState {
    def: SequenceDef,
    next: i64,
}

/// The sequences of one database, with their in-memory position.
#[derive(Debug, Default)]
pub struct Sequences {
    cache: Mutex<HashMap<String, SeqState>>,
}

impl Sequences {
    /// Forget cached state (after DROP SEQUENCE, or a failed commit that
    /// carried a reservation).
    pub fn forget(&self, key: &str) {
        self.cache.lock().remove(key);
    }

    /// The next value of the sequence stored under `key`, writing a new
    /// reservation to the WAL when the current one is used up. Blocks the
    /// calling thread on that write.
    pub fn next(&self, storage: &Storage, key: &str) -> Result<i64> {
        let mut ops = Vec::new();
        let value = self.next_in(storage, key, &mut ops)?;
        if !ops.is_empty() {
            commit_blocking(storage, ops)?;
        }
        Ok(value)
    }

    /// The next value; when a new reservation is needed its `PutMeta` is
    /// pushed onto `ops`, which the caller must commit before (or together
    /// with) any use of the value. If that commit fails, call
    /// [`Sequences::forget`] for `key`.
    pub fn next_in(&self, storage: &Storage, key: &str, ops: &mut Vec<WalOp>) -> Result<i64> {
        let mut cache = self.cache.lock();
        if !cache.contains_key(key) {
            let def = load(storage, key)?;
            let next = def.reserved.map(|r| r + def.increment).unwrap_or(def.start);
            cache.insert(key.to_string(), SeqState { def, next });
        }
        let st = cache
            .get_mut(key)
            .ok_or_else(|| EngineError::internal("sequence cache"))?;
        let value = st.next;
        let exhausted = match st.def.reserved {
            None => true,
            Some(r) => (st.def.increment > 0 && value > r) || (st.def.increment < 0 && value < r),
        };
        if exhausted {
            let mut def = st.def.clone();
            def.reserved = Some(value + st.def.increment * (RESERVE - 1));
            ops.push(put(key, &def)?);
            st.def = def;
        }
        st.next = value + st.def.increment;
        Ok(value)
    }

    /// `setval`: the next `next` returns `value + increment`.
    pub fn set(&self, storage: &Storage, key: &str, value: i64) -> Result<i64> {
        let mut cache = self.cache.lock();
        let mut def = match cache.remove(key) {
            Some(s) => s.def,
            None => load(storage, key)?,
        };
        def.reserved = Some(value);
        commit_blocking(storage, vec![put(key, &def)?])?;
        cache.insert(
            key.to_string(),
            SeqState {
                next: value + def.increment,
                def,
            },
        );
        Ok(value)
    }
}

/// The op that stores `def` under `key`.
pub fn put(key: &str, def: &SequenceDef) -> Result<WalOp> {
    let value = serde_json::to_value(def).map_err(|e| EngineError::internal(e.to_string()))?;
    Ok(WalOp::PutMeta {
        key: key.to_string(),
        value,
    })
}

fn load(storage: &Storage, key: &str) -> Result<SequenceDef> {
    let v = storage.meta_get(key).ok_or_else(|| {
        EngineError::NotFound(format!(
            "relation \"{}\" does not exist",
            &key[SEQUENCE_PREFIX.len().min(key.len())..].replace('/', ".")
        ))
    })?;
    serde_json::from_value(v)
        .map_err(|e| EngineError::internal(format!("bad sequence metadata under {key}: {e}")))
}

fn commit_blocking(storage: &Storage, ops: Vec<WalOp>) -> Result<()> {
    // Called from inside SQL execution; the WAL writer is its own thread, so
    // blocking here cannot deadlock it.
    futures::executor::block_on(storage.commit(ops))?;
    Ok(())
}
