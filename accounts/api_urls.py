"""The accounts app's part of the management API under /api/."""

from rest_framework.routers import SimpleRouter

from accounts.api import InviteViewSet, MembershipViewSet, TeamViewSet, TokenViewSet
from accounts.api_reports import AuditEventViewSet, PriceViewSet, UsageViewSet

router = SimpleRouter()
router.register("teams", TeamViewSet, basename="team")
router.register("memberships", MembershipViewSet, basename="membership")
router.register("invites", InviteViewSet, basename="invite")
router.register("tokens", TokenViewSet, basename="token")
router.register("prices", PriceViewSet, basename="price")
router.register("usage", UsageViewSet, basename="usage")
router.register("audit-events", AuditEventViewSet, basename="audit-event")

api_urlpatterns = router.urls
