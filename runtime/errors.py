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
    └── DataError(ValueError)       INVALID_ARGUMENT   training data that cannot be used
"""

from __future__ import annotations

__all__ = [
    "CodesError",
    "DataError",
    "FingerprintMismatch",
    "InputError",
    "IntegrityError",
    "LatentwireError",
    "PackageError",
    "ProviderError",
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
