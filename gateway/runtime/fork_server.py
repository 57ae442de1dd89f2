"""Imported first, and only, by the fork server that forks the worker processes
(:data:`gateway.runtime.processes.PRELOAD`); its workers inherit what it sets here.

SIGTERM is ignored: a stop sent to the whole process group (systemd's
default ``KillMode=control-group``, ``kill -- -PGID``) must not kill the
fork server. Its workers would go on draining, but multiprocessing learns a
worker's exit from the fork server, so every worker of a dead fork server
would look dead to ``serve``, which would start them all again. The fork
server still exits once ``serve`` and its workers have. A worker installs
its own SIGTERM handler first thing (:func:`gateway.runtime.worker.run`).
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
