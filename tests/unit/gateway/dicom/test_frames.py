"""gateway.dicom.frames: raw and decoded frames of stored instances (WADO-RS /frames)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.pixels import pack_bits
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from gateway.dicom.frames import (
    MAX_FRAME_NUMBER,
    FrameError,
    FrameListRefused,
    FrameOutOfRange,
    FrameTooLarge,
    codestream_size,
    decoded_frames,
    frame_count,
    frame_media_type,
    parse_frame_list,
    raw_frames,
)

# Files bundled with pydicom (no download needed).
NATIVE = ["CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "examples_palette.dcm",
          "rtdose.dcm", "rtdose_expb.dcm", "SC_ybr_full_422_uncompressed.dcm", "liver_1frame.dcm",
          "SC_rgb_small_odd.dcm"]  # fmt: skip
ENCAPSULATED = ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "JPEG2000.dcm",
                "SC_rgb_jpeg_dcmtk.dcm", "JPEG-lossy.dcm", "JPGExtended.dcm", "SC_rgb_jpeg_gdcm.dcm",
                "SC_rgb_rle_2frame.dcm", "rtdose_rle.dcm", "examples_ybr_color.dcm"]  # fmt: skip
DECODABLE = [n for n in NATIVE + ENCAPSULATED if n != "JPEG-lossy.dcm"]


def _path(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not available")
    return path


def _bytes(name: str) -> bytes:
    with open(_path(name), "rb") as f:
        return f.read()


def _read(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(_path(name))


def _le(arr: np.ndarray) -> bytes:
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def _save(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _multiframe_native(frames: int = 5, size: int = 512) -> tuple[bytes, np.ndarray]:
    """A 16-bit signed multi-frame built on CT_small (large enough that Pixel Data is deferred)."""
    ds = _read("CT_small.dcm")
    rng = np.random.default_rng(7)
    arr = rng.integers(-1024, 3000, size=(frames, size, size), dtype=np.int16)
    ds.Rows = ds.Columns = size
    ds.NumberOfFrames = frames
    ds.PixelData = arr.tobytes()
    return _save(ds), arr


def _multiframe_rle(offsets: str, frames: int = 4) -> tuple[bytes, list[bytes], np.ndarray]:
    """An RLE multi-frame with a Basic, Extended or no offset table (Pixel Data > 1 MiB)."""
    from pydicom.pixels import compress  # noqa: F401  (ensures the encoders are importable)
    from pydicom.pixels.encoders import RLELosslessEncoder

    ds = _read("CT_small.dcm")
    rng = np.random.default_rng(11)
    size = 400
    arr = rng.integers(-2048, 2048, size=(frames, size, size), dtype=np.int16)  # signed 12-bit
    ds.Rows = ds.Columns = size
    ds.NumberOfFrames = frames
    ds.BitsStored = 12
    ds.HighBit = 11
    opts = dict(rows=size, columns=size, samples_per_pixel=1, bits_allocated=16, bits_stored=12,
                pixel_representation=1, photometric_interpretation="MONOCHROME2", number_of_frames=1)  # fmt: skip
    encoded = [RLELosslessEncoder.encode(arr[i].tobytes(), **opts) for i in range(frames)]
    if offsets == "extended":
        data, eot, lengths = encapsulate_extended(encoded)
        ds.ExtendedOffsetTable = eot
        ds.ExtendedOffsetTableLengths = lengths
    else:
        data = encapsulate(encoded, has_bot=offsets == "basic")
    ds.PixelData = data
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    return _save(ds), encoded, arr


class CountingReader(io.BytesIO):
    """BytesIO that counts the bytes handed out by read()."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


# -- frame numbers and media types ------------------------------------------------------------


def test_frame_count():
    assert frame_count(_read("CT_small.dcm")) == 1
    assert frame_count(_read("rtdose.dcm")) == 15
    assert frame_count(_read("examples_ybr_color.dcm")) == 30
    assert frame_count(_read("rtplan.dcm")) == 0


def test_parse_frame_list():
    assert parse_frame_list("1") == [1]
    assert parse_frame_list("1,3, 5") == [1, 3, 5]
    for bad in ("", "a", "1,,2", "1;2", "-1", "1.5", "\u0661", "1,\uff12"):  # int() takes non-ASCII digits
        with pytest.raises(FrameError):
            parse_frame_list(bad)


