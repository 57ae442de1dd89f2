"""Streaming multipart/related (RFC 2046 section 5.1, RFC 2387) reader and writer.

Pure and stdlib-only (apart from the sibling :mod:`dicomweb.media`): no Flask.

Reader
------
:func:`iter_parts` reads the body in ``chunk_size`` pieces and never holds more
than roughly ``chunk_size + len(delimiter) + max_header_bytes`` bytes of the
body in its own buffers; each part body is written into a
:class:`tempfile.SpooledTemporaryFile` that moves to disk beyond
``spool_threshold`` bytes.

A part is yielded only once its *terminating* delimiter line has been seen in
full (``CRLF--boundary`` followed by either ``--`` or optional transport
padding and CRLF), so a body cut short never produces a truncated part: the
generator raises :class:`MultipartError` instead.

Accepted syntax (strict where it matters, lenient where harmless):

* a preamble before the first delimiter (discarded); the first delimiter may
  sit at the very start of the body without a leading CRLF;
* transport padding (spaces/tabs) between a boundary and its CRLF;
* part headers terminated by CRLF (obs-fold continuation lines are unfolded);
  bare-LF header sections are *not* accepted;
* everything after the close delimiter ``--boundary--`` (the epilogue) is
  ignored and not even read from the stream.

A delimiter followed by anything other than ``--`` or padding+CRLF is an
error: RFC 2046 forbids the boundary to appear as the prefix of any line
inside a part, so such a body is ambiguous and is rejected rather than
guessed at.

Writer
------
:func:`write_parts` is a generator producing the encoded body, streaming each
part's chunks as given (suitable as a WSGI response iterable).
"""

from __future__ import annotations

import re
import secrets
import tempfile
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Iterator

from .media import MediaTypeError, parse_content_type

__all__ = [
    "MultipartError",
    "BodyTooLarge",
    "Part",
    "iter_parts",
    "boundary_from_content_type",
    "validate_boundary",
    "new_boundary",
    "write_parts",
]


class MultipartError(ValueError):
    """The multipart body (or its boundary) is malformed."""


class BodyTooLarge(MultipartError):
    """More than ``max_total`` bytes were read from the stream."""


# RFC 2046 section 5.1.1:
#   boundary      := 0*69<bchars> bcharsnospace
#   bchars        := bcharsnospace / " "
#   bcharsnospace := DIGIT / ALPHA / "'" / "(" / ")" / "+" / "_" / "," / "-" / "." / "/" / ":" / "=" / "?"
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]\Z")

_TOKEN_BYTES = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_CRLF = b"\r\n"


@dataclass
class Part:
    """One fully received body part.

    ``file`` holds the body, positioned at offset 0. The caller owns the part
    and must :meth:`close` it (or use it as a context manager).
    """

    headers: dict[str, str]
    content_type: str  # parsed media type, lower-case, '' if no Content-Type
    file: IO[bytes]
    size: int = 0
    params: dict[str, str] = field(default_factory=dict)  # Content-Type parameters

    def read(self, n: int = -1) -> bytes:
        return self.file.read(n)

    def close(self) -> None:
        self.file.close()

    @property
    def closed(self) -> bool:
        return self.file.closed

    def __enter__(self) -> "Part":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def validate_boundary(boundary: str | bytes) -> bytes:
    """Return the boundary as ASCII bytes, or raise MultipartError if it is not RFC 2046-valid."""
    if isinstance(boundary, (bytes, bytearray, memoryview)):
        try:
            text = bytes(boundary).decode("ascii")
        except UnicodeDecodeError:
            raise MultipartError(f"invalid multipart boundary {bytes(boundary)!r}: non-ASCII") from None
    elif isinstance(boundary, str):
        text = boundary
    else:
        raise TypeError(f"boundary must be str or bytes, not {type(boundary).__name__}")
    if not text:
        raise MultipartError("invalid multipart boundary: empty")
    if len(text) > 70:
        raise MultipartError(f"invalid multipart boundary: longer than 70 characters ({len(text)})")
    if not _BOUNDARY_RE.match(text):
        raise MultipartError(
            f"invalid multipart boundary {text!r}: only letters, digits, spaces and '()+_,-./:=? are "
            "allowed and it must not end with a space (RFC 2046)"
        )
    return text.encode("ascii")


