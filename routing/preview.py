""""Which credential would serve model X now?": the route a model resolves to and its candidates in order.

Built like a gateway process builds its plan (a fresh configuration snapshot and `Selector.plan`: tiers,
strategy order, fallback routes) and the shared health of each credential (`credential_health`: cooling,
invalid, in flight). Round-robin and weighted strategies rotate, so the preview names the first healthy
candidate of the current order; cooling, invalid and disabled credentials are listed but skipped.
"""

from dataclasses import dataclass, field

from routing.selector import TIER_SPAN, Selector
from routing.selectors import credential_health
from routing.snapshot import RouteInfo, build_snapshot


@dataclass(frozen=True)
class Candidate:
    route: str
    provider: str
    credential: str
    masked: str
    upstream_model: str
    status: str
    tier: int
    fallback_depth: int
    in_flight: int | None


@dataclass
class RoutePreview:
    model: str
    route: RouteInfo | None = None
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def chosen(self) -> Candidate | None:
        return next((c for c in self.candidates if c.status == "ok"), None)

    @property
    def reason(self) -> str:
        if self.route is None:
            return f"no enabled route matches {self.model!r}: the gateway answers 404"
        if not self.candidates:
            return "the route has no enabled provider with an enabled key: the gateway answers 503"
        if self.chosen is None:
            return "no healthy credential: the gateway answers 429/503 until one recovers"
        return ""


def preview_route(model: str) -> RoutePreview:
    snapshot = build_snapshot()
    preview = RoutePreview(model=model, route=snapshot.route_for(model))
    if preview.route is None:
        return preview
    plan = Selector().plan(preview.route, snapshot)
    health = {h["credential_id"]: h for h in credential_health(sorted({c.credential.id for c in plan}))}
    for c in plan:
        state = health.get(c.credential.id, {})
        preview.candidates.append(Candidate(
            route=c.route.model, provider=c.target.provider.name, credential=c.credential.name,
            masked=f"…{c.credential.last4}", upstream_model=c.target.upstream_model or model,
            status=state.get("status", "ok"), tier=c.tier % TIER_SPAN, fallback_depth=c.tier // TIER_SPAN,
            in_flight=state.get("in_flight"),
        ))
    return preview
