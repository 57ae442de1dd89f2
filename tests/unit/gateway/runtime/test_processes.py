"""gateway.runtime.processes / worker: shared listeners, metrics directories, and a worker's lifeline."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys

import pytest

from gateway.runtime import processes, worker
from gateway.runtime.processes import WorkerPool, bind_listener, new_metrics_dir
from gateway.runtime.serve import _redact
from gateway.runtime.settings import load_settings


def test_a_listener_is_made_for_sharing():
    sock = bind_listener("127.0.0.1", 0)
    try:
        assert sock.getsockname()[1] > 0
        assert sock.getblocking() is False and sock.get_inheritable()
        with pytest.raises(BlockingIOError):  # a worker that loses the race gets EAGAIN, not a hang
            sock.accept()
        socket.create_connection(sock.getsockname(), timeout=5).close()
    finally:
        sock.close()


def test_a_port_in_use_is_retried_then_refused(monkeypatch):
    monkeypatch.setattr(processes, "BIND_RETRY_SECONDS", 0.3)
    held = bind_listener("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            bind_listener("127.0.0.1", held.getsockname()[1])
    finally:
        held.close()


def test_metrics_directories_of_dead_serves_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{processes.METRICS_PREFIX}{int(dead.stdout)}-x"
    stale.mkdir()
    mine = new_metrics_dir()
    again = new_metrics_dir()  # a live serve's directory stays
    assert not stale.exists() and os.path.isdir(mine) and os.path.isdir(again)
    assert os.path.basename(mine).startswith(f"{processes.METRICS_PREFIX}{os.getpid()}-")


def test_a_pool_is_of_a_known_role():
    with pytest.raises(ValueError, match="no worker"):
        WorkerPool("ftp", load_settings(env={}), socket.socket(), 1, "/nonexistent")
    assert set(worker.WORKER_MODULES) == {"dimse", "http"}


def test_a_worker_exits_when_serve_is_gone():
    """The lifeline: serve never writes on it, so its end closing (serve's death) ends the worker."""
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=worker._exit_when_serve_is_gone, args=(there,))
    proc.start()
    there.close()
    proc.join(0.5)
    assert proc.exitcode is None  # serve still holds its end
    here.close()
    proc.join(30)
    assert proc.exitcode == 1


def test_the_database_password_is_not_logged():
    assert _redact("postgresql://dg:secret@db:5432/dg") == "postgresql://dg:***@db:5432/dg"
    assert _redact("sqlite:////var/lib/dicomgate/index.sqlite3") == "sqlite:////var/lib/dicomgate/index.sqlite3"
