"""DICOM UID rules (PS3.5 9.1): the one check every path that takes a UID from a peer applies."""

from __future__ import annotations

import re

#: components of digits separated by single dots, no leading zero in a multi-digit component
UID_RE = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
MAX_UID_LENGTH = 64


def is_valid_uid(s: object) -> bool:
    """True if *s* is a syntactically valid DICOM UID (PS3.5 9.1)."""
    return isinstance(s, str) and 0 < len(s) <= MAX_UID_LENGTH and UID_RE.fullmatch(s) is not None
