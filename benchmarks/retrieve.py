#!/usr/bin/env python3
"""Retrieve benchmark: WADO-RS study retrieve (dicomgate vs Orthanc), server
RSS during a large (2 GB) retrieve, and QIDO-RS study search latency on
PostgreSQL at 10^4 / 10^5 / 10^6 indexed instances.

Run from the repository root:
  .venv/bin/python benchmarks/retrieve.py                     # full default run
  .venv/bin/python benchmarks/retrieve.py --study-mb 20 --skip-big --qido-sizes 10000   # quick
See benchmarks/README.md ("retrieve.py").
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests  # noqa: E402

from harness.data import DataSet, generate_ct512, generate_multiframe, study_uid_of  # noqa: E402
from harness.measure import MB, TreeSampler, loadavg_str, machine_info, rss_bytes, timed_get_stream  # noqa: E402
from harness.senders import build_stow_bodies, run_stow, stow_files_streaming  # noqa: E402
from harness.servers import (  # noqa: E402
    DicomgateServer,
    DicomgateUnavailable,
    OrthancServer,
    dicomgate_check,
    dicomgate_exe,
    respawn_dicomgate,
)
from retrieve_qido import QIDO_TARGET_P95_MS, qido_part  # noqa: E402

TARGETS = ("dicomgate", "orthanc")
CT_INSTANCE_BYTES = 525_000  # one 512x512 16-bit CT from harness.data.generate_ct512, roughly
MF_FRAMES = 100  # 512x512x100 16-bit = ~52.4 MB per multi-frame instance
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
MiB = 1 << 20


def log(msg: str = "") -> None:
    print(msg, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study-mb", type=int, default=200, help="size of the WADO study in MB (default 200)")
    ap.add_argument("--big-mb", type=int, default=2048, help="size of the large retrieve in MB (default 2048)")
    ap.add_argument("--qido-sizes", default="10000,100000,1000000",
                    help="comma-separated instance counts for QIDO (default 10000,100000,1000000); '' to skip")
    ap.add_argument("--only", choices=TARGETS, help="one target only (orthanc: no QIDO part)")
    ap.add_argument("--skip-big", action="store_true", help="skip the large-retrieve RSS measurement")
    ap.add_argument("--no-big-orthanc", dest="big_orthanc", action="store_false",
                    help="do not store/retrieve the large study on Orthanc (saves ~2 GB of disk and a minute)")
    ap.add_argument("--reps", type=int, default=3, help="WADO repetitions per target (median reported, default 3)")
    ap.add_argument("--qido-requests", type=int, default=200, help="timed requests per QIDO query (default 200)")
    ap.add_argument("--qido-budget-s", type=float, default=30.0,
                    help="stop a QIDO query's timing loop after this many seconds (default 30)")
    ap.add_argument("--database-url",
                    help="PostgreSQL URL for the QIDO part (it bulk-inserts rows: use an EMPTY database); "
                         "default: a throwaway database dicomgate_bench_<pid> on 127.0.0.1:5432, dropped afterwards")
    ap.add_argument("--json-out", type=Path, help="also write the results as JSON to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (and the throwaway database)")
    ap.add_argument("--tmp", type=Path, help="parent directory for the temporary directory")
    args = ap.parse_args(argv)
    try:
        args.qido_sizes = sorted({int(x) for x in args.qido_sizes.split(",") if x.strip()})
    except ValueError:
        ap.error("--qido-sizes must be comma-separated integers")
    if any(n < 100 or n > 2_000_000 for n in args.qido_sizes):
        ap.error("--qido-sizes: each between 100 and 2000000 (keep the load bounded)")
    if not 1 <= args.study_mb <= 2000:
        ap.error("--study-mb must be between 1 and 2000")
    if not 60 <= args.big_mb <= 8192:
        ap.error("--big-mb must be between 60 and 8192")
    if not 1 <= args.reps <= 10:
        ap.error("--reps must be between 1 and 10")
    return args


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


# ============================================================================
# 1 + 2: WADO-RS retrieve and RSS
# ============================================================================


def retrieve_once(session: requests.Session, url: str, headers: dict[str, str], pid: int,
                  expect_bytes: int, expect_parts: int, label: str) -> dict[str, Any]:
    """One streamed retrieve with the server's RSS sampled every 100 ms."""
    rss0 = rss_bytes(pid)
    sampler = TreeSampler(pid, 0.1).start()
    try:
        g = timed_get_stream(session, url, headers)
    finally:
        sampler.stop()
    overhead = g.bytes - expect_bytes
    ok = g.status == 200 and g.parts == expect_parts and 0 <= overhead <= max(2000, 1000 * expect_parts)
    out = {
        "status": g.status, "ttfb_ms": g.ttfb_s * 1000, "total_s": g.total_s, "bytes": g.bytes,
        "mb_per_s": g.bytes / MB / g.total_s if g.total_s > 0 else None,
        "parts": g.parts, "expected_parts": expect_parts, "stored_bytes": expect_bytes,
        "multipart_overhead_bytes": overhead, "verified": ok,
        "rss_before_mb": rss0 / MiB, "peak_rss_mb": sampler.peak_rss / MiB,
        "rss_samples": sampler.samples, "server_cpu_s": sampler.cpu_seconds,
    }
    log(f"    {label}: HTTP {g.status} ttfb {out['ttfb_ms']:.1f} ms, {g.total_s:.2f} s, "
        f"{g.bytes / MB:.1f} MB ({out['mb_per_s'] or 0:.1f} MB/s), parts {g.parts}/{expect_parts}, "
        f"overhead {overhead} B -> {'OK' if ok else 'MISMATCH'}; RSS before {out['rss_before_mb']:.0f} MiB, "
        f"peak {out['peak_rss_mb']:.0f} MiB ({sampler.samples} samples)")
    return out


