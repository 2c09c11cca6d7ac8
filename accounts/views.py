"""Dashboard pages."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from accounts.selectors import teams_for


@login_required
def overview(request):
    return render(request, "overview.html", {"teams": teams_for(request.user)})
