"""Sensitivity labels: operator-configured rules (attribute, pattern -> label).

The default reads Confidentiality Code (0040,1008) and Confidentiality
Constraint on Patient Data Description (0040,3001) and recognises the HL7
confidentiality codes ETH, PSY, SDV, HIV, SEX and STD. Rules are matched
anywhere in the header, case-insensitively: in sequences at any depth,
sequences sent as UN (read as implicit VR little endian, PS3.5 6.2.2),
private sequences that no dictionary names, in every transfer syntax.

The walk fails closed: a data set it cannot walk completely (a malformed
nested item, UN content that does not parse, nesting or item counts beyond
the bounds below) is labelled :data:`UNVERIFIED`, which makes it sensitive.
It is fed by ingest's parse (pydicom's raw elements, undecoded) and reads
only what that parse left unread, so its cost is small beside the parse.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, BinaryIO, Iterable

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

DEFAULT_CODES = ("ETH", "PSY", "SDV", "HIV", "SEX", "STD")
_DEFAULT_PATTERN = r"\b(" + "|".join(DEFAULT_CODES) + r")\b"

#: the label of an instance whose labels could not all be read: it is treated as sensitive
UNVERIFIED = "UNVERIFIED"
#: bounds of the walk (beyond them the instance is UNVERIFIED): sequence nesting depth,
#: items and nested elements in one instance, bytes of nested content read back
MAX_DEPTH = 64
MAX_ITEMS = 100_000
MAX_ELEMENTS = 1_000_000
MAX_NESTED_BYTES = 64 << 20


@dataclass(frozen=True)
class Rule:
    tag: int
    pattern: re.Pattern[str]
    label: str | None  # None: the matched text, upper-cased

    @classmethod
    def from_config(cls, raw: dict[str, Any]) -> "Rule":
        attr = str(raw.get("attribute", "")).strip()
        if not attr:
            raise ValueError("a sensitivity rule needs an 'attribute' (keyword or tag like 00401008)")
        tag = tag_for_keyword(attr)
        if tag is None:
            try:
                tag = int(Tag(attr.replace("(", "").replace(")", "").replace(",", "")))
            except (ValueError, TypeError, OverflowError):
                raise ValueError(f"sensitivity rule: unknown attribute {attr!r}") from None
        try:
            pattern = re.compile(str(raw.get("pattern", _DEFAULT_PATTERN)), re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"sensitivity rule for {attr}: bad pattern: {exc}") from None
        return cls(int(tag), pattern, raw.get("label"))


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule.from_config({"attribute": "ConfidentialityCode"}),
    Rule.from_config({"attribute": "00403001"}),
)


def load_rules(raw: Iterable[dict[str, Any]] | None) -> tuple[Rule, ...]:
    if raw is None:
        return DEFAULT_RULES
    return tuple(Rule.from_config(r) for r in raw)


def classify(ds: Dataset, rules: Iterable[Rule] = DEFAULT_RULES) -> list[str]:
    """Sorted, de-duplicated labels that the rules find in the data set.

    Fails closed: a data set that cannot be walked completely gets
    :data:`UNVERIFIED` among its labels (see :func:`examine`).
    """
    return examine(ds, rules).labels


@dataclass(frozen=True)
class Classification:
    labels: list[str]
    #: why the walk could not finish (the labels then include UNVERIFIED); None: walked completely
    unverified: str | None = None


def examine(
    ds: Dataset, rules: Iterable[Rule] = DEFAULT_RULES, *, source: BinaryIO | None = None, end: int | None = None,
) -> Classification:
    """Walk every place a label can be and apply the rules.

    ``source`` (seekable, the data set's bytes as parsed: the file, or the
    inflated buffer of a deflated one; ``end`` its length) lets the walk read
    what the parser left unread (deferred values) and re-read undefined-length
    sequences in the encoding the standard gives them; without it the
    parser's items are walked. Anything that cannot be walked within the
    bounds raises no error: the instance is labelled :data:`UNVERIFIED`.
    """
    by_tag: dict[int, list[Rule]] = {}
    for rule in rules:
        by_tag.setdefault(rule.tag, []).append(rule)
    walk = _Walk(by_tag, source, end)
    try:
        walk.dataset(ds, 0, top=True)
    except Exception as exc:  # whatever else hostile bytes raise (OverflowError, MemoryError...): fail closed
        walk.unverified = walk.unverified or _reason(exc)
    unverified = walk.unverified
    labels = walk.labels
    if unverified is not None:
        labels.add(UNVERIFIED)
    return Classification(sorted(labels), unverified)


class _Unwalkable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: what a walk of hostile bytes may raise (pydicom's conversions included): all mean "cannot be walked"
_FAILURES = (_Unwalkable, ValueError, TypeError, KeyError, IndexError, OSError, struct.error, RecursionError,
             UnicodeError, AttributeError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, _Unwalkable):
        return exc.reason
    return f"the data set cannot be read: {type(exc).__name__}: {str(exc)[:200]}"


_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_TEXT_VRS_SINGLE = {"LT", "ST", "UT"}  # no value multiplicity: a backslash is text
_SEQUENCE_VRS = {"SQ", "UN"}
_ITEM_LE = b"\xfe\xff\x00\xe0"
_ITEM_BE = b"\xff\xfe\xe0\x00"


@lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _starts_with_item(value: bytes | memoryview, little: bool) -> bool:
    return len(value) >= 8 and bytes(value[:4]) == (_ITEM_LE if little else _ITEM_BE)


class _Walk:
    """One classification: the labels found and the work done, against the bounds."""

    def __init__(self, by_tag: dict[int, list[Rule]], source: BinaryIO | None, end: int | None) -> None:
        self.by_tag = by_tag
        self.source = source
        self.end = end
        self.labels: set[str] = set()
        self.items = 0
        self.elements = 0
        self.bytes_read = 0
        self.unverified: str | None = None

    # -- what was found ----------------------------------------------------
    def match(self, tag: int, values: Iterable[str]) -> None:
        for text in values:
            for rule in self.by_tag[tag]:
                for m in rule.pattern.finditer(text):
                    self.labels.add(rule.label or m.group(0).upper())

    def text(self, tag: int, vr: str | None, value: bytes | memoryview, encodings: Any) -> None:
        raw = bytes(value)
        try:
            text = decode_bytes(raw, _encodings(encodings), set()) if raw else ""
        except Exception:  # an undecodable value is still searched, byte for character
            text = raw.decode("latin-1")
        text = text.rstrip("\x00 ")
        vr = vr or _dictionary_vr(tag)
        self.match(tag, [text] if vr in _TEXT_VRS_SINGLE else text.split("\\"))

    def read(self, pos: int, length: int) -> bytes:
        """Bytes the parser did not keep, from the source; bounded."""
        if self.source is None:
            raise _Unwalkable("a deferred value cannot be read back")
        self.bytes_read += length
        if self.bytes_read > MAX_NESTED_BYTES:
            raise _Unwalkable(f"nested content larger than {MAX_NESTED_BYTES} bytes")
        self.source.seek(pos)
        data = self.source.read(length)
        if len(data) != length:
            raise _Unwalkable("a nested value runs past the end of the data set")
        return data

    # -- the parser's data set ---------------------------------------------
    def dataset(self, ds: Dataset, depth: int, *, top: bool = False) -> None:
        """A data set pydicom parsed: its elements are mostly raw (undecoded)."""
        encodings = getattr(ds, "original_character_set", None) or getattr(ds, "_parent_encoding", None)
        by_tag = self.by_tag
        ends: list[tuple[int, int]] = []
        raw = getattr(ds, "_dict", None)  # the element dict itself: get_item() per element cost more than the walk
        elements = raw.items() if isinstance(raw, dict) else ((t, ds.get_item(t, keep_deferred=True)) for t in ds.keys())
        for tag, elem in elements:
            vr = elem.VR
            if vr is not None and vr not in _SEQUENCE_VRS and tag not in by_tag:
                continue  # most elements: a VR that cannot hold a sequence, and no rule reads it
            try:
                self.element(ds, int(tag), elem, depth, encodings, ends, top)
            except _FAILURES as exc:
                if not top:
                    raise
                # fail closed, but walk the other elements: their labels are still worth knowing
                self.unverified = self.unverified or _reason(exc)

    def element(self, ds: Dataset, tag: int, elem: Any, depth: int, encodings: Any,
                ends: list[tuple[int, int]], top: bool) -> None:
        """One element of a parsed data set (``ends``: its elements' positions, filled when needed)."""
        if isinstance(elem, DataElement):  # converted already (undefined-length sequences, built in memory)
            if elem.VR == "SQ":
                start = elem.file_tell
                # only the top level's offsets are offsets in the source
                if top and self.source is not None and start is not None and elem.is_undefined_length:
                    if not ends:
                        ends.extend(_positions(ds))
                    self.reread_sequence(ds, start, ends, encodings)
                else:
                    self.walk_sequence(elem.value or [], depth + 1)
            elif tag in self.by_tag and elem.value is not None:
                value = elem.value
                if isinstance(value, (bytes, bytearray)):
                    self.text(tag, elem.VR, value, encodings)
                else:
                    self.match(tag, [str(v) for v in (value if elem.VM > 1 else [value])])
            elif elem.VR == "UN" and isinstance(elem.value, bytes) and _starts_with_item(elem.value, True):
                self.items_of(memoryview(elem.value), 0, len(elem.value), True, True, depth + 1,
                              encodings, undefined=False)
            return
        vr, length, value = elem.VR, elem.length, elem.value
        if length == _UNDEFINED or not length:
            if tag in self.by_tag and isinstance(value, bytes):
                self.text(tag, vr, value, encodings)
            return  # undefined length but not a sequence: encapsulated pixel data and the like
        kind = _kind(tag, vr, self.by_tag)
        if kind is None:
            return
        little = elem.is_little_endian
        if kind == "maybe" or kind == "un?":
            head = value[:8] if value is not None else (self.read(elem.value_tell, 8) if length >= 8 else b"")
            if _starts_with_item(head, little if kind == "maybe" else True):
                kind = "seq" if kind == "maybe" else "un"
            elif tag in self.by_tag:
                kind = "text"
            else:
                return
        if value is None:  # deferred by the parser (longer than its defer size)
            if not top:
                raise _Unwalkable("a deferred nested value cannot be read back")
            value = self.read(elem.value_tell, length)
        if kind == "text":
            self.text(tag, vr, value, encodings)
        elif kind == "un":  # PS3.5 6.2.2: a UN sequence is implicit VR little endian
            self.items_of(memoryview(value), 0, len(value), True, True, depth + 1, encodings, undefined=False)
        else:
            self.items_of(memoryview(value), 0, len(value), elem.is_implicit_VR, little, depth + 1, encodings,
                          undefined=False)

    def walk_sequence(self, items: Iterable[Dataset], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise _Unwalkable(f"sequences are nested deeper than {MAX_DEPTH} levels")
        for item in items:
            self.count_item()
            self.dataset(item, depth)

    def reread_sequence(self, ds: Dataset, start: int, after: list[tuple[int, int]], encodings: Any) -> None:
        """An undefined-length sequence the parser read: read it again from its bytes.

        pydicom guesses each item's encoding from its first element's bytes;
        the standard says a UN sequence is implicit VR little endian. Where
        the two disagree a label can hide, so the sequence is walked as the
        standard reads it, and it must end exactly where the parser found
        the next element (``after``: the data set's (value offset, tag), sorted).
        """
        implicit, little = (bool(x) for x in ds.original_encoding)
        nxt = next(((tell, tag) for tell, tag in after if tell > start), None)
        stop = nxt[0] if nxt is not None else self.end
        if stop is None:
            raise _Unwalkable("the end of the data set is unknown")
        head = min(12, start)
        data = self.read(start - head, stop - start + head)  # with the element's own header (its VR)
        content_implicit, content_little = implicit, little
        if not implicit and head == 12 and data[4:6] == b"UN":
            content_implicit, content_little = True, True
        end = self.items_of(memoryview(data), head, len(data), content_implicit, content_little, 1, encodings,
                            undefined=True)
        if nxt is None:
            ok = end == len(data)
        else:  # the next element's header fills the rest exactly
            tag = struct.unpack_from("<HH" if little else ">HH", data, end) if end + 8 <= len(data) else None
            header = 8 if implicit or data[end + 4:end + 6] not in _LONG_VRS else 12
            ok = tag is not None and (tag[0] << 16 | tag[1]) == nxt[1] and end + header == len(data)
        if not ok:
            raise _Unwalkable("an undefined-length sequence does not end where the parser found its end")

    def count_item(self) -> None:
        self.items += 1
        if self.items > MAX_ITEMS:
            raise _Unwalkable(f"more than {MAX_ITEMS} sequence items")

    # -- nested bytes ------------------------------------------------------
    def items_of(self, buf: memoryview, pos: int, end: int, implicit: bool, little: bool, depth: int,
                 encodings: Any, *, undefined: bool) -> int:
        """Walk a sequence's value ``buf[pos:end]``; returns where it ended."""
        if depth > MAX_DEPTH:
            raise _Unwalkable(f"sequences are nested deeper than {MAX_DEPTH} levels")
        fmt = "<HHL" if little else ">HHL"
        while True:
            if not undefined and pos == end:
                return pos
            if pos + 8 > end:
                raise _Unwalkable("a sequence ends inside an item header or has no delimiter")
            group, element, length = struct.unpack_from(fmt, buf, pos)
            tag = group << 16 | element
            pos += 8
            if tag == _SEQ_END:
                if not undefined:
                    raise _Unwalkable("a sequence delimiter inside a defined-length sequence")
                return pos
            if tag != _ITEM:
                raise _Unwalkable(f"a sequence holds ({group:04X},{element:04X}) where an item must be")
            self.count_item()
            if length == _UNDEFINED:
                pos = self.elements_of(buf, pos, end, implicit, little, depth, encodings, undefined=True)
            else:
                if pos + length > end:
                    raise _Unwalkable("a sequence item is longer than its sequence")
                self.elements_of(buf, pos, pos + length, implicit, little, depth, encodings, undefined=False)
                pos += length

    def elements_of(self, buf: memoryview, pos: int, end: int, implicit: bool, little: bool, depth: int,
                    encodings: Any, *, undefined: bool) -> int:
        """Walk one item's elements ``buf[pos:end]``; returns where the item ended."""
        e = "<" if little else ">"
        by_tag = self.by_tag
        while True:
            if not undefined and pos == end:
                return pos
            if pos + 8 > end:
                raise _Unwalkable("an item ends inside an element header or has no delimiter")
            group, element = struct.unpack_from(e + "HH", buf, pos)
            tag = group << 16 | element
            if tag == _ITEM_END:
                if not undefined:
                    raise _Unwalkable("an item delimiter inside a defined-length item")
                return pos + 8
            if group == 0xFFFE:
                raise _Unwalkable(f"an item holds ({group:04X},{element:04X})")
            self.elements += 1
            if self.elements > MAX_ELEMENTS:
                raise _Unwalkable(f"more than {MAX_ELEMENTS} nested elements")
            vr: str | None = None
            raw_vr = bytes(buf[pos + 4:pos + 6])
            if implicit:
                (length,) = struct.unpack_from(e + "L", buf, pos + 4)
                pos += 8
            elif raw_vr in _LONG_VRS:
                if pos + 12 > end:
                    raise _Unwalkable("an item ends inside an element header")
                vr = raw_vr.decode()
                (length,) = struct.unpack_from(e + "L", buf, pos + 8)
                pos += 12
            elif 0x41 <= raw_vr[0] <= 0x5A and 0x41 <= raw_vr[1] <= 0x5A:
                vr = raw_vr.decode()
                (length,) = struct.unpack_from(e + "H", buf, pos + 6)
                pos += 8
            else:  # not a VR: an element written in implicit VR inside explicit VR (as pydicom reads it)
                (length,) = struct.unpack_from(e + "L", buf, pos + 4)
                pos += 8
            if length == _UNDEFINED:
                if tag == 0x7FE00010 or vr in ("OB", "OW"):
                    pos = self.fragments(buf, pos, end, little)
                elif vr == "UN":
                    pos = self.items_of(buf, pos, end, True, True, depth + 1, encodings, undefined=True)
                elif vr in ("SQ", None):
                    pos = self.items_of(buf, pos, end, implicit, little, depth + 1, encodings, undefined=True)
                else:
                    raise _Unwalkable(f"({group:04X},{element:04X}) {vr} has an undefined length")
                continue
            if pos + length > end:
                raise _Unwalkable(f"({group:04X},{element:04X}) is longer than its item")
            if tag == 0x00080005:
                encodings = _charset(buf[pos:pos + length])
            elif length:
                kind = _kind(tag, vr, by_tag)
                if kind is not None:
                    value = buf[pos:pos + length]
                    if kind == "maybe" or kind == "un?":
                        if _starts_with_item(value, little if kind == "maybe" else True):
                            kind = "seq" if kind == "maybe" else "un"
                        elif tag in by_tag:
                            kind = "text"
                        else:
                            kind = None
                    if kind == "text":
                        self.text(tag, vr, value, encodings)
                    elif kind == "seq":
                        self.items_of(buf, pos, pos + length, implicit, little, depth + 1, encodings,
                                      undefined=False)
                    elif kind == "un":
                        self.items_of(buf, pos, pos + length, True, True, depth + 1, encodings, undefined=False)
            pos += length

    def fragments(self, buf: memoryview, pos: int, end: int, little: bool) -> int:
        """Skip encapsulated pixel data (items of fragments) to its delimiter."""
        fmt = "<HHL" if little else ">HHL"
        while True:
            if pos + 8 > end:
                raise _Unwalkable("encapsulated pixel data in an item has no delimiter")
            group, element, length = struct.unpack_from(fmt, buf, pos)
            pos += 8
            if (group, element) == (0xFFFE, 0xE0DD):
                return pos
            if (group, element) != (0xFFFE, 0xE000) or length == _UNDEFINED or pos + length > end:
                raise _Unwalkable("encapsulated pixel data in an item is malformed")
            self.count_item()
            pos += length


def _kind(tag: int, vr: str | None, by_tag: dict[int, list[Rule]]) -> str | None:
    """How to read an element: 'seq' (in its encoding), 'un' (implicit VR LE), 'text' (a rule's),
    'maybe' / 'un?' (a sequence if it starts with an item), or None (nothing to read)."""
    if vr == "SQ":
        return "seq"
    if vr == "UN":
        return "un" if _dictionary_vr(tag) == "SQ" else "un?"
    if vr is None:  # implicit VR: the dictionary decides, and an unknown (private) tag may be a sequence
        known = _dictionary_vr(tag)
        if known == "SQ":
            return "seq"
        if known is None:
            return "maybe"
    return "text" if tag in by_tag else None


def _positions(ds: Dataset) -> list[tuple[int, int]]:
    """(value offset, tag) of the data set's elements, sorted by offset."""
    out = []
    for tag, elem in ds._dict.items():
        tell = elem.file_tell if isinstance(elem, DataElement) else elem.value_tell
        if tell is not None:
            out.append((tell, int(tag)))
    return sorted(out)


def _encodings(encodings: Any) -> list[str]:
    """Python codecs for decode_bytes, from pydicom's (already converted) or None."""
    if not encodings:
        return ["iso8859"]
    return [encodings] if isinstance(encodings, str) else list(encodings)


def _charset(value: bytes | memoryview) -> list[str]:
    """A nested Specific Character Set (0008,0005) as Python codecs."""
    terms = [t.strip(" \x00") for t in bytes(value).decode("ascii", "replace").split("\\")]
    try:
        return convert_encodings([t for t in terms if t] or ["ISO_IR 6"])
    except Exception:
        return ["iso8859"]
