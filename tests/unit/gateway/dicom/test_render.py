"""gateway.dicom.render: /rendered and /thumbnail of stored instances."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.dicom import render as render_module
from gateway.dicom.frame_errors import FrameOutOfRange, FrameTooLarge
from gateway.dicom.render import RenderError, _subsample, render, thumbnail
from tests.unit.gateway.dicom.pixel_files import bytes_of, read, save

GRAYSCALE = ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
             "MR_small_jp2klossless.dcm", "JPEG2000.dcm", "JPGExtended.dcm", "MR_small_bigendian.dcm",
             "image_dfl.dcm", "rtdose.dcm", "rtdose_rle.dcm", "liver_1frame.dcm", "693_J2KI.dcm",
             "JPEGLSNearLossless_16.dcm"]  # fmt: skip
COLOR = ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_gdcm.dcm", "examples_palette.dcm", "SC_rgb_rle_2frame.dcm",
         "examples_ybr_color.dcm", "SC_ybr_full_422_uncompressed.dcm", "ExplVR_BigEnd.dcm", "GDCMJ2K_TextGBR.dcm",
         "SC_rgb_rle_16bit.dcm", "SC_rgb_rle_32bit_2frame.dcm", "examples_rgb_color.dcm"]  # fmt: skip
CR_MONOCHROME1 = "dicomdirtests/77654033/CR1/6154"


def _image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(_image(data)).astype(np.int32)


@pytest.mark.parametrize("media_type, fmt", [("image/jpeg", "JPEG"), ("image/png", "PNG")])
@pytest.mark.parametrize("name", GRAYSCALE)
def test_grayscale_renders_at_full_size(name, media_type, fmt):
    ds = read(name)
    img = _image(render(bytes_of(name), media_type=media_type))
    assert img.format == fmt
    assert img.mode == "L"
    assert img.size == (ds.Columns, ds.Rows)


@pytest.mark.parametrize("media_type, fmt", [("image/jpeg", "JPEG"), ("image/png", "PNG")])
@pytest.mark.parametrize("name", COLOR)
def test_color_renders_rgb(name, media_type, fmt):
    ds = read(name)
    img = _image(render(bytes_of(name), media_type=media_type))
    assert img.format == fmt
    assert img.mode == "RGB"
    assert img.size == (ds.Columns, ds.Rows)


def test_rgb_png_is_lossless_for_8bit_rgb():
    ds = read("SC_rgb_jpeg_gdcm.dcm")  # JPEG lossless, RGB
    assert np.array_equal(_pixels(render(bytes_of("SC_rgb_jpeg_gdcm.dcm"), media_type="image/png")), ds.pixel_array)
    ds = read("SC_rgb_jpeg_dcmtk.dcm")  # YBR_FULL JPEG baseline -> RGB
    out = _pixels(render(bytes_of("SC_rgb_jpeg_dcmtk.dcm"), media_type="image/png"))
    assert np.array_equal(out, ds.pixel_array)  # pixel_array converts YBR to RGB as well


def test_palette_color_goes_through_the_palette():
    from pydicom.pixels import apply_color_lut

    ds = read("examples_palette.dcm")
    expected = apply_color_lut(ds.pixel_array, ds)
    if expected.dtype != np.uint8:
        expected = expected >> 8
    out = _pixels(render(bytes_of("examples_palette.dcm"), media_type="image/png"))
    assert np.array_equal(out, expected)


def test_ct_rescale_and_min_max():
    # CT_small: rescale -1024, no stored window -> min..max of the frame
    out = _pixels(render(bytes_of("CT_small.dcm"), media_type="image/png"))
    assert out.min() == 0 and out.max() == 255
    raw = read("CT_small.dcm").pixel_array
    assert out[np.unravel_index(raw.argmax(), raw.shape)] == 255


def test_window_from_the_dataset():
    data = bytes_of("MR_small.dcm")  # Window 600/1600
    ds = read("MR_small.dcm")
    out = _pixels(render(data, media_type="image/png"))
    x = ds.pixel_array.astype(float)
    expected = np.clip(((x - 599.5) / 1599 + 0.5) * 255, 0, 255)
    assert np.abs(out - expected).max() <= 1
    # same as asking for it explicitly, different from min..max
    assert np.array_equal(out, _pixels(render(data, media_type="image/png", window=(600, 1600, "LINEAR"))))
    del ds.WindowCenter, ds.WindowWidth
    assert not np.array_equal(out, _pixels(render(save(ds), media_type="image/png")))


def test_ct_window_from_dataset_uses_rescaled_values():
    ds = read("CT_small.dcm")
    ds.WindowCenter, ds.WindowWidth = 40, 400  # HU, after rescale -1024
    out = _pixels(render(save(ds), media_type="image/png"))
    hu = ds.pixel_array.astype(float) - 1024
    expected = np.clip(((hu - 39.5) / 399 + 0.5) * 255, 0, 255)
    assert np.abs(out - expected).max() <= 1


def test_explicit_window_changes_output():
    data = bytes_of("CT_small.dcm")
    default = _pixels(render(data, media_type="image/png"))
    soft = _pixels(render(data, media_type="image/png", window=(40, 400, "LINEAR")))
    bone = _pixels(render(data, media_type="image/png", window=(500, 2000, "LINEAR")))
    sigmoid = _pixels(render(data, media_type="image/png", window=(40, 400, "SIGMOID")))
    exact = _pixels(render(data, media_type="image/png", window=(40, 400, "LINEAR_EXACT")))
    assert not np.array_equal(default, soft)
    assert not np.array_equal(soft, bone)
    assert not np.array_equal(soft, sigmoid)
    assert np.abs(soft - exact).max() <= 2  # nearly the same function
    # a narrower window means more contrast: more saturated pixels
    assert ((soft == 0) | (soft == 255)).sum() > ((bone == 0) | (bone == 255)).sum()


@pytest.mark.parametrize(
    "window", [(40, 0, "LINEAR"), (40, 0.5, "LINEAR"), (40, 0, "SIGMOID"), (40, 400, "CUBIC"), ("a", 1, "LINEAR")]
)
def test_bad_window(window):
    with pytest.raises(RenderError):
        render(bytes_of("CT_small.dcm"), window=window)


def test_monochrome1_is_inverted():
    ds = read("MR_small.dcm")
    m2 = _pixels(render(save(ds), media_type="image/png"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    m1 = _pixels(render(save(ds), media_type="image/png"))
    assert np.array_equal(m1, 255 - m2)
    # a real MONOCHROME1 CR: high stored values come out dark
    ds = read(CR_MONOCHROME1)
    out = _pixels(render(bytes_of(CR_MONOCHROME1), media_type="image/png"))
    raw = ds.pixel_array
    assert out[raw == raw.max()].mean() < out[raw == raw.min()].mean()


def test_enhanced_per_frame_window():
    ds = read("CT_small.dcm")
    item = Dataset()
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 40, 400
    item.FrameVOILUTSequence = Sequence([voi])
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, -1024, "HU"
    item.PixelValueTransformationSequence = Sequence([pvt])
    ds.PerFrameFunctionalGroupsSequence = Sequence([item])
    ds.RescaleIntercept = 0  # the functional group wins
    out = _pixels(render(save(ds), media_type="image/png"))
    plain = read("CT_small.dcm")
    assert np.array_equal(out, _pixels(render(save(plain), media_type="image/png", window=(40, 400, "LINEAR"))))


@pytest.mark.parametrize("viewport, expected", [((64, 64), (64, 64)), ((100, 50), (50, 50)), ((256, 512), (256, 256))])
def test_viewport_fits_keeping_aspect(viewport, expected):
    img = _image(render(bytes_of("CT_small.dcm"), viewport=viewport))  # 128x128
    assert img.size == expected


def test_viewport_non_square():
    # JPEG2000.dcm is 256 wide x 1024 high
    assert _image(render(bytes_of("JPEG2000.dcm"), viewport=(128, 128))).size == (32, 128)
    assert _image(render(bytes_of("examples_palette.dcm"), viewport=(400, 400))).size == (400, 175)


@pytest.mark.parametrize("viewport", [(0, 10), (10, -1), (100000, 10), ("x", 2)])
def test_bad_viewport(viewport):
    with pytest.raises(RenderError):
        render(bytes_of("CT_small.dcm"), viewport=viewport)


def test_multiframe_frames():
    data = bytes_of("rtdose.dcm")  # 15 frames, 10x10
    first = _pixels(render(data, frame=1, media_type="image/png"))
    last = _pixels(render(data, frame=15, media_type="image/png"))
    assert first.shape == last.shape == (10, 10)
    assert not np.array_equal(first, last)
    color = _image(render(bytes_of("examples_ybr_color.dcm"), frame=30))
    assert color.mode == "RGB" and color.size == (320, 240)


@pytest.mark.parametrize("name, count", [("CT_small.dcm", 1), ("rtdose.dcm", 15), ("SC_rgb_rle_2frame.dcm", 2)])
def test_out_of_range_frame(name, count):
    data = bytes_of(name)
    for bad in (0, -1, count + 1):
        with pytest.raises(FrameOutOfRange):
            render(data, frame=bad)


def test_no_pixel_data():
    with pytest.raises(RenderError, match="instance has no pixel data"):
        render(bytes_of("rtplan.dcm"))
    with pytest.raises(RenderError, match="instance has no pixel data"):
        thumbnail(bytes_of("rtplan.dcm"))


@pytest.mark.parametrize("media_type", ["image/gif", "image/jp2", "application/dicom", "", "text/html"])
def test_unsupported_media_type(media_type):
    with pytest.raises(RenderError):
        render(bytes_of("CT_small.dcm"), media_type=media_type)
    with pytest.raises(RenderError):
        thumbnail(bytes_of("CT_small.dcm"), media_type=media_type)


def test_media_type_parameters_and_case():
    assert _image(render(bytes_of("CT_small.dcm"), media_type="Image/PNG")).format == "PNG"
    assert _image(render(bytes_of("CT_small.dcm"), media_type="image/jpeg; q=0.9")).format == "JPEG"


def test_quality():
    data = bytes_of("image_dfl.dcm")
    assert len(render(data, quality=20)) < len(render(data, quality=95))
    for bad in (0, 101, "90"):
        with pytest.raises(RenderError):
            render(data, quality=bad)


def test_undecodable_pixel_data_is_a_render_error():
    with pytest.raises(RenderError, match="could not be decoded"):
        render(bytes_of("JPEG-lossy.dcm"))


def test_file_object_input(tmp_path):
    path = tmp_path / "ct.dcm"
    path.write_bytes(bytes_of("CT_small.dcm"))
    with open(path, "rb") as f:
        assert _image(render(f)).size == (128, 128)


def test_thumbnail():
    img = _image(thumbnail(bytes_of("CT_small.dcm")))
    assert img.format == "JPEG" and img.size == (128, 128)
    img = _image(thumbnail(bytes_of("JPEG2000.dcm"), size=64, media_type="image/png"))
    assert img.format == "PNG" and img.size == (16, 64)
    img = _image(thumbnail(bytes_of("examples_ybr_color.dcm"), size=100))
    assert img.mode == "RGB" and img.size == (100, 75)
    # the middle frame of a multi-frame
    data = bytes_of("rtdose.dcm")
    assert np.array_equal(
        _pixels(thumbnail(data, size=10, media_type="image/png")),
        _pixels(render(data, frame=8, media_type="image/png")),
    )
    with pytest.raises(RenderError):
        thumbnail(bytes_of("CT_small.dcm"), size=0)


def test_render_timing():
    """Not an assertion on time: prints what a render costs here."""
    ct = bytes_of("CT_small.dcm")
    ds = read("CT_small.dcm")
    rng = np.random.default_rng(5)
    ds.Rows = ds.Columns = 512
    ds.PixelData = rng.integers(-1024, 3000, size=(512, 512), dtype=np.int16).tobytes()
    big = save(ds)
    render(ct)  # warm up imports and plugins
    for label, data, media_type in (
        ("CT_small 128x128 jpeg", ct, "image/jpeg"),
        ("CT_small 128x128 png", ct, "image/png"),
        ("512x512 16-bit jpeg", big, "image/jpeg"),
        ("512x512 16-bit png", big, "image/png"),
        ("512x512 16-bit thumbnail", big, None),
    ):
        runs = 10
        start = time.perf_counter()
        for _ in range(runs):
            out = thumbnail(data) if media_type is None else render(data, media_type=media_type)
        elapsed = (time.perf_counter() - start) / runs
        print(f"\nrender {label}: {elapsed * 1000:.1f} ms, {len(out)} bytes")
        assert out


# -- bounds on memory (issue 11) -----------------------------------------------------------------


def _big_ct(side: int) -> bytes:
    """CT_small (Rescale -1024, a stored window) grown to side x side 16-bit pixels."""
    ds = read("CT_small.dcm")
    arr = (np.arange(side * side, dtype=np.int32) % 3000 - 1000).astype(np.int16).reshape(side, side)
    ds.Rows = ds.Columns = side
    ds.PixelData = arr.tobytes()
    return save(ds)


def test_more_than_max_pixels_is_refused_before_decoding():
    data = _big_ct(512)
    with pytest.raises(FrameTooLarge, match=r"512 x 512 needs 262,144 pixels, more than the 100,000"):
        render(data, max_pixels=100_000)
    with pytest.raises(FrameTooLarge):
        thumbnail(data, max_pixels=100_000)
    assert _image(render(data, max_pixels=512 * 512)).size == (512, 512)
    assert _image(render(data, max_pixels=None)).size == (512, 512)


@pytest.mark.parametrize("window", [None, (40.0, 400.0, "LINEAR"), (40.0, 400.0, "SIGMOID")])
def test_working_memory_is_a_few_bytes_per_pixel(window):
    """16-bit CT with a rescale: it was ~31 bytes per pixel (float64 Modality LUT, float copies)."""
    import tracemalloc

    side = 2048
    data = _big_ct(side)
    tracemalloc.start()
    try:
        render(data, media_type="image/png", window=window)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * side * side, f"{peak / side / side:.1f} bytes per pixel"


def test_strips_give_the_same_image(monkeypatch):
    """The LUT / window run strip by strip; the strip size must not change a pixel."""

    for name, kwargs in (("CT_small.dcm", {}), ("CT_small.dcm", {"window": (0.0, 300.0, "LINEAR_EXACT")}),
                         ("MR_small.dcm", {}), ("examples_palette.dcm", {}), ("examples_ybr_color.dcm", {})):
        whole = _pixels(render(bytes_of(name), media_type="image/png", **kwargs))
        monkeypatch.setattr(render_module, "STRIP_PIXELS", 1000)  # a few rows a strip
        strips = _pixels(render(bytes_of(name), media_type="image/png", **kwargs))
        monkeypatch.undo()
        assert np.array_equal(whole, strips), name


def test_small_viewport_subsamples_before_the_luts():
    """A viewport over 4x smaller: every k-th stored value (a view, no copy) goes through the LUTs."""
    arr = np.arange(2048 * 1024, dtype=np.int16).reshape(1024, 2048)
    small = _subsample(arr, (64, 64))  # scale 1/32: k = 16, 128 x 64 kept for the final Lanczos
    assert small.shape == (64, 128) and np.shares_memory(small, arr)
    assert small[1, 1] == arr[16, 16]
    assert _subsample(arr, (1024, 1024)) is arr  # scale 1/2: left to the resize
    assert _subsample(arr, None) is arr
    assert _image(render(_big_ct(2048), media_type="image/png", viewport=(64, 64))).size == (64, 64)


def _large_compressed(ts: str, side: int, bits: int = 8, spp: int = 1) -> tuple[bytes, np.ndarray]:
    """A side x side JPEG 2000 (lossless) or JPEG baseline image with a gradient, made with Pillow."""
    from pydicom.encaps import encapsulate

    yy, xx = np.mgrid[0:side, 0:side]
    arr = ((xx + yy) * ((2**bits - 1) / (2 * side - 2))).astype(np.uint8 if bits == 8 else np.uint16)
    if spp == 3:
        arr = np.stack([arr, arr[::-1], arr[:, ::-1]], axis=-1)
    buf = io.BytesIO()
    img = Image.fromarray(arr)
    if ts == "1.2.840.10008.1.2.4.90":
        img.save(buf, "JPEG2000", irreversible=False, no_jp2=True, num_resolutions=6)
    else:
        img.save(buf, "JPEG", quality=95)
    ds = read("MR_small_jp2klossless.dcm" if ts.endswith(".90") else "SC_rgb_jpeg_dcmtk.dcm")
    ds.file_meta.TransferSyntaxUID = ts
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = ("RGB" if ts.endswith(".90") else "YBR_FULL_422") if spp == 3 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (8 if bits == 8 else 16), bits, bits - 1, 0
    for key in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        ds.pop(key, None)
    if spp == 3:
        ds.PlanarConfiguration = 0
    ds.PixelData = encapsulate([buf.getvalue()])
    return save(ds), arr


@pytest.mark.parametrize("ts, bits, spp", [("1.2.840.10008.1.2.4.90", 8, 1), ("1.2.840.10008.1.2.4.90", 16, 1),
                                           ("1.2.840.10008.1.2.4.90", 8, 3), ("1.2.840.10008.1.2.4.50", 8, 1),
                                           ("1.2.840.10008.1.2.4.50", 8, 3)])
def test_over_max_pixels_with_a_viewport_decodes_a_reduced_resolution(ts, bits, spp):
    """JPEG 2000 resolution levels / JPEG DCT scaling: the thumbnail of a too-large image still comes."""
    data, arr = _large_compressed(ts, 1024, bits, spp)
    full = _pixels(render(data, media_type="image/png", viewport=(128, 128)))
    with pytest.raises(FrameTooLarge):
        render(data, media_type="image/png", max_pixels=100_000)  # no viewport: the full image is asked for
    small = _pixels(render(data, media_type="image/png", viewport=(128, 128), max_pixels=100_000))
    assert small.shape == full.shape
    assert np.abs(small.astype(int) - full.astype(int)).mean() < 4  # the same picture
    assert _image(thumbnail(data, max_pixels=100_000)).size == (128, 128)
    # beyond what the codec can reduce (JPEG: 1/8): refused
    if ts.endswith(".50"):
        with pytest.raises(FrameTooLarge):
            thumbnail(data, max_pixels=1000)
