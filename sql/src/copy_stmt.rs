//! Turning a `COPY ... FROM STDIN` statement into an open [`CopyIn`].

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget as SqlCopyTarget,
    Statement,
};

use crate::copy::{CopyFormat, CopyIn, CopyTarget};
use crate::copy_stage::CopyStaging;
use crate::ddl::ident;
use crate::error::{SqlError, SqlResult};
use crate::session::{Session, TxnStatus};

pub(crate) fn start(session: &Session, stmt: &Statement) -> SqlResult<CopyIn> {
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    } = stmt
    else {
        return Err(SqlError::internal("not a COPY"));
    };
    if *to {
        return Err(SqlError::feature_not_supported(
            "COPY ... TO is not supported yet; use SELECT",
        ));
    }
    if !matches!(target, SqlCopyTarget::Stdin) {
        return Err(SqlError::new(
            "42501",
            "COPY FROM a server file is not allowed; use COPY ... FROM STDIN (psql: \\copy)",
        ));
    }
    let CopySource::Table {
        table_name,
        columns,
    } = source
    else {
        return Err(SqlError::syntax("COPY FROM needs a table"));
    };
    let (schema, name) = session.resolve_relation(table_name)?;
    let def = session
        .db
        .shared
        .storage
        .table_by_name(&schema, &name)
        .ok_or_else(|| SqlError::new("42P01", format!("relation \"{name}\" does not exist")))?;
    let format = copy_format(options, legacy_options)?;
    let (copy_schema, cols) = if columns.is_empty() {
        (def.schema_ref(), None)
    } else {
        let mut fields = Vec::new();
        let mut names = Vec::new();
        for c in columns {
            let n = ident(c);
            let f = def.schema.field_with_name(&n).map_err(|_| {
                SqlError::new(
                    "42703",
                    format!("column \"{n}\" of relation \"{name}\" does not exist"),
                )
            })?;
            fields.push(f.clone().with_nullable(true));
            names.push(n);
        }
        (Arc::new(Schema::new(fields)), Some(names))
    };
    // Staged segments need every column (defaults are applied by the
    // INSERT a column list goes through), a table without a primary key
    // (its key index is kept from the rows a commit logs) and no
    // transaction block (whose own reads must see its rows before the
    // commit). Whether the lineage index reads the table's rows is asked
    // only if the COPY grows large enough to stage.
    let staging = if cols.is_none()
        && def.primary_key.is_empty()
        && session.transaction_status() == TxnStatus::Idle
    {
        CopyStaging::Ready {
            storage: session.db.shared.storage.clone(),
            def: def.clone(),
        }
    } else {
        CopyStaging::Off
    };
    let target = CopyTarget {
        table: def.id,
        qualified_name: def.qualified_name(),
        columns: cols,
    };
    let mut copy = CopyIn::new(format, copy_schema, target);
    copy.staging = staging;
    Ok(copy)
}

fn copy_format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> SqlResult<CopyFormat> {
    let mut csv = false;
    let mut delimiter = None;
    let mut null = None;
    let mut header = false;
    let mut quote = b'"';
    let mut escape = None;
    for o in options {
        match o {
            CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                "csv" => csv = true,
                "text" => csv = false,
                other => {
                    return Err(SqlError::feature_not_supported(format!(
                        "COPY format \"{other}\" is not supported"
                    )));
                }
            },
            CopyOption::Delimiter(c) => delimiter = Some(byte(*c)?),
            CopyOption::Null(s) => null = Some(s.clone()),
            CopyOption::Header(h) => header = *h,
            CopyOption::Quote(c) => quote = byte(*c)?,
            CopyOption::Escape(c) => escape = Some(byte(*c)?),
            CopyOption::Encoding(e)
                if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
            other => {
                return Err(SqlError::feature_not_supported(format!(
                    "COPY option {other} is not supported"
                )));
            }
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Csv(csv_opts) => {
                csv = true;
                for c in csv_opts {
                    match c {
                        CopyLegacyCsvOption::Header => header = true,
                        CopyLegacyCsvOption::Quote(q) => quote = byte(*q)?,
                        CopyLegacyCsvOption::Escape(e) => escape = Some(byte(*e)?),
                        _ => {}
                    }
                }
            }
            CopyLegacyOption::Delimiter(c) => delimiter = Some(byte(*c)?),
            CopyLegacyOption::Null(s) => null = Some(s.clone()),
            other => {
                return Err(SqlError::feature_not_supported(format!(
                    "COPY option {other} is not supported"
                )));
            }
        }
    }
    Ok(if csv {
        CopyFormat::Csv {
            delimiter: delimiter.unwrap_or(b','),
            quote,
            escape: escape.unwrap_or(quote),
            null: null.unwrap_or_default(),
            header,
        }
    } else {
        if header {
            return Err(SqlError::feature_not_supported(
                "HEADER is only supported with FORMAT csv",
            ));
        }
        CopyFormat::Text {
            delimiter: delimiter.unwrap_or(b'\t'),
            null: null.unwrap_or_else(|| "\\N".into()),
        }
    })
}

fn byte(c: char) -> SqlResult<u8> {
    if c.is_ascii() {
        Ok(c as u8)
    } else {
        Err(SqlError::invalid_param(
            "COPY delimiter and quote must be one ASCII character",
        ))
    }
}
