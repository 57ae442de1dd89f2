"""The one door out: WADO-RS, C-GET and C-MOVE all retrieve through here.

``select`` asks the consent decision (READ) once per request, resolves the
study / series / instance the caller named to index rows (the studies
``consent.decision.study_filter`` lets the caller see: never deleted ones, nor
sensitive ones without the sensitive flag), and ``open`` streams an object's
bytes exactly as stored. What may not be seen is reported exactly like what
does not exist.

Audit: ``retrieval`` (WADO-RS) selects and, once the caller's answer is
built, records one audit entry per study; ``hand_over`` (C-GET / C-MOVE)
reads each selected instance for a sub-operation and records, when it ends,
one entry per study of the instances it actually handed over.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterator

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import distinct, func, select

from consent.decision import (Action, Principal, Reason, decide_destination, provider_by_ae, require, study_filter,
                              withheld_filter)
from gateway import errors
from gateway.archive.query import QueryError
from gateway.db import Database
from gateway.db.models import Instance, Series, Study
from gateway.dicom.uids import is_valid_uid
from gateway.ops import audit
from storage import ObjectStore

log = logging.getLogger(__name__)


class NotFound(errors.NotFound, LookupError):
    """Nothing the caller may see matches (404 / no sub-operations)."""


@dataclass(frozen=True)
class InstanceRef:
    account_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    object_key: str
    size: int
    number_of_frames: int | None
    rows: int | None
    columns: int | None


@dataclass(frozen=True)
class Selection:
    instances: list[InstanceRef]
    #: when nothing the caller may see matched: how many studies matched but were withheld as
    #: sensitive (for C-GET's error comment); 0 otherwise
    withheld_sensitive: int = 0


@dataclass
class Retrieval:
    """A selection on its way to the caller; its audit entries are written when the answer is built.

    ``detail`` may be amended until then (what exactly was asked for).
    """

    selection: Selection
    how: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def instances(self) -> list[InstanceRef]:
        return self.selection.instances


class RetrieveService:
    def __init__(self, db: Database, store: ObjectStore) -> None:
        self.db = db
        self.store = store

    def select(
        self, principal: Principal, account_id: str, study_uid: str | None,
        series_uid: str | None = None, sop_uid: str | None = None, *, require_any: bool = True,
        study_uids: list[str] | None = None, series_uids: list[str] | None = None,
        sop_uids: list[str] | None = None,
    ) -> Selection:
        for uid in [study_uid, series_uid, sop_uid, *(study_uids or []), *(series_uids or []), *(sop_uids or [])]:
            if uid is not None and not is_valid_uid(uid):
                raise QueryError(f"{uid[:70]!r} is not a valid UID")
        with self.db.session() as s:
            decision = require(s, principal, Action.READ, account_id)
            named = []
            if study_uid:
                named.append(Study.study_uid == study_uid)
            if study_uids:
                named.append(Study.study_uid.in_(study_uids))
            if series_uid:
                named.append(Series.series_uid == series_uid)
            if series_uids:
                named.append(Series.series_uid.in_(series_uids))
            if sop_uid:
                named.append(Instance.sop_uid == sop_uid)
            if sop_uids:
                named.append(Instance.sop_uid.in_(sop_uids))
            stmt = (
                select(Instance, Series.series_uid, Study.study_uid)
                .join(Series, Series.id == Instance.series_pk)
                .join(Study, Study.id == Series.study_pk)
                .where(study_filter(decision), *named)
                .order_by(Study.id, Series.series_number, Series.id, Instance.instance_number, Instance.id)
            )
            refs = [InstanceRef(
                account_id=account_id, study_uid=study_uid_, series_uid=series_uid_, sop_uid=inst.sop_uid,
                sop_class_uid=inst.sop_class_uid, transfer_syntax_uid=inst.transfer_syntax_uid,
                object_key=inst.object_key, size=inst.size, number_of_frames=inst.number_of_frames,
                rows=inst.rows, columns=inst.columns,
            ) for inst, series_uid_, study_uid_ in s.execute(stmt)]
            withheld = 0
            if not refs and not decision.sensitive_ok:  # say why nothing came: it is all sensitive
                withheld = s.scalar(
                    select(func.count(distinct(Study.id))).select_from(Instance)
                    .join(Series, Series.id == Instance.series_pk).join(Study, Study.id == Series.study_pk)
                    .where(withheld_filter(decision), *named)) or 0
        if require_any and not refs:
            raise NotFound("no such study, series or instance")
        return Selection(refs, withheld)

    @contextlib.contextmanager
    def retrieval(
        self, principal: Principal, account_id: str, how: str, detail: dict[str, Any] | None,
        study_uid: str, series_uid: str | None = None, sop_uid: str | None = None,
    ) -> Iterator[Retrieval]:
        """``select`` for a caller about to be answered: when the block ends normally (the answer is
        built), one audit entry per study is written ("study.<how>"); a refusal inside writes none."""
        retrieval = Retrieval(self.select(principal, account_id, study_uid, series_uid, sop_uid), how,
                              dict(detail or {}))
        yield retrieval
        self._record(principal, account_id, retrieval.instances, retrieval.how, retrieval.detail)

    def open(self, ref: InstanceRef, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return self.store.open(ref.object_key, start, end)

    def read(self, ref: InstanceRef) -> bytes:
        return b"".join(self.open(ref))

    def file(self, ref: InstanceRef, buffer_size: int = 256 << 10) -> BinaryIO:
        """A seekable, read-only file over the stored object that reads by ranges.

        Only the bytes read (in blocks of at least ``buffer_size``) are
        fetched from the store, so a parser that seeks (``/frames``,
        ``/rendered``) costs the header and the frames it reads, not the object.
        """
        return RangeFile(self.store, ref.object_key, ref.size, buffer_size)  # type: ignore[return-value]

    def _record(self, principal: Principal, account_id: str, refs: list[InstanceRef], how: str,
               detail: dict | None = None) -> None:
        """One audit entry per study touched: who, what, when, how many instances."""
        per_study: dict[str, int] = {}
        for r in refs:
            per_study[r.study_uid] = per_study.get(r.study_uid, 0) + 1
        with self.db.session(write=True) as s:
            for study_uid, n in per_study.items():
                audit.record(s, account_id=account_id, actor=principal.label, action=f"study.{how}",
                             study_uid=study_uid, source=principal.source,
                             detail={"instances": n, **(detail or {})})

    def hand_over(
        self, principal: Principal, account_id: str, refs: list[InstanceRef], how: str, detail: dict | None,
        cancelled: Callable[[], bool],
    ) -> Iterator[tuple[InstanceRef, Dataset | None] | None]:
        """Each ref with its data set for a C-STORE sub-operation (None: it cannot be read, logged);
        a lone None when ``cancelled()`` holds before the next one, and nothing after it.

        When the iteration ends (done, cancelled or closed), one audit entry per study of the
        instances handed over ("study.<how>").
        """
        handed: list[InstanceRef] = []
        try:
            for ref in refs:
                if cancelled():
                    yield None
                    return
                try:
                    ds = dcmread(io.BytesIO(self.read(ref)))
                except Exception as exc:
                    log.error("%s: cannot read %s (%s): %s", how, ref.sop_uid, ref.object_key, exc)
                    yield ref, None
                    continue
                handed.append(ref)
                yield ref, ds
        finally:
            if handed:
                self._record(principal, account_id, handed, how, detail)

    def move_destination(self, principal: Principal, account_id: str, ae: str | None,
                         refs: list[InstanceRef]) -> tuple[tuple[str, int] | None, str]:
        """C-MOVE: ((host, port), "") for a destination that may receive ``refs``, else (None, reason).

        The destination must be a registered provider with host and port, and
        either be the caller or hold its own consent (a pull link in force, with
        the sensitive flag when a selected study is sensitive): moving an
        account's images to a third party the holder never authorised would
        bypass the holder's consent.
        """
        ae = (ae or "").strip()
        with self.db.session() as s:
            provider = provider_by_ae(s, ae)
            if provider is None:
                return None, f"move destination {ae!r} is not a registered provider"
            if not provider.host or not provider.port:
                return None, f"move destination {ae!r} has no host and port"
            study_uids = sorted({r.study_uid for r in refs})
            sensitive = provider.id != principal.id and bool(study_uids) and bool(s.scalar(
                select(Study.id).where(Study.account_id == account_id, Study.study_uid.in_(study_uids),
                                       Study.sensitive.is_(True)).limit(1)
            ))
            decision = decide_destination(s, principal, provider, account_id, sensitive=sensitive)
            if not decision.allowed:
                reason = ("destination's link lacks the sensitive flag" if decision.code is Reason.SENSITIVE
                          else "destination has no consent for this account")
                return None, reason
            return (provider.host, provider.port), ""


class RangeFile(io.RawIOBase):
    """A seekable file over ``store.open(key, start, end)`` range reads, with one read-ahead block.

    Not an ``io.BufferedReader`` on purpose: pydicom takes those for files on
    disk and asks for their ``name``.
    """

    def __init__(self, store: ObjectStore, key: str, size: int, block: int = 256 << 10) -> None:
        super().__init__()
        self.store, self.key, self.size, self.block = store, key, size, block
        self.pos = 0
        self._buf, self._buf_start = b"", 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self.pos = base + offset
        return self.pos

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.pos + size)
        if end <= self.pos:
            return b""
        lo, hi = self._buf_start, self._buf_start + len(self._buf)
        if lo <= self.pos and end <= hi:
            data = self._buf[self.pos - lo : end - lo]
        elif end - self.pos >= self.block:  # a large read: straight from the store, not kept
            data = self._fetch(self.pos, end)
        else:
            self._buf, self._buf_start = self._fetch(self.pos, min(self.size, self.pos + self.block)), self.pos
            data = self._buf[: end - self.pos]
        self.pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def _fetch(self, start: int, end: int) -> bytes:
        chunks = self.store.open(self.key, start, end)
        try:
            return b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
