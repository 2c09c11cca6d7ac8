"""Writes on providers, credentials and routes. Every path (dashboard, API, config import) goes through here."""

from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts import audit
from routing.config_events import announce_change
from routing.health import reset_health
from routing.keyring import get_keyring
from routing.models import Credential, Provider, ProviderKind, Route, RouteTarget
from routing.validators import validate_base_url

DEFAULT_BASE_URLS = {
    ProviderKind.OPENAI: "https://api.openai.com/v1",
    ProviderKind.ANTHROPIC: "https://api.anthropic.com",
    ProviderKind.GEMINI: "https://generativelanguage.googleapis.com",
}


def _clean_provider_fields(fields: dict) -> dict:
    kind = fields.get("kind")
    if kind is not None and kind not in ProviderKind.values:
        raise ValidationError(f"kind must be one of {', '.join(ProviderKind.values)}")
    if kind != ProviderKind.LOCAL and "base_url" in fields:
        fields["base_url"] = validate_base_url(fields["base_url"] or DEFAULT_BASE_URLS.get(kind, ""))
    if kind == ProviderKind.LOCAL:
        fields["options"], fields["base_url"] = _local_options(fields.get("options")), ""
    return fields


# A local provider runs its model in process, but the selector picks credentials: each local provider gets
# this one (its placeholder secret is never sent anywhere), and its tile shows the model's state.
LOCAL_CREDENTIAL = "model"


def _local_options(options) -> dict:
    """Refuse a local provider without the `local` extra or with a model path that does not exist."""
    from proxy.local_models.options import LocalOptionsError, check_local_options  # imports no torch

    try:
        return check_local_options(options)
    except LocalOptionsError as exc:
        raise ValidationError(str(exc)) from None


@transaction.atomic
def save_provider(name: str, *, actor=None, actor_label: str = "", **fields) -> Provider:
    """Create or update a provider by name."""
    fields = _clean_provider_fields(fields)
    provider, created = Provider.objects.update_or_create(name=name, defaults=fields)
    audit.record("provider.create" if created else "provider.update", provider, actor=actor, actor_label=actor_label)
    if provider.kind == ProviderKind.LOCAL and not provider.credentials.exists():
        save_credential(provider, LOCAL_CREDENTIAL, secret="in-process", actor=actor, actor_label=actor_label)  # noqa: S106
    announce_change()
    return provider


def encrypt_secret(secret: str) -> dict:
    secret = secret.strip()
    if not secret:
        raise ValidationError("a credential secret cannot be empty")
    key_id, ciphertext = get_keyring().encrypt(secret)
    return {"secret_ciphertext": ciphertext, "key_id": key_id, "last4": secret[-4:]}


def reveal_secret(credential: Credential) -> str:
    """Decrypt a credential's secret for an outbound call. Never render or log the result."""
    return get_keyring().decrypt(credential.key_id, credential.secret_ciphertext)


@transaction.atomic
def save_credential(
    provider: Provider,
    name: str,
    *,
    secret: str | None = None,
    secret_ref: str | None = None,
    actor=None,
    actor_label: str = "",
    **fields,
) -> Credential:
    """Create or update a credential. `secret=None` keeps the stored secret (required when creating)."""
    existing = Credential.objects.filter(provider=provider, name=name).first()
    if existing is None and secret is None:
        raise ValidationError(f"credential {provider.name}/{name} needs a secret")
    if secret is not None:
        fields.update(encrypt_secret(secret))
    if secret_ref is not None:
        fields["secret_ref"] = secret_ref
    credential, created = Credential.objects.update_or_create(provider=provider, name=name, defaults=fields)
    details = {"secret_changed": secret is not None}
    action = "credential.create" if created else "credential.update"
    audit.record(action, credential, actor=actor, actor_label=actor_label, details=details)
    announce_change()
    if secret is not None and not created:
        # a replaced key starts healthy: an invalid or cooling verdict was about the old one
        transaction.on_commit(lambda: reset_health(credential.id))
    return credential


@dataclass(frozen=True)
class TargetSpec:
    provider: Provider
    upstream_model: str = ""
    weight: int = 1
    tier: int = 0  # priority tier: lower is preferred


@transaction.atomic
def save_route(
    model: str, targets: Iterable[TargetSpec], *, actor=None, actor_label: str = "", **fields
) -> Route:
    """Create or update a route by its client model name, replacing its targets."""
    route, created = Route.objects.update_or_create(model=model, defaults=fields)
    route.targets.all().delete()
    RouteTarget.objects.bulk_create(
        RouteTarget(route=route, provider=t.provider, upstream_model=t.upstream_model, weight=t.weight, tier=t.tier,
                    order=i)
        for i, t in enumerate(targets)
    )
    audit.record("route.create" if created else "route.update", route, actor=actor, actor_label=actor_label)
    announce_change()
    return route


def rotate_keys(*, actor=None, actor_label: str = "", batch_size: int = 200, progress=None) -> int:
    """Re-encrypt every credential not yet under the newest key. Returns how many rows changed.

    Works in batches, each its own transaction, so a large table never holds one long lock and an
    interrupted run simply continues where it stopped.
    """
    ring = get_keyring()
    changed = 0
    total = Credential.objects.exclude(key_id=ring.current_id).count()
    while True:
        with transaction.atomic():
            batch = list(
                Credential.objects.select_for_update().exclude(key_id=ring.current_id).order_by("pk")[:batch_size]
            )
            if not batch:
                break
            for credential in batch:
                plaintext = ring.decrypt(credential.key_id, credential.secret_ciphertext)
                credential.key_id, credential.secret_ciphertext = ring.encrypt(plaintext)
            Credential.objects.bulk_update(batch, ["key_id", "secret_ciphertext"])
        changed += len(batch)
        if progress:
            progress(changed, total)
    audit.record("keys.rotate", actor=actor, actor_label=actor_label, details={"rows": changed, "key_id": ring.current_id})
    if changed:
        announce_change()
    return changed


