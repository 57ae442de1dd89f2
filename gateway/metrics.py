"""Prometheus metrics (text format at /metrics). Counts only: no identifiers in labels."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry()
INGEST = Counter("dicomgate_ingest_instances_total", "Instances offered for ingest, by outcome",
                 ["outcome"], registry=REGISTRY)
INGEST_BYTES = Counter("dicomgate_ingest_bytes_total", "Bytes of instances stored", registry=REGISTRY)
ASSOCIATIONS = Counter("dicomgate_associations_total", "DIMSE associations, by result", ["result"],
                       registry=REGISTRY)
HTTP = Counter("dicomgate_http_requests_total", "HTTP requests, by area and status class",
               ["area", "status"], registry=REGISTRY)
HTTP_SECONDS = Histogram("dicomgate_http_request_seconds", "HTTP request handling time", ["area"],
                         registry=REGISTRY)


# -- DIMSE worker processes (scp.processes) count in prometheus_client's
# multiprocess files; /metrics adds their samples to this process's own.
_WORKER_DIRS: list[str] = []


def include_worker_metrics(path: str) -> None:
    """Add the counts that worker processes write under ``path`` to :func:`exposition`."""
    _WORKER_DIRS.append(path)


class _WithWorkers:
    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client.multiprocess import MultiProcessCollector
        from prometheus_client.samples import Sample

        theirs: dict[str, Any] = {}
        for path in _WORKER_DIRS:
            if os.path.isdir(path):
                for family in MultiProcessCollector(None, path=path).collect():
                    theirs.setdefault(family.name, []).append(family)
        for family in REGISTRY.collect():
            others = theirs.pop(family.name, [])
            if others:
                sums: dict[tuple, float] = {}
                for s in family.samples + [s for o in others for s in o.samples]:
                    if s.name.endswith("_created"):
                        continue  # a creation time, not a count: not summed
                    key = (s.name, tuple(sorted(s.labels.items())))
                    sums[key] = sums.get(key, 0.0) + s.value
                family.samples = [Sample(name, dict(labels), value) for (name, labels), value in sums.items()]
            yield family
        for families in theirs.values():
            yield from families


def exposition() -> bytes:
    if not _WORKER_DIRS:
        return generate_latest(REGISTRY)
    merged = CollectorRegistry(auto_describe=False)
    merged.register(_WithWorkers())  # type: ignore[arg-type]
    return generate_latest(merged)
