//! Where the parsed metric series of a document being imported wait until
//! their points are written.
//!
//! A document's series are all parsed before any is written: names resolve
//! and dangling references are checked over the whole document first. Up to
//! `MEMORY_POINTS` points stay in memory; past that, each series is
//! written to an unnamed temporary file (in the data directory's `tmp/` when
//! the caller names one) and read back alone when its points are written.
//! So the points of a large document are never all in memory at once. The
//! file has no name and disappears with the [`Spill`], whatever the outcome
//! of the import.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::series::InlineSeries;

/// Points of a document kept in memory (32 bytes each) before series go to
/// the spill file; a thousand in unit tests, so that they spill.
const MEMORY_POINTS: usize = if cfg!(test) { 1_000 } else { 1 << 20 };

/// The spill file of one document.
#[derive(Debug, Default)]
pub struct Spill {
    dir: Option<PathBuf>,
    file: Option<File>,
    end: u64,
    in_memory: usize,
}

/// A parsed series: in memory, or in the spill file.
#[derive(Debug)]
pub enum Parked {
    Memory(InlineSeries),
    /// At byte `at` of the spill file: the epochs, values and timestamps
    /// (8 bytes each, a missing timestamp as `i64::MIN`), `lens` of each.
    File {
        at: u64,
        lens: [usize; 3],
    },
}

impl Default for Parked {
    fn default() -> Self {
        Parked::Memory(InlineSeries::default())
    }
}

impl Spill {
    /// A spill whose file, if one is needed, goes in `dir` (created then).
    pub fn new(dir: Option<PathBuf>) -> Self {
        Spill {
            dir,
            ..Default::default()
        }
    }

    /// Keep `series` until [`Spill::load`].
    pub fn park(&mut self, series: InlineSeries) -> std::io::Result<Parked> {
        if self.in_memory + series.len() <= MEMORY_POINTS {
            self.in_memory += series.len();
            return Ok(Parked::Memory(series));
        }
        let lens = [
            series.epochs.len(),
            series.values.len(),
            series.timestamps_ms.len(),
        ];
        let mut bytes = Vec::with_capacity(8 * lens.iter().sum::<usize>());
        bytes.extend(series.epochs.iter().flat_map(|v| v.to_le_bytes()));
        bytes.extend(series.values.iter().flat_map(|v| v.to_le_bytes()));
        bytes.extend(
            series
                .timestamps_ms
                .iter()
                .flat_map(|t| t.unwrap_or(i64::MIN).to_le_bytes()),
        );
        drop(series);
        let at = self.end;
        let file = self.file()?;
        file.seek(SeekFrom::Start(at))?;
        file.write_all(&bytes)?;
        self.end += bytes.len() as u64;
        Ok(Parked::File { at, lens })
    }

    /// The series `parked` holds.
    pub fn load(&mut self, parked: Parked) -> std::io::Result<InlineSeries> {
        let (at, lens) = match parked {
            Parked::Memory(series) => return Ok(series),
            Parked::File { at, lens } => (at, lens),
        };
        let mut bytes = vec![0u8; 8 * lens.iter().sum::<usize>()];
        let file = self.file()?;
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut bytes)?;
        let mut words = bytes
            .chunks_exact(8)
            .map(|c| <[u8; 8]>::try_from(c).map_or(0, i64::from_le_bytes));
        let epochs = words.by_ref().take(lens[0]).collect();
        let values = words
            .by_ref()
            .take(lens[1])
            .map(|w| f64::from_bits(w as u64))
            .collect();
        let timestamps_ms = words
            .take(lens[2])
            .map(|w| (w != i64::MIN).then_some(w))
            .collect();
        Ok(InlineSeries {
            epochs,
            values,
            timestamps_ms,
        })
    }

    /// The spill file, created (unnamed) at first use.
    fn file(&mut self) -> std::io::Result<&mut File> {
        let file = match self.file.take() {
            Some(file) => file,
            None => match &self.dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir)?;
                    tempfile::tempfile_in(dir)?
                }
                None => tempfile::tempfile()?,
            },
        };
        Ok(self.file.insert(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: usize, stamps: bool) -> InlineSeries {
        InlineSeries {
            epochs: (0..n as i64).map(|i| i / 3).collect(),
            values: (0..n).map(|i| 1.0 / (i as f64 + 0.5)).collect(),
            timestamps_ms: (0..n as i64)
                .map(|i| stamps.then_some(1_700_000_000_000 + i))
                .collect(),
        }
    }

    #[test]
    fn series_past_the_memory_budget_go_to_the_file_and_come_back_equal() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spill = Spill::new(Some(dir.path().join("tmp")));
        let small = spill.park(series(600, true)).expect("park");
        assert!(matches!(small, Parked::Memory(_)));
        let big = spill.park(series(700, true)).expect("park");
        assert!(matches!(big, Parked::File { .. }));
        let unstamped = spill.park(series(450, false)).expect("park");
        assert!(matches!(unstamped, Parked::File { .. }));
        let fits = spill.park(series(5, true)).expect("park");
        assert!(matches!(fits, Parked::Memory(_)), "still within the budget");
        // the file has no name: nothing is left in the directory
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp"))
                .expect("ls")
                .count(),
            0
        );
        assert_eq!(spill.load(unstamped).expect("load"), series(450, false));
        assert_eq!(spill.load(fits).expect("load"), series(5, true));
        assert_eq!(spill.load(big).expect("load"), series(700, true));
        assert_eq!(spill.load(small).expect("load"), series(600, true));
    }
}
