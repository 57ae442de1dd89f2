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
an HTTP 400 body) and :class:`FrameOutOfRange` (frame numbers that the
instance does not have: 404 by PS3.18).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, get_frame
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

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

_FRAME_LIST = re.compile(r"^\s*\d+\s*(,\s*\d+\s*)*$")


def parse_frame_list(text: str) -> list[int]:
    """``"1,3,5"`` (the ``{framelist}`` path segment) -> ``[1, 3, 5]``; FrameError if malformed."""
    if not text or not _FRAME_LIST.match(text):
        raise FrameError(f"frame list {text!r} is not a comma-separated list of frame numbers")
    return [int(part) for part in text.split(",")]


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
    """Parse the header (large values deferred) and locate the pixel data value."""
    if isinstance(fp_or_bytes, (bytes, bytearray, memoryview)):
        fp: BinaryIO = io.BytesIO(bytes(fp_or_bytes))
    else:
        fp = fp_or_bytes
    start = fp.tell()
    ds = _dcmread(fp, DEFER_SIZE)
    ts = _transfer_syntax(ds)
    tag = next((t for t in _PIXEL_TAGS if t in ds), None)
    if tag is not None and ts.is_deflated and _is_deferred(ds.get_item(tag, keep_deferred=True)):
        # A deferred offset points into the inflated stream, not into fp: read it all.
        fp.seek(start)
        ds = _dcmread(fp, None)
    if tag is None:
        return PixelSource(fp, ds, ts, None, None, None, None, None, 0)

    elem = ds.get_item(tag, keep_deferred=True)
    vr = getattr(elem, "VR", None)
    if _is_deferred(elem):
        assert isinstance(elem, RawDataElement)
        length = None if elem.length == _UNDEFINED_LENGTH else elem.length
        source = PixelSource(fp, ds, ts, tag, vr, None, elem.value_tell, length, 0)
    else:
        value = elem.value
        if isinstance(elem, RawDataElement) or not isinstance(value, (bytes, bytearray)):
            value = ds[tag].value  # convert a raw element
        if value is None:
            value = b""
        value = bytes(value)
        source = PixelSource(fp, ds, ts, tag, vr, value, None, len(value), 0)
    source.count = frame_count(ds)
    return source


def _dcmread(fp: BinaryIO, defer_size: int | None) -> Dataset:
    try:
        return dcmread(fp, defer_size=defer_size)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise FrameError(f"the stored object is not a readable DICOM file: {exc}") from exc


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if not ts:
        raise FrameError("the stored object has no Transfer Syntax UID (0002,0010) in its File Meta")
    return UID(str(ts))


def _is_deferred(elem: Any) -> bool:
    return isinstance(elem, RawDataElement) and elem.value is None


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
    src = open_source(fp_or_bytes)
    numbers = check_frame_numbers(list(numbers), src.count)
    ts = src.transfer_syntax
    if str(ts) in _VIDEO:
        raise FrameError(f"transfer syntax {ts} is a video stream; frames cannot be retrieved from it")
    if src.encapsulated:
        return str(ts), _encapsulated_frames(src, numbers)
    return str(ts), _native_frames(src, numbers)


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


def decode_frame(src: PixelSource, number: int) -> tuple[Any, dict[str, Any]]:
    """Decode frame *number* (1-based, already range-checked) -> (ndarray, pixel properties).

    YBR_FULL / YBR_FULL_422 become RGB (pydicom's conversion); the properties
    dict is pydicom's (``photometric_interpretation``, ``bits_allocated``, ...).
    """
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(src.transfer_syntax)
    except NotImplementedError:
        raise FrameDecodeError(f"pixel data in {src.transfer_syntax.name} cannot be decoded") from None
    opts = src.pixel_options()
    try:
        arr, props = decoder.as_array(src.decoder_source(), index=number - 1, **opts)
    except FrameError:
        raise
    except Exception as exc:  # plugins raise anything: RuntimeError, ValueError, ImportError...
        raise FrameDecodeError(
            f"frame {number} could not be decoded from {src.transfer_syntax.name}: {exc}"
        ) from exc
    return arr, props


def decoded_frames(fp_or_bytes: bytes | BinaryIO, numbers: list[int]) -> tuple[dict, list[bytes]]:
    """Decode the frames to native little-endian pixel bytes, one frame at a time.

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
    frames: list[bytes] = []
    info: dict[str, Any] = {}
    for n in numbers:
        arr, props = decode_frame(src, n)
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
