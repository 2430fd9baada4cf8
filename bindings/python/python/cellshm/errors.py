"""Exceptions: one class per cellshm status, all under :class:`CellshmError`.

The codes are cellshm's one status table (gRPC's canonical codes, then cellshm's own
from 100), the same numbers as in Rust and C.
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class CellshmError(Exception):
    """A failed cellshm operation. ``code`` is the status number, ``status`` its name,
    ``message`` the text. Raise one (or a subclass) from a handler to send that status
    to the caller."""

    code: int = 2
    status: str = "UNKNOWN"

    def __init__(self, message: str = "", code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
            self.status = _NAMES.get(code, "UNKNOWN")

    def __str__(self) -> str:
        return f"{self.status}: {self.message}" if self.message else self.status


class Cancelled(CellshmError):
    """The call was cancelled (CANCELLED, 1)."""

    code, status = 1, "CANCELLED"


class Unknown(CellshmError):
    """An error with no better status (UNKNOWN, 2)."""

    code, status = 2, "UNKNOWN"


class InvalidArgument(CellshmError, ValueError):
    """The request was invalid (INVALID_ARGUMENT, 3)."""

    code, status = 3, "INVALID_ARGUMENT"


class DeadlineExceeded(CellshmError, TimeoutError):
    """No response before the deadline (DEADLINE_EXCEEDED, 4)."""

    code, status = 4, "DEADLINE_EXCEEDED"


class NotFound(CellshmError):
    """Something the request named does not exist (NOT_FOUND, 5)."""

    code, status = 5, "NOT_FOUND"


class AlreadyExists(CellshmError):
    """Something already exists, e.g. a method registered twice (ALREADY_EXISTS, 6)."""

    code, status = 6, "ALREADY_EXISTS"


class PermissionDenied(CellshmError):
    """Not allowed (PERMISSION_DENIED, 7)."""

    code, status = 7, "PERMISSION_DENIED"


class ResourceExhausted(CellshmError):
    """A ring or slot pool stayed full until the deadline (RESOURCE_EXHAUSTED, 8)."""

    code, status = 8, "RESOURCE_EXHAUSTED"


class FailedPrecondition(CellshmError):
    """The system is not in a state to do this (FAILED_PRECONDITION, 9)."""

    code, status = 9, "FAILED_PRECONDITION"


class Aborted(CellshmError):
    """The operation was aborted (ABORTED, 10)."""

    code, status = 10, "ABORTED"


class OutOfRange(CellshmError):
    """A value out of range (OUT_OF_RANGE, 11)."""

    code, status = 11, "OUT_OF_RANGE"


class Unimplemented(CellshmError, NotImplementedError):
    """The callee serves no such method (UNIMPLEMENTED, 12)."""

    code, status = 12, "UNIMPLEMENTED"


class Internal(CellshmError):
    """The handler failed unexpectedly, e.g. raised a non-cellshm exception (INTERNAL, 13)."""

    code, status = 13, "INTERNAL"


class Unavailable(CellshmError):
    """Not available right now (UNAVAILABLE, 14)."""

    code, status = 14, "UNAVAILABLE"


class DataLoss(CellshmError):
    """Data was lost or corrupted (DATA_LOSS, 15)."""

    code, status = 15, "DATA_LOSS"


class Unauthenticated(CellshmError):
    """Not authenticated (UNAUTHENTICATED, 16)."""

    code, status = 16, "UNAUTHENTICATED"


class PeerDead(CellshmError, ConnectionError):
    """The other process died or closed its doorbell (PEER_DEAD, 100)."""

    code, status = 100, "PEER_DEAD"


class SessionClosed(CellshmError):
    """The local link was closed (SESSION_CLOSED, 101)."""

    code, status = 101, "SESSION_CLOSED"


class PayloadTooLarge(CellshmError, ValueError):
    """The payload is larger than the largest slot (PAYLOAD_TOO_LARGE, 102)."""

    code, status = 102, "PAYLOAD_TOO_LARGE"


class ProtocolError(CellshmError):
    """The peer broke the protocol and was dropped (PROTOCOL_ERROR, 103)."""

    code, status = 103, "PROTOCOL_ERROR"


class HubFull(CellshmError):
    """Every peer slot of the hub is in use (HUB_FULL, 104)."""

    code, status = 104, "HUB_FULL"


class SystemCallFailed(CellshmError, OSError):
    """An operating-system call failed (SYSTEM_ERROR, 105)."""

    code, status = 105, "SYSTEM_ERROR"


_BY_CODE: Dict[int, Type[CellshmError]] = {
    cls.code: cls
    for cls in (
        Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists, PermissionDenied,
        ResourceExhausted, FailedPrecondition, Aborted, OutOfRange, Unimplemented, Internal, Unavailable, DataLoss,
        Unauthenticated, PeerDead, SessionClosed, PayloadTooLarge, ProtocolError, HubFull, SystemCallFailed,
    )
}
_NAMES: Dict[int, str] = {code: cls.status for code, cls in _BY_CODE.items()}


def error_class(code: int) -> Type[CellshmError]:
    """The exception class for a status code (CellshmError for unknown codes)."""
    return _BY_CODE.get(code, CellshmError)


def _from_status(code: int, message: str) -> CellshmError:
    """Used by the native module to raise the right class."""
    error = error_class(code)(message)
    if type(error) is CellshmError:
        error.code, error.status = code, _NAMES.get(code, "UNKNOWN")
    return error


# Literal, so that type checkers see every name (mypy --strict rejects a computed list).
__all__ = [
    "CellshmError",
    "error_class",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
    "PeerDead",
    "SessionClosed",
    "PayloadTooLarge",
    "ProtocolError",
    "HubFull",
    "SystemCallFailed",
]
assert sorted(__all__[2:]) == sorted(cls.__name__ for cls in _BY_CODE.values())
