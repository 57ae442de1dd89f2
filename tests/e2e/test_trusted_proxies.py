"""``X-Forwarded-*`` from a trusted reverse proxy (``trusted_proxies``), and from no one else.

The test client is the "proxy": it connects from 127.0.0.1 and sends the headers a
proxy would add. A gateway that trusts 127.0.0.1 applies them (the client's address
for a provider's networks, the scheme and host for the URLs it hands out); one that
trusts another address, or none, ignores them.
"""

from __future__ import annotations

import subprocess

import pytest
import requests

from tests.support.data import variant
from tests.support.gateway import BIN, Gateway

FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
             "X-Forwarded-Host": "images.example.org", "X-Forwarded-Port": "443"}


def _gateway(request, tmp_path, proxies: str | None) -> Gateway:
    from tests.conftest import make_backend

    env = {"DICOMGATE_TRUSTED_PROXIES": proxies} if proxies is not None else {}
    return Gateway(make_backend("sqlite", tmp_path, request), extra_env=env).start()


def _stow(g: Gateway, account_id: str, token: str, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{g.url}/accounts/{account_id}/dicomweb/studies", data=variant(), timeout=60,
                         headers={"Content-Type": "application/dicom", "Authorization": f"Bearer {token}",
                                  **headers})


def test_a_trusted_proxy_gives_the_client_address_scheme_and_host(request, tmp_path):
    g = _gateway(request, tmp_path, "127.0.0.1, 10.0.0.0/8")
    try:
        acc = g.new_account()
        prv = g.new_provider(networks=["203.0.113.0/24"])  # the client's network, not the proxy's
        g.link(acc, prv, push=True)
        rsp = _stow(g, acc["id"], prv["token"], FORWARDED)
        assert rsp.status_code == 200, rsp.text
        assert rsp.json()["00081190"]["Value"][0].startswith(
            f"https://images.example.org/accounts/{acc['id']}/dicomweb/studies/")
        # the same provider from a client outside its networks, through the same proxy: no standing
        outside = _stow(g, acc["id"], prv["token"], {**FORWARDED, "X-Forwarded-For": "198.51.100.9"})
        assert outside.status_code in (403, 404), outside.text
        # and without the proxy's header the peer is the proxy itself, also outside the networks
        assert _stow(g, acc["id"], prv["token"], {}).status_code in (403, 404)
    finally:
        g.close()
        g.stop()


@pytest.mark.parametrize("proxies", [None, "10.9.9.9"])
def test_forwarded_headers_from_anyone_else_are_ignored(request, tmp_path, proxies):
    g = _gateway(request, tmp_path, proxies)
    try:
        acc = g.new_account()
        prv = g.new_provider()  # networks 127.0.0.0/8: the real peer
        g.link(acc, prv, push=True)
        rsp = _stow(g, acc["id"], prv["token"], FORWARDED)  # claims to be 203.0.113.7 at images.example.org
        assert rsp.status_code == 200, rsp.text
        assert rsp.json()["00081190"]["Value"][0].startswith(f"{g.url}/accounts/{acc['id']}/dicomweb/studies/")
    finally:
        g.close()
        g.stop()


def test_trusted_proxies_must_be_addresses_or_networks(tmp_path):
    out = subprocess.run([str(BIN), "serve", "--data-dir", str(tmp_path), "--trusted-proxies", "proxy.example.org"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "trusted_proxies: 'proxy.example.org' is not an IP address or network" in out.stderr