def test_parse_frame_list_limits():
    assert parse_frame_list(",".join(str(n) for n in range(1, 257))) == list(range(1, 257))
    assert parse_frame_list(str(MAX_FRAME_NUMBER)) == [MAX_FRAME_NUMBER]
    assert parse_frame_list("007") == [7]
    refused = {
        ",".join(str(n) for n in range(1, 258)): "at most 256",  # the default max_frames_per_request
        ",".join(["1"] * 500): "at most 256",
        "1,2,1": "more than once",
        "3,03": "more than once",
        str(MAX_FRAME_NUMBER + 1): "larger than any",
        "99999999999999999999": "larger than any",
        "9" * 5000: "larger than any",  # int() of 5000 digits raises ValueError
    }
    for text, words in refused.items():
        with pytest.raises(FrameListRefused, match=words):
            parse_frame_list(text)
    with pytest.raises(FrameListRefused, match="at most 3"):
        parse_frame_list("1,2,3,4", max_frames=3)
    assert parse_frame_list(",".join(str(n) for n in range(1, 1001)), max_frames=None)[-1] == 1000


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


# -- raw frames ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NATIVE)
def test_raw_native_frames_concatenate_to_pixel_data(name):
    ds = _read(name)
    count = frame_count(ds)
    ts, frames = raw_frames(_bytes(name), list(range(1, count + 1)))
    assert ts == ds.file_meta.TransferSyntaxUID
    assert len({len(f) for f in frames}) == 1
    joined = b"".join(frames)
    # Pixel Data may carry one trailing padding byte (odd length)
    assert ds.PixelData[: len(joined)] == joined
    assert len(ds.PixelData) - len(joined) in (0, 1)


@pytest.mark.parametrize("name", ENCAPSULATED)
def test_raw_encapsulated_frames_equal_pydicom_frames(name):
    ds = _read(name)
    count = frame_count(ds)
    ts, frames = raw_frames(_bytes(name), list(range(1, count + 1)))
    assert ts == ds.file_meta.TransferSyntaxUID
    assert frames == list(generate_frames(ds.PixelData, number_of_frames=count))
    media, param = frame_media_type(ts)
    assert media.startswith("image/") and param == ts


def test_raw_frames_order_and_repeats():
    ds = _read("examples_ybr_color.dcm")
    expected = list(generate_frames(ds.PixelData, number_of_frames=30))
    _, frames = raw_frames(_bytes("examples_ybr_color.dcm"), [30, 1, 15, 1])
    assert frames == [expected[29], expected[0], expected[14], expected[0]]


def test_raw_frames_from_a_file_object(tmp_path):
    data, arr = _multiframe_native(frames=3, size=64)
    path = tmp_path / "mf.dcm"
    path.write_bytes(data)
    with open(path, "rb") as f:
        ts, frames = raw_frames(f, [2, 3])
    assert ts == ExplicitVRLittleEndian
    assert frames == [arr[1].tobytes(), arr[2].tobytes()]


def test_raw_native_large_multiframe_reads_only_the_frame():
    data, arr = _multiframe_native()
    reader = CountingReader(data)
    _, frames = raw_frames(reader, [4])
    assert frames == [arr[3].tobytes()]
    frame_len = arr[0].nbytes
    assert reader.bytes_read < frame_len + 64 * 1024, "the whole Pixel Data was read"


@pytest.mark.parametrize("offsets", ["basic", "extended", "none"])
def test_raw_encapsulated_large_multiframe(offsets):
    data, encoded, _ = _multiframe_rle(offsets)
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
    ds = _read("liver_1frame.dcm")
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 2, size=(3, 3, 3), dtype=np.uint8)
    ds.Rows = ds.Columns = 3
    ds.NumberOfFrames = 3
    ds.PixelData = pack_bits(arr)
    data = _save(ds)
    _, frames = raw_frames(data, [1, 2, 3])
    assert frames == [pack_bits(arr[i]) for i in range(3)]
    info, decoded = decoded_frames(data, [2])
    assert decoded == [arr[1].tobytes()]
    assert info["bits_allocated"] == 8


