"""gateway.dicom.pixel_source: a stored object parsed up to its pixel data, and where that value lies."""

from __future__ import annotations

import pytest

from gateway.dicom.frame_errors import FrameError, FrameTooLarge
from gateway.dicom.pixel_source import DEFER_SIZE, PIXEL_DATA, check_decode_size, frame_count, open_source
from tests.unit.gateway.dicom.pixel_files import CountingReader, bytes_of, multiframe_native, read


def test_frame_count():
    assert frame_count(read("CT_small.dcm")) == 1
    assert frame_count(read("rtdose.dcm")) == 15
    assert frame_count(read("examples_ybr_color.dcm")) == 30
    assert frame_count(read("rtplan.dcm")) == 0


def test_frame_count_refuses_a_bad_number_of_frames():
    ds = read("rtdose.dcm")
    ds.NumberOfFrames = 0
    with pytest.raises(FrameError, match="not positive"):
        frame_count(ds)


def test_a_small_pixel_value_is_read_into_memory():
    src = open_source(bytes_of("CT_small.dcm"))
    assert src.pixel_tag == PIXEL_DATA and src.count == 1 and not src.encapsulated
    assert src.value is not None and len(src.value) == src.length == 128 * 128 * 2
    assert src.value_tell is None


def test_a_large_pixel_value_is_located_not_read():
    data, arr = multiframe_native()
    reader = CountingReader(data)
    src = open_source(reader)
    assert src.value is None and src.length == arr.nbytes > DEFER_SIZE
    assert data[src.value_tell : src.value_tell + arr.nbytes] == arr.tobytes()
    assert reader.bytes_read < 64 * 1024, "the pixel data was read"
    assert src.count == arr.shape[0] and "PixelData" in src.ds


def test_an_encapsulated_value_has_no_length():
    src = open_source(bytes_of("MR_small_RLE.dcm"))
    assert src.encapsulated and src.length is None


def test_no_pixel_data():
    src = open_source(bytes_of("rtplan.dcm"))
    assert src.pixel_tag is None and src.count == 0


def test_check_decode_size():
    src = open_source(bytes_of("CT_small.dcm"))  # 128 x 128
    check_decode_size(src, 2, 2 * 128 * 128)
    check_decode_size(src, 1000, None)  # no bound
    with pytest.raises(FrameTooLarge, match=r"3 frames of 128 x 128 needs 49,152 pixels"):
        check_decode_size(src, 3, 2 * 128 * 128)
