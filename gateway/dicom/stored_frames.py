"""Frames as stored (WADO-RS ``/frames`` without transcoding): native slices and encapsulated fragments.

Nothing is decoded. Native frames are slices of the Pixel Data value (read
with seeks when the value was left on disk); encapsulated frames are split
out of their fragments through the Extended or Basic Offset Table when there
is one, else in one pass that stops after the last frame wanted.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Iterator

from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, get_frame

from gateway.dicom.frame_errors import DEFAULT_MAX_PIXELS, FrameError
from gateway.dicom.frame_media import VIDEO_SYNTAXES
from gateway.dicom.frame_numbers import check_frame_numbers
from gateway.dicom.pixel_source import (
    DOUBLE_FLOAT_PIXEL_DATA,
    FLOAT_PIXEL_DATA,
    PixelSource,
    check_decode_size,
    open_source,
    read_range,
    require_int,
)

__all__ = ["RUN_BYTES", "raw_frames", "iter_raw_frames", "encapsulated_frames"]


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
    if str(ts) in VIDEO_SYNTAXES:
        raise FrameError(f"transfer syntax {ts} is a video stream; frames cannot be retrieved from it")
    if ts.is_deflated:
        check_decode_size(src, len(numbers), max_pixels)
    if src.encapsulated and not _random_access(src):
        return str(ts), iter(encapsulated_frames(src, numbers))
    read = encapsulated_frames if src.encapsulated else _native_frames
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
        data = read_range(src, (numbers[i] - 1) * frame_len, (j - i) * frame_len)
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
    rows = require_int(ds, "Rows")
    cols = require_int(ds, "Columns")
    spp = int(ds.get("SamplesPerPixel") or 1)
    if src.pixel_tag == FLOAT_PIXEL_DATA:
        bits = 32
    elif src.pixel_tag == DOUBLE_FLOAT_PIXEL_DATA:
        bits = 64
    else:
        bits = require_int(ds, "BitsAllocated")
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
    return [read_range(src, (n - 1) * frame_len, frame_len) for n in numbers]


def _single_bit_frames(src: PixelSource, numbers: list[int], bits_per_frame: int, length: int) -> list[bytes]:
    needed = (bits_per_frame * src.count + 7) // 8
    if length < needed:
        raise FrameError(f"the Pixel Data value is {length} bytes, shorter than the {needed} bytes the frames need")
    frame_bytes = (bits_per_frame + 7) // 8
    if bits_per_frame % 8 == 0:
        return [read_range(src, (n - 1) * frame_bytes, frame_bytes) for n in numbers]
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
        chunk = np.frombuffer(read_range(src, start, end - start), dtype=np.uint8)
        bits = np.unpackbits(chunk, bitorder="little")[first_bit % 8 : first_bit % 8 + bits_per_frame]
        out.append(np.packbits(bits, bitorder="little").tobytes())
    return out


def _extended_offsets(ds: Dataset) -> tuple[bytes, bytes] | None:
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        return bytes(ds.ExtendedOffsetTable), bytes(ds.ExtendedOffsetTableLengths)
    return None


def encapsulated_frames(src: PixelSource, numbers: list[int]) -> list[bytes]:
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


