"""Every override of pynetdicom's internals, in one module, written against :data:`PINNED`.

pynetdicom (:data:`PINNED`) is used as it is except where this module says
otherwise; nothing else in ``scp/`` subclasses a pynetdicom class or touches
a private attribute. :data:`UPSTREAM` names each upstream function replaced,
extended or copied here with the signature it had, :data:`COPIED` the
digest of the source of those whose body is copied or relied on (a copy
must follow its original), and :data:`PRIVATE_ATTRIBUTES` the private
instance attributes read or set; ``tests/unit/scp/test_compat.py`` fails
when the installed pynetdicom is another version or any of these changed. Port each one (the
docstrings say what it changes and why) before moving the pin.

What is changed:

* **Association policy** (:class:`GatedACSE`). pynetdicom has no hook that
  can reject an association from code, so the acceptor's ACSE asks an
  ``admit`` function (``scp.server``) before the stock negotiation.
* **Per-connection cost** (:class:`DeferredContexts`). pynetdicom deep-copies
  every supported context for each TCP connection; here only those the
  admitted requestor proposed.
* **TLS** (:func:`deferred_handshake`, :func:`request_handler`). The server-side
  handshake moves from the one accepting thread to the connection's own,
  under ARTIM.
* **Shared listening socket** (:func:`adopting_server`) for worker processes.
* **Event-driven loops** (:class:`EventDUL`, :class:`EventAssociation`). pynetdicom
  runs two threads per association and has them poll each other: the DUL
  thread sleeps 1 ms whenever its socket and queues are idle, and the
  association thread sleeps 1 ms before every look at the DIMSE message
  queue. A C-STORE crosses both hops twice (request in, response out), and
  every idle wake-up costs a GIL hand-over, so on a small machine the
  polling alone limited a single association to ~130 instances/s with a
  handler that did nothing. Here the DUL thread blocks in ``select`` on its
  socket and a wake-up pipe (a primitive queued for sending or a kill
  writes to the pipe), and the association thread blocks on an
  :class:`threading.Event` that the DUL thread sets after every
  state-machine action that it acts on. Both waits have a short timeout, so
  the timer checks of the original loops (ARTIM, network idle timeout)
  still run. pynetdicom's state machine, PDU handling and DIMSE are
  untouched.
* **Hostile PDUs** (:class:`GuardedStateMachine`, ``EventDUL._read_pdu_data``):
  bounded reads (:mod:`scp.pdu`) and A-ABORT instead of tracebacks.
"""

from __future__ import annotations

import copy
import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
from typing import Any, Callable

from pynetdicom import AE, evt
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import ACTIONS, TRANSITION_TABLE, InvalidEventError, StateMachine
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

from gateway.ops.metrics import REFUSALS
from scp.admission import AdmissionGate
from scp.pdu import PduLimits, PduRefused, PeerClosed, a_abort, read_pdu

#: the pynetdicom release every override here is written against (pyproject.toml pins it exactly)
PINNED = "3.0.4"

