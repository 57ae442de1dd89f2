"""Fuzzing the DIMSE PDU reader: scp/pdu.py ``read_pdu`` (the bounded reader the
DUL reads with) and pynetdicom's decoding of what it returns.

Properties: the reader raises only PduRefused / PeerClosed, returns exactly
one PDU within its bound and reads no byte beyond it, whatever the
connection's cuts; its heap is bounded by the PDU bound, not by the length a
peer announces; decoding either succeeds or raises an ``Exception`` (Evt19,
A-ABORT) and so do the state machine's actions after it (contained by
pynetdicom's ``StateMachine.do_action``: test_contained_pdus_end_the_association
checks the association really ends on a live server).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time

from hypothesis import given, settings

from tests.fuzz import targets

FUZZ = settings.get_profile("dicomgate-fuzz")


@settings(FUZZ, max_examples=300)
@given(targets.pdu_inputs())
def test_pynetdicom_decode_raises_only_exceptions(data):
    with targets.bounded(len(data)):
        targets.pynetdicom_pdu(data)


@settings(FUZZ, max_examples=500)
@given(targets.scp_pdu_inputs())
def test_bounded_pdu_reader_and_decode(inp):
    data, sizes, negotiating = inp
    bound = max(targets.PDU_LIMITS.values())
    with targets.bounded(bound):  # never the announced length
        targets.scp_pdu(data, sizes, negotiating)


def test_announced_length_is_not_allocated():
    """A 6-byte header announcing 4 GiB is refused before anything is allocated."""
    header = struct.pack(">BBL", 1, 0, 0xFFFFFFFF)
    with targets.bounded(0):
        assert targets.scp_pdu(header, [6], True) == "refused by the reader: pdu_too_long"


# minimal PDUs found by the fuzzer that decode but make the state machine's
# DT-2 action raise (pynetdicom 3.0.4): contained, but they must end the association
def _pdv(ctx: int, header: int, data: bytes) -> bytes:
    return struct.pack(">LB", len(data) + 2, ctx) + bytes([header]) + data


CONTAINED = {
    "empty PDV (IndexError)": targets._pdu(4, struct.pack(">LB", 1, 1)),
    "command set without CommandField (AttributeError)": targets._pdu(4, _pdv(1, 3, b"")),
    "unknown CommandField (KeyError)": targets._pdu(4, _pdv(1, 3, b"\x00\x00\x00\x01\x02\x00\x00\x00\x34\x12")),
}


def test_contained_pdus_are_contained():
    for name, pdu in CONTAINED.items():
        assert targets.pynetdicom_pdu(pdu).startswith("contained"), name


def test_contained_pdus_end_the_association(tmp_path):
    """On a live server (SQLite: the DIMSE side does not depend on the backend)."""
    from tests.support.gateway import Backend, Gateway

    gateway = Gateway(Backend("sqlite", tmp_path)).start()
    try:
        _contained_end(gateway)
    finally:
        gateway.close()
        gateway.stop()


def _contained_end(gateway) -> None:
    from pynetdicom.pdu import A_ASSOCIATE_RQ

    acc, prv = gateway.new_account(), gateway.new_provider()
    gateway.link(acc, prv)
    rq = A_ASSOCIATE_RQ()
    rq.decode(targets.pdu_seeds()[0])
    rq.calling_ae_title, rq.called_ae_title = prv["ae_title"], acc["ae_title"]
    for name, pdu in CONTAINED.items():
        with socket.create_connection(("127.0.0.1", gateway.dicom_port), timeout=30) as s:
            s.sendall(rq.encode())
            assert s.recv(65536)[:1] == b"\x02", f"{name}: association not accepted"
            s.sendall(pdu)
            t0 = time.monotonic()
            rest = b""
            while chunk := s.recv(4096):  # until the gateway closes the connection
                rest += chunk
                assert time.monotonic() - t0 < 30, f"{name}: the association did not end"
            assert rest[:1] == b"\x07", f"{name}: closed without an A-ABORT ({rest[:20]!r})"
    assert "Traceback" not in gateway.log()  # one log line per refused PDU, not two tracebacks
    # and the gateway still serves
    proc = subprocess.run(["echoscu", "-aet", prv["ae_title"], "-aec", acc["ae_title"], "127.0.0.1",
                           str(gateway.dicom_port)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
