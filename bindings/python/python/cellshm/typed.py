"""Typed calls and streams over protobuf messages: what the ``*_cellshm.py`` modules
that ``cellshm-codegen --lang python`` writes are made of.

A service method ``pkg.Svc/Method`` is the cellshm method ``"pkg.Svc.Method"``; its
request and response are protobuf messages (the ``protobuf`` package's, from the
``*_pb2`` modules) serialized into the call's payload. Unary methods are calls, the
three streaming kinds are streams: a server-streaming call opens the stream with its
request, client-streaming and bidi calls open it empty and send the requests as items.
A message that does not parse raises :class:`cellshm.Internal` on the side that got it.
"""

from __future__ import annotations

import inspect
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Generic,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

import cellshm

if TYPE_CHECKING:
    from google.protobuf.message import Message

In = TypeVar("In", bound="Optional[Message]")
Out = TypeVar("Out", bound="Optional[Message]")
Req = TypeVar("Req", bound="Message")
Resp = TypeVar("Resp", bound="Message")


T = TypeVar("T")

#: What a servicer method returns: its value, or (an ``async def`` method) an awaitable
#: of it, awaited on the loop of :meth:`cellshm.Cell.serve_async`.
MaybeAwaitable = Union[T, Awaitable[T]]


class MethodInfo(NamedTuple):
    """One method of a service: its cellshm name, id and kind."""

    name: str
    id: int
    kind: cellshm.MethodKind


#: What a generated client calls through: any :class:`cellshm.LinkEnd` (a host's
#: :class:`cellshm.Peer`, a :class:`cellshm.Cell` calling its host, a
#: :class:`cellshm.Supervised` cell).
Caller = cellshm.LinkEnd


def _decode(message_type: Type[Resp], data: bytes, method: str) -> Resp:
    try:
        return message_type.FromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError, and whatever a bad message raises
        raise cellshm.Internal(f"{method}: could not decode {message_type.DESCRIPTOR.full_name}: {e}") from None


def unary(caller: Caller, method: str, request: Message, response_type: Type[Resp], timeout: Optional[float]) -> Resp:
    """Calls ``method`` with ``request``; the response parsed as ``response_type``."""
    return _decode(response_type, caller.call(method, request.SerializeToString(), timeout=timeout), method)


async def unary_async(
    caller: Caller, method: str, request: Message, response_type: Type[Resp], timeout: Optional[float]
) -> Resp:
    """:func:`unary` from asyncio."""
    data = await caller.call_async(method, request.SerializeToString(), timeout=timeout)
    return _decode(response_type, data, method)


class ServerStreaming(Generic[Resp]):
    """The responses of a server-streaming call: iterate it, or ``async for``. Leaving
    it before the end (``cancel``, or its ``with`` block) cancels the call."""

    def __init__(self, stream: cellshm.Stream, response_type: Type[Resp], method: str) -> None:
        self._stream = stream
        self._type = response_type
        self._method = method

    def recv(self) -> Optional[Resp]:
        """The next response, or None once the handler finished; raises its error."""
        data = self._stream.recv()
        return None if data is None else _decode(self._type, data, self._method)

    def cancel(self) -> None:
        """Gives up the call: the handler sees it cancelled."""
        self._stream.cancel()

    def __iter__(self) -> Iterator[Resp]:
        return self

    def __next__(self) -> Resp:
        item = self.recv()
        if item is None:
            raise StopIteration
        return item

    def __aiter__(self) -> AsyncIterator[Resp]:
        return self

    async def __anext__(self) -> Resp:
        data = await self._stream.__anext__()
        return _decode(self._type, data, self._method)

    async def recv_async(self) -> Optional[Resp]:
        """:meth:`recv` on the running asyncio loop (no thread waits)."""
        data = await self._stream.recv_async()
        return None if data is None else _decode(self._type, data, self._method)

    def __enter__(self) -> "ServerStreaming[Resp]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class ClientStreaming(Generic[Req, Resp]):
    """A client-streaming call: :meth:`send` the requests, then :meth:`finish`."""

    def __init__(self, stream: cellshm.Stream, response_type: Type[Resp], method: str) -> None:
        self._stream = stream
        self._type = response_type
        self._method = method

    def send(self, request: Req) -> None:
        """Sends one request; waits while the handler's window is full."""
        self._stream.send(request.SerializeToString())

    async def send_async(self, request: Req) -> None:
        """:meth:`send` on the running asyncio loop."""
        await self._stream.send_async(request.SerializeToString())

    async def finish_async(self) -> Resp:
        """:meth:`finish` on the running asyncio loop."""
        return _decode(self._type, await self._stream.finish_async(), self._method)

    def finish(self) -> Resp:
        """Ends the requests and returns the handler's response."""
        return _decode(self._type, self._stream.finish(), self._method)

    def cancel(self) -> None:
        """Gives up the call: the handler sees it cancelled."""
        self._stream.cancel()

    def __enter__(self) -> "ClientStreaming[Req, Resp]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class Bidi(ServerStreaming[Resp], Generic[Req, Resp]):
    """A bidi call: :meth:`send` requests and :meth:`recv` (or iterate) responses in any
    order; :meth:`close_send` once no more requests follow."""

    def send(self, request: Req) -> None:
        """Sends one request; waits while the handler's window is full."""
        self._stream.send(request.SerializeToString())

    def close_send(self) -> None:
        """Tells the handler no more requests follow."""
        self._stream.close_send()

    async def send_async(self, request: Req) -> None:
        """:meth:`send` on the running asyncio loop."""
        await self._stream.send_async(request.SerializeToString())

    async def close_send_async(self) -> None:
        """:meth:`close_send` on the running asyncio loop."""
        await self._stream.close_send_async()


