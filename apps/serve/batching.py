"""Micro-batching for the app: concurrent requests join one model call, yet each keeps its own result or error.

Gradio's own `batch=True` runs a batch as one event, so one bad upload fails every request batched with it. Here
requests are validated one by one (Gradio preprocesses each event separately), then wait at most `wait_s` for
company; a failed batch is retried item by item so an error reaches only the request that caused it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
SIZES_KEPT = 1000  # batch sizes remembered for monitoring: the latest ones, so a long-running server stays flat


class MicroBatcher(Generic[Item, Result]):
    """`batcher(item)` blocks until `fn([..., item, ...])` has run with whatever other items arrived meanwhile."""

    def __init__(
        self,
        fn: Callable[[list[Item]], Sequence[Result]],
        lock: threading.Lock,
        max_batch: int = 16,
        wait_s: float = 0.005,
    ) -> None:
        self.fn, self.lock, self.max_batch, self.wait_s = fn, lock, max_batch, wait_s
        self._queue: queue.Queue[tuple[Item, Future]] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batch_sizes: deque[int] = deque(maxlen=SIZES_KEPT)  # one entry per model call, the latest ones

    def __call__(self, item: Item) -> Result:
        future: Future = Future()
        self._queue.put((item, future))
        self._ensure_worker()
        return future.result()

    def _ensure_worker(self) -> None:
        with self._start_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
                self._worker.start()

    def _collect(self) -> list[tuple[Item, Future]]:
        batch = [self._queue.get()]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            batch = self._collect()
            try:
                self._serve(batch)
            except BaseException as err:  # past `except Exception` (e.g. SystemExit): fail these callers, never strand
                for _, future in batch:  # them waiting on a future nobody will set, and keep serving
                    if not future.done():
                        future.set_exception(err)

    def _serve(self, batch: list[tuple[Item, Future]]) -> None:
        items = [item for item, _ in batch]
        with self.lock:
            try:
                results = list(self.fn(items))
                if len(results) != len(items):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
            except Exception as err:
                if len(batch) == 1:
                    batch[0][1].set_exception(err)
                else:
                    self._one_by_one(batch)
                return
        self.batch_sizes.append(len(items))
        for (_, future), result in zip(batch, results):
            future.set_result(result)

    def _one_by_one(self, batch: list[tuple[Item, Future]]) -> None:
        """After a failed batch: each item alone, so only the guilty one gets an error."""
        for item, future in batch:
            try:
                future.set_result(self.fn([item])[0])
                self.batch_sizes.append(1)
            except Exception as err:
                future.set_exception(err)
