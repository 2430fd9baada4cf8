"""cellshm: shared-memory RPC between a host process and the cells it spawns.

A host::

    with cellshm.Hub() as hub:
        peer = hub.spawn([sys.executable, "echo_cell.py"])
        peer.wait_ready(10)
        assert peer.call("Echo.echo", b"hi", timeout=1.0) == b"hi"

A cell::

    cell = cellshm.Cell.from_args()

    @cell.method("Echo.echo")
    def echo(request: bytes) -> bytes:
        return request

    cell.run()

Calls release the GIL while they wait; ``call_async`` awaits on asyncio without
blocking the loop. Failures raise a subclass of :class:`CellshmError`.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import itertools
import logging
import math
import sys
import weakref
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

from . import _native
from . import errors as _errors
from .errors import *  # noqa: F401,F403  (the exception classes are part of the API)
from .errors import CellshmError, DeadlineExceeded, error_class

__version__: str = _native.VERSION
method_id = _native.method_id
status_name = _native.status_name
#: The unary call a (sync) handler is serving: ``cellshm.current_call().cancelled`` turns
#: true once the caller cancelled it or its deadline passed; ``wait_cancelled(timeout)``
#: waits for that with the GIL released. RuntimeError outside a handler.
current_call = _native.current_call
CallContext = _native.CallContext


class CallerInfo(NamedTuple):
    """Who calls a host handler (``current_call().caller``, ``StreamCall.caller``), as the
    host knows it: from the kernel and its own records, never from what the cell says."""

    #: The cell's peer id (its slot in the hub).
    peer_id: int
    #: The name the host gave it (``spawn(name=)``, the supervisor's name, the attach name).
    name: str
    #: The slot's launch count: tells this instance from earlier ones of the slot.
    epoch: int
    pid: Optional[int]
    uid: Optional[int]
    #: It attached under a name it chose (not spawned by the host): name allow-lists never
    #: admit it; :meth:`Hub.allow_attached` admits attached processes by uid.
    attached: bool = False


AccessPolicy = Callable[[CallerInfo, str], bool]


class MethodMetrics(NamedTuple):
    """What the host measured of one method in one direction of a link."""

    name: str
    method_id: int
    #: Calls finished (answered, failed or given up).
    calls: int
    #: Calls started and not finished yet.
    in_flight: int
    #: Finished calls that ended with an error, by status name (only statuses seen).
    errors: Dict[str, int]
    #: Latency of the finished calls in ns: median and 99th percentile (each within 19 %),
    #: the longest (exact), and how many were measured.
    latency_count: int
    p50_ns: int
    p99_ns: int
    max_ns: int


class PeerMetrics(NamedTuple):
    """What the host measured of one cell's link (:meth:`Peer.metrics`)."""

    state: str
    #: The calls the host made to the cell, by method.
    host_to_cell: List[MethodMetrics]
    #: The calls the cell made to the host, by method.
    cell_to_host: List[MethodMetrics]
    open_streams: int
    streams_opened: int
    refused_calls: int
    #: Relaunches of the cell of this name by a supervisor.
    restarts: int


def _peer_metrics(raw: Tuple[Any, ...]) -> PeerMetrics:
    def methods(items: List[Tuple[Any, ...]]) -> List[MethodMetrics]:
        return [
            MethodMetrics(name, mid, calls, in_flight, {status_name(c): n for c, n in errors}, count, p50, p99, mx)
            for name, mid, calls, in_flight, errors, count, p50, p99, mx in items
        ]

    state, out, inc, open_streams, opened, refused, restarts = raw
    return PeerMetrics(state, methods(out), methods(inc), open_streams, opened, refused, restarts)


def _access_policy(policy: Optional[AccessPolicy]) -> Optional[Callable[[Any, str], bool]]:
    if policy is None:
        return None
    return lambda caller, method: bool(policy(CallerInfo(*caller), method))

#: A payload: anything bytes-like that cellshm accepts.
Payload = Union[bytes, bytearray, memoryview]
Handler = Callable[[Any], Union[Payload, None, Awaitable[Union[Payload, None]]]]
H = TypeVar("H", bound=Handler)

_log = logging.getLogger("cellshm")

# cellshm log levels (Rust `tracing`): 1 error, 2 warn, 3 info, 4 debug, 5 trace.
_TO_PYTHON_LEVEL = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG, 5: logging.DEBUG - 5}


def _to_cellshm_level(levelno: int) -> int:
    if levelno >= logging.ERROR:
        return 1
    if levelno >= logging.WARNING:
        return 2
    if levelno >= logging.INFO:
        return 3
    if levelno >= logging.DEBUG:
        return 4
    return 5


# ----- asyncio ------------------------------------------------------------------------


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


