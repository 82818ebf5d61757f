"""runs.machine_id: a run's owner is judged by hostname, boot id and machine id

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # runs stored before this revision keep '' (unknown): judged by hostname and boot id, as before
    op.add_column('runs', sa.Column('machine_id', sa.String(length=64), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('machine_id')
