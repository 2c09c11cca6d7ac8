"""ASGI entry point: API paths -> the bare proxy app, everything else -> Django, websockets -> Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ds2api_site.settings")
django_asgi = get_asgi_application()  # sets Django up before anything imports models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from ds2api_site.urls import websocket_urlpatterns  # noqa: E402
from proxy.app import ProxyApp, is_proxy_path  # noqa: E402


class HttpDispatch:
    """Send proxy paths straight to the proxy; only dashboard/management paths pay for Django's stack."""

    def __init__(self, proxy, django):
        self.proxy, self.django = proxy, django

    async def __call__(self, scope, receive, send):
        app = self.proxy if is_proxy_path(scope["path"]) else self.django
        await app(scope, receive, send)


proxy_app = ProxyApp()

application = ProtocolTypeRouter(
    {
        "http": HttpDispatch(proxy_app, django_asgi),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        "lifespan": proxy_app,
    }
)
