"""The DLProv workload's query set (issue 6), written once for every engine.

DLProv's questions Q1-Q12 (docs/queries.md) and five live-monitoring
queries (M1-M5) over the `alexnet` tables and views, with psycopg-style
`%(name)s` parameters. The SQL is the same text for provdb, PostgreSQL and
DuckDB, except the derivation questions (Q5, Q10, Q11, Q12), which each
engine answers in its best form: provdb with `lineage()`, the peers with
`WITH RECURSIVE ... UNION` over the same `prov.relation` rows (copied from
provdb, indexed on both ends in PostgreSQL).

Every query orders its result totally (ties broken by ids), so the
differential test compares row lists, not sets.

`cls` is the class the issue's targets name: `aggregate` (scans the sweep;
goal: at most DuckDB's time, 10x PostgreSQL's) or `point` (one model or run;
goal: within 1.5x of indexed PostgreSQL).
"""

from dataclasses import dataclass, field


@dataclass
class Query:
    name: str
    title: str
    cls: str
    sql: str
    peers_sql: str = None  # the WITH RECURSIVE form, when it differs
    params: dict = field(default_factory=dict)

    def text(self, engine):
        return self.sql if engine == "provdb" or self.peers_sql is None else self.peers_sql


def upstream(start_sql, kinds=None, max_depth=30):
    """The peers' upstream walk from the node `start_sql` yields, as a CTE
    `up(node, depth)` of minimum depths (what lineage() returns)."""
    kind = ""
    if kinds:
        kind = " AND r.kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"
    return f"""WITH RECURSIVE walk(node, depth) AS (
  SELECT ({start_sql}), 0
  UNION
  SELECT r.object, w.depth + 1
  FROM prov.relation r JOIN walk w ON r.subject = w.node
  WHERE w.depth < {max_depth}{kind}
), up AS (SELECT node, min(depth) AS depth FROM walk GROUP BY node)"""


MODEL = "(SELECT 'alexnet.otrainedmodel:' || CAST(id AS TEXT) FROM alexnet.otrainedmodel WHERE model_dir = %(model)s)"
BEST_TEST = "(SELECT 'alexnet.otest:' || CAST(id AS TEXT) FROM alexnet.otest ORDER BY accuracy DESC, id LIMIT 1)"


