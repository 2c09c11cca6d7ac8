"""Registry of wire-format adapters. Importing this package registers every built-in adapter."""

from proxy.adapters.base import ClientProtocol, UpstreamAdapter

CLIENT_PROTOCOLS: dict[str, ClientProtocol] = {}
UPSTREAMS: dict[str, UpstreamAdapter] = {}


def register_client(adapter: ClientProtocol) -> ClientProtocol:
    CLIENT_PROTOCOLS[adapter.name] = adapter
    return adapter


def register_upstream(adapter: UpstreamAdapter) -> UpstreamAdapter:
    UPSTREAMS[adapter.kind] = adapter
    return adapter


def client_protocol(name: str) -> ClientProtocol:
    return CLIENT_PROTOCOLS[name]


def upstream_adapter(kind: str) -> UpstreamAdapter:
    return UPSTREAMS[kind]


# Importing a wire-format module registers its adapters: one line per module (isort would merge them).
# isort: off
from proxy.adapters import openai_chat  # noqa: E402,F401  (registers itself)
from proxy.adapters import openai_upstream  # noqa: E402,F401
from proxy.adapters import openai_responses  # noqa: E402,F401
from proxy.adapters import ollama  # noqa: E402,F401
from proxy.adapters import anthropic  # noqa: E402,F401
from proxy.adapters import anthropic_upstream  # noqa: E402,F401
from proxy.adapters import gemini  # noqa: E402,F401
from proxy.adapters import gemini_upstream  # noqa: E402,F401
from proxy.adapters import local  # noqa: E402,F401  (imports no torch until a local model is used)
# isort: on
