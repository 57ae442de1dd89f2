"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data, rendered images.

Instances are streamed from the object store as stored, byte for byte
(``transfer-syntax=*`` and the default); a transfer syntax other than the
stored one cannot be given (we never transcode) and answers 406. What the
caller may not see answers 404, exactly like what does not exist.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any, Iterable, Iterator

from flask import Blueprint, Response, current_app, json, request
from pydicom import dcmread

from consent.decision import Principal
from dicomweb.dicomjson import dataset_json
from dicomweb.media import MediaTypeError, parse_accept
from dicomweb.multipart import new_boundary, write_parts
from gateway.dicom.uri import URI
from gateway.dicom.frames import (MAX_FRAME_NUMBER, FrameDecodeError, FrameError, FrameListRefused, FrameOutOfRange,
                            FrameTooLarge, decoded_frames, frame_media_type, header_dataset, iter_raw_frames,
                            open_source, parse_frame_list)
from gateway.dicom.render import BadRenderArgument, RenderError, parse_viewport, parse_window, render, thumbnail
from gateway.http.auth import HttpError, principal_from_request, service_errors
from gateway.ops.metrics import REFUSALS
from gateway.numbers import NumberError, parse_int
from gateway.archive.retrieve import InstanceRef, Retrieval, Selection
from gateway.runtime.services import Services
from gateway.http.urls import dicomweb_root

log = logging.getLogger(__name__)
bp = Blueprint("wado", __name__)
BASE = "/accounts/<account_id>/dicomweb"
STUDY = f"{BASE}/studies/<study>"
SERIES = f"{STUDY}/series/<series>"
INSTANCE = f"{SERIES}/instances/<sop>"
HEADER_PROBE = 64 << 10


def _services() -> Services:
    return current_app.config["services"]


def _accept() -> list[tuple[str, dict[str, str]]]:
    try:
        return parse_accept(request.headers.get("Accept"))
    except MediaTypeError as exc:
        raise HttpError(400, f"bad Accept header: {exc}") from None


def _select(account_id: str, study: str, series: str | None = None, sop: str | None = None) -> tuple[Principal, Selection]:
    """A lookup only (nothing of the instances is sent): not audited."""
    svc = _services()
    principal = principal_from_request(svc, request)
    with service_errors(account_id):
        return principal, svc.retrieve.select(principal, account_id, study, series, sop)


@contextlib.contextmanager
def _retrieval(account_id: str, how: str, detail: dict[str, Any], study: str, series: str | None = None,
               sop: str | None = None) -> Iterator[Retrieval]:
    """The service's audited retrieval: the audit entries are written when the answer is built
    (the block ends normally); an HttpError raised inside writes none."""
    svc = _services()
    principal = principal_from_request(svc, request)
    with contextlib.ExitStack() as stack:
        with service_errors(account_id):
            retrieval = stack.enter_context(
                svc.retrieve.retrieval(principal, account_id, how, detail, study, series, sop))
        yield retrieval


def _base(account_id: str) -> str:
    return dicomweb_root(account_id)


# ---------------------------------------------------------------- instances
def _wanted_transfer_syntax() -> str:
    """'*' (as stored) unless the client names one; 406 for what we cannot give."""
    for mtype, params in _accept():
        if mtype in ("*/*", "multipart/*", "multipart/related"):
            if mtype == "multipart/related" and params.get("type", "application/dicom").lower() != "application/dicom":
                continue
            return params.get("transfer-syntax", "*")
    raise HttpError(406, 'instances are available as multipart/related; type="application/dicom" only')


def _instances_response(account_id: str, sel: Selection) -> Response:
    svc = _services()
    ts = _wanted_transfer_syntax()
    if ts != "*" and any(ref.transfer_syntax_uid != ts for ref in sel.instances):
        raise HttpError(406, f"the instances are stored in other transfer syntaxes than {ts} and are never transcoded; ask for transfer-syntax=*")
    boundary = new_boundary()
    base = _base(account_id)  # the generator below runs after the request context is gone

    def parts() -> Iterator[tuple[dict[str, str], Iterator[bytes]]]:
        for ref in sel.instances:
            headers = {
                "Content-Type": f"application/dicom; transfer-syntax={ref.transfer_syntax_uid}",
                "Content-Length": str(ref.size),
                "Content-Location": str(URI(base, ref.study_uid, ref.series_uid, ref.sop_uid)),
            }
            yield headers, svc.retrieve.open(ref)

    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return Response(write_parts(parts(), boundary), status=200, content_type=ctype, direct_passthrough=True)


