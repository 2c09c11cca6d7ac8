"""Writes on teams, memberships and gateway tokens. Dashboard, API, CLI and config import all call these.

Who may call what is decided by the caller (`accounts.permissions`); these functions enforce the rules
that hold whoever calls: tokens stay within their team's ceilings, a team keeps an owner, only a platform
admin mints admin tokens. Every change writes an audit event; changes the proxy must see announce
themselves so every gateway process reloads its snapshot.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts import audit
from accounts.ceilings import LIMIT_FIELDS, check_token_limits
from accounts.models import GatewayToken, Membership, Role, Team
from accounts.tokens import generate_token, normalise_ip_allowlist, token_digest, token_prefix
from routing.config_events import announce_change

TEAM_FIELDS = ("name", "allowed_models", "rpm", "tpm", "max_concurrency", "monthly_budget_usd")
TOKEN_FIELDS = ("name", "allowed_models", "rpm", "tpm", "max_concurrency", "budget_usd", "allowed_ips",
                "expires_at")
MAX_ROTATION_OVERLAP = timedelta(days=30)


@dataclass(frozen=True)
class IssuedToken:
    token: GatewayToken
    plaintext: str  # shown once to whoever asked for it, never stored


# --- teams -----------------------------------------------------------------------------------------


def _check_unique_team_name(name: str, exclude: int | None = None) -> None:
    if Team.objects.filter(name=name).exclude(pk=exclude).exists():
        raise ValidationError({"name": f"a team named {name!r} already exists"})


@transaction.atomic
def create_team(name: str, *, actor=None, actor_label: str = "", **limits) -> Team:
    _check_unique_team_name(name)
    team = Team.objects.create(name=name, **limits)
    audit.record("team.create", team, actor=actor, actor_label=actor_label, team=team)
    announce_change()
    return team


@transaction.atomic
def update_team(team: Team, *, actor=None, actor_label: str = "", **fields) -> Team:
    """Change a team's name or ceilings. Tokens above a lowered ceiling are held to it by the proxy."""
    unknown = set(fields) - set(TEAM_FIELDS)
    if unknown:
        raise ValueError(f"not team fields: {', '.join(sorted(unknown))}")
    if "name" in fields:
        _check_unique_team_name(fields["name"], exclude=team.pk)
    for name, value in fields.items():
        setattr(team, name, value)
    team.save()
    audit.record("team.update", team, actor=actor, actor_label=actor_label, team=team,
                 details={"fields": sorted(fields)})
    announce_change()
    return team


@transaction.atomic
def delete_team(team: Team, *, actor=None, actor_label: str = "") -> None:
    audit.record("team.delete", team, actor=actor, actor_label=actor_label, details={"name": team.name})
    team.delete()
    announce_change()


# --- memberships -----------------------------------------------------------------------------------


def _ensure_an_owner_remains(team: Team, leaving: Membership) -> None:
    owners = team.memberships.filter(role=Role.OWNER).exclude(pk=leaving.pk)
    if leaving.role == Role.OWNER and not owners.exists():
        raise ValidationError({"role": "a team must keep at least one owner"})


@transaction.atomic
def add_member(team: Team, user, role: str = Role.MEMBER, *, actor=None, actor_label: str = "") -> Membership:
    """Add a user to a team, or change the role they have there."""
    if role not in Role.values:
        raise ValidationError({"role": f"must be one of {', '.join(Role.values)}"})
    existing = Membership.objects.select_for_update().filter(team=team, user=user).first()
    if existing is not None and role != Role.OWNER:
        _ensure_an_owner_remains(team, existing)
    membership, _ = Membership.objects.update_or_create(team=team, user=user, defaults={"role": role})
    audit.record("membership.set", membership, actor=actor, actor_label=actor_label, team=team,
                 details={"role": role, "user": user.get_username()})
    return membership


@transaction.atomic
def remove_member(membership: Membership, *, actor=None, actor_label: str = "") -> None:
    _ensure_an_owner_remains(membership.team, membership)
    audit.record("membership.delete", membership, actor=actor, actor_label=actor_label, team=membership.team,
                 details={"user": membership.user.get_username(), "role": membership.role})
    membership.delete()


# --- gateway tokens --------------------------------------------------------------------------------


def _clean_token_fields(team: Team, fields: dict, *, current: GatewayToken | None = None) -> dict:
    """Validate a token's settings (merged over `current` when updating) against its team."""
    merged = {name: getattr(current, name) for name in TOKEN_FIELDS} if current else {}
    merged.update(fields)
    if "allowed_ips" in fields:
        try:
            fields["allowed_ips"] = normalise_ip_allowlist(fields["allowed_ips"] or [])
        except ValueError as exc:
            raise ValidationError({"allowed_ips": str(exc)}) from None
    expires_at = fields.get("expires_at")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "must be in the future"})
    name = merged.get("name")
    if "name" in fields and GatewayToken.objects.filter(team=team, name=name).exclude(
        pk=current.pk if current else None
    ).exists():
        raise ValidationError({"name": f"team {team.name} already has a token named {name!r}"})
    check_token_limits(
        team,
        allowed_models=list(merged.get("allowed_models") or []),
        budget_usd=merged.get("budget_usd"),
        **{k: merged.get(k) for k in LIMIT_FIELDS},
    )
    return fields


