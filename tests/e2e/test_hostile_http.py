"""Hostile HTTP clients (issue 11, points 4 and 5), against a real ``serve`` with two HTTP workers.

Slow clients must not take the port; a body is refused from its headers
when it is over the route's limit; STOW decides on credentials, account and
media type before it reads a large body.
"""

from __future__ import annotations

import base64
import re
import secrets
import socket
import time

import pytest
import requests

from tests.conftest import make_backend
from tests.support.data import variant
from tests.support.gateway import Gateway, refusals
from tests.support.pdus import closed_within

HEADER_TIMEOUT = 3


@pytest.fixture(scope="module")
def gw(tmp_path_factory, request):
    gw = Gateway(make_backend("sqlite", tmp_path_factory.mktemp("hostile-http"), request), extra_env={
        "DICOMGATE_DIMSE_PROCESSES": "1", "DICOMGATE_HTTP_PROCESSES": "2",
        "DICOMGATE_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    }).start()
    yield gw
    gw.close()
    gw.stop()


@pytest.fixture(scope="module")
def pusher(gw):
    """An account and a provider with a push link, and the provider's token."""
    account, provider = gw.new_account(), gw.new_provider()
    gw.link(account, provider, push=True)
    return account, provider


def raw_request(gw: Gateway, head: str, body: bytes = b"", wait: float = 10) -> tuple[int, bytes]:
    """Send request headers (and optionally the start of a body) and read the answer, without sending more."""
    answer = exchange(gw, head.encode() + b"\r\n" + body, lambda a: b"\r\n\r\n" in a and len(a) >= (
        a.index(b"\r\n\r\n") + 4 + _length(a)), wait)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, answer


def exchange(gw: Gateway, data: bytes, done, wait: float = 10) -> bytes:  # type: ignore[no-untyped-def]
    """Send ``data`` on one new connection; read until ``done(answer)`` or the gateway closes it."""
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=wait)
    try:
        s.sendall(data)
        answer = b""
        while not done(answer):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    finally:
        s.close()
    return answer


def _length(answer: bytes) -> int:
    m = re.search(rb"(?im)^content-length: *(\d+)", answer)
    return int(m.group(1)) if m else 0


def stow_body(files: list[bytes]) -> tuple[bytes, str]:
    boundary = "B" + secrets.token_hex(6)
    data = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + f + b"\r\n"
                    for f in files) + b"--" + boundary.encode() + b"--\r\n"
    return data, f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_slow_clients_do_not_take_the_port(gw, pusher):
    account, provider = pusher
    evicted = refusals(gw, "http_pending_evicted")
    slow = []
    try:
        for _ in range(400):
            s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and then nothing
            slow.append(s)
        assert requests.get(f"{gw.url}/healthz", timeout=5).status_code == 200
        data, ctype = stow_body([variant()])
        r = requests.post(f"{gw.url}/accounts/{account['id']}/dicomweb/studies", data=data, timeout=5,
                          headers={"Content-Type": ctype, "Authorization": f"Bearer {provider['token']}"})
        assert r.status_code == 200, r.text
        # every slow connection is closed: evicted for newer ones, or at the header deadline
        assert all(closed_within(s, HEADER_TIMEOUT + 5) for s in slow)
    finally:
        for s in slow:
            s.close()
    assert refusals(gw, "http_pending_evicted") >= evicted + 400 - 2 * 64
    assert refusals(gw, "http_header_timeout") > 0


def test_a_new_connection_that_sends_nothing_is_closed_at_the_header_deadline(gw):
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=5)
    try:
        assert closed_within(s, HEADER_TIMEOUT + 5)
    finally:
        s.close()


@pytest.mark.parametrize("path", ["/api/v1/auth/token", "/api/v1/accounts/acc_x/shares", "/sign-in"])
def test_a_small_body_route_refuses_a_large_body_from_its_headers(gw, path):
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {2 << 20}\r\n")
    status, answer = raw_request(gw, head)  # no body sent at all: the answer comes from the headers
    assert status == 413, answer[:300]
    assert b"application/json" in answer and b"limit of 1048576 bytes" in answer


