"""Servers under test, each a subprocess in its own session with a working directory and a log:
DCMTK storescp, Orthanc with its DICOMweb plugin, and ``dicomgate serve`` (driven only through its
console script, with the consent set-up made through the CLI); plus the PostgreSQL databases a run uses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from .net import LOCALHOST, SENDER_AET, free_port, wait_http, wait_tcp


def tail(path: Path, n: int = 30) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def _peer_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


class Server:
    """A server subprocess with a working directory and a log file."""

    name = "server"

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "server.log"
        self._log = None
        self.dicom_port = 0
        self.http_port = 0
        self.called_aet = ""

    def _spawn(self, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=str(cwd or self.workdir), start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # our own session only
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        if self._log:
            self._log.close()
            self._log = None

    def stored_count(self) -> int | None:
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class StoreSCP(Server):
    """DCMTK storescp, single-process (default), writes into <workdir>/store."""

    name = "storescp"

    def start(self) -> "StoreSCP":
        self.store = self.workdir / "store"
        self.store.mkdir(exist_ok=True)
        self.dicom_port = free_port()
        self.called_aet = "STORESCP"
        exe = shutil.which("storescp")
        if not exe:
            raise RuntimeError("storescp not found on PATH")
        self._spawn([exe, "-od", str(self.store), "-aet", self.called_aet, str(self.dicom_port)], env=_peer_env())
        wait_tcp(self.dicom_port, 20, self.proc)
        return self

    def stored_count(self) -> int | None:
        return sum(1 for p in self.store.iterdir() if p.is_file())


def orthanc_plugin_path() -> str:
    for cand in ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",):
        if os.path.exists(cand):
            return cand
    try:
        out = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if "libOrthancDicomWeb.so" in line:
                return line.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    raise RuntimeError("libOrthancDicomWeb.so not found (is orthanc-dicomweb installed?)")


class OrthancServer(Server):
    """Orthanc with only the DICOMweb plugin loaded, SQLite index, uncompressed
    storage with SyncStorageArea=true (fsync of every stored file)."""

    name = "orthanc"
    SETTINGS = {"StorageCompression": False, "SyncStorageArea": True}

    def start(self) -> "OrthancServer":
        exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.called_aet = "ORTHANC"
        cfg = {
            "Name": "bench",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "DicomAet": self.called_aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "Plugins": [orthanc_plugin_path()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            **self.SETTINGS,
        }
        cfg_path = self.workdir / "orthanc.json"
        cfg_path.write_text(json.dumps(cfg, indent=2))
        self._spawn([exe, str(cfg_path)], env=_peer_env())
        self.base = f"http://{LOCALHOST}:{self.http_port}"
        try:
            wait_http(self.base + "/system", 60, self.proc)
            wait_tcp(self.dicom_port, 30, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"Orthanc failed to start; log tail:\n{tail(self.log_path)}")
        return self

    @property
    def stow_url(self) -> str:
        return self.base + "/dicom-web/studies"

    def stored_count(self) -> int | None:
        try:
            return int(requests.get(self.base + "/statistics", timeout=30).json()["CountInstances"])
        except Exception:  # noqa: BLE001
            return None


class DicomgateUnavailable(RuntimeError):
    pass


def dicomgate_exe(venv_bin: Path | None = None) -> str:
    cand = []
    if venv_bin:
        cand.append(Path(venv_bin) / "dicomgate")
    cand.append(Path(sys.executable).parent / "dicomgate")
    for c in cand:
        if c.exists():
            return str(c)
    found = shutil.which("dicomgate")
    if found:
        return found
    raise DicomgateUnavailable("no 'dicomgate' console script (run `.venv/bin/pip install -e .`)")


def dicomgate_check(exe: str) -> None:
    """Raise DicomgateUnavailable unless `dicomgate --help` and
    `dicomgate serve --help` work."""
    for args in (["--help"], ["serve", "--help"]):
        try:
            r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            raise DicomgateUnavailable(f"`dicomgate {' '.join(args)}` failed: {exc}") from exc
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise DicomgateUnavailable(f"`dicomgate {' '.join(args)}` exit {r.returncode}: {msg[-1] if msg else ''}")


class DicomgateServer(Server):
    """`dicomgate serve` plus the consent set-up (account, provider, link)
    through the CLI, all on the same --data-dir (and --database-url)."""

    name = "dicomgate"

    def __init__(self, workdir: Path, exe: str, database_url: str | None = None,
                 email: str = "bench@example.org", password: str = "bench-password-123"):
        super().__init__(workdir)
        self.exe = exe
        self.database_url = database_url
        self.data_dir = self.workdir / "data"
        self.email = email
        self.password = password
        self.account: dict[str, Any] = {}
        self.provider: dict[str, Any] = {}
        self.link: dict[str, Any] = {}

    def _common(self) -> list[str]:
        args = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        return args

    def cli_json(self, *args: str, stdin: str | None = None) -> dict[str, Any]:
        cmd = [self.exe, *args, "--json", *self._common()]
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:])} -> exit {r.returncode}: {(r.stderr or r.stdout).strip()[-800:]}")
        out = r.stdout.strip()
        try:
            return json.loads(out)
        except ValueError:
            # tolerate log lines before the JSON document
            for i in range(len(out)):
                if out[i] in "{[":
                    try:
                        return json.loads(out[i:])
                    except ValueError:
                        continue
            raise RuntimeError(f"{' '.join(cmd[1:])}: no JSON in output: {out[-500:]!r}")

    def serve(self, verb: str = "start") -> None:
        """Run `dicomgate serve` on new ports and wait until it answers HTTP and DICOM."""
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.base = f"http://{LOCALHOST}:{self.http_port}"
        cmd = [self.exe, "serve", *self._common(), "--dicom-port", str(self.dicom_port),
               "--http-port", str(self.http_port)]
        self._spawn(cmd, env=dict(os.environ))
        try:
            wait_http(self.base + "/healthz", 60, self.proc)
            wait_tcp(self.dicom_port, 30, self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"dicomgate serve failed to {verb} ({exc}); log tail:\n{tail(self.log_path)}")

    def start(self) -> "DicomgateServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.serve("start")
        try:
            self.account = self.cli_json("account", "create", "--email", self.email, "--password-stdin",
                                         stdin=self.password + "\n")
            self.provider = self.cli_json("provider", "add", "--name", "Bench", "--ae-title", SENDER_AET,
                                          "--network", "127.0.0.0/8")
            self.link = self.cli_json("link", "create", "--account", str(self.account["id"]),
                                      "--provider", str(self.provider["id"]), "--push", "--pull")
        except Exception:
            self.stop()
            raise
        self.called_aet = str(self.account["ae_title"])
        return self

    def stored_count(self) -> int | None:
        """Objects in the default file store (None with another object store)."""
        root = self.data_dir / "objects"
        if not root.is_dir():
            return None
        return sum(1 for p in root.rglob("*") if p.is_file() and ".tmp" not in p.relative_to(root).parts)

    @property
    def stow_url(self) -> str:
        return f"{self.base}/accounts/{self.account['id']}/dicomweb/studies"

    @property
    def stow_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.provider['token']}"}


def respawn_dicomgate(server: "DicomgateServer") -> "DicomgateServer":
    """Stop `dicomgate serve` and start it again on the same data dir (and
    database), keeping the account/provider/link already set up (fresh process,
    so its RSS starts from scratch). New ports."""
    server.stop()
    server.serve("restart")
    return server


PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def pg_create_database(name: str, admin_url: str = PG_ADMIN_URL) -> str:
    """CREATE DATABASE name (autocommit); returns a SQLAlchemy URL for it."""
    import psycopg

    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {name!r}")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def pg_drop_database(name: str, admin_url: str = PG_ADMIN_URL) -> None:
    import psycopg

    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {name!r}")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
