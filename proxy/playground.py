"""The playground: send a prompt through any route in any client protocol and watch the answer stream.

The page's script calls the gateway's own proxy endpoints, exactly as an SDK would, with a short-lived
gateway token minted here for the signed-in user (POST, CSRF-protected, JSON). The token belongs to a
team the user may use the gateway for, so every rule of the proxy path applies unchanged: the team's
models, limits and budget, usage recorded to the team. It is never put into the page's HTML, expires on
its own after a few minutes, and only its digest is stored.
"""

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts import services as account_services
from accounts.page_access import access_for, require_role, team_or_404
from accounts.permissions import USE_GATEWAY
from accounts.selectors import routes_for, teams_for
from proxy.adapters import CLIENT_PROTOCOLS

TOKEN_LIFETIME = timedelta(minutes=15)
# Client protocols the page's script knows how to speak, in the order offered.
PROTOCOL_LABELS = {
    "openai_chat": "OpenAI Chat Completions (/v1/chat/completions)",
    "openai_responses": "OpenAI Responses (/v1/responses)",
    "anthropic": "Anthropic Messages (/v1/messages)",
    "gemini": "Gemini (/v1beta/models/…:streamGenerateContent)",
    "ollama_chat": "Ollama (/api/chat)",
}


def available_protocols() -> list[tuple[str, str]]:
    return [(name, label) for name, label in PROTOCOL_LABELS.items() if name in CLIENT_PROTOCOLS]


@login_required
def playground(request: HttpRequest) -> HttpResponse:
    access = access_for(request.user)
    if not access.can_use_gateway:
        raise Http404("no team lets you use the gateway")
    teams = [t for t in teams_for(request.user) if access.at_least(t.pk, USE_GATEWAY)]
    models = sorted({r.model for r in routes_for(request.user).filter(enabled=True)
                     if not any(ch in r.model for ch in "*?[")})
    return render(request, "proxy/playground.html",
                  {"teams": teams, "models": models, "protocols": available_protocols()})


@login_required
@require_POST
def playground_token(request: HttpRequest) -> JsonResponse:
    team = team_or_404(request.user, request.POST.get("team"))
    require_role(request.user, team.pk, USE_GATEWAY)
    expires_at = timezone.now() + TOKEN_LIFETIME
    try:
        issued = account_services.issue_token(
            team, f"playground {request.user.get_username()} {timezone.now():%Y%m%d-%H%M%S.%f}",
            actor=request.user, expires_at=expires_at,
        )
    except ValidationError as exc:
        return JsonResponse({"error": "; ".join(exc.messages)}, status=400)
    response = JsonResponse({"token": issued.plaintext, "expires_at": expires_at.timestamp()})
    response["Cache-Control"] = "no-store"
    return response
