//! `COPY table [(cols)] FROM STDIN` — parsing PostgreSQL text and CSV COPY data
//! into Arrow record batches, incrementally, as CopyData messages arrive.
//! Rows may span message boundaries (and, in CSV, lines).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::FormatOptions;
use provdb_storage::TableId;

use crate::copy_stage::CopyStaging;
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
    /// Whether the rows stream to staged segments (see [`crate::copy_stage`]).
    pub(crate) staging: CopyStaging,
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
    /// The fields of the record being parsed (reused from row to row).
    fields: Vec<Field>,
    builders: Vec<StringBuilder>,
    /// Text bytes per column of the last batch (the next one's capacity).
    text_bytes: Vec<usize>,
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
            staging: CopyStaging::Off,
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
        while let Some((record, next)) = self.next_record(start, at_end)? {
            if record {
                self.add_row(start)?;
            }
            start = next;
        }
        self.state.buf.drain(..start);
        Ok(())
    }

    /// Parse one record starting at `start` into `state.fields`. Returns
    /// `None` when no complete record is buffered, else whether it is a data
    /// row (not a header or the end marker) and where the next one starts.
    fn next_record(&mut self, start: usize, at_end: bool) -> SqlResult<Option<(bool, usize)>> {
        let state = &mut self.state;
        if state.done || start >= state.buf.len() {
            return Ok(None);
        }
        let buf = &state.buf[start..];
        let parsed = match &self.format {
            CopyFormat::Text { delimiter, null } => {
                parse_text(buf, *delimiter, null.as_bytes(), at_end, &mut state.fields)?
            }
            CopyFormat::Csv {
                delimiter,
                quote,
                escape,
                null,
                ..
            } => parse_csv(
                buf,
                CsvBytes {
                    delim: *delimiter,
                    quote: *quote,
                    escape: *escape,
                    null: null.as_bytes(),
                },
                at_end,
                &mut state.fields,
            )?,
        };
        let Some(used) = parsed else {
            return Ok(None);
        };
        state.line += 1;
        let next = start + used;
        // `\.` alone on a line ends the data, in text and CSV alike.
        if let [only] = state.fields.as_slice()
            && only.bytes(buf) == Some(b"\\.")
        {
            state.done = true;
            return Ok(Some((false, next)));
        }
        if let CopyFormat::Csv { header: true, .. } = self.format
            && !state.header_skipped
        {
            state.header_skipped = true;
            return Ok(Some((false, next)));
        }
        Ok(Some((true, next)))
    }

    /// Append the record just parsed (its fields index `buf[start..]`).
    fn add_row(&mut self, start: usize) -> SqlResult<()> {
        let n = self.column_count();
        let state = &mut self.state;
        if state.fields.len() > n {
            return Err(SqlError::new(
                "22P04",
                format!(
                    "extra data after last expected column (line {})",
                    state.line
                ),
            ));
        }
        if state.fields.len() < n {
            let missing = self.schema.field(state.fields.len()).name();
            return Err(SqlError::new(
                "22P04",
                format!(
                    "missing data for column \"{missing}\" (line {})",
                    state.line
                ),
            ));
        }
        if state.builders.is_empty() {
            // Sized like the previous batch: growing a builder by doubling
            // faulted in fresh pages at every step.
            state.builders = (0..n)
                .map(|i| {
                    let bytes = state.text_bytes.get(i).copied().unwrap_or(0);
                    StringBuilder::with_capacity(BATCH_ROWS, bytes + bytes / 8)
                })
                .collect();
        }
        let buf = &state.buf[start..];
        for (b, f) in state.builders.iter_mut().zip(&state.fields) {
            match f {
                Field::Null => b.append_null(),
                Field::Span(s, e) => b.append_value(utf8(&buf[*s..*e])?),
                Field::Owned(text) => b.append_value(text),
            }
        }
        state.rows_in_builders += 1;
        state.rows += 1;
        if state.rows_in_builders >= BATCH_ROWS {
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
        self.state.text_bytes.clear();
        for (i, mut b) in std::mem::take(&mut self.state.builders)
            .into_iter()
            .enumerate()
        {
            self.state.text_bytes.push(b.values_slice().len());
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

/// One field of the record being parsed: a byte range of the record's input
/// when it needs no unescaping (most fields: nothing is copied), else the
/// unescaped text.
#[derive(Debug)]
pub(crate) enum Field {
    Null,
    Span(usize, usize),
    Owned(String),
}

impl Field {
    /// The field's bytes; `None` for NULL.
    fn bytes<'a>(&'a self, buf: &'a [u8]) -> Option<&'a [u8]> {
        match self {
            Field::Null => None,
            Field::Span(s, e) => Some(&buf[*s..*e]),
            Field::Owned(text) => Some(text.as_bytes()),
        }
    }
}

/// One line of PostgreSQL text format into `fields`. Returns the bytes used.
fn parse_text(
    buf: &[u8],
    delim: u8,
    null: &[u8],
    at_end: bool,
    fields: &mut Vec<Field>,
) -> SqlResult<Option<usize>> {
    let (line, used) = match memchr::memchr(b'\n', buf) {
        Some(i) => (&buf[..i], i + 1),
        None if at_end && !buf.is_empty() => (buf, buf.len()),
        None => return Ok(None),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    fields.clear();
    if line == b"\\." {
        // The end-of-data marker, before any unescaping.
        fields.push(Field::Span(0, 2));
        return Ok(Some(used));
    }
    let mut s = 0;
    loop {
        let e = memchr::memchr(delim, &line[s..]).map_or(line.len(), |p| s + p);
        let raw = &line[s..e];
        fields.push(if is_null(raw, null) {
            Field::Null
        } else if raw.contains(&b'\\') {
            Field::Owned(unescape_text(raw)?)
        } else {
            Field::Span(s, e)
        });
        if e == line.len() {
            return Ok(Some(used));
        }
        s = e + 1;
    }
}

fn unescape_text(raw: &[u8]) -> SqlResult<String> {
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
    String::from_utf8(out).map_err(|_| invalid_utf8())
}

fn utf8(bytes: &[u8]) -> SqlResult<&str> {
    std::str::from_utf8(bytes).map_err(|_| invalid_utf8())
}

fn invalid_utf8() -> SqlError {
    SqlError::new(
        "22021",
        "invalid byte sequence for encoding \"UTF8\" in COPY data",
    )
}

/// The bytes that structure CSV data.
struct CsvBytes<'a> {
    delim: u8,
    quote: u8,
    escape: u8,
    null: &'a [u8],
}

/// One CSV record into `fields` (quoted fields may contain newlines).
/// Returns the bytes used.
fn parse_csv(
    buf: &[u8],
    csv: CsvBytes<'_>,
    at_end: bool,
    fields: &mut Vec<Field>,
) -> SqlResult<Option<usize>> {
    fields.clear();
    let mut start = 0;
    // The text of a field that had quotes, unquoted as it is read.
    let mut quoted_text: Option<Vec<u8>> = None;
    let mut in_quotes = false;
    let mut i = 0;
    while i < buf.len() {
        // Skip to the next byte that means something: runs of plain bytes
        // are found with memchr and copied (inside quotes) or left in place.
        let special = if in_quotes {
            memchr::memchr2(csv.quote, csv.escape, &buf[i..])
        } else {
            memchr::memchr3(csv.delim, csv.quote, b'\n', &buf[i..])
        };
        let run = special.unwrap_or(buf.len() - i);
        if let Some(text) = quoted_text.as_mut() {
            text.extend_from_slice(&buf[i..i + run]);
        }
        i += run;
        if i == buf.len() {
            break;
        }
        let c = buf[i];
        if in_quotes {
            let text = quoted_text.get_or_insert_with(Vec::new);
            if c == csv.escape && i + 1 == buf.len() && !at_end {
                return Ok(None); // an escape or a closing quote: the next byte decides
            }
            if c == csv.escape
                && i + 1 < buf.len()
                && (buf[i + 1] == csv.quote || buf[i + 1] == csv.escape)
            {
                text.push(buf[i + 1]);
                i += 2;
                continue;
            }
            if c == csv.quote {
                in_quotes = false;
            } else {
                text.push(c);
            }
        } else if c == csv.quote {
            in_quotes = true;
            quoted_text.get_or_insert_with(|| buf[start..i].to_vec());
        } else if c == csv.delim {
            fields.push(csv_field(buf, start, i, quoted_text.take(), csv.null)?);
            start = i + 1;
        } else if c == b'\n' {
            let end = strip_cr(buf, start, i, &mut quoted_text);
            fields.push(csv_field(buf, start, end, quoted_text, csv.null)?);
            return Ok(Some(i + 1));
        }
        i += 1;
    }
    if !at_end || buf.is_empty() {
        return Ok(None);
    }
    if in_quotes {
        return Err(SqlError::new("22P04", "unterminated CSV quoted field"));
    }
    let end = strip_cr(buf, start, buf.len(), &mut quoted_text);
    fields.push(csv_field(buf, start, end, quoted_text, csv.null)?);
    Ok(Some(buf.len()))
}

/// Drop the `\r` of a `\r\n` line end from the last field (`buf[start..end]`,
/// or its quoted text: a `\r` just before the end is outside the quotes).
fn strip_cr(buf: &[u8], start: usize, end: usize, quoted_text: &mut Option<Vec<u8>>) -> usize {
    if end == start || buf[end - 1] != b'\r' {
        return end;
    }
    match quoted_text {
        Some(text) => {
            text.pop();
            end
        }
        None => end - 1,
    }
}

/// Whether an unquoted field is the NULL string. Slice equality calls the
/// C library's `memcmp` whenever the lengths match, even for two empty
/// slices: with CSV's empty NULL string, once per empty field, which was
/// 15% of the server's samples in a COPY of DLProv's `task` table.
fn is_null(raw: &[u8], null: &[u8]) -> bool {
    raw.len() == null.len() && (null.is_empty() || raw == null)
}

/// A CSV field: NULL when unquoted and spelled as the NULL string.
fn csv_field(
    buf: &[u8],
    start: usize,
    end: usize,
    quoted_text: Option<Vec<u8>>,
    null: &[u8],
) -> SqlResult<Field> {
    match quoted_text {
        Some(text) => Ok(Field::Owned(
            String::from_utf8(text).map_err(|_| invalid_utf8())?,
        )),
        None if is_null(&buf[start..end], null) => Ok(Field::Null),
        None => Ok(Field::Span(start, end)),
    }
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

    /// The second (text) column of a batch copied by [`copy`].
    fn text_column(b: &RecordBatch) -> &datafusion::arrow::array::StringArray {
        b.column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .unwrap()
    }

    #[test]
    fn text_rows_across_messages() {
        let mut c = copy(CopyFormat::text());
        c.push(b"1\thello\n2\t\\N\n3\twor").unwrap();
        c.push(b"ld\\ttab\n").unwrap();
        let b = c.finish().unwrap();
        assert_eq!(b[0].num_rows(), 3);
        let s = text_column(&b[0]);
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
        let s = text_column(&b[0]);
        assert_eq!(s.value(0), "x,\"y\"\nz");
        assert!(s.is_null(1));
        assert_eq!(s.value(2), "");
    }

    #[test]
    fn a_null_string_of_its_own_matches_whole_fields_only() {
        let mut c = copy(CopyFormat::Csv {
            delimiter: b',',
            quote: b'"',
            escape: b'"',
            null: "NA".into(),
            header: false,
        });
        c.push(b"1,NA\n2,\n3,NAN\n4,\"NA\"\n5,N\n").unwrap();
        let b = c.finish().unwrap();
        let s = text_column(&b[0]);
        let got: Vec<Option<&str>> = s.iter().collect();
        assert_eq!(got, [None, Some(""), Some("NAN"), Some("NA"), Some("N")]);
        // Text format: `\N` by default; a longer or shorter field is text.
        let mut t = copy(CopyFormat::text());
        t.push(b"1\t\\N\n2\t\\NN\n3\t\n").unwrap();
        let b = t.finish().unwrap();
        let got: Vec<Option<&str>> = text_column(&b[0]).iter().collect();
        assert_eq!(got, [None, Some("NN"), Some("")]);
    }

    #[test]
    fn csv_doubled_quote_split_across_messages() {
        let mut c = copy(CopyFormat::csv());
        c.push(b"1,\"a\"").unwrap();
        c.push(b"\"b\"\r\n2,x\r\n").unwrap();
        let b = c.finish().unwrap();
        let s = text_column(&b[0]);
        assert_eq!((s.value(0), s.value(1)), ("a\"b", "x"));
    }

    #[test]
    fn invalid_utf8_is_22021() {
        let mut c = copy(CopyFormat::text());
        let err = c.push(b"1\t\xff\n").unwrap_err();
        assert_eq!(err.code, "22021");
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
