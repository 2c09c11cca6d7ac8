"""Config as code: `gateway import FILE.yaml` / `gateway export`.

The file names providers (with credentials), routes and teams (with tokens); see docs/config.md. Import is
an idempotent upsert in one transaction: a broken file changes nothing and its error names the file, the
path inside it (e.g. ``routes[2].targets[0].provider``) and what is wrong. Export never writes a secret:
a credential comes out as the ``env:``/``file:`` reference it was imported from, or as ``<redacted>``.
"""

from dataclasses import dataclass, field
from typing import Any

import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts import services as account_services
from accounts.models import GatewayToken, Team
from accounts.tokens import normalise_ip_allowlist, token_digest
from routing import services
from routing.config_schema import (
    CREDENTIAL_FIELDS,
    PROVIDER_FIELDS,
    REDACTED,
    ROUTE_FIELDS,
    TARGET_FIELDS,
    TEAM_FIELDS,
    TOKEN_FIELDS,
    Checker,
    ConfigError,
    decimal_value,
    load_file,
    resolve_secret,
)
from routing.models import Credential, Provider, ProviderKind, Route, Strategy

__all__ = ["REDACTED", "ConfigError", "ImportReport", "dump_yaml", "export_config", "import_config", "load_file"]

@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    issued_tokens: list[tuple[str, str]] = field(default_factory=list)  # (team/name, plaintext) to print once


def import_config(data: Any, *, source: str = "<config>", prune: bool = False, actor_label: str = "import") -> ImportReport:
    checker = Checker(source)
    checker.mapping(data, "", {"providers": list, "routes": list, "teams": list}, ())
    report = ImportReport()
    try:
        with transaction.atomic():
            _import_providers(data, checker, report, prune, actor_label)
            _import_routes(data, checker, report, prune, actor_label)
            _import_teams(data, checker, report, prune, actor_label)
    except ValidationError as exc:
        # Raised by a service below (the same rules as the dashboard and the API); `_with_path` noted where.
        raise ConfigError(source, getattr(exc, "config_path", ""), _problem(exc)) from exc
    return report


# Service field names that the file spells differently.
_FILE_NAMES = {"allowed_models": "models", "is_admin": "admin"}


def _problem(exc: ValidationError) -> str:
    if not hasattr(exc, "error_dict"):
        return "; ".join(exc.messages)
    return "; ".join(message if name == NON_FIELD_ERRORS else f"{_FILE_NAMES.get(name, name)}: {message}"
                     for name, messages in exc.message_dict.items() for message in messages)


def _prune(report: ImportReport, stale_rows, describe, delete, actor_label: str) -> None:
    """Delete what the file no longer names through its service (audited, announced), listing each."""
    for stale in stale_rows:
        report.deleted.append(describe(stale))
        delete(stale, actor_label=actor_label)