# ----- host ---------------------------------------------------------------------------


# ----- streams ------------------------------------------------------------------------


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
        loop = asyncio.get_running_loop()
        try:
            # recv releases the GIL, so a worker thread waits without blocking the loop.
            item = await loop.run_in_executor(None, self._native.recv)
        except asyncio.CancelledError:
            self.cancel()
            raise
        if item is None:
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]

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

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self.recv()
            if item is None:
                return
            yield item


StreamHandler = Callable[[StreamCall], Optional[Payload]]
SH = TypeVar("SH", bound=StreamHandler)


def _stream_handler(handler: StreamHandler) -> Callable[[Any], Optional[Payload]]:
    def run(native: Any) -> Optional[Payload]:
        return handler(StreamCall(native))

    return run



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


class Peer(LinkEnd):
    """The host's handle on one cell. Thread-safe."""

    def __init__(self, native: Any) -> None:
        self._native = native
        self._link = native.link

    def _target(self) -> str:
        return f"cell {self.name!r}"

    @property
    def id(self) -> int:
        """The peer slot id."""
        return int(self._native.id)

    @property
    def name(self) -> str:
        return str(self._native.name)

    @property
    def pid(self) -> Optional[int]:
        return self._native.pid  # type: ignore[no-any-return]

    @property
    def state(self) -> str:
        """"starting", "joined", "ready", "leaving" or "dead"."""
        return str(self._native.state)

    @property
    def death(self) -> Optional[CellshmError]:
        """Why the peer died (an exception instance), or None while it lives."""
        death = self._native.death
        return None if death is None else error_class(death[0])(death[1])

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Waits until the cell announced itself ready; raises if it dies first or the
        timeout passes."""
        self._native.wait_ready(_check_timeout(timeout))

    def set_log_filter(self, filter: str, timeout: float = 5.0) -> None:
        """Pushes a log filter such as ``"warn,mycell=debug"`` to the cell: records it
        excludes are not sent at all."""
        self._native.set_log_filter(filter, _check_timeout(timeout))

    @property
    def identity(self) -> CallerInfo:
        """Who the host knows this cell to be (what its calls' ``caller`` says)."""
        return CallerInfo(*self._native.identity)

    @property
    def refused_calls(self) -> int:
        """Its calls and streams refused by an access rule so far (counted by the host)."""
        return int(self._native.refused_calls)

    def metrics(self) -> PeerMetrics:
        """What the host measured of this link, per method and direction: calls, errors by
        status, calls in flight, latency p50/p99/max, and its streams and restarts."""
        return _peer_metrics(self._native.metrics())

    def on_death(self, callback: Callable[[CellshmError], None]) -> None:
        """Calls ``callback(error)`` once when the peer dies (at once if it has), from a
        cellshm thread."""
        self._native.on_death(lambda code, message: callback(error_class(code)(message)))

    def kill(self) -> None:
        """Sends SIGKILL to the cell's process."""
        self._native.kill()

    def wait_exit(self, timeout: float = 10.0) -> int:
        """Waits for the process to exit and returns its exit code (128 + signal)."""
        return int(self._native.wait_exit(_check_timeout(timeout)))

    def shutdown(self, grace: float = 2.0) -> int:
        """GOODBYE, up to ``grace`` seconds to leave, then SIGKILL. Returns the exit code."""
        return int(self._native.shutdown(_check_timeout(grace)))

    @property
    def doorbell_fd(self) -> Optional[int]:
        return self._native.doorbell_fd  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<cellshm.Peer {self.name!r} id={self.id} pid={self.pid} {self.state}>"


def _log_to_python(
    cell: str,
    peer_id: int,
    level: int,
    target: str,
    message: str,
    time_unix_ns: int,
    file: str,
    line: int,
    fields: List[Tuple[str, str]],
) -> None:
    """A cell's record as a ``logging.LogRecord`` of the logger ``cellshm.cell.<cell>``:
    made when and where the cell made it (``created``, ``pathname``, ``lineno``), with the
    extras ``cell``, ``peer_id``, ``cell_logger`` (the cell's logger name) and the
    record's own fields (a field named like a LogRecord attribute gets a ``field_``
    prefix)."""
    logger = logging.getLogger(f"cellshm.cell.{cell}")
    python_level = _TO_PYTHON_LEVEL.get(level, logging.INFO)
    if not logger.isEnabledFor(python_level):
        return
    extra: Dict[str, object] = {"cell": cell, "peer_id": peer_id, "cell_logger": target}
    for key, value in fields:
        extra[f"field_{key}" if key in _RESERVED_RECORD_KEYS or key in extra else key] = value
    record = logger.makeRecord(logger.name, python_level, file or "(cell)", line, message, (), None, extra=extra)
    if time_unix_ns:
        record.created = time_unix_ns / 1e9
        record.msecs = (time_unix_ns // 1_000_000) % 1000
    logger.handle(record)


# Attributes every LogRecord has: a cell's field of one of these names must not replace it.
_RESERVED_RECORD_KEYS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class Hub:
    """The host's hub: the links to its cells, and a discovery socket under the hub's
    ``name`` (``cellshm list`` shows it, ``cellshm inspect NAME`` reads it). Its memory
    is memfds and its socket is abstract: nothing of it outlives the process. Use it as
    a context manager (or call :meth:`close`): closing tells every cell to leave. Log
    records sent by cells appear in the logger ``cellshm.cell.<name>`` with the extra
    fields ``cell`` and ``peer_id``. ``socket_path`` also listens on a filesystem path,
    for containers that share a directory but not the abstract socket namespace.

    The shape of every link: ``ring_capacity`` descriptors per ring (a power of two),
    ``slot_classes`` as ``[(slot_size, slot_count), ...]``, smallest first (sizes
    multiples of 64; the largest is the largest payload a call can carry: 1 MiB by
    default, ``(8 << 20, 2)`` added for 8 MiB), ``shutdown_grace`` seconds for cells to
    leave when the hub closes. ``server_threads``, ``stream_threads``, ``max_streams``
    and ``stream_window`` are the defaults of :meth:`spawn`. Bad values raise
    :class:`InvalidArgument` naming the one at fault."""

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        max_peers: int = 8,
        forward_logs: bool = True,
        socket_path: Optional[str] = None,
        ring_capacity: int = 256,
        slot_classes: Optional[Sequence[Tuple[int, int]]] = None,
        shutdown_grace: float = 2.0,
        server_threads: int = 2,
        stream_threads: int = 8,
        max_streams: int = 64,
        stream_window: int = 8,
    ) -> None:
        if not isinstance(max_peers, int) or isinstance(max_peers, bool) or max_peers < 1:
            raise ValueError(f"max_peers must be a positive int, got {max_peers!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        self._native = _native.Hub(
            name, max_peers, socket_path, ring_capacity, _slot_classes(slot_classes), shutdown_grace
        )
        self._spawn_defaults = {
            "server_threads": server_threads,
            "stream_threads": stream_threads,
            "max_streams": max_streams,
            "stream_window": stream_window,
        }
        self._peers: List[Peer] = []
        if forward_logs:
            self._native.set_log_sink(_log_to_python)

    @property
    def name(self) -> str:
        """The hub's name (unique among this user's live hubs)."""
        return str(self._native.name)

    def method(self, name: str, *, view: bool = False, allow: Optional[Sequence[str]] = None) -> Callable[[H], H]:
        """Decorator: serves ``name`` to every cell of the hub (see :meth:`Cell.method`),
        or with ``allow`` only to the cells of those names (see :meth:`allow`). The
        handler sees who calls in ``cellshm.current_call().caller``."""

        def register(handler: H) -> H:
            self._native.method(name, _sync_handler(handler, lambda: None), view)
            if allow is not None:
                self.allow(name, allow)
            return handler

        return register

    def stream_method(
        self, name: str, *, kind: Optional[MethodKind] = None, allow: Optional[Sequence[str]] = None
    ) -> Callable[[SH], SH]:
        """Decorator: serves the stream method ``name`` to every cell of the hub (see
        :meth:`Cell.stream_method`), or with ``allow`` only to those cells."""
        code = _stream_kind(kind)

        def register(handler: SH) -> SH:
            self._native.stream_method(name, _stream_handler(handler), code)
            if allow is not None:
                self.allow(name, allow)
            return handler

        return register

    def allow(self, method: str, cells: Sequence[str]) -> None:
        """Only the cells named in ``cells`` may call the host method ``method`` (registered
        already); any other gets :class:`PermissionDenied`, counted in its
        :attr:`Peer.refused_calls`, and the handler never runs. Names are the ones the host
        gave the cells it spawned, never what a cell says: a process that attached chose
        its name, so it is never admitted by name (see :meth:`allow_attached`), and a name
        a live cell has cannot be attached under. An empty list admits none."""
        self._native.allow(method, _names(cells))

    def allow_everyone(self, method: str) -> None:
        """Lifts :meth:`allow`'s restriction of ``method``."""
        self._native.allow_everyone(method)

    def allow_attached(self, method: str, uids: Sequence[int]) -> None:
        """Lets processes that attached (:attr:`CallerInfo.attached`) call ``method`` if
        they run as one of ``uids``, beside the cells :meth:`allow` names: an attached
        process chose its name, so name lists never admit it."""
        self._native.allow_attached(method, [int(u) for u in uids])

    def enable_inspect(self, uids: Sequence[int]) -> None:
        """Lets processes of ``uids`` inspect the hub (``cellshm inspect``, ``cellshm
        top``): off by default, even for the host's own uid, since inspecting hands out
        read-only views of every link's memory and a cell of that uid could start a
        process nothing ties to it. Best given to an operator's uid that no cell runs
        as. An empty list turns it off again."""
        self._native.enable_inspect([int(u) for u in uids])

    def set_access_policy(self, policy: Optional[AccessPolicy]) -> None:
        """Asks ``policy(caller, method) -> bool`` before every call and stream of every
        host method (after its allow list, if any); False (or an exception) refuses it as
        :meth:`allow` does. It runs for each call, holding the GIL: keep it short. None
        removes it."""
        self._native.set_access_policy(_access_policy(policy))

    def spawn(
        self,
        argv: Sequence[str],
        *,
        name: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        wait: str = "adaptive",
        spin_us: int = 50,
        server_threads: Optional[int] = None,
        stderr_tail: int = 0,
        max_streams: Optional[int] = None,
        stream_threads: Optional[int] = None,
        default_timeout: Optional[float] = None,
        stream_window: Optional[int] = None,
    ) -> Peer:
        """Starts ``argv`` as a cell. Its argv is left as given: the cell finds its
        doorbell through ``CELLSHM_DOORBELL_FD``. ``env`` adds variables to the inherited
        environment. Safe from any thread: the cell does not die with the spawning thread.
        With ``stderr_tail`` > 0, the last that many bytes of the cell's stderr (which
        still reaches ours) are added to the error it dies with. ``max_streams`` bounds
        the streams the cell may have open towards the host, ``stream_threads`` the host
        threads running their handlers (a stream beyond them waits for one).
        ``default_timeout`` is the time limit of calls to it made with ``timeout=None``
        (:data:`DEFAULT_CALL_TIMEOUT` unless given; :data:`FOREVER` for none);
        ``stream_window`` the items the cell may have in flight per stream towards the
        host. Thread counts, ``max_streams`` and ``stream_window`` default to the hub's."""
        if not isinstance(stderr_tail, int) or isinstance(stderr_tail, bool) or stderr_tail < 0:
            raise ValueError(f"stderr_tail must be a non-negative int, got {stderr_tail!r}")
        if isinstance(argv, (str, bytes)) or not all(isinstance(a, str) for a in argv):
            raise TypeError("argv must be a sequence of str, e.g. [sys.executable, 'cell.py']")
        argv = list(argv)
        if not argv:
            raise ValueError("argv is empty")
        peer = Peer(
            self._native.spawn(
                name or _default_cell_name(argv),
                argv,
                dict(env or {}),
                wait,
                spin_us,
                self._spawn_defaults["server_threads"] if server_threads is None else server_threads,
                stderr_tail,
                self._spawn_defaults["max_streams"] if max_streams is None else max_streams,
                self._spawn_defaults["stream_threads"] if stream_threads is None else stream_threads,
                _check_timeout(default_timeout),
                self._spawn_defaults["stream_window"] if stream_window is None else stream_window,
            )
        )
        self._peers.append(peer)
        return peer

    @property
    def peers(self) -> List[Peer]:
        return list(self._peers)

    def peer(self, name: str) -> Optional[Peer]:
        """The most recent cell named ``name``, spawned or attached (an attached cell's
        Peer cannot kill or wait for its process: the host did not spawn it)."""
        native = self._native.peer(name)
        return None if native is None else Peer(native)

    def enable_attach(self, allowed_uids: Optional[Sequence[int]] = None) -> Any:
        """Lets processes this host did not spawn join through the hub's discovery socket
        (:meth:`Cell.attach`). Only ``allowed_uids`` may (the host's own uid by default);
        refusals are logged, counted by ``.refusal_count()`` and the last 16 listed by
        ``.refusals()`` of the returned listener, which stops accepting when closed."""
        return self._native.enable_attach(None if allowed_uids is None else list(allowed_uids))

    def close(self) -> None:
        """Closes every link and the discovery socket. Idempotent."""
        self._native.close()

    def __enter__(self) -> "Hub":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<cellshm.Hub {self.name!r}{' closed' if self._native.closed else ''}>"


# ----- cell ---------------------------------------------------------------------------


def _sync_handler(handler: Handler, loop_of: Callable[[], Optional[asyncio.AbstractEventLoop]]) -> Callable[[Any], Any]:
    """Runs ``handler`` on a cellshm thread; a coroutine result runs on the cell's event
    loop (set by :meth:`Cell.serve_async`) while this thread waits without the GIL."""
    if not callable(handler):
        raise TypeError(f"handler must be callable, not {type(handler).__name__}")

    def run(request: Any) -> Any:
        result = handler(request)
        if inspect.isawaitable(result):
            loop = loop_of()
            if loop is None:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                raise RuntimeError("async handlers run on the loop of Cell.serve_async(); this cell is not serving with it")
            return asyncio.run_coroutine_threadsafe(_awaited(result), loop).result()
        return result

    return run


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class Cell(LinkEnd):
    """A cell: joins the hub its host named, serves methods, calls the host."""

    def __init__(self, native: Any) -> None:
        self._native = native
        self._link = native.link
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def _target(self) -> str:
        return "the host"

    @classmethod
    def from_args(cls, argv: Optional[Sequence[str]] = None) -> "Cell":
        """Joins the hub that spawned this process, through the doorbell named by
        ``CELLSHM_DOORBELL_FD`` (or a ``--doorbell-fd=N`` in ``argv``, default
        ``sys.argv``; other arguments are left to the program, e.g. argparse)."""
        return cls(_native.Cell.join(list(sys.argv if argv is None else argv)))

    @classmethod
    def attach(cls, hub: str, name: str) -> "Cell":
        """Joins the running hub ``hub`` (its name, or ``"UID/NAME"`` for another
        user's hub) whose host enabled attaching, as ``name``."""
        return cls(_native.Cell.attach(hub, name))

    @property
    def peer_id(self) -> int:
        return int(self._native.peer_id)

    def method(self, name: str, *, view: bool = False) -> Callable[[H], H]:
        """Decorator registering a handler for ``"Service.method"``. It receives the
        request as ``bytes`` (or, with ``view=True``, a read-only ``memoryview`` into shared
        memory, released when the handler returns; if something made from it, such as a
        numpy array, is still alive then, the request's slot stays held until it is gone,
        and a warning is logged) and returns a bytes-like object or None. An
        ``async def`` handler runs on the loop of :meth:`serve_async`. A raised
        :class:`CellshmError` keeps its status; any other exception is INTERNAL with its
        message. The cell keeps serving either way."""

        def register(handler: H) -> H:
            self._native.method(name, _sync_handler(handler, lambda: self._loop), view)
            return handler

        return register

    def stream_method(self, name: str, *, kind: Optional[MethodKind] = None) -> Callable[[SH], SH]:
        """Decorator registering a stream handler for ``"Service.method"``: it runs on its
        own thread for each stream opened to it, gets a :class:`StreamCall`, and returns
        the final response (bytes-like or None). Raising ends the stream with that error.
        ``kind`` (a :class:`MethodKind`) is what ``cellshm.Introspect.methods`` reports;
        by default the stream's direction is left undeclared."""
        code = _stream_kind(kind)

        def register(handler: SH) -> SH:
            self._native.stream_method(name, _stream_handler(handler), code)
            return handler

        return register

    def serve(self) -> None:
        """Starts serving and announces readiness to the host; returns at once."""
        self._native.serve()

    def run(self) -> None:
        """Serves until the host says goodbye; raises :class:`PeerDead` (or another error)
        if it goes away instead."""
        self._native.run()

    async def serve_async(self) -> None:
        """Serves until the host says goodbye, awaiting on the running loop; ``async def``
        handlers run on this loop."""
        self._loop = asyncio.get_running_loop()
        calls = _loop_calls()
        future, _, _ = calls.register(lambda notifier, token: self._native.notify_on_stop(notifier, token))
        self.serve()
        try:
            await future
        finally:
            self._loop = None
        self._native.outcome()

    @property
    def log_records_dropped(self) -> int:
        """Log records dropped so far because the ring towards the host was full (a log
        call never waits for room)."""
        return int(self._native.log_records_dropped)

    def log_handler(self, level: int = logging.NOTSET) -> "CellLogHandler":
        """A ``logging.Handler`` sending records to the host's log."""
        return CellLogHandler(self, level)

    def goodbye(self) -> None:
        """Tells the host this cell is leaving on purpose, and closes it."""
        self._native.goodbye()

    def close(self) -> None:
        self._native.close()

    def __enter__(self) -> "Cell":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SupervisorEvent(NamedTuple):
    """A status change of one supervised cell."""

    name: str
    #: "starting", "ready", "stopping", "exited", "crashed", "failed" or "removed".
    status: str
    #: Why the instance ended ("signal 9", "code 3", "goodbye", "stopped (exit code 0)",
    #: ...), for "exited", "crashed" and "failed"; else None.
    reason: Optional[str]
    peer_id: Optional[int]
    pid: Optional[int]
    #: Relaunches counted in the current window.
    restarts: int


_supervisor_log = logging.getLogger("cellshm.supervisor")


class Subscription:
    """A listener registered with :meth:`Supervisor.on_event`. Closing it, leaving its
    ``with`` block, or dropping the last reference to it unregisters the listener: keep
    it for as long as you want events."""

    def __init__(self, native: "_native.EventSubscription") -> None:
        self._native = native

    @property
    def active(self) -> bool:
        return bool(self._native.active)

    def close(self) -> None:
        """Unregisters the listener: it is not called again once this returns (a call
        already under way on the event thread finishes)."""
        self._native.close()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Supervisor:
    """Keeps cells alive under stable names: relaunch on crash with capped exponential
    backoff, no relaunch after a goodbye, graceful stop (GOODBYE, SIGTERM, SIGKILL),
    restart, removal and new recipes at run time.
    Statuses: "starting", "ready", "stopping", "exited", "crashed", "failed", "removed",
    each with a reason ("signal 9", "code 3", "goodbye", ...) once it ended."""

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        max_peers: int = 8,
        default_timeout: Optional[float] = None,
        forward_logs: bool = True,
        ring_capacity: int = 256,
        slot_classes: Optional[Sequence[Tuple[int, int]]] = None,
        shutdown_grace: float = 2.0,
        server_threads: int = 2,
        stream_threads: int = 8,
        max_streams: int = 64,
        stream_window: int = 8,
    ) -> None:
        """The hub's shape and the peer options of every cell, as for :class:`Hub`."""
        self._native = _native.Supervisor(
            name,
            max_peers,
            ring_capacity,
            _slot_classes(slot_classes),
            shutdown_grace,
            server_threads,
            max_streams,
            stream_threads,
            stream_window,
        )
        if default_timeout is not None:
            self.set_default_timeout(default_timeout)
        if forward_logs:
            self._native.set_log_sink(_log_to_python)

    def set_log_filter(self, name: str, filter: str) -> None:
        """Sets the log filter of ``name`` (``"warn,mycell=debug"``): on the running
        instance and in its recipe, so every later instance starts with it."""
        self._native.set_log_filter(name, filter)

    @property
    def hub_name(self) -> str:
        return str(self._native.hub_name)

    def set_default_timeout(self, timeout: float) -> None:
        """The time limit of calls made with ``timeout=None`` to the cells launched from
        now on, unless their ``add(default_timeout=...)`` says otherwise
        (:data:`DEFAULT_CALL_TIMEOUT` until set; :data:`FOREVER` for none)."""
        checked = _check_timeout(timeout)
        if checked is None:
            raise TypeError("timeout must be a number of seconds or cellshm.FOREVER")
        self._native.set_default_timeout(checked)

    def method(self, name: str, *, view: bool = False, allow: Optional[Sequence[str]] = None) -> Callable[[H], H]:
        """Decorator: a host method the supervised cells can call (with ``allow``, only
        the cells of those names: see :meth:`Hub.allow`)."""

        def register(handler: H) -> H:
            self._native.method(name, _sync_handler(handler, lambda: None), view)
            if allow is not None:
                self.allow(name, allow)
            return handler

        return register

    def allow(self, method: str, cells: Sequence[str]) -> None:
        """As :meth:`Hub.allow`, for the supervisor's hub."""
        self._native.allow(method, _names(cells))

    def allow_everyone(self, method: str) -> None:
        self._native.allow_everyone(method)

    def allow_attached(self, method: str, uids: Sequence[int]) -> None:
        """As :meth:`Hub.allow_attached`, for the supervisor's hub."""
        self._native.allow_attached(method, [int(u) for u in uids])

    def enable_inspect(self, uids: Sequence[int]) -> None:
        """As :meth:`Hub.enable_inspect`, for the supervisor's hub."""
        self._native.enable_inspect([int(u) for u in uids])

    def set_access_policy(self, policy: Optional[AccessPolicy]) -> None:
        """As :meth:`Hub.set_access_policy`, for the supervisor's hub."""
        self._native.set_access_policy(_access_policy(policy))

    def on_event(self, callback: Callable[[SupervisorEvent], object]) -> Subscription:
        """Calls ``callback(event)`` on every status change of every cell, each event
        once and in order, from the supervisor's event thread. An exception it raises is
        logged (logger ``cellshm.supervisor``) and stops nothing. Keep the returned
        :class:`Subscription`: once it is closed or garbage-collected, the callback is
        no longer called."""

        def deliver(
            name: str,
            status: str,
            reason: Optional[str],
            peer_id: Optional[int],
            pid: Optional[int],
            restarts: int,
        ) -> None:
            event = SupervisorEvent(name, status, reason, peer_id, pid, restarts)
            try:
                callback(event)
            except Exception:
                _supervisor_log.exception("a supervisor listener raised on %s -> %s", name, status)

        return Subscription(self._native.on_event(deliver))

    def add(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Optional[Mapping[str, str]] = None,
        ready_timeout: float = 10.0,
        max_restarts: int = 5,
        initial_backoff: float = 0.05,
        max_backoff: float = 5.0,
        reset_after: float = 60.0,
        heartbeat_interval: Optional[float] = None,
        heartbeat_misses: int = 2,
        default_timeout: Optional[float] = None,
        log_filter: Optional[str] = None,
    ) -> None:
        """Adds a cell and starts it (:class:`AlreadyExists` if the name is taken: see
        :meth:`start`, :meth:`restart` and :meth:`update`). A crash is relaunched after
        ``initial_backoff`` (doubling up to ``max_backoff``), ``max_restarts`` times per
        ``reset_after`` seconds. With ``heartbeat_interval``, the cell is sent a
        heartbeat as it becomes ready and then that often, answered by its handler
        threads; after more than ``heartbeat_misses`` unanswered in a row it is killed and
        relaunched as "unresponsive", ``heartbeat_interval × (heartbeat_misses + 1)``
        after the first unanswered one was sent. ``default_timeout``: the time limit of calls to it made with
        ``timeout=None`` (the supervisor's default otherwise). ``log_filter``
        (``"warn,mycell=debug"``) is every instance's log filter, relaunches included."""
        self._native.add(
            name,
            _argv(argv),
            dict(env or {}),
            (ready_timeout, max_restarts, initial_backoff, max_backoff, reset_after),
            _heartbeat(heartbeat_interval, heartbeat_misses),
            _check_timeout(default_timeout),
            log_filter,
        )

    def update(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Optional[Mapping[str, str]] = None,
        ready_timeout: float = 10.0,
        max_restarts: int = 5,
        initial_backoff: float = 0.05,
        max_backoff: float = 5.0,
        reset_after: float = 60.0,
        heartbeat_interval: Optional[float] = None,
        heartbeat_misses: int = 2,
        default_timeout: Optional[float] = None,
        log_filter: Optional[str] = None,
        grace: float = 2.0,
    ) -> None:
        """Replaces the recipe of ``name`` (arguments as for :meth:`add`). A running
        instance is restarted with it (stopped with ``grace`` per step); a cell that is
        not running keeps its status and uses the recipe when next started."""
        self._native.update(
            name,
            _argv(argv),
            dict(env or {}),
            (ready_timeout, max_restarts, initial_backoff, max_backoff, reset_after),
            _heartbeat(heartbeat_interval, heartbeat_misses),
            _check_timeout(default_timeout),
            log_filter,
            grace,
        )

    def start(self, name: str) -> None:
        """Starts a cell that is not running (exited, stopped, failed) again, with a
        fresh restart count; one running or about to relaunch is left alone."""
        self._native.start(name)

    def restart(self, name: str, grace: float = 2.0) -> None:
        """Stops the running instance (as :meth:`stop`) and starts a new one with a
        fresh restart count. Returns once the old one ended: ``wait_for(name, "ready")``
        for the new one."""
        self._native.restart(name, grace)

    def remove(self, name: str, grace: float = 2.0) -> None:
        """Stops ``name`` and forgets it; its last event is "removed"."""
        self._native.remove(name, grace)

    def names(self) -> List[str]:
        """The supervised cells' names, sorted."""
        return list(self._native.names())

    def status(self, name: str) -> Optional[Tuple[str, Optional[str]]]:
        """(status, reason) of ``name``, or None if it is not supervised."""
        return self._native.status(name)

    def wait_for(self, name: str, status: str, timeout: float = 10.0) -> Optional[str]:
        """Waits until ``name`` has ``status`` and the listeners have seen it; returns
        its reason (if any). :class:`DeadlineExceeded` after ``timeout``."""
        return self._native.wait_for(name, status, timeout)

    def cell(self, name: str) -> "Supervised":
        """The supervised cell ``name`` as a :class:`LinkEnd`: each call goes to its
        current instance; :class:`Unavailable` while it (re)starts."""
        return Supervised(self, name)

    def call(self, name: str, method: str, payload: Payload = b"", *, timeout: Optional[float] = None) -> bytes:
        """Calls the current instance of ``name``: ``self.cell(name).call(...)``."""
        return self.cell(name).call(method, payload, timeout=timeout)

    def pid(self, name: str) -> Optional[int]:
        return self._native.pid(name)

    def stop(self, name: str, grace: float = 2.0) -> int:
        """Stops ``name`` (it is not relaunched until :meth:`start` or :meth:`restart`);
        returns its exit code (0 if it was not running)."""
        return int(self._native.stop(name, grace))

    def close(self, grace: float = 1.0) -> None:
        """Stops every cell and closes the hub."""
        self._native.close(grace)

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Supervised(LinkEnd):
    """A supervised cell by name (:meth:`Supervisor.cell`): calls go to its current
    instance, so a relaunch is invisible to the caller."""

    def __init__(self, supervisor: Supervisor, name: str) -> None:
        self._name = name
        self._link = supervisor._native.link(name)

    def _target(self) -> str:
        return f"supervised cell {self._name!r}"

    def __repr__(self) -> str:
        return f"<cellshm.Supervised {self._name!r}>"


