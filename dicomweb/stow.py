"""STOW-RS (PS3.18 10.5): ``POST /accounts/{id}/dicomweb/studies[/{study}]``.

The whole multipart body is parsed (parts spooled, memory bounded) before
any instance is stored, so a truncated or unparseable body stores nothing
(400). The complete parts then go through the ingest service as one batch
(one consent read, one index commit, each part judged on its own); the response
lists what was stored (0008,1199) and what failed and why (0008,1198).
"""

from __future__ import annotations

import logging
import re
import tempfile

from flask import Blueprint, Response, current_app, json, request

from consent.decision import Action
from dicomweb.media import MediaTypeError, parse_content_type
from dicomweb.multipart import BodyTooLarge, MultipartError, Part, boundary_from_content_type, iter_parts
from gateway.dicom.uri import URI
from gateway.http.auth import HttpError, authorise, principal_from_request
from gateway.archive.ingest import IngestResult, Outcome
from gateway.runtime.services import Services
from gateway.http.urls import dicomweb_root
from gateway.dicom.uids import is_valid_uid

log = logging.getLogger(__name__)
bp = Blueprint("stow", __name__)

DICOM_JSON = "application/dicom+json"
#: PS3.18 Table 10.5.3-2 / PS3.7 Annex C failure reasons
FAILURE_REASON = {
    Outcome.REFUSED: 0x0124,  # not authorised
    Outcome.MALFORMED: 0xC000,  # cannot understand
    Outcome.MISMATCH: 0xA900,  # does not match the study in the URL
    Outcome.CONFLICT: 0x0111,  # duplicate SOP instance with other content
    Outcome.UNAVAILABLE: 0xA700,  # out of resources (study being deleted)
    Outcome.FAILED: 0x0110,  # processing failure
}
#: parts kept in memory in total before the rest go straight to disk
MEMORY_BUDGET = 64 << 20
#: the STOW routes, for the HTTP server's body limits (gateway.http.guard)
STOW_PATH = re.compile(r"^/accounts/[^/]+/dicomweb/studies(/[^/]+)?/?$")
#: environ key: the server asks, before reading a large body, whether this request would be taken;
#: the view answers by setting it to PRECHECK_PASSED once every check that needs no body has passed
PRECHECK = "dicomgate.precheck"
PRECHECK_PASSED = "passed"


def services() -> Services:
    return current_app.config["services"]


@bp.post("/accounts/<account_id>/dicomweb/studies")
@bp.post("/accounts/<account_id>/dicomweb/studies/<study>")
def stow(account_id: str, study: str | None = None) -> Response:
    svc = services()
    if study is not None and not is_valid_uid(study):
        raise HttpError(400, f"{study[:80]!r} is not a valid Study Instance UID")
    principal = principal_from_request(svc, request)
    authorise(svc, principal, account_id, Action.STORE)

    content_type = request.headers.get("Content-Type", "")
    wrong_type = HttpError(415, "the body must be multipart/related; type=\"application/dicom\", "
                                "or one Part 10 file as application/dicom")
    try:
        mtype, params = parse_content_type(content_type)
    except MediaTypeError:
        raise wrong_type from None
    single = mtype == "application/dicom"  # one file as the body (Cloud Healthcare, Azure, curl)
    if not single and (mtype != "multipart/related" or params.get("type", "").lower() != "application/dicom"):
        raise wrong_type
    limit = svc.settings.max_stow_bytes
    if request.content_length is not None and request.content_length > limit:
        raise HttpError(413, f"the body is larger than the limit of {limit} bytes")
    boundary = ""
    if not single:
        try:
            boundary = boundary_from_content_type(content_type)
        except MultipartError as exc:
            raise HttpError(400, f"bad multipart body: {exc}") from None
    if request.environ.get(PRECHECK):
        request.environ[PRECHECK] = PRECHECK_PASSED
        return Response(status=204)

    parts = [_read_single_part(request.stream, limit)] if single else _read_all_parts(request.stream, boundary, limit)
    try:
        results = _store_parts(svc, principal, account_id, study, parts)
    finally:
        for p in parts:
            p.close()
    return _response(svc, account_id, results)