def _instances(account_id: str, study: str, series: str | None = None, sop: str | None = None) -> Response:
    with _retrieval(account_id, "retrieved", {"via": "wado-rs"}, study, series, sop) as r:
        return _instances_response(account_id, r.selection)


@bp.get(STUDY)
def study_instances(account_id: str, study: str) -> Response:
    return _instances(account_id, study)


@bp.get(SERIES)
def series_instances(account_id: str, study: str, series: str) -> Response:
    return _instances(account_id, study, series)


@bp.get(INSTANCE)
def instance(account_id: str, study: str, series: str, sop: str) -> Response:
    return _instances(account_id, study, series, sop)


# ---------------------------------------------------------------- metadata
_PIXEL_TAG = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # (7FE0,0010) little / big endian


def read_header(svc: Services, ref: InstanceRef):  # type: ignore[no-untyped-def]
    """The data set without pixel data, reading only the object's first bytes where possible.

    A prefix is used only once it reaches the Pixel Data tag, so no header
    element can be cut off; objects without pixels are read whole, deflated
    ones are inflated only up to their pixel data.
    """
    if ref.transfer_syntax_uid == "1.2.840.10008.1.2.1.99":  # deflated: inflated as parsed, never whole

        try:
            ds = header_dataset(svc.retrieve.file(ref))
        except FrameError as exc:
            raise HttpError(500, f"the stored instance cannot be read: {exc}") from None
        del ds.inflated
        return ds
    probe = ref.size if not ref.rows else min(ref.size, HEADER_PROBE)
    while True:
        data = b"".join(svc.retrieve.open(ref, 0, probe))
        if probe >= ref.size or any(t in data[132:] for t in _PIXEL_TAG):
            return dcmread(io.BytesIO(data), stop_before_pixels=True)
        probe = min(ref.size, probe * 8)


def _metadata(account_id: str, study: str, series: str | None = None, sop: str | None = None) -> Response:
    with _retrieval(account_id, "metadata-viewed", {"via": "wado-rs"}, study, series, sop) as r:
        return _metadata_response(account_id, r.selection)


def _metadata_response(account_id: str, sel: Selection) -> Response:
    if not any(m in ("application/dicom+json", "application/json", "*/*", "application/*") for m, _ in _accept()):
        raise HttpError(406, "metadata is available as application/dicom+json")
    svc = _services()
    base = _base(account_id)
    out = []
    for ref in sel.instances:
        ds = read_header(svc, ref)
        url = str(URI(base, ref.study_uid, ref.series_uid, ref.sop_uid))
        item = dataset_json(ds, lambda tag, url=url: f"{url}/bulkdata/{tag}")
        if ref.rows:
            item["7FE00010"] = {"vr": "OB" if ref.transfer_syntax_uid not in _NATIVE else "OW",
                                "BulkDataURI": f"{url}/bulkdata/7FE00010"}
        out.append(item)
    return Response(json.dumps(out), status=200, mimetype="application/dicom+json")


_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}


@bp.get(f"{STUDY}/metadata")
def study_metadata(account_id: str, study: str) -> Response:
    return _metadata(account_id, study)


@bp.get(f"{SERIES}/metadata")
def series_metadata(account_id: str, study: str, series: str) -> Response:
    return _metadata(account_id, study, series)


@bp.get(f"{INSTANCE}/metadata")
def instance_metadata(account_id: str, study: str, series: str, sop: str) -> Response:
    return _metadata(account_id, study, series, sop)


# ---------------------------------------------------------------- bulk data
@bp.get(f"{INSTANCE}/bulkdata/<tag>")
def bulkdata(account_id: str, study: str, series: str, sop: str, tag: str) -> Response:
    with _retrieval(account_id, "bulkdata-viewed", {"tag": tag}, study, series, sop) as r:
        return _bulkdata_response(r.selection, tag)


