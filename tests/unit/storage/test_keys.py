from __future__ import annotations

import pytest

from storage.base import InvalidKey
from storage.keys import (
    MAX_SEGMENT_LENGTH,
    account_prefix,
    check_key,
    check_prefix,
    instance_key,
    is_safe_segment,
    study_prefix,
    validate_account_id,
    validate_segment,
)

DIGEST = "0123456789abcdef" * 4  # 64 hex chars, like a SHA-256
SEGMENT_128 = "a" + "1" * 127
SEGMENT_129 = "a" + "1" * 128

# The DICOM UID grammar is gateway/dicom/uids.py's (tests/unit/gateway/dicom/test_uids.py);
# storage only asks that a component be a safe path segment.
SAFE_SEGMENTS = [
    "1.2.840.10008.5.1.4.1.1.2",
    "0",
    "1.02",  # not a valid UID, but a safe segment
    "A-b_c.D",
    "x",
    SEGMENT_128,
]

UNSAFE_SEGMENTS = [
    "",
    ".",
    "..",
    "../1.2",
    "1..2",
    "a/b",
    "a\\b",
    ".hidden",
    "1.2.",  # a trailing dot (Windows strips it)
    "-a",
    "a-",
    "_a",
    " 1.2",
    "1.2 ",
    "1.2\x00",
    "1.2\n",
    "a:b",
    "ä",
    "١.٢",
    SEGMENT_129,
    None,
    12,
]


@pytest.mark.parametrize("segment", SAFE_SEGMENTS)
def test_safe_segments(segment):
    assert is_safe_segment(segment)
    assert validate_segment(segment) == segment


@pytest.mark.parametrize("segment", UNSAFE_SEGMENTS)
def test_unsafe_segments(segment):
    assert not is_safe_segment(segment)
    with pytest.raises(InvalidKey):
        validate_segment(segment)


def test_segment_lengths():
    assert MAX_SEGMENT_LENGTH == 128 and len(SEGMENT_128) == 128
    assert is_safe_segment(SEGMENT_128) and not is_safe_segment(SEGMENT_129)


def test_validate_segment_message():
    with pytest.raises(InvalidKey, match=r"study '\.\./x' is not a safe key segment"):
        validate_segment("../x", "study")
    with pytest.raises(ValueError):  # InvalidKey is also a ValueError
        validate_segment("a/b")


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
    key = instance_key("a" * 64, SEGMENT_128, SEGMENT_128, SEGMENT_128, DIGEST, nonce="f" * 32)
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
        ("acme", "1.2", "1.2", SEGMENT_129, DIGEST),
        ("acme", "1.2", "..", "1.2", DIGEST),
        ("acme", "1.2", "1.2", "1.2", DIGEST, "../0123abcd"),  # nonce
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
    with pytest.raises(InvalidKey, match="^study"):
        instance_key("acme", "../x", "1.2", "1.2", DIGEST)
    with pytest.raises(InvalidKey, match="^series"):
        instance_key("acme", "1.2", "x/", "1.2", DIGEST)
    with pytest.raises(InvalidKey, match="^instance"):
        instance_key("acme", "1.2", "1.2", ".x", DIGEST)


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
