"""Fuzzing the streaming multipart reader (dicomweb/multipart.py).

Properties: only MultipartError (-> 400) ever escapes; parts are reassembled
byte-identical whatever the chunking of the input (reader chunk size and
short reads of the stream); bounded time and heap per body.
"""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz import targets

FUZZ = settings.get_profile("dicomgate-fuzz")
chunk_sizes = st.integers(1, 80)
read_plans = st.lists(st.integers(1, 80), min_size=1, max_size=6)


@settings(FUZZ, max_examples=300)
@given(targets.multipart_messages(), chunk_sizes, read_plans)
def test_well_formed_bodies_reassemble_byte_identical(message, chunk_size, plan):
    parts, body = message
    with targets.bounded(len(body)):
        got = targets.read_multipart(targets.ChunkedStream(body, plan), chunk_size=chunk_size)
    assert isinstance(got, list), f"a well-formed body was refused: {got}"
    assert [data for _, _, data in got] == [data for _, data in parts]
    assert [h for h, _, _ in got] == [{k.lower(): v for k, v in h.items()} for h, _ in parts]


@settings(FUZZ, max_examples=400)
@given(targets.multipart_bodies(), chunk_sizes, read_plans)
def test_any_body_gives_the_same_parts_or_a_multipart_error(body, chunk_size, plan):
    with targets.bounded(len(body)):
        targets.multipart(body, chunk_size, plan)


@settings(FUZZ, max_examples=150)
@given(targets.multipart_bodies(), st.integers(0, 400), chunk_sizes, read_plans)
def test_max_total_refuses_the_same_way_whatever_the_chunking(body, limit, chunk_size, plan):
    whole = targets.read_multipart(io.BytesIO(body), chunk_size=1 << 20, max_total=limit)
    cut = targets.read_multipart(targets.ChunkedStream(body, plan), chunk_size=chunk_size, max_total=limit)
    assert cut == whole
    if isinstance(whole, list):
        assert targets.read_multipart(io.BytesIO(body), chunk_size=1 << 20) == whole
