"""System checks: a missing or malformed key ring fails at start, not at the first request."""

from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured

from routing.keyring import get_keyring


@register()
def check_key_ring(app_configs, **kwargs):
    try:
        get_keyring()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="ds2api.E001")]
    return []
