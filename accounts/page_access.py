"""Who may open which dashboard page, and the lookups that turn "not yours" into 404.

Roles and the least role of each capability are defined once, in `accounts.permissions` (the management
API's rules); this module only applies them to pages, raising Django's own exceptions. Platform pages
(providers, credentials, routes) are for superusers only. Team pages are for members of that team. Anything a user may not see answers 404, so a
page never confirms that another team's object exists; a role too low for a write gets 403.
"""

import functools
from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404

from accounts.models import Team
from accounts.permissions import READ_AUDIT, USE_GATEWAY, has_role, outranks, roles_of, teams_with_role
from accounts.selectors import teams_for


@dataclass(frozen=True)
class Access:
    """What one signed-in user may reach; computed once per request for navigation and checks."""

    is_platform_admin: bool
    roles: dict[int, str]  # team id -> role

    def at_least(self, team_id: int, minimum: str) -> bool:
        return self.is_platform_admin or outranks(self.roles.get(team_id), minimum)

    def teams_at_least(self, minimum: str) -> list[int]:
        return teams_with_role(self.roles, minimum)

    def role_label(self, team_id: int) -> str:
        return self.roles.get(team_id) or ("platform admin" if self.is_platform_admin else "")

    @property
    def has_team(self) -> bool:
        return self.is_platform_admin or bool(self.roles)

    @property
    def can_use_gateway(self) -> bool:
        return self.is_platform_admin or bool(self.teams_at_least(USE_GATEWAY))

    @property
    def can_view_audit(self) -> bool:
        return self.is_platform_admin or bool(self.teams_at_least(READ_AUDIT))


def access_for(user) -> Access:
    if not user.is_authenticated:
        return Access(False, {})
    return Access(bool(user.is_superuser), roles_of(user))


def team_or_404(user, team_id) -> Team:
    try:
        return teams_for(user).get(pk=int(team_id))
    except (Team.DoesNotExist, ValueError, TypeError):
        raise Http404("no such team") from None


def require_role(user, team_id: int, minimum: str) -> None:
    """403 for a member whose role is too low (they may see the team, so 404 would lie)."""
    if not has_role(user, team_id, minimum):
        raise PermissionDenied(f"this needs the {minimum} role in the team")


def platform_admin_required(view):
    """login_required + superuser, answering 404 (not 403) to signed-in non-admins."""

    @login_required
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_superuser:
            raise Http404("not found")
        return view(request, *args, **kwargs)

    return wrapped


def is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"
