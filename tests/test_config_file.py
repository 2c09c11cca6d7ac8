"""Config as code: import/export round trip, no plaintext secrets, atomic failure with a precise path."""

import pytest
import yaml
from django.core.management import CommandError, call_command

from accounts.models import GatewayToken, Team
from accounts.tokens import token_digest
from routing.models import Credential, Provider, Route

QA_TOKEN = "ds2-imported-token-0123456789abcdef"

CONFIG = """
providers:
  - name: openai-main
    kind: openai
    base_url: https://api.openai.com/v1
    credentials:
      - name: acct-1
        secret: env:OPENAI_KEY_1
        max_inflight: 4
        rpm: 500
        tpm: 200000
      - name: acct-2
        secret: sk-literal-secret-9999
  - name: claude
    kind: anthropic
    base_url: https://api.anthropic.com
    credentials:
      - name: main
        secret: env:ANTHROPIC_KEY
routes:
  - model: gpt-4o-mini
    strategy: round_robin
    targets:
      - provider: openai-main
        model: gpt-4o-mini
        weight: 1
  - model: "claude-*"
    targets:
      - provider: claude
teams:
  - name: qa
    tokens:
      - name: ci
        value: env:QA_TOKEN
        models: ["*"]
      - name: generated
"""


@pytest.fixture
def config_path(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_KEY_1", "sk-from-env-aaaa1111")
    monkeypatch.setenv("ANTHROPIC_KEY", "sk-ant-from-env-bbbb2222")
    monkeypatch.setenv("QA_TOKEN", QA_TOKEN)
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    return path


def _state():
    return (
        sorted(Provider.objects.values_list("name", "kind", "base_url")),
        sorted(
            Credential.objects.values_list("provider__name", "name", "max_inflight", "rpm", "tpm", "last4")
        ),
        sorted(Route.objects.values_list("model", "strategy")),
        sorted(GatewayToken.objects.values_list("team__name", "name", "digest")),
    )


@pytest.mark.django_db
def test_import_export_import_round_trips(config_path, tmp_path, capsys):
    call_command("gateway", "import", str(config_path))
    out = capsys.readouterr().out
    assert "new token qa/generated: ds2-" in out  # a generated token is printed once
    first = _state()
    assert GatewayToken.objects.get(name="ci").digest == token_digest(QA_TOKEN)

    exported = tmp_path / "export.yaml"
    call_command("gateway", "export", "--output", str(exported))
    text = exported.read_text()
    for secret in ("sk-from-env-aaaa1111", "sk-literal-secret-9999", "sk-ant-from-env-bbbb2222", QA_TOKEN):
        assert secret not in text
    data = yaml.safe_load(text)
    openai_main = next(p for p in data["providers"] if p["name"] == "openai-main")
    creds = {c["name"]: c["secret"] for c in openai_main["credentials"]}
    assert creds == {"acct-1": "env:OPENAI_KEY_1", "acct-2": "<redacted>"}

    call_command("gateway", "import", str(exported))
    assert _state() == first
    call_command("gateway", "import", str(config_path))  # idempotent
    assert _state() == first


@pytest.mark.django_db
def test_prune_removes_what_the_file_no_longer_names(config_path, tmp_path):
    call_command("gateway", "import", str(config_path))
    data = yaml.safe_load(CONFIG)
    data["routes"] = data["routes"][:1]
    data["providers"][0]["credentials"] = data["providers"][0]["credentials"][:1]
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(yaml.safe_dump(data))
    call_command("gateway", "import", str(smaller))
    assert Route.objects.count() == 2  # without --prune nothing is deleted
    call_command("gateway", "import", str(smaller), "--prune")
    assert list(Route.objects.values_list("model", flat=True)) == ["gpt-4o-mini"]
    assert list(Credential.objects.filter(provider__name="openai-main").values_list("name", flat=True)) == [
        "acct-1"
    ]


@pytest.mark.parametrize(
    "mutate, path, problem",
    [
        (
            lambda d: d["routes"][1]["targets"][0].update(provider="nope"),
            "routes[1].targets[0].provider",
            "no provider named 'nope'",
        ),
        (lambda d: d["providers"][0].update(kind="azure"), "providers[0].kind", "must be one of"),
        (
            lambda d: d["providers"][0]["credentials"][0].update(rpm="fast"),
            "providers[0].credentials[0].rpm",
            "whole number",
        ),
        (
            lambda d: d["providers"][1]["credentials"][0].update(secret="env:MISSING_VAR"),
            "providers[1].credentials[0].secret",
            "MISSING_VAR is not set",
        ),
        (lambda d: d["teams"][0].update(colour="red"), "teams[0].colour", "unknown field"),
        (lambda d: d["routes"][0].pop("targets"), "routes[0].targets", "is required"),
    ],
)
@pytest.mark.django_db
def test_broken_file_names_the_path_and_changes_nothing(config_path, tmp_path, mutate, path, problem):
    data = yaml.safe_load(CONFIG)
    mutate(data)
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(data))
    with pytest.raises(CommandError) as info:
        call_command("gateway", "import", str(broken))
    message = str(info.value)
    assert str(broken) in message and path in message and problem in message
    assert (Provider.objects.count(), Route.objects.count(), Team.objects.count()) == (0, 0, 0)


@pytest.mark.django_db
def test_invalid_yaml_names_the_line(tmp_path):
    broken = tmp_path / "bad.yaml"
    broken.write_text("providers:\n  - name: [unclosed\n")
    with pytest.raises(CommandError, match=r"bad.yaml: line \d+"):
        call_command("gateway", "import", str(broken))


@pytest.mark.django_db
def test_private_base_url_is_refused_without_the_setting(config_path, tmp_path, settings):
    settings.DS2API_ALLOW_PRIVATE_UPSTREAMS = False
    data = yaml.safe_load(CONFIG)
    data["providers"][0]["base_url"] = "http://127.0.0.1:9/v1"
    broken = tmp_path / "private.yaml"
    broken.write_text(yaml.safe_dump(data))
    with pytest.raises(CommandError, match=r"providers\[0\].base_url.*DS2API_ALLOW_PRIVATE_UPSTREAMS"):
        call_command("gateway", "import", str(broken))
    assert Provider.objects.count() == 0
