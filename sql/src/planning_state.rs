//! The DataFusion states a session plans its statements with.
//!
//! `SessionContext::state()` clones the whole session state — every
//! function registry, the configuration, the optimizer rule lists — and a
//! `TaskContext` built from it clones the registries again. For a point
//! query that is a measurable part of the work (about 6% of the server's
//! time on DLProv's Q7). A session therefore clones its state once, plus a
//! one-partition variant for small statements (see [`crate::parallelism`]),
//! and reuses both, with their task contexts, until something changes the
//! session's configuration (`SET`), which drops them.
//!
//! Each statement still gets its own start time (what `now()` returns) and
//! alias generator: [`PlanningStates::take`] marks the start of execution.
//!
//! Two more plan the physical plans prepared statements keep
//! ([`crate::kept_physical`]): one partition, and no run-time (dynamic)
//! filters but hash joins' (which a kept plan renews at each execution),
//! and those only for statements over many rows.

use std::sync::Arc;

use datafusion::execution::{SessionState, TaskContext};
use datafusion::prelude::SessionContext;

/// How a planning state plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The session's settings (as many partitions as cores).
    Parallel,
    /// One partition.
    Serial,
    /// One partition, no run-time filters: plans kept for reuse by
    /// statements over few rows, where renewing a join's filter at each
    /// execution would cost more than the filter saves.
    Kept,
    /// One partition, hash-join run-time filters only: plans kept for reuse
    /// by statements over many rows (a run's epochs among millions).
    KeptFiltered,
}

/// A planning state and the task context built from it.
pub(crate) struct Planner {
    pub state: SessionState,
    pub task: Arc<TaskContext>,
    mode: Mode,
}

/// The session's cached planning states (none until first needed).
#[derive(Default)]
pub(crate) struct PlanningStates {
    parallel: Option<Planner>,
    serial: Option<Planner>,
    kept: Option<Planner>,
    kept_filtered: Option<Planner>,
    /// Bumped whenever the states are dropped: plans made with an older
    /// state are stale.
    epoch: u64,
}

impl PlanningStates {
    /// A state for one statement planned in `mode`. Give it back with
    /// [`PlanningStates::give_back`] to reuse it.
    pub fn take(&mut self, ctx: &SessionContext, mode: Mode) -> Planner {
        let mut planner = self.slot(mode).take().unwrap_or_else(|| build(ctx, mode));
        planner.state.mark_start_execution();
        planner
    }

    /// Keep `planner` for the next statement.
    pub fn give_back(&mut self, planner: Planner) {
        let mode = planner.mode;
        *self.slot(mode) = Some(planner);
    }

    /// Forget the cached states: the session's configuration changed.
    pub fn invalidate(&mut self) {
        *self = PlanningStates {
            epoch: self.epoch + 1,
            ..PlanningStates::default()
        };
    }

    /// Which configuration the states have: changes on every
    /// [`PlanningStates::invalidate`].
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn slot(&mut self, mode: Mode) -> &mut Option<Planner> {
        match mode {
            Mode::Parallel => &mut self.parallel,
            Mode::Serial => &mut self.serial,
            Mode::Kept => &mut self.kept,
            Mode::KeptFiltered => &mut self.kept_filtered,
        }
    }
}

fn build(ctx: &SessionContext, mode: Mode) -> Planner {
    let mut state = ctx.state();
    let options = state.config_mut().options_mut();
    if mode != Mode::Parallel {
        options.execution.target_partitions = 1;
    }
    if matches!(mode, Mode::Kept | Mode::KeptFiltered) {
        // A kept plan gets fresh hash-join filters at every execution
        // (`kept_physical::rewire_dynamic_filters`); top-k and aggregate
        // filters cannot be renewed that way.
        let o = &mut options.optimizer;
        o.enable_join_dynamic_filter_pushdown = mode == Mode::KeptFiltered;
        o.enable_topk_dynamic_filter_pushdown = false;
        o.enable_aggregate_dynamic_filter_pushdown = false;
    }
    let task = Arc::new(TaskContext::from(&state));
    Planner { state, task, mode }
}
