"""The sensitivity walk finds a label wherever the data set carries it, and fails closed.

Files are parsed as ingest parses them (``parse_instance``), so the walk
sees what it sees in production: raw elements, deferred values, pydicom's
reading of undefined-length sequences.
"""

from __future__ import annotations

import io
import struct

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from consent import sensitivity
from consent.sensitivity import UNVERIFIED, Classification, classify, examine, load_rules
from gateway.dicom.part10 import parse_instance
from tests.unit.consent import hostile
from tests.unit.consent.hostile import EXPLICIT, IMPLICIT, Instance, element, item, label, sequence, text


def walk(inst: Instance | bytes, rules=sensitivity.DEFAULT_RULES) -> Classification:
    data = inst if isinstance(inst, bytes) else inst.part10()
    header = parse_instance(io.BytesIO(data), len(data), meta_must_match=False)
    return examine(header.dataset, rules, source=header.source, end=header.source_end)


@pytest.mark.parametrize("place", sorted(hostile.HIDING_PLACES))
def test_label_is_found_in_every_hiding_place(place):
    assert walk(hostile.HIDING_PLACES[place]()) == Classification(["PSY"], None)


@pytest.mark.parametrize("place", sorted(hostile.HIDING_PLACES))
def test_an_ordinary_code_there_is_not_a_label(place):
    assert walk(hostile.HIDING_PLACES[place](code="N")) == Classification([], None)


@pytest.mark.parametrize("case,reason", [
    ("un-item-overruns", "longer than its sequence"),
    ("private-element-overruns", "longer than its item"),
    ("beyond-depth-bound", "nested deeper than"),
])
def test_what_cannot_be_walked_is_unverified(case, reason):
    found = walk(hostile.MALFORMED[case]())
    assert found.labels == [UNVERIFIED] and reason in found.unverified


def test_labels_found_before_the_walk_failed_are_kept():
    broken = struct.pack("<HHL", 0xFFFE, 0xE000, 100) + b"\0" * 8
    inst = Instance(hostile.EXPLICIT_LE, {
        0x00081115: element(0x00081115, "UN", broken, EXPLICIT),
        0x00401008: text(0x00401008, "LO", "HIV", EXPLICIT),
    })
    assert walk(inst).labels == ["HIV", UNVERIFIED]


def test_a_un_sequence_the_parser_ends_elsewhere_is_unverified():
    """pydicom reads this item as explicit VR (its first element's length looks like "LO") and ends
    the sequence inside that element's value; read as implicit VR LE it ends later. The two
    readings disagree on what follows the sequence, so the labels cannot be trusted."""
    size = 0x4F4C
    early_end = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    rest = size - len(early_end)
    cover = element(0x00091003, "OB", b"", EXPLICIT, length=rest - 12 + 16)  # to the real delimiters
    value = struct.pack("<HHL", 0x0009, 0x1002, size) + early_end + cover + b"\0" * (rest - len(cover))
    body = struct.pack("<HHL", 0xFFFE, 0xE000, hostile.UNDEFINED) + value + early_end
    inst = Instance(hostile.EXPLICIT_LE, {0x00081115: element(0x00081115, "UN", body, EXPLICIT,
                                                              length=hostile.UNDEFINED)})
    data = inst.part10()
    parsed = parse_instance(io.BytesIO(data), len(data))
    assert 0x00091003 in parsed.dataset  # the parser's reading: a top-level element after the sequence
    assert walk(inst).labels == [UNVERIFIED]  # the implicit reading runs past where the parser's sequence ends


def test_un_content_that_is_not_a_sequence_is_unverified_when_the_dictionary_says_sq():
    inst = Instance(hostile.EXPLICIT_LE, {0x00081115: element(0x00081115, "UN", b"not a sequence!!", EXPLICIT)})
    assert walk(inst).labels == [UNVERIFIED]


def test_opaque_private_values_are_skipped():
    inst = Instance(hostile.EXPLICIT_LE, {
        0x00090010: text(0x00090010, "LO", "VENDOR", EXPLICIT),
        0x00091001: element(0x00091001, "UN", b"\x01\x02opaque bytes", EXPLICIT),
        0x00091002: element(0x00091002, "OB", b"\xfe\xff\x00\xe0" + b"\0" * 12, EXPLICIT),  # OB is never a sequence
    })
    assert walk(inst) == Classification([], None)


def test_encapsulated_pixel_data_inside_an_item_is_skipped():
    fragments = (struct.pack("<HHL", 0xFFFE, 0xE000, 0) + struct.pack("<HHL", 0xFFFE, 0xE000, 4) + b"\xff\xd8\xff\xd9"
                 + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))
    icon = element(0x7FE00010, "OB", fragments, EXPLICIT, length=hostile.UNDEFINED) + label("PSY", EXPLICIT)
    inst = Instance(hostile.EXPLICIT_LE, {0x00880200: sequence(0x00880200, [item(icon, EXPLICIT)], EXPLICIT)})
    # the label after the pixel data (out of tag order, but the walk must still get past the fragments)
    assert walk(inst) == Classification(["PSY"], None)


