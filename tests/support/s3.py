"""An S3 endpoint for tests: moto's standalone server in a subprocess, or an
external endpoint given by ``DICOMGATE_TEST_S3_ENDPOINT`` (e.g. a real MinIO;
credentials from ``DICOMGATE_TEST_S3_ACCESS_KEY`` / ``..._SECRET_KEY``,
default ``testing``; region from ``DICOMGATE_TEST_S3_REGION``, default
``us-east-1``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

__all__ = ["free_port", "moto_s3_server", "wait_for_http"]

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Poll *url* until any HTTP response arrives (error statuses count)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s (last error: {last})")


def _moto_command(port: int) -> list[str]:
    args = ["-H", "127.0.0.1", "-p", str(port)]
    if importlib.util.find_spec("moto.server") is not None:
        return [sys.executable, "-m", "moto.server", *args]
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script), *args]
    found = shutil.which("moto_server")
    if found:
        return [found, *args]
    raise RuntimeError("moto[server] is not installed (pip install 'moto[server]')")


@contextlib.contextmanager
def moto_s3_server() -> Iterator[dict[str, str]]:
    """Yield ``{"endpoint", "access_key", "secret_key", "region"}``."""
    external = os.environ.get("DICOMGATE_TEST_S3_ENDPOINT")
    if external:
        yield {
            "endpoint": external.rstrip("/"),
            "access_key": os.environ.get("DICOMGATE_TEST_S3_ACCESS_KEY", ACCESS_KEY),
            "secret_key": os.environ.get("DICOMGATE_TEST_S3_SECRET_KEY", SECRET_KEY),
            "region": os.environ.get("DICOMGATE_TEST_S3_REGION", REGION),
        }
        return

    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
    )
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_SESSION_TOKEN", None)

    log = tempfile.NamedTemporaryFile(prefix="moto-server-", suffix=".log", delete=False)
    proc: subprocess.Popen | None = None
    endpoint = ""
    try:
        for attempt in range(3):  # the free port may be grabbed in between
            port = free_port()
            endpoint = f"http://127.0.0.1:{port}"
            proc = subprocess.Popen(
                _moto_command(port),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_for_http(endpoint + "/", timeout=20.0, proc=proc)
                break
            except (RuntimeError, TimeoutError) as exc:
                _stop(proc)
                proc = None
                if attempt == 2:
                    log.flush()
                    output = Path(log.name).read_text(errors="replace")[-4000:]
                    raise RuntimeError(f"moto server did not start: {exc}\n{output}") from exc
        yield {
            "endpoint": endpoint,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "region": REGION,
        }
    finally:
        if proc is not None:
            _stop(proc)
        log.close()
        with contextlib.suppress(OSError):
            os.unlink(log.name)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
