"""Absolute URLs the HTTP side hands out: RetrieveURL, BulkDataURI, ``dicomweb_url``, ``status_url``.

The ``public_url`` setting when it is set (behind a proxy, the URL users
reach). Otherwise the request's scheme and Host header, with the port the
request came in on added when the Host header names none and that port is
not the scheme's default: dicomweb-client sends ``Host: 127.0.0.1`` to port
8080, and then followed the URLs we gave it to port 80. ``X-Forwarded-*``
headers count only from a peer in ``trusted_proxies`` (``gateway.http.proxies``
applies them to the request first); from anyone else they are dropped.
"""

from __future__ import annotations

from flask import current_app, request

_DEFAULT_PORTS = {"http": "80", "https": "443"}


def base_url() -> str:
    public = current_app.config["services"].settings.public_url
    if public:
        return public.rstrip("/")
    scheme, host = request.scheme, request.host
    if ":" not in host.rsplit("]", 1)[-1]:  # no port (an IPv6 literal's colons are inside brackets)
        port = str(request.environ.get("SERVER_PORT", ""))
        if port and port != _DEFAULT_PORTS.get(scheme):
            host = f"{host}:{port}"
    elif host.endswith(f":{_DEFAULT_PORTS.get(scheme)}"):  # e.g. X-Forwarded-Port 443 with https
        host = host.rsplit(":", 1)[0]
    return f"{scheme}://{host}"


def dicomweb_root(account_id: str) -> str:
    """The account's DICOMweb base URL."""
    return f"{base_url()}/accounts/{account_id}/dicomweb"
