//! The per-connection query handler: owns the connection's [`Session`] and
//! implements pgwire's simple-query, extended-query and COPY handlers on it.
//!
//! ReadyForQuery always carries `Session::transaction_status()`. SQL errors
//! become ErrorResponses and the connection continues. When the connection
//! ends (even mid-COPY or mid-result) [`ConnShared`] is dropped, which aborts
//! an open COPY and closes the session.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use futures::channel::oneshot;
use futures::{Sink, SinkExt, Stream, StreamExt};
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_ready_for_query};
use pgwire::api::results::{DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, DEFAULT_NAME, PgWireConnectionState, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail, CopyInResponse};
use pgwire::messages::data::{DataRow, NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Describe, Execute, Parse, ParseComplete, PortalSuspended, Sync as PgSync,
    TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::simplequery::Query;
use provdb_sql::{CommandTag, CopyIn, Prepared, QueryOutput, Session, SqlError};
use tokio::sync::{Mutex, MutexGuard};

use crate::params::{RawParam, check_format_count, decode_params};
use crate::results::{pg_fields, row_stream};
use crate::types::{
    arrow_type_for_pg, error_info, pg_error, pg_type_for_arrow, protocol_error, wire_txn_status,
};

/// A COPY FROM STDIN in progress.
enum ActiveCopy {
    /// Receiving data.
    Open(Box<CopyIn>),
    /// A CopyData was rejected; the error is reported at CopyDone/CopyFail.
    Failed(SqlError),
}

/// Statements of a simple query string that follow a COPY, to be answered
/// after the copy completes.
struct Pending {
    outputs: std::vec::IntoIter<QueryOutput>,
    error: Option<SqlError>,
}

struct ConnState {
    session: Session,
    copy: Option<ActiveCopy>,
    pending: Option<Pending>,
}

/// State shared by the handlers of one connection.
pub struct ConnShared {
    state: Mutex<ConnState>,
}

impl ConnShared {
    /// Wrap a fresh session.
    pub fn new(session: Session) -> Self {
        ConnShared {
            state: Mutex::new(ConnState {
                session,
                copy: None,
                pending: None,
            }),
        }
    }

    /// Copy the startup packet's parameters into the session. Settings given
    /// with `options=-c name=value` must be valid; others are best effort.
    pub async fn apply_startup_parameters(
        &self,
        params: &BTreeMap<String, String>,
    ) -> PgWireResult<()> {
        let mut st = self.state.lock().await;
        for (name, value) in params {
            match name.as_str() {
                "options" => {
                    for (k, v) in parse_options(value) {
                        st.session.set_variable(&k, &v).map_err(|e| fatal(&e))?;
                    }
                }
                "replication" => {
                    return Err(PgWireError::UserError(Box::new(crate::types::fatal_error(
                        "0A000",
                        "replication connections are not supported",
                    ))));
                }
                "client_encoding" if !is_utf8(value) => {
                    tracing::warn!(encoding = %value, "client asked for a non-UTF8 encoding; using UTF8");
                }
                _ => {
                    if let Err(e) = st.session.set_variable(name, value) {
                        tracing::debug!(%name, error = %e, "startup parameter ignored");
                    }
                }
            }
        }
        Ok(())
    }
}

fn fatal(e: &SqlError) -> PgWireError {
    let mut info = error_info(e);
    info.severity = "FATAL".into();
    PgWireError::UserError(Box::new(info))
}

fn is_utf8(enc: &str) -> bool {
    matches!(
        enc.to_ascii_uppercase().replace(['-', '_'], "").as_str(),
        "UTF8" | "UNICODE" | "AUTO"
    )
}

/// Parse the startup `options` string: `-c name=value`, `-cname=value` and
/// `--name=value`, separated by spaces (`\ ` escapes a space).
pub fn parse_options(s: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
        } else {
            w.strip_prefix("-c")
                .or_else(|| w.strip_prefix("--"))
                .map(str::to_string)
        };
        if let Some((k, v)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_string()));
        }
    }
    out
}

