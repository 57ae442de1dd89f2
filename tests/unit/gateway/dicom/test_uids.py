"""gateway.dicom.uids: the DICOM UID grammar (PS3.5 9.1) every path that takes a UID from a peer applies."""

from __future__ import annotations

import pytest

from gateway.dicom.uids import MAX_UID_LENGTH, UID_RE, is_valid_uid

UID_64 = "1." + "2" * 62
UID_65 = "1." + "2" * 63

VALID_UIDS = [
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.3",
    "0.1",
    "0",
    "1",
    "2.25.329800735698586629295641978511506172918",
    "1.0.2",
    "10.20.30",
    UID_64,
]

INVALID_UIDS = [
    "",
    "1..2",
    "1.02",
    "01.2",
    "../1.2",
    "1.2/3",
    "1.2.",
    ".1.2",
    " 1.2",
    "1.2 ",
    "1.2\x00",
    UID_65,
    "1.2.a",
    "1.2.-3",
    "1.2.+3",
    "1,2",
    "١.٢",  # Arabic-Indic digits: \d would match them, [0-9] does not
    "1.2\n",
    None,
    12,
]


@pytest.mark.parametrize("uid", VALID_UIDS)
def test_valid_uids(uid):
    assert is_valid_uid(uid)
    assert UID_RE.fullmatch(uid)


@pytest.mark.parametrize("uid", INVALID_UIDS)
def test_invalid_uids(uid):
    assert not is_valid_uid(uid)


def test_uid_lengths():
    assert MAX_UID_LENGTH == 64
    assert len(UID_64) == 64 and len(UID_65) == 65
    assert is_valid_uid(UID_64) and not is_valid_uid(UID_65)


def test_the_grammar_alone_does_not_bound_the_length():
    # UID_RE is the component grammar; the 64-character bound is is_valid_uid's
    assert UID_RE.fullmatch(UID_65) and not is_valid_uid(UID_65)
