"""Client SDK for a latentwire server (`latentwire.v1.Codec` over gRPC), sync and asyncio.

Torch-free and onnx-free: numpy, grpcio and protobuf only, so it fits on edge devices::

    from latentwire.runtime.client import Client
    from latentwire.runtime.model import Model

    encoder = Model("models/digits", roles=("encoder",))
    with Client("decoder.example:8500") as client:
        result = client.decode(encoder.encode_codes(x))   # one Decode RPC per message
        x_hat = result.x
        scored = client.score(encoder.encode_codes(x))    # a package trained --task anomaly
        scored.scores, scored.flags, scored.threshold

Every RPC gets a deadline (`timeout`, per call or the client's default, spanning the
retries) and is retried with exponential backoff and jitter when the server answers
UNAVAILABLE (unreachable, loading, shutting down); decoding is a pure function, so a retry
is always safe. A DecodeStream that breaks with UNAVAILABLE (the server was killed,
restarted or is shutting down) goes on over a new stream: every request the server has not
answered yet is sent again, in order, before the next new one, so each message gives
exactly one result whatever the breaks. `retries` counts breaks in a row with no answer in
between.

Every gRPC error becomes the package's own exception (`latentwire.runtime.errors`): the
server names the class in the trailing metadata key "latentwire-error", and
`error_from_status` falls back to the status code when it is absent (transport errors).
`AsyncClient` has the same methods as coroutines; create it inside the running event loop.

Several replicas: give a target that resolves to all of them and calls are spread over
them (`lb_policy`): `dns:///latentwire-headless.NS.svc.cluster.local:8001` (a Kubernetes
headless Service: one address per ready pod) or `ipv4:10.0.0.1:8001,10.0.0.2:8001`. gRPC
resolves the name again when a connection drops; servers run with
`--max-connection-age-s` so that happens and pods added later get calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias, TypeVar

import grpc
import grpc.aio
import numpy as np

from ._proto.v1 import codec_pb2, codec_pb2_grpc
from .codes import OUTPUT_DTYPES, array_to_tensor, tensor_to_array
from .errors import (
    ERROR_KEY,
    CodesError,
    InputError,
    IntegrityError,
    LatentwireError,
    PackageError,
    ServerError,
    error_from_status,
)

__all__ = [
    "LB_POLICIES",
    "OUTPUT_DTYPES",
    "AsyncClient",
    "Client",
    "DecodeResult",
    "ScoreReply",
    "StreamResult",
    "lb_policy_for",
]

log = logging.getLogger("latentwire.client")

LB_POLICIES = ("pick_first", "round_robin")
"""gRPC load-balancing policies a client can ask for (`lb_policy`)."""

MAX_BACKOFF = 10.0
"""Longest pause between two attempts, in seconds (before jitter)."""

_T = TypeVar("_T")
CodesInput: TypeAlias = codec_pb2.Codes | Iterable[codec_pb2.Codes]


# -- results ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecodeResult:
    """Reconstructions of one or more Codes messages, concatenated in order."""

    x: np.ndarray
    """Reconstructions in the user's units: shape (count, *input shape)."""
    model_name: str
    model_version: str
    """The version directory that decoded the codes."""
    fingerprint: str


@dataclass(frozen=True)
class ScoreReply:
    """Anomaly scores of one or more Codes messages from the server's Score RPC, concatenated
    in order (the fields of `latentwire.runtime.anomaly.ScoreResult`, and who scored)."""

    score: str
    """Which score ran ("gmm", "mahalanobis", "knn")."""
    scores: np.ndarray
    """float64 [N], higher = more anomalous."""
    flags: np.ndarray
    """bool [N]: scores > threshold (the server's is_anomaly)."""
    threshold: float
    """The threshold the flags used (the first message's; one encoder's messages share it)."""
    p_values: np.ndarray
    """float64 [N]: share of held-out normal scores >= each score (small = unusual)."""
    model_name: str
    model_version: str
    fingerprint: str


@dataclass(frozen=True)
class StreamResult:
    """The server's answer to one request of a DecodeStream: reconstructions or an error."""

    id: str
    """The request's id: "0", "1", ... in the order the messages were given."""
    x: np.ndarray | None
    """Reconstructions (None when the request failed)."""
    error: LatentwireError | None
    """What went wrong for this request (None when it was decoded)."""
    model_name: str = ""
    model_version: str = ""
    fingerprint: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> np.ndarray:
        """The reconstructions, or raise this request's error."""
        if self.error is not None:
            raise self.error
        assert self.x is not None
        return self.x


