"""The DIMSE SCP: a pynetdicom AE whose association policy asks the gateway.

pynetdicom has no hook that can reject an association from code, so the
acceptor's ACSE is swapped for one that consults :func:`decide_association`
first, and its two polling loops are made event-driven (:mod:`scp.reactor`);
everything else is stock pynetdicom. Accepted sockets get TCP_NODELAY
(small instances otherwise wait ~40 ms each on delayed ACKs). Handlers: C-ECHO
and C-STORE in :mod:`scp.handlers`, C-FIND / C-GET / C-MOVE in
:mod:`scp.query_retrieve`.
"""

from __future__ import annotations

import copy
import logging
import socket
import ssl
import threading
import time

from pynetdicom import AE, _config, evt
from pynetdicom.acse import ACSE
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from gateway.ops.metrics import REFUSALS
from gateway.runtime.services import Services
from scp.admission import AdmissionGate
from scp.handlers import handle_echo, handle_store
from scp.pdu import PduLimits
from scp.policy import REJECTED_PERMANENT, SOURCE_SERVICE_USER, decide_association
from scp.query_retrieve import handle_find, handle_get, handle_move
from scp.reactor import make_event_driven

log = logging.getLogger(__name__)

#: accepted as sent, never transcoded
STORAGE_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]


QUERY_RETRIEVE_CLASSES = [
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
]
QUERY_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
                           DeflatedExplicitVRLittleEndian]


#: PS3.8 9.3.2.2: presentation context IDs are odd integers 1..255, so at most 128 contexts
MAX_PRESENTATION_CONTEXTS = 128
REJECTED_TRANSIENT = 0x02
SOURCE_PROVIDER_PRESENTATION = 0x03
LOCAL_LIMIT_EXCEEDED = 0x02
NO_REASON_GIVEN = 0x01


class PolicyACSE(ACSE):
    def __init__(self, assoc, services: Services, gate: AdmissionGate) -> None:  # type: ignore[no-untyped-def]
        super().__init__(assoc)
        self._services = services
        self._gate = gate

    def _contexts_for(self, proposed: set[str]) -> list:
        server = self.assoc._server
        return [copy.deepcopy(cx) for cx in server.contexts.template if cx.abstract_syntax in proposed]

    def _refuse(self, result: int, source: int, diagnostic: int) -> None:
        self.send_reject(result, source, diagnostic)
        evt.trigger(self.assoc, evt.EVT_REJECTED, {})
        self.assoc.kill()

    def _negotiate_as_acceptor(self) -> None:
        rq = self.requestor.primitive
        address = self.assoc.requestor.address
        contexts = len(rq.presentation_context_definition_list or [])
        if contexts > MAX_PRESENTATION_CONTEXTS:
            REFUSALS.labels("dimse_too_many_contexts").inc()
            log.warning("association from %s rejected: %d presentation contexts (PS3.8 allows %d)",
                        address, contexts, MAX_PRESENTATION_CONTEXTS)
            self._refuse(REJECTED_PERMANENT, SOURCE_SERVICE_USER, NO_REASON_GIVEN)
            return
        if not self._gate.requested(self.assoc):
            REFUSALS.labels("dimse_association_limit").inc()
            log.warning("association from %s rejected: every association slot is in use", address)
            self._refuse(REJECTED_TRANSIENT, SOURCE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED)
            return
        verdict = decide_association(self._services.db, rq.calling_ae_title, rq.called_ae_title, address)
        if verdict.accepted:
            proposed = {cx.abstract_syntax for cx in rq.presentation_context_definition_list}
            self.assoc.acceptor.supported_contexts = self._contexts_for(proposed)
        if not verdict.accepted:
            log.info("association from %s %r to %r rejected: %s", address, rq.calling_ae_title,
                     rq.called_ae_title, verdict.reason)
            self._refuse(REJECTED_PERMANENT, SOURCE_SERVICE_USER, verdict.diagnostic)
            return
        self.assoc.dicomgate = verdict  # read by the DIMSE handlers
        super()._negotiate_as_acceptor()


class DeferredContexts(list):
    """The server's supported contexts, copied per association only once the peer is accepted.

    pynetdicom deep-copies all of them (177 here, ~60 ms of CPU) for every
    TCP connection, before a byte is read: a CPU lever for anyone who can
    connect. ``deepcopy`` of this list gives an empty one; :class:`PolicyACSE`
    copies only the contexts the accepted requestor proposed.
    """

    def __init__(self, template: list) -> None:
        super().__init__()
        self.template = list(template)

    def __deepcopy__(self, memo: dict) -> list:
        return []


class HandshakeFailed(Exception):
    """A TLS connection that did not complete its handshake within ARTIM (already closed)."""


def _tls_deferred(base: type[ThreadedAssociationServer]) -> type[ThreadedAssociationServer]:
    """``base`` with the TLS handshake moved out of the accept loop.

    pynetdicom 3.0.4 ``AssociationServer.get_request`` wraps an accepted socket
    with a blocking server-side handshake in the one thread that accepts: a
    single peer that connects and stays silent stopped every new association.
    Here the socket is wrapped without the handshake, which the connection's
    own thread does under the ARTIM timeout (PolicyRequestHandler).
    """

    class DeferredHandshakeServer(base):  # type: ignore[misc, valid-type]
        def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
            client_socket, address = self.socket.accept()
            if self.ssl_context:
                client_socket = self.ssl_context.wrap_socket(client_socket, server_side=True,
                                                             do_handshake_on_connect=False)
            return client_socket, address

    return DeferredHandshakeServer


