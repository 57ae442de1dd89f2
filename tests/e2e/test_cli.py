"""The CLI as an operator uses it, against the same data as a running serve."""

from __future__ import annotations

import json
import secrets
import subprocess

import requests

import pytest

from tests.support.data import variant
from tests.support.dimse import pynetdicom_store


def test_walkthrough_from_the_readme(gateway):
    acc = gateway.cli_json("account", "create", "--email", "walk@example.org", "--password-stdin",
                           input="passphrase1\n")
    assert set(acc) >= {"id", "ae_title", "dicomweb_url", "owner"}
    assert acc["owner"] == "walk@example.org"
    prv = gateway.cli_json("provider", "add", "--name", "Acme PACS", "--ae-title", "ACMEWALK",
                           "--network", "127.0.0.0/8")
    assert set(prv) >= {"id", "name", "ae_title", "token"} and prv["token"].startswith("dg_")
    # before the link: refused
    out = pynetdicom_store(gateway.dicom_port, "ACMEWALK", acc["ae_title"], [variant()])
    assert not out.associated
    link = gateway.cli_json("link", "create", "--account", acc["id"], "--provider", prv["id"], "--push")
    assert link["push"] is True and link["pull"] is False and link["in_force"] is True
    # the running serve sees the CLI's change on the next association
    assert pynetdicom_store(gateway.dicom_port, "ACMEWALK", acc["ae_title"], [variant()]).statuses == [0]
    assert gateway.stow(acc["id"], [variant()], token=prv["token"]).status_code == 200

    links = gateway.cli_json("link", "list", "--account", acc["id"])
    assert [l["id"] for l in links] == [link["id"]]
    shown = gateway.cli_json("account", "show", acc["id"])
    assert shown["links"][0]["provider"] == "Acme PACS"
    assert acc["id"] in [a["id"] for a in gateway.cli_json("account", "list")]
    assert prv["id"] in [p["id"] for p in gateway.cli_json("provider", "list")]
    assert "token" not in gateway.cli_json("provider", "list")[0]

    revoked = gateway.cli_json("link", "revoke", link["id"])
    assert revoked["revoked"] and revoked["in_force"] is False
    assert not pynetdicom_store(gateway.dicom_port, "ACMEWALK", acc["ae_title"], [variant()]).associated
    assert gateway.stow(acc["id"], [variant()], token=prv["token"]).status_code == 404
    assert len(gateway.instance_rows(acc["id"])) == 2


def test_user_and_token_commands(gateway):
    gateway.cli("user", "create", "--email", "tok@example.org", input="another passphrase\n")
    tok = gateway.cli_json("token", "create", "--email", "tok@example.org")
    assert tok["token"].startswith("dg_") and tok["expires"]
    acc = gateway.cli_json("account", "create", "--email", "tok@example.org")
    assert gateway.stow(acc["id"], [variant()], token=tok["token"]).status_code == 200


def test_options_may_follow_the_subcommand_or_precede_it(gateway):
    before = subprocess.run(
        [str(gateway_bin()), "--json", *gateway.backend.args(), "provider", "list"],
        capture_output=True, text=True, env=gateway.env, timeout=60,
    )
    assert before.returncode == 0, before.stderr
    assert isinstance(json.loads(before.stdout), list)


def gateway_bin():
    from tests.support.gateway import BIN

    return BIN


@pytest.mark.parametrize("args,message", [
    (("link", "create", "--account", "acc_nope", "--provider", "prv_nope", "--push"), "no account acc_nope"),
    (("link", "revoke", "lnk_nope"), "no link lnk_nope"),
    (("provider", "add", "--name", "X", "--ae-title", "WAYTOOLONGAETITLE1"), "1 to 16 characters"),
    (("provider", "add", "--name", "X", "--ae-title", "OKAE", "--network", "not-a-net"), "CIDR"),
    (("provider", "remove", "prv_nope"), "no provider prv_nope"),
    (("account", "show", "acc_nope"), "no account acc_nope"),
    (("token", "create", "--email", "nobody@example.org"), "no user"),
    (("account", "delete", "acc_nope"), "no account acc_nope"),
])
def test_errors_are_one_line_on_stderr_and_exit_nonzero(gateway, args, message):
    proc = gateway.cli(*args, check=False)
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]


def test_link_needs_a_scope_and_a_future_expiry(gateway):
    acc = gateway.new_account()
    prv = gateway.new_provider()
    proc = gateway.cli("link", "create", "--account", acc["id"], "--provider", prv["id"], check=False)
    assert proc.returncode != 0 and "scope" in proc.stderr
    proc = gateway.cli("link", "create", "--account", acc["id"], "--provider", prv["id"], "--push",
                       "--expires", "2001-01-01T00:00:00Z", check=False)
    assert proc.returncode != 0 and "past" in proc.stderr
    proc = gateway.cli("link", "create", "--account", acc["id"], "--provider", prv["id"], "--push",
                       "--expires", "tomorrow", check=False)
    assert proc.returncode != 0 and "ISO-8601" in proc.stderr
    assert gateway.cli_json("link", "list", "--account", acc["id"]) == []


