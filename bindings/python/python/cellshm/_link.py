"""`LinkEnd`: calling the other side of a link, written once for peers, cells and supervised cells."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, List, Optional, Sequence, Tuple

from ._common import H, Payload, _names
from ._asyncio import FOREVER, _check_timeout, _loop_calls, _sync_handler
from ._streams import SH, MethodKind, Stream, _stream_handler, _stream_kind


class LinkEnd:
    """One end of a link that calls the other side: a :class:`Peer` (the host calling
    its cell), a :class:`Cell` (calling its host), a :class:`Supervised` cell (calling
    whichever instance of a supervised cell is current). Every call, stream and
    notification is written once here; the GIL is released while one waits."""

    _link: Any

    def _target(self) -> str:
        """What error messages call the other side."""
        raise NotImplementedError

    def call(self, method: str, payload: Payload = b"", *, timeout: Optional[float] = None) -> bytes:
        """Calls ``"Service.method"`` and returns the response. ``timeout`` in seconds:
        None is the link's default, :data:`FOREVER` none."""
        return self._link.call(method, payload, _check_timeout(timeout))  # type: ignore[no-any-return]

    async def call_async(self, method: str, payload: Payload = b"", *, timeout: Optional[float] = None) -> bytes:
        """Like :meth:`call`, awaited on the running asyncio loop; cancelling the task
        cancels the call (its handler sees it cancelled). A cell must be serving."""
        timeout = _check_timeout(timeout)
        return await _loop_calls().call(
            lambda notifier, token: self._link.call_start(method, payload, timeout, notifier, token),
            timeout,
            f"{method!r} on {self._target()}",
        )

    def open_stream(self, method: str, payload: Payload = b"", *, timeout: Optional[float] = None) -> Stream:
        """Opens a stream to the stream method ``method`` with ``payload`` as its
        opening message; ``timeout`` bounds the whole stream."""
        native = self._link.open_stream(method, payload, _check_timeout(timeout))
        return Stream(native, f"{method!r} on {self._target()}")

    def notify(self, method: str, payload: Payload = b"") -> None:
        """Sends a notification: no response."""
        self._link.notify(method, payload)

    def ping(self, timeout: float = 5.0) -> float:
        """Round-trip time of a PING, in seconds."""
        return float(self._link.ping(_check_timeout(timeout)))

    def served_methods(self, timeout: float = 5.0) -> List[Tuple[str, int, MethodKind]]:
        """The methods the other side serves, as (name, id, kind), sorted by name."""
        return [(n, i, MethodKind(k)) for n, i, k in self._link.served_methods(_check_timeout(timeout))]


def _registering(
    native: Any,
    name: str,
    view: bool,
    loop_of: Callable[[], Optional[asyncio.AbstractEventLoop]],
    allow: Optional[Sequence[str]] = None,
) -> Callable[[H], H]:
    """The decorator every ``method`` returns (a :class:`Cell`'s, a :class:`Hub`'s, a
    :class:`Supervisor`'s): registers the handler on ``native``, then, for a host method
    given ``allow``, admits only those cells (``Hub.allow``)."""

    def register(handler: H) -> H:
        native.method(name, _sync_handler(handler, loop_of), view)
        if allow is not None:
            native.allow(name, _names(allow))
        return handler

    return register


def _registering_stream(
    native: Any,
    name: str,
    kind: Optional[MethodKind],
    loop_of: Callable[[], Optional[asyncio.AbstractEventLoop]],
    allow: Optional[Sequence[str]] = None,
) -> Callable[[SH], SH]:
    """The decorator every ``stream_method`` returns, as :func:`_registering`."""
    code = _stream_kind(kind)

    def register(handler: SH) -> SH:
        native.stream_method(name, _stream_handler(handler, loop_of), code)
        if allow is not None:
            native.allow(name, _names(allow))
        return handler

    return register
