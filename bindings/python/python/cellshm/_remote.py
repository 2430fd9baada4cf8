"""Remote gRPC servers as peers of a hub: :meth:`Hub.add_remote` serves each method of a
gRPC server elsewhere as a host method, so cells call it on their host as on any other."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from ._common import Payload
from ._streams import MethodKind


class Remote:
    """A remote gRPC server added to a hub (:meth:`Hub.add_remote`). Its methods are host
    methods named ``pkg.Svc.Method``: a cell's call goes on as real gRPC (its deadline as
    ``grpc-timeout``, a cancel resets the HTTP/2 stream, stream items move as the cell's
    credit and HTTP/2's windows allow, statuses come back with their codes and
    messages); the host's allow-lists apply to them as to any host method."""

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def name(self) -> str:
        return str(self._native.name)

    @property
    def url(self) -> str:
        return str(self._native.url)

    @property
    def methods(self) -> List[Tuple[str, MethodKind]]:
        """The methods served from it, with how each is called."""
        return [(name, MethodKind(kind)) for name, kind in self._native.methods]

    @property
    def counters(self) -> Tuple[int, int]:
        """(calls forwarded to it, how many of those failed)."""
        calls, failed = self._native.counters
        return int(calls), int(failed)

    def call(self, method: str, payload: Optional[Payload] = None, *, timeout: Optional[float] = None) -> bytes:
        """A unary call from the host itself (``method`` is ``"pkg.Svc.Method"``; the GIL is
        released while it waits; ``timeout`` None is the default call timeout)."""
        return bytes(self._native.call(method, payload, timeout))

    def is_serving(self, service: str = "", *, timeout: float = 5.0) -> bool:
        """The remote's ``grpc.health.v1.Health/Check`` of ``service`` ("" for the server):
        True for SERVING. Raises as a call does (e.g. :class:`Unimplemented` if it has no
        health service)."""
        return bool(self._native.is_serving(service, timeout))

    def __repr__(self) -> str:
        return f"Remote({self.name!r}, {self.url!r}, {len(self.methods)} methods)"


def _methods(methods: Optional[Sequence[Tuple[str, MethodKind]]]) -> Optional[List[Tuple[str, int]]]:
    if methods is None:
        return None
    return [(str(name), int(MethodKind(kind))) for name, kind in methods]


ADD_REMOTE_DOC = """Connects to the gRPC server at ``url`` (``http://host:port``) and serves
each of its methods as a host method named ``pkg.Svc.Method``: the ones ``methods`` names
(``[("kv.Store.Get", MethodKind.UNARY), ...]``), else every one its gRPC server reflection
lists. Cells then call them on their host like any host method. Raises
:class:`Unavailable` if it cannot be reached within ``timeout`` seconds,
:class:`Unimplemented` if it serves no reflection and no method was named,
:class:`AlreadyExists` if a name is served here already."""
