"""Where the benchmark's peers meet: 127.0.0.1 only, the sender's AE title, free ports, waiting for a port or URL."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any

import requests

LOCALHOST = "127.0.0.1"
SENDER_AET = "BENCHPACS"


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def wait_tcp(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None,
             host: str = LOCALHOST) -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"port {host}:{port} not accepting after {timeout}s ({last})")


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None,
              expect: int = 200) -> None:
    """Wait until GET url answers with status `expect`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before {url} answered")
        try:
            r = requests.get(url, timeout=2.0)
            if r.status_code == expect:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {expect} within {timeout}s (last: {last})")
