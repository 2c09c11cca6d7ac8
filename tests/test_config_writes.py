"""Config import writes through the same services as the dashboard and the API: audit events, team ceilings
checked on every token, errors at the token's path; unchanged entries write nothing."""

import copy

import pytest

from accounts.models import AuditEvent, GatewayToken, Team
from accounts.tokens import token_digest
from routing.config_file import ConfigError, export_config, import_config
from routing.models import Route

pytestmark = pytest.mark.django_db

FIRST = "ds2-config-writes-first-0123456789"
SECOND = "ds2-config-writes-second-987654321"

BASE = {
    "providers": [{"name": "openai-main", "kind": "openai", "base_url": "https://api.openai.com/v1",
                   "credentials": [{"name": "acct-1", "secret": "sk-config-writes-1111"}]}],
    "routes": [{"model": "gpt-4o-mini", "targets": [{"provider": "openai-main"}]}],
    "teams": [{"name": "qa", "rpm": 100, "models": ["gpt-*"],
               "tokens": [{"name": "ci", "value": FIRST, "rpm": 50, "models": ["gpt-4o-mini"]}]}],
}


def _config(**changes) -> dict:
    data = copy.deepcopy(BASE)
    team, token = data["teams"][0], data["teams"][0]["tokens"][0]
    team.update(changes.pop("team", {}))
    token.update(changes.pop("token", {}))
    data.update(changes)
    return data


def _actions(prefix: str) -> list[str]:
    return list(AuditEvent.objects.filter(action__startswith=prefix).order_by("id").values_list("action", flat=True))


def test_changed_teams_and_tokens_are_audited_and_unchanged_ones_write_nothing():
    import_config(_config())
    import_config(_config())  # the same file again: nothing to say
    assert _actions("team.") == ["team.create"] and _actions("token.") == ["token.create"]

    import_config(_config(team={"rpm": 80}, token={"models": ["gpt-4o"], "value": SECOND}))
    team_update = AuditEvent.objects.get(action="team.update")
    assert (team_update.actor_label, team_update.details) == ("import", {"fields": ["rpm"]})
    token_update = AuditEvent.objects.get(action="token.update")
    assert token_update.details == {"fields": ["allowed_models"], "value_changed": True}
    assert SECOND not in str(token_update.details)
    token = GatewayToken.objects.get(name="ci")
    assert (token.digest, token.allowed_models, Team.objects.get(name="qa").rpm) == (
        token_digest(SECOND), ["gpt-4o"], 80)


@pytest.mark.parametrize("token_changes, problem", [
    ({"rpm": 500}, "rpm: 500 is above the team's ceiling of 100"),
    ({"models": ["claude-*"]}, "models: not allowed for team qa"),
])
def test_token_ceilings_hold_on_update_and_name_the_token(token_changes, problem):
    import_config(_config())
    with pytest.raises(ConfigError) as info:
        import_config(_config(token=token_changes))
    assert info.value.path == "teams[0].tokens[0]" and problem in info.value.problem
    token = GatewayToken.objects.get(name="ci")
    assert (token.rpm, token.allowed_models) == (50, ["gpt-4o-mini"])  # nothing written
    assert _actions("token.") == ["token.create"]


def test_a_new_token_above_the_ceiling_names_its_path():
    data = _config()
    data["teams"][0]["tokens"].append({"name": "greedy", "tpm": 10, "max_concurrency": 3})
    data["teams"][0]["max_concurrency"] = 2
    with pytest.raises(ConfigError) as info:
        import_config(data)
    assert info.value.path == "teams[0].tokens[1]" and "max_concurrency: 3 is above" in info.value.problem
    assert Team.objects.count() == 0


def test_an_unknown_top_level_key_is_named_without_a_leading_dot():
    with pytest.raises(ConfigError) as info:
        import_config({**_config(), "colour": "red"})
    assert info.value.path == "colour"
    assert str(info.value).startswith("<config>: colour: unknown field")


def test_a_negative_route_priority_is_allowed_and_round_trips():
    data = _config()
    data["routes"][0]["priority"] = -5
    import_config(data)
    assert Route.objects.get(model="gpt-4o-mini").priority == -5
    assert export_config()["routes"][0]["priority"] == -5


def test_prune_deletes_through_the_services():
    import_config(_config())
    data = _config(routes=[], teams=[{"name": "qa", "rpm": 100, "models": ["gpt-*"]}])
    import_config(data, prune=True)
    assert "token.delete" in _actions("token.") and "route.delete" in _actions("route.")
    import_config({"providers": data["providers"]}, prune=True)
    assert _actions("team.")[-1] == "team.delete" and Team.objects.count() == 0
