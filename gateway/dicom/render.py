"""Rendering one frame of a stored instance to JPEG or PNG (WADO-RS ``/rendered``, ``/thumbnail``).

PS3.18 8.3.5 (rendered media types), 9.x (thumbnail) and the rendering
pipeline of PS3.3 C.11 (Modality LUT -> VOI LUT -> Presentation):

1. decode one frame (any transfer syntax pydicom + the pylibjpeg plugins can
   decode: native LE/BE, deflate, RLE, JPEG baseline/extended/lossless,
   JPEG-LS, JPEG 2000); YBR_FULL / YBR_FULL_422 become RGB;
2. grayscale: Modality LUT (Rescale Slope/Intercept or Modality LUT
   Sequence; per-frame functional groups of enhanced objects honoured), then
   the VOI: an explicit ``window`` if given, else the instance's first Window
   Center/Width (with its VOI LUT Function), else its VOI LUT Sequence, else
   the frame's min..max; MONOCHROME1 is inverted so that the output is always
   "higher is brighter";
3. colour: RGB passes through (scaled to 8 bits if stored wider), PALETTE
   COLOR goes through its palette;
4. optional ``viewport`` scaling (fit inside, aspect kept), then JPEG / PNG.

Memory: a frame of more than ``max_pixels`` is refused before it is decoded
(:class:`~gateway.dicom.frame_errors.FrameTooLarge`), unless a viewport is given (always
for thumbnails) and the codec can decode a reduced resolution within the
bound (JPEG 2000 resolution levels, JPEG DCT scaling). The decoded frame is the only
full-size array: when the viewport is much smaller it is first subsampled
(a strided view: whole stored pixel values, so LUTs stay exact), and the
LUTs / window run over strips of rows in float32 straight into the 8-bit
output, so the working memory is about the decoded frame plus one byte
(three for colour) per output pixel.

Nothing here touches the database; the caller streams the returned bytes.
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO

import numpy as np

from gateway.dicom.decode import decode_frame, decode_frame_reduced
from gateway.dicom.frame_errors import DEFAULT_MAX_PIXELS, FrameDecodeError, FrameError, FrameOutOfRange, FrameTooLarge
from gateway.dicom.frame_numbers import check_frame_numbers
from gateway.dicom.pixel_source import PixelSource, check_decode_size, open_source
from gateway.errors import Invalid

__all__ = ["RenderError", "BadRenderArgument", "parse_viewport", "parse_window", "FrameOutOfRange", "FrameTooLarge", "render", "thumbnail", "RENDER_MEDIA_TYPES"]

#: pixels per strip of the LUT / window pipeline (float32: 1 MB a strip)
STRIP_PIXELS = 1 << 18

RENDER_MEDIA_TYPES = ("image/jpeg", "image/png")
MAX_VIEWPORT = 8192  # pixels per side; bigger requests are refused rather than allocated
_VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


class RenderError(ValueError):
    """The instance cannot be rendered as asked; the message says why."""


class BadRenderArgument(RenderError, Invalid):
    """A viewport, window or quality outside what rendering accepts: the request is wrong (400), not the image."""


def render(
    fp_or_bytes: bytes | BinaryIO,
    *,
    frame: int = 1,
    media_type: str = "image/jpeg",
    viewport: tuple[int, int] | None = None,
    window: tuple[float, float, str] | None = None,
    quality: int = 90,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> bytes:
    """Frame ``frame`` (1-based) of the instance, rendered as ``media_type`` bytes.

    ``viewport=(width, height)`` scales the image to fit inside (aspect kept);
    ``window=(center, width, function)`` overrides the instance's VOI
    (function ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``; grayscale only);
    ``quality`` (1-100) applies to JPEG. Raises :class:`RenderError` for a
    bad argument, an instance without pixel data or pixel data that cannot be
    decoded, and :class:`~gateway.dicom.frame_errors.FrameOutOfRange` for a frame the
    instance does not have, and :class:`~gateway.dicom.frame_errors.FrameTooLarge` (not a
    RenderError) for a frame of more than ``max_pixels`` pixels.
    """
    fmt = _check_media_type(media_type)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise BadRenderArgument(f"quality {quality!r} is not an integer from 1 to 100")
    if viewport is not None:
        viewport = _check_viewport(viewport)
    if window is not None:
        window = _check_window(window)
    src = _open(fp_or_bytes)
    if isinstance(frame, bool) or not isinstance(frame, int):
        raise RenderError(f"frame number {frame!r} is not an integer")
    check_frame_numbers([frame], src.count)  # FrameOutOfRange
    image = _to_8bit(src, frame, window, viewport, max_pixels)
    return _encode(image, fmt, viewport, quality)


def thumbnail(
    fp_or_bytes: bytes | BinaryIO, *, media_type: str = "image/jpeg", size: int = 128,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> bytes:
    """The middle frame (frame 1 of a single frame), fit inside ``size`` x ``size``."""
    fmt = _check_media_type(media_type)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_VIEWPORT:
        raise BadRenderArgument(f"thumbnail size {size!r} is not an integer from 1 to {MAX_VIEWPORT}")
    src = _open(fp_or_bytes)
    image = _to_8bit(src, (src.count + 1) // 2, None, (size, size), max_pixels)
    return _encode(image, fmt, (size, size), 85)


# -- arguments -------------------------------------------------------------------------


def _check_media_type(media_type: str) -> str:
    base = str(media_type or "").split(";", 1)[0].strip().lower()
    if base == "image/jpeg":
        return "JPEG"
    if base == "image/png":
        return "PNG"
    raise RenderError(
        f"rendered media type {media_type!r} is not supported; use one of {', '.join(RENDER_MEDIA_TYPES)}"
    )


def parse_viewport(text: str | None) -> tuple[int, int] | None:
    """A request's ``viewport=width,height`` (PS3.18 8.3.5.1.3), checked by the same rule ``render`` applies."""
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")[:2]]
    if len(parts) < 2 or not all(p.isascii() and p.isdigit() and len(p) <= 5 for p in parts):
        raise BadRenderArgument(f"viewport must be 'width,height' (1 to {MAX_VIEWPORT})")
    return _check_viewport((int(parts[0]), int(parts[1])))


