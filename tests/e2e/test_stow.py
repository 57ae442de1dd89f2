"""STOW-RS through requests and dicomweb-client against a running gateway."""

from __future__ import annotations

import io
import secrets

import pytest
import requests
from pydicom import dcmread

from tests.support.data import TRANSFER_SYNTAX_FILES, sample_file, uids, variant
from tests.support.dimse import dataset_bytes


def setup(gw, *, push=True, pull=False, sensitive=False, networks=None):
    acc = gw.new_account()
    prv = gw.new_provider(networks=networks)
    gw.link(acc, prv, push=push, pull=pull, sensitive=sensitive)
    return acc, prv


def nothing_stored(gw, account_id: str) -> bool:
    return gw.instance_rows(account_id) == [] and gw.object_keys(account_id) == []


def test_stow_every_transfer_syntax_byte_for_byte(gateway):
    acc, prv = setup(gateway)
    bodies = []
    for ts, name in sorted(TRANSFER_SYNTAX_FILES.items()):
        raw = sample_file(name).read_bytes()
        bodies.append(raw)
    # several test files share UIDs (MR_small variants): send them to separate accounts
    seen: dict[str, int] = {}
    groups: list[list[bytes]] = [[]]
    for raw in bodies:
        sop = uids(raw)[2]
        idx = seen.get(sop, -1) + 1
        seen[sop] = idx
        while len(groups) <= idx:
            groups.append([])
        groups[idx].append(raw)
    for group in groups:
        acc = gateway.new_account()
        gateway.link(acc, prv, push=True)
        rsp = gateway.stow(acc["id"], group, token=prv["token"])
        assert rsp.status_code == 200, rsp.text
        assert rsp.headers["Content-Type"].startswith("application/dicom+json")
        body = rsp.json()
        refs = body["00081199"]["Value"]
        assert len(refs) == len(group)
        assert "00081198" not in body
        rows = {r.sop_uid: r for r in gateway.instance_rows(acc["id"])}
        for raw in group:
            row = rows[uids(raw)[2]]
            assert gateway.read_object(row.object_key) == raw  # the whole file, as sent
        for ref in refs:
            url = ref["00081190"]["Value"][0]
            assert url.startswith(f"{gateway.url}/accounts/{acc['id']}/dicomweb/studies/")


def test_stow_with_dicomweb_client(gateway):
    from dicomweb_client.api import DICOMwebClient

    acc, prv = setup(gateway)
    datasets = [dcmread(io.BytesIO(variant())) for _ in range(3)]
    client = DICOMwebClient(url=f"{gateway.url}/accounts/{acc['id']}/dicomweb",
                            headers={"Authorization": f"Bearer {prv['token']}"})
    result = client.store_instances(datasets)
    assert len(result.ReferencedSOPSequence) == 3
    assert {r.sop_uid for r in gateway.instance_rows(acc["id"])} == {str(d.SOPInstanceUID) for d in datasets}


