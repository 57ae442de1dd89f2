"""Fuzz targets and input strategies shared by ``tests/fuzz`` and ``benchmarks/fuzz.py``.

Each target takes one input and either returns normally or raises one of its
*documented refusal* types; anything else is a crash. What counts as a
refusal is the contract of the code under test:

* ``dicom_ingest``: the ingest path's header read (``parse_instance``,
  ``dataset_offset``, the sensitivity rules, the digest) raises only
  :class:`gateway.dicom.part10.MalformedInstance` (-> 0xC000 / STOW "malformed");
* ``multipart``: :func:`dicomweb.multipart.iter_parts` raises only
  :class:`MultipartError` (-> 400), and what it yields (or refuses) does not
  depend on how the body is cut into reads;
* ``scp_pdu``: ``scp.pdu.read_pdu`` raises only ``PduRefused`` /
  ``PeerClosed`` and returns exactly one PDU within its bound, reading no
  byte beyond it;
* ``pdu``: pynetdicom turns any ``Exception`` of ``PDU.decode`` into Evt19
  (A-ABORT); an ``Exception`` in the state machine's actions after a
  successful decode (``to_primitive()``, the DIMSE command-set decode of a
  P-DATA-TF) is contained by ``StateMachine.do_action`` (the association
  ends): nothing else may escape.

Every target also runs under :func:`bounded`, which checks the time and the
Python heap (tracemalloc peak) one input may take.
"""

from __future__ import annotations

import io
import re
import struct
import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterator

from hypothesis import strategies as st

# ----------------------------------------------------------------------------- bounds

#: per-input bounds; generous (a loaded CI machine), but far below what a
#: runaway loop or an allocation driven by a length field would take
TIME_LIMIT_S = 10.0
HEAP_FIXED = 32 << 20  # bytes of heap any input may use
HEAP_PER_INPUT_BYTE = 64  # ... plus this much per byte of input


class BoundExceeded(AssertionError):
    """An input took more time or memory than the bounds allow."""


