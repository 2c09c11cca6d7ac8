"""Team pages: the list, one team's ceilings, budget, members and invite links.

Outsiders get 404 for a team they do not belong to; members whose role is too low for a write get 403.
Every write goes through `accounts.services` / `accounts.invites`, the same rules the API obeys.
"""

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts import invites, services
from accounts.forms import InviteForm, MemberForm, RoleForm, TeamForm, add_service_errors
from accounts.models import Invite, Membership, Role
from accounts.page_access import access_for, require_role, team_or_404
from accounts.permissions import MANAGE_MEMBERS, READ_AUDIT
from accounts.selectors import team_budget, teams_for

TEAM_FIELDS = ("name", "allowed_models", "rpm", "tpm", "max_concurrency", "monthly_budget_usd")




@login_required
def teams(request: HttpRequest) -> HttpResponse:
    access = access_for(request.user)
    if not access.has_team:
        raise Http404("you belong to no team")
    form = TeamForm(request.POST or None) if access.is_platform_admin else None
    if request.method == "POST":
        if form is None:
            raise Http404("not found")
        if form.is_valid():
            try:
                team = services.create_team(actor=request.user, **form.cleaned_data)
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                messages.success(request, f"Team {team.name} created.")
                return redirect("team", team.pk)
    rows = [{"team": t, "role": access.role_label(t.pk), "budget": team_budget(t)}
            for t in teams_for(request.user).order_by("name")]
    return render(request, "accounts/teams.html", {"rows": rows, "form": form}, status=400 if form and form.errors else 200)


def _team_page(request, team, *, ceilings=None, member_form=None, invite_form=None, issued_invite=None,
               status: int = 200) -> HttpResponse:
    access = access_for(request.user)
    may_manage_members = access.at_least(team.pk, MANAGE_MEMBERS)
    context = {
        "team": team,
        "role": access.role_label(team.pk),
        "budget": team_budget(team),
        "members": Membership.objects.filter(team=team).select_related("user").order_by("user__username"),
        "may_edit_ceilings": access.is_platform_admin,
        "may_manage_members": may_manage_members,
        "may_see_invites": access.at_least(team.pk, READ_AUDIT),
        "invites": Invite.objects.filter(team=team).select_related("created_by", "accepted_by")[:50]
        if access.at_least(team.pk, READ_AUDIT) else [],
        "ceilings": ceilings or (TeamForm(initial={k: getattr(team, k) for k in TEAM_FIELDS})
                                 if access.is_platform_admin else None),
        "member_form": member_form or (MemberForm() if may_manage_members else None),
        "invite_form": invite_form or (InviteForm() if may_manage_members else None),
        "roles": Role.choices,
        "issued_invite": issued_invite,
        "invite_url": request.build_absolute_uri(issued_invite.path) if issued_invite else "",
    }
    response = render(request, "accounts/team.html", context, status=status)
    if issued_invite:
        response["Cache-Control"] = "no-store"
    return response


@login_required
def team_detail(request: HttpRequest, pk: int) -> HttpResponse:
    team = team_or_404(request.user, pk)
    if request.method != "POST":
        return _team_page(request, team)
    if not request.user.is_superuser:
        raise PermissionDenied("only a platform admin may change a team's ceilings")
    form = TeamForm(request.POST)
    if form.is_valid():
        try:
            services.update_team(team, actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, "Team saved.")
            return redirect("team", team.pk)
    return _team_page(request, team, ceilings=form, status=400)


@login_required
@require_POST
def member_add(request: HttpRequest, pk: int) -> HttpResponse:
    team = team_or_404(request.user, pk)
    require_role(request.user, team.pk, MANAGE_MEMBERS)
    form = MemberForm(request.POST)
    if form.is_valid():
        try:
            services.add_member(team, form.cleaned_data["user"], form.cleaned_data["role"], actor=request.user)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"{form.cleaned_data['username']} is now {form.cleaned_data['role']}.")
            return redirect("team", team.pk)
    return _team_page(request, team, member_form=form, status=400)


@login_required
@require_POST
def member_update(request: HttpRequest, pk: int, membership_id: int) -> HttpResponse:
    team = team_or_404(request.user, pk)
    require_role(request.user, team.pk, MANAGE_MEMBERS)
    membership = get_object_or_404(Membership.objects.select_related("user"), pk=membership_id, team=team)
    try:
        if request.POST.get("remove"):
            services.remove_member(membership, actor=request.user)
            messages.success(request, f"{membership.user.get_username()} removed.")
        else:
            form = RoleForm(request.POST)
            if not form.is_valid():
                raise ValidationError("unknown role")
            services.add_member(team, membership.user, form.cleaned_data["role"], actor=request.user)
            messages.success(request, f"{membership.user.get_username()} is now {form.cleaned_data['role']}.")
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    return redirect("team", team.pk)


@login_required
@never_cache
@require_POST
def invite_create(request: HttpRequest, pk: int) -> HttpResponse:
    team = team_or_404(request.user, pk)
    require_role(request.user, team.pk, MANAGE_MEMBERS)
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            issued = invites.create_invite(team, role=form.cleaned_data["role"], note=form.cleaned_data["note"],
                                           lifetime=timedelta(hours=form.cleaned_data["expires_in_hours"]),
                                           actor=request.user)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            # Rendered, not redirected: the link exists only in this response and is never stored.
            return _team_page(request, team, issued_invite=issued)
    return _team_page(request, team, invite_form=form, status=400)


@login_required
@require_POST
def invite_revoke(request: HttpRequest, pk: int, invite_id: int) -> HttpResponse:
    team = team_or_404(request.user, pk)
    require_role(request.user, team.pk, MANAGE_MEMBERS)
    invite = get_object_or_404(Invite, pk=invite_id, team=team)
    invites.revoke_invite(invite, actor=request.user)
    messages.success(request, "Invite revoked.")
    return redirect("team", team.pk)
