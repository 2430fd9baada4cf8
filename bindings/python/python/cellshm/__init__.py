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

Everything public is importable from here; the code lives in ``_common`` (records,
payload and handler types, argument checks), ``_asyncio``, ``_streams``, ``_link``
(:class:`LinkEnd`: every call to the other side, written once), ``_host`` (:class:`Hub`,
:class:`Peer`), ``_cell`` and ``_supervisor``, over the native ``_native``.
"""

from __future__ import annotations

from typing import Iterator, List, NamedTuple, Tuple

from . import _native
from . import errors as _errors
from .errors import *  # noqa: F401,F403  (the exception classes are part of the API)

__version__: str = _native.VERSION
method_id = _native.method_id
status_name = _native.status_name
#: The unary call a (sync) handler is serving: ``cellshm.current_call().cancelled`` turns
#: true once the caller cancelled it or its deadline passed; ``wait_cancelled(timeout)``
#: waits for that with the GIL released. RuntimeError outside a handler.
current_call = _native.current_call
CallContext = _native.CallContext

from ._common import (  # noqa: F401
    CallerInfo,
    AccessPolicy,
    MethodMetrics,
    PeerMetrics,
    Payload,
    Handler,
    H,
)
from ._asyncio import (  # noqa: F401
    FOREVER,
    DEFAULT_CALL_TIMEOUT,
)
from ._streams import (  # noqa: F401
    MethodKind,
    Stream,
    StreamCall,
    StreamHandler,
    SH,
)
from ._link import (  # noqa: F401
    LinkEnd,
)
from ._topics import (  # noqa: F401
    Loan,
    Policy,
    Publisher,
    Sample,
    Subscriber,
    Topics,
    wait_any,
)
from ._host import (  # noqa: F401
    Peer,
    Hub,
)
from ._remote import (  # noqa: F401
    Remote,
)
from ._cell import (  # noqa: F401
    Cell,
    CellLogHandler,
)
from ._supervisor import (  # noqa: F401
    SupervisorEvent,
    Subscription,
    Supervisor,
    Supervised,
)


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
    "Remote",
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
    "Topics",
    "Policy",
    "Publisher",
    "Loan",
    "Subscriber",
    "Sample",
    "wait_any",
]
# Extended from the literal list in errors.py, which type checkers follow.
__all__ += _errors.__all__