@contextmanager
def bounded(size: int) -> Iterator[None]:
    """Fail if the block takes more than TIME_LIMIT_S or allocates beyond the heap bound for ``size`` input bytes."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.monotonic()
    try:
        yield
    finally:
        elapsed = time.monotonic() - t0
        peak = tracemalloc.get_traced_memory()[1] - base
        if started:
            tracemalloc.stop()
    limit = HEAP_FIXED + HEAP_PER_INPUT_BYTE * size
    if peak > limit:
        raise BoundExceeded(f"heap peak {peak} bytes for a {size}-byte input (limit {limit})")
    if elapsed > TIME_LIMIT_S:
        raise BoundExceeded(f"{elapsed:.1f} s for a {size}-byte input (limit {TIME_LIMIT_S} s)")


# ----------------------------------------------------------------------------- mutations

_INTERESTING_U32 = (0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
                    0xFFFFFFFE, 0xFFFFFFFF)
_INTERESTING_U16 = (0, 1, 2, 8, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)


_VRS = (b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
        b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
        b"UR", b"US", b"UT", b"UV")
_LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"))
_VR_AT = re.compile(b"(?<=....)(?:" + b"|".join(_VRS) + b")(?=..)", re.DOTALL)


@st.composite
def mutated(draw: st.DrawFn, seeds: st.SearchStrategy[bytes], max_ops: int = 4) -> bytes:
    """A seed with a few structure-aware mutations: lengths set to edge values,
    bytes flipped, ranges deleted, duplicated or inserted, the tail cut off."""
    data = bytearray(draw(seeds))
    for _ in range(draw(st.integers(0, max_ops))):
        n = len(data)
        op = draw(st.sampled_from(("u32", "u16", "flip", "delete", "insert", "dup", "truncate", "vr", "vr")))
        pos = draw(st.integers(0, max(n - 1, 0)))
        if op == "vr":
            # an explicit VR element header: change its VR, or its length field to an edge value
            at = [m.start() for m in _VR_AT.finditer(data)]
            if at:
                i = at[draw(st.integers(0, len(at) - 1))]
                if draw(st.booleans()):
                    data[i:i + 2] = draw(st.sampled_from(_VRS + (b"TI", b"\x00\x00", b"ss")))
                elif bytes(data[i:i + 2]) in _LONG_VRS:
                    data[i + 4:i + 8] = struct.pack("<I", draw(st.sampled_from(_INTERESTING_U32)))
                else:
                    data[i + 2:i + 4] = struct.pack("<H", draw(st.sampled_from(_INTERESTING_U16)))
        elif op == "u32" and n >= 4:
            pos = min(pos, n - 4)
            fmt = draw(st.sampled_from(("<I", ">I")))
            data[pos:pos + 4] = struct.pack(fmt, draw(st.sampled_from(_INTERESTING_U32)))
        elif op == "u16" and n >= 2:
            pos = min(pos, n - 2)
            fmt = draw(st.sampled_from(("<H", ">H")))
            data[pos:pos + 2] = struct.pack(fmt, draw(st.sampled_from(_INTERESTING_U16)))
        elif op == "flip" and n:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete" and n:
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "dup" and n:
            length = draw(st.integers(1, 64))
            data[pos:pos] = data[pos:pos + length]
        elif op == "truncate" and n:
            del data[pos:]
    return bytes(data)


# ----------------------------------------------------------------------------- (a) DICOM ingest header read

_SEED_FILES = ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm",
               "rtplan.dcm", "SC_rgb_rle.dcm", "nested_priv_SQ.dcm", "JPEG2000.dcm")


@lru_cache(maxsize=1)
def dicom_seeds() -> tuple[bytes, ...]:
    """Small Part 10 files: pydicom's test files, and one with nested sequences
    and the sensitivity attributes (so the label walk has something to walk)."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

    out = []
    for name in _SEED_FILES:
        path = get_testdata_file(name)
        if path is not None:
            with open(path, "rb") as f:
                out.append(f.read())
    for ts, implicit in ((ExplicitVRLittleEndian, False), (ImplicitVRLittleEndian, True)):
        ds = Dataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["fuzz-seed", ts])
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["fuzz-study", ts])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["fuzz-series", ts])
        ds.PatientName = "Fuzz^Seed"
        ds.PatientID = "F1"
        ds.ConfidentialityCode = "PSY"
        item = Dataset()
        item.ConfidentialityConstraintOnPatientDataDescription = "HIV SDV"
        inner = Dataset()
        inner.ConfidentialityCode = "ETH"
        item.ReferencedSeriesSequence = Sequence([inner])
        ds.ReferencedStudySequence = Sequence([item, Dataset()])
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ts
        buf = io.BytesIO()
        ds.save_as(buf, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
        out.append(buf.getvalue())
        dcmread(io.BytesIO(out[-1]))  # the seed itself must be valid
    return tuple(out)


def _dataset_part(part10: bytes) -> tuple[bytes, str]:
    """(the data set after the File Meta, its transfer syntax) of a seed, for the DIMSE shape."""
    from pydicom import dcmread

    from gateway.dicom.part10 import dataset_offset

    fp = io.BytesIO(part10)
    start = dataset_offset(fp)
    ts = str(dcmread(io.BytesIO(part10), stop_before_pixels=True).file_meta.TransferSyntaxUID)
    return part10[start:], ts


@dataclass(frozen=True)
class DicomInput:
    """Either a Part 10 file as STOW receives it, or a data set as C-STORE
    receives it (the gateway prepends its own File Meta, ``meta_must_match``)."""

    data: bytes
    dimse: bool = False
    transfer_syntax: str = "1.2.840.10008.1.2"

    def __len__(self) -> int:
        return len(self.data)


def dicom_inputs() -> st.SearchStrategy[DicomInput]:
    for seed_file in dicom_seeds():  # imports and first-use caches, outside any input's time bound
        dicom_ingest(DicomInput(seed_file))
    seeds = st.sampled_from(dicom_seeds())
    stow = mutated(seeds, max_ops=4).map(DicomInput)
    raw = st.binary(max_size=600).map(lambda b: DicomInput(b"\x00" * 128 + b"DICM" + b))
    pairs = [_dataset_part(s) for s in dicom_seeds()]
    dimse = st.builds(
        lambda ds, ts: DicomInput(ds, True, ts),
        mutated(st.sampled_from([p[0] for p in pairs]), max_ops=4),
        st.sampled_from(sorted({p[1] for p in pairs})),
    )
    return st.one_of(stow, stow, dimse, raw)


def dicom_ingest(inp: DicomInput) -> str:
    """What ``IngestService._prepare`` runs on a received file before any consent or storage step:
    ``"malformed"`` (refused), ``"accepted"`` or ``"labelled"`` (a sensitivity label was found)."""
    from consent.sensitivity import DEFAULT_RULES, examine
    from gateway.dicom.part10 import MalformedInstance, dataset_offset, parse_instance, part10_header
    from gateway.archive.ingest import _digest

    if inp.dimse:
        data = part10_header("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", inp.transfer_syntax, "FUZZ") + inp.data
    else:
        data = inp.data
    fp = io.BytesIO(data)
    try:
        header = parse_instance(fp, len(data), meta_must_match=inp.dimse)
        start = dataset_offset(fp)
    except MalformedInstance:
        return "malformed"
    # as ingest reads them: the walk gets the parsed bytes, so it re-reads what the parse skipped
    labels = examine(header.dataset, DEFAULT_RULES, source=header.source, end=header.source_end).labels \
        if header.dataset is not None else []
    _digest(fp, start)
    return "labelled" if labels else "accepted"


# ----------------------------------------------------------------------------- (b) multipart reader

BOUNDARY = "fuzz-b0undary"
_BND = BOUNDARY.encode()

# pieces that sit close to the grammar: partial delimiters, bare CR/LF, padding, header syntax
_TOKENS = (b"\r\n", b"\r", b"\n", b"--", b"-", b"--" + _BND, b"\r\n--" + _BND, b"\r\n--" + _BND + b"--",
           b"\r\n--" + _BND[:-1], b"\r\n--" + _BND + b" \t", b"\r\n\r\n", b"Content-Type: application/dicom",
           b"Content-Type: ", b"multipart/related; boundary=", b"X-A: b", b" folded", b":", b"\x00", b";",
           b'"', b"\xff", b"a" * 40)


def body_fragments() -> st.SearchStrategy[bytes]:
    return st.one_of(st.sampled_from(_TOKENS), st.binary(max_size=24))


_part_header = st.tuples(
    st.sampled_from(("Content-Type", "Content-Location", "X-Extra", "content-id")),
    st.one_of(st.sampled_from(("application/dicom", 'application/dicom; transfer-syntax="1.2.840.10008.1.2.1"',
                               "text/plain; charset=utf-8")),
              st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=20).map(str.strip)),
)
_part_body = st.lists(body_fragments(), max_size=12).map(b"".join).map(
    lambda b: b.replace(b"\r\n--" + _BND, b"\r\n-X" + _BND))