def wado_target(target: str, base: Path, ct: DataSet, ct_study: str, mf: DataSet | None,
                mf_study: str | None, args: argparse.Namespace, dg_exe: str | None) -> dict[str, Any]:
    res: dict[str, Any] = {"target": target}
    workdir = base / "servers" / f"{target}-wado"
    server: Any = None
    try:
        if target == "dicomgate":
            server = DicomgateServer(workdir, dg_exe).start()  # embedded default: SQLite + files
            headers = {"Authorization": f"Bearer {server.provider['token']}"}
            stow_url = server.stow_url
            study_url = lambda uid: f"{server.base}/accounts/{server.account['id']}/dicomweb/studies/{uid}"  # noqa: E731
        else:
            server = OrthancServer(workdir).start()
            headers = {}
            stow_url = server.stow_url
            study_url = lambda uid: f"{server.base}/dicom-web/studies/{uid}"  # noqa: E731
        # --- store -----------------------------------------------------------
        log(f"  [{target}] STOW {len(ct.files)} CT instances ({ct.total_bytes / MB:.0f} MB), 50 per POST  ({loadavg_str()})")
        bodies = build_stow_bodies(ct.preload(), 50)
        wall, _, _, ok, fail, errs, _ = run_stow(bodies, stow_url, headers, n_threads=1)
        del bodies
        log(f"  [{target}]   stored {ok}/{len(ct.files)} in {wall:.1f} s, {fail} failed {errs[:2] if errs else ''}")
        res["stow_ct"] = {"ok": ok, "failed": fail, "wall_s": wall, "errors": errs[:5]}
        if fail:
            raise RuntimeError(f"STOW of the CT study failed on {target}: {errs[:2]}")
        big = mf is not None and (target == "dicomgate" or args.big_orthanc)
        if big:
            log(f"  [{target}] STOW {len(mf.files)} multi-frame instances ({mf.total_bytes / MB:.0f} MB), "
                f"streamed from disk, 5 per POST  ({loadavg_str()})")
            wall, ok, fail, errs = stow_files_streaming(stow_url, mf.files, headers, batch=5)
            log(f"  [{target}]   stored {ok}/{len(mf.files)} in {wall:.1f} s ({mf.total_bytes / MB / wall:.0f} MB/s), "
                f"{fail} failed {errs[:2] if errs else ''}")
            res["stow_big"] = {"ok": ok, "failed": fail, "wall_s": wall, "errors": errs[:5]}
            if fail:
                big = False
                res["big_skipped"] = "STOW of the large study failed"
        # --- fresh process, so RSS is not inflated by the STOW ---------------
        if target == "dicomgate":
            respawn_dicomgate(server)
        else:
            server.stop()
            server.start()  # same storage and index directories
        time.sleep(1.0)
        res["rss_idle_mb"] = rss_bytes(server.pid) / MiB
        log(f"  [{target}] restarted; idle RSS {res['rss_idle_mb']:.0f} MiB")
        s = requests.Session()
        h = dict(headers)
        h["Accept"] = WADO_ACCEPT
        # --- step 1: the CT study, `reps` times -------------------------------
        reps = []
        log(f"  [{target}] WADO-RS study retrieve, {ct.total_bytes / MB:.0f} MB x {args.reps}  ({loadavg_str()})")
        for i in range(args.reps):
            reps.append(retrieve_once(s, study_url(ct_study), h, server.pid, ct.total_bytes, len(ct.files),
                                      f"rep {i + 1}"))
        log(f"  [{target}]   done ({loadavg_str()})")
        res["study"] = {
            "mb": ct.total_bytes / MB, "instances": len(ct.files), "reps": reps,
            "ttfb_ms": med([r["ttfb_ms"] for r in reps]), "total_s": med([r["total_s"] for r in reps]),
            "mb_per_s": med([r["mb_per_s"] for r in reps if r["mb_per_s"]]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in reps), "rss_before_mb": reps[0]["rss_before_mb"],
            "server_cpu_s": med([r["server_cpu_s"] for r in reps]),
            "verified": all(r["verified"] for r in reps),
        }
        # --- step 2: the large study, once -------------------------------------
        if big:
            log(f"  [{target}] WADO-RS large retrieve, {mf.total_bytes / MB:.0f} MB  ({loadavg_str()})")
            r = retrieve_once(s, study_url(mf_study), h, server.pid, mf.total_bytes, len(mf.files), "large")
            log(f"  [{target}]   done ({loadavg_str()})")
            res["big"] = {"mb": mf.total_bytes / MB, "instances": len(mf.files), **r}
        s.close()
    except Exception as exc:  # noqa: BLE001
        res["error"] = str(exc)
        log(f"  [{target}] ERROR: {exc}")
    finally:
        if server is not None:
            server.stop()
    return res