def parse_window(text: str | None) -> tuple[float, float, str] | None:
    """A request's ``window=center,width[,function]`` (PS3.18 8.3.5.1.4), checked by the same rule ``render`` applies."""
    if not text:
        return None
    parts = text.split(",")
    if len(parts) < 2:
        raise BadRenderArgument("window must be 'center,width[,linear|linear_exact|sigmoid]'")
    return _check_window((parts[0], parts[1], parts[2] if len(parts) > 2 else "LINEAR"))


def _check_viewport(viewport: tuple[int, int]) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in viewport)
    except (TypeError, ValueError):
        raise BadRenderArgument(f"viewport {viewport!r} is not a (width, height) pair of integers") from None
    if not (1 <= w <= MAX_VIEWPORT and 1 <= h <= MAX_VIEWPORT):
        raise BadRenderArgument(f"viewport {w}x{h} is outside 1..{MAX_VIEWPORT} pixels per side")
    return w, h


def _check_window(window: tuple[float, float, str]) -> tuple[float, float, str]:
    try:
        center, width, function = window
        center, width = float(center), float(width)
    except (TypeError, ValueError):
        raise BadRenderArgument(f"window {window!r} is not (center, width, function)") from None
    function = str(function or "LINEAR").strip().upper()
    if function not in _VOI_FUNCTIONS:
        raise BadRenderArgument(f"window function {function!r} is not one of {', '.join(_VOI_FUNCTIONS)}")
    if not (np.isfinite(center) and np.isfinite(width)):
        raise BadRenderArgument("window center and width must be finite numbers")
    if (function == "LINEAR" and width < 1) or width <= 0:
        raise BadRenderArgument(f"window width {width:g} is too small for {function} (PS3.3 C.11.2.1.2)")
    return center, width, function


def _open(fp_or_bytes: bytes | BinaryIO) -> PixelSource:
    try:
        src = open_source(fp_or_bytes)
    except FrameError as exc:
        raise RenderError(str(exc)) from exc
    if src.pixel_tag is None or src.count == 0:
        raise RenderError("instance has no pixel data")
    return src


# -- pixels -> 8 bits -----------------------------------------------------------------


