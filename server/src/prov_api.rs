//! PROV export and import, shared by the HTTP API and the CLI:
//!
//! - `GET /prov/export?execution=TAG | dataflow=TAG | node=ID[&node=ID...]
//!   [&direction=upstream|downstream|both][&depth=N] | all=true
//!   [&format=provn|json|dot|svg]`: the document, with its MIME type;
//! - `POST /prov/import[?name=N][&base=DIR][&allow_dangling=true]`: the
//!   body is a PROV-JSON document; metric side files of yProv4ML documents
//!   are read from `base`, a directory on the server's machine. Replies
//!   with what was stored (JSON). The body is streamed into the parser.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::{Body, HttpBody};
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use provdb_engine::EngineError;
use provdb_engine::prov::{Format, ImportOptions, RawDoc, Scope, read_document};
use provdb_sql::Database;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::http::{engine_error, error_response, json_response};

/// What to export, as given by query parameters or CLI flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportRequest {
    pub execution: Option<String>,
    pub dataflow: Option<String>,
    pub nodes: Vec<String>,
    pub all: bool,
    pub direction: Option<String>,
    pub depth: Option<u32>,
    pub format: Option<String>,
}

impl ExportRequest {
    /// Read `execution`, `dataflow`, `node` (repeatable), `all`,
    /// `direction`, `depth` and `format` from a query string.
    pub fn from_query(query: &str) -> Result<ExportRequest, String> {
        let mut r = ExportRequest::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let v = v.into_owned();
            match k.as_ref() {
                "execution" => r.execution = Some(v),
                "dataflow" => r.dataflow = Some(v),
                "node" | "id" => r.nodes.push(v),
                "all" => r.all = matches!(v.as_str(), "" | "1" | "true" | "yes"),
                "direction" => r.direction = Some(v),
                "depth" | "max_depth" => {
                    r.depth =
                        Some(v.parse().map_err(|_| {
                            format!("depth must be a non-negative integer, got '{v}'")
                        })?)
                }
                "format" => r.format = Some(v),
                other => {
                    return Err(format!(
                        "unknown parameter '{other}' (use execution, dataflow, node, all, direction, depth, format)"
                    ));
                }
            }
        }
        Ok(r)
    }

    /// The scope and format; exactly one scope must be named.
    pub fn resolve(&self) -> Result<(Scope, Format), String> {
        let named = [
            self.execution.is_some(),
            self.dataflow.is_some(),
            !self.nodes.is_empty(),
            self.all,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if named != 1 {
            return Err(
                "name exactly one scope: an execution, a dataflow, one or more nodes, or all"
                    .into(),
            );
        }
        let (kind, ids) = if let Some(e) = &self.execution {
            ("execution", Some(vec![e.clone()]))
        } else if let Some(d) = &self.dataflow {
            ("dataflow", Some(vec![d.clone()]))
        } else if self.all {
            ("all", None)
        } else {
            ("node", Some(self.nodes.clone()))
        };
        if kind != "node" && (self.direction.is_some() || self.depth.is_some()) {
            return Err("direction and depth apply to node exports only".into());
        }
        let scope =
            provdb_sql::prov_export::scope(kind, ids, self.direction.as_deref(), self.depth)?;
        let format =
            Format::parse(self.format.as_deref().unwrap_or("provn")).map_err(|e| e.to_string())?;
        Ok((scope, format))
    }
}

/// `GET /prov/export`.
pub async fn get_export(State(db): State<Arc<Database>>, RawQuery(query): RawQuery) -> Response {
    let request = match ExportRequest::from_query(query.as_deref().unwrap_or("")) {
        Ok(r) => r,
        Err(m) => return error_response(StatusCode::BAD_REQUEST, &m),
    };
    let (scope, format) = match request.resolve() {
        Ok(x) => x,
        Err(m) => return error_response(StatusCode::BAD_REQUEST, &m),
    };
    match db.prov_export(&scope, format).await {
        Ok(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, format.content_type())],
            bytes,
        )
            .into_response(),
        Err(e) => engine_error(e),
    }
}

/// Import options from a query string: `name`, `base`, `allow_dangling`.
pub fn import_options(query: &str) -> Result<ImportOptions, String> {
    let mut o = ImportOptions::default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "name" => o.name = v.into_owned(),
            "base" => o.base_dir = Some(PathBuf::from(v.as_ref())),
            "allow_dangling" => o.allow_dangling = matches!(v.as_ref(), "" | "1" | "true" | "yes"),
            other => {
                return Err(format!(
                    "unknown parameter '{other}' (use name, base, allow_dangling)"
                ));
            }
        }
    }
    Ok(o)
}

/// `POST /prov/import`. The body is streamed into the parser, so it is
/// not subject to `--http-max-body-mb` and a document is never held whole.
pub async fn post_import(
    State(db): State<Arc<Database>>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let opts = match import_options(query.as_deref().unwrap_or("")) {
        Ok(o) => o,
        Err(m) => return error_response(StatusCode::BAD_REQUEST, &m),
    };
    if body.size_hint().exact() == Some(0) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "the body must be a PROV-JSON document",
        );
    }
    let doc = match parse_streamed(body, db.prov_spill_dir()).await {
        Ok(doc) => doc,
        Err(e) => return engine_error(e),
    };
    match db.prov_import_document(doc, &opts).await {
        Ok(report) => {
            tracing::info!(document = %report.document, relations = report.relations, points = report.metric_points, "PROV document imported");
            match serde_json::to_value(&report) {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(e) => engine_error(EngineError::internal(e.to_string())),
            }
        }
        Err(e) => engine_error(e),
    }
}

/// Parse the request body as it arrives. The parser runs on a blocking
/// thread and pulls the body chunk by chunk; this task meanwhile only
/// awaits it, so the connection keeps reading the socket (blocking this
/// task instead would stall the body it is waiting for).
async fn parse_streamed(body: Body, spill_dir: PathBuf) -> Result<RawDoc, EngineError> {
    let chunks = body.into_data_stream().map_err(std::io::Error::other);
    let mut reader = SyncIoBridge::new(StreamReader::new(chunks));
    tokio::task::spawn_blocking(move || {
        let doc = read_document(&mut reader, Some(spill_dir));
        if doc.is_err() {
            // Read the rest, so that a client still sending gets the error
            // reply rather than a connection closed under it.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        }
        doc
    })
    .await
    .map_err(|e| EngineError::internal(format!("the PROV-JSON parser stopped: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_queries_name_one_scope() {
        let r = ExportRequest::from_query("node=a&node=b%20c&direction=both&depth=2&format=json")
            .unwrap();
        assert_eq!(r.nodes, vec!["a", "b c"]);
        let (scope, format) = r.resolve().unwrap();
        assert_eq!(format, Format::Json);
        assert!(matches!(
            scope,
            Scope::Closure {
                max_depth: Some(2),
                ..
            }
        ));
        assert!(
            ExportRequest::from_query("execution=x&all=true")
                .unwrap()
                .resolve()
                .is_err()
        );
        assert!(ExportRequest::from_query("").unwrap().resolve().is_err());
        assert!(
            ExportRequest::from_query("execution=x&depth=1")
                .unwrap()
                .resolve()
                .is_err()
        );
        assert!(
            ExportRequest::from_query("execution=x&format=pdf")
                .unwrap()
                .resolve()
                .is_err()
        );
        assert!(ExportRequest::from_query("bogus=1").is_err());
        let o = import_options("name=a.json&base=/tmp/x&allow_dangling=true").unwrap();
        assert!(o.allow_dangling && o.base_dir == Some(PathBuf::from("/tmp/x")));
    }
}
