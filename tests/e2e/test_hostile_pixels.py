"""Hostile pixels on the way out (issue 11): decompression bombs and frame lists.

A small stored object may decode to gigabytes (RLE of constant rows packs
~128:1), and a frame of a large multi-frame must not cost the whole object.
Each test STOWs its instance with the account owner's credentials into a
real ``serve`` and watches the peak RSS (VmHWM, reset through
``/proc/<pid>/clear_refs``) of the ``dg-http-*`` workers around one request.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from tests.support.data import uids
from tests.support.gateway import Gateway, user_token

MB = 1 << 20
DECODED = 'multipart/related; type="application/octet-stream"'


# -- instances -------------------------------------------------------------------------


def _dataset(rows: int, cols: int, frames: int = 1, bits: int = 8) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "HOSTILE", "Hostile^Pixels", "OT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    return ds


def _part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def rle_bomb(side: int) -> bytes:
    """An RLE Lossless 8-bit ``side`` x ``side`` image of one grey: 2 bytes per 128 pixels."""
    ds = _dataset(side, side)
    ds.file_meta.TransferSyntaxUID = RLELossless
    row = b"\x81\x07" * (side // 128)  # PackBits: repeat 0x07 128 times, row by row (PS3.5 G.3.1)
    header = (1).to_bytes(4, "little") + (64).to_bytes(4, "little") + bytes(56)
    ds.PixelData = encapsulate([header + row * side])
    ds["PixelData"].VR = "OB"
    return _part10(ds)


def big_multiframe(frames: int = 240, side: int = 512) -> tuple[bytes, int]:
    """A native 16-bit multi-frame (~frames x side^2 x 2 bytes); frame k holds the value k."""
    ds = _dataset(side, side, frames, bits=16)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    values = np.repeat(np.arange(1, frames + 1, dtype="<u2"), side * side)
    ds.PixelData = values.tobytes()
    ds["PixelData"].VR = "OW"
    return _part10(ds), side * side * 2


def deflate_bomb(side: int) -> bytes:
    """Deflated Explicit VR Little Endian, ``side`` x ``side`` zeros: ~1000:1."""
    ds = _dataset(side, side)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    ds.PixelData = bytes(side * side)
    ds["PixelData"].VR = "OB"
    return _part10(ds)


def large_jpeg(side: int) -> bytes:
    """A JPEG baseline 8-bit ``side`` x ``side`` grey gradient (Pillow), a few MB stored."""
    from PIL import Image

    ramp = (np.arange(side, dtype=np.uint16) * 127 // side).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(ramp[None, :] + ramp[:, None]).save(buf, "JPEG", quality=80)
    ds = _dataset(side, side)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    return _part10(ds)


# -- memory of the HTTP workers ------------------------------------------------------------


def http_workers(gw: Gateway) -> list[psutil.Process]:
    out = []
    for p in psutil.Process(gw.proc.pid).children(recursive=True):
        try:
            if p.name().startswith("dg-http-") and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out or [psutil.Process(gw.proc.pid)]  # HTTP served in the serve process itself


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


class PeakGrowth:
    """Largest peak-RSS growth (bytes) of any HTTP worker while the block runs."""

    def __init__(self, gw: Gateway) -> None:
        self.procs = http_workers(gw)
        self.growth = 0

    def __enter__(self) -> "PeakGrowth":
        self.before = {}
        for p in self.procs:
            Path(f"/proc/{p.pid}/clear_refs").write_text("5")  # VmHWM := current RSS
            self.before[p.pid] = _status_kb(p.pid, "VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = max((_status_kb(pid, "VmHWM") - kb) * 1024 for pid, kb in self.before.items())


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def owner(gateway):
    """A fresh account; STOW with its owner's password, GET with the owner's bearer token.

    (HTTP Basic costs its password hash on every request, tens of MB of
    memory by design; a token keeps the measured growth the request's own.)
    """
    acc = gateway.new_account()
    auth = (acc["owner"], acc["password"])
    token = user_token(gateway, acc["owner"])

    def get(path: str, accept: str | None = None, **params: str) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", **({"Accept": accept} if accept else {})}
        return requests.get(f"{gateway.url}/accounts/{acc['id']}/dicomweb/{path}",
                            headers=headers, params=params, timeout=120)

    def stow(raw: bytes) -> str:
        rsp = gateway.stow(acc["id"], [raw], auth=auth)
        assert rsp.status_code == 200, rsp.text[:500]
        study, series, sop = uids(raw)
        return f"studies/{study}/series/{series}/instances/{sop}"

    return gateway, get, stow


def _refused(rsp: requests.Response) -> None:
    assert rsp.status_code == 422, (rsp.status_code, rsp.text[:300])
    assert "max_render_pixels" in rsp.text and "pixels" in rsp.text


# -- 7. decompression bombs ------------------------------------------------------------------


def test_rendered_bomb_is_refused_without_decoding(owner):
    gw, get, stow = owner
    path = stow(rle_bomb(16384))  # 268 Mpixels in 4 MB
    with PeakGrowth(gw) as mem:
        rsp = get(f"{path}/rendered", "image/jpeg")
    _refused(rsp)
    assert mem.growth < 300 * MB, f"the worker grew by {mem.growth / MB:.0f} MB"
    with PeakGrowth(gw) as mem:
        _refused(get(f"{path}/frames/1/rendered", "image/png", viewport="64,64"))
    assert mem.growth < 300 * MB, f"the worker grew by {mem.growth / MB:.0f} MB"


def test_thumbnail_bomb_is_refused_without_decoding(owner):
    gw, get, stow = owner
    path = stow(rle_bomb(8192))  # 67 Mpixels in 1 MB
    with PeakGrowth(gw) as mem:
        rsp = get(f"{path}/thumbnail", "image/jpeg")
    _refused(rsp)
    assert mem.growth < 300 * MB, f"the worker grew by {mem.growth / MB:.0f} MB"
    study = path.split("/")[1]
    _refused(get(f"studies/{study}/thumbnail", "image/jpeg"))


def test_decoded_frame_bomb_is_refused_but_the_frame_as_stored_is_given(owner):
    gw, get, stow = owner
    raw = rle_bomb(16384)
    path = stow(raw)
    with PeakGrowth(gw) as mem:
        rsp = get(f"{path}/frames/1", DECODED)
    _refused(rsp)
    assert mem.growth < 300 * MB, f"the worker grew by {mem.growth / MB:.0f} MB"
    # as stored (image/dicom-rle) it is only its 4 MB: no decoding, no limit
    rsp = get(f"{path}/frames/1", 'multipart/related; type="image/dicom-rle"')
    assert rsp.status_code == 200, rsp.text[:300]
    assert len(rsp.content) < 5 * MB


def test_large_image_below_the_limit_renders_within_a_bounded_memory(owner):
    gw, get, stow = owner
    path = stow(rle_bomb(4096))  # 16.8 Mpixels: allowed
    with PeakGrowth(gw) as mem:
        rsp = get(f"{path}/rendered", "image/png", viewport="256,256")
    assert rsp.status_code == 200, rsp.text[:300]
    assert rsp.headers["Content-Type"] == "image/png"
    # 16.8 Mpixels of 8 bits: a few bytes per pixel at most (it was ~145 MB before)
    assert mem.growth < 80 * MB, f"the worker grew by {mem.growth / MB:.0f} MB"
    with PeakGrowth(gw) as mem:
        assert get(f"{path}/thumbnail", "image/jpeg").status_code == 200
    assert mem.growth < 80 * MB, f"the worker grew by {mem.growth / MB:.0f} MB"


def test_over_the_limit_a_thumbnail_is_decoded_at_a_reduced_resolution(owner):
    """JPEG scales its DCT while decoding: 6400^2 (41 Mpixels) decodes as 3200^2 for a thumbnail."""
    gw, get, stow = owner
    path = stow(large_jpeg(6400))
    with PeakGrowth(gw) as mem:
        rsp = get(f"{path}/thumbnail", "image/png")
    assert rsp.status_code == 200, rsp.text[:300]
    assert mem.growth < 100 * MB, f"the worker grew by {mem.growth / MB:.0f} MB"
    from PIL import Image

    assert Image.open(io.BytesIO(rsp.content)).size == (128, 128)
    assert get(f"{path}/rendered", "image/jpeg", viewport="512,512").status_code == 200
    _refused(get(f"{path}/rendered", "image/jpeg"))  # the whole image: over the limit
    _refused(get(f"{path}/frames/1", DECODED))


def test_deflated_instances_are_inflated_only_as_far_as_needed(owner):
    """56 MB of inflated pixels in a ~55 kB object: refused renders and metadata inflate the header only."""
    gw, get, stow = owner
    raw = deflate_bomb(7500)
    assert len(raw) < MB
    path = stow(raw)
    for suffix, accept in (("rendered", "image/jpeg"), ("thumbnail", "image/png"), ("frames/1", DECODED),
                           ("frames/1", None)):  # as stored, a deflated frame is inflated pixels too
        with PeakGrowth(gw) as mem:
            rsp = get(f"{path}/{suffix}", accept)
        _refused(rsp)
        assert mem.growth < 30 * MB, f"{suffix}: the worker grew by {mem.growth / MB:.0f} MB"
    with PeakGrowth(gw) as mem:
        rsp = get(f"{path}/metadata")
    assert rsp.status_code == 200, rsp.text[:300]
    assert rsp.json()[0]["00280010"]["Value"] == [7500]
    assert mem.growth < 30 * MB, f"metadata: the worker grew by {mem.growth / MB:.0f} MB"


# -- 8. frame lists and range reads -------------------------------------------------------------


@pytest.fixture(scope="module")
def multiframe(owner):
    _, _, stow = owner
    raw, frame_len = big_multiframe()
    return stow(raw), frame_len, len(raw)


def test_one_frame_of_a_large_multiframe_is_read_by_ranges(owner, multiframe):
    gw, get, _ = owner
    path, frame_len, size = multiframe
    assert size > 100 * MB
    for accept in (None, DECODED):
        with PeakGrowth(gw) as mem:
            rsp = get(f"{path}/frames/200", accept)
        assert rsp.status_code == 200, rsp.text[:300]
        assert rsp.content.count(np.full(64, 200, dtype="<u2").tobytes()) >= frame_len // 128 - 1
        assert mem.growth < 40 * MB, f"one {frame_len} byte frame grew the worker by {mem.growth / MB:.0f} MB"
    # all 240 frames as stored: streamed one frame at a time, not gathered
    with PeakGrowth(gw) as mem:
        rsp = get(f"{path}/frames/" + ",".join(str(n) for n in range(1, 241)))
    assert rsp.status_code == 200, rsp.text[:300]
    assert len(rsp.content) > size - MB
    assert mem.growth < 40 * MB, f"240 frames grew the worker by {mem.growth / MB:.0f} MB"
    # the Pixel Data as bulk data: streamed by range too
    with PeakGrowth(gw) as mem:
        rsp = get(f"{path}/bulkdata/7FE00010")
    assert rsp.status_code == 200, rsp.text[:300]
    assert len(rsp.content) > 240 * frame_len
    for k in (1, 240):
        assert rsp.content.count(np.full(64, k, dtype="<u2").tobytes()) >= frame_len // 128 - 1
    assert mem.growth < 40 * MB, f"the Pixel Data as bulk data grew the worker by {mem.growth / MB:.0f} MB"
    with PeakGrowth(gw) as mem:
        rsp = get(f"{path}/frames/240/rendered", "image/png")
    assert rsp.status_code == 200, rsp.text[:300]
    assert mem.growth < 40 * MB, f"rendering one frame grew the worker by {mem.growth / MB:.0f} MB"


def test_frame_lists_are_bounded(owner, multiframe):
    gw, get, _ = owner
    path, _, _ = multiframe
    cases = {
        ",".join(["1"] * 500): "max_frames_per_request",  # 500 repeats of one frame
        "1,2,1": "more than once",
        "99999999999999999999": "frame number",
        "9" * 5000: "frame number",  # int() of it would raise
        "1,x": "frame numbers",
        "0": "start at 1",
        "-1": "frame numbers",
        "\u0661": "frame numbers",  # ARABIC-INDIC DIGIT ONE: int() takes it, a frame list does not
    }
    for frames, words in cases.items():
        rsp = get(f"{path}/frames/{frames}", DECODED)
        assert rsp.status_code == 400, (frames[:40], rsp.status_code, rsp.text[:300])
        assert words in rsp.text, (frames[:40], rsp.text[:300])
    assert get(f"{path}/frames/241").status_code == 404  # a plain frame number the instance does not have
    assert get(f"{path}/frames/99999999999999999999/rendered", "image/jpeg").status_code == 400


def test_frame_list_longer_than_the_setting_is_refused(owner):
    gw, get, stow = owner
    raw, _ = big_multiframe(frames=300, side=8)
    path = stow(raw)
    limit = 256  # max_frames_per_request's default
    ok = get(f"{path}/frames/" + ",".join(str(n) for n in range(1, limit + 1)), DECODED)
    assert ok.status_code == 200, ok.text[:300]
    rsp = get(f"{path}/frames/" + ",".join(str(n) for n in range(1, limit + 2)), DECODED)
    assert rsp.status_code == 400 and "max_frames_per_request" in rsp.text, rsp.text[:300]