def test_a_chunked_body_over_the_limit_is_cut_off(gw):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    r = requests.post(f"{gw.url}/api/v1/auth/token", data=chunks(), timeout=30,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_a_small_json_body_still_works(gw):
    account = gw.new_account()
    r = requests.post(f"{gw.url}/api/v1/auth/token", json={"email": account["owner"], "password": account["password"]},
                      timeout=30)
    assert r.status_code == 200 and "token" in r.json()


STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=B'


def stow_head(account_id: str, length: int, token: str | None, ctype: str = STOW_TYPE) -> str:
    head = (f"POST /accounts/{account_id}/dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: {ctype}\r\n"
            f"Content-Length: {length}\r\n")
    return head + (f"Authorization: Bearer {token}\r\n" if token else "")


@pytest.mark.parametrize("case, status", [("no credentials", 401), ("wrong token", 401),
                                          ("unknown account", 404), ("media type", 415)])
def test_stow_refuses_before_it_reads_a_4_gib_body(gw, pusher, case, status):
    account, provider = pusher
    account_id, token, ctype = account["id"], provider["token"], STOW_TYPE
    if case == "no credentials":
        token = None
    elif case == "wrong token":
        token = "dg_" + secrets.token_urlsafe(32)
    elif case == "unknown account":
        account_id = "acc_" + secrets.token_hex(8)
    else:
        ctype = "application/json"
    got, answer = raw_request(gw, stow_head(account_id, 4 << 30, token, ctype), body=bytes(64 << 10))
    assert got == status, answer[:400]
    assert b"Connection: close" in answer


def test_stow_over_max_stow_bytes_is_refused_from_its_headers(gw, pusher):
    account, provider = pusher
    got, answer = raw_request(gw, stow_head(account["id"], (4 << 30) + 1, provider["token"]))
    assert got == 413, answer[:300]


@pytest.mark.parametrize("chunked", [False, True])
def test_a_large_stow_that_passes_the_precheck_is_stored(gw, pusher, chunked):
    account, provider = pusher
    files = [variant() for _ in range(40)]
    data, ctype = stow_body(files)
    assert len(data) > 1 << 20  # over the size from which the precheck runs
    body = (data[i:i + 100_000] for i in range(0, len(data), 100_000)) if chunked else data
    before = len(gw.instance_rows(account["id"]))
    r = requests.post(f"{gw.url}/accounts/{account['id']}/dicomweb/studies", data=body, timeout=60,
                      headers={"Content-Type": ctype, "Authorization": f"Bearer {provider['token']}"})
    assert r.status_code == 200, r.text[:300]
    assert len(gw.instance_rows(account["id"])) == before + 40


def test_a_large_stow_with_expect_100_continue_gets_its_answer_first(gw, pusher):
    account, _ = pusher
    head = stow_head(account["id"], 4 << 30, None) + "Expect: 100-continue\r\n"
    status, answer = raw_request(gw, head)
    assert status == 401 and b"100 Continue" not in answer


def test_blank_lines_do_not_restart_the_header_clock(gw):
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=5)
    try:
        deadline = time.monotonic() + HEADER_TIMEOUT + 6
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                s.sendall(b"\r\n\r\n")  # an empty request each time, never a real one
            except OSError:
                closed = True
                break
            closed = closed_within(s, 0.5)
        assert closed, "the connection outlived the header timeout by sending blank lines"
    finally:
        s.close()


def test_a_refused_stow_pipelined_after_a_request_answers_both_in_order(gw, pusher):
    account, _ = pusher
    basic = base64.b64encode(f"{account['owner']}:{account['password']}".encode()).decode()
    # the first answer takes a password hash; the STOW's refusal would be ready long before it
    answer = exchange(gw, f"GET /api/v1/accounts HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {basic}\r\n\r\n"
                      .encode() + (stow_head(account["id"], 5 << 20, None) + "\r\n").encode() + bytes(4096),
                      lambda a: a.count(b"HTTP/1.1 ") >= 2 and a.rstrip().endswith((b"}", b"]")))
    first, second = answer.find(b"HTTP/1.1 200"), answer.find(b"HTTP/1.1 401")
    assert 0 <= first < second, answer[:600]
