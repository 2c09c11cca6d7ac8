"""Reads shared by pages, API and consumers; always scoped to what the user may see.

A platform admin sees everything. Anyone else sees the teams they belong to and what belongs to those
teams; invites and the audit log only for teams where they are an admin or owner.
"""

from datetime import datetime

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from accounts import budgets
from accounts.models import AuditEvent, GatewayToken, Invite, Membership, Team
from accounts.permissions import READ_AUDIT, team_ids_with_role
from proxy.models import UsageRecord
from routing.models import Credential, Route
from routing.snapshot import model_allowed


def teams_for(user) -> QuerySet[Team]:
    if user.is_superuser:
        return Team.objects.all()
    return Team.objects.filter(memberships__user=user).distinct()


def memberships_for(user) -> QuerySet[Membership]:
    rows = Membership.objects.select_related("user", "team").order_by("team__name", "user__username")
    return rows if user.is_superuser else rows.filter(team__memberships__user=user)


def tokens_for(user) -> QuerySet[GatewayToken]:
    """Tokens of the user's teams. Only the visible prefix is ever readable; the digest stays in the database."""
    rows = GatewayToken.objects.select_related("team", "created_by")
    return rows if user.is_superuser else rows.filter(team__memberships__user=user)


def invites_for(user) -> QuerySet[Invite]:
    rows = Invite.objects.select_related("team", "created_by", "accepted_by")
    return rows if user.is_superuser else rows.filter(team_id__in=team_ids_with_role(user, READ_AUDIT))


def audit_events_for(user) -> QuerySet[AuditEvent]:
    rows = AuditEvent.objects.select_related("team")
    return rows if user.is_superuser else rows.filter(team_id__in=team_ids_with_role(user, READ_AUDIT))


def routes_for(user) -> QuerySet[Route]:
    """Routes whose model one of the user's teams may use (all of them for a platform admin)."""
    rows = Route.objects.prefetch_related("targets")
    if user.is_superuser:
        return rows
    patterns = [tuple(team.allowed_models or ("*",)) for team in teams_for(user)]
    visible = [r.pk for r in Route.objects.only("pk", "model") if any(model_allowed(r.model, p) for p in patterns)]
    return rows.filter(pk__in=visible)


# --- usage -----------------------------------------------------------------------------------------

USAGE_GROUPINGS = {
    "day": TruncDate("created_at"),
    "model": F("client_model"),
    "token": F("token_id"),
    "credential": F("credential_id"),
    "team": F("team_id"),
}


def usage_for(user) -> QuerySet[UsageRecord]:
    rows = UsageRecord.objects.all()
    return rows if user.is_superuser else rows.filter(team_id__in=teams_for(user).values("pk"))


def usage_summary(
    user, *, group_by: str, since: datetime, until: datetime, team: int | None = None, token: int | None = None,
    model: str | None = None, credential: int | None = None,
) -> QuerySet:
    """Requests, tokens and cost per day / model / token / credential / team in [since, until)."""
    rows = usage_for(user).filter(created_at__gte=since, created_at__lt=until)
    for name, value in (("team_id", team), ("token_id", token), ("client_model", model),
                        ("credential_id", credential)):
        if value is not None:
            rows = rows.filter(**{name: value})
    return (
        rows.annotate(key=USAGE_GROUPINGS[group_by])
        .values("key")
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=Q(status__gte=400)),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cached_tokens=Sum("cached_tokens"),
            reasoning_tokens=Sum("reasoning_tokens"),
            cost_usd=Sum("cost_usd"),
        )
        .order_by("key")
    )


def usage_labels(group_by: str, keys: list) -> dict:
    """Display names for the ids a usage summary is grouped by (tokens show their prefix, never more)."""
    ids = [k for k in keys if k is not None]
    if group_by == "token":
        return {t.pk: f"{t.team.name}/{t.name} ({t.prefix}…)" for t in GatewayToken.objects.filter(pk__in=ids)
                .select_related("team")}
    if group_by == "credential":
        return {c.pk: str(c) for c in Credential.objects.filter(pk__in=ids).select_related("provider")}
    if group_by == "team":
        return dict(Team.objects.filter(pk__in=ids).values_list("pk", "name"))
    return {}


# --- budgets ---------------------------------------------------------------------------------------


def team_budget(team: Team) -> budgets.BudgetStatus:
    """This month's spend against the team's budget; `.warning` is set from 80%."""
    return budgets.status("team", team.pk, team.monthly_budget_usd)


def token_budget(token: GatewayToken) -> budgets.BudgetStatus:
    """This month's spend of a token against its own budget (the team's budget applies as well)."""
    return budgets.status("token", token.pk, token.budget_usd)
