//! Sequences: `CREATE SEQUENCE`, `nextval`, `currval`, `setval`, and the
//! implicit sequences of serial and identity columns.
//!
//! The counters themselves live in the engine ([`Sequences`]); this module
//! resolves names as SQL writes them and exposes the functions to DataFusion.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{Ident, ObjectName};
use provdb_storage::Storage;

use crate::error::{SqlResult, from_engine};
use crate::table::external;

pub use provdb_engine::catalog::sequence_key;
pub use provdb_engine::sequence::{SequenceDef, Sequences};

/// Resolve a sequence name as written in SQL (`s`, `schema.s`, `"S"`).
pub fn resolve_name(name: &str, search_path: &[String], storage: &Storage) -> SqlResult<String> {
    let parts: Vec<Ident> = name
        .trim()
        .split('.')
        .map(|p| {
            let p = p.trim();
            match p.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
                Some(quoted) => Ident::with_quote('"', quoted),
                None => Ident::new(p),
            }
        })
        .collect();
    // Schema and name are the last two parts (a database before them is
    // ignored); an unqualified name goes through the search path like a
    // table's.
    let object = ObjectName::from(parts[parts.len().saturating_sub(2)..].to_vec());
    let (schema, name, _) = crate::ddl::resolve_name(&object, search_path, |s, n| {
        storage.meta_get(&sequence_key(s, n))
    })?;
    Ok(sequence_key(&schema, &name))
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
            let key = resolve_name(names.value(idx), &path, &self.storage).map_err(external)?;
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
            .map_err(|e| external(from_engine(e)))?;
            out.push(Some(v));
        }
        if args.number_rows == 0 || (arrays[0].len() == 1 && args.number_rows <= 1) {
            return Ok(ColumnarValue::Scalar(ScalarValue::Int64(out[0])));
        }
        Ok(ColumnarValue::Array(Arc::new(Int64Array::from(out))))
    }
}