# --- deletes and bulk import (dashboard) ------------------------------------------------------------


@transaction.atomic
def delete_provider(provider: Provider, *, actor=None, actor_label: str = "") -> None:
    """Delete a provider with its credentials and route targets (usage rows keep their plain ids)."""
    audit.record("provider.delete", provider, actor=actor, actor_label=actor_label,
                 details={"credentials": provider.credentials.count()})
    provider.delete()
    announce_change()


@transaction.atomic
def delete_credential(credential: Credential, *, actor=None, actor_label: str = "") -> None:
    audit.record("credential.delete", credential, actor=actor, actor_label=actor_label)
    credential.delete()
    announce_change()


@transaction.atomic
def delete_route(route: Route, *, actor=None, actor_label: str = "") -> None:
    audit.record("route.delete", route, actor=actor, actor_label=actor_label)
    route.delete()
    announce_change()


@dataclass(frozen=True)
class BulkImport:
    created: list[Credential]
    duplicates: int  # pasted keys this provider already holds (skipped)


@transaction.atomic
def add_credentials(
    provider: Provider,
    entries: Iterable[tuple[str | None, str]],
    *,
    name_prefix: str = "key",
    actor=None,
    actor_label: str = "",
) -> BulkImport:
    """Add many keys at once: (name or None, secret) pairs. Keys already stored are skipped, all or nothing.

    Unnamed keys get `<name_prefix>-<n>` with the first free numbers. A name that already exists is an
    error rather than a silent secret replacement: replacing a key is a deliberate, separate action.
    """
    existing = {c.name: c for c in provider.credentials.all()}
    stored_secrets = {reveal_secret(c) for c in existing.values()}
    taken = set(existing)
    created, duplicates, seen = [], 0, set()
    counter = 1
    for name, secret in entries:
        secret = secret.strip()
        if secret in stored_secrets or secret in seen:
            duplicates += 1
            continue
        seen.add(secret)
        if name is None:
            while f"{name_prefix}-{counter}" in taken:
                counter += 1
            name = f"{name_prefix}-{counter}"
        elif name in taken:
            raise ValidationError(f"{provider.name} already has a credential named {name!r}")
        taken.add(name)
        created.append(save_credential(provider, name, secret=secret, actor=actor, actor_label=actor_label))
    return BulkImport(created, duplicates)


# --- updates by id (management API): unlike save_*, these can rename --------------------------------


@transaction.atomic
def update_provider(provider: Provider, *, actor=None, actor_label: str = "", **fields) -> Provider:
    name = fields.get("name", provider.name)
    if Provider.objects.filter(name=name).exclude(pk=provider.pk).exists():
        raise ValidationError({"name": f"a provider named {name!r} already exists"})
    if fields.keys() & {"kind", "base_url", "options"}:
        current = {"kind": provider.kind, "base_url": provider.base_url, "options": provider.options}
        fields.update(_clean_provider_fields({**current, **fields}))
    for key, value in fields.items():
        setattr(provider, key, value)
    provider.save()
    audit.record("provider.update", provider, actor=actor, actor_label=actor_label,
                 details={"fields": sorted(fields)})
    announce_change()
    return provider


@transaction.atomic
def update_credential(
    credential: Credential, *, secret: str | None = None, actor=None, actor_label: str = "", **fields
) -> Credential:
    """Change a credential's settings and/or replace its secret (the old secret is never shown)."""
    name = fields.get("name", credential.name)
    if Credential.objects.filter(provider=credential.provider, name=name).exclude(pk=credential.pk).exists():
        raise ValidationError({"name": f"{credential.provider.name} already has a credential named {name!r}"})
    if secret is not None:
        fields.update(encrypt_secret(secret), secret_ref="")
    for key, value in fields.items():
        setattr(credential, key, value)
    credential.save()
    changed = sorted(k for k in fields if k not in ("secret_ciphertext", "key_id", "last4", "secret_ref"))
    audit.record("credential.update", credential, actor=actor, actor_label=actor_label,
                 details={"fields": changed, "secret_changed": secret is not None})
    announce_change()
    return credential


@transaction.atomic
def update_route(
    route: Route, *, targets: Iterable[TargetSpec] | None = None, actor=None, actor_label: str = "", **fields
) -> Route:
    """Change a route, including its model name; `targets=None` keeps the current targets."""
    model = fields.pop("model", route.model)
    if Route.objects.filter(model=model).exclude(pk=route.pk).exists():
        raise ValidationError({"model": f"a route for {model!r} already exists"})
    if model != route.model:
        route.model = model
        route.save(update_fields=["model", "updated_at"])
    if targets is not None:
        return save_route(model, targets, actor=actor, actor_label=actor_label, **fields)
    for key, value in fields.items():
        setattr(route, key, value)
    route.save()
    audit.record("route.update", route, actor=actor, actor_label=actor_label, details={"fields": sorted(fields)})
    announce_change()
    return route