def queries(model_dir, run_tag, train_file):
    """The query set with its parameters: a finished model, a run (for its
    loss curve) and a training file."""
    model = {"model": model_dir}
    return [
        Query("Q1", "trained models with a given learning rate", "aggregate", """
SELECT t.df_exec, m.model_name, m.model_dir
FROM alexnet.otrainedmodel m
JOIN alexnet.itrain i ON i.train_task_id = m.train_task_id
JOIN public.task t ON t.id = m.train_task_id
WHERE i.learning_rate = %(lr)s
ORDER BY t.df_exec""", params={"lr": 0.01}),
        Query("Q2", "average epoch time of every configuration", "aggregate", """
SELECT i.optimizer_name, i.learning_rate, i.batch_size, i.num_layers,
       avg(CAST(o.elapsed_time AS DOUBLE PRECISION)) AS avg_epoch_seconds
FROM alexnet.itrain i
JOIN alexnet.otrain o ON o.train_task_id = i.train_task_id
GROUP BY i.optimizer_name, i.learning_rate, i.batch_size, i.num_layers
ORDER BY avg_epoch_seconds DESC, i.optimizer_name, i.learning_rate, i.batch_size, i.num_layers
LIMIT 10"""),
        Query("Q3", "hyperparameters of the model with the highest average training accuracy",
              "aggregate", """
SELECT i.train_task_id, i.optimizer_name, i.learning_rate, i.num_epochs, i.batch_size,
       i.num_layers, avg(o.accuracy) AS avg_accuracy
FROM alexnet.itrain i
JOIN alexnet.otrain o ON o.train_task_id = i.train_task_id
GROUP BY i.train_task_id, i.optimizer_name, i.learning_rate, i.num_epochs, i.batch_size,
         i.num_layers
ORDER BY avg_accuracy DESC, i.train_task_id
LIMIT 1"""),
        Query("Q4", "hyperparameters of the model with the highest test accuracy", "aggregate", """
SELECT i.optimizer_name, i.learning_rate, i.num_epochs, i.batch_size, i.num_layers,
       te.accuracy AS test_accuracy
FROM alexnet.otest te
JOIN alexnet.otrainedmodel m ON m.test_task_id = te.test_task_id
JOIN alexnet.itrain i ON i.train_task_id = m.train_task_id
ORDER BY te.accuracy DESC, te.id
LIMIT 1"""),
        Query("Q5", "data that contributed to the run with the highest test accuracy", "point",
              f"""
SELECT split_part(l.node, ':', 1) AS dataset, l.node, l.depth
FROM lineage({BEST_TEST}) l
WHERE l.node LIKE 'alexnet.%%'
ORDER BY l.depth, l.node""", peers_sql=f"""
{upstream(BEST_TEST)}
SELECT split_part(node, ':', 1) AS dataset, node, depth
FROM up
WHERE node LIKE 'alexnet.%%'
ORDER BY depth, node"""),
        Query("Q6", "for a training set, the model with the least loss and its test measures",
              "aggregate", """
SELECT i.train_task_id, i.optimizer_name, i.learning_rate, i.num_epochs, i.batch_size,
       i.num_layers, min(o.loss) AS least_loss, te.loss AS test_loss, te.accuracy AS test_accuracy
FROM alexnet.otrainset ts
JOIN alexnet.itrain i ON i.train_task_id = ts.train_task_id
JOIN alexnet.otrain o ON o.train_task_id = i.train_task_id
JOIN alexnet.otrainedmodel m ON m.train_task_id = i.train_task_id
JOIN alexnet.otest te ON te.test_task_id = m.test_task_id
WHERE ts.trainsetx = %(file)s
GROUP BY i.train_task_id, i.optimizer_name, i.learning_rate, i.num_epochs, i.batch_size,
         i.num_layers, te.loss, te.accuracy
ORDER BY least_loss, i.train_task_id
LIMIT 1""", params={"file": train_file}),
        Query("Q7", "hyperparameters of a given model", "point", """
SELECT i.optimizer_name, i.learning_rate, i.num_epochs, i.batch_size, i.num_layers
FROM alexnet.otrainedmodel m
JOIN alexnet.itrain i ON i.train_task_id = m.train_task_id
WHERE m.model_dir = %(model)s""", params=model),
        Query("Q8", "the computational environment that trained it", "point", """
SELECT h.hostname, h.os, h.gpus
FROM alexnet.otrainedmodel m
JOIN public.task t ON t.id = m.train_task_id
JOIN public.dataflow_execution x ON x.tag = t.df_exec
JOIN public.hardware_info h ON h.id = x.hardware_id
WHERE m.model_dir = %(model)s""", params=model),
        Query("Q9", "who trained it", "point", """
SELECT s.email
FROM alexnet.otrainedmodel m
JOIN public.task t ON t.id = m.train_task_id
JOIN public.dataflow_execution x ON x.tag = t.df_exec
JOIN public.data_scientist s ON s.id = x.scientist_id
WHERE m.model_dir = %(model)s""", params=model),
        Query("Q10", "its whole derivation trace", "point", f"""
SELECT l.node, l.depth
FROM lineage({MODEL}) l
ORDER BY l.depth, l.node""", peers_sql=f"""
{upstream(MODEL)}
SELECT node, depth FROM up ORDER BY depth, node""", params=model),
        Query("Q11", "the data used to train it", "point", f"""
SELECT split_part(l.node, ':', 1) AS dataset, l.node
FROM lineage({MODEL}, relations => ARRAY['wasGeneratedBy', 'used'], max_depth => 2) l
WHERE l.depth = 2
ORDER BY dataset, l.node""", peers_sql=f"""
{upstream(MODEL, ["wasGeneratedBy", "used"], 2)}
SELECT split_part(node, ':', 1) AS dataset, node FROM up
WHERE depth = 2
ORDER BY dataset, node""", params=model),
        Query("Q12", "the transformations applied to that data", "point", f"""
SELECT dt.tag AS transformation, min(l.depth) AS depth
FROM lineage({MODEL}, relations => ARRAY['wasGeneratedBy', 'used']) l
JOIN public.task t ON l.node = 'task:' || CAST(t.id AS TEXT)
JOIN public.data_transformation dt ON dt.id = t.dt_id
WHERE l.depth > 1
GROUP BY dt.tag
ORDER BY depth, transformation""", peers_sql=f"""
{upstream(MODEL, ["wasGeneratedBy", "used"])}
SELECT dt.tag AS transformation, min(up.depth) AS depth
FROM up
JOIN public.task t ON up.node = 'task:' || CAST(t.id AS TEXT)
JOIN public.data_transformation dt ON dt.id = t.dt_id
WHERE up.depth > 1
GROUP BY dt.tag
ORDER BY depth, transformation""", params=model),
        Query("M1", "progress of the running executions", "aggregate", """
SELECT t.df_exec, count(o.id) AS epochs_done, max(i.num_epochs) AS epochs_planned
FROM public.task t
JOIN alexnet.itrain i ON i.train_task_id = t.id
LEFT JOIN alexnet.otrain o ON o.train_task_id = t.id
WHERE t.status = 'RUNNING'
GROUP BY t.df_exec
ORDER BY t.df_exec"""),
        Query("M2", "best validation accuracy so far per configuration", "aggregate", """
SELECT i.optimizer_name, i.learning_rate, i.batch_size, i.num_layers,
       max(o.val_accuracy) AS best_val_accuracy
FROM alexnet.itrain i
JOIN alexnet.otrain o ON o.train_task_id = i.train_task_id
GROUP BY i.optimizer_name, i.learning_rate, i.batch_size, i.num_layers
ORDER BY best_val_accuracy DESC, i.optimizer_name, i.learning_rate, i.batch_size, i.num_layers
LIMIT 20"""),
        Query("M3", "epochs per second of the running executions", "aggregate", """
SELECT t.df_exec, count(*) / sum(CAST(o.elapsed_time AS DOUBLE PRECISION)) AS epochs_per_second
FROM public.task t
JOIN alexnet.otrain o ON o.train_task_id = t.id
WHERE t.status = 'RUNNING'
GROUP BY t.df_exec
ORDER BY t.df_exec"""),
        Query("M4", "stalled runs: no epoch in the last 60 s of the newest run's", "aggregate", """
SELECT t.df_exec, max(CAST(o."timestamp" AS TIMESTAMP)) AS last_epoch_at
FROM public.task t
JOIN alexnet.otrain o ON o.train_task_id = t.id
WHERE t.status = 'RUNNING'
GROUP BY t.df_exec
HAVING max(CAST(o."timestamp" AS TIMESTAMP))
       < (SELECT max(CAST("timestamp" AS TIMESTAMP)) FROM alexnet.otrain) - INTERVAL '60 seconds'
ORDER BY t.df_exec"""),
        Query("M5", "loss curve of one run", "point", """
SELECT o.epoch, o.loss, o.val_loss
FROM alexnet.otrain o
JOIN public.task t ON t.id = o.train_task_id
WHERE t.df_exec = %(run)s
ORDER BY o.epoch""", params={"run": run_tag}),
    ]


def for_workload(w):
    """The query set over workload `w`: parameters picked from its runs."""
    model = w.run(w.n // 3)
    running = w.run(w.n - 1)
    return queries(model.model_dir, running.tag, f"data/x_train_{model.filter}.npy")
