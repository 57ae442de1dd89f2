"""Fuzzing the ingest header read: gateway/dicomfile.py ``parse_instance`` and
``dataset_offset``, the sensitivity labels (consent/sensitivity.py
``classify``) and the digest, as ``IngestService._prepare`` runs them on a
STOW part or a C-STORE data set (with the gateway's own File Meta).

Property: nothing but MalformedInstance (-> 0xC000 / STOW "malformed"), in
bounded time and heap per input.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings

from tests.fuzz import targets

FUZZ = settings.get_profile("dicomgate-fuzz")


@settings(FUZZ, max_examples=400)
@given(targets.dicom_inputs())
def test_header_read_raises_only_malformed_instance(inp):
    with targets.bounded(len(inp)):
        targets.dicom_ingest(inp)


# ----------------------------------------------------------------------------- crashes found, as plain regressions

#: (0002,0003) Media Storage SOP Instance UID with the unknown VR "TI": pydicom
#: parsed it raw and raised NotImplementedError when parse_instance read it
#: (STOW answered 500). Now MalformedInstance, a 0xC000 failure.
UNKNOWN_VR_IN_META = (
    b"\x00" * 128 + b"DICM\x02\x00\x00\x00UL\x04\x00\x82\x00\x00\x00\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00"
    b"\x01\x02\x00\x02\x00UI\x06\x001.2.3\x00\x02\x00\x03\x00TI\x08\x001.2.3.4\x00\x02\x00\x10\x00UI\x14\x00"
    b"1.2.840.10008.1.2.1\x00\x02\x00\x12\x00UI\x1c\x001.2.826.0.1.3680043.8.498.1\x00\x02\x00\x13\x00SH\x0e\x00"
    b"PYDICOM 3.0.2 \x08\x00\x16\x00UI\x06\x001.2.3\x00\x08\x00\x18\x00UI\x08\x001.2.3.4\x00 \x00\r\x00UI\x08\x00"
    b"1.2.3.5\x00 \x00\x0e\x00UI\x08\x001.2.3.6\x00"
)


@pytest.mark.parametrize("meta_must_match", [False, True])
def test_unknown_vr_in_file_meta_is_malformed(meta_must_match):
    from gateway.dicomfile import MalformedInstance, parse_instance

    with pytest.raises(MalformedInstance, match="file meta"):
        parse_instance(io.BytesIO(UNKNOWN_VR_IN_META), len(UNKNOWN_VR_IN_META), meta_must_match=meta_must_match)


def test_unknown_vr_in_file_meta_over_stow(tmp_path):
    """Black-box: the STOW answer is a per-instance 0xC000 failure, not a 500."""
    from tests.support.gateway import Backend, Gateway

    gw = Gateway(Backend("sqlite", tmp_path)).start()
    try:
        acc, prv = gw.new_account(), gw.new_provider()
        gw.link(acc, prv)
        rsp = gw.stow(acc["id"], [UNKNOWN_VR_IN_META], token=prv["token"])
        assert rsp.status_code == 409, rsp.text
        failed = rsp.json()["00081198"]["Value"]
        assert [f["00081197"]["Value"] for f in failed] == [[0xC000]]
    finally:
        gw.close()
        gw.stop()
