"""Template tags of the dashboard: role-aware navigation."""

from django import template
from django.urls import reverse

from accounts.page_access import access_for

register = template.Library()


@register.inclusion_tag("includes/nav.html", takes_context=True)
def dashboard_nav(context) -> dict:
    """Only links the user's role can open; a page that would answer 404 is never offered."""
    request = context["request"]
    access = access_for(request.user)
    items = [("Overview", reverse("overview"))]
    if access.is_platform_admin:
        items += [("Providers", reverse("routing:providers")), ("Routes", reverse("routing:routes"))]
    if access.has_team:
        items += [("Usage", reverse("proxy:usage")), ("Requests", reverse("proxy:requests"))]
    if access.can_use_gateway:
        items.append(("Playground", reverse("proxy:playground")))
    if access.has_team:
        items.append(("Teams", reverse("teams")))
    if access.can_view_audit:
        items.append(("Audit", reverse("audit")))
    current = request.path
    links = [
        {"label": label, "url": url, "active": current == url or (url != "/" and current.startswith(url))}
        for label, url in items
    ]
    return {"links": links}

