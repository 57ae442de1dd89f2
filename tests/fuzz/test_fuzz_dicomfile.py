"""Fuzzing the ingest header read: gateway/dicomfile.py ``parse_instance`` and
``dataset_offset``, the sensitivity labels (consent/sensitivity.py
``classify``) and the digest, as ``IngestService._prepare`` runs them on a
STOW part or a C-STORE data set (with the gateway's own File Meta).

Property: nothing but MalformedInstance (-> 0xC000 / STOW "malformed"), in
bounded time and heap per input.
"""

from __future__ import annotations

from hypothesis import given, settings

from tests.fuzz import targets

FUZZ = settings.get_profile("dicomgate-fuzz")


@settings(FUZZ, max_examples=400)
@given(targets.dicom_inputs())
def test_header_read_raises_only_malformed_instance(inp):
    with targets.bounded(len(inp)):
        targets.dicom_ingest(inp)
