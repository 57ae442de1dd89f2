"""Sign-in throttling holds for concurrent attempts, not only sequential ones."""

from __future__ import annotations

import threading

from gateway.throttle import SignInThrottle


def test_sequential_failures_lock_after_the_free_ones():
    t = SignInThrottle(free=5)
    assert [t.begin("email:e", "ip:1") for _ in range(6)] == [0] * 6
    assert t.begin("email:e", "ip:1") > 0
    assert t.begin("email:other", "ip:1") == 0  # the address has a larger budget
    assert [t.begin(f"email:{i}", "ip:2") for i in range(20)] == [0] * 20
    assert t.begin("email:new", "ip:2") == 0 and t.begin("email:new2", "ip:2") > 0


def test_concurrent_attempts_cannot_exceed_the_budget():
    t = SignInThrottle(free=5)
    allowed = []
    barrier = threading.Barrier(40)

    def attempt():
        barrier.wait()
        if t.begin("email:x", "ip:1") == 0:
            allowed.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(40)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(allowed) == 6  # 5 free + the one that triggers the lock


def test_success_clears_the_email_and_gives_the_address_its_attempt_back():
    t = SignInThrottle(free=2)
    assert t.begin("email:a", "ip:1") == 0
    t.succeeded("email:a", "ip:1")
    assert t.state_of("ip:1") == 0
    assert t.begin("email:a", "ip:1") == 0 and t.begin("email:a", "ip:1") == 0
    assert t.begin("email:a", "ip:1") == 0  # third: locks the email from now on
    assert t.begin("email:a", "ip:1") > 0
