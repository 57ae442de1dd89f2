"""Whole numbers from requests (query parameters, form fields, query keys), parsed with bounds.

Every number a caller sends goes through :func:`parse_int`, so none reaches
the database out of its range: SQLite and PostgreSQL both fail on integers
beyond 64 bits (and PostgreSQL on ``integer`` columns beyond 32), which would
otherwise surface as a 500. Only ASCII digits count (Python's ``int`` also
takes ``"١٢"``, ``"1_000"`` and spaces, ``str.isdigit`` even ``"²"``).
"""

from __future__ import annotations

import re

INT64_MAX = 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_WHOLE = re.compile(r"-?[0-9]{1,19}")  # more digits than 19 is out of any range we accept


class NumberError(ValueError):
    """A number that is missing its digits or out of its range (400); the message names the parameter."""


def parse_int(raw: str | None, name: str, *, minimum: int = 0, maximum: int = INT64_MAX,
              default: int | None = None) -> int | None:
    """``raw`` as an int in ``[minimum, maximum]``; ``default`` when it is absent (None)."""
    if raw is None:
        return default
    if not _WHOLE.fullmatch(raw) or not minimum <= (value := int(raw)) <= maximum:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise NumberError(f"{name} must be a whole number from {minimum} to {maximum}, not {shown!r}")
    return value