def _with_path(path: str, call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except ValidationError as exc:
        exc.config_path = path
        raise


def _import_providers(data, checker, report, prune, actor_label):
    names = set()
    for i, raw in enumerate(checker.items(data.get("providers"), "providers")):
        path = f"providers[{i}]"
        spec = checker.mapping(raw, path, PROVIDER_FIELDS, ("name", "kind"))
        if spec["kind"] not in ProviderKind.values:
            checker.fail(f"{path}.kind", f"must be one of {', '.join(ProviderKind.values)}")
        if spec["name"] in names:
            checker.fail(f"{path}.name", f"duplicate provider {spec['name']!r}")
        names.add(spec["name"])
        fields = {k: spec[k] for k in ("kind", "extra_headers", "connect_timeout", "read_timeout", "options", "enabled") if k in spec}
        fields["base_url"] = spec.get("base_url") or ""
        existed = Provider.objects.filter(name=spec["name"]).exists()
        where = f"{path}.options" if spec["kind"] == ProviderKind.LOCAL else f"{path}.base_url"
        provider = _with_path(where, services.save_provider, spec["name"], actor_label=actor_label, **fields)
        (report.updated if existed else report.created).append(f"provider {provider.name}")
        # A local provider's own credential is made by save_provider, not named in the file.
        cred_names = {services.LOCAL_CREDENTIAL} if spec["kind"] == ProviderKind.LOCAL else set()
        for j, raw_cred in enumerate(checker.items(spec.get("credentials"), f"{path}.credentials")):
            cpath = f"{path}.credentials[{j}]"
            cred = checker.mapping(raw_cred, cpath, CREDENTIAL_FIELDS, ("name", "secret"))
            cred_names.add(cred["name"])
            secret, ref = resolve_secret(cred["secret"], checker, f"{cpath}.secret")
            exists = Credential.objects.filter(provider=provider, name=cred["name"]).exists()
            if secret is None and not exists:
                checker.fail(f"{cpath}.secret", f"is {REDACTED} but no stored secret exists to keep")
            fields = {k: cred.get(k) for k in ("max_inflight", "rpm", "tpm")}
            fields.update({k: cred[k] for k in ("weight", "enabled") if k in cred})
            _with_path(cpath, services.save_credential, provider, cred["name"], secret=secret,
                       secret_ref=ref if secret is not None else None, actor_label=actor_label, **fields)
            (report.updated if exists else report.created).append(f"credential {provider.name}/{cred['name']}")
        if prune:
            _prune(report, provider.credentials.exclude(name__in=cred_names), lambda c: f"credential {c}",
                   services.delete_credential, actor_label)
    if prune:
        _prune(report, Provider.objects.exclude(name__in=names), lambda p: f"provider {p.name}",
               services.delete_provider, actor_label)


def _import_routes(data, checker, report, prune, actor_label):
    models_seen = set()
    linked: dict[str, list[tuple[str, str, list[str]]]] = {"aliases": [], "fallbacks": []}
    for i, raw in enumerate(checker.items(data.get("routes"), "routes")):
        path = f"routes[{i}]"
        spec = checker.mapping(raw, path, ROUTE_FIELDS, ("model", "targets"))
        if spec.get("strategy") and spec["strategy"] not in Strategy.values:
            checker.fail(f"{path}.strategy", f"must be one of {', '.join(Strategy.values)}")
        if spec["model"] in models_seen:
            checker.fail(f"{path}.model", f"duplicate route {spec['model']!r}")
        models_seen.add(spec["model"])
        targets = []
        for j, raw_target in enumerate(checker.items(spec["targets"], f"{path}.targets")):
            tpath = f"{path}.targets[{j}]"
            target = checker.mapping(raw_target, tpath, TARGET_FIELDS, ("provider",))
            provider = Provider.objects.filter(name=target["provider"]).first()
            if provider is None:
                checker.fail(f"{tpath}.provider", f"no provider named {target['provider']!r}")
            targets.append(services.TargetSpec(provider, target.get("model") or "", target.get("weight") or 1,
                                               target.get("tier") or 0))
        if not targets:
            checker.fail(f"{path}.targets", "needs at least one target")
        for key in ("aliases", "fallbacks"):
            names = spec.get(key) or []
            if not all(isinstance(name, str) and name for name in names):
                checker.fail(f"{path}.{key}", "must be a list of model names")
            linked[key].append((path, spec["model"], names))
        fields = {k: spec[k] for k in ("strategy", "priority", "enabled", "timeout", "retry_budget", "aliases",
                                       "fallbacks", "queue_timeout", "log_bodies") if k in spec}
        existed = Route.objects.filter(model=spec["model"]).exists()
        _with_path(path, services.save_route, spec["model"], targets, actor_label=actor_label, **fields)
        (report.updated if existed else report.created).append(f"route {spec['model']}")
    if prune:
        _prune(report, Route.objects.exclude(model__in=models_seen), lambda r: f"route {r.model}",
               services.delete_route, actor_label)
    _check_route_links(linked, checker)


def _check_route_links(linked: dict, checker: "Checker") -> None:
    """Once every route is saved: fallbacks name existing routes, aliases never shadow one."""
    stored = set(Route.objects.values_list("model", flat=True))
    owners: dict[str, str] = {}
    for path, model, names in linked["aliases"]:
        for j, alias in enumerate(names):
            if alias in stored:
                checker.fail(f"{path}.aliases[{j}]", f"{alias!r} is already the name of a route")
            if owners.setdefault(alias, model) != model:
                checker.fail(f"{path}.aliases[{j}]", f"{alias!r} is already an alias of {owners[alias]!r}")
    for path, model, names in linked["fallbacks"]:
        for j, name in enumerate(names):
            if name == model:
                checker.fail(f"{path}.fallbacks[{j}]", "a route cannot fall back to itself")
            if name not in stored and name not in owners:
                checker.fail(f"{path}.fallbacks[{j}]", f"no route named {name!r}")


def _import_teams(data, checker, report, prune, actor_label):
    team_names = set()
    for i, raw in enumerate(checker.items(data.get("teams"), "teams")):
        path = f"teams[{i}]"
        spec = checker.mapping(raw, path, TEAM_FIELDS, ("name",))
        team_names.add(spec["name"])
        limits = {k: spec.get(k) for k in ("rpm", "tpm", "max_concurrency")}
        limits["allowed_models"] = spec.get("models") or ["*"]
        limits["monthly_budget_usd"] = decimal_value(spec.get("monthly_budget_usd"), checker, f"{path}.monthly_budget_usd")
        team = Team.objects.filter(name=spec["name"]).first()
        if team is None:
            team = _with_path(path, account_services.create_team, spec["name"], actor_label=actor_label, **limits)
            report.created.append(f"team {team.name}")
        else:
            changed = _changed(team, limits)
            if changed:
                _with_path(path, account_services.update_team, team, actor_label=actor_label, **changed)
            report.updated.append(f"team {team.name}")
        token_names = set()
        for j, raw_token in enumerate(checker.items(spec.get("tokens"), f"{path}.tokens")):
            tpath = f"{path}.tokens[{j}]"
            tok = checker.mapping(raw_token, tpath, TOKEN_FIELDS, ("name",))
            token_names.add(tok["name"])
            _import_token(team, tok, checker, tpath, report, actor_label)
        if prune:
            _prune(report, team.tokens.exclude(name__in=token_names), lambda t: f"token {t.team.name}/{t.name}",
                   account_services.delete_token, actor_label)
    if prune:
        _prune(report, Team.objects.exclude(name__in=team_names), lambda t: f"team {t.name}",
               account_services.delete_team, actor_label)


def _changed(current, fields: dict) -> dict:
    """The fields whose value differs from what is stored, so an unchanged re-import writes (and audits) nothing."""
    return {name: value for name, value in fields.items() if getattr(current, name) != value}


def _import_token(team, tok, checker, path, report, actor_label):
    value, ref = (None, "")
    if tok.get("value"):
        value, ref = resolve_secret(tok["value"], checker, f"{path}.value")
        if value is not None and len(value) < 20:
            checker.fail(f"{path}.value", "a gateway token must be at least 20 characters long")
    expires_at = None
    if tok.get("expires_at"):
        expires_at = parse_datetime(tok["expires_at"])
        if expires_at is None:
            checker.fail(f"{path}.expires_at", "must be an ISO 8601 date-time")
        if timezone.is_naive(expires_at):
            expires_at = timezone.make_aware(expires_at)
    fields = {
        "allowed_models": tok.get("models") or [],
        "rpm": tok.get("rpm"),
        "tpm": tok.get("tpm"),
        "max_concurrency": tok.get("max_concurrency"),
        "budget_usd": decimal_value(tok.get("budget_usd"), checker, f"{path}.budget_usd"),
        "allowed_ips": tok.get("allowed_ips") or [],
        "expires_at": expires_at,
    }
    is_admin = bool(tok.get("admin", False))
    existing = GatewayToken.objects.filter(team=team, name=tok["name"]).first()
    if existing is None:
        issued = _with_path(path, account_services.issue_token, team, tok["name"], value=value, source_ref=ref,
                            is_admin=is_admin, actor_label=actor_label, **fields)
        report.created.append(f"token {team.name}/{tok['name']}")
        if value is None:
            report.issued_tokens.append((f"{team.name}/{tok['name']}", issued.plaintext))
        return
    try:  # compare addresses as stored; a bad entry is left for the service to report
        fields["allowed_ips"] = normalise_ip_allowlist(fields["allowed_ips"])
    except ValueError:
        pass
    changed = _changed(existing, fields)
    if value is not None and token_digest(value) != existing.digest:
        changed["value"] = value
    if value is not None and ref != existing.source_ref:
        changed["source_ref"] = ref
    if is_admin != existing.is_admin:
        changed["is_admin"] = is_admin
    if changed:
        _with_path(path, account_services.update_token, existing, actor_label=actor_label, **changed)
    report.updated.append(f"token {team.name}/{tok['name']}")


# --- export -------------------------------------------------------------------------------------

def _drop_empty(mapping: dict) -> dict:
    return {k: v for k, v in mapping.items() if v not in (None, "", [], {})}


def export_config() -> dict:
    providers = []
    for provider in Provider.objects.prefetch_related("credentials"):
        providers.append(_drop_empty({
            "name": provider.name, "kind": provider.kind, "base_url": provider.base_url,
            "extra_headers": provider.extra_headers, "connect_timeout": provider.connect_timeout,
            "read_timeout": provider.read_timeout, "options": provider.options,
            "enabled": None if provider.enabled else False,
            "credentials": [
                _drop_empty({
                    "name": c.name, "secret": c.secret_ref or REDACTED, "max_inflight": c.max_inflight,
                    "rpm": c.rpm, "tpm": c.tpm, "weight": c.weight if c.weight != 1 else None,
                    "enabled": None if c.enabled else False,
                })
                for c in provider.credentials.all()
                if not (provider.kind == ProviderKind.LOCAL and c.name == services.LOCAL_CREDENTIAL)
            ],
        }))
    routes = []
    for route in Route.objects.prefetch_related("targets__provider"):
        routes.append(_drop_empty({
            "model": route.model, "strategy": route.strategy, "priority": route.priority or None,
            "enabled": None if route.enabled else False, "timeout": route.timeout,
            "retry_budget": route.retry_budget, "aliases": route.aliases, "fallbacks": route.fallbacks,
            "queue_timeout": route.queue_timeout, "log_bodies": route.log_bodies or None,
            "targets": [
                _drop_empty({"provider": t.provider.name, "model": t.upstream_model, "weight": t.weight,
                             "tier": t.tier or None})
                for t in route.targets.all()
            ],
        }))
    teams = []
    for team in Team.objects.prefetch_related("tokens"):
        teams.append(_drop_empty({
            "name": team.name, "models": team.allowed_models, "rpm": team.rpm, "tpm": team.tpm,
            "max_concurrency": team.max_concurrency,
            "monthly_budget_usd": float(team.monthly_budget_usd) if team.monthly_budget_usd is not None else None,
            "tokens": [
                _drop_empty({
                    "name": t.name, "value": t.source_ref, "models": t.allowed_models, "rpm": t.rpm, "tpm": t.tpm,
                    "max_concurrency": t.max_concurrency,
                    "budget_usd": float(t.budget_usd) if t.budget_usd is not None else None,
                    "expires_at": t.expires_at.isoformat() if t.expires_at else None,
                    "admin": t.is_admin or None, "allowed_ips": t.allowed_ips,
                })
                for t in team.tokens.filter(revoked_at__isnull=True)
            ],
        }))
    return _drop_empty({"providers": providers, "routes": routes, "teams": teams})


def dump_yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
