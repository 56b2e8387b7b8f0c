"""The server's life around the models: requests in flight, cancellation, and an orderly shutdown.

A model call runs in a worker thread and cannot be interrupted from outside; what stops it is its own step
callback. So a cancelled request (its client's cancel) and a server told to stop (SIGTERM) both work the same way:
they raise a flag, and the next denoising step or caption token sees it and raises, which frees the model lock
within one step instead of at the end of the whole call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from triptych.core.errors import TriptychError

T = TypeVar("T")


class ServiceStopped(TriptychError, RuntimeError):
    """The request came in, or was still running, while the server shut down."""


class Cancelled(Exception):
    """The request's client cancelled it; nobody waits for this error (the client has gone)."""


class RequestGate:
    """Counts the requests in flight and closes the service: once closed, new requests fail at once with a
    message; once stopping, running ones fail at their next step (`check`)."""

    def __init__(self) -> None:
        self._active = 0
        self._changed = threading.Condition()
        self.closed = False
        self.stopping = False

    @property
    def active(self) -> int:
        return self._active

    @contextmanager
    def request(self) -> Iterator[None]:
        """Held for the whole of one request (for a stream, across its updates)."""
        with self._changed:
            if self.closed:
                raise ServiceStopped("the server is shutting down; try again when it is back")
            self._active += 1
        try:
            yield
        finally:
            with self._changed:
                self._active -= 1
                self._changed.notify_all()

    def check(self, cancelled: threading.Event | None = None) -> None:
        """Called between steps of a model call: raise if the server is stopping or the request was cancelled."""
        if self.stopping:
            raise ServiceStopped("the server shut down before this request finished; try again when it is back")
        if cancelled is not None and cancelled.is_set():
            raise Cancelled("cancelled by its client")

    def close(self, grace_s: float, stop_s: float) -> bool:
        """Refuse new requests; give those in flight `grace_s` to finish, then ask the rest to stop and wait up to
        `stop_s` more. True when every request in flight finished in the grace time."""
        with self._changed:
            self.closed = True
            if self._changed.wait_for(lambda: self._active == 0, grace_s):
                return True
            self.stopping = True
            self._changed.wait_for(lambda: self._active == 0, stop_s)
            return False


async def cancellable(work: Callable[[threading.Event], T]) -> T:
    """`work(cancelled)` in a worker thread, awaited so that Gradio can cancel it: on a client's cancel the
    awaiting task gets CancelledError, and `cancelled` tells the work (through `RequestGate.check` in its step
    callback) to stop at its next step, freeing the model lock at once rather than after the whole call."""
    cancelled = threading.Event()
    try:
        return await asyncio.to_thread(work, cancelled)
    except asyncio.CancelledError:
        cancelled.set()
        raise


__all__ = ["Cancelled", "RequestGate", "ServiceStopped", "cancellable"]
