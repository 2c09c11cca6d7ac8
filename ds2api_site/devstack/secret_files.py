"""Secrets for a local stack: when none is configured, generate one into the data folder (mode 0600)."""

import base64
import os
import secrets
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from ds2api_site.env import DATA_DIR

GENERATED: dict[str, tuple[str, Callable[[], str]]] = {
    # setting name: (file in the data folder that ds2api_site.env.env_secret reads, generator)
    "DJANGO_SECRET_KEY": ("django_secret_key", lambda: secrets.token_urlsafe(50)),
    "DS2API_ENCRYPTION_KEYS": ("encryption_keys", lambda: base64.urlsafe_b64encode(os.urandom(32)).decode()),
}


def ensure_data_dir(data_dir: Path = DATA_DIR) -> Path:
    """Create the data folder private to its owner.

    Group/other keep at most the traverse bit: as root, the embedded Postgres runs as its own system user
    and must reach its folder inside, but nobody else may list or read what is here.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = data_dir.stat().st_mode & 0o777
    if mode & 0o066:
        os.chmod(data_dir, mode & 0o711)
    return data_dir


def ensure_secrets(
    out: TextIO = sys.stdout, *, data_dir: Path = DATA_DIR, environ: Mapping[str, str] = os.environ
) -> list[str]:
    """Generate every secret that is neither in the environment (NAME / NAME_FILE) nor already generated.

    Returns the names generated. An existing file is never overwritten: it protects data already stored.
    """
    ensure_data_dir(data_dir)
    generated = []
    for name, (filename, make) in GENERATED.items():
        if environ.get(name) or environ.get(f"{name}_FILE"):
            continue
        path = data_dir / filename
        if path.exists():
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make() + "\n")
        generated.append(name)
        print(f"Generated {name} into {path} (mode 0600). Back it up: it protects your data.", file=out)
    return generated
