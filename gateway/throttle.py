"""Slowing down password guessing: per email and per source address.

After ``free`` failures within ``window`` seconds a key is locked for 30 s,
doubling with each further failure up to 15 minutes; a success clears the
email's count. A source address (``ip:``) gets four times the budget, so
colleagues behind one NAT do not lock each other out as easily as one
account's guesser is stopped. State is per process, which is what one
``serve`` is.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class _State:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class SignInThrottle:
    def __init__(self, free: int = 5, window: float = 900.0, base_lock: float = 30.0, max_lock: float = 900.0) -> None:
        self.free, self.window, self.base_lock, self.max_lock = free, window, base_lock, max_lock
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()

    def _free(self, key: str) -> int:
        return self.free * 4 if key.startswith("ip:") else self.free

    def retry_after(self, *keys: str) -> int:
        """Seconds the caller must wait (0: may try)."""
        now = time.monotonic()
        with self._lock:
            return self._wait(keys, now)

    def _wait(self, keys: tuple[str, ...], now: float) -> int:
        wait = max((self._states[k].locked_until - now for k in keys if k in self._states), default=0.0)
        return int(wait + 0.999) if wait > 0 else 0

    def begin(self, *keys: str) -> int:
        """Start an attempt: 0 to go ahead (it counts as a failure until ``succeeded``), else seconds to wait.

        Counting the attempt before the password is checked makes the limit hold
        for concurrent attempts too, not only for sequential ones.
        """
        now = time.monotonic()
        with self._lock:
            wait = self._wait(keys, now)
            if wait:
                return wait
            self._count(keys, now)
            return 0

    def failed(self, *keys: str) -> None:
        with self._lock:
            self._count(keys, time.monotonic())

    def _count(self, keys: tuple[str, ...], now: float) -> None:
        for key in keys:
            st = self._states.setdefault(key, _State())
            st.failures = [t for t in st.failures if now - t < self.window] + [now]
            extra = len(st.failures) - self._free(key)
            if extra > 0:
                st.locked_until = now + min(self.max_lock, self.base_lock * 2 ** (extra - 1))
        if len(self._states) > 100_000:  # bound memory under a flood of distinct keys
            self._states = {k: v for k, v in self._states.items() if v.locked_until > now}

    def succeeded(self, clear: str, *uncount: str) -> None:
        """The attempt was right: forget ``clear`` (the email) and take it back from ``uncount`` (the address)."""
        with self._lock:
            self._states.pop(clear, None)
            for key in uncount:
                st = self._states.get(key)
                if st and st.failures:
                    st.failures.pop()
                    if len(st.failures) <= self._free(key):
                        st.locked_until = 0.0


    def state_of(self, key: str) -> int:
        """Failures counted for ``key`` in the window (for tests and operators)."""
        now = time.monotonic()
        with self._lock:
            st = self._states.get(key)
            return len([t for t in st.failures if now - t < self.window]) if st else 0


THROTTLE = SignInThrottle()
