"""Frame-level access to a stored DICOM Part 10 file (WADO-RS ``/frames``).

PS3.18 10.4 (Retrieve Transaction, frame resources) and 8.7.3 (media types
of frames). Everything here works on one stored object (``bytes`` or a
seekable binary file object) and never touches the database.

* :func:`raw_frames` returns the frames' bytes exactly as stored: a slice of
  native Pixel Data, or the compressed bytestream of each frame of
  encapsulated Pixel Data (Basic / Extended Offset Table aware). Nothing is
  decoded; when the Pixel Data value is large it is not even read whole: the
  header is parsed with ``defer_size`` and only the frames asked for are read
  with seeks.
* :func:`decoded_frames` decodes one frame at a time (pydicom + the pylibjpeg
  plugins) to native little-endian bytes, so a large multi-frame is never
  decoded in full.
* :func:`frame_media_type` maps a transfer syntax to the frame media type of
  PS3.18 Table 8.7.3-2 and its ``transfer-syntax`` parameter.

Errors are :class:`FrameError` (a ``ValueError`` whose message can be put in
an HTTP 400 body), :class:`FrameOutOfRange` (frame numbers that the
instance does not have: 404 by PS3.18) and :class:`FrameTooLarge` (decoding
would need more pixels than ``max_pixels``: a small stored object can decode
to gigabytes, so the decoded size is checked against the header *and* the
frame's own codestream header before anything is decoded).

Limits on what a caller may ask for live here (:func:`parse_frame_list`,
:func:`check_decode_size`); the HTTP layer passes the configured values.
"""

from __future__ import annotations

import io
import re
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, get_frame
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from gateway.runtime.settings import Settings

# Values larger than this are left on disk by the header parse; Pixel Data
# above it is read frame by frame with seeks.
DEFER_SIZE = 1024 * 1024

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
_PIXEL_TAGS = (PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA)
_PIXEL_KEYWORDS = {
    PIXEL_DATA: "PixelData",
    FLOAT_PIXEL_DATA: "FloatPixelData",
    DOUBLE_FLOAT_PIXEL_DATA: "DoubleFloatPixelData",
}

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_UNDEFINED_LENGTH = 0xFFFFFFFF


class FrameError(ValueError):
    """The frames asked for cannot be produced; the message says why (HTTP 400)."""


class FrameOutOfRange(FrameError):
    """A frame number the instance does not have (0, negative, or > Number of Frames)."""


class FrameDecodeError(FrameError):
    """The stored pixel data could not be decoded (unsupported or corrupt)."""


class FrameListRefused(FrameError):
    """A frame list over a limit: too many numbers, one given twice, a number no instance can have."""


class FrameTooLarge(FrameError):
    """Decoding would need more pixels than allowed (``max_render_pixels``): HTTP 422."""


#: the defaults of the bounds, for callers without settings (the HTTP layer passes the configured ones)
DEFAULT_MAX_PIXELS: int = Settings.max_render_pixels
DEFAULT_MAX_FRAMES: int = Settings.max_frames_per_request
#: the largest frame number there can be: Number of Frames is an IS (PS3.5 6.2)
MAX_FRAME_NUMBER = 2**31 - 1


# -- media types (PS3.18 Table 8.7.3-2) -----------------------------------------

_JPEG = {
    "1.2.840.10008.1.2.4.50",  # baseline (process 1)
    "1.2.840.10008.1.2.4.51",  # extended (process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # lossless (process 14)
    "1.2.840.10008.1.2.4.70",  # lossless SV1 (process 14, selection value 1)
    # retired JPEG processes, still image/jpeg bytestreams
    *(f"1.2.840.10008.1.2.4.{n}" for n in (52, 53, 54, 55, 56, 58, 59, 60, 61, 62, 63, 64, 65, 66)),
}
_MEDIA_TYPES: dict[str, str] = {
    **{uid: "image/jpeg" for uid in _JPEG},
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.1.98": "application/octet-stream",  # encapsulated uncompressed
    EXPLICIT_VR_LITTLE_ENDIAN: "application/octet-stream",
    "1.2.840.10008.1.2.2": "application/octet-stream",  # big endian: bytes as stored
}
# Native little-endian syntaxes whose frame bytes are Explicit VR Little Endian frames.
_AS_EXPLICIT_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99"}
_VIDEO = {
    "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101", "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.104", "1.2.840.10008.1.2.4.105",
    "1.2.840.10008.1.2.4.106", "1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108",
    "1.2.840.10008.1.2.4.100.1", "1.2.840.10008.1.2.4.101.1", "1.2.840.10008.1.2.4.102.1",
    "1.2.840.10008.1.2.4.103.1", "1.2.840.10008.1.2.4.104.1", "1.2.840.10008.1.2.4.105.1",
    "1.2.840.10008.1.2.4.106.1",
}


