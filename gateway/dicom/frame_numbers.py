"""The ``{framelist}`` of a frames request: parsed, bounded and checked against the instance."""

from __future__ import annotations

import re

from gateway.dicom.frame_errors import DEFAULT_MAX_FRAMES, MAX_FRAME_NUMBER, FrameError, FrameListRefused, FrameOutOfRange

__all__ = ["parse_frame_list", "check_frame_numbers"]

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
