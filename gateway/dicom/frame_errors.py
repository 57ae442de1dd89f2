"""What can go wrong producing frames, and the bounds on what a caller may ask for.

:class:`FrameError` is a ``ValueError`` whose message can be put in an HTTP
400 body; :class:`FrameOutOfRange` is a frame number the instance does not
have (404 by PS3.18); :class:`FrameTooLarge` is decoding that would need more
pixels than ``max_pixels`` (422). The bounds' defaults are for callers
without settings (the HTTP layer passes the configured ones); they equal the
defaults of ``max_render_pixels`` and ``max_frames_per_request`` in
gateway/runtime/settings.py, which this module does not import (the DICOM
code sits below the runtime): tests/unit/gateway/dicom/test_frame_errors.py
keeps the two equal.
"""

from __future__ import annotations

__all__ = [
    "FrameError", "FrameOutOfRange", "FrameDecodeError", "FrameListRefused", "FrameTooLarge",
    "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_FRAMES", "MAX_FRAME_NUMBER",
]


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
DEFAULT_MAX_PIXELS: int = 40_000_000
DEFAULT_MAX_FRAMES: int = 256
#: the largest frame number there can be: Number of Frames is an IS (PS3.5 6.2)
MAX_FRAME_NUMBER = 2**31 - 1
