"""Waitress, guarded against clients that have not authenticated (written against waitress 3.0).

Waitress gives every connection a slot until it has been idle for
``channel_timeout``, caps connections per process (``connection_limit``,
then stops accepting), and buffers a whole request body, up to one global
``max_request_body_size``, before the application sees the request. Facing
the internet that let ~200 connections that never finish their headers
take the port down, and any route spool gigabytes to a temporary file. This
module is the one place that changes it:

* **Pending connections** (nothing of a request yet, or headers still
  arriving) are bounded per source address (``max_pending_http_per_address``)
  and, as the connection limit nears, in total: a new connection over the
  bound closes the *oldest* pending one, so a client that sends its request
  at once always gets in. A request must deliver its headers within
  ``http_header_timeout`` of its first byte (of the connection, for a new
  one; blank lines between requests do not restart the clock), then a small
  body at 16 KiB/s on average; an idle keep-alive connection keeps
  ``channel_timeout``. Behind a reverse proxy every client has the proxy's
  address, so the per-address bound becomes a bound on the proxy's
  incomplete requests: raise it there.
* **Body limits per route**: STOW-RS may send ``max_stow_bytes``; every
  other route ``max_body_bytes``. A declared length over the limit is
  answered 413 from the headers alone; a chunked body is cut off at the
  limit.
* **STOW asks before it reads**: once the headers of a STOW request with a
  large body are in, reading stops and the application is asked, with an
  empty body (``PRECHECK`` in the environ), whether it would take the
  request (credentials, account, consent, media type). Only then is the body
  read; otherwise the answer (401/403/404/415/...) is sent, the rest of the
  body is discarded for a moment so the client can read the answer, and the
  connection is closed.
* Errors waitress answers itself (413, 400, 431) are JSON ``{"error": ...}``
  like the application's.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import socket
import time
from typing import Any, Callable

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask

from dicomweb.stow import PRECHECK, PRECHECK_PASSED, STOW_PATH
from gateway.ops.metrics import REFUSALS
from gateway.runtime.settings import Settings

log = logging.getLogger("dicomgate")

#: a STOW body larger than this is read only once the application has said yes
PRECHECK_ABOVE = 1 << 20
#: a small body (no precheck) must keep arriving at this average rate (bytes/s) after the headers
MIN_BODY_RATE = 16 << 10
#: after a refusal, how long and how much of the unread body is discarded before closing
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 << 20


class GuardedParser(HTTPRequestParser):
    """Chooses the body limit by route once the request line is known."""

    #: set per server: (STOW adjustments, small-body adjustments)
    limits: tuple[Adjustments, Adjustments]
    stow = False
    prechecked = False
    wants_continue = False

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        stow_adj, small_adj = self.limits
        self.stow = self.command == "POST" and STOW_PATH.match(self.path or "") is not None
        self.adj = stow_adj if self.stow else small_adj

    @property
    def needs_precheck(self) -> bool:
        return (self.stow and not self.prechecked and not self.completed and self.error is None
                and (self.chunked or self.content_length > PRECHECK_ABOVE))


class JsonErrorTask(ErrorTask):
    """Waitress's own error answers, as JSON like the application's."""

    def execute(self) -> None:
        e = self.request.error
        REFUSALS.labels(f"http_{e.code}").inc()
        message = f"{e.reason}: {e.body}"
        if e.code == 413:
            limit = self.request.adj.max_request_body_size - 1
            message = f"the request body is larger than this route's limit of {limit} bytes"
        body = json.dumps({"error": message}).encode()
        self.status = f"{e.code} {e.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class GuardedChannel(HTTPChannel):
    parser_class = GuardedParser
    error_task_class = JsonErrorTask

    def __init__(self, server: "GuardedServer", sock: socket.socket, addr: Any, adj: Adjustments,
                 map: Any = None) -> None:
        #: when the current request's clock started: the connection, or the first byte of the
        #: request after a served one (blank lines between requests do not restart it)
        self.request_started = time.time()
        self.clock_rearm = False
        self.body_deadline: float | None = None
        self.served = 0
        self.held: bytearray | None = None  # bytes that came while a precheck is due or runs
        self.precheck_due: GuardedParser | None = None  # a STOW waiting for earlier requests' answers
        self.refused_at: float | None = None
        self.discarded = 0
        self.shut = False
        super().__init__(server, sock, addr, adj, map)

    # ---- state the server's bounds look at -------------------------------
    @property
    def pending(self) -> bool:
        """Nothing being served and no complete request (but a STOW the application took): a slot
        held by someone who has not been identified."""
        if self.requests or self.refused_at is not None:
            return False
        request = self.request
        return request is None or not (request.completed or request.prechecked)

    def overdue(self, now: float, header_timeout: float) -> bool:
        """A pending connection past its deadline: headers within ``header_timeout`` of the
        request's first byte (of the connection, for a new one), then a small body at
        ``MIN_BODY_RATE``. An idle keep-alive connection between requests is not on a clock."""
        if not self.pending or self.held is not None:
            return False
        request = self.request
        if request is None:
            return self.served == 0 and now - self.request_started > header_timeout
        if request.headers_finished:
            if self.body_deadline is None:
                self.body_deadline = now + header_timeout + request.content_length / MIN_BODY_RATE
            return now > self.body_deadline
        return now - self.request_started > header_timeout

    # ---- asyncore side -------------------------------------------------
    def readable(self) -> bool:
        if self.refused_at is not None:
            return not self.will_close  # discard what the client is still sending
        if self.held is not None:
            return False  # the precheck decides whether the body is read at all
        return super().readable()

    def handle_write(self) -> None:
        super().handle_write()
        if self.refused_at is not None and not self.total_outbufs_len and not self.shut and not self.will_close:
            self.shut = True
            try:
                self.socket.shutdown(socket.SHUT_WR)  # the answer is complete: FIN, then linger
            except OSError:
                self.will_close = True

    def writable(self) -> bool:
        if self.refused_at is not None and self.shut:
            return bool(self.will_close)
        return super().writable()

    def received(self, data: bytes) -> bool:
        """waitress 3.0 ``HTTPChannel.received``, stopping at the headers of a large STOW to ask first."""
        if not data:
            return False
        with self.requests_lock:
            if self.refused_at is not None:
                self.discarded += len(data)
                if self.discarded > LINGER_BYTES:
                    self.will_close = True
                return True
            if self.will_close or self.close_when_flushed:
                return False
            if self.held is not None:
                self.held += data
                return True
            self._feed(data)
        return True

    def _feed(self, data: bytes) -> None:
        """Parse ``data`` into requests (``requests_lock`` held)."""
        while data:
            if self.request is None:
                self.request = self.parser_class(self.adj)
                self.body_deadline = None
                if self.clock_rearm:
                    self.request_started, self.clock_rearm = time.time(), False
            request = self.request
            n = request.received(data)
            if request.headers_finished and request.needs_precheck:
                # the answer decides whether the body is read: no 100 Continue before it
                request.wants_continue, request.expect_continue = request.expect_continue, False
                self.held = bytearray(data[n:])
                if self.requests:  # answers to earlier requests go out first (service() asks)
                    self.precheck_due = request
                else:
                    self.server.add_task(PrecheckTask(self, request))
                return
            if (request.expect_continue and request.headers_finished and not self.requests
                    and not self.sent_continue):
                self.send_continue()
            if request.completed:
                self.sent_continue = False
                if not request.empty:
                    self.served += 1
                    self.clock_rearm = True
                    self.requests.append(request)
                    if len(self.requests) == 1:
                        self.server.add_task(self)
                self.request = None
            if n >= len(data):
                break
            data = data[n:]

    def service(self) -> None:
        super().service()
        with self.requests_lock:
            due = self.precheck_due
            if due is not None and not self.requests and self.connected:
                self.precheck_due = None
                self.server.add_task(PrecheckTask(self, due))

    # ---- precheck outcomes (called from a task thread) --------------------
    def precheck_passed(self, request: GuardedParser) -> None:
        with self.requests_lock:
            if not self.connected or self.will_close or self.request is not request:
                return
            request.prechecked = True
            request.expect_continue = request.wants_continue
            held, self.held = bytes(self.held or b""), None
            if request.expect_continue and not self.requests and not self.sent_continue:
                self.send_continue()
            self._feed(held)  # before the loop may read more: the bytes stay in order
        self.server.pull_trigger()

    def precheck_refused(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        REFUSALS.labels(f"stow_precheck_{status[:3]}").inc()
        lines = [f"HTTP/1.1 {status}"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "connection")]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        payload = "\r\n".join(lines).encode("latin-1") + body
        with self.requests_lock:
            if not self.connected or self.will_close:
                return
            with self.outbuf_lock:  # the answer is queued before the channel counts as refused
                self.outbufs[-1].append(payload)
                self.current_outbuf_count += len(payload)
                self.total_outbufs_len += len(payload)
            self.refused_at = time.time()
            self.held = None
            self.request = None
        self.server.pull_trigger()


class PrecheckTask:
    """Asks the application, in a task thread, whether it would take this STOW request."""

    def __init__(self, channel: GuardedChannel, request: GuardedParser) -> None:
        self.channel = channel
        self.request = request

    def service(self) -> None:
        task = WSGITask(self.channel, self.request)
        environ = task.get_environment()
        environ["wsgi.input"] = io.BytesIO(b"")
        environ[PRECHECK] = True
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            answer["status"], answer["headers"] = status, headers
            return lambda _data: None

        try:
            chunks = self.channel.server.application(environ, start_response)
            body = b"".join(chunks)
            getattr(chunks, "close", lambda: None)()
        except Exception:
            log.exception("STOW precheck failed")
            answer = {"status": "500 Internal Server Error", "headers": [("Content-Type", "application/json")]}
            body = b'{"error": "internal error"}'
        if environ.get(PRECHECK) == PRECHECK_PASSED:
            self.channel.precheck_passed(self.request)
        else:
            self.channel.precheck_refused(answer["status"], answer["headers"], body)

    def cancel(self) -> None:
        self.channel.will_close = True


class GuardedServer(TcpWSGIServer):
    channel_class = GuardedChannel
    header_timeout: float
    max_pending_per_address: int

    def handle_accept(self) -> None:
        before = set(self.active_channels)
        super().handle_accept()
        for fileno in set(self.active_channels) - before:
            self._make_room(self.active_channels[fileno])

    def _make_room(self, newcomer: GuardedChannel) -> None:
        address = newcomer.addr[0] if newcomer.addr else None
        pending = [c for c in self.active_channels.values() if c is not newcomer and c.pending]
        same = [c for c in pending if c.addr and c.addr[0] == address]
        victim = None
        if len(same) >= self.max_pending_per_address:
            victim = min(same, key=lambda c: c.request_started)
        elif len(self._map) >= self.adj.connection_limit - 1 and pending:
            victim = min(pending, key=lambda c: c.request_started)
        if victim is not None:
            REFUSALS.labels("http_pending_evicted").inc()
            victim.handle_close()

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle channels: channel_timeout
        for channel in list(self.active_channels.values()):
            if channel.overdue(now, self.header_timeout):
                REFUSALS.labels("http_header_timeout").inc()
                channel.will_close = True
            elif channel.refused_at is not None and now - channel.refused_at > LINGER_SECONDS:
                channel.will_close = True
        try:
            self.pull_trigger()  # the loop looks at will_close at once
        except OSError:
            pass  # the server is closing: its trigger is gone


def make_guarded_server(app: Any, settings: Settings, sock: socket.socket, **kw: Any) -> GuardedServer:
    """A waitress server on ``sock``, already listening (``serve`` binds the port; its workers share it)."""
    adj = Adjustments(
        host=settings.host, port=settings.http_port, threads=settings.workers,
        connection_limit=settings.http_connection_limit,
        cleanup_interval=1,  # maintenance (header deadlines) every second
        channel_timeout=60,  # an idle keep-alive connection
        asyncore_use_poll=True,  # select() stops at 1024 descriptors
        max_request_body_size=settings.max_body_bytes + 1, **kw,
    )
    stow_adj = copy.copy(adj)
    stow_adj.max_request_body_size = settings.max_stow_bytes + 1  # waitress refuses at >= the value

    class Parser(GuardedParser):
        limits = (stow_adj, adj)

    class Channel(GuardedChannel):
        parser_class = Parser

    class Server(GuardedServer):
        channel_class = Channel
        header_timeout = settings.http_header_timeout
        max_pending_per_address = settings.max_pending_http_per_address

    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    sockinfo = (sock.family, sock.type, sock.proto, sock.getsockname())
    return Server(app, map={}, _sock=sock, dispatcher=dispatcher, adj=adj, bind_socket=False, sockinfo=sockinfo)
