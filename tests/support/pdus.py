"""Raw DICOM upper-layer PDUs (PS3.8 9.3), hand-built, for tests of hostile peers."""

from __future__ import annotations

import socket
import struct
import time

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = b"1.2.840.10008.1.1"
IMPLICIT_VR_LE = b"1.2.840.10008.1.2"


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _ae(title: str) -> bytes:
    return title.encode().ljust(16)[:16]


def associate_rq(calling: str, called: str, contexts: int = 1, syntaxes: int = 1,
                 abstract: bytes = VERIFICATION, max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ with ``contexts`` presentation contexts of ``syntaxes`` transfer syntaxes each."""
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32)
    body += _item(0x10, APPLICATION_CONTEXT)
    for n in range(contexts):
        sub = _item(0x30, abstract)
        sub += b"".join(_item(0x40, IMPLICIT_VR_LE if i == 0 else b"1.2.840.10008.1.2.4.%03d.1" % i) for i in range(syntaxes))
        body += _item(0x20, bytes([(2 * n + 1) & 0xFF, 0, 0, 0]) + sub)
    body += _item(0x50, _item(0x51, struct.pack(">L", max_pdu)))
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def read_pdu(sock: socket.socket, timeout: float = 10) -> tuple[int, bytes] | None:
    """(type, body) of the next PDU, or None when the peer closed first."""
    sock.settimeout(timeout)
    head = _read(sock, 6)
    if len(head) < 6:
        return None
    kind, length = struct.unpack(">BxL", head)
    return kind, _read(sock, length)


def _read(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        try:
            chunk = sock.recv(n - len(out))
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True once the peer has closed the connection (EOF or reset), waiting at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if sock.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False
