"""Slowing down password guessing: per email and per source address.

After ``free`` failures within ``window`` seconds a key is locked for 30 s,
doubling with each further failure up to 15 minutes; a success clears the
email's count. State is per process, which is what one ``serve`` is.
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

    def retry_after(self, *keys: str) -> int:
        """Seconds the caller must wait (0: may try)."""
        now = time.monotonic()
        with self._lock:
            wait = max((self._states[k].locked_until - now for k in keys if k in self._states), default=0.0)
        return int(wait + 0.999) if wait > 0 else 0

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                st = self._states.setdefault(key, _State())
                st.failures = [t for t in st.failures if now - t < self.window] + [now]
                extra = len(st.failures) - self.free
                if extra > 0:
                    st.locked_until = now + min(self.max_lock, self.base_lock * 2 ** (extra - 1))
            if len(self._states) > 100_000:  # bound memory under a flood of distinct keys
                self._states = {k: v for k, v in self._states.items() if v.locked_until > now}

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._states.pop(key, None)


THROTTLE = SignInThrottle()
