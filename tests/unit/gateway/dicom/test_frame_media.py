"""gateway.dicom.frame_media: the media type of frames per transfer syntax (PS3.18 Table 8.7.3-2)."""

from __future__ import annotations

import pytest

from gateway.dicom.frame_errors import FrameError
from gateway.dicom.frame_media import frame_media_type


@pytest.mark.parametrize(
    "ts, expected",
    [
        ("1.2.840.10008.1.2.1", ("application/octet-stream", "1.2.840.10008.1.2.1")),
        ("1.2.840.10008.1.2", ("application/octet-stream", "1.2.840.10008.1.2.1")),
        ("1.2.840.10008.1.2.1.99", ("application/octet-stream", "1.2.840.10008.1.2.1")),
        ("1.2.840.10008.1.2.2", ("application/octet-stream", "1.2.840.10008.1.2.2")),
        ("1.2.840.10008.1.2.4.50", ("image/jpeg", "1.2.840.10008.1.2.4.50")),
        ("1.2.840.10008.1.2.4.51", ("image/jpeg", "1.2.840.10008.1.2.4.51")),
        ("1.2.840.10008.1.2.4.57", ("image/jpeg", "1.2.840.10008.1.2.4.57")),
        ("1.2.840.10008.1.2.4.70", ("image/jpeg", "1.2.840.10008.1.2.4.70")),
        ("1.2.840.10008.1.2.4.80", ("image/jls", "1.2.840.10008.1.2.4.80")),
        ("1.2.840.10008.1.2.4.81", ("image/jls", "1.2.840.10008.1.2.4.81")),
        ("1.2.840.10008.1.2.4.90", ("image/jp2", "1.2.840.10008.1.2.4.90")),
        ("1.2.840.10008.1.2.4.91", ("image/jp2", "1.2.840.10008.1.2.4.91")),
        ("1.2.840.10008.1.2.4.201", ("image/jphc", "1.2.840.10008.1.2.4.201")),
        ("1.2.840.10008.1.2.4.203", ("image/jphc", "1.2.840.10008.1.2.4.203")),
        ("1.2.840.10008.1.2.5", ("image/dicom-rle", "1.2.840.10008.1.2.5")),
    ],
)
def test_frame_media_type(ts, expected):
    assert frame_media_type(ts) == expected


@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.102", "1.2.3.4"])
def test_frame_media_type_refuses_video_and_unknown(ts):
    with pytest.raises(FrameError):
        frame_media_type(ts)
