"""Dashboard hardening, checked on every page an admin can reach: CSRF on every form and htmx request, a
Content-Security-Policy without inline script, clickjacking protection, and Secure + HttpOnly cookies when
SECURE_COOKIES is on.

Pages are found by crawling from the overview as an admin with some data in place, so a page added later is
covered without editing this file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from django.test import Client

from tests.conftest import make_setup
from tests.infra_servers import ROOT

UNSAFE_METHODS = ("hx-post", "hx-put", "hx-patch", "hx-delete")
SKIP = ("/logout/", "/static/", "/api/docs/", "/api/schema/", "/ws/")
MAX_PAGES = 80


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.forms: list[dict] = []  # {"method", "action", "csrf"}
        self.htmx: list[tuple[str, str]] = []  # (attribute, target)
        self.inline_scripts: list[str] = []
        self.handlers: list[str] = []  # on*= attributes and javascript: URLs
        self.body_csrf_header = False
        self._form: dict | None = None
        self._script_inline = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        for name, value in values.items():
            if name.startswith("on") or value.strip().lower().startswith("javascript:"):
                self.handlers.append(f"<{tag} {name}={value[:60]!r}>")
            if name in UNSAFE_METHODS:
                self.htmx.append((name, value))
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        elif tag == "body":
            self.body_csrf_header = "X-CSRFToken" in values.get("hx-headers", "")
        elif tag == "form":
            self._form = {"method": values.get("method", "get").lower(), "action": values.get("action", ""),
                          "csrf": False, "id": values.get("id", "")}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and values.get("name") == "csrfmiddlewaretoken":
            self._form["csrf"] = bool(values.get("value"))
        elif tag == "script":  # json_script data islands (type="application/json") never run
            executable = values.get("type", "").lower() in ("", "text/javascript", "application/javascript", "module")
            self._script_inline = executable and "src" not in values

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "script":
            self._script_inline = False

    def handle_data(self, data: str) -> None:
        if self._script_inline and data.strip():
            self.inline_scripts.append(data.strip()[:80])


@pytest.fixture
def site(db, admin_user):
    """An admin's view of a dashboard with a provider, keys, a route, a team with a member and a token."""
    setup = make_setup("http://127.0.0.1:9/v1", secrets=("sk-dash-0001", "sk-dash-0002"))
    from django.contrib.auth import get_user_model

    from accounts import services as account_services

    member = get_user_model().objects.create_user("member-1", "", "another-long-password")
    account_services.add_member(setup.team, member)
    client = Client()
    client.force_login(admin_user)
    return client, setup


def crawl(client: Client) -> dict[str, tuple[object, Page]]:
    seen: dict[str, tuple[object, Page]] = {}
    queue = ["/"]
    while queue and len(seen) < MAX_PAGES:
        path = queue.pop(0)
        if path in seen:
            continue
        response = client.get(path)
        page = Page()
        if response.status_code == 200 and response["content-type"].startswith("text/html"):
            page.feed(response.content.decode())
        seen[path] = (response, page)
        for href in page.links:
            target = urlsplit(urljoin(path, href))
            if target.netloc or not target.path.startswith("/") or target.path.startswith(SKIP):
                continue
            if target.path.endswith(".csv") or "format=csv" in target.query:
                continue
            queue.append(target.path + (f"?{target.query}" if target.query else ""))
    return seen


def test_every_page_has_a_strict_csp_and_refuses_framing(site):
    client, _ = site
    pages = crawl(client)
    html = {path: (r, p) for path, (r, p) in pages.items() if r.status_code == 200 and r["content-type"].startswith("text/html")}
    assert len(html) >= 10, sorted(pages)  # the crawl really went through the dashboard
    for path, (response, page) in html.items():
        csp = response.headers.get("Content-Security-Policy", "")
        script_src = re.search(r"script-src ([^;]+)", csp) or re.search(r"default-src ([^;]+)", csp)
        assert script_src and "'unsafe-inline'" not in script_src.group(1) and "'unsafe-eval'" not in csp, path
        assert "frame-ancestors 'none'" in csp and response.headers.get("X-Frame-Options") == "DENY", path
        assert response.headers.get("X-Content-Type-Options") == "nosniff", path
        # the policy would block them anyway; none are written, so nothing silently breaks either
        assert page.inline_scripts == [] and page.handlers == [], (path, page.inline_scripts, page.handlers)


def test_every_form_and_htmx_request_carries_a_csrf_token_and_is_refused_without(site, admin_user):
    client, _ = site
    targets: set[str] = set()
    for path, (_response, page) in crawl(client).items():
        for form in page.forms:
            if form["method"] == "post":
                assert form["csrf"], (path, form)
                targets.add(urlsplit(urljoin(path, form["action"] or path)).path)
        if page.htmx:
            assert page.body_csrf_header, (path, page.htmx)  # htmx sends the token as X-CSRFToken
            targets.update(urlsplit(urljoin(path, target)).path for _, target in page.htmx)
    assert len(targets) >= 5, targets
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin_user)
    for target in sorted(targets):
        assert strict.post(target, {}).status_code == 403, target


def test_the_login_form_and_the_api_check_csrf_too(site, admin_user):
    anonymous = Client(enforce_csrf_checks=True)
    login = anonymous.get("/login/")
    page = Page()
    page.feed(login.content.decode())
    assert [f["csrf"] for f in page.forms if f["method"] == "post"] == [True]
    assert anonymous.post("/login/", {"username": "root-admin", "password": "correct-horse-battery"}).status_code == 403
    session = Client(enforce_csrf_checks=True)
    session.force_login(admin_user)
    assert session.post("/api/teams/", {"name": "no-csrf"}, content_type="application/json").status_code == 403


def test_cookies_are_httponly_and_secure_when_secure_cookies_is_on(site, settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    client = Client()
    client.get("/login/")
    response = client.post("/login/", {"username": "root-admin", "password": "correct-horse-battery"})
    assert response.status_code == 302
    session = response.cookies["sessionid"]
    assert session["secure"] and session["httponly"] and session["samesite"].lower() in ("lax", "strict")
    assert client.cookies["csrftoken"]["secure"]


@pytest.mark.parametrize(("value", "secure"), [("1", True), ("", False)])
def test_secure_cookies_setting_comes_from_the_environment(value, secure):
    code = ("import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'ds2api_site.settings'); "
            "django.setup(); from django.conf import settings as s; "
            "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY)")
    env = {**os.environ, "SECURE_COOKIES": value}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == [str(secure), str(secure), "True"]
