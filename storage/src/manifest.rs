//! The manifest: the durable description of what is in Parquet segments as of
//! a WAL position (`checkpoint_lsn`). Recovery loads it, then replays the WAL
//! after that position. It is replaced atomically (write temp, fsync, rename,
//! fsync directory), so a crash leaves either the old or the new one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, StorageError};
use crate::segment::SegmentMeta;
use crate::table::{SourceId, TableDef};

pub const MANIFEST_FILE: &str = "manifest.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// Incremented on every write.
    pub version: u64,
    /// Every commit with LSN <= this is reflected here; replay starts after it.
    pub checkpoint_lsn: u64,
    pub next_source_id: u64,
    pub next_table_id: u64,
    pub tables: Vec<ManifestTable>,
    pub meta: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestTable {
    pub def: TableDef,
    /// Id of the table's active in-memory buffer at `checkpoint_lsn`.
    pub active: SourceId,
    pub segments: Vec<SegmentMeta>,
}

impl Manifest {
    pub fn empty() -> Self {
        Manifest {
            format: FORMAT_VERSION,
            next_source_id: 1,
            next_table_id: 1,
            ..Default::default()
        }
    }

    /// Load the manifest of `dir`, or `None` for a new database.
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io(path, e)),
        };
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            StorageError::corrupt(format!("manifest {}", path.display()), e.to_string())
        })?;
        if m.format != FORMAT_VERSION {
            return Err(StorageError::corrupt(
                "manifest",
                format!("unsupported format {}", m.format),
            ));
        }
        Ok(Some(m))
    }

    /// Atomically replace the manifest of `dir` with `self`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let path = dir.join(MANIFEST_FILE);
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| StorageError::Invalid(format!("cannot encode manifest: {e}")))?;
        let mut f = fs::File::create(&tmp).at(&tmp)?;
        f.write_all(&bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        drop(f);
        fs::rename(&tmp, &path).at(&path)?;
        fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Manifest::load(dir.path()).unwrap().is_none());
        let mut m = Manifest::empty();
        m.checkpoint_lsn = 42;
        m.meta.insert("k".into(), serde_json::json!({"a": 1}));
        m.save(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(m));
    }

    #[test]
    fn garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MANIFEST_FILE), b"{not json").unwrap();
        assert!(Manifest::load(dir.path()).is_err());
    }
}
