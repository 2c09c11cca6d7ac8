"""Dashboard pages for providers and their credentials (platform admins only; everyone else gets 404).

Secrets go one way: typed or pasted into a form, encrypted by the service, and from then on only their
masked last four characters appear on any page. Writes go through `routing.services` like every other path.
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.forms import add_service_errors
from accounts.page_access import is_htmx, platform_admin_required
from proxy.live_feed import publish_health
from routing import probes, services
from routing.forms import BulkKeysForm, CredentialForm, ProviderForm
from routing.health_tiles import credential_tiles
from routing.models import Credential, Provider

PROVIDER_FIELDS = ("kind", "base_url", "extra_headers", "options", "connect_timeout", "read_timeout", "enabled")
CREDENTIAL_FIELDS = ("max_inflight", "rpm", "tpm", "weight", "enabled")




@platform_admin_required
def providers(request: HttpRequest) -> HttpResponse:
    form = ProviderForm(request.POST or None, initial={"enabled": True})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            provider = services.save_provider(data["name"], actor=request.user,
                                              **{k: data[k] for k in PROVIDER_FIELDS})
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Provider {provider.name} added. Now paste its keys.")
            return redirect("routing:provider", provider.pk)
    rows = Provider.objects.annotate(
        credential_count=Count("credentials"),
        enabled_count=Count("credentials", filter=Q(credentials__enabled=True)),
    ).order_by("name")
    return render(request, "routing/providers.html", {"providers": rows, "form": form})


def _provider_page(request, provider: Provider, *, form=None, bulk=None, status: int = 200) -> HttpResponse:
    credentials = list(provider.credentials.order_by("name"))
    tiles = {tile["id"]: tile for tile in credential_tiles([c.pk for c in credentials])}
    context = {
        "provider": provider,
        "form": form or ProviderForm(instance=provider, initial=_provider_initial(provider)),
        "bulk": bulk or BulkKeysForm(),
        "credentials": [(c, tiles.get(c.pk, {})) for c in credentials],
        "probe_model": probes.probe_model(provider),
    }
    return render(request, "routing/provider_detail.html", context, status=status)


def _provider_initial(provider: Provider) -> dict:
    return {"name": provider.name, **{k: getattr(provider, k) for k in PROVIDER_FIELDS}}


@platform_admin_required
def provider_detail(request: HttpRequest, pk: int) -> HttpResponse:
    provider = get_object_or_404(Provider, pk=pk)
    if request.method != "POST":
        return _provider_page(request, provider)
    form = ProviderForm(request.POST, instance=provider, initial=_provider_initial(provider))
    if form.is_valid():
        try:
            services.save_provider(provider.name, actor=request.user,
                                   **{k: form.cleaned_data[k] for k in PROVIDER_FIELDS})
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, "Provider saved.")
            return redirect("routing:provider", provider.pk)
    return _provider_page(request, provider, form=form, status=400)


@platform_admin_required
@require_POST
def provider_delete(request: HttpRequest, pk: int) -> HttpResponse:
    provider = get_object_or_404(Provider, pk=pk)
    services.delete_provider(provider, actor=request.user)
    messages.success(request, f"Provider {provider.name} deleted.")
    return redirect("routing:providers")


@platform_admin_required
@require_POST
def credentials_bulk_add(request: HttpRequest, pk: int) -> HttpResponse:
    provider = get_object_or_404(Provider, pk=pk)
    bulk = BulkKeysForm(request.POST)
    if bulk.is_valid():
        try:
            result = services.add_credentials(provider, bulk.cleaned_data["keys"],
                                              name_prefix=bulk.cleaned_data["name_prefix"], actor=request.user)
        except ValidationError as exc:
            bulk.add_error(None, exc.messages)
        else:
            note = f" ({result.duplicates} already stored, skipped)" if result.duplicates else ""
            messages.success(request, f"Added {len(result.created)} key(s){note}.")
            return redirect("routing:provider", provider.pk)
    # Never re-fill the textarea: the pasted keys must not travel back in the page.
    bulk.data = bulk.data.copy()
    bulk.data["keys"] = ""
    return _provider_page(request, provider, bulk=bulk, status=400)


@platform_admin_required
def credential_edit(request: HttpRequest, pk: int) -> HttpResponse:
    credential = get_object_or_404(Credential.objects.select_related("provider"), pk=pk)
    initial = {k: getattr(credential, k) for k in CREDENTIAL_FIELDS}
    form = CredentialForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        secret = data["secret"] or None
        try:
            services.save_credential(credential.provider, credential.name, secret=secret, actor=request.user,
                                     **{k: data[k] for k in CREDENTIAL_FIELDS})
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            if not secret:  # a replaced key has its health reset by the service, which tells live dashboards
                publish_health([credential.pk])
            messages.success(request, "Key replaced." if secret else "Credential saved.")
            return redirect("routing:provider", credential.provider_id)
    return render(request, "routing/credential_form.html", {"credential": credential, "form": form},
                  status=400 if form.is_bound and form.errors else 200)


@platform_admin_required
@require_POST
def credential_toggle(request: HttpRequest, pk: int) -> HttpResponse:
    credential = get_object_or_404(Credential.objects.select_related("provider"), pk=pk)
    services.save_credential(credential.provider, credential.name, actor=request.user, enabled=not credential.enabled)
    publish_health([credential.pk])
    messages.success(request, f"{credential.name} {'disabled' if credential.enabled else 'enabled'}.")
    return redirect("routing:provider", credential.provider_id)


@platform_admin_required
@require_POST
def credential_delete(request: HttpRequest, pk: int) -> HttpResponse:
    credential = get_object_or_404(Credential.objects.select_related("provider"), pk=pk)
    services.delete_credential(credential, actor=request.user)
    messages.success(request, f"{credential.name} deleted.")
    return redirect("routing:provider", credential.provider_id)


def _probe_response(request, provider_id: int, results: list[probes.ProbeResult]) -> HttpResponse:
    if is_htmx(request):
        names = dict(Credential.objects.filter(pk__in=[r.credential_id for r in results]).values_list("pk", "name"))
        rows = [(names.get(r.credential_id, "?"), r) for r in results]
        return render(request, "includes/probe_results.html", {"rows": rows})
    for r in results:
        level = messages.SUCCESS if r.ok else messages.ERROR
        messages.add_message(request, level, f"Test: {'ok' if r.ok else 'failed'} — {r.message}")
    return redirect("routing:provider", provider_id)


@platform_admin_required
@require_POST
def credential_test(request: HttpRequest, pk: int) -> HttpResponse:
    credential = get_object_or_404(Credential.objects.select_related("provider"), pk=pk)
    return _probe_response(request, credential.provider_id, probes.probe_and_record([credential]))


@platform_admin_required
@require_POST
def provider_test_all(request: HttpRequest, pk: int) -> HttpResponse:
    provider = get_object_or_404(Provider, pk=pk)
    credentials = list(provider.credentials.filter(enabled=True).select_related("provider").order_by("name"))
    return _probe_response(request, provider.pk, probes.probe_and_record(credentials))
