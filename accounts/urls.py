from django.urls import path

from accounts import team_views, token_views, views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("audit/", views.audit_log, name="audit"),
    path("invite/<str:code>/", views.invite_accept, name="invite"),
    path("teams/", team_views.teams, name="teams"),
    path("teams/<int:pk>/", team_views.team_detail, name="team"),
    path("teams/<int:pk>/members/", team_views.member_add, name="member_add"),
    path("teams/<int:pk>/members/<int:membership_id>/", team_views.member_update, name="member_update"),
    path("teams/<int:pk>/invites/", team_views.invite_create, name="invite_create"),
    path("teams/<int:pk>/invites/<int:invite_id>/revoke/", team_views.invite_revoke, name="invite_revoke"),
    path("teams/<int:pk>/tokens/", token_views.tokens, name="tokens"),
    path("teams/<int:pk>/tokens/<int:token_id>/revoke/", token_views.token_revoke, name="token_revoke"),
    path("teams/<int:pk>/tokens/<int:token_id>/rotate/", token_views.token_rotate, name="token_rotate"),
]
