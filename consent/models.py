"""Consent tables: providers, links, shares and their append-only history.

A link or share row is never edited in place except to stamp its single
``revoked_at``; every creation and revocation also appends a
:class:`ConsentEvent`, so the full history survives.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.base import Base, UTCDateTime, utcnow


class Provider(Base):
    __tablename__ = "providers"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    ae_title: Mapped[str] = mapped_column(String(16), index=True)
    # comma-separated CIDRs; empty means "any source address"
    networks: Mapped[str] = mapped_column(Text, default="")
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Link(Base):
    __tablename__ = "links"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"), index=True)
    push: Mapped[bool] = mapped_column(Boolean, default=False)
    pull: Mapped[bool] = mapped_column(Boolean, default=False)
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_by: Mapped[str | None] = mapped_column(String(200))


class Share(Base):
    __tablename__ = "shares"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_by: Mapped[str | None] = mapped_column(String(200))


class ConsentEvent(Base):
    """Append-only history of every consent change (link/share/provider)."""

    __tablename__ = "consent_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    account_id: Mapped[str | None] = mapped_column(String(40), index=True)
    subject_kind: Mapped[str] = mapped_column(String(16))  # link | share | provider
    subject_id: Mapped[str] = mapped_column(String(40), index=True)
    change: Mapped[str] = mapped_column(String(32))  # created | revoked | expired | removed
    actor: Mapped[str] = mapped_column(String(200))
    snapshot: Mapped[str] = mapped_column(Text)  # JSON of the row as it was after the change
