"""The DIMSE SCP: a pynetdicom AE whose association policy asks the gateway.

What it supports (contexts, transfer syntaxes, timeouts, TLS) and the
association policy (:func:`_admit`) are here; every change to pynetdicom's
own behaviour (the policy hook, event-driven loops, TLS handshake off the
accept loop, the shared listening socket) is in :mod:`scp.compat`. Handlers:
C-ECHO and C-STORE in :mod:`scp.handlers`, C-FIND / C-GET / C-MOVE in
:mod:`scp.query_retrieve`.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

from pynetdicom import AE, _config, evt
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
from pynetdicom.transport import ThreadedAssociationServer
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
from scp.compat import (
    DeferredContexts,
    GatedACSE,
    adopting_server,
    deferred_handshake,
    request_handler,
    serve_in_thread,
)
from scp.handlers import handle_echo, handle_store
from scp.pdu import PduLimits
from scp.policy import REJECTED_PERMANENT, SOURCE_SERVICE_USER, decide_association
from scp.query_retrieve import handle_find, handle_get, handle_move

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


def _admit(services: Services, gate: AdmissionGate):  # type: ignore[no-untyped-def]
    """The association policy at A-ASSOCIATE-RQ, in this order: at most
    :data:`MAX_PRESENTATION_CONTEXTS` contexts, a free association slot
    (``gate``), then :func:`decide_association` (consent)."""

    def admit(acse: GatedACSE) -> bool:
        rq = acse.requestor.primitive
        address = acse.assoc.requestor.address
        contexts = len(rq.presentation_context_definition_list or [])
        if contexts > MAX_PRESENTATION_CONTEXTS:
            REFUSALS.labels("dimse_too_many_contexts").inc()
            log.warning("association from %s rejected: %d presentation contexts (PS3.8 allows %d)",
                        address, contexts, MAX_PRESENTATION_CONTEXTS)
            acse.refuse(REJECTED_PERMANENT, SOURCE_SERVICE_USER, NO_REASON_GIVEN)
            return False
        if not gate.requested(acse.assoc):
            REFUSALS.labels("dimse_association_limit").inc()
            log.warning("association from %s rejected: every association slot is in use", address)
            acse.refuse(REJECTED_TRANSIENT, SOURCE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED)
            return False
        verdict = decide_association(services.db, rq.calling_ae_title, rq.called_ae_title, address)
        if not verdict.accepted:
            log.info("association from %s %r to %r rejected: %s", address, rq.calling_ae_title,
                     rq.called_ae_title, verdict.reason)
            acse.refuse(REJECTED_PERMANENT, SOURCE_SERVICE_USER, verdict.diagnostic)
            return False
        acse.accept_only({cx.abstract_syntax for cx in rq.presentation_context_definition_list})
        acse.assoc.dicomgate = verdict  # read by the DIMSE handlers
        return True

    return admit


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


class DimseServer:
    """The running SCP of a DIMSE worker: ``start()`` serves on ``listener`` (the
    listening socket ``serve`` shares with its workers) in a thread, ``stop()`` drains and closes."""

    def __init__(self, services: Services, listener: socket.socket) -> None:
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
        limits = PduLimits(max_associate_rq=s.max_associate_rq_bytes, max_pdata=s.max_pdu_size)
        self.server = self.ae.make_server(
            self.listener.getsockname()[:2], evt_handlers=handlers, ssl_context=tls_context(s),
            server_class=deferred_handshake(adopting_server(self.listener)),
            request_handler=request_handler(_admit(self.services, self.gate), self.gate, limits,
                                            handshake_timeout=s.association_request_timeout),
        )
        self.server.daemon_threads = True
        self.server.contexts = DeferredContexts(self.server.contexts)
        self._thread = serve_in_thread(self.ae, self.server)
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
