"""Prometheus metrics (text format at /metrics). Counts only: no identifiers in labels."""

from __future__ import annotations

import os
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


# -- worker processes (gateway.runtime.processes) count in prometheus_client's
# multiprocess files, one directory per ``serve`` (PROMETHEUS_MULTIPROC_DIR);
# /metrics in any of them reads every process's counts from those files.
def exposition() -> bytes:
    shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if shared:  # a worker process: its own counts are in the directory too
        from prometheus_client.multiprocess import MultiProcessCollector

        merged = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(merged, path=shared)
        return generate_latest(merged)
    return generate_latest(REGISTRY)
#: requests, connections and PDUs refused by a limit (issue 11), by kind; no identifiers
REFUSALS = Counter("dicomgate_refusals_total", "Requests, connections and PDUs refused by a limit, by kind",
                   ["kind"], registry=REGISTRY)
