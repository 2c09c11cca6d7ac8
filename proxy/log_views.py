"""The request log: every proxied request, filterable, newest first, with a detail page per request."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.models import GatewayToken, Team
from accounts.page_access import access_for
from accounts.selectors import teams_for, tokens_for
from proxy.forms import LogFilterForm
from proxy.models import UsageRecord
from proxy.selectors import request_log
from proxy.stored_bodies import body_for
from routing.models import Credential, Provider, Route

PAGE_SIZE = 50


def _names(rows: list[UsageRecord], *, admin: bool) -> dict:
    """Display names for the ids on one page (a handful of queries, whatever the table size)."""
    ids = {field: {getattr(r, field) for r in rows if getattr(r, field) is not None}
           for field in ("team_id", "token_id", "credential_id", "provider_id", "route_id")}
    names = {
        "team": dict(Team.objects.filter(pk__in=ids["team_id"]).values_list("pk", "name")),
        "token": {t.pk: f"{t.name} ({t.prefix}…)" for t in
                  GatewayToken.objects.filter(pk__in=ids["token_id"]).only("pk", "name", "prefix")},
        "provider": dict(Provider.objects.filter(pk__in=ids["provider_id"]).values_list("pk", "name")),
        "route": dict(Route.objects.filter(pk__in=ids["route_id"]).values_list("pk", "model")),
        "credential": {},
    }
    if admin:
        names["credential"] = {c.pk: f"{c.name} {c.masked}" for c in
                               Credential.objects.filter(pk__in=ids["credential_id"]).only("pk", "name", "last4")}
    return names


def _decorate(rows: list[UsageRecord], *, admin: bool) -> list[dict]:
    names = _names(rows, admin=admin)
    return [
        {
            "row": r,
            "team": names["team"].get(r.team_id, ""),
            "token": names["token"].get(r.token_id, ""),
            "provider": names["provider"].get(r.provider_id, ""),
            "route": names["route"].get(r.route_id, ""),
            "credential": names["credential"].get(r.credential_id, "") if admin else "",
        }
        for r in rows
    ]


@login_required
def requests_page(request: HttpRequest) -> HttpResponse:
    form = LogFilterForm(request.GET, user=request.user)
    query = form.to_query()
    before = form.cleaned_data.get("before") if form.is_valid() else None
    status = (form.cleaned_data.get("status") or "").strip() if form.is_valid() else ""
    rows, next_before = request_log(query, status=status, before_id=before, limit=PAGE_SIZE)
    access = access_for(request.user)
    params = request.GET.copy()
    params.pop("before", None)
    filtered = any(v for k, v in request.GET.items() if k != "before")
    context = {
        "form": form,
        "rows": _decorate(rows, admin=access.is_platform_admin),
        "admin": access.is_platform_admin,
        "teams": teams_for(request.user),
        "tokens": tokens_for(request.user).filter(revoked_at__isnull=True).order_by("team__name", "name")[:200],
        "next_url": f"?{params.urlencode()}&before={next_before}" if next_before else "",
        "first_url": f"?{params.urlencode()}" if before else "",
        # New rows stream in only on the unfiltered first page, where they belong at the top.
        "live": not filtered,
    }
    return render(request, "proxy/requests.html", context)


def _visible_row(user, pk: int) -> UsageRecord:
    access = access_for(user)
    rows = UsageRecord.objects.all()
    if not access.is_platform_admin:
        rows = rows.filter(team_id__in=list(access.roles))
    row = rows.filter(pk=pk).first()
    if row is None:
        raise Http404("no such request")
    return row


@login_required
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    access = access_for(request.user)
    row = _visible_row(request.user, pk)
    item = _decorate([row], admin=access.is_platform_admin)[0]
    # Scoped through the usage row above: a request another team sent never reaches this lookup.
    bodies = body_for(row.request_id, row.team_id)
    route_keeps_bodies = bodies is None and Route.objects.filter(pk=row.route_id, log_bodies=True).exists()
    return render(request, "proxy/request_detail.html", {
        "item": item, "row": row, "admin": access.is_platform_admin, "bodies": bodies,
        "route_keeps_bodies": route_keeps_bodies, "body_retention_days": settings.DS2API_BODY_RETENTION_DAYS,
    })


