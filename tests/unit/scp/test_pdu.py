"""scp.pdu: one PDU read with its length bounded before it is read, and within a deadline."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from scp.pdu import PduLimits, PduRefused, PeerClosed, a_abort, read_pdu

LIMITS = PduLimits(max_associate_rq=1024, max_pdata=4096)


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair()


def read(data: bytes, *, negotiating: bool, wait: float = 2.0, close: bool = True) -> bytearray:
    ours, theirs = pair()
    try:
        theirs.sendall(data)
        if close:
            theirs.shutdown(socket.SHUT_WR)
        return read_pdu(ours, LIMITS, negotiating=negotiating, deadline=time.monotonic() + wait,
                        restore_timeout=7.0)
    finally:
        assert ours.gettimeout() == 7.0  # set back whatever happened
        ours.close()
        theirs.close()


def test_a_whole_pdu_is_returned_with_its_header():
    pdu = struct.pack(">BBL", 1, 0, 10) + b"0123456789"
    assert read(pdu, negotiating=True) == pdu


def test_a_pdu_arriving_in_fragments_is_reassembled():
    ours, theirs = pair()
    pdu = struct.pack(">BBL", 4, 0, 3000) + bytes(range(256)) * 11 + bytes(184)

    def drip() -> None:
        for i in range(0, len(pdu), 97):
            theirs.sendall(pdu[i:i + 97])
            time.sleep(0.001)

    t = threading.Thread(target=drip)
    t.start()
    try:
        got = read_pdu(ours, LIMITS, negotiating=False, deadline=time.monotonic() + 5, restore_timeout=None)
    finally:
        t.join()
        ours.close()
        theirs.close()
    assert got == pdu


@pytest.mark.parametrize("pdu_type, length, negotiating, kind", [
    (1, 1025, True, "pdu_too_long"),          # A-ASSOCIATE-RQ over its bound
    (1, 0xFFFFFFFF, True, "pdu_too_long"),
    (4, 4097, False, "pdu_too_long"),         # P-DATA over the advertised maximum
    (5, 2048, False, "pdu_too_long"),         # A-RELEASE-RQ gets the small bound
    (4, 10, True, "pdu_unexpected"),          # P-DATA before any association
    (0x47, 4, True, "pdu_unknown"),           # 'GET ' on the DICOM port
    (0, 0, False, "pdu_unknown"),
])
def test_refusals_happen_on_the_header_alone(pdu_type, length, negotiating, kind):
    with pytest.raises(PduRefused) as exc:
        read(struct.pack(">BBL", pdu_type, 0, length), negotiating=negotiating, close=False)
    assert exc.value.kind == kind


def test_a_stalled_pdu_is_refused_at_the_deadline():
    with pytest.raises(PduRefused) as exc:
        read(struct.pack(">BBL", 1, 0, 100) + b"abc", negotiating=True, wait=0.3, close=False)
    assert exc.value.kind == "pdu_timeout"


def test_a_stalled_header_is_refused_at_the_deadline():
    with pytest.raises(PduRefused):
        read(b"\x01\x00", negotiating=True, wait=0.3, close=False)


def test_the_end_of_the_connection_mid_pdu_is_peer_closed():
    with pytest.raises(PeerClosed):
        read(struct.pack(">BBL", 1, 0, 100) + b"abc", negotiating=True)


def test_a_abort_is_a_service_provider_abort():
    pdu = a_abort()
    assert pdu[0] == 0x07 and struct.unpack(">L", pdu[2:6])[0] == 4 and pdu[8] == 2 and pdu[9] == 6
