"""The dashboard in a real browser (Playwright driving Debian's chromium) against the full gateway.

One admin's first session, end to end: sign in, add a provider and a key, create a route and a team
token, send a request through the gateway with the `openai` SDK, watch the overview counter and the
credential tile change without a reload, open that credential's usage chart and see the request counted,
and stream an answer in the playground. Screenshots of every page land in tests/artifacts/ (git-ignored).
"""

import re
import shutil
from pathlib import Path

import openai
import pytest
from django.contrib.auth import get_user_model

pytest.importorskip("playwright")
from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
SECRET = "sk-browser-test-Qm7Lx2Pv9Rt4Wz6Ka1b2"
PASSWORD = "correct-horse-battery-staple"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make test installs it)")


# Playwright's sync API keeps an asyncio event loop installed on the main thread while it runs. The plugin
# starts it once per session, which would leave every later test in the run (Django ORM calls, async
# consumer tests) looking like it runs inside an event loop. These overrides give the same fixtures module
# scope: one Playwright, started for this module and stopped when it ends (the plugin's own session
# instance is never started, so there is never a second one).


@pytest.fixture(scope="module")
def browser_type_launch_args(browser_type_launch_args):
    # Debian's chromium instead of a downloaded browser (never run `playwright install` here).
    return {**browser_type_launch_args, "executable_path": CHROMIUM}


@pytest.fixture(scope="module")
def playwright(_pw_api_request_contexts):
    instance = sync_playwright().start()
    if _pw_api_request_contexts:
        _pw_api_request_contexts.instrument(instance)
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def browser_context_args():
    return {"viewport": {"width": 1280, "height": 800}}


@pytest.fixture(scope="module")
def browser_type(playwright, browser_name):
    return getattr(playwright, browser_name)


@pytest.fixture(scope="module")
def browser(playwright, browser_type, browser_type_launch_args):
    instance = browser_type.launch(**browser_type_launch_args)
    yield instance
    instance.close()


@pytest.fixture(autouse=True)
def _sync_orm_beside_playwright(monkeypatch):
    # Playwright's sync API keeps an asyncio loop on this thread; the test's own ORM calls are still
    # plain synchronous code, so Django's "async context" guard does not apply to them.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def console_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    html = page.content()
    assert SECRET not in html and SECRET[:-4] not in html, name  # only the masked last four, ever


