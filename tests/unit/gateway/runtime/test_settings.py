from __future__ import annotations

import pytest

from gateway.runtime.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_ones():
    s = load_settings(env={})
    assert (s.host, s.dicom_port, s.http_port) == ("127.0.0.1", 11112, 8080)
    assert s.effective_database_url.startswith("sqlite:///") and s.effective_database_url.endswith("dicomgate-data/index.sqlite3")
    assert s.effective_object_store.startswith("file://") and s.effective_object_store.endswith("dicomgate-data/objects")
    assert (s.purge_window, s.usage_retention_days, s.stats_k, s.token_ttl) == (300, 14, 10, 86400)
    assert s.max_stow_bytes == 4 << 30 and s.operator_token is None


def test_precedence_file_then_env_then_flags(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('dicom_port = 1000\nhttp_port = 2000\nhost = "0.0.0.0"\n')
    s = load_settings(cfg, env={"DICOMGATE_HTTP_PORT": "3000"}, overrides={"host": "::1", "dicom_port": None})
    assert s.dicom_port == 1000  # file (flag not given)
    assert s.http_port == 3000  # env over file
    assert s.host == "::1"  # flag over all


def test_config_file_from_env(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("stats_k = 5\n")
    assert load_settings(env={"DICOMGATE_CONFIG": str(cfg)}).stats_k == 5


def test_plain_postgresql_url_gets_psycopg_driver():
    s = load_settings(env={}, overrides={"database_url": "postgresql://u@h/db"})
    assert s.effective_database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize("content,message", [
    ("dicom_port = 'abc'", "whole number"),
    ("bogus = 1", "unknown setting"),
    ("dicom_port = 70000", "between 0 and 65535"),
    ('object_store = "ftp://x"', "file://PATH or s3://BUCKET"),
    ('object_store = "s3://bucket"', "s3_endpoint"),
    ("this is not toml", "not valid TOML"),
    ("dimse_processes = -1", "dimse_processes must be between"),
])
def test_bad_settings_are_clear_errors(tmp_path, content, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(content)
    with pytest.raises(SettingsError, match=message):
        load_settings(cfg, env={})


def test_missing_config_file():
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings("/nonexistent/dicomgate.toml", env={})


@pytest.mark.parametrize("name", ["default.toml", "production.toml", "sensitivity.toml"])
def test_example_configs_load(name):
    from pathlib import Path

    from consent.sensitivity import load_rules

    path = Path(__file__).resolve().parents[4] / "config" / name
    s = load_settings(path, env={})
    assert load_rules(s.sensitivity_rules)


def test_short_operator_token_refused():
    with pytest.raises(SettingsError, match="at least 24"):
        load_settings(env={"DICOMGATE_OPERATOR_TOKEN": "short"})


def test_dimse_processes_auto_is_one_per_core_at_most_four(monkeypatch):
    from gateway.runtime.processes import dimse_process_count

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert dimse_process_count(load_settings(env={})) == 2
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert dimse_process_count(load_settings(env={})) == 4
    assert dimse_process_count(load_settings(env={"DICOMGATE_DIMSE_PROCESSES": "1"})) == 1
    assert dimse_process_count(load_settings(env={"DICOMGATE_DIMSE_PROCESSES": "3"})) == 3


def test_http_processes_auto_is_one_per_core_at_most_four(monkeypatch):
    from gateway.runtime.processes import http_process_count

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert http_process_count(load_settings(env={})) == 2
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert http_process_count(load_settings(env={})) == 4
    assert http_process_count(load_settings(env={"DICOMGATE_HTTP_PROCESSES": "1"})) == 1
    with pytest.raises(SettingsError, match="http_processes must be between"):
        load_settings(env={"DICOMGATE_HTTP_PROCESSES": "-1"})


def test_trusted_proxies_from_toml_list_or_comma_separated_env(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('trusted_proxies = ["10.0.0.5", "10.1.0.0/16"]\n')
    assert load_settings(cfg, env={}).trusted_proxies == ["10.0.0.5", "10.1.0.0/16"]
    assert load_settings(None, env={"DICOMGATE_TRUSTED_PROXIES": "10.0.0.5, ::1"}).trusted_proxies == ["10.0.0.5", "::1"]
    assert load_settings(None, env={}).trusted_proxies is None  # none trusted by default
    with pytest.raises(SettingsError, match="trusted_proxies: 'lb.example.org' is not an IP address"):
        load_settings(None, env={"DICOMGATE_TRUSTED_PROXIES": "lb.example.org"})