def _slot_classes(classes: Optional[Sequence[Tuple[int, int]]]) -> Optional[List[Tuple[int, int]]]:
    if classes is None:
        return None
    checked = []
    for c in classes:
        if not (isinstance(c, tuple) and len(c) == 2 and all(isinstance(v, int) and v > 0 for v in c)):
            raise TypeError(f"slot_classes must be (slot_size, slot_count) pairs of positive ints, got {c!r}")
        checked.append((c[0], c[1]))
    return checked


#: The longest cell name, in UTF-8 bytes (the rule every way a cell is named follows).
_CELL_NAME_MAX = 48


def _default_cell_name(argv: Sequence[str]) -> str:
    """A cell's name when ``spawn`` is given none: the last argument's file name
    (``cell.py`` for ``[python, "path/cell.py"]``), else the program's, cut to a valid
    name (1 to 48 bytes, no control characters)."""
    for candidate in (argv[-1].rsplit("/", 1)[-1], argv[0].rsplit("/", 1)[-1], "cell"):
        cleaned = "".join(c for c in candidate if c.isprintable())
        if cleaned and cleaned == candidate:
            return cleaned.encode()[:_CELL_NAME_MAX].decode(errors="ignore") or "cell"
    return "cell"


def _heartbeat(interval: Optional[float], misses: int) -> Optional[Tuple[float, int]]:
    if interval is None:
        return None
    if not isinstance(misses, int) or isinstance(misses, bool) or misses < 0:
        raise ValueError(f"heartbeat_misses must be a non-negative int, got {misses!r}")
    return (float(interval), misses)


