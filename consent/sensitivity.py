"""Sensitivity labels: operator-configured rules (attribute, pattern -> label).

The default reads Confidentiality Code (0040,1008) and Confidentiality
Constraint on Patient Data Description (0040,3001) and recognises the HL7
confidentiality codes ETH, PSY, SDV, HIV, SEX and STD. Rules are matched
anywhere in the header, nested sequences included, case-insensitively.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

DEFAULT_CODES = ("ETH", "PSY", "SDV", "HIV", "SEX", "STD")
_DEFAULT_PATTERN = r"\b(" + "|".join(DEFAULT_CODES) + r")\b"


@dataclass(frozen=True)
class Rule:
    tag: int
    pattern: re.Pattern[str]
    label: str | None  # None: the matched text, upper-cased

    @classmethod
    def from_config(cls, raw: dict[str, Any]) -> "Rule":
        attr = str(raw.get("attribute", "")).strip()
        if not attr:
            raise ValueError("a sensitivity rule needs an 'attribute' (keyword or tag like 00401008)")
        tag = tag_for_keyword(attr)
        if tag is None:
            try:
                tag = int(Tag(attr.replace("(", "").replace(")", "").replace(",", "")))
            except (ValueError, TypeError, OverflowError):
                raise ValueError(f"sensitivity rule: unknown attribute {attr!r}") from None
        try:
            pattern = re.compile(str(raw.get("pattern", _DEFAULT_PATTERN)), re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"sensitivity rule for {attr}: bad pattern: {exc}") from None
        return cls(int(tag), pattern, raw.get("label"))


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule.from_config({"attribute": "ConfidentialityCode"}),
    Rule.from_config({"attribute": "00403001"}),
)


def load_rules(raw: Iterable[dict[str, Any]] | None) -> tuple[Rule, ...]:
    if raw is None:
        return DEFAULT_RULES
    return tuple(Rule.from_config(r) for r in raw)


def classify(ds: Dataset, rules: Iterable[Rule] = DEFAULT_RULES) -> list[str]:
    """Sorted, de-duplicated labels that the rules find in the data set."""
    labels: set[str] = set()
    by_tag: dict[int, list[Rule]] = {}
    for rule in rules:
        by_tag.setdefault(rule.tag, []).append(rule)
    for text, tag in _walk(ds, set(by_tag)):
        for rule in by_tag[tag]:
            for m in rule.pattern.finditer(text):
                labels.add(rule.label or m.group(0).upper())
    return sorted(labels)


def _walk(ds: Dataset, tags: set[int]):
    """(text, tag) for every rule attribute, descending into sequences.

    Only rule attributes and sequences are decoded; every other element stays
    raw, so classifying costs little more than the parse that preceded it.
    """
    for tag in ds.keys():
        raw = ds.get_item(tag)
        vr = getattr(raw, "VR", None) or _dictionary_vr(tag)
        if vr == "SQ":
            for item in ds[tag].value or []:
                yield from _walk(item, tags)
        elif int(tag) in tags:
            elem = ds[tag]
            if elem.value is None:
                continue
            values = elem.value if elem.VM > 1 else [elem.value]
            for v in values:
                yield str(v), int(tag)


def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None
