"""Trend statistics: coarse cells only, small cells suppressed, no identifiers."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone

import pytest

from gateway.identity.accounts import create_account, create_user
from gateway.db.base import utcnow
from gateway.db.models import Patient, Series, Study
from gateway.ops.stats import _age_band, trend_statistics
from tests.unit.gateway.ops.test_usage import pg_services  # noqa: F401  (fixture)

_seq = itertools.count(1)


@pytest.fixture
def acc(services):
    with services.db.session(write=True) as s:
        owner = create_user(s, "owner@example.org", "password")
        account = create_account(s, owner, None, actor="t")
    return account.id


def add_study(svc, account_id, *, modalities=("CT",), sex="F", birth="19800101", age=None,
              study_date="20261115", sensitive=False, deleted=False, created_at=None,
              name="DOE^JANE"):
    n = next(_seq)
    with svc.db.session(write=True) as s:
        p = Patient(account_id=account_id, patient_key=f"PID{n}^", patient_id=f"PID{n}", patient_name=name,
                    birth_date=birth, sex=sex)
        s.add(p)
        s.flush()
        st = Study(account_id=account_id, patient_pk=p.id, study_uid=f"1.2.826.0.1.3680043.2.{n}",
                   study_date=study_date, patient_age=age, sensitive=sensitive,
                   labels="PSY" if sensitive else "", created_at=created_at or utcnow(),
                   deleted_at=utcnow() if deleted else None)
        s.add(st)
        s.flush()
        for i, m in enumerate(modalities):
            s.add(Series(study_pk=st.id, series_uid=f"1.2.826.0.1.3680043.3.{n}.{i}", modality=m))
    return n


def cells(result):
    return {(c["month"], c["modality"], c["sex"], c["age_band"]): c["studies"] for c in result["cells"]}


def test_large_cell_shown_small_cell_suppressed(services, acc):
    for _ in range(25):
        add_study(services, acc, modalities=("CT",), sex="F", birth="19800101", study_date="20261115")  # 46
    for _ in range(9):
        add_study(services, acc, modalities=("MR",), sex="M", birth="19800101", study_date="20261115")
    r = trend_statistics(services.db, k=10)
    assert r == {
        "k": 10,
        "cells": [{"month": "2026-11", "modality": "CT", "sex": "F", "age_band": "40-49", "studies": 25}],
        "suppressed_cells": 1,
    }
    # k is configurable: with k=5 the MR cell is shown
    r5 = trend_statistics(services.db, k=5)
    assert cells(r5) == {("2026-11", "CT", "F", "40-49"): 25, ("2026-11", "MR", "M", "40-49"): 9}
    assert r5["suppressed_cells"] == 0 and r5["k"] == 5


def test_suppressed_counts_cells_not_studies(services, acc):
    for _ in range(3):
        add_study(services, acc, modalities=("US",), study_date="20260105")
    for _ in range(2):
        add_study(services, acc, modalities=("US",), study_date="20260205")
    r = trend_statistics(services.db, k=10)
    assert r["cells"] == [] and r["suppressed_cells"] == 2


def test_distinct_studies_per_modality(services, acc):
    # 10 studies with two CT series and one PT series: 10 under CT, 10 under PT
    for _ in range(10):
        add_study(services, acc, modalities=("CT", "CT", "PT"), sex="M", age="063Y")
    r = trend_statistics(services.db, k=10)
    assert cells(r) == {("2026-11", "CT", "M", "60-69"): 10, ("2026-11", "PT", "M", "60-69"): 10}


def test_deleted_and_sensitive_studies_are_excluded(services, acc):
    for _ in range(10):
        add_study(services, acc)
    for _ in range(5):
        add_study(services, acc, deleted=True)
    for _ in range(5):
        add_study(services, acc, sensitive=True)
    r = trend_statistics(services.db, k=10)
    assert cells(r) == {("2026-11", "CT", "F", "40-49"): 10}
    assert r["suppressed_cells"] == 0


def test_studies_of_a_deleted_account_are_excluded(services, acc):
    from gateway.db.models import Account

    for _ in range(12):
        add_study(services, acc)
    with services.db.session(write=True) as s:
        s.get(Account, acc).deleted_at = utcnow()
    assert trend_statistics(services.db, k=10) == {"k": 10, "cells": [], "suppressed_cells": 0}


def test_missing_sex_and_age_are_unknown(services, acc):
    for sex in [None, "", "X", " f "] * 3:
        add_study(services, acc, sex=sex, birth=None, age=None)
    r = trend_statistics(services.db, k=3)
    assert cells(r) == {("2026-11", "CT", "unknown", "unknown"): 9, ("2026-11", "CT", "F", "unknown"): 3}


def test_missing_or_invalid_study_date_falls_back_to_indexing_month(services, acc):
    created = datetime(2026, 10, 31, 23, 30, tzinfo=timezone.utc)
    for d in [None, "", "2026", "20261399", "2026AB01"] * 2 + ["20261015"]:
        add_study(services, acc, study_date=d, created_at=created, birth="19800101", modalities=("CR",))
    r = trend_statistics(services.db, k=1)
    # birth date vs the fallback date: 46 years on 2026-10-31
    assert cells(r) == {("2026-10", "CR", "F", "40-49"): 11}


def test_odd_modalities(services, acc):
    for _ in range(2):
        add_study(services, acc, modalities=(None,))
        add_study(services, acc, modalities=("ct ",))  # trimmed, upper-cased: CT
        add_study(services, acc, modalities=("X-Ray!", "weird?"))  # one study, two bad codes: counted once
    r = trend_statistics(services.db, k=1)
    assert cells(r) == {
        ("2026-11", "unknown", "F", "40-49"): 2,
        ("2026-11", "CT", "F", "40-49"): 2,
        ("2026-11", "other", "F", "40-49"): 2,
    }


def test_counts_across_accounts_are_combined(services, acc):
    with services.db.session(write=True) as s:
        other = create_account(s, create_user(s, "o2@example.org", "password"), None, actor="t").id
    for _ in range(5):
        add_study(services, acc)
        add_study(services, other)
    assert cells(trend_statistics(services.db, k=10)) == {("2026-11", "CT", "F", "40-49"): 10}


def test_no_identifiers_in_the_answer(services, acc):
    uids = []
    for _ in range(12):
        n = add_study(services, acc, name="SMITH^ALICE", birth="19800101", study_date="20261115")
        uids.append(f"1.2.826.0.1.3680043.2.{n}")
    text = json.dumps(trend_statistics(services.db, k=10))
    assert "SMITH" in "SMITH^ALICE"  # sanity
    for needle in [acc, "SMITH", "ALICE", "owner@example.org", "19800101", "20261115", "2026-11-15", "PID",
                   "1.2.826", *uids]:
        assert needle not in text, needle
    assert json.loads(text)["cells"][0]["studies"] == 12
    assert set(json.loads(text)) == {"k", "cells", "suppressed_cells"}


def test_k_must_be_positive(services):
    with pytest.raises(ValueError):
        trend_statistics(services.db, k=0)


@pytest.mark.parametrize(
    "age, birth, at, band",
    [
        ("045Y", None, datetime(2026, 1, 1).date(), "40-49"),
        ("009Y", None, datetime(2026, 1, 1).date(), "0-9"),
        ("010Y", None, datetime(2026, 1, 1).date(), "10-19"),
        ("089Y", None, datetime(2026, 1, 1).date(), "80-89"),
        ("090Y", None, datetime(2026, 1, 1).date(), "90+"),
        ("104Y", None, datetime(2026, 1, 1).date(), "90+"),
        ("018M", None, datetime(2026, 1, 1).date(), "0-9"),
        ("130M", None, datetime(2026, 1, 1).date(), "10-19"),
        ("003W", None, datetime(2026, 1, 1).date(), "0-9"),
        ("012D", None, datetime(2026, 1, 1).date(), "0-9"),
        (None, "19860102", datetime(2026, 1, 1).date(), "30-39"),  # birthday not yet reached: 39
        (None, "19860101", datetime(2026, 1, 1).date(), "40-49"),
        ("45", "19860101", datetime(2026, 1, 1).date(), "40-49"),  # bad AS: birth date used
        (None, "20270101", datetime(2026, 1, 1).date(), "unknown"),  # born after the study
        (None, "1986", datetime(2026, 1, 1).date(), "unknown"),
        (None, None, datetime(2026, 1, 1).date(), "unknown"),
        ("999Y", None, datetime(2026, 1, 1).date(), "unknown"),
    ],
)
def test_age_bands(age, birth, at, band):
    assert _age_band(age, birth, at) == band


@pytest.mark.postgres
def test_same_answer_on_postgresql(pg_services):
    svc = pg_services
    with svc.db.session(write=True) as s:
        account = create_account(s, create_user(s, "pg@example.org", "password"), None, actor="t").id
    for _ in range(25):
        add_study(svc, account, modalities=("CT", "CT"), sex="F", birth="19800101", study_date="20261115")
    for _ in range(9):
        add_study(svc, account, modalities=("MR",), sex="M", age="052Y")
    for _ in range(3):
        add_study(svc, account, deleted=True)
        add_study(svc, account, sensitive=True)
    created = datetime(2026, 10, 31, 23, 30, tzinfo=timezone.utc)
    for d in [None, "20261399", "2026AB01", "2026"] * 3:
        add_study(svc, account, study_date=d, created_at=created, sex=None, modalities=("CR", "bad!"))
    r = trend_statistics(svc.db, k=10)
    assert cells(r) == {
        ("2026-11", "CT", "F", "40-49"): 25,
        ("2026-10", "CR", "unknown", "40-49"): 12,
        ("2026-10", "other", "unknown", "40-49"): 12,
    }
    assert r["suppressed_cells"] == 1 and account not in json.dumps(r)
