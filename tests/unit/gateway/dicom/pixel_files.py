"""Stored instances for the tests of gateway/dicom's frame and pixel modules (pydicom's bundled files, no download)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.uid import RLELossless

# Files bundled with pydicom (no download needed).
NATIVE = ["CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "examples_palette.dcm",
          "rtdose.dcm", "rtdose_expb.dcm", "SC_ybr_full_422_uncompressed.dcm", "liver_1frame.dcm",
          "SC_rgb_small_odd.dcm"]  # fmt: skip
ENCAPSULATED = ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "JPEG2000.dcm",
                "SC_rgb_jpeg_dcmtk.dcm", "JPEG-lossy.dcm", "JPGExtended.dcm", "SC_rgb_jpeg_gdcm.dcm",
                "SC_rgb_rle_2frame.dcm", "rtdose_rle.dcm", "examples_ybr_color.dcm"]  # fmt: skip
DECODABLE = [n for n in NATIVE + ENCAPSULATED if n != "JPEG-lossy.dcm"]


def path_of(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not available")
    return path


def bytes_of(name: str) -> bytes:
    with open(path_of(name), "rb") as f:
        return f.read()


def read(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(path_of(name))


def little_endian(arr: np.ndarray) -> bytes:
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def save(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def multiframe_native(frames: int = 5, size: int = 512) -> tuple[bytes, np.ndarray]:
    """A 16-bit signed multi-frame built on CT_small (large enough that Pixel Data is deferred)."""
    ds = read("CT_small.dcm")
    rng = np.random.default_rng(7)
    arr = rng.integers(-1024, 3000, size=(frames, size, size), dtype=np.int16)
    ds.Rows = ds.Columns = size
    ds.NumberOfFrames = frames
    ds.PixelData = arr.tobytes()
    return save(ds), arr


def multiframe_rle(offsets: str, frames: int = 4) -> tuple[bytes, list[bytes], np.ndarray]:
    """An RLE multi-frame with a Basic, Extended or no offset table (Pixel Data > 1 MiB)."""
    from pydicom.pixels import compress  # noqa: F401  (ensures the encoders are importable)
    from pydicom.pixels.encoders import RLELosslessEncoder

    ds = read("CT_small.dcm")
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
    return save(ds), encoded, arr


class CountingReader(io.BytesIO):
    """BytesIO that counts the bytes handed out by read()."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def rle_constant(rows: int, cols: int) -> bytes:
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
    return save(ds)


def j2k_header(width: int, height: int) -> bytes:
    """SOC + the start of a SIZ marker segment (enough for the size; not a decodable codestream)."""
    siz = (b"\xff\x51" + (41).to_bytes(2, "big") + b"\x00\x00" + width.to_bytes(4, "big") + height.to_bytes(4, "big")
           + bytes(8) + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes(8) + b"\x00\x01\x07\x01\x01")
    return b"\xff\x4f" + siz + b"\xff\xd9"


def box(kind: bytes, content: bytes) -> bytes:
    return (8 + len(content)).to_bytes(4, "big") + kind + content


def deflated_multiframe(frames: int = 16, side: int = 256) -> tuple[bytes, np.ndarray]:
    ds = read("CT_small.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 4000, size=(frames, side, side), dtype=np.int16)
    arr[::2] = 0  # half of the frames compress to almost nothing
    ds.Rows = ds.Columns = side
    ds.NumberOfFrames = frames
    ds.PixelData = arr.tobytes()
    return save(ds), arr
