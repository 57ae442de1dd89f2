"""Deflated Explicit VR Little Endian data sets (PS3.5 A.5) read as a seekable stream, inflated as read."""

from __future__ import annotations

import io
import zlib
from typing import Any, BinaryIO

__all__ = ["Inflater"]


class Inflater(io.RawIOBase):
    """A raw-deflate stream (Deflated Explicit VR Little Endian, PS3.5 A.5) read as a seekable file.

    Inflates in bounded steps as it is read; keeps only a window behind the
    position (small backward seeks, as the parser makes, stay cheap); a seek
    further back starts again from the beginning. ``tell``/``seek`` are
    positions in the inflated data.
    """

    KEEP = 256 << 10
    STEP = 1 << 20

    def __init__(self, fp: BinaryIO, start: int) -> None:
        super().__init__()
        self.fp, self.start = fp, start
        self._restart()

    def _restart(self) -> None:
        self.fp.seek(self.start)
        self.z = zlib.decompressobj(-zlib.MAX_WBITS)
        self.buf = bytearray()
        self.buf_pos = 0  # inflated offset of buf[0]
        self.pos = 0
        self.eof = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.pos
        elif whence != io.SEEK_SET:
            raise OSError("an inflated stream cannot seek from its end")
        if offset < 0:
            raise ValueError("negative seek position")
        if offset < self.buf_pos:
            self._restart()
        self.pos = offset
        return self.pos

    def _more(self) -> bool:
        """Inflate at most STEP more bytes into buf; False at the end of the stream."""
        if self.eof:
            return False
        data = self.z.unconsumed_tail or self.fp.read(64 << 10)
        if not data:
            out = self.z.flush()
            self.eof = True
        else:
            out = self.z.decompress(data, self.STEP)
            if self.z.eof:
                self.eof = True
        self.buf += out
        # drop what lies more than KEEP behind the position
        drop = min(len(self.buf), self.pos - self.KEEP - self.buf_pos)
        if drop > 0:
            del self.buf[:drop]
            self.buf_pos += drop
        return bool(out) or not self.eof

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._more():
                pass
            end = self.buf_pos + len(self.buf)
        else:
            end = self.pos + size
            while self.buf_pos + len(self.buf) < end and self._more():
                pass
        lo = self.pos - self.buf_pos
        data = bytes(self.buf[max(0, lo) : max(0, end - self.buf_pos)]) if lo >= 0 else b""
        self.pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)
