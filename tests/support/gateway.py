"""A real ``dicomgate serve`` process for end-to-end tests, and its helpers.

The server runs as a subprocess exactly as a user starts it; the tests set
up accounts, providers and links either through the CLI (subprocess) or,
where the CLI itself is not under test, through the same service functions
in-process (same database, faster).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.support.s3 import free_port, wait_for_http

BIN = Path(sys.executable).with_name("dicomgate")


def wait_for_tcp(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout} s")


@dataclass
class Backend:
    name: str
    data_dir: Path
    database_url: str | None = None
    object_store: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def args(self) -> list[str]:
        out = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            out += ["--database-url", self.database_url]
        return out


class Gateway:
    """A running ``dicomgate serve`` on free ports."""

    def __init__(self, backend: Backend, *, extra_env: dict[str, str] | None = None,
                 new_session: bool = False) -> None:
        self.backend = backend
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.extra_env = extra_env or {}
        self.new_session = new_session
        self.proc: subprocess.Popen | None = None
        self.log_path = backend.data_dir / f"serve-{self.http_port}.log"
        self._services = None

    # ---- process control -------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.backend.env)
        env.update(self.extra_env)
        return env

    def start(self) -> "Gateway":
        self.backend.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [str(BIN), "serve", *self.backend.args(), "--dicom-port", str(self.dicom_port),
               "--http-port", str(self.http_port)]
        if self.backend.object_store:
            cmd += ["--object-store", self.backend.object_store]
        self._log = open(self.log_path, "ab")
        # new_session: serve leads its own process group, which a test may signal as a whole
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=self.new_session)
        wait_for_http(f"{self.url}/healthz", timeout=60, proc=self.proc)
        wait_for_tcp(self.dicom_port)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self._log.close()
        return rc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    # ---- CLI -------------------------------------------------------------
    def cli(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(BIN), *args, *self.backend.args()], input=input, capture_output=True, text=True,
            env=self.env, timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"dicomgate {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def cli_json(self, *args: str, input: str | None = None) -> Any:
        import json

        return json.loads(self.cli(*args, "--json", input=input).stdout)

    # ---- in-process access to the same data -------------------------------
    @property
    def services(self):  # type: ignore[no-untyped-def]
        if self._services is None:
            from gateway.runtime.services import Services
            from gateway.runtime.settings import load_settings

            overrides = {"data_dir": str(self.backend.data_dir), "database_url": self.backend.database_url,
                         "object_store": self.backend.object_store}
            settings = load_settings(env=self.backend.env | {k: v for k, v in os.environ.items()
                                                             if k.startswith("DICOMGATE_") and k not in self.backend.env},
                                     overrides=overrides)
            self._services = Services.from_settings(settings, migrate=False)
        return self._services

    def new_account(self, email: str | None = None) -> dict:
        from gateway.identity.accounts import account_view, create_account, create_user

        email = email or f"u{secrets.token_hex(4)}@example.org"
        with self.services.db.session(write=True) as s:
            user = create_user(s, email, "pw-" + email)
            acc = create_account(s, user, None, actor="test")
            view = account_view(s, acc, self.url)
        view["password"] = "pw-" + email
        return view

    def new_provider(self, networks: list[str] | None = None, ae: str | None = None) -> dict:
        from gateway.identity import consents

        ae = ae or ("P" + secrets.token_hex(5).upper())
        with self.services.db.session(write=True) as s:
            return consents.add_provider(s, name=f"PACS {ae}", ae_title=ae,
                                         networks=["127.0.0.0/8"] if networks is None else networks,
                                         host=None, port=None, actor="test")

    def link(self, account: dict, provider: dict, *, push: bool = True, pull: bool = False,
             sensitive: bool = False, expires: Any = None) -> dict:
        from gateway.identity import consents

        with self.services.db.session(write=True) as s:
            return consents.create_link(s, account_id=account["id"], provider_id=provider["id"], push=push,
                                        pull=pull, sensitive=sensitive, expires=expires, actor="test")

    def revoke(self, link: dict) -> None:
        from gateway.identity import consents

        with self.services.db.session(write=True) as s:
            consents.revoke_link(s, link["id"], actor="test")

    def instance_rows(self, account_id: str) -> list:
        from sqlalchemy import select

        from gateway.db.models import Instance

        with self.services.db.session() as s:
            return list(s.scalars(select(Instance).where(Instance.account_id == account_id)))

    def object_keys(self, account_id: str) -> list[str]:
        return list(self.services.store.iter_keys(f"{account_id}/"))

    def read_object(self, key: str) -> bytes:
        return b"".join(self.services.store.open(key))

    def stow(self, account_id: str, bodies: list[bytes], *, token: str | None = None, study: str | None = None,
             auth: Any = None, content_type: str | None = None, data: bytes | None = None) -> requests.Response:
        boundary = "dgtest" + secrets.token_hex(8)
        if data is None:
            data = b"".join(
                b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + b + b"\r\n"
                for b in bodies
            ) + b"--" + boundary.encode() + b"--\r\n"
        url = f"{self.url}/accounts/{account_id}/dicomweb/studies" + (f"/{study}" if study else "")
        headers = {"Content-Type": content_type or f'multipart/related; type="application/dicom"; boundary={boundary}'}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.post(url, data=data, headers=headers, auth=auth, timeout=120)

    def close(self) -> None:
        if self._services is not None:
            self._services.close()
            self._services = None


def user_token(gw: Gateway, email: str, ttl: int | None = 3600) -> str:
    """A bearer token for a user of this gateway (as `dicomgate token create` makes)."""
    from gateway.identity.accounts import find_user
    from gateway.identity.credentials import issue_token

    with gw.services.db.session(write=True) as s:
        user = find_user(s, email)
        token, _ = issue_token(s, user_id=user.id, ttl=ttl)
    return token


def worker_processes(gw: Gateway, role: str = "dimse") -> list:
    """serve's workers of one side, by the name each gives itself (they are forked by the fork server)."""
    import psutil

    parent = psutil.Process(gw.proc.pid)
    found = []
    for p in parent.children(recursive=True):
        try:
            if p.name().startswith(f"dg-{role}-") and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def refusals(gw: Gateway, kind: str) -> float:
    """``dicomgate_refusals_total{kind=...}`` from the gateway's /metrics (0 if never counted)."""
    import re

    text = requests.get(f"{gw.url}/metrics", timeout=30).text
    m = re.search(r'^dicomgate_refusals_total\{kind="%s"\} (\S+)$' % re.escape(kind), text, re.M)
    return float(m.group(1)) if m else 0.0
