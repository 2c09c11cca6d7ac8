"""Configuring `kind: local` providers and the text clean-up of their output. No torch needed here."""

import json
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError

from proxy.canonical import GatewayError
from proxy.local_models import options as local_options
from proxy.local_models import runtime as local_runtime
from proxy.local_models.output import OutputFilter
from routing import services
from routing.config_file import ConfigError, export_config, import_config
from routing.models import Credential, Provider


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "SmolLM2-135M-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


@pytest.fixture
def extra_installed(monkeypatch):
    monkeypatch.setattr(local_options, "missing_extra", lambda: [])


@pytest.fixture
def extra_missing(monkeypatch):
    monkeypatch.setattr(local_options, "missing_extra", lambda: ["torch", "transformers"])


def local_config(model: str, **options) -> dict:
    return {
        "providers": [{"name": "on-device", "kind": "local", "options": {"model": model, **options}}],
        "routes": [{"model": "smol", "targets": [{"provider": "on-device"}]}],
    }


@pytest.mark.django_db
def test_a_local_provider_from_yaml_round_trips(model_folder, extra_installed):
    import_config(local_config(str(model_folder), max_concurrency=2, dtype="float32", idle_unload_seconds=600))
    provider = Provider.objects.get(name="on-device")
    assert (provider.kind, provider.base_url) == ("local", "")
    assert provider.options["max_concurrency"] == 2
    # The selector picks credentials, so a local provider gets its own, made for it.
    assert list(provider.credentials.values_list("name", flat=True)) == [services.LOCAL_CREDENTIAL]
    exported = export_config()["providers"][0]
    assert "credentials" not in exported and "base_url" not in exported
    assert exported["options"] == {"model": str(model_folder), "max_concurrency": 2, "dtype": "float32",
                                   "idle_unload_seconds": 600}
    import_config({"providers": [exported], "routes": local_config(str(model_folder))["routes"]}, prune=True)
    assert Credential.objects.filter(provider=provider).count() == 1


@pytest.mark.django_db
def test_a_gguf_file_is_a_model_reference(tmp_path, extra_installed):
    (tmp_path / "model.Q4_1.gguf").write_bytes(b"GGUF")
    provider = services.save_provider("gguf", kind="local", options={"model": str(tmp_path / "model.Q4_1.gguf")})
    parsed = local_options.LocalOptions.parse(provider.options)
    assert (parsed.folder, parsed.gguf_file, parsed.dtype) == (str(tmp_path), "model.Q4_1.gguf", "bfloat16")


@pytest.mark.django_db
def test_without_the_extra_a_local_provider_is_refused_naming_it(model_folder, extra_missing):
    with pytest.raises(ValidationError, match=r"pip install -e \.\[local\]"):
        services.save_provider("on-device", kind="local", options={"model": str(model_folder)})
    with pytest.raises(ConfigError) as caught:
        import_config(local_config(str(model_folder)), source="gateway.yaml")
    assert caught.value.path == "providers[0].options"
    assert "'local' extra" in caught.value.problem and "pip install -e .[local]" in caught.value.problem
    assert not Provider.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "/nonexistent/model"}, "options.model"),
        ({}, "options.model is required"),
        ({"model": "{folder}", "gguf_file": "missing.gguf"}, "options.gguf_file"),
        ({"model": "{folder}", "dtype": "int3"}, "options.dtype"),
        ({"model": "{folder}", "max_concurrency": 0}, "options.max_concurrency"),
        ({"model": "{folder}", "temperature": 1}, "options.temperature is not a local model option"),
    ],
)
def test_bad_options_are_refused_naming_the_option(model_folder, extra_installed, options, message):
    options = {k: v.format(folder=model_folder) if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(ConfigError) as caught:
        import_config({"providers": [{"name": "p", "kind": "local", "options": options}]})
    assert caught.value.path == "providers[0].options"
    assert message in caught.value.problem


def test_serving_without_the_extra_names_it(monkeypatch):
    monkeypatch.setattr(local_runtime, "_missing_extra", lambda: ("torch",))
    provider = SimpleNamespace(id=10**9, name="p", options={"model": "/m"})
    with pytest.raises(GatewayError) as caught:
        local_runtime.runtime_for(provider)
    assert caught.value.status == 502 and "pip install -e .[local]" in caught.value.message


def test_status_of_a_model_never_used_in_this_process():
    status = local_runtime.status(10**9)
    assert (status["loaded"], status["memory_bytes"], status["running"], status["waiting"]) == (False, 0, 0, 0)


# --- output clean-up -------------------------------------------------------------------------------


def feed_all(out: OutputFilter, pieces: list[str]) -> list[str]:
    return [out.feed(piece) for piece in pieces]


def test_a_stop_string_cuts_the_text_even_across_pieces():
    out = OutputFilter(["END"], tools=False)
    assert feed_all(out, ["Hello wor", "ld E", "N", "D and more"]) == ["Hello wor", "ld ", "", ""]
    assert out.stopped and out.finish() == ("", [])


def test_a_held_back_prefix_is_released_when_it_is_not_a_marker():
    out = OutputFilter(["###"], tools=True)
    assert feed_all(out, ["a <tool", "box> #", "x"]) == ["a ", "<toolbox> ", "#x"]
    assert out.finish() == ("", [])


def test_tool_call_markup_becomes_tool_calls():
    out = OutputFilter([], tools=True)
    shown = feed_all(out, ["Let me check. <tool_", 'call>{"name": "get_weather", ', '"arguments": {"city": "Paris"}}',
                           "</tool_call>"])
    assert "".join(shown) == "Let me check. "
    text, calls = out.finish()
    assert text == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]


def test_malformed_tool_markup_is_kept_as_text():
    out = OutputFilter([], tools=True)
    assert out.feed("<tool_call>not json</tool_call>") == ""
    assert out.finish() == ("<tool_call>not json</tool_call>", [])
