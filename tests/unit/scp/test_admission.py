"""scp.admission: pending connections bounded per address and per process; the oldest makes room."""

from __future__ import annotations

from scp.admission import AdmissionGate


def gate(**kw: int) -> tuple[AdmissionGate, list[str]]:
    closed: list[str] = []
    g = AdmissionGate(max_pending=kw.get("max_pending", 4), max_pending_per_address=kw.get("per_address", 2),
                      max_admitted=kw.get("max_admitted", 2))
    return g, closed


def arrive(g: AdmissionGate, closed: list[str], key: str, address: str) -> None:
    g.arrived(key, address, lambda: closed.append(key))


def test_over_the_per_address_bound_the_oldest_of_that_address_is_closed():
    g, closed = gate()
    arrive(g, closed, "a1", "10.0.0.1")
    arrive(g, closed, "b1", "10.0.0.2")
    arrive(g, closed, "a2", "10.0.0.1")
    assert closed == []
    arrive(g, closed, "a3", "10.0.0.1")
    assert closed == ["a1"]  # not b1, not the newcomer
    assert g.counts == (3, 0)


def test_over_the_process_bound_the_oldest_of_all_is_closed():
    g, closed = gate(max_pending=3, per_address=3)
    for key, addr in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]:
        arrive(g, closed, key, addr)
    assert closed == ["a"]


def test_a_requested_association_leaves_pending_and_takes_a_slot():
    g, closed = gate(per_address=1, max_admitted=1)
    arrive(g, closed, "a1", "x")
    assert g.requested("a1")
    arrive(g, closed, "a2", "x")  # a1 is no longer pending: nothing to evict
    assert closed == []
    assert not g.requested("a2")  # the only slot is a1's
    g.left("a1")
    arrive(g, closed, "a3", "x")
    assert g.requested("a3")
    assert g.counts == (0, 1)


def test_left_forgets_a_pending_connection():
    g, closed = gate()
    arrive(g, closed, "a", "x")
    g.left("a")
    assert g.counts == (0, 0)
