"""The one door in: every instance, from C-STORE or STOW-RS, is stored here.

Order, for each batch (one C-STORE is a batch of one, one STOW-RS request is
one batch; see docs/architecture.md):

1. parse and validate each header (never the pixels);
2. classify sensitivity and ask the consent decision (one read transaction
   for the batch; the decision is taken once per distinct sensitivity, so
   every instance is judged by the same rule at the same moment);
3. a same-UID resend with the same data set bytes is a success that stores
   nothing; different bytes under a stored UID are refused (first write wins);
4. write the objects (streamed, fsynced, atomically renamed) under keys made
   of validated UIDs and the content digest;
5. insert the index rows and the audit entries in one write transaction
   (group commit: one commit, one WAL fsync, for the whole batch);
6. only then report success. If the index transaction fails, the objects
   are removed again, so nothing is left half-stored.

The adapters map :class:`IngestResult` to a DIMSE status or a STOW failure
reason; they hold no rule of their own. The hot path uses SQL Core
statements (no ORM identity map): at a few hundred instances a second the
ORM's per-row bookkeeping was the larger part of ingest's CPU.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator, Sequence

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from consent.decision import Action, Decision, Principal, decide, load_account
from consent.sensitivity import Rule, examine
from gateway.ops import audit
from gateway.ops.metrics import INGEST, INGEST_BYTES
from gateway.db import Database
from gateway.db.engine import WriterBusy
from gateway.db.base import utcnow
from gateway.db.models import Instance, Patient, Series, Study
from gateway.dicom.part10 import InstanceHeader, MalformedInstance, dataset_offset, parse_instance
from storage import ObjectStore, StorageError
from storage.keys import instance_key

log = logging.getLogger(__name__)
CHUNK = 1 << 20
#: bound on the number of values in one SQL IN (...) list
IN_CHUNK = 400


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


@dataclass
class _Item:
    """One parsed instance on its way through a batch."""

    index: int
    fp: BinaryIO
    size: int
    header: InstanceHeader
    labels: list[str]
    digest: str
    key: str = ""
    #: the study row this instance was judged against (None: the study was new)
    study_pk: int | None = None
    #: refused by a decision the principal may see, so the refusal is audited
    refused_visibly: bool = False
    #: why the sensitivity labels could not all be read (the instance is then sensitive: fail closed)
    unverified: str | None = None

    def result(self, outcome: Outcome, reason: str) -> IngestResult:
        return _result(self.header, outcome, reason)


def _result(h: InstanceHeader, outcome: Outcome, reason: str) -> IngestResult:
    return IngestResult(outcome, reason, sop_class_uid=h.sop_class_uid, sop_instance_uid=h.sop_instance_uid,
                        study_uid=h.study_uid, series_uid=h.series_uid)


class IngestService:
    def __init__(self, db: Database, store: ObjectStore, rules: tuple[Rule, ...]) -> None:
        self.db = db
        self.store = store
        self.rules = rules

    def store_instance(self, principal: Principal, account_id: str, fp: BinaryIO, size: int, **kw) -> IngestResult:  # type: ignore[no-untyped-def]
        """Store one Part 10 file (``fp`` seekable, ``size`` bytes) into the account."""
        return self.store_many(principal, account_id, [(fp, size)], **kw)[0]

    def store_many(
        self,
        principal: Principal,
        account_id: str,
        files: Sequence[tuple[BinaryIO, int]],
        *,
        expected_study: str | None = None,
        meta_must_match: bool = True,
    ) -> list[IngestResult]:
        """Store several Part 10 files as one batch; one result per file, in order.

        Each file succeeds or fails on its own (a STOW-RS response lists
        both); the batch shares one consent read and one index commit.
        """
        results: list[IngestResult | None] = [None] * len(files)
        items: list[_Item] = []
        for i, (fp, size) in enumerate(files):
            prepared = self._prepare(i, fp, size, expected_study, meta_must_match)
            if isinstance(prepared, IngestResult):
                results[i] = prepared
            else:
                items.append(prepared)
        for index, result in self._store_items(principal, account_id, items).items():
            results[index] = result
        done = [r for r in results if r is not None]
        assert len(done) == len(files)
        for r, (_, size) in zip(done, files):
            INGEST.labels(r.outcome.value).inc()
            if r.outcome is Outcome.STORED:
                INGEST_BYTES.inc(size)
        return done

    # -- the steps ---------------------------------------------------------
    def _prepare(
        self, index: int, fp: BinaryIO, size: int, expected_study: str | None, meta_must_match: bool
    ) -> _Item | IngestResult:
        try:
            header = parse_instance(fp, size, meta_must_match=meta_must_match)
            start = dataset_offset(fp)
        except MalformedInstance as exc:
            return IngestResult(Outcome.MALFORMED, exc.reason)
        if expected_study is not None and header.study_uid != expected_study:
            return _result(
                header, Outcome.MISMATCH,
                f"Study Instance UID {header.study_uid} differs from {expected_study} in the request URL",
            )
        labels, unverified = self._labels(header)
        header.dataset = header.source = None  # the header's values are extracted; let the element tree go
        return _Item(index, fp, size, header, labels, _digest(fp, start), unverified=unverified)

    def _labels(self, header: InstanceHeader) -> tuple[list[str], str | None]:
        """The instance's sensitivity labels, and why they could not all be read (None: they could).

        An instance whose labels cannot all be read is labelled UNVERIFIED,
        so it is sensitive (fail closed); the outcome and the log say so."""
        if header.dataset is None:
            return [], None
        found = examine(header.dataset, self.rules, source=header.source, end=header.source_end)
        if found.unverified is not None:
            log.warning("instance %s: sensitivity labels could not all be read (%s); treated as sensitive",
                        header.sop_instance_uid, found.unverified)
        return found.labels, found.unverified

    def _store_items(self, principal: Principal, account_id: str, items: list[_Item]) -> dict[int, IngestResult]:
        results: dict[int, IngestResult] = {}
        if not items:
            return results
        # the same SOP Instance UID twice in one batch: the first is stored, the rest are judged against it
        first: dict[str, _Item] = {}
        repeats: list[_Item] = []
        for item in items:
            if item.header.sop_instance_uid in first:
                repeats.append(item)
            else:
                first[item.header.sop_instance_uid] = item
        candidates = list(first.values())

        allowed: list[_Item] = []
        with self.db.session() as s:
            studies = _studies(s, account_id, {i.header.study_uid for i in candidates})
            existing = _existing(s, account_id, [i.header.sop_instance_uid for i in candidates])
            for item, verdict in _judge(s, principal, account_id, candidates, studies, existing):
                if verdict is None:
                    study = studies.get(item.header.study_uid)
                    item.study_pk = study.id if study is not None else None
                    allowed.append(item)
                else:
                    results[item.index] = verdict

        written: list[_Item] = []
        try:
            with self.store.batch():  # the batch's objects share their directory fsyncs
                for item in allowed:
                    h = item.header
                    # every write gets its own key (a nonce beside the digest): an ingest that
                    # fails can remove its object without touching an identical concurrent one's
                    item.key = instance_key(account_id, h.study_uid, h.series_uid, h.sop_instance_uid,
                                            item.digest, nonce=secrets.token_hex(4))
                    try:
                        self.store.put(item.key, _chunks(item.fp, 0, item.size))
                    except (StorageError, OSError) as exc:
                        log.error("object store failed for %s: %s", item.key, exc)
                        results[item.index] = item.result(Outcome.FAILED, f"the object store failed: {exc}")
                        continue
                    written.append(item)
        except (StorageError, OSError) as exc:  # the batch's end failed: none of its objects is durable
            log.error("object store failed to make %d object(s) durable: %s", len(written), exc)
            for item in written:
                results[item.index] = item.result(Outcome.FAILED, f"the object store failed: {exc}")
                self._remove_object(item.key)
            written = []
        except BaseException:  # anything else: nothing is answered for the batch; leave no object behind
            for item in written:
                self._remove_object(item.key)
            raise
        if written:
            results.update(self._commit(principal, account_id, written))

        for item in repeats:
            twin = first[item.header.sop_instance_uid]
            verdict = results[twin.index]
            if verdict.outcome.ok:  # the twin's bytes are what is stored now
                results[item.index] = _resend_result(item, twin.digest)
            elif verdict.outcome is Outcome.CONFLICT and item.header.sop_instance_uid in existing:
                # the twin differed from the stored copy; this one is judged against it, as if sent alone
                results[item.index] = _resend_result(item, existing[item.header.sop_instance_uid])
            else:  # refused, being deleted, failed: the same verdict as its twin
                results[item.index] = item.result(verdict.outcome, verdict.reason)
                item.refused_visibly = twin.refused_visibly

        refused = [(i, results[i.index].reason) for i in items
                   if i.refused_visibly and results[i.index].outcome is Outcome.REFUSED]
        if refused:
            self._audit_refusals(principal, account_id, refused)
        return results

    def _commit(self, principal: Principal, account_id: str, written: list[_Item]) -> dict[int, IngestResult]:
        """The write transaction for the objects just written; retried on a lost race.

        Everything the read transaction decided is decided again here, on what
        is current now: consent (a revocation or an account deletion that
        landed while the objects were written), the study's sensitivity and
        deletion (and that it is still the study row the instance was judged
        against: a purge may have removed it meanwhile), and whether the UID
        was stored by someone else. Objects of items not stored are removed.
        """
        for attempt in range(5):
            try:
                with self.db.session(write=True) as s:
                    existing = _existing(s, account_id, [i.header.sop_instance_uid for i in written])
                    studies = _studies(s, account_id, {i.header.study_uid for i in written})
                    out: dict[int, IngestResult] = {}
                    new: list[_Item] = []
                    for item, verdict in _judge(s, principal, account_id, written, studies, existing):
                        study = studies.get(item.header.study_uid)
                        if verdict is not None:
                            out[item.index] = verdict
                        elif item.study_pk is not None and (study is None or study.id != item.study_pk):
                            # the study was deleted and purged while the object was written
                            out[item.index] = item.result(Outcome.UNAVAILABLE, _being_deleted(item))
                        else:
                            new.append(item)
                    if new:
                        self._index(s, principal, account_id, new, studies)
                    out.update((i.index, i.result(Outcome.STORED, _stored(i))) for i in new)
                for item in written:
                    if out[item.index].outcome is not Outcome.STORED:
                        self._remove_object(item.key)
                return out
            except IntegrityError:
                continue  # a concurrent insert of the same patient/study/series: read it and go on
            except OperationalError as exc:
                log.warning("index transaction failed (attempt %d): %s", attempt + 1, exc)
                continue
            except WriterBusy as exc:  # already waited as long as a sender should: fail, do not retry
                for item in written:
                    self._remove_object(item.key)
                return {i.index: i.result(Outcome.FAILED, f"the index is busy: {exc}") for i in written}
            except Exception as exc:
                if len(written) > 1:
                    # one instance the database will not take must not fail the others: one by one
                    log.warning("index transaction for %d instances failed (%s); committing them one by one",
                                len(written), exc)
                    out = {}
                    for item in written:
                        out.update(self._commit(principal, account_id, [item]))
                    return out
                log.exception("index transaction failed for %s", written[0].key)
                self._remove_object(written[0].key)
                return {written[0].index: written[0].result(Outcome.FAILED, f"the index could not be updated: {exc}")}
        for item in written:
            self._remove_object(item.key)
        return {i.index: i.result(Outcome.FAILED, "the index could not be updated (database busy)") for i in written}

    # -- helpers -----------------------------------------------------------
    def _index(
        self, s: Session, principal: Principal, account_id: str, items: list[_Item], known: dict[str, "_StudyState"],
    ) -> None:
        """Insert patients, studies and series that are new, the instances and their audit entries.

        ``known``: the batch's studies that exist, read in this transaction.
        """
        conn = s.connection()
        now = utcnow()
        patients: dict[str, int] = {}
        studies: dict[str, int] = {}
        series: dict[tuple[int, str], int] = {}
        label_sets = {uid: set(filter(None, row.labels.split(","))) for uid, row in known.items()}
        instance_rows: list[dict] = []
        audit_rows: list[dict] = []
        for item in items:
            h = item.header
            study_pk = studies.get(h.study_uid)
            if study_pk is None and h.study_uid in known:
                study_pk = studies[h.study_uid] = known[h.study_uid].id
            if study_pk is None:
                patient_key = f"{h.patient.get('patient_id') or ''}^{h.patient.get('issuer') or ''}"
                patient_pk = patients.get(patient_key)
                if patient_pk is None:
                    patient_pk = conn.scalar(_SELECT_PATIENT, {"account": account_id, "key": patient_key})
                    if patient_pk is None:
                        patient_pk = conn.execute(insert(Patient).values(
                            account_id=account_id, patient_key=patient_key, **h.patient)).inserted_primary_key[0]
                    patients[patient_key] = patient_pk
                study_pk = studies[h.study_uid] = conn.execute(insert(Study).values(
                    account_id=account_id, patient_pk=patient_pk, study_uid=h.study_uid, sensitive=False,
                    labels="", created_at=now, **h.study)).inserted_primary_key[0]
                label_sets[h.study_uid] = set()
            if item.labels and not set(item.labels) <= label_sets[h.study_uid]:
                label_sets[h.study_uid] |= set(item.labels)
                conn.execute(update(Study).where(Study.id == study_pk).values(
                    labels=",".join(sorted(label_sets[h.study_uid])), sensitive=True))
            series_pk = series.get((study_pk, h.series_uid))
            if series_pk is None:
                series_pk = conn.scalar(_SELECT_SERIES, {"study": study_pk, "uid": h.series_uid})
                if series_pk is None:
                    series_pk = conn.execute(insert(Series).values(
                        study_pk=study_pk, series_uid=h.series_uid, **h.series)).inserted_primary_key[0]
                series[(study_pk, h.series_uid)] = series_pk
            instance_rows.append(dict(
                account_id=account_id, series_pk=series_pk, sop_uid=h.sop_instance_uid,
                sop_class_uid=h.sop_class_uid, transfer_syntax_uid=h.transfer_syntax_uid,
                size=item.size, digest=item.digest, object_key=item.key, source=principal.label[:120],
                stored_at=now, **h.instance,
            ))
            audit_rows.append(audit.entry(
                account_id=account_id, actor=principal.label, action="instance.stored",
                study_uid=h.study_uid, source=principal.source, time=now,
                detail={
                    "sop_instance_uid": h.sop_instance_uid, "series_uid": h.series_uid,
                    "sop_class_uid": h.sop_class_uid, "transfer_syntax": h.transfer_syntax_uid,
                    "bytes": item.size, "labels": item.labels,
                    **({"labels_unverified": item.unverified} if item.unverified else {}),
                },
            ))
        conn.execute(_INSERT_INSTANCES, instance_rows)
        audit.record_many(s, audit_rows)

    def _audit_refusals(self, principal: Principal, account_id: str, refusals: list[tuple[_Item, str]]) -> None:
        try:
            with self.db.session(write=True) as s:
                audit.record_many(s, [
                    audit.entry(
                        account_id=account_id, actor=principal.label, action="instance.refused",
                        study_uid=item.header.study_uid, source=principal.source,
                        detail={"sop_instance_uid": item.header.sop_instance_uid, "reason": reason},
                    )
                    for item, reason in refusals
                ])
        except Exception:  # the refusal stands even if its audit entry cannot be written
            log.exception("could not audit a refusal")

    def _remove_object(self, key: str) -> None:
        try:
            with self.db.session() as s:
                if s.scalar(select(Instance.id).where(Instance.object_key == key)) is not None:
                    return  # indexed after all (keys are per write, so this is only a guard)
            self.store.delete(key)
        except Exception:
            log.exception("could not remove unindexed object %s; reconcile will find it", key)


def _judge(
    s: Session, principal: Principal, account_id: str, items: list[_Item],
    studies: dict[str, "_StudyState"], existing: dict[str, str],
) -> Iterator[tuple[_Item, IngestResult | None]]:
    """Consent, deletion and resend verdicts for ``items`` (None: may be stored).
    Sets each item's ``refused_visibly``."""
    account = load_account(s, account_id)
    labelled = {i.header.study_uid for i in items if i.labels}
    decisions: dict[bool, Decision] = {}
    for item in items:
        study = studies.get(item.header.study_uid)
        # a study is sensitive once any of its instances is: an unlabelled instance
        # joining it, or arriving beside a labelled one, is judged as sensitive too
        sensitive = item.header.study_uid in labelled or bool(study is not None and study.sensitive)
        if sensitive not in decisions:
            decisions[sensitive] = decide(s, principal, Action.STORE, account, sensitive=sensitive)
        decision = decisions[sensitive]
        item.refused_visibly = not decision.allowed and decision.visible
        if not decision.allowed:
            yield item, item.result(Outcome.REFUSED, f"refused: {decision.reason}" + (
                f" (treated as sensitive: {item.unverified})" if sensitive and item.unverified else ""))
        elif study is not None and study.deleted_at is not None:
            yield item, item.result(Outcome.UNAVAILABLE, _being_deleted(item))
        elif item.header.sop_instance_uid in existing:
            yield item, _resend_result(item, existing[item.header.sop_instance_uid])
        else:
            yield item, None


