"""The edge scoring graph (`train --task anomaly --edge-score`): `scorer.onnx` maps the
normalised input x to the encoder's two outputs (wire codes, float latents) and `score`,
the mean squared reconstruction error per sample through the codes as a server decodes
them (dequantised), so an edge device gets its codes and the "recon" anomaly score in
one ONNX Runtime call. It holds the decoder's weights: its size over the encoder's is the
price, recorded in the manifest (files.scorer.extra_bytes_over_encoder)."""

from __future__ import annotations

import numpy as np
import onnx

from latentwire.runtime.formats import CODES_OUTPUT, CodeFormat

SCORE_OUTPUT = "score"
_PREFIX = "decoder_"


def _dequantize_nodes(
    fmt: CodeFormat, rank: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes from the wire codes to float32 latents `scorer_z` (as CodeFormat.dequantize)."""
    h = onnx.helper
    flt = onnx.TensorProto.FLOAT
    if fmt.name == "f32":
        return [h.make_node("Identity", [CODES_OUTPUT], ["scorer_z"])], []
    if fmt.name in ("f16", "entropy"):
        return [h.make_node("Cast", [CODES_OUTPUT], ["scorer_z"], to=flt)], []
    assert fmt.scale is not None and fmt.offset is not None
    k = len(fmt.scale)
    inits = [
        onnx.numpy_helper.from_array(fmt.scale.astype(np.float32), "scorer_scale"),
        onnx.numpy_helper.from_array(np.zeros(k, dtype=np.int8), "scorer_zero_point"),
        onnx.numpy_helper.from_array(
            fmt.offset.astype(np.float32).reshape([k] + [1] * (rank - 2)), "scorer_offset"
        ),
    ]
    nodes = [
        h.make_node(
            "DequantizeLinear",
            [CODES_OUTPUT, "scorer_scale", "scorer_zero_point"],
            ["scorer_steps"],
            axis=1,
        ),
        h.make_node("Add", ["scorer_steps", "scorer_offset"], ["scorer_z"]),
    ]
    return nodes, inits


def scorer_graph(
    encoder: onnx.ModelProto, decoder: onnx.ModelProto, fmt: CodeFormat
) -> onnx.ModelProto:
    """encoder (quantiser folded in, no fingerprint yet) + dequantisation + decoder + the
    per-sample mean squared error against the input, as one graph."""
    model = onnx.ModelProto()
    model.CopyFrom(encoder)
    g = model.graph
    x_name = g.input[0].name
    rank = len(g.input[0].type.tensor_type.shape.dim)
    z_rank = len(g.output[1].type.tensor_type.shape.dim)
    nodes, inits = _dequantize_nodes(fmt, z_rank)
    g.node.extend(nodes)
    g.initializer.extend(inits)

    dec = decoder.graph
    z_in = dec.input[0].name

    def rename(name: str) -> str:
        if not name:
            return name
        return "scorer_z" if name == z_in else _PREFIX + name

    for node in dec.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = _PREFIX + node.name if node.name else ""
        copy.input[:] = [rename(n) for n in node.input]
        copy.output[:] = [rename(n) for n in node.output]
        g.node.append(copy)
    for init in dec.initializer:
        copy_init = onnx.TensorProto()
        copy_init.CopyFrom(init)
        copy_init.name = rename(init.name)
        g.initializer.append(copy_init)
    x_hat = rename(dec.output[0].name)
    have = {(o.domain, o.version) for o in model.opset_import}
    for op in decoder.opset_import:
        if (op.domain, op.version) not in have:
            model.opset_import.append(op)
    model.functions.extend(decoder.functions)

    h = onnx.helper
    axes = onnx.numpy_helper.from_array(np.arange(1, rank, dtype=np.int64), "scorer_axes")
    g.initializer.append(axes)
    g.node.extend(
        [
            h.make_node("Sub", [x_name, x_hat], ["scorer_diff"]),
            h.make_node("Mul", ["scorer_diff", "scorer_diff"], ["scorer_sq"]),
            h.make_node("ReduceMean", ["scorer_sq", "scorer_axes"], [SCORE_OUTPUT], keepdims=0),
        ]
    )
    batch = g.input[0].type.tensor_type.shape.dim[0]
    dims = [batch.dim_param or batch.dim_value]
    g.output.append(h.make_tensor_value_info(SCORE_OUTPUT, onnx.TensorProto.FLOAT, dims))
    del g.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    return model
