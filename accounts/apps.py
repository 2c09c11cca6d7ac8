from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in, user_login_failed

        from accounts import audit

        user_logged_in.connect(audit.on_login, dispatch_uid="ds2api-audit-login")
        user_login_failed.connect(audit.on_login_failed, dispatch_uid="ds2api-audit-login-failed")