# Statements built once: SQLAlchemy then reuses their compiled form, which
# keeps a C-STORE's index work to a handful of cheap executions.
_SELECT_STUDIES = (
    select(Study.study_uid, Study.id, Study.sensitive, Study.labels, Study.deleted_at)
    .where(Study.account_id == bindparam("account"), Study.study_uid.in_(bindparam("uids", expanding=True)))
)
_SELECT_EXISTING = (
    select(Instance.sop_uid, Instance.digest)
    .where(Instance.account_id == bindparam("account"), Instance.sop_uid.in_(bindparam("uids", expanding=True)))
)
_SELECT_PATIENT = select(Patient.id).where(
    Patient.account_id == bindparam("account"), Patient.patient_key == bindparam("key"))
_SELECT_SERIES = select(Series.id).where(Series.study_pk == bindparam("study"), Series.series_uid == bindparam("uid"))
_INSERT_INSTANCES = insert(Instance)


@dataclass(frozen=True)
class _StudyState:
    id: int
    sensitive: bool
    labels: str
    deleted_at: object


def _in_chunks(values: Iterable[str]) -> Iterator[list[str]]:
    values = sorted(set(values))
    for i in range(0, len(values), IN_CHUNK):
        yield values[i:i + IN_CHUNK]


def _studies(s: Session, account_id: str, study_uids: Iterable[str]) -> dict[str, _StudyState]:
    out: dict[str, _StudyState] = {}
    conn = s.connection()
    for chunk in _in_chunks(study_uids):
        for row in conn.execute(_SELECT_STUDIES, {"account": account_id, "uids": chunk}):
            out[row.study_uid] = _StudyState(row.id, bool(row.sensitive), row.labels or "", row.deleted_at)
    return out


def _existing(s: Session, account_id: str, sop_uids: Iterable[str]) -> dict[str, str]:
    """SOP Instance UID -> digest of what is already stored under it."""
    out: dict[str, str] = {}
    conn = s.connection()
    for chunk in _in_chunks(sop_uids):
        for row in conn.execute(_SELECT_EXISTING, {"account": account_id, "uids": chunk}):
            out[row.sop_uid] = row.digest
    return out


def _stored(item: _Item) -> str:
    if item.unverified:
        return f"stored as sensitive: the sensitivity labels could not all be read ({item.unverified})"
    return "stored"


def _being_deleted(item: _Item) -> str:
    return f"study {item.header.study_uid} is being deleted; send it again after the purge"


def _resend_result(item: _Item, stored_digest: str) -> IngestResult:
    if stored_digest == item.digest:
        return item.result(Outcome.DUPLICATE, "already stored with identical content")
    return item.result(
        Outcome.CONFLICT, f"already stored with different content: SOP Instance UID {item.header.sop_instance_uid}"
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
