//! `COPY table [(cols)] FROM STDIN` — parsing PostgreSQL text and CSV COPY data
//! into Arrow record batches, incrementally, as CopyData messages arrive.
//! Rows may span message boundaries (and, in CSV, lines).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::FormatOptions;
use provdb_storage::TableId;

use crate::error::{SqlError, SqlResult};

/// Rows converted to one Arrow batch at a time.
const BATCH_ROWS: usize = 65_536;

/// The two COPY data formats provdb accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFormat {
    /// PostgreSQL text format: tab-delimited, `\N` is NULL, backslash escapes.
    Text { delimiter: u8, null: String },
    /// CSV: `,` by default, double-quote quoting, empty unquoted field is NULL.
    Csv {
        delimiter: u8,
        quote: u8,
        escape: u8,
        null: String,
        header: bool,
    },
}

impl CopyFormat {
    pub fn text() -> Self {
        CopyFormat::Text {
            delimiter: b'\t',
            null: "\\N".into(),
        }
    }
    pub fn csv() -> Self {
        CopyFormat::Csv {
            delimiter: b',',
            quote: b'"',
            escape: b'"',
            null: String::new(),
            header: false,
        }
    }
}

/// An open `COPY ... FROM STDIN`: the server feeds it the bytes of every CopyData
/// message, then hands it back to [`crate::Session::copy_finish`] (or
/// [`crate::Session::copy_abort`]).
#[derive(Debug)]
pub struct CopyIn {
    pub(crate) format: CopyFormat,
    /// Schema of the columns being copied, in the order the data carries them.
    pub(crate) schema: SchemaRef,
    pub(crate) state: CopyState,
    pub(crate) target: CopyTarget,
}

/// Where the parsed rows go.
#[derive(Debug, Clone)]
pub(crate) struct CopyTarget {
    pub table: TableId,
    pub qualified_name: String,
    /// Column names copied (`None` = all, in table order).
    pub columns: Option<Vec<String>>,
}

#[derive(Debug, Default)]
pub(crate) struct CopyState {
    buf: Vec<u8>,
    builders: Vec<StringBuilder>,
    rows_in_builders: usize,
    pub batches: Vec<RecordBatch>,
    pub rows: u64,
    line: u64,
    header_skipped: bool,
    done: bool,
}

impl CopyIn {
    pub(crate) fn new(format: CopyFormat, schema: SchemaRef, target: CopyTarget) -> Self {
        CopyIn {
            format,
            schema,
            state: CopyState::default(),
            target,
        }
    }

    /// Number of columns each data row must carry.
    pub fn column_count(&self) -> usize {
        self.schema.fields().len()
    }

    /// Whether the data is CSV (otherwise PostgreSQL text format).
    pub fn is_csv(&self) -> bool {
        matches!(self.format, CopyFormat::Csv { .. })
    }

    /// Consume one CopyData payload. Errors name the line and column
    /// (SQLSTATE 22P02 / 22P04).
    pub fn push(&mut self, data: &[u8]) -> SqlResult<()> {
        self.state.buf.extend_from_slice(data);
        self.drain_records(false)
    }

    /// After CopyDone: parse what is left and return the batches.
    pub(crate) fn finish(&mut self) -> SqlResult<Vec<RecordBatch>> {
        self.drain_records(true)?;
        self.flush_builders()?;
        Ok(std::mem::take(&mut self.state.batches))
    }

    fn drain_records(&mut self, at_end: bool) -> SqlResult<()> {
        let mut start = 0;
        while let Some((fields, next)) = self.next_record(start, at_end)? {
            start = next;
            let Some(fields) = fields else { continue };
            self.add_row(fields)?;
        }
        self.state.buf.drain(..start);
        Ok(())
    }

    /// Parse one record starting at `start`. Returns `None` when no complete
    /// record is buffered; `Some((None, next))` for a skipped line.
    #[allow(clippy::type_complexity)]
    fn next_record(
        &mut self,
        start: usize,
        at_end: bool,
    ) -> SqlResult<Option<(Option<Vec<Option<String>>>, usize)>> {
        if self.state.done || start >= self.state.buf.len() {
            return Ok(None);
        }
        let parsed = match &self.format {
            CopyFormat::Text { delimiter, null } => {
                parse_text(&self.state.buf[start..], *delimiter, null, at_end)?
            }
            CopyFormat::Csv {
                delimiter,
                quote,
                escape,
                null,
                ..
            } => parse_csv(
                &self.state.buf[start..],
                *delimiter,
                *quote,
                *escape,
                null,
                at_end,
            )?,
        };
        let Some((fields, used)) = parsed else {
            return Ok(None);
        };
        self.state.line += 1;
        let next = start + used;
        // `\.` alone on a line ends the data, in text and CSV alike.
        if fields.len() == 1 && fields[0].as_deref() == Some("\\.") {
            self.state.done = true;
            return Ok(Some((None, next)));
        }
        if let CopyFormat::Csv { header: true, .. } = self.format
            && !self.state.header_skipped
        {
            self.state.header_skipped = true;
            return Ok(Some((None, next)));
        }
        Ok(Some((Some(fields), next)))
    }

