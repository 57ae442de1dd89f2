"""Identifiers of consent rows (providers, links, shares): a kind prefix and 64 random bits."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"
