"""One generation in a worker thread, streamed back to the event loop piece by piece.

The thread runs `model.generate` with a streamer that decodes tokens into text as they come (the same
word-boundary logic as transformers' TextIteratorStreamer) and hands each piece to the event loop with
`call_soon_threadsafe`, so the loop never blocks on the model. Closing the consumer sets a flag that a
StoppingCriteria checks after every token, so an aborted request stops generating within one token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from proxy.canonical import GatewayError, ToolCall
from proxy.local_models.loader import LoadedModel
from proxy.local_models.output import OutputFilter
from proxy.local_models.prompt import Prepared

log = logging.getLogger(__name__)

_DONE = object()


@dataclass(slots=True)
class GenerationResult:
    output_tokens: int = 0
    finish_reason: str = "stop"  # stop | length | tool_calls | cancelled | error
    tool_calls: list[ToolCall] = field(default_factory=list)
    first_token_s: float | None = None  # seconds from start to the first generated token
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed after the first token (the first one pays for the prompt)."""
        if self.first_token_s is None or self.output_tokens < 2 or self.seconds <= self.first_token_s:
            return None
        return (self.output_tokens - 1) / (self.seconds - self.first_token_s)


def _streamer_class():
    from transformers import TextStreamer

    class PieceStreamer(TextStreamer):
        """TextStreamer that counts generated tokens and passes text on instead of printing it."""

        def __init__(self, tokenizer, on_token, on_text):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self._on_token, self._on_text = on_token, on_text

        def put(self, value):
            if not self.next_tokens_are_prompt:
                self._on_token(int(value.shape[-1]))
            super().put(value)

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            self._on_text(text)

    return PieceStreamer


def _halt_class():
    import torch
    from transformers import StoppingCriteria

    class Halt(StoppingCriteria):
        def __init__(self, should_stop):
            self._should_stop = should_stop

        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), self._should_stop(), dtype=torch.bool, device=input_ids.device)

    return Halt


class Generation:
    """Start with `start()`; iterate `pieces()` on the event loop; `result` is final once it ends."""

    def __init__(self, loaded: LoadedModel, prepared: Prepared, on_token=None) -> None:
        self.loaded, self.prepared = loaded, prepared
        self.result = GenerationResult()
        self.cancelled = threading.Event()
        self.filter = OutputFilter(prepared.stop, prepared.tools_offered)
        self._on_token = on_token
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue = asyncio.Queue()
        self._finished: asyncio.Future | None = None
        self._error: BaseException | None = None
        self._started = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._finished = self._loop.create_future()
        self._started = time.perf_counter()
        threading.Thread(target=self._run, name="local-generate", daemon=True).start()

    def cancel(self) -> None:
        self.cancelled.set()

    async def wait(self) -> None:
        """Until the thread has really stopped (so the concurrency cap is honest)."""
        await asyncio.shield(self._finished)

    async def pieces(self) -> AsyncIterator[list[str]]:
        """Batches of text as generated: everything that arrived since the last batch."""
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            done = batch[-1] is _DONE
            texts = [piece for piece in batch if piece is not _DONE and piece]
            if texts:
                yield texts
            if done:
                break
        if self._error is not None:
            raise GatewayError("upstream", f"the local model failed: {type(self._error).__name__}: {self._error}")

    # --- the worker thread ---

    def _post(self, item) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (shutdown); nobody is listening any more
            self.cancelled.set()

    def _token(self, count: int) -> None:
        if self.result.first_token_s is None:
            self.result.first_token_s = time.perf_counter() - self._started
        self.result.output_tokens += count
        if self._on_token is not None:
            self._on_token(count)

    def _text(self, text: str) -> None:
        shown = self.filter.feed(text)
        if shown:
            self._post(shown)

    def _run(self) -> None:
        from transformers import StoppingCriteriaList

        prepared, loaded = self.prepared, self.loaded
        streamer = _streamer_class()(loaded.tokenizer, self._token, self._text)
        halt = _halt_class()(lambda: self.cancelled.is_set() or self.filter.stopped)
        try:
            output = loaded.model.generate(
                **prepared.inputs, **prepared.sampling, max_new_tokens=prepared.max_new_tokens,
                eos_token_id=loaded.stop_token_ids or None, pad_token_id=loaded.tokenizer.pad_token_id,
                streamer=streamer, stopping_criteria=StoppingCriteriaList([halt]),
            )
            sequence = output[0, prepared.prompt_tokens:].tolist()
            self.result.output_tokens = len(sequence)  # exact, whatever the streamer saw
            tail, self.result.tool_calls = self.filter.finish()
            if tail:
                self._post(tail)
            self.result.finish_reason = self._finish_reason(sequence)
        except Exception as exc:  # reported to the client as a 502 / stream error; the thread must not die silently
            log.exception("local generation failed")
            self._error, self.result.finish_reason = exc, "error"
        finally:
            self.result.seconds = time.perf_counter() - self._started
            self._post(_DONE)
            try:
                self._loop.call_soon_threadsafe(self._settle)
            except RuntimeError:
                pass

    def _settle(self) -> None:
        if not self._finished.done():
            self._finished.set_result(None)

    def _finish_reason(self, sequence: list[int]) -> str:
        if self.cancelled.is_set():
            return "cancelled"
        if self.result.tool_calls:
            return "tool_calls"
        if self.filter.stopped or (sequence and sequence[-1] in self.loaded.stop_token_ids):
            return "stop"
        return "length" if len(sequence) >= self.prepared.max_new_tokens else "stop"