#: upstream function -> its signature as written against: replaced, extended (super()) or copied here
UPSTREAM = {
    "pynetdicom.acse.ACSE._negotiate_as_acceptor": "(self) -> None",
    "pynetdicom.acse.ACSE.send_reject": "(self, result: int, source: int, diagnostic: int) -> None",
    "pynetdicom.transport.AssociationServer.get_request": "(self) -> tuple[socket.socket, tuple[str, int]]",
    "pynetdicom.transport.AssociationServer.server_bind": "(self) -> None",
    "pynetdicom.transport.AssociationServer.server_close": "(self) -> None",
    "pynetdicom.transport.RequestHandler.handle": "(self) -> None",
    "pynetdicom.transport.RequestHandler._create_association": "(self) -> 'Association'",
    "pynetdicom.fsm.StateMachine.do_action": "(self, event: str) -> None",
    "pynetdicom.dul.DULServiceProvider.send_pdu":
        "(self, primitive: 'A_ASSOCIATE | A_RELEASE | A_ABORT | A_P_ABORT | P_DATA') -> None",
    "pynetdicom.dul.DULServiceProvider.kill_dul": "(self) -> None",
    "pynetdicom.dul.DULServiceProvider._read_pdu_data": "(self) -> None",
    "pynetdicom.dul.DULServiceProvider._decode_pdu":
        "(self, bytestream: bytearray) -> tuple['A_ASSOCIATE_RQ | A_ASSOCIATE_AC | A_ASSOCIATE_RJ | P_DATA_TF | "
        "A_RELEASE_RQ | A_RELEASE_RP | A_ABORT_RQ', str]",
    "pynetdicom.dul.DULServiceProvider._process_recv_primitive": "(self) -> bool",
    "pynetdicom.dul.DULServiceProvider._is_transport_event": "(self) -> bool",
    "pynetdicom.dul.DULServiceProvider.run_reactor": "(self) -> None",
    "pynetdicom.association.Association.run_reactor": "(self) -> None",
    "pynetdicom.association.Association._run_reactor": "(self) -> None",
    "pynetdicom.association.Association._serve_request":
        "(self, msg: 'C_ECHO | C_FIND | C_GET | C_MOVE | C_STORE | N_ACTION | N_CREATE | N_DELETE | "
        "N_EVENT_REPORT | N_GET | N_SET', context_id: int) -> None",
    "pynetdicom.utils.make_target": "(target_fn: Callable) -> Callable",
}

#: upstream function whose body is copied here, or whose details are relied on (``_create_association``
#: deep-copies ``server.contexts`` and sets ``assoc._server``) -> sha256 of its source (first 16 hex digits)
COPIED = {
    "pynetdicom.fsm.StateMachine.do_action": "9a883f44c7f31641",
    "pynetdicom.dul.DULServiceProvider._read_pdu_data": "19f2d4e38c13c835",
    "pynetdicom.dul.DULServiceProvider.run_reactor": "e3a10eb3a0931e48",
    "pynetdicom.association.Association._run_reactor": "f28838c5559e462a",
    "pynetdicom.transport.RequestHandler.handle": "034823fb4df3a874",
    "pynetdicom.transport.AssociationServer.get_request": "925a4f3a3042f6e4",
    "pynetdicom.transport.RequestHandler._create_association": "05c8d12b79863cdb",
}

#: private instance attributes read or set here, by the class that creates them
PRIVATE_ATTRIBUTES = {
    "pynetdicom.ae.ApplicationEntity": ("_servers",),
    "pynetdicom.association.Association": ("_server", "_dul_ready", "_kill", "_reactor_checkpoint", "_is_paused"),
    "pynetdicom.dul.DULServiceProvider": ("_kill_thread", "_idle_timer", "_recv_pdu"),
    "pynetdicom.transport.AssociationSocket": ("_is_connected",),
}

LOGGER = logging.getLogger("pynetdicom.dul")
log = logging.getLogger(__name__)

#: longest a loop waits without an event before re-checking its timers
IDLE_WAIT = 0.02


# -- the association policy --------------------------------------------------
class GatedACSE(ACSE):
    """The acceptor's ACSE: ``admit(acse)`` decides first, the stock negotiation follows.

    ``admit`` returns True to go on with the negotiation (having called
    :meth:`accept_only`), or refuses with :meth:`refuse` and returns False.
    """

    def __init__(self, assoc: Association, admit: Callable[["GatedACSE"], bool]) -> None:
        super().__init__(assoc)
        self._admit = admit

    def accept_only(self, proposed: set[str]) -> None:
        """Support only the server's contexts whose abstract syntax the requestor proposed (see DeferredContexts)."""
        template = self.assoc._server.contexts.template
        self.assoc.acceptor.supported_contexts = [copy.deepcopy(cx) for cx in template
                                                  if cx.abstract_syntax in proposed]

    def refuse(self, result: int, source: int, diagnostic: int) -> None:
        """A-ASSOCIATE-RJ with these fields, then end the association."""
        self.send_reject(result, source, diagnostic)
        evt.trigger(self.assoc, evt.EVT_REJECTED, {})
        self.assoc.kill()

    def _negotiate_as_acceptor(self) -> None:
        if self._admit(self):
            super()._negotiate_as_acceptor()


