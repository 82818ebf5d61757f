"""trial_params.value shows whole numbers as written (8192, not 8192.0)

Parameter values live in a float column, so in SQLite the view's `value` showed an integer knob
or a numeric choice as 8192.0 and a bool as 1.0, which is not what `sysctl` or the space file
says. PostgreSQL's float-to-text cast already drops the `.0`; the view is rebuilt on both so
their definitions stay one. `value_num` is unchanged for arithmetic.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BODY = """
    SELECT e.name AS experiment, t.number AS trial, p.name AS param,
           COALESCE(p.value_text, {num_as_value}) AS value, p.value_num, p.value_text
    FROM trial_param_values p
    JOIN trials t ON t.id = p.trial_id
    JOIN experiments e ON e.id = t.experiment_id
"""


def _num_as_value(whole_numbers: bool) -> str:
    if op.get_bind().dialect.name != "sqlite":
        return "CAST(p.value_num AS TEXT)"
    if not whole_numbers:
        return "p.value_num"
    # a value beyond INTEGER's range casts to its limit, is not equal, and stays a float
    return "CASE WHEN p.value_num = CAST(p.value_num AS INTEGER) THEN CAST(p.value_num AS INTEGER) ELSE p.value_num END"


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS trial_params")
    op.execute(f"CREATE VIEW trial_params AS {BODY.replace('{num_as_value}', _num_as_value(True))}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS trial_params")
    op.execute(f"CREATE VIEW trial_params AS {BODY.replace('{num_as_value}', _num_as_value(False))}")
