"""latentwire.runtime: run a latentwire model package with ONNX Runtime.

Torch-free and onnx-free: numpy, onnxruntime, protobuf and grpcio only, so it fits on
edge devices. Typical use::

    from latentwire.runtime import load
    model = load("models/digits")
    z = model.encode(x)            # (N, 64) float32 in your units -> (N, 8) latents
    x_hat = model.decode(z)        # back to (N, 64) in your units
"""

from __future__ import annotations

from . import _ort as _ort  # fails early, naming the extras, when ONNX Runtime is missing
from .codes import read_codes_file, write_codes_file
from .embed import LatentwireTransformer
from .errors import (
    CodesError,
    DataError,
    FingerprintMismatch,
    InputError,
    IntegrityError,
    LatentwireError,
    PackageError,
    ProviderError,
)
from .manifest import Manifest
from .model import Model, load

__version__ = "0.1.0"

__all__ = [
    "CodesError",
    "DataError",
    "FingerprintMismatch",
    "InputError",
    "IntegrityError",
    "LatentwireError",
    "LatentwireTransformer",
    "Manifest",
    "Model",
    "PackageError",
    "ProviderError",
    "__version__",
    "load",
    "read_codes_file",
    "write_codes_file",
]
