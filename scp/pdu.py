"""Bounded reading of one PDU from an association's socket (PS3.8 9.3).

pynetdicom reads a PDU by trusting its length field: a peer that has not
even finished its A-ASSOCIATE-RQ can announce 0xFFFFFFFF bytes and have
them buffered in memory, and a peer that sends a 6-byte header and nothing
more holds the reading thread (and a connection slot) until it hangs up.
:func:`read_pdu` is what :class:`scp.compat.EventDUL` reads with instead:

* the length field is checked against a bound *before* anything more is
  read: the A-ASSOCIATE-RQ bound while the association is being requested
  (``max_associate_rq_bytes``), the Maximum Length we advertised for a
  P-DATA-TF PDU (``max_pdu_size``), the request bound for every other PDU;
* the whole PDU must arrive before a deadline (ARTIM while negotiating,
  the network timeout after);
* the body is read with ``recv_into`` into one buffer of the announced (and
  bounded) size: no 4 KiB fragments joined one by one.

A refusal raises :class:`PduRefused`; the caller answers with A-ABORT and
closes the connection (PS3.8 9.2: an invalid PDU aborts).
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

#: PDU types PS3.8 9.3 defines
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = range(1, 8)
KNOWN_TYPES = frozenset(range(1, 8))
_HEADER = struct.Struct(">BxL")


class PduRefused(Exception):
    """The peer sent a PDU we will not read; ``kind`` names the limit (a metrics label)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class PeerClosed(Exception):
    """The connection ended before a whole PDU arrived."""


@dataclass(frozen=True)
class PduLimits:
    max_associate_rq: int = 65536
    max_pdata: int = 262144

    def bound(self, pdu_type: int, negotiating: bool) -> int:
        if negotiating or pdu_type != P_DATA_TF:
            return self.max_associate_rq
        return self.max_pdata


def _recv_exactly(sock: socket.socket, view: memoryview, deadline: float) -> None:
    got = 0
    while got < len(view):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PduRefused("pdu_timeout", f"PDU incomplete after the deadline ({got} of {len(view)} bytes)")
        sock.settimeout(remaining)
        try:
            n = sock.recv_into(view[got:])
        except (socket.timeout, TimeoutError):
            raise PduRefused("pdu_timeout", f"PDU incomplete after the deadline ({got} of {len(view)} bytes)")
        except OSError as exc:
            raise PeerClosed(str(exc)) from None
        if n == 0:
            raise PeerClosed(f"connection closed after {got} of {len(view)} bytes of a PDU")
        got += n


def read_pdu(sock: socket.socket, limits: PduLimits, *, negotiating: bool, deadline: float,
             restore_timeout: float | None) -> bytearray:
    """Read one whole PDU (header included) or raise :class:`PduRefused` / :class:`PeerClosed`.

    ``negotiating``: no association yet (the peer's A-ASSOCIATE-RQ is awaited).
    ``deadline``: a ``time.monotonic()`` instant by which the PDU must be complete.
    The socket's timeout is set back to ``restore_timeout`` afterwards.
    """
    try:
        header = bytearray(6)
        _recv_exactly(sock, memoryview(header), deadline)
        pdu_type, length = _HEADER.unpack(header)
        if pdu_type not in KNOWN_TYPES:
            raise PduRefused("pdu_unknown", f"unknown PDU type 0x{pdu_type:02X}")
        if negotiating and pdu_type != A_ASSOCIATE_RQ:
            raise PduRefused("pdu_unexpected", f"PDU type 0x{pdu_type:02X} before an A-ASSOCIATE-RQ")
        bound = limits.bound(pdu_type, negotiating)
        if length > bound:
            raise PduRefused("pdu_too_long", f"PDU type 0x{pdu_type:02X} of {length} bytes (at most {bound})")
        pdu = bytearray(6 + length)
        pdu[:6] = header
        _recv_exactly(sock, memoryview(pdu)[6:], deadline)
        return pdu
    finally:
        try:
            sock.settimeout(restore_timeout)
        except OSError:
            pass


def a_abort(reason: int = 0x06) -> bytes:
    """An A-ABORT PDU from the service provider (source 2); reason 6 = invalid PDU parameter value."""
    return bytes([A_ABORT, 0, 0, 0, 0, 4, 0, 0, 2, reason])