def _bulkdata_response(sel: Selection, tag: str) -> Response:
    try:
        tag_int = int(tag, 16)
        if len(tag) != 8:
            raise ValueError
    except ValueError:
        raise HttpError(400, f"{tag!r} is not a tag (8 hex digits)") from None
    if not any(m in ("multipart/related", "multipart/*", "*/*", "application/octet-stream") for m, _ in _accept()):
        raise HttpError(406, 'bulk data is available as multipart/related; type="application/octet-stream"')
    svc = _services()
    [ref] = sel.instances
    streamed = _pixel_bulkdata(svc, ref, tag_int)
    if streamed is not None:
        boundary = new_boundary()
        body = write_parts([({"Content-Type": "application/octet-stream"}, streamed)], boundary)
        return Response(body, content_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}')
    ds = dcmread(io.BytesIO(svc.retrieve.read(ref)))
    if tag_int not in ds:
        raise HttpError(404, f"the instance has no attribute {tag}")
    value = ds[tag_int].value
    if not isinstance(value, (bytes, bytearray)):
        raise HttpError(404, f"{tag} is not a bulk data attribute")
    boundary = new_boundary()
    body = write_parts([({"Content-Type": "application/octet-stream"}, [bytes(value)])], boundary)
    return Response(body, content_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}')


def _pixel_bulkdata(svc: Services, ref: InstanceRef, tag: int) -> Iterable[bytes] | None:
    """Native pixel data of a defined length, streamed from the store by range; None otherwise.

    (A large multi-frame's Pixel Data is most of the object: it is never
    gathered in memory. Encapsulated and deflated values are left to the
    whole-object path.)
    """

    if tag not in (0x7FE00010, 0x7FE00008, 0x7FE00009) or ref.transfer_syntax_uid == "1.2.840.10008.1.2.1.99":
        return None
    try:
        src = open_source(svc.retrieve.file(ref))
    except FrameError:
        return None
    if src.pixel_tag != tag or src.length is None:
        return None
    if src.value is not None:
        return [src.value]
    assert src.value_tell is not None
    return svc.retrieve.open(ref, src.value_tell, src.value_tell + src.length)


# ---------------------------------------------------------------- frames
@bp.get(f"{INSTANCE}/frames/<frame_list>")
def frames(account_id: str, study: str, series: str, sop: str, frame_list: str) -> Response:
    """Frames as stored or decoded; the object is read by ranges (header + the frames), never whole.

    Refused with 400: a malformed list, a number given twice, more than
    ``max_frames_per_request`` numbers; 422: decoding that would need more
    than ``max_render_pixels`` pixels (the frames as stored are not bounded
    by it: they are their stored size).
    """

    settings = _services().settings
    try:
        numbers = parse_frame_list(frame_list, settings.max_frames_per_request)
    except FrameListRefused as exc:
        _refused("frame_list")
        raise HttpError(400, str(exc)) from None
    except FrameError as exc:
        raise HttpError(400, str(exc)) from None
    if any(n < 1 for n in numbers):
        raise HttpError(400, "frame numbers start at 1")
    with _retrieval(account_id, "frames-viewed", {"frames": numbers}, study, series, sop) as r:
        return _frames_response(r.selection, numbers)


def _frames_response(sel: Selection, numbers: list[int]) -> Response:
    svc = _services()
    settings = svc.settings
    [ref] = sel.instances
    stored_type, stored_ts = frame_media_type(ref.transfer_syntax_uid)
    want = None
    for mtype, params in _accept():
        inner = params.get("type", "").lower() if mtype == "multipart/related" else mtype
        asked_ts = params.get("transfer-syntax", "").strip()
        if mtype in ("*/*", "multipart/*") or inner in ("", "*/*") or asked_ts in ("*", stored_ts):
            want = stored_type  # PS3.18 8.7.3.5: transfer-syntax=* is "as stored", whatever the type
        elif inner == stored_type or (inner == "application/octet-stream"
                                      and asked_ts in ("", "1.2.840.10008.1.2.1")):
            want = inner
        if want:
            break
    if want is None:
        raise HttpError(406, f"frames of this instance are available as {stored_type} or application/octet-stream")
    fp = svc.retrieve.file(ref)
    chunks: Iterable[bytes]
    try:
        with _pixel_refusals():
            if want == stored_type:  # read one frame at a time as the response is sent
                ts, chunks = iter_raw_frames(fp, numbers, settings.max_render_pixels)
                ctype = f"{stored_type}; transfer-syntax={ts}"
            else:
                _, chunks = decoded_frames(fp, numbers, settings.max_render_pixels)
                ctype = "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    except FrameDecodeError as exc:
        raise HttpError(406, f"the stored frames cannot be decoded: {exc}") from None
    except FrameError as exc:
        raise HttpError(400, str(exc)) from None
    boundary = new_boundary()
    body = write_parts((({"Content-Type": ctype}, [c]) for c in chunks), boundary)
    return Response(body, content_type=f'multipart/related; type="{want}"; boundary={boundary}')


