"""DICOMweb resource URLs (PS3.18 10.3.1: study, series, instance and frames resources) built and parsed in one place.

Modelled on dicomweb-client's ``URI``: one value holds the service root and
the UIDs, ``str()`` gives the URL, :meth:`URI.parse` reads one back. The
service root (``base``) is whatever the caller serves DICOMweb under, e.g.
``https://host/accounts/{id}/dicomweb``; building does not check the UIDs
(they are the archive's, checked at ingest), parsing does.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.dicom.uids import is_valid_uid

__all__ = ["URI"]

_LEVELS = ("studies", "series", "instances", "frames")


@dataclass(frozen=True)
class URI:
    base: str
    study: str | None = None
    series: str | None = None
    instance: str | None = None
    frames: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", self.base.rstrip("/"))
        if self.series is not None and self.study is None:
            raise ValueError("a series URI needs its study")
        if self.instance is not None and self.series is None:
            raise ValueError("an instance URI needs its series")
        if self.frames is not None:
            if self.instance is None:
                raise ValueError("a frames URI needs its instance")
            if not self.frames or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.frames):
                raise ValueError(f"frame numbers {self.frames!r} are not positive integers")

    @property
    def level(self) -> str:
        """``service``, ``study``, ``series``, ``instance`` or ``frames``."""
        if self.frames is not None:
            return "frames"
        if self.instance is not None:
            return "instance"
        if self.series is not None:
            return "series"
        return "study" if self.study is not None else "service"

    def study_uri(self) -> "URI":
        return URI(self.base, self.study)

    def series_uri(self) -> "URI":
        return URI(self.base, self.study, self.series)

    def instance_uri(self) -> "URI":
        return URI(self.base, self.study, self.series, self.instance)

    def __str__(self) -> str:
        url = self.base
        if self.study is not None:
            url += f"/studies/{self.study}"
        if self.series is not None:
            url += f"/series/{self.series}"
        if self.instance is not None:
            url += f"/instances/{self.instance}"
        if self.frames is not None:
            url += "/frames/" + ",".join(str(n) for n in self.frames)
        return url

    @classmethod
    def parse(cls, url: str) -> "URI":
        """The URI of a study, series, instance or frames URL; ValueError for anything else.

        The resource path is the last ``/studies/...`` of the URL; what stands before it is the base.
        A bare service root (no ``/studies/``) parses as the service. UIDs must be valid (PS3.5 9.1).
        """
        text = str(url).split("?", 1)[0].split("#", 1)[0].rstrip("/")
        at = text.rfind("/studies/")
        if at < 0:
            return cls(text)
        base, segments = text[:at], text[at + 1:].split("/")
        if len(segments) % 2 or len(segments) > 2 * len(_LEVELS):
            raise ValueError(f"{url!r} is not a DICOMweb study, series, instance or frames URL")
        values: list[str] = []
        for i in range(0, len(segments), 2):
            if segments[i] != _LEVELS[i // 2]:
                raise ValueError(f"{url!r}: expected /{_LEVELS[i // 2]}/ where /{segments[i]}/ stands")
            values.append(segments[i + 1])
        uids, frame_list = values[:3], values[3] if len(values) == 4 else None
        for uid in uids:
            if not is_valid_uid(uid):
                raise ValueError(f"{url!r}: {uid[:70]!r} is not a valid DICOM UID")
        frames = None
        if frame_list is not None:
            try:
                frames = tuple(int(n) for n in frame_list.split(","))
            except ValueError:
                raise ValueError(f"{url!r}: {frame_list[:70]!r} is not a list of frame numbers") from None
        study, series, instance = (uids + [None, None, None])[:3]
        return cls(base, study, series, instance, frames)
