"""verifications of dead runs: aborted, not 'running'

Before this revision a verification whose process was killed (kill -9) stayed 'running' after
recovery had marked its run crashed, so it read as in progress forever. Recovery now aborts it
with its run; this closes the ones left by older versions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE verifications SET status = 'aborted' WHERE status = 'running' "
               "AND run_id IN (SELECT id FROM runs WHERE status <> 'running')")


def downgrade() -> None:
    pass  # which rows were 'running' is not kept; 'aborted' is true of them either way
