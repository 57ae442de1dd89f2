"""Unit-test fixtures: an in-process Services on a temporary SQLite + filesystem."""

from __future__ import annotations

import pytest

from gateway.runtime.services import Services
from gateway.runtime.settings import load_settings


@pytest.fixture
def services(tmp_path):
    svc = Services.from_settings(load_settings(env={}, overrides={"data_dir": str(tmp_path)}))
    yield svc
    svc.close()
