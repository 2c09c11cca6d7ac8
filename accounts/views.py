"""Dashboard pages of the accounts app: sign-in (throttled), the live overview, the audit log, invites."""

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from accounts import audit, invites, login_throttle
from accounts.forms import AuditFilterForm
from accounts.page_access import access_for
from accounts.permissions import READ_AUDIT
from accounts.selectors import audit_events_for, team_budget, teams_for
from proxy.selectors import UsageQuery, usage_breakdown, usage_series, usage_totals, window_stats
from routing.health_tiles import credential_tiles

AUDIT_PAGE_SIZE = 50


class ThrottledLoginView(auth_views.LoginView):
    """Django's sign-in, refusing an (IP, username) pair for a while after repeated failures."""

    template_name = "login.html"

    def post(self, request, *args, **kwargs):
        ip, username = audit.client_ip(request) or "", request.POST.get("username", "")
        state = login_throttle.check(ip, username)
        if state.locked:
            return self._locked(request, state.retry_after)
        response = super().post(request, *args, **kwargs)
        if request.user.is_authenticated:
            login_throttle.clear(ip, username)
            return response
        state = login_throttle.record_failure(ip, username)
        if state.locked:
            audit.record("auth.login_locked", actor_label=username[:150] or "(no username)", ip=ip or None,
                         details={"username": username[:150], "locked_seconds": state.retry_after})
            return self._locked(request, state.retry_after)
        return response

    def _locked(self, request, retry_after: int) -> HttpResponse:
        minutes = max(1, round(retry_after / 60))
        message = f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
        form = self.get_form_class()(request, initial={"username": request.POST.get("username", "")})
        response = self.render_to_response(self.get_context_data(form=form, locked_message=message))
        response.status_code = 429
        response["Retry-After"] = str(retry_after)
        return response


def _scope(user, start, end) -> UsageQuery:
    access = access_for(user)
    if access.is_platform_admin:
        return UsageQuery(start=start, end=end)
    team_ids = tuple(access.roles)
    return UsageQuery(start=start, end=end, team_ids=team_ids, team_id=team_ids[0] if len(team_ids) == 1 else None)


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    access = access_for(request.user)
    now = timezone.now()
    if access.has_team:
        _, points = usage_series(_scope(request.user, now - timedelta(hours=1), now))
        hour = usage_totals(points)
        minute = window_stats(_scope(request.user, now - timedelta(seconds=60), None))
        five = window_stats(_scope(request.user, now - timedelta(minutes=5), None))
    else:
        hour = minute = five = None
    tiles = []
    if access.is_platform_admin:
        per_credential = dict(usage_breakdown(UsageQuery(start=now - timedelta(hours=1), end=now), "credential"))
        tiles = [{**tile, "requests_1h": per_credential[tile["id"]].requests if tile["id"] in per_credential else 0}
                 for tile in credential_tiles()]
    teams = [{"team": t, "budget": team_budget(t)} for t in teams_for(request.user)[:50]]
    context = {
        "hour": hour,
        "minute": minute,
        "five": five,
        "tiles": tiles,
        "teams": teams,
        "access": access,
        "seed": {
            "t": now.timestamp(),
            "requests_1h": hour.requests if hour else 0,
            "requests_60s": minute.requests if minute else 0,
            "tokens_60s": minute.tokens if minute else 0,
            "requests_5m": five.requests if five else 0,
            "errors_5m": five.errors if five else 0,
        },
    }
    return render(request, "overview.html", context)


def _audit_rows(request: HttpRequest):
    access = access_for(request.user)
    if not access.can_view_audit:
        raise Http404("not found")
    form = AuditFilterForm(request.GET)
    rows = audit_events_for(request.user).select_related("actor")
    data = form.cleaned_data if form.is_valid() else {}
    if data.get("team") is not None:
        if not teams_for(request.user).filter(pk=data["team"]).exists():
            raise Http404("no such team")
        rows = rows.filter(team_id=data["team"])
    if data.get("action"):
        rows = rows.filter(action__startswith=data["action"].strip())
    if data.get("actor"):
        rows = rows.filter(actor_label__iexact=data["actor"].strip())
    if data.get("since"):
        rows = rows.filter(created_at__gte=data["since"])
    if data.get("until"):
        rows = rows.filter(created_at__lt=data["until"])
    return form, rows.order_by("-id"), data


@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    form, rows, data = _audit_rows(request)
    if request.GET.get("format") == "csv":
        return audit.csv_download("audit.csv", rows)
    before = data.get("before")
    page = list((rows.filter(id__lt=before) if before else rows)[: AUDIT_PAGE_SIZE + 1])
    params = request.GET.copy()
    params.pop("before", None)
    access = access_for(request.user)
    teams = teams_for(request.user)
    if not access.is_platform_admin:
        teams = teams.filter(pk__in=access.teams_at_least(READ_AUDIT))
    return render(request, "accounts/audit.html", {
        "form": form,
        "events": page[:AUDIT_PAGE_SIZE],
        "next_url": f"?{params.urlencode()}&before={page[AUDIT_PAGE_SIZE - 1].pk}" if len(page) > AUDIT_PAGE_SIZE else "",
        "teams": teams,
        "csv_url": f"?{params.urlencode()}&format=csv",
    })


@login_required
def invite_accept(request: HttpRequest, code: str) -> HttpResponse:
    """GET shows a confirmation (links get prefetched by mail scanners; only a POST joins)."""
    if request.method != "POST":
        return render(request, "accounts/invite.html", {"code": code})
    return _accept(request, code)


def _accept(request: HttpRequest, code: str) -> HttpResponse:
    try:
        membership = invites.accept_invite(code, request.user)
    except ValidationError as exc:
        return render(request, "accounts/invite.html", {"code": code, "error": "; ".join(exc.messages)}, status=404)
    messages.success(request, f"You joined {membership.team.name} as {membership.role}.")
    return redirect("team", membership.team_id)
