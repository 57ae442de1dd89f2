"""gateway.dicom.frame_errors: the frame errors and the default bounds."""

from __future__ import annotations

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
from gateway.runtime.settings import Settings


def test_the_default_bounds_are_the_settings_defaults():
    # gateway/dicom does not import the runtime; this keeps the two copies of each default equal
    assert DEFAULT_MAX_PIXELS == Settings.max_render_pixels
    assert DEFAULT_MAX_FRAMES == Settings.max_frames_per_request


def test_the_largest_frame_number_is_the_largest_is_value():
    assert MAX_FRAME_NUMBER == 2**31 - 1  # Number of Frames is an IS (PS3.5 6.2)


def test_every_refusal_is_a_frame_error_and_a_value_error():
    for error in (FrameOutOfRange, FrameDecodeError, FrameListRefused, FrameTooLarge):
        assert issubclass(error, FrameError)
    assert issubclass(FrameError, ValueError)
