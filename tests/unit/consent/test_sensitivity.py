from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from consent.sensitivity import DEFAULT_RULES, classify, load_rules


def ds(**attrs) -> Dataset:
    d = Dataset()
    for k, v in attrs.items():
        setattr(d, k, v)
    return d


@pytest.mark.parametrize("code", ["ETH", "PSY", "SDV", "HIV", "SEX", "STD", "psy"])
def test_default_codes_in_confidentiality_code(code):
    assert classify(ds(ConfidentialityCode=code)) == [code.upper()]


def test_constraint_description_and_nested_sequences():
    inner = ds(ConfidentialityConstraintOnPatientDataDescription="restricted: HIV and STD")
    outer = ds(RequestAttributesSequence=[inner])
    assert classify(outer) == ["HIV", "STD"]


@pytest.mark.parametrize("value", ["N", "R", "V", "PSYCHIATRY", "HIVE", ""])
def test_no_false_positives(value):
    assert classify(ds(ConfidentialityCode=value, StudyDescription="PSY HIV")) == []


def test_operator_rules_replace_the_default():
    rules = load_rules([{"attribute": "StudyDescription", "pattern": r"\bgenetic\b", "label": "GENETIC"}])
    assert classify(ds(StudyDescription="Genetic counselling", ConfidentialityCode="PSY"), rules) == ["GENETIC"]
    assert load_rules(None) == DEFAULT_RULES


@pytest.mark.parametrize("raw,message", [
    ({"pattern": "x"}, "needs an 'attribute'"),
    ({"attribute": "NoSuchKeyword"}, "unknown attribute"),
    ({"attribute": "StudyDescription", "pattern": "("}, "bad pattern"),
])
def test_bad_rules_are_clear_errors(raw, message):
    with pytest.raises(ValueError, match=message):
        load_rules([raw])
