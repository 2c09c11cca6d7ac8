"""Writes on teams, memberships and gateway tokens. Dashboard, API, CLI and config import all call these."""

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from accounts import audit
from accounts.models import GatewayToken, Membership, Role, Team
from accounts.tokens import generate_token, token_digest, token_prefix
from routing.config_events import announce_change


@dataclass(frozen=True)
class IssuedToken:
    token: GatewayToken
    plaintext: str  # shown once to whoever asked for it, never stored


def create_team(name: str, *, actor=None, actor_label: str = "", **limits) -> Team:
    team = Team.objects.create(name=name, **limits)
    audit.record("team.create", team, actor=actor, actor_label=actor_label, team=team)
    return team


def add_member(team: Team, user, role: str = Role.MEMBER, *, actor=None) -> Membership:
    membership, _ = Membership.objects.update_or_create(team=team, user=user, defaults={"role": role})
    audit.record("membership.set", membership, actor=actor, team=team, details={"role": role})
    return membership


@transaction.atomic
def issue_token(
    team: Team,
    name: str,
    *,
    value: str | None = None,
    source_ref: str = "",
    actor=None,
    actor_label: str = "",
    allowed_models: list[str] | None = None,
    expires_at: datetime | None = None,
    **limits,
) -> IssuedToken:
    """Create a token. `value` imports a known token; otherwise a new one is generated."""
    plaintext = value or generate_token()
    if len(plaintext) < 20:
        raise ValueError("a gateway token must be at least 20 characters long")
    token = GatewayToken.objects.create(
        team=team,
        name=name,
        prefix=token_prefix(plaintext),
        digest=token_digest(plaintext),
        source_ref=source_ref,
        allowed_models=allowed_models or [],
        expires_at=expires_at,
        created_by=actor if getattr(actor, "pk", None) else None,
        **limits,
    )
    audit.record("token.create", token, actor=actor, actor_label=actor_label, team=team)
    announce_change()
    return IssuedToken(token, plaintext)


@transaction.atomic
def revoke_token(token: GatewayToken, *, actor=None, actor_label: str = "") -> GatewayToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit.record("token.revoke", token, actor=actor, actor_label=actor_label, team=token.team)
        announce_change()
    return token