@st.composite
def multipart_messages(draw: st.DrawFn) -> tuple[list[tuple[dict[str, str], bytes]], bytes]:
    """(parts, encoded body): well-formed bodies, with preamble and epilogue."""
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        headers = dict(draw(st.lists(_part_header, max_size=3, unique_by=lambda h: h[0].lower())))
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type" or _valid_ctype(v)}
        parts.append((headers, draw(_part_body)))
    from dicomweb.multipart import write_parts

    body = b"".join(write_parts(parts, BOUNDARY))
    preamble = draw(st.sampled_from((b"", b"preamble\r\n", b"\r\n")))
    epilogue = draw(st.sampled_from((b"", b"epilogue", b"\r\n--" + _BND + b"\r\nX")))
    return parts, preamble + body + epilogue


def _valid_ctype(value: str) -> bool:
    from dicomweb.media import MediaTypeError, parse_content_type

    try:
        parse_content_type(value)
    except MediaTypeError:
        return False
    return True


def multipart_bodies() -> st.SearchStrategy[bytes]:
    """Arbitrary bodies: well-formed ones mutated, and token soup."""
    soup = st.lists(body_fragments(), max_size=30).map(b"".join)
    return st.one_of(mutated(multipart_messages().map(lambda m: m[1]), max_ops=3), soup)


class ChunkedStream:
    """A stream that answers each ``read(n)`` with at most the next planned
    size (short reads, as a socket-backed WSGI input gives)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data = data
        self.pos = 0
        self.sizes = sizes or [len(data) or 1]
        self.i = 0

    def read(self, n: int = -1) -> bytes:
        want = self.sizes[self.i % len(self.sizes)]
        self.i += 1
        if n is not None and n >= 0:
            want = min(want, n)
        out = self.data[self.pos:self.pos + max(want, 1)]
        self.pos += len(out)
        return out


def read_multipart(stream: Any, *, chunk_size: int, max_header_bytes: int = 256,
                   max_total: int | None = None) -> list[tuple[dict[str, str], str, bytes]] | str:
    """The parts of a body as plain values, or the refusal's class name (the only exception allowed)."""
    from dicomweb.multipart import MultipartError, iter_parts

    out = []
    try:
        for part in iter_parts(stream, BOUNDARY, chunk_size=chunk_size, spool_threshold=1 << 16,
                               max_header_bytes=max_header_bytes, max_total=max_total):
            with part:
                data = part.read()
                assert part.size == len(data), (part.size, len(data))
                out.append((part.headers, part.content_type, data))
    except MultipartError as exc:
        return type(exc).__name__
    return out


