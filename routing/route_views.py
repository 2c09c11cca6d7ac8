"""Dashboard pages for routes: list, create/edit with targets, delete, and the "who would serve X" preview."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.page_access import is_htmx, platform_admin_required
from routing import services
from routing.forms import RouteForm, TargetFormSet
from routing.models import Credential, Route
from routing.selector import TIER_SPAN
from routing.selectors import preview_route

ROUTE_FIELDS = ("strategy", "priority", "retry_budget", "timeout", "aliases", "fallbacks", "enabled", "log_bodies")


@platform_admin_required
def routes(request: HttpRequest) -> HttpResponse:
    rows = Route.objects.prefetch_related("targets__provider").order_by("-priority", "model")
    return render(request, "routing/routes.html", {"routes": rows, "preview_model": request.GET.get("model", "")})


def _target_specs(formset) -> list[services.TargetSpec]:
    specs = []
    for form in formset.forms:
        data = form.cleaned_data  # untouched blank rows clean to {}; a row with no provider is dropped
        if not data.get("provider"):
            continue
        specs.append(services.TargetSpec(data["provider"], data.get("upstream_model", ""), data.get("weight") or 1,
                                         data.get("tier") or 0))
    return specs


def _initial(route: Route | None) -> tuple[dict, list[dict]]:
    if route is None:
        return {"enabled": True, "retry_budget": 2, "priority": 0}, []
    fields = {"model": route.model, **{k: getattr(route, k) for k in ROUTE_FIELDS}}
    targets = [{"provider": t.provider_id, "upstream_model": t.upstream_model, "weight": t.weight, "tier": t.tier}
               for t in route.targets.order_by("order", "id")]
    return fields, targets


def _edit(request: HttpRequest, route: Route | None) -> HttpResponse:
    initial, target_initial = _initial(route)
    form = RouteForm(request.POST or None, initial=initial, instance=route)
    formset = TargetFormSet(request.POST or None, initial=target_initial, prefix="targets")
    if request.method == "POST" and form.is_valid() and formset.is_valid():
        specs = _target_specs(formset)
        model = route.model if route else form.cleaned_data["model"].strip()
        if not specs:
            form.add_error(None, "a route needs at least one target")
        elif route is None and Route.objects.filter(model=model).exists():
            form.add_error("model", "a route for this model already exists")
        else:
            data = {k: form.cleaned_data[k] for k in ROUTE_FIELDS}
            try:
                saved = services.save_route(model, specs, actor=request.user, **data)
            except ValidationError as exc:
                form.add_error(None, exc.messages)
            else:
                messages.success(request, f"Route {saved.model} saved.")
                return redirect("routing:routes")
    status = 400 if form.is_bound and (form.errors or formset.errors) else 200
    return render(request, "routing/route_form.html", {"form": form, "formset": formset, "route": route},
                  status=status)


@platform_admin_required
def route_create(request: HttpRequest) -> HttpResponse:
    return _edit(request, None)


@platform_admin_required
def route_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _edit(request, get_object_or_404(Route, pk=pk))


@platform_admin_required
@require_POST
def route_delete(request: HttpRequest, pk: int) -> HttpResponse:
    route = get_object_or_404(Route, pk=pk)
    services.delete_route(route, actor=request.user)
    messages.success(request, f"Route {route.model} deleted.")
    return redirect("routing:routes")


def _preview(model: str) -> dict:
    """routing.selectors.preview_route, with what the page shows besides: masked keys, tiers, the verdict."""
    preview = preview_route(model)
    last4 = dict(Credential.objects.filter(pk__in=[c["credential_id"] for c in preview["candidates"]])
                 .values_list("pk", "last4"))
    for c in preview["candidates"]:
        c["masked"] = f"…{last4.get(c['credential_id'], '')}"
        c["fallback"], c["tier"] = c["route"] != preview["route"], c["tier"] % TIER_SPAN
    if preview["route"] is None:
        preview["reason"] = f"no enabled route matches {model!r}: the gateway answers 404"
    elif not preview["candidates"]:
        preview["reason"] = "the route has no enabled provider with an enabled key: the gateway answers 503"
    elif preview["credential"] is None:
        preview["reason"] = "no usable credential now (cooling, invalid or busy): requests wait, then get 429/503"
    return preview


@platform_admin_required
def route_preview(request: HttpRequest) -> HttpResponse:
    """An HTML fragment (htmx) or, without JavaScript, the routes page with the preview filled in."""
    model = request.GET.get("model", "").strip()[:200]
    preview = _preview(model) if model else None
    if not is_htmx(request):
        rows = Route.objects.prefetch_related("targets__provider").order_by("-priority", "model")
        return render(request, "routing/routes.html", {"routes": rows, "preview": preview, "preview_model": model})
    return render(request, "includes/route_preview.html", {"preview": preview})