    fn add_row(&mut self, fields: Vec<Option<String>>) -> SqlResult<()> {
        let n = self.column_count();
        if fields.len() > n {
            return Err(SqlError::new(
                "22P04",
                format!(
                    "extra data after last expected column (line {})",
                    self.state.line
                ),
            ));
        }
        if fields.len() < n {
            let missing = self.schema.field(fields.len()).name();
            return Err(SqlError::new(
                "22P04",
                format!(
                    "missing data for column \"{missing}\" (line {})",
                    self.state.line
                ),
            ));
        }
        if self.state.builders.is_empty() {
            self.state.builders = (0..n).map(|_| StringBuilder::new()).collect();
        }
        for (b, f) in self.state.builders.iter_mut().zip(fields) {
            b.append_option(f);
        }
        self.state.rows_in_builders += 1;
        self.state.rows += 1;
        if self.state.rows_in_builders >= BATCH_ROWS {
            self.flush_builders()?;
        }
        Ok(())
    }

    /// Convert buffered text fields to one typed batch.
    fn flush_builders(&mut self) -> SqlResult<()> {
        if self.state.rows_in_builders == 0 {
            return Ok(());
        }
        let first_line = self.state.line + 1 - self.state.rows_in_builders as u64;
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.column_count());
        for (i, b) in self.state.builders.iter_mut().enumerate() {
            let text: ArrayRef = Arc::new(b.finish());
            let field = self.schema.field(i);
            cols.push(convert_column(
                &text,
                field.data_type(),
                field.name(),
                first_line,
            )?);
        }
        self.state.rows_in_builders = 0;
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), cols)
            .map_err(|e| SqlError::new("23502", e.to_string()))?;
        self.state.batches.push(batch);
        Ok(())
    }
}

/// Cast a column of text fields to `to`; on failure, name the bad value.
fn convert_column(
    text: &ArrayRef,
    to: &DataType,
    column: &str,
    first_line: u64,
) -> SqlResult<ArrayRef> {
    if to == &DataType::Utf8 {
        return Ok(Arc::clone(text));
    }
    let opts = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let source = if to == &DataType::Boolean {
        normalize_bools(text)
    } else {
        Arc::clone(text)
    };
    cast_with_options(&source, to, &opts).map_err(|_| {
        let strings = text
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>();
        let (row, value) = strings
            .and_then(|s| {
                (0..s.len()).find_map(|i| {
                    let one = s.slice(i, 1);
                    cast_with_options(&one, to, &opts)
                        .is_err()
                        .then(|| (i, s.value(i).to_string()))
                })
            })
            .unwrap_or((0, String::new()));
        SqlError::new(
            "22P02",
            format!(
                "invalid input syntax for type {}: \"{value}\" (COPY line {}, column {column})",
                crate::types::pg_type_name(to),
                first_line + row as u64
            ),
        )
    })
}

/// PostgreSQL spellings of booleans Arrow does not accept as-is.
fn normalize_bools(text: &ArrayRef) -> ArrayRef {
    let Some(s) = text
        .as_any()
        .downcast_ref::<datafusion::arrow::array::StringArray>()
    else {
        return Arc::clone(text);
    };
    let out: datafusion::arrow::array::StringArray = s
        .iter()
        .map(|v| {
            v.map(|v| match v.trim().to_ascii_lowercase().as_str() {
                "t" | "true" | "y" | "yes" | "on" | "1" => "true".to_string(),
                "f" | "false" | "n" | "no" | "off" | "0" => "false".to_string(),
                other => other.to_string(),
            })
        })
        .collect();
    Arc::new(out)
}

type Record = Option<(Vec<Option<String>>, usize)>;

