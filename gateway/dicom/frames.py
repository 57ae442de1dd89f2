"""Frame-level access to a stored DICOM Part 10 file (WADO-RS ``/frames``): the public face.

PS3.18 10.4 (Retrieve Transaction, frame resources) and 8.7.3 (media types
of frames). Everything works on one stored object (``bytes`` or a seekable
binary file object) and never touches the database. Callers import from
here; the work is done in modules that each hold one part of it:

* :mod:`gateway.dicom.frame_errors` — :class:`FrameError` (a ``ValueError``
  whose message can be put in an HTTP 400 body), :class:`FrameOutOfRange`
  (404 by PS3.18), :class:`FrameTooLarge` (422), and the default bounds;
* :mod:`gateway.dicom.frame_numbers` — :func:`parse_frame_list` and
  :func:`check_frame_numbers`: what a caller may ask for;
* :mod:`gateway.dicom.frame_media` — :func:`frame_media_type`, the media type
  of PS3.18 Table 8.7.3-2 and its ``transfer-syntax`` parameter;
* :mod:`gateway.dicom.pixel_source` — :func:`open_source` parses the header
  with ``defer_size`` and locates the Pixel Data value without reading it
  (deflated data sets through :mod:`gateway.dicom.inflate`), and
  :func:`check_decode_size`, the pixel bound checked before decoding;
* :mod:`gateway.dicom.stored_frames` — :func:`raw_frames` /
  :func:`iter_raw_frames`: the frames' bytes exactly as stored (a slice of
  native Pixel Data, or each frame's compressed bytestream, Basic / Extended
  Offset Table aware), read with seeks, nothing decoded;
* :mod:`gateway.dicom.codestream` — :func:`codestream_size`, what a
  compressed frame's own header says it decodes to;
* :mod:`gateway.dicom.decode` — :func:`decode_frame` and
  :func:`decoded_frames`, one frame at a time to native little-endian bytes,
  so a large multi-frame is never decoded in full.
"""

from __future__ import annotations

from gateway.dicom.codestream import codestream_size
from gateway.dicom.decode import decode_frame, decode_frame_reduced, decoded_frames
from gateway.dicom.frame_errors import (
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_PIXELS,
    MAX_FRAME_NUMBER,
    FrameDecodeError,
    FrameError,
    FrameListRefused,
    FrameOutOfRange,
    FrameTooLarge,
)
from gateway.dicom.frame_media import EXPLICIT_VR_LITTLE_ENDIAN, frame_media_type
from gateway.dicom.frame_numbers import check_frame_numbers, parse_frame_list
from gateway.dicom.inflate import Inflater
from gateway.dicom.pixel_source import (
    DEFER_SIZE,
    DOUBLE_FLOAT_PIXEL_DATA,
    FLOAT_PIXEL_DATA,
    PIXEL_DATA,
    PixelSource,
    check_decode_size,
    frame_count,
    header_dataset,
    open_source,
)
from gateway.dicom.stored_frames import RUN_BYTES, iter_raw_frames, raw_frames

__all__ = [
    "DEFAULT_MAX_FRAMES", "DEFAULT_MAX_PIXELS", "MAX_FRAME_NUMBER", "DEFER_SIZE", "RUN_BYTES",
    "PIXEL_DATA", "FLOAT_PIXEL_DATA", "DOUBLE_FLOAT_PIXEL_DATA", "EXPLICIT_VR_LITTLE_ENDIAN",
    "FrameError", "FrameOutOfRange", "FrameDecodeError", "FrameListRefused", "FrameTooLarge",
    "frame_media_type", "parse_frame_list", "check_frame_numbers", "frame_count",
    "PixelSource", "open_source", "header_dataset", "check_decode_size", "Inflater",
    "raw_frames", "iter_raw_frames", "codestream_size",
    "decode_frame", "decode_frame_reduced", "decoded_frames",
]