def frame_media_type(transfer_syntax_uid: str) -> tuple[str, str]:
    """(media type, ``transfer-syntax`` parameter) of frames in this transfer syntax.

    Native Implicit VR Little Endian and Deflated Explicit VR Little Endian
    frames are byte-identical to Explicit VR Little Endian frames and are
    labelled as such. Big endian frames are labelled with the big endian UID
    (the bytes are as stored; the caller decides whether to byte-swap).
    Video and unknown transfer syntaxes raise :class:`FrameError`.
    """
    ts = str(transfer_syntax_uid).strip().rstrip("\x00")
    if ts in _AS_EXPLICIT_LE:
        return "application/octet-stream", EXPLICIT_VR_LITTLE_ENDIAN
    if ts in _MEDIA_TYPES:
        return _MEDIA_TYPES[ts], ts
    if ts in _VIDEO:
        raise FrameError(f"transfer syntax {ts} is a video stream; frames cannot be retrieved from it")
    raise FrameError(f"no frame media type is known for transfer syntax {ts}")


# -- frame numbers ----------------------------------------------------------------

_FRAME_LIST = re.compile(r"^[ ]*[0-9]+[ ]*(,[ ]*[0-9]+[ ]*)*$", re.ASCII)


def parse_frame_list(text: str, max_frames: int | None = DEFAULT_MAX_FRAMES) -> list[int]:
    """``"1,3,5"`` (the ``{framelist}`` path segment) -> ``[1, 3, 5]``; FrameError if malformed.

    Refused (FrameError): anything but ASCII digits, commas and spaces; more
    than ``max_frames`` numbers (checked first, before any parsing); a number
    above :data:`MAX_FRAME_NUMBER` (no instance can have it); a number given
    twice (each costs a read or a decode, and ``1,1,1...`` multiplies one).
    """
    text = text or ""
    if max_frames is not None and text.count(",") + 1 > max_frames:
        raise FrameListRefused(
            f"the frame list has {text.count(',') + 1} frame numbers; at most {max_frames} may be asked "
            "for in one request (max_frames_per_request)"
        )
    if not _FRAME_LIST.match(text):
        raise FrameError(f"frame list {text[:80]!r} is not a comma-separated list of frame numbers")
    numbers: list[int] = []
    seen: set[int] = set()
    for part in text.split(","):
        digits = part.strip().lstrip("0") or "0"
        if len(digits) > len(str(MAX_FRAME_NUMBER)) or int(digits) > MAX_FRAME_NUMBER:
            raise FrameListRefused(f"frame number {digits[:24]}{'...' if len(digits) > 24 else ''} is larger "
                             f"than any instance can have ({MAX_FRAME_NUMBER})")
        n = int(digits)
        if n in seen:
            raise FrameListRefused(f"frame {n} is asked for more than once in the frame list")
        seen.add(n)
        numbers.append(n)
    return numbers


def frame_count(ds: Dataset) -> int:
    """Number of frames: Number of Frames (default 1); 0 when there is no pixel data."""
    if not any(tag in ds for tag in _PIXEL_TAGS):
        return 0
    value = ds.get("NumberOfFrames")
    if value is None or value == "":
        return 1
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise FrameError(f"Number of Frames (0028,0008) value {value!r} is not an integer") from None
    if count < 1:
        raise FrameError(f"Number of Frames (0028,0008) value {count} is not positive")
    return count


def check_frame_numbers(numbers: list[int], count: int) -> list[int]:
    """The frame numbers, or FrameError (empty / not integers) / FrameOutOfRange (0, < 0, > count)."""
    if not numbers:
        raise FrameError("no frame numbers were given")
    checked = []
    for n in numbers:
        if isinstance(n, bool) or not isinstance(n, int):
            raise FrameError(f"frame number {n!r} is not an integer")
        if n < 1 or n > count:
            if count == 0:
                raise FrameOutOfRange("the instance has no pixel data, so no frames")
            raise FrameOutOfRange(
                f"frame {n} does not exist: the instance has {count} frame{'s' if count != 1 else ''} (numbered from 1)"
            )
        checked.append(n)
    return checked


