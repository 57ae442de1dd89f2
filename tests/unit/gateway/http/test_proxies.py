"""gateway.http.proxies: forwarded headers applied from trusted peers only."""

from __future__ import annotations

import pytest

from gateway.http.proxies import FORWARDED, TrustedProxies, parse_networks


def _seen(remote: str, proxies: list[str], **headers: str) -> dict:
    seen: dict = {}

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        seen.update(environ)
        return [b""]

    environ = {"REMOTE_ADDR": remote, "wsgi.url_scheme": "http", "HTTP_HOST": "10.0.0.2:8080",
               "SERVER_NAME": "10.0.0.2", "SERVER_PORT": "8080",
               **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}
    TrustedProxies(app, proxies)(environ, lambda *a: None)
    return seen


HEADERS = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7", "X-Forwarded-Proto": "https",
           "X-Forwarded-Host": "images.example.org", "X-Forwarded-Port": "443"}


@pytest.mark.parametrize("remote", ["10.0.0.5", "10.1.2.3", "::ffff:10.0.0.5"])
def test_a_trusted_peer_sets_address_scheme_host_and_port_from_the_last_hop(remote):
    env = _seen(remote, ["10.0.0.0/8"], **HEADERS)
    assert env["REMOTE_ADDR"] == "203.0.113.7"  # the hop our proxy wrote, not what the client claimed before it
    assert (env["wsgi.url_scheme"], env["HTTP_HOST"], env["SERVER_PORT"]) == ("https", "images.example.org:443", "443")


@pytest.mark.parametrize("remote, proxies", [("192.0.2.9", ["10.0.0.0/8"]), ("10.0.0.5", ["10.0.0.6"]),
                                             ("not-an-ip", ["10.0.0.0/8"])])
def test_anyone_else_has_the_headers_removed(remote, proxies):
    env = _seen(remote, proxies, **HEADERS, Forwarded="for=203.0.113.7")
    assert env["REMOTE_ADDR"] == remote and env["HTTP_HOST"] == "10.0.0.2:8080"
    assert not any(k in env for k in FORWARDED)


def test_networks_must_be_addresses_or_networks():
    assert [str(n) for n in parse_networks(["10.0.0.5", " 10.0.0.0/8", "::1"])] == ["10.0.0.5/32", "10.0.0.0/8",
                                                                                    "::1/128"]
    with pytest.raises(ValueError, match="'proxy.example.org' is not an IP address or network"):
        parse_networks(["proxy.example.org"])
