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

use std::sync::Arc;

use datafusion::execution::{SessionState, TaskContext};
use datafusion::prelude::SessionContext;

/// A planning state and the task context built from it.
pub(crate) struct Planner {
    pub state: SessionState,
    pub task: Arc<TaskContext>,
    serial: bool,
}

/// The session's cached planning states (none until first needed).
#[derive(Default)]
pub(crate) struct PlanningStates {
    parallel: Option<Planner>,
    serial: Option<Planner>,
}

impl PlanningStates {
    /// A state for one statement, planned in one partition when `serial`.
    /// Give it back with [`PlanningStates::give_back`] to reuse it.
    pub fn take(&mut self, ctx: &SessionContext, serial: bool) -> Planner {
        let cached = if serial {
            self.serial.take()
        } else {
            self.parallel.take()
        };
        let mut planner = cached.unwrap_or_else(|| build(ctx, serial));
        planner.state.mark_start_execution();
        planner
    }

    /// Keep `planner` for the next statement.
    pub fn give_back(&mut self, planner: Planner) {
        if planner.serial {
            self.serial = Some(planner);
        } else {
            self.parallel = Some(planner);
        }
    }

    /// Forget the cached states: the session's configuration changed.
    pub fn invalidate(&mut self) {
        *self = PlanningStates::default();
    }
}

fn build(ctx: &SessionContext, serial: bool) -> Planner {
    let mut state = ctx.state();
    if serial {
        state.config_mut().options_mut().execution.target_partitions = 1;
    }
    let task = Arc::new(TaskContext::from(&state));
    Planner {
        state,
        task,
        serial,
    }
}
