"""C-FIND / C-GET / C-MOVE through DCMTK (findscu, getscu, movescu + storescp)
and pynetdicom against a running ``dicomgate serve``, on both backends.

One small archive per backend (module fixture): three patients, four
studies; the consent cases each make their own account.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import select

from tests.support.data import uids, variant
from tests.support.dimse import dataset_bytes, dcmtk, need, pynetdicom_store, same_content
from tests.support.s3 import free_port
from tests.support.gateway import wait_for_tcp

CALLED_NOT_RECOGNISED = (1, 1, 7)


# ---------------------------------------------------------------- helpers
def setup(gw, *, push=False, pull=True, sensitive=False):
    acc = gw.new_account()
    prv = gw.new_provider()
    link = gw.link(acc, prv, push=push, pull=pull, sensitive=sensitive)
    return acc, prv, link


def put(gw, acc, files, *, sensitive=False):
    """Store through a push-only provider of its own (the pulling providers never push)."""
    pusher = gw.new_provider()
    gw.link(acc, pusher, push=True, sensitive=sensitive)
    out = pynetdicom_store(gw.dicom_port, pusher["ae_title"], acc["ae_title"], files)
    assert out.statuses == [0] * len(files), out.comments


def findscu(gw, prv, acc, tmp: Path, *keys: str, model: str = "-S") -> list[Dataset]:
    out = tmp / f"find-{time.monotonic_ns()}"
    out.mkdir()
    args = [model, "-X", "-od", str(out), "-aet", prv["ae_title"], "-aec", acc["ae_title"]]
    for k in keys:
        args += ["-k", k]
    proc = dcmtk("findscu", *args, "127.0.0.1", str(gw.dicom_port))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [dcmread(p) for p in sorted(out.iterdir())]


def getscu(gw, prv, acc, tmp: Path, *keys: str, model: str = "-S") -> tuple[subprocess.CompletedProcess, list[Path]]:
    out = tmp / f"get-{time.monotonic_ns()}"
    out.mkdir()
    args = [model, "-od", str(out), "-aet", prv["ae_title"], "-aec", acc["ae_title"]]
    for k in keys:
        args += ["-k", k]
    proc = dcmtk("getscu", *args, "127.0.0.1", str(gw.dicom_port))
    return proc, sorted(out.iterdir())


def assoc_for(gw, prv, acc, *contexts, ext_neg=None, handlers=None):
    ae = AE(ae_title=prv["ae_title"])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for cx in contexts:
        ae.add_requested_context(*cx) if isinstance(cx, tuple) else ae.add_requested_context(cx)
    return ae.associate("127.0.0.1", gw.dicom_port, ae_title=acc["ae_title"], ext_neg=ext_neg,
                        evt_handlers=handlers)


def find(gw, prv, acc, identifier: Dataset, model=StudyRootQueryRetrieveInformationModelFind):
    """(pending identifiers, final status dataset) over pynetdicom."""
    assoc = assoc_for(gw, prv, acc, model)
    assert assoc.is_established
    matches, final = [], None
    try:
        for st, ds in assoc.send_c_find(identifier, model):
            if st is not None and st.Status in (0xFF00, 0xFF01):
                matches.append(ds)
            else:
                final = st
    finally:
        assoc.release()
    return matches, final


@dataclass
class GetResult:
    final: Dataset
    received: list[bytes]  # the data sets as they came over the wire


def c_get(gw, prv, acc, identifier: Dataset) -> GetResult:
    received: list[bytes] = []

    def on_store(event):  # type: ignore[no-untyped-def]
        received.append(event.request.DataSet.getvalue())
        return 0x0000

    assoc = assoc_for(gw, prv, acc, StudyRootQueryRetrieveInformationModelGet,
                      (CTImageStorage, "1.2.840.10008.1.2.1"),
                      ext_neg=[build_role(CTImageStorage, scp_role=True)],
                      handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    final = None
    try:
        for st, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
            final = st
    finally:
        assoc.release()
    return GetResult(final, received)


def c_move(gw, prv, acc, identifier: Dataset, destination: str) -> Dataset:
    assoc = assoc_for(gw, prv, acc, StudyRootQueryRetrieveInformationModelMove)
    assert assoc.is_established
    final = None
    try:
        for st, _ in assoc.send_c_move(identifier, destination, StudyRootQueryRetrieveInformationModelMove):
            final = st
    finally:
        assoc.release()
    return final


def ident(level: str, **keys) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def audit(gw, account_id: str, action: str) -> list:
    from gateway.db.models import AuditEntry

    with gw.services.db.session() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.account_id == account_id,
                                                       AuditEntry.action == action)))


class StoreSCP:
    """DCMTK storescp on a free port, writing what it receives to a directory."""

    def __init__(self, directory: Path, ae: str) -> None:
        self.dir = directory
        self.port = free_port()
        self.proc = subprocess.Popen(
            [need("storescp"), "-aet", ae, "+xa", "-od", str(directory), str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_tcp(self.port)

    def files(self) -> list[Path]:
        return sorted(p for p in self.dir.iterdir() if p.is_file())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# ---------------------------------------------------------------- the archive
@dataclass
class Archive:
    acc: dict
    prv: dict  # pull (no push, no sensitive flag)
    studies: dict[str, list[bytes]]  # name -> instances as sent


@pytest.fixture(scope="module")
def archive(gateway) -> Archive:
    acc, prv, _ = setup(gateway)

    def study(n: int, **attrs) -> list[bytes]:
        """n instances; with n > 2 the last one is in a second series."""
        first = variant(**attrs)
        st, se, _ = uids(first)
        rest = [variant(study=st, series=se if i < 2 or i < n - 1 else None, InstanceNumber=i + 1, **attrs)
                for i in range(1, n)]
        return [first, *rest]

    studies = {
        # Jane: two studies (the first of two series, three instances); John and Ann one each
        "jane1": study(3, PatientName="Doe^Jane", PatientID="PJ", StudyDate="20200102", AccessionNumber="A1"),
        "jane2": study(1, PatientName="Doe^Jane", PatientID="PJ", StudyDate="20210704", AccessionNumber="A2"),
        "john": study(1, PatientName="Doe^John", PatientID="PD", StudyDate="20210315", AccessionNumber="A3"),
        "ann": study(1, PatientName="Roe^Ann", PatientID="PR", StudyDate="20200505", AccessionNumber="A4"),
    }
    put(gateway, acc, [f for files in studies.values() for f in files])
    return Archive(acc, prv, studies)


def study_uid(files: list[bytes]) -> str:
    return uids(files[0])[0]


# ---------------------------------------------------------------- C-FIND
def test_find_study_level_wildcard_and_date_range(gateway, archive, tmp_path):
    a = archive
    got = findscu(gateway, a.prv, a.acc, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=Doe*",
                  "StudyInstanceUID", "StudyDate", "AccessionNumber")
    assert sorted(ds.AccessionNumber for ds in got) == ["A1", "A2", "A3"]

    got = findscu(gateway, a.prv, a.acc, tmp_path, "QueryRetrieveLevel=STUDY", "StudyDate=20200101-20201231",
                  "StudyInstanceUID", "PatientName", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances", "InstitutionName", "InstanceAvailability")
    by_uid = {ds.StudyInstanceUID: ds for ds in got}
    assert set(by_uid) == {study_uid(a.studies["jane1"]), study_uid(a.studies["ann"])}
    jane = by_uid[study_uid(a.studies["jane1"])]
    assert str(jane.PatientName) == "Doe^Jane"
    assert jane.ModalitiesInStudy == "CT"
    assert int(jane.NumberOfStudyRelatedSeries) == 2 and int(jane.NumberOfStudyRelatedInstances) == 3
    assert jane.QueryRetrieveLevel == "STUDY"
    assert jane.RetrieveAETitle == a.acc["ae_title"]
    assert jane.InstanceAvailability == "ONLINE"
    # a key this server cannot match: ignored for matching, returned empty
    assert "InstitutionName" in jane and jane.InstitutionName in ("", None)

    # both together, Patient Root; InstitutionName is not a matching key here, so it is ignored
    got = findscu(gateway, a.prv, a.acc, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=Doe*",
                  "StudyDate=20200101-20201231", "StudyInstanceUID", "InstitutionName=Nowhere", model="-P")
    assert [ds.StudyInstanceUID for ds in got] == [study_uid(a.studies["jane1"])]


def test_find_patient_level_one_answer_per_patient(gateway, archive, tmp_path):
    a = archive
    got = findscu(gateway, a.prv, a.acc, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientName=Doe*",
                  "PatientID", "NumberOfPatientRelatedStudies", "StudyDate", model="-P")
    assert sorted(ds.PatientID for ds in got) == ["PD", "PJ"]
    jane = next(ds for ds in got if ds.PatientID == "PJ")
    assert str(jane.PatientName) == "Doe^Jane" and int(jane.NumberOfPatientRelatedStudies) == 2
    assert jane.QueryRetrieveLevel == "PATIENT"
    assert not jane.get("StudyDate")  # patient attributes only
    # PATIENT is not a level of the Study Root model
    matches, final = find(gateway, a.prv, a.acc, ident("PATIENT", PatientID=""))
    assert matches == [] and final.Status == 0xA900


def test_find_series_and_image_levels(gateway, archive, tmp_path):
    a = archive
    files = a.studies["jane1"]
    st = study_uid(files)
    for model in ("-S", "-P"):
        series = findscu(gateway, a.prv, a.acc, tmp_path, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={st}",
                         "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances", model=model)
        assert sorted(ds.SeriesInstanceUID for ds in series) == sorted({uids(f)[1] for f in files})
        assert sum(int(ds.NumberOfSeriesRelatedInstances) for ds in series) == 3
        assert all(ds.Modality == "CT" for ds in series)
        images = findscu(gateway, a.prv, a.acc, tmp_path, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={st}",
                         "SOPInstanceUID", "SOPClassUID", "InstanceNumber", model=model)
        assert sorted(ds.SOPInstanceUID for ds in images) == sorted(uids(f)[2] for f in files)
        assert {ds.SOPClassUID for ds in images} == {CTImageStorage}
    one_series = uids(files[0])[1]
    images = findscu(gateway, a.prv, a.acc, tmp_path, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={st}",
                     f"SeriesInstanceUID={one_series}", "SOPInstanceUID")
    assert sorted(ds.SOPInstanceUID for ds in images) == sorted(uids(f)[2] for f in files if uids(f)[1] == one_series)


def test_find_non_ascii_names_come_back_in_utf8(gateway):
    acc, prv, _ = setup(gateway)
    put(gateway, acc, [variant(SpecificCharacterSet="ISO_IR 192", PatientName="Müller^Jörg")])
    matches, final = find(gateway, prv, acc, ident("STUDY", SpecificCharacterSet="ISO_IR 192",
                                                  PatientName="Mü*", StudyInstanceUID=""))
    assert final.Status == 0x0000 and len(matches) == 1
    assert matches[0].SpecificCharacterSet == "ISO_IR 192" and str(matches[0].PatientName) == "Müller^Jörg"


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_find_bad_identifier_is_a900(gateway, archive):
    a = archive
    ds = Dataset()
    ds.PatientName = "*"
    matches, final = find(gateway, a.prv, a.acc, ds)
    assert matches == [] and final.Status == 0xA900 and "QueryRetrieveLevel" in final.ErrorComment
    matches, final = find(gateway, a.prv, a.acc, ident("STUDY", StudyDate="2020-garbage"))
    assert matches == [] and final.Status == 0xA900 and "StudyDate" in final.ErrorComment


# ---------------------------------------------------------------- C-GET
def test_getscu_study_returns_exactly_its_instances(gateway, archive, tmp_path):
    a = archive
    files = a.studies["jane1"]
    proc, got = getscu(gateway, a.prv, a.acc, tmp_path, "QueryRetrieveLevel=STUDY",
                       f"StudyInstanceUID={study_uid(files)}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sent = {uids(f)[2]: f for f in files}
    received = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in got}
    assert set(received) == set(sent)
    for sop, path in received.items():
        # getscu writes what it received through its own encoder (sequences become
        # undefined length), so its files are compared as parsed data sets; the
        # byte-for-byte proof over the wire is the pynetdicom test below
        assert same_content(sent[sop], path)
    [entry] = audit(gateway, a.acc["id"], "study.c-get")[-1:]
    assert entry.study_uid == study_uid(files) and json.loads(entry.detail)["instances"] == 3

    # Patient Root, PATIENT level: every study of the patient
    proc, got = getscu(gateway, a.prv, a.acc, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=PJ", model="-P")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jane = a.studies["jane1"] + a.studies["jane2"]
    assert sorted(dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in got) == sorted(uids(f)[2] for f in jane)


def test_c_get_sends_the_stored_data_set_byte_for_byte(gateway, archive):
    a = archive
    files = a.studies["john"]
    out = c_get(gateway, a.prv, a.acc, ident("STUDY", StudyInstanceUID=study_uid(files)))
    assert out.final.Status == 0x0000 and out.final.NumberOfCompletedSuboperations == 1
    assert out.received == [dataset_bytes(files[0])]
    # IMAGE level names one instance
    jane = a.studies["jane1"]
    st, se, sop = uids(jane[1])
    out = c_get(gateway, a.prv, a.acc, ident("IMAGE", StudyInstanceUID=st, SeriesInstanceUID=se, SOPInstanceUID=sop))
    assert out.final.Status == 0x0000 and out.received == [dataset_bytes(jane[1])]


def test_c_get_unknown_study_is_success_with_no_sub_operations(gateway, archive):
    a = archive
    out = c_get(gateway, a.prv, a.acc, ident("STUDY", StudyInstanceUID="1.2.3.4.5.6.7.8.9"))
    assert out.final.Status == 0x0000 and out.received == []
    assert out.final.NumberOfCompletedSuboperations == 0


# ---------------------------------------------------------------- C-MOVE
@pytest.fixture
def storescp(tmp_path):
    (tmp_path / "dest").mkdir()
    scp = StoreSCP(tmp_path / "dest", "DEST")
    yield scp
    scp.stop()


def register_destination(gw, port: int, ae: str | None = None) -> dict:
    import secrets

    ae = ae or ("D" + secrets.token_hex(5).upper())
    return gw.cli_json("provider", "add", "--name", f"viewer {ae}", "--ae-title", ae, "--network", "127.0.0.0/8",
                       "--host", "127.0.0.1", "--port", str(port)) | {"ae_title": ae}


def test_movescu_to_a_registered_destination_with_consent(gateway, archive, storescp, tmp_path):
    a = archive
    dest = register_destination(gateway, storescp.port)
    gateway.link(a.acc, dest, push=False, pull=True)
    files = a.studies["jane1"]
    proc = dcmtk("movescu", "-S", "-aet", a.prv["ae_title"], "-aec", a.acc["ae_title"], "-aem", dest["ae_title"],
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid(files)}",
                 "127.0.0.1", str(gateway.dicom_port))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = storescp.files()
    sent = {uids(f)[2]: f for f in files}
    assert {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in got} == set(sent)
    for p in got:
        assert same_content(sent[dcmread(p, stop_before_pixels=True).SOPInstanceUID], p)
    [entry] = audit(gateway, a.acc["id"], "study.c-move")[-1:]
    assert json.loads(entry.detail) == {"instances": 3, "destination": dest["ae_title"]}


def test_move_to_the_requesting_provider_itself(gateway, storescp):
    acc = gateway.new_account()
    me = register_destination(gateway, storescp.port)
    gateway.link(acc, me, push=False, pull=True)
    files = [variant()]
    put(gateway, acc, files)
    final = c_move(gateway, me, acc, ident("STUDY", StudyInstanceUID=study_uid(files)), me["ae_title"])
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 1
    assert len(storescp.files()) == 1


def test_move_refused_destinations_are_a801(gateway, archive, storescp):
    a = archive
    q = ident("STUDY", StudyInstanceUID=study_uid(a.studies["john"]))
    final = c_move(gateway, a.prv, a.acc, q, "NOSUCHAE")
    assert final.Status == 0xA801 and "not a registered provider" in final.ErrorComment
    # registered, reachable, but the account holder never linked it
    stranger = register_destination(gateway, storescp.port)
    final = c_move(gateway, a.prv, a.acc, q, stranger["ae_title"])
    assert final.Status == 0xA801 and final.ErrorComment == "destination has no consent for this account"
    # linked, but for push only
    gateway.link(a.acc, stranger, push=True, pull=False)
    assert c_move(gateway, a.prv, a.acc, q, stranger["ae_title"]).Status == 0xA801
    # registered with a pull link but without host and port
    no_host = gateway.new_provider()
    gateway.link(a.acc, no_host, push=False, pull=True)
    final = c_move(gateway, a.prv, a.acc, q, no_host["ae_title"])
    assert final.Status == 0xA801 and "host" in final.ErrorComment
    assert storescp.files() == []


# ---------------------------------------------------------------- consent
def test_push_only_provider_is_refused(gateway, archive, tmp_path):
    a = archive
    acc, prv, _ = setup(gateway, push=True, pull=False)
    pushed = variant(PatientName="Push^Only")
    put(gateway, acc, [pushed])
    matches, final = find(gateway, prv, acc, ident("STUDY", PatientName="*", StudyInstanceUID=""))
    assert matches == [] and final.Status == 0xC000 and "no pull consent" in final.ErrorComment
    proc = dcmtk("findscu", "-S", "-X", "-od", str(tmp_path), "-aet", prv["ae_title"], "-aec", acc["ae_title"],
                 "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName", "127.0.0.1", str(gateway.dicom_port))
    assert list(tmp_path.iterdir()) == []
    out = c_get(gateway, prv, acc, ident("STUDY", StudyInstanceUID=study_uid([pushed])))
    assert out.final.Status == 0xC000 and "no pull consent" in out.final.ErrorComment
    assert out.received == [] and out.final.NumberOfCompletedSuboperations == 0


def test_revoked_pull_link_rejects_the_next_association(gateway, tmp_path):
    acc, prv, link = setup(gateway)
    put(gateway, acc, [variant()])
    assert len(findscu(gateway, prv, acc, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID")) == 1
    gateway.revoke(link)
    assoc = assoc_for(gateway, prv, acc, StudyRootQueryRetrieveInformationModelFind)
    assert not assoc.is_established and assoc.is_rejected
    p = assoc.acceptor.primitive
    assert (p.result, p.result_source, p.diagnostic) == CALLED_NOT_RECOGNISED


def test_sensitive_study_needs_the_sensitive_flag(gateway, tmp_path, storescp):
    acc = gateway.new_account()
    plain = variant(PatientName="Open^Study")
    secret = variant(PatientName="Secret^Study", ConfidentialityCode="PSY")
    put(gateway, acc, [plain, secret], sensitive=True)
    st = study_uid([secret])

    prv = gateway.new_provider()
    gateway.link(acc, prv, push=False, pull=True)
    got = findscu(gateway, prv, acc, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName", "StudyInstanceUID")
    assert [ds.StudyInstanceUID for ds in got] == [study_uid([plain])]
    assert findscu(gateway, prv, acc, tmp_path, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={st}",
                   "SOPInstanceUID") == []
    out = c_get(gateway, prv, acc, ident("STUDY", StudyInstanceUID=st))
    assert out.received == [] and out.final.Status == 0xC000
    assert out.final.NumberOfCompletedSuboperations == 0
    assert out.final.ErrorComment == "the study is sensitive; the link lacks the sensitive flag"
    proc, files = getscu(gateway, prv, acc, tmp_path, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={st}")
    assert files == []

    flagged = gateway.new_provider()
    gateway.link(acc, flagged, push=False, pull=True, sensitive=True)
    got = findscu(gateway, flagged, acc, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID")
    assert sorted(ds.StudyInstanceUID for ds in got) == sorted([study_uid([plain]), st])
    out = c_get(gateway, flagged, acc, ident("STUDY", StudyInstanceUID=st))
    assert out.final.Status == 0x0000 and out.received == [dataset_bytes(secret)]

    # C-MOVE of the sensitive study: the destination needs the flag too
    dest = register_destination(gateway, storescp.port)
    gateway.link(acc, dest, push=False, pull=True)
    final = c_move(gateway, flagged, acc, ident("STUDY", StudyInstanceUID=st), dest["ae_title"])
    assert final.Status == 0xA801 and "sensitive" in final.ErrorComment
    assert storescp.files() == []