def test_stow_to_named_study_rejects_other_studies(gateway):
    acc, prv = setup(gateway)
    a = variant()
    study = uids(a)[0]
    b = variant()  # another study
    rsp = gateway.stow(acc["id"], [a, b], token=prv["token"], study=study)
    assert rsp.status_code == 202, rsp.text
    body = rsp.json()
    assert len(body["00081199"]["Value"]) == 1
    [failed] = body["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [uids(b)[2]]
    assert failed["00081197"]["Value"] == [0xA900]
    assert {r.sop_uid for r in gateway.instance_rows(acc["id"])} == {uids(a)[2]}


def test_owner_may_stow_with_basic_and_user_token(gateway):
    acc = gateway.new_account()
    rsp = gateway.stow(acc["id"], [variant()], auth=(acc["owner"], acc["password"]))
    assert rsp.status_code == 200, rsp.text
    rsp = gateway.stow(acc["id"], [variant()], auth=(acc["owner"], "wrong password"))
    assert rsp.status_code == 401
    assert len(gateway.instance_rows(acc["id"])) == 1


# ---------------------------------------------------------------- consent
def test_no_credentials_401(gateway):
    acc, _ = setup(gateway)
    rsp = gateway.stow(acc["id"], [variant()])
    assert rsp.status_code == 401
    # one header per challenge: browsers answer a Basic challenge only when it stands alone
    assert sorted(c.split()[0] for c in rsp.raw.headers.getlist("WWW-Authenticate")) == ["Basic", "Bearer"]
    assert nothing_stored(gateway, acc["id"])


def test_wrong_token_401(gateway):
    acc, _ = setup(gateway)
    rsp = gateway.stow(acc["id"], [variant()], token="dg_" + secrets.token_urlsafe(32))
    assert rsp.status_code == 401
    assert rsp.json()["error"]
    assert nothing_stored(gateway, acc["id"])


def test_provider_without_link_gets_404_and_nothing_stored(gateway):
    acc = gateway.new_account()
    prv = gateway.new_provider()
    rsp = gateway.stow(acc["id"], [variant()], token=prv["token"])
    assert rsp.status_code == 404
    assert nothing_stored(gateway, acc["id"])


def test_unknown_account_404(gateway):
    _, prv = setup(gateway)
    assert gateway.stow("acc_0000000000000000", [variant()], token=prv["token"]).status_code == 404


def test_pull_only_link_403(gateway):
    acc, prv = setup(gateway, push=False, pull=True)
    rsp = gateway.stow(acc["id"], [variant()], token=prv["token"])
    assert rsp.status_code == 403
    assert "push" in rsp.json()["error"]
    assert nothing_stored(gateway, acc["id"])


def test_revoked_link_refused_on_next_request(gateway):
    acc = gateway.new_account()
    prv = gateway.new_provider()
    link = gateway.link(acc, prv, push=True)
    assert gateway.stow(acc["id"], [variant()], token=prv["token"]).status_code == 200
    gateway.revoke(link)
    assert gateway.stow(acc["id"], [variant()], token=prv["token"]).status_code == 404
    assert len(gateway.instance_rows(acc["id"])) == 1


def test_expired_link_refused(gateway):
    import time
    from datetime import datetime, timedelta, timezone

    acc = gateway.new_account()
    prv = gateway.new_provider()
    gateway.link(acc, prv, push=True, expires=datetime.now(timezone.utc) + timedelta(seconds=1))
    time.sleep(1.5)
    assert gateway.stow(acc["id"], [variant()], token=prv["token"]).status_code == 404
    assert nothing_stored(gateway, acc["id"])


def test_source_network_applies_to_http_too(gateway):
    acc, prv = setup(gateway, networks=["10.0.0.0/8"])
    assert gateway.stow(acc["id"], [variant()], token=prv["token"]).status_code == 404
    assert nothing_stored(gateway, acc["id"])


def test_sensitive_instance_without_flag_fails_with_0124(gateway):
    acc, prv = setup(gateway)
    plain, sensitive = variant(), variant(ConfidentialityCode="SDV")
    rsp = gateway.stow(acc["id"], [plain, sensitive], token=prv["token"])
    assert rsp.status_code == 202
    [failed] = rsp.json()["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [uids(sensitive)[2]]
    assert failed["00081197"]["Value"] == [0x0124]
    assert {r.sop_uid for r in gateway.instance_rows(acc["id"])} == {uids(plain)[2]}
    rsp = gateway.stow(acc["id"], [sensitive], token=prv["token"])
    assert rsp.status_code == 409


def test_sensitive_instance_with_flag_is_stored(gateway):
    acc, prv = setup(gateway, sensitive=True)
    sensitive = variant(ConfidentialityCode="SEX")
    assert gateway.stow(acc["id"], [sensitive], token=prv["token"]).status_code == 200
    from sqlalchemy import select

    from gateway.db.models import Study

    with gateway.services.db.session() as s:
        study = s.scalar(select(Study).where(Study.account_id == acc["id"]))
    assert study.sensitive and study.labels == "SEX"


# ---------------------------------------------------------------- bad input
def test_truncated_multipart_body_400_nothing_stored(gateway):
    acc, prv = setup(gateway)
    good = [variant(), variant()]
    boundary = "B" + secrets.token_hex(6)
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + g + b"\r\n"
                    for g in good) + b"--" + boundary.encode() + b"--\r\n"
    cut = body[: len(body) - 100]
    rsp = gateway.stow(acc["id"], [], token=prv["token"], data=cut,
                       content_type=f'multipart/related; type="application/dicom"; boundary={boundary}')
    assert rsp.status_code == 400
    assert "nothing was stored" in rsp.json()["error"]
    assert nothing_stored(gateway, acc["id"])


def test_truncated_dicom_part_fails_others_stored(gateway):
    acc, prv = setup(gateway)
    good, bad = variant(), variant()
    rsp = gateway.stow(acc["id"], [good, bad[: len(bad) - 500]], token=prv["token"])
    assert rsp.status_code == 202
    [failed] = rsp.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000]
    assert {r.sop_uid for r in gateway.instance_rows(acc["id"])} == {uids(good)[2]}
    assert len(gateway.object_keys(acc["id"])) == 1


