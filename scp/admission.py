"""Connection slots of one DIMSE process: who may hold one before authenticating.

A TCP connection is *pending* until its whole A-ASSOCIATE-RQ has arrived
(then the association policy identifies the peer), *admitted* after. Pending
connections are bounded three ways, so that nobody who has not even said
who they are can keep a registered provider out:

* in time: the ARTIM timer (``association_request_timeout``) closes a
  connection whose request is not complete (:mod:`scp.pdu` reads with
  that deadline);
* per source address (``max_pending_per_address``) and per process
  (``max_pending_associations``): a new connection over either bound
  closes the *oldest* pending one of that address (or of all), not the new
  one. A real requestor sends its A-ASSOCIATE-RQ within milliseconds of
  connecting, so it is through before it could be the oldest; a peer that
  holds connections open without finishing them loses them one by one.

Only admitted associations count against ``max_associations`` (pynetdicom's
own count includes every connection thread, so half-open connections used
to fill it: "local limit exceeded").
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable, Hashable

from gateway.ops.metrics import REFUSALS

log = logging.getLogger(__name__)


class AdmissionGate:
    def __init__(self, *, max_pending: int, max_pending_per_address: int, max_admitted: int) -> None:
        self.max_pending = max_pending
        self.max_pending_per_address = max_pending_per_address
        self.max_admitted = max_admitted
        self._lock = threading.Lock()
        self._pending: OrderedDict[Hashable, tuple[str, Callable[[], None]]] = OrderedDict()
        self._admitted: set[Hashable] = set()

    def arrived(self, key: Hashable, address: str, close: Callable[[], None]) -> None:
        """A new connection from ``address``; ``close`` ends it if it must make room."""
        with self._lock:
            self._pending[key] = (address, close)
            victim = None
            same = [k for k, (a, _) in self._pending.items() if a == address]
            if len(same) > self.max_pending_per_address:
                victim = same[0]
            elif len(self._pending) > self.max_pending:
                victim = next(iter(self._pending))
            evicted = self._pending.pop(victim) if victim is not None else None
        if evicted is not None:
            REFUSALS.labels("dimse_pending_evicted").inc()
            log.warning("closed a connection from %s that had not completed its association request "
                        "(pending connections at the limit)", evicted[0])
            evicted[1]()

    def requested(self, key: Hashable) -> bool:
        """The connection's A-ASSOCIATE-RQ is complete: admit it if an association slot is free."""
        with self._lock:
            self._pending.pop(key, None)
            if key in self._admitted:
                return True
            if len(self._admitted) >= self.max_admitted:
                return False
            self._admitted.add(key)
            return True

    def left(self, key: Hashable) -> None:
        """The connection is gone (whatever state it was in)."""
        with self._lock:
            self._pending.pop(key, None)
            self._admitted.discard(key)

    @property
    def counts(self) -> tuple[int, int]:
        """(pending, admitted), for tests and logs."""
        with self._lock:
            return len(self._pending), len(self._admitted)
