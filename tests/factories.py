"""factory_boy factories for users, teams and memberships, and a ready-made team with one user per role."""

from dataclasses import dataclass

import factory
from django.contrib.auth import get_user_model

from accounts.models import Membership, Role, Team


class UserFactory(factory.django.DjangoModelFactory):
    """Users without a usable password (tests sign them in with force_login): hashing one costs ~0.3 s."""

    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = "!"  # Django's marker for "no usable password"


class SuperUserFactory(UserFactory):
    is_superuser = True
    is_staff = True


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"team-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    team = factory.SubFactory(TeamFactory)
    role = Role.MEMBER


@dataclass
class World:
    """Team A with an owner, admin, member and viewer; team B with its own owner, the outsider to A."""

    team: Team
    other_team: Team
    users: dict  # role name (and "outsider", "superuser") -> user

    def user(self, who: str):
        return self.users[who]


def make_world(**team_fields) -> World:
    team = TeamFactory(name="alpha", **team_fields)
    other = TeamFactory(name="beta")
    users = {}
    for role in (Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER):
        users[str(role)] = MembershipFactory(team=team, role=role, user__username=f"alpha-{role}").user
    users["outsider"] = MembershipFactory(team=other, role=Role.OWNER, user__username="beta-owner").user
    users["superuser"] = SuperUserFactory(username="platform-admin")
    return World(team, other, users)
