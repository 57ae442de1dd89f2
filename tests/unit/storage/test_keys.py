from __future__ import annotations

import pytest

from storage.base import InvalidKey
from storage.keys import (
    UID_RE,
    account_prefix,
    check_key,
    check_prefix,
    instance_key,
    is_valid_uid,
    study_prefix,
    validate_account_id,
    validate_uid,
)

DIGEST = "0123456789abcdef" * 4  # 64 hex chars, like a SHA-256
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
    assert validate_uid(uid) == uid
    assert UID_RE.fullmatch(uid)


@pytest.mark.parametrize("uid", INVALID_UIDS)
def test_invalid_uids(uid):
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidKey):
        validate_uid(uid)


def test_uid_lengths():
    assert len(UID_64) == 64 and len(UID_65) == 65
    assert is_valid_uid(UID_64) and not is_valid_uid(UID_65)


def test_validate_uid_message():
    with pytest.raises(InvalidKey, match=r"StudyInstanceUID '\.\./x' is not a valid DICOM UID"):
        validate_uid("../x", "StudyInstanceUID")
    with pytest.raises(ValueError):  # InvalidKey is also a ValueError
        validate_uid("x")


@pytest.mark.parametrize("acct", ["a", "0", "acme", "acme-1", "a_b", "a" * 64, "1-a_b-2"])
def test_valid_account_ids(acct):
    assert validate_account_id(acct) == acct


@pytest.mark.parametrize("acct", ["", "A", "Acme", "-a", "_a", "a" * 65, "a.b", "a/b", "../a",
                                  "a b", " a", "a\n", "ä", None])
def test_invalid_account_ids(acct):
    with pytest.raises(InvalidKey):
        validate_account_id(acct)


def test_instance_key():
    key = instance_key("acme", "1.2.3", "1.2.3.4", "1.2.3.4.5", DIGEST)
    assert key == "acme/1.2.3/1.2.3.4/1.2.3.4.5.0123456789abcdef.dcm"
    assert check_key(key) == key
    assert key.startswith(study_prefix("acme", "1.2.3"))
    assert key.startswith(account_prefix("acme"))


def test_instance_key_short_digest_exactly_16():
    assert instance_key("a", "1", "2", "3", "f" * 16) == "a/1/2/3.ffffffffffffffff.dcm"


def test_instance_key_longest_parts_fit():
    key = instance_key("a" * 64, UID_64, UID_64, UID_64, DIGEST)
    assert check_key(key) == key


@pytest.mark.parametrize(
    "args",
    [
        ("Acme", "1.2", "1.2", "1.2", DIGEST),
        ("../acme", "1.2", "1.2", "1.2", DIGEST),
        ("acme", "../1.2", "1.2", "1.2", DIGEST),
        ("acme", "1.2", "1.2/3", "1.2", DIGEST),
        ("acme", "1.2", "1.2", "", DIGEST),
        ("acme", "1.2", "1.2", "1.2.", DIGEST),
        ("acme", "1.2", "1.2", UID_65, DIGEST),
        ("acme", "1.2", "1.2", "1.2", "0123456789ABCDEF" * 4),  # uppercase hex
        ("acme", "1.2", "1.2", "1.2", "0123456789abcde"),  # 15 chars
        ("acme", "1.2", "1.2", "1.2", "0123456789abcdeg"),  # not hex
        ("acme", "1.2", "1.2", "1.2", "../" + DIGEST),
        ("acme", "1.2", "1.2", "1.2", ""),
    ],
)
def test_instance_key_rejects(args):
    with pytest.raises(InvalidKey):
        instance_key(*args)


def test_instance_key_error_names_the_field():
    with pytest.raises(InvalidKey, match="SeriesInstanceUID"):
        instance_key("acme", "1.2", "x", "1.2", DIGEST)
    with pytest.raises(InvalidKey, match="SOPInstanceUID"):
        instance_key("acme", "1.2", "1.2", "x", DIGEST)


def test_prefixes():
    assert account_prefix("acme") == "acme/"
    assert study_prefix("acme", "1.2.840.1") == "acme/1.2.840.1/"
    with pytest.raises(InvalidKey):
        account_prefix("Bad")
    with pytest.raises(InvalidKey):
        study_prefix("acme", "1..2")
    assert check_prefix(study_prefix("acme", "1.2")) == "acme/1.2/"


@pytest.mark.parametrize("key", ["a", "a/b", "a-b_c.d/E.F", "acme/1.2/3.4/5.6.0123456789abcdef.dcm",
                                 "x" * 1024, "a/b..c", "a./b"])
def test_check_key_accepts(key):
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "/", "/abs", "../x", "a/..", "..", ".", "a/./b", "a//b", "a/", "a\\b", "a\x00b", "a\x1fb",
     "a\x7fb", "a\tb", "a b", ".hidden", "a/.hidden", ".tmp/x", "ä", "x" * 1025, "a:b", "a?b",
     "a%2fb", None, b"a"],
)
def test_check_key_rejects(key):
    with pytest.raises(InvalidKey):
        check_key(key)


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a/b", "a/b/", "acme/1.", "acme/1.2/3"])
def test_check_prefix_accepts(prefix):
    assert check_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "//", "a//", "../", "a/../", "/a", ".tmp", ".tmp/", "a b",
                                    "a/./", None])
def test_check_prefix_rejects(prefix):
    with pytest.raises(InvalidKey):
        check_prefix(prefix)
