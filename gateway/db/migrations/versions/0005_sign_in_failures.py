"""sign-in failures in the index, so every HTTP worker process sees the same throttle

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sign_in_failures",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Text(), nullable=False),
        sa.Column("locked_until", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_hash", name=op.f("pk_sign_in_failures")),
    )
    op.create_index(op.f("ix_sign_in_failures_expires_at"), "sign_in_failures", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_sign_in_failures_expires_at"), table_name="sign_in_failures")
    op.drop_table("sign_in_failures")
