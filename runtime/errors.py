"""Exceptions raised by latentwire.

Every error the package raises on purpose derives from `LatentwireError` and knows the gRPC
status it maps to, so the server (and the CLI) translate errors in one place::

    LatentwireError                 INTERNAL
    ├── InputError(ValueError)      INVALID_ARGUMENT   arrays of the wrong shape/dtype, NaN/Inf
    ├── CodesError(ValueError)      INVALID_ARGUMENT   malformed codes or codes files
    ├── FingerprintMismatch         FAILED_PRECONDITION codes made by another encoder
    ├── PackageError                FAILED_PRECONDITION unreadable/incomplete model package
    │   └── IntegrityError          FAILED_PRECONDITION sha256 or fingerprint does not match
    ├── ProviderError               FAILED_PRECONDITION execution provider asked for is unusable
    ├── DataError(ValueError)       INVALID_ARGUMENT   training data that cannot be used
    ├── ModelNotFound(LookupError)  NOT_FOUND          no loaded model of that name/version
    ├── Overloaded                  RESOURCE_EXHAUSTED queue full, message over the size limit
    ├── DeadlineExceeded(TimeoutError) DEADLINE_EXCEEDED the caller's deadline passed
    ├── Unavailable                 UNAVAILABLE        server not ready, shutting down, unreachable
    ├── Unauthenticated             UNAUTHENTICATED    missing or wrong bearer token
    └── ServerError                 INTERNAL (or the status the server sent)

The client SDK turns a gRPC status back into the same class: the server names the class in
the trailing metadata key "latentwire-error", and `error_from_status` falls back to the
status code when it is absent (another server, or a transport error).
"""

from __future__ import annotations

__all__ = [
    "ERROR_KEY",
    "CodesError",
    "DataError",
    "DeadlineExceeded",
    "FingerprintMismatch",
    "InputError",
    "IntegrityError",
    "LatentwireError",
    "ModelNotFound",
    "Overloaded",
    "PackageError",
    "ProviderError",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "error_from_status",
]


class LatentwireError(Exception):
    """Base class; `status` is the gRPC status code name the error maps to."""

    status = "INTERNAL"


class InputError(LatentwireError, ValueError):
    """An input array does not match what the model expects."""

    status = "INVALID_ARGUMENT"


class CodesError(LatentwireError, ValueError):
    """Codes (a message or a codes file) are malformed."""

    status = "INVALID_ARGUMENT"


class FingerprintMismatch(LatentwireError):
    """Codes were made by a different encoder than the one this decoder belongs to."""

    status = "FAILED_PRECONDITION"


class PackageError(LatentwireError):
    """A model package is missing, incomplete or unreadable."""

    status = "FAILED_PRECONDITION"


class IntegrityError(PackageError):
    """A package file's sha256 or the fingerprint does not match the manifest."""


class ProviderError(LatentwireError):
    """The execution provider that was asked for cannot be used."""

    status = "FAILED_PRECONDITION"


class DataError(LatentwireError, ValueError):
    """Training data cannot be loaded or used."""

    status = "INVALID_ARGUMENT"


class ModelNotFound(LatentwireError, LookupError):
    """No loaded model (or version) has the name, version or fingerprint asked for."""

    status = "NOT_FOUND"


class Overloaded(LatentwireError):
    """The server's queue is full or a message is over the size limit; retry later/smaller."""

    status = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(LatentwireError, TimeoutError):
    """The caller's deadline passed before the work was done."""

    status = "DEADLINE_EXCEEDED"


class Unavailable(LatentwireError):
    """The server is not ready (loading, warming up, shutting down) or cannot be reached."""

    status = "UNAVAILABLE"


class Unauthenticated(LatentwireError):
    """The bearer token is missing or wrong."""

    status = "UNAUTHENTICATED"


class ServerError(LatentwireError):
    """The server failed (INTERNAL) or answered with a status no other class covers."""

    def __init__(self, message: str, status: str = "INTERNAL") -> None:
        super().__init__(message)
        self.status = status


ERROR_KEY = "latentwire-error"
"""Trailing-metadata key in which the server names the error class of a failed call."""

_BY_NAME: dict[str, type[LatentwireError]] = {
    cls.__name__: cls
    for cls in (
        CodesError,
        DataError,
        FingerprintMismatch,
        InputError,
        IntegrityError,
        PackageError,
        ProviderError,
        ModelNotFound,
        Overloaded,
        DeadlineExceeded,
        Unavailable,
        Unauthenticated,
    )
}
_BY_STATUS: dict[str, type[LatentwireError]] = {
    "INVALID_ARGUMENT": InputError,
    "NOT_FOUND": ModelNotFound,
    "RESOURCE_EXHAUSTED": Overloaded,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "UNAVAILABLE": Unavailable,
    "UNAUTHENTICATED": Unauthenticated,
}


def error_from_status(status: str, message: str, kind: str | None = None) -> LatentwireError:
    """The exception for a gRPC status name, preferring the class the server named."""
    cls = _BY_NAME.get(kind or "")
    if cls is not None and cls.status == status:
        return cls(message)
    if kind is None and status in _BY_STATUS:
        return _BY_STATUS[status](message)
    return ServerError(message, status)
