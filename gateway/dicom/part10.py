"""Reading what ingest needs from a DICOM Part 10 file, without touching pixels.

``parse_instance`` validates the structure of the whole file (every element
length, sequence delimiters, the file's end) but never decodes or re-encodes
pixel data: large values are skipped with a seek (``defer_size``), so the
cost is the header plus one pass of seeks. Anything structurally wrong
raises :class:`MalformedInstance` with a sentence the sender can act on.
"""

from __future__ import annotations

import unicodedata
import warnings
from dataclasses import dataclass, field
from typing import BinaryIO

from pydicom import dcmread
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from gateway.dicom.uids import is_valid_uid

IMPLEMENTATION_VERSION = "DICOMGATE_010"
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float, Double Float


class MalformedInstance(ValueError):
    """The bytes are not a DICOM instance we can index; ``reason`` says why."""

    def __init__(self, reason: str, *, missing_attribute: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing_attribute = missing_attribute


@dataclass
class InstanceHeader:
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    patient: dict = field(default_factory=dict)
    study: dict = field(default_factory=dict)
    series: dict = field(default_factory=dict)
    instance: dict = field(default_factory=dict)
    dataset: Dataset | None = None  # header only (pixel data deferred)
    #: the bytes ``dataset`` was parsed from (the file, or a deflated file's inflated data set) and
    #: their length: the sensitivity walk reads what the parse deferred from here, not a second parse
    source: BinaryIO | None = None
    source_end: int | None = None


def part10_header(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str | None) -> bytes:
    """Preamble + 'DICM' + File Meta group for a data set received over DIMSE.

    Encoded directly (PS3.10 7.1: explicit VR little endian, group length
    first): it is built for every C-STORE, and pydicom's general writer
    took ~0.5 ms for these seven elements.
    """
    body = b"".join((
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _uid_bytes(sop_class_uid)),
        _meta_element(0x0003, b"UI", _uid_bytes(sop_instance_uid)),
        _meta_element(0x0010, b"UI", _uid_bytes(transfer_syntax_uid)),
        _meta_element(0x0012, b"UI", _uid_bytes(PYDICOM_IMPLEMENTATION_UID)),
        _meta_element(0x0013, b"SH", _padded(IMPLEMENTATION_VERSION.encode("ascii"), b" ")),
        _meta_element(0x0016, b"AE", _padded(source_ae.strip()[:16].encode("ascii", "replace"), b" "))
        if source_ae and source_ae.strip() else b"",
    ))
    return b"\x00" * 128 + b"DICM" + _meta_element(0x0000, b"UL", len(body).to_bytes(4, "little")) + body


