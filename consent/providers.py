"""Providers: registration and removal (who a calling AE is, and whether its address holds, is
``consent.decision``)."""

from __future__ import annotations

import ipaddress

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.errors import AlreadyDone, ConsentError, UnknownParty
from consent.history import record_event
from consent.ids import new_id
from consent.links import revoke_links_of_provider
from consent.models import Provider
from gateway.db.base import utcnow

__all__ = ["ConsentError", "add_provider", "list_providers", "parse_networks", "provider_snapshot", "remove_provider",
           "validate_ae_title"]


def validate_ae_title(ae: str) -> str:
    """AE titles per PS3.5: 1-16 chars of the default repertoire, no backslash or control chars."""
    value = ae.strip()
    if not value or len(value) > 16:
        raise ConsentError(f"AE title {ae!r} must be 1 to 16 characters")
    if any(c == "\\" or ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise ConsentError(f"AE title {ae!r} may hold only printable ASCII without backslash")
    return value


def parse_networks(networks: list[str]) -> list[str]:
    out = []
    for n in networks:
        try:
            out.append(str(ipaddress.ip_network(n.strip(), strict=False)))
        except ValueError:
            raise ConsentError(f"{n!r} is not a network in CIDR form (e.g. 10.0.0.0/8)") from None
    return out


def add_provider(
    session: Session,
    *,
    name: str,
    ae_title: str,
    networks: list[str],
    host: str | None,
    port: int | None,
    actor: str,
) -> Provider:
    if not name.strip():
        raise ConsentError("a provider needs a name")
    ae = validate_ae_title(ae_title)
    if (host is None) != (port is None):
        raise ConsentError("give both the host and the port, or neither")
    if port is not None and not 0 < port < 65536:
        raise ConsentError(f"port {port} is out of range")
    clash = session.scalar(select(Provider).where(Provider.ae_title == ae, Provider.removed_at.is_(None)))
    if clash is not None:
        raise AlreadyDone(f"AE title {ae} is already registered to provider {clash.id}")
    provider = Provider(
        id=new_id("prv"), name=name.strip(), ae_title=ae, networks=",".join(parse_networks(networks)),
        host=host, port=port, created_at=utcnow(),
    )
    session.add(provider)
    session.flush()
    record_event(session, None, "provider", provider.id, "created", actor, provider_snapshot(provider))
    return provider


def remove_provider(session: Session, provider_id: str, *, actor: str) -> Provider:
    provider = session.get(Provider, provider_id)
    if provider is None or provider.removed_at is not None:
        raise UnknownParty(f"no provider {provider_id}")
    provider.removed_at = utcnow()
    revoke_links_of_provider(session, provider.id, actor=actor)
    record_event(session, None, "provider", provider.id, "removed", actor, provider_snapshot(provider))
    return provider


def list_providers(session: Session) -> list[Provider]:
    return list(session.scalars(select(Provider).where(Provider.removed_at.is_(None)).order_by(Provider.created_at)))


def provider_snapshot(p: Provider) -> dict:
    return {
        "id": p.id, "name": p.name, "ae_title": p.ae_title,
        "networks": p.networks.split(",") if p.networks else [],
        "host": p.host, "port": p.port,
        "created": p.created_at.isoformat() if p.created_at else None,
        "removed": p.removed_at.isoformat() if p.removed_at else None,
    }
