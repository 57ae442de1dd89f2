"""Gateway tables: users and tokens, accounts, the image index, the audit log.

Consent tables (providers, links, shares, their history) live in
``consent.models`` on the same metadata.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Float,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.base import Base, UTCDateTime, utcnow

ID = String(40)
UID = String(64)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApiToken(Base):
    """A bearer token for a user or a provider, stored only as a SHA-256 hash."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider_id: Mapped[str | None] = mapped_column(
        ForeignKey("providers.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("account_id", "patient_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # PatientID + "^" + IssuerOfPatientID: the identity of a patient within an account
    patient_key: Mapped[str] = mapped_column(String(200))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    issuer: Mapped[str | None] = mapped_column(String(64))
    patient_name: Mapped[str | None] = mapped_column(String(324))
    patient_name_norm: Mapped[str | None] = mapped_column(String(324), index=True)
    birth_date: Mapped[str | None] = mapped_column(String(8))
    sex: Mapped[str | None] = mapped_column(String(16))


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (
        UniqueConstraint("account_id", "study_uid"),
        Index("ix_studies_account_date", "account_id", "study_date"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    study_uid: Mapped[str] = mapped_column(UID)
    study_date: Mapped[str | None] = mapped_column(String(8))
    study_time: Mapped[str | None] = mapped_column(String(16))
    accession_number: Mapped[str | None] = mapped_column(String(16), index=True)
    study_id: Mapped[str | None] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(String(64))
    referring_physician: Mapped[str | None] = mapped_column(String(324))
    patient_age: Mapped[str | None] = mapped_column(String(4))
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    labels: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)


class Series(Base):
    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("study_pk", "series_uid"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    series_uid: Mapped[str] = mapped_column(UID, index=True)
    modality: Mapped[str | None] = mapped_column(String(16), index=True)
    series_number: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(String(64))
    body_part: Mapped[str | None] = mapped_column(String(16))
    series_date: Mapped[str | None] = mapped_column(String(8))
    series_time: Mapped[str | None] = mapped_column(String(16))


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("account_id", "sop_uid"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_uid: Mapped[str] = mapped_column(UID)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(400))
    source: Mapped[str] = mapped_column(String(120))
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditEntry(Base):
    """Append-only: rows are inserted, never updated or deleted (see gateway.ops.audit)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_account_time", "account_id", "id"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    account_id: Mapped[str | None] = mapped_column(String(40), index=False)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    study_uid: Mapped[str | None] = mapped_column(UID)
    source: Mapped[str | None] = mapped_column(String(120))
    detail: Mapped[str] = mapped_column(Text, default="")


class UsageEvent(Base):
    """Raw usage (sign-ins, requests, associations), tied to an account for
    ``usage_retention_days``; then folded into :class:`UsageDaily` and deleted."""

    __tablename__ = "usage_events"
    __table_args__ = (Index("ix_usage_events_time", "time"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    account_id: Mapped[str | None] = mapped_column(String(40), index=True)
    user_id: Mapped[str | None] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(32))  # sign-in | request | association | link-click ...
    detail: Mapped[str] = mapped_column(String(200), default="")


class UsageDaily(Base):
    """Aggregated usage: a count per day and kind, with no account or user reference."""

    __tablename__ = "usage_daily"
    __table_args__ = (UniqueConstraint("day", "kind"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD (UTC)
    kind: Mapped[str] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class Erasure(Base):
    """A deletion request (a study or a whole account) and its purge.

    The row keeps no identifier of the data it erased beyond the account id
    (cleared once the account is purged) so that the receipt itself does not
    become a record of the patient.
    """

    __tablename__ = "erasures"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # unguessable receipt id
    scope: Mapped[str] = mapped_column(String(16))  # study | account
    account_id: Mapped[str | None] = mapped_column(String(40), index=True)
    study_pk: Mapped[int | None] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    requested_by: Mapped[str] = mapped_column(String(200))
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    objects_removed: Mapped[int] = mapped_column(Integer, default=0)


class Installation(Base):
    """Facts about this installation, e.g. which object store its index describes."""

    __tablename__ = "installation"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class SignInFailure(Base):
    """Recent failed sign-ins of one key (an email or a source address), shared by every HTTP process.

    The key is stored only as an HMAC under a per-installation secret, and a
    row is deleted once its window and lock have both passed, so the table
    holds neither emails nor addresses and nothing older than the window.
    """

    __tablename__ = "sign_in_failures"
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: epoch seconds of the failures in the window, space-separated
    failures: Mapped[str] = mapped_column(Text, default="")
    locked_until: Mapped[float] = mapped_column(Float, default=0.0)
    #: when the row stops mattering (last failure + window, or the lock's end)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
