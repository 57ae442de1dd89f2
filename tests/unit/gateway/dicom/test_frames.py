"""gateway.dicom.frames: the public face of the frame modules (what dicomweb/wado.py and others import).

The behaviour is tested beside each module (test_frame_numbers, test_frame_media,
test_pixel_source, test_inflate, test_stored_frames, test_codestream, test_decode);
here: every name callers import from frames is there, and is the module's own.
"""

from __future__ import annotations

import importlib

import pytest

from gateway.dicom import frames
from tests.unit.gateway.dicom.pixel_files import bytes_of

HOMES = {
    "frame_errors": ["DEFAULT_MAX_FRAMES", "DEFAULT_MAX_PIXELS", "MAX_FRAME_NUMBER", "FrameError", "FrameOutOfRange",
                     "FrameDecodeError", "FrameListRefused", "FrameTooLarge"],
    "frame_numbers": ["parse_frame_list", "check_frame_numbers"],
    "frame_media": ["EXPLICIT_VR_LITTLE_ENDIAN", "frame_media_type"],
    "inflate": ["Inflater"],
    "pixel_source": ["DEFER_SIZE", "PIXEL_DATA", "FLOAT_PIXEL_DATA", "DOUBLE_FLOAT_PIXEL_DATA", "PixelSource",
                     "open_source", "header_dataset", "check_decode_size", "frame_count"],
    "stored_frames": ["RUN_BYTES", "raw_frames", "iter_raw_frames"],
    "codestream": ["codestream_size"],
    "decode": ["decode_frame", "decode_frame_reduced", "decoded_frames"],
}


@pytest.mark.parametrize("module, name", [(m, n) for m, names in HOMES.items() for n in names])
def test_frames_exports_each_name_from_its_module(module, name):
    home = importlib.import_module(f"gateway.dicom.{module}")
    assert getattr(frames, name) is getattr(home, name)


def test_all_lists_exactly_the_exports():
    assert sorted(frames.__all__) == sorted(n for names in HOMES.values() for n in names)


def test_raw_and_decoded_frames_through_the_face():
    data = bytes_of("CT_small.dcm")
    ts, [raw] = frames.raw_frames(data, frames.parse_frame_list("1"))
    info, [decoded] = frames.decoded_frames(data, [1])
    assert frames.frame_media_type(ts) == ("application/octet-stream", frames.EXPLICIT_VR_LITTLE_ENDIAN)
    assert raw == decoded and info["rows"] == 128
