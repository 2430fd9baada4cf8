"""Streams, both ends: the caller's `Stream` and a handler's `StreamCall`."""

from __future__ import annotations

import asyncio
import enum
from typing import Any, Awaitable, Callable, Iterator, Optional, TypeVar, Union

from .errors import Cancelled
from ._common import CallerInfo, Payload
from ._asyncio import _check_timeout, _loop_calls, _on_loop


class MethodKind(enum.IntEnum):
    """How a method is called, numbered as ``cellshm.Introspect.methods`` reports it."""

    UNARY = 0
    #: A stream method that did not declare which way its items flow.
    STREAM = 1
    SERVER_STREAMING = 2
    CLIENT_STREAMING = 3
    BIDI = 4


def _stream_kind(kind: Optional[MethodKind]) -> int:
    if kind is None:
        return int(MethodKind.STREAM)
    if kind == MethodKind.UNARY or kind not in tuple(MethodKind):
        raise ValueError(f"a stream method's kind is a streaming MethodKind, not {kind!r}")
    return int(kind)


class Stream:
    """The caller's end of a stream, from :meth:`Peer.open_stream` or
    :meth:`Cell.open_stream`.

    Iterate it (``for item in stream`` or ``async for item in stream``) to read the
    handler's items as ``bytes``; :meth:`send` and :meth:`finish` for client streaming.
    Every wait releases the GIL. Closing the stream (or leaving its ``with`` block)
    before it ended cancels it: the handler sees ``call.cancelled``.
    """

    def __init__(self, native: Any, what: str) -> None:
        self._native = native
        self._what = what

    def recv(self) -> Optional[bytes]:
        """The next item, or None once the handler finished; raises its error."""
        return self._native.recv()  # type: ignore[no-any-return]

    def send(self, item: Payload) -> None:
        """Sends one item to the handler; waits while its window is full."""
        self._native.send(item)

    def close_send(self) -> None:
        """Tells the handler no more items follow."""
        self._native.close_send()

    def finish(self) -> bytes:
        """Closes sending and returns the handler's response (client streaming)."""
        return self._native.finish()  # type: ignore[no-any-return]

    def cancel(self) -> None:
        """Gives up the stream; the handler sees it cancelled."""
        self._native.cancel()

    close = cancel

    async def recv_async(self) -> Optional[bytes]:
        """:meth:`recv` on the running asyncio loop: the thread that receives the item
        wakes the loop, no thread waits."""
        native = self._native
        item: Optional[bytes] = await _loop_calls().poll(native.poll_recv)
        return item

    async def send_async(self, item: Payload) -> None:
        """:meth:`send` on the running asyncio loop (waits for credit without a thread)."""
        native = self._native
        await _loop_calls().poll(lambda notifier, token: (native.poll_send(item, notifier, token), None))

    async def close_send_async(self) -> None:
        """:meth:`close_send` on the running asyncio loop."""
        native = self._native
        await _loop_calls().poll(lambda notifier, token: (native.poll_close_send(notifier, token), None))

    async def finish_async(self) -> bytes:
        """:meth:`finish` on the running asyncio loop."""
        await self.close_send_async()
        response: bytes = await _loop_calls().poll(self._native.poll_finish)
        return response

    @property
    def closed(self) -> bool:
        return bool(self._native.closed)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        item = self.recv()
        if item is None:
            raise StopIteration
        return item

    def __aiter__(self) -> "Stream":
        return self

    async def __anext__(self) -> bytes:
        try:
            item = await self.recv_async()
        except asyncio.CancelledError:
            self.cancel()
            raise
        if item is None:
            raise StopAsyncIteration
        return item

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def __repr__(self) -> str:
        return f"<cellshm.Stream {self._what}{' closed' if self.closed else ''}>"


class StreamCall:
    """The handler's end of a stream, passed to a :meth:`Cell.stream_method` handler.

    ``request`` is the opening message; :meth:`send` items to the caller (waits while
    the caller's window is full, raises :class:`Cancelled` once it gave up); iterate it
    to read the caller's items. The handler's return value is the final response.
    """

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def caller(self) -> Optional[CallerInfo]:
        """Who opened the stream (in a host's handler); None in a cell's."""
        caller = self._native.caller
        return None if caller is None else CallerInfo(*caller)

    @property
    def deadline_ns(self) -> int:
        """The caller's deadline (``time.monotonic_ns()`` clock), 0 if it has none: hand
        what is left on to the calls the handler makes."""
        return int(self._native.deadline_ns)

    @property
    def request(self) -> bytes:
        return self._native.request  # type: ignore[no-any-return]

    def send(self, item: Payload) -> None:
        self._native.send(item)

    def recv(self) -> Optional[bytes]:
        """The caller's next item, or None once it closed its sending side."""
        return self._native.recv()  # type: ignore[no-any-return]

    @property
    def cancelled(self) -> bool:
        """True once the caller cancelled, its deadline passed, or it went away."""
        return bool(self._native.cancelled)

    def wait_cancelled(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for cancellation (GIL released)."""
        return bool(self._native.wait_cancelled(_check_timeout(timeout)))

    async def send_async(self, item: Payload) -> None:
        """:meth:`send` in an ``async def`` handler: waits for the caller's credit on the
        cell's loop, without a thread."""
        native = self._native
        await _loop_calls().poll(lambda notifier, token: (native.poll_send(item, notifier, token), None))

    async def recv_async(self) -> Optional[bytes]:
        """:meth:`recv` in an ``async def`` handler."""
        native = self._native
        item: Optional[bytes] = await _loop_calls().poll(native.poll_recv)
        return item

    async def wait_cancelled_async(self) -> None:
        """Returns once the stream is cancelled (by the caller, its deadline, or the link)."""
        native = self._native
        await _loop_calls().poll(lambda notifier, token: (native.poll_cancelled(notifier, token), None))

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self.recv()
            if item is None:
                return
            yield item

    def __aiter__(self) -> "StreamCall":
        return self

    async def __anext__(self) -> bytes:
        item = await self.recv_async()
        if item is None:
            raise StopAsyncIteration
        return item


#: A stream handler: a function of the :class:`StreamCall`, or an ``async def`` one (run
#: on the loop of :meth:`Cell.serve_async`), returning the final response or None.
StreamHandler = Callable[[StreamCall], Union[Optional[Payload], Awaitable[Optional[Payload]]]]
SH = TypeVar("SH", bound=StreamHandler)


def _stream_handler(
    handler: StreamHandler, loop_of: Callable[[], Optional[asyncio.AbstractEventLoop]]
) -> Callable[[Any], Optional[Payload]]:
    def run(native: Any) -> Optional[Payload]:
        answer: Optional[Payload] = _on_loop(handler(StreamCall(native)), loop_of)
        return answer

    return run
