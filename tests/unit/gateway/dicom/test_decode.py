"""gateway.dicom.decode: stored frames decoded one at a time, bounded before anything is decoded."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.encaps import encapsulate

from gateway.dicom.decode import decoded_frames
from gateway.dicom.frame_errors import FrameError, FrameTooLarge
from gateway.dicom.pixel_source import frame_count
from gateway.dicom.stored_frames import raw_frames
from tests.unit.gateway.dicom.pixel_files import (
    DECODABLE, CountingReader, box, bytes_of, j2k_header, little_endian, multiframe_native, multiframe_rle, read, rle_constant, save,
)


@pytest.mark.parametrize("name", DECODABLE)
def test_decoded_frames_equal_pixel_array(name):
    ds = read(name)
    count = frame_count(ds)
    wanted = sorted({1, count, (count + 1) // 2})
    info, frames = decoded_frames(bytes_of(name), wanted)
    full = ds.pixel_array
    for n, data in zip(wanted, frames):
        expected = full[n - 1] if count > 1 else full
        assert data == little_endian(expected), f"frame {n}"
    assert info["rows"] == ds.Rows and info["columns"] == ds.Columns
    assert info["samples_per_pixel"] == ds.SamplesPerPixel
    assert info["bits_allocated"] == full.dtype.itemsize * 8
    assert info["dtype"] in (full.dtype.str, full.dtype.newbyteorder("<").str)


def test_decoded_photometric_after_decoding():
    info, _ = decoded_frames(bytes_of("SC_rgb_jpeg_dcmtk.dcm"), [1])  # YBR_FULL JPEG baseline
    assert info["photometric"] == "RGB" and info["samples_per_pixel"] == 3
    info, _ = decoded_frames(bytes_of("examples_ybr_color.dcm"), [2])  # YBR_FULL_422
    assert info["photometric"] == "RGB"
    info, _ = decoded_frames(bytes_of("CT_small.dcm"), [1])
    assert info == {
        "rows": 128, "columns": 128, "samples_per_pixel": 1, "bits_allocated": 16, "bits_stored": 16,
        "pixel_representation": 1, "photometric": "MONOCHROME2", "planar_configuration": 0,
        "dtype": "<i2", "transfer_syntax": "1.2.840.10008.1.2.1",
    }  # fmt: skip


def test_decoded_big_endian_is_little_endian():
    _, be = decoded_frames(bytes_of("MR_small_bigendian.dcm"), [1])
    _, le = decoded_frames(bytes_of("MR_small.dcm"), [1])
    assert be == le


def test_decoded_large_multiframe_one_frame_at_a_time():
    data, arr = multiframe_native()
    reader = CountingReader(data)
    _, frames = decoded_frames(reader, [5])
    assert frames == [arr[4].tobytes()]
    assert reader.bytes_read < arr[0].nbytes + 64 * 1024

    data, _, arr = multiframe_rle("basic")
    _, frames = decoded_frames(data, [2, 4])
    assert frames == [arr[1].tobytes(), arr[3].tobytes()]


def test_undecodable_frame_is_a_frame_error():
    # JPEG-lossy.dcm has invalid SOS parameters that libjpeg refuses; raw frames still work
    _, raw = raw_frames(bytes_of("JPEG-lossy.dcm"), [1])
    assert raw[0][:2] == b"\xff\xd8"
    with pytest.raises(FrameError, match="could not be decoded"):
        decoded_frames(bytes_of("JPEG-lossy.dcm"), [1])


def test_float_pixel_data():
    ds = read("CT_small.dcm")
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    values = (np.random.default_rng(2).random((2, 32, 32), dtype=np.float32) * 100 - 50).astype("<f4")
    ds.NumberOfFrames = 2
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.tobytes()
    data = save(ds)
    assert raw_frames(data, [2])[1] == [values[1].tobytes()]
    info, decoded = decoded_frames(data, [1])
    assert decoded == [values[0].tobytes()] and info["dtype"] == "<f4"


def test_decoding_more_than_max_pixels_is_refused_before_decoding():
    data = rle_constant(8192, 8192)  # 67 Mpixels in 1 MB
    with pytest.raises(FrameTooLarge, match=r"8192 x 8192 needs 67,108,864 pixels.*max_render_pixels"):
        decoded_frames(data, [1])  # the default bound: 40,000,000
    with pytest.raises(FrameTooLarge):
        decoded_frames(data, [1], max_pixels=1000)
    small = rle_constant(256, 256)
    info, [frame] = decoded_frames(small, [1], max_pixels=256 * 256)
    assert frame == b"\x07" * 65536
    # the bound counts every frame asked for
    data, _, _ = multiframe_rle("basic")
    decoded_frames(data, [1, 2], max_pixels=2 * 400 * 400)
    with pytest.raises(FrameTooLarge, match="3 frames of 400 x 400"):
        decoded_frames(data, [1, 2, 3], max_pixels=2 * 400 * 400)


def test_a_codestream_larger_than_its_header_is_refused():
    """Decoders allocate what the codestream says: a 16 x 16 header over a 30000 x 30000 J2K frame is caught."""
    ds = read("MR_small_jp2klossless.dcm")
    ds.PixelData = encapsulate([j2k_header(30000, 30000)])
    data = save(ds)
    with pytest.raises(FrameTooLarge, match="30000 x 30000 .as its compressed frame says"):
        decoded_frames(data, [1])


def test_a_self_sized_frame_whose_size_cannot_be_read_is_not_decoded():
    ds = read("MR_small_jp2klossless.dcm")
    ds.PixelData = encapsulate([b"\x00\x00\x00\x0cjP  \r\n\x87\n" + box(b"xml ", b"jp2c") + bytes(64)])
    with pytest.raises(FrameTooLarge, match="does not say how large"):
        decoded_frames(save(ds), [1])
    ds.PixelData = encapsulate([j2k_header(0, 0)])  # a zero size (as a DNL marker would leave it)
    with pytest.raises(FrameTooLarge, match="does not say how large"):
        decoded_frames(save(ds), [1])
