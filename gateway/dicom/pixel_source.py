"""A stored Part 10 object parsed up to its pixel data, and where that value lies.

:func:`open_source` parses the header (``defer_size``; deflated data sets
inflated as they are read, :class:`~gateway.dicom.inflate.Inflater`) and
locates the Pixel Data value without reading it when it is large, so that
frames can then be read with seeks (:mod:`gateway.dicom.stored_frames`) or
decoded one at a time (:mod:`gateway.dicom.decode`). Also here: the number
of frames, and the check of how many pixels decoding would need
(:func:`check_decode_size`), made before anything is decoded.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from gateway.dicom.frame_errors import FrameError, FrameTooLarge
from gateway.dicom.inflate import Inflater

__all__ = [
    "DEFER_SIZE", "PIXEL_DATA", "FLOAT_PIXEL_DATA", "DOUBLE_FLOAT_PIXEL_DATA",
    "PixelSource", "open_source", "header_dataset", "frame_count", "require_int", "read_range",
    "check_decode_size", "check_pixels",
]

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

_UNDEFINED_LENGTH = 0xFFFFFFFF


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


def require_int(ds: Dataset, keyword: str) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        raise FrameError(f"{keyword} is missing, so frames cannot be located in the pixel data")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FrameError(f"{keyword} value {value!r} is not an integer") from None


def read_range(src: PixelSource, offset: int, size: int) -> bytes:
    if src.value is not None:
        return src.value[offset : offset + size]
    assert src.value_tell is not None
    src.fp.seek(src.value_tell + offset)
    data = src.fp.read(size)
    if len(data) != size:
        raise FrameError("the stored object ends inside its Pixel Data")
    return data


def check_decode_size(src: PixelSource, frames: int, max_pixels: int | None) -> None:
    """FrameTooLarge if ``frames`` frames of Rows x Columns exceed ``max_pixels`` (None: no bound)."""
    if max_pixels is None:
        return
    rows, cols = require_int(src.ds, "Rows"), require_int(src.ds, "Columns")
    check_pixels(rows, cols, frames, max_pixels, "")


def check_pixels(rows: int, cols: int, frames: int, max_pixels: int, what: str) -> None:
    pixels = rows * cols * frames
    if pixels > max_pixels:
        per = f"{frames} frames of " if frames != 1 else ""
        raise FrameTooLarge(
            f"decoding {per}{rows} x {cols}{what} needs {pixels:,} pixels, more than the "
            f"{max_pixels:,} pixels this gateway decodes per request (max_render_pixels)"
        )
