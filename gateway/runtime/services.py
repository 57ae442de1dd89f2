"""Composition root: settings -> database, object store, rules -> services.

The CLI, the HTTP app and the SCP all build one :class:`Services` and pass
it down; nothing else opens engines or stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy.exc import IntegrityError

from consent.sensitivity import Rule, load_rules
from gateway.archive.ingest import IngestService
from gateway.archive.query import QueryService
from gateway.archive.retrieve import RetrieveService
from gateway.db import Database
from gateway.db.migrate import upgrade
from gateway.db.models import Installation
from gateway.identity.credentials import VerifiedCredentials
from gateway.identity.throttle import SignInThrottle
from gateway.runtime.settings import Settings
from storage import ObjectStore, open_store


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ObjectStore
    rules: tuple[Rule, ...]

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate: bool = True, need_store: bool = True) -> "Services":
        settings.data_path.mkdir(mode=0o700, parents=True, exist_ok=True)  # index, objects: the service's alone
        db = Database(settings.effective_database_url)
        if migrate:
            upgrade(db)
        store = (
            open_store(
                settings.effective_object_store, s3_endpoint=settings.s3_endpoint,
                s3_access_key=settings.s3_access_key, s3_secret_key=settings.s3_secret_key,
                s3_region=settings.s3_region,
            )
            if need_store
            else None
        )
        if store is not None:
            default = settings.object_store is None
            _check_store_identity(db, "file://<data_dir>/objects" if default else store.describe())
        return cls(settings=settings, db=db, store=store, rules=load_rules(settings.sensitivity_rules))  # type: ignore[arg-type]

    @cached_property
    def ingest(self) -> IngestService:
        return IngestService(self.db, self.store, self.rules)

    @cached_property
    def throttle(self) -> SignInThrottle:
        return SignInThrottle(self.db)

    @cached_property
    def verified(self) -> VerifiedCredentials:
        return VerifiedCredentials()

    @cached_property
    def query(self) -> QueryService:
        return QueryService(self.db)

    @cached_property
    def retrieve(self) -> RetrieveService:
        return RetrieveService(self.db, self.store)

    @property
    def base_url(self) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        host = self.settings.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.settings.http_port}"

    def close(self) -> None:
        self.db.dispose()


class StoreMismatch(RuntimeError):
    """The index describes objects in another store than the one configured."""


def _check_store_identity(db: Database, here: str) -> None:
    """Refuse to run (and e.g. purge) against a store other than the one the index describes.

    The embedded default (objects beside the index in the data dir) is recorded
    as such, so moving the whole data dir keeps working.
    """
    with db.session(write=True) as s:
        row = s.get(Installation, "object_store")
        if row is None:
            s.add(Installation(key="object_store", value=here))
            try:
                s.flush()
            except IntegrityError:
                s.rollback()
                row = s.get(Installation, "object_store")
        if row is not None and row.value != here:
            raise StoreMismatch(
                f"this index belongs to the object store {row.value}, but {here} is configured; "
                "give the same object_store (config, DICOMGATE_OBJECT_STORE or --object-store)"
            )