def multipart(body: bytes, chunk_size: int, sizes: list[int]) -> None:
    """The same parts (or the same refusal) whatever the chunking, and no other exception."""
    whole = read_multipart(io.BytesIO(body), chunk_size=1 << 20)
    cut = read_multipart(ChunkedStream(body, sizes), chunk_size=chunk_size)
    assert cut == whole, f"chunking changed the result: {cut!r} != {whole!r}"


# ----------------------------------------------------------------------------- (c) DIMSE PDU reader

def _pdu(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBL", kind, 0, len(payload)) + payload


@lru_cache(maxsize=1)
def pdu_seeds() -> tuple[bytes, ...]:
    """Valid PDUs of every type a peer sends us, built with pynetdicom's own encoders."""
    from pydicom.dataset import Dataset
    from pynetdicom.dsutils import encode
    from pynetdicom import build_context
    from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RQ, A_RELEASE_RP, A_RELEASE_RQ
    from pynetdicom.pdu_primitives import (
        A_ASSOCIATE,
        AsynchronousOperationsWindowNegotiation,
        ImplementationClassUIDNotification,
        ImplementationVersionNameNotification,
        MaximumLengthNotification,
        SCP_SCU_RoleSelectionNegotiation,
        SOPClassExtendedNegotiation,
        UserIdentityNegotiation,
    )

    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title = "FUZZSCU"
    prim.called_ae_title = "DICOMGATE"
    prim.presentation_context_definition_list = [
        build_context("1.2.840.10008.1.1"),
        build_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]),
    ]
    for i, ctx in enumerate(prim.presentation_context_definition_list):
        ctx.context_id = 2 * i + 1
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16382
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.826.0.1.3680043.9.3811"
    ver = ImplementationVersionNameNotification()
    ver.implementation_version_name = "FUZZ_1"
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = "1.2.840.10008.5.1.4.1.1.2"
    role.scu_role, role.scp_role = True, True
    ext = SOPClassExtendedNegotiation()
    ext.sop_class_uid = "1.2.840.10008.5.1.4.1.1.2"
    ext.service_class_application_information = b"\x01\x01"
    ident = UserIdentityNegotiation()
    ident.user_identity_type = 2
    ident.primary_field = b"user"
    ident.secondary_field = b"pass"
    asyn = AsynchronousOperationsWindowNegotiation()
    asyn.maximum_number_operations_invoked = 1
    asyn.maximum_number_operations_performed = 1
    prim.user_information = [ml, impl, ver, role, ext, ident, asyn]
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(prim)

    # a C-ECHO-RQ and a C-STORE-RQ command set (implicit VR little endian), as P-DATA-TF PDVs
    def command(**kw: Any) -> bytes:
        ds = Dataset()
        for k, v in kw.items():
            setattr(ds, k, v)
        return encode(ds, True, True)

    echo = command(AffectedSOPClassUID="1.2.840.10008.1.1", CommandField=0x0030, MessageID=1,
                   CommandDataSetType=0x0101)
    store = command(AffectedSOPClassUID="1.2.840.10008.5.1.4.1.1.2", CommandField=0x0001, MessageID=2,
                    Priority=0, CommandDataSetType=0x0000, AffectedSOPInstanceUID="1.2.3.4.5")
    # command group length first, as senders write it
    echo = struct.pack("<HHI", 0, 0, 4) + struct.pack("<I", len(echo)) + echo
    store = struct.pack("<HHI", 0, 0, 4) + struct.pack("<I", len(store)) + store

    def pdv(ctx: int, header: int, data: bytes) -> bytes:
        return struct.pack(">LB", len(data) + 2, ctx) + bytes([header]) + data

    p_echo = _pdu(0x04, pdv(1, 0x03, echo))
    p_store = _pdu(0x04, pdv(3, 0x01, store[:20]) + pdv(3, 0x03, store[20:]) + pdv(3, 0x02, b"\x08\x00\x16\x00"))
    abort = A_ABORT_RQ()
    abort.source, abort.reason_diagnostic = 0, 0
    return (rq.encode(), p_echo, p_store, A_RELEASE_RQ().encode(), A_RELEASE_RP().encode(), abort.encode())


