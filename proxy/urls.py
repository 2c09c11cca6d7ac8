from django.urls import path

from proxy import consumers, log_views, playground, views

app_name = "proxy"

urlpatterns = [
    path("usage/", views.usage, name="usage"),
    path("usage/export.csv", views.usage_csv, name="usage_csv"),
    path("requests/", log_views.requests_page, name="requests"),
    path("requests/<int:pk>/", log_views.request_detail, name="request"),
    path("playground/", playground.playground, name="playground"),
    path("playground/token/", playground.playground_token, name="playground_token"),
]

websocket_urlpatterns = [
    path("ws/live/", consumers.LiveConsumer.as_asgi()),
]
