"""The cell: `Cell` and `CellLogHandler`."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, Callable, Optional, Sequence

from . import _native
from .errors import CellshmError, PeerDead
from ._common import H, _to_cellshm_level
from ._asyncio import _loop_calls
from ._streams import MethodKind, SH, StreamCall
from ._link import LinkEnd, _registering, _registering_stream
from ._host import _RESERVED_RECORD_KEYS
from ._topics import Topics


class Cell(LinkEnd, Topics):
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
        return _registering(self._native, name, view, lambda: self._loop)

    def stream_method(self, name: str, *, kind: Optional[MethodKind] = None) -> Callable[[SH], SH]:
        """Decorator registering a stream handler for ``"Service.method"``: it runs on its
        own thread for each stream opened to it, gets a :class:`StreamCall`, and returns
        the final response (bytes-like or None). Raising ends the stream with that error.
        ``kind`` (a :class:`MethodKind`) is what ``cellshm.Introspect.methods`` reports;
        by default the stream's direction is left undeclared."""
        return _registering_stream(self._native, name, kind, lambda: self._loop)

    def describe(self, file_descriptor_set: bytes) -> None:
        """Keeps ``file_descriptor_set`` (a serialized ``google.protobuf.FileDescriptorSet``)
        as the description of the services served here: a gRPC gateway answers reflection
        from it (``grpcurl describe``). Generated ``serve_<svc>`` functions pass the set
        ``cellshm-codegen`` embeds; a set given twice is kept once."""
        self._native.describe(bytes(file_descriptor_set))

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
