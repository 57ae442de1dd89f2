"""Event-driven reactors for accepted associations (pynetdicom 3.0).

pynetdicom runs two threads per association and has them poll each other:
the DUL thread sleeps 1 ms whenever its socket and queues are idle, and the
association thread sleeps 1 ms before every look at the DIMSE message
queue. A C-STORE crosses both hops twice (request in, response out), and
every idle wake-up costs a GIL hand-over, so on a small machine the polling
alone limited a single association to ~130 instances/s with a handler
that did nothing.

These subclasses keep pynetdicom's state machine, PDU handling and DIMSE
untouched and change only how the two loops wait:

* the DUL thread blocks in ``select`` on its socket and a wake-up pipe; a
  primitive queued for sending (``send_pdu``) or a kill writes to the pipe;
* the association thread blocks on an :class:`threading.Event` that the
  DUL thread sets after every state-machine action (a decoded DIMSE
  message, a release or abort request, the end of the connection).

Both waits have a short timeout, so the timer checks of the original loops
(ARTIM, network idle timeout) still run. The loop bodies are those of
pynetdicom 3.0.4 otherwise; ``pyproject.toml`` pins pynetdicom below 4 and
the DIMSE end-to-end tests run through these classes.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import ssl
import threading
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import ACTIONS, TRANSITION_TABLE, InvalidEventError, StateMachine
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.utils import make_target

from gateway.ops.metrics import REFUSALS
from scp.admission import AdmissionGate
from scp.pdu import PduLimits, PduRefused, PeerClosed, a_abort, read_pdu

LOGGER = logging.getLogger("pynetdicom.dul")
log = logging.getLogger(__name__)

#: longest a loop waits without an event before re-checking its timers
IDLE_WAIT = 0.02


class GuardedStateMachine(StateMachine):
    """pynetdicom 3.0.4 ``StateMachine.do_action``, aborting on a PDU its action cannot handle.

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
        """pynetdicom 3.0.4 ``DULServiceProvider._read_pdu_data`` with bounds (:mod:`scp.pdu`).

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
        # pynetdicom 3.0.4 DULServiceProvider.run_reactor, waiting instead of sleeping
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

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self._gate.left(self)

    def _run_reactor(self) -> None:
        # pynetdicom 3.0.4 Association._run_reactor, waiting instead of sleeping
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
    # Thread.__init__ bound the original loops as the threads' targets
    dul._target = make_target(dul.run_reactor)  # type: ignore[attr-defined]
    assoc._target = make_target(assoc.run_reactor)  # type: ignore[attr-defined]
    return assoc