def _to_8bit(
    src: PixelSource, frame: int, window: tuple[float, float, str] | None,
    viewport: tuple[int, int] | None, max_pixels: int | None,
) -> np.ndarray:
    try:
        try:
            check_decode_size(src, 1, max_pixels)
            arr, props = decode_frame(src, frame, max_pixels)
        except FrameTooLarge:
            # a smaller image is wanted anyway: decode at a reduced resolution where the codec can
            reduced = decode_frame_reduced(src, frame, max_pixels) if viewport and max_pixels else None
            if reduced is None:
                raise
            arr, props = reduced
    except FrameTooLarge:
        raise
    except FrameDecodeError as exc:
        raise RenderError(str(exc)) from exc
    except FrameError as exc:
        raise RenderError(str(exc)) from exc
    arr = _subsample(arr, viewport)
    ds = src.ds
    photometric = str(props.get("photometric_interpretation") or ds.get("PhotometricInterpretation", "")).strip()
    samples = arr.shape[2] if arr.ndim == 3 else 1

    if samples == 1 and photometric == "PALETTE COLOR":
        return _palette(arr, ds)
    if samples == 3:
        return _color(arr, photometric, int(props.get("bits_stored") or ds.get("BitsStored") or 8))
    if samples != 1:
        raise RenderError(f"{samples} samples per pixel ({photometric}) cannot be rendered")
    out = _grayscale(arr, _frame_view(ds, frame - 1), window)
    if photometric == "MONOCHROME1":
        np.subtract(255, out, out=out)
    return out


def _subsample(arr: np.ndarray, viewport: tuple[int, int] | None) -> np.ndarray:
    """Every k-th row and column when the viewport is over 4x smaller (at least 2x the viewport is kept).

    A view of stored values (no copy, no interpolation), so the LUTs that
    follow give exactly what they would at full size; the final resize
    (Lanczos) does the filtering.
    """
    if viewport is None or arr.ndim < 2:
        return arr
    rows, cols = arr.shape[0], arr.shape[1]
    scale = min(viewport[0] / cols, viewport[1] / rows)
    k = int(1 / (2 * scale)) if scale > 0 else 1
    if k < 2:
        return arr
    return arr[::k, ::k]


