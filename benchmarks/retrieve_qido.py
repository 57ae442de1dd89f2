"""The QIDO-RS part of benchmarks/retrieve.py: an account on PostgreSQL bulk-loaded to 10^4 / 10^5 / 10^6
instances (COPY, straight into the gateway's tables), study searches timed over HTTP against ``dicomgate
serve``, and the plan PostgreSQL makes for each (EXPLAIN ANALYZE of the SQL QueryService runs).

Unlike the harness, this imports the gateway: the loader writes its tables, and the plans are of its SQL.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
import requests
from sqlalchemy.dialects import postgresql

from consent.decision import Decision, Reason
from gateway.archive.query import Query
from gateway.db.models import Instance, Patient, Series, Study
from gateway.dicom.part10 import normalise_name
from gateway.runtime.services import Services
from gateway.runtime.settings import load_settings
from harness.measure import loadavg_str, percentile
from harness.servers import DicomgateServer, pg_create_database, pg_drop_database

QIDO_TARGET_P95_MS = 50.0


def log(msg: str = "") -> None:
    print(msg, flush=True)


SURNAMES = [  # (name, weight); SMITH ~1 %, a few near-misses and accented names
    ("SMITH", 3), ("SMITHSON", 1), ("SMYTH", 1), ("JOHNSON", 8), ("WILLIAMS", 7), ("BROWN", 7), ("JONES", 7),
    ("GARCIA", 6), ("MILLER", 6), ("DAVIS", 6), ("RODRIGUEZ", 5), ("MARTINEZ", 5), ("HERNANDEZ", 5),
    ("LOPEZ", 5), ("GONZALEZ", 5), ("WILSON", 5), ("ANDERSON", 5), ("THOMAS", 5), ("TAYLOR", 5),
    ("MOORE", 4), ("JACKSON", 4), ("MARTIN", 4), ("LEE", 4), ("PEREZ", 4), ("THOMPSON", 4), ("WHITE", 4),
    ("HARRIS", 4), ("SANCHEZ", 4), ("CLARK", 4), ("RAMIREZ", 3), ("LEWIS", 3), ("ROBINSON", 3),
    ("WALKER", 3), ("YOUNG", 3), ("ALLEN", 3), ("KING", 3), ("WRIGHT", 3), ("SCOTT", 3), ("TORRES", 3),
    ("NGUYEN", 3), ("HILL", 3), ("FLORES", 3), ("GREEN", 3), ("ADAMS", 3), ("NELSON", 3), ("BAKER", 3),
    ("MÜLLER", 2), ("SCHMIDT", 2), ("SCHNEIDER", 2), ("FISCHER", 2), ("WEBER", 2), ("DUBOIS", 2),
    ("LEFÈVRE", 1), ("NÚÑEZ", 1), ("ROSSI", 2), ("BIANCHI", 1), ("KOWALSKI", 1), ("NOVAK", 1),
    ("OKAFOR", 1), ("KIM", 2), ("PARK", 1), ("CHEN", 2), ("WANG", 2), ("LI", 2), ("ZHANG", 2), ("SATO", 1),
    ("SUZUKI", 1), ("O'BRIEN", 1), ("MURPHY", 2), ("KELLY", 2), ("SULLIVAN", 1), ("NIELSEN", 1),
]
GIVEN = ["JAMES", "MARY", "ROBERT", "PATRICIA", "JOHN", "JENNIFER", "MICHAEL", "LINDA", "DAVID", "ELIZABETH",
         "WILLIAM", "BARBARA", "RICHARD", "SUSAN", "JOSEPH", "JESSICA", "THOMAS", "SARAH", "CHARLES", "KAREN",
         "MARIA", "JOSÉ", "ANNA", "LUCA", "SOPHIE", "HANS", "FATIMA", "WEI", "YUKI", "AMARA", "SMITH",
         "ÉLODIE", "NOAH", "EMMA", "LIAM", "OLIVIA", "LUCAS", "MIA", "ETHAN", "CHLOE"]
MODALITIES = {  # modality -> (SOP class, rows, columns, weight)
    "CT": ("1.2.840.10008.5.1.4.1.1.2", 512, 512, 30),
    "MR": ("1.2.840.10008.5.1.4.1.1.4", 256, 256, 25),
    "US": ("1.2.840.10008.5.1.4.1.1.6.1", 600, 800, 15),
    "CR": ("1.2.840.10008.5.1.4.1.1.1", 2500, 2048, 15),
    "DX": ("1.2.840.10008.5.1.4.1.1.1.1", 3000, 2500, 15),
}
BODY_PARTS = ["HEAD", "CHEST", "ABDOMEN", "PELVIS", "KNEE", "SPINE", "HAND", "BREAST", "NECK", ""]
DESCRIPTIONS = ["ROUTINE", "FOLLOW UP", "TRAUMA", "PRE-OP", "POST-OP", "SCREENING", "CONTRAST", "NATIVE", ""]
TS = "1.2.840.10008.1.2.1"


class QidoLoader:
    """Bulk-loads patients / studies / series / instances for one account with
    PostgreSQL COPY (psycopg 3), 10 instances per series, 2-5 series per study."""

    UID_ROOT = "1.2.826.0.1.3680043.8.498.77"

    def __init__(self, pg_url: str, account_id: str, seed: int = 20240601):
        self.conn = psycopg.connect(pg_url)
        self.account = account_id
        self.rng = random.Random(seed)
        self.run = os.getpid()
        self.tables = {m.__tablename__: m.__table__ for m in (Patient, Study, Series, Instance)}
        self.cols = {
            "patients": ["id", "account_id", "patient_key", "patient_id", "issuer", "patient_name",
                         "patient_name_norm", "birth_date", "sex"],
            "studies": ["id", "account_id", "patient_pk", "study_uid", "study_date", "study_time",
                        "accession_number", "study_id", "description", "referring_physician", "patient_age",
                        "sensitive", "labels", "created_at", "deleted_at"],
            "series": ["id", "study_pk", "series_uid", "modality", "series_number", "description", "body_part",
                       "series_date", "series_time"],
            "instances": ["id", "account_id", "series_pk", "sop_uid", "sop_class_uid", "transfer_syntax_uid",
                          "instance_number", "rows", "columns", "number_of_frames", "size", "digest",
                          "object_key", "source", "stored_at"],
        }
        for name, cols in self.cols.items():  # fail loudly if the models changed
            missing = set(cols) - set(self.tables[name].c.keys())
            if missing:
                raise RuntimeError(f"table {name} has no columns {sorted(missing)} (models changed?)")
        with self.conn.cursor() as cur:
            self.next = {}
            for t in self.cols:
                cur.execute(f"SELECT coalesce(max(id), 0) FROM {t}")
                self.next[t] = cur.fetchone()[0] + 1
            cur.execute("SELECT count(*) FROM instances WHERE account_id = %s", (account_id,))
            self.instances = cur.fetchone()[0]
        self.patients: list[tuple[int, str]] = []  # (pk, PatientID)
        self.studies: list[tuple[int, str]] = []  # (pk, StudyInstanceUID) sample for the queries
        self.series_of: dict[str, list[str]] = {}  # study uid -> series uids (sampled studies only)
        self._uid_n = 0
        names, weights = zip(*SURNAMES)
        self._surnames, self._sweights = names, weights
        mods, mw = zip(*((m, v[3]) for m, v in MODALITIES.items()))
        self._mods, self._mweights = mods, mw
        self.now = datetime.now(timezone.utc)

    def _uid(self, kind: int) -> str:
        self._uid_n += 1
        return f"{self.UID_ROOT}.{self.run}.{kind}.{self._uid_n}"

    def _new_patient(self) -> tuple[tuple, tuple[int, str]]:
        r = self.rng
        pk = self.next["patients"]
        self.next["patients"] += 1
        pid = f"MRN{r.randrange(10**7, 10**8)}-{pk}"
        given = r.choice(GIVEN)
        name = f"{r.choices(self._surnames, self._sweights)[0]}^{given}"
        if r.random() < 0.3:
            name += f"^{r.choice(GIVEN)[0]}"
        bd = date(1930, 1, 1) + timedelta(days=r.randrange(0, 33000))
        row = (pk, self.account, f"{pid}^", pid, None, name, normalise_name(name), bd.strftime("%Y%m%d"),
               r.choice("MF"))
        return row, (pk, pid)

    def load_to(self, target: int, chunk: int = 10_000) -> float:
        """Insert instances (and the patients/studies/series above them) until
        the account holds `target` instances. Returns seconds taken."""
        t0 = time.perf_counter()
        r = self.rng
        d0 = date(2015, 1, 1)
        while self.instances < target:
            rows: dict[str, list[tuple]] = {t: [] for t in self.cols}
            n_chunk = 0
            while n_chunk < chunk and self.instances + n_chunk < target:
                remaining_series = (target - self.instances - n_chunk + 9) // 10
                n_series = min(r.randint(2, 5), remaining_series)
                if self.patients and r.random() < 0.35:
                    ppk, _ = r.choice(self.patients)
                else:
                    prow, p = self._new_patient()
                    rows["patients"].append(prow)
                    self.patients.append(p)
                    ppk = p[0]
                spk = self.next["studies"]
                self.next["studies"] += 1
                suid = self._uid(1)
                sdate = (d0 + timedelta(days=r.randrange(0, 3653))).strftime("%Y%m%d")
                stime = f"{r.randrange(7, 20):02d}{r.randrange(60):02d}{r.randrange(60):02d}"
                main_mod = r.choices(self._mods, self._mweights)[0]
                rows["studies"].append((
                    spk, self.account, ppk, suid, sdate, stime, f"A{r.randrange(10**8, 10**9)}",
                    str(r.randrange(1, 99999)), f"{main_mod} {r.choice(BODY_PARTS)} {r.choice(DESCRIPTIONS)}".strip(),
                    f"{r.choice(self._surnames)}^{r.choice(GIVEN)}", f"{r.randrange(1, 95):03d}Y",
                    False, "", self.now, None,
                ))
                sample = len(self.studies) < 50 or r.random() < 0.01
                if sample:
                    self.studies.append((spk, suid))
                    self.series_of[suid] = []
                for sn in range(1, n_series + 1):
                    mod = main_mod if r.random() < 0.85 else r.choices(self._mods, self._mweights)[0]
                    sop_class, rows_, cols_, _ = MODALITIES[mod]
                    sepk = self.next["series"]
                    self.next["series"] += 1
                    seuid = self._uid(2)
                    if sample:
                        self.series_of[suid].append(seuid)
                    rows["series"].append((sepk, spk, seuid, mod, sn, r.choice(DESCRIPTIONS),
                                           r.choice(BODY_PARTS), sdate, stime))
                    n_inst = min(10, target - self.instances - n_chunk)
                    for i in range(1, n_inst + 1):
                        ipk = self.next["instances"]
                        self.next["instances"] += 1
                        sop = self._uid(3)
                        digest = r.getrandbits(256).to_bytes(32, "big").hex()
                        size = rows_ * cols_ * 2 + 2000
                        rows["instances"].append((
                            ipk, self.account, sepk, sop, sop_class, TS, i, rows_, cols_, None, size, digest,
                            f"{self.account}/{suid}/{seuid}/{sop}.{digest[:16]}.dcm", "bench-bulk", self.now,
                        ))
                    n_chunk += n_inst
                    if self.instances + n_chunk >= target:
                        break
            with self.conn.cursor() as cur:
                for t in ("patients", "studies", "series", "instances"):
                    if not rows[t]:
                        continue
                    with cur.copy(f"COPY {t} ({', '.join(self.cols[t])}) FROM STDIN") as cp:
                        for row in rows[t]:
                            cp.write_row(row)
            self.conn.commit()
            self.instances += n_chunk
        with self.conn.cursor() as cur:
            for t in self.cols:
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}))")
        self.conn.commit()
        self.conn.autocommit = True
        try:
            for t in self.cols:
                self.conn.execute(f"VACUUM ANALYZE {t}")
        finally:
            self.conn.autocommit = False
        return time.perf_counter() - t0

    def counts(self) -> dict[str, int]:
        out = {}
        with self.conn.cursor() as cur:
            for t in self.cols:
                cur.execute(f"SELECT count(*) FROM {t}")
                out[t] = cur.fetchone()[0]
        self.conn.commit()
        return out

    def close(self) -> None:
        self.conn.close()


def qido_queries(loader: QidoLoader) -> list[tuple[str, str]]:
    """(label, path relative to .../dicomweb) -- values taken from loaded data."""
    r = random.Random(7)
    study_pk, study_uid = loader.studies[len(loader.studies) // 2]
    series_uid = loader.series_of[study_uid][0]
    _, patient_id = loader.patients[r.randrange(len(loader.patients))]
    return [
        ("baseline: StudyUID=<none>", "/studies?StudyInstanceUID=1.2.3.4.5.6.7.8.9"),
        ("studies?limit=100", "/studies?limit=100"),
        ("PatientName=SMITH*", "/studies?PatientName=SMITH*"),
        ("PatientID=<existing>", f"/studies?PatientID={patient_id}"),
        ("StudyDate=20200101-20200131", "/studies?StudyDate=20200101-20200131"),
        ("ModalitiesInStudy=MR&limit=50", "/studies?ModalitiesInStudy=MR&limit=50"),
        ("PatientName=smith&fuzzy", "/studies?PatientName=smith&fuzzymatching=true"),
        ("studies/{uid}/series", f"/studies/{study_uid}/series"),
        ("series/{uid}/instances", f"/studies/{study_uid}/series/{series_uid}/instances"),
    ]


def time_query(session: requests.Session, url: str, n: int, budget_s: float, warmup: int = 5) -> dict[str, Any]:
    lat: list[float] = []
    status = None
    results = None
    errors = 0
    for _ in range(warmup):
        session.get(url, timeout=120)
    t_end = time.perf_counter() + budget_s
    for _ in range(n):
        t0 = time.perf_counter()
        resp = session.get(url, timeout=120)
        _ = resp.content
        lat.append(time.perf_counter() - t0)
        status = resp.status_code
        if status != 200:
            errors += 1
        elif results is None:
            results = len(resp.json())
        if time.perf_counter() > t_end:
            break
    return {
        "n": len(lat), "status": status, "errors": errors, "results": results,
        "p50_ms": percentile(lat, 50) * 1000, "p95_ms": percentile(lat, 95) * 1000,
        "max_ms": max(lat) * 1000,
    }


def explain_sql(services: Any, account_id: str, path: str) -> str | None:
    """The main SQL statement QueryService runs for a QIDO path (literal binds)."""
    parts = urlsplit(path)
    segs = [p for p in parts.path.split("/") if p]
    if segs == ["studies"]:
        level, study_uid, series_uid = "study", None, None
    elif len(segs) == 3 and segs[2] == "series":
        level, study_uid, series_uid = "series", segs[1], None
    elif len(segs) == 5 and segs[4] == "instances":
        level, study_uid, series_uid = "instance", segs[1], segs[3]
    else:
        return None
    q = Query.from_qido(level, parse_qsl(parts.query), study_uid=study_uid, series_uid=series_uid)
    owner = Decision(allowed=True, reason="the account's own view", visible=True, sensitive_ok=True,
                     code=Reason.OWNER, account_id=account_id)
    stmt = services.query._statement(owner, q).limit(q.limit).offset(q.offset)
    return str(stmt.compile(dialect=postgresql.dialect(paramstyle="named"), compile_kwargs={"literal_binds": True}))


def psql_explain(dsn: str, sql: str) -> str:
    r = subprocess.run(["psql", dsn, "-X", "-q", "-c", f"EXPLAIN (ANALYZE, BUFFERS) {sql}"],
                       capture_output=True, text=True, timeout=300)
    return (r.stdout or r.stderr).rstrip()


def plan_summary(plan: str) -> dict[str, Any]:
    """Execution time and the sequentially scanned tables of a text plan."""
    m = re.search(r"Execution Time: ([0-9.]+) ms", plan)
    seq = sorted(set(re.findall(r"Seq Scan on (\w+)", plan)))
    return {"exec_ms": float(m.group(1)) if m else None, "seq_scans": seq}


def study_aggregate_sql(dsn: str, sql: str) -> str | None:
    """The per-page aggregate QueryService runs for study-level results
    (ModalitiesInStudy / NumberOfStudyRelated*), for the study pks of `sql`."""
    r = subprocess.run(["psql", dsn, "-X", "-q", "-At", "-c", f"SELECT string_agg(id::text, ',') FROM ({sql}) x"],
                       capture_output=True, text=True, timeout=300)
    pks = r.stdout.strip()
    if not pks:
        return None
    return ("SELECT series.study_pk, series.modality, count(instances.id) FROM series JOIN instances "
            f"ON instances.series_pk = series.id WHERE series.study_pk IN ({pks}) "
            "GROUP BY series.study_pk, series.id, series.modality")


def qido_part(base: Path, args: argparse.Namespace, dg_exe: str) -> dict[str, Any]:
    res: dict[str, Any] = {"sizes": {}, "explain": {}}
    dbname = None
    url = args.database_url
    if not url:
        dbname = f"dicomgate_bench_{os.getpid()}"
        url = pg_create_database(dbname)
        log(f"  created throwaway database {dbname}")
    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    res["database"] = dsn.rsplit("@", 1)[-1]
    workdir = base / "servers" / "dicomgate-qido"
    server = loader = services = None
    try:
        services = Services.from_settings(load_settings(env={}, overrides={
            "data_dir": str(workdir / "data"), "database_url": url}))  # migrations applied
        server = DicomgateServer(workdir, dg_exe, database_url=url).start()
        acc = str(server.account["id"])
        token = server.cli_json("token", "create", "--email", server.email)["token"]
        session = requests.Session()
        session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"})
        qbase = f"{server.base}/accounts/{acc}/dicomweb"
        loader = QidoLoader(dsn, acc)
        queries = None
        for size in args.qido_sizes:
            log(f"  [qido] bulk load to {size} instances  ({loadavg_str()})")
            secs = loader.load_to(size)
            counts = loader.counts()
            log(f"  [qido]   loaded in {secs:.1f} s (incl. VACUUM ANALYZE): {counts}  ({loadavg_str()})")
            if queries is None:
                queries = qido_queries(loader)  # fixed across sizes (the data only grows)
            row: dict[str, Any] = {"load_s": secs, "counts": counts, "queries": {}}
            log(f"  [qido] timing {len(queries)} queries, {args.qido_requests} requests each "
                f"(budget {args.qido_budget_s:.0f} s per query)  ({loadavg_str()})")
            for label, path in queries:
                t = time_query(session, qbase + path, args.qido_requests, args.qido_budget_s)
                row["queries"][label] = t
                log(f"    {label:32s} n={t['n']:3d} HTTP {t['status']} results={t['results']} "
                    f"p50 {t['p50_ms']:7.1f} ms  p95 {t['p95_ms']:7.1f} ms")
            log(f"  [qido]   done ({loadavg_str()})")
            res["sizes"][size] = row
        # EXPLAIN ANALYZE of every query's SQL at the largest size (full plan
        # printed for those whose HTTP p95 is over target; a summary for all)
        if queries and args.qido_sizes:
            largest = res["sizes"][args.qido_sizes[-1]]["queries"]
            for label, path in queries:
                sql = explain_sql(services, acc, path)
                if not sql:
                    continue
                plan = psql_explain(dsn, sql)
                entry = {"sql": sql, "plan": plan, "over_target": largest[label]["p95_ms"] > QIDO_TARGET_P95_MS,
                         **plan_summary(plan)}
                if path.startswith("/studies?"):
                    agg = study_aggregate_sql(dsn, sql)
                    if agg:
                        entry["aggregate_plan"] = psql_explain(dsn, agg)
                        entry["aggregate_ms"] = plan_summary(entry["aggregate_plan"])["exec_ms"]
                res["explain"][label] = entry
    except Exception as exc:  # noqa: BLE001
        res["error"] = str(exc)
        log(f"  [qido] ERROR: {exc}")
    finally:
        if server is not None:
            server.stop()
        if loader is not None:
            loader.close()
        if services is not None:
            services.close()
        if dbname and not args.keep:
            pg_drop_database(dbname)
            log(f"  dropped database {dbname}")
        elif dbname:
            log(f"  kept database {dbname} (--keep)")
    return res
