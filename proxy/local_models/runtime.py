"""One runtime per local provider: lazy loading, the concurrency cap, idle unload and live statistics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from proxy.canonical import CanonicalRequest, GatewayError
from proxy.local_models.gate import FifoGate
from proxy.local_models.generation import Generation
from proxy.local_models.loader import LoadedModel, load_model
from proxy.local_models.options import LocalOptions, LocalOptionsError, extra_missing_message, missing_extra
from proxy.local_models.prompt import prepare

log = logging.getLogger(__name__)


@functools.cache
def _missing_extra() -> tuple[str, ...]:
    return tuple(missing_extra())


class LocalModelRuntime:
    def __init__(self, provider_id: int, name: str, raw_options: dict) -> None:
        self.provider_id, self.name, self.raw_options = provider_id, name, dict(raw_options)
        try:
            self.options = LocalOptions.parse(raw_options, check_paths=False)
        except LocalOptionsError as exc:
            raise GatewayError("upstream", f"the local provider {name!r} is misconfigured: {exc}") from None
        self.gate = FifoGate(self.options.max_concurrency)
        self._loaded: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self._loading = False
        self._active = 0  # requests from arrival to the end of their generation: never unload under them
        self._retired = False
        self._unload_timer: asyncio.TimerHandle | None = None
        self.requests = 0
        self.output_tokens = 0
        self.last_used: float | None = None
        self.last_generation: dict[str, Any] | None = None

    # --- loading ---

    def _ensure_loaded(self) -> LoadedModel:
        with self._load_lock:
            if self._loaded is None:
                self._loading = True
                try:
                    self._loaded = load_model(self.options)
                except Exception as exc:  # any loader failure (missing file, bad config) is reported, not raised raw
                    log.exception("could not load local model %s", self.options.reference)
                    raise GatewayError(
                        "upstream", f"the local model {self.options.reference} could not be loaded: {exc}"
                    ) from None
                finally:
                    self._loading = False
            return self._loaded

    def unload(self) -> None:
        with self._load_lock:
            if self._loaded is None or self._active:
                return
            self._loaded = None
        gc.collect()  # the model's tensors sit in reference cycles; give the memory back now
        log.info("unloaded local model %s", self.options.reference)

    def _schedule_unload(self) -> None:
        if self._unload_timer is not None:
            self._unload_timer.cancel()
            self._unload_timer = None
        if self._active or self._loaded is None:
            return
        loop = asyncio.get_running_loop()
        if self._retired:
            loop.run_in_executor(None, self.unload)
        elif self.options.idle_unload_seconds > 0:
            self._unload_timer = loop.call_later(
                self.options.idle_unload_seconds, lambda: loop.run_in_executor(None, self.unload)
            )

    def retire(self) -> None:
        """The provider's options changed: free this model as soon as nothing uses it."""
        self._retired = True
        if not self._active:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().run_in_executor(None, self.unload)

    # --- serving ---

    @contextlib.asynccontextmanager
    async def generation(self, request: CanonicalRequest) -> AsyncIterator[Generation]:
        """A running generation for this request, after waiting for a free slot; stopped on exit."""
        self._active += 1
        if self._unload_timer is not None:
            self._unload_timer.cancel()
            self._unload_timer = None
        try:
            loaded = await asyncio.to_thread(self._ensure_loaded)
            # Prepared before queueing, so a bad request (image for a text model, tools) fails at once.
            prepared = await asyncio.to_thread(prepare, loaded, request, self.options)
            await self.gate.acquire()
            try:
                generation = Generation(loaded, prepared)
                generation.start()
                try:
                    yield generation
                finally:
                    generation.cancel()  # a no-op when it already ended; stops it when the client left
                    await generation.wait()
                    self._account(generation)
            finally:
                self.gate.release()
        finally:
            self._active -= 1
            self.last_used = time.time()
            self._schedule_unload()

    def _account(self, generation: Generation) -> None:
        result = generation.result
        self.requests += 1
        self.output_tokens += result.output_tokens
        self.last_generation = {
            "prompt_tokens": generation.prepared.prompt_tokens,
            "output_tokens": result.output_tokens,
            "max_new_tokens": generation.prepared.max_new_tokens,
            "finish_reason": result.finish_reason,
            "seconds": round(result.seconds, 3),
            "first_token_s": round(result.first_token_s, 3) if result.first_token_s is not None else None,
            "tokens_per_s": round(result.tokens_per_s, 2) if result.tokens_per_s else None,
        }

    def status(self) -> dict[str, Any]:
        loaded = self._loaded
        last = self.last_generation or {}
        return {
            "provider_id": self.provider_id,
            "name": self.name,
            "model": self.options.reference,
            "loaded": loaded is not None,
            "loading": self._loading,
            "vision": loaded.vision if loaded else None,
            "supports_tools": loaded.supports_tools if loaded else None,
            "memory_bytes": loaded.memory_bytes if loaded else 0,
            "load_seconds": round(loaded.load_seconds, 3) if loaded else None,
            "tokens_per_s": last.get("tokens_per_s"),
            "running": self.gate.running,
            "waiting": self.gate.waiting,
            "max_concurrency": self.gate.limit,
            "peak_running": self.gate.peak_running,
            "peak_waiting": self.gate.peak_waiting,
            "requests": self.requests,
            "output_tokens": self.output_tokens,
            "last_used": self.last_used,
            "last_generation": self.last_generation,
        }


_runtimes: dict[int, LocalModelRuntime] = {}
_registry_lock = threading.Lock()


def runtime_for(provider: Any) -> LocalModelRuntime:
    """The runtime of a provider (a snapshot ProviderInfo); a new one when its options changed."""
    missing = _missing_extra()
    if missing:
        raise GatewayError("upstream", extra_missing_message(list(missing)))
    runtime = _runtimes.get(provider.id)
    if runtime is not None and runtime.raw_options == provider.options:
        return runtime
    with _registry_lock:
        runtime = _runtimes.get(provider.id)
        if runtime is None or runtime.raw_options != provider.options:
            old, runtime = runtime, LocalModelRuntime(provider.id, provider.name, provider.options)
            _runtimes[provider.id] = runtime
            if old is not None:
                old.retire()
    return runtime


def status(provider_id: int) -> dict[str, Any]:
    """Live state of a local provider's model in this process, for the dashboard's credential tile."""
    runtime = _runtimes.get(provider_id)
    if runtime is None:
        return {"provider_id": provider_id, "loaded": False, "loading": False, "memory_bytes": 0,
                "tokens_per_s": None, "running": 0, "waiting": 0, "requests": 0, "last_generation": None}
    return runtime.status()


def unload_all() -> None:
    """Forget every runtime and free idle models (tests; a process shutting down)."""
    with _registry_lock:
        runtimes = list(_runtimes.values())
        _runtimes.clear()
    for runtime in runtimes:
        runtime.unload()
