//! DLProv / DfAnalyzer compatibility: the ingestion semantics behind
//! `POST /pde/dataflow/json` and `POST /pde/task/json`, as a Rust API.
//!
//! - [`spec`] parses dataflow specifications and merges re-posted ones;
//! - [`message`] parses task messages;
//! - [`schema`] is the relational layout (catalog in `public`, `ds_<set>`
//!   tables and `<set>` views per dataflow schema);
//! - [`register`] turns a spec into catalog rows and DDL;
//! - [`state`] holds dataflow records and the upsert caches;
//! - [`ingest`] applies task messages to a [`round::Round`], which becomes
//!   one commit.
//!
//! All writes go through one worker task. It takes every request waiting,
//! applies them in arrival order (each request all-or-nothing), and commits
//! the round at once: one WAL group commit for many concurrent clients.
//! A request's reply is sent after its round is durable and visible.

pub mod ingest;
pub mod message;
pub mod register;
pub mod round;
pub mod schema;
pub mod spec;
pub mod state;

use std::collections::HashMap;
use std::sync::Arc;

use provdb_storage::Storage;
use serde_json::Value as Json;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use self::ingest::Ctx;
use self::message::TaskMessage;
use self::round::{Round, RoundTables};
use self::schema::Catalog;
use self::spec::DataflowSpec;
use self::state::{Caches, DataflowRecord};
use crate::error::{EngineError, Result};
use crate::sequence::Sequences;

/// Jobs taken into one round at most.
const MAX_JOBS_PER_ROUND: usize = 1024;

/// What registering a dataflow did.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub tag: String,
    pub id: i64,
    /// Sets (tables) in the dataflow after the merge.
    pub sets: Vec<String>,
    /// Whether anything changed (false for an identical re-post).
    pub changed: bool,
}

enum Job {
    Spec {
        spec: DataflowSpec,
        reply: oneshot::Sender<Result<Registered>>,
    },
    Tasks {
        messages: Vec<TaskMessage>,
        reply: oneshot::Sender<Result<usize>>,
    },
}

/// The ingest handle. Cheap to clone.
#[derive(Clone)]
pub struct Dlprov {
    tx: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Dlprov {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dlprov").finish_non_exhaustive()
    }
}

