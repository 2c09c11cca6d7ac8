"""Config as code: `gateway import FILE.yaml` / `gateway export`.

The file names providers (with credentials), routes and teams (with tokens); see docs/config.md. Import is
an idempotent upsert in one transaction: a broken file changes nothing and its error names the file, the
path inside it (e.g. ``routes[2].targets[0].provider``) and what is wrong. Export never writes a secret:
a credential comes out as the ``env:``/``file:`` reference it was imported from, or as ``<redacted>``.
"""

import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.dateparse import parse_datetime

from accounts import services as account_services
from accounts.models import GatewayToken, Team
from accounts.tokens import token_digest, token_prefix
from routing import services
from routing.models import Credential, Provider, ProviderKind, Route, Strategy

REDACTED = "<redacted>"


class ConfigError(Exception):
    def __init__(self, source: str, path: str, problem: str):
        self.source, self.path, self.problem = source, path, problem
        super().__init__(f"{source}: {path or '(top level)'}: {problem}")


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    issued_tokens: list[tuple[str, str]] = field(default_factory=list)  # (team/name, plaintext) to print once


# --- a small schema checker that reports paths -----------------------------------------------------

_INT, _NUM, _STR, _BOOL = "int", "number", "string", "bool"
_PROVIDER_FIELDS = {
    "name": _STR, "kind": _STR, "base_url": _STR, "extra_headers": dict, "connect_timeout": _NUM,
    "read_timeout": _NUM, "enabled": _BOOL, "options": dict, "credentials": list,
}
_CREDENTIAL_FIELDS = {
    "name": _STR, "secret": _STR, "max_inflight": _INT, "rpm": _INT, "tpm": _INT, "weight": _INT, "enabled": _BOOL,
}
_ROUTE_FIELDS = {
    "model": _STR, "strategy": _STR, "priority": _INT, "enabled": _BOOL, "timeout": _NUM, "retry_budget": _INT,
    "targets": list, "aliases": list, "fallbacks": list, "queue_timeout": _NUM, "log_bodies": _BOOL,
}
_TARGET_FIELDS = {"provider": _STR, "model": _STR, "weight": _INT, "tier": _INT}
_TEAM_FIELDS = {
    "name": _STR, "models": list, "rpm": _INT, "tpm": _INT, "max_concurrency": _INT, "monthly_budget_usd": _NUM,
    "tokens": list,
}
_TOKEN_FIELDS = {
    "name": _STR, "value": _STR, "models": list, "rpm": _INT, "tpm": _INT, "max_concurrency": _INT,
    "budget_usd": _NUM, "expires_at": _STR, "admin": _BOOL, "allowed_ips": list,
}


def _type_ok(value: Any, expected) -> bool:
    if expected == _INT:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if expected == _NUM:
        return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    if expected == _STR:
        return isinstance(value, str)
    if expected == _BOOL:
        return isinstance(value, bool)
    return isinstance(value, expected)


