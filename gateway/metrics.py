"""Prometheus metrics (text format at /metrics). Counts only: no identifiers in labels."""

from __future__ import annotations

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


def exposition() -> bytes:
    return generate_latest(REGISTRY)