def _strips(arr: np.ndarray, fn: Any, out_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``fn`` over strips of rows of ``arr`` into one uint8 array (each strip's temporaries are small)."""
    out = np.empty(out_shape or arr.shape[:2] + arr.shape[2:], dtype=np.uint8)
    rows = arr.shape[0]
    per_row = max(1, int(np.prod(arr.shape[1:])))
    step = max(1, STRIP_PIXELS // per_row)
    for r0 in range(0, rows, step):
        out[r0 : r0 + step] = fn(arr[r0 : r0 + step])
    return out


def _palette(arr: np.ndarray, ds: Any) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    def strip(part: np.ndarray) -> np.ndarray:
        try:
            rgb = apply_color_lut(part, ds)
        except Exception as exc:  # missing/invalid LUT elements
            raise RenderError(f"the PALETTE COLOR lookup tables cannot be applied: {exc}") from exc
        if rgb.dtype == np.uint8:
            return rgb[..., :3]
        if rgb.dtype == np.uint16:
            return (rgb[..., :3] >> 8).astype(np.uint8)
        raise RenderError(f"the PALETTE COLOR lookup tables give {rgb.dtype} values")

    return _strips(arr, strip, arr.shape[:2] + (3,))


def _color(arr: np.ndarray, photometric: str, bits_stored: int) -> np.ndarray:
    if photometric.startswith("YBR") and photometric not in ("YBR_ICT", "YBR_RCT"):
        from pydicom.pixels import convert_color_space

        def convert(part: np.ndarray) -> np.ndarray:
            try:
                return convert_color_space(np.ascontiguousarray(part), photometric, "RGB")
            except Exception as exc:
                raise RenderError(f"{photometric} cannot be converted to RGB: {exc}") from exc

        if arr.dtype == np.uint8:
            return _strips(arr, convert)
        arr = np.concatenate([convert(arr[r : r + 512]) for r in range(0, arr.shape[0], 512)])
    elif photometric not in ("RGB", "YBR_ICT", "YBR_RCT", ""):
        raise RenderError(f"photometric interpretation {photometric} cannot be rendered")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind == "u" and 8 < bits_stored <= arr.dtype.itemsize * 8:
        shift = bits_stored - 8
        return _strips(arr, lambda part: (part >> shift).astype(np.uint8))
    return _scale_to_8bit(arr)


def _scale_to_8bit(arr: np.ndarray) -> np.ndarray:
    """min..max -> 0..255, in float32 strips (min and max taken on the array itself, no copy)."""
    lo, hi = _finite_range(arr)
    if not hi > lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    k = 255.0 / (hi - lo)
    return _strips(arr, lambda part: _round8((part.astype(np.float32) - lo) * k))


def _finite_range(arr: np.ndarray) -> tuple[float, float]:
    if arr.dtype.kind == "f":
        return float(np.nanmin(arr)), float(np.nanmax(arr))
    return float(arr.min()), float(arr.max())


def _frame_view(ds: Any, index: int) -> Any:
    """The Modality / VOI attributes that apply to frame ``index`` (0-based).

    Enhanced multi-frame objects keep Rescale and Window in the Shared / Per-frame
    Functional Groups (Pixel Value Transformation, Frame VOI LUT); those override
    the top-level values, per-frame over shared.
    """
    shared = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not shared and not per_frame:
        return ds
    from pydicom.dataset import Dataset

    view = Dataset()
    for keyword in (
        "PixelRepresentation", "BitsStored", "BitsAllocated", "PhotometricInterpretation",
        "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence",
        "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence",
    ):  # fmt: skip
        if keyword in ds:
            view.add(ds[keyword])
    groups = []
    if shared:
        groups.append(shared[0])
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    for item in groups:
        for keyword in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            seq = item.get(keyword)
            if seq:
                for elem in seq[0]:
                    view.add(elem)
    return view


def _grayscale(arr: np.ndarray, ds: Any, window: tuple[float, float, str] | None) -> np.ndarray:
    """Modality LUT, then the VOI, strip by strip (the full-size array is only ``arr`` itself)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    def modality(part: np.ndarray) -> np.ndarray:
        if arr.dtype.kind not in "ui":
            return part
        try:
            return apply_modality_lut(part, ds)
        except Exception as exc:
            raise RenderError(f"the Modality LUT / rescale cannot be applied: {exc}") from exc

    after = modality(arr[:1, :1]).dtype  # what the Modality LUT makes of these values

    if window is None:
        window = _dataset_window(ds)
    if window is not None:
        center, width, function = window
        return _strips(arr, lambda part: _apply_window(modality(part).astype(np.float32, copy=False),
                                                       center, width, function))
    if "VOILUTSequence" in ds and after.kind in "ui":
        try:
            bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            k = 255.0 / (2**bits - 1)
            return _strips(arr, lambda part: _round8(
                apply_voi_lut(modality(part), ds, prefer_lut=True).astype(np.float32) * k))
        except Exception:
            pass  # a broken VOI LUT: fall back to min..max
    if after == arr.dtype:  # no rescale: min..max of the array itself
        lo, hi = _finite_range(arr)
    else:
        ranges = [_finite_range(modality(arr[r : r + 256])) for r in range(0, arr.shape[0], 256)]
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    if not hi > lo:
        return np.zeros(arr.shape[:2], dtype=np.uint8)
    k = 255.0 / (hi - lo)
    return _strips(arr, lambda part: _round8((modality(part).astype(np.float32, copy=False) - lo) * k))


def _dataset_window(ds: Any) -> tuple[float, float, str] | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None or center == "" or width == "":
        return None
    try:
        c = float(center[0] if _is_multi(center) else center)
        w = float(width[0] if _is_multi(width) else width)
    except (TypeError, ValueError, IndexError):
        return None
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in _VOI_FUNCTIONS:
        function = "LINEAR"
    try:
        return _check_window((c, w, function))
    except RenderError:
        return None  # an unusable stored window: min..max instead


def _is_multi(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def _apply_window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 straight to 0..255."""
    if function == "SIGMOID":
        return _round8(255.0 / (1.0 + np.exp(np.clip(-4.0 * (x - center) / width, -80, 80))))
    if function == "LINEAR_EXACT":
        return _round8(((x - center) / width + 0.5) * 255.0)
    c, w = center - 0.5, width - 1.0
    if w <= 0:  # width 1: a threshold
        return np.where(x > c, 255, 0).astype(np.uint8)
    return _round8(((x - c) / w + 0.5) * 255.0)


def _round8(y: np.ndarray) -> np.ndarray:
    y = np.nan_to_num(y, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(y + 0.5, 0, 255).astype(np.uint8)


# -- encoding -------------------------------------------------------------------------


def _encode(image: np.ndarray, fmt: str, viewport: tuple[int, int] | None, quality: int) -> bytes:
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image))
    if viewport is not None:
        vw, vh = viewport
        w, h = img.size
        scale = min(vw / w, vh / h)
        size = (max(1, min(vw, round(w * scale))), max(1, min(vh, round(h * scale))))
        if size != img.size:
            if scale < 1:
                img = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
            else:
                img = img.resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, "PNG", compress_level=3)
    return buf.getvalue()
