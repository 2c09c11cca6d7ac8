"""Invite links: a team owner creates one, whoever opens it while it is valid joins the team, once.

Codes are random like gateway tokens and stored only as a digest; the link is shown once, to its
creator. The dashboard serves the link at INVITE_PATH and calls `accept_invite`.
"""

import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts import audit
from accounts.models import Invite, Membership, Role, Team
from accounts.permissions import ROLE_RANK
from accounts.tokens import token_digest

INVITE_PATH = "/invite/{code}/"
DEFAULT_LIFETIME = timedelta(days=3)
MAX_LIFETIME = timedelta(days=30)


@dataclass(frozen=True)
class IssuedInvite:
    invite: Invite
    code: str  # shown once, never stored

    @property
    def path(self) -> str:
        return INVITE_PATH.format(code=self.code)


class InvalidInvite(ValidationError):
    """Unknown, used, revoked and expired codes all look the same to the person holding them."""

    def __init__(self) -> None:
        super().__init__("this invite link is invalid, already used or expired")


@transaction.atomic
def create_invite(
    team: Team, *, role: str = Role.MEMBER, lifetime: timedelta = DEFAULT_LIFETIME, note: str = "",
    actor=None, actor_label: str = "",
) -> IssuedInvite:
    if role not in Role.values:
        raise ValidationError({"role": f"must be one of {', '.join(Role.values)}"})
    if not timedelta(minutes=1) <= lifetime <= MAX_LIFETIME:
        raise ValidationError({"expires_in_hours": f"an invite may live at most {MAX_LIFETIME.days} days"})
    code = "inv-" + secrets.token_urlsafe(24)
    invite = Invite.objects.create(
        team=team, role=role, note=note, digest=token_digest(code), expires_at=timezone.now() + lifetime,
        created_by=actor if getattr(actor, "pk", None) else None,
    )
    audit.record("invite.create", invite, actor=actor, actor_label=actor_label, team=team,
                 details={"role": role, "expires_at": invite.expires_at.isoformat()})
    return IssuedInvite(invite, code)


@transaction.atomic
def accept_invite(code: str, user) -> Membership:
    """Join the invite's team with its role. A user already in the team keeps the higher of both roles."""
    invite = Invite.objects.select_for_update().filter(digest=token_digest(code or "")).first()
    if invite is None or not invite.is_open():
        raise InvalidInvite()
    now = timezone.now()
    invite.accepted_by, invite.accepted_at = user, now
    invite.save(update_fields=["accepted_by", "accepted_at"])
    membership = Membership.objects.filter(team=invite.team, user=user).first()
    if membership is None:
        membership = Membership.objects.create(team=invite.team, user=user, role=invite.role)
    elif ROLE_RANK[invite.role] > ROLE_RANK[membership.role]:
        membership.role = invite.role
        membership.save(update_fields=["role"])
    audit.record("invite.accept", invite, actor=user, team=invite.team, details={"role": membership.role})
    return membership


@transaction.atomic
def revoke_invite(invite: Invite, *, actor=None, actor_label: str = "") -> Invite:
    if invite.revoked_at is None and invite.accepted_at is None:
        invite.revoked_at = timezone.now()
        invite.save(update_fields=["revoked_at"])
        audit.record("invite.revoke", invite, actor=actor, actor_label=actor_label, team=invite.team)
    return invite
