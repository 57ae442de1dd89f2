"""The pieces the benchmark scripts share (``benchmarks/ingest.py``, ``benchmarks/retrieve.py``).

* :mod:`harness.net` — 127.0.0.1, the sender's AE title, free ports, waiting for a port or URL;
* :mod:`harness.servers` — launching storescp, Orthanc and ``dicomgate serve``, PostgreSQL databases;
* :mod:`harness.data` — the instances sent, generated on disk;
* :mod:`harness.senders` — C-STORE (pynetdicom, storescu) and STOW-RS senders;
* :mod:`harness.measure` — percentiles, RSS and CPU sampling, timed GETs, machine info, results.

Everything talks to 127.0.0.1 only. Nothing here imports the dicomgate
packages: the gateway is driven purely through its console script
(``dicomgate serve`` / ``account`` / ``provider`` / ``link``) so that a
benchmark measures the installed program.
"""
