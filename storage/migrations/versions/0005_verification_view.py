"""A view of verification results by experiment name, for people querying the database

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

VERIFIED = """
    SELECT e.name AS experiment, v.id AS verification, v.created_at, v.status AS verification_status,
           r.label AS configuration, r.trial_number AS trial, r.metric, r.samples AS rounds, r.median,
           r.relative, r.ci_low, r.ci_high, r.established
    FROM verification_results r
    JOIN verifications v ON v.id = r.verification_id
    JOIN experiments e ON e.id = v.experiment_id
"""


def upgrade() -> None:
    op.execute(f"CREATE VIEW verification_summary AS {VERIFIED}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS verification_summary")
