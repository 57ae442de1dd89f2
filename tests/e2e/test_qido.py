"""QIDO-RS through plain HTTP and dicomweb-client: every matching rule, paging, consent."""

from __future__ import annotations

import pytest
import requests

from tests.support.data import uids, variant
from tests.support.gateway import user_token

PEOPLE = [
    # name, id, date, time, modality, accession, description
    ("Doe^John", "P1", "20200115", "101500", "CT", "A100", "Chest CT"),
    ("Doe^Jane", "P2", "20200301", "083000", "MR", "A200", "Brain MRI"),
    ("Müller^Jürgen", "P3", "20210620", "141010", "CT", "A300", "Abdomen"),
    ("Smith^Anna", "P4", "20221231", "235959", "US", "A400", "Thyroid ultrasound"),
]


@pytest.fixture(scope="module")
def world(gateway):
    """One account with four studies (two series in the first), a token for the owner."""
    acc = gateway.new_account()
    prv = gateway.new_provider()
    gateway.link(acc, prv, push=True, pull=True)
    bodies = []
    for name, pid, date, time, mod, acn, desc in PEOPLE:
        first = variant(PatientName=name, PatientID=pid, StudyDate=date, StudyTime=time, Modality=mod,
                        AccessionNumber=acn, StudyDescription=desc, SeriesNumber=1, InstanceNumber=1)
        bodies.append(first)
        study, series, _ = uids(first)
        if pid == "P1":
            bodies.append(variant(PatientName=name, PatientID=pid, StudyDate=date, StudyTime=time, Modality=mod,
                                  AccessionNumber=acn, StudyDescription=desc, study=study, series=series,
                                  SeriesNumber=1, InstanceNumber=2))
            bodies.append(variant(PatientName=name, PatientID=pid, StudyDate=date, StudyTime=time, Modality="SR",
                                  AccessionNumber=acn, StudyDescription=desc, study=study, SeriesNumber=2,
                                  InstanceNumber=1))
    assert gateway.stow(acc["id"], bodies, token=prv["token"]).status_code == 200
    token = user_token(gateway, acc["owner"])
    return gateway, acc, prv, token, bodies


def qido(world, path="studies", token=None, **params):
    gw, acc, _, owner_token, _ = world
    return requests.get(f"{gw.url}/accounts/{acc['id']}/dicomweb/{path}", params=params,
                        headers={"Authorization": f"Bearer {token or owner_token}"}, timeout=30)


def values(rsp, tag):
    assert rsp.status_code == 200, rsp.text
    out = []
    for item in rsp.json():
        v = item.get(tag, {}).get("Value", [None])[0]
        out.append(v["Alphabetic"] if isinstance(v, dict) else v)
    return out


@pytest.mark.parametrize("params,expected", [
    ({}, ["P1", "P2", "P3", "P4"]),
    ({"PatientID": "P2"}, ["P2"]),
    ({"00100020": "P3"}, ["P3"]),
    ({"PatientName": "Doe^John"}, ["P1"]),
    ({"PatientName": "doe*"}, ["P1", "P2"]),  # PN matching is case-insensitive
    ({"PatientName": "D?e^J*"}, ["P1", "P2"]),
    ({"PatientName": "Doe^J?n*"}, ["P2"]),
    ({"PatientName": "Müller*"}, ["P3"]),
    ({"StudyDate": "20200101-20201231"}, ["P1", "P2"]),
    ({"StudyDate": "20210101-"}, ["P3", "P4"]),
    ({"StudyDate": "-20200115"}, ["P1"]),
    ({"StudyDate": "20221231"}, ["P4"]),
    ({"StudyTime": "080000-120000"}, ["P1", "P2"]),
    ({"StudyTime": "2359-"}, ["P4"]),
    ({"ModalitiesInStudy": "CT"}, ["P1", "P3"]),
    ({"ModalitiesInStudy": "SR"}, ["P1"]),
    ({"AccessionNumber": "A*0"}, ["P1", "P2", "P3", "P4"]),
    ({"AccessionNumber": "a100"}, []),  # other strings match case-sensitively
    ({"StudyDescription": "*MR*"}, ["P2"]),
])
def test_study_matching(world, params, expected):
    assert values(qido(world, **params), "00100020") == expected


def test_uid_list_matching(world):
    _, _, _, _, bodies = world
    s1, s2 = uids(bodies[0])[0], uids(bodies[-1])[0]
    got = values(qido(world, StudyInstanceUID=f"{s1},{s2}"), "0020000D")
    assert sorted(got) == sorted([s1, s2])
    got = values(qido(world, StudyInstanceUID=f"{s1}\\{s2}"), "0020000D")
    assert sorted(got) == sorted([s1, s2])


@pytest.mark.parametrize("name,expected", [
    ("doe", ["P1", "P2"]), ("JOHN", ["P1"]), ("muller", ["P3"]), ("jurgen muller", ["P3"]),
    ("mull", ["P3"]), ("anna smith", ["P4"]), ("smyth", []),
])
def test_fuzzy_person_names(world, name, expected):
    assert values(qido(world, PatientName=name, fuzzymatching="true"), "00100020") == expected


def test_default_return_attributes_and_counts(world):
    rsp = qido(world, PatientID="P1")
    assert rsp.headers["Content-Type"].startswith("application/dicom+json")
    [item] = rsp.json()
    for tag in ("00080020", "00080030", "00080050", "00080061", "00080090", "00100010", "00100020",
                "00100030", "00100040", "0020000D", "00200010", "00201206", "00201208", "00081190"):
        assert tag in item, tag
    assert sorted(item["00080061"]["Value"]) == ["CT", "SR"]
    assert item["00201206"]["Value"] == [2] and item["00201208"]["Value"] == [3]
    assert item["00100010"]["Value"] == [{"Alphabetic": "Doe^John"}]
    assert item["00081190"]["Value"][0].endswith(f"/studies/{item['0020000D']['Value'][0]}")


