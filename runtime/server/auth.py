"""Bearer-token authentication, the same on both fronts: every call but health checks must
carry `authorization: Bearer <token>` (load balancers and Kubernetes probes need no secret).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from ..errors import ERROR_KEY

HEALTH_SERVICE = "grpc.health.v1.Health"
_KEY = "authorization"


class BearerToken:
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def refusal(self, metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
        """Why a call with this metadata is refused, or None when its token is right."""
        got = next((v for k, v in metadata if k == _KEY), "")
        got_b = got.encode() if isinstance(got, str) else bytes(got)
        if hmac.compare_digest(got_b, self._expected):
            return None
        if got:
            return "wrong bearer token"
        return f"missing bearer token (metadata '{_KEY}: Bearer <token>')"


def exempt(method_path: str) -> bool:
    """Health checks need no token."""
    return method_path.startswith(f"/{HEALTH_SERVICE}/")


class TokenAuth(grpc.ServerInterceptor):  # type: ignore[misc]
    """The grpcio front's token check; `on_refuse(method name)` counts refusals."""

    def __init__(self, token: BearerToken, on_refuse: Callable[[str], None]) -> None:
        self._token = token
        self._on_refuse = on_refuse

    def intercept_service(
        self, continuation: Callable[[Any], grpc.RpcMethodHandler | None], details: Any
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or exempt(details.method):
            return handler
        reason = self._token.refusal(details.invocation_metadata)
        if reason is None:
            return handler
        self._on_refuse(details.method.rsplit("/", 1)[-1])

        def refuse(request: Any, context: grpc.ServicerContext) -> Any:
            context.set_trailing_metadata(((ERROR_KEY, "Unauthenticated"),))
            context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(refuse)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)
