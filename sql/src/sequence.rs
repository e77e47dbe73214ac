//! Sequences: `CREATE SEQUENCE`, `nextval`, `currval`, `setval`, and the
//! implicit sequences of serial and identity columns.
//!
//! As in PostgreSQL, sequences are not transactional and values may be
//! skipped after a crash: each durable reservation covers the next
//! [`RESERVE`] values, so only one nextval in [`RESERVE`] waits for the WAL.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use parking_lot::Mutex;
use provdb_storage::{Storage, WalOp};
use serde::{Deserialize, Serialize};

use crate::catalog::SEQUENCE_PREFIX;
use crate::error::{SqlError, SqlResult};
use crate::table::external;

/// Values reserved per durable write.
pub const RESERVE: i64 = 32;

/// A sequence's durable definition and reservation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SequenceDef {
    pub start: i64,
    pub increment: i64,
    /// Highest value that may have been handed out (None = none yet).
    pub reserved: Option<i64>,
}

#[derive(Debug)]
struct SeqState {
    def: SequenceDef,
    next: i64,
}

/// All sequences of a database.
#[derive(Debug, Default)]
pub struct Sequences {
    cache: Mutex<HashMap<String, SeqState>>,
}

pub fn sequence_key(schema: &str, name: &str) -> String {
    format!("{SEQUENCE_PREFIX}{schema}/{name}")
}

impl Sequences {
    /// Forget cached state (after DROP SEQUENCE).
    pub fn forget(&self, key: &str) {
        self.cache.lock().remove(key);
    }

    /// The next value of the sequence stored under `key`.
    pub fn next(&self, storage: &Storage, key: &str) -> SqlResult<i64> {
        let mut cache = self.cache.lock();
        if !cache.contains_key(key) {
            let def = load(storage, key)?;
            let next = def.reserved.map(|r| r + def.increment).unwrap_or(def.start);
            cache.insert(key.to_string(), SeqState { def, next });
        }
        let st = cache
            .get_mut(key)
            .ok_or_else(|| SqlError::internal("sequence cache"))?;
        let value = st.next;
        let reserved = st.def.reserved;
        let exhausted = match reserved {
            None => true,
            Some(r) => (st.def.increment > 0 && value > r) || (st.def.increment < 0 && value < r),
        };
        if exhausted {
            let mut def = st.def.clone();
            def.reserved = Some(value + st.def.increment * (RESERVE - 1));
            persist(storage, key, &def)?;
            st.def = def;
        }
        st.next = value + st.def.increment;
        Ok(value)
    }

    /// `setval`: the next nextval returns `value + increment`.
    pub fn set(&self, storage: &Storage, key: &str, value: i64) -> SqlResult<i64> {
        let mut cache = self.cache.lock();
        let mut def = match cache.remove(key) {
            Some(s) => s.def,
            None => load(storage, key)?,
        };
        def.reserved = Some(value);
        persist(storage, key, &def)?;
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

fn load(storage: &Storage, key: &str) -> SqlResult<SequenceDef> {
    let v = storage.meta_get(key).ok_or_else(|| {
        SqlError::new(
            "42P01",
            format!(
                "relation \"{}\" does not exist",
                &key[SEQUENCE_PREFIX.len()..].replace('/', ".")
            ),
        )
    })?;
    serde_json::from_value(v).map_err(|e| SqlError::internal(format!("bad sequence metadata: {e}")))
}

fn persist(storage: &Storage, key: &str, def: &SequenceDef) -> SqlResult<()> {
    let value = serde_json::to_value(def).map_err(|e| SqlError::internal(e.to_string()))?;
    let op = WalOp::PutMeta {
        key: key.to_string(),
        value,
    };
    // Called from inside query execution; the WAL writer is its own thread.
    futures::executor::block_on(storage.commit(vec![op])).map_err(crate::error::from_storage)?;
    Ok(())
}

/// Resolve a sequence name as written in SQL (`s`, `schema.s`, `"S"`).
pub fn resolve_name(name: &str, search_path: &[String], storage: &Storage) -> String {
    let name = name.trim();
    let parts: Vec<String> = name
        .split('.')
        .map(|p| {
            let p = p.trim();
            if p.starts_with('"') && p.ends_with('"') && p.len() >= 2 {
                p[1..p.len() - 1].to_string()
            } else {
                p.to_ascii_lowercase()
            }
        })
        .collect();
    if parts.len() >= 2 {
        return sequence_key(&parts[parts.len() - 2], &parts[parts.len() - 1]);
    }
    for schema in search_path {
        let key = sequence_key(schema, &parts[0]);
        if storage.meta_get(&key).is_some() {
            return key;
        }
    }
    sequence_key(
        search_path.first().map(String::as_str).unwrap_or("public"),
        &parts[0],
    )
}

/// Which sequence function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeqFn {
    NextVal,
    SetVal,
}

/// `nextval(name)` / `setval(name, value)` as a DataFusion UDF.
#[derive(Debug)]
pub struct SequenceUdf {
    pub kind: SeqFn,
    pub storage: Storage,
    pub sequences: Arc<Sequences>,
    pub search_path: Arc<parking_lot::RwLock<Vec<String>>>,
    signature: Signature,
}

impl PartialEq for SequenceUdf {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && Arc::ptr_eq(&self.sequences, &other.sequences)
            && Arc::ptr_eq(&self.search_path, &other.search_path)
    }
}
impl Eq for SequenceUdf {}
impl std::hash::Hash for SequenceUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
    }
}

impl SequenceUdf {
    pub fn new(
        kind: SeqFn,
        storage: Storage,
        sequences: Arc<Sequences>,
        search_path: Arc<parking_lot::RwLock<Vec<String>>>,
    ) -> Self {
        let signature = match kind {
            SeqFn::NextVal => Signature::exact(vec![DataType::Utf8], Volatility::Volatile),
            SeqFn::SetVal => {
                Signature::exact(vec![DataType::Utf8, DataType::Int64], Volatility::Volatile)
            }
        };
        SequenceUdf {
            kind,
            storage,
            sequences,
            search_path,
            signature,
        }
    }
}

impl ScalarUDFImpl for SequenceUdf {
    fn name(&self) -> &str {
        match self.kind {
            SeqFn::NextVal => "nextval",
            SeqFn::SetVal => "setval",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows.max(1);
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = arrays[0]
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| DataFusionError::Internal("nextval argument".into()))?;
        let path = self.search_path.read().clone();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let idx = if names.len() == 1 { 0 } else { i };
            if names.is_null(idx) {
                out.push(None);
                continue;
            }
            let key = resolve_name(names.value(idx), &path, &self.storage);
            let v = match self.kind {
                SeqFn::NextVal => self.sequences.next(&self.storage, &key),
                SeqFn::SetVal => {
                    let vals = arrays[1]
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .ok_or_else(|| DataFusionError::Internal("setval argument".into()))?;
                    let j = if vals.len() == 1 { 0 } else { i };
                    self.sequences.set(&self.storage, &key, vals.value(j))
                }
            }
            .map_err(external)?;
            out.push(Some(v));
        }
        if args.number_rows == 0 || (arrays[0].len() == 1 && args.number_rows <= 1) {
            return Ok(ColumnarValue::Scalar(ScalarValue::Int64(out[0])));
        }
        Ok(ColumnarValue::Array(Arc::new(Int64Array::from(out))))
    }
}
