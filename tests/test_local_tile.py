"""A local provider's credential tile shows its model's state in this process (no torch needed)."""

import pytest
from django.test import Client

from routing import health_tiles, services
from routing.models import Provider

pytestmark = pytest.mark.django_db


def _local_credential():
    # save_provider refuses a local provider without the optional extra; the dashboard state does not need it.
    provider = Provider.objects.create(name="smol", kind="local", options={"model": "smollm2"})
    return provider, services.save_credential(provider, services.LOCAL_CREDENTIAL, secret="in-process")


def test_a_never_loaded_local_model_is_unloaded_on_its_tile():
    provider, credential = _local_credential()
    remote = services.save_credential(
        services.save_provider("openai-main", kind="openai", base_url="https://api.openai.com/v1"), "acct-1",
        secret="sk-local-tile-test-1111")
    tiles = {tile["id"]: tile for tile in health_tiles.credential_tiles()}
    assert tiles[credential.pk]["local"] == {"provider_id": provider.pk, "loaded": False, "loading": False,
                                             "memory_bytes": 0, "tokens_per_s": None}
    assert tiles[remote.pk]["local"] is None


def test_the_overview_tile_shows_memory_and_tokens_per_second(monkeypatch, admin_user):
    provider, credential = _local_credential()
    monkeypatch.setattr(health_tiles, "local_model_status", lambda provider_id: {
        "provider_id": provider_id, "loaded": True, "loading": False, "memory_bytes": 900 * 1024 * 1024,
        "tokens_per_s": 42.5})
    browser = Client()
    browser.force_login(admin_user)
    html = browser.get("/").content.decode()
    tile = html[html.index(f'data-credential="{credential.pk}"'):]
    tile = tile[:tile.index("</article>")]
    assert f'data-local-provider="{provider.pk}">loaded<' in tile
    assert "900.0\xa0MB" in tile and ">42.5<" in tile
