"""Test data: DICOM instances generated on disk from pydicom's bundled files (small CT/MR, 512x512 CT,
large multi-frame), never held in memory all at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def _testdata(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(f"pydicom test file {name} not found")
    return str(path)


def _restamp(ds: pydicom.Dataset, study: str, series: str, series_no: int, inst_no: int) -> None:
    sop = generate_uid()
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = series_no
    ds.InstanceNumber = inst_no


def _save(ds: pydicom.Dataset, path: Path) -> None:
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def _write(outdir: Path, pattern: str, n: int, per_series: int, series_per_study: int | None,
           dataset_for: Callable[[int, int], pydicom.Dataset]) -> tuple[list[Path], int, int, int]:
    """Write N instances, each with a fresh SOP Instance UID, `per_series` to a series and
    `series_per_study` series to a study (None: all in one study), one file at a time.

    `dataset_for(i, series_number)` gives the data set to stamp and save as instance i.
    Returns (files, total bytes, studies, series)."""
    files: list[Path] = []
    total = 0
    study = series = ""
    n_series = n_studies = 0
    for i in range(n):
        if i % per_series == 0:
            if n_studies == 0 or (series_per_study is not None and n_series % series_per_study == 0):
                study = generate_uid()
                n_studies += 1
            series = generate_uid()
            n_series += 1
        ds = dataset_for(i, n_series)
        _restamp(ds, study, series, n_series, i % per_series + 1)
        p = outdir / pattern.format(i)
        _save(ds, p)
        total += p.stat().st_size
        files.append(p)
    return files, total, n_studies, n_series


@dataclass
class DataSet:
    """A generated set of DICOM files on disk (plus bookkeeping)."""

    name: str
    files: list[Path]
    total_bytes: int
    sop_classes: list[str]
    studies: int
    series: int

    def preload(self) -> list[bytes]:
        """Read every file (warms the page cache, returns the raw bytes)."""
        return [p.read_bytes() for p in self.files]


def generate_small(outdir: Path, n: int, per_series: int = 100, series_per_study: int = 10) -> DataSet:
    """N small instances cloned from pydicom's CT_small.dcm / MR_small.dcm.

    Series alternate between the CT and MR template; ~`per_series` instances
    per series and `series_per_study` series per study; every instance gets a
    fresh SOP Instance UID."""
    outdir.mkdir(parents=True, exist_ok=True)
    templates = [pydicom.dcmread(_testdata("CT_small.dcm")), pydicom.dcmread(_testdata("MR_small.dcm"))]
    for t in templates:
        t.PatientID = "BENCH-SMALL"
        t.PatientName = "Bench^Small"
    files, total, n_studies, n_series = _write(
        outdir, "small_{:06d}.dcm", n, per_series, series_per_study, lambda i, n_series: templates[(n_series - 1) % 2])
    return DataSet("small", files, total, sorted({str(t.SOPClassUID) for t in templates}), n_studies, n_series)


def generate_ct512(outdir: Path, n: int, per_series: int = 100, series_per_study: int = 10) -> DataSet:
    """N CT instances, 512x512 16-bit, explicit VR LE, made by upsampling
    CT_small's 128x128 pixel array (nearest neighbour, x4) with numpy."""
    outdir.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(_testdata("CT_small.dcm"))
    arr = ds.pixel_array
    big = np.repeat(np.repeat(arr, 512 // arr.shape[0], axis=0), 512 // arr.shape[1], axis=1)
    big = np.ascontiguousarray(big[:512, :512].astype(arr.dtype))
    ds.Rows, ds.Columns = big.shape
    ds.PixelData = big.tobytes()
    if "PixelSpacing" in ds:
        ds.PixelSpacing = [float(x) / 4 for x in ds.PixelSpacing]
    ds.PatientID = "BENCH-CT"
    ds.PatientName = "Bench^CT"

    def positioned(i: int, n_series: int) -> pydicom.Dataset:
        ds.ImagePositionPatient = [0.0, 0.0, float(i % per_series)]
        return ds

    files, total, n_studies, n_series = _write(outdir, "ct512_{:06d}.dcm", n, per_series, series_per_study, positioned)
    return DataSet("ct512", files, total, [str(ds.SOPClassUID)], n_studies, n_series)


MF_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word Secondary Capture


def generate_multiframe(outdir: Path, n: int, frames: int = 100, size: int = 512,
                        per_series: int = 10) -> DataSet:
    """N multi-frame 16-bit instances (size x size x frames, ~52 MB each at the
    defaults) in ONE study, explicit VR LE, written one at a time (the client
    never holds more than one instance). Frames are CT_small's pixels
    upsampled to size x size, each frame offset by its index."""
    outdir.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(_testdata("CT_small.dcm"))
    arr = ds.pixel_array
    f = max(1, size // arr.shape[0])
    big = np.repeat(np.repeat(arr, f, axis=0), f, axis=1)[:size, :size].astype(np.uint16)
    stack = np.empty((frames, size, size), dtype=np.uint16)
    for i in range(frames):
        stack[i] = big + np.uint16(i)
    ds.SOPClassUID = MF_GRAYSCALE_WORD_SC
    ds.file_meta.MediaStorageSOPClassUID = MF_GRAYSCALE_WORD_SC
    ds.Rows = ds.Columns = size
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = stack.tobytes()
    del stack
    ds.PatientID = "BENCH-MF"
    ds.PatientName = "Bench^Multiframe"
    files, total, _, n_series = _write(outdir, "mf_{:05d}.dcm", n, per_series, None, lambda i, n_series: ds)
    return DataSet("multiframe", files, total, [MF_GRAYSCALE_WORD_SC], 1, n_series)


def study_uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
