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

# The least role each team capability needs. The API, the dashboard pages (`accounts.page_access`) and the
# selectors all read these, so a rule changes in one place.
USE_GATEWAY = Role.MEMBER  # create tokens (and manage the ones they created), use the playground
MANAGE_TOKENS = Role.ADMIN  # every token of the team but admin tokens
READ_AUDIT = Role.ADMIN  # the team's audit log and its invites
MANAGE_MEMBERS = Role.OWNER  # members, roles and invites


def outranks(role: str | None, minimum: str) -> bool:
    """True if `role` (None: not a member) is at least `minimum`."""
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[minimum]


def teams_with_role(roles: dict[int, str], minimum: str) -> list[int]:
    """The team ids in a {team id: role} map where the role is at least `minimum`."""
    return [team_id for team_id, role in roles.items() if outranks(role, minimum)]


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
    return outranks(role_in(user, team_id), minimum)


def team_ids_with_role(user, minimum: str) -> list[int]:
    return teams_with_role(roles_of(user), minimum)


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
    if has_role(user, token.team_id, MANAGE_TOKENS):
        return True
    return has_role(user, token.team_id, USE_GATEWAY) and token.created_by_id == user.pk
