"""The query service in-process: QIDO and C-FIND queries built by one constructor each, run under consent."""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import update

from consent import links
from consent.decision import Principal
from consent.errors import NotPermitted, NotVisible
from consent.providers import add_provider
from gateway.archive.query import (DEFAULT_LIMIT, MAX_LIMIT, Query, QueryError, query_retrieve_level,
                                   visible_studies)
from gateway.db.models import Study
from gateway.errors import Invalid, classify
from gateway.identity.accounts import create_account, create_user
from tests.support.data import uids, variant


# ---------------------------------------------------------------- QIDO parameters
def test_from_qido_reads_includefield_matches_and_paging():
    q = Query.from_qido("series", [("includefield", "00081030,all"), ("PatientName", "Doe*"),
                                   ("includefield", "StudyID"), ("limit", "5"), ("offset", "10"),
                                   ("fuzzymatching", "true"), ("0020000D", "1.2.3")], study_uid="9.9")
    assert (q.level, q.study_uid, q.series_uid) == ("series", "9.9", None)
    assert q.include == {"StudyDescription", "StudyID"} and q.include_all
    assert q.filters == {"PatientName": "Doe*", "StudyInstanceUID": "1.2.3"}
    assert (q.fuzzy, q.limit, q.offset) == (True, 5, 10)


def test_from_qido_defaults_and_first_value_wins():
    q = Query.from_qido("study", [])
    assert (q.fuzzy, q.limit, q.offset, q.filters, q.include) == (False, DEFAULT_LIMIT, 0, {}, set())
    assert Query.from_qido("study", [("limit", "7"), ("limit", "9999")]).limit == 7


@pytest.mark.parametrize("params, message", [
    ([("fuzzymatching", "yes")], "fuzzymatching must be true or false"),
    ([("limit", "0")], "limit must be a whole number from 1 to 1000"),
    ([("limit", str(MAX_LIMIT + 1))], "limit must be a whole number"),
    ([("offset", "-1")], "offset must be a whole number"),
    ([("NoSuchAttribute", "x")], "is not a known DICOM attribute"),
    ([("includefield", "99999999")], "is not a known DICOM attribute"),
])
def test_from_qido_refuses_what_it_cannot_run(params, message):
    with pytest.raises(QueryError, match=message) as refused:
        Query.from_qido("study", params)
    assert classify(refused.value) is Invalid


# ---------------------------------------------------------------- C-FIND identifiers
def identifier(level: str | None, **keys) -> Dataset:
    ds = Dataset()
    if level is not None:
        ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def test_from_identifier_matches_only_what_can_be_matched():
    ds = identifier("SERIES", PatientName="DOE*", StudyDate="", Modality="CT", NumberOfStudyRelatedSeries="",
                    SOPInstanceUID="1.2", StudyInstanceUID="", SpecificCharacterSet="ISO_IR 100")
    q = Query.from_identifier(ds, patient_root=False)
    assert (q.level, q.qr_level, q.limit) == ("series", "SERIES", MAX_LIMIT)
    assert q.filters == {"PatientName": "DOE*", "Modality": "CT"}  # SOPInstanceUID is below the level
    assert {"PatientName", "StudyDate", "Modality", "NumberOfStudyRelatedSeries"} <= q.include
    assert "SOPInstanceUID" not in q.include and "SpecificCharacterSet" not in q.requested
    assert q.requested["StudyDate"][2] is None and q.requested["PatientName"][1:] == ("PN", "DOE*")


def test_from_identifier_patient_level_runs_at_study_level_on_patient_keys():
    ds = identifier("PATIENT", PatientID="P1", StudyDate="20200101", NumberOfPatientRelatedInstances="")
    q = Query.from_identifier(ds, patient_root=True)
    assert (q.level, q.qr_level) == ("study", "PATIENT")
    assert q.filters == {"PatientID": "P1"}  # a study key does not match at patient level
    assert {"PatientID", "PatientName", "NumberOfStudyRelatedInstances"} <= q.include


@pytest.mark.parametrize("level, patient_root", [(None, True), ("PATIENT", False), ("FRAME", True)])
def test_query_retrieve_level_must_fit_the_model(level, patient_root):
    with pytest.raises(QueryError, match="QueryRetrieveLevel"):
        Query.from_identifier(identifier(level), patient_root=patient_root)
    with pytest.raises(QueryError):
        query_retrieve_level(identifier(level), patient_root=patient_root)


