"""C-STORE / C-ECHO through real clients (DCMTK storescu/echoscu, pynetdicom)
against a running ``dicomgate serve``, on SQLite+files and PostgreSQL+S3."""

from __future__ import annotations

import io
import time
from datetime import datetime, timedelta, timezone

import pytest
from pydicom import dcmread

from tests.support.data import TRANSFER_SYNTAX_FILES, sample_file, uids, variant
from tests.support.dimse import dataset_bytes, dcmtk, echo, pynetdicom_store, same_content, storescu

CALLING_NOT_RECOGNISED = (1, 1, 3)
CALLED_NOT_RECOGNISED = (1, 1, 7)


def setup(gw, *, push=True, pull=False, sensitive=False, networks=None):
    acc = gw.new_account()
    prv = gw.new_provider(networks=networks)
    link = gw.link(acc, prv, push=push, pull=pull, sensitive=sensitive)
    return acc, prv, link


def assert_stored_exactly(gw, account_id: str, sent: bytes) -> None:
    study, series, sop = uids(sent)
    rows = [r for r in gw.instance_rows(account_id) if r.sop_uid == sop]
    assert len(rows) == 1, f"expected one index row for {sop}"
    stored = gw.read_object(rows[0].object_key)
    assert dataset_bytes(stored) == dataset_bytes(sent), "stored data set differs from what was sent"
    assert rows[0].object_key.startswith(f"{account_id}/{study}/{series}/{sop}.")


def test_echoscu_accepted_for_linked_provider(gateway):
    acc, prv, _ = setup(gateway)
    proc = dcmtk("echoscu", "-aet", prv["ae_title"], "-aec", acc["ae_title"], "127.0.0.1", str(gateway.dicom_port))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("ts", sorted(TRANSFER_SYNTAX_FILES))
def test_storescu_every_transfer_syntax_kept_byte_for_byte(gateway, ts):
    acc, prv, _ = setup(gateway)
    path = sample_file(TRANSFER_SYNTAX_FILES[ts])
    proc = storescu(gateway.dicom_port, prv["ae_title"], acc["ae_title"], path, ts=ts)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [row] = gateway.instance_rows(acc["id"])
    assert row.transfer_syntax_uid == ts
    stored = gateway.read_object(row.object_key)
    # storescu re-encodes what it reads (group lengths, deflate), so the bytes it
    # sends are not the file's; the byte-for-byte proof is the pynetdicom test below
    assert same_content(stored, path)
    meta = dcmread(io.BytesIO(stored), stop_before_pixels=True).file_meta
    assert meta.TransferSyntaxUID == ts
    assert meta.SourceApplicationEntityTitle == prv["ae_title"]


@pytest.mark.parametrize("ts", sorted(TRANSFER_SYNTAX_FILES))
def test_pynetdicom_every_transfer_syntax_kept_byte_for_byte(gateway, ts):
    acc, prv, _ = setup(gateway)
    sent = sample_file(TRANSFER_SYNTAX_FILES[ts]).read_bytes()
    out = pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], [sent])
    assert out.statuses == [0x0000], out.comments
    if ts == "1.2.840.10008.1.2.1.99":
        [row] = gateway.instance_rows(acc["id"])
        assert same_content(gateway.read_object(row.object_key), sent)
    else:
        assert_stored_exactly(gateway, acc["id"], sent)


def test_storescu_a_study_of_many_instances(gateway):
    acc, prv, _ = setup(gateway)
    study = variant()
    s_uid, series, _ = uids(study)
    files = [variant(study=s_uid, series=series, InstanceNumber=i) for i in range(1, 21)]
    out = pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], files)
    assert out.statuses == [0] * 20
    assert len(gateway.instance_rows(acc["id"])) == 20
    assert len(gateway.object_keys(acc["id"])) == 20


def test_identical_resend_succeeds_without_second_copy(gateway):
    acc, prv, _ = setup(gateway)
    sent = variant()
    for _ in range(3):
        out = pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], [sent])
        assert out.statuses == [0x0000]
    assert len(gateway.instance_rows(acc["id"])) == 1
    assert len(gateway.object_keys(acc["id"])) == 1


