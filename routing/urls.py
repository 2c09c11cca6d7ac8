from django.urls import path

from routing import route_views, views

app_name = "routing"

urlpatterns = [
    path("providers/", views.providers, name="providers"),
    path("providers/<int:pk>/", views.provider_detail, name="provider"),
    path("providers/<int:pk>/delete/", views.provider_delete, name="provider_delete"),
    path("providers/<int:pk>/keys/", views.credentials_bulk_add, name="credentials_bulk_add"),
    path("providers/<int:pk>/test/", views.provider_test_all, name="provider_test_all"),
    path("credentials/<int:pk>/", views.credential_edit, name="credential"),
    path("credentials/<int:pk>/toggle/", views.credential_toggle, name="credential_toggle"),
    path("credentials/<int:pk>/delete/", views.credential_delete, name="credential_delete"),
    path("credentials/<int:pk>/test/", views.credential_test, name="credential_test"),
    path("routes/", route_views.routes, name="routes"),
    path("routes/new/", route_views.route_create, name="route_create"),
    path("routes/preview/", route_views.route_preview, name="route_preview"),
    path("routes/<int:pk>/", route_views.route_edit, name="route"),
    path("routes/<int:pk>/delete/", route_views.route_delete, name="route_delete"),
]