impl Drop for ConnShared {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        if let Some(ActiveCopy::Open(copy)) = st.copy.take() {
            tracing::info!("client went away during COPY; aborting it");
            st.session.copy_abort(copy);
        }
        st.session.close();
    }
}

/// Watches for a CancelRequest aimed at the running statement.
struct CancelWatch(Option<oneshot::Receiver<()>>);

impl CancelWatch {
    async fn start<C: ClientInfo>(client: &C) -> Self {
        match client.session_extensions().get::<Arc<ConnectionHandle>>() {
            Some(h) => CancelWatch(Some(h.start_query().await)),
            None => CancelWatch(None),
        }
    }

    /// Resolves only when a cancel request arrives.
    async fn cancelled(&mut self) {
        let fired = match self.0.as_mut() {
            Some(rx) => rx.await.is_ok(),
            None => false,
        };
        if !fired {
            self.0 = None;
            futures::future::pending::<()>().await;
        }
    }
}

/// How a streamed result ended.
struct Streamed {
    rows: usize,
    suspended: bool,
    error: Option<ErrorInfo>,
}

/// Send up to `max` rows (0 = all) as DataRows. Errors of the result itself
/// are returned in [`Streamed::error`]; errors writing to the client with `Err`.
async fn stream_rows<C, S>(
    client: &mut C,
    rows: &mut S,
    cancel: &mut CancelWatch,
    max: usize,
) -> PgWireResult<Streamed>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    PgWireError: From<C::Error>,
    S: Stream<Item = PgWireResult<DataRow>> + Unpin,
{
    let mut out = Streamed {
        rows: 0,
        suspended: false,
        error: None,
    };
    while max == 0 || out.rows < max {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                out.error = Some(ErrorInfo::new("ERROR".into(), "57014".into(), "canceling statement due to user request".into()));
                return Ok(out);
            }
            next = rows.next() => next,
        };
        match next {
            None => return Ok(out),
            Some(Ok(row)) => {
                client.feed(PgWireBackendMessage::DataRow(row)).await?;
                out.rows += 1;
            }
            Some(Err(e)) => {
                out.error = Some(ErrorInfo::from(e));
                return Ok(out);
            }
        }
    }
    out.suspended = true;
    Ok(out)
}

/// The wire form of a command tag (`INSERT` gets its legacy oid field).
pub fn wire_tag(tag: &CommandTag) -> Tag {
    let t = Tag::new(&tag.command);
    match tag.rows {
        Some(n) if tag.command == "INSERT" => t.with_oid(0).with_rows(n as usize),
        Some(n) => t.with_rows(n as usize),
        None => t,
    }
}

fn row_description(fields: &[FieldInfo]) -> RowDescription {
    RowDescription::new(fields.iter().map(Into::into).collect())
}

async fn send<C>(client: &mut C, msg: PgWireBackendMessage) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    PgWireError: From<C::Error>,
{
    client.feed(msg).await?;
    Ok(())
}

/// A command's NOTICE, if it has one, then its CommandComplete.
async fn send_command<C>(client: &mut C, tag: &CommandTag) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    PgWireError: From<C::Error>,
{
    if let Some(text) = tag.notice {
        let info = ErrorInfo::new("NOTICE".into(), "00000".into(), text.into());
        send(client, PgWireBackendMessage::NoticeResponse(info.into())).await?;
    }
    send(client, complete(wire_tag(tag))).await
}

fn complete(tag: Tag) -> PgWireBackendMessage {
    PgWireBackendMessage::CommandComplete(tag.into())
}

fn error_msg(info: ErrorInfo) -> PgWireBackendMessage {
    PgWireBackendMessage::ErrorResponse(info.into())
}

fn copy_in_response(copy: &CopyIn) -> PgWireBackendMessage {
    let columns = copy.column_count();
    let columns_i16 = i16::try_from(columns).unwrap_or(i16::MAX);
    PgWireBackendMessage::CopyInResponse(CopyInResponse::new(0, columns_i16, vec![0; columns]))
}

