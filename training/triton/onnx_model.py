"""Triton Python-backend stand-in for the onnxruntime backend (`export-triton --backend python`).

`latentwire export-triton --backend python` copies this file into each encoder and decoder
version folder as `model.py`, beside the folded graph the onnxruntime configuration would
name (parameter `latentwire.graph`). It runs that same graph with ONNX Runtime inside
Triton's Python backend, for a tritonserver without the onnxruntime backend (the one the
nvidia-pytriton wheel bundles): the answers are the graph's. The requests of one dynamic
batch are joined, run in one ONNX Runtime call and split again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

GRAPH_PARAMETER = "latentwire.graph"


class TritonPythonModel:
    """The Python backend's entry point (see triton-inference-server/python_backend)."""

    def initialize(self, args: dict[str, str]) -> None:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        folder = Path(args["model_repository"]) / args["model_version"]
        graph = folder / config["parameters"][GRAPH_PARAMETER]["string_value"]
        self.input = str(config["input"][0]["name"])
        self.output = str(config["output"][0]["name"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb

        arrays = [pb.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        try:
            joined = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            result = self.session.run([self.output], {self.input: joined})[0]
        except Exception as exc:  # answer every request of the batch with the error
            error = pb.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for a in arrays:
            part = result[start : start + len(a)]
            responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor(self.output, part)]))
            start += len(a)
        return responses
