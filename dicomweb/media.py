"""Media type (Content-Type / Accept element) parsing.

Pure and stdlib-only on purpose: no Flask, no project imports.

Grammar (RFC 9110 section 8.3.1, formerly RFC 7231 section 3.1.1.1)::

    media-type = type "/" subtype *( OWS ";" OWS parameter )
    parameter  = token "=" ( token / quoted-string )

Deliberate leniencies, because real DICOMweb clients produce them:

* an unquoted parameter value may contain any visible character except
  ``;``, ``"`` and whitespace (``type=application/dicom`` is common);
* whitespace around ``=`` and empty parameters (``a/b; ; c=d;``) are accepted.

Everything else that does not fit the grammar raises :class:`MediaTypeError`.
"""

from __future__ import annotations

import string

__all__ = ["MediaTypeError", "parse_content_type", "format_content_type"]


class MediaTypeError(ValueError):
    """A media type string could not be parsed."""


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters)
_WS = " \t"


def _bad(value: str, msg: str, pos: int | None = None) -> MediaTypeError:
    where = f" at position {pos}" if pos is not None else ""
    return MediaTypeError(f"invalid media type {value!r}: {msg}{where}")


def _skip_ws(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in _WS:
        i += 1
    return i


def _read_token(s: str, i: int) -> tuple[str, int]:
    j = i
    n = len(s)
    while j < n and s[j] in _TOKEN_CHARS:
        j += 1
    return s[i:j], j


def _is_visible(ch: str) -> bool:
    o = ord(ch)
    # VCHAR plus obs-text (0x80-0xFF); no controls, no DEL.
    return 0x21 <= o <= 0x7E or 0x80 <= o <= 0xFF


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Parse a Content-Type value.

    Returns ``(media_type, params)`` where ``media_type`` is ``"type/subtype"``
    lower-cased, and ``params`` maps lower-cased parameter names to their
    (unquoted, unescaped, case-preserved) values.

    >>> parse_content_type('Multipart/Related; type="application/dicom"; boundary="abc;def"')
    ('multipart/related', {'type': 'application/dicom', 'boundary': 'abc;def'})
    """
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("latin-1")
    if not isinstance(value, str):
        raise MediaTypeError(f"media type must be a string, not {type(value).__name__}")
    s = value
    n = len(s)
    i = _skip_ws(s, 0)
    if i >= n:
        raise MediaTypeError("empty media type")

    mtype, i = _read_token(s, i)
    if not mtype:
        raise _bad(value, "expected a type token", i)
    if i >= n or s[i] != "/":
        raise _bad(value, "expected '/' after the type", i)
    subtype, i = _read_token(s, i + 1)
    if not subtype:
        raise _bad(value, "expected a subtype token", i)

    params: dict[str, str] = {}
    while True:
        i = _skip_ws(s, i)
        if i >= n:
            break
        if s[i] != ";":
            raise _bad(value, f"unexpected character {s[i]!r}", i)
        i = _skip_ws(s, i + 1)
        if i >= n or s[i] == ";":
            continue  # empty parameter: tolerated
        name, i = _read_token(s, i)
        if not name:
            raise _bad(value, f"expected a parameter name, got {s[i]!r}", i)
        i = _skip_ws(s, i)
        if i >= n or s[i] != "=":
            raise _bad(value, f"expected '=' after parameter {name!r}", i)
        i = _skip_ws(s, i + 1)
        if i >= n:
            raise _bad(value, f"missing value for parameter {name!r}", i)
        if s[i] == '"':
            i += 1
            out: list[str] = []
            while True:
                if i >= n:
                    raise _bad(value, f"unterminated quoted string in parameter {name!r}")
                ch = s[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\":
                    if i + 1 >= n:
                        raise _bad(value, f"dangling backslash in parameter {name!r}")
                    ch = s[i + 1]
                    if not (ch in _WS or _is_visible(ch)):
                        raise _bad(value, "invalid escaped character", i + 1)
                    out.append(ch)
                    i += 2
                    continue
                if not (ch in _WS or _is_visible(ch)):
                    raise _bad(value, f"control character in quoted string of {name!r}", i)
                out.append(ch)
                i += 1
            pval = "".join(out)
        else:
            j = i
            while j < n and s[j] not in ';"' and _is_visible(s[j]):
                j += 1
            pval = s[i:j]
            if not pval:
                raise _bad(value, f"invalid value for parameter {name!r}", i)
            i = j
        key = name.lower()
        if key in params:
            raise _bad(value, f"duplicate parameter {key!r}")
        params[key] = pval

    return f"{mtype}/{subtype}".lower(), params


def _quote(v: str) -> str:
    if v and all(c in _TOKEN_CHARS for c in v):
        return v
    for c in v:
        if not (c in _WS or _is_visible(c)):
            raise MediaTypeError(f"parameter value {v!r} contains a control character")
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_content_type(media_type: str, params: dict[str, str] | None = None) -> str:
    """Inverse of :func:`parse_content_type`; quotes values only when needed."""
    mtype, _ = parse_content_type(media_type)  # validates
    parts = [mtype]
    for k, v in (params or {}).items():
        if not k or not all(c in _TOKEN_CHARS for c in k):
            raise MediaTypeError(f"invalid parameter name {k!r}")
        parts.append(f"{k}={_quote(str(v))}")
    return "; ".join(parts)


def _split_outside_quotes(value: str, sep: str) -> list[str]:
    out, cur, quoted, escaped = [], [], False, False
    for ch in value:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            cur.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p.strip() for p in out if p.strip()]


def parse_accept(value: str | None) -> list[tuple[str, dict[str, str]]]:
    """Media ranges of an Accept header, best first (by q, then order); ``*/*`` when absent.

    Ranges with q=0 are dropped; unparseable ranges raise MediaTypeError.
    """
    if not value or not value.strip():
        return [("*/*", {})]
    ranges = []
    for index, item in enumerate(_split_outside_quotes(value, ",")):
        mtype, params = parse_content_type(item)
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            raise MediaTypeError(f"bad q value in {item!r}") from None
        if q > 0:
            ranges.append((-q, index, mtype, params))
    ranges.sort()
    return [(m, p) for _, _, m, p in ranges]
