"""Decoding stored frames to pixels, one frame at a time (pydicom + the pylibjpeg plugins).

A large multi-frame is never decoded in full, and nothing is decoded before
the pixels it would need are checked against ``max_pixels``: by the header,
and for compressed frames by the frame's own codestream header (a small
stored object can decode to gigabytes).
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO

from gateway.dicom.codestream import codestream_size
from gateway.dicom.frame_errors import DEFAULT_MAX_PIXELS, FrameDecodeError, FrameError, FrameOutOfRange, FrameTooLarge
from gateway.dicom.frame_media import EXPLICIT_VR_LITTLE_ENDIAN
from gateway.dicom.frame_numbers import check_frame_numbers
from gateway.dicom.pixel_source import PixelSource, check_decode_size, check_pixels, open_source
from gateway.dicom.stored_frames import encapsulated_frames

__all__ = ["decode_frame", "decode_frame_reduced", "decoded_frames"]


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
        [frame] = encapsulated_frames(src, [number])
        size = codestream_size(src.transfer_syntax, frame)
        if max_pixels is not None and str(src.transfer_syntax) in _SELF_SIZED and (size is None or 0 in size):
            # the decoder would size its output from a header we cannot read (or a later DNL marker)
            raise FrameTooLarge("the compressed frame does not say how large it decodes, so it is not decoded")
        if size is not None and max_pixels is not None:
            check_pixels(size[0], size[1], 1, max_pixels, " (as its compressed frame says)")
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
    [frame] = encapsulated_frames(src, [number])
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
