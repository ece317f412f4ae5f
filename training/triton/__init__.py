"""Export latentwire model packages as a Triton Inference Server model repository.

`latentwire export-triton PKG --out REPO` (training/cli.py) calls `export_repository`:
graphs.py folds the runtime's numpy steps (normalisation, dequantisation,
denormalisation) into the ONNX graphs, config.py writes config.pbtxt, repo.py lays the
repository out; entropy_model.py and onnx_model.py are the Python-backend `model.py` files
it copies in. Needs onnx (the training extra), not torch.
"""

from __future__ import annotations

from .repo import BACKENDS, Options, export_repository, find_packages

__all__ = ["BACKENDS", "Options", "export_repository", "find_packages"]
