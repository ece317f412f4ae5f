"""Export a trained autoencoder as a model package: encoder.onnx, decoder.onnx, manifest.json.

Every export checks parity between torch and ONNX Runtime at batch sizes 1, 7 and 256 and
fails loudly (ExportError) when the max abs error exceeds 1e-5; nothing is written to the
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
from latentwire.runtime.errors import LatentwireError
from latentwire.runtime.manifest import (
    FINGERPRINT_KEY,
    MANIFEST_FILE,
    SCHEMA,
    SCHEMA_VERSION,
    compute_fingerprint,
)

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
    `extra` batch, e.g. another image size); raises ExportError when > 1e-5."""
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
        if not err <= PARITY_ATOL:
            raise ExportError(
                f"{label}: ONNX Runtime and torch disagree at batch {batch}: max abs error "
                f"{err:.3g} > {PARITY_ATOL:g}"
            )
    return worst


def check_destination(out: str | Path) -> Path:
    """A package may replace an older package or fill an empty/new folder, nothing else."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; --out names a folder for the model package")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST_FILE).exists():
        raise ExportError(f"{out} exists and is not a model package; choose another --out")
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_package(
    model: Autoencoder,
    cfg: ModelConfig,
    *,
    out: str | Path,
    name: str,
    normalization: dict[str, Any],
    samples: np.ndarray,
    info: dict[str, Any] | None = None,
    code_format: str = "f32",
) -> dict[str, Any]:
    """Export `model` to a package at `out`; returns the manifest.

    `samples` are inputs in model (normalised) units used for the parity check; real data
    keeps the check honest about the values the graphs will see.
    """
    out = check_destination(out)
    model = model.to("cpu").float().eval()
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    example = torch.from_numpy(samples[:2])
    with torch.no_grad():
        latents = model.encoder(torch.from_numpy(samples)).numpy()
    enc = _to_onnx(model.encoder, example, ("x", "z"), _dynamic_axes(cfg, False))
    dec = _to_onnx(
        model.decoder, torch.from_numpy(latents[:2]), ("z", "x_hat"), _dynamic_axes(cfg, True)
    )

    conv = cfg.kind == "conv"
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
        "codes": {"format": code_format},
        "files": {},
        "onnx": {"opset": OPSET, "ir_version": int(enc.ir_version)},
        "model": cfg.to_dict(),
        "training": info or {},
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "latentwire_version": __version__,
    }
    graphs = {"encoder": enc, "decoder": dec}
    for role, graph in graphs.items():
        manifest["files"][role] = {
            "path": f"{role}.onnx",
            "graph_sha256": _sha256(graph.SerializeToString()),
        }
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

    # the conv graphs have free height/width: check them at a second, non-square size too
    other_x = (np.tile(samples[:7], (1, 1, 2, 3)),) if conv else ()
    with torch.no_grad():
        other_z = tuple(model.encoder(torch.from_numpy(x)).numpy() for x in other_x)
    enc_err = check_parity(
        model.encoder, blobs["encoder"], ("x", "z"), samples, label="encoder", extra=other_x
    )
    dec_err = check_parity(
        model.decoder, blobs["decoder"], ("z", "x_hat"), latents, label="decoder", extra=other_z
    )
    manifest["onnx"]["parity_max_abs_error"] = {
        "other_input_shapes": [list(x.shape[1:]) for x in other_x],
        "encoder": enc_err,
        "decoder": dec_err,
        "batches": list(PARITY_BATCHES),
    }
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
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
