//! The HTTP API: DfAnalyzer-compatible provenance ingest, PROV export and
//! import, and health.
//!
//! - `POST /pde/dataflow/json`: register or evolve a dataflow spec; replies
//!   with the spec echoed back, as DfAnalyzer does.
//! - `POST /pde/task/json`: one task message; echoed back.
//! - `POST /pde/task/batch`: many task messages (a JSON array, or NDJSON:
//!   one message per line) stored all-or-nothing in one commit; replies
//!   `{"accepted": n}`.
//! - `GET /prov/export`, `POST /prov/import`: PROV documents out and in
//!   ([`crate::prov_api`]);
//! - `GET /health`: `{"status":"UP"}`.
//!
//! A 200 reply means the data is durable and visible to every SQL session.
//! Errors are JSON `{"error": "...", "status": n}` with a 4xx status naming
//! the problem (5xx only for failures of the server itself). Paths are
//! normalised first: DfAnalyzer's Python client sends `//pde/...`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use provdb_engine::EngineError;
use provdb_sql::Database;
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Layer;
use tower::util::MapRequestLayer;

use crate::error::ServerError;

/// Bind the HTTP API. Binding happens before the server reports ready, so a
/// taken port is a startup error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|e| {
        ServerError::io(
            format!("cannot listen for HTTP on {addr} (use --http-listen or --no-http)"),
            e,
        )
    })
}

/// Serve the HTTP API on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    db: Arc<Database>,
    max_body: usize,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let router = Router::new()
        .route("/health", get(health))
        .route("/pde/dataflow/json", post(post_dataflow))
        .route("/pde/task/json", post(post_task))
        .route("/pde/task/batch", post(post_batch))
        .route("/prov/export", get(crate::prov_api::get_export))
        .route("/prov/import", post(crate::prov_api::post_import))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(db);
    let app = MapRequestLayer::new(normalize_path).layer(router);
    axum::serve(
        listener,
        axum::ServiceExt::<Request<Body>>::into_make_service(app),
    )
    .with_graceful_shutdown(async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    })
    .await
    .map_err(|e| ServerError::io("HTTP server", e))
}

/// Collapse repeated slashes (`//pde/task/json` -> `/pde/task/json`).
fn normalize_path(mut req: Request<Body>) -> Request<Body> {
    let path = req.uri().path();
    if path.contains("//") {
        let mut clean = String::with_capacity(path.len());
        for c in path.chars() {
            if !(c == '/' && clean.ends_with('/')) {
                clean.push(c);
            }
        }
        let rebuilt = match req.uri().query() {
            Some(q) => format!("{clean}?{q}"),
            None => clean,
        };
        if let Ok(uri) = rebuilt.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req
}

async fn health() -> Response {
    json_response(StatusCode::OK, &json!({"status": "UP"}))
}

async fn not_found(req: Request<Body>) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        &format!("no endpoint {} {}", req.method(), req.uri().path()),
    )
}

async fn post_dataflow(State(db): State<Arc<Database>>, body: Bytes) -> Response {
    let value = match parse_json(&body) {
        Ok(v) => v,
        Err(m) => return bad_request(&m),
    };
    match db.dlprov().register_dataflow(&value).await {
        Ok(reg) => {
            tracing::info!(dataflow = %reg.tag, sets = reg.sets.len(), changed = reg.changed, "dataflow registered");
            json_response(StatusCode::OK, &value)
        }
        Err(e) => engine_error(e),
    }
}

async fn post_task(State(db): State<Arc<Database>>, body: Bytes) -> Response {
    let value = match parse_json(&body) {
        Ok(v) => v,
        Err(m) => return bad_request(&m),
    };
    match db.dlprov().ingest(std::slice::from_ref(&value)).await {
        Ok(_) => json_response(StatusCode::OK, &value),
        Err(e) => engine_error(e),
    }
}

async fn post_batch(State(db): State<Arc<Database>>, body: Bytes) -> Response {
    let messages = match parse_batch(&body) {
        Ok(m) => m,
        Err(m) => return bad_request(&m),
    };
    if messages.is_empty() {
        return error_response(StatusCode::BAD_REQUEST, "the batch holds no messages");
    }
    match db.dlprov().ingest(&messages).await {
        Ok(n) => json_response(StatusCode::OK, &json!({"accepted": n})),
        Err(e) => engine_error(e),
    }
}

/// A JSON array of messages, or NDJSON (one message per non-blank line).
/// The error is the message of a 400 reply.
fn parse_batch(body: &[u8]) -> Result<Vec<Json>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    if text.trim_start().starts_with('[') {
        return match serde_json::from_str::<Json>(text) {
            Ok(Json::Array(a)) => Ok(a),
            Ok(_) => Err("expected a JSON array".to_string()),
            Err(e) => Err(format!("malformed JSON: {e}")),
        };
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<Json>(l)
                .map_err(|e| format!("line {}: malformed JSON: {e}", i + 1))
        })
        .collect()
}

/// The error is the message of a 400 reply.
fn parse_json(body: &[u8]) -> Result<Json, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))
}

fn bad_request(msg: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, msg)
}

pub(crate) fn engine_error(e: EngineError) -> Response {
    let status = match &e {
        EngineError::BadRequest(_) => StatusCode::BAD_REQUEST,
        EngineError::NotFound(_) => StatusCode::NOT_FOUND,
        EngineError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        EngineError::Conflict(_) => StatusCode::CONFLICT,
        EngineError::Storage(provdb_storage::StorageError::Closed) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "request failed");
    } else {
        tracing::debug!(error = %e, "request refused");
    }
    error_response(status, &e.to_string())
}

pub(crate) fn error_response(status: StatusCode, msg: &str) -> Response {
    json_response(status, &json!({"error": msg, "status": status.as_u16()}))
}

pub(crate) fn json_response(status: StatusCode, v: &Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_slashes_collapse() {
        let req = Request::builder()
            .uri("//pde//task/json?x=1")
            .body(Body::empty())
            .unwrap();
        assert_eq!(normalize_path(req).uri(), "/pde/task/json?x=1");
    }

    #[test]
    fn batches_are_arrays_or_ndjson() {
        assert_eq!(parse_batch(b"[{\"a\":1},{\"a\":2}]").unwrap().len(), 2);
        assert_eq!(parse_batch(b"{\"a\":1}\n\n{\"a\":2}\n").unwrap().len(), 2);
        let err = parse_batch(b"{\"a\":1}\n{oops\n").unwrap_err();
        assert!(err.starts_with("line 2: malformed JSON"), "{err}");
    }
}
