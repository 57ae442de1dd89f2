"""Settings: embedded defaults < TOML file (``--config``) < ``DICOMGATE_*`` env < flags.

One dataclass holds every key of SPEC.md "Settings"; :func:`load_settings`
merges the four layers in that order of precedence.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "DICOMGATE_"


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    data_dir: str = "./dicomgate-data"
    host: str = "127.0.0.1"
    dicom_port: int = 11112
    http_port: int = 8080
    database_url: str | None = None
    object_store: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str | None = None
    workers: int = 8
    purge_window: int = 300
    usage_retention_days: int = 14
    stats_k: int = 10
    max_stow_bytes: int = 4 << 30
    token_ttl: int = 86400
    operator_token: str | None = None
    tls_certificate: str | None = None
    tls_private_key: str | None = None
    tls_ca_certificate: str | None = None
    sensitivity_rules: list[dict[str, Any]] | None = None
    max_associations: int = 32
    #: DIMSE worker processes: 0 = one per core (at most 4)
    dimse_processes: int = 0
    #: HTTP worker processes: 0 = one per core (at most 4)
    http_processes: int = 0
    dimse_timeout: int = 60
    # ---- limits for peers that have not authenticated (issue 11) ----------
    #: seconds a new DICOM connection has to deliver its whole A-ASSOCIATE-RQ (ARTIM, PS3.8 9.1.5)
    association_request_timeout: int = 10
    #: connections still negotiating, per DIMSE process, and per source address
    max_pending_associations: int = 64
    max_pending_per_address: int = 16
    #: largest A-ASSOCIATE-RQ PDU read (bytes); and the Maximum Length we advertise for P-DATA
    max_associate_rq_bytes: int = 65536
    max_pdu_size: int = 262144
    #: HTTP: open connections per HTTP process; seconds to deliver a request's headers;
    #: connections per source address still sending their headers
    http_connection_limit: int = 1000
    http_header_timeout: int = 10
    max_pending_http_per_address: int = 64
    #: request bodies of every route but STOW (sign-in, REST API, pages)
    max_body_bytes: int = 1 << 20
    #: decoded pixels (rows x columns x frames decoded) a render, thumbnail or decoded frame may need
    max_render_pixels: int = 40_000_000
    #: frame numbers in one /frames/{list}
    max_frames_per_request: int = 256
    #: the URL users reach the HTTP side at (https://... makes cookies Secure); None = http://host:http_port
    public_url: str | None = None
    #: origins (scheme://host[:port]) whose pages may call DICOMweb and the REST API (CORS); empty = off
    cors_origins: list[str] | None = None
    #: reverse proxies (IP addresses or CIDR networks) whose X-Forwarded-For/Proto/Host/Port are honoured; empty = none
    trusted_proxies: list[str] | None = None
    log_level: str = "INFO"
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- derived values -------------------------------------------------
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy URL; a bare ``postgresql://`` URL gets the psycopg 3 driver."""
        url = self.database_url or f"sqlite:///{self.data_path / 'index.sqlite3'}"
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        return url

    @property
    def effective_object_store(self) -> str:
        return self.object_store or f"file://{self.data_path / 'objects'}"


_FIELDS = {f.name: f for f in fields(Settings) if f.name != "extra"}


def _coerce(name: str, value: Any) -> Any:
    f = _FIELDS[name]
    typ = str(f.type)
    if value is None:
        return None
    if typ.startswith("int"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SettingsError(f"setting {name} must be a whole number, not {value!r}") from None
    if typ.startswith("list"):
        if isinstance(value, str) and name in ("cors_origins", "trusted_proxies"):  # env and flag: comma-separated
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise SettingsError(f"setting {name} must be a list")
        return value
    return str(value)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge defaults, a TOML file, ``DICOMGATE_*`` env and flag overrides (None = not given)."""
    values: dict[str, Any] = {}
    env = os.environ if env is None else env
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    if config_file:
        path = Path(config_file)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise SettingsError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
        for key, value in data.items():
            if key not in _FIELDS:
                raise SettingsError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, value)
    for name in _FIELDS:
        if name == "sensitivity_rules":
            continue  # structured: TOML only
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = _coerce(name, raw)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value)
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    """Raise SettingsError for a combination of settings that cannot work."""
    for port_name in ("dicom_port", "http_port"):
        port = getattr(s, port_name)
        if not 0 <= port <= 65535:
            raise SettingsError(f"{port_name} must be between 0 and 65535, not {port}")
    if s.workers < 1:
        raise SettingsError("workers must be at least 1")
    if not 0 <= s.dimse_processes <= 64:
        raise SettingsError("dimse_processes must be between 0 (one per core) and 64")
    if not 0 <= s.http_processes <= 64:
        raise SettingsError("http_processes must be between 0 (one per core) and 64")
    for name in ("max_stow_bytes", "association_request_timeout", "max_pending_associations",
                 "max_pending_per_address", "max_associate_rq_bytes", "http_connection_limit",
                 "http_header_timeout", "max_pending_http_per_address", "max_body_bytes",
                 "max_render_pixels", "max_frames_per_request"):
        if getattr(s, name) < 1:
            raise SettingsError(f"{name} must be positive")
    if not 4096 <= s.max_pdu_size <= 0xFFFFFFFF:
        raise SettingsError("max_pdu_size must be between 4096 and 4294967295")
    for origin in s.cors_origins or []:
        if not isinstance(origin, str) or not re.fullmatch(r"https?://[^/\s?#]+", origin):
            raise SettingsError(f"cors_origins: {origin!r} is not an origin (scheme://host[:port], no path)")
    for proxy in s.trusted_proxies or []:
        try:
            ipaddress.ip_network(str(proxy).strip(), strict=False)
        except ValueError:
            raise SettingsError(f"trusted_proxies: {proxy!r} is not an IP address or network "
                                "(e.g. 10.0.0.5, 10.0.0.0/24)") from None
    if s.public_url is not None and not (s.public_url.startswith("http://") or s.public_url.startswith("https://")):
        raise SettingsError(f"public_url must start with http:// or https://, not {s.public_url!r}")
    if s.operator_token is not None and len(s.operator_token) < 24:
        raise SettingsError("operator_token must be at least 24 characters (it guards the admin API)")
    store = s.effective_object_store
    if not (store.startswith("file://") or store.startswith("s3://")):
        raise SettingsError(f"object_store must be file://PATH or s3://BUCKET, not {store!r}")
    if store.startswith("s3://") and not s.s3_endpoint:
        raise SettingsError("an s3:// object store needs s3_endpoint (--s3-endpoint)")


def replace(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)
