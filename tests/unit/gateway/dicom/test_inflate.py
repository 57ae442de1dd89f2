"""gateway.dicom.inflate: a deflated data set read as a seekable stream, inflated as it is read."""

from __future__ import annotations

import io
import zlib

import pytest


from gateway.dicom.decode import decoded_frames
from gateway.dicom.inflate import Inflater
from gateway.dicom.pixel_source import header_dataset
from gateway.dicom.stored_frames import raw_frames
from tests.unit.gateway.dicom.pixel_files import deflated_multiframe


def test_deflated_frames_are_inflated_as_read_in_any_order():

    data, arr = deflated_multiframe()
    _, frames = raw_frames(data, [16, 1, 8, 9])  # 16 then 1: a seek back starts the inflation again
    assert frames == [arr[15].tobytes(), arr[0].tobytes(), arr[7].tobytes(), arr[8].tobytes()]
    _, decoded = decoded_frames(data, [3, 2])
    assert decoded == [arr[2].tobytes(), arr[1].tobytes()]

    ds = header_dataset(io.BytesIO(data))
    assert ds.Rows == 256 and "PixelData" not in ds
    inflated = ds.inflated
    start = inflated.tell()
    inflated.seek(start + 12 + 15 * arr[0].nbytes)  # past the element header, to the last frame
    assert inflated.read(arr[0].nbytes) == arr[15].tobytes()
    assert len(inflated.buf) < arr[0].nbytes + inflated.KEEP + 2 * inflated.STEP  # not the 2 MB before it


def _deflated(data: bytes) -> io.BytesIO:
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return io.BytesIO(b"HEAD" + z.compress(data) + z.flush())


PLAIN = bytes(range(256)) * 20_000 + b"the end"  # ~5 MB: several STEPs


def test_reads_what_was_deflated_in_bounded_steps():
    inflater = Inflater(_deflated(PLAIN), 4)
    parts = []
    while chunk := inflater.read(300_000):
        parts.append(chunk)
        assert len(inflater.buf) <= 300_000 + Inflater.KEEP + 2 * Inflater.STEP
    assert b"".join(parts) == PLAIN and inflater.tell() == len(PLAIN)


def test_seeks_forward_back_and_past_the_window():
    inflater = Inflater(_deflated(PLAIN), 4)
    inflater.seek(len(PLAIN) - 7)
    assert inflater.read() == b"the end"
    inflater.seek(-10, io.SEEK_CUR)
    assert inflater.read(3) == PLAIN[-10:-7]  # a small step back stays inside the window
    inflater.seek(5)  # far back: starts inflating again
    assert inflater.read(4) == PLAIN[5:9]
    buf = bytearray(6)
    assert inflater.readinto(buf) == 6 and bytes(buf) == PLAIN[9:15]
    assert inflater.seekable() and inflater.readable()


def test_refuses_seeks_it_cannot_make():
    inflater = Inflater(_deflated(PLAIN), 4)
    with pytest.raises(OSError):
        inflater.seek(0, io.SEEK_END)
    with pytest.raises(ValueError):
        inflater.seek(-1)