def test_duplicate_ae_titles_refused(gateway):
    prv = gateway.new_provider()
    proc = gateway.cli("provider", "add", "--name", "Clash", "--ae-title", prv["ae_title"], check=False)
    assert proc.returncode != 0 and "already registered" in proc.stderr
    acc = gateway.new_account()
    proc = gateway.cli("account", "create", "--email", "clash@example.org", "--ae-title", acc["ae_title"],
                       input="passphrase1\n", check=False)
    assert proc.returncode != 0 and "already used" in proc.stderr


def test_removing_a_provider_revokes_its_links(gateway):
    acc = gateway.new_account()
    prv = gateway.new_provider()
    gateway.link(acc, prv, push=True)
    gateway.cli_json("provider", "remove", prv["id"])
    links = gateway.cli_json("link", "list", "--account", acc["id"])
    assert links[0]["in_force"] is False and links[0]["revoked_by"] == "operator:cli"
    assert gateway.stow(acc["id"], [variant()], token=prv["token"]).status_code == 401


def test_audit_trail_records_consent_changes_and_stores(gateway):
    from gateway.ops import audit

    acc = gateway.new_account()
    prv = gateway.new_provider()
    link = gateway.link(acc, prv, push=True)
    assert gateway.stow(acc["id"], [variant()], token=prv["token"]).status_code == 200
    gateway.revoke(link)
    with gateway.services.db.session() as s:
        entries = audit.entries(s, acc["id"])
    actions = [e["action"] for e in entries]
    assert actions == ["link.revoked", "instance.stored", "link.created", "account.created"]
    stored = entries[1]
    assert stored["actor"].startswith("provider:") and stored["source"] == "127.0.0.1"
    assert stored["study"] and stored["detail"]["sop_instance_uid"]


def test_bad_config_file_is_a_clear_error(gateway, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("dicom_port = 'x'\n")
    proc = gateway.cli("provider", "list", "--config", str(bad), check=False)
    assert proc.returncode != 0 and "whole number" in proc.stderr
    bad.write_text("no_such_setting = 1\n")
    proc = gateway.cli("provider", "list", "--config", str(bad), check=False)
    assert proc.returncode != 0 and "unknown setting" in proc.stderr


def test_cli_refuses_another_object_store_than_the_index_describes(gateway, tmp_path):
    proc = subprocess.run(
        [str(gateway_bin()), "jobs", "run", "purge", *gateway.backend.args()],
        capture_output=True, text=True, timeout=60,
        env={**gateway.env, "DICOMGATE_OBJECT_STORE": f"file://{tmp_path}/elsewhere"},
    )
    assert proc.returncode != 0
    assert "belongs to the object store" in proc.stderr


def test_jobs_run_each_job(gateway):
    for name in ("purge", "aggregate-usage", "expire-consents", "reconcile"):
        result = gateway.cli_json("jobs", "run", name)
        assert isinstance(result, dict)
    report = gateway.cli_json("jobs", "run", "reconcile")
    assert report["missing_objects"] == 0 and report["orphan_objects"] == 0
    proc = gateway.cli("jobs", "run", "nonsense", check=False)
    assert proc.returncode != 0


def test_share_commands_and_account_delete_with_purge(gateway):
    owner = gateway.cli_json("account", "create", "--email", f"own{secrets.token_hex(3)}@example.org",
                             "--password-stdin", input="passphrase1\n")
    friend = f"friend{secrets.token_hex(3)}@example.org"
    gateway.cli("user", "create", "--email", friend, input="a third passphrase\n")
    share = gateway.cli_json("share", "grant", "--account", owner["id"], "--email", friend, "--role", "viewer",
                             "--expires", "2099-01-01T00:00:00Z")
    assert share["role"] == "viewer" and share["in_force"] and share["expires"].startswith("2099")
    assert [s["id"] for s in gateway.cli_json("share", "list", "--account", owner["id"])] == [share["id"]]
    proc = gateway.cli("share", "grant", "--account", owner["id"], "--email", friend, "--role", "admin", check=False)
    assert proc.returncode != 0
    revoked = gateway.cli_json("share", "revoke", share["id"])
    assert revoked["revoked"] and not revoked["in_force"]

    prv = gateway.new_provider()
    gateway.link(owner, prv, push=True)
    assert gateway.stow(owner["id"], [variant(), variant()], token=prv["token"]).status_code == 200
    deleted = gateway.cli_json("account", "delete", owner["id"])
    assert deleted["status"] == "pending" and "/api/v1/erasures/" in deleted["status_url"]
    assert gateway.stow(owner["id"], [variant()], token=prv["token"]).status_code == 404
    gateway.cli_json("jobs", "run", "purge")
    receipt = requests.get(f"{gateway.url}/api/v1/erasures/{deleted['receipt']}", timeout=30).json()
    assert receipt["status"] == "purged" and receipt["objects_removed"] == 2
    assert gateway.object_keys(owner["id"]) == [] and gateway.instance_rows(owner["id"]) == []
    assert gateway.cli("account", "show", owner["id"], check=False).returncode != 0
