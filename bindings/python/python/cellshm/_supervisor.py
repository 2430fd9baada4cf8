"""Supervision: `Supervisor`, its events and subscriptions, and `Supervised` cells."""

from __future__ import annotations

import logging
from typing import Callable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from . import _native
from .errors import AlreadyExists, DeadlineExceeded, Unavailable
from ._common import (
    AccessPolicy,
    H,
    Payload,
    _access_policy,
    _argv,
    _heartbeat,
    _names,
    _slot_classes,
)
from ._asyncio import DEFAULT_CALL_TIMEOUT, FOREVER, _check_timeout
from ._link import LinkEnd, _registering
from ._host import Hub, _log_to_python
from ._remote import ADD_REMOTE_DOC, Remote, _methods as _remote_methods
from ._streams import MethodKind
from ._topics import Topics


class SupervisorEvent(NamedTuple):
    """A status change of one supervised cell."""

    name: str
    #: "starting", "ready", "stopping", "exited", "crashed", "failed", "removed", or
    #: "unavailable" (a remote, :meth:`Supervisor.add_remote`, whose health check fails).
    status: str
    #: Why the instance ended ("signal 9", "code 3", "goodbye", "stopped (exit code 0)",
    #: ...), for "exited", "crashed" and "failed"; why a remote is "unavailable"; else None.
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


class Supervisor(Topics):
    """Keeps cells alive under stable names: relaunch on crash with capped exponential
    backoff, no relaunch after a goodbye, graceful stop (GOODBYE, SIGTERM, SIGKILL),
    restart, removal and new recipes at run time.
    Statuses: "starting", "ready", "stopping", "exited", "crashed", "failed", "removed",
    each with a reason ("signal 9", "code 3", "goodbye", ...) once it ended; a remote gRPC
    server it watches (:meth:`add_remote`) is "ready" or "unavailable" (with why)."""

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
        return _registering(self._native, name, view, lambda: None, allow)

    def add_remote(
        self,
        name: str,
        url: str,
        *,
        methods: Optional[Sequence[Tuple[str, MethodKind]]] = None,
        timeout: float = 5.0,
        health_interval: float = 1.0,
    ) -> Remote:
        return Remote(self._native.add_remote(name, url, _remote_methods(methods), timeout, health_interval))

    add_remote.__doc__ = ADD_REMOTE_DOC + """

The supervisor also watches it under ``name``: it is listed by :meth:`names` and its
gRPC health is checked every ``health_interval`` seconds: "ready" while it serves (a server
without a health service counts while it answers), "unavailable" (with the reason) while
not, with an event on each change. It is never launched or stopped (:meth:`stop`,
:meth:`start`, :meth:`restart` and calls through the supervisor raise
:class:`FailedPrecondition`); :meth:`remove` forgets it."""

    def describe(self, file_descriptor_set: bytes) -> None:
        """Keeps ``file_descriptor_set`` (a serialized ``google.protobuf.FileDescriptorSet``)
        as the description of the services served here: a gRPC gateway answers reflection
        from it (``grpcurl describe``). Generated ``serve_<svc>`` functions pass the set
        ``cellshm-codegen`` embeds; a set given twice is kept once."""
        self._native.describe(bytes(file_descriptor_set))

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

    async def call_async(
        self, name: str, method: str, payload: Payload = b"", *, timeout: Optional[float] = None
    ) -> bytes:
        """:meth:`call` on the running asyncio loop: ``await self.cell(name).call_async(...)``."""
        return await self.cell(name).call_async(method, payload, timeout=timeout)

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
