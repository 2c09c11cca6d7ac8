"""Choosing which target and credential serve a request."""

import itertools
from collections import defaultdict

from routing.snapshot import CredentialInfo, RouteInfo, TargetInfo


class Selector:
    """Round-robin over each target's enabled credentials, targets tried in order."""

    def __init__(self) -> None:
        self._counters: dict[tuple[int, int], itertools.count] = defaultdict(itertools.count)

    def candidates(self, route: RouteInfo) -> list[tuple[TargetInfo, CredentialInfo]]:
        ordered: list[tuple[TargetInfo, CredentialInfo]] = []
        for target in route.targets:
            credentials = target.provider.credentials
            if not credentials:
                continue
            start = next(self._counters[(route.id, target.provider.id)]) % len(credentials)
            ordered.extend((target, c) for c in credentials[start:] + credentials[:start])
        return ordered