def test_same_uid_with_other_content_is_refused_and_first_copy_kept(gateway):
    acc, prv, _ = setup(gateway)
    first = variant()
    study, series, sop = uids(first)
    ds = dcmread(io.BytesIO(first))
    ds.PatientName = "Other^Content"
    buf = io.BytesIO()
    ds.save_as(buf)
    out = pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], [first, buf.getvalue()])
    assert out.statuses[0] == 0x0000
    assert out.statuses[1] == 0x0111
    assert "different content" in out.comments[1]
    assert_stored_exactly(gateway, acc["id"], first)
    assert len(gateway.object_keys(acc["id"])) == 1


# ---------------------------------------------------------------- association policy
def test_no_link_rejects_association_as_called_ae_not_recognised(gateway):
    acc = gateway.new_account()
    prv = gateway.new_provider()
    out = pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], [variant()])
    assert not out.associated and out.reject == CALLED_NOT_RECOGNISED
    assert gateway.instance_rows(acc["id"]) == []


def test_unknown_calling_ae_rejected(gateway):
    acc, _, _ = setup(gateway)
    out = echo(gateway.dicom_port, "NOSUCHPACS", acc["ae_title"])
    assert not out.associated and out.reject == CALLING_NOT_RECOGNISED
    proc = storescu(gateway.dicom_port, "NOSUCHPACS", acc["ae_title"], sample_file("CT_small.dcm"))
    assert proc.returncode != 0
    assert "Calling AE Title Not Recognized" in proc.stdout + proc.stderr
    assert gateway.instance_rows(acc["id"]) == []


def test_unknown_called_ae_rejected(gateway):
    _, prv, _ = setup(gateway)
    out = echo(gateway.dicom_port, prv["ae_title"], "NOSUCHACCOUNT")
    assert not out.associated and out.reject == CALLED_NOT_RECOGNISED


def test_source_outside_provider_networks_rejected(gateway):
    acc, prv, _ = setup(gateway, networks=["10.0.0.0/8"])
    out = pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], [variant()])
    assert not out.associated and out.reject == CALLING_NOT_RECOGNISED
    assert gateway.instance_rows(acc["id"]) == []


def test_pull_only_link_cannot_store(gateway):
    acc, prv, _ = setup(gateway, push=False, pull=True)
    out = pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], [variant()])
    assert out.associated
    assert out.statuses == [0xA700]
    assert "no push consent" in out.comments[0]
    assert gateway.instance_rows(acc["id"]) == [] and gateway.object_keys(acc["id"]) == []


def test_revoked_link_refuses_next_association(gateway):
    acc, prv, link = setup(gateway)
    assert pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], [variant()]).statuses == [0]
    gateway.revoke(link)
    out = pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], [variant()])
    assert not out.associated and out.reject == CALLED_NOT_RECOGNISED
    assert len(gateway.instance_rows(acc["id"])) == 1


def test_revocation_during_an_association_holds_for_the_next_instance(gateway):
    """No decision cache: every C-STORE asks again."""
    from pynetdicom import AE

    acc, prv, link = setup(gateway)
    ae = AE(ae_title=prv["ae_title"])
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title=acc["ae_title"])
    assert assoc.is_established
    try:
        assert assoc.send_c_store(dcmread(io.BytesIO(variant()))).Status == 0
        gateway.revoke(link)
        assert assoc.send_c_store(dcmread(io.BytesIO(variant()))).Status == 0xA700
    finally:
        assoc.release()
    assert len(gateway.instance_rows(acc["id"])) == 1


def test_expired_link_refused(gateway):
    acc = gateway.new_account()
    prv = gateway.new_provider()
    gateway.link(acc, prv, push=True, expires=datetime.now(timezone.utc) + timedelta(seconds=2))
    time.sleep(2.5)
    out = pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], [variant()])
    assert not out.associated and out.reject == CALLED_NOT_RECOGNISED
    assert gateway.instance_rows(acc["id"]) == []


