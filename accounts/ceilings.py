"""The limits a platform admin sets on a team, and the check that keeps every token of the team within them.

A token may narrow the team's ceilings, never widen them: its models must be a subset of the team's,
its RPM/TPM/concurrency and budget at most the team's. An empty token value means "whatever the team
allows", so it never exceeds the ceiling.
"""

import fnmatch
from decimal import Decimal

from django.core.exceptions import ValidationError

from accounts.models import Team

_GLOB_CHARS = "*?["
LIMIT_FIELDS = ("rpm", "tpm", "max_concurrency")


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in _GLOB_CHARS)


def pattern_covered(pattern: str, ceiling: list[str]) -> bool:
    """True if every model name `pattern` matches is also matched by one of the `ceiling` globs.

    Deliberately conservative (it may refuse a subset it cannot prove, never accept a wider one):
    a plain name is covered if a ceiling glob matches it; a glob is covered by "*", by itself, or by a
    ceiling "prefix*" whose literal prefix it starts with.
    """
    if not ceiling:
        return True
    for allowed in ceiling:
        if allowed == "*" or allowed == pattern:
            return True
        if not _is_glob(pattern):
            if fnmatch.fnmatchcase(pattern, allowed):
                return True
            continue
        prefix = allowed[:-1]
        if allowed.endswith("*") and not _is_glob(prefix) and pattern.startswith(prefix):
            return True
    return False


def check_token_limits(
    team: Team,
    *,
    allowed_models: list[str],
    budget_usd: Decimal | None,
    **limits: int | None,
) -> None:
    """Raise ValidationError (keyed by field) if a token's settings exceed its team's ceilings."""
    errors: dict[str, str] = {}
    outside = [p for p in allowed_models if not pattern_covered(p, list(team.allowed_models or []))]
    if outside:
        errors["allowed_models"] = (
            f"not allowed for team {team.name}: {', '.join(outside)} "
            f"(the team may use: {', '.join(team.allowed_models)})"
        )
    for name in LIMIT_FIELDS:
        ceiling, value = getattr(team, name), limits.get(name)
        if ceiling is not None and value is not None and value > ceiling:
            errors[name] = f"{value} is above the team's ceiling of {ceiling}"
    team_budget = team.monthly_budget_usd
    if team_budget is not None and budget_usd is not None and budget_usd > team_budget:
        errors["budget_usd"] = f"{budget_usd} is above the team's monthly budget of {team_budget}"
    if errors:
        raise ValidationError(errors)
