"""Hostile DICOM peers before an association is accepted (issue 11, points 1-3).

Each test starts its own ``serve`` (two DIMSE workers, a short ARTIM timer)
and attacks it from 127.0.0.1 with raw sockets, bounded in connections,
bytes and time; a registered provider must still get through with DCMTK's
tools, and the workers must not grow.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from tests.conftest import make_backend
from tests.support.data import variant
from tests.support.dimse import dcmtk, need, storescu
from tests.support.gateway import Gateway, refusals, worker_processes
from tests.support.pdus import associate_rq, closed_within, read_pdu

A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ABORT = 0x02, 0x03, 0x07
ARTIM = 3


@pytest.fixture(scope="module")
def gw(tmp_path_factory, request):
    gw = Gateway(make_backend("sqlite", tmp_path_factory.mktemp("hostile-dimse"), request), extra_env={
        "DICOMGATE_DIMSE_PROCESSES": "2", "DICOMGATE_HTTP_PROCESSES": "1",
        "DICOMGATE_ASSOCIATION_REQUEST_TIMEOUT": str(ARTIM),
    }).start()
    yield gw
    gw.close()
    gw.stop()


@pytest.fixture
def linked(gw):
    account, provider = gw.new_account(), gw.new_provider()
    gw.link(account, provider, push=True)
    return account, provider


def rss(gw: Gateway) -> dict[int, int]:
    return {p.pid: p.memory_info().rss for p in worker_processes(gw, "dimse")}


def test_half_open_associations_do_not_keep_a_provider_out(gw, linked, tmp_path):
    """120 connections that send only the 6-byte header of an A-ASSOCIATE-RQ."""
    need("echoscu")
    account, provider = linked
    evicted, timeouts = refusals(gw, "dimse_pending_evicted"), refusals(gw, "pdu_timeout")
    threads_before = sum(p.num_threads() for p in worker_processes(gw, "dimse"))
    attackers = []
    try:
        for _ in range(120):
            s = socket.create_connection(("127.0.0.1", gw.dicom_port), timeout=5)
            s.sendall(struct.pack(">BBL", 0x01, 0, 0x1000))  # announces 4 KiB, sends nothing more
            attackers.append(s)
        time.sleep(0.5)
        echo = dcmtk("echoscu", "-aet", provider["ae_title"], "-aec", account["ae_title"],
                     "127.0.0.1", str(gw.dicom_port), timeout=20)
        assert echo.returncode == 0, echo.stderr
        f = tmp_path / "one.dcm"
        f.write_bytes(variant())
        stored = storescu(gw.dicom_port, provider["ae_title"], account["ae_title"], f)
        assert stored.returncode == 0, stored.stderr
        assert len(gw.instance_rows(account["id"])) == 1
        # every attacker connection is closed: evicted for newer ones, or by ARTIM
        assert all(closed_within(s, ARTIM + 5) for s in attackers)
    finally:
        for s in attackers:
            s.close()
    assert refusals(gw, "dimse_pending_evicted") >= evicted + 120 - 2 * 16
    # and their threads are gone too (an evicted connection's thread used to wait out ARTIM)
    deadline = time.monotonic() + 5
    while sum(p.num_threads() for p in worker_processes(gw, "dimse")) > threads_before + 4:
        assert time.monotonic() < deadline, "connection threads outlive their connections"
        time.sleep(0.2)
    assert refusals(gw, "pdu_timeout") > timeouts


def test_a_connection_that_sends_nothing_is_closed_by_artim(gw):
    s = socket.create_connection(("127.0.0.1", gw.dicom_port), timeout=5)
    try:
        assert closed_within(s, ARTIM + 5)
    finally:
        s.close()


def test_an_oversized_pdu_length_is_aborted_before_it_is_read(gw):
    before, refused = rss(gw), refusals(gw, "pdu_too_long")
    s = socket.create_connection(("127.0.0.1", gw.dicom_port), timeout=5)
    sent = 0
    try:
        s.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF))
        chunk = bytes(1 << 20)
        try:
            while sent < 300 << 20:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the gateway closed the connection
        reply = read_pdu(s)
    finally:
        s.close()
    assert reply is not None and reply[0] == A_ABORT, reply
    assert sent < 64 << 20, f"the gateway kept reading: {sent >> 20} MB accepted"
    growth = max(rss(gw)[pid] - size for pid, size in before.items())
    assert growth < 16 << 20, f"a DIMSE worker grew by {growth >> 20} MB"
    assert refusals(gw, "pdu_too_long") == refused + 1


def test_a_p_data_pdu_longer_than_we_advertised_is_aborted(gw, linked):
    account, provider = linked
    s = socket.create_connection(("127.0.0.1", gw.dicom_port), timeout=5)
    try:
        s.sendall(associate_rq(provider["ae_title"], account["ae_title"]))
        ac = read_pdu(s)
        assert ac is not None and ac[0] == A_ASSOCIATE_AC
        # our Maximum Length Received, from the A-ASSOCIATE-AC's user information (item 0x51)
        advertised = struct.unpack(">L", ac[1][ac[1].index(b"\x51\x00\x00\x04") + 4:][:4])[0]
        assert 0 < advertised < 1 << 24
        s.sendall(struct.pack(">BBL", 0x04, 0, advertised + 1) + bytes(4096))
        reply = read_pdu(s)
        assert reply is not None and reply[0] == A_ABORT, reply
        assert closed_within(s, 5)
    finally:
        s.close()


def test_a_huge_association_request_is_refused_at_once_with_one_log_line(gw, linked):
    """1000 presentation contexts x 200 transfer syntaxes: 5.4 MB."""
    account, provider = linked
    pdu = associate_rq(provider["ae_title"], account["ae_title"], contexts=1000, syntaxes=200)
    assert len(pdu) > 5_000_000
    log_before = gw.log().count("\n")
    cpu_before = sum(p.cpu_times().user + p.cpu_times().system for p in worker_processes(gw, "dimse"))
    s = socket.create_connection(("127.0.0.1", gw.dicom_port), timeout=5)
    try:
        try:
            s.sendall(pdu)
        except OSError:
            pass
        reply = read_pdu(s)
    finally:
        s.close()
    assert reply is not None and reply[0] == A_ABORT
    time.sleep(0.5)
    cpu = sum(p.cpu_times().user + p.cpu_times().system for p in worker_processes(gw, "dimse")) - cpu_before
    print(f"refusing a 5.4 MB A-ASSOCIATE-RQ cost the DIMSE workers {cpu * 1000:.0f} ms of CPU")
    assert gw.log().count("\n") - log_before <= 2


def test_more_than_128_presentation_contexts_are_rejected(gw, linked):
    """Small enough for the A-ASSOCIATE-RQ bound, but over PS3.8's 128 contexts."""
    account, provider = linked
    pdu = associate_rq(provider["ae_title"], account["ae_title"], contexts=200)
    assert len(pdu) < 65536
    refused = refusals(gw, "dimse_too_many_contexts")
    s = socket.create_connection(("127.0.0.1", gw.dicom_port), timeout=5)
    try:
        s.sendall(pdu)
        reply = read_pdu(s)
    finally:
        s.close()
    assert reply is not None and reply[0] == A_ASSOCIATE_RJ, reply
    assert reply[1][1] == 0x01  # rejected-permanent
    assert refusals(gw, "dimse_too_many_contexts") == refused + 1


def test_an_unknown_pdu_type_is_aborted(gw):
    s = socket.create_connection(("127.0.0.1", gw.dicom_port), timeout=5)
    try:
        s.sendall(struct.pack(">BBL", 0x47, 0, 4) + b"GET ")  # e.g. an HTTP client on the DICOM port
        reply = read_pdu(s)
        assert reply is not None and reply[0] == A_ABORT
        assert closed_within(s, 5)
    finally:
        s.close()
