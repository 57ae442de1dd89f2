#!/usr/bin/env python3
"""Ingest benchmark: dicomgate vs Orthanc (+DICOMweb plugin) vs DCMTK storescp.

Workloads (each on a freshly started server with an empty store):
  cstore-1a-small / cstore-1a-ct   C-STORE, 1 association
  cstore-4a-small / cstore-4a-ct   C-STORE, 4 concurrent associations (4 threads)
  stow-1t-small   / stow-1t-ct     STOW-RS, 50 instances per POST, 1 client thread
  stow-4t-small   / stow-4t-ct     STOW-RS, 50 instances per POST, 4 client threads

Run from the repository root:
  .venv/bin/python benchmarks/ingest.py [--small 1000] [--ct 400]
      [--only dicomgate|orthanc|storescp] [--database-url URL] [--keep]
      [--json-out FILE]
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.data import generate_ct512, generate_small  # noqa: E402
from harness.measure import RunResult, TreeSampler, machine_info  # noqa: E402
from harness.senders import build_stow_bodies, run_cstore, run_cstore_storescu, run_stow  # noqa: E402
from harness.servers import (  # noqa: E402
    DicomgateServer,
    DicomgateUnavailable,
    OrthancServer,
    StoreSCP,
    dicomgate_check,
    dicomgate_exe,
)

TARGETS = ("dicomgate", "orthanc", "storescp")
STOW_BATCH = 50

# (workload name, kind, data set key, concurrency)
WORKLOADS = [
    ("cstore-1a-small", "cstore", "small", 1),
    ("cstore-1a-ct", "cstore", "ct", 1),
    ("cstore-4a-small", "cstore", "small", 4),
    ("cstore-4a-ct", "cstore", "ct", 4),
    ("stow-1t-small", "stow", "small", 1),
    ("stow-1t-ct", "stow", "ct", 1),
    ("stow-4t-small", "stow", "small", 4),
    ("stow-4t-ct", "stow", "ct", 4),
]


def log(msg: str) -> None:
    print(msg, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=1000, help="number of small instances (default 1000)")
    ap.add_argument("--ct", type=int, default=400, help="number of 512x512 CT instances (default 400)")
    ap.add_argument("--only", choices=TARGETS, help="run a single target")
    ap.add_argument("--database-url", help="run dicomgate on this database (e.g. PostgreSQL) instead of its default")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    ap.add_argument("--json-out", type=Path, help="also write the results as JSON to this file")
    ap.add_argument("--workloads", help="comma-separated subset of workload names (default: all)")
    ap.add_argument("--send-mode", choices=("file", "dataset"), default="file",
                    help="C-STORE from the (page-cached) file, streamed without decoding (default), "
                         "or from pre-read pydicom Datasets (pynetdicom re-encodes each one)")
    ap.add_argument("--client", choices=("pynetdicom", "storescu"), default="pynetdicom",
                    help="C-STORE sender: the pynetdicom SCU in this process (default, per-instance latencies) "
                         "or DCMTK storescu, one process per association (far less client CPU)")
    ap.add_argument("--tmp", type=Path, help="parent directory for the temporary directories")
    args = ap.parse_args(argv)
    if args.small < 1 or args.ct < 1:
        ap.error("--small and --ct must be >= 1")
    if args.small > 20000 or args.ct > 5000:
        ap.error("refusing more than 20000 small / 5000 CT instances (keep the load bounded)")
    return args


def start_target(target: str, workdir: Path, args: argparse.Namespace, dg_exe: str | None):
    if target == "storescp":
        return StoreSCP(workdir).start()
    if target == "orthanc":
        return OrthancServer(workdir).start()
    assert dg_exe
    return DicomgateServer(workdir, dg_exe, database_url=args.database_url).start()


def run_one(target: str, workload: tuple, data: dict, stow_bodies: Callable[[str], list], base: Path,
            args: argparse.Namespace, dg_exe: str | None) -> RunResult:
    name, kind, key, conc = workload
    ds = data[key]
    res = RunResult(workload=name, target=target, instances=len(ds["files"]), bytes=0)
    if kind == "stow" and target == "storescp":
        res.skipped = "no STOW-RS"
        return res
    workdir = base / "servers" / f"{target}-{name}"
    server = None
    try:
        server = start_target(target, workdir, args, dg_exe)
        sampler = TreeSampler(server.pid, 0.1).start()
        try:
            if kind == "cstore" and args.client == "storescu":
                wall, lats, ok, fail, errs, ccpu = run_cstore_storescu(ds["files"], server.dicom_port,
                                                                       server.called_aet, n_assoc=conc)
                res.latency_unit = "n/a"
            elif kind == "cstore":
                items = ds["datasets"] if args.send_mode == "dataset" else ds["files"]
                wall, lats, ok, fail, errs, ccpu = run_cstore(items, ds["sop_classes"], server.dicom_port,
                                                              server.called_aet, n_assoc=conc)
                res.latency_unit = "C-STORE"
                res.per_instance_latencies_s = lats
            else:
                bodies = stow_bodies(key)
                url = server.stow_url
                headers = getattr(server, "stow_headers", {})
                wall, lats, per_inst, ok, fail, errs, ccpu = run_stow(bodies, url, headers, n_threads=conc)
                res.latency_unit = f"POST({STOW_BATCH})"
                res.per_instance_latencies_s = per_inst
        finally:
            sampler.stop()
        res.wall_s, res.latencies_s, res.ok, res.failures, res.errors = wall, lats, ok, fail, errs
        res.client_cpu_s = ccpu
        res.bytes = sum(ds["sizes"])  # file bytes offered (see README)
        res.peak_rss_bytes = sampler.peak_rss
        res.server_cpu_s = sampler.cpu_seconds
        if server.proc.poll() is not None:
            res.errors.append(f"server exited with code {server.proc.returncode} during the run")
        # server-side check where a cheap one exists (not timed)
        if target == "storescp":
            time.sleep(0.2)
        cnt = server.stored_count()
        if cnt is not None:
            res.verified = f"{cnt}/{res.instances} stored"
            if cnt != res.ok:
                res.errors.append(f"server reports {cnt} stored instances, client saw {res.ok} successes")
    except DicomgateUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001
        res.skipped = f"error: {str(exc).splitlines()[0][:200]}"
        res.errors.append(str(exc))
        log(f"    !! {target} {name}: {exc}")
    finally:
        if server is not None:
            server.stop()
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    return res


def fmt(x: Any, spec: str = ".1f") -> str:
    if x is None:
        return "-"
    return format(x, spec)


def print_table(results: list[dict], targets: list[str]) -> None:
    hdr = (f"{'workload':<16} {'target':<10} {'ok/N':>11} {'fail':>4} {'wall s':>7} {'inst/s':>8} {'MB/s':>7} "
           f"{'lat unit':>9} {'p50 ms':>8} {'p95 ms':>8} {'RSS MB':>7} {'srvCPU s':>8} {'cliCPU s':>8}")
    print(hdr)
    print("-" * len(hdr))
    last = None
    for r in results:
        if last and last != r["workload"]:
            print()
        last = r["workload"]
        if r["skipped"]:
            print(f"{r['workload']:<16} {r['target']:<10} {'(' + r['skipped'] + ')'}")
            continue
        print(f"{r['workload']:<16} {r['target']:<10} {str(r['ok']) + '/' + str(r['instances']):>11} {r['failures']:>4} "
              f"{r['wall_s']:>7.2f} {fmt(r['inst_per_s']):>8} {fmt(r['mb_per_s'], '.2f'):>7} {r['latency_unit']:>9} "
              f"{fmt(r['p50_ms'], '.2f'):>8} {fmt(r['p95_ms'], '.2f'):>8} {fmt(r['peak_rss_mb']):>7} "
              f"{fmt(r['server_cpu_s'], '.2f'):>8} {fmt(r['client_cpu_s'], '.2f'):>8}")


def ratios(results: list[dict]) -> list[dict]:
    """dicomgate / peer for each workload where both ran."""
    by = {(r["workload"], r["target"]): r for r in results if not r["skipped"]}
    out = []
    for wl, *_ in WORKLOADS:
        dg = by.get((wl, "dicomgate"))
        if not dg:
            continue
        for peer in ("orthanc", "storescp"):
            p = by.get((wl, peer))
            if not p:
                continue

            def rat(k: str) -> float | None:
                a, b = dg.get(k), p.get(k)
                return round(a / b, 2) if a is not None and b not in (None, 0) else None

            out.append({"workload": wl, "peer": peer, "inst_per_s": rat("inst_per_s"), "p50_ms": rat("p50_ms"),
                        "p95_ms": rat("p95_ms"), "peak_rss_mb": rat("peak_rss_mb"),
                        "server_cpu_s": rat("server_cpu_s")})
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>` dumps stacks
    targets = [args.only] if args.only else list(TARGETS)
    selected = WORKLOADS
    if args.workloads:
        wanted = {w.strip() for w in args.workloads.split(",") if w.strip()}
        unknown = wanted - {w[0] for w in WORKLOADS}
        if unknown:
            print(f"unknown workloads: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        selected = [w for w in WORKLOADS if w[0] in wanted]

    dg_exe = None
    dg_note = ""
    if "dicomgate" in targets:
        try:
            dg_exe = dicomgate_exe(Path(__file__).resolve().parent.parent / ".venv" / "bin")
            dicomgate_check(dg_exe)
        except DicomgateUnavailable as exc:
            dg_note = f"dicomgate not available: {exc}"
            log(dg_note)
            targets.remove("dicomgate")
            dg_exe = None
    if not targets:
        log("nothing to run")
        return 1

    base = Path(tempfile.mkdtemp(prefix="dicomgate-bench-", dir=args.tmp))
    log(f"work dir: {base}")
    info = machine_info()
    results: list[RunResult] = []
    try:
        # ---- data, generated once, reused by every workload/target
        t0 = time.perf_counter()
        data: dict[str, dict] = {}
        need = {w[2] for w in selected}
        for key, gen, n in (("small", generate_small, args.small), ("ct", generate_ct512, args.ct)):
            if key not in need:
                continue
            d = gen(base / "data" / key, n)
            blobs = d.preload()  # warm the page cache; bytes reused for STOW bodies
            entry = {"files": [str(p) for p in d.files], "sizes": [len(b) for b in blobs], "blobs": blobs,
                     "sop_classes": d.sop_classes, "desc": f"{n} files, {d.total_bytes / 1e6:.1f} MB, "
                     f"{d.series} series / {d.studies} studies"}
            if args.send_mode == "dataset":
                import pydicom

                entry["datasets"] = [pydicom.dcmread(p) for p in d.files]
            data[key] = entry
            log(f"generated {key}: {entry['desc']}")
        log(f"data generation took {time.perf_counter() - t0:.1f}s")

        body_cache: dict[str, list] = {}

        def stow_bodies(key: str) -> list:
            if key not in body_cache:
                body_cache[key] = build_stow_bodies(data[key]["blobs"], STOW_BATCH)
            return body_cache[key]

        # ---- run: for each workload, each target on a fresh server
        for wl in selected:
            for target in targets:
                if wl[1] == "stow" and target == "storescp":
                    continue
                log(f"  {wl[0]:<16} -> {target} ...")
                try:
                    r = run_one(target, wl, data, stow_bodies, base, args, dg_exe)
                except DicomgateUnavailable as exc:
                    log(f"dicomgate not available: {exc}")
                    continue
                d = r.as_dict()
                results.append(r)
                if not r.skipped:
                    log(f"    {d['ok']}/{d['instances']} ok, {d['failures']} failed, {d['wall_s']}s, "
                        f"{d['inst_per_s']} inst/s, {d['mb_per_s']} MB/s, p50 {d['p50_ms']} ms, "
                        f"RSS {d['peak_rss_mb']} MB {('[' + d['verified'] + ']') if d['verified'] else ''}")
                for e in r.errors[:5]:
                    log(f"    ! {e.splitlines()[0][:300]}")
                if len(r.errors) > 5:
                    log(f"    ! ... {len(r.errors) - 5} more errors")
    finally:
        if args.keep:
            log(f"kept work dir {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    rows = [r.as_dict() for r in results]
    rows.sort(key=lambda r: ([w[0] for w in WORKLOADS].index(r["workload"]), TARGETS.index(r["target"])))
    rat = ratios(rows)

    print()
    print("=" * 100)
    print("Ingest benchmark results (single run each, on a shared VM - treat as indicative)")
    print(f"machine: {info['nproc']} cores, {info['cpu_model']}, {info['mem_total_gb']} GB RAM, kernel {info['kernel']}")
    print(f"python {info['python']}, pynetdicom {info['pynetdicom']}, pydicom {info['pydicom']}, "
          f"requests {info['requests']}; {info['storescp']}; {info['orthanc']}")
    for key, d in data.items():
        print(f"data {key}: {d['desc']}")
    if args.client == "storescu":
        print("C-STORE: DCMTK storescu 'BENCHPACS', TCP_NODELAY=1, one process per association, files split "
              "contiguously; no per-instance latency")
    else:
        print("C-STORE: pynetdicom SCU 'BENCHPACS', TCP_NODELAY, "
              + ("files streamed from page cache (no client decode)" if args.send_mode == "file"
                 else "pre-read Datasets (pynetdicom encodes)")
              + "; latency = per C-STORE call; 4a = 4 threads x 1 association, files split contiguously")
    print(f"STOW-RS: {STOW_BATCH} instances/POST, pre-built multipart/related bodies, requests.Session per thread; "
          "latency = per POST")
    if "orthanc" in targets:
        print("Orthanc: SQLite index, StorageCompression=false, SyncStorageArea=true (fsync per file), "
              "DICOMweb plugin only")
    if "storescp" in targets:
        print("storescp: DCMTK default single-process mode (concurrent associations are served one after another), "
              "no fsync, C-STORE only")
    if "dicomgate" in targets:
        print("dicomgate: default settings (SQLite index unless --database-url, file store under --data-dir)")
    if args.database_url:
        print(f"dicomgate: --database-url {args.database_url.split('@')[-1]}")
    if dg_note:
        print(dg_note)
    print("Each workload runs on a freshly started server with an empty store. RSS = peak of the server process "
          "tree, sampled every 100 ms during the run. MB/s = DICOM file bytes / wall time. CPU s = user+sys.")
    print()
    print_table(rows, targets)
    total_fail = sum(r["failures"] for r in rows)
    print()
    print(f"total failures: {total_fail}")
    if any("no response" in e for r in rows for e in r["errors"]):
        print("  (a 'status none (no response)' failure costs a ~10 s stall in that workload's wall time: "
              "known pynetdicom client issue, see README; re-run that workload)")
    if rat:
        print()
        print("ratios dicomgate / peer (inst/s > 1 means dicomgate is faster; latency/RSS/CPU > 1 means dicomgate uses more)")
        print(f"{'workload':<16} {'peer':<9} {'inst/s':>7} {'p50':>6} {'p95':>6} {'RSS':>6} {'srvCPU':>7}")
        for r in rat:
            print(f"{r['workload']:<16} {r['peer']:<9} {fmt(r['inst_per_s'], '.2f'):>7} {fmt(r['p50_ms'], '.2f'):>6} "
                  f"{fmt(r['p95_ms'], '.2f'):>6} {fmt(r['peak_rss_mb'], '.2f'):>6} {fmt(r['server_cpu_s'], '.2f'):>7}")
    print()
    print("Note: single-run figures on a shared 2-core VM; client and server compete for the same cores "
          "(see cliCPU s), so absolute numbers are pessimistic and run-to-run noise can be 10-20%.")

    if args.json_out:
        out = {
            "machine": info,
            "params": {"small": args.small, "ct": args.ct, "stow_batch": STOW_BATCH, "send_mode": args.send_mode,
                       "targets": targets, "database_url": bool(args.database_url),
                       "orthanc_settings": OrthancServer.SETTINGS, "storescp_mode": "single-process"},
            "data": {k: v["desc"] for k, v in data.items()},
            "notes": [n for n in (dg_note,) if n] + ["single-run figures on a shared 2-core VM"],
            "results": rows,
            "ratios": rat,
        }
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(out, indent=2))
        print(f"results written to {args.json_out}")
    return 1 if total_fail else 0


if __name__ == "__main__":
    sys.exit(main())
