"""Published trend statistics: studies by month x modality x sex x age band.

Privacy policy, "How Cimar UK uses your information" 3: "aggregated data
sets do not contain any personally identifiable information". The answer of
:func:`trend_statistics` is therefore built only from coarse categories:

- ``month``: ``YYYY-MM`` of the StudyDate (no day); when the StudyDate is
  missing or not a valid date, the month the study was indexed (UTC);
- ``modality``: each distinct Modality of the study's series counts the study
  once for that modality (a CT + PT study counts once under CT and once under
  PT); a missing modality is ``"unknown"``, a value that is not a DICOM code
  string is ``"other"``;
- ``sex``: ``F``, ``M``, ``O`` or ``"unknown"``;
- ``age_band``: decades ``"0-9"`` .. ``"80-89"``, then ``"90+"`` (ages over
  89 are never told apart), or ``"unknown"``; from PatientAge (``nnnY``,
  ``nnnM``, ``nnnW``, ``nnnD``), else from PatientBirthDate at the study date;
- ``studies``: the number of distinct studies in the cell.

No account id, user, UID, name, patient id or exact date is ever part of it.

Which studies count: those of accounts that are not deleted, that are not
themselves deleted (a deletion makes a study invisible at once, including
here) and that are **not sensitive**. The policy says especially sensitive
records (mental health, substance abuse, ...) need special authorisation to
move; publishing even aggregate counts of them is a use nobody authorised, so
they are left out entirely.

Small cells: a cell with fewer than ``k`` studies is never shown; it is only
counted in ``suppressed_cells`` (the number of such cells, not of studies).
No complementary suppression is done: a suppressed cell could only be worked
out by subtraction if row or column totals were published, and they are not
(only the cells at or above ``k`` are). ``k`` counts studies, not patients, as
SPEC.md says; several studies of one patient in one cell count separately.

The heavy part runs in SQL (joins, filters, GROUP BY on the raw attributes,
COUNT(DISTINCT study)) with portable SQLAlchemy Core; turning raw values into
months and age bands is finished in Python. Studies whose StudyDate is not a
plain valid ``YYYYMMDD``, or whose modality is not a clean code, are read one
(study, modality) row at a time and counted with sets of study ids, so that
the counts stay exact however the raw values merge into categories.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, datetime, timezone
from sqlalchemy import and_, distinct, false, func, or_, select

from gateway.db import Database
from gateway.db.models import Account, Patient, Series, Study

UNKNOWN = "unknown"
OTHER = "other"  # lower case: can never collide with a real (upper-case) modality code

_DATE_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_AGE_RE = re.compile(r"^(\d{1,3})([DWMY])$")
_MODALITY_RE = re.compile(r"^[A-Z0-9_ ]{1,16}$")
_MAX_AGE = 130  # an age above this is a data error, not a patient


def trend_statistics(db: Database, *, k: int) -> dict:
    """``{"k": k, "cells": [{"month", "modality", "sex", "age_band", "studies"}, ...],
    "suppressed_cells": N}``, cells sorted by month, modality, sex, age band."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError("k must be a positive integer")

    counts: dict[tuple[str, str, str, str], int] = defaultdict(int)
    modality = func.coalesce(func.upper(func.trim(Series.modality)), "").label("modality")
    base_from = (
        select()
        .select_from(Study)
        .join(Patient, Patient.id == Study.patient_pk)
        .join(Account, Account.id == Study.account_id)
        .join(Series, Series.study_pk == Study.id)
        .where(Study.deleted_at.is_(None), Account.deleted_at.is_(None), Study.sensitive == false())
    )

    with db.session() as s:
        if not db.is_sqlite:
            # both queries below read one snapshot (SQLite's read transaction already does)
            s.connection(execution_options={"isolation_level": "REPEATABLE READ"})

        # 1. Studies with an 8-character StudyDate, grouped on the raw values.
        grouped = s.execute(
            base_from.add_columns(
                Study.study_date, Study.patient_age, Patient.sex, Patient.birth_date, modality,
                func.count(distinct(Study.id)),
            )
            .where(func.length(Study.study_date) == 8)
            .group_by(Study.study_date, Study.patient_age, Patient.sex, Patient.birth_date, modality)
        ).all()
        bad_dates: set[str] = set()
        bad_modalities: set[str] = set()
        for study_date, age, sex, birth, mod, n in grouped:
            when = _parse_da(study_date)
            if when is None:
                bad_dates.add(study_date)
                continue
            if mod and not _MODALITY_RE.match(mod):
                bad_modalities.add(mod)
                continue
            cell = (_month(when), mod or UNKNOWN, _sex(sex), _age_band(age, birth, when))
            counts[cell] += int(n)

        # 2. The rest, one (study, modality) row at a time: no usable StudyDate
        #    (fall back to the indexing month) or a modality that maps to "other".
        date_unusable = or_(
            Study.study_date.is_(None),
            func.length(Study.study_date) != 8,
            Study.study_date.in_(sorted(bad_dates)),
        )
        rest = s.execute(
            base_from.add_columns(
                Study.id, Study.study_date, Study.created_at, Study.patient_age, Patient.sex,
                Patient.birth_date, modality,
            )
            .where(or_(date_unusable, and_(func.length(Study.study_date) == 8, modality.in_(sorted(bad_modalities)))))
            .distinct()
        ).all()
        studies_per_cell: dict[tuple[str, str, str, str], set[int]] = defaultdict(set)
        for study_pk, study_date, created_at, age, sex, birth, mod in rest:
            when = _parse_da(study_date) or _utc_date(created_at)
            if not mod:
                mod_label = UNKNOWN
            elif _MODALITY_RE.match(mod):
                mod_label = mod
            else:
                mod_label = OTHER
            cell = (_month(when), mod_label, _sex(sex), _age_band(age, birth, when))
            studies_per_cell[cell].add(study_pk)
        # Studies of part 1 and part 2 are disjoint within any one cell: a study
        # with a usable date reaches part 2 only through an "other" modality,
        # which part 1 never produces.
        for cell, ids in studies_per_cell.items():
            counts[cell] += len(ids)

    shown = []
    suppressed = 0
    for (month, mod, sex, band), n in sorted(counts.items()):
        if n < k:
            suppressed += 1
            continue
        shown.append({"month": month, "modality": mod, "sex": sex, "age_band": band, "studies": n})
    return {"k": k, "cells": shown, "suppressed_cells": suppressed}


# -- derivations --------------------------------------------------------------------------


def _parse_da(value: str | None) -> date | None:
    """A DICOM DA ``YYYYMMDD`` that is a real calendar date, else None."""
    if not value:
        return None
    m = _DATE_RE.match(value.strip())
    if not m:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def _utc_date(value: datetime | None) -> date:
    if value is None:  # created_at always has a default; be safe anyway
        value = datetime.now(timezone.utc)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).date()


def _month(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def _sex(value: str | None) -> str:
    v = (value or "").strip().upper()
    return v if v in ("F", "M", "O") else UNKNOWN


def _age_years(patient_age: str | None, birth_date: str | None, at: date) -> int | None:
    if patient_age:
        m = _AGE_RE.match(patient_age.strip().upper())
        if m:
            n, unit = int(m.group(1)), m.group(2)
            return {"Y": n, "M": n // 12, "W": n // 52, "D": n // 365}[unit]
    born = _parse_da(birth_date)
    if born is None or born > at:
        return None
    return at.year - born.year - ((at.month, at.day) < (born.month, born.day))


def _age_band(patient_age: str | None, birth_date: str | None, at: date) -> str:
    years = _age_years(patient_age, birth_date, at)
    if years is None or years < 0 or years > _MAX_AGE:
        return UNKNOWN
    if years >= 90:
        return "90+"
    low = (years // 10) * 10
    return f"{low}-{low + 9}"


__all__ = ["trend_statistics"]