@pytest.mark.parametrize("mutate,reason", [
    ({"SOPInstanceUID": None}, "SOPInstanceUID is missing"),
    ({"StudyInstanceUID": "1.2.3/../../4"}, "not a valid DICOM UID"),
    ({"SeriesInstanceUID": "1." + "9" * 64}, "not a valid DICOM UID"),
])
def test_malformed_instances_409_nothing_stored(gateway, mutate, reason):
    acc, prv = setup(gateway)
    raw = variant()
    ds = dcmread(io.BytesIO(raw))
    for k, v in mutate.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    buf = io.BytesIO()
    ds.save_as(buf)
    rsp = gateway.stow(acc["id"], [buf.getvalue()], token=prv["token"])
    assert rsp.status_code == 409
    [failed] = rsp.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000]
    assert reason in failed["00000902"]["Value"][0]
    assert nothing_stored(gateway, acc["id"])


def test_not_dicom_at_all_409(gateway):
    acc, prv = setup(gateway)
    rsp = gateway.stow(acc["id"], [b"this is not DICOM" * 50], token=prv["token"])
    assert rsp.status_code == 409
    assert nothing_stored(gateway, acc["id"])


def test_single_part_stow_of_one_part10_file(gateway):
    """POST /studies with Content-Type: application/dicom and one file as the body (Cloud Healthcare, Azure, curl)."""
    acc, prv = setup(gateway)
    raw = variant()
    rsp = gateway.stow(acc["id"], [], token=prv["token"], data=raw, content_type="application/dicom")
    assert rsp.status_code == 200, rsp.text
    assert len(rsp.json()["00081199"]["Value"]) == 1
    [row] = gateway.instance_rows(acc["id"])
    assert dataset_bytes(gateway.read_object(row.object_key)) == dataset_bytes(raw)
    # the same answers as multipart: not DICOM 409, empty 400
    assert gateway.stow(acc["id"], [], token=prv["token"], data=b"not DICOM" * 40,
                        content_type="application/dicom").status_code == 409
    assert gateway.stow(acc["id"], [], token=prv["token"], data=b"",
                        content_type="application/dicom").status_code == 400
    assert len(gateway.instance_rows(acc["id"])) == 1


