"""A team's gateway tokens: list (prefix only), create and rotate (value shown once), revoke.

Members create tokens for themselves and manage the ones they created; admins and owners manage all of
the team's tokens; viewers only look (`accounts.permissions.may_change_token`). A new value is rendered
into the one response that created it, never stored, never put in a redirect or a flash message.
"""

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts import services
from accounts.forms import RotateForm, TokenForm, add_service_errors
from accounts.models import GatewayToken
from accounts.page_access import access_for, require_role, team_or_404
from accounts.permissions import USE_GATEWAY, may_change_token
from accounts.selectors import token_budget


def _page(request, team, *, form=None, issued=None, status: int = 200) -> HttpResponse:
    access = access_for(request.user)
    show_all = request.GET.get("all") == "1"
    tokens = GatewayToken.objects.filter(team=team).select_related("created_by").order_by("name")
    if not show_all:
        tokens = tokens.filter(revoked_at__isnull=True).exclude(expires_at__lte=timezone.now())
    rows = [{"token": t, "budget": token_budget(t) if t.budget_usd is not None else None,
             "may_change": may_change_token(request.user, t) and t.is_active()} for t in tokens[:500]]
    may_create = access.at_least(team.pk, USE_GATEWAY)
    response = render(request, "accounts/tokens.html", {
        "team": team, "rows": rows, "show_all": show_all, "issued": issued,
        "form": form or (TokenForm() if may_create else None), "rotate_form": RotateForm(),
    }, status=status)
    if issued is not None:
        response["Cache-Control"] = "no-store"  # the value must not linger in a cache or the back button
    return response


@login_required
def tokens(request: HttpRequest, pk: int) -> HttpResponse:
    team = team_or_404(request.user, pk)
    if request.method != "POST":
        return _page(request, team)
    require_role(request.user, team.pk, USE_GATEWAY)
    form = TokenForm(request.POST)
    if form.is_valid():
        try:
            issued = services.issue_token(team, actor=request.user, **form.service_fields())
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            return _page(request, team, issued=issued)
    return _page(request, team, form=form, status=400)


def _changeable(request, pk: int, token_id: int) -> GatewayToken:
    team = team_or_404(request.user, pk)
    token = get_object_or_404(GatewayToken.objects.select_related("team"), pk=token_id, team=team)
    if not may_change_token(request.user, token):
        raise PermissionDenied("your role does not allow changing this token")
    return token


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int, token_id: int) -> HttpResponse:
    token = _changeable(request, pk, token_id)
    services.revoke_token(token, actor=request.user)
    messages.success(request, f"Token {token.name} revoked.")
    return redirect("tokens", pk)


@login_required
@require_POST
def token_rotate(request: HttpRequest, pk: int, token_id: int) -> HttpResponse:
    token = _changeable(request, pk, token_id)
    form = RotateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Overlap must be between 0 and 720 hours.")
        return redirect("tokens", pk)
    try:
        issued = services.rotate_token(token, overlap=timedelta(hours=form.cleaned_data["overlap_hours"]),
                                       actor=request.user)
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
        return redirect("tokens", pk)
    return _page(request, token.team, issued=issued)
