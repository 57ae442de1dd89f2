"""gateway.dicom.stored_frames: frames as stored, native slices and encapsulated fragments (WADO-RS /frames)."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.encaps import generate_frames
from pydicom.pixels import pack_bits
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from gateway.dicom.decode import decoded_frames
from gateway.dicom.frame_errors import FrameError, FrameOutOfRange, FrameTooLarge
from gateway.dicom.frame_media import frame_media_type
from gateway.dicom.pixel_source import frame_count
from gateway.dicom.stored_frames import iter_raw_frames, raw_frames
from tests.unit.gateway.dicom.pixel_files import (
    ENCAPSULATED, NATIVE, CountingReader, bytes_of, deflated_multiframe, multiframe_native, multiframe_rle, read, save,
)


@pytest.mark.parametrize("name", NATIVE)
def test_raw_native_frames_concatenate_to_pixel_data(name):
    ds = read(name)
    count = frame_count(ds)
    ts, frames = raw_frames(bytes_of(name), list(range(1, count + 1)))
    assert ts == ds.file_meta.TransferSyntaxUID
    assert len({len(f) for f in frames}) == 1
    joined = b"".join(frames)
    # Pixel Data may carry one trailing padding byte (odd length)
    assert ds.PixelData[: len(joined)] == joined
    assert len(ds.PixelData) - len(joined) in (0, 1)


@pytest.mark.parametrize("name", ENCAPSULATED)
def test_raw_encapsulated_frames_equal_pydicom_frames(name):
    ds = read(name)
    count = frame_count(ds)
    ts, frames = raw_frames(bytes_of(name), list(range(1, count + 1)))
    assert ts == ds.file_meta.TransferSyntaxUID
    assert frames == list(generate_frames(ds.PixelData, number_of_frames=count))
    media, param = frame_media_type(ts)
    assert media.startswith("image/") and param == ts


def test_raw_frames_order_and_repeats():
    ds = read("examples_ybr_color.dcm")
    expected = list(generate_frames(ds.PixelData, number_of_frames=30))
    _, frames = raw_frames(bytes_of("examples_ybr_color.dcm"), [30, 1, 15, 1])
    assert frames == [expected[29], expected[0], expected[14], expected[0]]


def test_raw_frames_from_a_file_object(tmp_path):
    data, arr = multiframe_native(frames=3, size=64)
    path = tmp_path / "mf.dcm"
    path.write_bytes(data)
    with open(path, "rb") as f:
        ts, frames = raw_frames(f, [2, 3])
    assert ts == ExplicitVRLittleEndian
    assert frames == [arr[1].tobytes(), arr[2].tobytes()]


def test_raw_native_large_multiframe_reads_only_the_frame():
    data, arr = multiframe_native()
    reader = CountingReader(data)
    _, frames = raw_frames(reader, [4])
    assert frames == [arr[3].tobytes()]
    frame_len = arr[0].nbytes
    assert reader.bytes_read < frame_len + 64 * 1024, "the whole Pixel Data was read"


@pytest.mark.parametrize("offsets", ["basic", "extended", "none"])
def test_raw_encapsulated_large_multiframe(offsets):
    data, encoded, _ = multiframe_rle(offsets)
    assert len(data) > 1024 * 1024  # the Pixel Data value is deferred
    reader = CountingReader(data)
    ts, frames = raw_frames(reader, [3, 1])
    assert ts == RLELossless
    assert frames == [encoded[2], encoded[0]]
    if offsets != "none":  # random access through the offset table
        assert reader.bytes_read < len(encoded[2]) + len(encoded[0]) + 64 * 1024
    _, every = raw_frames(data, [1, 2, 3, 4])
    assert every == encoded


def test_single_bit_multiframe_not_byte_aligned():
    # 3x3 pixels per frame = 9 bits: frames 2 and 3 start inside a byte
    ds = read("liver_1frame.dcm")
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 2, size=(3, 3, 3), dtype=np.uint8)
    ds.Rows = ds.Columns = 3
    ds.NumberOfFrames = 3
    ds.PixelData = pack_bits(arr)
    data = save(ds)
    _, frames = raw_frames(data, [1, 2, 3])
    assert frames == [pack_bits(arr[i]) for i in range(3)]
    info, decoded = decoded_frames(data, [2])
    assert decoded == [arr[1].tobytes()]
    assert info["bits_allocated"] == 8


def test_single_bit_single_frame():
    ds = read("liver_1frame.dcm")
    _, frames = raw_frames(bytes_of("liver_1frame.dcm"), [1])
    assert frames == [ds.PixelData[: 512 * 512 // 8]]


@pytest.mark.parametrize("name", ["CT_small.dcm", "rtdose.dcm", "examples_ybr_color.dcm", "SC_rgb_rle_2frame.dcm"])
def test_out_of_range(name):
    count = frame_count(read(name))
    data = bytes_of(name)
    for bad in ([0], [-1], [count + 1], [1, count + 1]):
        with pytest.raises(FrameOutOfRange):
            raw_frames(data, bad)
        with pytest.raises(FrameOutOfRange):
            decoded_frames(data, bad)


def test_no_pixel_data_and_no_numbers():
    with pytest.raises(FrameOutOfRange):
        raw_frames(bytes_of("rtplan.dcm"), [1])
    with pytest.raises(FrameError):
        raw_frames(bytes_of("CT_small.dcm"), [])


def test_not_dicom():
    with pytest.raises(FrameError):
        raw_frames(b"this is not a DICOM file at all" * 10, [1])


def test_large_deflated_multiframe():
    # A deferred offset of a deflated file points into the inflated stream: re-read in memory.
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = read("CT_small.dcm")
    arr = np.random.default_rng(1).integers(-1000, 3000, size=(3, 512, 512), dtype=np.int16)
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = 3
    ds.PixelData = arr.tobytes()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    data = save(ds)
    ts, frames = raw_frames(data, [2])
    assert ts == DeflatedExplicitVRLittleEndian and frames == [arr[1].tobytes()]
    assert frame_media_type(ts) == ("application/octet-stream", "1.2.840.10008.1.2.1")
    _, decoded = decoded_frames(data, [3])
    assert decoded == [arr[2].tobytes()]


def test_an_encapsulated_frame_is_read_without_scanning_the_rest():
    """The header parse stops at Pixel Data: an undefined-length value is not walked to find its end.

    (pydicom's own deferred read walked only item headers, so this held
    before too; it guards the ranged reader, where each walk step is a fetch.)
    """
    for offsets in ("basic", "extended"):
        data, encoded, arr = multiframe_rle(offsets)
        reader = CountingReader(data)
        _, frames = raw_frames(reader, [1])
        assert frames == [encoded[0]]
        assert reader.bytes_read < len(encoded[0]) + 64 * 1024, offsets


def test_deflated_frames_count_against_max_pixels():
    """As stored, a deflated frame is inflated pixels: bounded like a decoded one."""

    data, _ = deflated_multiframe()
    iter_raw_frames(data, [1, 2], max_pixels=2 * 256 * 256)
    with pytest.raises(FrameTooLarge):
        iter_raw_frames(data, [1, 2, 3], max_pixels=2 * 256 * 256)


def test_consecutive_native_frames_are_read_together():
    """One read per run of consecutive frames (each read is a store request), frames still exact."""

    data, arr = multiframe_native(frames=12, size=512)  # 6 MB: Pixel Data left in the file
    reader = CountingReader(data)
    calls = []
    read = reader.read
    reader.read = lambda size=-1: calls.append(size) or read(size)  # type: ignore[method-assign]
    _, frames = iter_raw_frames(reader, [1, 2, 3, 4, 9, 10, 12, 5])
    before = len(calls)
    assert list(frames) == [arr[n - 1].tobytes() for n in (1, 2, 3, 4, 9, 10, 12, 5)]
    assert len(calls) - before == 4  # 2-4, 9-10, 12, 5 (frame 1 was read up front)