class DeferredContexts(list):
    """The server's supported contexts, copied per association only once the peer is accepted.

    pynetdicom deep-copies all of them (177 here, ~60 ms of CPU) for every
    TCP connection, before a byte is read: a CPU lever for anyone who can
    connect. ``deepcopy`` of this list gives an empty one;
    :meth:`GatedACSE.accept_only` copies only the contexts the accepted
    requestor proposed.
    """

    def __init__(self, template: list) -> None:
        super().__init__()
        self.template = list(template)

    def __deepcopy__(self, memo: dict) -> list:
        return []


# -- the server and its connections ------------------------------------------
class HandshakeFailed(Exception):
    """A TLS connection that did not complete its handshake within ARTIM (already closed)."""


def deferred_handshake(base: type[ThreadedAssociationServer]) -> type[ThreadedAssociationServer]:
    """``base`` with the TLS handshake moved out of the accept loop.

    ``AssociationServer.get_request`` wraps an accepted socket with a
    blocking server-side handshake in the one thread that accepts: a single
    peer that connects and stays silent stopped every new association. Here
    the socket is wrapped without the handshake, which the connection's own
    thread does under the ARTIM timeout (:func:`request_handler`).
    """

    class DeferredHandshakeServer(base):  # type: ignore[misc, valid-type]
        def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
            client_socket, address = self.socket.accept()
            if self.ssl_context:
                client_socket = self.ssl_context.wrap_socket(client_socket, server_side=True,
                                                             do_handshake_on_connect=False)
            return client_socket, address

    return DeferredHandshakeServer


def adopting_server(listener: socket.socket) -> type[ThreadedAssociationServer]:
    """A server class that serves on an already listening (shared) socket instead of binding."""

    class AdoptingAssociationServer(ThreadedAssociationServer):
        def server_bind(self) -> None:
            self.socket.close()
            self.socket = listener  # non-blocking: see gateway.runtime.processes.bind_listener
            self.server_address = listener.getsockname()

        def server_activate(self) -> None:
            pass  # listening already

        def server_close(self) -> None:
            self.socket.close()  # never shutdown(): that would stop the other workers' listener too

    return AdoptingAssociationServer


def request_handler(admit: Callable[[GatedACSE], bool], gate: AdmissionGate, limits: PduLimits,
                    handshake_timeout: float) -> type[RequestHandler]:
    """The handler of each accepted connection: TCP_NODELAY, the event-driven loops,
    :class:`GatedACSE` with ``admit``, the connection counted by ``gate``, and the
    TLS handshake (if any) within ``handshake_timeout``.

    Accepted sockets get TCP_NODELAY: small instances otherwise wait ~40 ms
    each on delayed ACKs.
    """

    class GatedRequestHandler(RequestHandler):
        def handle(self) -> None:
            # RequestHandler.handle, for a connection whose TLS handshake failed
            try:
                assoc = self._create_association()
            except HandshakeFailed:
                return
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()

        def _create_association(self) -> Association:
            raw = self.request
            sock = raw if isinstance(raw, socket.socket) else None
            try:
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            assoc = make_event_driven(super()._create_association(), gate, limits)
            assoc.acse = GatedACSE(assoc, admit)

            def close() -> None:  # wakes the DUL's read: it sees the end of the connection
                try:
                    if sock is not None:
                        sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            gate.arrived(assoc, str(self.client_address[0]), close)
            if isinstance(raw, ssl.SSLSocket):  # the handshake counts against ARTIM, in this thread
                try:
                    raw.settimeout(handshake_timeout)
                    raw.do_handshake()
                except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                    REFUSALS.labels("dimse_tls_handshake").inc()
                    log.info("TLS handshake with %s failed: %s", self.client_address[0], exc)
                    gate.left(assoc)
                    close()
                    raw.close()
                    raise HandshakeFailed from None
            return assoc

    return GatedRequestHandler


def serve_in_thread(ae: AE, server: ThreadedAssociationServer) -> threading.Thread:
    """What ``AE.start_server(block=False)`` does after making its server: serve it in
    a daemon thread, known to the AE (``active_associations``, ``shutdown``)."""
    thread = threading.Thread(target=server.serve_forever, name="dimse-acceptor", daemon=True)
    thread.start()
    ae._servers.append(server)
    return thread


