"""`python -m ds2api_site.devstack secrets|env|run|stop`."""

import sys

from ds2api_site.devstack.secret_files import ensure_secrets


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "secrets"
    if command == "secrets":
        ensure_secrets()
        return 0
    print(f"unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
