"""Local development stack for `make run` / `make test`: secrets, services, processes.

`python -m ds2api_site.devstack secrets` generates the Django secret key and the provider-secret key ring
into .data/ (mode 0600) when none is configured, and says so.
"""

import base64
import os
import secrets
import sys

from ds2api_site.env import DATA_DIR

GENERATED = {
    # setting name: (file in .data, generator)
    "DJANGO_SECRET_KEY": ("django_secret_key", lambda: secrets.token_urlsafe(50)),
    "DS2API_ENCRYPTION_KEYS": ("encryption_keys", lambda: base64.urlsafe_b64encode(os.urandom(32)).decode()),
}


def ensure_secrets(out=sys.stdout) -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(DATA_DIR, 0o700)
    for name, (filename, make) in GENERATED.items():
        if os.environ.get(name) or os.environ.get(f"{name}_FILE"):
            continue
        path = DATA_DIR / filename
        if path.exists():
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make() + "\n")
        print(f"Generated {name} into {path} (mode 0600). Back it up: it protects your data.", file=out)


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "secrets"
    if command == "secrets":
        ensure_secrets()
        return 0
    print(f"unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
