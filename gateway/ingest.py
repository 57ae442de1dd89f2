"""The one door in: every instance, from C-STORE or STOW-RS, is stored here.

Order, for each instance (see docs/architecture.md):

1. parse and validate the header (never the pixels);
2. classify sensitivity and ask the consent decision;
3. a same-UID resend with the same data set bytes is a success that stores
   nothing; different bytes under a stored UID are refused (first write wins);
4. write the object (streamed, fsynced, atomically renamed) under a key made
   of validated UIDs and the content digest;
5. insert the index rows and the audit entry in one transaction;
6. only then report success. If the index transaction fails, the object is
   removed again, so nothing is left half-stored.

The adapters map :class:`IngestResult` to a DIMSE status or a STOW failure
reason; they hold no rule of their own.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from consent.decision import Action, Principal, decide
from consent.sensitivity import Rule, classify
from gateway import audit
from gateway.accounts import account_ref
from gateway.db import Database
from gateway.db.base import utcnow
from gateway.db.models import Account, Instance, Patient, Series, Study
from gateway.dicomfile import InstanceHeader, MalformedInstance, dataset_offset, parse_instance
from storage import ObjectStore, StorageError
from storage.keys import instance_key

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class Outcome(str, enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # identical resend: success, nothing new stored
    REFUSED = "refused"  # no consent (push scope, sensitive flag, expiry, revocation)
    MALFORMED = "malformed"  # not a DICOM instance we can index
    MISMATCH = "mismatch"  # study UID differs from the one the request named
    CONFLICT = "conflict"  # same SOP Instance UID already stored with other content
    UNAVAILABLE = "unavailable"  # the study is being deleted: try again after the purge
    FAILED = "failed"  # storage or database failure: nothing was kept

    @property
    def ok(self) -> bool:
        return self in (Outcome.STORED, Outcome.DUPLICATE)


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    reason: str
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None


class IngestService:
    def __init__(self, db: Database, store: ObjectStore, rules: tuple[Rule, ...]) -> None:
        self.db = db
        self.store = store
        self.rules = rules

    def store_instance(self, principal: Principal, account_id: str, fp: BinaryIO, size: int, **kw) -> "IngestResult":  # type: ignore[no-untyped-def]
        """Store one Part 10 file (``fp`` seekable, ``size`` bytes) into the account."""
        from gateway.metrics import INGEST, INGEST_BYTES

        result = self._store_instance(principal, account_id, fp, size, **kw)
        INGEST.labels(result.outcome.value).inc()
        if result.outcome is Outcome.STORED:
            INGEST_BYTES.inc(size)
        return result

    def _store_instance(
        self,
        principal: Principal,
        account_id: str,
        fp: BinaryIO,
        size: int,
        *,
        expected_study: str | None = None,
        meta_must_match: bool = True,
    ) -> IngestResult:
        try:
            header = parse_instance(fp, size, meta_must_match=meta_must_match)
            start = dataset_offset(fp)
        except MalformedInstance as exc:
            return IngestResult(Outcome.MALFORMED, exc.reason)
        ids = dict(
            sop_class_uid=header.sop_class_uid, sop_instance_uid=header.sop_instance_uid,
            study_uid=header.study_uid, series_uid=header.series_uid,
        )
        if expected_study is not None and header.study_uid != expected_study:
            return IngestResult(
                Outcome.MISMATCH,
                f"Study Instance UID {header.study_uid} differs from {expected_study} in the request URL",
                **ids,
            )
        labels = classify(header.dataset, self.rules) if header.dataset is not None else []
        digest = _digest(fp, start)

        with self.db.session() as s:
            account = s.get(Account, account_id)
            study = _study(s, account_id, header.study_uid)
            sensitive = bool(labels) or bool(study is not None and study.sensitive)
            decision = decide(s, principal, Action.STORE, account_ref(account), sensitive=sensitive)
            if not decision.allowed:
                reason = f"refused: {decision.reason}"
                if decision.visible:
                    self._audit_refusal(principal, account_id, header, reason)
                return IngestResult(Outcome.REFUSED, reason, **ids)
            if study is not None and study.deleted_at is not None:
                return IngestResult(
                    Outcome.UNAVAILABLE,
                    f"study {header.study_uid} is being deleted; send it again after the purge", **ids,
                )
            existing = _instance(s, account_id, header.sop_instance_uid)
            if existing is not None:
                return _resend_result(existing, digest, ids)

        key = instance_key(account_id, header.study_uid, header.series_uid, header.sop_instance_uid, digest)
        try:
            self.store.put(key, _chunks(fp, 0, size))
        except (StorageError, OSError) as exc:
            log.error("object store failed for %s: %s", key, exc)
            return IngestResult(Outcome.FAILED, f"the object store failed: {exc}", **ids)

        for attempt in range(5):
            try:
                with self.db.session(write=True) as s:
                    existing = _instance(s, account_id, header.sop_instance_uid)
                    study_now = _study(s, account_id, header.study_uid)
                    if existing is not None:
                        result = _resend_result(existing, digest, ids)
                    elif study_now is not None and study_now.deleted_at is not None:
                        # deleted while the object was being written: never attach to it
                        result = IngestResult(
                            Outcome.UNAVAILABLE,
                            f"study {header.study_uid} is being deleted; send it again after the purge", **ids,
                        )
                    else:
                        self._index(s, principal, account_id, header, labels, digest, size, key)
                        return IngestResult(Outcome.STORED, "stored", **ids)
                # another association won the race for this SOP Instance UID
                if result.outcome is not Outcome.DUPLICATE:
                    self._remove_object(key)
                return result
            except IntegrityError:
                continue  # a concurrent insert of the same patient/study/series: read it and go on
            except OperationalError as exc:
                log.warning("index transaction failed (attempt %d): %s", attempt + 1, exc)
                continue
            except Exception as exc:
                log.exception("index transaction failed for %s", key)
                self._remove_object(key)
                return IngestResult(Outcome.FAILED, f"the index could not be updated: {exc}", **ids)
        self._remove_object(key)
        return IngestResult(Outcome.FAILED, "the index could not be updated (database busy)", **ids)

    # -- helpers -----------------------------------------------------------
    def _index(
        self, s: Session, principal: Principal, account_id: str, h: InstanceHeader,
        labels: list[str], digest: str, size: int, key: str,
    ) -> None:
        patient_key = f"{h.patient.get('patient_id') or ''}^{h.patient.get('issuer') or ''}"
        patient = s.scalar(select(Patient).where(Patient.account_id == account_id, Patient.patient_key == patient_key))
        if patient is None:
            patient = Patient(account_id=account_id, patient_key=patient_key, **h.patient)
            s.add(patient)
            s.flush()
        study = _study(s, account_id, h.study_uid)
        if study is None:
            study = Study(
                account_id=account_id, patient_pk=patient.id, study_uid=h.study_uid,
                sensitive=bool(labels), labels=",".join(labels), created_at=utcnow(), **h.study,
            )
            s.add(study)
            s.flush()
        elif labels and not set(labels) <= set(filter(None, study.labels.split(","))):
            merged = sorted(set(filter(None, study.labels.split(","))) | set(labels))
            study.labels = ",".join(merged)
            study.sensitive = True
        series = s.scalar(select(Series).where(Series.study_pk == study.id, Series.series_uid == h.series_uid))
        if series is None:
            series = Series(study_pk=study.id, series_uid=h.series_uid, **h.series)
            s.add(series)
            s.flush()
        s.add(
            Instance(
                account_id=account_id, series_pk=series.id, sop_uid=h.sop_instance_uid,
                sop_class_uid=h.sop_class_uid, transfer_syntax_uid=h.transfer_syntax_uid,
                size=size, digest=digest, object_key=key, source=principal.label[:120],
                stored_at=utcnow(), **h.instance,
            )
        )
        audit.record(
            s, account_id=account_id, actor=principal.label, action="instance.stored",
            study_uid=h.study_uid, source=principal.source,
            detail={
                "sop_instance_uid": h.sop_instance_uid, "series_uid": h.series_uid,
                "sop_class_uid": h.sop_class_uid, "transfer_syntax": h.transfer_syntax_uid,
                "bytes": size, "labels": labels,
            },
        )
        s.flush()

    def _audit_refusal(self, principal: Principal, account_id: str, h: InstanceHeader, reason: str) -> None:
        try:
            with self.db.session(write=True) as s:
                audit.record(
                    s, account_id=account_id, actor=principal.label, action="instance.refused",
                    study_uid=h.study_uid, source=principal.source,
                    detail={"sop_instance_uid": h.sop_instance_uid, "reason": reason},
                )
        except Exception:  # the refusal stands even if its audit entry cannot be written
            log.exception("could not audit a refusal")

    def _remove_object(self, key: str) -> None:
        try:
            with self.db.session() as s:
                if s.scalar(select(Instance.id).where(Instance.object_key == key)) is not None:
                    return  # an index row points at it (identical concurrent resend)
            self.store.delete(key)
        except Exception:
            log.exception("could not remove unindexed object %s; reconcile will find it", key)


def _study(s: Session, account_id: str, study_uid: str) -> Study | None:
    return s.scalar(select(Study).where(Study.account_id == account_id, Study.study_uid == study_uid))


def _instance(s: Session, account_id: str, sop_uid: str) -> Instance | None:
    return s.scalar(select(Instance).where(Instance.account_id == account_id, Instance.sop_uid == sop_uid))


def _resend_result(existing: Instance, digest: str, ids: dict) -> IngestResult:
    if existing.digest == digest:
        return IngestResult(Outcome.DUPLICATE, "already stored with identical content", **ids)
    return IngestResult(
        Outcome.CONFLICT,
        f"already stored with different content: SOP Instance UID {existing.sop_uid}",
        **ids,
    )


def _chunks(fp: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    fp.seek(start)
    left = end - start
    while left > 0:
        chunk = fp.read(min(CHUNK, left))
        if not chunk:
            raise OSError("the upload ended early")
        left -= len(chunk)
        yield chunk


def _digest(fp: BinaryIO, start: int) -> str:
    h = hashlib.sha256()
    fp.seek(start)
    while chunk := fp.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()
