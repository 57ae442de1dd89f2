"""DIMSE status datasets: the one place a C-STORE, C-FIND, C-GET or C-MOVE answer's Status is built.

Error Comment (0000,0902) is LO: at most 64 characters and no backslash (PS3.5 6.2),
so a refusal's prose is cut and cleaned here, never by each handler.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

SUCCESS = 0x0000


def error_comment(text: str) -> str:
    """Text made fit for LO: backslashes to slashes, at most 64 characters."""
    return text.replace("\\", "/")[:64]


def status(code: int, comment: str | None = None) -> Dataset:
    """A status dataset; a comment is kept only on a non-success status."""
    ds = Dataset()
    ds.Status = code
    if comment and code != SUCCESS:
        ds.ErrorComment = error_comment(comment)
    return ds
