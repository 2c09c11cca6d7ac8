"""Every DS2API_* environment variable the code reads is in the README's settings table."""

import re
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"\bDS2API_[A-Z0-9_]*[A-Z0-9]\b")  # a trailing "_" is a prefix being built, not a name
CODE_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".conf", ".js", ".html", ".lua"}
CODE_NAMES = {"Makefile", "Dockerfile", "Procfile"}


def _code_files():
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if any(part.startswith(".") or part in ("node_modules", "__pycache__") for part in parts):
            continue  # .git, .venv, .data, bench/.litellm-venv ...
        if path.is_file() and (path.suffix in CODE_SUFFIXES or path.name in CODE_NAMES):
            yield path


def _names_in_code() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in _code_files():
        for name in NAME.findall(path.read_text(errors="replace")):
            found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def _documented() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Settings"):]
    section = section[:section.index("\n## ", 1)]
    names: set[str] = set()
    for row in (line for line in section.splitlines() if line.startswith("| `")):
        row_names = NAME.findall(row.split(" | ")[0])
        names.update(row_names)
        if "(`_FILE`)" in row:  # a secret also read from a file
            names.update(f"{name}_FILE" for name in row_names)
    return names


def test_every_setting_read_by_the_code_is_in_the_readme_table():
    missing = {name: where for name, where in _names_in_code().items() if name not in _documented()}
    assert not missing, f"add these to the README's settings table: {missing}"


def test_the_stored_responses_ttl_is_a_setting():
    assert settings.DS2API_RESPONSE_TTL_SECONDS == 30 * 24 * 3600