def test_urls_keep_the_port_when_the_host_header_has_none(gateway):
    """dicomweb-client sends 'Host: 127.0.0.1' to port N; the RetrieveURLs must still name port N."""
    acc, prv = setup(gateway)
    rsp = requests.post(f"{gateway.url}/accounts/{acc['id']}/dicomweb/studies", data=variant(), timeout=60,
                        headers={"Content-Type": "application/dicom", "Authorization": f"Bearer {prv['token']}",
                                 "Host": "127.0.0.1"})
    assert rsp.status_code == 200, rsp.text
    url = rsp.json()["00081190"]["Value"][0]
    assert url.startswith(f"http://127.0.0.1:{gateway.http_port}/accounts/{acc['id']}/dicomweb/studies/"), url


@pytest.mark.parametrize("ctype", ["application/dicom+json", "multipart/related; boundary=x",
                                   'multipart/related; type="application/dicom+json"; boundary=x',
                                   "text/plain", "garbage;;;=="])
def test_wrong_content_type_415(gateway, ctype):
    acc, prv = setup(gateway)
    rsp = gateway.stow(acc["id"], [], token=prv["token"], data=variant(), content_type=ctype)
    assert rsp.status_code == 415, rsp.text
    assert nothing_stored(gateway, acc["id"])


def test_missing_boundary_400(gateway):
    acc, prv = setup(gateway)
    rsp = gateway.stow(acc["id"], [], token=prv["token"], data=b"x",
                       content_type='multipart/related; type="application/dicom"')
    assert rsp.status_code == 400


def test_bad_study_uid_in_path_400(gateway):
    acc, prv = setup(gateway)
    rsp = requests.post(f"{gateway.url}/accounts/{acc['id']}/dicomweb/studies/1.2..3",
                        headers={"Authorization": f"Bearer {prv['token']}"}, data=b"", timeout=30)
    assert rsp.status_code == 400


def test_body_over_limit_413(tmp_path, request):
    """A gateway with a small max_stow_bytes refuses larger bodies before storing anything."""
    from tests.conftest import make_backend
    from tests.support.gateway import Gateway

    gw = Gateway(make_backend("sqlite", tmp_path, request), extra_env={"DICOMGATE_MAX_STOW_BYTES": "20000"}).start()
    try:
        acc, prv = setup(gw)
        rsp = gw.stow(acc["id"], [variant(), variant()], token=prv["token"])  # ~80 kB
        assert rsp.status_code == 413
        assert nothing_stored(gw, acc["id"])
        # chunked upload (no Content-Length): the limit still holds while reading
        boundary = "B1"
        body = b"--B1\r\nContent-Type: application/dicom\r\n\r\n" + variant() + b"\r\n--B1--\r\n"
        rsp = requests.post(f"{gw.url}/accounts/{acc['id']}/dicomweb/studies", data=iter([body[:30000], body[30000:]]),
                            headers={"Authorization": f"Bearer {prv['token']}",
                                     "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
                            timeout=30)
        assert rsp.status_code == 413
        assert nothing_stored(gw, acc["id"])
        small = gw.stow(acc["id"], [variant("MR_small.dcm")], token=prv["token"])
        assert small.status_code == 200
    finally:
        gw.close()
        gw.stop()


def test_duplicate_in_stow_is_success_without_second_copy(gateway):
    acc, prv = setup(gateway)
    raw = variant()
    assert gateway.stow(acc["id"], [raw], token=prv["token"]).status_code == 200
    rsp = gateway.stow(acc["id"], [raw, raw], token=prv["token"])
    assert rsp.status_code == 200
    assert len(gateway.instance_rows(acc["id"])) == 1
    assert len(gateway.object_keys(acc["id"])) == 1


def test_stored_file_keeps_dataset_from_dimse_and_stow_identical(gateway):
    """The same instance via DIMSE and via STOW is one instance (digest over the data set)."""
    from tests.support.dimse import pynetdicom_store

    acc, prv = setup(gateway)
    raw = variant()
    assert pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], [raw]).statuses == [0]
    assert gateway.stow(acc["id"], [raw], token=prv["token"]).status_code == 200
    [row] = gateway.instance_rows(acc["id"])
    assert dataset_bytes(gateway.read_object(row.object_key)) == dataset_bytes(raw)
