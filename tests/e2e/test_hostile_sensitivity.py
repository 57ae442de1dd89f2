"""Consent cannot be bypassed by encoding (issue 11, part 9).

A sensitivity label hidden where a careless walker does not look (a UN
sequence, a private sequence in implicit VR, deep nesting, big endian,
deflate) still makes the study sensitive, over STOW-RS and C-STORE; a
viewer share without the sensitive flag then cannot find or fetch it, and
one with the flag can. A data set whose nesting cannot be walked is stored
as sensitive (fail closed), never as ordinary.
"""

from __future__ import annotations

import pytest
import requests
from sqlalchemy import select

from tests.support.dimse import pynetdicom_store
from tests.support.gateway import user_token
from tests.unit.consent import hostile


@pytest.fixture(scope="module")
def world(gateway):
    """An account, its owner's token, and two viewers: one with the sensitive flag, one without."""
    acc = gateway.new_account()
    owner = user_token(gateway, acc["owner"])
    plain, cleared = gateway.new_account(), gateway.new_account()
    for viewer, sensitive in ((plain, False), (cleared, True)):
        rsp = requests.post(f"{gateway.url}/api/v1/accounts/{acc['id']}/shares", timeout=30,
                            headers={"Authorization": f"Bearer {owner}"},
                            json={"email": viewer["owner"], "role": "viewer", "sensitive": sensitive})
        assert rsp.status_code == 201, rsp.text
    return {"gw": gateway, "acc": acc, "owner": owner,
            "plain": user_token(gateway, plain["owner"]), "cleared": user_token(gateway, cleared["owner"])}


def study_row(gw, account_id: str, study_uid: str):
    from gateway.db.models import Study

    with gw.services.db.session() as s:
        return s.execute(select(Study.sensitive, Study.labels).where(
            Study.account_id == account_id, Study.study_uid == study_uid)).one_or_none()


def sees(world, who: str, inst: hostile.Instance) -> tuple[int, int]:
    """(studies QIDO finds, WADO status) for the study, as viewer ``who``."""
    gw, acc = world["gw"], world["acc"]
    base = f"{gw.url}/accounts/{acc['id']}/dicomweb"
    headers = {"Authorization": f"Bearer {world[who]}"}
    q = requests.get(f"{base}/studies", params={"StudyInstanceUID": inst.study}, timeout=30,
                     headers=headers | {"Accept": "application/dicom+json"})
    assert q.status_code in (200, 204), q.text
    found = len(q.json()) if q.status_code == 200 and q.content else 0
    w = requests.get(f"{base}/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}", timeout=30,
                     headers=headers | {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    return found, w.status_code


def stow(world, inst: hostile.Instance) -> None:
    gw, acc = world["gw"], world["acc"]
    rsp = gw.stow(acc["id"], [inst.part10()], token=world["owner"])
    assert rsp.status_code == 200, rsp.text


def assert_sensitive(world, inst: hostile.Instance, label: str = "PSY") -> None:
    row = study_row(world["gw"], world["acc"]["id"], inst.study)
    assert row is not None, "the instance was not stored"
    assert row.sensitive and label in row.labels.split(","), row
    assert sees(world, "plain", inst) == (0, 404)  # a share without the sensitive flag sees nothing
    assert sees(world, "cleared", inst) == (1, 200)


@pytest.mark.parametrize("place", sorted(hostile.HIDING_PLACES))
def test_hidden_label_makes_the_study_sensitive_over_stow(world, place):
    inst = hostile.HIDING_PLACES[place]()
    stow(world, inst)
    assert_sensitive(world, inst)


@pytest.mark.parametrize("place", ["un-defined-length", "private-implicit", "nested-depth-5-implicit"])
def test_an_ordinary_code_in_the_same_place_stays_ordinary(world, place):
    """The walk finds labels, it does not label everything it walks."""
    inst = hostile.HIDING_PLACES[place](code="N")
    stow(world, inst)
    row = study_row(world["gw"], world["acc"]["id"], inst.study)
    assert row is not None and not row.sensitive and row.labels == ""
    assert sees(world, "plain", inst) == (1, 200)


@pytest.mark.parametrize("case", sorted(hostile.MALFORMED))
def test_nesting_that_cannot_be_walked_is_stored_as_sensitive(world, case):
    inst = hostile.MALFORMED[case]()
    stow(world, inst)
    assert_sensitive(world, inst, label="UNVERIFIED")
    assert f"instance {inst.sop}: sensitivity labels could not all be read" in world["gw"].log()


@pytest.mark.parametrize("build", [hostile.un_sequence, hostile.malformed_un], ids=["un-sequence", "malformed-un"])
def test_c_store_finds_the_hidden_label(world, build):
    """Without sensitive consent the C-STORE is refused; with it the study is stored as sensitive."""
    gw, acc = world["gw"], world["acc"]
    label = "PSY" if build is hostile.un_sequence else "UNVERIFIED"
    inst = build()
    pusher = gw.new_provider()
    gw.link(acc, pusher, push=True, sensitive=False)
    out = pynetdicom_store(gw.dicom_port, pusher["ae_title"], acc["ae_title"], [inst.part10()])
    assert out.associated and 0xA700 <= out.statuses[0] <= 0xA7FF, out
    assert "sensitive" in (out.comments[0] or "")
    assert study_row(gw, acc["id"], inst.study) is None

    trusted = gw.new_provider()
    gw.link(acc, trusted, push=True, sensitive=True)
    out = pynetdicom_store(gw.dicom_port, trusted["ae_title"], acc["ae_title"], [inst.part10()])
    assert out.statuses == [0], out
    assert_sensitive(world, inst, label=label)


def test_stow_by_a_provider_without_sensitive_consent_is_refused(world):
    gw, acc = world["gw"], world["acc"]
    prv = gw.new_provider()
    gw.link(acc, prv, push=True, sensitive=False)
    for inst in (hostile.un_sequence(), hostile.private_implicit(), hostile.malformed_private()):
        rsp = gw.stow(acc["id"], [inst.part10()], token=prv["token"])
        assert rsp.status_code == 409, rsp.text
        assert study_row(gw, acc["id"], inst.study) is None