def boundary_from_content_type(value: str) -> str:
    """Extract and validate the ``boundary`` parameter of a multipart Content-Type."""
    try:
        mtype, params = parse_content_type(value)
    except MediaTypeError as exc:
        raise MultipartError(f"invalid Content-Type: {exc}") from None
    if not mtype.startswith("multipart/"):
        raise MultipartError(f"not a multipart media type: {mtype!r}")
    boundary = params.get("boundary")
    if boundary is None:
        raise MultipartError("missing boundary parameter in multipart Content-Type")
    validate_boundary(boundary)
    return boundary


def new_boundary() -> str:
    """A random boundary (only bchars, 48 characters, 128 bits of randomness)."""
    return "dicomgate-" + secrets.token_hex(16) + "-" + secrets.token_hex(2)


# --------------------------------------------------------------------------- reader


class _Reader:
    """Reads the body in chunks, never handing the parser a byte beyond ``max_total``.

    Bytes past the limit are refused only when the parser asks for them: a
    body whose close delimiter lies within the limit is read whole however
    the stream happens to be cut into reads (the epilogue is never needed).
    """

    __slots__ = ("stream", "chunk_size", "max_total", "total", "over")

    def __init__(self, stream: Any, chunk_size: int, max_total: int | None) -> None:
        self.stream = stream
        self.chunk_size = chunk_size
        self.max_total = max_total
        self.total = 0
        self.over = False  # a byte beyond max_total has been seen

    def read(self) -> bytes:
        if self.over:
            raise BodyTooLarge(f"multipart body larger than the limit of {self.max_total} bytes")
        n = self.chunk_size
        if self.max_total is not None:
            # Read at most one byte beyond the limit: enough to detect overflow.
            n = min(n, self.max_total - self.total + 1)
        data = self.stream.read(n)
        if not data:
            return b""
        if type(data) is not bytes:
            data = bytes(data)
        self.total += len(data)
        if self.max_total is not None and self.total > self.max_total:
            self.over = True
            data = data[: len(data) - (self.total - self.max_total)]
            if not data:
                raise BodyTooLarge(f"multipart body larger than the limit of {self.max_total} bytes")
        return data


def _parse_headers(block: bytes, index: int) -> dict[str, str]:
    headers: dict[str, str] = {}
    last: str | None = None
    for line in block.split(_CRLF):
        if b"\r" in line or b"\n" in line or b"\x00" in line:
            raise MultipartError(
                f"part {index}: invalid character in part headers (bare CR/LF or NUL; headers need CRLF line endings)"
            )
        if line[:1] in (b" ", b"\t"):
            # obs-fold continuation line
            if last is None:
                raise MultipartError(f"part {index}: header continuation line without a header")
            cont = line.strip(b" \t").decode("latin-1")
            if cont:
                headers[last] = f"{headers[last]} {cont}" if headers[last] else cont
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or not all(c in _TOKEN_BYTES for c in name):
            shown = line[:60].decode("latin-1")
            raise MultipartError(f"part {index}: malformed part header line {shown!r}")
        key = name.decode("ascii").lower()
        val = value.strip(b" \t").decode("latin-1")
        if key in headers:
            headers[key] = f"{headers[key]}, {val}"
        else:
            headers[key] = val
        last = key
    return headers


def _new_spool(spool_threshold: int, spool_dir: str | None) -> tempfile.SpooledTemporaryFile:
    f = tempfile.SpooledTemporaryFile(max_size=max(spool_threshold, 0), mode="w+b", dir=spool_dir)
    if spool_threshold <= 0:
        f.rollover()  # max_size=0 would mean "never roll"; we want "always on disk"
    return f


def _after_delim_error(data: bytes, index: int) -> MultipartError:
    where = "the first boundary" if index == 0 else f"the boundary after part {index}"
    return MultipartError(
        f"unexpected data after {where} (expected '--' or CRLF; the boundary must not "
        f"prefix a line inside a part): {bytes(data[:20])!r}"
    )


# parser states
_PREAMBLE, _AFTER_DELIM, _HEADERS, _BODY = range(4)