# -- shared helpers (sync and async) -----------------------------------------------------
def lb_policy_for(target: str, lb_policy: str | None = None) -> str:
    """The load-balancing policy a client uses for `target`: `lb_policy` when given, else
    round_robin for targets that name several servers (`dns:` and multi-address `ipv4:` /
    `ipv6:` ones), pick_first otherwise."""
    if lb_policy is not None:
        if lb_policy not in LB_POLICIES:
            raise ValueError(
                f"lb_policy must be None (auto), 'pick_first' or 'round_robin', got {lb_policy!r}"
            )
        return lb_policy
    if target.startswith("dns:") or _addresses(target):
        return "round_robin"
    return "pick_first"


def _addresses(target: str) -> list[str]:
    """The addresses of a multi-address `ipv4:`/`ipv6:` target ([] for any other)."""
    scheme, _, rest = target.partition(":")
    if scheme not in ("ipv4", "ipv6") or "," not in rest:
        return []
    return rest.split(",")


def _channel_options(
    target: str,
    max_message_bytes: int,
    server_name_override: str | None,
    backoff: float,
    lb_policy: str,
) -> list[Any]:
    if max_message_bytes < 1:
        raise ValueError(f"max_message_bytes must be >= 1, got {max_message_bytes}")
    options: list[Any] = [
        ("grpc.lb_policy_name", lb_policy),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # reconnect on our retry schedule: with gRPC's default (1 s, growing) a channel that
        # once failed to connect keeps failing fast, so early retries could never succeed
        ("grpc.initial_reconnect_backoff_ms", max(int(backoff * 1000), 10)),
        ("grpc.max_reconnect_backoff_ms", int(MAX_BACKOFF * 1000)),
    ]
    if server_name_override:
        options.append(("grpc.ssl_target_name_override", server_name_override))
    if addresses := _addresses(target):
        # gRPC would send "a:p,b:p" as the :authority; HTTP/2 servers that check it (the
        # native front) refuse the call with RST_STREAM PROTOCOL_ERROR
        options.append(("grpc.default_authority", addresses[0].strip("/")))
    return options


def _credentials(
    tls: bool,
    root_certificates: bytes | None,
    certificate_chain: bytes | None,
    private_key: bytes | None,
    token: str | None,
) -> Any:
    """Channel credentials for TLS (with the token as call credentials), or None."""
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("certificate_chain and private_key go together (mutual TLS)")
    if not (tls or root_certificates or certificate_chain):
        return None
    creds = grpc.ssl_channel_credentials(
        root_certificates=root_certificates,
        private_key=private_key,
        certificate_chain=certificate_chain,
    )
    if token:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
    return creds