def _make_handler(services: Services, gate: AdmissionGate):  # type: ignore[no-untyped-def]
    s = services.settings
    limits = PduLimits(max_associate_rq=s.max_associate_rq_bytes, max_pdata=s.max_pdu_size)

    class PolicyRequestHandler(RequestHandler):
        def handle(self) -> None:
            # pynetdicom 3.0.4 RequestHandler.handle, for a connection whose TLS handshake failed
            try:
                assoc = self._create_association()
            except HandshakeFailed:
                return
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()

        def _create_association(self):  # type: ignore[no-untyped-def]
            raw = self.request
            sock = raw if isinstance(raw, socket.socket) else None
            try:
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            assoc = make_event_driven(super()._create_association(), gate, limits)
            assoc.acse = PolicyACSE(assoc, services, gate)

            def close() -> None:  # wakes the DUL's read: it sees the end of the connection
                try:
                    if sock is not None:
                        sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            gate.arrived(assoc, str(self.client_address[0]), close)
            if isinstance(raw, ssl.SSLSocket):  # the handshake counts against ARTIM, in this thread
                try:
                    raw.settimeout(s.association_request_timeout)
                    raw.do_handshake()
                except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                    REFUSALS.labels("dimse_tls_handshake").inc()
                    log.info("TLS handshake with %s failed: %s", self.client_address[0], exc)
                    gate.left(assoc)
                    close()
                    raw.close()
                    raise HandshakeFailed from None
            return assoc

    return PolicyRequestHandler


def build_ae(services: Services) -> AE:
    settings = services.settings
    # pynetdicom's "standard" handlers format a multi-line summary of every PDU and
    # DIMSE message (UID name look-ups included) for its logger, which serve keeps at
    # WARNING: per C-STORE that was work for nothing. DEBUG keeps them.
    _config.LOG_HANDLER_LEVEL = "standard" if settings.log_level.upper() == "DEBUG" else "none"
    ae = AE(ae_title="DICOMGATE")
    ae.require_called_aet = False
    ae.require_calling_aet = []
    # the association limit is kept by AdmissionGate, which counts admitted associations
    # only; pynetdicom's own check counts every connection thread (pending ones, and
    # threads on their way out), so it is put out of reach
    ae.maximum_associations = 1 << 30
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.dimse_timeout
    # ARTIM (PS3.8 9.1.5): the time a new connection has to deliver its A-ASSOCIATE-RQ
    ae.acse_timeout = settings.association_request_timeout
    # the Maximum Length we advertise; a longer P-DATA-TF PDU is aborted (scp.pdu)
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.add_supported_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    # storage: we are SCP for C-STORE, and SCU for the C-GET sub-operations when
    # the requestor proposes the SCP role (SCP/SCU Role Selection, PS3.7 D.3.3.4);
    # without role selection the default roles apply, so plain C-STORE is unchanged
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, STORAGE_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    for qr in QUERY_RETRIEVE_CLASSES:
        ae.add_supported_context(qr, QUERY_TRANSFER_SYNTAXES)
    return ae


def tls_context(settings) -> ssl.SSLContext | None:  # type: ignore[no-untyped-def]
    """BCP 195 profile: TLS 1.2+, no legacy ciphers; client certificates when a CA is set."""
    if not settings.tls_certificate:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.tls_certificate, settings.tls_private_key)
    if settings.tls_ca_certificate:
        ctx.load_verify_locations(settings.tls_ca_certificate)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _adopting_server(listener: socket.socket) -> type[ThreadedAssociationServer]:
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


class DimseServer:
    """The running SCP: ``start()`` binds and serves in a thread, ``stop()`` closes.

    With ``listener`` (a DIMSE worker process) it serves on that inherited socket.
    """

    def __init__(self, services: Services, listener: socket.socket | None = None) -> None:
        self.services = services
        self.listener = listener
        self.ae = build_ae(services)
        self.server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None
        s = services.settings
        self.gate = AdmissionGate(max_pending=s.max_pending_associations,
                                  max_pending_per_address=s.max_pending_per_address,
                                  max_admitted=s.max_associations)

    def start(self) -> int:
        s = self.services.settings
        handlers = [
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_STORE, handle_store, [self.services]),
            (evt.EVT_C_FIND, handle_find, [self.services]),
            (evt.EVT_C_GET, handle_get, [self.services]),
            (evt.EVT_C_MOVE, handle_move, [self.services]),
        ]
        self.server = self.ae.make_server(
            (s.host, s.dicom_port), evt_handlers=handlers, ssl_context=tls_context(s),
            server_class=_tls_deferred(ThreadedAssociationServer if self.listener is None
                                       else _adopting_server(self.listener)),
            request_handler=_make_handler(self.services, self.gate),
        )
        self.server.daemon_threads = True
        self.server.contexts = DeferredContexts(self.server.contexts)
        self._thread = threading.Thread(target=self.server.serve_forever, name="dimse-acceptor", daemon=True)
        self._thread.start()
        self.ae._servers.append(self.server)
        return self.server.server_address[1]

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting; let associations in flight finish (up to ``timeout``), then abort the rest."""
        if self.server is None:
            return
        self.server.shutdown()  # stops accepting new associations
        deadline = time.monotonic() + timeout
        # wait only for associations doing work; a connection still negotiating is dropped
        while time.monotonic() < deadline and any(a.is_established for a in self.ae.active_associations):
            time.sleep(0.05)
        for assoc in self.ae.active_associations:
            assoc.abort()
        self.server = None
