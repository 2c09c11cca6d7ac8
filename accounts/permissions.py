"""Who may do what in a team, as the management API enforces it.

- viewer: reads the team, its members, its tokens (prefix only) and its usage.
- member: also creates tokens for themself and rotates / revokes / edits the tokens they created.
- admin: manages every token of the team (but admin tokens); reads its invites and audit log.
- owner: also manages members and invites.
- platform admin (superuser, or an admin gateway token): everything, including team ceilings,
  providers, credentials, routes and prices.

Reads are scoped by queryset, so another team's object answers 404 and never confirms it exists;
a write the role does not allow answers 403.
"""

from rest_framework.exceptions import PermissionDenied

from accounts.models import GatewayToken, Membership, Role, Team

ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


def roles_of(user) -> dict[int, str]:
    """team id -> role, cached on the user object for the rest of the request."""
    cached = getattr(user, "_ds2_api_roles", None)
    if cached is None:
        cached = dict(Membership.objects.filter(user=user).values_list("team_id", "role")) if user.pk else {}
        user._ds2_api_roles = cached
    return cached


def role_in(user, team_id: int) -> str | None:
    if user.is_superuser:
        return Role.OWNER
    return roles_of(user).get(team_id)


def has_role(user, team_id: int, minimum: str) -> bool:
    role = role_in(user, team_id)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[minimum]


def team_ids_with_role(user, minimum: str) -> list[int]:
    return [team_id for team_id, role in roles_of(user).items() if ROLE_RANK[role] >= ROLE_RANK[minimum]]


def require_role(user, team: Team | int, minimum: str, action: str = "do this") -> None:
    team_id = team.pk if isinstance(team, Team) else team
    if not has_role(user, team_id, minimum):
        raise PermissionDenied(f"your role in this team does not allow you to {action}")


def require_platform_admin(user, action: str = "do this") -> None:
    if not user.is_superuser:
        raise PermissionDenied(f"only a platform admin may {action}")


def may_change_token(user, token: GatewayToken) -> bool:
    if token.is_admin:
        # Rotating an admin token hands out a new admin value: that is as much as minting one.
        return user.is_superuser
    if has_role(user, token.team_id, Role.ADMIN):
        return True
    return has_role(user, token.team_id, Role.MEMBER) and token.created_by_id == user.pk
