"""gateway.dicom.codestream: what a compressed frame's own header says it decodes to."""

from __future__ import annotations

from pydicom.encaps import generate_frames

from gateway.dicom.codestream import codestream_size
from tests.unit.gateway.dicom.pixel_files import box, j2k_header, read


def test_the_size_a_codestream_says():
    assert codestream_size(None, j2k_header(30000, 20000)) == (20000, 30000)  # type: ignore[arg-type]
    jpeg = read("SC_rgb_jpeg_dcmtk.dcm")
    first = next(generate_frames(jpeg.PixelData, number_of_frames=1))
    assert codestream_size(None, first) == (jpeg.Rows, jpeg.Columns)  # type: ignore[arg-type]
    assert codestream_size(None, b"not a codestream") is None  # type: ignore[arg-type]


def test_a_jp2_codestream_is_found_by_walking_the_boxes():
    """Found in review: the first b"jp2c" anywhere was taken, so an xml box mentioning it hid the size."""
    signature = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    jp2 = signature + box(b"ftyp", b"jp2 \x00\x00\x00\x00jp2 ") + box(b"xml ", b"<a>jp2c</a>") \
        + box(b"jp2c", j2k_header(30000, 20000))
    assert codestream_size(None, jp2) == (20000, 30000)  # type: ignore[arg-type]
    long_box = signature + (1).to_bytes(4, "big") + b"xml " + (24).to_bytes(8, "big") + b"jp2cjp2c" \
        + box(b"jp2c", j2k_header(100, 50))
    assert codestream_size(None, long_box) == (50, 100)  # type: ignore[arg-type]
    assert codestream_size(None, signature + box(b"xml ", b"jp2c")) is None  # type: ignore[arg-type]
