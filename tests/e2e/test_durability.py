"""What was acknowledged survives kill -9 and restart; SIGTERM shuts down cleanly."""

from __future__ import annotations

import signal
import threading

import pytest

from tests.conftest import make_backend
from tests.support.data import uids, variant
from tests.support.dimse import dataset_bytes, pynetdicom_store
from tests.support.gateway import Gateway


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_acknowledged_instances_survive_kill_9(kind, tmp_path, request):
    gw = Gateway(make_backend(kind, tmp_path, request)).start()
    try:
        acc = gw.new_account()
        prv = gw.new_provider()
        gw.link(acc, prv, push=True)
        sent_dimse = [variant() for _ in range(5)]
        assert pynetdicom_store(gw.dicom_port, prv["ae_title"], acc["ae_title"], sent_dimse).statuses == [0] * 5
        sent_stow = [variant() for _ in range(5)]
        assert gw.stow(acc["id"], sent_stow, token=prv["token"]).status_code == 200
        gw.close()
        gw.stop(signal.SIGKILL)

        gw.start()  # same data dir / database / bucket
        rows = {r.sop_uid: r for r in gw.instance_rows(acc["id"])}
        for raw in sent_dimse + sent_stow:
            row = rows[uids(raw)[2]]
            assert dataset_bytes(gw.read_object(row.object_key)) == dataset_bytes(raw)
        # and it keeps working after the restart
        assert pynetdicom_store(gw.dicom_port, prv["ae_title"], acc["ae_title"], [variant()]).statuses == [0]
    finally:
        gw.close()
        gw.stop()


def test_sigterm_during_traffic_loses_nothing_acknowledged(tmp_path, request):
    gw = Gateway(make_backend("sqlite", tmp_path, request)).start()
    acc = gw.new_account()
    prv = gw.new_provider()
    gw.link(acc, prv, push=True)
    files = [variant() for _ in range(60)]
    acknowledged: list[str] = []

    def send():
        from pydicom import dcmread
        from pynetdicom import AE
        import io

        ae = AE(ae_title=prv["ae_title"])
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", gw.dicom_port, ae_title=acc["ae_title"])
        if not assoc.is_established:
            return
        for raw in files:
            ds = dcmread(io.BytesIO(raw))
            rsp = assoc.send_c_store(ds)
            if rsp and getattr(rsp, "Status", None) == 0:
                acknowledged.append(str(ds.SOPInstanceUID))
            if not assoc.is_established:
                break
        if assoc.is_established:
            assoc.release()

    t = threading.Thread(target=send)
    t.start()
    while len(acknowledged) < 10 and t.is_alive():
        threading.Event().wait(0.02)
    rc = gw.stop(signal.SIGTERM)
    t.join(timeout=60)
    assert rc == 0, gw.log()[-2000:]
    gw.close()
    gw.start()
    try:
        stored = {r.sop_uid for r in gw.instance_rows(acc["id"])}
        assert set(acknowledged) <= stored
        assert len(gw.object_keys(acc["id"])) == len(stored)
    finally:
        gw.close()
        gw.stop()
