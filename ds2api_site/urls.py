"""URL roots: each app exports its own page, API and websocket patterns; this file only stitches them."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from accounts.urls import urlpatterns as account_urls

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include(account_urls)),
]

websocket_urlpatterns: list = []
