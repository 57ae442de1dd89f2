"""Object-key construction and validation.

Pure functions, no I/O.  Everything that ends up in an object key is
validated here, so that a hostile component (a study named ``"../../etc"``,
an account id with a slash) can never escape its account's prefix, whatever
the storage backend. What makes a valid name (for the gateway: a DICOM UID)
is the caller's business, checked before it builds a key; here a component
only has to be a safe path segment.

Key layout::

    {account_id}/{study}/{series}/{instance}.{digest[:16]}[.{nonce}].dcm

(the gateway names study, series and instance by their UIDs).
"""

from __future__ import annotations

import re

from .base import InvalidKey

__all__ = [
    "SEGMENT_RE",
    "ACCOUNT_ID_RE",
    "MAX_SEGMENT_LENGTH",
    "MAX_KEY_LENGTH",
    "is_safe_segment",
    "validate_segment",
    "validate_account_id",
    "instance_key",
    "account_prefix",
    "study_prefix",
    "check_key",
    "check_prefix",
]

#: a path segment that is safe on every backend: ASCII letters, digits, ``.``, ``_``
#: and ``-``, starting and ending with a letter or digit (so never ``.``, ``..``, a
#: dot-name or a name Windows would strip); ``..`` inside is refused separately.
SEGMENT_RE = re.compile(r"[0-9A-Za-z](?:[0-9A-Za-z._-]*[0-9A-Za-z])?")
MAX_SEGMENT_LENGTH = 128

ACCOUNT_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

_DIGEST_RE = re.compile(r"[0-9a-f]{16,}")
DIGEST_KEY_LENGTH = 16

MAX_KEY_LENGTH = 1024
_KEY_CHARS_RE = re.compile(r"[A-Za-z0-9._/-]+")


def is_safe_segment(s: object) -> bool:
    """True if *s* may stand as one segment of a key (see :data:`SEGMENT_RE`), at most 128 characters."""
    return (
        isinstance(s, str)
        and 0 < len(s) <= MAX_SEGMENT_LENGTH
        and SEGMENT_RE.fullmatch(s) is not None
        and ".." not in s
    )


def validate_segment(s: str, what: str = "key segment") -> str:
    """Return *s* unchanged if it is a safe key segment, else raise InvalidKey.

    No normalisation (stripping of padding/NULs) is done here: the caller
    decides what a value means, this only decides what may be a key.
    """
    if not is_safe_segment(s):
        raise InvalidKey(
            f"{what} {s!r} is not a safe key segment (expected [0-9A-Za-z._-], starting and ending "
            f"with a letter or digit, no '..', at most {MAX_SEGMENT_LENGTH} characters)"
        )
    return s


def validate_account_id(s: str) -> str:
    """Return *s* if it matches ``[a-z0-9][a-z0-9_-]{0,63}``, else raise InvalidKey."""
    if not isinstance(s, str) or ACCOUNT_ID_RE.fullmatch(s) is None:
        raise InvalidKey(
            f"account id {s!r} is not valid (expected [a-z0-9][a-z0-9_-]{{0,63}})"
        )
    return s


def _validate_digest(digest: str) -> str:
    if not isinstance(digest, str) or _DIGEST_RE.fullmatch(digest) is None:
        raise InvalidKey(
            f"digest {digest!r} is not valid (expected >= {DIGEST_KEY_LENGTH} "
            "lowercase hex characters)"
        )
    return digest


def instance_key(
    account_id: str, study_uid: str, series_uid: str, sop_uid: str, digest: str, nonce: str | None = None,
) -> str:
    """Key of one stored SOP instance.

    ``{account}/{study}/{series}/{sop}.{digest[:16]}[.{nonce}].dcm``; *digest*
    is the lowercase hex content digest (e.g. SHA-256) of the stored bytes;
    *nonce* (8-32 lowercase hex characters) makes each write's key its own.
    """
    if nonce is not None and _NONCE_RE.fullmatch(nonce) is None:
        raise InvalidKey(f"nonce {nonce!r} is not valid (expected 8-32 lowercase hex characters)")
    key = (
        f"{validate_account_id(account_id)}/"
        f"{validate_segment(study_uid, 'study')}/"
        f"{validate_segment(series_uid, 'series')}/"
        f"{validate_segment(sop_uid, 'instance')}."
        f"{_validate_digest(digest)[:DIGEST_KEY_LENGTH]}"
        f"{'.' + nonce if nonce else ''}.dcm"
    )
    return check_key(key)


_NONCE_RE = re.compile(r"[0-9a-f]{8,32}")


def account_prefix(account_id: str) -> str:
    """Prefix (with trailing slash) of every key of one account."""
    return f"{validate_account_id(account_id)}/"


def study_prefix(account_id: str, study_uid: str) -> str:
    """Prefix (with trailing slash) of every key of one study of one account."""
    return f"{account_prefix(account_id)}{validate_segment(study_uid, 'study')}/"


def check_key(key: str) -> str:
    """Return *key* if it is a safe, relative, normalised object key.

    Rules: non-empty, at most 1024 characters, only ``[A-Za-z0-9._-]`` and
    ``/``; not absolute; no empty, ``.`` or ``..`` segments and no segment
    starting with ``.`` (which keeps backends free to use dot-names such as
    the filesystem store's ``.tmp/`` for themselves).  Backslashes, NULs,
    control characters, spaces and non-ASCII are rejected by the character
    rule.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"object key must be a str, not {type(key).__name__}")
    if not key:
        raise InvalidKey("object key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(
            f"object key is {len(key)} characters long (max {MAX_KEY_LENGTH})"
        )
    if _KEY_CHARS_RE.fullmatch(key) is None:
        raise InvalidKey(
            f"object key {key!r} contains characters outside [A-Za-z0-9._/-]"
        )
    if key.startswith("/"):
        raise InvalidKey(f"object key {key!r} must be relative")
    for segment in key.split("/"):
        if not segment:
            raise InvalidKey(f"object key {key!r} has an empty path segment")
        if segment.startswith("."):
            # covers "." and ".." as well
            raise InvalidKey(
                f"object key {key!r} has a segment starting with '.': {segment!r}"
            )
    return key


def check_prefix(prefix: str) -> str:
    """Validate a listing prefix; return it unchanged.

    ``""`` (everything) is allowed.  Otherwise the prefix must be a valid key
    once an optional single trailing ``/`` is removed, so ``"acct/"``,
    ``"acct/1.2"`` (a partial segment) and ``"acct"`` are all fine.
    Matching is plain string-prefix matching, as in S3: ``"acct1"`` also
    matches ``"acct10/..."``; use a trailing slash to stay inside a segment.
    """
    if not isinstance(prefix, str):
        raise InvalidKey(f"prefix must be a str, not {type(prefix).__name__}")
    if prefix == "":
        return prefix
    check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix
