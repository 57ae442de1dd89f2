"""The query service: QIDO-RS and C-FIND both search through here.

Matching follows PS3.4 C.2.2.2: single value, universal (empty), wildcard
(``*`` / ``?``), range (dates, times), list of UIDs, and — when asked —
fuzzy person-name matching (case- and accent-insensitive, component-wise).
Everything runs as SQL on indexed columns of the index; no object is opened.
Results are plain ``{keyword: value}`` dicts; each adapter encodes them
(DICOM JSON for QIDO, a pydicom Dataset for C-FIND).

Each adapter builds its :class:`Query` through a named constructor:
``Query.from_qido`` (QIDO-RS parameters) and ``Query.from_identifier`` (a
C-FIND identifier, PATIENT level included: it runs at study level and
:meth:`QueryService.matches` folds the matches to one per patient).

Consent: one decision per query (READ, ``consent.decision.require``); which
studies it lets the caller see is ``consent.decision.study_filter`` (never
deleted ones; sensitive ones only with the sensitive flag).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Iterable, Iterator

from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.multival import MultiValue
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from consent.decision import Action, Decision, Principal, require, study_filter
from consent.errors import NotPermitted, NotVisible  # noqa: F401  (NotVisible re-exported for adapters)
from gateway.db import Database
from gateway.db.models import Account, Instance, Patient, Series, Study
from gateway.dicom.part10 import normalise_name
from gateway.dicom.uids import is_valid_uid
from gateway.errors import Invalid
from gateway.numbers import INT32_MAX, INT32_MIN, INT64_MAX, NumberError, parse_int

LEVELS = ("study", "series", "instance")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


class QueryError(Invalid, ValueError):
    """The query cannot be run as asked (400 / 0xA900 / 0xC000)."""


# keyword -> (level it belongs to, column, kind)
_P, _ST, _SE, _IN = Patient, Study, Series, Instance
ATTRIBUTES: dict[str, tuple[str, Any, str]] = {
    "PatientName": ("study", _P.patient_name, "PN"),
    "PatientID": ("study", _P.patient_id, "LO"),
    "IssuerOfPatientID": ("study", _P.issuer, "LO"),
    "PatientBirthDate": ("study", _P.birth_date, "DA"),
    "PatientSex": ("study", _P.sex, "CS"),
    "StudyInstanceUID": ("study", _ST.study_uid, "UI"),
    "StudyDate": ("study", _ST.study_date, "DA"),
    "StudyTime": ("study", _ST.study_time, "TM"),
    "AccessionNumber": ("study", _ST.accession_number, "SH"),
    "StudyID": ("study", _ST.study_id, "SH"),
    "StudyDescription": ("study", _ST.description, "LO"),
    "ReferringPhysicianName": ("study", _ST.referring_physician, "PN"),
    "PatientAge": ("study", _ST.patient_age, "AS"),
    "ModalitiesInStudy": ("study", None, "CS"),
    "NumberOfStudyRelatedSeries": ("study", None, "IS"),
    "NumberOfStudyRelatedInstances": ("study", None, "IS"),
    "SeriesInstanceUID": ("series", _SE.series_uid, "UI"),
    "Modality": ("series", _SE.modality, "CS"),
    "SeriesNumber": ("series", _SE.series_number, "IS"),
    "SeriesDescription": ("series", _SE.description, "LO"),
    "BodyPartExamined": ("series", _SE.body_part, "CS"),
    "SeriesDate": ("series", _SE.series_date, "DA"),
    "SeriesTime": ("series", _SE.series_time, "TM"),
    "NumberOfSeriesRelatedInstances": ("series", None, "IS"),
    "SOPInstanceUID": ("instance", _IN.sop_uid, "UI"),
    "SOPClassUID": ("instance", _IN.sop_class_uid, "UI"),
    "InstanceNumber": ("instance", _IN.instance_number, "IS"),
    "Rows": ("instance", _IN.rows, "US"),
    "Columns": ("instance", _IN.columns, "US"),
    "NumberOfFrames": ("instance", _IN.number_of_frames, "IS"),
    "AvailableTransferSyntaxUID": ("instance", _IN.transfer_syntax_uid, "UI"),
}

#: PS3.18 Tables 10.6.3-3 to -5: returned by default at each level
DEFAULT_RETURN = {
    "study": ["StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
              "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
              "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"],
    "series": ["Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID",
               "NumberOfSeriesRelatedInstances"],
    "instance": ["SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames"],
}
_LEVEL_RANK = {"study": 0, "series": 1, "instance": 2}


#: DICOM Query/Retrieve level -> query level (PATIENT runs at study level, folded per patient)
QR_LEVELS = {"PATIENT": "study", "STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
PATIENT_KEYS = {"PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex"}
#: returned at PATIENT level, summed over the patient's matching studies
PATIENT_COUNTS = {"NumberOfPatientRelatedStudies": None,
                  "NumberOfPatientRelatedSeries": "NumberOfStudyRelatedSeries",
                  "NumberOfPatientRelatedInstances": "NumberOfStudyRelatedInstances"}
#: identifier elements that are never matching or return keys of their own
_QR_CONTROL = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "TimezoneOffsetFromUTC"}
_QIDO_CONTROL = {"includefield", "fuzzymatching", "limit", "offset"}


@dataclass
class Query:
    level: str
    filters: dict[str, str] = field(default_factory=dict)  # keyword -> raw matching value
    study_uid: str | None = None
    series_uid: str | None = None
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    fuzzy: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    #: C-FIND: the Query/Retrieve level asked (PATIENT folds the matches per patient) ...
    qr_level: str | None = None
    #: ... and the identifier's keys, keyword (or hex tag) -> (tag, VR, matching value or None), to answer
    requested: dict[str, tuple[int, str, str | None]] = field(default_factory=dict)

    @classmethod
    def from_qido(cls, level: str, params: Iterable[tuple[str, str]], study_uid: str | None = None,
                  series_uid: str | None = None) -> "Query":
        """QIDO-RS query parameters (name, value) in request order: includefield, fuzzymatching,
        limit, offset, and attribute=value matches."""
        pairs = list(params)
        q = cls(level=level, study_uid=study_uid, series_uid=series_uid)
        for name, value in pairs:
            if name != "includefield":
                continue
            for item in value.split(","):
                item = item.strip()
                if not item:
                    continue
                if item.lower() == "all":
                    q.include_all = True
                else:
                    q.include.add(keyword_of(item))
        for name, value in pairs:
            if name not in _QIDO_CONTROL:
                q.filters[keyword_of(name)] = value
        first = {}
        for name, value in pairs:
            first.setdefault(name, value)
        fuzzy = first.get("fuzzymatching", "false").lower()
        if fuzzy not in ("true", "false"):
            raise QueryError("fuzzymatching must be true or false")
        q.fuzzy = fuzzy == "true"
        try:
            q.limit = parse_int(first.get("limit"), "limit", minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT)  # type: ignore[assignment]
            q.offset = parse_int(first.get("offset"), "offset", minimum=0, maximum=INT64_MAX, default=0)  # type: ignore[assignment]
        except NumberError as exc:
            raise QueryError(str(exc)) from None
        return q

    @classmethod
    def from_identifier(cls, identifier: Dataset, *, patient_root: bool) -> "Query":
        """A C-FIND identifier: its level, matching keys (keys this server cannot match are ignored
        for matching and answered empty) and return keys. QueryError when it does not fit the model."""
        qr_level = query_retrieve_level(identifier, patient_root=patient_root)
        keys = _identifier_keys(identifier)
        level = QR_LEVELS[qr_level]
        filters = {k: v for k, (_, _, v) in keys.items() if v and v != "*" and _matchable(k, level, qr_level)}
        include = {k for k in keys if k in ATTRIBUTES and _LEVEL_RANK[ATTRIBUTES[k][0]] <= _LEVEL_RANK[level]}
        include |= {src for k, src in PATIENT_COUNTS.items() if k in keys and src}
        if qr_level == "PATIENT":
            include |= {"PatientID", "PatientName"}
        return cls(level=level, filters=filters, include=include, limit=MAX_LIMIT, qr_level=qr_level,
                   requested=keys)


def query_retrieve_level(identifier: Dataset, *, patient_root: bool) -> str:
    """The identifier's QueryRetrieveLevel, checked against the information model (Patient / Study Root)."""
    try:
        level = str(identifier.get("QueryRetrieveLevel") or "").strip().upper()
    except Exception as exc:  # pydicom decodes lazily
        raise QueryError(f"cannot decode the identifier: {exc}") from None
    allowed = ("PATIENT", "STUDY", "SERIES", "IMAGE") if patient_root else ("STUDY", "SERIES", "IMAGE")
    if level not in allowed:
        raise QueryError(f"QueryRetrieveLevel {level or '(none)'} is not one of {'/'.join(allowed)}")
    return level


def _identifier_keys(identifier: Dataset) -> dict[str, tuple[int, str, str | None]]:
    """keyword (or hex tag) -> (tag, VR, matching value, or None for a return-only key)."""
    out: dict[str, tuple[int, str, str | None]] = {}
    try:
        for elem in identifier:
            if elem.tag.element == 0 or elem.keyword in _QR_CONTROL:
                continue
            name = elem.keyword or f"{int(elem.tag):08X}"
            text: str | None = None
            if elem.VR != "SQ" and elem.value is not None and not isinstance(elem.value, bytes):
                value = elem.value
                text = ("\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)).strip()
            out[name] = (int(elem.tag), elem.VR, text or None)
    except Exception as exc:
        raise QueryError(f"cannot decode the identifier: {exc}") from None
    return out


def _matchable(keyword: str, level: str, qr_level: str) -> bool:
    if keyword not in ATTRIBUTES:
        return False
    attr_level, column, _ = ATTRIBUTES[keyword]
    if column is None and keyword != "ModalitiesInStudy":
        return False  # computed (counts): returned, never matched
    if qr_level == "PATIENT":
        return keyword in PATIENT_KEYS
    return _LEVEL_RANK[attr_level] <= _LEVEL_RANK[level]


def keyword_of(name: str) -> str:
    """'PatientName', '00100010' or '(0010,0010)' -> keyword; QueryError for anything else."""
    raw = name.strip()
    hexdigits = re.sub(r"[(),\s]", "", raw)
    if re.fullmatch(r"[0-9A-Fa-f]{8}", hexdigits):
        kw = keyword_for_tag(int(hexdigits, 16))
        if kw:
            return kw
        raise QueryError(f"{name!r} is not a known DICOM attribute")
    if tag_for_keyword(raw) is not None:
        return raw
    raise QueryError(f"{name!r} is not a known DICOM attribute")


def return_keywords(q: Query) -> list[str]:
    """Default attributes of this level and the levels above, plus includefield."""
    out: list[str] = []
    for level in LEVELS[: _LEVEL_RANK[q.level] + 1]:
        if level == "study" and q.level != "study":
            out += ["StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "PatientName", "PatientID",
                    "PatientBirthDate", "PatientSex", "StudyID", "ReferringPhysicianName"] if q.include_all else ["StudyInstanceUID"]
        elif level == "series" and q.level == "instance":
            out += DEFAULT_RETURN["series"] if q.include_all else ["SeriesInstanceUID", "Modality"]
        else:
            out += DEFAULT_RETURN[level]
    if q.include_all:
        out += [k for k, (lvl, _, _) in ATTRIBUTES.items() if _LEVEL_RANK[lvl] <= _LEVEL_RANK[q.level]]
    out += [k for k in q.include if k in ATTRIBUTES and _LEVEL_RANK[ATTRIBUTES[k][0]] <= _LEVEL_RANK[q.level]]
    out += [k for k in q.filters if k in ATTRIBUTES and _LEVEL_RANK[ATTRIBUTES[k][0]] <= _LEVEL_RANK[q.level]]
    seen: dict[str, None] = {}
    for k in out:
        seen.setdefault(k, None)
    return list(seen)


class QueryService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def search(self, principal: Principal, account_id: str, q: Query) -> list[dict[str, Any]]:
        if q.level not in LEVELS:
            raise QueryError(f"unknown query level {q.level!r}")
        if not 0 < q.limit <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
        if q.offset < 0:
            raise QueryError("offset must not be negative")
        for uid in (q.study_uid, q.series_uid):
            if uid is not None and not is_valid_uid(uid):
                raise QueryError(f"{uid[:70]!r} is not a valid UID")
        with self.db.session() as s:
            decision = require(s, principal, Action.READ, account_id)
            stmt = self._statement(decision, q)
            rows = s.execute(stmt.limit(q.limit).offset(q.offset)).all()
            return self._results(s, q, rows)

    def matches(self, principal: Principal, account_id: str, q: Query) -> Iterator[dict[str, Any]]:
        """Every match, MAX_LIMIT per search; a PATIENT-level query (``qr_level``) folded to one
        result per patient (PatientID + PatientName) with the patient counts summed.

        Lazy: the consent decision and the query's validity are known at the first ``next()``.
        """
        if q.qr_level == "PATIENT":
            yield from self._patients(principal, account_id, q)
            return
        offset = 0
        while True:
            page_q = Query(level=q.level, filters=q.filters, include=q.include, limit=MAX_LIMIT, offset=offset)
            page = self.search(principal, account_id, page_q)
            yield from page
            if len(page) < MAX_LIMIT:
                return
            offset += MAX_LIMIT

    def _patients(self, principal: Principal, account_id: str, q: Query) -> list[dict[str, Any]]:
        study_q = Query(level="study", filters=q.filters, include=q.include, limit=MAX_LIMIT)
        patients: dict[tuple, dict] = {}
        for row in self.matches(principal, account_id, study_q):
            key = (row.get("PatientID"), row.get("PatientName"))
            p = patients.get(key)
            if p is None:
                p = patients[key] = {k: row.get(k) for k in PATIENT_KEYS}
                p.update({k: 0 for k in PATIENT_COUNTS})
            p["NumberOfPatientRelatedStudies"] += 1
            for k, src in PATIENT_COUNTS.items():
                if src:
                    p[k] += row.get(src) or 0
        return list(patients.values())

    def studies_of_patients(self, principal: Principal, account_id: str, patient_ids: list[str]) -> list[str]:
        """The Study Instance UIDs the caller may see of these patients (a PATIENT-level retrieve)."""
        out: list[str] = []
        for pid in patient_ids:
            q = Query(level="study", filters={"PatientID": pid}, include={"StudyInstanceUID"}, limit=MAX_LIMIT)
            out += [row["_study_uid"] for row in self.matches(principal, account_id, q)]
        return out

    def retrieve_ae_title(self, account_id: str) -> str:
        """The account's AE title (C-FIND's RetrieveAETitle); empty for no such account."""
        with self.db.session() as s:
            return s.scalar(select(Account.ae_title).where(Account.id == account_id,
                                                           Account.deleted_at.is_(None))) or ""

    # -- SQL ---------------------------------------------------------------
    def _statement(self, decision: Decision, q: Query) -> Select:
        cols: list[Any] = [Study, Patient]
        if q.level in ("series", "instance"):
            cols.append(Series)
        if q.level == "instance":
            cols.append(Instance)
        stmt = select(*cols).join(Patient, Patient.id == Study.patient_pk)
        if q.level in ("series", "instance"):
            stmt = stmt.join(Series, Series.study_pk == Study.id)
        if q.level == "instance":
            stmt = stmt.join(Instance, Instance.series_pk == Series.id)
        # patients.account_id too, so patient searches use the (account_id, ...) indexes
        stmt = stmt.where(study_filter(decision), Patient.account_id == decision.account_id)
        if q.study_uid:
            stmt = stmt.where(Study.study_uid == q.study_uid)
        if q.series_uid:
            stmt = stmt.where(Series.series_uid == q.series_uid)
        for keyword, value in q.filters.items():
            cond = self._condition(keyword, value, q)
            if cond is not None:
                stmt = stmt.where(cond)
        order = [Study.id] + ([Series.id] if q.level != "study" else []) + ([Instance.id] if q.level == "instance" else [])
        return stmt.order_by(*order)

    def _condition(self, keyword: str, value: str, q: Query) -> Any:
        if keyword not in ATTRIBUTES:
            raise QueryError(f"{keyword} is not a matching key this server supports")
        level, column, vr = ATTRIBUTES[keyword]
        if _LEVEL_RANK[level] > _LEVEL_RANK[q.level]:
            raise QueryError(f"{keyword} is not a {q.level}-level attribute")
        if value == "" or value == "*":
            return None  # universal matching
        if keyword == "ModalitiesInStudy":
            mods = [m for m in re.split(r"[\\,]", value) if m]
            return select(Series.id).where(Series.study_pk == Study.id, Series.modality.in_(mods)).exists()
        if column is None:
            raise QueryError(f"{keyword} can be returned but not matched")
        if vr == "UI":
            uids = [u for u in re.split(r"[\\,]", value) if u]
            for u in uids:
                if not is_valid_uid(u):
                    raise QueryError(f"{u[:70]!r} in {keyword} is not a valid UID")
            return column.in_(uids) if len(uids) > 1 else column == uids[0]
        if vr in ("DA", "TM"):
            return _range(column, value, vr, keyword)
        if vr in ("IS", "US"):  # PS3.5 6.2: IS is a signed 32-bit value, US unsigned 16-bit
            lo, hi = (INT32_MIN, INT32_MAX) if vr == "IS" else (0, 65535)
            try:
                return column == parse_int(value.strip(" "), keyword, minimum=lo, maximum=hi)
            except NumberError as exc:
                raise QueryError(str(exc)) from None
        if vr == "PN":
            return _person_name(column, value, q.fuzzy, keyword)
        if "*" in value or "?" in value:
            return column.like(_like(value), escape="\\")
        values = [v for v in value.split("\\") if v]
        return column.in_(values) if len(values) > 1 else column == value

    # -- results -----------------------------------------------------------
    def _results(self, s: Session, q: Query, rows: list) -> list[dict[str, Any]]:
        keywords = return_keywords(q)
        study_pks = list({row[0].id for row in rows})
        series_pks = list({row[2].id for row in rows}) if q.level != "study" else []
        mods: dict[int, list[str]] = {}
        n_series: dict[int, int] = {}
        n_study_inst: dict[int, int] = {}
        n_series_inst: dict[int, int] = {}
        if study_pks and any(k in keywords for k in ("ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                                                     "NumberOfStudyRelatedInstances")):
            for pk, modality, n_inst in s.execute(
                select(Series.study_pk, Series.modality, func.count(Instance.id))
                .join(Instance, Instance.series_pk == Series.id)
                .where(Series.study_pk.in_(study_pks))
                .group_by(Series.study_pk, Series.id, Series.modality)
            ):
                if modality and modality not in mods.setdefault(pk, []):
                    mods[pk].append(modality)
                n_series[pk] = n_series.get(pk, 0) + 1
                n_study_inst[pk] = n_study_inst.get(pk, 0) + n_inst
        if series_pks and "NumberOfSeriesRelatedInstances" in keywords:
            n_series_inst = dict(s.execute(
                select(Instance.series_pk, func.count(Instance.id))
                .where(Instance.series_pk.in_(series_pks)).group_by(Instance.series_pk)
            ).all())
        out = []
        for row in rows:
            study, patient = row[0], row[1]
            series = row[2] if q.level != "study" else None
            inst = row[3] if q.level == "instance" else None
            values: dict[str, Any] = {}
            for k in keywords:
                if k == "ModalitiesInStudy":
                    values[k] = sorted(mods.get(study.id, []))
                elif k == "NumberOfStudyRelatedSeries":
                    values[k] = n_series.get(study.id, 0)
                elif k == "NumberOfStudyRelatedInstances":
                    values[k] = n_study_inst.get(study.id, 0)
                elif k == "NumberOfSeriesRelatedInstances":
                    values[k] = n_series_inst.get(series.id, 0) if series is not None else None
                else:
                    level, column, _ = ATTRIBUTES[k]
                    obj = {"study": study if column.class_ is Study else patient, "series": series,
                           "instance": inst}[level]
                    values[k] = getattr(obj, column.key) if obj is not None else None
            values["_study_uid"] = study.study_uid
            values["_series_uid"] = series.series_uid if series is not None else None
            values["_sop_uid"] = inst.sop_uid if inst is not None else None
            out.append(values)
        return out


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")


def _check_value(value: str, vr: str, keyword: str) -> str:
    if vr == "DA":
        if not _DA.match(value):
            raise QueryError(f"{keyword}: {value!r} is not a date (YYYYMMDD)")
        try:
            date(int(value[:4]), int(value[4:6]), int(value[6:8]))
        except ValueError:
            raise QueryError(f"{keyword}: {value!r} is not a valid date") from None
    else:
        value = value.replace(":", "")
        if not _TM.match(value) or int(value[:2]) > 23 or (len(value) >= 4 and int(value[2:4]) > 59) \
                or (len(value) >= 6 and int(value[4:6]) > 60):
            raise QueryError(f"{keyword}: {value!r} is not a time (HHMMSS)")
    return value


def _range(column: Any, value: str, vr: str, keyword: str) -> Any:
    if "-" not in value:
        return column == _check_value(value, vr, keyword)
    if value.count("-") != 1 or value == "-":
        raise QueryError(f"{keyword}: {value!r} is not a range (A-B, A- or -B)")
    lo, hi = value.split("-")
    conds = []
    if lo:
        conds.append(column >= _check_value(lo, vr, keyword))
    if hi:
        hi = _check_value(hi, vr, keyword)
        # a time bound 1015 includes 101559.999: compare with the padded upper end
        conds.append(column <= (hi + "\uffff" if vr == "TM" else hi))
    if lo and hi and lo > hi:
        raise QueryError(f"{keyword}: the range {value!r} ends before it starts")
    return and_(*conds)


def _person_name(column: Any, value: str, fuzzy: bool, keyword: str) -> Any:
    if fuzzy:
        # every component the caller typed must begin some component of the stored name
        norm_col = Patient.patient_name_norm if column is Patient.patient_name else func.lower(column)
        tokens = (normalise_name(value.replace("*", " ").replace("?", " ")) or "").split()
        if not tokens:
            return None
        conds = [or_(norm_col.like(_like(t) + "%", escape="\\"), norm_col.like("% " + _like(t) + "%", escape="\\"))
                 for t in tokens]
        return and_(*conds)
    if "*" in value or "?" in value:
        return func.lower(column).like(_like(value.lower()), escape="\\")
    return func.lower(column) == value.lower()


def vr_of(keyword: str) -> str:
    return ATTRIBUTES[keyword][2] if keyword in ATTRIBUTES else dictionary_VR(keyword)


def visible_studies(s: Session, principal: Principal, account_id: str) -> list[dict]:
    """The studies the caller may see (same query and sensitivity filter as GET .../studies)."""
    try:
        decision = require(s, principal, Action.READ, account_id)
    except (NotVisible, NotPermitted):
        return []
    q = (select(Study, Patient).join(Patient, Patient.id == Study.patient_pk)
         .where(study_filter(decision)).order_by(Study.id.desc()).limit(500))
    rows = s.execute(q).all()
    pks = [r[0].id for r in rows]
    counts = dict(s.execute(select(Series.study_pk, func.count(Instance.id))
                            .join(Instance, Instance.series_pk == Series.id)
                            .where(Series.study_pk.in_(pks)).group_by(Series.study_pk)).all())
    mods: dict[int, set[str]] = {}
    for pk, mod in s.execute(select(Series.study_pk, Series.modality).where(Series.study_pk.in_(pks))):
        if mod:
            mods.setdefault(pk, set()).add(mod)
    return [{
        "study": st.study_uid, "date": st.study_date, "description": st.description,
        "patient_name": p.patient_name, "patient_id": p.patient_id, "modalities": sorted(mods.get(st.id, [])),
        "instances": counts.get(st.id, 0), "sensitive": st.sensitive,
        "labels": [l for l in st.labels.split(",") if l],
    } for st, p in rows]


def live_study_count(s: Session, account_id: str) -> int:
    """Studies of the account not deleted (what deleting the account would erase)."""
    return s.scalar(select(func.count(Study.id)).where(Study.account_id == account_id,
                                                       Study.deleted_at.is_(None))) or 0