_TYPE_NAMES = {dict: "a mapping", list: "a list", _INT: "a whole number >= 0", _NUM: "a number >= 0",
               _STR: "a string", _BOOL: "true or false"}


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, problem: str):
        raise ConfigError(self.source, path, problem)

    def mapping(self, value: Any, path: str, fields: dict, required: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            self.fail(path, "must be a mapping")
        for key, item in value.items():
            if key not in fields:
                self.fail(f"{path}.{key}", f"unknown field (allowed: {', '.join(fields)})")
            if item is not None and not _type_ok(item, fields[key]):
                self.fail(f"{path}.{key}", f"must be {_TYPE_NAMES[fields[key]]}")
        for key in required:
            if value.get(key) in (None, ""):
                self.fail(f"{path}.{key}", "is required")
        return value

    def items(self, value: Any, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, "must be a list")
        return value


def resolve_secret(raw: str, checker: _Checker, path: str) -> tuple[str | None, str]:
    """Return (secret or None to keep the stored one, reference to remember for export)."""
    if raw == REDACTED:
        return None, ""
    if raw.startswith("env:"):
        name = raw[4:]
        if not os.environ.get(name):
            checker.fail(path, f"environment variable {name} is not set")
        return os.environ[name], raw
    if raw.startswith("file:"):
        try:
            return Path(raw[5:]).read_text().strip(), raw
        except OSError as exc:
            checker.fail(path, f"cannot read {raw[5:]}: {exc.strerror}")
    return raw, ""


def load_file(path: str) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read file: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(path, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    return data if data is not None else {}


def import_config(data: Any, *, source: str = "<config>", prune: bool = False, actor_label: str = "import") -> ImportReport:
    checker = _Checker(source)
    checker.mapping(data, "", {"providers": list, "routes": list, "teams": list}, ())
    report = ImportReport()
    try:
        with transaction.atomic():
            _import_providers(data, checker, report, prune, actor_label)
            _import_routes(data, checker, report, prune, actor_label)
            _import_teams(data, checker, report, prune, actor_label)
    except ValidationError as exc:
        # Raised by a service below; the checker recorded where we were.
        raise ConfigError(source, getattr(exc, "config_path", ""), "; ".join(exc.messages)) from exc
    return report


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
        spec = checker.mapping(raw, path, _PROVIDER_FIELDS, ("name", "kind"))
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
            cred = checker.mapping(raw_cred, cpath, _CREDENTIAL_FIELDS, ("name", "secret"))
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
            for stale in provider.credentials.exclude(name__in=cred_names):
                report.deleted.append(f"credential {stale}")
                stale.delete()
    if prune:
        for stale in Provider.objects.exclude(name__in=names):
            report.deleted.append(f"provider {stale.name}")
            stale.delete()


def _import_routes(data, checker, report, prune, actor_label):
    models_seen = set()
    linked: dict[str, list[tuple[str, str, list[str]]]] = {"aliases": [], "fallbacks": []}
    for i, raw in enumerate(checker.items(data.get("routes"), "routes")):
        path = f"routes[{i}]"
        spec = checker.mapping(raw, path, _ROUTE_FIELDS, ("model", "targets"))
        if spec.get("strategy") and spec["strategy"] not in Strategy.values:
            checker.fail(f"{path}.strategy", f"must be one of {', '.join(Strategy.values)}")
        if spec["model"] in models_seen:
            checker.fail(f"{path}.model", f"duplicate route {spec['model']!r}")
        models_seen.add(spec["model"])
        targets = []
        for j, raw_target in enumerate(checker.items(spec["targets"], f"{path}.targets")):
            tpath = f"{path}.targets[{j}]"
            target = checker.mapping(raw_target, tpath, _TARGET_FIELDS, ("provider",))
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
        services.save_route(spec["model"], targets, actor_label=actor_label, **fields)
        (report.updated if existed else report.created).append(f"route {spec['model']}")
    if prune:
        for stale in Route.objects.exclude(model__in=models_seen):
            report.deleted.append(f"route {stale.model}")
            stale.delete()
    _check_route_links(linked, checker)


def _check_route_links(linked: dict, checker: "_Checker") -> None:
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


def _decimal(value, checker, path):
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        checker.fail(path, "must be a number")


def _import_teams(data, checker, report, prune, actor_label):
    team_names = set()
    for i, raw in enumerate(checker.items(data.get("teams"), "teams")):
        path = f"teams[{i}]"
        spec = checker.mapping(raw, path, _TEAM_FIELDS, ("name",))
        team_names.add(spec["name"])
        limits = {k: spec.get(k) for k in ("rpm", "tpm", "max_concurrency")}
        limits["allowed_models"] = spec.get("models") or ["*"]
        limits["monthly_budget_usd"] = _decimal(spec.get("monthly_budget_usd"), checker, f"{path}.monthly_budget_usd")
        team = Team.objects.filter(name=spec["name"]).first()
        if team is None:
            team = account_services.create_team(spec["name"], actor_label=actor_label, **limits)
            report.created.append(f"team {team.name}")
        else:
            Team.objects.filter(pk=team.pk).update(**limits)
            report.updated.append(f"team {team.name}")
        token_names = set()
        for j, raw_token in enumerate(checker.items(spec.get("tokens"), f"{path}.tokens")):
            tpath = f"{path}.tokens[{j}]"
            tok = checker.mapping(raw_token, tpath, _TOKEN_FIELDS, ("name",))
            token_names.add(tok["name"])
            _import_token(team, tok, checker, tpath, report, actor_label)
        if prune:
            for stale in team.tokens.exclude(name__in=token_names):
                report.deleted.append(f"token {team.name}/{stale.name}")
                stale.delete()
    if prune:
        for stale in Team.objects.exclude(name__in=team_names):
            report.deleted.append(f"team {stale.name}")
            stale.delete()


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
    fields = {
        "allowed_models": tok.get("models") or [],
        "rpm": tok.get("rpm"),
        "tpm": tok.get("tpm"),
        "max_concurrency": tok.get("max_concurrency"),
        "budget_usd": _decimal(tok.get("budget_usd"), checker, f"{path}.budget_usd"),
        "allowed_ips": tok.get("allowed_ips") or [],
        "is_admin": bool(tok.get("admin", False)),
        "expires_at": expires_at,
    }
    existing = GatewayToken.objects.filter(team=team, name=tok["name"]).first()
    if existing is None:
        issued = account_services.issue_token(team, tok["name"], value=value, source_ref=ref, actor_label=actor_label, **fields)
        report.created.append(f"token {team.name}/{tok['name']}")
        if value is None:
            report.issued_tokens.append((f"{team.name}/{tok['name']}", issued.plaintext))
        return
    if value is not None:
        fields.update(prefix=token_prefix(value), digest=token_digest(value), source_ref=ref)
    GatewayToken.objects.filter(pk=existing.pk).update(**fields)
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
