"""The media type of frames in each transfer syntax (PS3.18 Table 8.7.3-2)."""

from __future__ import annotations

from gateway.dicom.frame_errors import FrameError

__all__ = ["EXPLICIT_VR_LITTLE_ENDIAN", "VIDEO_SYNTAXES", "frame_media_type"]

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

_JPEG = {
    "1.2.840.10008.1.2.4.50",  # baseline (process 1)
    "1.2.840.10008.1.2.4.51",  # extended (process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # lossless (process 14)
    "1.2.840.10008.1.2.4.70",  # lossless SV1 (process 14, selection value 1)
    # retired JPEG processes, still image/jpeg bytestreams
    *(f"1.2.840.10008.1.2.4.{n}" for n in (52, 53, 54, 55, 56, 58, 59, 60, 61, 62, 63, 64, 65, 66)),
}
_MEDIA_TYPES: dict[str, str] = {
    **{uid: "image/jpeg" for uid in _JPEG},
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.1.98": "application/octet-stream",  # encapsulated uncompressed
    EXPLICIT_VR_LITTLE_ENDIAN: "application/octet-stream",
    "1.2.840.10008.1.2.2": "application/octet-stream",  # big endian: bytes as stored
}
# Native little-endian syntaxes whose frame bytes are Explicit VR Little Endian frames.
_AS_EXPLICIT_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99"}
VIDEO_SYNTAXES = {
    "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101", "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.104", "1.2.840.10008.1.2.4.105",
    "1.2.840.10008.1.2.4.106", "1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108",
    "1.2.840.10008.1.2.4.100.1", "1.2.840.10008.1.2.4.101.1", "1.2.840.10008.1.2.4.102.1",
    "1.2.840.10008.1.2.4.103.1", "1.2.840.10008.1.2.4.104.1", "1.2.840.10008.1.2.4.105.1",
    "1.2.840.10008.1.2.4.106.1",
}


def frame_media_type(transfer_syntax_uid: str) -> tuple[str, str]:
    """(media type, ``transfer-syntax`` parameter) of frames in this transfer syntax.

    Native Implicit VR Little Endian and Deflated Explicit VR Little Endian
    frames are byte-identical to Explicit VR Little Endian frames and are
    labelled as such. Big endian frames are labelled with the big endian UID
    (the bytes are as stored; the caller decides whether to byte-swap).
    Video and unknown transfer syntaxes raise :class:`FrameError`.
    """
    ts = str(transfer_syntax_uid).strip().rstrip("\x00")
    if ts in _AS_EXPLICIT_LE:
        return "application/octet-stream", EXPLICIT_VR_LITTLE_ENDIAN
    if ts in _MEDIA_TYPES:
        return _MEDIA_TYPES[ts], ts
    if ts in VIDEO_SYNTAXES:
        raise FrameError(f"transfer syntax {ts} is a video stream; frames cannot be retrieved from it")
    raise FrameError(f"no frame media type is known for transfer syntax {ts}")
