"""The routing app's part of the management API under /api/."""

from rest_framework.routers import SimpleRouter

from routing.api import CredentialViewSet, ProviderViewSet, RouteViewSet

router = SimpleRouter()
router.register("providers", ProviderViewSet, basename="provider")
router.register("credentials", CredentialViewSet, basename="credential")
router.register("routes", RouteViewSet, basename="route")

api_urlpatterns = router.urls
