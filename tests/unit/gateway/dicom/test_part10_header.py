"""The File Meta group built for DIMSE instances reads back as pydicom writes it."""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_preamble, _read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from gateway.dicom.part10 import IMPLEMENTATION_VERSION, parse_instance, part10_header
from tests.support.data import sample_file


def pydicom_header(sop_class: str, sop: str, ts: str, ae: str | None) -> bytes:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if ae:
        meta.SourceApplicationEntityTitle = ae.strip()[:16]
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue()


@pytest.mark.parametrize("sop,ts,ae", [
    ("1.2.3.4.5.6.7.8.9.10.11.12", "1.2.840.10008.1.2.1", "BENCHPACS"),  # even-length UID
    ("1.2.3.45", "1.2.840.10008.1.2", "ODD "),  # odd-length UID, padded AE
    ("1.2.3.45", "1.2.840.10008.1.2.4.50", None),  # no source AE
    ("1.2.3.45", "1.2.840.10008.1.2", "A_VERY_LONG_AE_TITLE_X"),  # cut to 16
])
def test_same_bytes_as_pydicom(sop, ts, ae):
    sop_class = "1.2.840.10008.5.1.4.1.1.2"
    ours = part10_header(sop_class, sop, ts, ae)
    assert ours == pydicom_header(sop_class, sop, ts, ae)
    fp = io.BytesIO(ours)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    assert meta.MediaStorageSOPInstanceUID == sop and meta.TransferSyntaxUID == ts
    assert fp.tell() == len(ours)


@pytest.mark.parametrize("bad", ["1.2.3.../etc", "", "1." + "2" * 70])
def test_invalid_uid_is_refused(bad):
    with pytest.raises(ValueError):
        part10_header("1.2.840.10008.5.1.4.1.1.2", bad, "1.2.840.10008.1.2", "AE")


@pytest.mark.parametrize("name,inflated", [("CT_small.dcm", False), ("image_dfl.dcm", True)])
def test_parse_hands_the_sensitivity_walk_the_bytes_it_parsed(name, inflated):
    """The walk reads deferred values back from ``source``: the file itself, or for a deflated
    file the data set the parse inflated (positions are positions in those bytes)."""
    data = sample_file(name).read_bytes()
    fp = io.BytesIO(data)
    header = parse_instance(fp, len(data), meta_must_match=False)
    assert (header.source is not fp) == inflated
    if inflated:
        header.source.seek(0)
        assert header.source_end == len(header.source.read()) > len(data)
    else:
        assert header.source_end == len(data)
