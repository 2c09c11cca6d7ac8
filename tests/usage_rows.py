"""Waiting for the usage row of one team's request (batched writes land a little after the reply)."""

import time


def usage_row_of(team_id: int, timeout: float = 5.0):
    """The first usage row of this team; other tests' late batches cannot be mistaken for it."""
    from proxy.models import UsageRecord

    deadline = time.monotonic() + timeout
    while True:
        row = UsageRecord.objects.filter(team_id=team_id).order_by("id").first()
        if row is not None or time.monotonic() > deadline:
            return row
        time.sleep(0.02)


def settle_usage(proxy_app, timeout: float = 5.0) -> None:
    """Wait until the gateway has written every usage row it holds, so none lands in the next test's database.

    (The row is recorded just after the reply is sent, hence a short quiet period rather than one look.)
    """
    usage = proxy_app.runtime.usage
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 5 and time.monotonic() < deadline:
        flushing = getattr(usage, "_flushing", None)
        idle = usage.depth == 0 and not (flushing is not None and flushing.locked())
        quiet = quiet + 1 if idle else 0
        time.sleep(0.02)
