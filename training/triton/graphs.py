"""A package's graphs with the runtime's numpy steps folded in, for Triton's ONNX backend.

`latentwire.runtime.Model` runs three steps around each graph in numpy:

    encode:  x -> normalise: (float64(x) - offset) / scale, as float32 -> encoder.onnx -> codes
    decode:  codes -> dequantise (int8: w * scale + offset; f16 and entropy symbols: a cast)
                   -> decoder.onnx -> denormalise: float64(y) * scale + offset, as float32

A plain Triton onnxruntime backend runs only the graph, so these functions put the numpy
steps into it as ONNX nodes (Cast, Sub, Div, Mul, Add, in the same dtypes and order as the
numpy code, so the results agree to float rounding). The folded encoder has one output:
the wire codes, named as the package's latent tensor (what latentwire's own V2 service
calls `<name>.encoder`'s output); the folded decoder takes the codes in their wire dtype
(FP32, FP16, INT8, or INT32 entropy symbols) under that name. The original graph's tensors
are renamed under a prefix (`enc/`, `dec/`) so that the new names cannot collide.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from latentwire.runtime.formats import CODES_OUTPUT, CodeFormat
from latentwire.runtime.manifest import FINGERPRINT_KEY, Manifest, Normalization

TRITON_KEY = "latentwire.triton"
"""Metadata key on the folded graphs saying what was folded in."""
_ELEM = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "float64": TensorProto.DOUBLE,
    "int8": TensorProto.INT8,
    "uint8": TensorProto.UINT8,
    "int16": TensorProto.INT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
}


class _Builder:
    """Nodes and constants added around a prefixed graph."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []

    def const(self, name: str, values: np.ndarray) -> str:
        full = f"{self.tag}/{name}"
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(values), full))
        return full

    def node(self, op: str, inputs: list[str], output: str, to: int | None = None) -> str:
        node = helper.make_node(op, inputs, [output], name=output)
        if to is not None:
            node.attribute.append(helper.make_attribute("to", to))
        self.nodes.append(node)
        return output


def _normalise(b: _Builder, x: str, norm: Normalization, out: str) -> None:
    """(float64(x) - offset) / scale, as float32: Normalization.forward plus the cast."""
    if norm.kind == "none":
        b.node("Cast", [x], out, to=TensorProto.FLOAT)
        return
    x64 = b.node("Cast", [x], f"{b.tag}/x64", to=TensorProto.DOUBLE)
    centred = b.node("Sub", [x64, b.const("offset", norm.offset.astype(np.float64))], f"{b.tag}/c")
    scaled = b.node("Div", [centred, b.const("scale", norm.scale.astype(np.float64))], f"{b.tag}/s")
    b.node("Cast", [scaled], out, to=TensorProto.FLOAT)


def _denormalise(b: _Builder, y: str, norm: Normalization, out: str) -> None:
    """float64(y) * scale + offset, as float32: Normalization.inverse."""
    if norm.kind == "none":
        b.node("Identity", [y], out)
        return
    y64 = b.node("Cast", [y], f"{b.tag}/y64", to=TensorProto.DOUBLE)
    scaled = b.node("Mul", [y64, b.const("scale", norm.scale.astype(np.float64))], f"{b.tag}/s")
    shifted = b.node(
        "Add", [scaled, b.const("offset", norm.offset.astype(np.float64))], f"{b.tag}/o"
    )
    b.node("Cast", [shifted], out, to=TensorProto.FLOAT)


def _dequantise(b: _Builder, w: str, fmt: CodeFormat, rank: int, out: str) -> None:
    """Wire values -> float32 latents: CodeFormat.dequantize."""
    if fmt.name == "f32":
        b.node("Identity", [w], out)
        return
    if fmt.name != "int8":  # f16, entropy symbols: a cast
        b.node("Cast", [w], out, to=TensorProto.FLOAT)
        return
    assert fmt.scale is not None and fmt.offset is not None
    shape = (1, -1) + (1,) * (rank - 2)  # per channel, against (N, K, ...)
    wf = b.node("Cast", [w], f"{b.tag}/w", to=TensorProto.FLOAT)
    scale = b.const("scale", fmt.scale.astype(np.float32).reshape(shape))
    scaled = b.node("Mul", [wf, scale], f"{b.tag}/ws")
    b.node("Add", [scaled, b.const("offset", fmt.offset.astype(np.float32).reshape(shape))], out)


