"""The host: `Hub` and `Peer`."""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import _native
from .errors import CellshmError, InvalidArgument, PermissionDenied, error_class
from ._common import (
    AccessPolicy,
    CallerInfo,
    H,
    PeerMetrics,
    _TO_PYTHON_LEVEL,
    _access_policy,
    _default_cell_name,
    _names,
    _peer_metrics,
    _slot_classes,
)
from ._asyncio import DEFAULT_CALL_TIMEOUT, FOREVER, _check_timeout
from ._streams import MethodKind, SH
from ._link import LinkEnd, _registering, _registering_stream
from ._remote import ADD_REMOTE_DOC, Remote, _methods as _remote_methods
from ._topics import Topics


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


class Hub(Topics):
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
        return _registering(self._native, name, view, lambda: None, allow)

    def stream_method(
        self, name: str, *, kind: Optional[MethodKind] = None, allow: Optional[Sequence[str]] = None
    ) -> Callable[[SH], SH]:
        """Decorator: serves the stream method ``name`` to every cell of the hub (see
        :meth:`Cell.stream_method`), or with ``allow`` only to those cells."""
        return _registering_stream(self._native, name, kind, lambda: None, allow)

    def add_remote(
        self,
        name: str,
        url: str,
        *,
        methods: Optional[Sequence[Tuple[str, MethodKind]]] = None,
        timeout: float = 5.0,
    ) -> Remote:
        return Remote(self._native.add_remote(name, url, _remote_methods(methods), timeout))

    add_remote.__doc__ = ADD_REMOTE_DOC

    def describe(self, file_descriptor_set: bytes) -> None:
        """Keeps ``file_descriptor_set`` (a serialized ``google.protobuf.FileDescriptorSet``)
        as the description of the services served here: a gRPC gateway answers reflection
        from it (``grpcurl describe``). Generated ``serve_<svc>`` functions pass the set
        ``cellshm-codegen`` embeds; a set given twice is kept once."""
        self._native.describe(bytes(file_descriptor_set))

    def allow(self, method: str, cells: Sequence[str]) -> None:
        """Only the cells named in ``cells`` may call the host method ``method``; any other
        gets :class:`PermissionDenied`, counted in its :attr:`Peer.refused_calls`, and the
        handler never runs. Names are the ones the host gave the cells it spawned, never
        what a cell says: a process that attached chose its name, so it is never admitted
        by name (see :meth:`allow_attached`), and a name a live cell has cannot be attached
        under. An empty list admits none. The rule is the method's by name, registered
        yet or not: a gRPC gateway checks it too for remote callers of a cell's method
        (admitting those whose certificate subject or token names one of ``cells``)."""
        self._native.allow(method, _names(cells))

    def allow_everyone(self, method: str) -> None:
        """Lifts :meth:`allow`'s restriction of ``method``."""
        self._native.allow_everyone(method)

    def allow_attached(self, method: str, uids: Sequence[int]) -> None:
        """Lets processes that attached (:attr:`CallerInfo.attached`) call ``method`` if
        they run as one of ``uids``, beside the cells :meth:`allow` names: an attached
        process chose its name, so name lists never admit it."""
        self._native.allow_attached(method, [int(u) for u in uids])

    def enable_relay(self, uids: Sequence[int]) -> None:
        """Lets the processes of ``uids`` that attached (see :meth:`enable_attach`) reach
        this hub's ready cells through the host (``cellshm.Relay.*``): what a gRPC gateway
        in a process of its own needs. The host's access rules apply to the remote callers
        the relay names; spawned cells are never admitted."""
        self._native.enable_relay([int(u) for u in uids])

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
