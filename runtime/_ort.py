"""ONNX Runtime import and session creation (execution-provider choice lives here)."""

from __future__ import annotations

import logging
from typing import Literal

from .errors import PackageError, ProviderError

try:
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "latentwire.runtime needs ONNX Runtime, which the base install leaves out so that "
        "you pick one build: pip install 'latentwire[cpu]' (CPU, edge devices) or "
        "pip install 'latentwire[gpu]' (CUDA servers). Never install both."
    ) from exc

log = logging.getLogger("latentwire.runtime")

Providers = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_preloaded = False


def _preload_cuda() -> None:
    """Load CUDA/cuDNN DLLs shipped as pip wheels (onnxruntime-gpu >= 1.21), once."""
    global _preloaded
    if not _preloaded and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as exc:  # a failed preload just means CUDA will not load
            log.debug("onnxruntime.preload_dlls() failed: %s", exc)
    _preloaded = True


def create_session(
    model: bytes,
    providers: Providers = "auto",
    *,
    threads: int = 0,
    label: str = "model",
    announce: bool = True,
) -> ort.InferenceSession:
    """Create an InferenceSession from serialized ONNX bytes.

    `auto` uses CUDA when it really loads (checked with `session.get_providers()`, not
    just `get_available_providers()`), else CPU; `cuda` raises ProviderError when CUDA
    does not load; `cpu` never tries CUDA. The provider used is logged.
    """
    if providers not in ("auto", "cpu", "cuda"):
        raise ProviderError(f"providers must be auto, cpu or cuda, got {providers!r}")
    available = ort.get_available_providers()
    want_cuda = providers == "cuda" or (providers == "auto" and CUDA in available)
    if providers == "cuda" and CUDA not in available:
        raise ProviderError(
            f"CUDA was asked for but this ONNX Runtime build offers only {available}; "
            "install latentwire[gpu] (onnxruntime-gpu) instead of latentwire[cpu]"
        )
    if want_cuda:
        _preload_cuda()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    requested = [CUDA, CPU] if want_cuda else [CPU]
    try:
        session = ort.InferenceSession(model, sess_options=options, providers=requested)
    except Exception as exc:  # onnxruntime's pybind errors share no useful base class
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PackageError(
            f"{label}: ONNX Runtime {ort.__version__} cannot load the graph: {first}"
        ) from None
    used = session.get_providers()
    if want_cuda and used[0] != CUDA:
        if providers == "cuda":
            raise ProviderError(
                f"CUDA was asked for but the {label} session fell back to {used[0]} "
                "(CUDA/cuDNN libraries missing or no GPU visible)"
            )
        log.warning("%s: CUDA is available but did not load; fell back to %s", label, used[0])
    log.log(logging.INFO if announce else logging.DEBUG, "%s: running on %s", label, used[0])
    return session