/// The connection's handler for simple queries, extended queries and COPY.
pub struct ConnectionHandler {
    conn: Arc<ConnShared>,
    parser: Arc<StatementParser>,
}

impl ConnectionHandler {
    /// A handler for the connection owning `conn`.
    pub fn new(conn: Arc<ConnShared>) -> Self {
        let parser = Arc::new(StatementParser { conn: conn.clone() });
        ConnectionHandler { conn, parser }
    }

    async fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.conn.state.lock().await
    }

    /// A portal's rows failed while streaming: fail the open block.
    async fn mark_failed<C: ClientInfo>(&self, client: &mut C) {
        let mut st = self.lock().await;
        st.session.statement_failed();
        sync_txn_status(client, &st);
    }
}

fn sync_txn_status<C: ClientInfo>(client: &mut C, st: &ConnState) {
    client.set_transaction_status(wire_txn_status(st.session.transaction_status()));
}

/// Send the outputs of a simple query string in order; stops at the first
/// error (PostgreSQL skips the rest of the string). A COPY switches the
/// connection to copy-in mode and parks the remaining outputs.
async fn send_simple_outputs<C>(
    client: &mut C,
    st: &mut ConnState,
    mut outputs: std::vec::IntoIter<QueryOutput>,
    error: Option<SqlError>,
    allow_copy: bool,
) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    PgWireError: From<C::Error>,
{
    let mut cancel = CancelWatch::start(client).await;
    while let Some(out) = outputs.next() {
        match out {
            QueryOutput::Rows { schema, stream } => {
                let fields = pg_fields(&schema, &Format::UnifiedText)?;
                send(
                    client,
                    PgWireBackendMessage::RowDescription(row_description(&fields)),
                )
                .await?;
                let mut rows = Box::pin(row_stream(fields, stream));
                let done = stream_rows(client, &mut rows, &mut cancel, 0).await?;
                if let Some(e) = done.error {
                    st.session.statement_failed();
                    sync_txn_status(client, st);
                    return send(client, error_msg(e)).await;
                }
                send(client, complete(Tag::new("SELECT").with_rows(done.rows))).await?;
            }
            QueryOutput::Command(tag) => send_command(client, &tag).await?,
            QueryOutput::Empty => {
                send(
                    client,
                    PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new()),
                )
                .await?
            }
            QueryOutput::CopyIn(copy) if allow_copy => {
                send(client, copy_in_response(&copy)).await?;
                client.flush().await?;
                client.set_state(PgWireConnectionState::CopyInProgress(false));
                st.copy = Some(ActiveCopy::Open(copy));
                st.pending = Some(Pending { outputs, error });
                return Ok(());
            }
            QueryOutput::CopyIn(copy) => {
                st.session.copy_abort(copy);
                let e = SqlError::feature_not_supported(
                    "only one COPY FROM STDIN per query string is supported",
                );
                return send(client, error_msg(error_info(&e))).await;
            }
        }
    }
    if let Some(e) = error {
        send(client, error_msg(error_info(&e))).await?;
    }
    Ok(())
}

fn is_blank(q: &str) -> bool {
    q.chars().all(|c| c == ';' || c.is_whitespace())
}

#[async_trait]
impl SimpleQueryHandler for ConnectionHandler {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let mut st = self.lock().await;
        if is_blank(&query.query) {
            send(
                client,
                PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new()),
            )
            .await?;
        } else {
            let (outputs, error) = st.session.execute(&query.query).await;
            send_simple_outputs(client, &mut st, outputs.into_iter(), error, true).await?;
        }
        sync_txn_status(client, &st);
        if !matches!(client.state(), PgWireConnectionState::CopyInProgress(_)) {
            client.set_state(PgWireConnectionState::ReadyForQuery);
            let status = client.transaction_status();
            send_ready_for_query(client, status).await?;
        }
        Ok(())
    }

    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(protocol_error(
            "XX000",
            "simple queries are handled by on_query",
        ))
    }
}

