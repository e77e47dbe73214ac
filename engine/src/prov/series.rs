//! Metric series of yProv4ML documents: the inline list strings of the
//! oldest layout (`"[np.float64(0.5), ...]"`) and the CSV side files of the
//! newer ones, parsed into columns.

use std::path::{Path, PathBuf};

/// Which list attribute of an inline metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKey {
    Epoch,
    Value,
    Timestamp,
}

/// Whether `key` is one of the inline metric list attributes.
pub fn is_list_key(key: &str) -> Option<ListKey> {
    let local = key.rsplit(':').next().unwrap_or(key);
    match local {
        "metric_epoch_list" => Some(ListKey::Epoch),
        "metric_value_list" => Some(ListKey::Value),
        "metric_timestamp_list" => Some(ListKey::Timestamp),
        _ => None,
    }
}

/// One metric series as columns: epoch (or step), value, and timestamp in
/// milliseconds since the epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InlineSeries {
    pub epochs: Vec<i64>,
    pub values: Vec<f64>,
    pub timestamps_ms: Vec<Option<i64>>,
}

impl InlineSeries {
    pub fn set(&mut self, which: ListKey, text: &str) -> Result<(), String> {
        let items = split_list(text)?;
        match which {
            ListKey::Epoch => {
                self.epochs = items
                    .iter()
                    .map(|s| parse_int(s))
                    .collect::<Result<_, _>>()?
            }
            ListKey::Value => {
                self.values = items
                    .iter()
                    .map(|s| parse_float(s))
                    .collect::<Result<_, _>>()?
            }
            ListKey::Timestamp => {
                self.timestamps_ms = items
                    .iter()
                    .map(|s| parse_int(s).map(Some))
                    .collect::<Result<_, _>>()?
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Check the three lists agree in length (missing epochs or timestamps
    /// are allowed and read as NULL / the position).
    pub fn check(&mut self) -> Result<(), String> {
        let n = self.values.len();
        if self.epochs.is_empty() {
            self.epochs = (0..n as i64).collect();
        }
        if self.timestamps_ms.is_empty() {
            self.timestamps_ms = vec![None; n];
        }
        if self.epochs.len() != n || self.timestamps_ms.len() != n {
            return Err(format!(
                "metric lists differ in length: {} epochs, {n} values, {} timestamps",
                self.epochs.len(),
                self.timestamps_ms.len()
            ));
        }
        Ok(())
    }

    /// A stable 64-bit digest (FNV-1a) of the first `n` points.
    pub fn digest(&self, n: usize) -> u64 {
        let mut h: u64 = 0xcbf29ce484222325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= *b as u64;
                h = h.wrapping_mul(0x100000001b3);
            }
        };
        for i in 0..n.min(self.len()) {
            eat(&self.epochs[i].to_le_bytes());
            eat(&self.values[i].to_bits().to_le_bytes());
            eat(&self.timestamps_ms[i].unwrap_or(i64::MIN).to_le_bytes());
        }
        h
    }
}

/// Split a Python list repr into its top-level items.
fn split_list(text: &str) -> Result<Vec<&str>, String> {
    let t = text.trim();
    let inner = t
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("expected a list like [1, 2], got '{}'", preview(t)))?;
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in inner.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                items.push(inner[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = inner[start..].trim();
    if !last.is_empty() {
        items.push(last);
    }
    Ok(items)
}

fn preview(s: &str) -> &str {
    let end = s.char_indices().nth(40).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

/// The literal inside wrappers such as `np.float64(0.5)` or
/// `tensor(0.5, device='cuda:0')`.
fn unwrap_call(s: &str) -> &str {
    let s = s.trim();
    match (s.find('('), s.ends_with(')')) {
        (Some(open), true) => {
            let inner = &s[open + 1..s.len() - 1];
            inner.split(',').next().unwrap_or(inner).trim()
        }
        _ => s,
    }
}

/// A Python-ish float: `0.5`, `np.float64(0.5)`, `nan`, `inf`, `-inf`.
pub fn parse_float(s: &str) -> Result<f64, String> {
    let v = unwrap_call(s).trim_matches(|c| c == '\'' || c == '"');
    v.parse::<f64>()
        .map_err(|_| format!("'{}' is not a number", preview(s)))
}

/// A Python-ish integer (`3`, `np.int64(3)`, `3.0`).
pub fn parse_int(s: &str) -> Result<i64, String> {
    let v = unwrap_call(s);
    v.parse::<i64>()
        .or_else(|_| match v.parse::<f64>() {
            Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
            _ => Err(()),
        })
        .map_err(|_| format!("'{}' is not an integer", preview(s)))
}

/// Parse a metric CSV side file: a header line (`epoch,value,timestep` or
/// yProv4ML 2's `<name>,<context>,<source>`), then `epoch,value,ms` rows.
pub fn parse_csv(text: &str) -> Result<InlineSeries, String> {
    let mut s = InlineSeries::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if n == 0 && fields.first().is_some_and(|f| parse_int(f).is_err()) {
            continue; // header
        }
        if fields.len() < 2 {
            return Err(format!("line {}: expected epoch,value[,timestamp]", n + 1));
        }
        s.epochs
            .push(parse_int(fields[0]).map_err(|e| format!("line {}: {e}", n + 1))?);
        s.values
            .push(parse_float(fields[1]).map_err(|e| format!("line {}: {e}", n + 1))?);
        let ts = match fields.get(2).filter(|f| !f.is_empty()) {
            Some(f) => Some(parse_int(f).map_err(|e| format!("line {}: {e}", n + 1))?),
            None => None,
        };
        s.timestamps_ms.push(ts);
    }
    Ok(s)
}

/// Find a side file named in a document: as written (absolute), relative to
/// the document's directory or any of its ancestors (yProv4ML writes paths
/// relative to the training script's working directory), or by its last
/// components below the document's directory.
pub fn locate(base: &Path, written: &str) -> Result<PathBuf, Vec<PathBuf>> {
    let p = Path::new(written);
    let mut tried = Vec::new();
    if p.is_absolute() {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        tried.push(p.to_path_buf());
    } else {
        for dir in base.ancestors() {
            let c = dir.join(p);
            if c.is_file() {
                return Ok(c);
            }
            tried.push(c);
        }
    }
    let comps: Vec<_> = p.components().collect();
    for k in (1..comps.len()).rev() {
        let tail: PathBuf = comps[comps.len() - k..].iter().collect();
        let c = base.join(&tail);
        if c.is_file() {
            return Ok(c);
        }
    }
    Err(tried)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_lists_parse() {
        let mut s = InlineSeries::default();
        s.set(
            ListKey::Value,
            "[np.float64(1.0), np.float64(0.5), nan, tensor(0.25, device='cuda:0')]",
        )
        .unwrap();
        s.set(ListKey::Epoch, "[0, 0, 1, 1]").unwrap();
        s.set(
            ListKey::Timestamp,
            "[1795286445291, 1795286445291, 1795286445292, 1795286445293]",
        )
        .unwrap();
        s.check().unwrap();
        assert_eq!(s.values[0], 1.0);
        assert!(s.values[2].is_nan());
        assert_eq!(s.values[3], 0.25);
        assert_eq!(s.epochs, vec![0, 0, 1, 1]);
        assert!(
            InlineSeries::default()
                .set(ListKey::Value, "not a list")
                .is_err()
        );
        assert!(
            InlineSeries::default()
                .set(ListKey::Value, "[1, x]")
                .is_err()
        );
    }

    #[test]
    fn csv_with_either_header() {
        let c =
            parse_csv("epoch,value,timestep\n0,1.0,1795286428387\n1,0.5,1795286428388\n").unwrap();
        assert_eq!(c.values, vec![1.0, 0.5]);
        let b = parse_csv("loss,Context.TRAINING,LoggingItemKind.METRIC\n0,0.3,17\n").unwrap();
        assert_eq!(b.epochs, vec![0]);
        assert!(parse_csv("epoch,value\n0,abc\n").is_err());
    }
}