def _value_info(name: str, elem: int, like: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """A graph input/output `name` of type `elem` with the shape of `like`."""
    dims: list[str | int] = [
        d.dim_param or d.dim_value or "?" for d in like.type.tensor_type.shape.dim
    ]
    return helper.make_tensor_value_info(name, elem, dims)


def _find(values: list[onnx.ValueInfoProto], name: str, what: str) -> onnx.ValueInfoProto:
    for v in values:
        if v.name == name:
            return v
    raise ValueError(f"the {what} graph has no tensor {name!r}")


def _assemble(
    original: onnx.ModelProto,
    body: onnx.GraphProto,
    pre: _Builder,
    post: _Builder,
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    role: str,
    folded: str,
) -> bytes:
    graph = helper.make_graph(
        [*pre.nodes, *body.node, *post.nodes],
        f"latentwire_triton_{role}",
        inputs,
        outputs,
        initializer=[*pre.inits, *body.initializer, *post.inits],
        value_info=list(body.value_info),
        sparse_initializer=list(body.sparse_initializer),
    )
    model = helper.make_model(
        graph,
        opset_imports=list(original.opset_import),
        ir_version=original.ir_version,
        producer_name="latentwire export-triton",
    )
    model.functions.extend(original.functions)
    props = {p.key: p.value for p in original.metadata_props}
    props["latentwire.role"] = f"triton {role}"
    props[TRITON_KEY] = folded
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    blob: bytes = model.SerializeToString()
    return blob


def fold_encoder(blob: bytes, manifest: Manifest) -> bytes:
    """encoder.onnx with the input normalisation folded in: input `manifest.input.name`
    (its manifest dtype, user units) -> output `manifest.latent.name` (wire codes)."""
    original = onnx.load_from_string(blob)
    body = onnx.compose.add_prefix(original, "enc/").graph
    x, codes = manifest.input.name, manifest.latent.name
    pre, post = _Builder("pre"), _Builder("post")
    _normalise(pre, x, manifest.normalization, f"enc/{x}")
    post.node("Identity", [f"enc/{CODES_OUTPUT}"], codes)
    x_info = _find(list(original.graph.input), x, "encoder")
    codes_info = _find(list(original.graph.output), CODES_OUTPUT, "encoder")
    return _assemble(
        original,
        body,
        pre,
        post,
        [_value_info(x, _ELEM[manifest.input.dtype], x_info)],
        [_value_info(codes, codes_info.type.tensor_type.elem_type, codes_info)],
        "encoder",
        f"normalisation ({manifest.normalization.kind}) before the graph",
    )


def fold_decoder(blob: bytes, manifest: Manifest) -> bytes:
    """decoder.onnx with dequantisation and denormalisation folded in: input
    `manifest.latent.name` (wire codes of the package's format) -> `manifest.output.name`
    (user units)."""
    original = onnx.load_from_string(blob)
    body = onnx.compose.add_prefix(original, "dec/").graph
    z, x_hat, fmt = manifest.latent.name, manifest.output.name, manifest.codes
    z_info = _find(list(original.graph.input), z, "decoder")
    out_info = _find(list(original.graph.output), x_hat, "decoder")
    rank = len(z_info.type.tensor_type.shape.dim)
    pre, post = _Builder("pre"), _Builder("post")
    _dequantise(pre, z, fmt, rank, f"dec/{z}")
    _denormalise(post, f"dec/{x_hat}", manifest.normalization, x_hat)
    return _assemble(
        original,
        body,
        pre,
        post,
        [_value_info(z, _ELEM[fmt.wire_dtype], z_info)],
        [_value_info(x_hat, TensorProto.FLOAT, out_info)],
        "decoder",
        f"dequantisation ({fmt.name}) before the graph, denormalisation "
        f"({manifest.normalization.kind}) after it",
    )


def fingerprint_of(blob: bytes) -> str | None:
    """The package fingerprint a (folded) graph carries in its metadata."""
    model = onnx.load_from_string(blob)
    return next((p.value for p in model.metadata_props if p.key == FINGERPRINT_KEY), None)