/// Parses (prepares) extended-protocol statements with the connection's session.
pub struct StatementParser {
    conn: Arc<ConnShared>,
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let declared: Vec<Option<DataType>> = types
            .iter()
            .map(|t| t.as_ref().and_then(arrow_type_for_pg))
            .collect();
        let mut st = self.conn.state.lock().await;
        match st.session.prepare(sql, &declared).await {
            Ok(p) => Ok(Some(Arc::new(p))),
            Err(e) => Err(pg_error(&e)),
        }
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(stmt.param_types.iter().map(pg_type_for_arrow).collect())
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match &stmt.result_schema {
            Some(schema) => Ok(pg_fields(schema, format.unwrap_or(&Format::UnifiedText))?.to_vec()),
            None => Ok(vec![]),
        }
    }
}

/// Collect a portal's parameters as wire values.
fn raw_params(portal: &Portal<Arc<Prepared>>) -> Result<Vec<RawParam<'_>>, SqlError> {
    check_format_count(
        &portal.parameter_format,
        portal.parameters.len(),
        "parameter",
    )?;
    Ok(portal
        .parameters
        .iter()
        .enumerate()
        .map(|(i, v)| RawParam {
            value: v.as_deref(),
            binary: portal.parameter_format.is_binary(i),
            client_type: portal
                .statement
                .parameter_types
                .get(i)
                .and_then(|t| t.as_ref()),
        })
        .collect())
}

/// Send rows from a started portal, up to `max_rows` (0 = all).
async fn fetch_portal<C>(
    client: &mut C,
    portal: &Portal<Arc<Prepared>>,
    max_rows: usize,
) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    PgWireError: From<C::Error>,
{
    let mut cancel = CancelWatch::start(client).await;
    let state = portal.state();
    let mut st = state.lock().await;
    let PortalExecutionState::Suspended(resp) = &mut *st else {
        return send(client, complete(Tag::new("SELECT").with_rows(0))).await;
    };
    let tag = resp.command_tag().to_string();
    let done = stream_rows(client, resp.data_rows(), &mut cancel, max_rows).await?;
    if let Some(e) = done.error {
        *st = PortalExecutionState::Finished;
        return Err(PgWireError::UserError(Box::new(e)));
    }
    if done.suspended {
        send(
            client,
            PgWireBackendMessage::PortalSuspended(PortalSuspended::new()),
        )
        .await
    } else {
        *st = PortalExecutionState::Finished;
        send(client, complete(Tag::new(&tag).with_rows(done.rows))).await
    }
}

impl ConnectionHandler {
    /// Run a portal's statement for the first time.
    async fn start_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Arc<Prepared>>,
        max_rows: usize,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        PgWireError: From<C::Error>,
    {
        let prepared = &portal.statement.statement;
        let params = raw_params(portal)
            .and_then(|raw| decode_params(&raw, &prepared.param_types))
            .map_err(|e| pg_error(&e))?;
        let mut st = self.lock().await;
        let output = st.session.execute_prepared(prepared, params).await;
        let result = match output.map_err(|e| pg_error(&e))? {
            QueryOutput::Rows { schema, stream } => {
                let fields = pg_fields(&schema, &portal.result_column_format)?;
                portal
                    .start(QueryResponse::new(
                        fields.clone(),
                        row_stream(fields, stream),
                    ))
                    .await;
                drop(st);
                let fetched = fetch_portal(client, portal, max_rows).await;
                if fetched.is_err() {
                    self.mark_failed(client).await;
                }
                return fetched;
            }
            QueryOutput::Command(tag) => send_command(client, &tag).await,
            QueryOutput::Empty => {
                send(
                    client,
                    PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new()),
                )
                .await
            }
            QueryOutput::CopyIn(copy) => {
                send(client, copy_in_response(&copy)).await?;
                client.flush().await?;
                client.set_state(PgWireConnectionState::CopyInProgress(true));
                st.copy = Some(ActiveCopy::Open(copy));
                Ok(())
            }
        };
        *portal.state().lock().await = PortalExecutionState::Finished;
        result
    }
}

