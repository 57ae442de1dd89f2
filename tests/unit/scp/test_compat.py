"""scp.compat is written against one pynetdicom release: these fail when the installed one differs,
or when anything compat replaces, copies or reaches into has changed upstream."""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import re
import signal
import socket
from pathlib import Path

import pynetdicom
import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket

from scp import compat


def upstream(name: str):  # type: ignore[no-untyped-def]
    """The object a dotted name refers to: the longest importable module, then attributes."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
            break
        except ImportError:
            continue
    for attr in parts[i:]:
        obj = getattr(obj, attr)
    return obj


def test_the_installed_pynetdicom_is_the_pinned_one():
    assert pynetdicom.__version__ == compat.PINNED, (
        f"pynetdicom {pynetdicom.__version__} is installed, scp/compat.py is written against {compat.PINNED}: "
        "port every override it lists (UPSTREAM, COPIED, PRIVATE_ATTRIBUTES), then move PINNED and the pin")


@pytest.mark.parametrize("name", sorted(compat.UPSTREAM))
def test_each_overridden_function_still_has_its_signature(name):
    assert str(inspect.signature(upstream(name))) == compat.UPSTREAM[name]


@pytest.mark.parametrize("name", sorted(compat.COPIED))
def test_each_copied_body_is_still_the_one_upstream(name):
    assert name in compat.UPSTREAM
    digest = hashlib.sha256(inspect.getsource(upstream(name)).encode()).hexdigest()[:16]
    assert digest == compat.COPIED[name], f"{name} changed upstream: compare it with its copy in scp/compat.py"


def test_each_private_attribute_is_still_created_upstream():
    ae = AE()
    assoc = Association(ae, "acceptor")
    ours, theirs = socket.socketpair()
    found = {"pynetdicom.ae.ApplicationEntity": ae, "pynetdicom.association.Association": assoc,
             "pynetdicom.dul.DULServiceProvider": assoc.dul,
             "pynetdicom.transport.AssociationSocket": AssociationSocket(assoc, client_socket=ours)}
    theirs.close()
    assert set(compat.PRIVATE_ATTRIBUTES) == set(found)
    for cls, attrs in compat.PRIVATE_ATTRIBUTES.items():
        assert isinstance(found[cls], upstream(cls))
        for attr in attrs:
            assert hasattr(found[cls], attr), f"{cls} no longer has {attr}"
    ours.close()


def test_the_threads_run_method_is_ours_to_override():
    # EventDUL / EventAssociation define Thread.run; upstream must still leave it to threading
    assert "run" not in vars(DULServiceProvider) and "run" not in vars(Association)


def test_the_event_driven_classes_keep_pynetdicoms_state():
    ae = AE()
    assoc = Association(ae, "acceptor")
    from scp.admission import AdmissionGate
    from scp.pdu import PduLimits

    gate = AdmissionGate(max_pending=1, max_pending_per_address=1, max_admitted=1)
    switched = compat.make_event_driven(assoc, gate, PduLimits(max_associate_rq=1 << 16, max_pdata=1 << 16))
    assert switched is assoc
    assert isinstance(assoc, compat.EventAssociation) and isinstance(assoc.dul, compat.EventDUL)
    assert isinstance(assoc.dul.state_machine, compat.GuardedStateMachine)
    assert not assoc.is_alive() and not assoc.dul.is_alive()  # nothing started


def test_nothing_else_in_scp_subclasses_pynetdicom_or_reads_its_privates():
    root = Path(compat.__file__).parent
    for path in sorted(root.glob("*.py")):
        if path.name == "compat.py":
            continue
        text = path.read_text()
        assert not re.search(r"from pynetdicom\.(acse|dul|fsm|association|transport) import .*"
                             r"(ACSE|DULServiceProvider|StateMachine|Association\b|RequestHandler)", text), path.name
        assert not re.search(r"\._(servers|server|dul_ready|kill_thread|idle_timer|recv_pdu|reactor_checkpoint)\b",
                             text), path.name


def defined(name: str) -> bool:
    """Whether a dotted name of ours is a module, or a name defined in one, found without importing
    it (importing has effects: gateway.runtime.fork_server ignores SIGTERM, and the children of
    this test process would inherit that)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:i]))  # imports the parent packages only
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            break
    else:
        return False
    rest = parts[i:]
    if not rest:
        return True
    if not (spec.origin or "").endswith(".py"):
        return False
    body = ast.parse(Path(spec.origin).read_text()).body
    for attr in rest:
        names: dict[str, list] = {}
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names[node.name] = getattr(node, "body", [])
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(target, ast.Name):
                        names[target.id] = []
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update({(a.asname or a.name).split(".")[0]: [] for a in node.names})
        if attr not in names:
            return False
        body = names[attr]
    return True


def test_the_docstrings_of_scp_and_runtime_name_things_that_exist():
    root = Path(compat.__file__).parent.parent
    for path in sorted([*root.joinpath("scp").glob("*.py"), *root.joinpath("gateway", "runtime").glob("*.py")]):
        for name in sorted(set(re.findall(r"\b(?:scp|gateway)\.[\w.]*\w", path.read_text()))):
            assert defined(name), f"{path.relative_to(root)} names {name}, which does not exist"


def test_nothing_here_changed_how_this_process_takes_sigterm():
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN  # else no child of pytest could be stopped
