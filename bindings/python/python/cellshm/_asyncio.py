"""asyncio support: calls started on a loop and completed through one eventfd per loop; timeouts; handlers whose result is a coroutine."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import math
import weakref
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

from . import _native
from .errors import CellshmError, DeadlineExceeded
from ._common import Handler


class _LoopCalls:
    """Per event loop: one eventfd watched with ``loop.add_reader``. The library pushes a
    started call's token there when it completes; the loop then resolves its future. No
    thread polls: the callback runs only when the fd is readable."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.notifier = _native.AsyncNotifier()
        self.tokens = itertools.count(1)
        self.waiting: Dict[int, Tuple["asyncio.Future[Any]", Any]] = {}
        loop.add_reader(self.notifier.fileno(), self._on_readable)
        weakref.finalize(self, _remove_reader, weakref.ref(loop), self.notifier.fileno())

    def _on_readable(self) -> None:
        for token in self.notifier.drain():
            entry = self.waiting.pop(token, None)
            if entry is None:
                continue
            future, pending = entry
            if future.done():
                continue
            if pending is None:  # a stop notification (Cell.serve_async)
                future.set_result(None)
                continue
            try:
                future.set_result(pending.take())
            except CellshmError as error:
                future.set_exception(error)

    def register(self, start: Callable[[Any, int], Any]) -> Tuple["asyncio.Future[Any]", Any, int]:
        token = next(self.tokens)
        future: "asyncio.Future[Any]" = self.loop.create_future()
        self.waiting[token] = (future, None)
        try:
            pending = start(self.notifier, token)
        except BaseException:
            self.waiting.pop(token, None)
            raise
        if token in self.waiting:
            self.waiting[token] = (future, pending)
        return future, pending, token

    async def call(self, start: Callable[[Any, int], Any], timeout: Optional[float], what: str) -> bytes:
        future, pending, token = self.register(start)
        timer = None
        if timeout is not None:
            timer = self.loop.call_later(timeout, self._expire, token, what, timeout)
        try:
            answer: bytes = await future
            return answer
        except asyncio.CancelledError:
            self.waiting.pop(token, None)
            pending.cancel()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def poll(self, attempt: Callable[[Any, int], Tuple[bool, Any]]) -> Any:
        """Calls ``attempt(notifier, token)`` until it says it is done: ``(True, value)``.
        Until then it registered a waker that pushes ``token`` once what it waits for
        may have changed (an item, credit, room), and this awaits that: a stream's wait
        on the loop, with no thread."""
        while True:
            token = next(self.tokens)
            future: "asyncio.Future[Any]" = self.loop.create_future()
            self.waiting[token] = (future, None)
            try:
                done, value = attempt(self.notifier, token)
                if done:
                    return value
                await future
            finally:
                self.waiting.pop(token, None)

    def _expire(self, token: int, what: str, timeout: float) -> None:
        entry = self.waiting.get(token)
        if entry is None:
            return
        future, pending = entry
        # If cancel() loses the race, the completion is already queued on the fd.
        if pending.cancel() and not future.done():
            self.waiting.pop(token, None)
            future.set_exception(DeadlineExceeded(f"{what}: no response within {timeout} s"))


def _remove_reader(loop_ref: "weakref.ref[asyncio.AbstractEventLoop]", fd: int) -> None:
    loop = loop_ref()
    if loop is not None and not loop.is_closed():
        try:
            loop.remove_reader(fd)
        except Exception:  # the loop may be shutting down
            pass


_calls_by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopCalls]" = weakref.WeakKeyDictionary()


def _loop_calls() -> _LoopCalls:
    loop = asyncio.get_running_loop()
    calls = _calls_by_loop.get(loop)
    if calls is None:
        calls = _calls_by_loop[loop] = _LoopCalls(loop)
    return calls


#: A timeout that means "no limit": ``timeout=cellshm.FOREVER`` waits until the call is
#: answered, cancelled or the peer dies. Waiting forever is never the default.
FOREVER: float = math.inf

#: The time limit of a call made with ``timeout=None`` unless the hub, the supervisor or
#: the cell says otherwise (streams have none).
DEFAULT_CALL_TIMEOUT: float = 30.0


def _check_timeout(timeout: Optional[float]) -> Optional[float]:
    """``None`` (the peer's default timeout), a non-negative number of seconds, or
    :data:`FOREVER`."""
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if timeout < 0 or timeout != timeout:
        raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout}")
    return float(timeout)


def _sync_handler(handler: Handler, loop_of: Callable[[], Optional[asyncio.AbstractEventLoop]]) -> Callable[[Any], Any]:
    """Runs ``handler`` on a cellshm thread; a coroutine result runs on the cell's event
    loop (set by :meth:`Cell.serve_async`) while this thread waits without the GIL."""
    if not callable(handler):
        raise TypeError(f"handler must be callable, not {type(handler).__name__}")

    def run(request: Any) -> Any:
        return _on_loop(handler(request), loop_of)

    return run


def _on_loop(result: Any, loop_of: Callable[[], Optional[asyncio.AbstractEventLoop]]) -> Any:
    """A handler's result; one that is awaitable (an ``async def`` handler's) is awaited
    on the cell's loop while this thread waits."""
    if not inspect.isawaitable(result):
        return result
    loop = loop_of()
    if loop is None:
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise RuntimeError("async handlers run on the loop of Cell.serve_async(); this cell is not serving with it")
    return asyncio.run_coroutine_threadsafe(_awaited(result), loop).result()


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