def _refused(kind: str) -> None:
    REFUSALS.labels(kind).inc()


@contextlib.contextmanager
def _pixel_refusals() -> Iterator[None]:
    """What reading frames and rendering both refuse: 404 for a frame the instance lacks, 422 above
    ``max_render_pixels`` (counted as a refusal)."""
    try:
        yield
    except FrameOutOfRange as exc:
        raise HttpError(404, str(exc)) from None
    except FrameTooLarge as exc:
        _refused("render_pixels")
        raise HttpError(422, str(exc)) from None


# ---------------------------------------------------------------- rendered
def _image_type() -> str:
    for mtype, _ in _accept():
        if mtype in ("image/jpeg", "image/png"):
            return mtype
        if mtype in ("*/*", "image/*"):
            return "image/jpeg"
    raise HttpError(406, "rendered images are available as image/jpeg or image/png")


def _rendered(account_id: str, study: str, series: str, sop: str, frame: int, thumb: bool) -> Response:
    """One frame rendered; 422 above ``max_render_pixels`` (checked before decoding), read by ranges."""
    mtype = _image_type()
    viewport = parse_viewport(request.args.get("viewport"))  # BadRenderArgument: 400
    window = parse_window(request.args.get("window"))
    try:
        quality = parse_int(request.args.get("quality"), "quality", minimum=1, maximum=100, default=90)
    except NumberError as exc:
        raise HttpError(400, str(exc)) from None
    if frame > MAX_FRAME_NUMBER:
        raise HttpError(400, f"frame number {str(frame)[:24]} is larger than any instance can have ({MAX_FRAME_NUMBER})")
    with _retrieval(account_id, "rendered-viewed", {"thumbnail": thumb}, study, series, sop) as r:
        return _rendered_response(r.selection, mtype, frame, thumb, viewport, window, quality)


def _rendered_response(sel: Selection, mtype: str, frame: int, thumb: bool, viewport: tuple[int, int] | None,
                       window: tuple[float, float, str] | None, quality: int | None) -> Response:
    svc = _services()
    [ref] = sel.instances
    max_pixels = svc.settings.max_render_pixels
    try:
        with _pixel_refusals(), svc.retrieve.file(ref) as fp:
            if thumb:
                image = thumbnail(fp, media_type=mtype, max_pixels=max_pixels)
            else:
                image = render(fp, frame=frame, media_type=mtype, viewport=viewport, window=window,
                               quality=quality, max_pixels=max_pixels)
    except BadRenderArgument:
        raise
    except RenderError as exc:
        # no pixels, or pixels we cannot decode: that representation cannot be given
        raise HttpError(406, str(exc)) from None
    return Response(image, mimetype=mtype)


@bp.get(f"{INSTANCE}/rendered")
def instance_rendered(account_id: str, study: str, series: str, sop: str) -> Response:
    return _rendered(account_id, study, series, sop, 1, False)


@bp.get(f"{INSTANCE}/frames/<int:frame>/rendered")
def frame_rendered(account_id: str, study: str, series: str, sop: str, frame: int) -> Response:
    return _rendered(account_id, study, series, sop, frame, False)


@bp.get(f"{INSTANCE}/thumbnail")
def instance_thumbnail(account_id: str, study: str, series: str, sop: str) -> Response:
    return _rendered(account_id, study, series, sop, 1, True)


@bp.get(f"{SERIES}/thumbnail")
@bp.get(f"{STUDY}/thumbnail")
def group_thumbnail(account_id: str, study: str, series: str | None = None) -> Response:
    """A study's or series' thumbnail: that of its middle image instance."""
    _image_type()
    _, sel = _select(account_id, study, series)
    images = [r for r in sel.instances if r.rows]
    if not images:
        raise HttpError(404, "no image in this study or series")
    mid = images[len(images) // 2]
    return _rendered(account_id, mid.study_uid, mid.series_uid, mid.sop_uid, 1, True)
