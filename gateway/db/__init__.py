"""Database access: engine creation per URL, transactional session scopes, migrations."""

from gateway.db.base import Base, UTCDateTime, utcnow
from gateway.db.engine import Database

__all__ = ["Base", "UTCDateTime", "utcnow", "Database"]