impl Dlprov {
    /// Start the ingest worker over `storage`.
    pub fn start(storage: Storage, sequences: Arc<Sequences>) -> Dlprov {
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            storage,
            sequences,
            catalog: None,
            dataflows: None,
            caches: Caches::default(),
        };
        tokio::spawn(worker.run(rx));
        Dlprov { tx }
    }

    /// Register (or re-register, evolving) a dataflow from its JSON spec.
    pub async fn register_dataflow(&self, body: &Json) -> Result<Registered> {
        let spec = DataflowSpec::parse(body)?;
        let (reply, rx) = oneshot::channel();
        self.send(Job::Spec { spec, reply })?;
        rx.await.map_err(|_| stopped())?
    }

    /// Ingest task messages atomically: all are stored or none. Returns how
    /// many were applied once they are durable and visible.
    pub async fn ingest(&self, bodies: &[Json]) -> Result<usize> {
        let messages = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                TaskMessage::parse(b).map_err(|e| {
                    if bodies.len() > 1 {
                        e.context(&format!("message {i}"))
                    } else {
                        e
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (reply, rx) = oneshot::channel();
        self.send(Job::Tasks { messages, reply })?;
        rx.await.map_err(|_| stopped())?
    }

    fn send(&self, job: Job) -> Result<()> {
        self.tx.send(job).map_err(|_| stopped())
    }
}

fn stopped() -> EngineError {
    EngineError::internal("the DLProv ingest worker has stopped")
}

struct Worker {
    storage: Storage,
    sequences: Arc<Sequences>,
    catalog: Option<Catalog>,
    dataflows: Option<HashMap<String, DataflowRecord>>,
    caches: Caches,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut pending: Option<Job> = None;
        loop {
            let first = match pending.take() {
                Some(j) => j,
                None => match rx.recv().await {
                    Some(j) => j,
                    None => return,
                },
            };
            match first {
                Job::Spec { spec, reply } => {
                    let r = self.register(&spec).await;
                    if r.is_err() {
                        self.reset();
                    }
                    let _ = reply.send(r);
                }
                Job::Tasks { messages, reply } => {
                    let mut jobs = vec![(messages, reply)];
                    while jobs.len() < MAX_JOBS_PER_ROUND {
                        match rx.try_recv() {
                            Ok(Job::Tasks { messages, reply }) => jobs.push((messages, reply)),
                            Ok(spec) => {
                                pending = Some(spec);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.round(jobs).await;
                }
            }
        }
    }

    /// Forget everything cached; reloaded on the next job.
    fn reset(&mut self) {
        self.catalog = None;
        self.dataflows = None;
        self.caches = Caches::default();
    }

    async fn ensure_loaded(&mut self, create_catalog: bool) -> Result<()> {
        if self.catalog.is_none() {
            self.catalog = Catalog::resolve(&self.storage)?;
        }
        if self.catalog.is_none() && create_catalog {
            let ops = Catalog::create_ops(&self.storage)?;
            if !ops.is_empty() {
                self.storage.commit(ops).await?;
            }
            self.catalog = Catalog::resolve(&self.storage)?;
        }
        if self.dataflows.is_none() {
            self.dataflows = Some(DataflowRecord::load_all(&self.storage)?);
        }
        if let Some(cat) = &self.catalog
            && self.caches.stale(&self.storage, cat)
        {
            debug!("reloading DLProv caches");
            let linked = std::mem::take(&mut self.caches.linked);
            let produced = std::mem::take(&mut self.caches.produced);
            let mut fresh = Caches::load(&self.storage, cat).await?;
            // Link bookkeeping concerns set tables, checked separately.
            fresh.linked = linked;
            fresh.produced = produced;
            for (t, lsn) in &self.caches.seen_lsn {
                fresh.seen_lsn.entry(*t).or_insert(*lsn);
            }
            self.caches = fresh;
        }
        Ok(())
    }

    async fn register(&mut self, spec: &DataflowSpec) -> Result<Registered> {
        self.ensure_loaded(true).await?;
        let cat = self
            .catalog
            .clone()
            .ok_or_else(|| EngineError::internal("catalog missing after creation"))?;
        let existing = self
            .dataflows
            .as_ref()
            .and_then(|d| d.get(&spec.tag))
            .cloned();
        let lock = self.storage.write_lock(cat.data_dependency.id);
        let _guard = lock.lock().await;
        let mut ops = Vec::new();
        let (plan_ops, rec) = register::plan(
            &self.storage,
            &self.sequences,
            &cat,
            existing.as_ref(),
            spec,
        )?;
        ops.extend(plan_ops);
        let changed = existing.as_ref() != Some(&rec);
        if changed {
            self.storage.commit(ops).await?;
        }
        let out = Registered {
            tag: rec.spec.tag.clone(),
            id: rec.id,
            sets: rec.spec.sets.iter().map(|s| s.tag.clone()).collect(),
            changed,
        };
        if let Some(d) = self.dataflows.as_mut() {
            d.insert(rec.spec.tag.clone(), rec);
        }
        Ok(out)
    }

    async fn round(&mut self, jobs: Vec<(Vec<TaskMessage>, oneshot::Sender<Result<usize>>)>) {
        if let Err(e) = self.ensure_loaded(false).await {
            warn!(error = %e, "DLProv ingest could not load its state");
            self.reset();
            for (_, reply) in jobs {
                let _ = reply.send(Err(clone_err(&e)));
            }
            return;
        }
        let Some(cat) = self.catalog.clone() else {
            for (m, reply) in jobs {
                let tag = m.first().map(|m| m.dataflow.clone()).unwrap_or_default();
                let _ = reply.send(Err(EngineError::NotFound(format!(
                    "unknown dataflow \"{tag}\": POST its specification to /pde/dataflow/json first"
                ))));
            }
            return;
        };
        let dataflows = self.dataflows.take().unwrap_or_default();
        let mut round = Round::default();
        let mut results: Vec<(Result<usize>, oneshot::Sender<Result<usize>>)> = Vec::new();
        {
            let ctx = Ctx {
                storage: &self.storage,
                sequences: &self.sequences,
                catalog: &cat,
                dataflows: &dataflows,
            };
            for (messages, reply) in jobs {
                let mark = round.undo.len();
                let mut outcome = Ok(messages.len());
                for (i, m) in messages.iter().enumerate() {
                    if let Err(e) = ctx.apply(&mut round, &mut self.caches, m).await {
                        round.rollback_to(mark, &mut self.caches);
                        outcome = Err(if messages.len() > 1 {
                            e.context(&format!("message {i}"))
                        } else {
                            e
                        });
                        break;
                    }
                }
                results.push((outcome, reply));
            }
        }
        self.dataflows = Some(dataflows);
        let committed = self.commit_round(round, &cat).await;
        for (outcome, reply) in results {
            let r = match (&committed, outcome) {
                (Ok(()), o) => o,
                (Err(e), Ok(_)) => Err(clone_err(e)),
                (Err(_), Err(e)) => Err(e),
            };
            let _ = reply.send(r);
        }
    }

    async fn commit_round(&mut self, round: Round, cat: &Catalog) -> Result<()> {
        if round.is_empty() {
            return Ok(());
        }
        let sequences: Vec<String> = round.sequences.iter().cloned().collect();
        let dirty_tasks = round.dirty_tasks.clone();
        let dirty_execs = round.dirty_execs.clone();
        let dirty_perfs = round.dirty_perfs.clone();
        let tables = RoundTables {
            execution: &cat.dataflow_execution,
            task: &cat.task,
            performance: &cat.performance,
        };
        let result = async {
            let (ops, touched, _locks) =
                round.into_ops(&self.storage, &self.caches, &tables).await?;
            let info = self.storage.commit(ops).await?;
            Ok::<_, EngineError>((info, touched))
        }
        .await;
        match result {
            Ok((info, touched)) => {
                for t in touched {
                    self.caches.seen_lsn.insert(t, info.lsn);
                }
                for k in &dirty_tasks {
                    if let Some(c) = self.caches.tasks.get_mut(k) {
                        c.stored = true;
                    }
                }
                for k in &dirty_execs {
                    if let Some(c) = self.caches.execs.get_mut(k) {
                        c.stored = true;
                    }
                }
                for k in &dirty_perfs {
                    if let Some(c) = self.caches.perfs.get_mut(k) {
                        c.stored = true;
                    }
                }
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "DLProv ingest round failed; reloading its state");
                for s in sequences {
                    self.sequences.forget(&s);
                }
                self.reset();
                Err(e)
            }
        }
    }
}

/// Errors go to several waiting requests; storage errors are not `Clone`.
fn clone_err(e: &EngineError) -> EngineError {
    match e {
        EngineError::BadRequest(m) => EngineError::BadRequest(m.clone()),
        EngineError::NotFound(m) => EngineError::NotFound(m.clone()),
        EngineError::Invalid(m) => EngineError::Invalid(m.clone()),
        EngineError::Conflict(m) => EngineError::Conflict(m.clone()),
        other => EngineError::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