def server_streaming(
    caller: Caller, method: str, request: Message, response_type: Type[Resp], timeout: Optional[float]
) -> ServerStreaming[Resp]:
    """Opens a server-streaming call with ``request``."""
    return ServerStreaming(caller.open_stream(method, request.SerializeToString(), timeout=timeout), response_type, method)


def client_streaming(
    caller: Caller, method: str, response_type: Type[Resp], timeout: Optional[float]
) -> ClientStreaming[Any, Resp]:
    """Opens a client-streaming call."""
    return ClientStreaming(caller.open_stream(method, b"", timeout=timeout), response_type, method)


def bidi(caller: Caller, method: str, response_type: Type[Resp], timeout: Optional[float]) -> Bidi[Any, Resp]:
    """Opens a bidi call."""
    return Bidi(caller.open_stream(method, b"", timeout=timeout), response_type, method)


class ServerStream(Generic[In, Out]):
    """A stream handler's typed end: ``In`` is what the caller sends (None for a
    server-streaming method), ``Out`` what the handler sends (None for client streaming)."""

    def __init__(self, call: cellshm.StreamCall, request_type: Optional[Type[Any]], method: str) -> None:
        self._call = call
        self._type = request_type
        self._method = method

    def send(self, message: Out) -> None:
        """Sends one message to the caller; waits while its window is full, raises
        :class:`cellshm.Cancelled` once it gave up."""
        if message is None:
            raise TypeError(f"{self._method} sends no messages from this side")
        self._call.send(message.SerializeToString())

    def recv(self) -> Optional[In]:
        """The caller's next message, or None once it closed its sending side."""
        data = self._call.recv()
        if data is None:
            return None
        if self._type is None:
            raise TypeError(f"{self._method}: the caller sends no messages")
        return _decode(self._type, data, self._method)  # type: ignore[no-any-return]

    @property
    def cancelled(self) -> bool:
        """True once the caller cancelled, its deadline passed, or it went away."""
        return self._call.cancelled

    @property
    def deadline_ns(self) -> int:
        """The caller's deadline (``time.monotonic_ns()`` clock), 0 if it has none."""
        return int(self._call.deadline_ns)

    def wait_cancelled(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for cancellation (GIL released)."""
        return self._call.wait_cancelled(timeout)

    def __iter__(self) -> Iterator[In]:
        while True:
            message = self.recv()
            if message is None:
                return
            yield message

    async def send_async(self, message: Out) -> None:
        """:meth:`send` in an ``async def`` servicer method: waits for the caller's credit on
        the cell's loop, without a thread."""
        if message is None:
            raise TypeError(f"{self._method} sends no messages from this side")
        await self._call.send_async(message.SerializeToString())

    async def recv_async(self) -> Optional[In]:
        """:meth:`recv` in an ``async def`` servicer method."""
        data = await self._call.recv_async()
        if data is None:
            return None
        if self._type is None:
            raise TypeError(f"{self._method}: the caller sends no messages")
        return _decode(self._type, data, self._method)  # type: ignore[no-any-return]

    async def wait_cancelled_async(self) -> None:
        """Returns once the stream is cancelled."""
        await self._call.wait_cancelled_async()

    def __aiter__(self) -> AsyncIterator[In]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[In]:
        while True:
            message = await self.recv_async()
            if message is None:
                return
            yield message


Target = Union[cellshm.Cell, cellshm.Hub]


def _serialized(response: MaybeAwaitable[Message]) -> MaybeAwaitable[bytes]:
    """A handler's response as bytes; an ``async def`` handler's once awaited (on the loop
    the layer below awaits it on)."""
    if inspect.isawaitable(response):
        awaited = response

        async def serialize() -> bytes:
            return (await awaited).SerializeToString()

        return serialize()
    return response.SerializeToString()


def serve_unary(
    target: Target,
    info: MethodInfo,
    request_type: Type[Req],
    handler: Callable[[Req, cellshm.CallContext], MaybeAwaitable[Message]],
) -> None:
    """Registers a typed unary handler (plain or ``async def``)."""

    def run(data: bytes) -> MaybeAwaitable[bytes]:
        return _serialized(handler(_decode(request_type, data, info.name), cellshm.current_call()))

    target.method(info.name)(run)


def serve_server_streaming(
    target: Target,
    info: MethodInfo,
    request_type: Type[Req],
    handler: Callable[[Req, "ServerStream[None, Any]"], MaybeAwaitable[None]],
) -> None:
    """Registers a typed server-streaming handler: the opening request, then sends."""

    def run(call: cellshm.StreamCall) -> MaybeAwaitable[None]:
        request = _decode(request_type, call.request, info.name)
        return handler(request, ServerStream(call, None, info.name))

    target.stream_method(info.name, kind=info.kind)(run)


def serve_client_streaming(
    target: Target,
    info: MethodInfo,
    request_type: Type[Req],
    handler: Callable[["ServerStream[Any, None]"], MaybeAwaitable[Message]],
) -> None:
    """Registers a typed client-streaming handler: it receives, then returns the response."""

    def run(call: cellshm.StreamCall) -> MaybeAwaitable[bytes]:
        return _serialized(handler(ServerStream(call, request_type, info.name)))

    target.stream_method(info.name, kind=info.kind)(run)


def serve_bidi(
    target: Target,
    info: MethodInfo,
    request_type: Type[Req],
    handler: Callable[["ServerStream[Any, Any]"], MaybeAwaitable[None]],
) -> None:
    """Registers a typed bidi handler."""

    def run(call: cellshm.StreamCall) -> MaybeAwaitable[None]:
        return handler(ServerStream(call, request_type, info.name))

    target.stream_method(info.name, kind=info.kind)(run)


def _serves(served: cellshm.MethodKind, wanted: cellshm.MethodKind) -> bool:
    return served == wanted or (served == cellshm.MethodKind.STREAM and wanted != cellshm.MethodKind.UNARY)


def check_served(caller: Caller, service: str, methods: Sequence[MethodInfo], timeout: float) -> None:
    """Raises :class:`cellshm.FailedPrecondition` unless the peer serves every method of
    ``service`` as its kind, :class:`cellshm.AlreadyExists` if it serves another name
    under one of their ids (a hash collision)."""
    by_id = {method_id: (name, kind) for name, method_id, kind in caller.served_methods(timeout)}
    for m in methods:
        found = by_id.get(m.id)
        if found is None:
            raise cellshm.FailedPrecondition(f"{service}: the peer does not serve {m.name}")
        name, kind = found
        if name != m.name:
            raise cellshm.AlreadyExists(f"{service}: the peer serves {name!r} with the id {m.id:#010x} of {m.name!r}")
        if not _serves(kind, m.kind):
            raise cellshm.FailedPrecondition(
                f"{service}: the peer serves {m.name} as a {_kind_words(kind)} method, not {_kind_words(m.kind)}"
            )


def _kind_words(kind: cellshm.MethodKind) -> str:
    return kind.name.lower().replace("_", " ").replace("bidi", "bidi streaming")


__all__ = [
    "MethodInfo",
    "MaybeAwaitable",
    "Caller",
    "ServerStreaming",
    "ClientStreaming",
    "Bidi",
    "ServerStream",
    "unary",
    "unary_async",
    "server_streaming",
    "client_streaming",
    "bidi",
    "serve_unary",
    "serve_server_streaming",
    "serve_client_streaming",
    "serve_bidi",
    "check_served",
]


# ----- topics of messages ---------------------------------------------------------------

M = TypeVar("M", bound="Message")


class TypedSample(Generic[M]):
    """One message received on a typed topic, decoded (a copy: its slot is let go of
    at once), with the sample's ``seq`` and how many were ``missed`` before it."""

    __slots__ = ("seq", "missed", "message")

    def __init__(self, seq: int, missed: int, message: M) -> None:
        self.seq = seq
        self.missed = missed
        self.message = message

    def __repr__(self) -> str:
        return f"TypedSample(seq={self.seq}, missed={self.missed}, message={self.message!r})"


class TypedPublisher(Generic[M]):
    """Publishes messages of one type on a topic (:func:`publish` makes one)."""

    def __init__(self, publisher: cellshm.Publisher, message_type: Type[M]) -> None:
        self.publisher = publisher
        self.message_type = message_type

    def publish(self, message: M, timeout: float = 1.0) -> int:
        """Serializes ``message`` and publishes it; its sequence number.
        :class:`cellshm.InvalidArgument` past the topic's sample size."""
        if not isinstance(message, self.message_type):
            raise TypeError(f"expected a {self.message_type.DESCRIPTOR.full_name}, got {type(message).__name__}")
        return self.publisher.publish(message.SerializeToString(), timeout)

    def close(self) -> None:
        self.publisher.close()

    def __enter__(self) -> "TypedPublisher[M]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TypedSubscriber(Generic[M]):
    """Receives messages of one type from a topic (:func:`subscribe` makes one).
    Iterate it (``for sample in sub`` or ``async for``) as a :class:`cellshm.Subscriber`;
    a sample that does not parse raises :class:`cellshm.Internal` for that read alone."""

    def __init__(self, subscriber: cellshm.Subscriber, message_type: Type[M]) -> None:
        self.subscriber = subscriber
        self.message_type = message_type

    def _decoded(self, sample: Optional[cellshm.Sample]) -> Optional[TypedSample[M]]:
        if sample is None:
            return None
        with sample:
            data = sample.tobytes()
            seq, missed = sample.seq, sample.missed
        return TypedSample(seq, missed, _decode(self.message_type, data, f"topic {self.subscriber.name!r}"))

    def recv(self, timeout: Optional[float] = None) -> Optional[TypedSample[M]]:
        """The next message, waiting up to ``timeout`` (None: no limit); None if none came."""
        return self._decoded(self.subscriber.recv(timeout))

    def latest(self) -> Optional[TypedSample[M]]:
        """The newest message queued, without waiting (last-value topics)."""
        return self._decoded(self.subscriber.latest())

    async def recv_async(self) -> TypedSample[M]:
        sample = self._decoded(await self.subscriber.recv_async())
        assert sample is not None
        return sample

    def close(self) -> None:
        self.subscriber.close()

    def __iter__(self) -> Iterator[TypedSample[M]]:
        for sample in self.subscriber:
            decoded = self._decoded(sample)
            assert decoded is not None
            yield decoded

    def __aiter__(self) -> AsyncIterator[TypedSample[M]]:
        return self._async_iter()

    async def _async_iter(self) -> AsyncIterator[TypedSample[M]]:
        async for sample in self.subscriber:
            decoded = self._decoded(sample)
            assert decoded is not None
            yield decoded

    def __enter__(self) -> "TypedSubscriber[M]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish(owner: cellshm.Topics, topic: str, message_type: Type[M], **options: int) -> TypedPublisher[M]:
    """Creates ``topic`` of ``message_type`` messages on a hub, supervisor or cell
    (``options`` as :meth:`cellshm.Topics.publish`: ``sample_size`` bounds a message's
    serialized length)."""
    return TypedPublisher(owner.publish(topic, **options), message_type)


def subscribe(
    owner: cellshm.Topics,
    topic: str,
    message_type: Type[M],
    policy: Union[cellshm.Policy, int] = cellshm.Policy.DROP_OLDEST,
    **options: Any,
) -> TypedSubscriber[M]:
    """Subscribes to ``topic`` of ``message_type`` messages (``policy`` and ``options``
    as :meth:`cellshm.Topics.subscribe`)."""
    return TypedSubscriber(owner.subscribe(topic, policy, **options), message_type)
