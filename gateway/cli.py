"""The ``dicomgate`` command line (click).

Every command takes ``--config``, ``--data-dir``, ``--database-url`` and
``--json`` (before or after its own arguments), reads ``DICOMGATE_*`` env, and
acts on the same database and store as a running ``serve``. Failures print
one line to stderr and exit non-zero.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import click

from consent.decision import Principal
from consent.errors import ConsentError
from gateway.archive.erasure import delete_account
from gateway.errors import ServiceError
from gateway.identity import grants, users
from gateway.ops.jobs import run_job
from gateway.ops.stats import trend_statistics
from gateway.runtime.serve import run as run_server
from gateway.runtime.services import Services
from gateway.runtime.settings import SettingsError, load_settings, replace, validate

OPERATOR = "operator:cli"

#: the services' refusals (every kind gateway.errors.classify knows, and bad values), each shown as
#: one line on stderr with exit code 1 whatever its kind (README: "failures ... exit 1")
REFUSALS: tuple[type[Exception], ...] = (ServiceError, ConsentError, ValueError)


class Fail(click.ClickException):
    """A one-line error on stderr, exit code 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"dicomgate: error: {self.format_message()}", err=True)


def common(fn: Callable) -> Callable:
    """Options every command accepts, wherever they stand on the line."""

    @click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML settings file.")
    @click.option("--data-dir", "data_dir", help="Data directory (default ./dicomgate-data).")
    @click.option("--database-url", "database_url", help="SQLAlchemy URL of the index database.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @functools.wraps(fn)
    def wrapper(*args: Any, config: str | None, data_dir: str | None, database_url: str | None,
                as_json: bool, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        root = ctx.find_root().params
        overrides = {
            "data_dir": data_dir or root.get("data_dir"),
            "database_url": database_url or root.get("database_url"),
        }
        ctx.meta["json"] = as_json or bool(root.get("as_json"))
        try:
            ctx.meta["settings"] = load_settings(config or root.get("config"), overrides=overrides)
        except SettingsError as exc:
            raise Fail(str(exc)) from None
        try:
            return fn(*args, **kwargs)
        except REFUSALS as exc:
            raise Fail(str(exc)) from None

    return wrapper


def services(need_store: bool = False) -> Services:
    ctx = click.get_current_context()
    try:
        return Services.from_settings(ctx.meta["settings"], need_store=need_store)
    except Exception as exc:  # database or store unreachable: say so in one line
        raise Fail(f"cannot open the data store: {str(exc).splitlines()[0]}") from None


def emit(obj: Any, human: str | Callable[[Any], str] | None = None) -> None:
    ctx = click.get_current_context()
    if ctx.meta.get("json"):
        click.echo(json.dumps(obj, indent=None, sort_keys=False, default=str))
    elif callable(human):
        click.echo(human(obj))
    elif human is not None:
        click.echo(human)
    else:
        click.echo(json.dumps(obj, indent=2, default=str))


def read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise Fail("the password is empty (give it on stdin)")
    return password


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--data-dir", "data_dir", help="Data directory (default ./dicomgate-data).")
@click.option("--database-url", "database_url", help="SQLAlchemy URL of the index database.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cli(config: str | None, data_dir: str | None, database_url: str | None, as_json: bool) -> None:
    """dicomgate: a consent-gated DICOM ingestion gateway."""


# ---------------------------------------------------------------- serve
@cli.command()
@click.option("--dicom-port", type=int, help="DIMSE port (default 11112).")
@click.option("--http-port", type=int, help="HTTP port (default 8080).")
@click.option("--host", help="Listen address (default 127.0.0.1).")
@click.option("--object-store", help="file://PATH or s3://BUCKET[/PREFIX].")
@click.option("--s3-endpoint", help="S3 endpoint URL, e.g. http://127.0.0.1:9000.")
@click.option("--s3-access-key")
@click.option("--s3-secret-key")
@click.option("--s3-region")
@click.option("--workers", type=int, help="HTTP worker threads (default 8).")
@click.option("--cors-origins", help="Comma-separated origins whose pages may call DICOMweb and the API.")
@click.option("--trusted-proxies", help="Comma-separated proxy addresses/networks whose X-Forwarded-* are honoured.")
@common
def serve(**flags: Any) -> None:
    """Run the DIMSE SCP, the HTTP server and the scheduler."""
    ctx = click.get_current_context()
    if flags.get("cors_origins") is not None:
        flags["cors_origins"] = [o.strip() for o in flags["cors_origins"].split(",") if o.strip()]
    if flags.get("trusted_proxies") is not None:
        flags["trusted_proxies"] = [o.strip() for o in flags["trusted_proxies"].split(",") if o.strip()]
    settings = replace(ctx.meta["settings"], **{k: v for k, v in flags.items() if v is not None})
    try:
        validate(settings)
    except SettingsError as exc:
        raise Fail(str(exc)) from None
    run_server(settings)


# ---------------------------------------------------------------- accounts
@cli.group()
def account() -> None:
    """Accounts: the unit that owns images."""


@account.command("create")
@click.option("--email", required=True)
@click.option("--ae-title", help="Called AE title of the account (default: generated).")
@click.option("--password-stdin", is_flag=True, help="Read the new user's password from stdin.")
@common
def account_create(email: str, ae_title: str | None, password_stdin: bool) -> None:
    """Create an account (and its owner, if the user is new)."""
    svc = services()
    view = users.create_account(svc.db, email, lambda: read_password(password_stdin), ae_title, actor=OPERATOR,
                                base_url=svc.base_url)
    emit(view, lambda v: f"account {v['id']} AE {v['ae_title']} owner {v['owner']}\n{v['dicomweb_url']}")


@account.command("list")
@common
def account_list() -> None:
    svc = services()
    views = users.list_accounts(svc.db, svc.base_url)
    emit(views, lambda vs: "\n".join(f"{v['id']}\t{v['ae_title']}\t{v['owner']}" for v in vs) or "no accounts")


@account.command("show")
@click.argument("account_id")
@common
def account_show(account_id: str) -> None:
    svc = services()
    emit(users.show_account(svc.db, account_id, svc.base_url))


@account.command("delete")
@click.argument("account_id")
@common
def account_delete(account_id: str) -> None:
    """Delete an account: invisible at once, purged within purge_window."""
    svc = services(need_store=True)
    erasure = delete_account(svc.db, Principal.operator(label=OPERATOR), account_id)
    view = {"id": account_id, "status": "pending", "receipt": erasure.id,
            "status_url": f"{svc.base_url}/api/v1/erasures/{erasure.id}",
            "requested": erasure.requested_at.isoformat()}
    emit(view, lambda v: f"account {v['id']} deleted; purge pending ({v['status_url']})")


# ---------------------------------------------------------------- users, tokens
@cli.group()
def user() -> None:
    """Users: people who sign in with email and password."""


@user.command("create")
@click.option("--email", required=True)
@click.option("--password-stdin", is_flag=True)
@common
def user_create(email: str, password_stdin: bool) -> None:
    svc = services()
    view = users.create_user(svc.db, email, read_password(password_stdin))
    emit(view, lambda v: f"user {v['id']} {v['email']}")


@cli.group()
def token() -> None:
    """Bearer tokens (shown once, stored only as a hash)."""


@token.command("create")
@click.option("--email", help="Token for this user.")
@click.option("--provider", "provider_id", help="Token for this provider instead.")
@common
def token_create(email: str | None, provider_id: str | None) -> None:
    if bool(email) == bool(provider_id):
        raise Fail("give exactly one of --email or --provider")
    svc = services()
    if provider_id:
        view = grants.issue_provider_token(svc.db, provider_id)
    else:
        view = users.issue_user_token(svc.db, email or "", svc.settings.token_ttl)
    emit(view, lambda v: v["token"])


# ---------------------------------------------------------------- providers
@cli.group()
def provider() -> None:
    """Providers: PACS, modalities and services that send or fetch images."""


@provider.command("add")
@click.option("--name", required=True)
@click.option("--ae-title", required=True, help="The provider's calling AE title.")
@click.option("--network", "networks", multiple=True, help="Allowed source network (CIDR); repeatable.")
@click.option("--host", help="Host for C-MOVE destinations.")
@click.option("--port", type=int, help="Port for C-MOVE destinations.")
@common
def provider_add(name: str, ae_title: str, networks: tuple[str, ...], host: str | None, port: int | None) -> None:
    svc = services()
    view = grants.add_provider(svc.db, name=name, ae_title=ae_title, networks=list(networks), host=host,
                               port=port, actor=OPERATOR)
    emit(view, lambda v: f"provider {v['id']} {v['name']} AE {v['ae_title']}\ntoken (shown once): {v['token']}")


@provider.command("list")
@common
def provider_list() -> None:
    views = grants.list_providers(services().db)
    emit(views, lambda vs: "\n".join(f"{v['id']}\t{v['ae_title']}\t{v['name']}\t{','.join(v['networks']) or 'any'}" for v in vs) or "no providers")


@provider.command("remove")
@click.argument("provider_id")
@common
def provider_remove(provider_id: str) -> None:
    """Remove a provider; its links are revoked."""
    view = grants.remove_provider(services().db, provider_id, actor=OPERATOR)
    emit(view, lambda v: f"provider {v['id']} removed")


# ---------------------------------------------------------------- links
@cli.group()
def link() -> None:
    """Links: an account's consent for a provider to push and/or pull."""


@link.command("create")
@click.option("--account", "account_id", required=True)
@click.option("--provider", "provider_id", required=True)
@click.option("--push", is_flag=True)
@click.option("--pull", is_flag=True)
@click.option("--sensitive", is_flag=True, help="Also sensitive studies.")
@click.option("--expires", help="ISO-8601 date-time; UTC when no zone is given.")
@common
def link_create(account_id: str, provider_id: str, push: bool, pull: bool, sensitive: bool, expires: str | None) -> None:
    view = grants.create_link(services().db, account_id=account_id, provider_id=provider_id, push=push, pull=pull,
                              sensitive=sensitive, expires=expires, actor=OPERATOR)
    emit(view, lambda v: f"link {v['id']}")


@link.command("list")
@click.option("--account", "account_id")
@common
def link_list(account_id: str | None) -> None:
    views = grants.list_links(services().db, account_id)

    def line(v: dict) -> str:
        scopes = "+".join(x for x in ("push", "pull") if v[x]) + ("+sensitive" if v["sensitive"] else "")
        state = "in force" if v["in_force"] else "revoked/expired"
        return "\t".join([v["id"], v["account"], str(v["provider"]), scopes, state])

    emit(views, lambda vs: "\n".join(line(v) for v in vs) or "no links")


@link.command("revoke")
@click.argument("link_id")
@common
def link_revoke(link_id: str) -> None:
    view = grants.revoke_link(services().db, link_id, actor=OPERATOR)
    emit(view, lambda v: f"link {v['id']} revoked")


# ---------------------------------------------------------------- shares
@cli.group()
def share() -> None:
    """Shares: an account holder's grant to another user."""


@share.command("grant")
@click.option("--account", "account_id", required=True)
@click.option("--email", required=True)
@click.option("--role", type=click.Choice(["viewer", "editor"]), required=True)
@click.option("--sensitive", is_flag=True)
@click.option("--expires")
@common
def share_grant(account_id: str, email: str, role: str, sensitive: bool, expires: str | None) -> None:
    view = grants.grant_share(services().db, account_id=account_id, email=email, role=role, sensitive=sensitive,
                              expires=expires, actor=OPERATOR)
    emit(view, lambda v: f"share {v['id']}")


@share.command("list")
@click.option("--account", "account_id", required=True)
@common
def share_list(account_id: str) -> None:
    views = grants.list_shares(services().db, account_id)
    emit(views, lambda vs: "\n".join(f"{v['id']}\t{v['email']}\t{v['role']}" for v in vs) or "no shares")


@share.command("revoke")
@click.argument("share_id")
@common
def share_revoke(share_id: str) -> None:
    view = grants.revoke_share(services().db, share_id, actor=OPERATOR)
    emit(view, lambda v: f"share {v['id']} revoked")


# ---------------------------------------------------------------- jobs, stats
@cli.group()
def jobs() -> None:
    """Scheduled jobs (serve runs them on its own)."""


@jobs.command("run")
@click.argument("name", type=click.Choice(["purge", "aggregate-usage", "expire-consents", "reconcile"]))
@click.option("--repair", is_flag=True, help="reconcile: delete orphan objects older than an hour.")
@common
def jobs_run(name: str, repair: bool) -> None:
    """Run one job now."""
    svc = services(need_store=True)
    result = run_job(svc, name, repair=repair)
    emit(result)


@cli.group()
def stats() -> None:
    """Published aggregate statistics."""


@stats.command("trends")
@common
def stats_trends() -> None:
    """Studies by month x modality x sex x age band; cells under k suppressed."""
    svc = services()
    emit(trend_statistics(svc.db, k=svc.settings.stats_k))


def main() -> None:
    cli(prog_name="dicomgate")


if __name__ == "__main__":  # pragma: no cover
    main()