# ============================================================================
# report
# ============================================================================


def print_report(info: dict, args: argparse.Namespace, wado: dict[str, dict], qido: dict | None) -> dict:
    ratios: dict[str, Any] = {}
    log()
    log("=" * 100)
    log("RESULTS  (single runs on a shared 2-core VM; client and server share the cores; page cache warm)")
    log(f"machine: {info['nproc']} x {info['cpu_model']}, {info['mem_total_gb']} GB RAM, kernel {info['kernel']}, "
        f"Python {info['python']}, {info.get('orthanc', '?')}")
    if wado:
        log()
        log("WADO-RS study retrieve (Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=*),"
            f" median of {args.reps}")
        hdr = f"{'target':10s} {'study MB':>8s} {'inst':>5s} {'TTFB ms':>8s} {'total s':>8s} {'MB/s':>7s} " \
              f"{'srvCPU s':>8s} {'idle RSS':>8s} {'peak RSS':>8s} {'verified':>8s}"
        log(hdr)
        log("-" * len(hdr))
        for t, r in wado.items():
            st = r.get("study")
            if not st:
                log(f"{t:10s} {'error: ' + r.get('error', '?')}")
                continue
            log(f"{t:10s} {st['mb']:8.1f} {st['instances']:5d} {st['ttfb_ms']:8.1f} {st['total_s']:8.2f} "
                f"{st['mb_per_s']:7.1f} {st['server_cpu_s']:8.2f} {r['rss_idle_mb']:8.0f} {st['peak_rss_mb']:8.0f} "
                f"{'yes' if st['verified'] else 'NO':>8s}")
        log("(RSS in MiB, server process tree; TTFB = request sent -> response headers received)")
        if not args.skip_big:
            log()
            log("Peak server RSS: CT study vs large study (memory should be flat in response size)")
            hdr = f"{'target':10s} {'size MB':>8s} {'inst':>5s} {'total s':>8s} {'MB/s':>7s} " \
                  f"{'RSS before':>10s} {'peak RSS':>8s} {'growth':>8s} {'verified':>8s}"
            log(hdr)
            log("-" * len(hdr))
            for t, r in wado.items():
                for key in ("study", "big"):
                    x = r.get(key)
                    if not x:
                        if key == "big":
                            log(f"{t:10s} {'(large study not run: ' + r.get('big_skipped', 'see --no-big-orthanc') + ')'}")
                        continue
                    if key == "study":
                        rep = max(x["reps"], key=lambda z: z["peak_rss_mb"])
                        before, peak, tot, mbs, ver = rep["rss_before_mb"], rep["peak_rss_mb"], rep["total_s"], rep["mb_per_s"], rep["verified"]
                    else:
                        before, peak, tot, mbs, ver = x["rss_before_mb"], x["peak_rss_mb"], x["total_s"], x["mb_per_s"], x["verified"]
                    log(f"{t:10s} {x['mb']:8.0f} {x['instances']:5d} {tot:8.2f} {mbs:7.1f} {before:10.0f} "
                        f"{peak:8.0f} {peak - before:+8.0f} {'yes' if ver else 'NO':>8s}")
        dg, oc = wado.get("dicomgate", {}).get("study"), wado.get("orthanc", {}).get("study")
        if dg and oc:
            ratios = {
                "ttfb": dg["ttfb_ms"] / oc["ttfb_ms"] if oc["ttfb_ms"] else None,
                "total_time": dg["total_s"] / oc["total_s"] if oc["total_s"] else None,
                "mb_per_s": dg["mb_per_s"] / oc["mb_per_s"] if oc["mb_per_s"] else None,
                "peak_rss": dg["peak_rss_mb"] / oc["peak_rss_mb"] if oc["peak_rss_mb"] else None,
                "server_cpu": dg["server_cpu_s"] / oc["server_cpu_s"] if oc["server_cpu_s"] else None,
            }
            dgb, ocb = wado["dicomgate"].get("big"), wado["orthanc"].get("big")
            if dgb and ocb:
                ratios["big_peak_rss"] = dgb["peak_rss_mb"] / ocb["peak_rss_mb"]
                ratios["big_mb_per_s"] = dgb["mb_per_s"] / ocb["mb_per_s"]
            log()
            log("Ratios dicomgate / Orthanc (WADO study retrieve): " + ", ".join(
                f"{k} {v:.2f}" for k, v in ratios.items() if v is not None)
                + "   (MB/s: >1 = dicomgate faster; time, TTFB, RSS, CPU: <1 = dicomgate better)")
    if qido and qido.get("sizes"):
        log()
        log(f"QIDO-RS on PostgreSQL ({qido.get('database')}), one account holding everything, owner's bearer token; "
            f"p50 / p95 ms over {args.qido_requests} requests (fewer if a query exceeded {args.qido_budget_s:.0f} s)")
        sizes = list(qido["sizes"])
        labels = list(qido["sizes"][sizes[0]]["queries"])
        hdr = f"{'query':32s} " + " ".join(f"{f'{s:,} inst':>19s}" for s in sizes)
        log(hdr)
        log("-" * len(hdr))
        for lab in labels:
            cells = []
            for s in sizes:
                q = qido["sizes"][s]["queries"][lab]
                flag = "!" if q["p95_ms"] > QIDO_TARGET_P95_MS else " "
                cells.append(f"{q['p50_ms']:8.1f} /{q['p95_ms']:8.1f}{flag}")
            log(f"{lab:32s} " + " ".join(f"{c:>19s}" for c in cells))
        log("rows: " + "; ".join(
            f"{s:,}: " + ", ".join(f"{k} {v:,}" for k, v in qido["sizes"][s]["counts"].items())
            + f" (loaded in {qido['sizes'][s]['load_s']:.0f} s)" for s in sizes))
        log(f"results per query at {sizes[-1]:,}: " + ", ".join(
            f"{lab} {qido['sizes'][sizes[-1]]['queries'][lab]['results']}" for lab in labels))
        log(f"'!' = p95 over the {QIDO_TARGET_P95_MS:.0f} ms target")
        if qido.get("explain"):
            log()
            log(f"SQL at {sizes[-1]:,} (EXPLAIN ANALYZE through psql): main statement / per-page aggregate execution ms,"
                " sequential scans")
            for lab, e in qido["explain"].items():
                log(f"  {lab:32s} {fmt(e.get('exec_ms'), 2):>7s} / {fmt(e.get('aggregate_ms'), 2):>7s} ms   "
                    f"seq scan: {', '.join(e.get('seq_scans') or []) or '-'}")
        for lab, e in qido.get("explain", {}).items():
            if not e.get("over_target"):
                continue
            log()
            log(f"EXPLAIN ANALYZE for '{lab}' (p95 over target at {sizes[-1]:,}):")
            log(e["sql"])
            log(e["plan"])
            if e.get("aggregate_plan"):
                log("-- per-page aggregate (ModalitiesInStudy / NumberOfStudyRelated*):")
                log(e["aggregate_plan"])
    elif qido and qido.get("error"):
        log(f"QIDO: error: {qido['error']}")
    log()
    log("Caveat: single runs on a shared 2-core VM (other work may run at times: see the load lines above);"
        " treat differences under ~15 % as noise.")
    return ratios


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    log(f"machine: {json.dumps(info)}")
    log(f"start ({loadavg_str()})")
    dg_exe = None
    targets = [args.only] if args.only else list(TARGETS)
    try:
        dg_exe = dicomgate_exe(Path(__file__).resolve().parent.parent / ".venv" / "bin")
        dicomgate_check(dg_exe)
    except DicomgateUnavailable as exc:
        log(f"dicomgate not available: {exc}")
        targets = [t for t in targets if t != "dicomgate"]
        dg_exe = None
    base = Path(tempfile.mkdtemp(prefix="dg-retrieve-", dir=args.tmp))
    log(f"temp dir {base}")
    wado: dict[str, dict] = {}
    qido: dict | None = None
    try:
        # --- data -------------------------------------------------------------
        n_ct = max(1, round(args.study_mb * MB / CT_INSTANCE_BYTES))
        t0 = time.perf_counter()
        ct = generate_ct512(base / "data" / "ct", n_ct, per_series=100, series_per_study=10**6)
        ct_study = study_uid_of(ct.files[0])
        log(f"generated CT study: {n_ct} instances, {ct.total_bytes / MB:.1f} MB, {ct.series} series "
            f"in {time.perf_counter() - t0:.1f} s")
        mf = mf_study = None
        if not args.skip_big:
            per_inst = 512 * 512 * 2 * MF_FRAMES
            n_mf = max(1, round(args.big_mb * MiB / per_inst))
            need = 3 * n_mf * per_inst * (1 + (1 if args.big_orthanc else 0))
            free = shutil.disk_usage(base).free
            if free < need:
                log(f"skipping the large retrieve: {free / 1e9:.1f} GB free under {base}, "
                    f"need {need / 1e9:.1f} GB (3x the data per copy)")
            else:
                t0 = time.perf_counter()
                mf = generate_multiframe(base / "data" / "mf", n_mf, frames=MF_FRAMES)
                mf_study = study_uid_of(mf.files[0])
                log(f"generated large study: {n_mf} multi-frame instances of {MF_FRAMES} frames, "
                    f"{mf.total_bytes / MB:.0f} MB in {time.perf_counter() - t0:.1f} s")
        # --- 1 + 2 ------------------------------------------------------------
        for target in targets:
            log(f"== WADO-RS on {target}  ({loadavg_str()})")
            wado[target] = wado_target(target, base, ct, ct_study, mf, mf_study, args, dg_exe)
            shutil.rmtree(base / "servers" / f"{target}-wado", ignore_errors=True)  # free the disk early
        if mf is not None:
            shutil.rmtree(base / "data" / "mf", ignore_errors=True)
        # --- 3 ------------------------------------------------------------------
        if args.qido_sizes and dg_exe and "dicomgate" in targets:
            log(f"== QIDO-RS on PostgreSQL, sizes {args.qido_sizes}  ({loadavg_str()})")
            qido = qido_part(base, args, dg_exe)
        elif args.qido_sizes:
            log("== QIDO-RS skipped (dicomgate not selected or not available)")
        log(f"end ({loadavg_str()})")
        ratios = print_report(info, args, wado, qido)
        if args.json_out:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            doc = {"machine": info, "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "wado": wado, "qido": qido, "ratios": ratios}
            args.json_out.write_text(json.dumps(doc, indent=2, default=str))
            log(f"wrote {args.json_out}")
    finally:
        if args.keep:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    failed = any("error" in r or not r.get("study", {}).get("verified", False) for r in wado.values()) \
        or bool(qido and qido.get("error"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
