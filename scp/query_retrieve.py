"""DIMSE Query/Retrieve SCP: C-FIND, C-GET and C-MOVE for providers with pull consent.

Thin adapters over :class:`gateway.archive.query.QueryService` (C-FIND) and
:class:`gateway.archive.retrieve.RetrieveService` (C-GET, C-MOVE): decode the
identifier, ask the service (which asks the one consent decision, READ, and
hides deleted studies and sensitive ones without the sensitive flag), map the
outcome to a status. The principal and the account come from the association
policy (``event.assoc.dicomgate``).

Information models: Patient Root and Study Root, FIND / GET / MOVE; levels
PATIENT (Patient Root only), STUDY, SERIES, IMAGE. The query is built by
``Query.from_identifier`` and run by ``QueryService.matches``: a PATIENT-level
query runs at study level and answers one identifier per patient (PatientID +
PatientName), with patient attributes only; this module only encodes each
match as an identifier.

C-FIND (PS3.4 C.4.1.1.4)
  0xFF00 pending, one per match, with the requested return keys filled (keys
         this server cannot match are ignored for matching and returned
         empty), plus QueryRetrieveLevel, RetrieveAETitle (the account's AE
         title) and SpecificCharacterSet (ISO_IR 192 when a value is not ASCII)
  0x0000 done        0xFE00 cancelled (C-CANCEL between matches)
  0xA900 identifier does not match the SOP class: no or unknown
         QueryRetrieveLevel for this model, undecodable, or a matching value
         the query service refuses (bad date, range, UID...); Error Comment says which
  0xC000 unable to process: refused by consent (the link has no pull scope,
         or is no longer in force); Error Comment gives the decision's reason

C-GET (PS3.4 C.4.3.1.4) and C-MOVE (C.4.2.1.4)
  0xFF00 pending per C-STORE sub-operation; 0x0000 all sent, or nothing
         matched (zero sub-operations: an unknown study is not an error);
         0xB000 / 0xA702 some / all sub-operations failed (counted by
         pynetdicom, e.g. no accepted context for the stored transfer syntax);
         0xFE00 cancelled
  0xA900 identifier does not match the SOP class (level, missing or bad UIDs)
  0xC000 refused, zero sub-operations, Error Comment says why: no pull
         consent, or everything that matched is sensitive and the link lacks
         the sensitive flag ("the study is sensitive; the link lacks the
         sensitive flag"). Partly sensitive selections send what may be seen.
  0xA801 (C-MOVE) move destination refused, Error Comment says why: not a
         registered provider, no host/port, no consent to receive this
         account's data, or it could not be reached.

C-MOVE destinations: the Move Destination AE title must be a registered
(not removed) provider with host and port, and it must itself be allowed to
receive the data: either it is the requesting provider, or it has a link in
force with the account with pull consent (and the sensitive flag when a
selected study is sensitive), decided by ``RetrieveService.move_destination`` for
the destination as principal. Otherwise nothing is sent anywhere: moving an
account's images to a third party the holder never authorised would bypass
the consent the holder gave. The sub-association is opened by pynetdicom
with the gateway's own AE title (``DICOMGATE``) as calling AE: the AE object
is shared by all associations, so its title cannot safely be set per move.
Its presentation contexts are the (SOP class, stored transfer syntax) pairs
of the selection, plus the uncompressed syntaxes for uncompressed objects, so
objects go out as stored and are never transcoded.

Audit: one entry per study handed over for transfer ("study.c-get",
"study.c-move" with the destination), written when the handler finishes.

pynetdicom's handler contract only lets a C-GET end with a failure after at
least one announced sub-operation (which it then reports as failed), and a
C-MOVE refusal before the destination is known can only be 0xA801 without a
comment. To answer "refused, zero sub-operations, with an Error Comment",
:func:`_answer_instead` amends that one final response on its way out.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from typing import Any, Iterator

from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.uid import UID

from gateway.archive.access import NotPermitted, NotVisible
from gateway.archive.query import ATTRIBUTES, PATIENT_COUNTS, PATIENT_KEYS, Query, QueryError, query_retrieve_level
from gateway.archive.retrieve import InstanceRef, NotFound, Selection
from gateway.runtime.services import Services
from scp.status import error_comment, status

log = logging.getLogger(__name__)

PENDING = 0xFF00
CANCEL = 0xFE00
IDENTIFIER_MISMATCH = 0xA900
REFUSED = 0xC000
MOVE_DESTINATION_REFUSED = 0xA801

PATIENT_ROOT = {
    "1.2.840.10008.5.1.4.1.2.1.1",  # FIND
    "1.2.840.10008.5.1.4.1.2.1.2",  # MOVE
    "1.2.840.10008.5.1.4.1.2.1.3",  # GET
}
UNIQUE_KEY = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
              "IMAGE": "SOPInstanceUID"}
_UNCOMPRESSED = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"]
#: what the query and retrieve services refuse with, mapped to a status here
_REFUSED = (NotPermitted, NotVisible)


class BadIdentifier(ValueError):
    """The identifier does not fit the information model (0xA900)."""


# ---------------------------------------------------------------- C-FIND
def handle_find(event, services: Services) -> Iterator[tuple[Any, Dataset | None]]:  # type: ignore[no-untyped-def]
    verdict = event.assoc.dicomgate
    try:
        identifier = _identifier(event)
        q = Query.from_identifier(identifier, patient_root=str(event.request.AffectedSOPClassUID) in PATIENT_ROOT)
    except (BadIdentifier, QueryError) as exc:
        yield status(IDENTIFIER_MISMATCH, str(exc)), None
        return
    assert q.qr_level is not None
    try:
        matches = services.query.matches(verdict.principal, verdict.account_id, q)
        first = next(matches, None)  # the consent decision and the query's validity are known here
    except QueryError as exc:
        yield status(IDENTIFIER_MISMATCH, str(exc)), None
        return
    except _REFUSED as exc:
        yield status(REFUSED, f"refused: {exc}"), None
        return
    retrieve_ae = services.query.retrieve_ae_title(verdict.account_id)
    charset = identifier.get("SpecificCharacterSet")
    if first is None:
        return
    for match in itertools.chain([first], matches):
        if event.is_cancelled:
            yield CANCEL, None
            return
        yield PENDING, _answer(q.qr_level, q.requested, match, retrieve_ae, charset)


def _identifier(event) -> Dataset:  # type: ignore[no-untyped-def]
    try:
        return event.identifier
    except Exception as exc:
        raise BadIdentifier(f"cannot decode the identifier: {exc}") from None


def _answer(level: str, keys: dict, match: dict, retrieve_ae: str, charset: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    wanted = dict(keys)
    unique = UNIQUE_KEY[level]
    wanted.setdefault(unique, (tag_for_keyword(unique), dictionary_VR(unique), None))
    texts: list[str] = []
    for name, (tag, vr, _) in wanted.items():
        value = None
        if name in PATIENT_COUNTS or (name in ATTRIBUTES and (level != "PATIENT" or name in PATIENT_KEYS)):
            value = _dicom_value(match.get(name))  # anything else: not supported here, returned empty
        elif name == "InstanceAvailability":
            value = "ONLINE"  # everything indexed is in the object store
        if isinstance(value, str):
            texts.append(value)
        ds.add_new(tag, vr, [] if vr == "SQ" else value)
    ds.RetrieveAETitle = retrieve_ae
    if any(not t.isascii() for t in texts):
        ds.SpecificCharacterSet = "ISO_IR 192"
    elif charset:
        ds.SpecificCharacterSet = charset
    return ds


def _dicom_value(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value] or None
    if isinstance(value, bool):
        return str(int(value))
    return value if isinstance(value, (int, str)) else str(value)


# ---------------------------------------------------------------- C-GET / C-MOVE
def handle_get(event, services: Services) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    selection, failure = _select(event, services)
    if failure is not None:
        _answer_instead(event, *failure)
        yield 0
        return
    yield len(selection.instances)
    yield from _sub_operations(event, services, selection.instances, "c-get", None)


def handle_move(event, services: Services) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    verdict = event.assoc.dicomgate
    selection, failure = _select(event, services)
    if failure is None:
        destination, reason = services.retrieve.move_destination(
            verdict.principal, verdict.account_id, event.move_destination, selection.instances)
        if destination is None:
            failure = (MOVE_DESTINATION_REFUSED, reason)
    if failure is not None:
        _answer_instead(event, *failure)
        yield None, None
        return
    if not selection.instances:
        yield destination
        yield 0
        return
    host, port = destination
    yield host, port, {"contexts": _contexts(selection.instances)}
    yield len(selection.instances)
    yield from _sub_operations(event, services, selection.instances, "c-move",
                               {"destination": event.move_destination})


def _select(event, services: Services) -> tuple[Selection, tuple[int, str] | None]:  # type: ignore[no-untyped-def]
    """The instances the identifier names, or (status, comment) for a refusal."""
    verdict = event.assoc.dicomgate
    empty = Selection([], 0)
    try:
        identifier = _identifier(event)
        level = query_retrieve_level(identifier, patient_root=str(event.request.AffectedSOPClassUID) in PATIENT_ROOT)
        uids = {k: _uid_list(identifier, k) for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID",
                                                      "SOPInstanceUID")}
    except (BadIdentifier, QueryError) as exc:
        return empty, (IDENTIFIER_MISMATCH, str(exc))
    needed = UNIQUE_KEY[level]
    if not uids[needed]:
        return empty, (IDENTIFIER_MISMATCH, f"a {level} retrieve needs {needed}")
    study_uids = uids["StudyInstanceUID"] or None
    if level == "PATIENT":
        try:
            study_uids = services.query.studies_of_patients(verdict.principal, verdict.account_id, uids["PatientID"])
        except QueryError as exc:
            return empty, (IDENTIFIER_MISMATCH, str(exc))
        except _REFUSED as exc:
            return empty, (REFUSED, f"refused: {exc}")
        if not study_uids:
            return empty, None
    try:
        selection = services.retrieve.select(
            verdict.principal, verdict.account_id, None, study_uids=study_uids,
            series_uids=(uids["SeriesInstanceUID"] or None) if level in ("SERIES", "IMAGE") else None,
            sop_uids=(uids["SOPInstanceUID"] or None) if level == "IMAGE" else None, require_any=False,
        )
    except QueryError as exc:
        return empty, (IDENTIFIER_MISMATCH, str(exc))
    except _REFUSED as exc:
        return empty, (REFUSED, f"refused: {exc}")
    except NotFound:
        return empty, None
    if not selection.instances and selection.withheld_sensitive:
        return selection, (REFUSED, "the study is sensitive; the link lacks the sensitive flag")
    return selection, None


def _uid_list(identifier: Dataset, keyword: str) -> list[str]:
    try:
        value = identifier.get(keyword)
    except Exception as exc:
        raise BadIdentifier(f"cannot decode {keyword}: {exc}") from None
    if value is None or value == "":
        return []
    values = value if isinstance(value, MultiValue) else str(value).split("\\")
    return [str(v).strip() for v in values if str(v).strip()]


def _sub_operations(event, services: Services, refs: list[InstanceRef], how: str,  # type: ignore[no-untyped-def]
                    detail: dict | None) -> Iterator[tuple[int, Any]]:
    verdict = event.assoc.dicomgate
    # closed with this generator (pynetdicom may stop early), so the audit is written at once
    with contextlib.closing(services.retrieve.hand_over(verdict.principal, verdict.account_id, refs, how, detail,
                                                        lambda: event.is_cancelled)) as items:
        for item in items:
            if item is None:
                yield CANCEL, None
                return
            ref, ds = item
            # not a Dataset: pynetdicom counts it as a failed sub-operation and goes on
            yield PENDING, ds if ds is not None else ref.sop_uid


def _contexts(refs: list[InstanceRef]) -> list:
    """Requested contexts for the sub-association: each SOP class with its stored transfer syntax."""
    from pynetdicom.presentation import build_context

    pairs: dict[tuple[str, tuple[str, ...]], None] = {}
    for r in refs:
        ts = r.transfer_syntax_uid
        syntaxes = (ts, *[u for u in _UNCOMPRESSED if u != ts]) if ts in _UNCOMPRESSED else (ts,)
        pairs.setdefault((r.sop_class_uid, syntaxes), None)
    return [build_context(UID(sop), list(ts)) for sop, ts in list(pairs)[:128]]


def _answer_instead(event, code: int, comment: str) -> None:  # type: ignore[no-untyped-def]
    """Make the next response to this request carry ``code`` and ``comment``.

    pynetdicom builds the final C-GET / C-MOVE response itself; this wraps
    the association's DIMSE ``send_msg`` for that one message (same thread,
    one request at a time per association) and then removes itself.
    """
    dimse = event.assoc.dimse
    original = dimse.send_msg
    msg_id = event.request.MessageID

    def send_msg(primitive, context_id):  # type: ignore[no-untyped-def]
        if getattr(primitive, "MessageIDBeingRespondedTo", None) == msg_id:
            try:
                del dimse.send_msg
            except AttributeError:
                pass
            primitive.Status = code
            primitive.ErrorComment = error_comment(comment)
            primitive.Identifier = None
        return original(primitive, context_id)

    dimse.send_msg = send_msg
