"""What a compressed frame's own header says it decodes to (JPEG, JPEG-LS, JPEG 2000)."""

from __future__ import annotations

from pydicom.uid import UID

__all__ = ["codestream_size"]


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

