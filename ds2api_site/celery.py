"""The Celery app (worker and beat), configured from Django settings (CELERY_*)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ds2api_site.settings")

app = Celery("ds2api")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