# -- the event-driven loops --------------------------------------------------
class GuardedStateMachine(StateMachine):
    """``StateMachine.do_action``, aborting on a PDU its action cannot handle.

    A P-DATA PDU that decodes but that the DIMSE step cannot use (an empty
    PDV, a command set without a Command Field, an unknown one) raises inside
    the action; pynetdicom logs two tracebacks and drops the connection
    without an A-ABORT. Here: one log line, A-ABORT (PS3.8 9.2), close.
    """

    def do_action(self, event: str) -> None:
        if (event, self.current_state) not in TRANSITION_TABLE:
            msg = f"Invalid event '{event}' for the current state '{self.current_state}'"
            LOGGER.error(msg)
            raise InvalidEventError(msg)
        action_name = TRANSITION_TABLE[(event, self.current_state)]
        try:
            next_state = ACTIONS[action_name][1](self.dul)
        except Exception as exc:
            REFUSALS.labels("pdu_invalid").inc()
            dul = self.dul
            log.warning("aborted the association with %s: %s %s (%s)", dul.assoc.requestor.address,
                        action_name, type(exc).__name__, str(exc)[:200])
            raw = getattr(dul.socket, "socket", None)
            try:
                if raw is not None:
                    raw.settimeout(1)
                    raw.sendall(a_abort(0x00))
            except OSError:
                pass
            if dul.socket is not None:
                dul.socket.close()
            dul.kill_dul()
            return
        evt.trigger(self.dul.assoc, evt.EVT_FSM_TRANSITION, {
            "action": action_name, "current_state": self.current_state, "fsm_event": event,
            "next_state": next_state})
        self.transition(next_state)


