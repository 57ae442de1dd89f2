"""Open-ended fuzzing of the parsers a hostile peer reaches, for a bounded time per target.

    .venv/bin/python benchmarks/fuzz.py --seconds 60            # every target, 60 s each
    .venv/bin/python benchmarks/fuzz.py --seconds 300 --target multipart --seed 7

Targets (tests/fuzz/targets.py holds them and their properties; the suite
runs each briefly and derandomized in tests/fuzz/test_fuzz_*.py):

* ``part10``: the ingest header read (parse_instance, dataset_offset,
  sensitivity labels, digest): only MalformedInstance;
* ``multipart``: iter_parts on arbitrary bodies: only MultipartError, and
  the same parts (or refusal) whatever the chunking;
* ``multipart_roundtrip``: well-formed bodies come back byte-identical;
* ``pdu``: pynetdicom's PDU decode and the state-machine steps after it;
* ``scp_pdu``: scp/pdu.py read_pdu over a connection cutting the input
  at random, then the decode.

Every input also runs under a time and heap bound (targets.bounded). Unlike
the suite, the runs are random (``--seed`` to repeat one) and a failure
does not stop the run: each distinct crash (exception type and where it was
raised) is shrunk by hypothesis to a minimal input, printed, and then
ignored while the search goes on. Exit status 1 if anything crashed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.fuzz import targets  # noqa: E402


def _size(value: Any) -> int:
    if isinstance(value, (bytes, targets.DicomInput)):
        return len(value)
    if isinstance(value, tuple):
        return sum(_size(v) for v in value if isinstance(v, (bytes, tuple, targets.DicomInput)))
    return 0


def _roundtrip(message: tuple, chunk_size: int, plan: list[int]) -> str:
    parts, body = message
    got = targets.read_multipart(targets.ChunkedStream(body, plan), chunk_size=chunk_size)
    assert isinstance(got, list), f"a well-formed body was refused: {got}"
    assert [d for _, _, d in got] == [d for _, d in parts], "parts not byte-identical"
    return "ok"


_chunks = st.integers(1, 80)
_plans = st.lists(st.integers(1, 80), min_size=1, max_size=6)

#: name -> (strategy, function of one drawn value, heap-bound size of that value (None: its length))
TARGETS: dict[str, tuple[st.SearchStrategy, Callable[[Any], Any], Callable[[Any], int]]] = {
    "part10": (targets.dicom_inputs(), targets.dicom_ingest, _size),
    "multipart": (st.tuples(targets.multipart_bodies(), _chunks, _plans), lambda v: targets.multipart(*v), _size),
    "multipart_roundtrip": (st.tuples(targets.multipart_messages(), _chunks, _plans), lambda v: _roundtrip(*v),
                            lambda v: len(v[0][1])),
    "pdu": (targets.pdu_inputs(), targets.pynetdicom_pdu, _size),
    "scp_pdu": (targets.scp_pdu_inputs(), lambda v: targets.scp_pdu(*v),
                lambda v: max(targets.PDU_LIMITS.values())),
}


@dataclass
class Run:
    name: str
    tried: int = 0
    outcomes: Counter = field(default_factory=Counter)
    crashes: dict[tuple, tuple[Any, str]] = field(default_factory=dict)  # signature -> (minimal input, error)


def _signature(exc: BaseException) -> tuple:
    frames = traceback.extract_tb(exc.__traceback__)
    where = (frames[-1].filename.rsplit("/", 2)[-1], frames[-1].lineno) if frames else ("?", 0)
    return (type(exc).__name__, *where)


def fuzz(name: str, seconds: float, rng: random.Random, batch: int) -> Run:
    strategy, fn, size = TARGETS[name]
    run = Run(name)
    last: dict[tuple, tuple[Any, str]] = {}
    deadline = time.monotonic() + seconds

    def one(value: Any) -> None:
        run.tried += 1
        try:
            with targets.bounded(size(value)):
                outcome = fn(value)
        except Exception as exc:
            sig = _signature(exc)
            if sig in run.crashes:
                return  # known: let the search go on
            last[sig] = (value, f"{type(exc).__name__}: {str(exc)[:300]}")
            raise
        run.outcomes[str(outcome).split(":")[0] if outcome is not None else "ok"] += 1

    while time.monotonic() < deadline:
        test = seed(rng.getrandbits(64))(
            settings(max_examples=batch, database=None, deadline=None, derandomize=False,
                     suppress_health_check=list(HealthCheck), report_multiple_bugs=True,
                     phases=[Phase.generate, Phase.shrink], print_blob=False)(given(strategy)(one)))
        try:
            test()
        except BaseException as exc:  # noqa: BLE001 - a failing batch (possibly several bugs at once)
            if isinstance(exc, KeyboardInterrupt):
                raise
        for sig, found in last.items():
            run.crashes.setdefault(sig, found)  # the last value recorded is hypothesis' shrunk replay
        last.clear()
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="time per target (default 30)")
    ap.add_argument("--target", action="append", choices=sorted(TARGETS), help="repeatable; default all")
    ap.add_argument("--seed", type=int, default=None, help="repeat a run")
    ap.add_argument("--batch", type=int, default=300, help="examples per hypothesis run (default 300)")
    args = ap.parse_args(argv)
    master = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    print(f"seed {master}")
    import logging

    logging.disable(logging.CRITICAL)  # pynetdicom logs every broken PDU
    import warnings

    warnings.simplefilter("ignore")
    crashed = 0
    for name in args.target or list(TARGETS):
        t0 = time.monotonic()
        run = fuzz(name, args.seconds, random.Random(f"{master}-{name}"), args.batch)
        elapsed = time.monotonic() - t0
        rate = run.tried / elapsed if elapsed else 0.0
        print(f"{name}: {run.tried} inputs in {elapsed:.0f} s ({rate:.0f}/s), {len(run.crashes)} crash(es); "
              f"outcomes {dict(run.outcomes.most_common(8))}")
        for sig, (value, error) in run.crashes.items():
            crashed += 1
            print(f"  CRASH {sig[0]} at {sig[1]}:{sig[2]}: {error}")
            print(f"    minimal input: {value!r}"[:4000])
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