class _Settings:
    """Everything both clients derive from their constructor arguments."""

    def __init__(
        self,
        target: str,
        tls: bool,
        root_certificates: bytes | None,
        certificate_chain: bytes | None,
        private_key: bytes | None,
        token: str | None,
        timeout: float | None,
        retries: int,
        backoff: float,
        max_message_bytes: int,
        server_name_override: str | None,
        lb_policy: str | None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {backoff}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 or None, got {timeout}")
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.lb_policy = lb_policy_for(target, lb_policy)
        self.options = _channel_options(
            target, max_message_bytes, server_name_override, backoff, self.lb_policy
        )
        self.credentials = _credentials(
            tls, root_certificates, certificate_chain, private_key, token
        )
        # with TLS the token travels as call credentials; an insecure channel refuses
        # those, so there it goes as plain metadata on every call
        self.metadata: tuple[tuple[str, str], ...] | None = (
            (("authorization", f"Bearer {token}"),) if token and self.credentials is None else None
        )

    def attempts(self, timeout: float | None) -> _Attempts:
        return _Attempts(self.retries, self.backoff, self.timeout if timeout is None else timeout)


class _Attempts:
    """One call's retry budget: the deadline spans every attempt."""

    def __init__(self, retries: int, backoff: float, timeout: float | None) -> None:
        self.retries = retries
        self.backoff = backoff
        self.done = 0
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def progress(self) -> None:
        """An attempt got somewhere (a stream answered): the next failure starts the retry
        count afresh. The deadline still spans every attempt."""
        self.done = 0

    def remaining(self) -> float | None:
        """Seconds left for the next attempt (None: no deadline)."""
        if self.deadline is None:
            return None
        return max(self.deadline - time.monotonic(), 0.0)

    def next_delay(self, exc: grpc.RpcError) -> float | None:
        """Seconds to wait before retrying after `exc`, or None to give up."""
        if _code_name(exc) != "UNAVAILABLE" or self.done >= self.retries:
            return None
        delay = min(self.backoff * 2.0**self.done, MAX_BACKOFF) * random.uniform(0.5, 1.5)
        left = self.remaining()
        if left is not None and delay >= left:
            return None
        self.done += 1
        log.debug("server unavailable (%s); retry %d in %.3fs", _details(exc), self.done, delay)
        return delay


def _code_name(exc: grpc.RpcError) -> str:
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    return str(getattr(code, "name", "UNKNOWN"))


def _details(exc: grpc.RpcError) -> str:
    details = exc.details() if callable(getattr(exc, "details", None)) else None
    return str(details or exc)


def _error(exc: grpc.RpcError, target: str) -> LatentwireError:
    """The package's exception for a gRPC error (class named by the server when it did).
    Errors the server did not name (transport errors, another server) say where they
    came from."""
    kind: str | None = None
    trailing = (
        exc.trailing_metadata() if callable(getattr(exc, "trailing_metadata", None)) else None
    )
    for key, value in trailing or ():
        if key == ERROR_KEY:
            kind = value.decode() if isinstance(value, bytes) else str(value)
    details = _details(exc) if kind else f"server {target}: {_details(exc)}"
    return error_from_status(_code_name(exc), details, kind)


def _check_output_dtype(output_dtype: str) -> str:
    if output_dtype not in OUTPUT_DTYPES:
        raise InputError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {output_dtype!r}")
    return output_dtype


def _as_messages(codes: CodesInput) -> list[codec_pb2.Codes]:
    messages = [codes] if isinstance(codes, codec_pb2.Codes) else list(codes)
    if not messages:
        raise CodesError("no codes to decode")
    return messages


def _reconstruction(resp: codec_pb2.DecodeResponse, count: int | None) -> np.ndarray:
    x = tensor_to_array(resp.reconstruction)
    if count is not None and (x.ndim == 0 or x.shape[0] != count):
        raise CodesError(f"the server sent reconstructions of shape {x.shape} for {count} samples")
    return x


def _decode_result(
    responses: list[codec_pb2.DecodeResponse], messages: list[codec_pb2.Codes]
) -> DecodeResult:
    parts = [_reconstruction(r, int(m.count)) for r, m in zip(responses, messages, strict=True)]
    first = responses[0]
    return DecodeResult(
        x=parts[0] if len(parts) == 1 else np.concatenate(parts),
        model_name=first.model_name,
        model_version=first.model_version,
        fingerprint=first.fingerprint,
    )


def _stream_result(resp: codec_pb2.DecodeResponse) -> StreamResult:
    err: LatentwireError | None = None
    if resp.HasField("error"):
        # the server names the error class, as in a failed call's trailing metadata
        err = error_from_status(
            resp.error.code or "UNKNOWN", resp.error.message, resp.error.kind or None
        )
    else:
        try:
            x = _reconstruction(resp, None)
        except CodesError as exc:  # a malformed answer spoils this item, not the stream
            err = exc
    if err is not None:
        return StreamResult(
            id=resp.id, x=None, error=err, model_name=resp.model_name, fingerprint=resp.fingerprint
        )
    return StreamResult(
        id=resp.id,
        x=x,
        error=None,
        model_name=resp.model_name,
        model_version=resp.model_version,
        fingerprint=resp.fingerprint,
    )


def _score_request(
    i: int, msg: codec_pb2.Codes, score: str, threshold: float | None, fpr: float | None
) -> codec_pb2.ScoreRequest:
    return codec_pb2.ScoreRequest(id=str(i), codes=msg, score=score, threshold=threshold, fpr=fpr)


def _score_reply(
    responses: list[codec_pb2.ScoreResponse], messages: list[codec_pb2.Codes]
) -> ScoreReply:
    parts: dict[str, list[np.ndarray]] = {"scores": [], "flags": [], "p_values": []}
    for r, m in zip(responses, messages, strict=True):
        n = int(m.count)
        tensors = (("scores", r.scores), ("flags", r.is_anomaly), ("p_values", r.p_values))
        for key, tensor in tensors:
            arr = tensor_to_array(tensor)
            if arr.shape != (n,):
                raise CodesError(f"the server sent {key} of shape {arr.shape} for {n} samples")
            parts[key].append(arr)
    first = responses[0]
    joined = {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items()}
    return ScoreReply(
        score=first.score,
        scores=joined["scores"].astype(np.float64, copy=False),
        flags=joined["flags"] != 0,
        threshold=first.threshold,
        p_values=joined["p_values"].astype(np.float64, copy=False),
        model_name=first.model_name,
        model_version=first.model_version,
        fingerprint=first.fingerprint,
    )


def _decode_request(i: int, msg: codec_pb2.Codes, dtype: str) -> codec_pb2.DecodeRequest:
    return codec_pb2.DecodeRequest(id=str(i), codes=msg, output_dtype=dtype)


def _encode_request(name: str, x: np.ndarray, version: str) -> codec_pb2.EncodeRequest:
    return codec_pb2.EncodeRequest(
        model_name=name, model_version=version, inputs=array_to_tensor(np.asarray(x))
    )


HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_SERVING_STATUS = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")
"""grpc.health.v1.HealthCheckResponse.ServingStatus by number."""


def _health_request(service: str) -> bytes:
    """A grpc.health.v1.HealthCheckRequest in protobuf's wire form (field 1: the service
    name), written here so that the client needs no grpcio-health-checking, which only a
    server installs."""
    name = service.encode()
    size = bytearray()
    n = len(name)
    while True:  # varint length
        size.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            break
    return b"\n" + bytes(size) + name if name else b""


def _health_status(data: bytes) -> str:
    """The status of a HealthCheckResponse (field 1, a varint; absent means UNKNOWN)."""
    status, pos = 0, 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            field, kind = key >> 3, key & 7
            if kind == 0:
                value, pos = _varint(data, pos)
                if field == 1:
                    status = value
            elif kind == 2:
                length, pos = _varint(data, pos)
                pos += length
            elif kind in (1, 5):
                pos += 8 if kind == 1 else 4
            else:
                raise ValueError(kind)
        if pos > len(data):
            raise ValueError(pos)
    except (ValueError, IndexError):
        raise ServerError("the server's health answer is not a HealthCheckResponse") from None
    return _SERVING_STATUS[status] if status < len(_SERVING_STATUS) else str(status)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _health_error(exc: LatentwireError) -> str:
    """A health check of a service the server does not know is an answer, not an error."""
    if exc.status == "NOT_FOUND":
        return "SERVICE_UNKNOWN"
    raise exc


def _checked_file(f: codec_pb2.PackageFile, files: Any) -> tuple[str, bytes]:
    """(file name, bytes) of one more package file from FetchEncoder, after checking its
    sha256 against the server's word and the manifest's."""
    entry = files.get(f.role) if isinstance(files, dict) and f.role != "encoder" else None
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise IntegrityError(f"the server sent a file {f.role!r:.40} its manifest does not name")
    digest = hashlib.sha256(f.data).hexdigest()
    for want, whose in (
        (f.sha256.lower(), "the server says"),
        (entry["sha256"].lower(), "its manifest expects"),
    ):
        if digest != want:
            raise IntegrityError(
                f"{f.role} from the server has sha256 {digest[:16]}..., {whose} "
                f"{want[:16] or '(none)'}...: the transfer was damaged or the package is "
                "inconsistent"
            )
    return _safe_file_name(entry.get("path"), f"{f.role}.bin", f.role), f.data


def _safe_file_name(name: object, default: str, role: str = "encoder") -> str:
    """A manifest's file name, refused when it would leave the package folder."""
    text = default if name is None else str(name)
    bad = text in ("", ".", "..", "manifest.json")
    if bad or "/" in text or "\\" in text or "\0" in text:
        raise IntegrityError(f"the manifest names the {role} file {text!r}; expected a file name")
    return text


def _check_out_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PackageError(f"{out} exists and is not a folder; give a new folder for the package")
    if out.is_dir() and any(out.iterdir()):
        raise PackageError(f"{out} already exists and is not empty; give a new or empty folder")
    return out


def _write_encoder_package(resp: codec_pb2.FetchEncoderResponse, out_dir: str | Path) -> Path:
    """Check a FetchEncoder answer's sha256s and write it as an edge package, atomically."""
    out = _check_out_dir(out_dir)
    blob = resp.encoder_onnx
    digest = hashlib.sha256(blob).hexdigest()
    if digest != resp.sha256.lower():
        raise IntegrityError(
            f"encoder.onnx from the server has sha256 {digest[:16]}..., the server says "
            f"{resp.sha256[:16] or '(none)'}...: the transfer was damaged"
        )
    text = resp.model.manifest_json
    try:
        manifest = json.loads(text)
        files = manifest["files"]
        entry = files["encoder"]
        expected = str(entry["sha256"]).lower()
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(
            "the server's manifest is not valid JSON with files.encoder.sha256"
        ) from None
    if digest != expected:
        raise IntegrityError(
            f"encoder.onnx from the server has sha256 {digest[:16]}..., its manifest expects "
            f"{expected[:16]}...: the server's package is inconsistent"
        )
    file_name = _safe_file_name(
        entry.get("path") if isinstance(entry, dict) else None, "encoder.onnx"
    )
    extra = [_checked_file(f, files) for f in resp.files]
    if len({file_name, *(name for name, _ in extra)}) != 1 + len(extra):
        raise IntegrityError("the server's manifest names one file for two roles")
    out.parent.mkdir(parents=True, exist_ok=True)
    # a fresh folder beside the target (mkdir, unlike mkdtemp, honours the umask), renamed
    # into place once complete: nobody ever sees half a package
    tmp = out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp"
    tmp.mkdir()
    try:
        (tmp / file_name).write_bytes(blob)
        for name, data in extra:
            (tmp / name).write_bytes(data)
        (tmp / "manifest.json").write_bytes(text.encode("utf-8"))
        try:
            os.replace(tmp, out)  # POSIX: also replaces an empty folder in one step
        except OSError:
            _check_out_dir(out)  # someone filled it meanwhile: refuse, clearly
            out.rmdir()
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.debug("wrote %s (%d bytes, sha256 %s)", out / file_name, len(blob), digest)
    return out


class _Requests:
    """DecodeStream requests with ids "0", "1", ... built from the caller's messages.

    Every request sent stays pending until the server answers its id (`answered`), so that
    when the stream breaks, a new one can send the unanswered ones again, in id order, before
    pulling new messages (`restart`). Pending requests are what is in flight: a slow server
    holds back the caller's iterable through gRPC's flow control. An answer to an id
    answered before (or never sent) is dropped, so the caller sees each id once. An
    exception from the caller's iterable ends the requests and is kept in `failure`, to be
    raised once the server has answered what was sent (gRPC would only report a cancelled
    call); such a stream is not restarted."""

    def __init__(
        self,
        messages: Iterable[codec_pb2.Codes] | AsyncIterable[codec_pb2.Codes],
        output_dtype: str,
    ) -> None:
        self._source = messages
        self._iter: Iterator[codec_pb2.Codes] | None = None
        self._aiter: AsyncIterator[codec_pb2.Codes] | None = None
        self._dtype = _check_output_dtype(output_dtype)
        self._pending: dict[int, codec_pb2.DecodeRequest] = {}
        """id -> request, sent (or about to be) and not answered; ids ascend in the dict"""
        self._replay: deque[codec_pb2.DecodeRequest] = deque()
        self._epoch = 0
        self._next_id = 0
        self.failure: Exception | None = None
        self._lock = threading.Lock()  # state; grpc's sync stream pulls on its own thread
        self._pull_lock = threading.Lock()
        self._apull_lock: asyncio.Lock | None = None

    def answered(self, request_id: str) -> bool:
        """The server answered `request_id`; False when that id was answered before: the
        answer is a duplicate and must not reach the caller."""
        try:
            i = int(request_id)
        except ValueError:
            return True  # not an id we give: nothing to check it against
        with self._lock:
            if self._pending.pop(i, None) is not None:
                return True
            return not 0 <= i < self._next_id

    @property
    def unanswered(self) -> int:
        """Requests sent and not answered yet."""
        with self._lock:
            return len(self._pending)

    def restart(self) -> bool:
        """Abandon the current attempt; True when a new one can go on (it first sends the
        requests not answered, in order)."""
        with self._lock:
            self._epoch += 1
            if self.failure is not None:
                return False
            self._replay = deque(self._pending[i] for i in sorted(self._pending))
            return True

    def _take(self, epoch: int) -> tuple[bool, codec_pb2.DecodeRequest | None]:
        """(stop, request to replay or None to pull a new one) for attempt `epoch`."""
        with self._lock:
            if epoch != self._epoch or self.failure is not None:
                return True, None
            return False, self._replay.popleft() if self._replay else None

    def _pulled(self, epoch: int, msg: codec_pb2.Codes) -> codec_pb2.DecodeRequest | None:
        """The request for a message just pulled; None when attempt `epoch` was abandoned
        meanwhile (the next attempt sends it)."""
        with self._lock:
            req = _decode_request(self._next_id, msg, self._dtype)
            self._pending[self._next_id] = req
            self._next_id += 1
            if epoch == self._epoch:
                return req
            self._replay.append(req)
            return None

    def check_complete(self) -> None:
        """After the stream ended: raise the iterable's exception, or say so when the server
        closed the stream with requests still unanswered (they would be lost silently)."""
        if self.failure is not None:
            raise self.failure
        if self._pending:
            ids = sorted(self._pending)
            raise ServerError(
                f"the server ended the DecodeStream without answering {len(ids)} request(s) "
                f"(ids {', '.join(map(str, ids[:5]))}{', ...' if len(ids) > 5 else ''})",
                "UNKNOWN",
            )

    def check_sync(self) -> None:
        if isinstance(self._source, AsyncIterable):
            raise TypeError("an async iterable of Codes needs AsyncClient.decode_stream")

    # The state lock is never held while the caller's iterable runs (it may wait for data:
    # answers must not wait for it); pulls are serialised by a lock of their own, since an
    # abandoned attempt's sender may still be pulling.
    def __iter__(self) -> Iterator[codec_pb2.DecodeRequest]:
        epoch = self._epoch
        while True:
            stop, req = self._take(epoch)
            if req is None and not stop:
                with self._pull_lock:
                    stop, req = self._take(epoch)  # refilled while this one waited
                    if req is None and not stop:
                        try:
                            if self._iter is None:
                                self._iter = iter(self._source)  # type: ignore[arg-type]
                            msg = next(self._iter, None)
                        except Exception as exc:
                            self.failure = exc
                            return
                        if msg is None:
                            return
                        req = self._pulled(epoch, msg)
                        stop = req is None
            if stop or req is None:
                return
            yield req

    async def __aiter__(self) -> AsyncIterator[codec_pb2.DecodeRequest]:
        if self._apull_lock is None:
            self._apull_lock = asyncio.Lock()
        epoch = self._epoch
        while True:
            stop, req = self._take(epoch)
            if req is None and not stop:
                async with self._apull_lock:
                    stop, req = self._take(epoch)
                    if req is None and not stop:
                        try:
                            msg = await self._apull()
                        except Exception as exc:
                            self.failure = exc
                            return
                        if msg is None:
                            return
                        req = self._pulled(epoch, msg)
                        stop = req is None
            if stop or req is None:
                return
            yield req

    async def _apull(self) -> codec_pb2.Codes | None:
        if isinstance(self._source, AsyncIterable):
            if self._aiter is None:
                self._aiter = aiter(self._source)
            try:
                return await anext(self._aiter)
            except StopAsyncIteration:
                return None
        if self._iter is None:
            self._iter = iter(self._source)
        return next(self._iter, None)


class _Base:
    """Constructor, channel and stubs shared by Client and AsyncClient."""

    _grpc: Any = grpc
    """The module that makes channels: grpc, or grpc.aio for AsyncClient."""

    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        token: str | None = None,
        timeout: float | None = 30.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_message_bytes: int = 256 << 20,
        server_name_override: str | None = None,
        lb_policy: str | None = None,
    ) -> None:
        """Connect to `target` ("host:port", or any gRPC name: "dns:///host:port",
        "ipv4:10.0.0.1:8001,10.0.0.2:8001"). TLS when `tls` or any certificate is given
        (system roots unless `root_certificates`; mutual TLS with `certificate_chain` and
        `private_key`). `token` goes as `authorization: Bearer <token>`. `timeout` is the
        default deadline of a call (None: none), `retries` how often a call answered
        UNAVAILABLE is tried again, after `backoff`, 2 x `backoff`, ... seconds (+-50%).

        `lb_policy` spreads calls when the target resolves to several servers:
        "round_robin" connects to every address and sends each call to the next one;
        "pick_first" uses one connection to the first address that answers. None (auto):
        round_robin for `dns:` targets (e.g. a Kubernetes headless Service) and multi-address
        `ipv4:`/`ipv6:` targets, pick_first otherwise, plain "host:port" included (write
        "dns:///host:port" to balance over its addresses). The policy in use is
        `self.lb_policy`. Anything else raises ValueError."""
        self.target = target
        self._settings = s = _Settings(
            target,
            tls,
            root_certificates,
            certificate_chain,
            private_key,
            token,
            timeout,
            retries,
            backoff,
            max_message_bytes,
            server_name_override,
            lb_policy,
        )
        self.lb_policy = s.lb_policy
        if s.credentials is None:
            self._channel: Any = self._grpc.insecure_channel(target, options=s.options)
        else:
            self._channel = self._grpc.secure_channel(target, s.credentials, options=s.options)
        self._stub: Any = codec_pb2_grpc.CodecStub(self._channel)  # type: ignore[no-untyped-call]
        # raw bytes both ways: see _health_request / _health_status
        self._health_check: Any = self._channel.unary_unary(HEALTH_CHECK)

    def __repr__(self) -> str:
        secure = "tls" if self._settings.credentials is not None else "insecure"
        return f"{type(self).__name__}({self.target!r}, {secure}, {self.lb_policy})"


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


