"""Export a trained autoencoder as a model package: encoder.onnx, decoder.onnx, manifest.json.

Every export checks parity between torch and ONNX Runtime at batch sizes 1, 7 and 256 and
fails loudly (ExportError) when the max abs error exceeds 1e-5 (relative to the largest
output where outputs exceed 1, e.g. integer latents); nothing is written to the
destination unless the check passes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from latentwire.runtime import __version__
from latentwire.runtime._ort import create_session
from latentwire.runtime.anomaly import ANOMALY_FILE, recon_error
from latentwire.runtime.errors import LatentwireError
from latentwire.runtime.formats import CODES_OUTPUT, CodeFormat
from latentwire.runtime.manifest import (
    ANOMALY,
    FINGERPRINT_KEY,
    MANIFEST_FILE,
    SCHEMA,
    SCHEMA_VERSION,
    SCORER,
    compute_fingerprint,
)

from .baselines import psnr
from .files import move_into_place
from .models import Autoencoder, ModelConfig, latent_shape

log = logging.getLogger("latentwire.training")

OPSET = 18
PARITY_BATCHES = (1, 7, 256)
PARITY_ATOL = 1e-5


class ExportError(LatentwireError):
    """The ONNX graphs could not be made, checked, or do not match torch."""


def _to_onnx(
    module: torch.nn.Module, example: torch.Tensor, names: tuple[str, str], dynamic: dict[int, Any]
) -> onnx.ModelProto:
    """torch -> ONNX with the dynamo exporter, quietly; all weights inline (single file)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[names[0]],
            output_names=[names[1]],
            dynamic_shapes=(dynamic,),
            opset_version=OPSET,
            external_data=False,
            verbose=False,
            optimize=True,
        )
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    model = program.model_proto
    # Weights inline: the package's graphs are single files with no external .data.
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise ExportError(f"initializer {init.name} was exported as external data")
    model.producer_name, model.producer_version = "latentwire", __version__
    _strip_exporter_metadata(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def _strip_exporter_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node notes (stack traces with absolute install paths, FX
    node text): they would make the graph hash, and so the fingerprint, depend on where
    latentwire is installed, and they leak the build machine's paths into the package."""
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        del graph.metadata_props[:]
        for node in graph.node:
            del node.metadata_props[:]
            for attr in node.attribute:  # subgraphs of If/Loop/Scan
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            del vi.metadata_props[:]
    for fn in model.functions:
        for node in fn.node:
            del node.metadata_props[:]
    del model.metadata_props[:]


def fold_quantizer(model: onnx.ModelProto, fmt: CodeFormat) -> None:
    """End the encoder graph in the format's quantiser: a first output `codes` with the
    wire values (the float latents `z` stay as the second output).

    f32: Identity; f16: Cast; int8: Sub(offset) then QuantizeLinear per channel (axis 1,
    zero point 0); entropy: Round, clipped to each channel's table, Cast to int32.
    """
    g = model.graph
    z_out = g.output[0]
    z = z_out.name
    rank = len(z_out.type.tensor_type.shape.dim)
    k = len(fmt.lo)
    cshape = [k] + [1] * (rank - 2)  # per channel, broadcast against (N, K, ...)
    h = onnx.helper
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    elem = onnx.TensorProto.FLOAT

    def const(name: str, values: np.ndarray, shape: list[int]) -> str:
        inits.append(onnx.numpy_helper.from_array(values.reshape(shape), f"codes_{name}"))
        return f"codes_{name}"

    if fmt.name == "f32":
        nodes.append(h.make_node("Identity", [z], [CODES_OUTPUT]))
    elif fmt.name == "f16":
        nodes.append(h.make_node("Cast", [z], [CODES_OUTPUT], to=onnx.TensorProto.FLOAT16))
        elem = onnx.TensorProto.FLOAT16
    elif fmt.name == "int8":
        assert fmt.scale is not None and fmt.offset is not None
        offset = const("offset", fmt.offset.astype(np.float32), cshape)
        scale = const("scale", fmt.scale.astype(np.float32), [k])
        zero = const("zero_point", np.zeros(k, dtype=np.int8), [k])
        nodes.append(h.make_node("Sub", [z, offset], ["codes_centred"]))
        nodes.append(
            h.make_node("QuantizeLinear", ["codes_centred", scale, zero], [CODES_OUTPUT], axis=1)
        )
        elem = onnx.TensorProto.INT8
    else:
        assert fmt.prior is not None
        lo = const("low", fmt.prior.low.astype(np.float32), cshape)
        hi = const("high", fmt.prior.high.astype(np.float32), cshape)
        nodes.append(h.make_node("Round", [z], ["codes_rounded"]))
        nodes.append(h.make_node("Max", ["codes_rounded", lo], ["codes_above"]))
        nodes.append(h.make_node("Min", ["codes_above", hi], ["codes_clipped"]))
        nodes.append(
            h.make_node("Cast", ["codes_clipped"], [CODES_OUTPUT], to=onnx.TensorProto.INT32)
        )
        elem = onnx.TensorProto.INT32
    g.node.extend(nodes)
    g.initializer.extend(inits)
    dims = [d.dim_param or d.dim_value for d in z_out.type.tensor_type.shape.dim]
    g.output.insert(0, h.make_tensor_value_info(CODES_OUTPUT, elem, dims))


def _int8_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The encoder with int8 weights (onnxruntime.quantization, dynamic: weights stored as
    int8, activations quantised at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        quantized = onnx.load(dst)
    quantized.producer_name, quantized.producer_version = "latentwire", __version__
    del quantized.metadata_props[:]
    return quantized


def _dynamic_axes(cfg: ModelConfig, for_latent: bool) -> dict[int, Any]:
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    if cfg.kind == "dense":
        return {0: batch}
    s = cfg.stride
    h = torch.export.Dim("h", min=1, max=4096)
    w = torch.export.Dim("w", min=1, max=4096)
    if for_latent:
        return {0: batch, 2: h, 3: w}
    return {0: batch, 2: s * h, 3: s * w}


def check_parity(
    module: torch.nn.Module,
    onnx_bytes: bytes,
    names: tuple[str, str],
    samples: np.ndarray,
    *,
    label: str,
    extra: tuple[np.ndarray, ...] = (),
) -> float:
    """Max abs error between torch and ONNX Runtime at batch 1, 7 and 256 (and on each
    `extra` batch, e.g. another image size); raises ExportError when it exceeds 1e-5 x
    max(1, largest |output|): float32 rounding grows with the values' magnitude."""
    session = create_session(onnx_bytes, "cpu", label=f"parity {label}", announce=False)
    worst = 0.0
    rng = np.random.default_rng(0)
    batches = [samples[rng.integers(0, len(samples), b)] for b in PARITY_BATCHES]
    for x in [*batches, *extra]:
        batch = f"{len(x)}" if x.shape[1:] == samples.shape[1:] else f"{len(x)} of {x.shape[1:]}"
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        got = session.run([names[1]], {names[0]: x})[0]
        if got.shape != want.shape:
            raise ExportError(
                f"{label}: ONNX output shape {got.shape} != torch {want.shape} at batch {batch}"
            )
        err = float(np.max(np.abs(got - want)))
        worst = max(worst, err)
        peak = float(np.max(np.abs(want))) if want.size else 0.0
        limit = PARITY_ATOL * max(1.0, peak)
        if not err <= limit:
            raise ExportError(
                f"{label}: ONNX Runtime and torch disagree at batch {batch}: max abs error "
                f"{err:.3g} > {limit:.3g} ({PARITY_ATOL:g} x max(1, largest |output| {peak:.3g}))"
            )
    return worst


def check_destination(out: str | Path, *, replace: bool = True) -> Path:
    """A package may fill a new or empty folder, or replace an older package when `replace`
    is true; anything else is refused (ExportError)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; --out names a folder for the model package")
    if not out.exists() or not any(out.iterdir()):
        return out
    if not (out / MANIFEST_FILE).exists():
        raise ExportError(f"{out} exists and is not a model package; choose another --out")
    if not replace:
        raise ExportError(
            f"{out} already holds a model package{_package_label(out)}: pass --force to "
            "replace it, or --out DIR to write elsewhere"
        )
    return out


def _package_label(out: Path) -> str:
    """ " (name, fingerprint ...)" of the package in `out`, or "" when unreadable."""
    try:
        manifest = json.loads((out / MANIFEST_FILE).read_text())
        return f" ({manifest['name']}, fingerprint {manifest['fingerprint']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _codes_parity(session: Any, fmt: CodeFormat, samples: np.ndarray) -> float:
    """Check the graph's folded quantiser against its numpy twin on real latents; returns
    the fraction of int8 codes one step off (float division order), 0 for other formats."""
    w, z = session.run([CODES_OUTPUT, "z"], {"x": samples})
    want = fmt.quantize(z)
    if w.dtype != want.dtype or w.shape != want.shape:
        raise ExportError(
            f"encoder codes are {w.dtype} {w.shape}, expected {want.dtype} {want.shape}"
        )
    diff = np.abs(w.astype(np.int64) - want.astype(np.int64)) if fmt.integer else None
    if diff is None:
        if not np.array_equal(w, want):
            raise ExportError(f"the encoder's {fmt.name} codes differ from the format's definition")
        return 0.0
    if diff.max(initial=0) > 1:
        raise ExportError(f"the encoder's {fmt.name} codes are off by {diff.max()} steps")
    return float((diff > 0).mean())


def _scorer_parity(blobs: dict[str, bytes], fmt: CodeFormat, samples: np.ndarray) -> float:
    """The scorer graph against the encoder and decoder graphs: the same codes, and a
    score equal to the reconstruction error through the dequantised codes (max abs error,
    ExportError past 1e-5 x max(1, largest score))."""
    enc = create_session(blobs["encoder"], "cpu", label="scorer parity", announce=False)
    dec = create_session(blobs["decoder"], "cpu", label="scorer parity", announce=False)
    scorer = create_session(blobs[SCORER], "cpu", label="scorer", announce=False)
    w, score = scorer.run([CODES_OUTPUT, "score"], {"x": samples})
    want_w = enc.run([CODES_OUTPUT], {"x": samples})[0]
    if not np.array_equal(w, want_w):
        raise ExportError("the scorer graph's codes differ from the encoder's")
    want = recon_error(samples, dec.run(["x_hat"], {"z": fmt.dequantize(want_w)})[0])
    err = float(np.max(np.abs(score - want))) if len(want) else 0.0
    limit = PARITY_ATOL * max(1.0, float(np.max(want, initial=0.0)))
    if not err <= limit:
        raise ExportError(f"the scorer graph's score is off by {err:.3g} (limit {limit:.3g})")
    return err


def export_package(
    model: Autoencoder,
    cfg: ModelConfig,
    *,
    out: str | Path,
    name: str,
    normalization: dict[str, Any],
    samples: np.ndarray,
    codes: CodeFormat | None = None,
    info: dict[str, Any] | None = None,
    int8_weights: bool = False,
    replace: bool = True,
    anomaly: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None,
    edge_score: bool = False,
) -> dict[str, Any]:
    """Export `model` to a package at `out`; returns the manifest.

    The package is written into a temporary folder beside `out` and renamed into place, so
    an interrupted export leaves whatever `out` held before. An older package at `out` is
    replaced only when `replace` is true (ExportError otherwise, checked before any work
    and again before the rename).

    `samples` are inputs in model (normalised) units used for the parity check; real data
    keeps the check honest about the values the graphs will see. `codes` is the code
    format (with its calibration); its quantiser is folded into the encoder graph. None
    means f32, calibrated on the latents of `samples`.
    `int8_weights` stores the encoder's weights as int8 (its size and PSNR cost on
    `samples` are recorded under files.encoder.int8_weights).
    `anomaly` is the manifest section "anomaly" and the arrays of anomaly.npz
    (training/anomaly.py); `edge_score` adds scorer.onnx (training/edge_score.py), checked
    against the encoder and decoder graphs.
    """
    out = check_destination(out, replace=replace)
    model = model.to("cpu").float().eval()
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    example = torch.from_numpy(samples[:2])
    with torch.no_grad():
        latents = model.encoder(torch.from_numpy(samples)).numpy()
    if codes is None:
        codes = CodeFormat.calibrated("f32", latents)
    enc = _to_onnx(model.encoder, example, ("x", "z"), _dynamic_axes(cfg, False))
    fold_quantizer(enc, codes)
    onnx.checker.check_model(enc, full_check=True)
    dec = _to_onnx(
        model.decoder, torch.from_numpy(latents[:2]), ("z", "x_hat"), _dynamic_axes(cfg, True)
    )

    # the conv graphs have free height/width: check them at a second, non-square size too
    conv = cfg.kind == "conv"
    other_x = (np.tile(samples[:7], (1, 1, 2, 3)),) if conv else ()
    with torch.no_grad():
        other_z = tuple(model.encoder(torch.from_numpy(x)).numpy() for x in other_x)
    float_enc = enc.SerializeToString()
    enc_err = check_parity(
        model.encoder, float_enc, ("x", "z"), samples, label="encoder", extra=other_x
    )
    session = create_session(float_enc, "cpu", label="codes parity", announce=False)
    off_by_one = _codes_parity(session, codes, samples)
    dec_session = create_session(
        dec.SerializeToString(), "cpu", label="decoder parity", announce=False
    )
    weights_report: dict[str, Any] | None = None
    if int8_weights:
        enc = _int8_weights(enc)
        q_session = create_session(enc.SerializeToString(), "cpu", label="int8", announce=False)
        data_range = float(samples.max() - samples.min()) or 1.0
        recon = {}
        for label, sess in (("float", session), ("int8", q_session)):
            w = sess.run([CODES_OUTPUT], {"x": samples})[0]
            z_hat = codes.dequantize(w)
            recon[label] = psnr(samples, dec_session.run(["x_hat"], {"z": z_hat})[0], data_range)
        weights_report = {
            "float_bytes": len(float_enc),
            "psnr_db_float": round(recon["float"], 4),
            "psnr_db_int8": round(recon["int8"], 4),
            "psnr_cost_db": round(recon["float"] - recon["int8"], 4),
            "measured_on": f"{len(samples)} validation samples, model units",
        }

    in_shape: list[int | None] = [cfg.input_shape[0], None, None] if conv else list(cfg.input_shape)
    lat_shape: list[int | None] = [cfg.latent_dim, None, None] if conv else list(latent_shape(cfg))
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "fingerprint": "",
        "input": {"name": "x", "shape": in_shape, "dtype": "float32", "multiple_of": cfg.stride},
        "latent": {"name": "z", "shape": lat_shape, "dtype": "float32", "multiple_of": 1},
        "output": {
            "name": "x_hat",
            "shape": in_shape,
            "dtype": "float32",
            "multiple_of": cfg.stride,
        },
        "normalization": normalization,
        "codes": codes.to_dict(),
        "files": {},
        "onnx": {"opset": OPSET, "ir_version": int(dec.ir_version)},
        "model": cfg.to_dict(),
        "training": info or {},
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "latentwire_version": __version__,
    }
    graphs = {"encoder": enc, "decoder": dec}
    if edge_score:
        from .edge_score import scorer_graph

        graphs[SCORER] = scorer_graph(enc, dec, codes)
    for role, graph in graphs.items():
        manifest["files"][role] = {
            "path": f"{role}.onnx",
            "graph_sha256": _sha256(graph.SerializeToString()),
        }
    if weights_report is not None:
        manifest["files"]["encoder"]["int8_weights"] = weights_report
    fingerprint = compute_fingerprint(manifest)
    manifest["fingerprint"] = fingerprint
    blobs: dict[str, bytes] = {}
    for role, graph in graphs.items():
        onnx.helper.set_model_props(
            graph, {FINGERPRINT_KEY: fingerprint, "latentwire.name": name, "latentwire.role": role}
        )
        onnx.checker.check_model(graph, full_check=True)
        blobs[role] = graph.SerializeToString()
        manifest["files"][role].update(sha256=_sha256(blobs[role]), bytes=len(blobs[role]))

    dec_err = check_parity(
        model.decoder, blobs["decoder"], ("z", "x_hat"), latents, label="decoder", extra=other_z
    )
    if SCORER in blobs:
        manifest["files"][SCORER]["extra_bytes_over_encoder"] = len(blobs[SCORER]) - len(
            blobs["encoder"]
        )
        manifest["files"][SCORER]["score_max_abs_error"] = _scorer_parity(blobs, codes, samples)
    npz: bytes | None = None
    if anomaly is not None:
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **anomaly[1])  # type: ignore[arg-type]
        npz = buf.getvalue()
        manifest[ANOMALY] = anomaly[0]
        manifest["files"][ANOMALY] = {
            "path": ANOMALY_FILE,
            "sha256": _sha256(npz),
            "bytes": len(npz),
        }
    manifest["onnx"]["parity_max_abs_error"] = {
        "other_input_shapes": [list(x.shape[1:]) for x in other_x],
        "encoder": enc_err,
        "decoder": dec_err,
        "batches": list(PARITY_BATCHES),
        "codes_off_by_one_fraction": off_by_one,
    }
    if weights_report is not None:
        manifest["onnx"]["parity_max_abs_error"]["encoder_checked_before_int8_weights"] = True
        log.info(
            "int8 encoder weights: %d -> %d bytes, PSNR %.2f -> %.2f dB on the parity samples",
            weights_report["float_bytes"],
            len(blobs["encoder"]),
            weights_report["psnr_db_float"],
            weights_report["psnr_db_int8"],
        )
    log.info(
        "parity ok: encoder %.2g, decoder %.2g (max abs error, batches %s)",
        enc_err,
        dec_err,
        PARITY_BATCHES,
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the package from other users
    try:
        for role, blob in blobs.items():
            (tmp / f"{role}.onnx").write_bytes(blob)
        if npz is not None:
            (tmp / ANOMALY_FILE).write_bytes(npz)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        check_destination(out, replace=replace)  # another run may have written it meanwhile
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
