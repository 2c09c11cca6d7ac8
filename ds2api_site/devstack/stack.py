"""`make run`: secrets, services, migrations, the first admin, then web + worker + beat under one supervisor."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ds2api_site.devstack.secret_files import ensure_secrets
from ds2api_site.devstack.services import Services, ensure_services
from ds2api_site.devstack.supervisor import ChildSpec, Supervisor
from ds2api_site.env import BASE_DIR, DATA_DIR

_CREATED_ADMIN = re.compile(r"Created admin user '(?P<user>[^']+)' with password: (?P<password>\S+)")

# A server bound to every interface is reached, and announced, through loopback.
_WILDCARD_TO_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Endpoint:
        return cls(environ.get("HOST") or "127.0.0.1", int(environ.get("PORT") or 8000))

    @property
    def url(self) -> str:
        host = _WILDCARD_TO_LOOPBACK.get(self.host, self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"


def python_cmd() -> str:
    """How to spell this interpreter in a command the user copies: relative when it is the repo's .venv."""
    try:
        return str(Path(sys.executable).relative_to(BASE_DIR))
    except ValueError:
        return sys.executable


def child_specs(endpoint: Endpoint, environ: Mapping[str, str], data_dir: Path) -> list[ChildSpec]:
    py = sys.executable
    workers = str(int(environ.get("DS2API_WORKERS") or 1))
    return [
        # uvicorn serves websockets as well, so the whole ASGI router (proxy, Django, Channels) runs here.
        ChildSpec("web", [
            py, "-m", "uvicorn", "ds2api_site.asgi:application", "--host", endpoint.host,
            "--port", str(endpoint.port), "--lifespan", "on", "--workers", workers,
            "--timeout-graceful-shutdown", "10",
            # uvicorn's access log prints query strings, where Gemini clients put their token (?key=); proxied
            # requests are logged by ds2api's own request log instead (DS2API_REQUEST_LOG), without them.
            "--no-access-log",
        ]),
        ChildSpec("worker", [py, "-m", "celery", "-A", "ds2api_site", "worker", "-l", "info", "--concurrency", "2"]),
        ChildSpec("beat", [py, "-m", "celery", "-A", "ds2api_site", "beat", "-l", "info",
                           "-s", str(data_dir / "celerybeat-schedule")]),
    ]


def child_env(services: Services, environ: Mapping[str, str]) -> dict[str, str]:
    env = dict(environ)
    env.update(services.env())
    env.setdefault("DJANGO_SETTINGS_MODULE", "ds2api_site.settings")
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the prefixed output as they are written
    return env


def manage(args: list[str], env: Mapping[str, str], *, capture: bool = False) -> str:
    result = subprocess.run(  # noqa: S603 - our own interpreter and fixed arguments
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=dict(env), check=True,
        stdout=subprocess.PIPE if capture else None, text=True,
    )
    return result.stdout or ""


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own http:// URL
            return response.status == 200
    except OSError:
        return False


@dataclass
class AdminLogin:
    username: str = ""
    password: str = ""  # only when generated in this run
    from_env: bool = False

    @classmethod
    def from_output(cls, text: str) -> AdminLogin:
        match = _CREATED_ADMIN.search(text)
        if match is None:
            return cls()
        if match["password"].startswith("(from"):
            return cls(match["user"], from_env=True)
        return cls(match["user"], match["password"])

    def describe(self) -> str:
        if self.password:
            return f"{self.username} / {self.password}   (generated now and shown only this once: store it)"
        if self.from_env:
            return f"{self.username} / the password in DS2API_ADMIN_PASSWORD"
        return f"the existing admin account (new password: {python_cmd()} manage.py changepassword <username>)"


def banner(endpoint: Endpoint, admin: AdminLogin, services: Services, environ: Mapping[str, str]) -> str:
    py = python_cmd()
    lines = [
        "",
        "ds2api is running. Ctrl-C stops everything.",
        f"  Dashboard         {endpoint.url}/",
        f"  OpenAI base URL   {endpoint.url}/v1",
        f"  Anthropic base    {endpoint.url}",
        f"  Admin login       {admin.describe()}",
        f"  Gateway token     {py} manage.py gateway issue-token <team> <name>",
    ]
    if not (environ.get("DATABASE_URL") and environ.get("REDIS_URL")):
        # Another shell lacks the URLs this stack resolved (embedded servers, or a non-default login).
        lines.append(f'  In another shell  eval "$({py} -m ds2api_site.devstack env)"  before manage.py commands')
    return "\n".join(lines) + "\n"


def run(environ: Mapping[str, str] = os.environ, out: TextIO = sys.stdout, data_dir: Path = DATA_DIR) -> int:
    ensure_secrets(out, data_dir=data_dir, environ=environ)
    services = ensure_services(environ, data_dir=data_dir, out=out)
    env = child_env(services, environ)
    endpoint = Endpoint.from_env(environ)
    admin = AdminLogin()
    shown = False
    try:
        print("Applying migrations...", file=out, flush=True)
        manage(["migrate", "--noinput"], env)
        # Optional (whitenoise also serves from the finders), but it creates STATIC_ROOT, whose absence
        # whitenoise warns about on every start.
        manage(["collectstatic", "--noinput", "-v", "0"], env)
        admin = AdminLogin.from_output(manage(["gateway", "create-admin"], env, capture=True))
        supervisor = Supervisor(child_specs(endpoint, environ, data_dir), env=env, cwd=BASE_DIR, out=out)
        supervisor.install_signal_handlers()
        supervisor.start()

        def show_banner() -> None:
            nonlocal shown
            out.write(banner(endpoint, admin, services, environ))
            out.flush()
            shown = True

        return supervisor.run(ready=lambda: http_ok(f"{endpoint.url}/healthz"), on_ready=show_banner)
    except subprocess.CalledProcessError as exc:
        print(f"`{' '.join(shlex.quote(a) for a in exc.cmd[1:])}` failed with code {exc.returncode}", file=out)
        return exc.returncode or 1
    finally:
        if admin.password and not shown:
            # The stack never came up, but the admin exists now: this is the only chance to see the password.
            print(f"Admin login: {admin.describe()}", file=out)
        services.stop_started(out)
