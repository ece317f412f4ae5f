"""config.pbtxt text for Triton's model configuration (protobuf text format of
`inference.ModelConfig`, model_config.proto).

Written by hand so that export needs no tritonclient; tests/test_triton_export.py parses
every file with tritonclient's `model_config_pb2` and checks it against the graphs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
"""numpy dtype name -> Triton data_type."""
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
QUEUE_DELAY_US = 500
"""Dynamic batching: how long a request waits for others to join its batch (microseconds)."""


def quote(text: str) -> str:
    """A protobuf text-format string literal."""
    if any(ord(c) < 32 for c in text):
        raise ValueError(f"{text!r} holds control characters")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Tensor:
    """One model input or output as config.pbtxt declares it."""

    name: str
    dtype: str
    """numpy dtype name (a key of TYPES)."""
    dims: tuple[int, ...]
    """Without the batch axis when the model batches; -1 for a free dimension."""

    def text(self) -> str:
        dims = ", ".join(str(d) for d in self.dims)
        return f"{{ name: {quote(self.name)} data_type: {TYPES[self.dtype]} dims: [ {dims} ] }}"


def _tensors(key: str, tensors: Sequence[Tensor]) -> str:
    body = ",\n".join(f"  {t.text()}" for t in tensors)
    return f"{key} [\n{body}\n]"


def _parameters(parameters: dict[str, str]) -> list[str]:
    return [
        f"parameters {{ key: {quote(k)} value {{ string_value: {quote(v)} }} }}"
        for k, v in parameters.items()
    ]


def _header(comment: str) -> list[str]:
    return [f"# {line}".rstrip() for line in comment.splitlines()]


@dataclass(frozen=True)
class ModelConfig:
    """A model served by a backend (onnxruntime or python)."""

    name: str
    backend: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    max_batch_size: int
    """0: the model does not batch (dims are whole shapes)."""
    kind: str = "cpu"
    instances: int = 1
    default_model_filename: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    all_versions: bool = True
    """version_policy { all { } }: every version folder is served side by side (Triton's
    default serves only the latest)."""
    comment: str = ""

    def text(self) -> str:
        lines = _header(self.comment)
        lines += [f"name: {quote(self.name)}", f"backend: {quote(self.backend)}"]
        if self.default_model_filename:
            lines.append(f"default_model_filename: {quote(self.default_model_filename)}")
        lines.append(f"max_batch_size: {self.max_batch_size}")
        if self.all_versions:
            lines.append("version_policy: { all { } }")
        lines += [_tensors("input", self.inputs), _tensors("output", self.outputs)]
        if self.max_batch_size > 0:
            lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {QUEUE_DELAY_US} }}")
        lines.append(f"instance_group [ {{ count: {self.instances} kind: {KINDS[self.kind]} }} ]")
        lines += _parameters(self.parameters)
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Step:
    """One step of an ensemble: the model's tensor names -> the ensemble's."""

    model_name: str
    input_map: dict[str, str]
    """model input -> ensemble tensor feeding it"""
    output_map: dict[str, str]
    """model output -> ensemble tensor it becomes"""
    model_version: int = -1
    """-1: the model's latest version"""

    def text(self) -> str:
        maps = [
            f"{kind} {{ key: {quote(k)} value: {quote(v)} }}"
            for kind, mapping in (("input_map", self.input_map), ("output_map", self.output_map))
            for k, v in mapping.items()
        ]
        body = "\n".join(f"      {m}" for m in maps)
        return (
            f"    {{\n      model_name: {quote(self.model_name)}\n"
            f"      model_version: {self.model_version}\n{body}\n    }}"
        )


@dataclass(frozen=True)
class EnsembleConfig:
    """An ensemble (platform "ensemble"): steps run by Triton itself, no backend."""

    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    steps: tuple[Step, ...]
    parameters: dict[str, str] = field(default_factory=dict)
    comment: str = ""

    def text(self) -> str:
        lines = _header(self.comment)
        lines += [f"name: {quote(self.name)}", 'platform: "ensemble"', "max_batch_size: 0"]
        lines += [_tensors("input", self.inputs), _tensors("output", self.outputs)]
        steps = ",\n".join(s.text() for s in self.steps)
        lines.append(f"ensemble_scheduling {{\n  step [\n{steps}\n  ]\n}}")
        lines += _parameters(self.parameters)
        return "\n".join(lines) + "\n"
