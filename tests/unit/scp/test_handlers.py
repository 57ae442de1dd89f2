"""scp.handlers: a C-STORE is the Part 10 bytes handed to ingest, and its Outcome one status (scp.status)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from gateway.archive.ingest import IngestResult, Outcome
from scp.handlers import STORE_STATUS, handle_echo, handle_store

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPECTED = {
    Outcome.STORED: 0x0000, Outcome.DUPLICATE: 0x0000, Outcome.REFUSED: 0xA700, Outcome.UNAVAILABLE: 0xA701,
    Outcome.FAILED: 0xA702, Outcome.MALFORMED: 0xC000, Outcome.MISMATCH: 0xC000, Outcome.CONFLICT: 0x0111,
}


class Ingest:
    def __init__(self, result: IngestResult) -> None:
        self.result = result
        self.calls: list[tuple] = []

    def store_instance(self, principal, account_id, fp, size):  # type: ignore[no-untyped-def]
        self.calls.append((principal, account_id, fp.getvalue(), size))
        return self.result


ACCEPTED = object()


def store_event(sop_instance: str, data: bytes, *, verdict: object = ACCEPTED) -> SimpleNamespace:
    """A C-STORE event as pynetdicom gives it; ``verdict=None``: an association the policy never saw."""
    if verdict is ACCEPTED:
        verdict = SimpleNamespace(accepted=True, principal=SimpleNamespace(label="provider P"), account_id="acc-1")
    assoc = SimpleNamespace(requestor=SimpleNamespace(ae_title="SENDER"))
    if verdict is not None:
        assoc.dicomgate = verdict
    request = SimpleNamespace(AffectedSOPClassUID=CT, AffectedSOPInstanceUID=sop_instance, DataSet=io.BytesIO(data))
    return SimpleNamespace(assoc=assoc, request=request, context=SimpleNamespace(transfer_syntax=ExplicitVRLittleEndian))


def services_answering(outcome: Outcome, reason: str = "because") -> SimpleNamespace:
    return SimpleNamespace(ingest=Ingest(IngestResult(outcome, reason, sop_instance_uid="1.2.3")))


def test_every_outcome_has_its_status():
    assert STORE_STATUS == EXPECTED


@pytest.mark.parametrize("outcome", list(Outcome))
def test_store_answers_the_status_of_the_outcome(outcome):
    services = services_answering(outcome, "why " + outcome.value)
    ds = handle_store(store_event(generate_uid(), b"\x08\x00"), services)
    assert ds.Status == EXPECTED[outcome]
    if outcome.ok:
        assert "ErrorComment" not in ds
    else:
        assert ds.ErrorComment == "why " + outcome.value


def test_store_hands_ingest_the_part10_bytes_of_the_request():
    uid, data = generate_uid(), b"\x08\x00\x18\x00" + b"\x00" * 12
    services = services_answering(Outcome.STORED)
    handle_store(store_event(uid, data), services)
    [(principal, account, written, size)] = services.ingest.calls
    assert (principal.label, account) == ("provider P", "acc-1")
    assert written[128:132] == b"DICM" and written.endswith(data) and size == len(written)
    assert uid.encode() in written[:len(written) - len(data)] and b"SENDER" in written


def test_a_long_reason_is_cut_to_fit_error_comment():
    ds = handle_store(store_event(generate_uid(), b""), services_answering(Outcome.REFUSED, "x\\y" * 50))
    assert ds.Status == 0xA700 and len(ds.ErrorComment) == 64 and "\\" not in ds.ErrorComment


@pytest.mark.parametrize("verdict", [None, SimpleNamespace(accepted=False)])
def test_store_without_an_accepted_association_is_refused_without_ingest(verdict):
    services = services_answering(Outcome.STORED)
    ds = handle_store(store_event(generate_uid(), b"", verdict=verdict), services)
    assert ds.Status == 0xA700 and services.ingest.calls == []


def test_a_request_with_an_invalid_uid_cannot_be_understood():
    services = services_answering(Outcome.STORED)
    ds = handle_store(store_event("not a uid", b""), services)
    assert ds.Status == 0xC000 and ds.ErrorComment.startswith("bad C-STORE request")
    assert services.ingest.calls == []


def test_echo_succeeds():
    assert handle_echo(SimpleNamespace()) == 0x0000