def test_an_admin_runs_the_gateway_from_the_browser(gateway, fake, page: Page, console_errors):
    # (gateway first: the test database must exist before Playwright starts its event loop on this thread)
    get_user_model().objects.create_superuser("ops", "", PASSWORD)
    base = gateway.url
    page.set_default_timeout(10_000)

    # Sign in.
    page.goto(base + "/login/")
    shoot(page, "01-login")
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Overview")

    # Add a provider, then paste a key.
    page.goto(base + "/providers/")
    page.fill("#id_name", "fake-openai")
    page.select_option("#id_kind", "openai")
    page.fill("#id_base_url", fake.url + "/v1")
    page.click("#provider-form button[type=submit]")
    expect(page.locator("h1")).to_contain_text("fake-openai")
    page.fill("#id_keys", f"primary {SECRET}")
    page.click("#bulk-keys-form button[type=submit]")
    expect(page.locator("[data-masked]")).to_have_text("…" + SECRET[-4:])
    shoot(page, "02-provider")

    # "Test" calls the provider and shows the result inline.
    page.click("tr[id^=credential-] button:has-text('Test')")
    expect(page.locator(".probe-result .ok")).to_contain_text("ok")
    credential_id = int(page.locator("tr[id^=credential-]").get_attribute("id").split("-")[1])

    # Create a route.
    page.goto(base + "/routes/new/")
    page.fill("#id_model", "gpt-test")
    page.select_option("#id_targets-0-provider", label="fake-openai")
    page.click("#route-form button[type=submit]")
    expect(page.locator("table")).to_contain_text("gpt-test")
    page.fill("#preview-model", "gpt-test")
    page.click("text=Preview")
    expect(page.locator(".route-preview")).to_have_attribute("data-chosen", "fake-openai/primary")
    shoot(page, "03-routes")

    # A team and a token for it, shown once.
    page.goto(base + "/teams/")
    page.fill("#id_name", "qa")
    page.click("form button:has-text('Create team')")
    expect(page.locator("h1")).to_have_text("qa")
    shoot(page, "04-team")
    page.click("a:has-text('Tokens')")
    page.fill("#id_name", "ci")
    page.click("#token-form button[type=submit]")
    token = page.locator("#new-secret").inner_text().strip()
    assert token.startswith("ds2-")
    page.click("button[data-copy]")
    shoot(page, "05-token-once")
    page.goto(page.url)
    assert token not in page.content() and token[:12] in page.content()  # shown once; then only its prefix

    # The overview, live: a request through the gateway updates it without a reload.
    page.goto(base + "/")
    expect(page.locator("#live-status")).to_have_text("live")
    tile = page.locator(f'[data-credential="{credential_id}"]')
    expect(tile.locator('[data-field="requests_1h"]')).to_have_text("0")
    expect(page.locator("#requests-1h")).to_have_text("0")
    page.evaluate("window.__notReloaded = true")
    sdk = openai.OpenAI(base_url=base + "/v1", api_key=token, max_retries=0)
    reply = sdk.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hello browser"}])
    assert reply.choices[0].message.content == "echo: hello browser"
    expect(page.locator("#requests-1h")).to_have_text("1")
    expect(tile.locator('[data-field="requests_1h"]')).to_have_text("1")
    assert page.evaluate("window.__notReloaded") is True
    shoot(page, "06-overview-live")

    # A health change reaches the tile too (the provider rejects the key on the next probe).
    fake.state.configure(invalid_keys=[SECRET])
    page.request.post(f"{base}/credentials/{credential_id}/test/",
                      headers={"X-CSRFToken": _csrf(page), "HX-Request": "true", "Referer": base + "/"})
    expect(tile.locator('[data-field="status"]')).to_have_text("invalid")
    expect(tile).to_have_class(re.compile(r"\binvalid\b"))
    assert page.evaluate("window.__notReloaded") is True
    shoot(page, "07-overview-invalid")
    fake.state.configure(invalid_keys=[])  # the key works again: a re-test clears the verdict
    page.request.post(f"{base}/credentials/{credential_id}/test/",
                      headers={"X-CSRFToken": _csrf(page), "HX-Request": "true", "Referer": base + "/"})
    expect(tile.locator('[data-field="status"]')).to_have_text("ok")

    # The credential's usage chart counts the request.
    tile.locator(".title a").click()
    expect(page.locator("[data-total=requests]")).to_have_text("1")
    expect(page.locator("canvas[data-chart=requests]")).to_be_visible()
    page.locator("#chart-requests summary").click()
    expect(page.locator("#chart-requests table")).to_contain_text("1")
    shoot(page, "08-usage-credential")

    # The request log lists it, with a detail page.
    page.goto(base + "/requests/")
    expect(page.locator("#request-log tbody tr")).to_have_count(1)
    page.locator("#request-log tbody a").first.click()
    expect(page.locator("h1")).to_contain_text("Request")
    shoot(page, "09-request-detail")

    # The playground streams an answer through the gateway, in two client protocols.
    page.goto(base + "/playground/")
    for protocol in ("openai_chat", "anthropic"):
        if not page.locator(f"#pg-protocol option[value={protocol}]").count():
            continue
        page.select_option("#pg-protocol", protocol)
        page.fill("#pg-model", "gpt-test")
        page.fill("#pg-prompt", f"stream via {protocol}")
        page.click("#pg-send")
        expect(page.locator("#pg-output")).to_have_text(f"echo: stream via {protocol}")
        expect(page.locator("#pg-status")).to_contain_text("done")
    shoot(page, "10-playground")

    for path, name in (("/audit/", "11-audit"), ("/usage/", "12-usage"), ("/teams/", "13-teams")):
        page.goto(base + path)
        shoot(page, name)
    page.goto(base + "/api/docs/")  # the vendored Swagger UI works under the same policy
    expect(page.locator(".swagger-ui .info .title")).to_be_visible()
    shoot(page, "14-api-docs")

    blocked = [e for e in console_errors if "Content Security Policy" in e or "Refused" in e]
    assert blocked == [] and not [e for e in console_errors if "Uncaught" in e], console_errors


def _csrf(page: Page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