def test_series_and_instances_levels_and_nesting(world):
    _, _, _, _, bodies = world
    study, series, sop = uids(bodies[0])
    rsp = qido(world, f"studies/{study}/series")
    assert sorted(values(rsp, "00080060")) == ["CT", "SR"]
    assert values(qido(world, "series", Modality="MR"), "00080060") == ["MR"]
    assert len(qido(world, "series").json()) == 5
    rsp = qido(world, f"studies/{study}/series/{series}/instances")
    assert sorted(values(rsp, "00080018")) == sorted([uids(bodies[0])[2], uids(bodies[1])[2]])
    assert len(qido(world, f"studies/{study}/instances").json()) == 3
    assert values(qido(world, "instances", SOPInstanceUID=sop), "00080018") == [sop]
    assert values(qido(world, "instances", InstanceNumber="2"), "00200013") == [2]
    [item] = qido(world, "instances", SOPInstanceUID=sop).json()
    assert item["00280010"]["Value"] == [128] and "0020000E" in item and "0020000D" in item


def test_includefield(world):
    [item] = qido(world, PatientID="P2", includefield="PatientAge,00080060").json()
    assert "00101010" in item  # PatientAge, empty but present
    [item] = qido(world, PatientID="P2", includefield="all").json()
    assert "00101010" in item and "00100021" in item
    assert qido(world, includefield="NotAKeyword").status_code == 400


def test_limit_offset_stable_order(world):
    ids = values(qido(world), "00100020")
    pages = [values(qido(world, limit=2, offset=o), "00100020") for o in (0, 2, 4)]
    assert pages[0] + pages[1] == ids and pages[2] == []
    assert qido(world, limit=1001).status_code == 400
    assert qido(world, limit=0).status_code == 400
    assert qido(world, offset=-1).status_code == 400
    assert qido(world, limit="ten").status_code == 400


@pytest.mark.parametrize("params", [
    {"StudyDate": "2020-01-01"}, {"StudyDate": "20201301"}, {"StudyDate": "20200101-20190101"},
    {"StudyDate": "2020-2021-2022"}, {"StudyTime": "25:00"}, {"StudyInstanceUID": "1.2..3"},
    {"StudyInstanceUID": "../../etc"}, {"NoSuchAttribute": "x"}, {"fuzzymatching": "maybe"},
    {"SeriesNumber": "one"}, {"Modality": "CT"},
])
def test_bad_queries_are_400(world, params):
    rsp = qido(world, **params)
    assert rsp.status_code == 400, (params, rsp.text)
    assert rsp.json()["error"]


def test_bad_uid_in_path_400(world):
    assert qido(world, "studies/1.2.x/series").status_code == 400


def test_not_acceptable_media_type_406(world):
    gw, acc, _, token, _ = world
    rsp = requests.get(f"{gw.url}/accounts/{acc['id']}/dicomweb/studies",
                       headers={"Authorization": f"Bearer {token}", "Accept": "application/dicom+xml"}, timeout=30)
    assert rsp.status_code == 406


def test_dicomweb_client_search(world):
    from dicomweb_client.api import DICOMwebClient

    gw, acc, _, token, _ = world
    client = DICOMwebClient(url=f"{gw.url}/accounts/{acc['id']}/dicomweb",
                            headers={"Authorization": f"Bearer {token}"})
    studies = client.search_for_studies(search_filters={"PatientName": "Doe*"})
    assert len(studies) == 2
    series = client.search_for_series(search_filters={"Modality": "CT"})
    assert len(series) == 2
    instances = client.search_for_instances(study_instance_uid=studies[0]["0020000D"]["Value"][0])
    assert len(instances) >= 1


def test_consent_on_queries(world):
    gw, acc, prv, _, _ = world
    # the provider has pull: it sees the same studies
    assert len(qido(world, token=prv["token"]).json()) == 4
    # push-only provider: 403; stranger: 404; no credentials: 401
    pusher = gw.new_provider()
    gw.link(acc, pusher, push=True)
    assert qido(world, token=pusher["token"]).status_code == 403
    stranger = gw.new_account()
    assert qido(world, token=user_token(gw, stranger["owner"])).status_code == 404
    rsp = requests.get(f"{gw.url}/accounts/{acc['id']}/dicomweb/studies", timeout=30)
    assert rsp.status_code == 401


def test_sensitive_studies_hidden_without_the_flag(gateway):
    acc = gateway.new_account()
    sender = gateway.new_provider()
    gateway.link(acc, sender, push=True, sensitive=True)
    assert gateway.stow(acc["id"], [variant(PatientID="S1", ConfidentialityCode="PSY"), variant(PatientID="S2")],
                        token=sender["token"]).status_code == 200
    plain = gateway.new_provider()
    gateway.link(acc, plain, pull=True, push=False)
    flagged = gateway.new_provider()
    gateway.link(acc, flagged, pull=True, push=False, sensitive=True)
    owner = user_token(gateway, acc["owner"])

    def ids(token, path="studies"):
        rsp = requests.get(f"{gateway.url}/accounts/{acc['id']}/dicomweb/{path}",
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)
        return sorted(i["00100020"]["Value"][0] for i in rsp.json()) if path == "studies" else len(rsp.json())

    assert ids(plain["token"]) == ["S2"]
    assert ids(plain["token"], "instances") == 1
    assert ids(flagged["token"]) == ["S1", "S2"]
    assert ids(owner) == ["S1", "S2"]
