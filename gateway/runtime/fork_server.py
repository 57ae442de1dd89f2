"""Imported first, and only, by the fork server that forks the worker processes
(:data:`gateway.runtime.processes.PRELOAD`); its workers inherit what it sets here.

* SIGTERM is ignored: a stop sent to the whole process group (systemd's
  default ``KillMode=control-group``, ``kill -- -PGID``) must not kill the
  fork server, or every worker would die with it (``PR_SET_PDEATHSIG``)
  instead of draining. The fork server still exits when ``serve`` does (it
  watches a pipe). A worker installs its own SIGTERM handler first thing.
* :data:`PID` lets a worker check that its parent is this fork server and
  not, after a race with ``serve``'s death, whatever adopted it.
"""

from __future__ import annotations

import os
import signal

PID = os.getpid()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