def _padded(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def _uid_bytes(uid: str) -> bytes:
    if not is_valid_uid(uid):
        raise ValueError(f"not a valid UID: {uid[:70]!r}")
    return _padded(uid.encode("ascii"), b"\x00")


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    head = (0x0002).to_bytes(2, "little") + element.to_bytes(2, "little") + vr
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
        return head + b"\x00\x00" + len(value).to_bytes(4, "little") + value
    return head + len(value).to_bytes(2, "little") + value


def parse_instance(fp: BinaryIO, size: int, *, meta_must_match: bool = True) -> InstanceHeader:
    """Validate a Part 10 file held in ``fp`` (seekable, ``size`` bytes) and read its header.

    ``meta_must_match``: the File Meta SOP Instance UID must equal the data
    set's (DIMSE, where we build the meta from the request's Affected SOP
    Instance UID). STOW accepts files whose meta disagrees, as PACS do.
    """
    _check_inflated_size(fp)
    fp.seek(0)
    try:
        with warnings.catch_warnings():
            # pydicom reports truncation inside sequences and items as warnings
            warnings.simplefilter("error")
            ds = dcmread(fp, defer_size=4096)
            end = fp.tell()
    except InvalidDicomError as exc:
        raise MalformedInstance(f"not a DICOM Part 10 file: {_one_line(exc)}") from None
    except Exception as exc:  # pydicom raises many kinds for broken data
        raise MalformedInstance(f"the data set cannot be parsed: {_one_line(exc)}") from None
    if end != size:
        raise MalformedInstance(
            f"the data set is truncated or has trailing bytes (parsed to byte {end} of {size})"
        )
    _check_last_element(ds, size, fp)
    meta = ds.file_meta
    ts = str(meta.get("TransferSyntaxUID", "") or "")
    if not ts:
        raise MalformedInstance("the file meta information has no Transfer Syntax UID", missing_attribute=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = _extract(ds, ts)
    header.source, header.source_end = _source(ds, fp, size)
    try:
        media_sop = str(meta.get("MediaStorageSOPInstanceUID", "") or "").rstrip("\x00 ")
    except Exception as exc:  # converted only now: an unknown VR, say (found by tests/fuzz)
        raise MalformedInstance(f"the file meta information cannot be read: {_one_line(exc)}") from None
    if meta_must_match and media_sop and media_sop != header.sop_instance_uid:
        raise MalformedInstance(
            f"Media Storage SOP Instance UID {media_sop} differs from SOP Instance UID {header.sop_instance_uid}"
        )
    _check_pixels(ds)
    return header


def _source(ds: Dataset, fp: BinaryIO, size: int) -> tuple[BinaryIO, int]:
    buffer = getattr(ds, "buffer", None)
    if buffer is None or buffer is fp:
        return fp, size
    pos = buffer.tell()
    end = buffer.seek(0, 2)  # a deflated data set, inflated by the parse
    buffer.seek(pos)
    return buffer, end


#: pydicom inflates a deflated data set whole, in memory (and keeps a copy or two while
#: parsing): a 195 KB STOW part inflating to 200 MB took an HTTP worker from 100 to 700 MB
MAX_INFLATED_BYTES = 64 << 20
_DEFLATED_TS = b"1.2.840.10008.1.2.1.99"


def _check_inflated_size(fp: BinaryIO) -> None:
    """Refuse a deflated data set that inflates beyond MAX_INFLATED_BYTES, before pydicom inflates it.

    Inflates in bounded pieces and keeps nothing. The transfer syntax is read
    from the File Meta's (0002,0010) element, wherever in the group it stands
    (a long element before it once hid it from a look at the first bytes). A
    file whose stream is not valid deflate is left to the parse.
    """
    import zlib

    try:
        offset, ts = _walk_file_meta(fp)
    except MalformedInstance:
        return
    if ts != _DEFLATED_TS:
        return
    fp.seek(offset)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while not inflater.eof:
            data = inflater.unconsumed_tail or fp.read(1 << 16)
            if not data:
                return
            total += len(inflater.decompress(data, 1 << 20))
            if total > MAX_INFLATED_BYTES:
                raise MalformedInstance(
                    f"the deflated data set inflates to more than {MAX_INFLATED_BYTES} bytes, the limit"
                )
    except zlib.error:
        return


def dataset_offset(fp: BinaryIO) -> int:
    """Byte offset where the data set starts, after preamble and File Meta (group 0002).

    The digest that decides "same content" covers only the data set, so the
    same instance resent through another AE (other meta) is still identical.
    """
    return _walk_file_meta(fp)[0]


def _walk_file_meta(fp: BinaryIO) -> tuple[int, bytes]:
    """(offset of the data set, the Transfer Syntax UID's bytes or b"") from the File Meta group."""
    fp.seek(128)
    if fp.read(4) != b"DICM":
        raise MalformedInstance("the DICM prefix is missing")
    pos, ts = 132, b""
    while True:
        head = fp.read(8)
        if len(head) < 8:
            return pos, ts
        group = int.from_bytes(head[0:2], "little")
        if group != 0x0002:
            return pos, ts
        vr = head[4:6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"OV", b"UC", b"UR"):
            length = int.from_bytes(fp.read(4), "little")
            pos += 12 + length
        else:
            length = int.from_bytes(head[6:8], "little")
            if head[2:4] == b"\x10\x00" and length <= 64:  # (0002,0010) Transfer Syntax UID
                ts = fp.read(length).rstrip(b"\x00 ")
            pos += 8 + length
        fp.seek(pos)


_SEQ_DELIMITER = (b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", b"\xff\xfe\xe0\xdd\x00\x00\x00\x00")


def _check_last_element(ds: Dataset, size: int, fp: BinaryIO) -> None:
    """pydicom reads a short final value, or a final sequence without its
    delimiter, without complaint: make the data set end exactly at the file's end."""
    tags = list(ds.keys())
    if not tags:
        raise MalformedInstance("the data set is empty")
    if str(ds.file_meta.get("TransferSyntaxUID", "")) == "1.2.840.10008.1.2.1.99":
        _check_deflate_stream(fp, size)
        return
    elem = ds.get_item(tags[-1], keep_deferred=True)
    length = getattr(elem, "length", None)
    tell = getattr(elem, "value_tell", None)
    if length == 0xFFFFFFFF or getattr(elem, "is_undefined_length", False):
        fp.seek(size - 8)
        if fp.read(8) not in _SEQ_DELIMITER:
            raise MalformedInstance("the data set is truncated (the last sequence has no delimiter)")
        return
    if length is None or tell is None:
        return
    if tell + length != size:
        raise MalformedInstance(
            f"the data set is truncated or has trailing bytes (last value ends at {tell + length}, file has {size})"
        )


def _check_deflate_stream(fp: BinaryIO, size: int) -> None:
    import zlib

    start = dataset_offset(fp)
    fp.seek(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        while chunk := fp.read(1 << 20):
            inflater.decompress(chunk, 0)
            if inflater.eof:
                break
    except zlib.error as exc:
        raise MalformedInstance(f"the deflated data set is corrupt: {exc}") from None
    if not inflater.eof:
        raise MalformedInstance("the deflated data set is truncated")
    # some writers leave a gzip-style trailer (CRC-32 + size, 8 bytes) after the stream
    trailing = inflater.unused_data + fp.read(64)
    if len(trailing.rstrip(b"\x00")) > 8:
        raise MalformedInstance("the deflated data set has trailing bytes")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


class _Values:
    """Reads the few values ingest indexes straight from the parsed elements.

    pydicom converts an element on first access (VR lookup, hooks, value
    classes); for ~25 short values per instance that was a third of the
    parse. Here an unconverted element's bytes are decoded directly: ASCII
    for UIDs, dates, numbers and code strings, the data set's character set
    for text. Text in an ISO 2022 character set (escape sequences) still
    goes through pydicom.
    """

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self._codec: str | None | bool = False  # not looked up yet

    def _encoding(self) -> str | None:
        if self._codec is False:
            raw = self.ds.get_item(0x00080005)
            value = getattr(raw, "value", None)
            if isinstance(value, bytes):
                terms = [t.strip() for t in value.decode("ascii", "replace").split("\\")]
            elif value:
                terms = [str(t).strip() for t in (value if isinstance(value, (list, tuple)) else [value])]
            else:
                terms = []
            terms = [t for t in terms if t] or ["ISO_IR 6"]
            if len(terms) == 1 and not terms[0].startswith("ISO 2022"):
                self._codec = convert_encodings(terms)[0]
            else:
                self._codec = None  # code extensions: let pydicom decode
        return self._codec  # type: ignore[return-value]

    def text(self, tag: int) -> str | None:
        try:
            elem = self.ds.get_item(tag)
        except Exception:
            return None
        if elem is None:
            return None
        value = elem.value
        if isinstance(value, (bytes, bytearray)) and not isinstance(elem, DataElement):
            vr = elem.VR  # None in implicit VR transfer syntaxes
            if vr is None:
                try:
                    vr = dictionary_VR(tag)
                except KeyError:
                    return _converted(self.ds, tag)
            if vr in _ASCII_VRS:
                text = bytes(value).decode("ascii", "replace")
            elif vr in _TEXT_VRS and (codec := self._encoding()) is not None:
                text = bytes(value).decode(codec, "replace")
            else:  # binary numbers (US, UL, ...) and ISO 2022 text: pydicom converts
                return _converted(self.ds, tag)
        else:
            if value is None:
                return None
            text = str(value)
        text = text.strip().rstrip("\x00").strip()
        return text or None

    def uid(self, keyword: str) -> str:
        uid = self.text(tag_for_keyword(keyword))
        if uid is None:
            raise MalformedInstance(f"{keyword} is missing", missing_attribute=True)
        if not is_valid_uid(uid):
            raise MalformedInstance(f"{keyword} is not a valid DICOM UID (PS3.5 9.1): {uid[:70]!r}")
        return uid

    def string(self, keyword: str, limit: int) -> str | None:
        """The value's text cut to the index column's ``limit``."""
        text = self.text(tag_for_keyword(keyword))
        return text[:limit] if text else None

    def number(self, keyword: str) -> int | None:
        text = self.text(tag_for_keyword(keyword))
        try:
            return int(text) if text else None
        except ValueError:
            try:
                return int(float(text))  # IS written as "1.0" by some modalities
            except ValueError:
                return None


_ASCII_VRS = {"UI", "DA", "TM", "DT", "CS", "IS", "DS", "AS", "AE"}
_TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC"}


def _converted(ds: Dataset, tag: int) -> str | None:
    try:
        value = ds[tag].value
    except Exception:
        return None
    return None if value is None else str(value)


def normalise_name(name: str | None) -> str | None:
    """Lower-case, accents stripped, components separated by spaces (for fuzzy matching)."""
    if not name:
        return None
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.replace("^", " ").replace("=", " ").lower().split())[:324] or None


def _extract(ds: Dataset, ts: str) -> InstanceHeader:
    v = _Values(ds)
    sop_class = v.uid("SOPClassUID")
    sop = v.uid("SOPInstanceUID")
    study = v.uid("StudyInstanceUID")
    series = v.uid("SeriesInstanceUID")
    name = v.string("PatientName", 324)
    return InstanceHeader(
        sop_class_uid=sop_class,
        sop_instance_uid=sop,
        study_uid=study,
        series_uid=series,
        transfer_syntax_uid=ts,
        patient={
            "patient_id": v.string("PatientID", 64),
            "issuer": v.string("IssuerOfPatientID", 64),
            "patient_name": name,
            "patient_name_norm": normalise_name(name),
            "birth_date": v.string("PatientBirthDate", 8),
            "sex": v.string("PatientSex", 16),
        },
        study={
            "study_date": v.string("StudyDate", 8),
            "study_time": v.string("StudyTime", 16),
            "accession_number": v.string("AccessionNumber", 16),
            "study_id": v.string("StudyID", 16),
            "description": v.string("StudyDescription", 64),
            "referring_physician": v.string("ReferringPhysicianName", 324),
            "patient_age": v.string("PatientAge", 4),
        },
        series={
            "modality": v.string("Modality", 16),
            "series_number": v.number("SeriesNumber"),
            "description": v.string("SeriesDescription", 64),
            "body_part": v.string("BodyPartExamined", 16),
            "series_date": v.string("SeriesDate", 8),
            "series_time": v.string("SeriesTime", 16),
        },
        instance={
            "instance_number": v.number("InstanceNumber"),
            "rows": v.number("Rows"),
            "columns": v.number("Columns"),
            "number_of_frames": v.number("NumberOfFrames"),
        },
        dataset=ds,
    )


def _check_pixels(ds: Dataset) -> None:
    """An image whose pixel data is absent or short was cut off in transit."""
    has_pixels = any(tag in ds for tag in _PIXEL_TAGS)
    if "Rows" in ds and "Columns" in ds and "BitsAllocated" in ds and not has_pixels:
        raise MalformedInstance("the image has Rows/Columns but no Pixel Data: the data set looks truncated")
    if 0x7FE00010 not in ds:
        return
    elem = ds.get_item(0x7FE00010, keep_deferred=True)
    length = getattr(elem, "length", None)
    if length is None or length == 0xFFFFFFFF:
        return  # encapsulated: delimiters were checked while parsing
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:
        return  # not enough to compute; structure was still valid
    expected = rows * cols * spp * frames * bits // 8 if bits >= 8 else (rows * cols * spp * frames + 7) // 8
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        expected = expected * 2 // 3  # chroma is shared by pixel pairs (PS3.3 C.7.6.3.1.2)
    if 0 < length < expected:
        raise MalformedInstance(f"Pixel Data holds {length} bytes but the image needs {expected}")