class EventDUL(DULServiceProvider):
    """DUL reactor that waits on its socket and a wake-up pipe instead of sleeping."""

    _wake_r: int
    _wake_w: int
    _activity: threading.Event

    _limits: PduLimits

    def _install(self, activity: threading.Event, limits: PduLimits) -> None:
        self._wake_r = self._wake_w = -1  # the pipe lives as long as the reactor thread
        self._activity = activity
        self._limits = limits
        self.state_machine.__class__ = GuardedStateMachine
        # a writer must never hit the fd number after close (it may be reused by a file)
        self._pipe_lock = threading.Lock()
        self._reactor = make_target(self.run_reactor)  # as Thread.__init__ bound the original loop

    def run(self) -> None:  # Thread.run
        self._reactor()

    def _wake(self) -> None:
        with self._pipe_lock:
            if self._wake_w < 0:
                return  # not running (yet, or any more): the loop looks at its queues first
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass  # already pending

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def _read_pdu_data(self) -> None:
        """``DULServiceProvider._read_pdu_data`` with bounds (:mod:`scp.pdu`).

        Until the A-ASSOCIATE-RQ is complete the PDU must arrive within the
        ARTIM timer and be at most ``max_associate_rq_bytes``; after, a P-DATA-TF
        PDU may be as long as the Maximum Length we advertised. Anything over a
        bound, or of an unknown type, is answered with A-ABORT and the
        connection is closed at once (nothing more is read from it).
        """
        wrapper = self.socket
        raw = getattr(wrapper, "socket", None)
        if raw is None:
            self.event_queue.put("Evt17")
            return
        # Sta1 too: the first read may come before the DUL has acted on its Evt5 (connection open)
        negotiating = self.state_machine.current_state in ("Sta1", "Sta2")
        network = self.assoc.network_timeout
        wait = self.artim_timer.remaining if negotiating else (network or 60)
        try:
            data = read_pdu(raw, self._limits, negotiating=negotiating,
                            deadline=time.monotonic() + max(wait, 0.0), restore_timeout=network)
        except PeerClosed:
            wrapper.close()  # Evt17
            return
        except PduRefused as exc:
            REFUSALS.labels(exc.kind).inc()
            log.warning("aborted the association with %s: %s", self.assoc.requestor.address, exc)
            try:
                raw.settimeout(1)
                raw.sendall(a_abort())
            except OSError:
                pass
            wrapper.close()  # Evt17: the state machine ends the association
            return
        try:
            pdu, event = self._decode_pdu(data)
        except Exception as exc:
            REFUSALS.labels("pdu_invalid").inc()
            log.warning("invalid PDU from %s: %s", self.assoc.requestor.address, exc)
            self.event_queue.put("Evt19")  # A-ABORT (PS3.8 9.2, AA-1 / AA-8)
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _wait_for_work(self) -> None:
        if self.to_provider_queue.queue or self.event_queue.queue or self._kill_thread:
            return
        rlist: list[Any] = [self._wake_r]
        raw = getattr(self.socket, "socket", None)
        if raw is not None and getattr(self.socket, "_is_connected", False):
            if isinstance(raw, ssl.SSLSocket) and raw.pending():
                return  # decrypted bytes buffered inside the SSL object
            if raw.fileno() >= 0:
                rlist.append(raw)
        try:
            ready, _, _ = select.select(rlist, [], [], IDLE_WAIT)
        except (OSError, ValueError):
            return  # socket closed under us: the transport check reports it
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except (BlockingIOError, OSError):
                pass

    def run_reactor(self) -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        with self._pipe_lock:
            self._wake_r, self._wake_w = r, w
        try:
            self._run_event_reactor()
        finally:
            assoc = self.assoc
            if (not assoc.is_established and assoc.requestor.primitive is None
                    and self.to_user_queue.empty()):
                # the connection ended before its A-ASSOCIATE-RQ: the association thread,
                # waiting up to ARTIM for that request, may end now (None = no request)
                self.to_user_queue.put(None)  # type: ignore[arg-type]
            self._activity.set()
            with self._pipe_lock:
                fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
                for fd in fds:
                    os.close(fd)

    def _run_event_reactor(self) -> None:
        # DULServiceProvider.run_reactor, waiting instead of sleeping
        self._idle_timer.start()
        sleep = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True
            if sleep:
                self._wait_for_work()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                LOGGER.error("Exception in DUL.run(), aborting association")
                LOGGER.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                self.socket.send(abort_pdu.encode())  # type: ignore[union-attr]
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue
            self.state_machine.do_action(event)
            # wake the association only for what it acts on: a complete DIMSE message,
            # a release or abort primitive, or a state other than data transfer; not for
            # each P-DATA fragment of a large instance
            if (self.assoc.dimse.msg_queue.queue or self.to_user_queue.queue
                    or self.state_machine.current_state != "Sta6"):
                self._activity.set()
            sleep = False


class EventAssociation(Association):
    """Acceptor association whose reactor waits for the DUL's signal instead of polling."""

    _activity: threading.Event
    _gate: AdmissionGate
    _reactor: Callable[[], None]

    def run(self) -> None:  # Thread.run
        self._reactor()

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self._gate.left(self)

    def _run_reactor(self) -> None:
        # Association._run_reactor, waiting instead of sleeping
        self._is_paused = False
        while not self._kill:
            self._activity.wait(IDLE_WAIT)
            self._activity.clear()
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            while True:  # every message that is already decoded
                context_id, msg = self.dimse.get_msg(block=False)
                if not msg:
                    break
                self._serve_request(msg, context_id)  # type: ignore[arg-type]
                if self._kill:
                    return
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                LOGGER.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                LOGGER.info(log_msg)
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                LOGGER.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


def make_event_driven(assoc: Association, gate: AdmissionGate, limits: PduLimits) -> Association:
    """Switch a freshly created acceptor association (thread not started) to the event reactors.

    ``gate`` is told when the association's thread ends; ``limits`` bound the PDUs it reads.
    """
    activity = threading.Event()
    assoc.__class__ = EventAssociation
    assoc._activity = activity  # type: ignore[attr-defined]
    assoc._gate = gate  # type: ignore[attr-defined]
    dul = assoc.dul
    dul.__class__ = EventDUL
    dul._install(activity, limits)  # type: ignore[attr-defined]
    assoc._reactor = make_target(assoc.run_reactor)  # type: ignore[attr-defined]  # as Thread.__init__ bound it
    return assoc
