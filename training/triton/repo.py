"""Write a Triton model repository from latentwire model packages.

For each model NAME (its versions side by side, as latentwire's server loads them):

    REPO/NAME.encoder/config.pbtxt       x (user units) -> codes     (normalisation folded in)
    REPO/NAME.encoder/<v>/encoder.onnx
    REPO/NAME.decoder/config.pbtxt       codes -> x_hat (user units)  (dequantise, denormalise)
    REPO/NAME.decoder/<v>/decoder.onnx
  entropy-coded packages also:
    REPO/NAME.entropy_decode/config.pbtxt       Python backend: stream -> symbols
    REPO/NAME.entropy_decode/<v>/model.py, manifest.json
    REPO/NAME.stream_decoder/config.pbtxt       ensemble: entropy_decode -> decoder
    REPO/NAME.stream_decoder/<latest v>/

With `backend="python"` the encoder and decoder run the same folded graphs through a
Python-backend `model.py` (onnx_model.py) instead of Triton's onnxruntime backend.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from latentwire.runtime.errors import PackageError
from latentwire.runtime.manifest import MANIFEST_FILE, ROLES, Manifest, TensorSpec, is_file_name
from latentwire.runtime.model import Model, read_verified

from ..files import move_into_place
from . import entropy_model, onnx_model
from .config import KINDS, EnsembleConfig, ModelConfig, Step, Tensor
from .graphs import fold_decoder, fold_encoder

log = logging.getLogger("latentwire.training")

BACKENDS = ("onnxruntime", "python")
CONFIG_FILE = "config.pbtxt"
FINGERPRINT = "latentwire.fingerprint"
"""config.pbtxt parameter: the fingerprint of the latest version (and, suffixed `.<v>`,
of each version): codes decode correctly only with the decoder of their encoder."""
STREAM_INPUTS = (
    Tensor(entropy_model.STREAM, "uint8", (-1,)),
    Tensor(entropy_model.COUNT, "int32", (1,)),
    Tensor(entropy_model.LATENT_SHAPE, "int32", (-1,)),
)


@dataclass(frozen=True)
class Source:
    """One package to export: Triton model prefix, numeric version, loaded model."""

    name: str
    version: str
    model: Model


def _numeric(version: str, where: Path) -> str:
    if not version.isdigit() or int(version) < 1:
        raise PackageError(
            f"{where}: Triton versions are positive integers, this version folder is "
            f"{version!r}; rename it (e.g. 1, 2, ...)"
        )
    return str(int(version))


def find_packages(src: Path, name: str | None = None) -> list[Source]:
    """The packages of `src`: one package folder (version 1, named by its manifest or
    `name`), or a model repository DIR/<name>/<version>/ as `latentwire serve` reads it.
    Each is loaded and verified (sha256s, fingerprint) as the server would."""
    if not src.is_dir():
        raise PackageError(f"{src} is not a directory (a model package or a model repository)")
    if (src / MANIFEST_FILE).is_file():
        model = Model(src, providers="cpu")
        return [Source(name or model.name, "1", model)]
    found = []
    for model_dir in sorted(p for p in src.iterdir() if p.is_dir() and p.name[0] != "."):
        for ver_dir in sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name[0] != "."):
            if (ver_dir / MANIFEST_FILE).is_file():
                version = _numeric(ver_dir.name, ver_dir)
                found.append((model_dir.name, version, ver_dir))
    if not found:
        raise PackageError(
            f"{src} holds no model package: expected {MANIFEST_FILE} in it, or a model "
            "repository DIR/<name>/<version>/"
        )
    names = {n for n, _, _ in found}
    if name is not None and len(names) > 1:
        raise PackageError(
            f"--name renames one model; {src} holds {len(names)} ({', '.join(sorted(names))})"
        )
    return [
        Source(name or n, v, Model(p, providers="cpu", root=src))
        for n, v, p in sorted(found, key=lambda f: (f[0], int(f[1])))
    ]


def _dims(spec: TensorSpec) -> tuple[int, ...]:
    return tuple(-1 if d is None else d for d in spec.shape)


def _signature(m: Manifest) -> tuple[object, ...]:
    """What config.pbtxt declares of a package: tensor names, shapes, dtypes, code format."""
    return (m.input, m.latent, m.output, m.codes.name)


def _check_versions(name: str, sources: list[Source]) -> None:
    """One config.pbtxt describes every version of a Triton model: they must agree."""
    first = sources[0]
    for s in sources[1:]:
        if _signature(s.model.manifest) != _signature(first.model.manifest):
            a, b = first.model.manifest, s.model.manifest
            raise PackageError(
                f"{name}: versions {first.version} and {s.version} differ (input "
                f"{a.input.describe()} vs {b.input.describe()}, codes {a.code_format} "
                f"{a.latent.dims()} vs {b.code_format} {b.latent.dims()}); a Triton model has "
                "one signature for all its versions: export them under different names"
            )


def _parameters(sources: list[Source]) -> dict[str, str]:
    latest = sources[-1].model
    params = {FINGERPRINT: latest.fingerprint, "latentwire.code_format": latest.codes.name}
    for s in sources:
        params[f"{FINGERPRINT}.{s.version}"] = s.model.fingerprint
    return params


@dataclass(frozen=True)
class Options:
    """What `latentwire export-triton` was asked for."""

    max_batch: int = 1024
    instances: int = 1
    kind: str = "cpu"
    backend: str = "onnxruntime"


def _graph_model(
    repo: Path, name: str, role: str, sources: list[Source], opts: Options
) -> list[Path]:
    """NAME.<role>/config.pbtxt and <v>/<role>.onnx (the folded graph) for every version."""
    m = sources[-1].model.manifest
    codes = Tensor(m.latent.name, m.codes.wire_dtype, _dims(m.latent))
    x = Tensor(m.input.name, m.input.dtype, _dims(m.input))
    x_hat = Tensor(m.output.name, "float32", _dims(m.output))
    io = ((x,), (codes,)) if role == "encoder" else ((codes,), (x_hat,))
    graph = f"{role}.onnx"
    python = opts.backend == "python"
    folder = repo / f"{name}.{role}"
    written = []
    for s in sources:
        blob = read_verified(s.model.path, s.model.manifest, role)
        fold = fold_encoder if role == "encoder" else fold_decoder
        version_dir = folder / s.version
        version_dir.mkdir(parents=True)
        (version_dir / graph).write_bytes(fold(blob, s.model.manifest))
        written.append(version_dir / graph)
        if python:
            shutil.copyfile(onnx_model.__file__, version_dir / "model.py")
    folded = (
        "normalisation folded in"
        if role == "encoder"
        else f"dequantisation ({m.codes.name}) and denormalisation folded in"
    )
    config = ModelConfig(
        name=f"{name}.{role}",
        backend=opts.backend,
        inputs=io[0],
        outputs=io[1],
        max_batch_size=opts.max_batch,
        kind=opts.kind,
        instances=opts.instances,
        default_model_filename=None if python else graph,
        parameters={
            **_parameters(sources),
            **({onnx_model.GRAPH_PARAMETER: graph} if python else {}),
        },
        comment=f"latentwire {role} of {name} ({folded}); written by latentwire export-triton",
    )
    (folder / CONFIG_FILE).write_text(config.text())
    return [folder / CONFIG_FILE, *written]


def _entropy_models(repo: Path, name: str, sources: list[Source]) -> list[Path]:
    """NAME.entropy_decode (Python backend) and the ensemble NAME.stream_decoder."""
    m = sources[-1].model.manifest
    symbols = Tensor(m.latent.name, "int32", (-1, *_dims(m.latent)))
    step = f"{name}.entropy_decode"
    folder = repo / step
    for s in sources:
        version_dir = folder / s.version
        version_dir.mkdir(parents=True)
        shutil.copyfile(entropy_model.__file__, version_dir / "model.py")
        shutil.copyfile(s.model.path / MANIFEST_FILE, version_dir / MANIFEST_FILE)
    decode = ModelConfig(
        name=step,
        backend="python",
        inputs=STREAM_INPUTS,
        outputs=(symbols,),
        max_batch_size=0,
        parameters=_parameters(sources),
        comment=f"entropy stream -> int32 symbols of {name} (latentwire.runtime's ANS "
        "decoder; needs latentwire[cpu] in Triton's Python environment)",
    )
    (folder / CONFIG_FILE).write_text(decode.text())
    ensemble_name = f"{name}.stream_decoder"
    ensemble_dir = repo / ensemble_name
    (ensemble_dir / sources[-1].version).mkdir(parents=True)
    wired = "symbols"
    ensemble = EnsembleConfig(
        name=ensemble_name,
        inputs=STREAM_INPUTS,
        outputs=(Tensor(m.output.name, "float32", (-1, *_dims(m.output))),),
        steps=(
            Step(step, {t.name: t.name for t in STREAM_INPUTS}, {m.latent.name: wired}),
            Step(f"{name}.decoder", {m.latent.name: wired}, {m.output.name: m.output.name}),
        ),
        parameters=_parameters(sources[-1:]),
        comment=f"entropy stream -> reconstruction of {name}: {step}, then {name}.decoder "
        "(their latest versions)",
    )
    (ensemble_dir / CONFIG_FILE).write_text(ensemble.text())
    return [folder / CONFIG_FILE, ensemble_dir / CONFIG_FILE]


def check_destination(out: Path, sources: list[Path], *, force: bool) -> None:
    """A new or empty folder; an existing repository only with `force`; never a folder
    holding (or inside) the packages read."""
    real = out.resolve()
    for src in sources:
        s = src.resolve()
        if real == s or real.is_relative_to(s) or s.is_relative_to(real):
            raise PackageError(f"--out {out} overlaps the packages read from {src}")
    if out.exists() and not out.is_dir():
        raise PackageError(f"{out} is a file; --out names a folder for the model repository")
    if not out.exists() or not any(out.iterdir()):
        return
    if not force:
        raise PackageError(f"{out} already exists: pass --force to replace it")
    strays = [p.name for p in out.iterdir() if not (p / CONFIG_FILE).is_file()]
    if strays:
        raise PackageError(
            f"{out} is not a Triton model repository ({strays[0]!r} has no {CONFIG_FILE}): "
            "refusing to replace it; choose another --out"
        )


def export_repository(
    src: Path, out: Path, *, name: str | None = None, force: bool = False, opts: Options
) -> list[Path]:
    """Write the Triton model repository `out` from the package or repository `src`;
    returns the config files written."""
    if opts.backend not in BACKENDS or opts.kind not in KINDS:
        raise ValueError(f"backend {opts.backend!r} / kind {opts.kind!r}")
    check_destination(out, [src], force=force)
    sources = find_packages(src, name)
    by_name: dict[str, list[Source]] = {}
    for s in sources:
        by_name.setdefault(s.name, []).append(s)
    for n, group in by_name.items():
        if not is_file_name(n) or n.startswith("."):
            raise PackageError(f"model name {n!r} cannot name a folder; pass --name NAME")
        _check_versions(n, group)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        configs = []
        for n, group in by_name.items():
            versions = ", ".join(s.version for s in group)
            log.info("%s: version(s) %s, codes %s", n, versions, group[-1].model.codes.name)
            for role in ROLES:
                files = _graph_model(tmp, n, role, group, opts)
                configs.append(files[0])
                log.info("  %s.%s: %s graph(s) folded", n, role, len(files) - 1)
            if group[-1].model.codes.name == "entropy":
                configs += _entropy_models(tmp, n, group)
                log.info("  %s.entropy_decode + %s.stream_decoder (ensemble)", n, n)
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / c.relative_to(tmp) for c in configs]