def test_depth_within_the_bound_is_walked():
    inner = label("SEX", EXPLICIT)
    for _ in range(sensitivity.MAX_DEPTH):
        inner = sequence(0x00081140, [item(inner, EXPLICIT)], EXPLICIT)
    assert walk(Instance(hostile.EXPLICIT_LE, {0x00081140: inner})) == Classification(["SEX"], None)
    deeper = sequence(0x00081140, [item(inner, EXPLICIT)], EXPLICIT)
    assert walk(Instance(hostile.EXPLICIT_LE, {0x00081140: deeper})).labels == [UNVERIFIED]


def test_item_count_is_bounded(monkeypatch):
    monkeypatch.setattr(sensitivity, "MAX_ITEMS", 10)
    items = [item(text(0x00081150, "UI", "1.2.3", IMPLICIT), IMPLICIT) for _ in range(11)]
    inst = Instance(hostile.IMPLICIT_LE, {0x00081115: sequence(0x00081115, items, IMPLICIT)})
    found = walk(inst)
    assert found.labels == [UNVERIFIED] and "more than 10 sequence items" in found.unverified
    monkeypatch.setattr(sensitivity, "MAX_ITEMS", 11)
    assert walk(inst) == Classification([], None)


def test_nested_bytes_read_back_are_bounded(monkeypatch):
    monkeypatch.setattr(sensitivity, "MAX_NESTED_BYTES", 1000)
    found = walk(hostile.large())  # a deferred sequence of ~8 KB
    assert found.labels == [UNVERIFIED] and "larger than 1000 bytes" in found.unverified


def test_a_deferred_value_without_its_source_is_unverified():
    data = hostile.large().part10()
    header = parse_instance(io.BytesIO(data), len(data))
    assert classify(header.dataset) == [UNVERIFIED]


def test_nested_character_set_decodes_operator_rules():
    rules = load_rules([{"attribute": "ConfidentialityCode", "pattern": "génétique", "label": "GENETIC"}])
    body = (element(0x00080005, "CS", b"ISO_IR 100", IMPLICIT)
            + element(0x00401008, "LO", "génétique".encode("latin-1") + b" ", IMPLICIT))
    inst = Instance(hostile.EXPLICIT_LE, {0x00081115: element(
        0x00081115, "UN", item(body, IMPLICIT), EXPLICIT)})
    assert walk(inst, rules) == Classification(["GENETIC"], None)


def test_multiple_values_are_matched_one_by_one():
    rules = load_rules([{"attribute": "ConfidentialityCode", "pattern": "^PSY$"}])
    inst = Instance(hostile.IMPLICIT_LE, {0x00081115: sequence(0x00081115, [item(
        text(0x00401008, "LO", "N\\PSY", IMPLICIT), IMPLICIT)], IMPLICIT)})
    assert walk(inst, rules).labels == ["PSY"]


def test_in_memory_un_bytes_are_walked():
    ds = Dataset()
    ds.add(DataElement(0x00091001, "UN", item(label("ETH", IMPLICIT), IMPLICIT)))
    assert classify(ds) == ["ETH"]


SAMPLES = ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "SC_rgb_jpeg_dcmtk.dcm",
           "rtplan.dcm", "rtstruct.dcm", "nested_priv_SQ.dcm", "priv_SQ.dcm", "UN_sequence.dcm", "test-SR.dcm",
           "reportsi.dcm", "waveform_ecg.dcm", "liver_1frame.dcm", "JPEG2000-embedded-sequence-delimiter.dcm",
           "ExplVR_BigEnd.dcm", "examples_palette.dcm"]


@pytest.mark.parametrize("name", SAMPLES)
def test_ordinary_sample_files_are_walked_completely(name):
    """pydicom's own test files (read as ingest reads them, values over 4 KB deferred) have
    no label, and none of them is taken for unwalkable."""
    path = get_testdata_file(name, download=False)
    assert path is not None, name
    data = open(path, "rb").read()
    fp = io.BytesIO(data)
    ds = dcmread(fp, defer_size=4096, force=True)
    source = ds.buffer if ds.buffer is not None else fp
    end = source.seek(0, 2)
    assert examine(ds, source=source, end=end) == Classification([], None)


def test_a_label_added_to_a_sample_file_is_found():
    ds = dcmread(get_testdata_file("rtplan.dcm", download=False))
    ds.BeamSequence[0].ControlPointSequence[1].ConfidentialityCode = "STD"
    buf = io.BytesIO()
    ds.save_as(buf)
    assert walk(buf.getvalue()).labels == ["STD"]


def test_any_exception_in_the_walk_fails_closed(monkeypatch):
    """Not only the expected kinds: an OverflowError (say) deep in a walk still means UNVERIFIED."""
    from pydicom import Dataset

    from consent import sensitivity

    def boom(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise OverflowError("hostile")

    monkeypatch.setattr(sensitivity._Walk, "dataset", boom)
    result = sensitivity.examine(Dataset())
    assert sensitivity.UNVERIFIED in result.labels and "OverflowError" in (result.unverified or "")