# -- reading the stored file ---------------------------------------------------------


@dataclass
class PixelSource:
    """A parsed stored instance and where its pixel data value is."""

    fp: BinaryIO
    ds: Dataset
    transfer_syntax: UID
    pixel_tag: int | None  # None: no pixel data
    pixel_vr: str | None
    value: bytes | None  # in memory (small values, deflated files)
    value_tell: int | None  # absolute offset in fp when the value was deferred
    length: int | None  # value length; None when undefined (encapsulated)
    count: int

    @property
    def encapsulated(self) -> bool:
        return self.transfer_syntax.is_encapsulated

    def pixel_options(self) -> dict[str, Any]:
        """Decoding options for pydicom's Decoder (as ``pixel_array(file)`` builds them)."""
        from pydicom.pixels.utils import as_pixel_options

        opts = as_pixel_options(self.ds)
        opts["number_of_frames"] = self.count
        opts["transfer_syntax_uid"] = self.transfer_syntax
        opts["pixel_keyword"] = _PIXEL_KEYWORDS[self.pixel_tag]  # type: ignore[index]
        if self.pixel_vr:
            opts["pixel_vr"] = self.pixel_vr
        return opts

    def decoder_source(self) -> bytes | BinaryIO:
        """The pixel data value as the Decoder wants it: bytes, or fp at the value start."""
        if self.value is not None:
            return self.value
        assert self.value_tell is not None
        self.fp.seek(self.value_tell)
        return self.fp


def open_source(fp_or_bytes: bytes | bytearray | memoryview | BinaryIO) -> PixelSource:
    """Parse the header and locate the pixel data value, reading none of it.

    The data set is read up to the Pixel Data element (``stop_before_pixels``),
    whose header is then parsed here: an encapsulated value (undefined length)
    is never scanned for its end, so with a ranged reader (see
    ``RetrieveService.file``) a frame costs its own bytes plus the header,
    not the object. Elements after the pixel data are not read. Pixel values
    up to :data:`DEFER_SIZE` are read into memory. Deflated objects are
    inflated as they are read (:class:`Inflater`), never whole: a few hundred
    kB of zeros can inflate to gigabytes.
    """
    if isinstance(fp_or_bytes, (bytes, bytearray, memoryview)):
        fp: BinaryIO = io.BytesIO(bytes(fp_or_bytes))
    else:
        fp = fp_or_bytes
    ds = header_dataset(fp)
    ts = _transfer_syntax(ds)
    if ts.is_deflated:
        fp = ds.inflated  # type: ignore[attr-defined]  # positions below are in the inflated stream
    found = _pixel_element_header(fp, ts)
    if found is None:
        return PixelSource(fp, ds, ts, None, None, None, None, None, 0)
    tag, vr, length, value_tell = found
    # a stand-in for the element, so that "is there pixel data" questions see it
    ds._dict[tag] = RawDataElement(_tag(tag), vr, _UNDEFINED_LENGTH if length is None else length, None,
                                   value_tell, ts.is_implicit_VR, ts.is_little_endian)
    if length is not None and length <= DEFER_SIZE:
        value = fp.read(length)
        if len(value) != length:
            raise FrameError("the stored object ends inside its Pixel Data")
        source = PixelSource(fp, ds, ts, tag, vr, value, None, length, 0)
    else:
        source = PixelSource(fp, ds, ts, tag, vr, None, value_tell, length, 0)
    source.count = frame_count(ds)
    return source


def header_dataset(fp: BinaryIO) -> Dataset:
    """The data set up to (not including) its pixel data; ``fp`` is left at the pixel data element.

    The File Meta is read first, so that a deflated data set is inflated as
    it is parsed (pydicom would inflate all of it first); then the returned
    data set has an ``inflated`` attribute: the :class:`Inflater` whose
    position is at the pixel data element.
    """
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    start = fp.tell()
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise FrameError(f"the stored object is not a readable DICOM file: {exc}") from exc
    ts = meta.get("TransferSyntaxUID")
    if not ts or not UID(str(ts)).is_deflated:
        fp.seek(start)
        return _dcmread(fp, DEFER_SIZE, stop_before_pixels=True)
    inflated = Inflater(fp, fp.tell())
    try:
        ds = read_dataset(inflated, False, True, stop_when=_at_pixels, defer_size=DEFER_SIZE)
    except (EOFError, OSError, ValueError, KeyError, TypeError, zlib.error) as exc:
        raise FrameError(f"the stored object's deflated data set cannot be read: {exc}") from exc
    ds.file_meta = meta
    ds.inflated = inflated  # type: ignore[attr-defined]
    return ds