#[async_trait]
impl ExtendedQueryHandler for ConnectionHandler {
    type Statement = Arc<Prepared>;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    /// pgwire's `on_parse`, but ParseComplete is buffered, not flushed: it
    /// leaves with the rest of the reply at Sync or Flush, as PostgreSQL's
    /// does (one `sendto` per round trip instead of two or three).
    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME).to_owned();
        match StoredStatement::parse(client, &message, self.query_parser()).await? {
            Some(stmt) => client.portal_store().put_statement(Arc::new(stmt)),
            None => client.portal_store().put_empty_statement(&name),
        }
        send(
            client,
            PgWireBackendMessage::ParseComplete(ParseComplete::new()),
        )
        .await
    }

    /// pgwire's `on_bind`, with BindComplete buffered like ParseComplete.
    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        match client.portal_store().get_statement(statement) {
            Some(Entry::Value(stmt)) => {
                let portal = Portal::try_new(&message, stmt)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) => {
                if !message.parameters.is_empty() {
                    return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                        "ERROR".to_owned(),
                        "08P01".to_owned(),
                        format!(
                            "bind message supplies {} parameters, but prepared statement \"{statement}\" requires 0",
                            message.parameters.len()
                        ),
                    ))));
                }
                let portal = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
                client.portal_store().put_empty_portal(portal);
            }
            None => return Err(PgWireError::StatementNotFound(statement.to_owned())),
        }
        send(
            client,
            PgWireBackendMessage::BindComplete(BindComplete::new()),
        )
        .await
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(p)) => p,
            Some(Entry::Empty) => {
                return send(
                    client,
                    PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new()),
                )
                .await;
            }
            None => return Err(PgWireError::PortalNotFound(name.to_owned())),
        };
        client.set_state(PgWireConnectionState::QueryInProgress);
        let initial = matches!(*portal.state().lock().await, PortalExecutionState::Initial);
        let result = if initial {
            self.start_portal(client, &portal, max_rows).await
        } else {
            let fetched = fetch_portal(client, &portal, max_rows).await;
            if fetched.is_err() {
                self.mark_failed(client).await;
            }
            fetched
        };
        let st = self.lock().await;
        sync_txn_status(client, &st);
        if !matches!(client.state(), PgWireConnectionState::CopyInProgress(_)) {
            client.set_state(PgWireConnectionState::ReadyForQuery);
        }
        result
    }

    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let fields = match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => match client.portal_store().get_statement(name) {
                Some(Entry::Value(stmt)) => {
                    let params = describe_params(&stmt);
                    send(
                        client,
                        PgWireBackendMessage::ParameterDescription(ParameterDescription::new(
                            params,
                        )),
                    )
                    .await?;
                    self.parser.get_result_schema(&stmt.statement, None)?
                }
                Some(Entry::Empty) => {
                    send(
                        client,
                        PgWireBackendMessage::ParameterDescription(ParameterDescription::new(
                            vec![],
                        )),
                    )
                    .await?;
                    vec![]
                }
                None => return Err(PgWireError::StatementNotFound(name.to_owned())),
            },
            TARGET_TYPE_BYTE_PORTAL => match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => self.parser.get_result_schema(
                    &portal.statement.statement,
                    Some(&portal.result_column_format),
                )?,
                Some(Entry::Empty) => vec![],
                None => return Err(PgWireError::PortalNotFound(name.to_owned())),
            },
            other => return Err(PgWireError::InvalidTargetType(other)),
        };
        if fields.is_empty() {
            send(client, PgWireBackendMessage::NoData(NoData::new())).await
        } else {
            send(
                client,
                PgWireBackendMessage::RowDescription(row_description(&fields)),
            )
            .await
        }
    }

    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client.portal_store().rm_portal(DEFAULT_NAME);
        let st = self.lock().await;
        sync_txn_status(client, &st);
        let status = client.transaction_status();
        send_ready_for_query(client, status).await?;
        Ok(())
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        stmt: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let params = stmt
            .statement
            .param_types
            .iter()
            .map(pg_type_for_arrow)
            .collect();
        let fields = self.parser.get_result_schema(&stmt.statement, None)?;
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        _portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(protocol_error(
            "XX000",
            "extended queries are handled by on_execute",
        ))
    }
}