def test_single_bit_single_frame():
    ds = _read("liver_1frame.dcm")
    _, frames = raw_frames(_bytes("liver_1frame.dcm"), [1])
    assert frames == [ds.PixelData[: 512 * 512 // 8]]


@pytest.mark.parametrize("name", ["CT_small.dcm", "rtdose.dcm", "examples_ybr_color.dcm", "SC_rgb_rle_2frame.dcm"])
def test_out_of_range(name):
    count = frame_count(_read(name))
    data = _bytes(name)
    for bad in ([0], [-1], [count + 1], [1, count + 1]):
        with pytest.raises(FrameOutOfRange):
            raw_frames(data, bad)
        with pytest.raises(FrameOutOfRange):
            decoded_frames(data, bad)


def test_no_pixel_data_and_no_numbers():
    with pytest.raises(FrameOutOfRange):
        raw_frames(_bytes("rtplan.dcm"), [1])
    with pytest.raises(FrameError):
        raw_frames(_bytes("CT_small.dcm"), [])


def test_not_dicom():
    with pytest.raises(FrameError):
        raw_frames(b"this is not a DICOM file at all" * 10, [1])


# -- decoded frames --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DECODABLE)
def test_decoded_frames_equal_pixel_array(name):
    ds = _read(name)
    count = frame_count(ds)
    wanted = sorted({1, count, (count + 1) // 2})
    info, frames = decoded_frames(_bytes(name), wanted)
    full = ds.pixel_array
    for n, data in zip(wanted, frames):
        expected = full[n - 1] if count > 1 else full
        assert data == _le(expected), f"frame {n}"
    assert info["rows"] == ds.Rows and info["columns"] == ds.Columns
    assert info["samples_per_pixel"] == ds.SamplesPerPixel
    assert info["bits_allocated"] == full.dtype.itemsize * 8
    assert info["dtype"] in (full.dtype.str, full.dtype.newbyteorder("<").str)


def test_decoded_photometric_after_decoding():
    info, _ = decoded_frames(_bytes("SC_rgb_jpeg_dcmtk.dcm"), [1])  # YBR_FULL JPEG baseline
    assert info["photometric"] == "RGB" and info["samples_per_pixel"] == 3
    info, _ = decoded_frames(_bytes("examples_ybr_color.dcm"), [2])  # YBR_FULL_422
    assert info["photometric"] == "RGB"
    info, _ = decoded_frames(_bytes("CT_small.dcm"), [1])
    assert info == {
        "rows": 128, "columns": 128, "samples_per_pixel": 1, "bits_allocated": 16, "bits_stored": 16,
        "pixel_representation": 1, "photometric": "MONOCHROME2", "planar_configuration": 0,
        "dtype": "<i2", "transfer_syntax": "1.2.840.10008.1.2.1",
    }  # fmt: skip


def test_decoded_big_endian_is_little_endian():
    _, be = decoded_frames(_bytes("MR_small_bigendian.dcm"), [1])
    _, le = decoded_frames(_bytes("MR_small.dcm"), [1])
    assert be == le


def test_decoded_large_multiframe_one_frame_at_a_time():
    data, arr = _multiframe_native()
    reader = CountingReader(data)
    _, frames = decoded_frames(reader, [5])
    assert frames == [arr[4].tobytes()]
    assert reader.bytes_read < arr[0].nbytes + 64 * 1024

    data, _, arr = _multiframe_rle("basic")
    _, frames = decoded_frames(data, [2, 4])
    assert frames == [arr[1].tobytes(), arr[3].tobytes()]


def test_undecodable_frame_is_a_frame_error():
    # JPEG-lossy.dcm has invalid SOS parameters that libjpeg refuses; raw frames still work
    _, raw = raw_frames(_bytes("JPEG-lossy.dcm"), [1])
    assert raw[0][:2] == b"\xff\xd8"
    with pytest.raises(FrameError, match="could not be decoded"):
        decoded_frames(_bytes("JPEG-lossy.dcm"), [1])


def test_large_deflated_multiframe():
    # A deferred offset of a deflated file points into the inflated stream: re-read in memory.
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = _read("CT_small.dcm")
    arr = np.random.default_rng(1).integers(-1000, 3000, size=(3, 512, 512), dtype=np.int16)
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = 3
    ds.PixelData = arr.tobytes()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    data = _save(ds)
    ts, frames = raw_frames(data, [2])
    assert ts == DeflatedExplicitVRLittleEndian and frames == [arr[1].tobytes()]
    assert frame_media_type(ts) == ("application/octet-stream", "1.2.840.10008.1.2.1")
    _, decoded = decoded_frames(data, [3])
    assert decoded == [arr[2].tobytes()]


def test_float_pixel_data():
    ds = _read("CT_small.dcm")
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    values = (np.random.default_rng(2).random((2, 32, 32), dtype=np.float32) * 100 - 50).astype("<f4")
    ds.NumberOfFrames = 2
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.tobytes()
    data = _save(ds)
    assert raw_frames(data, [2])[1] == [values[1].tobytes()]
    info, decoded = decoded_frames(data, [1])
    assert decoded == [values[0].tobytes()] and info["dtype"] == "<f4"


# -- bounds on decoding (issue 11) ---------------------------------------------------------------


def _rle_constant(rows: int, cols: int) -> bytes:
    """An 8-bit RLE image of one grey, 2 bytes per 128 pixels: a tiny object that decodes to rows x cols."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    header = (1).to_bytes(4, "little") + (64).to_bytes(4, "little") + bytes(56)
    ds.PixelData = encapsulate([header + b"\x81\x07" * (cols // 128) * rows])
    ds["PixelData"].VR = "OB"
    return _save(ds)


def test_decoding_more_than_max_pixels_is_refused_before_decoding():
    data = _rle_constant(8192, 8192)  # 67 Mpixels in 1 MB
    with pytest.raises(FrameTooLarge, match=r"8192 x 8192 needs 67,108,864 pixels.*max_render_pixels"):
        decoded_frames(data, [1])  # the default bound: 40,000,000
    with pytest.raises(FrameTooLarge):
        decoded_frames(data, [1], max_pixels=1000)
    small = _rle_constant(256, 256)
    info, [frame] = decoded_frames(small, [1], max_pixels=256 * 256)
    assert frame == b"\x07" * 65536
    # the bound counts every frame asked for
    data, _, _ = _multiframe_rle("basic")
    decoded_frames(data, [1, 2], max_pixels=2 * 400 * 400)
    with pytest.raises(FrameTooLarge, match="3 frames of 400 x 400"):
        decoded_frames(data, [1, 2, 3], max_pixels=2 * 400 * 400)


def _j2k_header(width: int, height: int) -> bytes:
    """SOC + the start of a SIZ marker segment (enough for the size; not a decodable codestream)."""
    siz = (b"\xff\x51" + (41).to_bytes(2, "big") + b"\x00\x00" + width.to_bytes(4, "big") + height.to_bytes(4, "big")
           + bytes(8) + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes(8) + b"\x00\x01\x07\x01\x01")
    return b"\xff\x4f" + siz + b"\xff\xd9"


def test_a_codestream_larger_than_its_header_is_refused():
    """Decoders allocate what the codestream says: a 16 x 16 header over a 30000 x 30000 J2K frame is caught."""
    assert codestream_size(None, _j2k_header(30000, 20000)) == (20000, 30000)  # type: ignore[arg-type]
    jpeg = _read("SC_rgb_jpeg_dcmtk.dcm")
    from pydicom.encaps import generate_frames as frames_of

    first = next(frames_of(jpeg.PixelData, number_of_frames=1))
    assert codestream_size(None, first) == (jpeg.Rows, jpeg.Columns)  # type: ignore[arg-type]
    assert codestream_size(None, b"not a codestream") is None  # type: ignore[arg-type]

    ds = _read("MR_small_jp2klossless.dcm")
    ds.PixelData = encapsulate([_j2k_header(30000, 30000)])
    data = _save(ds)
    with pytest.raises(FrameTooLarge, match="30000 x 30000 .as its compressed frame says"):
        decoded_frames(data, [1])


def _box(kind: bytes, content: bytes) -> bytes:
    return (8 + len(content)).to_bytes(4, "big") + kind + content


def test_a_jp2_codestream_is_found_by_walking_the_boxes():
    """Found in review: the first b"jp2c" anywhere was taken, so an xml box mentioning it hid the size."""
    signature = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    jp2 = signature + _box(b"ftyp", b"jp2 \x00\x00\x00\x00jp2 ") + _box(b"xml ", b"<a>jp2c</a>") \
        + _box(b"jp2c", _j2k_header(30000, 20000))
    assert codestream_size(None, jp2) == (20000, 30000)  # type: ignore[arg-type]
    long_box = signature + (1).to_bytes(4, "big") + b"xml " + (24).to_bytes(8, "big") + b"jp2cjp2c" \
        + _box(b"jp2c", _j2k_header(100, 50))
    assert codestream_size(None, long_box) == (50, 100)  # type: ignore[arg-type]
    assert codestream_size(None, signature + _box(b"xml ", b"jp2c")) is None  # type: ignore[arg-type]


def test_a_self_sized_frame_whose_size_cannot_be_read_is_not_decoded():
    ds = _read("MR_small_jp2klossless.dcm")
    ds.PixelData = encapsulate([b"\x00\x00\x00\x0cjP  \r\n\x87\n" + _box(b"xml ", b"jp2c") + bytes(64)])
    with pytest.raises(FrameTooLarge, match="does not say how large"):
        decoded_frames(_save(ds), [1])
    ds.PixelData = encapsulate([_j2k_header(0, 0)])  # a zero size (as a DNL marker would leave it)
    with pytest.raises(FrameTooLarge, match="does not say how large"):
        decoded_frames(_save(ds), [1])


def test_an_encapsulated_frame_is_read_without_scanning_the_rest():
    """The header parse stops at Pixel Data: an undefined-length value is not walked to find its end.

    (pydicom's own deferred read walked only item headers, so this held
    before too; it guards the ranged reader, where each walk step is a fetch.)
    """
    for offsets in ("basic", "extended"):
        data, encoded, arr = _multiframe_rle(offsets)
        reader = CountingReader(data)
        _, frames = raw_frames(reader, [1])
        assert frames == [encoded[0]]
        assert reader.bytes_read < len(encoded[0]) + 64 * 1024, offsets


def _deflated_multiframe(frames: int = 16, side: int = 256) -> tuple[bytes, np.ndarray]:
    ds = _read("CT_small.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 4000, size=(frames, side, side), dtype=np.int16)
    arr[::2] = 0  # half of the frames compress to almost nothing
    ds.Rows = ds.Columns = side
    ds.NumberOfFrames = frames
    ds.PixelData = arr.tobytes()
    return _save(ds), arr


def test_deflated_frames_are_inflated_as_read_in_any_order():
    from gateway.dicom.frames import header_dataset

    data, arr = _deflated_multiframe()
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


def test_deflated_frames_count_against_max_pixels():
    """As stored, a deflated frame is inflated pixels: bounded like a decoded one."""
    from gateway.dicom.frames import iter_raw_frames

    data, _ = _deflated_multiframe()
    iter_raw_frames(data, [1, 2], max_pixels=2 * 256 * 256)
    with pytest.raises(FrameTooLarge):
        iter_raw_frames(data, [1, 2, 3], max_pixels=2 * 256 * 256)


def test_consecutive_native_frames_are_read_together():
    """One read per run of consecutive frames (each read is a store request), frames still exact."""
    from gateway.dicom.frames import iter_raw_frames

    data, arr = _multiframe_native(frames=12, size=512)  # 6 MB: Pixel Data left in the file
    reader = CountingReader(data)
    calls = []
    read = reader.read
    reader.read = lambda size=-1: calls.append(size) or read(size)  # type: ignore[method-assign]
    _, frames = iter_raw_frames(reader, [1, 2, 3, 4, 9, 10, 12, 5])
    before = len(calls)
    assert list(frames) == [arr[n - 1].tobytes() for n in (1, 2, 3, 4, 9, 10, 12, 5)]
    assert len(calls) - before == 4  # 2-4, 9-10, 12, 5 (frame 1 was read up front)