def _at_pixels(tag: Any, vr: str | None, length: int) -> bool:
    return int(tag) in _PIXEL_TAGS


class Inflater(io.RawIOBase):
    """A raw-deflate stream (Deflated Explicit VR Little Endian, PS3.5 A.5) read as a seekable file.

    Inflates in bounded steps as it is read; keeps only a window behind the
    position (small backward seeks, as the parser makes, stay cheap); a seek
    further back starts again from the beginning. ``tell``/``seek`` are
    positions in the inflated data.
    """

    KEEP = 256 << 10
    STEP = 1 << 20

    def __init__(self, fp: BinaryIO, start: int) -> None:
        super().__init__()
        self.fp, self.start = fp, start
        self._restart()

    def _restart(self) -> None:
        self.fp.seek(self.start)
        self.z = zlib.decompressobj(-zlib.MAX_WBITS)
        self.buf = bytearray()
        self.buf_pos = 0  # inflated offset of buf[0]
        self.pos = 0
        self.eof = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.pos
        elif whence != io.SEEK_SET:
            raise OSError("an inflated stream cannot seek from its end")
        if offset < 0:
            raise ValueError("negative seek position")
        if offset < self.buf_pos:
            self._restart()
        self.pos = offset
        return self.pos

    def _more(self) -> bool:
        """Inflate at most STEP more bytes into buf; False at the end of the stream."""
        if self.eof:
            return False
        data = self.z.unconsumed_tail or self.fp.read(64 << 10)
        if not data:
            out = self.z.flush()
            self.eof = True
        else:
            out = self.z.decompress(data, self.STEP)
            if self.z.eof:
                self.eof = True
        self.buf += out
        # drop what lies more than KEEP behind the position
        drop = min(len(self.buf), self.pos - self.KEEP - self.buf_pos)
        if drop > 0:
            del self.buf[:drop]
            self.buf_pos += drop
        return bool(out) or not self.eof

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._more():
                pass
            end = self.buf_pos + len(self.buf)
        else:
            end = self.pos + size
            while self.buf_pos + len(self.buf) < end and self._more():
                pass
        lo = self.pos - self.buf_pos
        data = bytes(self.buf[max(0, lo) : max(0, end - self.buf_pos)]) if lo >= 0 else b""
        self.pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


def _tag(value: int) -> Any:
    from pydicom.tag import Tag

    return Tag(value)


def _pixel_element_header(fp: BinaryIO, ts: UID) -> tuple[int, str | None, int | None, int] | None:
    """At the position ``stop_before_pixels`` left: (tag, VR, length or None, value offset), or None."""
    head = fp.read(8)
    if len(head) < 8:
        return None
    order = "little" if ts.is_little_endian else "big"
    group, elem = int.from_bytes(head[0:2], order), int.from_bytes(head[2:4], order)
    tag = (group << 16) | elem
    if tag not in _PIXEL_TAGS:
        return None
    if ts.is_implicit_VR:
        vr = None
        length = int.from_bytes(head[4:8], order)
    else:
        vr = head[4:6].decode("ascii", "replace")
        rest = fp.read(4)
        if len(rest) < 4:
            raise FrameError("the stored object ends inside its Pixel Data element header")
        length = int.from_bytes(rest, order)
    return tag, vr, None if length == _UNDEFINED_LENGTH else length, fp.tell()