@pytest.mark.parametrize("attr,value", [("ConfidentialityCode", "PSY"),
                                        ("ConfidentialityConstraintOnPatientDataDescription", "HIV")])
def test_sensitive_study_needs_sensitive_link(gateway, attr, value):
    acc, prv, _ = setup(gateway)
    sensitive = variant(**{attr: value})
    out = pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], [sensitive])
    assert out.statuses == [0xA700]
    assert "sensitive" in out.comments[0]
    assert gateway.instance_rows(acc["id"]) == [] and gateway.object_keys(acc["id"]) == []

    prv2 = gateway.new_provider()
    gateway.link(acc, prv2, push=True, sensitive=True)
    out = pynetdicom_store(gateway.dicom_port, prv2["ae_title"], acc["ae_title"], [sensitive])
    assert out.statuses == [0x0000]
    assert_stored_exactly(gateway, acc["id"], sensitive)


def test_unlabelled_instance_joining_a_sensitive_study_needs_the_flag(gateway):
    acc, prv, _ = setup(gateway, sensitive=True)
    labelled = variant(ConfidentialityCode="ETH")
    study, series, _ = uids(labelled)
    assert pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], [labelled]).statuses == [0]
    plain_prv = gateway.new_provider()
    gateway.link(acc, plain_prv, push=True)
    out = pynetdicom_store(gateway.dicom_port, plain_prv["ae_title"], acc["ae_title"],
                           [variant(study=study, series=series)])
    assert out.statuses == [0xA700]
    assert len(gateway.instance_rows(acc["id"])) == 1


# ---------------------------------------------------------------- malformed data
@pytest.mark.parametrize("change,expect", [
    ({"StudyInstanceUID": "../../etc/1.2"}, "not a valid DICOM UID"),
    ({"SeriesInstanceUID": "1." + "2" * 70}, "not a valid DICOM UID"),
    ({"StudyInstanceUID": None}, "StudyInstanceUID is missing"),
    ({"SeriesInstanceUID": None}, "SeriesInstanceUID is missing"),
])
def test_malformed_data_set_is_refused_with_c000(gateway, change, expect):
    acc, prv, _ = setup(gateway)
    ds = dcmread(io.BytesIO(variant()))
    for key, value in change.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    out = pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], [buf.getvalue()])
    assert out.statuses == [0xC000]
    assert expect in out.comments[0]
    assert gateway.instance_rows(acc["id"]) == [] and gateway.object_keys(acc["id"]) == []


def test_truncated_pixel_data_is_refused(gateway):
    """A data set whose Pixel Data is shorter than Rows x Columns needs."""
    acc, prv, _ = setup(gateway)
    ds = dcmread(io.BytesIO(variant()))
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    buf = io.BytesIO()
    ds.save_as(buf)
    out = pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], [buf.getvalue()])
    assert out.statuses == [0xC000]
    assert "Pixel Data" in out.comments[0]
    assert gateway.instance_rows(acc["id"]) == [] and gateway.object_keys(acc["id"]) == []


def test_four_concurrent_associations_into_one_study(gateway):
    import threading

    acc, prv, _ = setup(gateway)
    first = variant()
    study, series, _ = uids(first)
    from pydicom.uid import generate_uid

    series_of = [series if i % 2 else generate_uid() for i in range(4)]
    batches = [[variant(study=study, series=series_of[i]) for _ in range(10)] for i in range(4)]
    results = []

    def send(batch):
        results.append(pynetdicom_store(gateway.dicom_port, prv["ae_title"], acc["ae_title"], batch))

    threads = [threading.Thread(target=send, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.statuses == [0] * 10 for r in results), [r.comments for r in results]
    rows = gateway.instance_rows(acc["id"])
    assert len(rows) == 40
    assert len({r.series_pk for r in rows}) == 3  # the shared series + one per even-numbered batch
