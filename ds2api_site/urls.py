"""URL roots: each app exports its own page, API and websocket patterns; this file only stitches them."""

from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.api_urls import api_urlpatterns as account_api
from accounts.urls import urlpatterns as account_urls
from accounts.views import ThrottledLoginView
from proxy.urls import websocket_urlpatterns as proxy_websockets
from routing.api_urls import api_urlpatterns as routing_api

urlpatterns = [
    # The proxy owns the exact Ollama paths (/api/chat, /api/tags, ...); the management API avoids them.
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include(account_api + routing_api)),
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("routing.urls")),
    path("", include("proxy.urls")),
    path("", include(account_urls)),
]

websocket_urlpatterns = [*proxy_websockets]