async def _asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


# -- the synchronous client --------------------------------------------------------------
class Client(_Base):
    """A blocking client of a latentwire server. Use as a context manager or close()."""

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: Callable[..., _T], request: Any, timeout: float | None) -> _T:
        attempts = self._settings.attempts(timeout)
        while True:
            try:
                return method(
                    request, timeout=attempts.remaining(), metadata=self._settings.metadata
                )
            except grpc.RpcError as exc:
                delay = attempts.next_delay(exc)
                if delay is None:
                    raise _error(exc, self.target) from None
            _sleep(delay)

    def decode(
        self,
        codes: CodesInput,
        *,
        output_dtype: str = "float32",
        timeout: float | None = None,
    ) -> DecodeResult:
        """Decode Codes messages, one Decode RPC each; reconstructions are concatenated.
        `timeout` (default: the client's) is each RPC's deadline."""
        _check_output_dtype(output_dtype)
        messages = _as_messages(codes)
        responses = [
            self._call(self._stub.Decode, _decode_request(i, msg, output_dtype), timeout)
            for i, msg in enumerate(messages)
        ]
        return _decode_result(responses, messages)

    def decode_stream(
        self,
        messages: Iterable[codec_pb2.Codes],
        *,
        output_dtype: str = "float32",
        timeout: float | None = None,
    ) -> Iterator[StreamResult]:
        """Decode messages over one DecodeStream, yielding each answer as it comes (ids
        "0", "1", ... in the order given). A request the server refuses yields a result with
        `error` set and the stream goes on; a stream that breaks with UNAVAILABLE goes on
        over a new one, sending again what was not answered (each id is yielded once); any
        other failure of the whole stream raises, and so does an exception from `messages`
        (after the answers to what was sent).
        `timeout` (default: the client's) is the deadline of the whole stream."""
        requests = _Requests(messages, output_dtype)
        requests.check_sync()
        attempts = self._settings.attempts(timeout)
        while True:
            call = self._stub.DecodeStream(
                iter(requests), timeout=attempts.remaining(), metadata=self._settings.metadata
            )
            try:
                for resp in call:
                    if requests.answered(resp.id):
                        attempts.progress()
                        yield _stream_result(resp)
                    else:
                        log.debug("dropped a second answer to request %r", resp.id)
                break
            except grpc.RpcError as exc:
                delay = attempts.next_delay(exc) if requests.restart() else None
                if delay is None:
                    if requests.failure is not None:
                        raise requests.failure from None
                    raise _error(exc, self.target) from None
            finally:
                call.cancel()  # no-op when it finished; stops it when the caller stopped early
            _sleep(delay)
        requests.check_complete()

    def score(
        self,
        codes: CodesInput,
        *,
        score: str = "",
        threshold: float | None = None,
        fpr: float | None = None,
        timeout: float | None = None,
    ) -> ScoreReply:
        """Anomaly scores of Codes messages (e.g. `model.encode_codes(x)` with an edge
        encoder), one Score RPC each, from a package trained with `--task anomaly`.
        `score` picks one of the package's code scores ("" = its default); `threshold` or
        `fpr` flag against another threshold than the calibrated one."""
        messages = _as_messages(codes)
        responses = [
            self._call(self._stub.Score, _score_request(i, msg, score, threshold, fpr), timeout)
            for i, msg in enumerate(messages)
        ]
        return _score_reply(responses, messages)

    def encode(
        self, name: str, x: np.ndarray, *, version: str = "", timeout: float | None = None
    ) -> codec_pb2.Codes:
        """Encode samples (in the user's units) on the server with model `name`."""
        resp: codec_pb2.EncodeResponse = self._call(
            self._stub.Encode, _encode_request(name, x, version), timeout
        )
        return resp.codes

    def list_models(self, *, timeout: float | None = None) -> list[codec_pb2.ModelInfo]:
        """Every model version the server has loaded."""
        resp: codec_pb2.ListModelsResponse = self._call(
            self._stub.ListModels, codec_pb2.ListModelsRequest(), timeout
        )
        return list(resp.models)

    def get_model(
        self,
        name: str,
        version: str = "",
        fingerprint: str = "",
        *,
        timeout: float | None = None,
    ) -> codec_pb2.ModelInfo:
        """One model version's info and manifest (latest, or the one with `fingerprint`)."""
        req = codec_pb2.GetModelRequest(name=name, version=version, fingerprint=fingerprint)
        info: codec_pb2.ModelInfo = self._call(self._stub.GetModel, req, timeout)
        return info

    def fetch_encoder(
        self,
        name: str,
        out_dir: str | Path,
        *,
        version: str = "",
        include_scorer: bool = False,
        timeout: float | None = None,
    ) -> Path:
        """Fetch model `name`'s encoder and write an edge package (encoder.onnx +
        manifest.json) to `out_dir`, a new or empty folder, after checking its sha256.
        `include_scorer` also brings scorer.onnx and anomaly.npz (a package exported with
        `--edge-score`), so that the device scores anomalies itself."""
        _check_out_dir(out_dir)  # before the transfer, not only after it
        req = codec_pb2.FetchEncoderRequest(
            name=name, version=version, include_scorer=include_scorer
        )
        resp: codec_pb2.FetchEncoderResponse = self._call(self._stub.FetchEncoder, req, timeout)
        return _write_encoder_package(resp, out_dir)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status: "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN", ..."""
        try:
            resp = self._call(self._health_check, _health_request(service), timeout)
        except LatentwireError as exc:
            return _health_error(exc)
        return _health_status(resp)


# -- the asyncio client ------------------------------------------------------------------
class AsyncClient(_Base):
    """The asyncio twin of `Client` (grpc.aio). Create it inside the running event loop;
    use `async with` or `await close()`."""

    _grpc = grpc.aio

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        attempts = self._settings.attempts(timeout)
        while True:
            try:
                return await method(
                    request, timeout=attempts.remaining(), metadata=self._settings.metadata
                )
            except grpc.RpcError as exc:
                delay = attempts.next_delay(exc)
                if delay is None:
                    raise _error(exc, self.target) from None
            await _asleep(delay)

    async def decode(
        self,
        codes: CodesInput,
        *,
        output_dtype: str = "float32",
        timeout: float | None = None,
    ) -> DecodeResult:
        """Decode Codes messages, one Decode RPC each (see `Client.decode`)."""
        _check_output_dtype(output_dtype)
        messages = _as_messages(codes)
        responses = [
            await self._call(self._stub.Decode, _decode_request(i, msg, output_dtype), timeout)
            for i, msg in enumerate(messages)
        ]
        return _decode_result(responses, messages)

    async def decode_stream(
        self,
        messages: Iterable[codec_pb2.Codes] | AsyncIterable[codec_pb2.Codes],
        *,
        output_dtype: str = "float32",
        timeout: float | None = None,
    ) -> AsyncIterator[StreamResult]:
        """Decode messages over one DecodeStream (see `Client.decode_stream`); `messages`
        may also be an async iterable."""
        requests = _Requests(messages, output_dtype)
        attempts = self._settings.attempts(timeout)
        while True:
            call = self._stub.DecodeStream(
                aiter(requests), timeout=attempts.remaining(), metadata=self._settings.metadata
            )
            try:
                async for resp in call:
                    if requests.answered(resp.id):
                        attempts.progress()
                        yield _stream_result(resp)
                    else:
                        log.debug("dropped a second answer to request %r", resp.id)
                break
            except grpc.RpcError as exc:
                delay = attempts.next_delay(exc) if requests.restart() else None
                if delay is None:
                    if requests.failure is not None:
                        raise requests.failure from None
                    raise _error(exc, self.target) from None
            finally:
                call.cancel()
            await _asleep(delay)
        requests.check_complete()

    async def score(
        self,
        codes: CodesInput,
        *,
        score: str = "",
        threshold: float | None = None,
        fpr: float | None = None,
        timeout: float | None = None,
    ) -> ScoreReply:
        """Anomaly scores of Codes messages, one Score RPC each (see `Client.score`)."""
        messages = _as_messages(codes)
        responses = [
            await self._call(
                self._stub.Score, _score_request(i, msg, score, threshold, fpr), timeout
            )
            for i, msg in enumerate(messages)
        ]
        return _score_reply(responses, messages)

    async def encode(
        self, name: str, x: np.ndarray, *, version: str = "", timeout: float | None = None
    ) -> codec_pb2.Codes:
        """Encode samples on the server (see `Client.encode`)."""
        resp: codec_pb2.EncodeResponse = await self._call(
            self._stub.Encode, _encode_request(name, x, version), timeout
        )
        return resp.codes

    async def list_models(self, *, timeout: float | None = None) -> list[codec_pb2.ModelInfo]:
        resp: codec_pb2.ListModelsResponse = await self._call(
            self._stub.ListModels, codec_pb2.ListModelsRequest(), timeout
        )
        return list(resp.models)

    async def get_model(
        self,
        name: str,
        version: str = "",
        fingerprint: str = "",
        *,
        timeout: float | None = None,
    ) -> codec_pb2.ModelInfo:
        req = codec_pb2.GetModelRequest(name=name, version=version, fingerprint=fingerprint)
        info: codec_pb2.ModelInfo = await self._call(self._stub.GetModel, req, timeout)
        return info

    async def fetch_encoder(
        self,
        name: str,
        out_dir: str | Path,
        *,
        version: str = "",
        include_scorer: bool = False,
        timeout: float | None = None,
    ) -> Path:
        """Fetch an encoder and write an edge package (see `Client.fetch_encoder`)."""
        _check_out_dir(out_dir)
        req = codec_pb2.FetchEncoderRequest(
            name=name, version=version, include_scorer=include_scorer
        )
        resp: codec_pb2.FetchEncoderResponse = await self._call(
            self._stub.FetchEncoder, req, timeout
        )
        return _write_encoder_package(resp, out_dir)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        try:
            resp = await self._call(self._health_check, _health_request(service), timeout)
        except LatentwireError as exc:
            return _health_error(exc)
        return _health_status(resp)
