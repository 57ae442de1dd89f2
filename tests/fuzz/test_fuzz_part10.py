"""Fuzzing the ingest header read: gateway/dicom/part10.py ``parse_instance`` and
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


@settings(FUZZ, max_examples=300)
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
    from gateway.dicom.part10 import MalformedInstance, parse_instance

    with pytest.raises(MalformedInstance, match="file meta"):
        parse_instance(io.BytesIO(UNKNOWN_VR_IN_META), len(UNKNOWN_VR_IN_META), meta_must_match=meta_must_match)


@pytest.fixture(scope="module")
def stow_gateway(tmp_path_factory):
    """A live serve (SQLite) with a provider allowed to push into an account."""
    from tests.support.gateway import Backend, Gateway

    gw = Gateway(Backend("sqlite", tmp_path_factory.mktemp("fuzz-stow"))).start()
    try:
        acc, prv = gw.new_account(), gw.new_provider()
        gw.link(acc, prv)
        yield gw, acc, prv
    finally:
        gw.close()
        gw.stop()


def test_unknown_vr_in_file_meta_over_stow(stow_gateway):
    """Black-box: the STOW answer is a per-instance 0xC000 failure, not a 500."""
    gw, acc, prv = stow_gateway
    rsp = gw.stow(acc["id"], [UNKNOWN_VR_IN_META], token=prv["token"])
    assert rsp.status_code == 409, rsp.text
    failed = rsp.json()["00081198"]["Value"]
    assert [f["00081197"]["Value"] for f in failed] == [[0xC000]]


def deflate_bomb(inflated: int) -> bytes:
    """A Deflated Explicit VR Little Endian file whose data set inflates to about ``inflated`` bytes
    (an OB value of zeros), built without holding the inflated bytes."""
    import struct
    import zlib

    from gateway.dicom.part10 import part10_header

    def elem(group: int, element: int, vr: bytes, value: bytes) -> bytes:
        return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value

    head = (elem(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\x00") + elem(0x0008, 0x0018, b"UI", b"1.2.3.4\x00")
            + elem(0x0020, 0x000D, b"UI", b"1.2.3.5\x00") + elem(0x0020, 0x000E, b"UI", b"1.2.3.6\x00")
            + struct.pack("<HH", 0x0009, 0x1010) + b"OB\x00\x00" + struct.pack("<I", inflated))
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [part10_header("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", "1.2.840.10008.1.2.1.99", "FUZZ"), z.compress(head)]
    zeros = b"\x00" * (1 << 20)
    for _ in range(inflated >> 20):
        out.append(z.compress(zeros))
    out.append(z.compress(b"\x00" * (inflated & ((1 << 20) - 1))))
    out.append(z.flush())
    return b"".join(out)


def test_deflate_bomb_is_refused_within_the_heap_bound():
    """Found while checking the memory bound: pydicom inflates a deflated data set whole,
    so a 70 KB part inflating to 80 MB took ~270 MB of heap. Now refused before inflating."""
    from gateway.dicom.part10 import MAX_INFLATED_BYTES, MalformedInstance, parse_instance

    bomb = deflate_bomb(MAX_INFLATED_BYTES + (16 << 20))
    assert len(bomb) < 200_000
    with targets.bounded(len(bomb)):
        with pytest.raises(MalformedInstance, match="inflates to more than"):
            parse_instance(io.BytesIO(bomb), len(bomb), meta_must_match=True)


def test_deflate_bomb_behind_a_long_file_meta_element_is_refused():
    """Found in review: the check looked for the Deflated UID in the first 4 KiB only, so an 8 KiB
    File Meta Information Version (OB) before it let a bomb through to pydicom (~600 MB peak)."""
    import struct

    from gateway.dicom.part10 import MAX_INFLATED_BYTES, MalformedInstance, _meta_element, parse_instance

    bomb = deflate_bomb(MAX_INFLATED_BYTES + (16 << 20))
    group_length = struct.unpack("<I", bomb[140:144])[0]
    meta, rest = bomb[144:144 + group_length], bomb[144 + group_length:]
    version = _meta_element(0x0001, b"OB", b"\x00\x01")
    assert meta.startswith(version)
    meta = _meta_element(0x0001, b"OB", b"\x00\x01" + bytes(8190)) + meta[len(version):]
    padded = bomb[:128] + b"DICM" + _meta_element(0x0000, b"UL", struct.pack("<I", len(meta))) + meta + rest
    assert b"1.2.840.10008.1.2.1.99" not in padded[:4096]
    with targets.bounded(len(padded)):
        with pytest.raises(MalformedInstance, match="inflates to more than"):
            parse_instance(io.BytesIO(padded), len(padded), meta_must_match=True)


def test_deflated_files_within_the_bound_still_parse():
    from pydicom.data import get_testdata_file

    from gateway.dicom.part10 import parse_instance

    for data in (open(get_testdata_file("image_dfl.dcm"), "rb").read(), deflate_bomb(1 << 20)):
        header = parse_instance(io.BytesIO(data), len(data), meta_must_match=False)
        assert header.transfer_syntax_uid == "1.2.840.10008.1.2.1.99"


def test_deflate_bomb_over_stow_leaves_the_worker_small(stow_gateway):
    """Black-box: a ~200 KB part that inflates to 200 MB is a 0xC000 failure, and the HTTP
    workers' RSS does not grow by hundreds of MB (before: 100 -> 700 MB)."""
    import threading

    import psutil

    gw, acc, prv = stow_gateway
    bomb = deflate_bomb(200_000_000)
    workers = [p for p in psutil.Process(gw.proc.pid).children(recursive=True) if p.name().startswith("dg-http")]
    assert workers
    base = {p.pid: p.memory_info().rss for p in workers}
    growth = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for p in workers:
                try:
                    growth[0] = max(growth[0], p.memory_info().rss - base[p.pid])
                except psutil.Error:
                    pass
            done.wait(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        rsp = gw.stow(acc["id"], [bomb], token=prv["token"])
    finally:
        done.set()
        watcher.join()
    assert rsp.status_code == 409, rsp.text
    assert [f["00081197"]["Value"] for f in rsp.json()["00081198"]["Value"]] == [[0xC000]]
    assert growth[0] < 100 << 20, f"an HTTP worker grew by {growth[0] >> 20} MB"