def _dcmread(fp: BinaryIO, defer_size: int | None, stop_before_pixels: bool = False) -> Dataset:
    try:
        return dcmread(fp, defer_size=defer_size, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise FrameError(f"the stored object is not a readable DICOM file: {exc}") from exc


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if not ts:
        raise FrameError("the stored object has no Transfer Syntax UID (0002,0010) in its File Meta")
    return UID(str(ts))


def _require_int(ds: Dataset, keyword: str) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        raise FrameError(f"{keyword} is missing, so frames cannot be located in the pixel data")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FrameError(f"{keyword} value {value!r} is not an integer") from None


# -- raw frames ------------------------------------------------------------------------


def raw_frames(fp_or_bytes: bytes | BinaryIO, numbers: list[int]) -> tuple[str, list[bytes]]:
    """(transfer syntax UID, the frames' bytes as stored), frames numbered from 1.

    Native pixel data: frame *k* is the *k*-th ``Rows x Columns x Samples x
    BitsAllocated/8`` slice of the value (big endian data is returned as
    stored). Single-bit data whose frames do not end on a byte boundary are
    re-packed so each frame starts at bit 0 of its first byte (PS3.5 8.1.1
    order). Encapsulated pixel data: each frame's compressed bytestream.
    """
    ts, frames = iter_raw_frames(fp_or_bytes, numbers)
    return ts, list(frames)


def iter_raw_frames(
    fp_or_bytes: bytes | BinaryIO, numbers: list[int], max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[str, Iterator[bytes]]:
    """Like :func:`raw_frames`, but the frames are read as the iterator is consumed.

    Everything that can be checked is checked before this returns (and the
    first frame is read), so errors are raised here, not mid-stream. Native
    frames and encapsulated frames with an offset table are then read one at
    a time: a response of many frames holds one frame at a time, not all of
    them. Encapsulated frames without offsets are found in one pass, read
    before this returns. Deflated frames are inflated data, so ``max_pixels``
    bounds them like decoded frames.
    """
    src = open_source(fp_or_bytes)
    numbers = check_frame_numbers(list(numbers), src.count)
    ts = src.transfer_syntax
    if str(ts) in _VIDEO:
        raise FrameError(f"transfer syntax {ts} is a video stream; frames cannot be retrieved from it")
    if ts.is_deflated:
        check_decode_size(src, len(numbers), max_pixels)
    if src.encapsulated and not _random_access(src):
        return str(ts), iter(_encapsulated_frames(src, numbers))
    read = _encapsulated_frames if src.encapsulated else _native_frames
    first = read(src, numbers[:1])
    if not src.encapsulated and int(src.ds.get("BitsAllocated") or 0) != 1:
        return str(ts), _native_runs(src, numbers, first[0])

    def frames() -> Iterator[bytes]:
        yield first[0]
        for n in numbers[1:]:
            yield read(src, [n])[0]

    return str(ts), frames()


#: consecutive native frames are read together up to this many bytes (one store request)
RUN_BYTES = 4 << 20


def _native_runs(src: PixelSource, numbers: list[int], first: bytes) -> Iterator[bytes]:
    """Native frames (fixed stride), consecutive numbers read in one range of up to RUN_BYTES."""
    frame_len = len(first)
    per_read = max(1, RUN_BYTES // max(1, frame_len))
    yield first
    i = 1
    while i < len(numbers):
        j = i + 1
        while j < len(numbers) and j - i < per_read and numbers[j] == numbers[j - 1] + 1:
            j += 1
        data = _read_range(src, (numbers[i] - 1) * frame_len, (j - i) * frame_len)
        for k in range(j - i):
            yield data[k * frame_len : (k + 1) * frame_len]
        i = j


def _random_access(src: PixelSource) -> bool:
    """An encapsulated value with an Extended or a (non-empty) Basic Offset Table."""
    if _extended_offsets(src.ds) is not None:
        return True
    if src.value is not None:
        head = src.value[:8]
    else:
        assert src.value_tell is not None
        src.fp.seek(src.value_tell)
        head = src.fp.read(8)
    return len(head) == 8 and int.from_bytes(head[4:8], "little") > 0


def _native_frames(src: PixelSource, numbers: list[int]) -> list[bytes]:
    ds = src.ds
    rows = _require_int(ds, "Rows")
    cols = _require_int(ds, "Columns")
    spp = int(ds.get("SamplesPerPixel") or 1)
    if src.pixel_tag == FLOAT_PIXEL_DATA:
        bits = 32
    elif src.pixel_tag == DOUBLE_FLOAT_PIXEL_DATA:
        bits = 64
    else:
        bits = _require_int(ds, "BitsAllocated")
    if rows < 1 or cols < 1 or spp < 1 or bits < 1:
        raise FrameError(f"invalid image dimensions: {rows} rows, {cols} columns, {spp} samples, {bits} bits")
    length = src.length or 0

    if bits == 1:
        return _single_bit_frames(src, numbers, rows * cols * spp, length)
    if bits % 8:
        raise FrameError(f"Bits Allocated {bits} is not a multiple of 8, frames cannot be located")

    pixels = rows * cols * spp
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        pixels = rows * cols * 2  # native 4:2:2 stores two samples per pixel (PS3.3 C.7.6.3.1.2)
    frame_len = pixels * bits // 8
    needed = frame_len * src.count
    if length < needed:
        raise FrameError(
            f"the Pixel Data value is {length} bytes, shorter than the {needed} bytes "
            f"{src.count} frame(s) of {rows}x{cols}x{spp} at {bits} bits need"
        )
    return [_read_range(src, (n - 1) * frame_len, frame_len) for n in numbers]


def _single_bit_frames(src: PixelSource, numbers: list[int], bits_per_frame: int, length: int) -> list[bytes]:
    needed = (bits_per_frame * src.count + 7) // 8
    if length < needed:
        raise FrameError(f"the Pixel Data value is {length} bytes, shorter than the {needed} bytes the frames need")
    frame_bytes = (bits_per_frame + 7) // 8
    if bits_per_frame % 8 == 0:
        return [_read_range(src, (n - 1) * frame_bytes, frame_bytes) for n in numbers]
    if not src.transfer_syntax.is_little_endian:
        raise FrameError(
            "single-bit (Bits Allocated 1) big endian multi-frame pixel data whose frames do not "
            "end on a byte boundary cannot be split into frames"
        )
    import numpy as np

    out = []
    for n in numbers:
        first_bit = (n - 1) * bits_per_frame
        start = first_bit // 8
        end = (first_bit + bits_per_frame + 7) // 8
        chunk = np.frombuffer(_read_range(src, start, end - start), dtype=np.uint8)
        bits = np.unpackbits(chunk, bitorder="little")[first_bit % 8 : first_bit % 8 + bits_per_frame]
        out.append(np.packbits(bits, bitorder="little").tobytes())
    return out


def _read_range(src: PixelSource, offset: int, size: int) -> bytes:
    if src.value is not None:
        return src.value[offset : offset + size]
    assert src.value_tell is not None
    src.fp.seek(src.value_tell + offset)
    data = src.fp.read(size)
    if len(data) != size:
        raise FrameError("the stored object ends inside its Pixel Data")
    return data


def _extended_offsets(ds: Dataset) -> tuple[bytes, bytes] | None:
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        return bytes(ds.ExtendedOffsetTable), bytes(ds.ExtendedOffsetTableLengths)
    return None


def _encapsulated_frames(src: PixelSource, numbers: list[int]) -> list[bytes]:
    eot = _extended_offsets(src.ds)
    buffer: Any
    try:
        if src.value is not None:
            buffer = src.value
            has_bot = len(buffer) >= 8 and int.from_bytes(buffer[4:8], "little") > 0
        else:
            assert src.value_tell is not None
            src.fp.seek(src.value_tell)
            head = src.fp.read(8)
            has_bot = len(head) == 8 and int.from_bytes(head[4:8], "little") > 0
            buffer = src.fp

        def rewind() -> None:
            if src.value is None:
                src.fp.seek(src.value_tell)  # type: ignore[arg-type]

        if eot is not None or has_bot or len(set(numbers)) == 1:
            # Random access through the offset table (or a single lookup).
            out = []
            for n in numbers:
                rewind()
                out.append(get_frame(buffer, n - 1, extended_offsets=eot, number_of_frames=src.count))
            return out

        # No offsets: one pass over the fragments, stopping after the last frame wanted.
        rewind()
        wanted = set(numbers)
        last = max(numbers)
        found: dict[int, bytes] = {}
        for i, frame in enumerate(generate_frames(buffer, number_of_frames=src.count), start=1):
            if i in wanted:
                found[i] = frame
            if i >= last:
                break
        missing = sorted(wanted - found.keys())
        if missing:
            raise FrameError(f"the encapsulated Pixel Data holds fewer frames than Number of Frames ({src.count})")
        return [found[n] for n in numbers]
    except FrameError:
        raise
    except (ValueError, KeyError, IndexError, EOFError, OSError) as exc:
        raise FrameError(f"the encapsulated Pixel Data cannot be split into frames: {exc}") from exc


# -- decoded frames ---------------------------------------------------------------------


def check_decode_size(src: PixelSource, frames: int, max_pixels: int | None) -> None:
    """FrameTooLarge if ``frames`` frames of Rows x Columns exceed ``max_pixels`` (None: no bound)."""
    if max_pixels is None:
        return
    rows, cols = _require_int(src.ds, "Rows"), _require_int(src.ds, "Columns")
    _check_pixels(rows, cols, frames, max_pixels, "")


def _check_pixels(rows: int, cols: int, frames: int, max_pixels: int, what: str) -> None:
    pixels = rows * cols * frames
    if pixels > max_pixels:
        per = f"{frames} frames of " if frames != 1 else ""
        raise FrameTooLarge(
            f"decoding {per}{rows} x {cols}{what} needs {pixels:,} pixels, more than the "
            f"{max_pixels:,} pixels this gateway decodes per request (max_render_pixels)"
        )


def codestream_size(ts: UID, frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) a compressed frame says it decodes to (JPEG, JPEG-LS, JPEG 2000), or None.

    The decoders allocate what the codestream says, whatever Rows and
    Columns say, so a lying header must be caught here.
    """
    if frame[:2] == b"\xff\xd8":  # JPEG / JPEG-LS: SOFn
        from pydicom.pixels.utils import _get_jpg_parameters

        info = _get_jpg_parameters(frame)
        if info.get("height") is not None and info.get("width") is not None:
            return int(info["height"]), int(info["width"])
        return None
    offset = 0
    if frame[:8] == b"\x00\x00\x00\x0cjP  ":  # a JP2 file: the codestream is in its jp2c box
        offset = _jp2_codestream_offset(frame)
        if offset is None:
            return None
    if frame[offset : offset + 4] == b"\xff\x4f\xff\x51" and len(frame) >= offset + 24:  # SOC, SIZ
        x, y, x0, y0 = (int.from_bytes(frame[offset + i : offset + i + 4], "big") for i in (8, 12, 16, 20))
        return max(0, y - y0), max(0, x - x0)
    return None


def _jp2_codestream_offset(frame: bytes) -> int | None:
    """Where the contiguous codestream box's content starts, walking the JP2 boxes (ISO 15444-1 I.4).

    Box by box, not a search for b"jp2c" (which may stand in an earlier box's content).
    """
    pos = 0
    for _ in range(64):
        if pos + 8 > len(frame):
            return None
        length = int.from_bytes(frame[pos:pos + 4], "big")
        kind, header = frame[pos + 4:pos + 8], 8
        if length == 1:  # an 8-byte length follows
            length, header = int.from_bytes(frame[pos + 8:pos + 16], "big"), 16
        if kind == b"jp2c":
            return pos + header
        if length == 0 or length < header:
            return None  # the last box, or a malformed one: no codestream box before it
        pos += length
    return None


#: transfer syntaxes whose decoders allocate what the frame's own codestream header says
_SELF_SIZED = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
})


def decode_frame(src: PixelSource, number: int, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[Any, dict[str, Any]]:
    """Decode frame *number* (1-based, already range-checked) -> (ndarray, pixel properties).

    YBR_FULL / YBR_FULL_422 become RGB (pydicom's conversion); the properties
    dict is pydicom's (``photometric_interpretation``, ``bits_allocated``, ...).
    More than ``max_pixels`` (by the header or the frame's codestream) raises
    :class:`FrameTooLarge` before decoding. An encapsulated frame is read
    alone and decoded from a one-frame buffer, so the decoder never walks the
    other frames.
    """
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    check_decode_size(src, 1, max_pixels)
    try:
        decoder = get_decoder(src.transfer_syntax)
    except NotImplementedError:
        raise FrameDecodeError(f"pixel data in {src.transfer_syntax.name} cannot be decoded") from None
    opts = src.pixel_options()
    source: bytes | BinaryIO
    index = number - 1
    if src.encapsulated:
        [frame] = _encapsulated_frames(src, [number])
        size = codestream_size(src.transfer_syntax, frame)
        if max_pixels is not None and str(src.transfer_syntax) in _SELF_SIZED and (size is None or 0 in size):
            # the decoder would size its output from a header we cannot read (or a later DNL marker)
            raise FrameTooLarge("the compressed frame does not say how large it decodes, so it is not decoded")
        if size is not None and max_pixels is not None:
            _check_pixels(size[0], size[1], 1, max_pixels, " (as its compressed frame says)")
        source, index = encapsulate([frame]), 0
        opts["number_of_frames"] = 1
        opts.pop("extended_offsets", None)
    else:
        source = src.decoder_source()
    try:
        arr, props = decoder.as_array(source, index=index, **opts)
    except FrameError:
        raise
    except Exception as exc:  # plugins raise anything: RuntimeError, ValueError, ImportError...
        raise FrameDecodeError(
            f"frame {number} could not be decoded from {src.transfer_syntax.name}: {exc}"
        ) from exc
    return arr, props


_REDUCIBLE_J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}
_REDUCIBLE_JPEG = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}


def decode_frame_reduced(src: PixelSource, number: int, max_pixels: int) -> tuple[Any, dict[str, Any]] | None:
    """Frame *number* decoded at a reduced resolution of at most ``max_pixels``, where the codec allows.

    JPEG 2000 decodes a lower resolution level (``reduce``: halves per level),
    JPEG baseline / extended 8-bit scales its DCT (1/2, 1/4, 1/8); both through
    Pillow, which then allocates only the reduced image. For unsigned data of
    1 or 3 samples only (what Pillow gives back exactly). None when the
    instance is not such a case or the codec cannot reduce that far: the
    caller refuses it as too large.
    """
    import warnings

    import numpy as np
    from PIL import Image

    ts = str(src.transfer_syntax)
    ds = src.ds
    spp = int(ds.get("SamplesPerPixel") or 1)
    if ts not in _REDUCIBLE_J2K | _REDUCIBLE_JPEG or int(ds.get("PixelRepresentation") or 0) != 0 or spp not in (1, 3):
        return None
    if ts in _REDUCIBLE_JPEG and int(ds.get("BitsAllocated") or 0) != 8:
        return None
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if spp == 3 and ts in _REDUCIBLE_J2K and photometric not in ("RGB", "YBR_ICT", "YBR_RCT"):
        return None  # Pillow would hand back the components unconverted
    [frame] = _encapsulated_frames(src, [number])
    size = codestream_size(src.transfer_syntax, frame)
    if size is None or 0 in size:
        return None
    rows, cols = size
    factor = 1
    while -(-rows // factor) * -(-cols // factor) > max_pixels:
        factor *= 2
    if ts in _REDUCIBLE_JPEG and factor > 8:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(frame))
            if ts in _REDUCIBLE_J2K:
                img.reduce = factor.bit_length() - 1  # type: ignore[attr-defined]
            else:
                img.draft(img.mode, (-(-cols // factor), -(-rows // factor)))
            img.load()
    except Exception:  # DecompressionBombError, too few resolution levels, a corrupt stream
        return None
    if img.width * img.height > max_pixels:
        return None
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] != 3:
        return None
    photometric = "RGB" if arr.ndim == 3 else (photometric or "MONOCHROME2")
    bits_stored = int(ds.get("BitsStored") or arr.dtype.itemsize * 8)
    return arr, {"photometric_interpretation": photometric, "bits_stored": bits_stored, "reduced_by": factor}


def decoded_frames(
    fp_or_bytes: bytes | BinaryIO, numbers: list[int], max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[dict, list[bytes]]:
    """Decode the frames to native little-endian pixel bytes, one frame at a time.

    All the frames together may need at most ``max_pixels`` (FrameTooLarge).

    Returns ``(info, frames)``; ``info`` has ``rows``, ``columns``,
    ``samples_per_pixel``, ``bits_allocated`` (of the decoded samples: 8 for
    unpacked single-bit data), ``bits_stored``, ``pixel_representation``,
    ``photometric`` (after decoding: YBR JPEG is ``RGB``), ``planar_configuration``
    (always 0: samples interleaved), ``dtype`` (numpy, little-endian) and
    ``transfer_syntax`` (Explicit VR Little Endian).
    """
    src = open_source(fp_or_bytes)
    numbers = check_frame_numbers(list(numbers), src.count)
    if src.pixel_tag is None:
        raise FrameOutOfRange("the instance has no pixel data, so no frames")
    check_decode_size(src, len(numbers), max_pixels)
    frames: list[bytes] = []
    info: dict[str, Any] = {}
    for n in numbers:
        arr, props = decode_frame(src, n, max_pixels)
        le = arr.dtype.newbyteorder("<")
        if arr.dtype != le:
            arr = arr.astype(le)
        frames.append(arr.tobytes())
        if not info:
            spp = arr.shape[2] if arr.ndim == 3 else 1
            photometric = props.get("photometric_interpretation") or src.ds.get("PhotometricInterpretation") or ""
            info = {
                "rows": int(arr.shape[0]),
                "columns": int(arr.shape[1]),
                "samples_per_pixel": int(spp),
                "bits_allocated": int(arr.dtype.itemsize * 8),
                "bits_stored": int(props.get("bits_stored", src.ds.get("BitsStored", arr.dtype.itemsize * 8))),
                "pixel_representation": int(props.get("pixel_representation", src.ds.get("PixelRepresentation", 0))),
                "photometric": str(photometric),
                "planar_configuration": 0,
                "dtype": arr.dtype.str,
                "transfer_syntax": EXPLICIT_VR_LITTLE_ENDIAN,
            }
    return info, frames
