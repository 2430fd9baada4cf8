"""Types and helpers every part shares: caller and metrics records, payloads, handler types, argument checks, log levels."""

from __future__ import annotations

import logging
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

from . import _native
current_call = _native.current_call
status_name = _native.status_name


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
    #: A client of the hub's gRPC gateway, named by its TLS certificate's subject or its
    #: token (no peer id, pid or uid): what an access policy sees for a remote call.
    remote: bool = False


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