def pdu_inputs() -> st.SearchStrategy[bytes]:
    """Mutated valid PDUs (with the PDU length kept right half of the time, so
    the decoder sees the damage rather than a length mismatch), and raw bytes."""
    def fix_length(b: bytes) -> bytes:
        return b[:2] + struct.pack(">L", max(len(b) - 6, 0)) + b[6:] if len(b) >= 6 else b

    for seed_pdu in pdu_seeds():  # imports and first-use caches, outside any input's time bound
        pynetdicom_pdu(seed_pdu)
    mut = mutated(st.sampled_from(pdu_seeds()), max_ops=4)
    raw = st.builds(_pdu, st.sampled_from((1, 2, 3, 4, 5, 6, 7)), st.binary(max_size=200))
    return st.one_of(mut.map(fix_length), mut.map(fix_length), mut, raw)


def pynetdicom_pdu(data: bytes) -> str:
    """Decode a whole PDU as ``scp.compat.EventDUL._read_pdu_data`` does (pynetdicom's
    ``_decode_pdu``), then run what follows a successful decode in pynetdicom's state
    machine: ``to_primitive()`` (FSM actions AE-6, DT-2, AR-2, AA-3) and, for a
    P-DATA-TF, the DIMSE message decode (``DIMSEServiceProvider.receive_primitive``).

    Returns what became of the PDU: ``"decoded"``; ``"refused"`` (decode raised:
    Evt19, A-ABORT); ``"contained: <exception>"`` (the state machine's action
    raised: ``StateMachine.do_action`` logs it and kills the DUL, the connection
    is closed). Anything that is not an ``Exception`` propagates.
    """
    from pynetdicom.dimse_messages import DIMSEMessage
    from pynetdicom.dul import _PDU_TYPES  # type: ignore[attr-defined]

    if len(data) < 6 or data[0] not in range(1, 8) or struct.unpack(">L", data[2:6])[0] != len(data) - 6:
        return "refused by the reader"  # read_pdu (or pynetdicom's reader) never hands this on
    cls, _event = _PDU_TYPES[data[0:1]]
    pdu = cls()
    try:
        pdu.decode(data)
    except Exception:
        return "refused"
    try:
        primitive = pdu.to_primitive()
        if data[0] == 0x04:
            DIMSEMessage().decode_msg(primitive)
    except Exception as exc:
        return f"contained: {type(exc).__name__}"
    return "decoded"


class FakeSocket:
    """The part of a socket ``scp.pdu.read_pdu`` uses, answering ``recv_into`` in planned sizes."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data = data
        self.pos = 0
        self.sizes = sizes or [len(data) or 1]
        self.i = 0

    def settimeout(self, value: float | None) -> None:
        pass

    def recv_into(self, view: memoryview) -> int:
        want = min(self.sizes[self.i % len(self.sizes)], len(view))
        self.i += 1
        chunk = self.data[self.pos:self.pos + want]
        view[:len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


#: small bounds, so that the heap bound below is tight
PDU_LIMITS = {"max_associate_rq": 4096, "max_pdata": 16384}


def scp_pdu(data: bytes, sizes: list[int], negotiating: bool) -> str:
    """``scp.pdu.read_pdu`` on a connection delivering ``data`` in ``sizes`` pieces, then
    the decode of what it returns (:func:`pynetdicom_pdu`).

    Properties: only ``PduRefused`` / ``PeerClosed`` escape the reader; what it
    returns is exactly the first PDU of the input (no byte more read), of a
    known type and within its bound.
    """
    import time as _time

    from scp.pdu import KNOWN_TYPES, PduLimits, PduRefused, PeerClosed, read_pdu

    limits = PduLimits(**PDU_LIMITS)
    sock = FakeSocket(data, sizes)
    try:
        pdu = read_pdu(sock, limits, negotiating=negotiating, deadline=_time.monotonic() + 60,  # type: ignore[arg-type]
                       restore_timeout=None)
    except PduRefused as exc:
        return f"refused by the reader: {exc.kind}"
    except PeerClosed:
        return "peer closed"
    length = struct.unpack(">L", bytes(pdu[2:6]))[0]
    assert bytes(pdu) == data[:6 + length], "read_pdu returned bytes other than the PDU sent"
    assert sock.pos == 6 + length, f"read_pdu read {sock.pos} bytes for a PDU of {6 + length}"
    assert pdu[0] in KNOWN_TYPES and length <= limits.bound(pdu[0], negotiating)
    return pynetdicom_pdu(bytes(pdu))


def scp_pdu_inputs() -> st.SearchStrategy[tuple[bytes, list[int], bool]]:
    """PDU inputs, sometimes followed by more bytes (the next PDU), with how the connection cuts them."""
    tail = st.sampled_from((b"", b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00", b"\x00" * 7))
    data = st.builds(lambda a, b: a + b, pdu_inputs(), tail)
    return st.tuples(data, st.lists(st.integers(1, 300), min_size=1, max_size=4), st.booleans())