def _read_all_parts(stream, boundary: str, limit: int) -> list[Part]:  # type: ignore[no-untyped-def]
    parts: list[Part] = []
    in_memory = 0
    try:
        for part in iter_parts(stream, boundary, spool_threshold=8 << 20, max_total=limit):
            parts.append(part)
            if not getattr(part.file, "_rolled", True):
                in_memory += part.size
                if in_memory > MEMORY_BUDGET:
                    part.file.rollover()
    except BodyTooLarge:
        _close(parts)
        raise HttpError(413, f"the body is larger than the limit of {limit} bytes") from None
    except MultipartError as exc:
        _close(parts)
        raise HttpError(400, f"bad multipart body, nothing was stored: {exc}") from None
    except OSError as exc:  # client went away mid-body
        _close(parts)
        raise HttpError(400, f"the body could not be read, nothing was stored: {exc}") from None
    if not parts:
        raise HttpError(400, "the multipart body holds no parts")
    return parts


def _read_single_part(stream, limit: int) -> Part:  # type: ignore[no-untyped-def]
    """The whole body as one part (spooled to disk past 8 MiB), at most ``limit`` bytes."""
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    size = 0
    try:
        while chunk := stream.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise HttpError(413, f"the body is larger than the limit of {limit} bytes")
            spool.write(chunk)
    except OSError as exc:  # client went away mid-body
        spool.close()
        raise HttpError(400, f"the body could not be read, nothing was stored: {exc}") from None
    except HttpError:
        spool.close()
        raise
    if size == 0:
        spool.close()
        raise HttpError(400, "the body is empty")
    spool.seek(0)
    return Part(headers={"content-type": "application/dicom"}, content_type="application/dicom", file=spool,
                size=size)


def _close(parts: list[Part]) -> None:
    for p in parts:
        p.close()


def _store_parts(svc: Services, principal, account_id: str, study: str | None, parts: list[Part]) -> list[IngestResult]:  # type: ignore[no-untyped-def]
    """One ingest batch for the request's DICOM parts (one consent read, one index commit)."""
    results: list[IngestResult | None] = [None] * len(parts)
    dicom: list[int] = []
    for i, part in enumerate(parts):
        if part.content_type and part.content_type != "application/dicom":
            results[i] = IngestResult(Outcome.MALFORMED, f"part of type {part.content_type} is not application/dicom")
        else:
            dicom.append(i)
    stored = svc.ingest.store_many(principal, account_id, [(parts[i].file, parts[i].size) for i in dicom],
                                   expected_study=study, meta_must_match=False)
    for i, result in zip(dicom, stored):
        results[i] = result
    return [r for r in results if r is not None]


def _response(svc: Services, account_id: str, results: list[IngestResult]) -> Response:
    base = dicomweb_root(account_id)
    ok = [r for r in results if r.outcome.ok]
    failed = [r for r in results if not r.outcome.ok]
    body: dict = {}
    studies = {r.study_uid for r in ok}
    if len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [str(URI(base, studies.pop()))]}
    if ok:
        body["00081199"] = {"vr": "SQ", "Value": [
            {
                "00081150": {"vr": "UI", "Value": [r.sop_class_uid]},
                "00081155": {"vr": "UI", "Value": [r.sop_instance_uid]},
                "00081190": {"vr": "UR", "Value": [
                    str(URI(base, r.study_uid, r.series_uid, r.sop_instance_uid))]},
            }
            for r in ok
        ]}
    if failed:
        items = []
        for r in failed:
            item: dict = {}
            if r.sop_class_uid:
                item["00081150"] = {"vr": "UI", "Value": [r.sop_class_uid]}
            if r.sop_instance_uid:
                item["00081155"] = {"vr": "UI", "Value": [r.sop_instance_uid]}
            item["00081197"] = {"vr": "US", "Value": [FAILURE_REASON[r.outcome]]}
            # Error Comment is not part of the STOW item in PS3.18; it helps operators
            item["00000902"] = {"vr": "LO", "Value": [r.reason[:64]]}
            items.append(item)
        body["00081198"] = {"vr": "SQ", "Value": items}
        for r in failed:
            log.info("STOW to %s: %s %s (%s)", account_id, r.sop_instance_uid, r.outcome.value, r.reason)
    status = 200 if not failed else (409 if not ok else 202)
    return Response(json.dumps(body), status=status, mimetype=DICOM_JSON)
