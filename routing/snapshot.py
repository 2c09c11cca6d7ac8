"""An immutable, in-process view of everything the proxy needs per request.

Built from Postgres in one go (a handful of queries) and swapped atomically, so the hot path never
queries the database. Secrets are decrypted here, held only in memory, and hidden from repr().
"""

import fnmatch
import logging
import re
import time
from dataclasses import dataclass, field

from django.utils import timezone

from accounts.models import GatewayToken, Team
from routing.keyring import KeyRingError, get_keyring
from routing.models import Credential, Provider, Route

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TeamInfo:
    id: int
    name: str
    allowed_models: tuple[str, ...]
    rpm: int | None
    tpm: int | None
    max_concurrency: int | None
    monthly_budget_usd: float | None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    name: str
    prefix: str
    digest: str
    team: TeamInfo
    allowed_models: tuple[str, ...]
    rpm: int | None
    tpm: int | None
    max_concurrency: int | None
    budget_usd: float | None
    allowed_ips: tuple[str, ...]
    is_admin: bool
    expires_at: float | None  # epoch seconds
    revoked: bool

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    id: int
    name: str
    provider_id: int
    secret: str = field(repr=False)
    last4: str
    max_inflight: int | None
    rpm: int | None
    tpm: int | None
    weight: int


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    id: int
    name: str
    kind: str
    base_url: str
    extra_headers: dict
    connect_timeout: float | None
    read_timeout: float | None
    options: dict
    credentials: tuple[CredentialInfo, ...]


@dataclass(frozen=True, slots=True)
class TargetInfo:
    provider: ProviderInfo
    upstream_model: str  # empty: pass the client's model name through
    weight: int
    tier: int = 0  # lower is preferred


@dataclass(frozen=True, slots=True)
class RouteInfo:
    id: int
    model: str
    strategy: str
    priority: int
    timeout: float | None
    retry_budget: int
    targets: tuple[TargetInfo, ...]
    is_glob: bool
    fallbacks: tuple[str, ...] = ()  # model names of routes to try when this one cannot serve
    queue_timeout: float | None = None
    aliases: tuple[str, ...] = ()
    log_bodies: bool = False  # store this route's request/response bodies (redacted; proxy/stored_bodies.py)


@dataclass(frozen=True)
class Snapshot:
    tokens_by_prefix: dict[str, TokenInfo]
    routes_exact: dict[str, RouteInfo]
    routes_glob: tuple[tuple[re.Pattern, RouteInfo], ...]  # highest priority first
    providers: dict[int, ProviderInfo]
    loaded_at: float
    broken_credentials: tuple[str, ...] = ()  # could not be decrypted with the configured keys
    routes_alias: dict[str, RouteInfo] = field(default_factory=dict)

    def route_for(self, model: str) -> RouteInfo | None:
        route = self.routes_exact.get(model) or self.routes_alias.get(model)
        if route is not None:
            return route
        for pattern, candidate in self.routes_glob:
            if pattern.match(model):
                return candidate
        return None

    def visible_models(self, token: "TokenInfo") -> list[str]:
        """The model names `token` may call, for model lists: every route's model, then its aliases (a glob
        route names no model of its own)."""
        names = [*self.routes_exact, *(alias for alias in self.routes_alias if alias not in self.routes_exact)]
        return [name for name in names
                if model_allowed(name, token.team.allowed_models) and model_allowed(name, token.allowed_models)]


EMPTY = Snapshot({}, {}, (), {}, 0.0)


def _team_info(team: Team) -> TeamInfo:
    budget = team.monthly_budget_usd
    return TeamInfo(team.id, team.name, tuple(team.allowed_models or ("*",)), team.rpm, team.tpm,
                    team.max_concurrency, float(budget) if budget is not None else None)


def build_snapshot() -> Snapshot:
    """Load the whole proxy configuration. Runs in a worker thread, never on the event loop."""
    ring = get_keyring()
    teams = {t.id: _team_info(t) for t in Team.objects.all()}
    now = timezone.now()
    tokens = {}
    for t in GatewayToken.objects.filter(revoked_at__isnull=True).exclude(expires_at__lte=now):
        tokens[t.prefix] = TokenInfo(
            t.id, t.name, t.prefix, t.digest, teams[t.team_id], tuple(t.allowed_models or ()), t.rpm, t.tpm,
            t.max_concurrency, float(t.budget_usd) if t.budget_usd is not None else None,
            tuple(t.allowed_ips or ()), t.is_admin, t.expires_at.timestamp() if t.expires_at else None, False,
        )
    creds_by_provider: dict[int, list[CredentialInfo]] = {}
    broken = []
    for c in Credential.objects.filter(enabled=True).order_by("provider_id", "id"):
        try:
            secret = ring.decrypt(c.key_id, c.secret_ciphertext)
        except KeyRingError as exc:
            broken.append(f"{c.provider_id}/{c.name}")
            log.error("credential %s (id %s) is unusable: %s", c.name, c.id, exc)
            continue
        creds_by_provider.setdefault(c.provider_id, []).append(
            CredentialInfo(c.id, c.name, c.provider_id, secret, c.last4, c.max_inflight, c.rpm, c.tpm, c.weight)
        )
    providers = {
        p.id: ProviderInfo(p.id, p.name, p.kind, p.base_url.rstrip("/"), dict(p.extra_headers or {}),
                           p.connect_timeout, p.read_timeout, dict(p.options or {}),
                           tuple(creds_by_provider.get(p.id, ())))
        for p in Provider.objects.filter(enabled=True)
    }
    exact: dict[str, RouteInfo] = {}
    globs: list[tuple[re.Pattern, RouteInfo]] = []
    aliases: dict[str, RouteInfo] = {}
    for r in Route.objects.filter(enabled=True).prefetch_related("targets").order_by("-priority", "model"):
        targets = tuple(
            TargetInfo(providers[t.provider_id], t.upstream_model, t.weight, t.tier)
            for t in r.targets.all() if t.provider_id in providers
        )
        is_glob = any(ch in r.model for ch in "*?[")
        info = RouteInfo(r.id, r.model, r.strategy, r.priority, r.timeout, r.retry_budget, targets, is_glob,
                         tuple(r.fallbacks or ()), r.queue_timeout, tuple(r.aliases or ()), r.log_bodies)
        if is_glob:
            globs.append((re.compile(fnmatch.translate(r.model)), info))
        else:
            exact[r.model] = info
        for alias in info.aliases:
            aliases.setdefault(alias, info)
    return Snapshot(tokens, exact, tuple(globs), providers, time.time(), tuple(broken), aliases)


def model_allowed(model: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(model, p) for p in patterns)
