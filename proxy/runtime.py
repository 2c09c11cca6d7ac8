"""Per-process state of the proxy: config snapshot, selector, shared limits, upstream client, usage recorder."""

from django.conf import settings

from proxy import metrics
from proxy.admission import Admission
from proxy.auth_throttle import THROTTLE
from proxy.config_cache import ConfigCache
from proxy.upstream import UpstreamClient
from proxy.usage import UsageRecorder
from routing.health import HealthMirror
from routing.limits import Limits
from routing.selector import Selector


class Runtime:
    def __init__(self) -> None:
        self.config = ConfigCache()
        self.selector = Selector()
        self.limits = Limits()
        self.health = HealthMirror()
        self.limits.hooks.health.append(self.health)
        self.admission = Admission(self.limits)
        self.upstream = UpstreamClient()
        self.usage = UsageRecorder()
        self.max_body = settings.DS2API_MAX_BODY_BYTES
        self.connect_timeout = settings.DS2API_CONNECT_TIMEOUT
        self.read_timeout = settings.DS2API_READ_TIMEOUT

    async def shutdown(self) -> None:
        await self.limits.close()  # releases this process's leases, sends pending settlements
        await self.health.close()
        await self.usage.close()
        metrics.TALLY.flush()  # the last half second of metrics, before the process goes
        await THROTTLE.close()  # pending auth-failure audit events
        await self.upstream.close()
        await self.config.close()