def _names(cells: Sequence[str]) -> List[str]:
    if isinstance(cells, (str, bytes)) or not all(isinstance(c, str) for c in cells):
        raise TypeError("cells must be a sequence of cell names (str)")
    return list(cells)


def _argv(argv: Sequence[str]) -> List[str]:
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a sequence of str")
    return list(argv)


class CellLogHandler(logging.Handler):
    """Forwards log records from a cell to its host, where they appear in the host's log
    with the cell's name, the logger name (``cell_logger``), the time and source location
    of the record, and its ``extra`` fields (as strings). Records are sent without
    waiting: one that finds the ring to the host full is dropped and counted
    (:attr:`Cell.log_records_dropped`)."""

    def __init__(self, cell: Cell, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.cell = cell

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = _to_cellshm_level(record.levelno)
            if not self.cell._native.log_enabled(level, record.name):
                return  # the host's filter excludes it: not even formatted
            fields = [(k, str(v)) for k, v in record.__dict__.items() if k not in _RESERVED_RECORD_KEYS][:64]
            self.cell._native.log_record(
                level,
                record.name,
                self.format(record),
                int(record.created * 1e9),
                record.pathname,
                record.lineno,
                fields,
            )
        except Exception:
            self.handleError(record)


class HubListing(NamedTuple):
    """A live hub, as ``cellshm list`` shows it."""

    name: str
    host_pid: int
    uid: int
    peers: int
    max_peers: int
    uptime_ms: int
    attach: bool


def list_hubs() -> List[HubListing]:
    """The live hubs of this user on this machine (found through their abstract
    discovery sockets: a hub whose process ended is never listed)."""
    return [HubListing(*h) for h in _native.list_hubs()]


def iter_status_codes() -> Iterator[Tuple[str, int]]:
    """(name, code) for every status."""
    return iter(sorted(_native.STATUS_CODES.items(), key=lambda item: item[1]))


__all__ = [
    "Hub",
    "LinkEnd",
    "Peer",
    "Supervised",
    "Cell",
    "CellLogHandler",
    "Supervisor",
    "SupervisorEvent",
    "FOREVER",
    "DEFAULT_CALL_TIMEOUT",
    "Subscription",
    "Stream",
    "StreamCall",
    "CallContext",
    "CallerInfo",
    "MethodMetrics",
    "PeerMetrics",
    "AccessPolicy",
    "current_call",
    "Payload",
    "method_id",
    "status_name",
    "iter_status_codes",
    "list_hubs",
    "HubListing",
    "__version__",
    "MethodKind",
]
# Extended from the literal list in errors.py, which type checkers follow.
__all__ += _errors.__all__
