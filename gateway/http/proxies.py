"""``X-Forwarded-*`` honoured only from the reverse proxies the operator names (``trusted_proxies``).

Behind HAProxy or nginx every request comes from the proxy's address; the
client's address, scheme, host and port arrive in ``X-Forwarded-For``,
``-Proto``, ``-Host`` and ``-Port``. From a peer in ``trusted_proxies`` the
last hop of each (the one that proxy wrote) is applied by werkzeug's
``ProxyFix``, so the sign-in throttle, a provider's networks and the audit
see the client, and the absolute URLs handed out (``gateway.http.urls``)
name what the client reached. From any other peer the headers are removed
before the app sees them: a client cannot pose as another address or host.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Iterable

from werkzeug.middleware.proxy_fix import ProxyFix

#: the environ keys of the headers ProxyFix reads (and that an untrusted peer may not send)
FORWARDED = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
             "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX", "HTTP_FORWARDED")


def parse_networks(values: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Addresses or CIDR networks; ValueError names the one that is neither."""
    nets = []
    for v in values:
        try:
            nets.append(ipaddress.ip_network(str(v).strip(), strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: {v!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24)")
    return nets


class TrustedProxies:
    """WSGI middleware: ProxyFix (one hop of each header) for trusted peers, the headers dropped for the rest."""

    def __init__(self, app: Callable[..., Any], proxies: Iterable[str]) -> None:
        self.app = app
        self.networks = parse_networks(proxies)
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=1, x_port=1)

    def trusted(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in n for n in self.networks)

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Any:
        if self.trusted(environ.get("REMOTE_ADDR")):
            return self.fixed(environ, start_response)
        for key in FORWARDED:
            environ.pop(key, None)
        return self.app(environ, start_response)