/// Parameter OIDs for Describe: the client's declared types, else ours.
fn describe_params(stmt: &StoredStatement<Arc<Prepared>>) -> Vec<u32> {
    let n = stmt
        .statement
        .param_types
        .len()
        .max(stmt.parameter_types.len());
    (0..n)
        .map(|i| {
            let declared = stmt.parameter_types.get(i).and_then(|t| t.clone());
            let ours = stmt.statement.param_types.get(i).map(pg_type_for_arrow);
            declared.or(ours).unwrap_or(Type::UNKNOWN).oid()
        })
        .collect()
}

#[async_trait]
impl CopyHandler for ConnectionHandler {
    async fn on_copy_data<C>(&self, _client: &mut C, data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut st = self.lock().await;
        let st = &mut *st;
        let failed = match st.copy.as_mut() {
            Some(ActiveCopy::Open(copy)) => copy.feed(&data.data).await.err(),
            Some(ActiveCopy::Failed(_)) => None,
            None => return Err(protocol_error("08P01", "CopyData received outside of COPY")),
        };
        if let Some(err) = failed {
            if let Some(ActiveCopy::Open(copy)) = st.copy.take() {
                st.session.copy_abort(copy);
            }
            st.copy = Some(ActiveCopy::Failed(err));
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut st = self.lock().await;
        let result = match st.copy.take() {
            Some(ActiveCopy::Open(copy)) => st.session.copy_finish(copy).await,
            Some(ActiveCopy::Failed(e)) => Err(e),
            None => Err(SqlError::new("08P01", "CopyDone received outside of COPY")),
        };
        let pending = st.pending.take();
        let outcome = match result {
            Ok(tag) => {
                send(client, complete(wire_tag(&tag))).await?;
                if let Some(p) = pending {
                    send_simple_outputs(client, &mut st, p.outputs, p.error, false).await?;
                }
                Ok(())
            }
            Err(e) => Err(pg_error(&e)),
        };
        sync_txn_status(client, &st);
        outcome
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut st = self.lock().await;
        st.pending = None;
        let err = match st.copy.take() {
            Some(ActiveCopy::Open(copy)) => {
                st.session.copy_abort(copy);
                SqlError::new("57014", format!("COPY from stdin failed: {}", fail.message))
            }
            Some(ActiveCopy::Failed(e)) => e,
            None => SqlError::new("08P01", "CopyFail received outside of COPY"),
        };
        sync_txn_status(client, &st);
        pg_error(&err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_parsed() {
        let o = parse_options("-c search_path=prov,public --application-name=x -cDateStyle=ISO");
        assert_eq!(
            o,
            vec![
                ("search_path".to_string(), "prov,public".to_string()),
                ("application_name".to_string(), "x".to_string()),
                ("DateStyle".to_string(), "ISO".to_string()),
            ]
        );
        assert_eq!(
            parse_options("-c a=b\\ c"),
            vec![("a".to_string(), "b c".to_string())]
        );
        assert!(parse_options("garbage -c").is_empty());
    }

    #[test]
    fn tags_render_like_postgres() {
        let t: pgwire::messages::response::CommandComplete =
            wire_tag(&CommandTag::with_rows("INSERT", 3)).into();
        assert_eq!(t.tag, "INSERT 0 3");
        let t: pgwire::messages::response::CommandComplete =
            wire_tag(&CommandTag::with_rows("COPY", 2)).into();
        assert_eq!(t.tag, "COPY 2");
        let t: pgwire::messages::response::CommandComplete =
            wire_tag(&CommandTag::new("BEGIN")).into();
        assert_eq!(t.tag, "BEGIN");
    }

    #[test]
    fn encodings() {
        assert!(is_utf8("UTF8") && is_utf8("utf-8") && is_utf8("UNICODE"));
        assert!(!is_utf8("LATIN1"));
    }

    #[test]
    fn blank_queries() {
        assert!(is_blank(" ;; "));
        assert!(!is_blank("select 1"));
    }
}
