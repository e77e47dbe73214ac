//! `provdb sql`: run SQL against a data directory in-process (no server) and
//! print the results as tables, the way an embedding Rust program would use
//! provdb as a library.

use std::io::Write;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use futures::TryStreamExt;
use provdb_sql::{Database, DatabaseOptions, QueryOutput, SqlError};

use crate::error::ServerError;
use crate::handler::wire_tag;
use crate::types::datafusion_error;

/// Open the database, run `sql`, print results to `out` and errors to `err`.
/// Returns whether every statement succeeded.
pub async fn run_sql(
    options: DatabaseOptions,
    sql: &str,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<bool, ServerError> {
    let db = Database::open(options).await?;
    let mut session = db.session();
    let (outputs, error) = session.execute(sql).await;
    let mut ok = true;
    for output in outputs {
        if let Err(e) = print_output(&mut session, output, out).await {
            print_error(err, &e);
            ok = false;
            break;
        }
    }
    if let Some(e) = error.filter(|_| ok) {
        print_error(err, &e);
        ok = false;
    }
    session.close();
    db.close().await?;
    Ok(ok)
}

async fn print_output(
    session: &mut provdb_sql::Session,
    output: QueryOutput,
    out: &mut (dyn Write + Send),
) -> Result<(), SqlError> {
    let io = |e: std::io::Error| SqlError::new("58030", format!("cannot write output: {e}"));
    match output {
        QueryOutput::Rows { stream, .. } => {
            let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(datafusion_error)?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            let table =
                pretty_format_batches(&batches).map_err(|e| SqlError::internal(e.to_string()))?;
            writeln!(
                out,
                "{table}\n({rows} row{})",
                if rows == 1 { "" } else { "s" }
            )
            .map_err(io)
        }
        QueryOutput::Command(tag) => {
            if let Some(notice) = tag.notice {
                writeln!(out, "NOTICE:  {notice}").map_err(io)?;
            }
            let msg: pgwire::messages::response::CommandComplete = wire_tag(&tag).into();
            writeln!(out, "{}", msg.tag).map_err(io)
        }
        QueryOutput::CopyIn(copy) => {
            session.copy_abort(copy);
            Err(SqlError::feature_not_supported(
                "COPY FROM STDIN is not available in `provdb sql`; use psql against `provdb serve`",
            ))
        }
        QueryOutput::Empty => Ok(()),
    }
}

fn print_error(err: &mut (dyn Write + Send), e: &SqlError) {
    let _ = writeln!(err, "ERROR:  {} (SQLSTATE {})", e.message, e.code);
    if let Some(d) = &e.detail {
        let _ = writeln!(err, "DETAIL:  {d}");
    }
    if let Some(h) = &e.hint {
        let _ = writeln!(err, "HINT:  {h}");
    }
}
