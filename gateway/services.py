"""Composition root: settings -> database, object store, rules -> services.

The CLI, the HTTP app and the SCP all build one :class:`Services` and pass
it down; nothing else opens engines or stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from consent.sensitivity import Rule, load_rules
from gateway.db import Database
from gateway.db.migrate import upgrade
from gateway.ingest import IngestService
from gateway.query import QueryService
from gateway.retrieve import RetrieveService
from gateway.settings import Settings
from storage import ObjectStore, open_store


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ObjectStore
    rules: tuple[Rule, ...]

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate: bool = True, need_store: bool = True) -> "Services":
        settings.data_path.mkdir(parents=True, exist_ok=True)
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
        return cls(settings=settings, db=db, store=store, rules=load_rules(settings.sensitivity_rules))  # type: ignore[arg-type]

    @cached_property
    def ingest(self) -> IngestService:
        return IngestService(self.db, self.store, self.rules)

    @cached_property
    def query(self) -> QueryService:
        return QueryService(self.db)

    @cached_property
    def retrieve(self) -> RetrieveService:
        return RetrieveService(self.db, self.store)

    @property
    def base_url(self) -> str:
        host = self.settings.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.settings.http_port}"

    def close(self) -> None:
        self.db.dispose()
