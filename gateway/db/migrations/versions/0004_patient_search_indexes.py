"""indexes for QIDO patient searches (PatientID, PatientName prefix) within an account

Measured at 10^6 instances on PostgreSQL (benchmarks/retrieve.py): both were
sequential scans of patients before.

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_patients_account_patient_id", "patients", ["account_id", "patient_id"])
    if op.get_bind().dialect.name == "postgresql":
        # LIKE 'prefix%' on lower(name): needs text_pattern_ops outside the C locale
        op.execute("CREATE INDEX ix_patients_account_name_lower "
                   "ON patients (account_id, lower(patient_name) text_pattern_ops)")
    else:
        op.execute("CREATE INDEX ix_patients_account_name_lower ON patients (account_id, lower(patient_name))")


def downgrade() -> None:
    op.drop_index("ix_patients_account_name_lower", table_name="patients")
    op.drop_index("ix_patients_account_patient_id", table_name="patients")
