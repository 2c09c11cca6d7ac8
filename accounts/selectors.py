"""Reads shared by pages, API and consumers; always scoped to what the user may see."""

from django.db.models import QuerySet

from accounts.models import Team


def teams_for(user) -> QuerySet[Team]:
    if user.is_superuser:
        return Team.objects.all()
    return Team.objects.filter(memberships__user=user).distinct()