/// One line of PostgreSQL text format. Returns the fields and bytes used.
fn parse_text(buf: &[u8], delim: u8, null: &str, at_end: bool) -> SqlResult<Record> {
    let (line, used) = match buf.iter().position(|&b| b == b'\n') {
        Some(i) => (&buf[..i], i + 1),
        None if at_end && !buf.is_empty() => (buf, buf.len()),
        None => return Ok(None),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line == b"\\." {
        // The end-of-data marker, before any unescaping.
        return Ok(Some((vec![Some("\\.".to_string())], used)));
    }
    let mut fields = Vec::new();
    for raw in line.split(|&b| b == delim) {
        if raw == null.as_bytes() {
            fields.push(None);
        } else {
            fields.push(Some(unescape_text(raw)?));
        }
    }
    Ok(Some((fields, used)))
}

fn unescape_text(raw: &[u8]) -> SqlResult<String> {
    if !raw.contains(&b'\\') {
        return utf8(raw.to_vec());
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c != b'\\' || i + 1 == raw.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let e = raw[i + 1];
        i += 2;
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                let mut k = 0;
                while k < 2 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                    v = v * 8 + (raw[i] - b'0') as u32;
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
            }
            b'x' => {
                let mut v = 0u32;
                let mut k = 0;
                while k < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                    v = v * 16 + (raw[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    utf8(out)
}

fn utf8(bytes: Vec<u8>) -> SqlResult<String> {
    String::from_utf8(bytes).map_err(|_| {
        SqlError::new(
            "22021",
            "invalid byte sequence for encoding \"UTF8\" in COPY data",
        )
    })
}

/// One CSV record (quoted fields may contain newlines).
fn parse_csv(
    buf: &[u8],
    delim: u8,
    quote: u8,
    escape: u8,
    null: &str,
    at_end: bool,
) -> SqlResult<Record> {
    let mut fields = Vec::new();
    let mut field = Vec::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut i = 0;
    while i < buf.len() {
        let c = buf[i];
        if quoted {
            if c == escape && i + 1 < buf.len() && (buf[i + 1] == quote || buf[i + 1] == escape) {
                field.push(buf[i + 1]);
                i += 2;
                continue;
            }
            if c == quote {
                quoted = false;
            } else {
                field.push(c);
            }
            i += 1;
            continue;
        }
        if c == quote {
            quoted = true;
            was_quoted = true;
        } else if c == delim {
            fields.push(csv_field(std::mem::take(&mut field), was_quoted, null)?);
            was_quoted = false;
        } else if c == b'\n' {
            if field.last() == Some(&b'\r') && !was_quoted {
                field.pop();
            }
            fields.push(csv_field(field, was_quoted, null)?);
            return Ok(Some((fields, i + 1)));
        } else {
            field.push(c);
        }
        i += 1;
    }
    if at_end && !buf.is_empty() {
        if quoted {
            return Err(SqlError::new("22P04", "unterminated CSV quoted field"));
        }
        if field.last() == Some(&b'\r') {
            field.pop();
        }
        fields.push(csv_field(field, was_quoted, null)?);
        return Ok(Some((fields, buf.len())));
    }
    Ok(None)
}

fn csv_field(bytes: Vec<u8>, quoted: bool, null: &str) -> SqlResult<Option<String>> {
    if !quoted && bytes == null.as_bytes() {
        return Ok(None);
    }
    utf8(bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn copy(format: CopyFormat) -> CopyIn {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        CopyIn::new(
            format,
            schema,
            CopyTarget {
                table: TableId(1),
                qualified_name: "t".into(),
                columns: None,
            },
        )
    }

    #[test]
    fn text_rows_across_messages() {
        let mut c = copy(CopyFormat::text());
        c.push(b"1\thello\n2\t\\N\n3\twor").unwrap();
        c.push(b"ld\\ttab\n").unwrap();
        let b = c.finish().unwrap();
        assert_eq!(b[0].num_rows(), 3);
        let s = b[0]
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .unwrap();
        assert!(s.is_null(1));
        assert_eq!(s.value(2), "world\ttab");
    }

    #[test]
    fn csv_quotes_and_nulls() {
        let mut c = copy(CopyFormat::Csv {
            delimiter: b',',
            quote: b'"',
            escape: b'"',
            null: String::new(),
            header: true,
        });
        c.push(b"a,b\n1,\"x,\"\"y\"\"\nz\"\n2,\n3,\"\"\n").unwrap();
        let b = c.finish().unwrap();
        let s = b[0]
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .unwrap();
        assert_eq!(s.value(0), "x,\"y\"\nz");
        assert!(s.is_null(1));
        assert_eq!(s.value(2), "");
    }

    #[test]
    fn bad_number_names_line_and_column() {
        let mut c = copy(CopyFormat::text());
        c.push(b"1\ta\nnope\tb\n").unwrap();
        let err = c.finish().unwrap_err();
        assert_eq!(err.code, "22P02");
        assert!(
            err.message.contains("line 2") && err.message.contains("nope"),
            "{}",
            err.message
        );
    }

    #[test]
    fn end_marker_stops_the_data() {
        let mut c = copy(CopyFormat::text());
        c.push(b"1\ta\n\\.\n").unwrap();
        assert_eq!(c.finish().unwrap()[0].num_rows(), 1);
    }

    #[test]
    fn wrong_field_count() {
        let mut c = copy(CopyFormat::text());
        let err = c.push(b"1\n").unwrap_err();
        assert_eq!(err.code, "22P04");
        let mut c = copy(CopyFormat::text());
        assert!(c.push(b"1\ta\tb\n").is_err());
    }
}
