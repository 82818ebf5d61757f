"""SQL views for people querying the result database directly

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STANDARD = ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "ops_per_s", "errors")

VIEWS = {
    "trial_results": """
        SELECT e.name AS experiment, t.number AS trial, t.status, t.source, t.objective,
               t.objective_sd, t.repetitions,
               {pivot},
               t.started_at, t.ended_at, t.duration_s, t.error
        FROM trials t
        JOIN experiments e ON e.id = t.experiment_id
        LEFT JOIN trial_metric_values m ON m.trial_id = t.id
        GROUP BY t.id, e.name
    """.format(pivot=",\n               ".join(
        f"MAX(CASE WHEN m.name = '{name}' THEN m.value END) AS {name}" for name in STANDARD)),
    "trial_metrics": """
        SELECT e.name AS experiment, t.number AS trial, m.name AS metric, m.value AS value
        FROM trial_metric_values m
        JOIN trials t ON t.id = m.trial_id
        JOIN experiments e ON e.id = t.experiment_id
    """,
    "trial_params": """
        SELECT e.name AS experiment, t.number AS trial, p.name AS param,
               COALESCE(p.value_text, {num_as_value}) AS value, p.value_num, p.value_text
        FROM trial_param_values p
        JOIN trials t ON t.id = p.trial_id
        JOIN experiments e ON e.id = t.experiment_id
    """,
    "trial_repetitions": """
        SELECT e.name AS experiment, t.number AS trial, r.repetition, r.name AS metric, r.value
        FROM repetition_metrics r
        JOIN trials t ON t.id = r.trial_id
        JOIN experiments e ON e.id = t.experiment_id
    """,
}


def upgrade() -> None:
    # SQLite mixes types in one column (a number stays a number); PostgreSQL needs one type
    sqlite = op.get_bind().dialect.name == "sqlite"
    num_as_value = "p.value_num" if sqlite else "CAST(p.value_num AS TEXT)"
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body.replace('{num_as_value}', num_as_value)}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
