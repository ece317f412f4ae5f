"""Checks and quiet binding at server start, so that a mistake gives one clean line.

grpc-core and the native front print their own log lines to the process's stderr (fd 2)
when a bind fails or TLS files are bad, ahead of (and less clear than) our error; and
grpc-core reports bad TLS files as "cannot listen". Here the TLS files are checked with
Python's `ssl` first, and what native code writes to fd 2 while binding is held back: it
is written out when the bind succeeds and logged at debug level when it fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import Unavailable

log = logging.getLogger("latentwire.serve")


def _no_password() -> bytes:
    raise Unavailable("the TLS key is encrypted; give an unencrypted PEM key")


def check_tls_files(cert: Path, key: Path, client_ca: Path | None) -> None:
    """Refuse unreadable or malformed PEM files, and a key that is not the certificate's,
    naming the file. Messages never include file contents."""
    for path, what in ((cert, "--tls-cert"), (key, "--tls-key"), (client_ca, "--tls-client-ca")):
        if path is not None and not path.is_file():
            raise Unavailable(f"{what} {path}: no such file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as exc:
        raise Unavailable(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate chain and its "
            f"matching private key ({exc.reason or exc.strerror or 'unreadable'})"
        ) from None
    except OSError as exc:
        raise Unavailable(f"cannot read TLS files {cert}, {key}: {exc.strerror}") from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or "unreadable"
            raise Unavailable(
                f"--tls-client-ca {client_ca}: not a PEM CA certificate ({reason})"
            ) from None


@contextlib.contextmanager
def native_stderr_held() -> Iterator[None]:
    """Hold what is written to fd 2 during the block (see the module doc). Only for short
    blocks at start-up: Python logging from other threads meanwhile is held too."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded, closed): nothing to hold
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read()
            if text and ok:
                os.write(2, text)
            elif text:
                log.debug("native output while binding: %s", text.decode(errors="replace").strip())
