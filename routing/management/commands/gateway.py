"""`python manage.py gateway <action>`: config import/export, key rotation, first admin, tokens."""

import os
import secrets
import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts import services as account_services
from accounts.models import Team
from routing import config_file, services
from routing.keyring import generate_key, get_keyring


class Command(BaseCommand):
    help = "ds2api gateway administration"

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        imp = sub.add_parser("import", help="apply a YAML config file (idempotent)")
        imp.add_argument("file")
        imp.add_argument("--prune", action="store_true", help="delete what the file no longer names")
        exp = sub.add_parser("export", help="write the current config as YAML (no secrets)")
        exp.add_argument("--output", "-o", default="-")
        sub.add_parser("rotate-keys", help="re-encrypt every credential under the newest key")
        sub.add_parser("generate-key", help="print a new encryption key for DS2API_ENCRYPTION_KEYS")
        admin = sub.add_parser("create-admin", help="create the first admin if none exists")
        admin.add_argument("--username", default="admin")
        tok = sub.add_parser("issue-token", help="issue a gateway token for a team (printed once)")
        tok.add_argument("team")
        tok.add_argument("name")
        tok.add_argument("--admin", action="store_true")

    def handle(self, *args, action, **options):
        getattr(self, "do_" + action.replace("-", "_"))(**options)

    def do_import(self, file, prune, **_):
        try:
            report = config_file.import_config(config_file.load_file(file), source=file, prune=prune)
        except config_file.ConfigError as exc:
            raise CommandError(str(exc)) from exc
        summary = f"created {len(report.created)}, updated {len(report.updated)}, deleted {len(report.deleted)}"
        self.stdout.write(f"Imported {file}: {summary}")
        for line in report.deleted:
            self.stdout.write(f"  deleted {line}")
        for name, plaintext in report.issued_tokens:
            self.stdout.write(f"  new token {name}: {plaintext}  (shown once; store it now)")

    def do_export(self, output, **_):
        text = config_file.dump_yaml(config_file.export_config())
        if output == "-":
            self.stdout.write(text, ending="")
        else:
            with open(output, "w") as handle:
                handle.write(text)
            self.stdout.write(f"Wrote {output}")

    def do_rotate_keys(self, **_):
        ring = get_keyring()
        changed = services.rotate_keys(actor_label="cli", progress=lambda done, total: self.stdout.write(f"  {done}/{total}"))
        self.stdout.write(f"Re-encrypted {changed} credential(s) under key {ring.current_id}")

    def do_generate_key(self, **_):
        self.stdout.write(generate_key())

    def do_create_admin(self, username, **_):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("An admin already exists; nothing to do.")
            return
        password = os.environ.get("DS2API_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        shown = "(from DS2API_ADMIN_PASSWORD)" if os.environ.get("DS2API_ADMIN_PASSWORD") else password
        self.stdout.write(f"Created admin user {username!r} with password: {shown}")

    def do_issue_token(self, team, name, admin, **_):
        team_obj = Team.objects.filter(name=team).first() or account_services.create_team(team, actor_label="cli")
        issued = account_services.issue_token(team_obj, name, is_admin=admin, actor_label="cli")
        sys.stdout.write(issued.plaintext + "\n")
