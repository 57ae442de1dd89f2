"""DIMSE handlers: decode the request, call the gateway service, map to a status.

C-STORE statuses (PS3.4 B.2.3 / PS3.7 C):
  0x0000 stored, or an identical resend of a stored instance
  0xA700 refused: no consent (push scope, sensitive flag, expiry, revocation)
  0xA701 refused: the study is being deleted; send again after the purge
  0xA702 refused: storage or database failure, nothing kept (retry later)
  0xC000 cannot understand: malformed data set, nothing stored
  0x0111 duplicate SOP instance: same UID already stored with other content
Every failure carries an Error Comment (0000,0902) saying why.
"""

from __future__ import annotations

import io
import logging

from pydicom.dataset import Dataset

from gateway.dicom.part10 import part10_header
from gateway.archive.ingest import Outcome
from gateway.runtime.services import Services
from scp.status import status

log = logging.getLogger(__name__)

STORE_STATUS = {
    Outcome.STORED: 0x0000,
    Outcome.DUPLICATE: 0x0000,
    Outcome.REFUSED: 0xA700,
    Outcome.UNAVAILABLE: 0xA701,
    Outcome.FAILED: 0xA702,
    Outcome.MALFORMED: 0xC000,
    Outcome.MISMATCH: 0xC000,
    Outcome.CONFLICT: 0x0111,
}



def handle_echo(event) -> int:  # type: ignore[no-untyped-def]
    return 0x0000


def handle_store(event, services: Services) -> Dataset:  # type: ignore[no-untyped-def]
    verdict = getattr(event.assoc, "dicomgate", None)
    if verdict is None or not verdict.accepted:  # cannot happen: policy runs first
        return status(0xA700, "association was not authorised")
    req = event.request
    try:
        header = part10_header(
            str(req.AffectedSOPClassUID), str(req.AffectedSOPInstanceUID),
            str(event.context.transfer_syntax), event.assoc.requestor.ae_title,
        )
    except Exception as exc:
        return status(0xC000, f"bad C-STORE request: {exc}")
    data = req.DataSet.getvalue() if hasattr(req.DataSet, "getvalue") else req.DataSet.read()
    fp = io.BytesIO()
    fp.write(header)
    fp.write(data)
    size = fp.tell()
    result = services.ingest.store_instance(verdict.principal, verdict.account_id, fp, size)
    code = STORE_STATUS[result.outcome]
    if code != 0x0000:
        log.info("C-STORE %s from %s: %s (%s)", result.sop_instance_uid, verdict.principal.label,
                 result.outcome.value, result.reason)
    return status(code, result.reason)
