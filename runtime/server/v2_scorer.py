"""KServe V2 `<name>.scorer`: anomaly scores of codes over ModelInfer (see v2.py's module
doc for the contract; the scoring itself is scoring.py's, shared with the Score RPC)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._proto.kserve.v2 import inference_pb2 as pb
from ..errors import InputError
from .jobs import EMPTY_CODES, Job, make_job
from .metrics import Metrics
from .registry import Registry, Version
from .scoring import scorer_of

SCORER = "scorer"
SCORER_OUTPUTS = {"score": "FP32", "is_anomaly": "BOOL", "p_value": "FP32"}
"""<name>.scorer's outputs and their V2 datatypes, in the order they are sent."""


def param(params: Any, key: str) -> str | None:
    """A request parameter as text (string or int64; None when absent)."""
    if not params or key not in params:
        return None
    p = params[key]
    which = p.WhichOneof("parameter_choice")
    if which == "string_param":
        return str(p.string_param)
    if which == "int64_param":
        return str(p.int64_param)
    raise InputError(f"parameter {key} must be a string (or an int64), got {which or 'nothing'}")


def _number(params: Any, key: str) -> float | None:
    text = param(params, key)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError(f"parameter {key} must be a number, got {text!r}") from None


def score_job(
    registry: Registry,
    metrics: Metrics,
    request: pb.ModelInferRequest,
    v: Version,
    codes: Callable[[], np.ndarray],
) -> Job:
    """The job of a ModelInfer on `v`'s scorer; `codes()` reads the request's input tensor."""
    params = request.parameters
    scorer = scorer_of(registry, v, param(params, "score") or "")
    threshold = scorer.threshold_of(_number(params, "threshold"), _number(params, "fpr"))
    wanted = [o.name for o in request.outputs] or list(SCORER_OUTPUTS)
    for name in wanted:
        if name not in SCORER_OUTPUTS:
            raise InputError(
                f"model {request.model_name!r} has outputs {', '.join(SCORER_OUTPUTS)}; "
                f"{name!r} was requested"
            )
    x = codes()
    model_name, request_id, scored = request.model_name, request.id, metrics.scored

    def finish(y: np.ndarray) -> bytes:
        scores, flags, p_values = scorer.split(y, threshold)
        scored(v.name, len(scores), int(flags.sum()))
        arrays = {
            "score": scores.astype("<f4"),
            "is_anomaly": flags,
            "p_value": p_values.astype("<f4"),
        }
        out = pb.ModelInferResponse.InferOutputTensor
        response = pb.ModelInferResponse(
            model_name=model_name,
            model_version=v.version,
            id=request_id,
            outputs=[out(name=n, datatype=SCORER_OUTPUTS[n], shape=[len(scores)]) for n in wanted],
            raw_output_contents=[arrays[n].tobytes() for n in wanted],
        )
        for key, value in (
            ("fingerprint", v.fingerprint),
            ("score", scorer.score),
            ("threshold", repr(threshold)),
        ):
            response.parameters[key].string_param = value
        data: bytes = response.SerializeToString()
        return data

    return make_job(scorer.graph, x, finish, empty=EMPTY_CODES)
