"""DIMSE clients for tests: pynetdicom SCU helpers and DCMTK command runners."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification

TS_STORESCU_FLAG = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.57": "-xk",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"DCMTK's {tool} is not installed (apt-get install dcmtk)")
    return path


def dcmtk(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.run([need(tool), *args], capture_output=True, text=True, env=env, timeout=timeout)


def storescu(port: int, calling: str, called: str, *files: Path | str, ts: str | None = None) -> subprocess.CompletedProcess:
    flags = ["-R", TS_STORESCU_FLAG[ts]] if ts else []
    return dcmtk("storescu", "-aet", calling, "-aec", called, *flags, "127.0.0.1", str(port), *map(str, files))


@dataclass
class StoreOutcome:
    associated: bool
    statuses: list[int]
    comments: list[str | None]
    reject: tuple[int, int, int] | None = None


def pynetdicom_store(port: int, calling: str, called: str, files: list[Path | str | bytes],
                     transfer_syntax: str | None = None) -> StoreOutcome:
    """Send files (paths, or raw Part 10 bytes) over one association; returns the statuses."""
    import io

    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="dg-send-")
    paths, datasets = [], []
    for i, f in enumerate(files):
        if isinstance(f, bytes):
            path = Path(tmp.name) / f"{i}.dcm"
            path.write_bytes(f)
        else:
            path = Path(f)
        paths.append(path)
        datasets.append(dcmread(path, stop_before_pixels=True))
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    pairs = {(str(ds.file_meta.MediaStorageSOPClassUID), transfer_syntax or str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    for sop, ts in sorted(pairs):
        ae.add_requested_context(sop, ts)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        reject = None
        if assoc.is_rejected and assoc.acceptor.primitive is not None:
            p = assoc.acceptor.primitive
            reject = (p.result, p.result_source, p.diagnostic)
        return StoreOutcome(False, [], [], reject)
    statuses, comments = [], []
    try:
        for path in paths:
            # a path is sent as the file's encoded data set, byte for byte (no re-encoding)
            rsp = assoc.send_c_store(path)
            statuses.append(int(rsp.Status) if rsp else -1)
            comments.append(str(rsp.get("ErrorComment")) if rsp and "ErrorComment" in rsp else None)
    finally:
        assoc.release()
        tmp.cleanup()
    return StoreOutcome(True, statuses, comments)


def echo(port: int, calling: str, called: str) -> StoreOutcome:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        p = assoc.acceptor.primitive if assoc.is_rejected else None
        return StoreOutcome(False, [], [], (p.result, p.result_source, p.diagnostic) if p else None)
    rsp = assoc.send_c_echo()
    assoc.release()
    return StoreOutcome(True, [int(rsp.Status)], [None])


def dataset_bytes(part10: bytes) -> bytes:
    """The data set after preamble and File Meta: what must be kept byte for byte."""
    from gateway.dicom.part10 import dataset_offset
    import io

    return part10[dataset_offset(io.BytesIO(part10)):]


def same_content(a: bytes, b: bytes | Path) -> bool:
    """Equal data sets, ignoring group lengths and encoding (for clients that re-encode)."""
    import io

    def flat(ds):  # type: ignore[no-untyped-def]
        out = {}
        for elem in ds:
            if elem.tag.element == 0x0000 or elem.tag == 0xFFFCFFFC:  # group lengths, padding
                continue
            if elem.VR == "SQ":
                out[elem.tag] = [flat(item) for item in elem.value]
            else:
                out[elem.tag] = elem.value
        return out

    da = dcmread(io.BytesIO(a))
    db = dcmread(b if isinstance(b, Path) else io.BytesIO(b))
    return flat(da) == flat(db)