# ---------------------------------------------------------------- searching under consent
@pytest.fixture
def archive(services):
    """An account with two studies of patient P1 and one of P2 (the last sensitive); a provider with
    pull consent (no sensitive flag), one with push only."""
    with services.db.session(write=True) as s:
        owner = create_user(s, "q@example.org", "password")
        acc = create_account(s, owner, "QACCOUNT", actor="t")
        puller = add_provider(s, name="R", ae_title="READER", networks=[], host=None, port=None, actor="t")
        pusher = add_provider(s, name="W", ae_title="WRITER", networks=[], host=None, port=None, actor="t")
        links.create_link(s, account_id=acc.id, provider_id=puller.id, push=False, pull=True, sensitive=False,
                          expires_at=None, actor="t")
        links.create_link(s, account_id=acc.id, provider_id=pusher.id, push=True, pull=False, sensitive=False,
                          expires_at=None, actor="t")
        ids = acc.id, owner.id, Principal.for_provider(puller), Principal.for_provider(pusher)
    acc_id, owner_id, reader, writer = ids
    holder = Principal.for_user(owner_id, "q@example.org")
    bodies = [variant(PatientID="P1", PatientName="One^Pat"), variant(PatientID="P1", PatientName="One^Pat"),
              variant(PatientID="P2", PatientName="Two^Pat")]
    study_of_p1 = uids(bodies[1])[0]
    bodies.append(variant(PatientID="P1", PatientName="One^Pat", study=study_of_p1))  # 2 instances there
    for b in bodies:
        assert services.ingest.store_instance(holder, acc_id, io.BytesIO(b), len(b)).outcome.ok
    sensitive = uids(bodies[2])[0]
    with services.db.session(write=True) as s:
        s.execute(update(Study).where(Study.study_uid == sensitive).values(sensitive=True))
    return services, acc_id, holder, reader, writer, [uids(b)[0] for b in bodies[:3]]


def studies_seen(svc, principal, acc):
    return sorted(r["StudyInstanceUID"] for r in svc.query.search(principal, acc, Query(level="study")))


def test_search_shows_sensitive_studies_only_within_the_grant(archive):
    svc, acc, holder, reader, _, studies = archive
    assert studies_seen(svc, holder, acc) == sorted(studies)
    assert studies_seen(svc, reader, acc) == sorted(studies[:2])
    assert sorted(s["study"] for s in visible_studies_of(svc, reader, acc)) == sorted(studies[:2])
    assert sorted(s["study"] for s in visible_studies_of(svc, holder, acc)) == sorted(studies)


def visible_studies_of(svc, principal, acc):
    with svc.db.session() as s:
        return visible_studies(s, principal, acc)


def test_search_refuses_without_standing_or_pull(archive):
    svc, acc, _, _, writer, _ = archive
    with pytest.raises(NotPermitted, match="no pull consent"):
        svc.query.search(writer, acc, Query(level="study"))
    with pytest.raises(NotVisible):
        svc.query.search(Principal.for_user("usr_nobody", "x"), acc, Query(level="study"))
    assert visible_studies_of(svc, writer, acc) == []


def test_patient_level_matches_fold_one_result_per_patient(archive):
    svc, acc, holder, reader, _, _ = archive
    ds = identifier("PATIENT", PatientID="", PatientName="", NumberOfPatientRelatedStudies="",
                    NumberOfPatientRelatedInstances="")
    q = Query.from_identifier(ds, patient_root=True)
    folded = {r["PatientID"]: r for r in svc.query.matches(holder, acc, q)}
    assert set(folded) == {"P1", "P2"}
    assert folded["P1"]["NumberOfPatientRelatedStudies"] == 2
    assert folded["P1"]["NumberOfPatientRelatedInstances"] == 3
    assert folded["P1"]["PatientName"] == "One^Pat" and "StudyInstanceUID" not in folded["P1"]
    assert {r["PatientID"] for r in svc.query.matches(reader, acc, q)} == {"P1"}  # P2's study is sensitive


def test_matches_page_through_everything(archive, monkeypatch):
    svc, acc, holder, _, _, studies = archive
    monkeypatch.setattr("gateway.archive.query.MAX_LIMIT", 1)
    q = Query(level="study", include={"StudyInstanceUID"})
    assert sorted(r["StudyInstanceUID"] for r in svc.query.matches(holder, acc, q)) == sorted(studies)


def test_matches_is_lazy_and_refuses_at_the_first_match(archive):
    svc, acc, _, _, writer, _ = archive
    matches = svc.query.matches(writer, acc, Query(level="study"))  # nothing asked yet
    with pytest.raises(NotPermitted):
        next(matches)


def test_studies_of_patients_and_the_retrieve_ae_title(archive):
    svc, acc, holder, reader, _, studies = archive
    assert sorted(svc.query.studies_of_patients(holder, acc, ["P1", "P2"])) == sorted(studies)
    assert sorted(svc.query.studies_of_patients(reader, acc, ["P1", "P2"])) == sorted(studies[:2])
    assert svc.query.retrieve_ae_title(acc) == "QACCOUNT"
    assert svc.query.retrieve_ae_title("acc_nope") == ""