def _check_value(value: str) -> None:
    if len(value) < 20:
        raise ValidationError({"value": "a gateway token must be at least 20 characters long"})


def _may_mint_admin_tokens(actor) -> bool:
    # Admin tokens carry platform-admin rights on the management API: only a platform admin, or the
    # operator's own CLI / config import (no actor), may create one.
    return actor is None or bool(getattr(actor, "is_superuser", False))


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
    is_admin: bool = False,
    **limits,
) -> IssuedToken:
    """Create a token. `value` imports a known token; otherwise a new one is generated."""
    plaintext = value or generate_token()
    _check_value(plaintext)
    if is_admin and not _may_mint_admin_tokens(actor):
        raise ValidationError({"is_admin": "only a platform admin may create admin tokens"})
    fields = _clean_token_fields(
        team, {"name": name, "allowed_models": allowed_models or [], "expires_at": expires_at, **limits}
    )
    token = GatewayToken.objects.create(
        team=team,
        prefix=token_prefix(plaintext),
        digest=token_digest(plaintext),
        source_ref=source_ref,
        is_admin=is_admin,
        created_by=actor if getattr(actor, "pk", None) else None,
        **fields,
    )
    audit.record("token.create", token, actor=actor, actor_label=actor_label, team=team,
                 details={"is_admin": is_admin} if is_admin else None)
    announce_change()
    return IssuedToken(token, plaintext)


@transaction.atomic
def update_token(
    token: GatewayToken,
    *,
    actor=None,
    actor_label: str = "",
    value: str | None = None,
    source_ref: str | None = None,
    is_admin: bool | None = None,
    **fields,
) -> GatewayToken:
    """Change a token's settings within its team's ceilings. `value` replaces the token with a known one and
    `source_ref` says where it came from (config import); `is_admin` is for platform admins and the operator."""
    unknown = set(fields) - set(TOKEN_FIELDS)
    if unknown:
        raise ValueError(f"not token fields: {', '.join(sorted(unknown))}")
    if token.revoked_at is not None:
        raise ValidationError("a revoked token cannot be changed")
    if is_admin is not None and is_admin != token.is_admin and not _may_mint_admin_tokens(actor):
        raise ValidationError({"is_admin": "only a platform admin may grant or withdraw admin rights"})
    fields = _clean_token_fields(token.team, dict(fields), current=token)
    if is_admin is not None:
        fields["is_admin"] = is_admin
    if source_ref is not None:
        fields["source_ref"] = source_ref
    changed = sorted(fields)
    if value is not None:
        _check_value(value)
        fields.update(prefix=token_prefix(value), digest=token_digest(value))
    for name, field_value in fields.items():
        setattr(token, name, field_value)
    token.save()
    details: dict = {"fields": changed}
    if value is not None:
        details["value_changed"] = True
    audit.record("token.update", token, actor=actor, actor_label=actor_label, team=token.team, details=details)
    announce_change()
    return token


@transaction.atomic
def delete_token(token: GatewayToken, *, actor=None, actor_label: str = "") -> None:
    """Remove a token for good (config import with --prune); usage rows keep its plain id."""
    audit.record("token.delete", token, actor=actor, actor_label=actor_label, team=token.team,
                 details={"name": token.name})
    token.delete()
    announce_change()


@transaction.atomic
def revoke_token(token: GatewayToken, *, actor=None, actor_label: str = "") -> GatewayToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit.record("token.revoke", token, actor=actor, actor_label=actor_label, team=token.team)
        announce_change()
    return token


@transaction.atomic
def rotate_token(
    token: GatewayToken, *, overlap: timedelta = timedelta(hours=1), actor=None, actor_label: str = ""
) -> IssuedToken:
    """Issue a successor with the same name and settings; the old token keeps working for `overlap`.

    The old token is renamed (names are unique per team) and set to expire when the overlap ends,
    so clients can switch to the new value without a moment in which neither works.
    """
    if not token.is_active():
        raise ValidationError("only an active token can be rotated")
    if token.is_admin and not _may_mint_admin_tokens(actor):
        raise ValidationError({"is_admin": "only a platform admin may rotate an admin token"})
    if not timedelta(0) <= overlap <= MAX_ROTATION_OVERLAP:
        raise ValidationError({"overlap_seconds": f"must be between 0 and {int(MAX_ROTATION_OVERLAP.total_seconds())}"})
    name, expiry = token.name, token.expires_at
    overlap_end = timezone.now() + overlap
    token.name = f"{name[:80]} (rotated #{token.pk})"
    token.expires_at = min(token.expires_at, overlap_end) if token.expires_at else overlap_end
    token.save(update_fields=["name", "expires_at"])
    plaintext = generate_token()
    successor = GatewayToken.objects.create(
        team=token.team,
        name=name,
        prefix=token_prefix(plaintext),
        digest=token_digest(plaintext),
        allowed_models=token.allowed_models,
        budget_usd=token.budget_usd,
        allowed_ips=token.allowed_ips,
        is_admin=token.is_admin,
        expires_at=expiry,
        created_by=actor if getattr(actor, "pk", None) else token.created_by,
        **{k: getattr(token, k) for k in LIMIT_FIELDS},
    )
    audit.record("token.rotate", token, actor=actor, actor_label=actor_label, team=token.team,
                 details={"successor_id": successor.pk, "overlap_seconds": int(overlap.total_seconds())})
    announce_change()
    return IssuedToken(successor, plaintext)

