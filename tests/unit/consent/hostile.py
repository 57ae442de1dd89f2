"""Hand-encoded Part 10 files that hide a sensitivity label in encodings a
careless walker misses: UN sequences, private sequences in implicit VR,
deep nesting, big endian, deflate; and malformed nested items.

pydicom would re-encode (and so normalise) what it writes, so the nested
parts are built byte by byte here. Each builder returns the whole file.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from pydicom.uid import generate_uid

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
UNDEFINED = 0xFFFFFFFF
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}


@dataclass
class Enc:
    implicit: bool = False
    little: bool = True

    @property
    def e(self) -> str:
        return "<" if self.little else ">"


IMPLICIT = Enc(implicit=True)
EXPLICIT = Enc()
BIG = Enc(little=False)


def _pad(value: bytes, pad: bytes = b" ") -> bytes:
    return value + pad if len(value) % 2 else value


def element(tag: int, vr: str, value: bytes, enc: Enc, *, length: int | None = None) -> bytes:
    """One data element; ``length`` overrides the encoded length (UNDEFINED, or a lie)."""
    n = len(value) if length is None else length
    head = struct.pack(enc.e + "HH", tag >> 16, tag & 0xFFFF)
    if enc.implicit:
        return head + struct.pack(enc.e + "L", n) + value
    if vr in _LONG:
        return head + vr.encode() + b"\0\0" + struct.pack(enc.e + "L", n) + value
    return head + vr.encode() + struct.pack(enc.e + "H", n) + value


def text(tag: int, vr: str, value: str, enc: Enc) -> bytes:
    return element(tag, vr, _pad(value.encode(), b"\0" if vr == "UI" else b" "), enc)


def item(body: bytes, enc: Enc, *, undefined: bool = False) -> bytes:
    e = enc.e
    if undefined:
        return struct.pack(e + "HHL", 0xFFFE, 0xE000, UNDEFINED) + body + struct.pack(e + "HHL", 0xFFFE, 0xE00D, 0)
    return struct.pack(e + "HHL", 0xFFFE, 0xE000, len(body)) + body


def sequence(tag: int, items: list[bytes], enc: Enc, *, vr: str = "SQ", undefined: bool = False) -> bytes:
    """A sequence element; ``items`` already encoded with :func:`item` (in the content's encoding)."""
    body = b"".join(items)
    if undefined:
        return element(tag, vr, body + struct.pack(enc.e + "HHL", 0xFFFE, 0xE0DD, 0), enc, length=UNDEFINED)
    return element(tag, vr, body, enc)


def label(code: str = "PSY", enc: Enc = IMPLICIT) -> bytes:
    """(0040,1008) Confidentiality Code, in an item body."""
    return text(0x00401008, "LO", code, enc)


@dataclass
class Instance:
    """A minimal CT instance (no pixels) with ``nested`` spliced in at its tag's place."""

    ts: str = EXPLICIT_LE
    nested: dict[int, bytes] = field(default_factory=dict)  # tag -> encoded element(s)
    study: str = field(default_factory=generate_uid)
    series: str = field(default_factory=generate_uid)
    sop: str = field(default_factory=generate_uid)

    @property
    def enc(self) -> Enc:
        return {IMPLICIT_LE: IMPLICIT, EXPLICIT_BE: BIG}.get(self.ts, EXPLICIT)

    def dataset(self) -> bytes:
        enc = self.enc
        plain = {
            0x00080016: text(0x00080016, "UI", CT_IMAGE, enc),
            0x00080018: text(0x00080018, "UI", self.sop, enc),
            0x00080060: text(0x00080060, "CS", "CT", enc),
            0x00100010: text(0x00100010, "PN", "Hostile^Test", enc),
            0x00100020: text(0x00100020, "LO", "H" + self.sop[-8:], enc),
            0x0020000D: text(0x0020000D, "UI", self.study, enc),
            0x0020000E: text(0x0020000E, "UI", self.series, enc),
        }
        merged = plain | self.nested
        return b"".join(merged[t] for t in sorted(merged))

    def part10(self) -> bytes:
        body = self.dataset()
        if self.ts == DEFLATED:
            c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
            body = c.compress(body) + c.flush()
            body = _pad(body, b"\0")
        return _meta(self.sop, self.ts) + body


def _meta(sop: str, ts: str) -> bytes:
    enc = EXPLICIT
    body = b"".join((
        element(0x00020001, "OB", b"\0\1", enc),
        text(0x00020002, "UI", CT_IMAGE, enc),
        text(0x00020003, "UI", sop, enc),
        text(0x00020010, "UI", ts, enc),
        text(0x00020012, "UI", "1.2.826.0.1.3680043.8.498.1", enc),
    ))
    return b"\0" * 128 + b"DICM" + element(0x00020000, "UL", struct.pack("<L", len(body)), enc) + body


# -- the hiding places -------------------------------------------------------

def un_sequence(*, undefined: bool = False, code: str = "PSY") -> Instance:
    """(0008,1115) Referenced Series Sequence sent as UN (explicit VR LE), content implicit VR LE."""
    items = [item(label(code, IMPLICIT), IMPLICIT, undefined=undefined)]
    seq = sequence(0x00081115, items, IMPLICIT, undefined=undefined)  # implicit content ...
    # ... re-headed as an explicit UN element around the same value bytes
    value = seq[8:]
    length = UNDEFINED if undefined else len(value)
    return Instance(EXPLICIT_LE, {0x00081115: element(0x00081115, "UN", value, EXPLICIT, length=length)})


def un_vr_lookalike(code: str = "PSY") -> Instance:
    """An undefined-length UN sequence that a parser reading it as explicit VR misreads.

    Read as the standard says (implicit VR LE), the item holds a 20300-byte
    private value and then the label (pydicom 3.0 guesses each item's
    encoding from its first element). A reader that guesses explicit VR sees
    the length's low bytes "LO" as a VR, reads a 0-length LO, then takes the
    private value's bytes for an OB element whose length swallows the label.
    """
    lab = label(code, IMPLICIT)
    size = 0x4F4C  # little endian b"LO"
    swallow = element(0x00091003, "OB", b"", EXPLICIT, length=size - 12 + len(lab))
    private = struct.pack("<HHL", 0x0009, 0x1002, size) + swallow + b"\0" * (size - len(swallow))
    body = private + lab  # the private value first: a parser guesses an item's VR from its first element
    value = item(body, IMPLICIT, undefined=True) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return Instance(EXPLICIT_LE, {0x00081115: element(0x00081115, "UN", value, EXPLICIT, length=UNDEFINED)})


def private_implicit(*, undefined: bool = False, code: str = "PSY") -> Instance:
    """A private sequence (0009,1001) in implicit VR LE: no dictionary says it is a sequence."""
    items = [item(label(code, IMPLICIT), IMPLICIT, undefined=undefined)]
    return Instance(IMPLICIT_LE, {
        0x00090010: text(0x00090010, "LO", "HOSTILE CREATOR", IMPLICIT),
        0x00091001: sequence(0x00091001, items, IMPLICIT, undefined=undefined),
    })


def deep(depth: int = 4, *, ts: str = EXPLICIT_LE, code: str = "PSY") -> Instance:
    """The label ``depth`` sequences down, alternating defined and undefined lengths,
    with a private UN sequence as the innermost level."""
    enc = {IMPLICIT_LE: IMPLICIT, EXPLICIT_BE: BIG}.get(ts, EXPLICIT)
    # innermost: a private UN sequence (implicit LE content whatever the transfer syntax)
    body = item(label(code, IMPLICIT), IMPLICIT)
    inner_value = sequence(0x00091001, [body], IMPLICIT)[8:]
    inner = text(0x00090010, "LO", "HOSTILE CREATOR", enc) + (
        element(0x00091001, "UN", inner_value, enc) if not enc.implicit else element(0x00091001, "", inner_value, enc))
    for level in range(depth - 1):
        inner = sequence(0x00081140, [item(inner, enc, undefined=level % 2 == 0)], enc, undefined=level % 2 == 1)
    return Instance(ts, {0x00081140: inner})


def big_endian(code: str = "PSY") -> Instance:
    """Explicit VR big endian: a defined-length sequence holding an undefined-length item."""
    body = item(label(code, BIG), BIG, undefined=True)
    return Instance(EXPLICIT_BE, {0x00081115: sequence(0x00081115, [body], BIG)})


def deflated(code: str = "PSY") -> Instance:
    """Deflated explicit VR LE with the label in a UN sequence."""
    inst = un_sequence(code=code)
    inst.ts = DEFLATED
    return inst


def large(code: str = "PSY") -> Instance:
    """A defined-length sequence longer than the parser's defer size, label in its last item."""
    filler = [item(text(0x00081150, "UI", CT_IMAGE, EXPLICIT) + text(0x00081155, "UI", generate_uid(), EXPLICIT),
                   EXPLICIT) for _ in range(80)]
    return Instance(EXPLICIT_LE, {0x00081115: sequence(0x00081115, filler + [item(label(code, EXPLICIT), EXPLICIT)],
                                                       EXPLICIT)})


# -- malformed nesting (must fail closed) ------------------------------------

def malformed_un() -> Instance:
    """A UN sequence whose item claims more bytes than the element holds."""
    body = label("N", IMPLICIT)
    bad_item = struct.pack("<HHL", 0xFFFE, 0xE000, len(body) + 400) + body
    return Instance(EXPLICIT_LE, {0x00081115: element(0x00081115, "UN", bad_item, EXPLICIT)})


def malformed_private() -> Instance:
    """A private implicit VR sequence whose nested element runs past its item."""
    broken = struct.pack("<HHL", 0x0040, 0x1008, 200) + b"PSY "
    return Instance(IMPLICIT_LE, {
        0x00090010: text(0x00090010, "LO", "HOSTILE CREATOR", IMPLICIT),
        0x00091001: element(0x00091001, "", item(broken, IMPLICIT), IMPLICIT),
    })


def too_deep(depth: int = 80) -> Instance:
    """Nesting beyond the walker's depth bound (defined lengths: the parser does not descend)."""
    inner = label("N", EXPLICIT)
    for _ in range(depth):
        inner = sequence(0x00081140, [item(inner, EXPLICIT)], EXPLICIT)
    return Instance(EXPLICIT_LE, {0x00081140: inner})


HIDING_PLACES = {
    "un-defined-length": lambda **kw: un_sequence(**kw),
    "un-undefined-length": lambda **kw: un_sequence(undefined=True, **kw),
    "un-undefined-vr-lookalike": lambda **kw: un_vr_lookalike(**kw),
    "private-implicit": lambda **kw: private_implicit(**kw),
    "private-implicit-undefined": lambda **kw: private_implicit(undefined=True, **kw),
    "nested-depth-4": lambda **kw: deep(4, **kw),
    "nested-depth-5-implicit": lambda **kw: deep(5, ts=IMPLICIT_LE, **kw),
    "big-endian": lambda **kw: big_endian(**kw),
    "big-endian-deep": lambda **kw: deep(4, ts=EXPLICIT_BE, **kw),
    "deflated": lambda **kw: deflated(**kw),
    "large-deferred": lambda **kw: large(**kw),
}

MALFORMED = {
    "un-item-overruns": malformed_un,
    "private-element-overruns": malformed_private,
    "beyond-depth-bound": too_deep,
}