def iter_parts(
    stream: Any,
    boundary: str | bytes,
    *,
    chunk_size: int = 1 << 20,
    spool_threshold: int = 8 << 20,
    max_header_bytes: int = 16384,
    max_total: int | None = None,
    spool_dir: str | None = None,
) -> Iterator[Part]:
    """Yield the body parts of a multipart body read from ``stream`` (anything with ``.read(n)``).

    Each :class:`Part` is yielded only after its terminating delimiter has been
    read; the caller owns and must close it. Raises :class:`MultipartError`
    on malformed or truncated input (``"body ended before the closing
    boundary"``), :class:`BodyTooLarge` if more than ``max_total`` bytes
    are read. ``max_header_bytes`` bounds each part's header section
    (including its terminating blank line).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    if max_header_bytes < 2:
        raise ValueError("max_header_bytes must be >= 2")
    if max_total is not None and max_total < 0:
        raise ValueError("max_total must be >= 0 or None")
    bnd = validate_boundary(boundary)
    # A separate generator function so that bad arguments raise here, at call time.
    return _iter_parts(stream, bnd, chunk_size, spool_threshold, max_header_bytes, max_total, spool_dir)


def _iter_parts(
    stream: Any,
    bnd: bytes,
    chunk_size: int,
    spool_threshold: int,
    max_header_bytes: int,
    max_total: int | None,
    spool_dir: str | None,
) -> Iterator[Part]:
    delim = b"\r\n--" + bnd
    dlen = len(delim)
    keep = dlen - 1  # bytes that may be the start of a delimiter split across reads
    reader = _Reader(stream, chunk_size, max_total)

    # A virtual CRLF lets a body that starts directly with "--boundary" match.
    buf = _CRLF
    pos = 0
    state = _PREAMBLE
    part: Part | None = None  # part being received (owned by us until yielded)
    index = 0  # 1-based number of the current part, for messages
    padding_seen = 0

    try:
        while True:
            # ---- consume as much of buf[pos:] as possible --------------------
            if state == _BODY:
                assert part is not None
                i = buf.find(delim, pos)
                if i >= 0:
                    if i > pos:
                        part.file.write(memoryview(buf)[pos:i])
                        part.size += i - pos
                    pos = i + dlen
                    state = _AFTER_DELIM
                    padding_seen = 0
                    continue
                safe = len(buf) - keep
                if safe > pos:
                    part.file.write(memoryview(buf)[pos:safe])
                    part.size += safe - pos
                    pos = safe

            elif state == _AFTER_DELIM:
                avail = len(buf) - pos
                # "--" makes a close delimiter only right after the boundary: transport padding
                # comes after it, never before (a padding already consumed rules it out)
                close_possible = padding_seen == 0
                if close_possible and avail >= 2 and buf[pos] == 0x2D and buf[pos + 1] == 0x2D:
                    if part is not None:
                        done, part = part, None
                        done.file.seek(0)
                        yield done
                    return  # the epilogue is ignored (and not read)
                if not (close_possible and avail == 1 and buf[pos] == 0x2D):  # a lone "-" may become "--"
                    j = buf.find(_CRLF, pos)
                    if j >= 0:
                        if buf[pos:j].strip(b" \t"):
                            raise _after_delim_error(buf[pos:j], index)
                        if padding_seen + (j - pos) > max_header_bytes:
                            raise MultipartError("too much transport padding after a boundary delimiter")
                        pos = j + 2
                        if part is not None:
                            done, part = part, None
                            done.file.seek(0)
                            yield done
                        state = _HEADERS
                        continue
                    # No CRLF yet: all must be padding, possibly ending in a CR.
                    seg = buf[pos:]
                    pad = seg[:-1] if seg.endswith(b"\r") else seg
                    if pad.strip(b" \t"):
                        raise _after_delim_error(seg, index)
                    padding_seen += len(pad)
                    if padding_seen > max_header_bytes:
                        raise MultipartError("too much transport padding after a boundary delimiter")
                    buf, pos = seg[len(pad):], 0

            elif state == _HEADERS:
                headers: dict[str, str] | None = None
                if buf.startswith(_CRLF, pos):
                    headers = {}  # no header lines at all
                    pos += 2
                else:
                    j = buf.find(b"\r\n\r\n", pos)
                    if j >= 0:
                        if j + 4 - pos > max_header_bytes:
                            raise MultipartError(
                                f"part {index + 1}: part headers too long (more than {max_header_bytes} bytes)"
                            )
                        headers = _parse_headers(buf[pos:j], index + 1)
                        pos = j + 4
                    elif len(buf) - pos >= max_header_bytes:
                        raise MultipartError(
                            f"part {index + 1}: part headers too long (no blank line within "
                            f"{max_header_bytes} bytes)"
                        )
                if headers is not None:
                    index += 1
                    ctype, params = "", {}
                    raw_ct = headers.get("content-type")
                    if raw_ct is not None:
                        try:
                            ctype, params = parse_content_type(raw_ct)
                        except MediaTypeError as exc:
                            raise MultipartError(f"part {index}: invalid Content-Type: {exc}") from None
                    part = Part(
                        headers=headers,
                        content_type=ctype,
                        file=_new_spool(spool_threshold, spool_dir),
                        params=params,
                    )
                    state = _BODY
                    continue

            else:  # _PREAMBLE
                i = buf.find(delim, pos)
                if i >= 0:
                    pos = i + dlen
                    state = _AFTER_DELIM
                    padding_seen = 0
                    continue
                pos = max(pos, len(buf) - keep)

            # ---- need more input ---------------------------------------------
            chunk = reader.read()
            if not chunk:
                if state == _PREAMBLE:
                    raise MultipartError("body ended before the first boundary delimiter (no parts found)")
                raise MultipartError("body ended before the closing boundary")
            if pos >= len(buf):
                buf = chunk
            else:
                buf = buf[pos:] + chunk
            pos = 0
    finally:
        if part is not None:
            part.close()


# --------------------------------------------------------------------------- writer


def _encode_headers(headers: dict[str, str] | Iterable[tuple[str, str]]) -> bytes:
    items = headers.items() if isinstance(headers, dict) else headers
    out = bytearray()
    for name, value in items:
        name_s = str(name)
        name_b = name_s.encode("ascii") if name_s.isascii() else b""
        if not name_b or not all(c in _TOKEN_BYTES for c in name_b):
            raise MultipartError(f"invalid part header name {name!r}")
        value_s = str(value)
        if "\r" in value_s or "\n" in value_s or "\x00" in value_s:
            raise MultipartError(f"invalid character in value of part header {name!r}")
        try:
            value_b = value_s.encode("latin-1")
        except UnicodeEncodeError:
            raise MultipartError(f"part header {name!r} is not latin-1 encodable") from None
        out += name_b + b": " + value_b + _CRLF
    out += _CRLF
    return bytes(out)


def write_parts(
    parts: Iterable[tuple[dict[str, str], Iterable[bytes]]],
    boundary: str,
) -> Iterator[bytes]:
    """Generate a multipart body: for each ``(headers, body_chunks)`` emit the
    delimiter and headers, then the body chunks as given, then the close
    delimiter. ``body_chunks`` may also be a single bytes-like object.

    Nothing is buffered beyond one part's header block, so this can be
    returned directly as a streaming WSGI response body. Bodies must not
    contain ``CRLF--boundary`` (use :func:`new_boundary`). If the generator is
    closed early, the current body iterable's ``close()`` is called if present.
    """
    bnd = validate_boundary(boundary)
    first = b"--" + bnd + _CRLF
    between = _CRLF + b"--" + bnd + _CRLF
    opener = first
    for headers, body in parts:
        yield opener + _encode_headers(headers)
        opener = between
        if isinstance(body, (bytes, bytearray, memoryview)):
            if len(body):
                yield bytes(body)
            continue
        it = iter(body)
        try:
            for chunk in it:
                if not isinstance(chunk, (bytes, bytearray, memoryview)):
                    raise TypeError(f"part body chunks must be bytes, not {type(chunk).__name__}")
                if len(chunk):
                    yield chunk if type(chunk) is bytes else bytes(chunk)
        finally:
            close = getattr(body, "close", None) or getattr(it, "close", None)
            if close is not None:
                close()
    if opener is first:
        yield b"--" + bnd + b"--" + _CRLF  # no parts at all
    else:
        yield _CRLF + b"--" + bnd + b"--" + _CRLF
